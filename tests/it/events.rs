//! Results and events: WatchJob (live, finished, across instances), Subscribe with resume and
//! the trimmed-cursor error, progress, cancellation in every state, pause/resume.

use std::time::Duration;

use jobwire::proto::{self, JobEventType, JobState, RevokeReason, get_job_response::Message};
use tonic::Code;

use crate::harness::{Redis, Server, ServerBuilder, Worker, add, info, job};

/// A message of an event stream (WatchJob, Subscribe): each carries one event.
trait EventMessage {
    fn into_event(self) -> Option<proto::JobEvent>;
}

impl EventMessage for proto::WatchJobResponse {
    fn into_event(self) -> Option<proto::JobEvent> {
        self.event
    }
}

impl EventMessage for proto::SubscribeResponse {
    fn into_event(self) -> Option<proto::JobEvent> {
        self.event
    }
}

async fn next_event<M: EventMessage>(stream: &mut tonic::Streaming<M>) -> proto::JobEvent {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("an event within 5 s")
        .expect("stream ok")
        .expect("stream open")
        .into_event()
        .expect("the message carries an event")
}

async fn watch(server: &Server, job_id: &str) -> tonic::Streaming<proto::WatchJobResponse> {
    let mut client = server.client().await;
    client.watch_job(proto::WatchJobRequest { job_id: job_id.into() }).await.expect("watch").into_inner()
}

