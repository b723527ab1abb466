/**
 * The client's own types: plain TypeScript shapes (milliseconds, `Date`, string unions) over the
 * generated protobuf messages, plus the conversions between the two. The generated messages stay
 * available as `proto` for anything this layer does not cover.
 */
import * as pb from "./gen/jobwire/v1/jobwire";
import { durationToMs, msToDuration } from "./internal/time";
import { decodeJson, decodeText, encodeValue } from "./payload";

/** Where a job is in its life (JobState in the proto, lower-cased without the prefix). */
export type JobState =
  | "waiting"
  | "delayed"
  | "active"
  | "retrying"
  | "completed"
  | "dead"
  | "cancelled"
  | "unspecified";

const STATE_NAMES: Record<number, JobState> = {
  [pb.JobState.JOB_STATE_WAITING]: "waiting",
  [pb.JobState.JOB_STATE_DELAYED]: "delayed",
  [pb.JobState.JOB_STATE_ACTIVE]: "active",
  [pb.JobState.JOB_STATE_RETRYING]: "retrying",
  [pb.JobState.JOB_STATE_COMPLETED]: "completed",
  [pb.JobState.JOB_STATE_DEAD]: "dead",
  [pb.JobState.JOB_STATE_CANCELLED]: "cancelled",
};

/** The states a job never leaves. */
export function isFinalState(state: JobState): boolean {
  return state === "completed" || state === "dead" || state === "cancelled";
}

/** The protobuf JobState of a state name. */
export function jobStateNumber(state: JobState): pb.JobState {
  for (const [n, name] of Object.entries(STATE_NAMES)) if (name === state) return Number(n) as pb.JobState;
  return pb.JobState.JOB_STATE_UNSPECIFIED;
}

/** The string name of a protobuf JobState; unknown (newer) values read as "unspecified". */
export function jobStateName(state: pb.JobState): JobState {
  return STATE_NAMES[state] ?? "unspecified";
}

/** How the wait before a retry grows. Every field is optional; the server fills defaults. */
export interface BackoffOptions {
  /** "exponential" (server default) or "fixed". */
  kind?: "exponential" | "fixed";
  /** First wait (exponential) or every wait (fixed). Server default 1 s; 0 to 24 h. */
  baseMs?: number;
  /** Growth per attempt (exponential). Server default 2; 1 to 100. */
  factor?: number;
  /** Longest wait. Server default 1 h; at most 7 days. */
  maxMs?: number;
  /** Randomized fraction of each wait, 0 to 1. Server default 0.5 exponential, 0 fixed. */
  jitter?: number;
}

/** Per-call settings accepted by every client method. */
export interface CallOptions {
  /**
   * Deadline of the whole logical call in milliseconds, retries included. Defaults to the
   * client's `deadlineMs` (10 s).
   */
  deadlineMs?: number;
  /** Cancels the call (and its retries). */
  signal?: AbortSignal;
}

/** How a job is added: everything in AddJobRequest besides queue, type and payload. */
export interface JobOptions {
  /** Higher runs first, -5 to 5; default 0. */
  priority?: number;
  /** Run after this many milliseconds (0 to 365 days). Exclusive with `runAt`. */
  delayMs?: number;
  /** Run at this time (Redis server clock). Exclusive with `delayMs`. */
  runAt?: Date;
  /** Attempts before the job goes dead, counting the first: 1 to 1,000. Server default 3. */
  maxAttempts?: number;
  /** Retry backoff. Server default: exponential, base 1 s, factor 2, max 1 h, jitter 0.5. */
  backoff?: BackoffOptions;
  /** How long one attempt may run before it is revoked: 10 ms to 24 h. Server default 30 min. */
  timeoutMs?: number;
  /** Free-form string headers delivered with the job (e.g. a W3C `traceparent`). */
  headers?: Record<string, string>;
  /**
   * Deduplicates adds on this queue within the server's idempotency window (default 24 h): a
   * repeat returns the first job's id with `duplicate: true`. At most 256 bytes. When omitted the
   * client generates one per logical add (unless `autoIdempotencyKey: false`), so its own retries
   * never add a job twice; that one is sent marked as generated, and the server remembers it
   * only for its retry window (default 10 min).
   */
  idempotencyKey?: string;
  /** Runs the job in this session (`<queue>/<name>`, of the job's queue). Unknown: NOT_FOUND. */
  sessionId?: string;
  /** The key whose rate limit (the queue's `key_rate`) the job counts against. */
  rateKey?: string;
  /** The key whose concurrency cap (the queue's `key_concurrency`) the job counts against. */
  concurrencyKey?: string;
}

/** Options of `client.add()`. */
export interface AddOptions extends JobOptions, CallOptions {}

