//! The worker side of the Rust client: one `GetJob` stream, handlers by job type, acks from the
//! handlers' results.
//!
//! - Concurrency is the stream's credit: the server never sends more than `concurrency` jobs at
//!   once, so there is no prefetch beyond it and no local queue.
//! - `revoke` aborts the handler and answers with a failure of that delivery, which gives the
//!   stream its credit back (the server refuses it as stale, or records it for a cancelled job);
//!   `drain` finishes what is running, then reconnects.
//! - A broken stream is reopened with backoff. Jobs running on it are aborted: the server has
//!   already given them back.
//! - An ack answered UNAVAILABLE (Redis away for a moment) is sent again until answered, for as
//!   long as the stream lives: dropped, it would leave the job leased to a live stream.
//! - Stopping finishes the running jobs and acks them; a job that arrives while stopping is
//!   handed back with `ReturnJob` (not a failed attempt, not a lost delivery).
//! - A handler runs inside a `job` span carrying the job's W3C trace context (`trace_id`,
//!   `parent_span_id`, from its `traceparent` header), and the ack sends that header as gRPC
//!   metadata, so the server's `job.complete`/`job.fail` spans join the trace on any instance.

use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc, time::Duration};

use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{Instrument, debug, field::Empty, warn};

use super::{Client, ClientError};
use crate::{
    proto::{self, get_job_response::Message, queue_service_client::QueueServiceClient},
    telemetry::{TraceContext, traceparent},
};

/// Why a handler failed, and whether to try again.
#[derive(Debug, Clone)]
pub struct JobError {
    /// The error recorded on the job (its `last_error`).
    pub message: String,
    /// False: the job goes dead now, whatever attempts remain.
    pub retryable: bool,
    /// The wait before the retry; None follows the job's backoff.
    pub retry_after: Option<Duration>,
}

