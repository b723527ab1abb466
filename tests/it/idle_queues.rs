//! Idle queues: what a server keeps in memory per queue goes once the queue is idle (and comes
//! back on its next use); a queue that holds nothing leaves the registry.

use std::time::Duration;

use jobwire::{proto, queue::QueuesInMemory};
use tonic::Code;

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
async fn an_idle_queue_holding_jobs_keeps_its_gauges_until_it_is_drained() {
    let redis = Redis::start();
    let server = server(&redis, Duration::from_millis(50), Duration::from_millis(200)).await;
    let addr = server.metrics_addr.expect("metrics are served");
    let q = format!("held-{}", unique_prefix());
    let mut client = server.client().await;
    let id = harness::add(&mut client, harness::job(&q, "t", b"")).await;
    let waiting = format!("jobwire_queue_waiting{{queue=\"{q}\"}} 1");
    eventually(WAIT, "the waiting gauge to show the job", || async {
        http_get(addr, "/metrics").await.1.contains(&waiting)
    })
    .await;
    eventually(WAIT, "the queue to be idle here", || async { server.engine.sweep_idle_queues().in_use == 0 }).await;
    let (_, text) = http_get(addr, "/metrics").await;
    assert!(text.contains(&waiting), "a queue with a job waiting is still listed:\n{text}");
    // Drained while idle here (a delete counts no use): the gauges read it empty, and it goes.
    client.delete_job(proto::DeleteJobRequest { job_id: id }).await.expect("delete");
    eventually(WAIT, "the drained idle queue's series to go", || async {
        !http_get(addr, "/metrics").await.1.contains(&q)
    })
    .await;
    server.stop().await;
}

/// The queues ListQueues shows.
async fn listed(client: &mut harness::Client) -> Vec<String> {
    let answer = client.list_queues(proto::ListQueuesRequest {}).await.expect("list queues").into_inner();
    answer.queues.into_iter().map(|q| q.queue).collect()
}

#[tokio::test]
async fn queues_drained_to_nothing_leave_the_registry_and_new_ones_fit_under_max_queues() {
    let redis = Redis::start();
    let server = ServerBuilder::new(&redis)
        .settings(|s| {
            s.max_queues = Some(5);
            s.queue_idle_after = Duration::from_millis(200);
        })
        .retention(|r| r.completed_max = 0)
        .start()
        .await;
    let mut client = server.client().await;
    let queues: Vec<String> = (0..5).map(|i| format!("full-{i}")).collect();
    for q in &queues {
        harness::add(&mut client, harness::job(q, "t", b"")).await;
    }
    let refused = client.add_job(harness::job("sixth", "t", b"")).await.expect_err("over --max-queues");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(listed(&mut client).await, queues);

    let names: Vec<&str> = queues.iter().map(String::as_str).collect();
    let mut worker = Worker::open(&server, &names, 5).await;
    for _ in &queues {
        let job = worker.job().await;
        worker.complete(&job, b"").await.expect("complete");
    }
    drop(worker);
    eventually(WAIT, "the drained queues to leave the registry", || async {
        server.engine.retire_empty_queues().await.expect("retire");
        server.store.instances().queues().await.expect("registry").is_empty()
    })
    .await;
    assert!(listed(&mut client).await.is_empty(), "ListQueues shows no queue that holds nothing");
    harness::add(&mut client, harness::job("sixth", "t", b"")).await;
    assert_eq!(listed(&mut client).await, ["sixth"]);
    for q in queues.iter().map(String::as_str).chain(["sixth"]) {
        server.assert_invariants(q).await;
    }
    server.stop().await;
}

/// Adds through one instance (which remembers the queue as registered) race the removal of the
/// queue by another: whenever the queue holds a job, it is in the registry.
#[tokio::test]
async fn adds_racing_the_removal_never_leave_a_queue_with_jobs_outside_the_registry() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let settings = |s: &mut jobwire::queue::Settings| s.queue_idle_after = Duration::from_secs(3600);
    let adder = ServerBuilder::new(&redis).prefix(&prefix).settings(settings).start().await;
    let remover = ServerBuilder::new(&redis).prefix(&prefix).settings(settings).start().await;
    let mut client = adder.client().await;
    let q = "raced";
    let mut kept = 0;
    for round in 0..150 {
        let add = async {
            // Spread the add over the removal's three steps.
            tokio::time::sleep(Duration::from_micros(round % 7 * 150)).await;
            harness::add(&mut client, harness::job(q, "t", b"")).await
        };
        let (id, retired) = tokio::join!(add, remover.engine.retire_empty_queues());
        let retired = retired.expect("retire");
        let registry = adder.store.instances().queues().await.expect("registry");
        assert_eq!(registry, [q], "round {round}: a queue holding {id} is registered (retired {retired})");
        kept += usize::from(retired == 0);
        client.delete_job(proto::DeleteJobRequest { job_id: id }).await.expect("delete");
    }
    assert!(kept > 0, "some removals saw the job");
    adder.assert_invariants(q).await;
    adder.stop().await;
    remover.stop().await;
}
