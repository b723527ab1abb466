//! Rate limits and per-key concurrency through real jobwire processes: jobs with a `rate_key`
//! start no faster than the queue's `key_rate` lets them, woken by the dispatcher's timer (the
//! safety poll is off), without holding back other keys; jobs with a `concurrency_key` run at
//! most `key_concurrency` at a time per key across two instances, and a slot freed by a
//! completion, a failure or a lost stream lets the key's next job go at once.

use std::time::{Duration, Instant, SystemTime};

use jobwire::proto;

use crate::harness::{Client, Redis, ServerBuilder, Worker, add, job, millis, unique_prefix};

const LIMIT: Duration = Duration::from_secs(20);

async fn set(client: &mut Client, settings: proto::QueueSettings) {
    let req = proto::SetQueueSettingsRequest { queue: "q".into(), settings: Some(settings), clear: Vec::new() };
    client.set_queue_settings(req).await.expect("set settings");
}

/// No safety poll within a test: a job that moves does so because a wake-up or a timer said so.
fn slow_poll(s: &mut jobwire::queue::Settings) {
    s.safety_poll = Duration::from_secs(60);
}

#[tokio::test]
async fn a_key_rate_spaces_each_keys_jobs_and_the_timer_wakes_for_them() {
    let redis = Redis::start();
    let server = ServerBuilder::new(&redis).settings(slow_poll).start().await;
    let mut client = server.client().await;
    // 10 per second per key, one at a time: 100 ms apart.
    let rate = proto::RateLimit { count: 10, period: Some(millis(1_000)), burst: 1 };
    set(&mut client, proto::QueueSettings { key_rate: Some(rate), ..Default::default() }).await;
    for key in ["a", "b"] {
        for i in 0..4 {
            let req = proto::AddJobRequest { rate_key: key.into(), ..job("q", "t", format!("{key}{i}").as_bytes()) };
            add(&mut client, req).await;
        }
    }
    add(&mut client, job("q", "t", b"plain")).await;
    let mut worker = Worker::open(&server, &["q"], 20).await;
    let start = Instant::now();
    // Each job's payload, when it arrived here, and when it was leased (by Redis's clock: its
    // deadline less the timeout, which every job shares): the rate spaces the leases, and a
    // busy machine may deliver two of them closer together than they were leased.
    let mut seen: Vec<(String, Duration, SystemTime)> = Vec::new();
    for _ in 0..9 {
        let got = worker.next_job(LIMIT).await.expect("every job, in time");
        let leased = got.deadline.and_then(|d| SystemTime::try_from(d).ok()).expect("a deadline");
        seen.push((String::from_utf8_lossy(&got.payload).into_owned(), start.elapsed(), leased));
        worker.complete(&got, b"").await.expect("complete");
    }
    let order = |key: &str| -> Vec<(String, Duration, SystemTime)> {
        seen.iter().filter(|(p, _, _)| p.starts_with(key)).cloned().collect()
    };
    for key in ["a", "b"] {
        let jobs = order(key);
        let payloads: Vec<&str> = jobs.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(payloads, [format!("{key}0"), format!("{key}1"), format!("{key}2"), format!("{key}3")], "in order");
        for pair in jobs.windows(2) {
            let gap = pair[1].2.duration_since(pair[0].2).unwrap_or_default();
            assert!(gap >= Duration::from_millis(99), "{key}: {gap:?} between two leases, under the rate's 100 ms");
        }
        assert!(jobs[3].1 < Duration::from_secs(3), "{key}: woken by the timer, not the 60 s poll: {jobs:?}");
    }
    let plain = seen.iter().position(|(p, _, _)| p == "plain").expect("the unkeyed job");
    assert!(plain < 3, "the unkeyed job is not held behind the keys: {seen:?}");
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_key_concurrency_cap_holds_across_instances_and_every_freed_slot_lets_the_key_go_on() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let one = ServerBuilder::new(&redis).prefix(&prefix).settings(slow_poll).start().await;
    let other = ServerBuilder::new(&redis).prefix(&prefix).settings(slow_poll).start().await;
    let mut client = one.client().await;
    set(&mut client, proto::QueueSettings { key_concurrency: Some(1), ..Default::default() }).await;
    for i in 0..4 {
        let req = proto::AddJobRequest { concurrency_key: "c".into(), ..job("q", "t", format!("c{i}").as_bytes()) };
        add(&mut client, req).await;
    }
    let req = proto::AddJobRequest { concurrency_key: "d".into(), ..job("q", "t", b"d0") };
    add(&mut client, req).await;
    let mut a = Worker::open(&one, &["q"], 5).await;
    let mut b = Worker::open(&other, &["q"], 5).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        tokio::select! {
            got = a.next_job(LIMIT) => held.push((0, got.expect("a job"))),
            got = b.next_job(LIMIT) => held.push((1, got.expect("a job"))),
        }
    }
    let mut payloads: Vec<Vec<u8>> = held.iter().map(|(_, j)| j.payload.clone()).collect();
    payloads.sort();
    assert_eq!(payloads, [b"c0".to_vec(), b"d0".to_vec()], "one per key");
    a.expect_nothing(Duration::from_millis(300)).await;
    b.expect_nothing(Duration::from_millis(100)).await;
    assert_eq!(one.stats("q").await.active, 2);

    // A completion on either instance lets c's next job go at once.
    let (w, c0) = held.iter().find(|(_, j)| j.payload == b"c0").cloned().expect("c0");
    if w == 0 { a.complete(&c0, b"").await } else { b.complete(&c0, b"").await }.expect("complete");
    let next = tokio::select! {
        got = a.next_job(Duration::from_secs(2)) => (0, got.expect("c1 after the completion")),
        got = b.next_job(Duration::from_secs(2)) => (1, got.expect("c1 after the completion")),
    };
    assert_eq!(next.1.payload, b"c1");
    // A failure does too.
    if next.0 == 0 {
        a.fail(&next.1, "no", false).await
    } else {
        b.fail(&next.1, "no", false).await
    };
    let next = tokio::select! {
        got = a.next_job(Duration::from_secs(2)) => (0, got.expect("c2 after the failure")),
        got = b.next_job(Duration::from_secs(2)) => (1, got.expect("c2 after the failure")),
    };
    assert_eq!(next.1.payload, b"c2");
    // And a stream that ends: c2 goes back at the head of its key and runs on the other stream.
    let mut survivor = if next.0 == 0 {
        drop(a);
        b
    } else {
        drop(b);
        a
    };
    let again = survivor.next_job(Duration::from_secs(5)).await.expect("c2 again, on the other stream");
    assert!(again.payload == b"c2" || again.payload == b"d0", "{:?}", again.payload);
    one.assert_invariants("q").await;
}

