/**
 * The worker side: one GetJob stream, handlers by job type, acknowledgements, reconnection and
 * graceful shutdown.
 *
 * Invariants (the reasons behind the code):
 * - Concurrency is the stream's credit (`max_in_flight = concurrency`) and nothing else: the
 *   server sends a job only while the stream holds fewer unanswered jobs than that, and a job's
 *   credit comes back only with its answer (CompleteJob, FailJob or ReturnJob). Every answer is
 *   sent after its handler has settled, so at most `concurrency` handlers ever run at once;
 *   there is no prefetch and no local queue.
 * - A job revoked for timeout or a lost lease has its `signal` aborted and is never completed or
 *   failed on its own account. The server keeps its credit used until the worker answers, so
 *   once the handler has settled the worker sends one FailJob with the revoked token purely to
 *   give the credit back; the server answers FAILED_PRECONDITION and leaves the job unchanged.
 *   A job revoked because it was cancelled is answered normally (the server accepts it and the
 *   job ends cancelled).
 * - When the stream ends (server gone, network cut), the server takes back its unanswered jobs,
 *   so their signals are aborted. The worker waits for those handlers to settle before it
 *   reconnects (otherwise old and new handlers would together exceed concurrency), then
 *   reconnects with jittered exponential backoff.
 * - Drain (the server is going away): the server sends nothing more on this stream; the worker
 *   finishes and answers what it holds, then ends the stream and reconnects.
 * - Stop (SIGTERM / SIGINT / `stop()`): GetJob is server-streaming, so the worker cannot tell
 *   the server "send no more", and any answer frees credit the server may refill at once. Jobs
 *   that arrive while stopping are never started; they are handed back with ReturnJob. To avoid
 *   a return/refill ping-pong for the whole stop, every answer (results and returns) is held
 *   until the last running handler settles (or until 2 s before the job's own deadline), then
 *   all are sent together and the stream ends right after. Jobs the server still sends in that
 *   last instant go back when the stream ends, counted as a lost delivery (a protocol limit).
 */
import { hostname } from "node:os";

import type { ClientReadableStream, Metadata, StatusObject } from "@grpc/grpc-js";

import { buildMetadata, createRawClient, type ConnectionOptions } from "./connection";
import {
  JobAbortedError,
  LeaseLostError,
  PermanentError,
  RetryAfterError,
  RpcError,
  Status,
  hasStatus,
  statusName,
  type AbortReason,
} from "./errors";
import * as pb from "./gen/jobwire/v1/jobwire";
import { DEFAULT_RETRY, retrying, unary, type UnaryMethod } from "./internal/rpc";
import { backoffDelay, durationToMs, msToDuration, sleepUnlessAborted } from "./internal/time";
import { consoleLogger, defaultLogger, type Logger } from "./logger";
import { decodeJson, decodeText, encodeValue } from "./payload";

/** Runs one job. Its return value becomes the job's result; a throw fails the attempt. */
export type Handler<R = unknown> = (job: ActiveJob) => R | Promise<R>;

export interface WorkerOptions extends ConnectionOptions {
  /** Queues to serve, 1 to 32, in strict priority order (earlier queues first). */
  queues: string[];
  /** Handlers running at once = the stream's max_in_flight, 1 to 1,000. Default 10. */
  concurrency?: number;
  /** Shown to operators. Default `<hostname>-<pid>`. */
  workerId?: string;
  /** Free-form labels shown to operators (at most 32). */
  labels?: Record<string, string>;
  /** `run()` stops the worker on SIGTERM / SIGINT (a second signal aborts handlers). Default true. */
  handleSignals?: boolean;
  /** Reconnect backoff: first wait (default 100 ms), doubling with jitter up to `maxDelayMs` (default 10 s). */
  reconnect?: { initialDelayMs?: number; maxDelayMs?: number };
  /** Time allowed to deliver one answer (CompleteJob / FailJob), retries on UNAVAILABLE included. Default 30 s. */
  ackDeadlineMs?: number;
  /** Where the worker reports what it does. Default: warnings and errors to stderr. */
  logger?: Logger;
}

