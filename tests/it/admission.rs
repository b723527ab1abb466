//! What goes in: idempotent adds (a key remembered for the window of its kind), bulk adds, the
//! bad-input table, and retention caps.

use std::time::Duration;

use jobwire::proto::{self, JobState, add_job_request::Schedule};
use tonic::Code;

use crate::harness::{Client, Redis, Server, ServerBuilder, Worker, add, eventually, info, job, millis};

/// How the server remembers the idempotency key of an added job: `Some(true)` when a repeat sent
/// as a generated key is the duplicate (the key is kept for the retry window), `Some(false)` when
/// a repeat sent as a chosen key is (the idempotency window), None when neither is. Each kind of
/// key is looked for among its own, so this reads how the first add marked it.
pub async fn remembered_as_generated(client: &mut Client, job_id: &str) -> Option<bool> {
    let first = info(client, job_id).await;
    let (queue, _) = job_id.split_once('/').expect("a job id");
    let mut kind = None;
    for generated in [true, false] {
        let repeat = proto::AddJobRequest {
            idempotency_key: first.idempotency_key.clone(),
            idempotency_key_generated: generated,
            ..job(queue, "t", b"")
        };
        let answer = client.add_job(repeat).await.expect("add_job").into_inner();
        if answer.duplicate {
            assert_eq!(answer.job_id, job_id, "a duplicate names the first job");
            assert!(kind.is_none(), "a key is remembered as one kind only");
            kind = Some(generated);
        }
    }
    kind
}

#[tokio::test]
async fn a_generated_key_is_remembered_for_the_retry_window_and_a_chosen_one_for_the_window() {
    let redis = Redis::start();
    let retry_window = Duration::from_millis(400);
    let server = ServerBuilder::new(&redis).settings(|s| s.idempotency_retry_window = retry_window).start().await;
    let mut client = server.client().await;
    let keyed = |key: &str, generated: bool| proto::AddJobRequest {
        idempotency_key: key.into(),
        idempotency_key_generated: generated,
        ..job("q", "t", b"")
    };
    let generated = client.add_job(keyed("mine", true)).await.expect("add").into_inner();
    let chosen = client.add_job(keyed("mine", false)).await.expect("add").into_inner();
    assert!(!chosen.duplicate, "a chosen key is not looked for among generated ones");
    let started = std::time::Instant::now();
    let again = client.add_job(keyed("mine", true)).await.expect("add").into_inner();
    assert!(again.duplicate && again.job_id == generated.job_id, "{again:?}");
    // Past the retry window and the quarter of it a key may outlive it: forgotten.
    tokio::time::sleep(retry_window + retry_window / 4 + Duration::from_millis(50)).await;
    assert!(started.elapsed() > retry_window);
    let later = client.add_job(keyed("mine", true)).await.expect("add").into_inner();
    assert!(!later.duplicate, "forgotten after the retry window");
    let still = client.add_job(keyed("mine", false)).await.expect("add").into_inner();
    assert!(still.duplicate && still.job_id == chosen.job_id, "the chosen key is kept for its day: {still:?}");
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn an_idempotency_key_adds_once_even_after_the_job_is_gone() {
    let redis = Redis::start();
    // Keep no completed jobs at all: the tombstone alone must catch the repeat.
    let server = ServerBuilder::new(&redis).retention(|r| r.completed_max = 0).start().await;
    let mut client = server.client().await;
    let mut req = job("q", "t", b"");
    req.idempotency_key = "order-17".into();
    let first = client.add_job(req.clone()).await.expect("add").into_inner();
    assert!(!first.duplicate);
    let repeat = client.add_job(req.clone()).await.expect("add").into_inner();
    assert_eq!((repeat.job_id.as_str(), repeat.duplicate), (first.job_id.as_str(), true));
    assert_eq!(server.stats("q").await.waiting, 1);

    let mut worker = Worker::open(&server, &["q"], 1).await;
    let j = worker.job().await;
    worker.complete(&j, b"").await.expect("complete");
    let gone = client.get_job_info(proto::GetJobInfoRequest { job_id: first.job_id.clone() }).await;
    assert_eq!(gone.expect_err("not retained").code(), Code::NotFound);
    let after = client.add_job(req.clone()).await.expect("add").into_inner();
    assert_eq!((after.job_id.as_str(), after.duplicate), (first.job_id.as_str(), true));
    worker.expect_nothing(Duration::from_millis(200)).await;

    let mut other_queue = req;
    other_queue.queue = "other".into();
    let separate = client.add_job(other_queue).await.expect("add").into_inner();
    assert!(!separate.duplicate, "keys are per queue");
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn add_jobs_adds_each_entry_on_its_own() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let mut jobs: Vec<proto::AddJobRequest> = (0..100).map(|i| job("bulk", "t", format!("{i}").as_bytes())).collect();
    jobs[3].priority = 99;
    jobs[7].queue = "bad{queue}".into();
    let results = client.add_jobs(proto::AddJobsRequest { jobs }).await.expect("add_jobs").into_inner().results;
    assert_eq!(results.len(), 100);
    assert_eq!(results[3].code, Code::InvalidArgument as i32);
    assert!(results[3].message.starts_with("jobs[3].priority"), "{}", results[3].message);
    assert!(results[3].job_id.is_empty());
    assert!(results[7].message.starts_with("jobs[7].queue"), "{}", results[7].message);
    assert_eq!(results.iter().filter(|r| r.code == 0 && r.job_id.starts_with("bulk/")).count(), 98);
    assert_eq!(server.stats("bulk").await.waiting, 98);

    let too_many: Vec<_> = (0..1001).map(|_| job("bulk", "t", b"")).collect();
    let err = client.add_jobs(proto::AddJobsRequest { jobs: too_many }).await.expect_err("over the count cap");
    assert_eq!(err.code(), Code::ResourceExhausted);
    let empty = client.add_jobs(proto::AddJobsRequest { jobs: Vec::new() }).await.expect_err("empty");
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert_eq!(server.stats("bulk").await.waiting, 98, "nothing of a refused batch was written");
    server.assert_invariants("bulk").await;
}

#[tokio::test]
async fn add_jobs_refuses_a_batch_over_its_byte_cap() {
    let redis = Redis::start();
    let server = ServerBuilder::new(&redis).settings(|s| s.limits.max_batch_bytes = 10_000).start().await;
    let mut client = server.client().await;
    let jobs: Vec<_> = (0..11).map(|_| job("q", "t", &[7u8; 1_000])).collect();
    let err = client.add_jobs(proto::AddJobsRequest { jobs }).await.expect_err("over the byte cap");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("jobs"), "{}", err.message());
    assert_eq!(server.stats("q").await.waiting, 0);
}

