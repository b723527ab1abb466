//! Integration tests: a real redis-server per test and a real jobwire server talking gRPC, or in
//! `scripts/` each Lua function called directly through `Store`. Every test ends with the queue
//! invariant check.

#![allow(unreachable_pub, reason = "a test binary has no public API; `pub` shares helpers between its modules")]

mod harness;

mod add_leases;
mod admin;
mod admission;
mod auth;
mod cli;
mod client;
mod cluster;
mod dashboard;
mod delivery;
mod doctor;
mod embedded;
mod events;
mod faults;
mod full_redis;
mod fused;
mod idle_queues;
mod lifecycle;
mod limits;
mod metrics;
mod model;
mod queue_settings;
mod rate_limits;
mod redis_cluster;
mod resilience;
mod retries;
mod schedule_fields;
mod schedules;
mod scripts;
mod sessions;
mod sharded;
mod single_adds;
mod tls;
mod work;
mod work_rpc;
