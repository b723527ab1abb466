/**
 * A queue's settings (`SetQueueSettings` / `GetQueueSettings`): limits and job defaults changed
 * at run time, no restart, and stored in Redis with the queue so every instance applies them
 * (what Redis enforces, from the next call; new jobs' defaults, within a second).
 *
 * In what a queue holds, an absent field means "not set: the server's flag applies"; in what is
 * in effect, it means "no limit".
 */
import * as pb from "./gen/jobwire/v1/jobwire";
import { durationToMs, msToDuration } from "./internal/time";
import { fromBackoff, toBackoff, type BackoffOptions } from "./types";

/** Settings of one queue; in `setQueueSettings`, the fields absent are left as they are. */
export interface QueueSettings {
  /** The most jobs waiting (ready, delayed, retrying, pending in a session): an add past it is RESOURCE_EXHAUSTED. */
  maxWaiting?: number;
  /** The attempts of a job added without `maxAttempts`: 1 to 1,000. */
  maxAttempts?: number;
  /** The attempt timeout of a job added without one: 10 ms to 24 h. */
  timeoutMs?: number;
  /** The backoff of a job added without one. */
  backoff?: BackoffOptions;
  /** How long completed and cancelled jobs are kept: 0 to 365 days. */
  completedRetentionMs?: number;
  /** How many completed and cancelled jobs are kept. */
  completedMax?: number;
  /** How long dead jobs are kept. */
  deadRetentionMs?: number;
  /** How many dead jobs are kept. */
  deadMax?: number;
  /** The most jobs of the queue active at once, every instance and worker together. */
  concurrency?: number;
  /** The most jobs of the queue that may start per period, all keys together. */
  rate?: RateLimit;
  /** The rate limit of each `rateKey`, every key on its own: a key out of budget is skipped without holding back other keys. */
  keyRate?: RateLimit;
  /** The most jobs of one `concurrencyKey` active at once, every instance and worker together. */
  keyConcurrency?: number;
  /**
   * How many shards the queue is spread over (1 to 16), each its own Redis Cluster slot; set
   * once, best before the first add (a change is refused). FIFO holds within a shard.
   */
  shards?: number;
}

/** A rate (GCRA, enforced inside each lease): at most `count` jobs per `periodMs`, in bursts of at most `burst`. */
export interface RateLimit {
  /** Jobs per period: 1 to 1,000,000. */
  count: number;
  /** The period: 1 ms to 24 h; absent: 1 s. */
  periodMs?: number;
  /** The most jobs that may start at once after a quiet spell; absent: the jobs of a tenth of the period, at least 1. */
  burst?: number;
}

function toRateLimit(r: RateLimit | undefined, field: string): pb.RateLimit | undefined {
  if (r === undefined) return undefined;
  return pb.RateLimit.fromPartial({
    count: r.count,
    period: r.periodMs === undefined ? undefined : msToDuration(r.periodMs, `${field}.periodMs`),
    burst: r.burst ?? 0,
  });
}

function fromRateLimit(m: pb.RateLimit | undefined): RateLimit | undefined {
  if (m === undefined) return undefined;
  const out: RateLimit = { count: m.count, periodMs: durationToMs(m.period) ?? 1000 };
  if (m.burst !== 0) out.burst = m.burst;
  return out;
}

/** The name of a setting, for `clear`. */
export type QueueSettingName = keyof QueueSettings;

/** A queue's settings as the server answers them. */
export interface QueueSettingsView {
  /** What the queue holds. */
  settings: QueueSettings;
  /** What is in effect: `settings`, the server's flags for the rest. */
  effective: QueueSettings;
}

/** The proto field name of each setting (what `clear` sends and the server's errors name). */
const PROTO_NAMES: Record<QueueSettingName, string> = {
  maxWaiting: "max_waiting",
  maxAttempts: "max_attempts",
  timeoutMs: "timeout",
  backoff: "backoff",
  completedRetentionMs: "completed_retention",
  completedMax: "completed_max",
  deadRetentionMs: "dead_retention",
  deadMax: "dead_max",
  concurrency: "concurrency",
  rate: "rate",
  keyRate: "key_rate",
  keyConcurrency: "key_concurrency",
  shards: "shards",
};

/** A setting's name in the proto; a name that is none of ours goes as it is (the server refuses it, naming it). */
export function protoSettingName(name: string): string {
  return (PROTO_NAMES as Record<string, string>)[name] ?? name;
}

function ms(value: number | undefined, field: string): pb.QueueSettings["timeout"] {
  return value === undefined ? undefined : msToDuration(value, field);
}

export function toQueueSettings(s: QueueSettings): pb.QueueSettings {
  return pb.QueueSettings.fromPartial({
    maxWaiting: s.maxWaiting,
    maxAttempts: s.maxAttempts,
    timeout: ms(s.timeoutMs, "timeoutMs"),
    backoff: s.backoff === undefined ? undefined : toBackoff(s.backoff),
    completedRetention: ms(s.completedRetentionMs, "completedRetentionMs"),
    completedMax: s.completedMax,
    deadRetention: ms(s.deadRetentionMs, "deadRetentionMs"),
    deadMax: s.deadMax,
    concurrency: s.concurrency,
    rate: toRateLimit(s.rate, "rate"),
    keyRate: toRateLimit(s.keyRate, "keyRate"),
    keyConcurrency: s.keyConcurrency,
    shards: s.shards,
  });
}

export function fromQueueSettings(m: pb.QueueSettings | undefined): QueueSettings {
  const out: QueueSettings = {};
  if (m === undefined) return out;
  const entries: [QueueSettingName, number | BackoffOptions | RateLimit | undefined][] = [
    ["maxWaiting", m.maxWaiting],
    ["maxAttempts", m.maxAttempts],
    ["timeoutMs", durationToMs(m.timeout)],
    ["backoff", m.backoff === undefined ? undefined : fromBackoff(m.backoff)],
    ["completedRetentionMs", durationToMs(m.completedRetention)],
    ["completedMax", m.completedMax],
    ["deadRetentionMs", durationToMs(m.deadRetention)],
    ["deadMax", m.deadMax],
    ["concurrency", m.concurrency],
    ["rate", fromRateLimit(m.rate)],
    ["keyRate", fromRateLimit(m.keyRate)],
    ["keyConcurrency", m.keyConcurrency],
    ["shards", m.shards],
  ];
  for (const [name, value] of entries) if (value !== undefined) (out as Record<string, unknown>)[name] = value;
  return out;
}
