/**
 * One worker stream (a Work call, or GetJob with unary acks) and the jobs delivered on it: what
 * starts each handler, and the one answer each job's outcome calls for. The invariants it keeps
 * are listed at the top of `worker.ts`; the session write of a completion is answered while
 * its handler still holds its slot, so that a conflict (ABORTED) can run the handler again on
 * the session's fresh state without exceeding `concurrency`.
 */
import type { ClientDuplexStream, ClientReadableStream, StatusObject } from "@grpc/grpc-js";

import {
  JobAbortedError,
  LeaseLostError,
  PermanentError,
  RateLimitedError,
  RetryAfterError,
  RetryError,
  RpcError,
  Status,
  hasStatus,
  statusName,
  type AbortReason,
} from "./errors";
import * as pb from "./gen/jobwire/v1/jobwire";
import { DEFAULT_RETRY, retrying, unary } from "./internal/rpc";
import { durationToMs, msToDuration, sleepUnlessAborted } from "./internal/time";
import { ActiveJob, type Handler, type SessionWrite } from "./job";
import type { Logger } from "./logger";
import { encodeValue } from "./payload";
import { Outbox, unaryAcker, type AckRequest, type AckResult, type AckTarget, type Acker } from "./work-acks";

/** What a stream reads of the Worker that runs it (the Worker is one). */
export interface StreamOwner extends AckTarget {
  readonly workerId: string;
  readonly concurrency: number;
  readonly prefetch: number;
  readonly protocol: "work" | "unary";
  readonly queues: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
  readonly rawSessions: pb.SessionServiceClient;
  readonly log: Logger;
  readonly ackDeadlineMs: number;
  /** Set once the Worker was told to stop: no new job starts. */
  readonly stopping: boolean;
  handlerFor(type: string): Handler | undefined;
}

/** How often a conflicting session write runs the handler again, within one attempt. */
const MAX_SESSION_RERUNS = 5;

type Outcome =
  /** `session`: the state to write with the completion (set by `job.setSessionState`). */
  | { kind: "complete"; result: Buffer; session?: SessionWrite }
  | { kind: "fail"; error: string; retryable?: boolean; retryAfterMs?: number }
  /** Hand the job back unprocessed (ReturnJob). */
  | { kind: "return" }
  /** Rate limited upstream: back to run after `retryAfterMs`, no attempt spent (ReturnJob). */
  | { kind: "postpone"; retryAfterMs: number; holdKey: boolean };

interface Task {
  readonly job: pb.Job;
  readonly controller: AbortController;
  /** Set when the signal was aborted, with why. */
  abortReason?: AbortReason;
  /** True while its handler runs. */
  running: boolean;
}

export interface StreamEnd {
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

/** One worker stream (Work, or GetJob with unary acks) and the jobs delivered on it. */
export class WorkerStream {
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
  private resolveEnd!: (end: StreamEnd) => void;

  constructor(private readonly worker: StreamOwner) {
    this.acker = unaryAcker(worker);
  }

