//! The worker side of the Rust client: one worker stream, handlers by job type, acks from the
//! handlers' results.
//!
//! - By default the stream is a `Work` call ([`Protocol::Work`]): jobs arrive on it and acks go
//!   out on it, each answered by its ack id. Acks that become ready while a message is being
//!   sent go out together in the next one (none waits when nothing is being sent).
//!   [`Protocol::Unary`] uses `GetJob` and one unary call per ack instead.
//! - Concurrency is the stream's credit: the server never sends more than `concurrency` jobs at
//!   once, plus, with [`Worker::prefetch`], up to `prefetch` more that wait here, in delivery
//!   order, for a free handler (their deadlines run from delivery); each one handed to a handler
//!   is reported `started` on the next message: with its own ack when the handler returns at
//!   once, else as soon as the handler first waits (`worker/outbox.rs`).
//! - `revoke` aborts the handler and answers with a failure of that delivery, which gives the
//!   stream its credit back (the server refuses it as stale, or records it for a cancelled job);
//!   `drain` finishes what is running, hands back what has not started, then reconnects.
//! - A broken stream is reopened with backoff. Jobs running on it are aborted: the server has
//!   already given them back.
//! - An ack answered UNAVAILABLE (Redis or the server away for a moment) is sent again until
//!   answered, for as long as the stream lives: dropped, it would leave the job leased to a live
//!   stream. A handler's completion or failure is handed to the outbox, which keeps it until
//!   answered, and the job's task ends (`worker/acker.rs`); a completion writing session state
//!   waits for its answer, which may refuse it.
//! - Stopping finishes the running jobs and waits for their acks' answers; a job that arrives while stopping, or that
//!   waits for a handler, is handed back (`ReturnJob`: not a failed attempt, not a lost delivery).
//! - A handler runs inside a `job` span carrying the job's W3C trace context (`trace_id`,
//!   `parent_span_id`, from its `traceparent` header); a unary ack sends that header as gRPC
//!   metadata and a Work ack is traced by the server from its delivery, so the server's
//!   `job.complete`/`job.fail` spans join the trace.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::{Stream, StreamExt};
use tokio::{
    sync::{Semaphore, mpsc, oneshot},
    task::{AbortHandle, JoinSet},
};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};
use tracing::{Instrument, debug, field::Empty, warn};

use super::{Client, ClientError, Transport};
use crate::{
    proto::{
        self, get_job_response, queue_service_client::QueueServiceClient, work_ack::Ack, work_request, work_response,
    },
    telemetry::{TraceContext, traceparent},
};

/// How a [`Worker`] talks to the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// One `Work` stream carries the jobs and the acks, several per message: no call per ack.
    #[default]
    Work,
    /// A `GetJob` stream for the jobs and one unary call per ack (`CompleteJob`, `FailJob`...),
    /// as a client without `Work` does. No prefetch.
    Unary,
}

/// Why a handler failed, and whether to try again.
#[derive(Debug, Clone)]
pub struct JobError {
    /// The error recorded on the job (its `last_error`).
    pub message: String,
    /// False: the job goes dead now, whatever attempts remain.
    pub retryable: bool,
    /// The wait before the retry; None follows the job's backoff.
    pub retry_after: Option<Duration>,
    /// Not a failure: what the job calls is rate limited ([`JobError::rate_limited`]). The job
    /// goes back to run after `retry_after`, spending no attempt; `Some(true)` holds its
    /// `rate_key` as long too.
    pub rate_limited: Option<bool>,
}

impl JobError {
    /// Retry per the job's backoff (while attempts remain).
    pub fn retry(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: true, retry_after: None, rate_limited: None }
    }

    /// Do not retry: the job goes dead now.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: false, retry_after: None, rate_limited: None }
    }

    /// Retry after exactly `wait`.
    pub fn retry_after(message: impl Into<String>, wait: Duration) -> Self {
        Self { message: message.into(), retryable: true, retry_after: Some(wait), rate_limited: None }
    }

    /// "Rate limited upstream, retry after `wait`" (a 429 from the API the job calls): the job
    /// goes back to run again after `wait` without spending an attempt (`ReturnJob` with
    /// `retry_after`); with `hold_key`, no other job of its `rate_key` starts before then.
    pub fn rate_limited(wait: Duration, hold_key: bool) -> Self {
        Self { message: "rate limited".into(), retryable: true, retry_after: Some(wait), rate_limited: Some(hold_key) }
    }
}

