// Keeping a page live: follow a server stream for as long as the page is shown (reconnecting
// after a pause when it breaks), and refresh what the events touched, at most once per interval.
// Everything stops when the page's AbortSignal fires (the router fires it on navigation), so a
// page that is closed costs the server nothing.

import { describe, queues } from "./api";

/** Queues one SubscribeQueues stream follows at most (what the call takes). */
export const FOLLOWED = 100;

/** Runs `refresh` soon after `poke()`, never more often than every `intervalMs`. */
export function throttle(refresh: () => Promise<void> | void, intervalMs: number, signal: AbortSignal) {
  let timer: number | undefined;
  let last = 0;
  signal.addEventListener("abort", () => window.clearTimeout(timer));
  return function poke(): void {
    if (timer !== undefined || signal.aborted) return;
    const wait = Math.max(0, last + intervalMs - Date.now());
    timer = window.setTimeout(async () => {
      timer = undefined;
      last = Date.now();
      if (!signal.aborted) await refresh();
    }, wait);
  };
}

/**
 * Follows `open()`'s stream until `signal` fires; each message goes to `onMessage`. When the
 * stream ends or fails, `onBreak` hears why and it is opened again after a second (the caller's
 * `open` decides where to resume).
 */
export async function follow<T>(
  open: (signal: AbortSignal) => AsyncIterable<T>,
  onMessage: (message: T) => void,
  signal: AbortSignal,
  onBreak: (why: string) => void = () => {},
): Promise<void> {
  while (!signal.aborted) {
    try {
      for await (const message of open(signal)) onMessage(message);
      if (!signal.aborted) onBreak("stream ended");
    } catch (error) {
      if (signal.aborted) return;
      onBreak(describe(error));
    }
    await sleep(1000, signal);
  }
}

/** Runs `task` now and every `intervalMs` while the page is shown and the tab visible. */
export function every(task: () => Promise<void> | void, intervalMs: number, signal: AbortSignal): void {
  const run = async () => {
    if (signal.aborted) return;
    if (document.visibilityState === "visible") await task();
    if (!signal.aborted) timer = window.setTimeout(run, intervalMs);
  };
  let timer = window.setTimeout(run, 0);
  signal.addEventListener("abort", () => window.clearTimeout(timer));
}

export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = window.setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      window.clearTimeout(timer);
      resolve();
    });
  });
}

/**
 * Keeps one SubscribeQueues stream over the queues last given to the function it returns (the
 * first `FOLLOWED` of them), opened again only when that set changes; every event calls
 * `onEvent`, and a break `onBreak`. It ends with `signal`.
 */
export function followQueues(
  onEvent: () => void,
  signal: AbortSignal,
  onBreak: (why: string) => void,
): (names: string[]) => void {
  let followed = "";
  let stream: AbortController | undefined;
  signal.addEventListener("abort", () => stream?.abort());
  return (names) => {
    const shown = names.slice(0, FOLLOWED);
    if (shown.join("\n") === followed) return;
    followed = shown.join("\n");
    stream?.abort();
    if (shown.length === 0) return;
    stream = new AbortController();
    const both = AbortSignal.any([signal, stream.signal]);
    void follow((s) => queues.subscribeQueues({ queues: shown }, { signal: s }), onEvent, both, onBreak);
  };
}
