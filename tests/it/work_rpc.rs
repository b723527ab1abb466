//! The `Work` RPC through raw tonic calls: jobs several per message, acks answered by ack_id,
//! refused acks answered without ending the stream, protocol errors ending it, credit with
//! prefetch, revoke, drain, stream loss; and the Rust worker on Work (prefetch, reconnect) and
//! on the unary path.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use jobwire::{
    client::{self, NewJob, Protocol, Worker as RustWorker},
    proto::{self, JobState, RevokeReason, work_ack::Ack, work_request, work_response::Message},
};
use tokio::sync::mpsc;
use tonic::Code;

use crate::{
    fused::{QueueCalls, redis_conn},
    harness::{Process, Redis, Server, ServerBuilder, add, eventually, info, job, millis, unique_prefix},
};

const WAIT: Duration = Duration::from_secs(5);

/// A Work stream under test control.
struct Work {
    send: mpsc::UnboundedSender<proto::WorkRequest>,
    stream: tonic::Streaming<proto::WorkResponse>,
    /// Jobs and answers read while looking for something else.
    jobs: Vec<proto::Job>,
    answers: HashMap<u64, proto::WorkAnswer>,
}

fn open_message(queues: &[&str], credit: u32, prefetch: u32) -> proto::WorkRequest {
    proto::WorkRequest {
        message: Some(work_request::Message::Open(proto::WorkOpen {
            worker_id: "test-worker".into(),
            labels: Default::default(),
            queues: queues.iter().map(|q| q.to_string()).collect(),
            max_in_flight: credit,
            prefetch,
        })),
    }
}

fn acks(acks: Vec<proto::WorkAck>, started: Vec<String>) -> proto::WorkRequest {
    proto::WorkRequest { message: Some(work_request::Message::Acks(proto::WorkAcks { acks, started })) }
}

fn complete(ack_id: u64, job: &proto::Job) -> proto::WorkAck {
    let req = proto::CompleteJobRequest {
        job_id: job.id.clone(),
        lease_token: job.lease_token.clone(),
        result: b"done".to_vec(),
        ..Default::default()
    };
    proto::WorkAck { ack_id, ack: Some(Ack::Complete(req)) }
}

fn fail(ack_id: u64, job_id: &str, lease_token: &str) -> proto::WorkAck {
    let req = proto::FailJobRequest {
        job_id: job_id.into(),
        lease_token: lease_token.into(),
        error: "boom".into(),
        retryable: Some(true),
        retry_after: None,
    };
    proto::WorkAck { ack_id, ack: Some(Ack::Fail(req)) }
}

impl Work {
    /// Opens a stream with `first` as its first message.
    async fn start(server: &Server, first: proto::WorkRequest) -> Result<Self, tonic::Status> {
        let mut client = server.client().await;
        let (send, outgoing) = mpsc::unbounded_channel();
        send.send(first).expect("queued");
        let stream = client.work(tokio_stream::wrappers::UnboundedReceiverStream::new(outgoing)).await?.into_inner();
        Ok(Self { send, stream, jobs: Vec::new(), answers: HashMap::new() })
    }

    async fn open(server: &Server, queues: &[&str], credit: u32, prefetch: u32) -> Self {
        Self::start(server, open_message(queues, credit, prefetch)).await.expect("work opens")
    }

    fn send(&self, request: proto::WorkRequest) {
        self.send.send(request).expect("stream still open");
    }

