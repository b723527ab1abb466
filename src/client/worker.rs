//! The worker side of the Rust client: one `GetJob` stream, handlers by job type, acks from the
//! handlers' results.
//!
//! - Concurrency is the stream's credit: the server never sends more than `concurrency` jobs at
//!   once, so there is no prefetch beyond it and no local queue.
//! - `revoke` aborts the handler (no ack); `drain` finishes what is running, then reconnects.
//! - A broken stream is reopened with backoff. Jobs running on it are aborted: the server has
//!   already given them back.
//! - Stopping finishes the running jobs and acks them; a job that arrives while stopping is
//!   handed back with `ReturnJob` (not a failed attempt, not a lost delivery).

use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc, time::Duration};

use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{debug, warn};

use super::{Client, ClientError};
use crate::proto::{self, get_job_response::Message, queue_service_client::QueueServiceClient};

/// Why a handler failed, and whether to try again.
#[derive(Debug, Clone)]
pub struct JobError {
    pub message: String,
    pub retryable: bool,
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
    pub job: proto::Job,
    client: QueueServiceClient<Channel>,
}

impl JobContext {
    pub fn id(&self) -> &str {
        &self.job.id
    }

    pub fn payload(&self) -> &[u8] {
        &self.job.payload
    }

    /// The payload parsed as JSON; a payload that does not parse fails the job permanently.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, JobError> {
        serde_json::from_slice(&self.job.payload)
            .map_err(|e| JobError::permanent(format!("payload is not the expected JSON: {e}")))
    }

    pub fn attempt(&self) -> u32 {
        self.job.attempt
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

pub struct Worker {
    client: Client,
    queues: Vec<String>,
    concurrency: u32,
    worker_id: String,
    handlers: HashMap<String, Handler>,
}

impl Worker {
    pub fn new(client: Client, queues: &[&str]) -> Self {
        Self {
            client,
            queues: queues.iter().map(|q| q.to_string()).collect(),
            concurrency: 1,
            worker_id: format!("rust-{}", std::process::id()),
            handlers: HashMap::new(),
        }
    }

    /// Jobs run at once (the stream's credit). Default 1.
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = n.max(1);
        self
    }

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
            let opened = self.client.raw().get_job(request).await;
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
        let handler = self.handlers.get(&job.r#type).cloned();
        let mut client = self.client.raw();
        async move {
            let (job_id, token) = (job.id.clone(), job.lease_token.clone());
            let outcome = match handler {
                Some(handler) => handler(JobContext { job, client: client.clone() }).await,
                None => Err(JobError::retry(format!("no handler for job type {:?} on this worker", job.r#type))),
            };
            let acked = match outcome {
                Ok(result) => client
                    .complete_job(proto::CompleteJobRequest {
                        job_id: job_id.clone(),
                        lease_token: token,
                        result,
                        ..Default::default()
                    })
                    .await
                    .map(|_| ()),
                Err(e) => client
                    .fail_job(proto::FailJobRequest {
                        job_id: job_id.clone(),
                        lease_token: token,
                        error: e.message,
                        retryable: Some(e.retryable),
                        retry_after: e.retry_after.map(super::duration),
                    })
                    .await
                    .map(|_| ()),
            };
            if let Err(status) = acked {
                warn!(%job_id, %status, "ack failed");
            }
        }
    }
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