export interface StopOptions {
  /**
   * Abort the signals of handlers still running after this many ms; their jobs go back to the
   * queue when the stream ends (without using up an attempt). Default: wait for them.
   */
  timeoutMs?: number;
}

/** A job being run by this worker, handed to its handler. */
export class ActiveJob {
  /** The job id: `<queue>/<ULID>`. */
  readonly id: string;
  readonly queue: string;
  readonly type: string;
  /** The raw payload bytes. */
  readonly payload: Buffer;
  readonly headers: Readonly<Record<string, string>>;
  readonly priority: number;
  /** This attempt's number, from 1 (lost deliveries do not count). */
  readonly attempt: number;
  readonly maxAttempts: number;
  /** Earlier deliveries lost because their stream ended without an answer. */
  readonly lostDeliveries: number;
  readonly createdAt: Date | undefined;
  /** The lease token of this delivery (opaque; the worker passes it on every answer). */
  readonly leaseToken: string;
  /** Fires when this worker no longer holds the job; `signal.reason` is a JobAbortedError. */
  readonly signal: AbortSignal;
  /** For a job of a session: the session's id, state (JSON text) and version at delivery. */
  readonly session: Readonly<{ id: string; state: string; version: number }> | undefined;
  private currentDeadline: Date | undefined;
  private readonly lease: LeaseOps;

  /** @internal */
  constructor(job: pb.Job, signal: AbortSignal, lease: LeaseOps) {
    this.id = job.id;
    this.queue = job.queue;
    this.type = job.type;
    this.payload = job.payload;
    this.headers = job.headers;
    this.priority = job.priority;
    this.attempt = job.attempt;
    this.maxAttempts = job.maxAttempts;
    this.lostDeliveries = job.lostDeliveries;
    this.createdAt = job.createdAt;
    this.leaseToken = job.leaseToken;
    this.currentDeadline = job.deadline;
    this.signal = signal;
    this.session = job.session ? { id: job.session.sessionId, state: job.session.state, version: job.session.version } : undefined;
    this.lease = lease;
  }

  /** When this attempt times out unless extended (Redis server clock). */
  get deadline(): Date | undefined {
    return this.currentDeadline;
  }

  /** True when a failure now would send the job to the dead-letter set. */
  get isLastAttempt(): boolean {
    return this.attempt >= this.maxAttempts;
  }

  /** The payload parsed as JSON (`undefined` when empty). Throws PayloadError on bad JSON. */
  json<T = unknown>(): T {
    return decodeJson<T>(this.payload, `payload of job ${this.id}`);
  }

  /** The payload as UTF-8 text. */
  text(): string {
    return decodeText(this.payload);
  }

  /**
   * Pushes this attempt's deadline to now + `ms` (ExtendLease; 1 ms to 24 h) and returns it.
   * Throws LeaseLostError when the lease is gone (the job timed out or was revoked).
   */
  async extend(ms: number): Promise<Date> {
    this.currentDeadline = await this.lease.extend(ms);
    return this.currentDeadline;
  }

  /**
   * Stores progress on the job (ReportProgress; at most 64 KiB, encoded like a result) for
   * `JobInfo.progress` and watchers. Throws LeaseLostError when the lease is gone.
   */
  async progress(value: unknown): Promise<void> {
    await this.lease.progress(value);
  }
}

/** What an ActiveJob may ask of the lease it runs under. */
interface LeaseOps {
  extend(ms: number): Promise<Date>;
  progress(value: unknown): Promise<void>;
}

type Outcome =
  | { kind: "complete"; result: Buffer }
  | { kind: "fail"; error: string; retryable?: boolean; retryAfterMs?: number }
  /** Hand the job back unprocessed (ReturnJob). */
  | { kind: "return" };

interface Task {
  readonly job: pb.Job;
  readonly controller: AbortController;
  /** Set when the signal was aborted, with why. */
  abortReason?: AbortReason;
  /** True while its handler runs. */
  running: boolean;
}

