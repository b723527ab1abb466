/**
 * The producer side: add jobs (one or many, or to a session), read them, await their results,
 * cancel them; sessions (`SessionService`); schedules (`ScheduleService`); following jobs and
 * queues (`watch`, `subscribe`, in `events.ts`); and the admin calls tools need, queue settings
 * among them.
 *
 * Retries: calls that are safe to repeat are retried on UNAVAILABLE (Redis or the server briefly
 * away) with jittered exponential backoff, within the call's deadline. An add is safe to repeat
 * because it always carries an idempotency key: the caller's, or one generated per logical add,
 * so a retry of an add whose answer was lost returns the first job's id instead of adding a
 * second job. (With `autoIdempotencyKey: false` and no key given, adds are not retried.)
 * Session creates and updates, schedule upserts and triggers, dead-letter retries, deletes and
 * purges are not retried: a repeat of one that went through would answer differently (and a
 * repeated trigger would add a second job). Queue settings are: setting a value twice is
 * harmless.
 */
import { randomBytes } from "node:crypto";

import type { Metadata } from "@grpc/grpc-js";

import { buildMetadata, createRawClient, createSchedulesClient, createSessionsClient, type ConnectionOptions } from "./connection";
import { JobCancelledError, JobDeadError, RpcError, Status, WaitTimeoutError, hasStatus } from "./errors";
import { follow, type FollowOptions, type JobEvent } from "./events";
import * as pb from "./gen/jobwire/v1/jobwire";
import type { ScheduleServiceClient } from "./gen/jobwire/v1/schedules";
import { DEFAULT_RETRY, retrying, unary, type CallContext, type RetryOptions } from "./internal/rpc";
import { backoffDelay, sleep } from "./internal/time";
import {
  JobInfo,
  JobResult,
  toAddJobRequest,
  jobStateNumber,
  toQueueStats,
  toWorkerInfo,
  type AddManyResult,
  type AddOptions,
  type AddResult,
  type CallOptions,
  type JobSpec,
  type JobState,
  type QueueStats,
  type WorkerInfo,
} from "./types";
import {
  Session,
  toCreateSessionRequest,
  toUpdateSessionRequest,
  type NewSession,
  type Page,
  type PageOptions,
  type SessionUpdate,
} from "./sessions";
import { Schedule, toScheduleDefinition, type ScheduleSpec } from "./schedules";
import { fromQueueSettings, protoSettingName, toQueueSettings, type QueueSettingName, type QueueSettings, type QueueSettingsView } from "./settings";
import { DEFAULT_POLL, PollingWatcher, StreamWatcher, type JobWatcher, type PollOptions } from "./watch";

export interface ClientOptions extends ConnectionOptions {
  /** Default deadline of each logical call (retries included), in ms. Default 10,000. */
  deadlineMs?: number;
  /** Retry policy for UNAVAILABLE. Default: 5 tries, 100 ms doubling to 2 s. */
  retry?: Partial<RetryOptions>;
  /**
   * Generate an idempotency key for each add that has none, so retries never duplicate a job.
   * Default true. The key is visible in `JobInfo.idempotencyKey`.
   */
  autoIdempotencyKey?: boolean;
  /**
   * How `waitForResult` learns that a job finished: `"stream"` (default) follows it with the
   * WatchJob RPC and falls back to polling against a server without it; `"poll"` always polls
   * GetJobInfo.
   */
  watch?: "stream" | "poll";
  /** Pacing of GetJobInfo polling. */
  poll?: Partial<PollOptions>;
}

/** Options of `waitForResult`. */
export interface WaitOptions {
  /** Give up (with WaitTimeoutError) after this many ms. Default: wait until finished. */
  timeoutMs?: number;
  /** Cancels the wait. */
  signal?: AbortSignal;
}

/** Largest AddJobs request the server accepts; `addMany` splits longer lists. */
const MAX_BATCH = 1000;

/** A jobwire producer: adds jobs, reads them and awaits results. Call `close()` when done. */
export class Client {
  /** The generated grpc-js client, for RPCs this class does not wrap. */
  readonly raw: pb.QueueServiceClient;
  /** The generated grpc-js SessionService client (on the same channel). */
  readonly rawSessions: pb.SessionServiceClient;
  /** The generated grpc-js ScheduleService client (on the same channel). */
  readonly rawSchedules: ScheduleServiceClient;
  private readonly deadlineMs: number;
  private readonly retry: RetryOptions;
  private readonly autoKey: boolean;
  private readonly metadata: Metadata;
  /** How results are awaited; a WatchJob stream can replace polling here. */
  protected readonly watcher: JobWatcher;