/** One entry of `client.addMany()`. */
export interface JobSpec extends JobOptions {
  queue: string;
  type: string;
  /** Bytes travel as-is; anything else is JSON-encoded; undefined is empty. */
  payload?: unknown;
}

/** An accepted add. */
export interface AddResult {
  /** The job id: `<queue>/<ULID>`. Opaque. */
  id: string;
  /** True when the idempotency key had been seen and no new job was added. */
  duplicate: boolean;
  /** The idempotency key used (given or generated); empty if none was sent. */
  idempotencyKey: string;
}

/** The outcome of one `addMany()` entry. */
export type AddManyResult =
  | ({ ok: true } & AddResult)
  | {
      ok: false;
      /** gRPC status code the entry would have got from AddJob. */
      code: number;
      /** The server's reason, naming the field. */
      message: string;
      idempotencyKey: string;
    };

/** Builds the AddJobRequest for one job. */
export function toAddJobRequest(
  queue: string,
  type: string,
  payload: unknown,
  opts: JobOptions,
  idempotencyKey: string,
  keyGenerated: boolean,
): pb.AddJobRequest {
  if (opts.delayMs !== undefined && opts.runAt !== undefined) {
    throw new TypeError("delayMs and runAt are exclusive: give at most one");
  }
  let schedule: pb.AddJobRequest["schedule"];
  if (opts.delayMs !== undefined) schedule = { $case: "delay", value: msToDuration(opts.delayMs, "delayMs") };
  else if (opts.runAt !== undefined) schedule = { $case: "runAt", value: opts.runAt };
  return pb.AddJobRequest.fromPartial({
    queue,
    type,
    payload: encodeValue(payload, "payload"),
    headers: { ...(opts.headers ?? {}) },
    priority: opts.priority ?? 0,
    schedule,
    maxAttempts: opts.maxAttempts,
    backoff: opts.backoff === undefined ? undefined : toBackoff(opts.backoff),
    timeout: opts.timeoutMs === undefined ? undefined : msToDuration(opts.timeoutMs, "timeoutMs"),
    idempotencyKey,
    idempotencyKeyGenerated: keyGenerated && idempotencyKey !== "",
    sessionId: opts.sessionId ?? "",
    rateKey: opts.rateKey ?? "",
    concurrencyKey: opts.concurrencyKey ?? "",
  });
}

/** A backoff as the proto message (its unset fields left for the server's defaults). */
export function toBackoff(b: BackoffOptions): pb.Backoff {
  const kind =
    b.kind === undefined
      ? pb.BackoffKind.BACKOFF_KIND_UNSPECIFIED
      : b.kind === "fixed"
        ? pb.BackoffKind.BACKOFF_KIND_FIXED
        : pb.BackoffKind.BACKOFF_KIND_EXPONENTIAL;
  return {
    kind,
    base: b.baseMs === undefined ? undefined : msToDuration(b.baseMs, "backoff.baseMs"),
    factor: b.factor,
    max: b.maxMs === undefined ? undefined : msToDuration(b.maxMs, "backoff.maxMs"),
    jitter: b.jitter,
  };
}

/** A backoff as the server reports it (a schedule's template, a queue's settings). */
export function fromBackoff(b: pb.Backoff): BackoffOptions {
  const out: BackoffOptions = { kind: b.kind === pb.BackoffKind.BACKOFF_KIND_FIXED ? "fixed" : "exponential" };
  const baseMs = durationToMs(b.base);
  const maxMs = durationToMs(b.max);
  if (baseMs !== undefined) out.baseMs = baseMs;
  if (b.factor !== undefined) out.factor = b.factor;
  if (maxMs !== undefined) out.maxMs = maxMs;
  if (b.jitter !== undefined) out.jitter = b.jitter;
  return out;
}

/** Everything known about one job (GetJobInfo). */
export class JobInfo {
  readonly id: string;
  readonly queue: string;
  readonly type: string;
  readonly state: JobState;
  /** The payload given at add, as raw bytes. */
  readonly payload: Buffer;
  readonly headers: Readonly<Record<string, string>>;
  readonly priority: number;
  /** Attempts started so far (including the running one when active). */
  readonly attempts: number;
  readonly maxAttempts: number;
  /** Deliveries lost because the holding stream ended without an ack. */
  readonly lostDeliveries: number;
  readonly createdAt: Date | undefined;
  /** When the current or last attempt started. */
  readonly startedAt: Date | undefined;
  /** When it completed or went dead. */
  readonly finishedAt: Date | undefined;
  /** When a delayed or retrying job becomes ready. */
  readonly runAt: Date | undefined;
  /** The last error (from a failed attempt, or "timeout" / "lost"); empty if none. */
  readonly lastError: string;
  /** The result of a completed job, as raw bytes (empty otherwise). */
  readonly result: Buffer;
  readonly idempotencyKey: string;
  /** The job's session; empty if none. */
  readonly sessionId: string;
  /** The last progress reported by a worker (raw bytes; see `progressJson()`). */
  readonly progress: Buffer;

