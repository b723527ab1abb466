//! Dispatch: credit, priorities, queue order, stream-bound leases, timeouts and revokes.

use std::time::{Duration, Instant};

use jobwire::proto::{self, JobState, RevokeReason, get_job_response::Message};
use tonic::Code;

use crate::harness::{Redis, Server, ServerBuilder, Worker, add, info, job, millis};

#[tokio::test]
async fn a_stream_never_holds_more_than_its_credit() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    for i in 0..5 {
        add(&mut client, job("q", "t", format!("{i}").as_bytes())).await;
    }
    let mut worker = Worker::open(&server, &["q"], 2).await;
    let first = worker.job().await;
    let second = worker.job().await;
    worker.expect_nothing(Duration::from_millis(300)).await;
    worker.complete(&first, b"").await.expect("complete");
    let third = worker.job().await;
    worker.expect_nothing(Duration::from_millis(200)).await;
    let payloads: Vec<&[u8]> = [&first, &second, &third].iter().map(|j| j.payload.as_slice()).collect();
    assert_eq!(payloads, [b"0", b"1", b"2"], "FIFO");
    worker.complete(&second, b"").await.expect("complete");
    worker.complete(&third, b"").await.expect("complete");
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn higher_priority_first_and_fifo_within_a_priority() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    for (name, priority) in [("a", 0), ("b", 5), ("c", -5), ("d", 0), ("e", 5)] {
        let mut req = job("q", "t", name.as_bytes());
        req.priority = priority;
        add(&mut client, req).await;
    }
    let mut worker = Worker::open(&server, &["q"], 10).await;
    let mut order = Vec::new();
    for _ in 0..5 {
        order.push(String::from_utf8(worker.job().await.payload).expect("utf8"));
    }
    assert_eq!(order, ["b", "e", "a", "d", "c"]);
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn earlier_queues_of_a_worker_come_first() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    for i in 0..3 {
        add(&mut client, job("low", "t", format!("low{i}").as_bytes())).await;
        add(&mut client, job("high", "t", format!("high{i}").as_bytes())).await;
    }
    let mut worker = Worker::open(&server, &["high", "low"], 1).await;
    let mut order = Vec::new();
    for _ in 0..6 {
        let j = worker.job().await;
        order.push(String::from_utf8(j.payload.clone()).expect("utf8"));
        worker.complete(&j, b"").await.expect("complete");
    }
    assert_eq!(order, ["high0", "high1", "high2", "low0", "low1", "low2"]);
    server.assert_invariants("high").await;
    server.assert_invariants("low").await;
}

