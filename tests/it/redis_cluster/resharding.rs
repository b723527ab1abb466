//! A busy queue's slot moved while jobs flow: adds go through instance A, a worker streams from
//! B, and meanwhile the slot is migrated by hand as `redis-cli --cluster reshard` would
//! (SETSLOT IMPORTING on the target, MIGRATING on the source, MIGRATE of the slot's keys until
//! none is left, SETSLOT NODE on every master). Calls during the move meet `ASK` and
//! `TRYAGAIN` and are retried within their timeout; an add that still answers UNAVAILABLE is
//! retried by the test under its idempotency key. Every acknowledged job completes, none twice
//! without a counted lost delivery, and the queue's wake-ups follow the slot: with the safety
//! poll far off, a job added after the move is delivered at once.
//!
//! The slot goes to another master of the cluster, or to a master that joins while the jobs
//! flow (`redis-cli --cluster add-node`) without the function library, which it gets on the
//! first call that finds it missing there.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use jobwire::proto::{self, JobEventType};
use tokio::{sync::Mutex, task::JoinHandle};

use super::{Cluster, add_through_the_gap, complete_through_the_gap, on_node, saw};
use crate::harness::{Client, Server, ServerBuilder, Worker, eventually, unique_prefix};

/// One command on the node whose unix socket is `socket`.
fn on<T: redis::FromRedisValue>(socket: &str, cmd: &redis::Cmd) -> T {
    let mut conn = redis::Client::open(socket).and_then(|c| c.get_connection()).expect("a node connection");
    cmd.query(&mut conn).unwrap_or_else(|e| panic!("a cluster command: {e}"))
}

/// Where to reach one master: its unix socket and its port.
struct Master {
    socket: String,
    port: u16,
}

impl Master {
    fn of(cluster: &Cluster, index: usize) -> Self {
        Self { socket: cluster.nodes[index].socket_url(), port: super::port(&cluster.nodes[index]) }
    }
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

/// Moves `queue`'s slot from its master to master `to` (see [`move_slot`]), off the test's
/// runtime, and checks that it landed there.
async fn move_queue(cluster: &Cluster, queue: &str, to: usize) {
    let tag = format!("{{{queue}}}");
    let from = cluster.master_of(&tag);
    let slot: u16 = on_node(&cluster.nodes[from], redis::cmd("CLUSTER").arg("KEYSLOT").arg(&tag)).expect("KEYSLOT");
    let (source, target) = (Master::of(cluster, from), Master::of(cluster, to));
    let all: Vec<Master> = cluster.masters().into_iter().map(|i| Master::of(cluster, i)).collect();
    tokio::task::spawn_blocking(move || move_slot(slot, &source, &target, &all)).await.expect("the slot move");
    assert_eq!(cluster.master_of(&tag), to, "the slot is on its new master");
}

/// Two instances over the cluster, their dispatchers' safety poll far off (a delivery within
/// seconds after the move is a wake-up's).
async fn two_instances(cluster: &Cluster) -> (Server, Server) {
    let prefix = unique_prefix();
    let far_poll = |s: &mut jobwire::queue::Settings| s.safety_poll = Duration::from_secs(30);
    let a = ServerBuilder::new(cluster).prefix(&prefix).settings(far_poll).start().await;
    let b = ServerBuilder::new(cluster).prefix(&prefix).settings(far_poll).start().await;
    (a, b)
}

/// How many times each job was delivered.
type Deliveries = Arc<Mutex<BTreeMap<String, u32>>>;

/// Jobs flowing through a queue of two instances: a producer adds 300 jobs through A (each
/// under an idempotency key, retried while the slot moves), a worker streaming from B
/// completes them and counts each job's deliveries (a second one only with a lost delivery
/// counted).
struct Flow {
    queue: &'static str,
    deliveries: Deliveries,
    stop: Arc<AtomicBool>,
    working: JoinHandle<()>,
    producing: JoinHandle<(Client, Vec<String>)>,
}

impl Flow {
    /// Starts the producer and the worker; returns once the first jobs are delivered.
    async fn start(a: &Server, b: &Server, queue: &'static str) -> Self {
        let deliveries = Deliveries::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut worker = Worker::open(b, &[queue], 8).await;
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
                    assert!(
                        *times == 0 || j.lost_deliveries > 0,
                        "{} delivered again with no lost delivery counted",
                        j.id
                    );
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
        let flow = Self { queue, deliveries, stop, working, producing };
        let deliveries = &flow.deliveries;
        eventually(Duration::from_secs(10), "the first jobs to be delivered", || async move {
            deliveries.lock().await.len() >= 20
        })
        .await;
        flow
    }