  constructor(info: pb.JobInfo) {
    this.id = info.id;
    this.queue = info.queue;
    this.type = info.type;
    this.state = jobStateName(info.state);
    this.payload = info.payload;
    this.headers = info.headers;
    this.priority = info.priority;
    this.attempts = info.attempts;
    this.maxAttempts = info.maxAttempts;
    this.lostDeliveries = info.lostDeliveries;
    this.createdAt = info.createdAt;
    this.startedAt = info.startedAt;
    this.finishedAt = info.finishedAt;
    this.runAt = info.runAt;
    this.lastError = info.lastError;
    this.result = info.result;
    this.idempotencyKey = info.idempotencyKey;
    this.sessionId = info.sessionId;
    this.progress = info.progress;
  }

  /** True once the job is completed, dead or cancelled: it will not change again. */
  get finished(): boolean {
    return isFinalState(this.state);
  }

  /** The payload parsed as JSON (`undefined` when empty). */
  json<T = unknown>(): T {
    return decodeJson<T>(this.payload, `payload of job ${this.id}`);
  }

  /** The result parsed as JSON (`undefined` when empty). */
  resultJson<T = unknown>(): T {
    return decodeJson<T>(this.result, `result of job ${this.id}`);
  }

  /** The last reported progress parsed as JSON (`undefined` when none). */
  progressJson<T = unknown>(): T {
    return decodeJson<T>(this.progress, `progress of job ${this.id}`);
  }
}

/** The result of a completed job. */
export class JobResult {
  readonly jobId: string;
  /** The raw result bytes, exactly as the handler returned them (or their JSON encoding). */
  readonly bytes: Buffer;
  /** The job as it was when found completed. */
  readonly info: JobInfo;

  constructor(info: JobInfo) {
    this.jobId = info.id;
    this.bytes = info.result;
    this.info = info;
  }

  /** The result parsed as JSON (`undefined` when the handler returned nothing). */
  json<T = unknown>(): T {
    return decodeJson<T>(this.bytes, `result of job ${this.jobId}`);
  }

  /** The result as UTF-8 text. */
  text(): string {
    return decodeText(this.bytes);
  }
}

/** The figures of one queue (Stats / ListQueues). */
export interface QueueStats {
  queue: string;
  waiting: number;
  delayed: number;
  active: number;
  completed: number;
  dead: number;
  deadEvicted: number;
  /** Cancelled jobs still retained. */
  cancelled: number;
  paused: boolean;
  /** How long the oldest ready job has been ready; 0 when none is waiting. */
  oldestWaitingAgeMs: number;
  /** Sessions of this queue. */
  sessions: number;
  /** Jobs waiting inside their session, not yet released to the queue (not in `waiting`). */
  sessionPending: number;
  /** Ready jobs held back by a rate limit (the queue's `rate`, or their key's `keyRate`). */
  heldByRate: number;
  /** Ready jobs held back because their `concurrencyKey` is at `keyConcurrency`. */
  heldByKeyConcurrency: number;
  /** Keys with jobs waiting: each pair of `rateKey` and `concurrencyKey` jobs carry. */
  waitingKeys: number;
}

export function toQueueStats(stats: pb.QueueStats | undefined, queue: string): QueueStats {
  const s = stats ?? pb.QueueStats.fromPartial({ queue });
  return {
    queue: s.queue,
    waiting: s.waiting,
    delayed: s.delayed,
    active: s.active,
    completed: s.completed,
    dead: s.dead,
    deadEvicted: s.deadEvicted,
    cancelled: s.cancelled,
    paused: s.paused,
    oldestWaitingAgeMs: durationToMs(s.oldestWaitingAge) ?? 0,
    sessions: s.sessions,
    sessionPending: s.sessionPending,
    heldByRate: s.heldByRate,
    heldByKeyConcurrency: s.heldByKeyConcurrency,
    waitingKeys: s.waitingKeys,
  };
}

/** One connected worker stream (ListWorkers). */
export interface WorkerInfo {
  /** The jobwire instance holding the stream. */
  instance: string;
  workerId: string;
  labels: Record<string, string>;
  /** The queues it serves, in order. */
  queues: string[];
  /** Its credit. */
  maxInFlight: number;
  /** Jobs it holds now. */
  inFlight: number;
  connectedAt: Date | undefined;
}

export function toWorkerInfo(w: pb.WorkerInfo): WorkerInfo {
  return {
    instance: w.instance,
    workerId: w.workerId,
    labels: { ...w.labels },
    queues: [...w.queues],
    maxInFlight: w.maxInFlight,
    inFlight: w.inFlight,
    connectedAt: w.connectedAt,
  };
}
