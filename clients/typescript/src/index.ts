/**
 * @jobwire/client: the TypeScript client of jobwire.
 *
 * - `Client` adds jobs (one or many), reads them and awaits their results.
 * - `Worker` runs handlers by job type on one GetJob stream with a chosen concurrency.
 * - `proto` is the generated code of `jobwire.v1` (messages and the grpc-js client), for
 *   anything the two classes do not cover.
 */
export { Client, type ClientOptions, type WaitOptions } from "./client";
export { DEFAULT_ADDRESS, type ConnectionOptions, type TlsOptions } from "./connection";
export {
  JobAbortedError,
  JobCancelledError,
  JobDeadError,
  LeaseLostError,
  PayloadError,
  PermanentError,
  RetryAfterError,
  RpcError,
  Status,
  WaitTimeoutError,
  statusName,
  type AbortReason,
} from "./errors";
export type { RetryOptions } from "./internal/rpc";
export { consoleLogger, defaultLogger, silentLogger, type Logger } from "./logger";
export {
  JobInfo,
  JobResult,
  type AddManyResult,
  type AddOptions,
  type AddResult,
  type BackoffOptions,
  type CallOptions,
  type JobOptions,
  type JobSpec,
  type JobState,
  type QueueStats,
  isFinalState,
} from "./types";
export { PollingWatcher, StreamWatcher, type JobReader, type JobWatcher, type PollOptions } from "./watch";
export { ActiveJob, Worker, type Handler, type StopOptions, type WorkerOptions } from "./worker";
export * as proto from "./gen/jobwire/v1/jobwire";