impl JobError {
    /// Retry per the job's backoff (while attempts remain).
    pub fn retry(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: true, retry_after: None }
    }

    /// Do not retry: the job goes dead now.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: false, retry_after: None }
    }

    /// Retry after exactly `wait`.
    pub fn retry_after(message: impl Into<String>, wait: Duration) -> Self {
        Self { message: message.into(), retryable: true, retry_after: Some(wait) }
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
    client: QueueServiceClient<Channel>,
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
        self.client.clone().extend_lease(req).await?;
        Ok(())
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, JobError>> + Send>>;
type Handler = Arc<dyn Fn(JobContext) -> BoxFuture + Send + Sync>;

/// A worker: one `GetJob` stream over a [`Client`]'s connection, running the handler of each
/// job's type. Built fluently, then [`Worker::run`] until a stop future resolves.
pub struct Worker {
    client: Client,
    queues: Vec<String>,
    concurrency: u32,
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
            let request = proto::GetJobRequest {
                worker_id: self.worker_id.clone(),
                labels: HashMap::from([("client".to_owned(), "rust".to_owned())]),
                queues: self.queues.clone(),
                max_in_flight: self.concurrency,
            };
            // Opening may wait for a server that is restarting: a stop must not wait with it.
            let mut raw = self.client.raw();
            let opened = tokio::select! {
                _ = stopping.cancelled() => break,
                opened = raw.get_job(request) => opened,
            };
            let stream = match opened {
                Ok(s) => s.into_inner(),
                Err(status) if status.code() == tonic::Code::InvalidArgument => {
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
            self.serve(stream, &stopping).await;
        }
        stopper.abort();
        Ok(())
    }

    /// Serves one stream until it ends, drains, or the worker stops with nothing running.
    async fn serve(&self, mut stream: tonic::Streaming<proto::GetJobResponse>, stopping: &CancellationToken) {
        let mut running: JoinSet<()> = JoinSet::new();
        let mut aborts: HashMap<String, (String, AbortHandle)> = HashMap::new();
        let mut draining = false;
        loop {
            if (draining || stopping.is_cancelled()) && running.is_empty() {
                return;
            }
            tokio::select! {
                message = stream.message() => {
                    let message = match message {
                        Ok(Some(m)) => m.message,
                        Ok(None) | Err(_) => {
                            // The server already gave back what this stream held.
                            running.abort_all();
                            return;
                        }
                    };
                    match message {
                        Some(Message::Job(job)) if stopping.is_cancelled() || draining => self.hand_back(job).await,
                        Some(Message::Job(job)) => {
                            let id = job.id.clone();
                            let token = job.lease_token.clone();
                            let abort = running.spawn(self.run_one(job));
                            aborts.insert(id, (token, abort));
                        }
                        Some(Message::Revoke(r)) => {
                            if let Some((token, abort)) = aborts.remove(&r.job_id) {
                                if token == r.lease_token {
                                    debug!(job_id = %r.job_id, "job revoked");
                                    abort.abort();
                                    // Answering gives the stream its credit back; the server
                                    // refuses the stale ack itself (or, if cancelled, records it).
                                    running.spawn(answer_revoke(self.client.raw(), r.job_id, token));
                                } else {
                                    aborts.insert(r.job_id, (token, abort));
                                }
                            }
                        }
                        Some(Message::Drain(_)) => draining = true,
                        Some(Message::Ping(_)) | None => {}
                    }
                }
                Some(_) = running.join_next(), if !running.is_empty() => {
                    aborts.retain(|_, (_, abort)| !abort.is_finished());
                }
                _ = stopping.cancelled(), if !stopping.is_cancelled() => {}
            }
        }
    }

    /// Hands back a job that arrived while stopping or draining, and asks the server to send
    /// nothing more on this stream.
    async fn hand_back(&self, job: proto::Job) {
        let req = proto::ReturnJobRequest { job_id: job.id.clone(), lease_token: job.lease_token, stop_stream: true };
        if let Err(status) = self.client.raw().return_job(req).await {
            warn!(job_id = %job.id, %status, "could not hand a job back");
        }
    }

    /// Runs the handler and acks its outcome. Aborted on revoke.
    fn run_one(&self, job: proto::Job) -> impl Future<Output = ()> + Send + 'static {
        let handler = self.handlers.get(&job.r#type).or(self.fallback.as_ref()).cloned();
        let client = self.client.raw();
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
            let (job_id, token) = (job.id.clone(), job.lease_token.clone());
            let version = job.session.as_ref().map(|s| s.version);
            let new_state = Arc::new(std::sync::Mutex::new(None));
            let outcome = match handler {
                Some(handler) => {
                    handler(JobContext { job, client: client.clone(), new_session_state: new_state.clone() }).await
                }
                None => Err(JobError::retry(format!("no handler for job type {:?} on this worker", job.r#type))),
            };
            let session_state = new_state.lock().unwrap_or_else(|e| e.into_inner()).take();
            let completed = match outcome {
                Ok(result) => {
                    let req = proto::CompleteJobRequest {
                        job_id: job_id.clone(),
                        lease_token: token.clone(),
                        result,
                        expected_session_version: session_state.as_ref().and(version),
                        session_state,
                    };
                    let complete = || {
                        let (mut client, req) = (client.clone(), traced(req.clone(), trace.as_ref()));
                        async move { client.complete_job(req).await }
                    };
                    match until_answered(complete).await {
                        Err(status) if status.code() == tonic::Code::Aborted => {
                            Err(JobError::retry("the session changed while the job ran"))
                        }
                        other => Ok(other.map(|_| ())),
                    }
                }
                Err(e) => Err(e),
            };
            let acked = match completed {
                Ok(acked) => acked,
                Err(e) => {
                    let req = proto::FailJobRequest {
                        job_id: job_id.clone(),
                        lease_token: token,
                        error: e.message,
                        retryable: Some(e.retryable),
                        retry_after: e.retry_after.map(super::duration),
                    };
                    let fail = || {
                        let (mut client, req) = (client.clone(), traced(req.clone(), trace.as_ref()));
                        async move { client.fail_job(req).await }
                    };
                    until_answered(fail).await.map(|_| ())
                }
            };
            if let Err(status) = acked {
                warn!(%job_id, %status, "ack failed");
            }
        };
        job_run.instrument(span)
    }
}

/// Sends an ack again while the answer is UNAVAILABLE (Redis or the server away for a moment),
/// waiting 50 ms doubling to 1 s between tries: a dropped ack would leave the job leased to this
/// stream, which lives on, until the job's timeout. The retries end with the stream: its jobs'
/// tasks are aborted then, the server having given the jobs back.
async fn until_answered<T, Fut>(mut send: impl FnMut() -> Fut) -> Result<T, tonic::Status>
where
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let mut wait = Duration::from_millis(50);
    loop {
        match send().await {
            Err(status) if status.code() == tonic::Code::Unavailable => {
                debug!(%status, ?wait, "ack not answered; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(1));
            }
            answered => return answered,
        }
    }
}

/// An ack request carrying the job's trace context as `traceparent` metadata.
fn traced<T>(message: T, trace: Option<&TraceContext>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = trace.and_then(|t| tonic::metadata::MetadataValue::try_from(t.to_header()).ok()) {
        request.metadata_mut().insert(traceparent::HEADER, value);
    }
    request
}

/// Answers a revoke with a failure report for the revoked delivery.
async fn answer_revoke(mut client: QueueServiceClient<Channel>, job_id: String, lease_token: String) {
    let req = proto::FailJobRequest {
        job_id,
        lease_token,
        error: "revoked".into(),
        retryable: Some(true),
        retry_after: None,
    };
    let _ = client.fail_job(req).await;
}