  constructor(options: ClientOptions = {}) {
    this.raw = createRawClient(options);
    this.rawSessions = createSessionsClient(this.raw);
    this.rawSchedules = createSchedulesClient(this.raw);
    this.deadlineMs = options.deadlineMs ?? 10_000;
    this.retry = { ...DEFAULT_RETRY, ...(options.retry ?? {}) };
    this.autoKey = options.autoIdempotencyKey ?? true;
    this.metadata = buildMetadata(options);
    const read = (jobId: string, signal: AbortSignal): Promise<JobInfo> => this.getJobInfo(jobId, { signal });
    const polling = new PollingWatcher(read, { ...DEFAULT_POLL, ...(options.poll ?? {}) });
    this.watcher = options.watch === "poll" ? polling : new StreamWatcher(this.raw, this.metadata, read, polling);
  }

  /**
   * Adds one job to `queue` for handlers of `type`. `payload` bytes travel as-is; anything else
   * is JSON-encoded. Resolves with the job id (and `duplicate` when the idempotency key was seen).
   */
  async add(queue: string, type: string, payload?: unknown, options: AddOptions = {}): Promise<AddResult> {
    const { key, generated } = this.keyFor(options.idempotencyKey);
    const request = toAddJobRequest(queue, type, payload, options, key, generated);
    const ctx = this.context(options);
    const res = await retrying(() => unary("AddJob", this.raw.addJob.bind(this.raw), request, ctx), {
      policy: this.retry,
      deadline: ctx.deadline,
      signal: ctx.signal,
      retryable: (err) => key !== "" && hasStatus(err, Status.UNAVAILABLE),
    });
    return { id: res.jobId, duplicate: res.duplicate, idempotencyKey: key };
  }

  /**
   * Adds many jobs with AddJobs (split into requests of at most 1,000). Each entry is accepted or
   * rejected on its own; the results are in input order. Entries rejected with UNAVAILABLE are
   * retried (with their idempotency keys) within the deadline.
   */
  async addMany(jobs: readonly JobSpec[], options: CallOptions = {}): Promise<AddManyResult[]> {
    const made = jobs.map((j) => this.keyFor(j.idempotencyKey));
    const keys = made.map((m) => m.key);
    const requests = jobs.map((j, i) => toAddJobRequest(j.queue, j.type, j.payload, j, made[i]?.key ?? "", made[i]?.generated ?? false));
    const results: (AddManyResult | undefined)[] = new Array<AddManyResult | undefined>(jobs.length);
    const ctx = this.context(options);
    const canRetry = (i: number): boolean => keys[i] !== "";
    let pending = jobs.map((_, i) => i);
    for (let attempt = 1; ; attempt++) {
      let failure: unknown;
      try {
        for (let start = 0; start < pending.length; start += MAX_BATCH) {
          const chunk = pending.slice(start, start + MAX_BATCH);
          const res = await unary("AddJobs", this.raw.addJobs.bind(this.raw), { jobs: chunk.map((i) => requests[i]!) }, ctx);
          if (res.results.length !== chunk.length) {
            throw new RpcError("AddJobs", Status.INTERNAL, `expected ${chunk.length} results, got ${res.results.length}`);
          }
          res.results.forEach((r, k) => {
            const i = chunk[k]!;
            const key = keys[i] ?? "";
            results[i] =
              r.code === Status.OK
                ? { ok: true, id: r.jobId, duplicate: r.duplicate, idempotencyKey: key }
                : { ok: false, code: r.code, message: r.message, idempotencyKey: key };
          });
        }
      } catch (err) {
        failure = err;
      }
      const unanswered = pending.filter((i) => results[i] === undefined);
      const unavailable = pending.filter((i) => {
        const r = results[i];
        return r !== undefined && !r.ok && r.code === Status.UNAVAILABLE && canRetry(i);
      });
      const retryCall = failure !== undefined && hasStatus(failure, Status.UNAVAILABLE) && unanswered.every(canRetry);
      if (failure !== undefined && !retryCall) throw failure;
      pending = [...unanswered, ...unavailable].sort((a, b) => a - b);
      if (pending.length === 0) break;
      const wait = backoffDelay(attempt - 1, this.retry.initialBackoffMs, this.retry.maxBackoffMs);
      if (attempt >= this.retry.maxAttempts || Date.now() + wait >= ctx.deadline || ctx.signal?.aborted) {
        if (failure !== undefined) throw failure;
        break; // Return the UNAVAILABLE entries as they are.
      }
      await sleep(wait, ctx.signal);
    }
    return results.map((r) => r!);
  }