interface SessionEnd {
  /** The stream got as far as the server's response headers or a message. */
  healthy: boolean;
  /** The server asked this stream to drain. */
  drained: boolean;
  /** A status that reconnecting cannot fix (bad request, auth). */
  fatal?: RpcError;
}

/** Status codes after which reconnecting is pointless: the request itself is refused. */
const FATAL_CODES = new Set<number>([
  Status.INVALID_ARGUMENT,
  Status.UNIMPLEMENTED,
  Status.UNAUTHENTICATED,
  Status.PERMISSION_DENIED,
]);

/** While stopping, a finished job's answer is held at most until this long before its deadline. */
const HOLD_MARGIN_MS = 2000;

/**
 * A jobwire worker. Register handlers with `handle()`, then `run()` (resolves once stopped) or
 * `start()` / `stop()`.
 *
 * ```ts
 * const worker = new Worker({ queues: ["emails"], concurrency: 8 });
 * worker.handle("welcome", async (job) => sendWelcome(job.json<{ to: string }>()));
 * await worker.run(); // until SIGTERM / SIGINT
 * ```
 */
export class Worker {
  readonly workerId: string;
  readonly concurrency: number;
  readonly queues: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
  /** @internal */ readonly raw: pb.QueueServiceClient;
  /** @internal */ readonly metadata: Metadata;
  /** @internal */ readonly log: Logger;
  /** @internal */ readonly ackDeadlineMs: number;
  private readonly options: WorkerOptions;
  private readonly handlers = new Map<string, Handler>();
  private readonly stopController = new AbortController();
  private session: Session | undefined;
  private done: Promise<void> | undefined;
  private stopTimer: NodeJS.Timeout | undefined;

  constructor(options: WorkerOptions) {
    if (!Array.isArray(options.queues) || options.queues.length === 0) {
      throw new TypeError("queues: give at least one queue");
    }
    const concurrency = options.concurrency ?? 10;
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 1000) {
      throw new RangeError(`concurrency must be an integer from 1 to 1000, got ${concurrency}`);
    }
    this.options = options;
    this.concurrency = concurrency;
    this.queues = [...options.queues];
    this.labels = { ...(options.labels ?? {}) };
    this.workerId = options.workerId ?? `${hostname()}-${process.pid}`;
    this.ackDeadlineMs = options.ackDeadlineMs ?? 30_000;
    this.log = options.logger ?? (process.env["JOBWIRE_LOG"] === "debug" ? consoleLogger : defaultLogger);
    this.metadata = buildMetadata(options);
    // Keepalive pings notice a dead connection on an idle stream within ~40 s.
    this.raw = createRawClient(options, {
      "grpc.keepalive_time_ms": 30_000,
      "grpc.keepalive_timeout_ms": 10_000,
    });
  }

  /** Registers the handler of one job type (replacing any earlier one). Returns the worker. */
  handle<R>(type: string, handler: Handler<R>): this {
    this.handlers.set(type, handler as Handler);
    return this;
  }

  /** True once `stop()` was called (or a signal arrived). */
  get stopping(): boolean {
    return this.stopController.signal.aborted;
  }

  /** Handlers running right now. */
  get running(): number {
    return this.session?.runningCount() ?? 0;
  }

  /** Starts consuming in the background. Errors that end the worker surface from `run()` / `stop()`. */
  start(): void {
    if (this.done) throw new Error("worker already started");
    if (this.handlers.size === 0) throw new Error("register at least one handler with handle() before start()");
    this.done = this.loop();
    this.done.catch(() => {}); // Reported by run(); avoid an unhandled rejection when only stop() is used.
  }

  /**
   * Starts (unless started) and resolves once the worker has stopped: after `stop()`, or after
   * SIGTERM / SIGINT when `handleSignals` is on. Rejects when the server refuses the stream for
   * good (INVALID_ARGUMENT, UNAUTHENTICATED...).
   */
  async run(): Promise<void> {
    if (!this.done) this.start();
    const handleSignals = this.options.handleSignals ?? true;
    const onSignal = (signal: NodeJS.Signals): void => {
      if (!this.stopping) {
        this.log.info("stopping: finishing running jobs (send the signal again to abort them)", {
          signal,
          running: this.running,
        });
        void this.stop();
      } else {
        this.log.warn("second signal: aborting running jobs", { signal });
        this.session?.abortAll("stopping");
      }
    };
    if (handleSignals) {
      process.on("SIGTERM", onSignal);
      process.on("SIGINT", onSignal);
    }
    try {
      await this.done;
    } finally {
      if (handleSignals) {
        process.off("SIGTERM", onSignal);
        process.off("SIGINT", onSignal);
      }
    }
  }

  /**
   * Stops taking jobs, lets running handlers finish and answers them, ends the stream and
   * closes the channel. Resolves when all of that is done.
   */
  async stop(options: StopOptions = {}): Promise<void> {
    if (!this.stopping) {
      this.stopController.abort();
      this.session?.onStop();
    }
    if (options.timeoutMs !== undefined) {
      clearTimeout(this.stopTimer);
      this.stopTimer = setTimeout(() => this.session?.abortAll("stopping"), options.timeoutMs);
    }
    if (!this.done) {
      this.raw.close();
      return;
    }
    try {
      await this.done;
    } catch {
      // Already reported to run().
    } finally {
      clearTimeout(this.stopTimer);
    }
  }

  /** @internal */
  handlerFor(type: string): Handler | undefined {
    return this.handlers.get(type);
  }

  private async loop(): Promise<void> {
    const initial = this.options.reconnect?.initialDelayMs ?? 100;
    const max = this.options.reconnect?.maxDelayMs ?? 10_000;
    let failures = 0;
    try {
      while (!this.stopping) {
        const session = new Session(this);
        this.session = session;
        const end = await session.run();
        this.session = undefined;
        if (end.fatal) throw end.fatal;
        if (this.stopping) break;
        if (end.healthy) failures = 0;
        const delay = backoffDelay(failures++, initial, max);
        this.log.info(end.drained ? "stream drained; reconnecting" : "stream ended; reconnecting", {
          delayMs: Math.round(delay),
        });
        await sleepUnlessAborted(delay, this.stopController.signal);
      }
    } finally {
      this.raw.close();
      this.log.info("worker stopped", { workerId: this.workerId });
    }
  }
}

