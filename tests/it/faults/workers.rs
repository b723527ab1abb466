//! Scenario 1: `kill -9` of a worker process (`jobwire work`) while it runs jobs. Its stream
//! ends with it, so its jobs go back to ready at once and run on the other workers; only those
//! may run twice.

use std::{
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use jobwire::client::Client;

use super::{Books, Fleet, QUEUE, added, assert_clean, balance, produce, serve_args};
use crate::harness::{Process, Redis, eventually, jobwire_command, unique_prefix};

/// Each job: log the delivery, hold it for 200 ms (so the kill finds jobs running), answer. A
/// handler the kill left without its payload (spawned, its stdin closed before the job was
/// written) never ran the job, and logs nothing.
const SCRIPT: &str = r#"read -r payload; [ -n "$payload" ] || exit 1; echo "$JOBWIRE_JOB_ID $payload" >> "$FAULTS_LOG"; sleep 0.2; printf proc"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_worker_process_holding_jobs() {
    const JOBS: usize = 5_000;
    let redis = Redis::start();
    let prefix = unique_prefix();
    let server = Process::start_async(serve_args("127.0.0.1:0", &redis.url(), &prefix, &[])).await;
    let books = Arc::new(Books::default());
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("deliveries");
    let addr = server.addr.to_string();
    let mut doomed = jobwire_command(&[
        "work",
        "--addr",
        &addr,
        "--queue",
        QUEUE,
        "--concurrency",
        "8",
        "--worker-id",
        "proc",
        "--",
        "sh",
        "-c",
        SCRIPT,
    ]);
    let mut doomed = doomed.env("FAULTS_LOG", &log).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("work");
    let mut fleet = Fleet::new();
    for n in 0..3 {
        let client = Client::connect(&format!("http://{addr}")).await.expect("connect");
        fleet.spawn(&books, client, &format!("w{n}"));
    }
    let producer = produce(books.clone(), vec![server.addr], JOBS, 1_000);

    added(&books, JOBS * 2 / 5).await;
    let logged = || std::fs::read_to_string(&log).unwrap_or_default().lines().count();
    eventually(Duration::from_secs(10), "the worker process to run jobs", || async { logged() >= 16 }).await;
    doomed.start_kill().expect("SIGKILL");
    let fault = Instant::now();
    doomed.wait().await.expect("reaped");

    producer.await.expect("producer");
    books.add_logged("proc", &std::fs::read_to_string(&log).unwrap_or_default());
    let figures = balance(&books, server.addr, fault, |d| d.worker == "proc").await;
    fleet.stop().await;
    figures.print("kill-worker", &format!("killed_worker_deliveries={}", books.deliveries_to("proc")));
    assert!(figures.duplicates > 0, "the kill found no job running: nothing was tested");
    assert_clean(&figures, &redis.url(), &prefix).await;
}
