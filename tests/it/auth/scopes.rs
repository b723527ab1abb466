//! Queue scopes: every RPC that names a queue, a job or a session is refused outside the
//! token's scope (exact names and `prefix*` globs), listings show only what the scope covers, a
//! scoped worker takes and acknowledges only its queues; and what a reader is shown.

use std::time::Duration;

use jobwire::{
    auth::{Reveal, Role},
    client::{Client, NewJob},
    proto::{self, JobEventType, work_request, work_response::Message},
};
use tokio::sync::mpsc;
use tonic::Code;

use super::{Place, Secured, Spec, call, jobwire_methods, let_through, next_job, next_message, spec, stale_ack};
use crate::harness::eventually;

const WAIT: Duration = Duration::from_secs(5);

fn scoped_tokens() -> Vec<Spec> {
    let ab: &[&str] = &["team-a", "team-b-*"];
    vec![
        spec("admin-all", Role::Admin),
        spec("admin-ab", Role::Admin).queues(ab),
        spec("reader-ab", Role::Reader).queues(ab),
        spec("reader-plain", Role::Reader),
        spec("reader-revealing", Role::Reader).reveal(&[Reveal::Payloads, Reveal::Results, Reveal::SessionStates]),
        spec("worker-a", Role::Worker).queues(&["team-a"]),
        spec("worker-all", Role::Worker),
    ]
}

#[tokio::test]
async fn every_rpc_naming_a_queue_job_or_session_is_held_to_the_scope() {
    let secured = Secured::start(scoped_tokens()).await;
    let admin = secured.client("admin-all").await;
    let scoped = secured.client("admin-ab").await;
    let mut wrong = Vec::new();
    // `team-b-*` covers `team-b-x` but not `team-b`.
    for (queue, covered) in [("team-a", true), ("team-b-x", true), ("team-b", false), ("other", false)] {
        let place = Place::make(&admin, queue).await;
        for method in jobwire_methods() {
            let result = call(&method, &scoped, &place).await;
            // ListQueues names no queue: it is filtered instead (below); GetAccess names none.
            let expect_through = covered || method == "ListQueues" || method == "GetAccess";
            match &result {
                result if expect_through && let_through(result) => {}
                Err(status) if !expect_through && status.code() == Code::PermissionDenied => {
                    let message = status.message();
                    assert!(
                        message.contains(&format!("{queue:?}")) && message.contains("admin-ab"),
                        "{method}: the refusal names the queue and the token: {message}"
                    );
                    assert!(message.contains("team-a, team-b-*"), "and what the token covers: {message}");
                }
                _ => wrong.push(format!("{method} on {queue}: {result:?}")),
            }
        }
    }
    assert!(wrong.is_empty(), "calls answered against the scope: {wrong:#?}");

    // A batch with one entry outside the scope is refused whole, naming the entry.
    let mut raw = scoped.raw();
    let jobs = vec![NewJob::new("team-a", "t").into_request(), NewJob::new("other", "t").into_request()];
    let status = raw.add_jobs(proto::AddJobsRequest { jobs }).await.expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().starts_with("jobs[1].queue:"), "{}", status.message());
}

/// Opens a GetJob stream of `client` on `queues`, with worker id `id`.
async fn worker_stream(client: &Client, id: &str, queues: &[&str]) -> tonic::Streaming<proto::GetJobResponse> {
    let req = proto::GetJobRequest {
        worker_id: id.into(),
        queues: queues.iter().map(|q| q.to_string()).collect(),
        max_in_flight: 1,
        ..Default::default()
    };
    client.raw().get_job(req).await.expect("stream opens").into_inner()
}

#[tokio::test]
async fn listings_show_only_what_the_scope_covers() {
    let secured = Secured::start(scoped_tokens()).await;
    let admin = secured.client("admin-all").await;
    for queue in ["team-a", "team-b-x", "team-b", "other"] {
        Place::make(&admin, queue).await;
    }
    let reader = secured.client("reader-ab").await;
    let mut names: Vec<String> = reader.list_queues().await.expect("list").into_iter().map(|q| q.queue).collect();
    names.sort();
    assert_eq!(names, ["team-a", "team-b-x"]);
    assert_eq!(secured.client("reader-plain").await.list_queues().await.expect("list").len(), 4);

    let workers = secured.client("worker-all").await;
    let _both = worker_stream(&workers, "both", &["other", "team-a"]).await;
    let _outside = worker_stream(&workers, "outside", &["other"]).await;
    let list = |c: Client| async move {
        let mut workers =
            c.raw().list_workers(proto::ListWorkersRequest::default()).await.expect("list").into_inner().workers;
        workers.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        workers.into_iter().map(|w| (w.worker_id, w.queues)).collect::<Vec<_>>()
    };
    let everyone = secured.client("reader-plain").await;
    eventually(WAIT, "both workers listed", || async { list(everyone.clone()).await.len() == 2 }).await;
    let expected = vec![("both".to_owned(), vec!["team-a".to_owned()])];
    assert_eq!(list(reader.clone()).await, expected, "only the queues in scope, and only workers with one");
}