/** One GetJob stream and the jobs delivered on it. */
class Session {
  private call: ClientReadableStream<pb.GetJobResponse> | undefined;
  /** Delivered jobs not yet answered (running, answering, or held back), by lease token. */
  private readonly tasks = new Map<string, Task>();
  private healthy = false;
  private drained = false;
  private cancelled = false;
  private status: StatusObject | undefined;
  private streamEnded = false;
  private finished = false;
  /** Resolved when no handler of this session is running (releases held answers). */
  private idleWaiters: (() => void)[] = [];
  private resolveEnd!: (end: SessionEnd) => void;

  constructor(private readonly worker: Worker) {}

  run(): Promise<SessionEnd> {
    const w = this.worker;
    return new Promise<SessionEnd>((resolve) => {
      this.resolveEnd = resolve;
      const request = pb.GetJobRequest.fromPartial({
        workerId: w.workerId,
        labels: { ...w.labels },
        queues: [...w.queues],
        maxInFlight: w.concurrency,
      });
      const call = w.raw.getJob(request, w.metadata.clone());
      this.call = call;
      call.on("metadata", () => {
        this.healthy = true;
        w.log.debug("stream open", { workerId: w.workerId, concurrency: w.concurrency });
      });
      call.on("data", (msg: pb.GetJobResponse) => this.onMessage(msg));
      call.on("error", () => {
        // The same status arrives on "status"; this listener keeps the error from being thrown.
      });
      call.on("status", (status: StatusObject) => {
        this.status = status;
        this.maybeEnded();
      });
      // "status" can come before buffered messages are read; the stream is over at "end".
      for (const event of ["end", "close"]) {
        call.on(event, () => {
          this.streamEnded = true;
          this.maybeEnded();
        });
      }
      if (w.stopping) this.onStop();
    });
  }