impl<E: std::error::Error> From<E> for JobError {
    fn from(e: E) -> Self {
        Self::retry(e.to_string())
    }
}

/// A delivered job, handed to a handler.
pub struct JobContext {
    /// The job as delivered: payload, headers, attempt, lease token, session snapshot.
    pub job: proto::Job,
    acker: Acker,
    new_session_state: Arc<std::sync::Mutex<Option<String>>>,
}

impl JobContext {
    /// The job's id.
    pub fn id(&self) -> &str {
        &self.job.id
    }

    /// The payload, as added.
    pub fn payload(&self) -> &[u8] {
        &self.job.payload
    }

    /// The payload parsed as JSON; a payload that does not parse fails the job permanently.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, JobError> {
        serde_json::from_slice(&self.job.payload)
            .map_err(|e| JobError::permanent(format!("payload is not the expected JSON: {e}")))
    }

    /// This attempt's number, from 1; lost deliveries do not use up attempts.
    pub fn attempt(&self) -> u32 {
        self.job.attempt
    }

    /// For a job of a session: the session's state at delivery, parsed.
    pub fn session_state(&self) -> Option<serde_json::Value> {
        self.job.session.as_ref().and_then(|s| serde_json::from_str(&s.state).ok())
    }

    /// For a job of a session: the state to write when the job completes, in the same atomic
    /// step, provided the session has not changed since delivery. If it has, the attempt fails
    /// (and retries with the fresh state) instead.
    pub fn set_session_state(&self, state: &serde_json::Value) {
        *self.new_session_state.lock().unwrap_or_else(|e| e.into_inner()) = Some(state.to_string());
    }

    /// Pushes this attempt's deadline to now + `by`.
    pub async fn extend(&self, by: Duration) -> Result<(), ClientError> {
        let req = proto::ExtendLeaseRequest {
            job_id: self.job.id.clone(),
            lease_token: self.job.lease_token.clone(),
            extend_by: Some(super::duration(by)),
        };
        self.acker.extend(req).await?;
        Ok(())
    }

    /// Reports this attempt's progress (free-form, JSON by convention; at most 64 KiB): it is
    /// kept on the job and sent to whoever watches it.
    pub async fn progress(&self, progress: impl Into<Vec<u8>>) -> Result<(), ClientError> {
        let req = proto::ReportProgressRequest {
            job_id: self.job.id.clone(),
            lease_token: self.job.lease_token.clone(),
            progress: progress.into(),
        };
        self.acker.progress(req).await?;
        Ok(())
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, JobError>> + Send>>;
type Handler = Arc<dyn Fn(JobContext) -> BoxFuture + Send + Sync>;

mod acker;
mod outbox;

use acker::{Acker, answer_revoke, hand_back, until_answered};
use outbox::Outbox;

/// What arrives on a worker stream, whichever the protocol.
enum Incoming {
    Jobs(Vec<proto::Job>),
    Revoke(proto::Revoke),
    Drain,
    Answers(Vec<proto::WorkAnswer>),
    Ping,
}

type IncomingStream = Pin<Box<dyn Stream<Item = Result<Incoming, Status>> + Send>>;

/// A worker: one worker stream over a [`Client`]'s connection (a `Work` stream carrying jobs
/// and acks, or `GetJob` with unary acks: see [`Protocol`]), running the handler of each job's
/// type. Built fluently, then [`Worker::run`] until a stop future resolves.
pub struct Worker {
    client: Client,
    queues: Vec<String>,
    concurrency: u32,
    prefetch: u32,
    protocol: Protocol,
    worker_id: String,
    handlers: HashMap<String, Handler>,
    /// For job types without a handler of their own.
    fallback: Option<Handler>,
}

impl Worker {
    /// A worker for `queues` (earlier ones first), with concurrency 1 and no handlers yet.
    pub fn new(client: Client, queues: &[&str]) -> Self {
        Self {
            client,
            queues: queues.iter().map(|q| q.to_string()).collect(),
            concurrency: 1,
            prefetch: 0,
            protocol: Protocol::default(),
            worker_id: format!("rust-{}", std::process::id()),
            handlers: HashMap::new(),
            fallback: None,
        }
    }

    /// Jobs run at once (the stream's credit). Default 1.
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Jobs held beyond `concurrency`, waiting for a free handler, so the next job is already
    /// here when a handler returns (default 0). They are leased from delivery: their deadlines
    /// run while they wait (behind a long job, for up to its whole run), and other workers
    /// cannot take them. Worth it for jobs of a few milliseconds or less, about `concurrency`
    /// (BENCHMARKS.md, "Prefetch"); for longer jobs 1 already hides the round trip. Only with
    /// [`Protocol::Work`].
    pub fn prefetch(mut self, n: u32) -> Self {
        self.prefetch = n;
        self
    }

    /// The protocol to speak (default [`Protocol::Work`]).
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// The id listings show for this worker (default `rust-<pid>`).
    pub fn worker_id(mut self, id: &str) -> Self {
        self.worker_id = id.into();
        self
    }

    /// Runs `handler` for jobs of `job_type`. Its `Ok` bytes become the result.
    pub fn handle<F, Fut>(mut self, job_type: &str, handler: F) -> Self
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, JobError>> + Send + 'static,
    {
        self.handlers.insert(job_type.into(), Arc::new(move |ctx| Box::pin(handler(ctx))));
        self
    }

    /// Runs `handler` for every job type that has no handler of its own.
    pub fn handle_any<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, JobError>> + Send + 'static,
    {
        self.fallback = Some(Arc::new(move |ctx| Box::pin(handler(ctx))));
        self
    }

    /// Works until `stop` resolves, then finishes the running jobs and returns.
    pub async fn run(self, stop: impl Future<Output = ()> + Send + 'static) -> Result<(), ClientError> {
        let stopping = CancellationToken::new();
        let trigger = stopping.clone();
        let stopper = tokio::spawn(async move {
            stop.await;
            trigger.cancel();
        });
        let mut wait = Duration::from_millis(100);
        while !stopping.is_cancelled() {
            // Opening may wait for a server that is restarting: a stop must not wait with it.
            let opened = tokio::select! {
                _ = stopping.cancelled() => break,
                opened = self.open() => opened,
            };
            let (stream, acker) = match opened {
                Ok(opened) => opened,
                Err(status) if status.code() == Code::InvalidArgument => {
                    stopper.abort();
                    return Err(status.into());
                }
                Err(status) => {
                    debug!(%status, ?wait, "cannot open the job stream; retrying");
                    tokio::select! {
                        _ = stopping.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            wait = Duration::from_millis(100);
            self.serve(stream, acker, &stopping).await;
        }
        stopper.abort();
        Ok(())
    }

    /// Opens a worker stream in the worker's protocol.
    async fn open(&self) -> Result<(IncomingStream, Acker), Status> {
        let mut raw = self.client.raw();
        let labels = HashMap::from([("client".to_owned(), "rust".to_owned())]);
        match self.protocol {
            Protocol::Unary => {
                let request = proto::GetJobRequest {
                    worker_id: self.worker_id.clone(),
                    labels,
                    queues: self.queues.clone(),
                    max_in_flight: self.concurrency,
                };
                let stream = raw.get_job(request).await?.into_inner();
                let incoming = stream.map(|m| m.map(|m| m.message.map_or(Incoming::Ping, Incoming::from_job_stream)));
                Ok((Box::pin(incoming), Acker::Unary(raw)))
            }
            Protocol::Work => {
                let open = proto::WorkOpen {
                    worker_id: self.worker_id.clone(),
                    labels,
                    queues: self.queues.clone(),
                    max_in_flight: self.concurrency,
                    prefetch: self.prefetch,
                };
                let (outbox, requests) = Outbox::open(open, self.prefetch > 0);
                let stream = raw.work(requests).await?.into_inner();
                let incoming = stream.map(|m| m.map(|m| m.message.map_or(Incoming::Ping, Incoming::from_work_stream)));
                Ok((Box::pin(incoming), Acker::Stream(outbox)))
            }
        }
    }

    /// Serves one stream until it ends, drains, or the worker stops with nothing running.
    async fn serve(&self, mut stream: IncomingStream, acker: Acker, stopping: &CancellationToken) {
        // Each job's task ends with the ack it leaves for this loop to send (see `run_one`).
        let mut running: JoinSet<Option<Ack>> = JoinSet::new();
        // The running jobs by id (their token and abort handle, for revokes), and by task.
        let mut aborts: foldhash::HashMap<String, (String, AbortHandle)> = Default::default();
        let mut job_of_task: foldhash::HashMap<tokio::task::Id, String> = Default::default();
        // A job runs once it holds a slot; prefetched jobs wait for one in delivery order.
        let slots = Arc::new(Semaphore::new(usize::try_from(self.concurrency).unwrap_or(usize::MAX)));
        // Cancelled on stop and on drain: jobs that have not started are handed back.
        let leaving = stopping.child_token();
        let mut draining = false;
        loop {
            if (draining || stopping.is_cancelled()) && running.is_empty() && acker.unsettled() == 0 {
                return;
            }
            tokio::select! {
                message = stream.next() => {
                    let Some(Ok(message)) = message else {
                        // The server already gave back what this stream held.
                        running.abort_all();
                        return;
                    };
                    match message {
                        Incoming::Jobs(jobs) => {
                            for job in jobs {
                                if leaving.is_cancelled() {
                                    running.spawn(without_ack(hand_back(acker.clone(), job)));
                                    continue;
                                }
                                let id = job.id.clone();
                                let token = job.lease_token.clone();
                                let start = Start { acker: acker.clone(), slots: slots.clone(), leaving: leaving.clone() };
                                let abort = running.spawn(self.run_one(job, start));
                                job_of_task.insert(abort.id(), id.clone());
                                aborts.insert(id, (token, abort));
                            }
                        }
                        Incoming::Revoke(r) => {
                            if let Some((token, abort)) = aborts.remove(&r.job_id) {
                                if token == r.lease_token {
                                    debug!(job_id = %r.job_id, "job revoked");
                                    abort.abort();
                                    // Answering gives the stream its credit back; the server
                                    // refuses the stale ack itself (or, if cancelled, records it).
                                    running.spawn(without_ack(answer_revoke(acker.clone(), r.job_id, token)));
                                } else {
                                    aborts.insert(r.job_id, (token, abort));
                                }
                            }
                        }
                        Incoming::Drain => {
                            draining = true;
                            leaving.cancel();
                        }
                        Incoming::Answers(answers) => acker.answered(answers),
                        Incoming::Ping => {}
                    }
                }
                Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                    // The acks of every job done by now go out together, in one message.
                    let mut acks = Vec::new();
                    let mut finished = |done: Result<(tokio::task::Id, Option<Ack>), tokio::task::JoinError>| {
                        let task = match done {
                            Ok((task, ack)) => {
                                acks.extend(ack);
                                task
                            }
                            Err(e) => e.id(),
                        };
                        if let Some(job_id) = job_of_task.remove(&task)
                            && aborts.get(&job_id).is_some_and(|(_, abort)| abort.id() == task)
                        {
                            aborts.remove(&job_id);
                        }
                    };
                    finished(done);
                    while let Some(done) = running.try_join_next_with_id() {
                        finished(done);
                    }
                    acker.send_all(acks);
                }
                _ = stopping.cancelled(), if !stopping.is_cancelled() => {}
            }
        }
    }

    /// Waits for a handler slot (handing the job back instead when the worker leaves first),
    /// runs the handler and acks its outcome: on a Work stream an ack whose answer nobody acts
    /// on is returned, for `serve` to send with those of the other jobs done at the same time
    /// (one message, and no wake-up of the sending side per job). Aborted on revoke.
    fn run_one(&self, job: proto::Job, start: Start) -> impl Future<Output = Option<Ack>> + Send + 'static {
        let handler = self.handlers.get(&job.r#type).or(self.fallback.as_ref()).cloned();
        let trace = TraceContext::from_headers(job.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let span = tracing::info_span!(
            "job",
            job_id = %job.id,
            job_type = %job.r#type,
            attempt = job.attempt,
            trace_id = Empty,
            parent_span_id = Empty
        );
        traceparent::record(&span, trace.as_ref());
        let job_run = async move {
            let Start { acker, slots, leaving } = start;
            // Leaving comes first: once the worker stops or drains, a job that has not started
            // is handed back even if a slot frees at the same moment.
            let slot = tokio::select! {
                biased;
                _ = leaving.cancelled() => {
                    hand_back(acker, job).await;
                    return None;
                }
                slot = slots.acquire_owned() => slot,
            };
            let Ok(slot) = slot else { return None };
            acker.started(&job.lease_token);
            let (job_id, token) = (job.id.clone(), job.lease_token.clone());
            let version = job.session.as_ref().map(|s| s.version);
            let new_state = Arc::new(std::sync::Mutex::new(None));
            let outcome = match handler {
                Some(handler) => {
                    let context = JobContext { job, acker: acker.clone(), new_session_state: new_state.clone() };
                    let mut running = std::pin::pin!(handler(context));
                    // A handler that returns at once has its `started` mark go out with its ack.
                    match futures::poll!(running.as_mut()) {
                        std::task::Poll::Ready(outcome) => outcome,
                        std::task::Poll::Pending => {
                            acker.flush();
                            running.await
                        }
                    }
                }
                None => Err(JobError::retry(format!("no handler for job type {:?} on this worker", job.r#type))),
            };
            drop(slot);
            let session_state = new_state.lock().unwrap_or_else(|e| e.into_inner()).take();
            let failure = match outcome {
                Ok(result) if session_state.is_none() => {
                    let req = proto::CompleteJobRequest { job_id, lease_token: token, result, ..Default::default() };
                    return acker.settle(Ack::Complete(req), trace.as_ref()).await;
                }
                // A new session state may be refused (the session changed): that answer matters.
                Ok(result) => {
                    let req = proto::CompleteJobRequest {
                        job_id: job_id.clone(),
                        lease_token: token.clone(),
                        result,
                        expected_session_version: version,
                        session_state,
                    };
                    match until_answered(|| acker.complete(req.clone(), trace.as_ref())).await {
                        Ok(()) => return None,
                        Err(status) if status.code() == Code::Aborted => {
                            JobError::retry("the session changed while the job ran")
                        }
                        Err(status) => {
                            warn!(%job_id, %status, "ack failed");
                            return None;
                        }
                    }
                }
                Err(e) => e,
            };
            if let (Some(hold_key), Some(wait)) = (failure.rate_limited, failure.retry_after) {
                let req = proto::ReturnJobRequest {
                    job_id,
                    lease_token: token,
                    retry_after: Some(super::duration(wait)),
                    hold_key,
                    ..Default::default()
                };
                return acker.settle(Ack::GiveBack(req), trace.as_ref()).await;
            }
            let req = proto::FailJobRequest {
                job_id,
                lease_token: token,
                error: failure.message,
                retryable: Some(failure.retryable),
                retry_after: failure.retry_after.map(super::duration),
            };
            acker.settle(Ack::Fail(req), trace.as_ref()).await
        };
        job_run.instrument(span)
    }
}

/// A task of `serve` that leaves no ack behind.
async fn without_ack(task: impl Future<Output = ()>) -> Option<Ack> {
    task.await;
    None
}

/// What a delivered job needs to start: where its acks go, the handler slots, and the signal
/// that the worker is leaving (stop or drain).
struct Start {
    acker: Acker,
    slots: Arc<Semaphore>,
    leaving: CancellationToken,
}

impl Incoming {
    fn from_job_stream(message: get_job_response::Message) -> Self {
        use get_job_response::Message;
        match message {
            Message::Job(job) => Self::Jobs(vec![job]),
            Message::Revoke(revoke) => Self::Revoke(revoke),
            Message::Drain(_) => Self::Drain,
            Message::Ping(_) => Self::Ping,
        }
    }

    fn from_work_stream(message: work_response::Message) -> Self {
        use work_response::Message;
        match message {
            Message::Jobs(jobs) => Self::Jobs(jobs.jobs),
            Message::Revoke(revoke) => Self::Revoke(revoke),
            Message::Drain(_) => Self::Drain,
            Message::Answers(answers) => Self::Answers(answers.answers),
            Message::Ping(_) => Self::Ping,
        }
    }
}
