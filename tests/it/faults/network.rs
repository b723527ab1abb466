//! Scenarios 7 and 8: the network between a worker and the server. A worker behind a path that
//! goes dead without a FIN (the proxy stops forwarding and keeps its sockets open): the
//! server's HTTP/2 keep-alive notices, the stream ends and its jobs run elsewhere, within
//! interval + timeout (measured with the defaults, 5 s + 5 s, and with short flags). And slow
//! consumers that never read their streams (job streams holding credit, event subscriptions):
//! the server's memory stays bounded and the other workers go on.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use jobwire::{client::Client, proto};

use super::{Books, Fleet, QUEUE, added, assert_clean, balance, produce, proxy::Proxy, serve_args};
use crate::harness::{Process, Redis, eventually, run_jobwire, unique_prefix};

const JOBS: usize = 5_000;

/// Runs the workload with one worker behind the proxy, cuts it mid-run, and returns how long
/// the server took to give its jobs to the others.
async fn cut_a_worker_off(keepalive: &[&str], scenario: &str) -> Duration {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let server = Process::start_async(serve_args("127.0.0.1:0", &redis.url(), &prefix, keepalive)).await;
    let proxy = Proxy::start(&[server.addr]).await;
    let books = Arc::new(Books::default());
    let mut fleet = Fleet::new();
    for n in 0..3 {
        let client = Client::connect(&format!("http://{}", server.addr)).await.expect("connect");
        fleet.spawn(&books, client, &format!("w{n}"));
    }
    let mut behind_proxy = Fleet::new();
    let client = Client::connect(&format!("http://{}", proxy.addr)).await.expect("connect through the proxy");
    behind_proxy.spawn(&books, client, "cut");
    let producer = produce(books.clone(), vec![server.addr], JOBS, 1_000);

    added(&books, JOBS * 2 / 5).await;
    eventually(Duration::from_secs(10), "the worker behind the proxy to run jobs", || async {
        books.running(|w| w == "cut") > 0
    })
    .await;
    proxy.cut();
    let fault = Instant::now();

    producer.await.expect("producer");
    let figures = balance(&books, server.addr, fault, |d| d.worker == "cut").await;
    fleet.stop().await;
    // Its acks hang on the dead path: it cannot finish, only be dropped.
    behind_proxy.abort();
    let keepalive = if keepalive.is_empty() { "default(5s+5s)".to_owned() } else { keepalive.join(" ") };
    figures.print(scenario, &format!("keepalive={keepalive} detection={:.1}s", figures.recovery.as_secs_f64()));
    assert!(figures.duplicates > 0, "the cut worker held no job: nothing was tested");
    assert_clean(&figures, &redis.url(), &prefix).await;
    figures.recovery
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_cut_without_fin_is_noticed_by_the_default_keepalive() {
    let detection = cut_a_worker_off(&[], "network-cut").await;
    // Interval + timeout is 10 s; the dispatch after it takes milliseconds.
    assert!(detection <= Duration::from_millis(10_500), "took {detection:?} to notice the dead path");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_cut_without_fin_is_noticed_within_the_configured_keepalive() {
    let flags = ["--http2-keepalive-interval", "1s", "--http2-keepalive-timeout", "1s"];
    let detection = cut_a_worker_off(&flags, "network-cut-short-keepalive").await;
    assert!(detection <= Duration::from_millis(2_500), "took {detection:?} with a 1 s + 1 s keep-alive");
}

#[tokio::test]
async fn a_keepalive_of_zero_is_refused_at_start() {
    for flag in ["--http2-keepalive-interval", "--http2-keepalive-timeout"] {
        let args = ["serve", "--listen", "127.0.0.1:0", "--redis-url", "redis://127.0.0.1:1", flag, "0s"];
        let ran = run_jobwire(&args, Duration::from_secs(20)).await;
        assert_eq!(ran.code, Some(1), "{}", ran.stderr);
        assert!(ran.stderr.contains(&format!("{flag} must be above zero")), "{}", ran.stderr);
    }
}

/// The resident memory of a process, in bytes (from /proc).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumers_that_never_read_their_streams() {
    const SLOW_STREAMS: usize = 2;
    const SLOW_CREDIT: u32 = 500;
    /// What the server may grow by while the slow consumers hold their credit and events pile up.
    const RSS_LIMIT: u64 = 64 << 20;
    let redis = Redis::start();
    let prefix = unique_prefix();
    let server = Process::start_async(serve_args("127.0.0.1:0", &redis.url(), &prefix, &[])).await;
    let pid = server.pid();
    let books = Arc::new(Books::default());
    let mut fleet = Fleet::new();
    for n in 0..3 {
        let client = Client::connect(&format!("http://{}", server.addr)).await.expect("connect");
        fleet.spawn(&books, client, &format!("w{n}"));
    }
    // Each slow consumer has a connection of its own, as a separate process would.
    let mut slow_jobs = Vec::new();
    let mut slow_events = Vec::new();
    for _ in 0..SLOW_STREAMS {
        let mut raw = Client::connect(&format!("http://{}", server.addr)).await.expect("connect").raw();
        let request = proto::GetJobRequest {
            worker_id: "slow".into(),
            queues: vec![QUEUE.into()],
            max_in_flight: SLOW_CREDIT,
            ..Default::default()
        };
        slow_jobs.push(raw.get_job(request).await.expect("slow job stream").into_inner());
        let mut raw = Client::connect(&format!("http://{}", server.addr)).await.expect("connect").raw();
        let request = proto::SubscribeRequest { queue: QUEUE.into(), ..Default::default() };
        slow_events.push(raw.subscribe(request).await.expect("slow subscription").into_inner());
    }
    let before = rss(pid);
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampler = tokio::spawn({
        let peak = peak.clone();
        async move {
            loop {
                peak.fetch_max(rss(pid), std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let started = Instant::now();
    produce(books.clone(), vec![server.addr], JOBS, 1_000).await.expect("producer");
    let produced = started.elapsed();

    // The other workers go on: everything but what the slow streams hold completes.
    let client = Client::connect(&format!("http://{}", server.addr)).await.expect("connect");
    let held = u64::from(SLOW_CREDIT) * u64::try_from(SLOW_STREAMS).expect("few streams");
    let jobs = u64::try_from(JOBS).expect("jobs fit");
    eventually(Duration::from_secs(10), "the other workers to finish the rest", || async {
        client.stats(QUEUE).await.is_ok_and(|s| s.waiting == 0 && s.completed + held >= jobs)
    })
    .await;
    let others_done = started.elapsed();
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::SeqCst);
    let active = client.stats(QUEUE).await.expect("stats").active;

    // The slow consumers go away: what they held goes back and runs on the others.
    drop((slow_jobs, slow_events));
    let fault = Instant::now();
    let mut figures = balance(&books, server.addr, fault, |_| false).await;
    fleet.stop().await;
    figures.recovery = others_done - produced;
    let grew = peak.saturating_sub(before);
    figures.print(
        "slow-consumer",
        &format!(
            "slow_streams={SLOW_STREAMS}x{SLOW_CREDIT}+{SLOW_STREAMS}_subscriptions held={active} \
             rss_before={}MiB rss_peak={}MiB",
            before >> 20,
            peak >> 20
        ),
    );
    assert!(active <= held, "the slow streams held {active} jobs with {held} credit");
    assert!(grew <= RSS_LIMIT, "the server grew by {} MiB with consumers that never read", grew >> 20);
    assert_clean(&figures, &redis.url(), &prefix).await;
}
