//! jobwire: a job-queue service. Producers add jobs over gRPC, workers hold a streaming `GetJob`
//! call, and all state lives in Redis.
//!
//! Layers, one direction: `api` (gRPC: validate, convert, map errors) -> `queue` (the job state
//! machine, dispatch, liveness) -> `store` (Redis keys, Lua scripts, pool). `server` assembles
//! them; `client` is the typed Rust client; `redis_server` launches the private redis-server of
//! the embedded default, the bench and the tests; `telemetry` holds the Prometheus metrics and
//! the W3C trace context of jobs.

pub mod api;
pub mod client;
pub mod config;
pub mod queue;
pub mod redis_server;
pub mod server;
pub mod store;
pub mod telemetry;

/// Code generated from `proto/jobwire/v1`.
pub mod proto {
    tonic::include_proto!("jobwire.v1");
}