    /// The next message that is not a ping, within `limit`: None on timeout or end, the
    /// status when the stream ends with one.
    async fn next(&mut self, limit: Duration) -> Result<Option<Message>, tonic::Status> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let Ok(message) = tokio::time::timeout_at(deadline, self.stream.message()).await else {
                return Ok(None);
            };
            match message?.and_then(|m| m.message) {
                Some(Message::Ping(_)) => continue,
                other => return Ok(other),
            }
        }
    }

    /// Reads until `n` jobs arrived (besides any answers); returns them and how many messages
    /// carried them.
    async fn take_jobs(&mut self, n: usize) -> (Vec<proto::Job>, usize) {
        let mut messages = 0;
        while self.jobs.len() < n {
            match self.next(WAIT).await.expect("stream goes on") {
                Some(Message::Jobs(jobs)) => {
                    messages += 1;
                    self.jobs.extend(jobs.jobs);
                }
                Some(Message::Answers(a)) => self.keep(a),
                other => panic!("expected jobs, got {other:?}"),
            }
        }
        (self.jobs.drain(..n).collect(), messages)
    }

    async fn job(&mut self) -> proto::Job {
        self.take_jobs(1).await.0.remove(0)
    }

    fn keep(&mut self, answers: proto::WorkAnswers) {
        for answer in answers.answers {
            assert!(self.answers.insert(answer.ack_id, answer).is_none(), "one answer per ack");
        }
    }

    /// Reads until the acks named by `ids` are answered; returns their answers and how many
    /// messages carried them.
    async fn answers(&mut self, ids: &[u64]) -> (HashMap<u64, proto::WorkAnswer>, usize) {
        let mut messages = 0;
        while !ids.iter().all(|id| self.answers.contains_key(id)) {
            match self.next(WAIT).await.expect("stream goes on") {
                Some(Message::Answers(a)) => {
                    messages += 1;
                    self.keep(a);
                }
                Some(Message::Jobs(jobs)) => self.jobs.extend(jobs.jobs),
                other => panic!("expected answers, got {other:?}"),
            }
        }
        (ids.iter().filter_map(|id| self.answers.remove_entry(id)).collect(), messages)
    }

    /// Whether the stream ends cleanly (OK, no more messages) within `WAIT`, pings aside.
    async fn ends(&mut self) -> bool {
        loop {
            match tokio::time::timeout(WAIT, self.stream.message()).await {
                Ok(Ok(None)) => return true,
                Ok(Ok(Some(proto::WorkResponse { message: Some(Message::Ping(_)) }))) => continue,
                _ => return false,
            }
        }
    }

    async fn expect_nothing(&mut self, wait: Duration) {
        if let Some(message) = self.next(wait).await.expect("stream goes on") {
            panic!("expected nothing, got {message:?}");
        }
    }
}

fn code(answer: &proto::WorkAnswer) -> Code {
    Code::from(answer.code)
}

