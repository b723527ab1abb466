/**
 * Waiting for a job to finish. `Client.waitForResult` talks only to the {@link JobWatcher}
 * interface. Two implementations:
 * - {@link StreamWatcher} follows the job with the server-streaming `WatchJob` RPC and learns of
 *   the final state at once; against a server without WatchJob (UNIMPLEMENTED) it falls back to
 * - {@link PollingWatcher}, which reads the job with `GetJobInfo` at a growing interval.
 */
import type { Metadata } from "@grpc/grpc-js";

import { Status, hasStatus } from "./errors";
import { follow } from "./events";
import type * as pb from "./gen/jobwire/v1/jobwire";
import { sleep } from "./internal/time";
import type { JobInfo } from "./types";

export interface JobWatcher {
  /**
   * Resolves with the job once it is completed, dead or cancelled. Rejects with `signal.reason`
   * when `signal` aborts, or with the RPC error when the job cannot be read (e.g. NOT_FOUND).
   */
  waitFinished(jobId: string, signal: AbortSignal): Promise<JobInfo>;
}

/** Reads one job (GetJobInfo, with the client's retries). */
export type JobReader = (jobId: string, signal: AbortSignal) => Promise<JobInfo>;

/** How GetJobInfo polling paces itself. */
export interface PollOptions {
  /** First wait between reads. Default 50 ms. */
  initialIntervalMs: number;
  /** The wait grows by half each read up to this. Default 1,000 ms. */
  maxIntervalMs: number;
}

export const DEFAULT_POLL: PollOptions = { initialIntervalMs: 50, maxIntervalMs: 1000 };

/** A server or Redis outage only delays the answer. */
function transient(err: unknown): boolean {
  return hasStatus(err, Status.UNAVAILABLE) || hasStatus(err, Status.DEADLINE_EXCEEDED);
}

/** Reads the job with GetJobInfo until it is finished, backing off between reads. */
export class PollingWatcher implements JobWatcher {
  constructor(
    private readonly getInfo: JobReader,
    private readonly poll: PollOptions = DEFAULT_POLL,
  ) {}

  async waitFinished(jobId: string, signal: AbortSignal): Promise<JobInfo> {
    let interval = this.poll.initialIntervalMs;
    for (;;) {
      try {
        const info = await this.getInfo(jobId, signal);
        if (info.finished) return info;
      } catch (err) {
        if (signal.aborted || !transient(err)) throw err;
      }
      await sleep(interval, signal);
      interval = Math.min(this.poll.maxIntervalMs, interval * 1.5);
    }
  }
}

/**
 * Follows the job with WatchJob (`follow` in events.ts: a broken stream is reopened with
 * backoff, and WatchJob starts with the job's current state, so nothing is missed) until a
 * final event, then reads it once with GetJobInfo, so the caller gets the same JobInfo either
 * way. Against a server without WatchJob (UNIMPLEMENTED) it falls back to polling.
 */
export class StreamWatcher implements JobWatcher {
  private unsupported = false;

  constructor(
    private readonly raw: pb.QueueServiceClient,
    private readonly metadata: Metadata,
    private readonly getInfo: JobReader,
    private readonly fallback: JobWatcher,
  ) {}

  async waitFinished(jobId: string, signal: AbortSignal): Promise<JobInfo> {
    for (;;) {
      if (this.unsupported) return this.fallback.waitFinished(jobId, signal);
      try {
        for await (const event of follow("WatchJob", () => this.raw.watchJob({ jobId }, this.metadata.clone()), true, signal)) {
          if (event.final) break;
        }
      } catch (err) {
        if (!hasStatus(err, Status.UNIMPLEMENTED)) throw err;
        this.unsupported = true;
        continue;
      }
      const info = await this.getInfo(jobId, signal);
      if (info.finished) return info;
      // Cannot happen with a consistent server; watch again rather than lie.
    }
  }
}
