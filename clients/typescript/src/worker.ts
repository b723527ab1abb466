/**
 * The worker side: one worker stream, handlers by job type, acknowledgements, reconnection and
 * graceful shutdown.
 *
 * Invariants (the reasons behind the code):
 * - The stream is a Work call by default: jobs arrive on it several per message and every ack
 *   (complete, fail, return, extend, progress) goes out on it as a WorkAck answered by its
 *   ack_id, so an ack costs no call of its own. An ack is written at once when no write is
 *   under way; acks ready while one is (or in the same tick) go together in the next message.
 *   A refused ack rejects with the RpcError its unary RPC would have given; an ack answered
 *   UNAVAILABLE is sent again while the stream lives. `protocol: "unary"` uses GetJob and one
 *   unary call per ack instead.
 * - Concurrency is the stream's credit (`max_in_flight = concurrency`, plus `prefetch`): the
 *   server sends a job only while the stream holds fewer unanswered jobs than that, and a job's
 *   credit comes back only with its answer (complete, fail or return). Every answer is sent
 *   after its handler has settled, so at most `concurrency` handlers ever run at once. Jobs
 *   beyond that (prefetch) wait in delivery order for a free handler, and each one handed to a
 *   handler is marked `started` on the next message; on stop or drain they are handed back.
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
 * - Stop (SIGTERM / SIGINT / `stop()`): any answer frees credit the server may refill at once.
 *   Jobs that arrive while stopping are never started; they are handed back with a return that
 *   also asks the server to send nothing more on the stream (`stop_stream`). To avoid a
 *   return/refill ping-pong for the whole stop, every answer (results and returns) is held
 *   until the last running handler settles (or until 2 s before the job's own deadline), then
 *   all are sent together and the stream ends right after. Jobs the server still sends in that
 *   last instant go back when the stream ends, counted as a lost delivery (a protocol limit).
 */
import { hostname } from "node:os";

import type { ClientDuplexStream, ClientReadableStream, Metadata, StatusObject } from "@grpc/grpc-js";

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
import { DEFAULT_RETRY, retrying, unary } from "./internal/rpc";
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
  /**
   * `"work"` (default): one Work stream carries the jobs and the acks, several per message.
   * `"unary"`: a GetJob stream and one unary call per ack, for a server without Work.
   */
  protocol?: "work" | "unary";
  /**
   * Jobs held beyond `concurrency`, not started yet, so the next one is already here when a
   * handler returns; 0 to 1,000, default 0. They are leased from delivery (their deadlines run
   * while they wait) and handed back on stop or drain. Work protocol only.
   */
  prefetch?: number;
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
  readonly prefetch: number;
  readonly protocol: "work" | "unary";
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
    this.protocol = options.protocol ?? "work";
    const prefetch = options.prefetch ?? 0;
    if (!Number.isInteger(prefetch) || prefetch < 0 || prefetch > 1000) {
      throw new RangeError(`prefetch must be an integer from 0 to 1000, got ${prefetch}`);
    }
    if (prefetch > 0 && this.protocol === "unary") throw new RangeError("prefetch needs the work protocol");
    this.options = options;
    this.concurrency = concurrency;
    this.prefetch = prefetch;
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

/** One worker stream (Work, or GetJob with unary acks) and the jobs delivered on it. */
class Session {
  /**
   * Ends this side of the stream: a Work call is closed (the server answers the acks it took
   * in, then ends it); GetJob is cancelled.
   */
  private closeStream: (() => void) | undefined;
  /** Where acks go: the Work stream's outbox, or one unary call each. */
  private acker: Acker;
  /** Delivered jobs not yet answered (running, answering, or held back), by lease token. */
  private readonly tasks = new Map<string, Task>();
  /** Prefetched jobs waiting for a free handler, in delivery order. */
  private readonly queued: { task: Task; handler: Handler }[] = [];
  private healthy = false;
  private drained = false;
  private cancelled = false;
  private status: StatusObject | undefined;
  private streamEnded = false;
  private finished = false;
  /** Resolved when no handler of this session is running (releases held answers). */
  private idleWaiters: (() => void)[] = [];
  private resolveEnd!: (end: SessionEnd) => void;

