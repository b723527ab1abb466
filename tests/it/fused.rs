//! The fused ack: a busy worker's ack leases its next job in the same Redis call. One call per
//! job, and everything dispatch promises still holds: fairness between streams, strict queue
//! order, credit, revokes, drain.

use std::time::{Duration, Instant};

use jobwire::proto::{self, get_job_response::Message};
use tonic::Code;

use crate::harness::{Redis, Server, ServerBuilder, Worker, add, eventually, info, job, millis};

/// The FCALLs of queue functions Redis runs from `start` to `count`, seen through MONITOR. What
/// each heartbeat calls (itself, the worker list, the queue registry, the session sweep) is the
/// instance's own upkeep, whatever the jobs, and is not counted.
pub(crate) struct QueueCalls {
    lines: std::pin::Pin<Box<dyn futures::Stream<Item = String> + Send>>,
}

impl QueueCalls {
    pub(crate) async fn start(redis: &Redis) -> Self {
        let client = redis::Client::open(redis.url()).expect("url");
        let monitor = client.get_async_monitor().await.expect("monitor");
        Self { lines: Box::pin(monitor.into_on_message::<String>()) }
    }

    /// Counts up to a marker sent now: every call answered before it was seen before it.
    pub(crate) async fn count(mut self, conn: &mut redis::aio::MultiplexedConnection) -> u64 {
        use futures::StreamExt;
        let marker = format!("fused-end-{}", ulid::Ulid::new());
        let _: String = redis::cmd("ECHO").arg(&marker).query_async(conn).await.expect("echo");
        let upkeep = ["_heartbeat\"", "_workers_publish\"", "_queues_register\"", "_session_sweep\""];
        let mut calls = 0;
        while let Some(line) = self.lines.next().await {
            if line.contains(&marker) {
                return calls;
            }
            if line.contains("\"FCALL\"") && !upkeep.iter().any(|name| line.contains(name)) {
                calls += 1;
            }
        }
        panic!("the monitor ended before the marker");
    }
}

pub(crate) async fn redis_conn(redis: &Redis) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis.url()).expect("url");
    client.get_multiplexed_async_connection().await.expect("connect")
}

async fn add_many(server: &Server, queue: &str, n: usize) {
    let mut client = server.client().await;
    for i in 0..n {
        add(&mut client, job(queue, "t", format!("{i}").as_bytes())).await;
    }
}

/// The lease rounds the dispatcher's upkeep may add since `started`: one every safety poll
/// (500 ms here), however slow a loaded machine makes the loop, and a few to spare. Two calls
/// per job would pass this by as many as there are jobs.
pub(crate) fn upkeep_rounds(started: std::time::Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis() / 500).unwrap_or(u64::MAX).saturating_add(4)
}

#[tokio::test]
async fn a_busy_worker_costs_one_redis_call_per_job() {
    const JOBS: u64 = 60;
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    add_many(&server, "q", 61).await;
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let mut held = worker.job().await;
    let mut conn = redis_conn(&redis).await;
    let counted = QueueCalls::start(&redis).await;
    let started = std::time::Instant::now();
    for _ in 0..JOBS {
        worker.complete(&held, b"").await.expect("complete");
        held = worker.job().await;
    }
    let calls = counted.count(&mut conn).await;
    eprintln!("figure: {calls} function calls for {JOBS} jobs of a busy worker at credit 1");
    assert!(
        calls <= JOBS + upkeep_rounds(started),
        "{calls} function calls for {JOBS} jobs in {:?}",
        started.elapsed()
    );
    worker.complete(&held, b"").await.expect("complete");
    server.assert_invariants("q").await;
}

/// Runs `worker` until `total` jobs of the queue are done or nothing comes for a while;
/// returns how many it ran.
async fn work(mut worker: Worker, done: std::sync::Arc<std::sync::atomic::AtomicUsize>, total: usize) -> usize {
    use std::sync::atomic::Ordering;
    let mut ran = 0;
    while done.load(Ordering::SeqCst) < total {
        let Some(job) = worker.next_job(Duration::from_secs(2)).await else { break };
        worker.complete(&job, b"").await.expect("complete");
        ran += 1;
        done.fetch_add(1, Ordering::SeqCst);
    }
    ran
}

