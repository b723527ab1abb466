//! A typed Rust client for jobwire: a producer ([`Client`]) and a worker ([`Worker`]).
//! The CLI, the benchmark and the tests use it; it speaks only the public gRPC contract.
//!
//! ```no_run
//! # async fn demo() -> Result<(), jobwire::client::ClientError> {
//! use jobwire::client::{Client, NewJob};
//! let client = Client::connect("http://127.0.0.1:50051").await?;
//! let id = client.add(NewJob::new("emails", "welcome").json(&serde_json::json!({"to": "a@b.c"}))).await?;
//! let result = client.wait_for_result(&id, std::time::Duration::from_secs(30)).await?;
//! # Ok(()) }
//! ```

mod worker;

use std::time::Duration;

use tonic::{Code, transport::Channel};

use crate::proto::{self, queue_service_client::QueueServiceClient};
pub use worker::{JobContext, JobError, Worker};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: tonic::transport::Error },
    #[error("{0}")]
    Rpc(#[from] tonic::Status),
    #[error("payload is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("job {job_id} is dead: {error}")]
    Dead { job_id: String, error: String },
    #[error("no result for job {0} within the wait")]
    Timeout(String),
}

/// A job to add, built fluently. Unset options take the server's defaults.
#[derive(Clone, Debug)]
pub struct NewJob(proto::AddJobRequest);

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

impl NewJob {
    pub fn new(queue: &str, job_type: &str) -> Self {
        Self(proto::AddJobRequest { queue: queue.into(), r#type: job_type.into(), ..Default::default() })
    }

    pub fn payload(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.0.payload = bytes.into();
        self
    }

    pub fn json(self, value: &serde_json::Value) -> Self {
        self.payload(value.to_string())
    }

    pub fn header(mut self, key: &str, value: &str) -> Self {
        self.0.headers.insert(key.into(), value.into());
        self
    }

    pub fn priority(mut self, priority: i32) -> Self {
        self.0.priority = priority;
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.0.schedule = Some(proto::add_job_request::Schedule::Delay(duration(delay)));
        self
    }

    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.0.max_attempts = Some(attempts);
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.0.timeout = Some(duration(timeout));
        self
    }

    pub fn fixed_backoff(mut self, wait: Duration) -> Self {
        self.0.backoff = Some(proto::Backoff {
            kind: proto::BackoffKind::Fixed as i32,
            base: Some(duration(wait)),
            ..Default::default()
        });
        self
    }

    pub fn idempotency_key(mut self, key: &str) -> Self {
        self.0.idempotency_key = key.into();
        self
    }

    pub fn into_request(self) -> proto::AddJobRequest {
        self.0
    }
}

/// The producer side, and reads. Cheap to clone; clones share one HTTP/2 connection.
#[derive(Clone)]
pub struct Client {
    inner: QueueServiceClient<Channel>,
}

impl Client {
    pub async fn connect(addr: &str) -> Result<Self, ClientError> {
        let channel = Channel::from_shared(addr.to_owned())
            .map_err(|_| tonic::Status::invalid_argument(format!("address: {addr} is not a URI")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true)
            .connect()
            .await
            .map_err(|source| ClientError::Connect { addr: addr.to_owned(), source })?;
        Ok(Self::from_channel(channel))
    }

    pub fn from_channel(channel: Channel) -> Self {
        let inner =
            QueueServiceClient::new(channel).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20);
        Self { inner }
    }

    /// The generated client, for calls this wrapper does not cover.
    pub fn raw(&self) -> QueueServiceClient<Channel> {
        self.inner.clone()
    }

    /// Adds one job and returns its id. `UNAVAILABLE` is retried a few times; the request gets
    /// an idempotency key first (if it had none), so a retry can never add the job twice.
    pub async fn add(&self, job: NewJob) -> Result<String, ClientError> {
        let mut req = job.into_request();
        if req.idempotency_key.is_empty() {
            req.idempotency_key = format!("auto-{}", ulid::Ulid::new());
        }
        let mut wait = Duration::from_millis(100);
        for attempt in 1.. {
            match self.inner.clone().add_job(req.clone()).await {
                Ok(resp) => return Ok(resp.into_inner().job_id),
                Err(status) if status.code() == Code::Unavailable && attempt < 5 => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(status) => return Err(status.into()),
            }
        }
        unreachable!("the loop returns")
    }

    /// Adds up to 1,000 jobs in one call; one result per job, in order.
    pub async fn add_many(&self, jobs: Vec<NewJob>) -> Result<Vec<proto::AddJobsResult>, ClientError> {
        let req = proto::AddJobsRequest { jobs: jobs.into_iter().map(NewJob::into_request).collect() };
        Ok(self.inner.clone().add_jobs(req).await?.into_inner().results)
    }

    pub async fn info(&self, job_id: &str) -> Result<proto::JobInfo, ClientError> {
        let resp = self.inner.clone().get_job_info(proto::GetJobInfoRequest { job_id: job_id.into() }).await?;
        resp.into_inner().job.ok_or_else(|| tonic::Status::internal("empty answer").into())
    }

    pub async fn stats(&self, queue: &str) -> Result<proto::QueueStats, ClientError> {
        let resp = self.inner.clone().stats(proto::StatsRequest { queue: queue.into() }).await?;
        resp.into_inner().stats.ok_or_else(|| tonic::Status::internal("empty answer").into())
    }

    pub async fn list_queues(&self) -> Result<Vec<proto::QueueStats>, ClientError> {
        Ok(self.inner.clone().list_queues(proto::ListQueuesRequest {}).await?.into_inner().queues)
    }

    /// Waits until the job completes (its result) or dies (an error), for at most `limit`.
    pub async fn wait_for_result(&self, job_id: &str, limit: Duration) -> Result<Vec<u8>, ClientError> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut wait = Duration::from_millis(5);
        loop {
            let info = self.info(job_id).await?;
            match info.state() {
                proto::JobState::Completed => return Ok(info.result),
                proto::JobState::Dead => {
                    return Err(ClientError::Dead { job_id: job_id.into(), error: info.last_error });
                }
                _ => {}
            }
            if tokio::time::Instant::now() + wait > deadline {
                return Err(ClientError::Timeout(job_id.into()));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(200));
        }
    }
}
