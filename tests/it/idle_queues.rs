//! Idle queues: what a server keeps in memory per queue goes once the queue is idle (and comes
//! back on its next use); a queue that holds nothing leaves the registry.

use std::time::Duration;

use jobwire::queue::QueuesInMemory;

use crate::{
    harness::{self, Redis, ServerBuilder, Worker, eventually, unique_prefix},
    metrics::http_get,
};

const WAIT: Duration = Duration::from_secs(15);

/// A server whose queues go idle after `idle_after`, with metrics refreshed every `refresh`.
async fn server(redis: &Redis, refresh: Duration, idle_after: Duration) -> harness::Server {
    ServerBuilder::new(redis).metrics(refresh).settings(|s| s.queue_idle_after = idle_after).start().await
}

#[tokio::test]
async fn an_idle_queue_leaves_memory_and_metrics_and_comes_back_on_use() {
    let redis = Redis::start();
    let server = server(&redis, Duration::from_millis(100), Duration::from_millis(300)).await;
    let addr = server.metrics_addr.expect("metrics are served");
    let prefix = format!("idle-{}", unique_prefix());
    let queues: Vec<String> = (0..30).map(|i| format!("{prefix}-{i}")).collect();
    let mut client = server.client().await;
    for q in &queues {
        harness::add(&mut client, harness::job(q, "t", b"once")).await;
    }
    let names: Vec<&str> = queues.iter().map(String::as_str).collect();
    let mut worker = Worker::open(&server, &names, 10).await;
    for _ in &queues {
        let job = worker.job().await;
        worker.complete(&job, b"").await.expect("complete");
    }
    let (_, text) = http_get(addr, "/metrics").await;
    assert!(text.contains(&format!("jobwire_jobs_completed_total{{queue=\"{}\"}} 1", queues[0])), "{text}");
    drop(worker);

    eventually(WAIT, "every per-queue map to empty", || async {
        server.engine.sweep_idle_queues() == QueuesInMemory::default()
    })
    .await;
    let (_, text) = http_get(addr, "/metrics").await;
    assert!(!text.contains(&prefix), "no series of an idle queue is listed:\n{text}");
    assert!(text.contains("jobwire_redis_call_seconds_count"), "the global series stay:\n{text}");

    // Used again: it works, and its figures start afresh here.
    let q = &queues[0];
    let id = harness::add(&mut client, harness::job(q, "t", b"again")).await;
    let mut worker = Worker::open(&server, &[q], 1).await;
    let job = worker.job().await;
    assert_eq!(job.id, id);
    worker.complete(&job, b"").await.expect("complete");
    let (_, text) = http_get(addr, "/metrics").await;
    assert!(text.contains(&format!("jobwire_jobs_added_total{{queue=\"{q}\"}} 1")), "{text}");
    assert!(text.contains(&format!("jobwire_jobs_completed_total{{queue=\"{q}\"}} 1")), "{text}");
    assert_eq!(server.stats(q).await.completed, 2, "Redis kept both completed jobs");
    let in_memory = server.engine.sweep_idle_queues();
    assert_eq!((in_memory.in_use, in_memory.dispatchers, in_memory.metric_series), (1, 1, 1), "{in_memory:?}");
    for q in &queues {
        server.assert_invariants(q).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn an_idle_queue_holding_jobs_keeps_its_gauges() {
    let redis = Redis::start();
    let server = server(&redis, Duration::from_millis(50), Duration::from_millis(200)).await;
    let addr = server.metrics_addr.expect("metrics are served");
    let q = format!("held-{}", unique_prefix());
    let mut client = server.client().await;
    harness::add(&mut client, harness::job(&q, "t", b"")).await;
    let waiting = format!("jobwire_queue_waiting{{queue=\"{q}\"}} 1");
    eventually(WAIT, "the waiting gauge to show the job", || async {
        http_get(addr, "/metrics").await.1.contains(&waiting)
    })
    .await;
    eventually(WAIT, "the queue to be idle here", || async { server.engine.sweep_idle_queues().in_use == 0 }).await;
    let (_, text) = http_get(addr, "/metrics").await;
    assert!(text.contains(&waiting), "a queue with a job waiting is still listed:\n{text}");
    server.stop().await;
}