/// A Work stream of `client` whose first message was `open` on `queues`.
async fn open_work(
    client: &Client,
    queues: &[&str],
) -> Result<(mpsc::UnboundedSender<proto::WorkRequest>, tonic::Streaming<proto::WorkResponse>), tonic::Status> {
    let open = proto::WorkOpen {
        queues: queues.iter().map(|q| q.to_string()).collect(),
        max_in_flight: 1,
        ..Default::default()
    };
    let (send, outgoing) = mpsc::unbounded_channel();
    send.send(proto::WorkRequest { message: Some(work_request::Message::Open(open)) }).expect("queued");
    let stream = client.raw().work(tokio_stream::wrappers::UnboundedReceiverStream::new(outgoing)).await?;
    Ok((send, stream.into_inner()))
}

/// Reads a Work stream until the answer to `ack_id`.
async fn answer(stream: &mut tonic::Streaming<proto::WorkResponse>, ack_id: u64) -> proto::WorkAnswer {
    loop {
        if let Some(Message::Answers(answers)) = next_message(stream).await.message
            && let Some(found) = answers.answers.into_iter().find(|a| a.ack_id == ack_id)
        {
            return found;
        }
    }
}

#[tokio::test]
async fn a_scoped_worker_takes_and_acks_only_its_queues() {
    let secured = Secured::start(scoped_tokens()).await;
    let server = &secured.server;
    let admin = secured.client("admin-all").await;
    let (inside, outside) = (Place::make(&admin, "team-a").await, Place::make(&admin, "other").await);
    let worker = secured.client("worker-a").await;

    let req =
        proto::GetJobRequest { queues: vec!["team-a".into(), "other".into()], max_in_flight: 1, ..Default::default() };
    let status = worker.raw().get_job(req).await.expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().starts_with("queues[1]:"), "{}", status.message());
    let status = open_work(&worker, &["other"]).await.expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().starts_with("open.queues[0]:"), "{}", status.message());

    let (send, mut stream) = open_work(&worker, &["team-a"]).await.expect("opens");
    let acks = |acks| proto::WorkRequest {
        message: Some(work_request::Message::Acks(proto::WorkAcks { acks, started: Vec::new() })),
    };
    send.send(acks(vec![stale_ack(1, &outside.job_id), stale_ack(2, &inside.job_id)])).expect("sent");
    let refused = answer(&mut stream, 1).await;
    assert_eq!(Code::from(refused.code), Code::PermissionDenied, "{refused:?}");
    let stale = answer(&mut stream, 2).await;
    assert_eq!(Code::from(stale.code), Code::FailedPrecondition, "in scope, refused as stale: {stale:?}");

    // The stream goes on: a job of its queue arrives and completes.
    let id = admin.add(NewJob::new("team-a", "t")).await.expect("add");
    let job = loop {
        if let Some(Message::Jobs(mut jobs)) = next_message(&mut stream).await.message {
            break jobs.jobs.remove(0);
        }
    };
    assert_eq!(job.id, id);
    let complete = proto::CompleteJobRequest { job_id: job.id, lease_token: job.lease_token, ..Default::default() };
    let ack = proto::WorkAck { ack_id: 3, ack: Some(proto::work_ack::Ack::Complete(complete)) };
    send.send(acks(vec![ack])).expect("sent");
    assert_eq!(answer(&mut stream, 3).await.code, 0);
    server.assert_invariants("team-a").await;
}

/// Reads `events` until one of type `until`, returning all read.
async fn events_until(
    events: &mut tonic::Streaming<proto::SubscribeResponse>,
    until: JobEventType,
) -> Vec<proto::JobEvent> {
    let mut seen = Vec::new();
    loop {
        let event = next_message(events).await.event.expect("an event");
        let last = event.r#type() == until;
        seen.push(event);
        if last {
            return seen;
        }
    }
}

