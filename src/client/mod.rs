//! A typed Rust client for jobwire: a producer ([`Client`]) and a worker ([`Worker`]).
//! The CLI, the benchmark and the tests use it; it speaks only the public gRPC contract.
//! [`listings`] holds the operators' calls (filtered listings, bulk actions, dead-letter groups,
//! activity).
//!
//! ```no_run
//! # async fn demo() -> Result<(), jobwire::client::ClientError> {
//! use jobwire::client::{Client, NewJob};
//! let client = Client::connect("http://127.0.0.1:50051").await?;
//! // A server with --auth-tokens needs a token: `.with_token(&std::env::var("JOBWIRE_TOKEN")?)?`.
//! let id = client.add(NewJob::new("emails", "welcome").json(&serde_json::json!({"to": "a@b.c"}))).await?;
//! let result = client.wait_for_result(&id, std::time::Duration::from_secs(30)).await?;
//! # Ok(()) }
//! ```
//!
//! Over TLS (a server started with `--tls-cert`), with the CA that signed its certificate and,
//! when it asks for one (`--tls-client-ca`), a client certificate:
//!
//! ```no_run
//! # async fn demo(ca: Vec<u8>, cert: Vec<u8>, key: Vec<u8>) -> Result<(), jobwire::client::ClientError> {
//! use jobwire::client::{Client, Tls};
//! let tls = Tls::new().ca_certificate(ca).client_certificate(cert, key);
//! let client = Client::connect_tls("jobwire.internal:50051", &tls).await?;
//! # Ok(()) }
//! ```

mod adds;
pub mod listings;
mod schedules;
mod tls;
mod worker;

use std::{sync::Arc, time::Duration};

use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

use adds::AddLane;

use crate::{
    proto::{self, queue_service_client::QueueServiceClient, session_service_client::SessionServiceClient},
    telemetry::{TraceContext, traceparent},
};
pub use schedules::NewSchedule;
pub use tls::{Tls, endpoint};
pub use worker::{JobContext, JobError, Protocol, Worker};

/// What a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection to the server could be made.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address as given to [`Client::connect`].
        addr: String,
        /// The transport's reason.
        source: tonic::transport::Error,
    },
    /// The server answered with a status other than OK (an invalid address is reported here
    /// too, as INVALID_ARGUMENT).
    #[error("{0}")]
    Rpc(#[from] tonic::Status),
    /// A JSON value the caller asked for (a session's state) does not parse.
    #[error("payload is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The awaited job went dead: its attempts ran out or a handler failed it for good.
    #[error("job {job_id} is dead: {error}")]
    Dead {
        /// The job.
        job_id: String,
        /// The error of its last attempt.
        error: String,
    },
    /// The awaited job (its id here) was cancelled.
    #[error("job {0} was cancelled")]
    Cancelled(String),
    /// The awaited job (its id here) did not finish within the wait.
    #[error("no result for job {0} within the wait")]
    Timeout(String),
}

/// A job to add, built fluently. Unset options take the server's defaults.
///
/// Every job starts with a fresh W3C `traceparent` header (a new trace), so each one can be
/// followed through the server's and the worker's spans; [`NewJob::traceparent`] puts it in
/// the caller's trace instead, and [`NewJob::untraced`] drops it.
#[derive(Clone, Debug)]
pub struct NewJob(proto::AddJobRequest);

/// A duration on the wire; one past the wire's range (about 292 billion years) is sent as the
/// longest the wire holds.
fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap_or(prost_types::Duration { seconds: i64::MAX, nanos: 999_999_999 })
}

impl NewJob {
    /// A job of `job_type` (the handler name) for `queue`, with an empty payload.
    pub fn new(queue: &str, job_type: &str) -> Self {
        let mut req = proto::AddJobRequest { queue: queue.into(), r#type: job_type.into(), ..Default::default() };
        req.headers.insert(traceparent::HEADER.into(), TraceContext::generate().to_header());
        Self(req)
    }

    /// Continues the caller's trace: `traceparent` is the W3C header of the caller's current
    /// span (`00-<trace id>-<span id>-<flags>`). A value that is not a valid traceparent is
    /// ignored (with a warning) and the job keeps its own fresh trace.
    pub fn traceparent(mut self, traceparent: &str) -> Self {
        match TraceContext::parse(traceparent) {
            Some(trace) => {
                self.0.headers.insert(traceparent::HEADER.into(), trace.to_header());
            }
            None => tracing::warn!(traceparent, "not a valid W3C traceparent; the job keeps its own trace"),
        }
        self
    }

    /// Sends no `traceparent`: for jobs where ~70 bytes of Redis memory each matter more than
    /// tracing them.
    pub fn untraced(mut self) -> Self {
        self.0.headers.remove(traceparent::HEADER);
        self
    }

    /// The payload, as opaque bytes (JSON by convention).
    pub fn payload(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.0.payload = bytes.into();
        self
    }

    /// The payload as serialized JSON.
    pub fn json(self, value: &serde_json::Value) -> Self {
        self.payload(value.to_string())
    }

    /// Adds (or replaces) a header the worker sees with the job.
    pub fn header(mut self, key: &str, value: &str) -> Self {
        self.0.headers.insert(key.into(), value.into());
        self
    }

    /// Priority from -5 to 5 (default 0); higher runs first, FIFO within one level.
    pub fn priority(mut self, priority: i32) -> Self {
        self.0.priority = priority;
        self
    }

    /// Runs the job no earlier than `delay` from when the server accepts it.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.0.schedule = Some(proto::add_job_request::Schedule::Delay(duration(delay)));
        self
    }