#[tokio::test]
async fn two_streams_of_one_queue_both_keep_getting_jobs_under_a_backlog() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    add_many(&server, "q", 200).await;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = Worker::open(&server, &["q"], 2).await;
    let b = Worker::open(&server, &["q"], 2).await;
    let (ran_a, ran_b) = tokio::join!(work(a, done.clone(), 150), work(b, done.clone(), 150));
    assert!(ran_a >= 30 && ran_b >= 30, "one stream starved: {ran_a} and {ran_b} of {}", ran_a + ran_b);
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_stream_that_acks_fast_does_not_take_scarce_jobs_from_one_with_free_credit() {
    const JOBS: usize = 20;
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let mut a = Worker::open(&server, &["q"], 1).await;
    let mut b = Worker::open(&server, &["q"], 1).await;
    add(&mut client, job("q", "t", b"0")).await;
    let (mut ran_a, mut ran_b) = (0, 0);
    for i in 1..=JOBS {
        // Whoever holds the job acks it at once, with the next one already waiting and the other
        // stream free: that one gets it, not the acking stream's refill.
        let (worker, held) = tokio::select! {
            Some(job) = a.next_job(Duration::from_secs(5)) => { ran_a += 1; (&mut a, job) }
            Some(job) = b.next_job(Duration::from_secs(5)) => { ran_b += 1; (&mut b, job) }
        };
        if i < JOBS {
            add(&mut client, job("q", "t", format!("{i}").as_bytes())).await;
        }
        worker.complete(&held, b"").await.expect("complete");
    }
    assert!(ran_a >= 5 && ran_b >= 5, "scarce jobs went one way: {ran_a} and {ran_b}");
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_stream_of_two_queues_refills_from_the_first_while_it_has_jobs() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    for i in 0..2 {
        add(&mut client, job("high", "t", format!("high{i}").as_bytes())).await;
        add(&mut client, job("low", "t", format!("low{i}").as_bytes())).await;
    }
    let mut worker = Worker::open(&server, &["high", "low"], 1).await;
    let mut order = Vec::new();
    for step in 0..5 {
        let next = worker.job().await;
        order.push(String::from_utf8(next.payload.clone()).expect("utf8"));
        if step == 2 {
            // While a job of the later queue runs, the first gets work again: it comes first.
            add(&mut client, job("high", "t", b"high2")).await;
        }
        worker.complete(&next, b"").await.expect("complete");
    }
    assert_eq!(order, ["high0", "high1", "low0", "high2", "low1"]);
    server.assert_invariants("high").await;
    server.assert_invariants("low").await;
}

#[tokio::test]
async fn refills_never_exceed_a_streams_credit() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    add_many(&server, "q", 30).await;
    let mut worker = Worker::open(&server, &["q"], 2).await;
    let mut held = vec![worker.job().await, worker.job().await];
    for _ in 0..10 {
        worker.expect_nothing(Duration::from_millis(30)).await;
        let first = held.remove(0);
        worker.complete(&first, b"").await.expect("complete");
        held.push(worker.job().await);
        assert!(server.stats("q").await.active <= 2, "more than the credit leased");
    }
    for job in &held {
        worker.complete(job, b"").await.expect("complete");
    }
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn the_late_ack_of_a_revoked_job_refills_nothing_and_frees_its_credit_once() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let mut req = job("q", "slow", b"");
    req.timeout = Some(millis(300));
    req.max_attempts = Some(1);
    let slow_id = add(&mut client, req).await;
    add_many(&server, "q", 3).await;
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let slow = worker.job().await;
    match worker.next_message(Duration::from_secs(3)).await {
        Some(Message::Revoke(r)) => assert_eq!(r.job_id, slow_id),
        other => panic!("expected a revoke, got {other:?}"),
    }
    let late = worker.complete(&slow, b"late").await.expect_err("the lease is gone");
    assert_eq!(late.code(), Code::FailedPrecondition);
    let next = worker.job().await;
    worker.expect_nothing(Duration::from_millis(300)).await;
    assert_eq!(server.stats("q").await.active, 1, "one job for one credit");
    assert_eq!(info(&mut client, &slow_id).await.state(), proto::JobState::Dead);
    worker.complete(&next, b"").await.expect("complete");
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_draining_instance_refills_nothing() {
    let redis = Redis::start();
    let server = ServerBuilder::new(&redis).drain_grace(Duration::from_secs(3)).start().await;
    add_many(&server, "q", 10).await;
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let mut held = worker.job().await;
    // Busy: a few jobs through the fused path first.
    for _ in 0..3 {
        worker.complete(&held, b"").await.expect("complete");
        held = worker.job().await;
    }
    let store = server.store.clone();
    let stopping = tokio::spawn(server.stop());
    match worker.next_message(Duration::from_secs(3)).await {
        Some(Message::Drain(_)) => {}
        other => panic!("expected drain, got {other:?}"),
    }
    worker.complete(&held, b"").await.expect("acks go on while draining");
    match worker.next_message(Duration::from_millis(500)).await {
        None | Some(Message::Drain(_)) => {}
        Some(other) => panic!("a draining instance sent {other:?}"),
    }
    stopping.await.expect("stopped");
    eventually(Duration::from_secs(5), "nothing held after the drain", || {
        let store = store.clone();
        async move { store.admin().stats("q").await.is_ok_and(|s| s.active == 0 && s.completed == 4) }
    })
    .await;
    let problems = store.invariants().check_invariants("q").await.expect("invariant check runs");
    assert!(problems.is_empty(), "invariants broken: {problems:#?}");
}

