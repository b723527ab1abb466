/**
 * Schedules (`ScheduleService`): jobs the servers add on a timetable, a cron expression or a
 * fixed interval, with no leader among them (each due time adds exactly one job). The plain
 * shapes of what `Client`'s schedule calls take and return, and their conversions.
 *
 * A schedule is named within its queue: (queue, name) is its identity. Times are `Date`s,
 * durations milliseconds, as in the rest of the client.
 */
import * as spb from "./gen/jobwire/v1/schedules";
import { durationToMs, msToDuration } from "./internal/time";
import { decodeJson, encodeValue } from "./payload";
import { fromBackoff, toBackoff, type BackoffOptions } from "./types";

/**
 * What due times that passed without a fire do (every instance down, or the schedule paused):
 * "skip" (the default) adds nothing for them, "run-once" one job for them all, "run-all" one
 * job each, the latest `catchUpMax` of them.
 */
export type MissedFires = "skip" | "run-once" | "run-all";

/**
 * What a fire does while the previous fire's job has not finished: "allow" (the default) adds
 * the job anyway, "skip" adds nothing (counted in `Schedule.skipped`).
 */
export type Overlap = "allow" | "skip";

/** The job every fire adds. */
export interface JobTemplateSpec {
  /** The handler name workers dispatch on. */
  type: string;
  /** Bytes travel as-is; anything else is JSON-encoded; undefined is empty. */
  payload?: unknown;
  /** Headers of each job; the server adds `jobwire-schedule` (the schedule's name). */
  headers?: Record<string, string>;
  /** -5 to 5; default 0. */
  priority?: number;
  /** Attempts before a job goes dead: 1 to 1,000. Server default 3. */
  maxAttempts?: number;
  /** Retry backoff; the server's default when unset. */
  backoff?: BackoffOptions;
  /** How long one attempt may run: 10 ms to 24 h. Server default 30 min. */
  timeoutMs?: number;
  /** Every job's rate key (held by the queue's `keyRate`); default none. */
  rateKey?: string;
  /** Every job's concurrency key (held by the queue's `keyConcurrency`); default none. */
  concurrencyKey?: string;
}

/** A schedule to create or replace: exactly one of `everyMs` and `cron`. */
export interface ScheduleSpec {
  /** The queue its jobs go to, and where it lives. */
  queue: string;
  /** Its name in the queue: 1 to 128 characters of A-Z a-z 0-9 _ . : -. */
  name: string;
  template: JobTemplateSpec;
  /** A fixed interval, 1 s to 366 days: due at `start` + k * every, or multiples since the epoch. */
  everyMs?: number;
  /** A cron expression of 5 fields, or 6 with seconds first (croner's syntax, @daily...). */
  cron?: string;
  /** The IANA zone `cron` is read in (`Europe/Berlin`); default UTC. */
  timeZone?: string;
  /** No due time before this one. Default: from when it was created. */
  start?: Date;
  /** No due time at or after this one. Default: forever. */
  end?: Date;
  /** Each job runs up to this long after its due time (the same delay on every instance). */
  jitterMs?: number;
  /** Default "skip". */
  missedFires?: MissedFires;
  /** With "run-all": how many of the latest missed times run, 1 to 99; default 10. */
  catchUpMax?: number;
  /** Default "allow". */
  overlap?: Overlap;
}

/** The job template of a schedule as stored. */
export interface JobTemplate {
  readonly type: string;
  /** The payload as stored, raw bytes. */
  readonly payload: Buffer;
  readonly headers: Readonly<Record<string, string>>;
  readonly priority: number;
  /** Unset: the queue's default. */
  readonly maxAttempts: number | undefined;
  readonly backoff: BackoffOptions | undefined;
  readonly timeoutMs: number | undefined;
  /** "": none. */
  readonly rateKey: string;
  /** "": none. */
  readonly concurrencyKey: string;
}

const MISSED: Record<MissedFires, spb.MissedFirePolicy> = {
  skip: spb.MissedFirePolicy.MISSED_FIRE_POLICY_SKIP,
  "run-once": spb.MissedFirePolicy.MISSED_FIRE_POLICY_RUN_ONCE,
  "run-all": spb.MissedFirePolicy.MISSED_FIRE_POLICY_RUN_ALL,
};

