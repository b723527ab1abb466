/**
 * Following jobs: one job's transitions (`WatchJob`) and a queue's events (`Subscribe`), as
 * async iterables that outlive a broken stream. When the server goes away (drain, restart,
 * UNAVAILABLE) or ends the stream early, the call is opened again with jittered backoff: a
 * watch from the job's current state (each WatchJob starts with it, so a final state reached
 * meanwhile is not missed), a subscription from the cursor of the last event it yielded (the
 * server resumes right after it, with no gap and no duplicate). Other errors end the iteration
 * by rejecting with an RpcError (NOT_FOUND for an unknown job, OUT_OF_RANGE for a cursor older
 * than the queue's oldest kept event).
 */
import type { ClientReadableStream } from "@grpc/grpc-js";

import { RpcError, Status, hasStatus } from "./errors";
import * as pb from "./gen/jobwire/v1/jobwire";
import { backoffDelay, sleep } from "./internal/time";
import { decodeJson } from "./payload";

/** What happened to a job (JobEventType in the proto, lower-cased without the prefix). */
export type JobEventType =
  | "waiting"
  | "delayed"
  | "active"
  | "progress"
  | "retrying"
  | "completed"
  | "dead"
  | "cancelled"
  | "unspecified";

const EVENT_NAMES: Record<number, JobEventType> = {
  [pb.JobEventType.JOB_EVENT_TYPE_WAITING]: "waiting",
  [pb.JobEventType.JOB_EVENT_TYPE_DELAYED]: "delayed",
  [pb.JobEventType.JOB_EVENT_TYPE_ACTIVE]: "active",
  [pb.JobEventType.JOB_EVENT_TYPE_PROGRESS]: "progress",
  [pb.JobEventType.JOB_EVENT_TYPE_RETRYING]: "retrying",
  [pb.JobEventType.JOB_EVENT_TYPE_COMPLETED]: "completed",
  [pb.JobEventType.JOB_EVENT_TYPE_DEAD]: "dead",
  [pb.JobEventType.JOB_EVENT_TYPE_CANCELLED]: "cancelled",
};

/** One transition of one job. */
export class JobEvent {
  /** Opaque resume point: `subscribe(queue, { cursor })` continues right after this event. */
  readonly cursor: string;
  readonly jobId: string;
  readonly type: JobEventType;
  /** The attempt it concerns. */
  readonly attempt: number;
  /** For "retrying" and "dead": why. */
  readonly error: string;
  /** For "delayed" and "retrying": when the job becomes ready. */
  readonly nextRunAt: Date | undefined;
  /** For "progress": what the worker reported (raw bytes). */
  readonly progress: Buffer;
  /** For "completed", in a watch (while the job is retained): the result (raw bytes). */
  readonly result: Buffer;
  /** When it happened (Redis server clock). */
  readonly time: Date | undefined;

  constructor(e: pb.JobEvent) {
    this.cursor = e.cursor;
    this.jobId = e.jobId;
    this.type = EVENT_NAMES[e.type] ?? "unspecified";
    this.attempt = e.attempt;
    this.error = e.error;
    this.nextRunAt = e.nextRunAt;
    this.progress = e.progress;
    this.result = e.result;
    this.time = e.time;
  }

  /** The job will not change again (completed, dead or cancelled). */
  get final(): boolean {
    return this.type === "completed" || this.type === "dead" || this.type === "cancelled";
  }

  /** The result parsed as JSON (`undefined` when empty). */
  resultJson<T = unknown>(): T {
    return decodeJson<T>(this.result, `result of job ${this.jobId}`);
  }

  /** The progress parsed as JSON (`undefined` when empty). */
  progressJson<T = unknown>(): T {
    return decodeJson<T>(this.progress, `progress of job ${this.jobId}`);
  }
}

/** Options of `watch` and `subscribe`. */
export interface FollowOptions {
  /** Ends the iteration (rejecting with `signal.reason`). Breaking out of the loop ends it too. */
  signal?: AbortSignal;
}

/**
 * The events of a stream opened by `open(last cursor)`, opened again when it breaks. `method`
 * names the RPC in errors; `ends`: a final event ends the iteration (WatchJob).
 */
export async function* follow(
  method: string,
  open: (cursor: string) => ClientReadableStream<{ event?: pb.JobEvent | undefined }>,
  ends: boolean,
  signal: AbortSignal | undefined,
): AsyncGenerator<JobEvent, void, undefined> {
  let last = "";
  let failures = 0;
  for (;;) {
    signal?.throwIfAborted();
    const call = open(last);
    const onAbort = (): void => call.cancel();
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      for await (const response of call as AsyncIterable<{ event?: pb.JobEvent | undefined }>) {
        if (response.event === undefined) continue;
        const event = new JobEvent(response.event);
        failures = 0;
        if (event.cursor !== "") last = event.cursor;
        yield event;
        if (ends && event.final) return;
      }
    } catch (err) {
      signal?.throwIfAborted();
      if (!hasStatus(err, Status.UNAVAILABLE)) throw RpcError.from(method, err);
    } finally {
      signal?.removeEventListener("abort", onAbort);
      call.cancel();
    }
    await sleep(backoffDelay(failures++, 100, 2000), signal);
  }
}