#[tokio::test]
async fn jobs_are_spread_over_streams() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let mut a = Worker::open(&server, &["q"], 3).await;
    let mut b = Worker::open(&server, &["q"], 3).await;
    for i in 0..6 {
        add(&mut client, job("q", "t", format!("{i}").as_bytes())).await;
    }
    for _ in 0..3 {
        a.job().await;
        b.job().await;
    }
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_dropped_stream_gives_its_jobs_back_at_once_counted_as_lost() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let first = add(&mut client, job("q", "t", b"first")).await;
    add(&mut client, job("q", "t", b"second")).await;
    add(&mut client, job("q", "t", b"third")).await;
    let mut doomed = Worker::open(&server, &["q"], 2).await;
    let held = [doomed.job().await, doomed.job().await];
    assert_eq!(held[0].id, first);
    let dropped_at = Instant::now();
    drop(doomed);
    crate::harness::eventually(Duration::from_secs(1), "the held jobs to be ready again", || async {
        server.stats("q").await.waiting == 3
    })
    .await;
    assert!(dropped_at.elapsed() < Duration::from_secs(1), "requeue took {:?}", dropped_at.elapsed());

    let mut next = Worker::open(&server, &["q"], 3).await;
    let again = [next.job().await, next.job().await, next.job().await];
    let payloads: Vec<&[u8]> = again.iter().map(|j| j.payload.as_slice()).collect();
    assert_eq!(payloads, [b"first".as_slice(), b"second", b"third"], "given-back jobs go first, in order");
    assert_eq!((again[0].lost_deliveries, again[0].attempt), (1, 1), "a lost delivery is not a failed attempt");
    assert_eq!(again[2].lost_deliveries, 0);
    assert_eq!(info(&mut client, &first).await.lost_deliveries, 1);
    for j in &again {
        next.complete(j, b"").await.expect("complete");
    }
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_job_lost_too_often_goes_dead_with_reason_lost() {
    let redis = Redis::start();
    let server = ServerBuilder::new(&redis).settings(|s| s.max_lost = 2).start().await;
    let mut client = server.client().await;
    let id = add(&mut client, job("q", "t", b"")).await;
    for _ in 0..2 {
        let mut w = Worker::open(&server, &["q"], 1).await;
        w.job().await;
    }
    crate::harness::eventually(Duration::from_secs(3), "the job to die", || {
        let mut client = client.clone();
        let id = id.clone();
        async move { info(&mut client, &id).await.state() == JobState::Dead }
    })
    .await;
    let dead = info(&mut client, &id).await;
    assert_eq!((dead.last_error.as_str(), dead.lost_deliveries, dead.attempts), ("lost", 2, 0));
    assert_eq!(server.stats("q").await.dead, 1);
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_timed_out_attempt_is_revoked_and_retried_and_keeps_credit_until_answered() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let mut req = job("q", "slow", b"");
    req.timeout = Some(millis(300));
    req.backoff =
        Some(proto::Backoff { kind: proto::BackoffKind::Fixed as i32, base: Some(millis(0)), ..Default::default() });
    let id = add(&mut client, req).await;
    add(&mut client, job("q", "next", b"")).await;
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let slow = worker.job().await;
    let started = Instant::now();
    match worker.next_message(Duration::from_secs(3)).await {
        Some(Message::Revoke(r)) => {
            assert_eq!((r.job_id.as_str(), r.reason()), (id.as_str(), RevokeReason::Timeout));
            assert_eq!(r.lease_token, slow.lease_token);
        }
        other => panic!("expected a revoke, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(250), "revoked too early: {:?}", started.elapsed());
    let timed_out = info(&mut client, &id).await;
    assert_eq!((timed_out.last_error.as_str(), timed_out.attempts), ("timeout", 1));
    // The credit stays used until the worker answers.
    worker.expect_nothing(Duration::from_millis(300)).await;
    let late = worker.complete(&slow, b"late").await.expect_err("the lease is gone");
    assert_eq!(late.code(), Code::FailedPrecondition);
    // Answered: the credit is back; the retry went to the tail, after "next".
    let next = worker.job().await;
    assert_eq!(next.r#type, "next");
    worker.complete(&next, b"").await.expect("complete");
    let retry = worker.job().await;
    assert_eq!((retry.id.as_str(), retry.attempt), (id.as_str(), 2));
    worker.complete(&retry, b"").await.expect("complete");
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_worker_on_another_connection_gets_jobs_added_before_it_connected() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let id = add(&mut client, job("q", "t", b"")).await;
    let mut worker = Worker::open(&server, &["q"], 1).await;
    assert_eq!(worker.job().await.id, id);
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn an_idle_stream_hears_a_ping_within_each_period() {
    let redis = Redis::start();
    let period = Duration::from_millis(300);
    let server = ServerBuilder::new(&redis).ping_every(period).start().await;
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let mut last = Instant::now();
    for _ in 0..4 {
        let message = tokio::time::timeout(period * 3, worker.stream.message())
            .await
            .expect("a message within three periods")
            .expect("stream ok")
            .expect("stream open");
        assert!(matches!(message.message, Some(Message::Ping(_))), "{message:?}");
        let gap = last.elapsed();
        last = Instant::now();
        // Half to a whole period on the server's clock; allow for delivery in between.
        assert!(gap >= period / 3 && gap <= period + Duration::from_millis(250), "ping after {gap:?}");
    }
}
