//! Scenarios 2 and 3: two jobwire instances over one Redis, the producer adding through both and
//! the workers connecting through a TCP load balancer in front of them (`proxy`). One instance
//! killed (its leases reaped by the other after the lease TTL), then a rolling restart (SIGTERM,
//! start again on the same address, then the other: every held job answered or handed back, so
//! nothing runs twice).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use jobwire::client::Client;

use super::{Books, Fleet, added, assert_clean, balance, in_flight_during, produce, proxy::Proxy, serve_args};
use crate::harness::{Process, Redis, eventually, unique_prefix};

/// The suite's lease TTL (`serve_args`).
const LEASE_TTL: Duration = Duration::from_secs(2);

async fn two_instances(redis: &Redis, prefix: &str) -> (Process, Process) {
    let a = Process::start_async(serve_args("127.0.0.1:0", &redis.url(), prefix, &[])).await;
    let b = Process::start_async(serve_args("127.0.0.1:0", &redis.url(), prefix, &[])).await;
    (a, b)
}

/// A balancer in front of both instances, and four workers behind it, each on a connection of
/// its own.
async fn fleet(books: &Arc<Books>, addrs: &[std::net::SocketAddr]) -> (Proxy, Fleet) {
    let balancer = Proxy::start(addrs).await;
    let mut fleet = Fleet::new();
    for n in 0..4 {
        let client = Client::connect(&format!("http://{}", balancer.addr)).await.expect("connect");
        fleet.spawn(books, client, &format!("w{n}"));
    }
    (balancer, fleet)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_one_of_two_instances() {
    const JOBS: usize = 5_000;
    let redis = Redis::start();
    let prefix = unique_prefix();
    let (mut a, b) = two_instances(&redis, &prefix).await;
    let books = Arc::new(Books::default());
    let (_balancer, fleet) = fleet(&books, &[a.addr, b.addr]).await;
    let producer = produce(books.clone(), vec![a.addr, b.addr], JOBS, 1_000);

    added(&books, JOBS * 2 / 5).await;
    // Half of the workers are on A (the balancer takes turns): with this many running, some are.
    eventually(Duration::from_secs(10), "jobs running", || async { books.running(|_| true) >= 8 }).await;
    a.signal(libc::SIGKILL);
    let fault = Instant::now();
    a.wait_exit(Duration::from_secs(5)).await;

    producer.await.expect("producer");
    let figures = balance(&books, b.addr, fault, in_flight_during(fault..fault)).await;
    fleet.stop().await;
    figures.print("kill-instance", &format!("lease_ttl={}s", LEASE_TTL.as_secs()));
    assert!(figures.duplicates > 0, "the killed instance held no job: nothing was tested");
    assert!(
        figures.recovery >= LEASE_TTL / 2,
        "the killed instance's jobs came back after {:?}, before its heartbeat could go stale",
        figures.recovery
    );
    assert_clean(&figures, &redis.url(), &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_of_two_instances_under_load() {
    const JOBS: usize = 5_000;
    let redis = Redis::start();
    let prefix = unique_prefix();
    let (mut a, mut b) = two_instances(&redis, &prefix).await;
    let (addr_a, addr_b) = (a.addr, b.addr);
    let books = Arc::new(Books::default());
    let (_balancer, fleet) = fleet(&books, &[addr_a, addr_b]).await;
    let producer = produce(books.clone(), vec![addr_a, addr_b], JOBS, 1_000);

    added(&books, JOBS / 4).await;
    let fault = Instant::now();
    let status = a.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "A exited with {status:?}");
    let a2 = Process::start_async(serve_args(&addr_a.to_string(), &redis.url(), &prefix, &[])).await;
    added(&books, JOBS / 2).await;
    let status = b.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "B exited with {status:?}");
    let b2 = Process::start_async(serve_args(&addr_b.to_string(), &redis.url(), &prefix, &[])).await;
    let restarted = fault.elapsed();

    producer.await.expect("producer");
    let mut figures = balance(&books, a2.addr, fault, |_| false).await;
    fleet.stop().await;
    figures.recovery = restarted;
    figures.print("rolling-restart", "");
    assert_clean(&figures, &redis.url(), &prefix).await;
    drop((a2, b2));
}
