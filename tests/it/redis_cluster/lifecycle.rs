//! The core flows over a Redis Cluster, on a queue of each master: a job's lifecycle through two
//! instances (added through A, streamed from B, completed through A), FIFO per priority,
//! a retry, a session's order, WatchJob; every queue ends with the invariant check, from both
//! instances; then the listings that read global keys (workers of both instances, queues). The dispatchers' safety poll is 10 s, so every delivery here comes from a
//! wake-up on the queue's shard channel, published on its master and heard there.

use std::time::Duration;

use jobwire::{
    proto::{self, JobEventType, JobState, session_service_client::SessionServiceClient},
    queue::Settings,
};

use super::{Cluster, complete_through_a_read_through_b, on_node};
use crate::harness::{ServerBuilder, Worker, add, eventually, job, millis, unique_prefix};

fn wake_ups_only(settings: &mut Settings) {
    settings.safety_poll = Duration::from_secs(10);
    settings.reconcile_every = Duration::from_secs(10);
}

/// Queue names whose slots are on three different masters.
pub(super) fn one_queue_per_master(cluster: &Cluster) -> Vec<(String, usize)> {
    let mut picked: Vec<(String, usize)> = Vec::new();
    for i in 0..100 {
        let queue = format!("q{i}");
        let master = cluster.master_of(&format!("{{{queue}}}"));
        if picked.iter().all(|(_, m)| *m != master) {
            picked.push((queue, master));
        }
        if picked.len() == 3 {
            return picked;
        }
    }
    panic!("no three queues on three masters among 100 names");
}

#[tokio::test]
async fn the_core_flows_run_on_every_master_through_two_instances() {
    let cluster = Cluster::start();
    let prefix = unique_prefix();
    let a = ServerBuilder::new(&cluster).prefix(&prefix).settings(wake_ups_only).start().await;
    let b = ServerBuilder::new(&cluster).prefix(&prefix).settings(wake_ups_only).start().await;
    let mut via_a = a.client().await;
    let mut via_b = b.client().await;
    for (queue, master) in one_queue_per_master(&cluster) {
        let queue = queue.as_str();
        // Lifecycle: added through A, streamed from B, completed through A, read through B.
        let mut worker = Worker::open(&b, &[queue], 1).await;
        let id = add(&mut via_a, job(queue, "t", b"one")).await;
        let delivered = worker.job().await;
        assert_eq!((delivered.id.as_str(), delivered.attempt), (id.as_str(), 1));
        let keys = a.store.keys().queue(queue);
        let on_master: i64 = on_node(&cluster.nodes[master], redis::cmd("HLEN").arg(keys.active())).expect("HLEN");
        assert_eq!(on_master, 1, "the lease is on the master of {queue}'s slot");
        complete_through_a_read_through_b(&mut via_a, &mut via_b, &delivered).await;

        // The credit came back to B's stream: the next job reaches it.
        let retried = add(&mut via_a, job(queue, "t", b"retry")).await;
        let first = worker.job().await;
        assert_eq!(first.id, retried, "credited after the ack through A");
        let failed = worker
            .client
            .fail_job(proto::FailJobRequest {
                job_id: first.id.clone(),
                lease_token: first.lease_token.clone(),
                error: "boom".into(),
                retryable: Some(true),
                retry_after: Some(millis(100)),
            })
            .await
            .expect("fail")
            .into_inner();
        assert_eq!(failed.state(), JobState::Retrying);
        let again = worker.job().await;
        assert_eq!((again.id.as_str(), again.attempt), (retried.as_str(), 2), "retried after its backoff");
        worker.complete(&again, b"").await.expect("complete the retry");

        // FIFO within a priority, higher priority first (added while no stream has credit).
        drop(worker);
        for (payload, priority) in [("low-1", -1), ("high-1", 3), ("low-2", -1), ("high-2", 3)] {
            add(&mut via_a, proto::AddJobRequest { priority, ..job(queue, "t", payload.as_bytes()) }).await;
        }
        let mut worker = Worker::open(&b, &[queue], 1).await;
        let mut order = Vec::new();
        for _ in 0..4 {
            let j = worker.job().await;
            order.push(String::from_utf8(j.payload.clone()).expect("utf-8"));
            worker.complete(&j, b"").await.expect("complete");
        }
        assert_eq!(order, ["high-1", "high-2", "low-1", "low-2"], "on {queue}");

        // A session's jobs start in the order they were added; WatchJob follows the last one.
        let mut sessions = SessionServiceClient::new(a.channel().await);
        let session = sessions
            .create_session(proto::CreateSessionRequest {
                queue: queue.into(),
                name: "s".into(),
                state: "{}".into(),
                ttl: None,
                max_concurrency: Some(1),
            })
            .await
            .expect("create session")
            .into_inner()
            .session
            .expect("session");
        let mut ids = Vec::new();
        for i in 0..3 {
            let req =
                proto::AddJobRequest { session_id: session.id.clone(), ..job(queue, "s", i.to_string().as_bytes()) };
            ids.push(add(&mut via_b, req).await);
        }
        let mut watch =
            via_b.watch_job(proto::WatchJobRequest { job_id: ids[2].clone() }).await.expect("watch").into_inner();
        let mut order = Vec::new();
        for _ in 0..3 {
            let j = worker.job().await;
            order.push(j.id.clone());
            worker.complete(&j, b"").await.expect("complete");
        }
        assert_eq!(order, ids, "the session's jobs in their order");
        let completed = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(Some(m)) = watch.message().await {
                if m.event.is_some_and(|e| e.r#type() == JobEventType::Completed) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(completed, Ok(true), "WatchJob saw the completion");
        drop(worker);
        for server in [&a, &b] {
            server.assert_invariants(queue).await;
        }
    }
    // The worker lists of both instances (keys of their own slots) are read in one listing.
    let _a_stream = Worker::open(&a, &["listed"], 1).await;
    let _b_stream = Worker::open(&b, &["listed"], 1).await;
    eventually(Duration::from_secs(10), "both instances' worker lists", || {
        let mut client = via_a.clone();
        async move {
            let req = proto::ListWorkersRequest { queue: "listed".into() };
            client.list_workers(req).await.is_ok_and(|r| r.into_inner().workers.len() == 2)
        }
    })
    .await;
    let listed = via_b.list_queues(proto::ListQueuesRequest::default()).await.expect("list queues").into_inner();
    assert_eq!(listed.queues.len(), 3, "the registry lists the queues of every master: {listed:?}");
    a.stop().await;
    b.stop().await;
}
