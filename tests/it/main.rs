//! Integration tests: a real redis-server and a real jobwire server per test, talking gRPC.
//! Every test ends with the queue invariant check.

mod harness;

mod admin;
mod admission;
mod cli;
mod client;
mod cluster;
mod delivery;
mod embedded;
mod events;
mod lifecycle;
mod metrics;
mod resilience;
mod retries;
mod scripts;
mod sessions;
mod work;
mod work_rpc;