/** A schedule as the server last reported it: its definition and its state. */
export class Schedule {
  readonly queue: string;
  readonly name: string;
  readonly template: JobTemplate;
  /** The cron expression; undefined for an interval schedule. */
  readonly cron: string | undefined;
  /** The interval; undefined for a cron schedule. */
  readonly everyMs: number | undefined;
  /** The zone of `cron`; "" is UTC. */
  readonly timeZone: string;
  readonly start: Date | undefined;
  readonly end: Date | undefined;
  readonly jitterMs: number | undefined;
  readonly missedFires: MissedFires;
  readonly catchUpMax: number;
  readonly overlap: Overlap;
  readonly paused: boolean;
  /** When it fires next; undefined while paused or once no due time is left. */
  readonly nextFireAt: Date | undefined;
  /** The due time of the last job a fire added. */
  readonly lastFireAt: Date | undefined;
  /** The last job it added (a fire or a trigger); "" before the first. */
  readonly lastJobId: string;
  /** Jobs it has added, fires and triggers. */
  readonly fires: number;
  /** Due times that added nothing under overlap "skip". */
  readonly skipped: number;
  /** Fires refused because the queue held its cap of waiting jobs. */
  readonly refused: number;
  /** 1 when created, one more at each upsert. */
  readonly revision: number;
  readonly createdAt: Date | undefined;
  readonly updatedAt: Date | undefined;

  constructor(s: spb.Schedule) {
    const d = s.definition ?? spb.ScheduleDefinition.fromPartial({});
    const t = d.template ?? spb.JobTemplate.fromPartial({});
    this.queue = d.queue;
    this.name = d.name;
    this.template = {
      type: t.type,
      payload: Buffer.from(t.payload),
      headers: { ...t.headers },
      priority: t.priority,
      maxAttempts: t.maxAttempts,
      backoff: t.backoff === undefined ? undefined : fromBackoff(t.backoff),
      timeoutMs: durationToMs(t.timeout),
      rateKey: t.rateKey,
      concurrencyKey: t.concurrencyKey,
    };
    this.cron = d.timing?.$case === "cron" ? d.timing.value : undefined;
    this.everyMs = d.timing?.$case === "every" ? durationToMs(d.timing.value) : undefined;
    this.timeZone = d.timeZone;
    this.start = d.start;
    this.end = d.end;
    this.jitterMs = durationToMs(d.jitter);
    this.missedFires = d.missedFires === spb.MissedFirePolicy.MISSED_FIRE_POLICY_RUN_ONCE ? "run-once" : d.missedFires === spb.MissedFirePolicy.MISSED_FIRE_POLICY_RUN_ALL ? "run-all" : "skip";
    this.catchUpMax = d.catchUpMax;
    this.overlap = d.overlap === spb.OverlapPolicy.OVERLAP_POLICY_SKIP ? "skip" : "allow";
    this.paused = s.paused;
    this.nextFireAt = s.nextFireAt;
    this.lastFireAt = s.lastFireAt;
    this.lastJobId = s.lastJobId;
    this.fires = s.fires;
    this.skipped = s.skipped;
    this.refused = s.refused;
    this.revision = s.revision;
    this.createdAt = s.createdAt;
    this.updatedAt = s.updatedAt;
  }

  /** The template's payload parsed as JSON (undefined when empty). */
  payloadJson<T = unknown>(): T {
    return decodeJson<T>(this.template.payload, `payload of schedule ${this.queue}/${this.name}`);
  }
}

export function toScheduleDefinition(s: ScheduleSpec): spb.ScheduleDefinition {
  if ((s.everyMs === undefined) === (s.cron === undefined)) {
    throw new TypeError("upsertSchedule: give exactly one of everyMs and cron");
  }
  const t = s.template;
  const timing: spb.ScheduleDefinition["timing"] =
    s.cron !== undefined ? { $case: "cron", value: s.cron } : { $case: "every", value: msToDuration(s.everyMs ?? 0, "everyMs") };
  return spb.ScheduleDefinition.fromPartial({
    queue: s.queue,
    name: s.name,
    template: {
      type: t.type,
      payload: encodeValue(t.payload, "template.payload"),
      headers: { ...(t.headers ?? {}) },
      priority: t.priority ?? 0,
      maxAttempts: t.maxAttempts,
      backoff: t.backoff === undefined ? undefined : toBackoff(t.backoff),
      timeout: t.timeoutMs === undefined ? undefined : msToDuration(t.timeoutMs, "template.timeoutMs"),
      rateKey: t.rateKey ?? "",
      concurrencyKey: t.concurrencyKey ?? "",
    },
    timing,
    timeZone: s.timeZone ?? "",
    start: s.start,
    end: s.end,
    jitter: s.jitterMs === undefined ? undefined : msToDuration(s.jitterMs, "jitterMs"),
    missedFires: s.missedFires === undefined ? spb.MissedFirePolicy.MISSED_FIRE_POLICY_UNSPECIFIED : MISSED[s.missedFires],
    catchUpMax: s.catchUpMax ?? 0,
    overlap:
      s.overlap === undefined
        ? spb.OverlapPolicy.OVERLAP_POLICY_UNSPECIFIED
        : s.overlap === "skip"
          ? spb.OverlapPolicy.OVERLAP_POLICY_SKIP
          : spb.OverlapPolicy.OVERLAP_POLICY_ALLOW,
  });
}