#[tokio::test]
async fn jobs_ready_together_arrive_in_one_message_and_acks_are_answered_by_ack_id() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    for i in 0..3 {
        add(&mut client, job("q", "t", format!("{i}").as_bytes())).await;
    }
    let mut work = Work::open(&server, &["q"], 3, 0).await;
    let (jobs, messages) = work.take_jobs(3).await;
    assert_eq!(messages, 1, "three jobs leased in one round go out together");
    let payloads: Vec<&[u8]> = jobs.iter().map(|j| j.payload.as_slice()).collect();
    assert_eq!(payloads, [b"0", b"1", b"2"], "in queue order");

    work.send(acks(
        vec![complete(7, &jobs[0]), complete(8, &jobs[1]), fail(9, &jobs[2].id, &jobs[2].lease_token)],
        vec![],
    ));
    let (answers, _) = work.answers(&[7, 8, 9]).await;
    assert!(answers.values().all(|a| code(a) == Code::Ok), "{answers:?}");
    assert!(answers[&7].result.is_none());
    let Some(proto::work_answer::Result::Fail(failed)) = &answers[&9].result else {
        panic!("a fail ack is answered with a FailJobResponse: {:?}", answers[&9]);
    };
    assert!(matches!(failed.state(), JobState::Retrying | JobState::Waiting));
    let done = info(&mut client, &jobs[0].id).await;
    assert_eq!((done.state(), done.result.as_slice()), (JobState::Completed, b"done".as_slice()));

    // Acks answered without a Redis call (refused on their fields) finish together.
    let bad = |ack_id| fail(ack_id, "not a job id", "x");
    work.send(acks(vec![bad(1), bad(2), bad(3)], vec![]));
    let (answers, messages) = work.answers(&[1, 2, 3]).await;
    assert_eq!(messages, 1, "answers ready together go out together");
    assert!(answers.values().all(|a| code(a) == Code::InvalidArgument && a.message.contains("job_id")));
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn the_completions_of_one_message_share_one_redis_call_that_leases_their_replacements() {
    let redis = Redis::start();
    // Timers long enough that no heartbeat or upkeep round makes a call within the window.
    let server = ServerBuilder::new(&redis)
        .settings(|s| {
            s.lease_ttl = Duration::from_secs(60);
            s.safety_poll = Duration::from_secs(60);
        })
        .start()
        .await;
    let mut client = server.client().await;
    for i in 0..10 {
        add(&mut client, job("q", "t", format!("{i}").as_bytes())).await;
    }
    let mut work = Work::open(&server, &["q"], 5, 0).await;
    let (jobs, _) = work.take_jobs(5).await;
    let mut conn = redis_conn(&redis).await;
    let counted = QueueCalls::start(&redis).await;
    work.send(acks(jobs.iter().zip(1..).map(|(job, ack_id)| complete(ack_id, job)).collect(), vec![]));
    let (answers, _) = work.answers(&[1, 2, 3, 4, 5]).await;
    assert!(answers.values().all(|a| code(a) == Code::Ok), "{answers:?}");
    let (next, _) = work.take_jobs(5).await;
    assert_eq!(
        counted.count(&mut conn).await,
        1,
        "five completions in one message: one call, which leased the next five"
    );
    let payloads: Vec<&[u8]> = next.iter().map(|j| j.payload.as_slice()).collect();
    assert_eq!(payloads, [b"5", b"6", b"7", b"8", b"9"], "in queue order");
    work.send(acks(next.iter().zip(6..).map(|(job, ack_id)| complete(ack_id, job)).collect(), vec![]));
    work.answers(&[6, 7, 8, 9, 10]).await;
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_refused_ack_is_answered_with_its_code_and_the_stream_goes_on() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    add(&mut client, job("q", "t", b"a")).await;
    let mut work = Work::open(&server, &["q"], 1, 0).await;
    let held = work.job().await;
    let (queue, _) = held.id.rsplit_once('/').expect("queue/ulid");
    let unknown = format!("{queue}/{}", ulid::Ulid::new());
    let negative = proto::FailJobRequest {
        job_id: held.id.clone(),
        lease_token: held.lease_token.clone(),
        retry_after: Some(prost_types::Duration { seconds: -1, nanos: 0 }),
        ..Default::default()
    };
    work.send(acks(
        vec![
            fail(1, &held.id, "not-the-token"),
            fail(2, &unknown, &held.lease_token),
            proto::WorkAck { ack_id: 3, ack: Some(Ack::Fail(negative)) },
            proto::WorkAck { ack_id: 4, ack: None },
            proto::WorkAck {
                ack_id: 5,
                ack: Some(Ack::Extend(proto::ExtendLeaseRequest {
                    job_id: held.id.clone(),
                    lease_token: held.lease_token.clone(),
                    extend_by: Some(millis(60_000)),
                })),
            },
        ],
        vec![],
    ));
    let (answers, _) = work.answers(&[1, 2, 3, 4, 5]).await;
    assert_eq!(code(&answers[&1]), Code::FailedPrecondition, "stale token: {:?}", answers[&1]);
    assert_eq!(code(&answers[&2]), Code::NotFound, "unknown job: {:?}", answers[&2]);
    assert_eq!(code(&answers[&3]), Code::InvalidArgument, "{:?}", answers[&3]);
    assert!(answers[&3].message.contains("retry_after"));
    assert_eq!(code(&answers[&4]), Code::InvalidArgument, "{:?}", answers[&4]);
    assert!(
        matches!(answers[&5].result, Some(proto::work_answer::Result::Extend(ref e)) if e.deadline.is_some()),
        "{:?}",
        answers[&5]
    );
    assert_eq!(info(&mut client, &held.id).await.state(), JobState::Active, "the refused acks changed nothing");

    // The stream goes on: the ack ids answered may be used again, and jobs keep coming.
    add(&mut client, job("q", "t", b"b")).await;
    work.send(acks(vec![complete(1, &held)], vec![]));
    assert_eq!(code(&work.answers(&[1]).await.0[&1]), Code::Ok);
    let next = work.job().await;
    assert_eq!(next.payload, b"b");
    work.send(acks(vec![complete(2, &next)], vec![]));
    assert_eq!(code(&work.answers(&[2]).await.0[&2]), Code::Ok);
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn protocol_errors_end_the_stream_with_invalid_argument() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;

    let not_open = Work::start(&server, acks(vec![], vec![])).await.err().expect("acks before open are refused");
    assert_eq!(not_open.code(), Code::InvalidArgument, "{not_open}");
    let bad_open = Work::start(&server, open_message(&["q"], 0, 0)).await.err().expect("credit 0 is refused");
    assert!(bad_open.code() == Code::InvalidArgument && bad_open.message().contains("max_in_flight"), "{bad_open}");
    let bad_prefetch = Work::start(&server, open_message(&["q"], 1, 1_000_000)).await.err().expect("refused");
    assert!(bad_prefetch.code() == Code::InvalidArgument && bad_prefetch.message().contains("prefetch"));

    let mut twice = Work::open(&server, &["q"], 1, 0).await;
    twice.send(open_message(&["q"], 1, 0));
    let ended = twice.next(WAIT).await.expect_err("a second open ends the stream");
    assert_eq!(ended.code(), Code::InvalidArgument, "{ended}");

    let id = add(&mut client, job("q", "t", b"")).await;
    let mut repeated = Work::open(&server, &["q"], 1, 0).await;
    let held = repeated.job().await;
    repeated.send(acks(vec![complete(5, &held), complete(5, &held)], vec![]));
    let ended = loop {
        match repeated.next(WAIT).await {
            Err(status) => break status,
            Ok(Some(Message::Answers(_))) => continue,
            Ok(other) => panic!("expected the stream to end, got {other:?}"),
        }
    };
    assert!(ended.code() == Code::InvalidArgument && ended.message().contains("ack_id"), "{ended}");
    eventually(WAIT, "the job to be back or completed", || {
        let mut client = client.clone();
        let id = id.clone();
        async move { info(&mut client, &id).await.state() != JobState::Active }
    })
    .await;
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_work_stream_never_holds_more_than_its_credit_plus_prefetch() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    for i in 0..6 {
        add(&mut client, job("q", "t", format!("{i}").as_bytes())).await;
    }
    let mut work = Work::open(&server, &["q"], 2, 1).await;
    let (held, _) = work.take_jobs(3).await;
    work.expect_nothing(Duration::from_millis(300)).await;
    assert_eq!(server.stats("q").await.active, 3, "prefetched jobs are leased and active");
    work.send(acks(vec![complete(1, &held[0])], vec![held[0].lease_token.clone()]));
    let (answers, _) = work.answers(&[1]).await;
    assert_eq!(code(&answers[&1]), Code::Ok);
    let (more, _) = work.take_jobs(1).await;
    assert_eq!(more[0].payload, b"3");
    work.expect_nothing(Duration::from_millis(200)).await;
    let rest: Vec<proto::WorkAck> = (10..).zip(held[1..].iter().chain(&more)).map(|(i, j)| complete(i, j)).collect();
    work.send(acks(rest, vec![]));
    work.answers(&[10, 11, 12]).await;
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn revokes_reach_the_work_stream() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let mut slow = job("q", "t", b"slow");
    slow.timeout = Some(millis(300));
    let timed_out = add(&mut client, slow).await;
    let cancelled = add(&mut client, job("q", "t", b"cancel")).await;
    let mut work = Work::open(&server, &["q"], 2, 0).await;
    let (held, _) = work.take_jobs(2).await;
    client.cancel_job(proto::CancelJobRequest { job_id: cancelled.clone() }).await.expect("cancel");
    let mut revoked = HashMap::new();
    while revoked.len() < 2 {
        match work.next(WAIT).await.expect("stream goes on") {
            Some(Message::Revoke(r)) => {
                revoked.insert(r.job_id.clone(), r);
            }
            other => panic!("expected revokes, got {other:?}"),
        }
    }
    assert_eq!(revoked[&timed_out].reason(), RevokeReason::Timeout);
    assert_eq!(revoked[&cancelled].reason(), RevokeReason::Cancelled);

    // Answering the revokes gives the credit back.
    add(&mut client, job("q", "t", b"next")).await;
    let by_id: HashMap<&str, &proto::Job> = held.iter().map(|j| (j.id.as_str(), j)).collect();
    work.send(acks(
        vec![
            fail(1, &timed_out, &by_id[timed_out.as_str()].lease_token),
            fail(2, &cancelled, &by_id[cancelled.as_str()].lease_token),
        ],
        vec![],
    ));
    let (answers, _) = work.answers(&[1, 2]).await;
    assert_eq!(code(&answers[&1]), Code::FailedPrecondition, "a timed-out lease is gone");
    assert_eq!(code(&answers[&2]), Code::Ok, "a cancelled job still takes its ack");
    assert_eq!(info(&mut client, &cancelled).await.state(), JobState::Cancelled);
    let next = work.job().await;
    assert_eq!(next.payload, b"next");
    work.send(acks(vec![complete(3, &next)], vec![]));
    work.answers(&[3]).await;
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_server_shutdown_drains_the_work_stream_and_takes_acks_in_the_grace() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let server = ServerBuilder::new(&redis).prefix(&prefix).drain_grace(Duration::from_secs(3)).start().await;
    let mut client = server.client().await;
    let id = add(&mut client, job("q", "t", b"")).await;
    let mut work = Work::open(&server, &["q"], 1, 0).await;
    let held = work.job().await;
    let stopping = tokio::spawn(server.stop());
    match work.next(WAIT).await.expect("stream goes on") {
        Some(Message::Drain(d)) => assert!(d.grace.is_some()),
        other => panic!("expected drain, got {other:?}"),
    }
    work.send(acks(vec![complete(1, &held)], vec![]));
    let (answers, _) = work.answers(&[1]).await;
    assert_eq!(code(&answers[&1]), Code::Ok, "acks are taken during the grace");
    assert!(work.ends().await, "the stream ends with the server");
    stopping.await.expect("stopped");
    let next = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let mut client = next.client().await;
    assert_eq!(info(&mut client, &id).await.state(), JobState::Completed);
    next.assert_invariants("q").await;
}

