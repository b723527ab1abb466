//! The add that leases: an add of a queue for which a stream of the instance waits with free
//! credit leases the stream's job in the add's own Redis call. One call per job between the add
//! and the delivery, and everything a lease round promises still holds: fencing, credit,
//! fairness between streams, priority and queue order, the concurrency cap and rate limits,
//! drain, and adds through another instance.

use std::time::{Duration, Instant};

use jobwire::proto;
use tonic::Code;

use crate::{
    fused::{QueueCalls, redis_conn, upkeep_rounds},
    harness::{Client, Redis, Server, ServerBuilder, Worker, add, eventually, job, millis, unique_prefix},
};

/// Adds one job and waits for `worker` to receive it; returns it.
async fn add_and_receive(client: &mut Client, worker: &mut Worker, payload: &str) -> proto::Job {
    let id = add(client, job("q", "t", payload.as_bytes())).await;
    let got = worker.job().await;
    assert_eq!(got.id, id, "the job just added");
    got
}

async fn set(client: &mut Client, settings: proto::QueueSettings) {
    let req = proto::SetQueueSettingsRequest { queue: "q".into(), settings: Some(settings), clear: Vec::new() };
    client.set_queue_settings(req).await.expect("set settings");
}

#[tokio::test]
async fn a_waiting_worker_gets_each_added_job_with_one_redis_call_per_add() {
    const JOBS: u64 = 30;
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let mut worker = Worker::open(&server, &["q"], 40).await;
    // The stream waits and its queue was found empty.
    let warm = add_and_receive(&mut client, &mut worker, "warm").await;
    worker.complete(&warm, b"").await.expect("complete");
    let mut conn = redis_conn(&redis).await;
    let counted = QueueCalls::start(&redis).await;
    let started = Instant::now();
    let mut held = Vec::new();
    for i in 0..JOBS {
        held.push(add_and_receive(&mut client, &mut worker, &i.to_string()).await);
    }
    let calls = counted.count(&mut conn).await;
    eprintln!("figure: {calls} function calls for {JOBS} adds that a waiting worker received");
    assert!(
        calls <= JOBS + upkeep_rounds(started),
        "{calls} function calls for {JOBS} adds in {:?}",
        started.elapsed()
    );
    assert_eq!(server.stats("q").await.active, JOBS, "every job leased");
    for job in &held {
        worker.complete(job, b"").await.expect("complete");
    }
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_job_leased_by_its_add_is_fenced_by_its_token() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let mut worker = Worker::open(&server, &["q"], 2).await;
    let got = add_and_receive(&mut client, &mut worker, "fenced").await;
    let mut forged = got.clone();
    forged.lease_token.push('9');
    let stale = worker.complete(&forged, b"").await.expect_err("a token that does not hold the job");
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale}");
    assert_eq!(server.stats("q").await.active, 1, "the job is unchanged");
    worker.complete(&got, b"").await.expect("the token it was leased with holds it");
    let again = worker.complete(&got, b"").await.expect_err("the lease ended");
    assert_eq!(again.code(), Code::FailedPrecondition, "{again}");
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_job_an_add_leased_times_out_on_time_and_its_stale_token_is_refused() {
    let redis = Redis::start();
    // No safety poll within the test: the timeout is met by the dispatcher's timer.
    let server = ServerBuilder::new(&redis).settings(|s| s.safety_poll = Duration::from_secs(60)).start().await;
    let mut client = server.client().await;
    let mut worker = Worker::open(&server, &["q"], 2).await;
    let warm = add_and_receive(&mut client, &mut worker, "warm").await;
    worker.complete(&warm, b"").await.expect("complete");
    let mut req = job("q", "t", b"slow");
    req.timeout = Some(millis(300));
    req.max_attempts = Some(2);
    let id = add(&mut client, req).await;
    let first = worker.job().await;
    assert_eq!(first.id, id);
    let started = Instant::now();
    match worker.next_message(Duration::from_secs(5)).await {
        Some(proto::get_job_response::Message::Revoke(r)) => assert_eq!(r.job_id, id),
        other => panic!("expected a revoke, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3), "timed out after {:?}", started.elapsed());
    let retried = worker.job().await;
    assert_eq!((retried.id.as_str(), retried.attempt), (id.as_str(), 2));
    let stale = worker.complete(&first, b"late").await.expect_err("the first lease is gone");
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale}");
    worker.complete(&retried, b"").await.expect("the retry's token holds it");
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn adds_never_lease_past_a_streams_credit() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let mut worker = Worker::open(&server, &["q"], 2).await;
    let warm = add_and_receive(&mut client, &mut worker, "warm").await;
    worker.complete(&warm, b"").await.expect("complete");
    // A batch of five and then three single adds at once into a queue whose stream takes two.
    let jobs = (0..5).map(|i| job("q", "t", format!("batch{i}").as_bytes())).collect();
    client.add_jobs(proto::AddJobsRequest { jobs }).await.expect("add_jobs");
    let singles = (0..3).map(|i| {
        let mut client = client.clone();
        async move { add(&mut client, job("q", "t", format!("single{i}").as_bytes())).await }
    });
    futures::future::join_all(singles).await;
    let first = worker.job().await;
    let second = worker.job().await;
    worker.expect_nothing(Duration::from_millis(300)).await;
    let stats = server.stats("q").await;
    assert_eq!((stats.active, stats.waiting), (2, 6), "two leased for a credit of two");
    worker.complete(&first, b"").await.expect("complete");
    let third = worker.job().await;
    worker.expect_nothing(Duration::from_millis(200)).await;
    assert_eq!(server.stats("q").await.active, 2);
    for held in [second, third] {
        worker.complete(&held, b"").await.expect("complete");
    }
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn adds_share_their_jobs_fairly_between_two_waiting_streams() {
    const JOBS: usize = 20;
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let mut a = Worker::open(&server, &["q"], 30).await;
    let mut b = Worker::open(&server, &["q"], 30).await;
    let (mut ran_a, mut ran_b) = (0, 0);
    for i in 0..JOBS {
        add(&mut client, job("q", "t", format!("{i}").as_bytes())).await;
        tokio::select! {
            Some(_) = a.next_job(Duration::from_secs(5)) => ran_a += 1,
            Some(_) = b.next_job(Duration::from_secs(5)) => ran_b += 1,
        }
    }
    assert!(ran_a >= 5 && ran_b >= 5, "the adds' jobs went one way: {ran_a} and {ran_b}");
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn an_add_leases_by_priority_then_in_add_order() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let mut worker = Worker::open(&server, &["q"], 10).await;
    let warm = add_and_receive(&mut client, &mut worker, "warm").await;
    worker.complete(&warm, b"").await.expect("complete");
    let jobs = [("low0", 0), ("high0", 5), ("low1", 0), ("high1", 5), ("mid", 2)]
        .into_iter()
        .map(|(payload, priority)| proto::AddJobRequest { priority, ..job("q", "t", payload.as_bytes()) })
        .collect();
    client.add_jobs(proto::AddJobsRequest { jobs }).await.expect("add_jobs");
    let mut order = Vec::new();
    for _ in 0..5 {
        order.push(String::from_utf8(worker.job().await.payload).expect("utf8"));
    }
    assert_eq!(order, ["high0", "high1", "mid", "low0", "low1"]);
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_stream_of_two_queues_takes_an_added_job_of_the_later_only_when_the_first_is_empty() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let mut worker = Worker::open(&server, &["high", "low"], 1).await;
    add(&mut client, job("high", "t", b"high0")).await;
    let first = worker.job().await;
    // The stream is busy: an add of the later queue leases nothing; then the first queue gets a
    // job, which comes first when the credit comes back.
    add(&mut client, job("low", "t", b"low0")).await;
    add(&mut client, job("high", "t", b"high1")).await;
    worker.expect_nothing(Duration::from_millis(200)).await;
    worker.complete(&first, b"").await.expect("complete");
    let second = worker.job().await;
    assert_eq!(second.payload, b"high1");
    worker.complete(&second, b"").await.expect("complete");
    let third = worker.job().await;
    assert_eq!(third.payload, b"low0");
    worker.complete(&third, b"").await.expect("complete");
    // Both queues empty: an add of the later one goes straight to the waiting stream.
    add(&mut client, job("low", "t", b"low1")).await;
    assert_eq!(worker.job().await.payload, b"low1");
    server.assert_invariants("high").await;
    server.assert_invariants("low").await;
}

#[tokio::test]
async fn adds_that_lease_keep_to_the_concurrency_cap() {
    let redis = Redis::start();
    let server = ServerBuilder::new(&redis).settings(|s| s.safety_poll = Duration::from_secs(60)).start().await;
    let mut client = server.client().await;
    set(&mut client, proto::QueueSettings { concurrency: Some(2), ..Default::default() }).await;
    let mut worker = Worker::open(&server, &["q"], 10).await;
    let mut held = Vec::new();
    for i in 0..5 {
        add(&mut client, job("q", "t", format!("{i}").as_bytes())).await;
        if i < 2 {
            held.push(worker.job().await);
        }
    }
    worker.expect_nothing(Duration::from_millis(300)).await;
    let stats = server.stats("q").await;
    assert_eq!((stats.active, stats.waiting), (2, 3), "two at a time");
    // A completion frees a slot: the next job goes out at once (no safety poll here).
    worker.complete(&held.remove(0), b"").await.expect("complete");
    held.push(worker.next_job(Duration::from_secs(2)).await.expect("a slot freed"));
    worker.expect_nothing(Duration::from_millis(200)).await;
    assert_eq!(server.stats("q").await.active, 2);
    for job in &held {
        worker.complete(job, b"").await.expect("complete");
    }
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn adds_that_lease_keep_to_the_queues_rate_and_the_timer_wakes_for_the_rest() {
    let redis = Redis::start();
    let server = ServerBuilder::new(&redis).settings(|s| s.safety_poll = Duration::from_secs(60)).start().await;
    let mut client = server.client().await;
    // 5 per second, one at a time: 200 ms apart.
    let rate = proto::RateLimit { count: 5, period: Some(millis(1_000)), burst: 1 };
    set(&mut client, proto::QueueSettings { rate: Some(rate), ..Default::default() }).await;
    let mut worker = Worker::open(&server, &["q"], 10).await;
    let start = Instant::now();
    for i in 0..3 {
        add(&mut client, job("q", "t", format!("{i}").as_bytes())).await;
    }
    let mut starts = Vec::new();
    for _ in 0..3 {
        let got = worker.next_job(Duration::from_secs(5)).await.expect("every job, in time");
        starts.push(start.elapsed());
        worker.complete(&got, b"").await.expect("complete");
    }
    for pair in starts.windows(2) {
        let gap = pair[1].saturating_sub(pair[0]);
        assert!(gap >= Duration::from_millis(150), "{gap:?} between two starts, under the rate's 200 ms: {starts:?}");
    }
    assert!(starts[2] < Duration::from_secs(3), "woken by the timer, not the 60 s poll: {starts:?}");
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_draining_instances_adds_lease_nothing() {
    let redis = Redis::start();
    let server = ServerBuilder::new(&redis).drain_grace(Duration::from_secs(3)).start().await;
    let mut client = server.client().await;
    let mut worker = Worker::open(&server, &["q"], 5).await;
    let held = add_and_receive(&mut client, &mut worker, "held").await;
    let store = server.store.clone();
    let stopping = tokio::spawn(server.stop());
    match worker.next_message(Duration::from_secs(3)).await {
        Some(proto::get_job_response::Message::Drain(_)) => {}
        other => panic!("expected drain, got {other:?}"),
    }
    // Adds are still taken while the workers drain; none goes to the draining stream.
    match client.add_job(job("q", "t", b"late")).await {
        Ok(_) => match worker.next_message(Duration::from_millis(500)).await {
            None | Some(proto::get_job_response::Message::Drain(_)) => {}
            Some(other) => panic!("a draining instance sent {other:?}"),
        },
        Err(e) => assert_eq!(e.code(), Code::Unavailable, "{e}"),
    }
    worker.complete(&held, b"").await.expect("acks go on while draining");
    stopping.await.expect("stopped");
    eventually(Duration::from_secs(5), "nothing held after the drain", || {
        let store = store.clone();
        async move { store.admin().stats("q").await.is_ok_and(|s| s.active == 0 && s.completed == 1) }
    })
    .await;
    let problems = store.invariants().check_invariants("q").await.expect("invariant check runs");
    assert!(problems.is_empty(), "invariants broken: {problems:#?}");
}

#[tokio::test]
async fn an_add_through_another_instance_reaches_a_waiting_worker_and_each_instance_leases_for_its_own() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    // No safety poll within the test: a job that moves does so because an add or a wake-up did.
    let slow_poll = |s: &mut jobwire::queue::Settings| s.safety_poll = Duration::from_secs(60);
    let one = ServerBuilder::new(&redis).prefix(&prefix).settings(slow_poll).start().await;
    let other = ServerBuilder::new(&redis).prefix(&prefix).settings(slow_poll).start().await;
    let (mut client_one, mut client_other) = (one.client().await, other.client().await);
    let mut worker = Worker::open(&other, &["q"], 5).await;
    // No stream on `one`: its add leases nothing, and its wake-up reaches `other`.
    let id = add(&mut client_one, job("q", "t", b"across")).await;
    let got = worker.job().await;
    assert_eq!(got.id, id);
    worker.complete(&got, b"").await.expect("complete");
    // A stream on each: each instance's adds go to its own waiting stream, once the new
    // stream's first rounds (its dispatcher's, its wake-up subscription's) found the queue empty.
    let mut near = Worker::open(&one, &["q"], 5).await;
    let mut in_a_row = 0;
    for i in 0..50 {
        add(&mut client_one, job("q", "t", format!("warm{i}").as_bytes())).await;
        tokio::select! {
            Some(got) = near.next_job(Duration::from_secs(5)) => {
                in_a_row += 1;
                near.complete(&got, b"").await.expect("complete");
            }
            Some(got) = worker.next_job(Duration::from_secs(5)) => {
                in_a_row = 0;
                worker.complete(&got, b"").await.expect("complete");
            }
        }
        if in_a_row == 3 {
            break;
        }
    }
    assert_eq!(in_a_row, 3, "the adds through `one` keep reaching the other instance's stream");
    for i in 0..3 {
        let id = add(&mut client_one, job("q", "t", format!("one{i}").as_bytes())).await;
        assert_eq!(near.job().await.id, id);
        let id = add(&mut client_other, job("q", "t", format!("other{i}").as_bytes())).await;
        assert_eq!(worker.job().await.id, id);
    }
    near.expect_nothing(Duration::from_millis(100)).await;
    worker.expect_nothing(Duration::from_millis(100)).await;
    assert_eq!(one.stats("q").await.active, 6);
    one.assert_invariants("q").await;
}