    /// The key whose rate limit (the queue's `key_rate`) the job counts against: a customer,
    /// an API host... 1 to 128 bytes, no control characters.
    pub fn rate_key(mut self, key: &str) -> Self {
        self.0.rate_key = key.into();
        self
    }

    /// The key whose concurrency cap (the queue's `key_concurrency`) the job counts against.
    pub fn concurrency_key(mut self, key: &str) -> Self {
        self.0.concurrency_key = key.into();
        self
    }

    /// Attempts before the job goes dead.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.0.max_attempts = Some(attempts);
        self
    }

    /// Per-attempt timeout: an attempt running longer is revoked and counts as failed.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.0.timeout = Some(duration(timeout));
        self
    }

    /// Waits exactly `wait` before each retry, instead of the default exponential backoff.
    pub fn fixed_backoff(mut self, wait: Duration) -> Self {
        self.0.backoff = Some(proto::Backoff {
            kind: proto::BackoffKind::Fixed as i32,
            base: Some(duration(wait)),
            ..Default::default()
        });
        self
    }

    /// A repeat add with the same key within the queue's idempotency window adds nothing and
    /// returns the first job's id.
    pub fn idempotency_key(mut self, key: &str) -> Self {
        self.0.idempotency_key = key.into();
        self.0.idempotency_key_generated = false;
        self
    }

    /// Gives the job a key of the client's own (a fresh ULID), marked as generated, so that
    /// retries of this add never add it twice while the server remembers the key only for its
    /// retry window (`--idempotency-retry-window`), not the idempotency window of a key the
    /// caller chose. [`Client::add`] does this to a job that has no key.
    pub fn generated_idempotency_key(mut self) -> Self {
        self.0.idempotency_key = ulid::Ulid::new().to_string();
        self.0.idempotency_key_generated = true;
        self
    }

    /// Runs the job in a session (`<queue>/<name>`).
    pub fn session(mut self, session_id: &str) -> Self {
        self.0.session_id = session_id.into();
        self
    }

    /// The `AddJob` request this builds, for the generated client or a batch.
    pub fn into_request(self) -> proto::AddJobRequest {
        self.0
    }
}

/// Sends `authorization: Bearer <token>` with every call once the client has a token
/// ([`Client::with_token`]). The value is marked sensitive: HTTP/2 never indexes it, and its
/// `Debug` shows no token.
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Bearer(..)" } else { "Bearer(none)" })
    }
}

/// What the generated clients of a [`Client`] send their calls through: its channel, with its
/// token.
pub type Transport = InterceptedService<Channel, Bearer>;

/// The producer side, and reads. Cheap to clone; clones share one HTTP/2 connection and one
/// lane of single adds ([`Client::add`]: concurrent adds of a client and its clones share
/// calls). [`Client::with_token`] makes a client with a lane of its own.
#[derive(Clone)]
pub struct Client {
    inner: QueueServiceClient<Transport>,
    channel: Channel,
    bearer: Bearer,
    adds: Arc<AddLane>,
}

impl Client {
    /// Connects to the server at `addr`, a URI: `http://host:port`, or `https://host:port` for
    /// TLS trusting the system's roots; gives up after 5 s.
    pub async fn connect(addr: &str) -> Result<Self, ClientError> {
        Self::connect_endpoint(addr, endpoint(addr, None)?).await
    }

    /// Connects over TLS to the server at `addr` (`host:port` or `https://host:port`) with the
    /// given CA, client certificate and server name; gives up after 5 s.
    pub async fn connect_tls(addr: &str, tls: &Tls) -> Result<Self, ClientError> {
        Self::connect_endpoint(addr, endpoint(addr, Some(tls))?).await
    }