#[tokio::test]
async fn a_dropped_work_stream_gives_its_jobs_back_at_once_as_lost() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let ids = [add(&mut client, job("q", "t", b"0")).await, add(&mut client, job("q", "t", b"1")).await];
    let mut work = Work::open(&server, &["q"], 2, 0).await;
    work.take_jobs(2).await;
    drop(work);
    for id in &ids {
        eventually(WAIT, "the job to be back", || {
            let (mut client, id) = (client.clone(), id.clone());
            async move { info(&mut client, &id).await.state() == JobState::Waiting }
        })
        .await;
        assert_eq!(info(&mut client, id).await.lost_deliveries, 1);
    }
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn with_prefetch_a_lost_stream_hands_back_unstarted_jobs_uncounted_and_started_ones_lost() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(add(&mut client, job("q", "t", format!("{i}").as_bytes())).await);
    }
    let mut work = Work::open(&server, &["q"], 1, 2).await;
    let (held, _) = work.take_jobs(3).await;
    // Only the first reached a handler; the report rides alone (no ack is due).
    work.send(acks(vec![], vec![held[0].lease_token.clone(), "not a token".into()]));
    // The report has no answer: an ack sent after it proves the server read it.
    work.send(acks(vec![fail(1, "q/not-a-ulid", "x")], vec![]));
    work.answers(&[1]).await;
    drop(work);

    eventually(WAIT, "the three jobs to be back", || {
        let (mut client, ids) = (client.clone(), ids.clone());
        async move {
            for id in &ids[..3] {
                if info(&mut client, id).await.state() != JobState::Waiting {
                    return false;
                }
            }
            true
        }
    })
    .await;
    let lost: Vec<u32> = futures::future::join_all(ids.iter().map(|id| {
        let mut client = client.clone();
        async move { info(&mut client, id).await.lost_deliveries }
    }))
    .await;
    assert_eq!(lost, [1, 0, 0, 0], "only the started job counts a lost delivery");

    // Back at the head: the job never delivered comes after them.
    let mut again = Work::open(&server, &["q"], 4, 0).await;
    let (jobs, _) = again.take_jobs(4).await;
    assert_eq!(jobs[3].payload, b"3");
    let all: Vec<proto::WorkAck> = (0..).zip(&jobs).map(|(i, j)| complete(i, j)).collect();
    again.send(acks(all, vec![]));
    again.answers(&[0, 1, 2, 3]).await;
    server.assert_invariants("q").await;
}