  runningCount(): number {
    let n = 0;
    for (const t of this.tasks.values()) if (t.running) n++;
    return n;
  }

  /** stop() was called: end the stream once everything held is answered. */
  onStop(): void {
    this.checkDone();
  }

  /** Aborts every running handler with `reason`. */
  abortAll(reason: AbortReason): void {
    for (const task of this.tasks.values()) if (task.running) this.abort(task, reason);
  }

  private onMessage(msg: pb.GetJobResponse): void {
    this.healthy = true;
    const m = msg.message;
    switch (m?.$case) {
      case "job":
        this.onJob(m.value);
        break;
      case "revoke":
        this.onRevoke(m.value);
        break;
      case "drain":
        this.drained = true;
        this.worker.log.info("server asked to drain; finishing running jobs", {
          running: this.runningCount(),
          graceMs: durationToMs(m.value.grace),
        });
        this.checkDone();
        break;
      case "ping":
      case undefined: // A message kind newer than this client: ignore it.
        break;
    }
  }

  private onJob(job: pb.Job): void {
    const log = this.worker.log;
    const task: Task = { job, controller: new AbortController(), running: false };
    if (this.cancelled) return; // The stream is ending; the server hands the job back.
    this.tasks.set(job.leaseToken, task);
    if (this.worker.stopping) {
      // Never started. Handed back with ReturnJob (not an attempt, not a lost delivery) together
      // with the last answers, so its credit stays used meanwhile and nothing else is sent.
      log.debug("job arrived while stopping; it will be handed back", { jobId: job.id });
      void this.settle(task, { kind: "return" });
      return;
    }
    const handler = this.worker.handlerFor(job.type);
    log.debug("job received", { jobId: job.id, type: job.type, attempt: job.attempt });
    if (!handler) {
      log.warn("no handler for job type; failing the attempt", { jobId: job.id, type: job.type });
      void this.settle(task, {
        kind: "fail",
        error: `no handler registered for job type "${job.type}" on worker ${this.worker.workerId}`,
      });
      return;
    }
    task.running = true;
    void this.runTask(task, handler);
  }

  private onRevoke(revoke: pb.Revoke): void {
    const task = this.tasks.get(revoke.leaseToken);
    if (!task) return; // Already answered.
    const reason: AbortReason =
      revoke.reason === pb.RevokeReason.REVOKE_REASON_TIMEOUT
        ? "timeout"
        : revoke.reason === pb.RevokeReason.REVOKE_REASON_CANCELLED
          ? "cancelled"
          : "lease-lost";
    this.worker.log.info("job revoked by the server", { jobId: revoke.jobId, reason });
    this.abort(task, reason);
  }

  private abort(task: Task, reason: AbortReason): void {
    if (task.abortReason !== undefined) return;
    task.abortReason = reason;
    task.controller.abort(new JobAbortedError(task.job.id, reason));
  }