#[tokio::test]
async fn bad_input_gets_a_precise_status_naming_the_field_and_writes_nothing() {
    let redis = Redis::start();
    let server = ServerBuilder::new(&redis).settings(|s| s.limits.max_payload = 1_000).start().await;
    let mut client = server.client().await;
    let ok = || job("q", "t", b"{}");
    let neg = prost_types::Duration { seconds: -1, nanos: 0 };
    let cases: Vec<(proto::AddJobRequest, Code, &str)> = vec![
        (proto::AddJobRequest { queue: String::new(), ..ok() }, Code::InvalidArgument, "queue"),
        (proto::AddJobRequest { queue: "x".repeat(129), ..ok() }, Code::InvalidArgument, "queue"),
        (proto::AddJobRequest { queue: "a{b}".into(), ..ok() }, Code::InvalidArgument, "queue"),
        (proto::AddJobRequest { queue: "a b".into(), ..ok() }, Code::InvalidArgument, "queue"),
        (proto::AddJobRequest { r#type: String::new(), ..ok() }, Code::InvalidArgument, "type"),
        (proto::AddJobRequest { payload: vec![0; 1_001], ..ok() }, Code::ResourceExhausted, "payload"),
        (proto::AddJobRequest { priority: 6, ..ok() }, Code::InvalidArgument, "priority"),
        (proto::AddJobRequest { priority: -6, ..ok() }, Code::InvalidArgument, "priority"),
        (proto::AddJobRequest { schedule: Some(Schedule::Delay(neg)), ..ok() }, Code::InvalidArgument, "delay"),
        (
            proto::AddJobRequest { schedule: Some(Schedule::Delay(millis(400 * 24 * 3_600_000))), ..ok() },
            Code::InvalidArgument,
            "delay",
        ),
        (proto::AddJobRequest { max_attempts: Some(0), ..ok() }, Code::InvalidArgument, "max_attempts"),
        (proto::AddJobRequest { max_attempts: Some(1_000_000), ..ok() }, Code::InvalidArgument, "max_attempts"),
        (proto::AddJobRequest { timeout: Some(millis(1)), ..ok() }, Code::InvalidArgument, "timeout"),
        (proto::AddJobRequest { timeout: Some(millis(48 * 3_600_000)), ..ok() }, Code::InvalidArgument, "timeout"),
        (proto::AddJobRequest { idempotency_key: "k".repeat(300), ..ok() }, Code::InvalidArgument, "idempotency_key"),
        (
            proto::AddJobRequest { backoff: Some(proto::Backoff { factor: Some(0.5), ..Default::default() }), ..ok() },
            Code::InvalidArgument,
            "backoff.factor",
        ),
        (
            proto::AddJobRequest { backoff: Some(proto::Backoff { kind: 42, ..Default::default() }), ..ok() },
            Code::InvalidArgument,
            "backoff.kind",
        ),
    ];
    for (req, code, field) in cases {
        let err = client.add_job(req.clone()).await.expect_err(field);
        assert_eq!(err.code(), code, "{field}: {}", err.message());
        assert!(err.message().starts_with(field), "message {:?} should name {field}", err.message());
    }
    assert_eq!(server.stats("q").await.waiting, 0, "nothing was written");

    let bad_ids = ["", "nope", "q/not-a-ulid", "{q}/01JD8Y3V6Q0000000000000000"];
    for id in bad_ids {
        let err = client.get_job_info(proto::GetJobInfoRequest { job_id: id.into() }).await.expect_err(id);
        assert_eq!(err.code(), Code::InvalidArgument, "{id}");
        assert!(err.message().starts_with("job_id"), "{}", err.message());
    }
    let err = client
        .get_job_info(proto::GetJobInfoRequest { job_id: "q/01JD8Y3V6Q0000000000000000".into() })
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound);

    let mut stream_errors = Vec::new();
    for (queues, credit) in
        [(vec![], 1), (vec!["q".to_string()], 0), (vec!["q".into()], 100_000), (vec!["a b".into()], 1)]
    {
        let err = client
            .get_job(proto::GetJobRequest { queues, max_in_flight: credit, ..Default::default() })
            .await
            .expect_err("bad stream request");
        stream_errors.push((err.code(), err.message().split(':').next().unwrap_or_default().to_owned()));
    }
    assert_eq!(
        stream_errors,
        [
            (Code::InvalidArgument, "queues".to_owned()),
            (Code::InvalidArgument, "max_in_flight".to_owned()),
            (Code::InvalidArgument, "max_in_flight".to_owned()),
            (Code::InvalidArgument, "queues[0]".to_owned()),
        ]
    );
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_message_over_the_transport_limit_is_refused() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    // The in-process test server decodes at most 4 MiB; past it tonic itself answers
    // OUT_OF_RANGE before any handler runs (documented in the proto).
    let err = client.add_job(job("q", "t", &vec![0u8; 5 << 20])).await.expect_err("too big");
    assert_eq!(err.code(), Code::OutOfRange, "{}", err.message());
    assert_eq!(server.stats("q").await.waiting, 0);
}

#[tokio::test]
async fn retention_caps_bound_completed_and_dead_jobs() {
    let redis = Redis::start();
    let server = ServerBuilder::new(&redis)
        .retention(|r| {
            r.completed_max = 3;
            r.dead_max = 2;
        })
        .start()
        .await;
    let mut client = server.client().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(add(&mut client, job("q", "ok", format!("{i}").as_bytes())).await);
    }
    let mut worker = Worker::open(&server, &["q"], 1).await;
    for _ in 0..5 {
        let j = worker.job().await;
        worker.complete(&j, b"r").await.expect("complete");
    }
    let stats = server.stats("q").await;
    assert_eq!(stats.completed, 3);
    let evicted = client.get_job_info(proto::GetJobInfoRequest { job_id: ids[0].clone() }).await;
    assert_eq!(evicted.expect_err("evicted").code(), Code::NotFound);
    assert_eq!(info(&mut client, &ids[4]).await.state(), JobState::Completed);

    for _ in 0..3 {
        add(&mut client, job("q", "doomed", b"")).await;
        let j = worker.job().await;
        worker.fail(&j, "no", false).await;
    }
    let stats = server.stats("q").await;
    assert_eq!((stats.dead, stats.dead_evicted), (2, 1));
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn completed_jobs_leave_once_their_window_has_passed() {
    let redis = Redis::start();
    let window = Duration::from_secs(2);
    let server = ServerBuilder::new(&redis).retention(|r| r.completed_for = window).start().await;
    let mut client = server.client().await;
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(add(&mut client, job("q", "t", format!("{i}").as_bytes())).await);
        let j = worker.job().await;
        worker.complete(&j, b"r").await.expect("complete");
        if i == 1 {
            tokio::time::sleep(window + Duration::from_millis(100)).await;
        }
    }
    // The dispatcher's upkeep trims the two that finished more than a window ago.
    for old in &ids[..2] {
        eventually(window, "a job past its window is gone", || {
            let request = proto::GetJobInfoRequest { job_id: old.clone() };
            let mut client = client.clone();
            async move { client.get_job_info(request).await.is_err_and(|e| e.code() == Code::NotFound) }
        })
        .await;
    }
    let kept = info(&mut client, &ids[2]).await;
    assert_eq!((kept.state(), kept.result.as_slice()), (JobState::Completed, b"r".as_slice()));
    assert_eq!(server.stats("q").await.completed, 1);
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn add_jobs_keeps_request_order_and_catches_repeated_keys_within_the_batch() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let mut jobs: Vec<proto::AddJobRequest> = (0..50).map(|i| job("q", "t", format!("{i}").as_bytes())).collect();
    jobs[10].idempotency_key = "same".into();
    jobs[20].idempotency_key = "same".into();
    let results = client.add_jobs(proto::AddJobsRequest { jobs }).await.expect("add_jobs").into_inner().results;
    assert!(!results[10].duplicate && results[20].duplicate);
    assert_eq!(results[20].job_id, results[10].job_id);
    let mut worker = Worker::open(&server, &["q"], 100).await;
    let mut order = Vec::new();
    for _ in 0..49 {
        order.push(String::from_utf8(worker.job().await.payload).expect("utf8"));
    }
    let expected: Vec<String> = (0..50).filter(|i| *i != 20).map(|i| i.to_string()).collect();
    assert_eq!(order, expected, "FIFO in request order");
    server.assert_invariants("q").await;
}