    async fn connect_endpoint(addr: &str, endpoint: tonic::transport::Endpoint) -> Result<Self, ClientError> {
        let channel = endpoint
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true)
            .connect()
            .await
            .map_err(|source| ClientError::Connect { addr: addr.to_owned(), source })?;
        Ok(Self::from_channel(channel))
    }

    /// A client over a channel the caller built (TLS, a custom connector); messages up to
    /// 64 MiB.
    pub fn from_channel(channel: Channel) -> Self {
        Self::over(channel, Bearer::default())
    }

    fn over(channel: Channel, bearer: Bearer) -> Self {
        let inner = QueueServiceClient::with_interceptor(channel.clone(), bearer.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let adds = Arc::new(AddLane::new(inner.clone()));
        Self { inner, channel, bearer, adds }
    }

    /// The same client sending `token` with every call (`authorization: Bearer <token>`), for a
    /// server with `--auth-tokens`; its clones and workers send it too. A token that cannot be
    /// a header value (not visible ASCII) is refused as INVALID_ARGUMENT, without repeating it.
    pub fn with_token(self, token: &str) -> Result<Self, ClientError> {
        let mut value = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| tonic::Status::invalid_argument("token: may only hold visible ASCII characters"))?;
        value.set_sensitive(true);
        Ok(Self::over(self.channel, Bearer(Some(value))))
    }

    /// The generated client, for calls this wrapper does not cover.
    pub fn raw(&self) -> QueueServiceClient<Transport> {
        self.inner.clone()
    }

    /// The generated client of the `SessionService`, for calls this wrapper does not cover.
    pub fn raw_sessions(&self) -> SessionServiceClient<Transport> {
        SessionServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    /// Adds one job and returns its id (the first job's, for a repeat of an idempotency key).
    /// `UNAVAILABLE`, and a call whose connection failed under it (a server killed mid-call),
    /// are retried a few times; the request gets an idempotency key first (if it had none:
    /// [`NewJob::generated_idempotency_key`]), so a retry can never add the job twice.
    ///
    /// Adds made while others of this client (or its clones) are in flight share calls: an
    /// add that finds no call in flight and none waiting goes at once as its own `AddJob`; the
    /// others are gathered and go together as one `AddJobs` (up to 1,000 jobs or 1 MiB, with at
    /// most 4 calls in flight), in the order they were made. Each add gets what `AddJob` would
    /// have answered it: its id, or its own error (INVALID_ARGUMENT naming its field,
    /// RESOURCE_EXHAUSTED for a queue at its cap, NOT_FOUND for a missing session...); a
    /// failure of the whole call (UNAVAILABLE once the retries are spent, RESOURCE_EXHAUSTED
    /// while Redis is full, UNAUTHENTICATED) reaches every add it carried, and one about the
    /// batch itself (an entry out of the token's scope, the server's batch limits) has each
    /// job sent alone instead. Two adds with the same key in one batch are a job and its
    /// duplicate, as two concurrent `AddJob`s are. Each job keeps its own `traceparent`.
    ///
    /// Dropping the future of an add does not touch the others'. Its own job is left out if it
    /// was still waiting, and may still be added if its call had gone out.
    pub async fn add(&self, job: NewJob) -> Result<String, ClientError> {
        let job = if job.0.idempotency_key.is_empty() { job.generated_idempotency_key() } else { job };
        Ok(self.adds.add(job.into_request()).await?.job_id)
    }

    /// Adds up to 1,000 jobs in one call; one result per job, in order.
    pub async fn add_many(&self, jobs: Vec<NewJob>) -> Result<Vec<proto::AddJobsResult>, ClientError> {
        let req = proto::AddJobsRequest { jobs: jobs.into_iter().map(NewJob::into_request).collect() };
        Ok(self.inner.clone().add_jobs(req).await?.into_inner().results)
    }

    /// Everything the server knows of one job.
    pub async fn info(&self, job_id: &str) -> Result<proto::JobInfo, ClientError> {
        let resp = self.inner.clone().get_job_info(proto::GetJobInfoRequest { job_id: job_id.into() }).await?;
        resp.into_inner().job.ok_or_else(|| tonic::Status::internal("empty answer").into())
    }

    /// The figures of one queue.
    pub async fn stats(&self, queue: &str) -> Result<proto::QueueStats, ClientError> {
        let resp = self.inner.clone().stats(proto::StatsRequest { queue: queue.into() }).await?;
        resp.into_inner().stats.ok_or_else(|| tonic::Status::internal("empty answer").into())
    }

    /// The figures of every queue the server knows.
    pub async fn list_queues(&self) -> Result<Vec<proto::QueueStats>, ClientError> {
        Ok(self.inner.clone().list_queues(proto::ListQueuesRequest {}).await?.into_inner().queues)
    }

    /// Waits until the job completes (its result) or dies or is cancelled (an error), for at
    /// most `limit`. Follows the job with WatchJob: no polling.
    pub async fn wait_for_result(&self, job_id: &str, limit: Duration) -> Result<Vec<u8>, ClientError> {
        let watch = async {
            let mut events =
                self.inner.clone().watch_job(proto::WatchJobRequest { job_id: job_id.into() }).await?.into_inner();
            while let Some(event) = events.message().await?.and_then(|message| message.event) {
                match event.r#type() {
                    proto::JobEventType::Completed => return Ok(event.result),
                    proto::JobEventType::Dead => {
                        return Err(ClientError::Dead { job_id: job_id.into(), error: event.error });
                    }
                    proto::JobEventType::Cancelled => return Err(ClientError::Cancelled(job_id.into())),
                    _ => {}
                }
            }
            Err(tonic::Status::unavailable("the watch ended before the job finished").into())
        };
        tokio::time::timeout(limit, watch).await.map_err(|_| ClientError::Timeout(job_id.into()))?
    }

    /// Adds a job and waits for its result.
    pub async fn run(&self, job: NewJob, limit: Duration) -> Result<Vec<u8>, ClientError> {
        let id = self.add(job).await?;
        self.wait_for_result(&id, limit).await
    }

    /// Cancels a job: a waiting or delayed one is removed; a running one is revoked and ends
    /// cancelled. A finished job gives FAILED_PRECONDITION.
    pub async fn cancel(&self, job_id: &str) -> Result<(), ClientError> {
        self.inner.clone().cancel_job(proto::CancelJobRequest { job_id: job_id.into() }).await?;
        Ok(())
    }

    /// Creates a session in `queue` (name generated when None) with an initial JSON state.
    pub async fn create_session(
        &self,
        queue: &str,
        name: Option<&str>,
        state: &serde_json::Value,
        max_concurrency: u32,
    ) -> Result<proto::Session, ClientError> {
        let req = proto::CreateSessionRequest {
            queue: queue.into(),
            name: name.unwrap_or_default().into(),
            state: state.to_string(),
            ttl: None,
            max_concurrency: Some(max_concurrency),
        };
        let resp = self.raw_sessions().create_session(req).await?.into_inner();
        resp.session.ok_or_else(|| tonic::Status::internal("empty answer").into())
    }

    /// One session: its state, version and job counts.
    pub async fn session(&self, session_id: &str) -> Result<proto::Session, ClientError> {
        let resp = self
            .raw_sessions()
            .get_session(proto::GetSessionRequest { session_id: session_id.into() })
            .await?
            .into_inner();
        resp.session.ok_or_else(|| tonic::Status::internal("empty answer").into())
    }

    /// The session's state, parsed.
    pub async fn session_state(&self, session_id: &str) -> Result<serde_json::Value, ClientError> {
        Ok(serde_json::from_str(&self.session(session_id).await?.state)?)
    }

    /// Applies a JSON merge patch to the session's state; returns the new version.
    pub async fn patch_session(&self, session_id: &str, patch: &serde_json::Value) -> Result<u64, ClientError> {
        let req = proto::UpdateSessionRequest {
            session_id: session_id.into(),
            update: Some(proto::update_session_request::Update::MergePatch(patch.to_string())),
            expected_version: None,
        };
        Ok(self.raw_sessions().update_session(req).await?.into_inner().version)
    }

    /// Replaces the session's state; with `expected_version`, only if the session is still at
    /// that version (FAILED_PRECONDITION otherwise, nothing written). Returns the new version.
    pub async fn update_session(
        &self,
        session_id: &str,
        state: &serde_json::Value,
        expected_version: Option<u64>,
    ) -> Result<u64, ClientError> {
        let req = proto::UpdateSessionRequest {
            session_id: session_id.into(),
            update: Some(proto::update_session_request::Update::State(state.to_string())),
            expected_version,
        };
        Ok(self.raw_sessions().update_session(req).await?.into_inner().version)
    }

    /// Follows every event of `queue` in order, from right after `cursor` (a [`proto::JobEvent`]'s
    /// `cursor`), or from the next event when it is empty. The stream ends with an error when
    /// the server goes away (resume from the last cursor seen), or OUT_OF_RANGE for a cursor
    /// older than the events the server keeps.
    pub async fn subscribe(
        &self,
        queue: &str,
        cursor: &str,
    ) -> Result<impl futures::Stream<Item = Result<proto::JobEvent, ClientError>> + Send + 'static, ClientError> {
        let req = proto::SubscribeRequest { queue: queue.into(), cursor: cursor.into() };
        let stream = self.inner.clone().subscribe(req).await?.into_inner();
        Ok(futures::StreamExt::filter_map(stream, |message| async move {
            match message {
                Ok(message) => message.event.map(Ok),
                Err(status) => Some(Err(status.into())),
            }
        }))
    }

    /// Deletes a session and its jobs not yet started.
    pub async fn delete_session(&self, session_id: &str) -> Result<(), ClientError> {
        self.raw_sessions().delete_session(proto::DeleteSessionRequest { session_id: session_id.into() }).await?;
        Ok(())
    }
}
