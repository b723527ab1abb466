/**
 * @jobwire/client: the TypeScript client of jobwire.
 *
 * - `Client` adds jobs (one or many, or to a session), awaits their results, cancels them, runs
 *   sessions and schedules, follows jobs and queues (`watch`, `subscribe`) and makes the admin
 *   calls (queue settings among them).
 * - `Worker` runs handlers by job type on one Work stream with a chosen concurrency.
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
  RateLimitedError,
  RetryAfterError,
  RetryError,
  RpcError,
  Status,
  WaitTimeoutError,
  statusName,
  type AbortReason,
} from "./errors";
export { JobEvent, type FollowOptions, type JobEventType } from "./events";
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
  type WorkerInfo,
  isFinalState,
} from "./types";
export { Schedule, type JobTemplate, type JobTemplateSpec, type MissedFires, type Overlap, type ScheduleSpec } from "./schedules";
export { type QueueSettingName, type QueueSettings, type QueueSettingsView, type RateLimit } from "./settings";
export { Session, type NewSession, type Page, type PageOptions, type SessionUpdate } from "./sessions";
export { PollingWatcher, StreamWatcher, type JobReader, type JobWatcher, type PollOptions } from "./watch";
export { ActiveJob, Worker, type Handler, type SessionSnapshot, type StopOptions, type WorkerOptions } from "./worker";
export * as proto from "./gen/jobwire/v1/jobwire";
export * as scheduleProto from "./gen/jobwire/v1/schedules";
