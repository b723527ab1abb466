/**
 * Every error this client throws or understands.
 *
 * Handler-side: throw {@link PermanentError} to send a job to the dead-letter set without further
 * attempts, or {@link RetryAfterError} to choose the wait before the next attempt. Any other
 * thrown value fails the attempt and the job retries per its backoff.
 *
 * Caller-side: a failed RPC surfaces as {@link RpcError} (with the gRPC status code), a job that
 * went dead while awaited as {@link JobDeadError}, and an await that ran out of time as
 * {@link WaitTimeoutError}.
 */
import { status as Status, type ServiceError } from "@grpc/grpc-js";

import type { JobInfo } from "./types";

export { PayloadError } from "./payload";

export { Status };

/** The name of a gRPC status code, e.g. `UNAVAILABLE`. */
export function statusName(code: number): string {
  return (Status as unknown as Record<number, string>)[code] ?? `CODE_${code}`;
}

/** A jobwire RPC failed. `code` is the gRPC status; the server's message names the field. */
export class RpcError extends Error {
  override readonly name = "RpcError";
  /** The gRPC status code (see `Status`). */
  readonly code: number;
  /** The server's explanation, without the code prefix grpc-js adds to `message`. */
  readonly details: string;
  /** The RPC that failed, e.g. `AddJob`. */
  readonly method: string;

  constructor(method: string, code: number, details: string, options?: { cause?: unknown }) {
    super(`${method}: ${statusName(code)}: ${details}`, options);
    this.method = method;
    this.code = code;
    this.details = details;
  }

  /** The status code's name, e.g. `FAILED_PRECONDITION`. */
  get codeName(): string {
    return statusName(this.code);
  }

  /** Builds an RpcError from what grpc-js reports (a ServiceError, or anything else thrown). */
  static from(method: string, err: unknown): RpcError {
    if (err instanceof RpcError) return err;
    if (isServiceError(err)) return new RpcError(method, err.code, err.details, { cause: err });
    const message = err instanceof Error ? err.message : String(err);
    return new RpcError(method, Status.UNKNOWN, message, { cause: err });
  }
}

function isServiceError(err: unknown): err is ServiceError {
  return (
    err instanceof Error &&
    typeof (err as Partial<ServiceError>).code === "number" &&
    typeof (err as Partial<ServiceError>).details === "string"
  );
}

/** True when `err` is an {@link RpcError} (or grpc-js error) with status `code`. */
export function hasStatus(err: unknown, code: number): boolean {
  return (err instanceof RpcError || isServiceError(err)) && err.code === code;
}

/**
 * Thrown from a handler: fail this attempt and do not retry; the job goes dead at once
 * (`FailJob` with `retryable = false`).
 */
export class PermanentError extends Error {
  override readonly name: string = "PermanentError";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/**
 * Thrown from a handler: fail this attempt with exactly this message as the job's error (no
 * `Name:` prefix, no stack), retried per the job's backoff like any failure.
 */
export class RetryError extends Error {
  override readonly name: string = "RetryError";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/**
 * Thrown from a handler: fail this attempt and retry after `retryAfterMs` instead of the job's
 * backoff (still subject to its max_attempts; 0 to 7 days).
 */
export class RetryAfterError extends Error {
  override readonly name: string = "RetryAfterError";
  readonly retryAfterMs: number;
  constructor(retryAfterMs: number, message?: string, options?: { cause?: unknown }) {
    super(message ?? `retry after ${retryAfterMs} ms`, options);
    if (!Number.isFinite(retryAfterMs) || retryAfterMs < 0) {
      throw new RangeError(`retryAfterMs must be a finite number >= 0, got ${retryAfterMs}`);
    }
    this.retryAfterMs = retryAfterMs;
  }
}

/**
 * Thrown from a handler when what the job calls is rate limited (a 429 with Retry-After): not a
 * failure. The job goes back to run again after `retryAfterMs` (0 to 7 days) without spending an
 * attempt (ReturnJob with `retry_after`); with `holdKey`, no other job of its `rateKey` starts
 * before then either (under the queue's `key_rate`).
 */
export class RateLimitedError extends Error {
  override readonly name: string = "RateLimitedError";
  readonly retryAfterMs: number;
  readonly holdKey: boolean;
  constructor(retryAfterMs: number, options?: { holdKey?: boolean; cause?: unknown }) {
    super(`rate limited, retry after ${retryAfterMs} ms`, options);
    if (!Number.isFinite(retryAfterMs) || retryAfterMs < 0) {
      throw new RangeError(`retryAfterMs must be a finite number >= 0, got ${retryAfterMs}`);
    }
    this.retryAfterMs = retryAfterMs;
    this.holdKey = options?.holdKey ?? false;
  }
}

/** Why a running handler's `job.signal` fired. */
export type AbortReason =
  /** The attempt's timeout passed; the server revoked the lease and counts a failed attempt. */
  | "timeout"
  /** The server found the lease gone (e.g. reaped) and revoked it. */
  | "lease-lost"
  /** The job was cancelled (CancelJob); the handler's answer is still accepted, the job ends cancelled. */
  | "cancelled"
  /** The worker stream ended; the server hands unacknowledged jobs to other workers. */
  | "stream-ended"
  /** `worker.stop()` ran out of its `timeoutMs` while the handler was still running. */
  | "stopping";

/** The `reason` of an aborted `job.signal`: the worker no longer holds this job. */
export class JobAbortedError extends Error {
  override readonly name = "JobAbortedError";
  readonly reason: AbortReason;
  readonly jobId: string;
  constructor(jobId: string, reason: AbortReason) {
    super(`job ${jobId} aborted: ${reason}`);
    this.jobId = jobId;
    this.reason = reason;
  }
}

/** `job.extend()` was refused because the lease is no longer held (FAILED_PRECONDITION). */
export class LeaseLostError extends Error {
  override readonly name = "LeaseLostError";
  readonly jobId: string;
  constructor(jobId: string, options?: { cause?: unknown }) {
    super(`job ${jobId}: the lease is no longer held by this worker`, options);
    this.jobId = jobId;
  }
}

/** The awaited job went dead (attempts used up, not retryable, or lost too often). */
export class JobDeadError extends Error {
  override readonly name = "JobDeadError";
  readonly jobId: string;
  /** The job's last error (from FailJob, or "timeout" / "lost"). */
  readonly lastError: string;
  /** Everything known about the job when it was found dead. */
  readonly info: JobInfo;
  constructor(info: JobInfo) {
    super(`job ${info.id} is dead after ${info.attempts} attempt(s): ${info.lastError || "(no error recorded)"}`);
    this.jobId = info.id;
    this.lastError = info.lastError;
    this.info = info;
  }
}

/** The awaited job was cancelled (CancelJob, or its session was deleted). */
export class JobCancelledError extends Error {
  override readonly name = "JobCancelledError";
  readonly jobId: string;
  readonly info: JobInfo;
  constructor(info: JobInfo) {
    super(`job ${info.id} was cancelled`);
    this.jobId = info.id;
    this.info = info;
  }
}

/** Waiting for a job's result took longer than the given `timeoutMs`. */
export class WaitTimeoutError extends Error {
  override readonly name = "WaitTimeoutError";
  readonly jobId: string;
  constructor(jobId: string, timeoutMs: number) {
    super(`job ${jobId} did not finish within ${timeoutMs} ms`);
    this.jobId = jobId;
  }
}
