/**
 * What a handler gets: {@link ActiveJob}, a delivered job and its handle on the lease (extend,
 * progress), the session's state it was delivered with, and the state to write with the
 * completion. The worker stream (`worker-stream.ts`) makes one per delivery.
 */
import type * as pb from "./gen/jobwire/v1/jobwire";
import { decodeJson, decodeText, encodeValue } from "./payload";

/** A session's state as a job was handed it. */
export interface SessionSnapshot {
  /** `<queue>/<name>`. */
  readonly id: string;
  /** The state, JSON text (`job.sessionJson()` parses it). */
  readonly state: string;
  /** The version a state written with the completion requires the session to still be at. */
  readonly version: number;
}

/** What an ActiveJob may ask of the lease it runs under. */
export interface LeaseOps {
  extend(ms: number): Promise<Date>;
  progress(value: unknown): Promise<void>;
}

/** A state to write with the completion, and the version it expects the session at. */
export interface SessionWrite {
  state: string;
  expectedVersion: number;
}

/** A job being run by this worker, handed to its handler. */
/** Runs one job. Its return value becomes the job's result; a throw fails the attempt. */
export type Handler<R = unknown> = (job: ActiveJob) => R | Promise<R>;

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
  private currentSession: SessionSnapshot | undefined;
  private sessionWrite: string | undefined;
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
    this.currentSession = job.session
      ? { id: job.session.sessionId, state: job.session.state, version: job.session.version }
      : undefined;
    this.lease = lease;
  }

  /** When this attempt times out unless extended (Redis server clock). */
  get deadline(): Date | undefined {
    return this.currentDeadline;
  }

  /**
   * For a job of a session: the session's id, state (JSON text) and version at delivery, or as
   * read again after a conflicting write (see `setSessionState`). Undefined otherwise.
   */
  get session(): SessionSnapshot | undefined {
    return this.currentSession;
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

  /** The session's state parsed as JSON (`undefined` for a job without a session). */
  sessionJson<T = unknown>(): T {
    return decodeJson<T>(Buffer.from(this.currentSession?.state ?? "", "utf8"), `state of session ${this.currentSession?.id}`);
  }

  /**
   * Asks for the job's session to hold `state` once the job completes (bytes as JSON text,
   * anything else JSON-encoded; at most 256 KiB): written in the same atomic step as the
   * completion, and only if the session is still at `session.version`. If someone wrote the
   * session in between (the server answers ABORTED), the worker reads it again, puts it in
   * `session` and runs the handler again on it within the same attempt (up to 5 times; then the
   * attempt fails and is retried). Ignored when the handler throws. Throws TypeError for a job
   * without a session.
   */
  setSessionState(state: unknown): void {
    if (this.currentSession === undefined) throw new TypeError(`job ${this.id} has no session: there is no state to write`);
    this.sessionWrite = encodeValue(state, `state of session ${this.currentSession.id}`).toString("utf8");
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

  /** @internal What `setSessionState` asked for, forgotten here: a rerun must ask anew. */
  takeSessionWrite(): SessionWrite | undefined {
    const state = this.sessionWrite;
    this.sessionWrite = undefined;
    if (state === undefined || this.currentSession === undefined) return undefined;
    return { state, expectedVersion: this.currentSession.version };
  }

  /** @internal The session as read again after a conflicting write. */
  refreshSession(session: SessionSnapshot): void {
    this.currentSession = session;
  }
}
