//! jobwire over a TLS-only Redis Cluster (`rediss+cluster://`): 3 masters with a replica each,
//! no plain-text port on any node (`port 0`), the cluster bus and replication over TLS, and
//! every client asked for a certificate of the cluster's CA (`tls-auth-clients yes`). A
//! connection jobwire opened in plain text, or without its client certificate, would reach
//! nothing, so each step below proves its connections are TLS: the calls and the `WAIT`
//! pipelined behind an add (A waits for a replica), the library loaded on every master, the
//! shard-channel subscriber that wakes B's dispatcher (the safety poll is far off), the event
//! tailers behind Subscribe and WatchJob. A plain `redis+cluster://` URL against the cluster,
//! or TLS files beside one, fails with a clear error instead of hanging.

use std::time::Duration;

use jobwire::{
    proto::{self, JobEventType},
    store::{Store, StoreConfig, StoreError},
};

use super::{Cluster, complete_through_a_read_through_b, on_node, saw};
use crate::harness::{RedisBackend, ServerBuilder, Worker, add, job, retention, run_jobwire, unique_prefix};

#[tokio::test]
async fn two_instances_run_a_job_over_a_tls_only_cluster() {
    let cluster = Cluster::start_tls(3, 1);
    let prefix = unique_prefix();
    let wake_ups_only = |s: &mut jobwire::queue::Settings| s.safety_poll = Duration::from_secs(30);
    let a = ServerBuilder::new(&cluster).prefix(&prefix).wait_replicas(1).settings(wake_ups_only).start().await;
    let b = ServerBuilder::new(&cluster).prefix(&prefix).settings(wake_ups_only).start().await;
    for master in cluster.masters() {
        let library: Vec<redis::Value> =
            on_node(&cluster.nodes[master], redis::cmd("FUNCTION").arg("LIST")).expect("FUNCTION LIST");
        assert_eq!(library.len(), 1, "the library is loaded on master {master}");
    }
    let queue = "secure";
    let (mut via_a, mut via_b) = (a.client().await, b.client().await);
    let subscribe = proto::SubscribeRequest { queue: queue.into(), cursor: String::new() };
    let mut events = via_b.subscribe(subscribe).await.expect("Subscribe").into_inner();
    let mut worker = Worker::open(&b, &[queue], 1).await;

    let id = add(&mut via_a, job(queue, "t", b"over tls")).await;
    let mut watch = via_b.watch_job(proto::WatchJobRequest { job_id: id.clone() }).await.expect("watch").into_inner();
    let delivered = worker.next_job(Duration::from_secs(5)).await.expect("B is woken for the job added through A");
    assert_eq!(delivered.id, id);
    complete_through_a_read_through_b(&mut via_a, &mut via_b, &delivered).await;
    let completed = |e: &proto::JobEvent| e.r#type() == JobEventType::Completed;
    assert!(saw(&mut watch, |m| m.event.as_ref(), completed).await, "WatchJob saw the completion");
    assert!(saw(&mut events, |m| m.event.as_ref(), completed).await, "Subscribe saw the completion");
    drop(worker);
    a.assert_invariants(queue).await;
    b.assert_invariants(queue).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_plain_cluster_url_or_tls_files_beside_one_fail_clearly_against_a_tls_only_cluster() {
    let cluster = Cluster::start_tls(3, 0);
    let plain = cluster.url().replacen("rediss+cluster://", "redis+cluster://", 1);
    let store = Store::new(&StoreConfig {
        url: plain.clone(),
        access: Default::default(),
        prefix: unique_prefix(),
        pool_size: 1,
        timeout: Duration::from_millis(500),
        retention: retention(),
        wait_replicas: 0,
    })
    .expect("a plain cluster URL parses");
    let call = tokio::time::timeout(Duration::from_secs(10), store.ensure_schema()).await;
    let Ok(Err(StoreError::Unavailable(why))) = call else {
        panic!("a plain-text call to TLS ports answers Unavailable in time: {call:?}");
    };
    assert!(why.contains("rediss+cluster://"), "the error says what to try: {why}");
    let doctor = run_jobwire(&["doctor", "--redis-url", &plain], Duration::from_secs(30)).await;
    assert_eq!(doctor.code, Some(2), "the check cannot run: {}", doctor.stderr);
    assert!(doctor.stderr.contains("speak TLS only"), "{}", doctor.stderr);

    let [ca, cert, key] = cluster.tls().client_files();
    let refused = run_jobwire(
        &["doctor", "--redis-url", &plain, "--redis-ca", &ca, "--redis-client-cert", &cert, "--redis-client-key", &key],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(refused.code, Some(2));
    assert!(refused.stderr.contains("needs a rediss+cluster:// URL"), "{}", refused.stderr);
}