    /// Waits for every acknowledged job to complete; then, the queue idle, one job added
    /// afterwards must be woken for, not polled for. Stops the worker.
    async fn finish(self) {
        let (mut producer, acknowledged) = self.producing.await.expect("the producer task");
        let (deliveries, acknowledged) = (&self.deliveries, &acknowledged);
        eventually(Duration::from_secs(30), "every acknowledged job to complete", || async move {
            let seen = deliveries.lock().await;
            acknowledged.iter().all(|id| seen.contains_key(id))
        })
        .await;
        let added_at = Instant::now();
        let late = add_through_the_gap(&mut producer, self.queue, "after-the-move".into()).await;
        let late = &late;
        eventually(
            Duration::from_secs(5),
            "the job added after the move to be delivered by a wake-up",
            || async move { deliveries.lock().await.contains_key(late) },
        )
        .await;
        eprintln!("after the slot move, a new job was delivered in {:?}", added_at.elapsed());
        self.stop.store(true, Ordering::Relaxed);
        self.working.await.expect("the worker task");
    }
}

#[tokio::test]
async fn a_busy_queues_slot_moved_to_another_master_loses_nothing_and_wake_ups_follow() {
    let cluster = Cluster::start();
    let queue = "moving";
    let from = cluster.master_of(&format!("{{{queue}}}"));
    let to = *cluster.masters().iter().find(|&&i| i != from).expect("another master");
    let (a, b) = two_instances(&cluster).await;
    let flow = Flow::start(&a, &b, queue).await;
    move_queue(&cluster, queue, to).await;
    flow.finish().await;
    a.assert_invariants(queue).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_master_that_joins_under_load_takes_a_busy_queues_slot_and_gets_the_library_on_its_first_call() {
    let mut cluster = Cluster::start();
    let queue = "joining";
    let (a, b) = two_instances(&cluster).await;
    let flow = Flow::start(&a, &b, queue).await;
    let new = cluster.add_master().await;
    let library = || on_node::<Vec<redis::Value>>(&cluster.nodes[new], redis::cmd("FUNCTION").arg("LIST"));
    // redis-cli copies the functions of the cluster to the node it adds; a node that joins by
    // CLUSTER MEET, or loses them, has none.
    let _: () = on_node(&cluster.nodes[new], redis::cmd("FUNCTION").arg("FLUSH")).expect("FUNCTION FLUSH");
    assert!(library().expect("FUNCTION LIST").is_empty(), "the new master starts without the library");
    move_queue(&cluster, queue, new).await;
    flow.finish().await;
    assert_eq!(library().expect("FUNCTION LIST").len(), 1, "the new master got the library");
    a.assert_invariants(queue).await;
    b.assert_invariants(queue).await;
    a.stop().await;
    b.stop().await;
}

/// The clients blocked on `node` (`INFO clients`).
fn blocked_clients(node: &jobwire::redis_server::RedisServer) -> u64 {
    super::info_field(node, "clients", "blocked_clients").and_then(|v| v.parse().ok()).unwrap_or(u64::MAX)
}

#[tokio::test]
async fn event_tailers_read_on_their_queues_master_alone_and_follow_a_moved_slot() {
    let cluster = Cluster::start();
    let tag = |queue: &str| format!("{{{queue}}}");
    let moving = "tailed";
    let from = cluster.master_of(&tag(moving));
    let to = *cluster.masters().iter().find(|&&i| i != from).expect("another master");
    let staying: Vec<String> =
        (0..300).map(|i| format!("t{i}")).filter(|q| cluster.master_of(&tag(q)) == from).take(3).collect();
    assert_eq!(staying.len(), 3, "three more queues on the same master");
    let (a, b) = two_instances(&cluster).await;
    let (mut via_a, mut via_b) = (a.client().await, b.client().await);
    // The connections of every node, each count with the one that reads it, but not the one a
    // MIGRATE of the slot move keeps open to the target for a while (last command
    // RESTORE-ASKING).
    let connected = || {
        let on = |n: &jobwire::redis_server::RedisServer| {
            let list: String = on_node(n, redis::cmd("CLIENT").arg("LIST")).expect("CLIENT LIST");
            list.lines().filter(|l| !l.contains("cmd=restore-asking")).count()
        };
        cluster.nodes.iter().map(on).sum::<usize>()
    };
    let blocked_on = |i: usize| blocked_clients(&cluster.nodes[i]);
    let waiting = |id: String| move |e: &proto::JobEvent| e.job_id == id && e.r#type() == JobEventType::Waiting;
    let mut tail = async |queue: &str| {
        let subscribe = proto::SubscribeRequest { queue: queue.into(), cursor: String::new() };
        let mut events = via_b.subscribe(subscribe).await.expect("Subscribe").into_inner();
        let id = add_through_the_gap(&mut via_a, queue, format!("{queue}-first")).await;
        assert!(saw(&mut events, |m| m.event.as_ref(), waiting(id)).await, "Subscribe to {queue} saw the add");
        events
    };

    // One tailer first, so that the instances' own connections are all made.
    let _first = tail(&staying[0]).await;
    eventually(Duration::from_secs(5), "the first tailer to block on its queue's master", || {
        std::future::ready(blocked_on(from) == 1)
    })
    .await;
    let before = connected();
    let mut moved = tail(moving).await;
    let _more = (tail(&staying[1]).await, tail(&staying[2]).await);
    // A whole cluster connection per tailer would be one connection per node each.
    eventually(Duration::from_secs(5), "three more tailers on the master, one connection each", || {
        std::future::ready(blocked_on(from) == 4 && connected() == before + 3)
    })
    .await;

    move_queue(&cluster, moving, to).await;
    let after = add_through_the_gap(&mut via_a, moving, "after-the-move".into()).await;
    assert!(saw(&mut moved, |m| m.event.as_ref(), waiting(after)).await, "Subscribe follows the moved slot");
    eventually(Duration::from_secs(5), "the moved queue's tailer to block on the new master", || {
        std::future::ready(blocked_on(to) == 1 && blocked_on(from) == 3)
    })
    .await;
    a.assert_invariants(moving).await;
    a.stop().await;
    b.stop().await;
}
