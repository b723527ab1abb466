/**
 * Time helpers: milliseconds <-> google.protobuf.Duration, abortable sleeps, jittered backoff.
 * Internal; not exported from the package.
 */
import type { Duration } from "../gen/google/protobuf/duration";

/** Milliseconds (finite, >= 0, fractions allowed down to 1 ns) as a protobuf Duration. */
export function msToDuration(ms: number, field: string): Duration {
  if (!Number.isFinite(ms) || ms < 0) {
    throw new RangeError(`${field} must be a finite number of milliseconds >= 0, got ${ms}`);
  }
  const seconds = Math.floor(ms / 1000);
  const nanos = Math.round((ms - seconds * 1000) * 1e6);
  return nanos >= 1e9 ? { seconds: seconds + 1, nanos: nanos - 1e9 } : { seconds, nanos };
}

/** A protobuf Duration as milliseconds (undefined stays undefined). */
export function durationToMs(d: Duration | undefined): number | undefined {
  return d === undefined ? undefined : d.seconds * 1000 + d.nanos / 1e6;
}

/** Resolves after `ms`, or rejects with `signal.reason` as soon as `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, Math.max(0, ms));
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Like {@link sleep} but resolves (never rejects) when `signal` aborts. */
export async function sleepUnlessAborted(ms: number, signal?: AbortSignal): Promise<void> {
  try {
    await sleep(ms, signal);
  } catch {
    // Aborted: the caller checks its own state.
  }
}

/** Exponential backoff with "equal jitter": a wait in [d/2, d] where d = min(max, initial * 2^n). */
export function backoffDelay(attempt: number, initialMs: number, maxMs: number): number {
  const d = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  return d / 2 + Math.random() * (d / 2);
}