  /** Reads one job. NOT_FOUND when the id is unknown or the job is no longer retained. */
  async getJobInfo(jobId: string, options: CallOptions = {}): Promise<JobInfo> {
    const res = await this.read("GetJobInfo", this.raw.getJobInfo.bind(this.raw), { jobId }, options);
    if (res.job === undefined) throw new RpcError("GetJobInfo", Status.INTERNAL, "the response has no job");
    return new JobInfo(res.job);
  }

  /**
   * Waits until the job is completed (resolves with its result), dead (rejects with
   * JobDeadError) or cancelled (JobCancelledError). Rejects with WaitTimeoutError after
   * `timeoutMs`, with `signal.reason` when aborted, and with RpcError NOT_FOUND for an unknown
   * job.
   */
  async waitForResult(jobId: string, options: WaitOptions = {}): Promise<JobResult> {
    const timer = new AbortController();
    const timeout =
      options.timeoutMs === undefined
        ? undefined
        : setTimeout(() => timer.abort(new WaitTimeoutError(jobId, options.timeoutMs!)), options.timeoutMs);
    const signal = options.signal ? AbortSignal.any([timer.signal, options.signal]) : timer.signal;
    try {
      const info = await this.watcher.waitFinished(jobId, signal);
      if (info.state === "dead") throw new JobDeadError(info);
      if (info.state === "cancelled") throw new JobCancelledError(info);
      return new JobResult(info);
    } finally {
      clearTimeout(timeout);
    }
  }

  /** `add` then `waitForResult`: runs a job remotely and returns its result. */
  async addAndWait(
    queue: string,
    type: string,
    payload?: unknown,
    options: AddOptions & WaitOptions = {},
  ): Promise<JobResult> {
    const { id } = await this.add(queue, type, payload, options);
    return this.waitForResult(id, options);
  }

  /**
   * Cancels a job: a waiting or delayed job is removed at once; an active one is revoked on its
   * worker and ends cancelled. A finished job: FAILED_PRECONDITION.
   */
  async cancel(jobId: string, options: CallOptions = {}): Promise<void> {
    const ctx = this.context(options);
    let retried = false;
    try {
      await retrying(
        (attempt) => {
          retried = attempt > 1;
          return unary("CancelJob", this.raw.cancelJob.bind(this.raw), { jobId }, ctx);
        },
        { policy: this.retry, deadline: ctx.deadline, signal: ctx.signal, retryable: (err) => hasStatus(err, Status.UNAVAILABLE) },
      );
    } catch (err) {
      // A retry after a lost answer finds the job already cancelled: that is success.
      if (!retried || !hasStatus(err, Status.FAILED_PRECONDITION)) throw err;
      const info = await this.getJobInfo(jobId, options);
      if (info.state !== "cancelled") throw err;
    }
  }

  /** The counts of one queue (all zeros for an unknown queue). */
  async stats(queue: string, options: CallOptions = {}): Promise<QueueStats> {
    const res = await this.read("Stats", this.raw.stats.bind(this.raw), { queue }, options);
    return toQueueStats(res.stats, queue);
  }

  /** Every queue that has ever had a job, sorted by name, with its counts. */
  async listQueues(options: CallOptions = {}): Promise<QueueStats[]> {
    const res = await this.read("ListQueues", this.raw.listQueues.bind(this.raw), {}, options);
    return res.queues.map((q) => toQueueStats(q, q.queue));
  }

  /** `add` to a session (`<queue>/<name>`), in its queue: it starts after the session's earlier jobs. */
  async addToSession(sessionId: string, type: string, payload?: unknown, options: AddOptions = {}): Promise<AddResult> {
    const slash = sessionId.indexOf("/");
    if (slash <= 0) throw new TypeError(`sessionId ${JSON.stringify(sessionId)}: expected <queue>/<name>`);
    return this.add(sessionId.slice(0, slash), type, payload, { ...options, sessionId });
  }