  constructor(private readonly worker: Worker) {
    this.acker = unaryAcker(worker);
  }

  run(): Promise<SessionEnd> {
    const w = this.worker;
    return new Promise<SessionEnd>((resolve) => {
      this.resolveEnd = resolve;
      const opening = { workerId: w.workerId, labels: { ...w.labels }, queues: [...w.queues], maxInFlight: w.concurrency };
      let call: ClientReadableStream<pb.GetJobResponse> | ClientDuplexStream<pb.WorkRequest, pb.WorkResponse>;
      if (w.protocol === "work") {
        const work = w.raw.work(w.metadata.clone());
        const open = pb.WorkOpen.fromPartial({ ...opening, prefetch: w.prefetch });
        work.write(pb.WorkRequest.fromPartial({ message: { $case: "open", value: open } }));
        const outbox = new Outbox(work, w.prefetch > 0);
        this.acker = outbox;
        work.on("data", (msg: pb.WorkResponse) => this.onMessage(msg.message));
        call = work;
        this.closeStream = () => work.end();
      } else {
        const unaryCall = w.raw.getJob(pb.GetJobRequest.fromPartial(opening), w.metadata.clone());
        unaryCall.on("data", (msg: pb.GetJobResponse) => this.onMessage(msg.message));
        call = unaryCall;
        this.closeStream = () => unaryCall.cancel();
      }
      call.on("metadata", () => {
        this.healthy = true;
        w.log.debug("stream open", { workerId: w.workerId, concurrency: w.concurrency, protocol: w.protocol });
      });
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

  /** stop() was called: hand back what has not started; end the stream once everything held is answered. */
  onStop(): void {
    this.handBackQueued();
    this.checkDone();
  }

  /** Prefetched jobs not started go back to the head of their queue (stop or drain). */
  private handBackQueued(): void {
    for (const { task } of this.queued.splice(0)) void this.settle(task, { kind: "return" });
  }

  /** Aborts every running handler with `reason`. */
  abortAll(reason: AbortReason): void {
    for (const task of this.tasks.values()) if (task.running) this.abort(task, reason);
  }

  private onMessage(m: pb.GetJobResponse["message"] | pb.WorkResponse["message"]): void {
    this.healthy = true;
    switch (m?.$case) {
      case "job":
        this.onJob(m.value);
        break;
      case "jobs":
        for (const job of m.value.jobs) this.onJob(job);
        break;
      case "answers":
        this.acker.answered(m.value.answers);
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
        this.handBackQueued();
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
    if (this.worker.stopping || this.drained) {
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
    if (this.runningCount() >= this.worker.concurrency) this.queued.push({ task, handler });
    else this.startTask(task, handler);
  }

  private startTask(task: Task, handler: Handler): void {
    task.running = true;
    this.acker.started(task.job.leaseToken);
    void this.runTask(task, handler);
  }

  /** A handler is free: start the next prefetched job. */
  private startNext(): void {
    const next = this.queued.shift();
    if (next) this.startTask(next.task, next.handler);
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
    const waiting = this.queued.findIndex((q) => q.task === task);
    if (waiting >= 0) {
      this.queued.splice(waiting, 1);
      void this.settle(task, { kind: "fail", error: "revoked before it started" });
    }
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
    this.startNext();
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
        else if (answer.outcome.kind === "complete" && this.acker.outlivesStream) await this.answer(task, answer.outcome, true);
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
    const ids = { jobId: job.id, leaseToken: job.leaseToken };
    const ack = ((): AckRequest => {
      switch (outcome.kind) {
        case "complete":
          return { $case: "complete", value: pb.CompleteJobRequest.fromPartial({ ...ids, result: outcome.result }) };
        case "fail":
          return {
            $case: "fail",
            value: pb.FailJobRequest.fromPartial({
              ...ids,
              error: outcome.error,
              retryable: outcome.retryable,
              retryAfter: outcome.retryAfterMs === undefined ? undefined : msToDuration(outcome.retryAfterMs, "retryAfterMs"),
            }),
          };
        case "return":
          // Returns happen only on stop and drain: the stream is to get no more jobs.
          return { $case: "giveBack", value: pb.ReturnJobRequest.fromPartial({ ...ids, stopStream: true }) };
      }
    })();
    try {
      await retrying(() => this.acker.send(ack, deadline), {
        policy: { ...DEFAULT_RETRY, maxAttempts: 1000 },
        deadline,
        retryable: (err) => this.acker.open && (hasStatus(err, Status.UNAVAILABLE) || hasStatus(err, Status.DEADLINE_EXCEEDED)),
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

  /** An ack about a held job, retried on UNAVAILABLE; FAILED_PRECONDITION becomes LeaseLostError. */
  private async leaseCall(task: Task, ack: AckRequest): Promise<AckResult> {
    const deadline = Date.now() + this.worker.ackDeadlineMs;
    try {
      return await retrying(() => this.acker.send(ack, deadline), {
        policy: DEFAULT_RETRY,
        deadline,
        retryable: (err) => this.acker.open && hasStatus(err, Status.UNAVAILABLE),
      });
    } catch (err) {
      if (hasStatus(err, Status.FAILED_PRECONDITION)) throw new LeaseLostError(task.job.id, { cause: err });
      throw err;
    }
  }

  private async extend(task: Task, ms: number): Promise<Date> {
    const res = await this.leaseCall(task, {
      $case: "extend",
      value: pb.ExtendLeaseRequest.fromPartial({ jobId: task.job.id, leaseToken: task.job.leaseToken, extendBy: msToDuration(ms, "extend(ms)") }),
    });
    const deadline = res?.$case === "extend" ? res.value.deadline : undefined;
    if (!deadline) throw new RpcError("ExtendLease", Status.INTERNAL, "the response has no deadline");
    return deadline;
  }

  private async progress(task: Task, value: unknown): Promise<void> {
    await this.leaseCall(task, {
      $case: "progress",
      value: pb.ReportProgressRequest.fromPartial({
        jobId: task.job.id,
        leaseToken: task.job.leaseToken,
        progress: encodeValue(value, "progress"),
      }),
    });
  }

  /** The stream has both reported its status and ended. */
  private maybeEnded(): void {
    if (!this.status || !this.streamEnded || this.finished) return;
    this.acker.close();
    const status = this.status;
    if (!this.cancelled) {
      const level = status.code === Status.OK ? "info" : "warn";
      this.worker.log[level]("stream ended by the server", { code: statusName(status.code), details: status.details });
      this.abortAll("stream-ended");
      // The server took back the prefetched jobs too: nothing to answer for them.
      for (const { task } of this.queued.splice(0)) this.tasks.delete(task.job.leaseToken);
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
    if ((this.worker.stopping || this.drained) && !this.cancelled && this.closeStream) {
      this.cancelled = true;
      this.closeStream();
    }
  }
}

/** One ack, as a WorkAck carries it. */
type AckRequest = NonNullable<pb.WorkAck["ack"]>;
/** What an answered ack brings back (a FailJob or ExtendLease response). */
type AckResult = pb.WorkAnswer["result"];

/** The unary RPC each ack stands for, named in its errors. */
const ACK_METHODS: Record<AckRequest["$case"], string> = {
  complete: "CompleteJob",
  fail: "FailJob",
  progress: "ReportProgress",
  extend: "ExtendLease",
  giveBack: "ReturnJob",
};

/** Where a session's acks go. A refused ack rejects with the RpcError its unary RPC would. */
interface Acker {
  /** Acks may still be sent after the stream ended (unary calls do; a Work stream's die with it). */
  readonly outlivesStream: boolean;
  /** Sending (again) can still succeed. */
  readonly open: boolean;
  send(ack: AckRequest, deadline: number): Promise<AckResult>;
  /** A delivered job was handed to a handler. */
  started(leaseToken: string): void;
  answered(answers: pb.WorkAnswer[]): void;
  /** The stream ended: what is unanswered will never be. */
  close(): void;
}

/** One unary call per ack (the GetJob protocol). */
function unaryAcker(w: Worker): Acker {
  const call = async (ack: AckRequest, deadline: number): Promise<AckResult> => {
    const ctx = { deadline, metadata: w.metadata };
    const name = ACK_METHODS[ack.$case];
    switch (ack.$case) {
      case "complete":
        await unary(name, w.raw.completeJob.bind(w.raw), ack.value, ctx);
        return undefined;
      case "fail":
        return { $case: "fail", value: await unary(name, w.raw.failJob.bind(w.raw), ack.value, ctx) };
      case "progress":
        await unary(name, w.raw.reportProgress.bind(w.raw), ack.value, ctx);
        return undefined;
      case "extend":
        return { $case: "extend", value: await unary(name, w.raw.extendLease.bind(w.raw), ack.value, ctx) };
      case "giveBack":
        await unary(name, w.raw.returnJob.bind(w.raw), ack.value, ctx);
        return undefined;
    }
  };
  return { outlivesStream: true, open: true, send: call, started: () => {}, answered: () => {}, close: () => {} };
}

/**
 * The sending side of a Work stream. An ack is written at once when no write is under way;
 * acks (and `started` marks) that come while one is, or within the same tick, wait and go
 * together in the next message. Each caller waits for the answer carrying its ack_id.
 */
class Outbox implements Acker {
  readonly outlivesStream = false;
  open = true;
  private acks: pb.WorkAck[] = [];
  private startedTokens: string[] = [];
  private writing = false;
  private flushQueued = false;
  private nextAckId = 1;
  private readonly waiting = new Map<number, { method: string; resolve: (r: AckResult) => void; reject: (e: RpcError) => void }>();

  constructor(
    private readonly call: ClientDuplexStream<pb.WorkRequest, pb.WorkResponse>,
    private readonly reportStarted: boolean,
  ) {}

  send(ack: AckRequest): Promise<AckResult> {
    const method = ACK_METHODS[ack.$case];
    if (!this.open) return Promise.reject(new RpcError(method, Status.UNAVAILABLE, "the work stream ended"));
    const ackId = this.nextAckId++;
    return new Promise<AckResult>((resolve, reject) => {
      this.waiting.set(ackId, { method, resolve, reject });
      this.acks.push({ ackId, ack });
      this.queueFlush();
    });
  }

  started(leaseToken: string): void {
    if (!this.reportStarted || !this.open) return;
    this.startedTokens.push(leaseToken);
    this.queueFlush();
  }

  answered(answers: pb.WorkAnswer[]): void {
    for (const answer of answers) {
      const caller = this.waiting.get(answer.ackId);
      if (!caller) continue;
      this.waiting.delete(answer.ackId);
      if (answer.code === Status.OK) caller.resolve(answer.result);
      else caller.reject(new RpcError(caller.method, answer.code, answer.message));
    }
  }

  close(): void {
    this.open = false;
    this.acks = [];
    this.startedTokens = [];
    for (const caller of this.waiting.values()) {
      caller.reject(new RpcError(caller.method, Status.UNAVAILABLE, "the work stream ended before the answer"));
    }
    this.waiting.clear();
  }

  /** Writes at the end of this tick unless a write is under way (its end writes what waits). */
  private queueFlush(): void {
    if (this.writing || this.flushQueued) return;
    this.flushQueued = true;
    queueMicrotask(() => {
      this.flushQueued = false;
      this.flush();
    });
  }

  private flush(): void {
    if (this.writing || !this.open || (this.acks.length === 0 && this.startedTokens.length === 0)) return;
    const value = pb.WorkAcks.fromPartial({ acks: this.acks, started: this.startedTokens });
    this.acks = [];
    this.startedTokens = [];
    this.writing = true;
    this.call.write(pb.WorkRequest.fromPartial({ message: { $case: "acks", value } }), () => {
      this.writing = false;
      this.flush();
    });
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