  private async runTask(task: Task, handler: Handler): Promise<void> {
    const job = new ActiveJob(task.job, task.controller.signal, {
      extend: (ms) => this.extend(task, ms),
      progress: (value) => this.progress(task, value),
    });
    let outcome: Outcome;
    try {
      const value: unknown = await handler(job);
      outcome = { kind: "complete", result: encodeValue(value, `result of job ${job.id}`) };
    } catch (err) {
      outcome = failure(err);
      if (task.abortReason === undefined) {
        this.worker.log.warn("job failed", { jobId: job.id, type: job.type, attempt: job.attempt, error: describe(err, true) });
      }
    }
    task.running = false;
    if (this.runningCount() === 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
    await this.settle(task, outcome);
  }

  /** Answers a task whose handler has settled (or that never ran), then forgets it. */
  private async settle(task: Task, outcome: Outcome): Promise<void> {
    try {
      const answer = this.answerFor(task, outcome);
      if (answer !== undefined) {
        if (this.worker.stopping && this.runningCount() > 0) await this.holdWhileStopping(task);
        if (!this.status) await this.answer(task, answer.outcome, answer.expectStale);
        else if (answer.outcome.kind === "complete") await this.answer(task, answer.outcome, true);
      }
    } catch (err) {
      this.worker.log.error("could not answer a job", { jobId: task.job.id, error: describe(err, false) });
    } finally {
      this.tasks.delete(task.job.leaseToken);
      this.checkDone();
    }
  }

  /**
   * What to tell the server about a settled task, if anything:
   * - revoked (timeout, lease lost): never acked on its own account; a FailJob with the revoked
   *   token only gives the credit back (the server answers FAILED_PRECONDITION);
   * - cancelled: the handler's answer is accepted and the job ends cancelled;
   * - aborted by stop()'s timeout without a result: handed back with ReturnJob;
   * - aborted because the stream ended, without a result: nothing (the server took it back);
   *   with a result, CompleteJob is still tried (it succeeds if the lease survived, e.g. the
   *   server instance died and the lease has not expired yet).
   */
  private answerFor(task: Task, outcome: Outcome): { outcome: Outcome; expectStale: boolean } | undefined {
    switch (task.abortReason) {
      case "timeout":
      case "lease-lost":
        return { outcome: { kind: "fail", error: `revoked (${task.abortReason})` }, expectStale: true };
      case "stopping":
        return { outcome: outcome.kind === "complete" ? outcome : { kind: "return" }, expectStale: false };
      case "stream-ended":
        return outcome.kind === "complete" ? { outcome, expectStale: true } : undefined;
      case "cancelled":
      case undefined:
        return { outcome, expectStale: false };
    }
  }

  /** While stopping: wait until no handler runs, or until 2 s before this job's deadline. */
  private async holdWhileStopping(task: Task): Promise<void> {
    const deadline = task.job.deadline?.getTime();
    const maxHold = deadline === undefined ? Infinity : deadline - Date.now() - HOLD_MARGIN_MS;
    if (maxHold <= 0) return;
    const stop = new AbortController();
    const idle = new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    const timer = maxHold === Infinity ? new Promise<void>(() => {}) : sleepUnlessAborted(maxHold, stop.signal);
    await Promise.race([idle, timer]);
    stop.abort();
  }

  /** Sends CompleteJob / FailJob / ReturnJob, retrying UNAVAILABLE within the ack deadline. */
  private async answer(task: Task, outcome: Outcome, expectStale: boolean): Promise<void> {
    const w = this.worker;
    const job = task.job;
    const deadline = Date.now() + w.ackDeadlineMs;
    const ctx = { deadline, metadata: w.metadata };
    const ids = { jobId: job.id, leaseToken: job.leaseToken };
    const send = (): Promise<unknown> => {
      switch (outcome.kind) {
        case "complete":
          return unary("CompleteJob", w.raw.completeJob.bind(w.raw), pb.CompleteJobRequest.fromPartial({ ...ids, result: outcome.result }), ctx);
        case "fail":
          return unary(
            "FailJob",
            w.raw.failJob.bind(w.raw),
            pb.FailJobRequest.fromPartial({
              ...ids,
              error: outcome.error,
              retryable: outcome.retryable,
              retryAfter: outcome.retryAfterMs === undefined ? undefined : msToDuration(outcome.retryAfterMs, "retryAfterMs"),
            }),
            ctx,
          );
        case "return":
          return unary("ReturnJob", w.raw.returnJob.bind(w.raw), pb.ReturnJobRequest.fromPartial(ids), ctx);
      }
    };
    try {
      await retrying(send, {
        policy: { ...DEFAULT_RETRY, maxAttempts: 1000 },
        deadline,
        retryable: (err) => hasStatus(err, Status.UNAVAILABLE) || hasStatus(err, Status.DEADLINE_EXCEEDED),
      });
      w.log.debug(`job answered: ${outcome.kind}`, { jobId: job.id });
    } catch (err) {
      if (hasStatus(err, Status.FAILED_PRECONDITION)) {
        if (expectStale) w.log.debug("answer refused: the lease was already gone, as expected", { jobId: job.id });
        else w.log.warn("lease lost before the answer; the job will run again", { jobId: job.id, answer: outcome.kind });
      } else if (outcome.kind === "complete" && (hasStatus(err, Status.RESOURCE_EXHAUSTED) || hasStatus(err, Status.INVALID_ARGUMENT))) {
        const details = err instanceof RpcError ? err.details : String(err);
        w.log.warn("result refused by the server; failing the attempt", { jobId: job.id, error: details });
        await this.answer(task, { kind: "fail", error: `result refused: ${details}` }, expectStale);
      } else {
        throw err;
      }
    }
  }

  /** A unary call about a held job, retried on UNAVAILABLE; FAILED_PRECONDITION becomes LeaseLostError. */
  private async leaseCall<Req, Res>(task: Task, name: string, method: UnaryMethod<Req, Res>, request: Req): Promise<Res> {
    const w = this.worker;
    const ctx = { deadline: Date.now() + w.ackDeadlineMs, metadata: w.metadata };
    try {
      return await retrying(() => unary(name, method, request, ctx), {
        policy: DEFAULT_RETRY,
        deadline: ctx.deadline,
        retryable: (err) => hasStatus(err, Status.UNAVAILABLE),
      });
    } catch (err) {
      if (hasStatus(err, Status.FAILED_PRECONDITION)) throw new LeaseLostError(task.job.id, { cause: err });
      throw err;
    }
  }

  private async extend(task: Task, ms: number): Promise<Date> {
    const w = this.worker;
    const res = await this.leaseCall(
      task,
      "ExtendLease",
      w.raw.extendLease.bind(w.raw),
      pb.ExtendLeaseRequest.fromPartial({ jobId: task.job.id, leaseToken: task.job.leaseToken, extendBy: msToDuration(ms, "extend(ms)") }),
    );
    if (!res.deadline) throw new RpcError("ExtendLease", Status.INTERNAL, "the response has no deadline");
    return res.deadline;
  }

  private async progress(task: Task, value: unknown): Promise<void> {
    const w = this.worker;
    await this.leaseCall(
      task,
      "ReportProgress",
      w.raw.reportProgress.bind(w.raw),
      pb.ReportProgressRequest.fromPartial({
        jobId: task.job.id,
        leaseToken: task.job.leaseToken,
        progress: encodeValue(value, "progress"),
      }),
    );
  }

  /** The stream has both reported its status and ended. */
  private maybeEnded(): void {
    if (!this.status || !this.streamEnded || this.finished) return;
    const status = this.status;
    if (!this.cancelled) {
      const level = status.code === Status.OK ? "info" : "warn";
      this.worker.log[level]("stream ended by the server", { code: statusName(status.code), details: status.details });
      this.abortAll("stream-ended");
    }
    this.checkDone();
  }

  /** Ends the stream once nothing is left to answer, when stopping or drained; resolves at the end. */
  private checkDone(): void {
    if (this.finished || this.tasks.size > 0) return;
    if (this.status && this.streamEnded) {
      this.finished = true;
      const code = this.status.code;
      const fatal = !this.cancelled && FATAL_CODES.has(code) ? new RpcError("GetJob", code, this.status.details) : undefined;
      this.resolveEnd({ healthy: this.healthy, drained: this.drained, ...(fatal ? { fatal } : {}) });
      return;
    }
    if ((this.worker.stopping || this.drained) && !this.cancelled && this.call) {
      this.cancelled = true;
      this.call.cancel();
    }
  }
}

function failure(err: unknown): Outcome & { kind: "fail" } {
  const error = describe(err, false);
  if (err instanceof PermanentError) return { kind: "fail", error, retryable: false };
  if (err instanceof RetryAfterError) return { kind: "fail", error, retryAfterMs: err.retryAfterMs };
  return { kind: "fail", error };
}

/** A thrown value as text: `Name: message` (with the stack when `stack` is true). */
function describe(err: unknown, stack: boolean): string {
  if (err instanceof Error) return stack && err.stack ? err.stack : `${err.name}: ${err.message}`;
  if (typeof err === "string") return err;
  try {
    return JSON.stringify(err) ?? String(err);
  } catch {
    return String(err);
  }
}