  /**
   * The transitions of one job: first an event for its current state (with the result once
   * completed), then one per transition, ending after a final one. Reopened when it breaks.
   */
  watch(jobId: string, options: FollowOptions = {}): AsyncIterable<JobEvent> {
    return follow("WatchJob", () => this.raw.watchJob({ jobId }, this.metadata.clone()), true, options.signal);
  }

  /**
   * Every event of `queue`, live: from the next one, or right after `cursor` (a JobEvent's
   * `cursor`; save it to resume later). Reopened from the last event yielded when it breaks.
   */
  subscribe(queue: string, options: FollowOptions & { cursor?: string } = {}): AsyncIterable<JobEvent> {
    const from = options.cursor ?? "";
    return follow("Subscribe", (last) => this.raw.subscribe({ queue, cursor: last || from }, this.metadata.clone()), false, options.signal);
  }

  // ---- sessions ---------------------------------------------------------------------------------

  /** Creates a session; its id is `<queue>/<name>`. A name already taken: ALREADY_EXISTS. */
  async createSession(session: NewSession, options: CallOptions = {}): Promise<Session> {
    const res = await this.once("CreateSession", this.rawSessions.createSession.bind(this.rawSessions), toCreateSessionRequest(session), options);
    return new Session(required("CreateSession", res.session));
  }

  /** Reads a session: state, version, job counts. Unknown: NOT_FOUND. */
  async getSession(sessionId: string, options: CallOptions = {}): Promise<Session> {
    const res = await this.read("GetSession", this.rawSessions.getSession.bind(this.rawSessions), { sessionId }, options);
    return new Session(required("GetSession", res.session));
  }

  /**
   * Writes a session's state (`state`, or an RFC 7396 `mergePatch`) and resolves with its new
   * version. With `expectedVersion`: at another version, RpcError FAILED_PRECONDITION and
   * nothing written.
   */
  async updateSession(sessionId: string, update: SessionUpdate, options: CallOptions = {}): Promise<number> {
    const request = toUpdateSessionRequest(sessionId, update);
    const res = await this.once("UpdateSession", this.rawSessions.updateSession.bind(this.rawSessions), request, options);
    return res.version;
  }

  /** Deletes a session, its state and its jobs not started yet (its running jobs end cancelled). */
  async deleteSession(sessionId: string, options: CallOptions = {}): Promise<void> {
    await this.read("DeleteSession", this.rawSessions.deleteSession.bind(this.rawSessions), { sessionId }, options);
  }

  /** One page of a queue's sessions (pageSize 1 to 100, default 100; a page may be shorter). */
  async listSessions(queue: string, page: PageOptions = {}, options: CallOptions = {}): Promise<Page<Session>> {
    const request = { queue, pageSize: page.pageSize ?? 0, pageToken: page.pageToken ?? "" };
    const res = await this.read("ListSessions", this.rawSessions.listSessions.bind(this.rawSessions), request, options);
    return { items: res.sessions.map((x) => new Session(x)), nextPageToken: res.nextPageToken };
  }

  /**
   * One page of the jobs still pending inside a session (added, not yet released to its queue),
   * next to be released first: the session's add order (pageSize 1 to 100, default 100). Jobs it
   * released already are not listed (listJobs shows them, with their sessionId).
   */
  async listSessionJobs(sessionId: string, page: PageOptions = {}, options: CallOptions = {}): Promise<Page<JobInfo>> {
    const request = { sessionId, pageSize: page.pageSize ?? 0, pageToken: page.pageToken ?? "" };
    const res = await this.read("ListSessionJobs", this.rawSessions.listSessionJobs.bind(this.rawSessions), request, options);
    return { items: res.pendingJobs.map((j) => new JobInfo(j)), nextPageToken: res.nextPageToken };
  }

  // ---- admin ------------------------------------------------------------------------------------