#[tokio::test]
async fn keys_that_are_not_allowed_are_refused_naming_the_field() {
    let redis = Redis::start();
    let server = ServerBuilder::new(&redis).start().await;
    let mut client = server.client().await;
    let control = proto::AddJobRequest { rate_key: "a\u{1}b".into(), ..job("q", "t", b"") };
    let refused = client.add_job(control).await.expect_err("a control character");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().starts_with("rate_key:"), "{}", refused.message());
    let long = proto::AddJobRequest { concurrency_key: "k".repeat(129), ..job("q", "t", b"") };
    let refused = client.add_job(long).await.expect_err("too long");
    assert!(refused.message().starts_with("concurrency_key:"), "{}", refused.message());
    let zero = proto::RateLimit { count: 0, period: None, burst: 0 };
    let req = proto::SetQueueSettingsRequest {
        queue: "q".into(),
        settings: Some(proto::QueueSettings { rate: Some(zero), ..Default::default() }),
        clear: Vec::new(),
    };
    let refused = client.set_queue_settings(req).await.expect_err("a rate of 0");
    assert!(refused.message().starts_with("settings.rate.count:"), "{}", refused.message());
}

/// A Rust worker whose handler hears "429, retry after 200 ms" the first time: the job runs
/// again after the wait with no attempt spent, on both worker protocols.
#[tokio::test]
async fn rate_limited_upstream_the_job_goes_back_for_later_without_spending_an_attempt() {
    use std::sync::{Arc, Mutex};

    use jobwire::client::{Client as RustClient, JobError, NewJob, Protocol, Worker as RustWorker};

    let redis = Redis::start();
    let server = ServerBuilder::new(&redis).settings(slow_poll).start().await;
    let address = format!("http://{}", server.addr);
    let producer = RustClient::connect(&address).await.expect("connect");
    for protocol in [Protocol::Work, Protocol::Unary] {
        let calls: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let worker = RustWorker::new(RustClient::connect(&address).await.expect("connect"), &["q"])
            .protocol(protocol)
            .handle("call", {
                let calls = calls.clone();
                move |_ctx| {
                    let calls = calls.clone();
                    async move {
                        let mut calls = calls.lock().expect("lock");
                        calls.push(Instant::now());
                        if calls.len() == 1 {
                            return Err(JobError::rate_limited(Duration::from_millis(200), true));
                        }
                        Ok(b"done".to_vec())
                    }
                }
            });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(worker.run(async move {
            let _ = stopped.await;
        }));
        let id = producer.add(NewJob::new("q", "call").rate_key("api")).await.expect("add");
        assert_eq!(producer.wait_for_result(&id, LIMIT).await.expect("result"), b"done", "{protocol:?}");
        let calls = calls.lock().expect("lock").clone();
        assert_eq!(calls.len(), 2, "{protocol:?}");
        assert!(calls[1] - calls[0] >= Duration::from_millis(190), "{protocol:?}: ran again after the wait");
        let mut raw = server.client().await;
        let info = raw
            .get_job_info(proto::GetJobInfoRequest { job_id: id.clone() })
            .await
            .expect("info")
            .into_inner()
            .job
            .expect("job");
        assert_eq!(info.attempts, 1, "{protocol:?}: the rate-limited run spent no attempt");
        let _ = stop.send(());
        task.await.expect("join").expect("the worker stops cleanly");
    }
    let mut raw = server.client().await;
    let refused = raw
        .return_job(proto::ReturnJobRequest {
            job_id: "q/01J00000000000000000000000".into(),
            hold_key: true,
            ..Default::default()
        })
        .await
        .expect_err("hold_key alone");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    server.assert_invariants("q").await;
}
