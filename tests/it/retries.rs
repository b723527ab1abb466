//! Failures, backoff, the dead-letter set, and delayed jobs waking on time.

use std::time::{Duration, Instant, SystemTime};

use jobwire::proto::{self, JobState, add_job_request::Schedule};

use crate::harness::{Redis, Server, ServerBuilder, Worker, add, info, job, millis};

fn fixed_backoff(ms: u64) -> Option<proto::Backoff> {
    Some(proto::Backoff { kind: proto::BackoffKind::Fixed as i32, base: Some(millis(ms)), ..Default::default() })
}

#[tokio::test]
async fn failed_attempts_retry_after_their_backoff_then_go_dead() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let mut req = job("q", "flaky", b"");
    req.max_attempts = Some(3);
    req.backoff = fixed_backoff(150);
    let id = add(&mut client, req).await;
    let mut worker = Worker::open(&server, &["q"], 1).await;
    // Measured on the server's clock (Redis TIME, the same wall clock as this process): the
    // retry is due `next_run_at`, so it cannot arrive before it. A client-side stopwatch
    // started when the fail's answer arrived would shrink whenever this process is scheduled
    // late on a busy machine.
    let mut due: Option<SystemTime> = None;
    for attempt in 1..=3 {
        let j = worker.job().await;
        let arrived = SystemTime::now();
        assert_eq!(j.attempt, attempt);
        if let Some(due) = due {
            assert!(arrived + Duration::from_millis(1) >= due, "retried {:?} early", due.duration_since(arrived));
        }
        let error = if attempt == 3 { "final".to_owned() } else { format!("boom {attempt}") };
        let failed = SystemTime::now();
        let resp = worker.fail(&j, &error, true).await;
        if attempt < 3 {
            assert_eq!(resp.state(), JobState::Retrying);
            let next = resp.next_run_at.expect("next_run_at");
            let next = SystemTime::try_from(next).expect("a valid timestamp");
            assert!(next >= failed + Duration::from_millis(149), "backoff of {:?}", next.duration_since(failed));
            due = Some(next);
            let retrying = info(&mut client, &id).await;
            assert_eq!((retrying.state(), retrying.last_error.as_str()), (JobState::Retrying, error.as_str()));
        } else {
            assert_eq!(resp.state(), JobState::Dead);
        }
    }
    let dead = info(&mut client, &id).await;
    assert_eq!((dead.state(), dead.attempts, dead.last_error.as_str()), (JobState::Dead, 3, "final"));
    assert!(dead.finished_at.is_some());
    assert_eq!(server.stats("q").await.dead, 1);
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_non_retryable_failure_goes_dead_at_once() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let id = add(&mut client, job("q", "t", b"")).await;
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let j = worker.job().await;
    assert_eq!(worker.fail(&j, "bad input", false).await.state(), JobState::Dead);
    let dead = info(&mut client, &id).await;
    assert_eq!((dead.state(), dead.attempts, dead.last_error.as_str()), (JobState::Dead, 1, "bad input"));
    worker.expect_nothing(Duration::from_millis(200)).await;
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn retry_after_overrides_the_backoff() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let mut req = job("q", "t", b"");
    req.backoff = fixed_backoff(3_600_000);
    add(&mut client, req).await;
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let j = worker.job().await;
    let resp = worker
        .client
        .fail_job(proto::FailJobRequest {
            job_id: j.id.clone(),
            lease_token: j.lease_token.clone(),
            error: "rate limited".into(),
            retryable: None,
            retry_after: Some(millis(100)),
        })
        .await
        .expect("fail")
        .into_inner();
    assert_eq!(resp.state(), JobState::Retrying);
    let again = worker.job().await;
    assert_eq!(again.attempt, 2);
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn the_default_backoff_is_exponential_with_jitter() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let id = add(&mut client, job("q", "t", b"")).await;
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let j = worker.job().await;
    let before = SystemTime::now();
    let resp = worker.fail(&j, "x", true).await;
    let next: SystemTime = resp.next_run_at.expect("next run").try_into().expect("time");
    let wait = next.duration_since(before).unwrap_or_default();
    // Attempt 1: base 1 s, jitter 0.5 -> uniform in [0.5 s, 1 s].
    assert!(wait >= Duration::from_millis(450) && wait <= Duration::from_millis(1_100), "waited {wait:?}");
    assert_eq!(info(&mut client, &id).await.state(), JobState::Retrying);
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn delayed_jobs_wake_on_their_own_timer_not_a_poll() {
    let redis = Redis::start();
    // A safety poll of a minute: only the dispatcher's own timer can deliver on time.
    let server = ServerBuilder::new(&redis).settings(|s| s.safety_poll = Duration::from_secs(60)).start().await;
    let mut client = server.client().await;
    let mut worker = Worker::open(&server, &["q"], 10).await;
    worker.expect_nothing(Duration::from_millis(100)).await;
    let mut lateness = Vec::new();
    for delay in [300u64, 500, 700] {
        let mut req = job("q", "t", b"");
        req.schedule = Some(Schedule::Delay(millis(delay)));
        let added = Instant::now();
        let id = add(&mut client, req).await;
        assert_eq!(info(&mut client, &id).await.state(), JobState::Delayed);
        let j = worker.job().await;
        let waited = added.elapsed();
        assert!(waited >= Duration::from_millis(delay - 5), "delivered early after {waited:?}");
        lateness.push(waited - Duration::from_millis(delay));
        worker.complete(&j, b"").await.expect("complete");
    }
    let worst = lateness.iter().max().copied().unwrap_or_default();
    assert!(worst < Duration::from_millis(250), "lateness {lateness:?}");
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn run_at_in_the_past_runs_now_and_in_the_future_waits() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let mut past = job("q", "past", b"");
    past.schedule = Some(Schedule::RunAt((SystemTime::now() - Duration::from_secs(60)).into()));
    add(&mut client, past).await;
    let mut future = job("q", "future", b"");
    future.schedule = Some(Schedule::RunAt((SystemTime::now() + Duration::from_secs(3600)).into()));
    let later = add(&mut client, future).await;
    let mut worker = Worker::open(&server, &["q"], 5).await;
    assert_eq!(worker.job().await.r#type, "past");
    worker.expect_nothing(Duration::from_millis(300)).await;
    let delayed = info(&mut client, &later).await;
    assert_eq!(delayed.state(), JobState::Delayed);
    assert!(delayed.run_at.is_some());
    server.assert_invariants("q").await;
}
