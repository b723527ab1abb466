//! A master killed mid-run and its replica promoted: jobs flow through two instances (added
//! through A, worked from B) while the master of the queue's slot, which also holds the
//! instance registry, is killed. The service follows the new topology with no restart, health
//! is NOT_SERVING during the gap and SERVING after it, and no lease is reaped because of the gap
//! (no job counts a lost delivery). Without `WAIT`, an add acknowledged just before the kill may
//! not have reached the replica: the test counts those and prints the figure; with
//! `--redis-wait-replicas 1`, none may be lost.

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use jobwire::proto::{self, JobState};
use tokio::sync::Mutex;
use tonic::Code;

use super::{Cluster, add_through_the_gap, complete_through_the_gap};
use crate::harness::{Redis, ServerBuilder, Worker, eventually, job, unique_prefix};

#[tokio::test]
async fn a_master_killed_mid_run_is_followed_with_no_restart_and_nothing_reaped() {
    let (recovered_in, gone) = kill_a_master_mid_run(0).await;
    eprintln!(
        "failover without WAIT: recovered in {recovered_in:?}; {gone} of 100 jobs acknowledged before the kill \
         were lost with the master's unreplicated writes"
    );
}

#[tokio::test]
async fn with_wait_no_acknowledged_add_is_lost_in_a_failover() {
    let (recovered_in, gone) = kill_a_master_mid_run(1).await;
    eprintln!("failover with WAIT 1: recovered in {recovered_in:?}; {gone} of 100 acknowledged adds lost");
    assert_eq!(gone, 0, "an add answered OK had reached the replica");
}

#[tokio::test]
async fn with_wait_and_no_replica_an_add_answers_unavailable() {
    let redis = Redis::start();
    let server = ServerBuilder::new(&redis).wait_replicas(1).start().await;
    let mut client = server.client().await;
    let err = client.add_job(job("q", "t", b"")).await.expect_err("no replica confirms it");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    server.stop().await;
}

/// The run of the module doc, with `--redis-wait-replicas wait`: how long from the kill to the
/// first add answered after it, and how many adds acknowledged before the kill are gone.
async fn kill_a_master_mid_run(wait: u32) -> (Duration, usize) {
    let mut cluster = Cluster::start();
    let prefix = unique_prefix();
    let registry_master = cluster.master_of(&format!("{prefix}:instances"));
    let queue = (0..200)
        .map(|i| format!("f{i}"))
        .find(|q| cluster.master_of(&format!("{{{q}}}")) == registry_master)
        .expect("a queue on the registry's master");
    let queue = queue.as_str();
    let a = ServerBuilder::new(&cluster).prefix(&prefix).wait_replicas(wait).start().await;
    let b = ServerBuilder::new(&cluster).prefix(&prefix).wait_replicas(wait).start().await;
    let completed = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut worker = Worker::open(&b, &[queue], 8).await;
    let working = tokio::spawn({
        let (completed, stop) = (completed.clone(), stop.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                // A revoke (LeaseLost) is for a lease the failover undid (leases are not
                // waited for): its job is ready again on the new master and comes back.
                let Some(proto::get_job_response::Message::Job(j)) =
                    worker.next_message(Duration::from_millis(200)).await
                else {
                    continue;
                };
                // A lease lost with the old master's last writes: the job comes again.
                complete_through_the_gap(&mut worker, &j).await;
                assert_eq!(j.lost_deliveries, 0, "{} was reaped or lost during the failover", j.id);
                completed.lock().await.insert(j.id);
            }
        }
    });

    let mut producer = a.client().await;
    let mut acknowledged = Vec::new();
    for i in 0..100 {
        acknowledged.push(add_through_the_gap(&mut producer, queue, format!("before-{i}")).await);
    }
    let mut health = a.engine.redis_up();
    assert!(*health.borrow_and_update(), "serving before the kill");
    // Every change of A's health from here on, as it happens.
    let not_serving = Arc::new(AtomicBool::new(false));
    let watching = tokio::spawn({
        let (mut health, not_serving) = (a.engine.redis_up(), not_serving.clone());
        async move {
            while health.changed().await.is_ok() {
                if !*health.borrow_and_update() {
                    not_serving.store(true, Ordering::Relaxed);
                }
            }
        }
    });
    cluster.kill(registry_master);
    let killed_at = Instant::now();
    if wait > 0 {
        // The promoted replica has no replica of its own until the old master rejoins as one;
        // until then no add can be confirmed by a replica (UNAVAILABLE, retried here).
        cluster.wait_failed_over(Duration::from_secs(15)).await;
        cluster.restart(registry_master);
    }
    let mut added_during = 0;
    // Adds go on through the gap (each retried until the replica took over).
    let mut first_after = None;
    for i in 0..100 {
        acknowledged.push(add_through_the_gap(&mut producer, queue, format!("after-{i}")).await);
        first_after.get_or_insert_with(|| killed_at.elapsed());
        added_during += 1;
    }
    let recovered_in = first_after.unwrap_or_default();
    tokio::time::timeout(Duration::from_secs(20), health.wait_for(|up| *up))
        .await
        .expect("SERVING again once the replica took over")
        .expect("health watch");
    assert!(not_serving.load(Ordering::Relaxed), "health went NOT_SERVING while the slot had no master");
    watching.abort();
    assert_eq!(added_during, 100);

    let after_the_kill: Vec<String> = acknowledged[100..].to_vec();
    eventually(Duration::from_secs(30), "every job acknowledged after the kill to complete", || {
        let (completed, after_the_kill) = (completed.clone(), after_the_kill.clone());
        async move {
            let done = completed.lock().await;
            after_the_kill.iter().all(|id| done.contains(id))
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    working.await.expect("the worker task");
    let done = completed.lock().await;
    let mut gone = 0;
    for id in &acknowledged[..100] {
        if !done.contains(id) {
            let info = producer.get_job_info(proto::GetJobInfoRequest { job_id: id.clone() }).await;
            match info {
                Err(e) if e.code() == Code::NotFound => gone += 1,
                Ok(i) => assert_eq!(i.into_inner().job.map(|j| j.state()), Some(JobState::Completed), "{id}"),
                Err(e) => panic!("info {id}: {e}"),
            }
        }
    }
    a.assert_invariants(queue).await;
    a.stop().await;
    b.stop().await;
    (recovered_in, gone)
}