#[tokio::test]
async fn watch_job_follows_a_job_to_its_result_even_through_another_instance() {
    let redis = Redis::start();
    let prefix = crate::harness::unique_prefix();
    let a = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let b = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let mut client = a.client().await;
    let id = add(&mut client, job("q", "t", b"")).await;
    let mut events = watch(&b, &id).await;
    assert_eq!(next_event(&mut events).await.r#type(), JobEventType::Waiting);

    let mut worker = Worker::open(&a, &["q"], 1).await;
    let j = worker.job().await;
    assert_eq!(next_event(&mut events).await.r#type(), JobEventType::Active);
    worker
        .client
        .report_progress(proto::ReportProgressRequest {
            job_id: j.id.clone(),
            lease_token: j.lease_token.clone(),
            progress: b"50%".to_vec(),
        })
        .await
        .expect("progress");
    let progress = next_event(&mut events).await;
    assert_eq!((progress.r#type(), progress.progress.as_slice()), (JobEventType::Progress, b"50%".as_slice()));
    assert_eq!(info(&mut client, &id).await.progress, b"50%");
    worker.complete(&j, b"the result").await.expect("complete");
    let done = next_event(&mut events).await;
    assert_eq!((done.r#type(), done.result.as_slice()), (JobEventType::Completed, b"the result".as_slice()));
    assert!(events.message().await.expect("clean end").is_none(), "the stream ends after a final state");

    // A finished job: its final event at once.
    let mut again = watch(&a, &id).await;
    let fin = next_event(&mut again).await;
    assert_eq!((fin.r#type(), fin.result.as_slice()), (JobEventType::Completed, b"the result".as_slice()));
    let missing = client.watch_job(proto::WatchJobRequest { job_id: "q/01JD8Y3V6Q0000000000000000".into() }).await;
    assert_eq!(missing.expect_err("unknown").code(), Code::NotFound);
    a.assert_invariants("q").await;
}

#[tokio::test]
async fn subscribe_resumes_without_gap_or_duplicate_and_refuses_a_trimmed_cursor() {
    let redis = Redis::start();
    let server = ServerBuilder::new(&redis).retention(|r| r.events_max = 50).start().await;
    let mut client = server.client().await;
    let mut feed = client
        .subscribe(proto::SubscribeRequest { queue: "q".into(), cursor: String::new() })
        .await
        .expect("subscribe")
        .into_inner();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(add(&mut client, job("q", "t", format!("{i}").as_bytes())).await);
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_event(&mut feed).await);
    }
    drop(feed);
    let cursor = seen[2].cursor.clone();
    let mut resumed = client
        .subscribe(proto::SubscribeRequest { queue: "q".into(), cursor: cursor.clone() })
        .await
        .expect("resume")
        .into_inner();
    for _ in 0..2 {
        seen.push(next_event(&mut resumed).await);
    }
    let order: Vec<&str> = seen.iter().map(|e| e.job_id.as_str()).collect();
    assert_eq!(order, ids.iter().map(String::as_str).collect::<Vec<_>>(), "no gap, no duplicate");
    assert!(seen.iter().all(|e| e.r#type() == JobEventType::Waiting));

    // Jobs added together share a stream entry; a cursor inside it resumes inside it.
    let jobs: Vec<_> = (0..4).map(|i| job("q", "t", format!("bulk {i}").as_bytes())).collect();
    let bulk = client.add_jobs(proto::AddJobsRequest { jobs }).await.expect("bulk").into_inner();
    let bulk_ids: Vec<String> = bulk.results.iter().map(|r| r.job_id.clone()).collect();
    let first_two = [next_event(&mut resumed).await, next_event(&mut resumed).await];
    drop(resumed);
    let mut inside = client
        .subscribe(proto::SubscribeRequest { queue: "q".into(), cursor: first_two[1].cursor.clone() })
        .await
        .expect("resume inside an entry")
        .into_inner();
    let last_two = [next_event(&mut inside).await, next_event(&mut inside).await];
    let order: Vec<&str> = first_two.iter().chain(&last_two).map(|e| e.job_id.as_str()).collect();
    assert_eq!(order, bulk_ids.iter().map(String::as_str).collect::<Vec<_>>(), "no gap, no duplicate");

    // Push the stream far past its cap (about 50 events; trimming drops whole nodes of 100
    // entries of up to 16 jobs): the old cursor now points at trimmed events.
    for _ in 0..8 {
        let jobs: Vec<_> = (0..1_000).map(|_| job("q", "t", b"")).collect();
        client.add_jobs(proto::AddJobsRequest { jobs }).await.expect("bulk");
    }
    let err = match client.subscribe(proto::SubscribeRequest { queue: "q".into(), cursor }).await {
        Err(status) => status,
        Ok(stream) => stream.into_inner().message().await.expect_err("trimmed"),
    };
    assert_eq!(err.code(), Code::OutOfRange, "{}", err.message());
    let bad = client.subscribe(proto::SubscribeRequest { queue: "q".into(), cursor: "garbage".into() }).await;
    assert_eq!(bad.expect_err("bad cursor").code(), Code::InvalidArgument);
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_fused_ack_and_the_lease_it_makes_share_one_entry_and_stay_in_order() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let first = add(&mut client, job("q", "t", b"1")).await;
    let second = add(&mut client, job("q", "t", b"2")).await;
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let held = worker.job().await;
    assert_eq!(held.id, first);
    let mut feed = client
        .subscribe(proto::SubscribeRequest { queue: "q".into(), cursor: String::new() })
        .await
        .expect("subscribe")
        .into_inner();
    // The completion leases the next job in the same call (the fused ack).
    worker.complete(&held, b"").await.expect("complete");
    let done = next_event(&mut feed).await;
    let leased = next_event(&mut feed).await;
    assert_eq!((done.r#type(), done.job_id.as_str()), (JobEventType::Completed, first.as_str()));
    assert_eq!((leased.r#type(), leased.job_id.as_str(), leased.attempt), (JobEventType::Active, second.as_str(), 1));
    let entry = |cursor: &str| cursor.split_once('.').map(|(entry, _)| entry.to_owned());
    assert!(entry(&done.cursor).is_some() && entry(&done.cursor) == entry(&leased.cursor), "{done:?} {leased:?}");
    drop(feed);
    let mut resumed = client
        .subscribe(proto::SubscribeRequest { queue: "q".into(), cursor: done.cursor.clone() })
        .await
        .expect("resume inside the entry")
        .into_inner();
    assert_eq!(next_event(&mut resumed).await.cursor, leased.cursor, "resumes between the two");
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn cancel_in_each_state() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let cancel = |id: &str| proto::CancelJobRequest { job_id: id.into() };

    let waiting = add(&mut client, job("q", "t", b"w")).await;
    let mut delayed_req = job("q", "t", b"d");
    delayed_req.schedule = Some(proto::add_job_request::Schedule::Delay(crate::harness::millis(60_000)));
    let delayed = add(&mut client, delayed_req).await;
    client.cancel_job(cancel(&waiting)).await.expect("cancel waiting");
    client.cancel_job(cancel(&delayed)).await.expect("cancel delayed");
    assert_eq!(info(&mut client, &waiting).await.state(), JobState::Cancelled);
    assert_eq!(info(&mut client, &delayed).await.state(), JobState::Cancelled);
    let again = client.cancel_job(cancel(&waiting)).await.expect_err("finished");
    assert_eq!(again.code(), Code::FailedPrecondition);

    // Active: the worker is told, its ack is accepted, the job ends cancelled.
    let active = add(&mut client, job("q", "t", b"a")).await;
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let j = worker.job().await;
    assert_eq!(j.id, active);
    client.cancel_job(cancel(&active)).await.expect("cancel active");
    match worker.next_message(Duration::from_secs(3)).await {
        Some(Message::Revoke(r)) => {
            assert_eq!((r.job_id.as_str(), r.reason()), (active.as_str(), RevokeReason::Cancelled))
        }
        other => panic!("expected a revoke, got {other:?}"),
    }
    worker.complete(&j, b"").await.expect("accepted");
    assert_eq!(info(&mut client, &active).await.state(), JobState::Cancelled);

    // Active, then its stream drops: cancelled, not requeued.
    let dropped = add(&mut client, job("q", "t", b"x")).await;
    let j = worker.job().await;
    assert_eq!(j.id, dropped);
    client.cancel_job(cancel(&dropped)).await.expect("cancel");
    drop(worker);
    crate::harness::eventually(Duration::from_secs(3), "the dropped job to end cancelled", || {
        let mut client = client.clone();
        let dropped = dropped.clone();
        async move { info(&mut client, &dropped).await.state() == JobState::Cancelled }
    })
    .await;
    assert_eq!(server.stats("q").await.cancelled, 4);
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn cancel_reaches_a_worker_on_another_instance() {
    let redis = Redis::start();
    let prefix = crate::harness::unique_prefix();
    let a = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let b = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let mut client = a.client().await;
    let id = add(&mut client, job("q", "t", b"")).await;
    let mut worker = Worker::open(&b, &["q"], 1).await;
    let j = worker.job().await;
    client.cancel_job(proto::CancelJobRequest { job_id: id.clone() }).await.expect("cancel through a");
    match worker.next_message(Duration::from_secs(3)).await {
        Some(Message::Revoke(r)) => assert_eq!(r.reason(), RevokeReason::Cancelled),
        other => panic!("expected a revoke, got {other:?}"),
    }
    worker.complete(&j, b"").await.expect("accepted");
    assert_eq!(info(&mut client, &id).await.state(), JobState::Cancelled);
    a.assert_invariants("q").await;
}

#[tokio::test]
async fn a_paused_queue_delivers_nothing_until_resumed() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    client.pause_queue(proto::PauseQueueRequest { queue: "q".into() }).await.expect("pause");
    let id = add(&mut client, job("q", "t", b"")).await;
    assert!(server.stats("q").await.paused);
    let mut worker = Worker::open(&server, &["q"], 1).await;
    worker.expect_nothing(Duration::from_millis(400)).await;
    client.resume_queue(proto::ResumeQueueRequest { queue: "q".into() }).await.expect("resume");
    assert_eq!(worker.job().await.id, id);
    server.assert_invariants("q").await;
}