async fn rust_client(addr: std::net::SocketAddr) -> client::Client {
    client::Client::connect(&format!("http://{addr}")).await.expect("connect")
}

/// Handler runs: how many, how many at once now, and the most at once.
#[derive(Default)]
struct Runs {
    done: AtomicUsize,
    now: AtomicUsize,
    peak: AtomicUsize,
}

/// A Rust worker counting its runs (each a few ms long), stopped when the sender fires.
fn counting(worker: RustWorker, runs: &Arc<Runs>) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let runs = runs.clone();
    let worker = worker.handle_any(move |ctx| {
        let runs = runs.clone();
        async move {
            let now = runs.now.fetch_add(1, Ordering::SeqCst) + 1;
            runs.peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(3)).await;
            runs.now.fetch_sub(1, Ordering::SeqCst);
            runs.done.fetch_add(1, Ordering::SeqCst);
            Ok(ctx.payload().to_vec())
        }
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        worker
            .run(async move {
                let _ = stopped.await;
            })
            .await
            .expect("worker");
    });
    (stop, task)
}

#[tokio::test]
async fn the_rust_worker_with_prefetch_runs_everything_once() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let producer = rust_client(server.addr).await;
    let runs = Arc::new(Runs::default());
    let (stop, task) =
        counting(RustWorker::new(rust_client(server.addr).await, &["q"]).concurrency(2).prefetch(3), &runs);
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(producer.add(NewJob::new("q", "t").payload(format!("{i}"))).await.expect("add"));
    }
    for id in &ids {
        let result = producer.wait_for_result(id, WAIT).await.expect("result");
        assert!(!result.is_empty());
    }
    let _ = stop.send(());
    tokio::time::timeout(WAIT, task).await.expect("the worker stops").expect("worker task");
    assert_eq!(runs.done.load(Ordering::SeqCst), 40);
    assert_eq!(runs.peak.load(Ordering::SeqCst), 2, "prefetched jobs wait: handlers never exceed the concurrency");
    for id in &ids {
        assert_eq!(producer.info(id).await.expect("info").lost_deliveries, 0);
    }
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn the_rust_worker_on_the_unary_path_runs_jobs() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let producer = rust_client(server.addr).await;
    let runs = Arc::new(Runs::default());
    let worker = RustWorker::new(rust_client(server.addr).await, &["q"]).concurrency(3).protocol(Protocol::Unary);
    let (stop, task) = counting(worker, &runs);
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(producer.add(NewJob::new("q", "t").payload(format!("{i}"))).await.expect("add"));
    }
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(producer.wait_for_result(id, WAIT).await.expect("result"), format!("{i}").into_bytes());
    }
    let _ = stop.send(());
    tokio::time::timeout(WAIT, task).await.expect("the worker stops").expect("worker task");
    assert_eq!(runs.done.load(Ordering::SeqCst), 10);
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn the_rust_worker_reconnects_its_work_stream_after_a_server_restart() {
    let redis = Redis::start();
    let (url, prefix) = (redis.url(), unique_prefix());
    let serve = |listen: &str| {
        ["serve", "--listen", listen, "--redis-url", &url, "--key-prefix", &prefix, "--drain-grace", "1s"]
            .map(String::from)
            .to_vec()
    };
    let mut first = Process::start_async(serve("127.0.0.1:0")).await;
    let addr = first.addr;
    let runs = Arc::new(Runs::default());
    let (stop, task) = counting(RustWorker::new(rust_client(addr).await, &["q"]).concurrency(2), &runs);
    let producer = rust_client(addr).await;
    let before = producer.add(NewJob::new("q", "t").payload("before")).await.expect("add");
    assert_eq!(producer.wait_for_result(&before, WAIT).await.expect("result"), b"before");

    first.signal(libc::SIGTERM);
    first.wait_exit(Duration::from_secs(10)).await;
    let _second = Process::start_async(serve(&addr.to_string())).await;
    let producer = rust_client(addr).await;
    let after = producer.add(NewJob::new("q", "t").payload("after")).await.expect("add");
    let result = producer.wait_for_result(&after, Duration::from_secs(15)).await.expect("the worker came back");
    assert_eq!(result, b"after");
    let _ = stop.send(());
    tokio::time::timeout(WAIT, task).await.expect("the worker stops").expect("worker task");
    assert_eq!(runs.done.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_rust_handler_reports_progress_and_extends_over_the_work_stream() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let producer = rust_client(server.addr).await;
    let worker = RustWorker::new(rust_client(server.addr).await, &["q"]).handle("t", |ctx| async move {
        ctx.progress(b"{\"done\":50}".to_vec()).await.map_err(|e| client::JobError::permanent(e.to_string()))?;
        ctx.extend(Duration::from_secs(60)).await.map_err(|e| client::JobError::permanent(e.to_string()))?;
        Ok(b"ok".to_vec())
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    let id = producer.add(NewJob::new("q", "t")).await.expect("add");
    assert_eq!(producer.wait_for_result(&id, WAIT).await.expect("result"), b"ok");
    assert_eq!(producer.info(&id).await.expect("info").progress, b"{\"done\":50}");
    let _ = stop.send(());
    tokio::time::timeout(WAIT, task).await.expect("stops").expect("task").expect("worker");
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_stopping_rust_worker_hands_back_its_prefetched_jobs_unrun() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let producer = rust_client(server.addr).await;
    let started = Arc::new(AtomicUsize::new(0));
    let counter = started.clone();
    let worker = RustWorker::new(rust_client(server.addr).await, &["q"]).prefetch(2).handle("t", move |_ctx| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(Vec::new())
        }
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(producer.add(NewJob::new("q", "t")).await.expect("add"));
    }
    eventually(WAIT, "one running and two prefetched", || {
        let (server, started) = (&server, started.clone());
        async move { started.load(Ordering::SeqCst) == 1 && server.stats("q").await.active == 3 }
    })
    .await;
    let _ = stop.send(());
    tokio::time::timeout(WAIT, task).await.expect("the worker stops").expect("task").expect("worker");
    assert_eq!(started.load(Ordering::SeqCst), 1, "the prefetched jobs never ran");
    let first = producer.info(&ids[0]).await.expect("info");
    assert_eq!(first.state(), JobState::Completed, "the running job finished");
    for id in &ids[1..] {
        let back = producer.info(id).await.expect("info");
        assert_eq!((back.state(), back.attempts, back.lost_deliveries), (JobState::Waiting, 0, 0), "handed back unrun");
    }
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn closing_the_send_side_answers_what_was_sent_then_ends_the_stream() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let done = add(&mut client, job("q", "t", b"0")).await;
    let left = add(&mut client, job("q", "t", b"1")).await;
    let mut work = Work::open(&server, &["q"], 2, 0).await;
    let (held, _) = work.take_jobs(2).await;
    let first = held.iter().find(|j| j.id == done).expect("delivered");
    work.send(acks(vec![complete(1, first)], vec![]));
    let Work { send, stream, .. } = work;
    drop(send);
    let mut work = Work { send: mpsc::unbounded_channel().0, stream, jobs: Vec::new(), answers: HashMap::new() };
    assert_eq!(code(&work.answers(&[1]).await.0[&1]), Code::Ok, "the ack sent before closing is answered");
    assert!(work.ends().await, "then the stream ends");
    assert_eq!(info(&mut client, &done).await.state(), JobState::Completed);
    eventually(WAIT, "the unacknowledged job to be back", || {
        let (mut client, left) = (client.clone(), left.clone());
        async move { info(&mut client, &left).await.state() == JobState::Waiting }
    })
    .await;
    server.assert_invariants("q").await;
}
