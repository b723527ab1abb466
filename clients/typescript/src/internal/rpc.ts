/**
 * Promise wrappers around the generated callback-style grpc-js methods: one unary call with a
 * deadline and an AbortSignal, and a retry loop for calls that are safe to repeat.
 * Internal; not exported from the package.
 */
import type { CallOptions as GrpcCallOptions, ClientUnaryCall, Metadata, ServiceError } from "@grpc/grpc-js";

import { RpcError } from "../errors";
import { backoffDelay, sleep } from "./time";

export type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<GrpcCallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => ClientUnaryCall;

export interface CallContext {
  /** Absolute deadline, epoch milliseconds. */
  deadline: number;
  signal?: AbortSignal | undefined;
  metadata: Metadata;
}

/** One unary call. Rejects with RpcError, or with `signal.reason` when aborted. */
export function unary<Req, Res>(name: string, method: UnaryMethod<Req, Res>, request: Req, ctx: CallContext): Promise<Res> {
  return new Promise<Res>((resolve, reject) => {
    const signal = ctx.signal;
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => call.cancel();
    const call = method(request, ctx.metadata.clone(), { deadline: new Date(ctx.deadline) }, (err, response) => {
      signal?.removeEventListener("abort", onAbort);
      if (signal?.aborted) reject(signal.reason);
      else if (err) reject(RpcError.from(name, err));
      else resolve(response);
    });
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** When to try a call again. */
export interface RetryOptions {
  /** Tries in all, the first included. Default 5. */
  maxAttempts: number;
  /** Wait before the first retry; doubles each time (with jitter). Default 100 ms. */
  initialBackoffMs: number;
  /** Longest wait between tries. Default 2 s. */
  maxBackoffMs: number;
}

export const DEFAULT_RETRY: RetryOptions = { maxAttempts: 5, initialBackoffMs: 100, maxBackoffMs: 2000 };

/**
 * Runs `op` until it succeeds, throws something `retryable` rejects, the attempts run out, or
 * the next wait would pass `deadline`. The last error is rethrown.
 */
export async function retrying<T>(
  op: (attempt: number) => Promise<T>,
  opts: { policy: RetryOptions; deadline: number; signal?: AbortSignal | undefined; retryable: (err: unknown) => boolean },
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await op(attempt);
    } catch (err) {
      if (!opts.retryable(err) || attempt >= opts.policy.maxAttempts || opts.signal?.aborted) throw err;
      const wait = backoffDelay(attempt - 1, opts.policy.initialBackoffMs, opts.policy.maxBackoffMs);
      if (Date.now() + wait >= opts.deadline) throw err;
      await sleep(wait, opts.signal);
    }
  }
}
