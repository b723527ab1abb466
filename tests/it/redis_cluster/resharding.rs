//! A busy queue's slot moved to another master while jobs flow: adds go through instance A, a
//! worker streams from B, and meanwhile the slot is migrated by hand as `redis-cli --cluster
//! reshard` would (SETSLOT IMPORTING on the target, MIGRATING on the source, MIGRATE of the
//! slot's keys until none is left, SETSLOT NODE on every master). Calls during the move meet
//! `ASK` and `TRYAGAIN` and are retried within their timeout; an add that still answers
//! UNAVAILABLE is retried by the test under its idempotency key. Every acknowledged job
//! completes, none twice without a counted lost delivery, and the queue's wake-ups follow the
//! slot: with the safety poll far off, a job added after the move is delivered at once.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use jobwire::proto;
use tokio::sync::Mutex;

use super::{Cluster, add_through_the_gap, complete_through_the_gap, on_node};
use crate::harness::{ServerBuilder, Worker, eventually, unique_prefix};

/// One command on the node whose unix socket is `socket`.
fn on<T: redis::FromRedisValue>(socket: &str, cmd: &redis::Cmd) -> T {
    let mut conn = redis::Client::open(socket).and_then(|c| c.get_connection()).expect("a node connection");
    cmd.query(&mut conn).unwrap_or_else(|e| panic!("a cluster command: {e}"))
}

/// Where to reach one master: its unix socket and its TCP port.
struct Master {
    socket: String,
    port: u16,
}

/// Moves `slot` from master `source` to master `target`, keys and all, then tells every
/// master (see the module doc). Blocking: run it off the test's runtime, so the servers work on.
fn move_slot(slot: u16, source: &Master, target: &Master, masters: &[Master]) {
    let id = |m: &Master| on::<String>(&m.socket, redis::cmd("CLUSTER").arg("MYID"));
    let (source_id, target_id) = (id(source), id(target));
    let setslot = |m: &Master, how: &str, id: &str| {
        on::<()>(&m.socket, redis::cmd("CLUSTER").arg("SETSLOT").arg(slot).arg(how).arg(id));
    };
    setslot(target, "IMPORTING", &source_id);
    setslot(source, "MIGRATING", &target_id);
    loop {
        // A few keys at a time, so that calls meet the slot half moved.
        let keys: Vec<String> = on(&source.socket, redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(slot).arg(10));
        if keys.is_empty() {
            break;
        }
        on::<redis::Value>(
            &source.socket,
            redis::cmd("MIGRATE").arg("127.0.0.1").arg(target.port).arg("").arg(0).arg(5000).arg("KEYS").arg(&keys),
        );
    }
    setslot(target, "NODE", &target_id);
    setslot(source, "NODE", &target_id);
    for master in masters {
        setslot(master, "NODE", &target_id);
    }
}

#[tokio::test]
async fn a_busy_queues_slot_moved_to_another_master_loses_nothing_and_wake_ups_follow() {
    let cluster = Cluster::start();
    let prefix = unique_prefix();
    let queue = "moving";
    let tag = format!("{{{queue}}}");
    let from = cluster.master_of(&tag);
    let masters: Vec<usize> = (0..cluster.nodes.len())
        .filter(|&i| super::info_field(&cluster.nodes[i], "replication", "role").as_deref() == Some("master"))
        .collect();
    let to = *masters.iter().find(|&&i| i != from).expect("another master");
    let slot: u16 = on_node(&cluster.nodes[from], redis::cmd("CLUSTER").arg("KEYSLOT").arg(&tag)).expect("KEYSLOT");
    // The safety poll is far off: a delivery within seconds after the move is a wake-up's.
    let far_poll = |s: &mut jobwire::queue::Settings| s.safety_poll = Duration::from_secs(30);
    let a = ServerBuilder::new(&cluster).prefix(&prefix).settings(far_poll).start().await;
    let b = ServerBuilder::new(&cluster).prefix(&prefix).settings(far_poll).start().await;

    let deliveries = Arc::new(Mutex::new(BTreeMap::<String, u32>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut worker = Worker::open(&b, &[queue], 8).await;
    let working = tokio::spawn({
        let (deliveries, stop) = (deliveries.clone(), stop.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let Some(proto::get_job_response::Message::Job(j)) =
                    worker.next_message(Duration::from_millis(100)).await
                else {
                    continue;
                };
                complete_through_the_gap(&mut worker, &j).await;
                let mut seen = deliveries.lock().await;
                let times = seen.entry(j.id.clone()).or_default();
                assert!(*times == 0 || j.lost_deliveries > 0, "{} delivered again with no lost delivery counted", j.id);
                *times += 1;
            }
        }
    });

    let mut producer = a.client().await;
    let producing = tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        for i in 0..300 {
            acknowledged.push(add_through_the_gap(&mut producer, queue, format!("job-{i}")).await);
        }
        (producer, acknowledged)
    });
    // The move starts while the first jobs flow.
    let started = deliveries.clone();
    eventually(Duration::from_secs(10), "the first jobs to be delivered", || {
        let started = started.clone();
        async move { started.lock().await.len() >= 20 }
    })
    .await;
    let master = |i: usize| Master { socket: cluster.nodes[i].socket_url(), port: super::port(&cluster.nodes[i]) };
    let (source, target, all) = (master(from), master(to), masters.iter().map(|&i| master(i)).collect::<Vec<_>>());
    tokio::task::spawn_blocking(move || move_slot(slot, &source, &target, &all)).await.expect("the slot move");
    assert_eq!(cluster.master_of(&tag), to, "the slot is on its new master");
    let (mut producer, acknowledged) = producing.await.expect("the producer task");
    eventually(Duration::from_secs(30), "every acknowledged job to complete", || {
        let (deliveries, acknowledged) = (deliveries.clone(), acknowledged.clone());
        async move {
            let seen = deliveries.lock().await;
            acknowledged.iter().all(|id| seen.contains_key(id))
        }
    })
    .await;

    // The queue is idle now; one job added after the move must be woken for, not polled for.
    let added_at = Instant::now();
    let late = add_through_the_gap(&mut producer, queue, "after-the-move".into()).await;
    eventually(Duration::from_secs(5), "the job added after the move to be delivered by a wake-up", || {
        let (deliveries, late) = (deliveries.clone(), late.clone());
        async move { deliveries.lock().await.contains_key(&late) }
    })
    .await;
    eprintln!("after the slot move, a new job was delivered in {:?}", added_at.elapsed());
    stop.store(true, Ordering::Relaxed);
    working.await.expect("the worker task");
    a.assert_invariants(queue).await;
    a.stop().await;
    b.stop().await;
}