#[tokio::test]
async fn a_reader_is_shown_payloads_results_and_states_only_when_revealed() {
    let secured = Secured::start(scoped_tokens()).await;
    let server = &secured.server;
    let admin = secured.client("admin-all").await;
    let plain = secured.client("reader-plain").await;
    let revealing = secured.client("reader-revealing").await;
    let subscribe = |c: &Client| {
        let mut raw = c.raw();
        async move {
            let req = proto::SubscribeRequest { queue: "r".into(), cursor: String::new() };
            raw.subscribe(req).await.expect("subscribes").into_inner()
        }
    };
    let (mut plain_events, mut revealed_events) = (subscribe(&plain).await, subscribe(&revealing).await);

    let session =
        admin.create_session("r", Some("s"), &serde_json::json!({"secret": "state"}), 1).await.expect("session");
    let id = admin.add(NewJob::new("r", "t").payload("secret-payload")).await.expect("add");
    let worker = secured.client("worker-all").await;
    let mut jobs = worker_stream(&worker, "w", &["r"]).await;
    let job = next_job(&mut jobs).await;
    let mut raw = worker.raw();
    let progress = proto::ReportProgressRequest {
        job_id: id.clone(),
        lease_token: job.lease_token.clone(),
        progress: b"secret-progress".to_vec(),
    };
    raw.report_progress(progress).await.expect("progress");
    let done = proto::CompleteJobRequest {
        job_id: id.clone(),
        lease_token: job.lease_token,
        result: b"secret-result".to_vec(),
        ..Default::default()
    };
    raw.complete_job(done).await.expect("completes");

    let plain_seen = events_until(&mut plain_events, JobEventType::Completed).await;
    assert!(plain_seen.iter().all(|e| e.progress.is_empty() && e.result.is_empty()), "{plain_seen:?}");
    let revealed_seen = events_until(&mut revealed_events, JobEventType::Completed).await;
    assert!(revealed_seen.iter().any(|e| e.progress == b"secret-progress"), "{revealed_seen:?}");

    let hidden = plain.info(&id).await.expect("info");
    assert!(hidden.payload.is_empty() && hidden.result.is_empty() && hidden.progress.is_empty(), "{hidden:?}");
    assert_eq!(hidden.state(), proto::JobState::Completed, "the rest is shown");
    let shown = revealing.info(&id).await.expect("info");
    assert_eq!((shown.payload.as_slice(), shown.result.as_slice()), (&b"secret-payload"[..], &b"secret-result"[..]));
    assert_eq!(admin.info(&id).await.expect("info").result, b"secret-result", "other roles see everything");

    let req =
        proto::ListJobsRequest { queue: "r".into(), state: proto::JobState::Completed as i32, ..Default::default() };
    let listed = plain.raw().list_jobs(req.clone()).await.expect("list").into_inner().jobs;
    assert!(listed.len() == 1 && listed[0].payload.is_empty() && listed[0].result.is_empty());
    assert_eq!(revealing.raw().list_jobs(req).await.expect("list").into_inner().jobs[0].payload, b"secret-payload");

    let watch = |c: &Client| {
        let mut raw = c.raw();
        let id = id.clone();
        async move {
            let mut events = raw.watch_job(proto::WatchJobRequest { job_id: id }).await.expect("watch").into_inner();
            events.message().await.expect("event").and_then(|m| m.event).expect("the current state")
        }
    };
    assert!(watch(&plain).await.result.is_empty());
    assert_eq!(watch(&revealing).await.result, b"secret-result");

    assert!(plain.session(&session.id).await.expect("get").state.is_empty());
    assert!(revealing.session(&session.id).await.expect("get").state.contains("secret"));
    let req = proto::ListSessionsRequest { queue: "r".into(), ..Default::default() };
    let sessions = plain.raw_sessions().list_sessions(req).await.expect("list").into_inner().sessions;
    assert!(sessions.len() == 1 && sessions[0].state.is_empty(), "{sessions:?}");
    server.assert_invariants("r").await;
}

#[tokio::test]
async fn get_access_answers_the_callers_own_name_role_and_scope() {
    let secured = Secured::start(scoped_tokens()).await;
    let access = secured.client("admin-ab").await.raw().get_access(proto::GetAccessRequest {}).await;
    let access = access.expect("any token may ask").into_inner();
    assert_eq!(access.name, "admin-ab");
    assert_eq!(access.role(), proto::AccessRole::Admin);
    assert_eq!(access.queues, ["team-a", "team-b-*"]);
    assert!(access.tokens_required);
    let unscoped = secured.client("admin-all").await.raw().get_access(proto::GetAccessRequest {}).await;
    assert!(unscoped.expect("asked").into_inner().queues.is_empty(), "every queue");
    let open = crate::auth::client(&secured.server, None).await.raw().get_access(proto::GetAccessRequest {}).await;
    assert_eq!(open.expect_err("needs a token").code(), Code::Unauthenticated);
}
