//! A job's life through the public API: add, deliver, complete or fail, read back; fencing.

use std::time::Duration;

use jobwire::proto::{self, JobState};
use tonic::Code;

use crate::harness::{Redis, Server, Worker, add, info, job};

#[tokio::test]
async fn a_job_goes_from_add_to_completed_with_its_result() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let mut req = job("emails", "send", br#"{"to":"a@b.c"}"#);
    req.headers.insert("traceparent".into(), "00-abc-def-01".into());
    req.max_attempts = Some(4);
    let id = add(&mut client, req).await;
    assert!(id.starts_with("emails/"), "{id}");
    assert_eq!(info(&mut client, &id).await.state(), JobState::Waiting);

    let mut worker = Worker::open(&server, &["emails"], 1).await;
    let delivered = worker.job().await;
    assert_eq!(delivered.id, id);
    assert_eq!(delivered.r#type, "send");
    assert_eq!(delivered.payload, br#"{"to":"a@b.c"}"#);
    assert_eq!(delivered.headers.get("traceparent").map(String::as_str), Some("00-abc-def-01"));
    assert_eq!((delivered.attempt, delivered.max_attempts, delivered.lost_deliveries), (1, 4, 0));
    assert!(!delivered.lease_token.is_empty());
    let active = info(&mut client, &id).await;
    assert_eq!((active.state(), active.attempts), (JobState::Active, 1));
    assert!(active.started_at.is_some());

    worker.complete(&delivered, b"sent").await.expect("complete");
    let done = info(&mut client, &id).await;
    assert_eq!(done.state(), JobState::Completed);
    assert_eq!(done.result, b"sent");
    assert_eq!(done.attempts, 1);
    assert!(done.finished_at.is_some() && done.created_at.is_some());
    let stats = server.stats("emails").await;
    assert_eq!((stats.waiting, stats.active, stats.completed), (0, 0, 1));
    server.assert_invariants("emails").await;
}

#[tokio::test]
async fn only_the_current_lease_holder_can_ack() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let id = add(&mut client, job("q", "t", b"")).await;
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let delivered = worker.job().await;

    let forged = proto::Job { lease_token: format!("{}x", delivered.lease_token), ..delivered.clone() };
    let err = worker.complete(&forged, b"").await.expect_err("stale token");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("lease_token"), "{}", err.message());
    let token = &delivered.lease_token;
    for near in [&token[..token.len() - 1], &format!("{token}|"), &format!("{token}|0"), ""] {
        let near_miss = proto::Job { lease_token: near.to_owned(), ..delivered.clone() };
        let err = worker.complete(&near_miss, b"").await.expect_err("a token that is not the lease's");
        assert_eq!(err.code(), Code::FailedPrecondition, "token {near:?}");
    }
    let err = client
        .fail_job(proto::FailJobRequest {
            job_id: id.clone(),
            lease_token: forged.lease_token.clone(),
            error: "x".into(),
            ..Default::default()
        })
        .await
        .expect_err("stale token");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = client
        .extend_lease(proto::ExtendLeaseRequest {
            job_id: id.clone(),
            lease_token: forged.lease_token.clone(),
            extend_by: Some(crate::harness::millis(1000)),
        })
        .await
        .expect_err("stale token");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let still = info(&mut client, &id).await;
    assert_eq!((still.state(), still.attempts), (JobState::Active, 1), "the job is unchanged");

    // Two acks of one attempt at once (likely in one batch): one completes, the other is stale.
    let ack = proto::CompleteJobRequest {
        job_id: id.clone(),
        lease_token: delivered.lease_token.clone(),
        ..Default::default()
    };
    let (mut first, mut second) = (client.clone(), client.clone());
    let (a, b) = tokio::join!(first.complete_job(ack.clone()), second.complete_job(ack.clone()));
    let codes = [a.err().map(|e| e.code()), b.err().map(|e| e.code())];
    assert!(codes.contains(&None) && codes.contains(&Some(Code::FailedPrecondition)), "{codes:?}");
    let again = worker.complete(&delivered, b"").await.expect_err("a later ack is stale");
    assert_eq!(again.code(), Code::FailedPrecondition);

    let unknown = worker
        .complete(&proto::Job { id: "q/01JD8Y3V6Q0000000000000000".into(), ..delivered.clone() }, b"")
        .await
        .expect_err("unknown job");
    assert_eq!(unknown.code(), Code::NotFound);
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn extend_lease_moves_the_deadline() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let mut req = job("q", "t", b"");
    req.timeout = Some(crate::harness::millis(400));
    add(&mut client, req).await;
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let delivered = worker.job().await;
    // Keep extending past the original timeout: no revoke may come.
    for _ in 0..4 {
        let resp = client
            .extend_lease(proto::ExtendLeaseRequest {
                job_id: delivered.id.clone(),
                lease_token: delivered.lease_token.clone(),
                extend_by: Some(crate::harness::millis(400)),
            })
            .await
            .expect("extend")
            .into_inner();
        assert!(resp.deadline.is_some());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    worker.expect_nothing(Duration::from_millis(100)).await;
    worker.complete(&delivered, b"").await.expect("still the holder after 800 ms");
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn stats_and_list_queues_count_every_state() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    for _ in 0..3 {
        add(&mut client, job("a", "t", b"")).await;
    }
    let mut delayed = job("a", "t", b"");
    delayed.schedule = Some(proto::add_job_request::Schedule::Delay(crate::harness::millis(60_000)));
    add(&mut client, delayed).await;
    add(&mut client, job("b", "t", b"")).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let stats = server.stats("a").await;
    assert_eq!((stats.waiting, stats.delayed, stats.active), (3, 1, 0));
    assert!(stats.oldest_waiting_age.is_some_and(|d| d.seconds > 0 || d.nanos > 0));
    let list = client.list_queues(proto::ListQueuesRequest {}).await.expect("list").into_inner().queues;
    let names: Vec<&str> = list.iter().map(|q| q.queue.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(list[1].waiting, 1);
    let unknown = server.stats("never-used").await;
    assert_eq!(unknown.waiting + unknown.delayed + unknown.completed, 0);
    server.assert_invariants("a").await;
}