  /**
   * One page of a queue's jobs in `state`: "waiting" (dispatch order), "delayed" (with
   * "retrying", by due time), "active", or "completed" / "dead" / "cancelled" (newest first).
   */
  async listJobs(queue: string, state: JobState, page: PageOptions = {}, options: CallOptions = {}): Promise<Page<JobInfo>> {
    const request = {
      queue,
      state: jobStateNumber(state),
      pageSize: page.pageSize ?? 0,
      pageToken: page.pageToken ?? "",
      filter: undefined,
    };
    const res = await this.read("ListJobs", this.raw.listJobs.bind(this.raw), request, options);
    return { items: res.jobs.map((j) => new JobInfo(j)), nextPageToken: res.nextPageToken };
  }

  /** Stops delivering a queue's jobs (adds still succeed). */
  async pauseQueue(queue: string, options: CallOptions = {}): Promise<void> {
    await this.read("PauseQueue", this.raw.pauseQueue.bind(this.raw), { queue }, options);
  }

  /** Delivers a paused queue's jobs again. */
  async resumeQueue(queue: string, options: CallOptions = {}): Promise<void> {
    await this.read("ResumeQueue", this.raw.resumeQueue.bind(this.raw), { queue }, options);
  }

  /** Moves a dead job back to waiting, attempts reset. Not dead: FAILED_PRECONDITION. */
  async retryJob(jobId: string, options: CallOptions = {}): Promise<void> {
    await this.once("RetryJob", this.raw.retryJob.bind(this.raw), { jobId }, options);
  }

  /** Moves up to `limit` (1 to 100,000) of a queue's oldest dead jobs back to waiting; resolves with how many. */
  async retryDeadJobs(queue: string, limit: number, options: CallOptions = {}): Promise<number> {
    const res = await this.once("RetryDeadJobs", this.raw.retryDeadJobs.bind(this.raw), { queue, limit }, options);
    return res.retried;
  }

  /** Deletes a job that is not active (cancel an active one first: FAILED_PRECONDITION). */
  async deleteJob(jobId: string, options: CallOptions = {}): Promise<void> {
    await this.once("DeleteJob", this.raw.deleteJob.bind(this.raw), { jobId }, options);
  }

  /** Deletes every job of `queue` in `states` (never active ones); resolves with how many. */
  async purgeQueue(queue: string, states: JobState[], options: CallOptions = {}): Promise<number> {
    const res = await this.once("PurgeQueue", this.raw.purgeQueue.bind(this.raw), { queue, states: states.map(jobStateNumber) }, options);
    return res.deleted;
  }

  /** The worker streams connected to any instance (serving `queue` only, when given). */
  async listWorkers(queue = "", options: CallOptions = {}): Promise<WorkerInfo[]> {
    const res = await this.read("ListWorkers", this.raw.listWorkers.bind(this.raw), { queue }, options);
    return res.workers.map(toWorkerInfo);
  }

  /** The settings `queue` holds, and those in effect (the server's flags for the rest). */
  async getQueueSettings(queue: string, options: CallOptions = {}): Promise<QueueSettingsView> {
    const res = await this.read("GetQueueSettings", this.raw.getQueueSettings.bind(this.raw), { queue }, options);
    return { settings: fromQueueSettings(res.settings), effective: fromQueueSettings(res.effective) };
  }

  /**
   * Sets the fields of `settings` given and clears those named in `clear` (their flag applies
   * again), at run time; resolves with the settings as they now are. An invalid value rejects
   * with RpcError INVALID_ARGUMENT naming the field (by its proto name: `max_attempts`).
   */
  async setQueueSettings(
    queue: string,
    settings: QueueSettings,
    change: { clear?: QueueSettingName[] } = {},
    options: CallOptions = {},
  ): Promise<QueueSettingsView> {
    const request = { queue, settings: toQueueSettings(settings), clear: (change.clear ?? []).map(protoSettingName) };
    const res = await this.read("SetQueueSettings", this.raw.setQueueSettings.bind(this.raw), request, options);
    return { settings: fromQueueSettings(res.settings), effective: fromQueueSettings(res.effective) };
  }

  // ---- schedules --------------------------------------------------------------------------------

  /**
   * Creates a schedule, or replaces the definition of the one of its name (its pause and how far
   * it has fired are kept). Resolves with it as stored, and whether it was created.
   */
  async upsertSchedule(spec: ScheduleSpec, options: CallOptions = {}): Promise<{ schedule: Schedule; created: boolean }> {
    const request = { schedule: toScheduleDefinition(spec) };
    const res = await this.once("UpsertSchedule", this.rawSchedules.upsertSchedule.bind(this.rawSchedules), request, options);
    return { schedule: new Schedule(required("UpsertSchedule", res.schedule)), created: res.created };
  }

