//! Integration tests: a real redis-server and a real jobwire server per test, talking gRPC.
//! Every test ends with the queue invariant check.

mod harness;

mod admission;
mod delivery;
mod lifecycle;
mod resilience;
mod retries;