#[tokio::test]
async fn a_busy_worker_whose_jobs_fail_costs_one_redis_call_per_job() {
    const JOBS: u64 = 30;
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    add_many(&server, "q", 31).await;
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let mut held = worker.job().await;
    let mut conn = redis_conn(&redis).await;
    let counted = QueueCalls::start(&redis).await;
    let started = std::time::Instant::now();
    for _ in 0..JOBS {
        assert_eq!(worker.fail(&held, "boom", false).await.state(), proto::JobState::Dead);
        held = worker.job().await;
    }
    let calls = counted.count(&mut conn).await;
    eprintln!("figure: {calls} function calls for {JOBS} failed jobs of a busy worker at credit 1");
    let allowed = JOBS + upkeep_rounds(started);
    assert!(calls <= allowed, "{calls} function calls for {JOBS} failed jobs in {:?}", started.elapsed());
    worker.complete(&held, b"").await.expect("complete");
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn the_refill_of_a_fused_ack_whose_answer_was_lost_is_taken_back() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let first_id = add(&mut client, job("q", "t", b"first")).await;
    let second_id = add(&mut client, job("q", "t", b"second")).await;
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let first = worker.job().await;
    assert_eq!(first.id, first_id);
    // Redis busy for a second, longer than the store's timeout (500 ms): the fused ack times out
    // here and runs in Redis afterwards, leasing the second job with a token nobody here knows.
    let mut busy = redis_conn(&redis).await;
    let probe = redis_conn(&redis).await;
    let stall = tokio::spawn(async move {
        let script = "local s = redis.call('TIME') repeat local n = redis.call('TIME') \
                      until (n[1] - s[1]) * 1000000 + (n[2] - s[2]) > 1000000";
        // The client gives up waiting for the answer (its own timeout); Redis runs on.
        let _ = redis::cmd("EVAL").arg(script).arg(0).query_async::<()>(&mut busy).await;
    });
    eventually(Duration::from_secs(2), "Redis to stall", || {
        let mut probe = probe.clone();
        async move {
            let ping = redis::cmd("PING");
            tokio::time::timeout(Duration::from_millis(100), ping.query_async::<String>(&mut probe)).await.is_err()
        }
    })
    .await;
    let lost = worker.complete(&first, b"").await.expect_err("the answer is lost");
    assert_eq!(lost.code(), Code::Unavailable, "{lost}");
    stall.await.expect("stalled");
    // The ack did complete the first job; the second comes back and reaches the worker again.
    let next = loop {
        match worker.next_message(Duration::from_secs(5)).await {
            Some(Message::Job(job)) => break job,
            Some(Message::Revoke(r)) => assert_eq!(r.job_id, first_id),
            other => panic!("expected the second job, got {other:?}"),
        }
    };
    assert_eq!(next.id, second_id);
    worker.complete(&next, b"").await.expect("complete");
    assert_eq!(info(&mut client, &first_id).await.state(), proto::JobState::Completed);
    eventually(Duration::from_secs(5), "both jobs completed", || {
        let store = server.store.clone();
        async move { store.admin().stats("q").await.is_ok_and(|s| s.active == 0 && s.completed == 2) }
    })
    .await;
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_retry_that_comes_due_while_the_worker_is_busy_is_made_ready_by_its_acks() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let mut req = job("q", "retry", b"");
    req.priority = 5;
    req.max_attempts = Some(2);
    req.backoff =
        Some(proto::Backoff { kind: proto::BackoffKind::Fixed as i32, base: Some(millis(200)), ..Default::default() });
    let retry_id = add(&mut client, req).await;
    add_many(&server, "q", 40).await;
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let first = worker.job().await;
    assert_eq!(first.id, retry_id);
    let failed_at = Instant::now();
    assert_eq!(worker.fail(&first, "again", true).await.state(), proto::JobState::Retrying);
    // Busy on the backlog (20 ms a job): no dispatcher round runs, the acks promote the retry,
    // which outranks the backlog. The dispatcher's own upkeep would come after 500 ms.
    let back = loop {
        let next = worker.job().await;
        if next.id == retry_id {
            break failed_at.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        worker.complete(&next, b"").await.expect("complete");
    };
    assert!(back < Duration::from_millis(450), "the retry came back after {back:?}");
    server.assert_invariants("q").await;
}