  run(): Promise<StreamEnd> {
    const w = this.worker;
    return new Promise<StreamEnd>((resolve) => {
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
    let outcome = await this.invoke(task, handler, job);
    let answered = false;
    // A completion that writes the session is answered before the handler gives its slot up: on
    // a conflict (ABORTED: the session was written since delivery; the lease still holds) the
    // handler runs again on the session's fresh state, within the same attempt.
    try {
      for (let reruns = 0; outcome.kind === "complete" && outcome.session !== undefined; reruns++) {
        if (task.abortReason !== undefined || this.status) break; // settle() knows what to send
        const conflict = await this.completeWithSession(task, outcome);
        if (conflict === undefined) {
          answered = true;
          break;
        }
        if (reruns === MAX_SESSION_RERUNS) {
          outcome = { kind: "fail", error: `the session kept changing while the job ran: ${conflict.details}` };
          break;
        }
        const unread = await this.readSessionAgain(job);
        if (unread !== undefined) {
          outcome = { kind: "fail", error: unread };
          break;
        }
        outcome = await this.invoke(task, handler, job);
      }
    } catch (err) {
      answered = true; // Not ABORTED: nothing another run would change.
      this.worker.log.error("could not answer a job", { jobId: job.id, error: describe(err, false) });
    }
    task.running = false;
    this.startNext();
    if (this.runningCount() === 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
    if (!answered) {
      await this.settle(task, outcome);
      return;
    }
    this.tasks.delete(task.job.leaseToken);
    this.checkDone();
  }

  /** Runs the handler once; what it returned (with the session write it asked for) or threw. */
  private async invoke(task: Task, handler: Handler, job: ActiveJob): Promise<Outcome> {
    try {
      const value: unknown = await handler(job);
      const result = encodeValue(value, `result of job ${job.id}`);
      const session = job.takeSessionWrite();
      return session === undefined ? { kind: "complete", result } : { kind: "complete", result, session };
    } catch (err) {
      job.takeSessionWrite();
      if (task.abortReason === undefined) {
        this.worker.log.warn("job failed", { jobId: job.id, type: job.type, attempt: job.attempt, error: describe(err, true) });
      }
      return failure(err);
    }
  }

  /** Sends a completion with its session write: undefined once answered, the error if ABORTED. */
  private async completeWithSession(task: Task, outcome: Outcome): Promise<RpcError | undefined> {
    try {
      await this.answer(task, outcome, false);
      return undefined;
    } catch (err) {
      if (err instanceof RpcError && err.code === Status.ABORTED) return err;
      throw err;
    }
  }

  /** Reads the job's session again after a conflict: undefined when done, else why it failed. */
  private async readSessionAgain(job: ActiveJob): Promise<string | undefined> {
    const w = this.worker;
    const sessionId = job.session?.id ?? "";
    try {
      const res = await retrying(
        () =>
          unary("GetSession", w.rawSessions.getSession.bind(w.rawSessions), { sessionId }, {
            deadline: Date.now() + w.ackDeadlineMs,
            metadata: w.metadata,
          }),
        { policy: DEFAULT_RETRY, deadline: Date.now() + w.ackDeadlineMs, retryable: (err) => hasStatus(err, Status.UNAVAILABLE) },
      );
      if (res.session === undefined) return "the session changed while the job ran, and reading it again gave nothing";
      w.log.debug("the session changed under the completion; running the handler again on its fresh state", {
        jobId: job.id,
        sessionId,
        version: res.session.version,
      });
      job.refreshSession({ id: res.session.id, state: res.session.state, version: res.session.version });
      return undefined;
    } catch (err) {
      return `the session changed while the job ran, and reading it again failed: ${describe(err, false)}`;
    }
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
          return {
            $case: "complete",
            value: pb.CompleteJobRequest.fromPartial({
              ...ids,
              result: outcome.result,
              sessionState: outcome.session?.state,
              expectedSessionVersion: outcome.session?.expectedVersion,
            }),
          };
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
        case "postpone":
          return {
            $case: "giveBack",
            value: pb.ReturnJobRequest.fromPartial({
              ...ids,
              retryAfter: msToDuration(outcome.retryAfterMs, "retryAfterMs"),
              holdKey: outcome.holdKey,
            }),
          };
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

/**
 * The failure a thrown value reports. The error classes made to steer a failure (PermanentError,
 * RetryAfterError, RetryError) give their message alone as the job's error, as the other
 * clients do; anything else gives `Name: message`.
 */
function failure(err: unknown): Outcome {
  if (err instanceof RateLimitedError) return { kind: "postpone", retryAfterMs: err.retryAfterMs, holdKey: err.holdKey };
  if (err instanceof PermanentError) return { kind: "fail", error: err.message, retryable: false };
  if (err instanceof RetryAfterError) return { kind: "fail", error: err.message, retryAfterMs: err.retryAfterMs };
  if (err instanceof RetryError) return { kind: "fail", error: err.message };
  return { kind: "fail", error: describe(err, false) };
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