  /** One schedule, with its next fire time. Unknown: NOT_FOUND. */
  async getSchedule(queue: string, name: string, options: CallOptions = {}): Promise<Schedule> {
    const res = await this.read("GetSchedule", this.rawSchedules.getSchedule.bind(this.rawSchedules), { queue, name }, options);
    return new Schedule(required("GetSchedule", res.schedule));
  }

  /** Every schedule of `queue`, sorted by name (read page after page, each page its own deadline). */
  async listSchedules(queue: string, options: CallOptions = {}): Promise<Schedule[]> {
    const out: Schedule[] = [];
    let pageToken = "";
    do {
      const request = { queue, pageSize: 1000, pageToken };
      const res = await this.read("ListSchedules", this.rawSchedules.listSchedules.bind(this.rawSchedules), request, options);
      out.push(...res.schedules.map((s) => new Schedule(s)));
      pageToken = res.nextPageToken;
    } while (pageToken !== "");
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** Deletes a schedule; the jobs it added stay. Unknown: NOT_FOUND. */
  async deleteSchedule(queue: string, name: string, options: CallOptions = {}): Promise<void> {
    await this.once("DeleteSchedule", this.rawSchedules.deleteSchedule.bind(this.rawSchedules), { queue, name }, options);
  }

  /** Stops a schedule firing; the due times passing meanwhile are missed fires. */
  async pauseSchedule(queue: string, name: string, options: CallOptions = {}): Promise<void> {
    await this.read("PauseSchedule", this.rawSchedules.pauseSchedule.bind(this.rawSchedules), { queue, name }, options);
  }

  /** Lets a paused schedule fire again (missed times follow its `missedFires`). */
  async resumeSchedule(queue: string, name: string, options: CallOptions = {}): Promise<void> {
    await this.read("ResumeSchedule", this.rawSchedules.resumeSchedule.bind(this.rawSchedules), { queue, name }, options);
  }

  /** Adds one job from the schedule's template now, whatever its timetable or pause; resolves with its id. */
  async triggerSchedule(queue: string, name: string, options: CallOptions = {}): Promise<string> {
    const res = await this.once("TriggerSchedule", this.rawSchedules.triggerSchedule.bind(this.rawSchedules), { queue, name }, options);
    return res.jobId;
  }

  /** Closes the channel. Calls in progress fail with CANCELLED. */
  close(): void {
    this.raw.close();
  }

  /**
   * The idempotency key to send ("" for none), and whether this client generated it for its own
   * retries: then it is sent marked as such, and the server remembers it only for its retry
   * window instead of the idempotency window of a key the caller chose.
   */
  private keyFor(given: string | undefined): { key: string; generated: boolean } {
    if (given !== undefined) return { key: given, generated: false };
    return this.autoKey ? { key: randomBytes(16).toString("base64url"), generated: true } : { key: "", generated: false };
  }

  private context(options: CallOptions): CallContext {
    return {
      deadline: Date.now() + (options.deadlineMs ?? this.deadlineMs),
      signal: options.signal,
      metadata: this.metadata,
    };
  }

  /** A call that is safe to repeat (a read, or idempotent): retried on UNAVAILABLE. */
  private read<Req, Res>(
    name: string,
    method: Parameters<typeof unary<Req, Res>>[1],
    request: Req,
    options: CallOptions,
  ): Promise<Res> {
    const ctx = this.context(options);
    return retrying(() => unary(name, method, request, ctx), {
      policy: this.retry,
      deadline: ctx.deadline,
      signal: ctx.signal,
      retryable: (err) => hasStatus(err, Status.UNAVAILABLE),
    });
  }

  /** A call that is not safe to repeat: tried once. */
  private once<Req, Res>(name: string, method: Parameters<typeof unary<Req, Res>>[1], request: Req, options: CallOptions): Promise<Res> {
    return unary(name, method, request, this.context(options));
  }
}

/** A response's message field that the server always sets. */
function required<T>(method: string, value: T | undefined): T {
  if (value === undefined) throw new RpcError(method, Status.INTERNAL, "the response is missing its message");
  return value;
}
