//! The job state machine and dispatch, independent of any transport.
//!
//! A job moves waiting -> active (leased to one worker stream) -> completed, or on failure
//! -> retrying (backoff) -> waiting again, until it is dead. Every transition is one store
//! script; this layer decides who may ask for which transition (validation, lease tokens) and
//! runs the background work of one instance:
//! - one dispatcher task per queue that has a stream here (`dispatch.rs`),
//! - the liveness loop: heartbeat, and reaping the leases of instances that stopped
//!   heartbeating (`liveness.rs`),
//! - the notice listener on the shared pub/sub connection, and reconciliation of this
//!   instance's view of its leases against Redis (`notices.rs`),
//! - one event tailer per queue followed here by WatchJob or Subscribe (`events.rs`),
//! - with metrics on, the refresh of the per-queue gauges from Redis (`gauges.rs`).
//!
//! Sessions (`sessions.rs`) and job administration (`admin.rs`) are further transitions of the
//! same kind. Concurrent adds and acks of one queue share script calls (`coalesce.rs`).
//!
//! Every spawned task watches `shutdown` and is tracked, so `Engine::shutdown` ends them all.
//!
//! Instrumentation: each transition counts in the queue's metrics (`crate::telemetry`; no-ops
//! while metrics are off) and runs in a span (`job.add`, `job.complete`, `job.fail`; delivery
//! is in `dispatch.rs`) carrying the job's W3C trace context.

mod admin;
mod coalesce;
mod dispatch;
mod events;
mod gauges;
mod hub;
mod job;
mod liveness;
mod notices;
mod sessions;

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use tokio::sync::{mpsc, watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, field::Empty, info, warn};

use crate::{
    store::{Ack, AckOutcome, AddArgs, AddOutcome, LeaseCheck, RecordState, Store, StoreError},
    telemetry::{self, SPAN_TARGET, TraceContext, traceparent},
};
pub use admin::WorkerView;
pub use events::{EventKind, EventView};
pub use hub::{RevokeReason, StreamEvent, StreamInfo, WorkerSpec};
pub use job::{
    Added, BackoffRequest, Delivery, JobId, JobState, JobView, MAX_RETRY_WAIT, MAX_TIMEOUT, NewJob, Schedule, from_ms,
    to_ms, validate_queue,
};
pub use sessions::{SessionId, SessionUpdate, SessionView};

/// What can go wrong, in the vocabulary callers act on. The transport maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    StaleLease(String),
    #[error("{0}")]
    TooLarge(String),
    /// The job or queue is not in a state that allows this (e.g. cancelling a finished job).
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// A compare-and-set lost a race; nothing was written, the caller may retry.
    #[error("{0}")]
    Aborted(String),
    /// An event cursor points before what is still kept.
    #[error("{0}")]
    OutOfRange(String),
    #[error("redis is unavailable; retry later")]
    Unavailable,
    #[error("this server is shutting down; retry on another instance")]
    ShuttingDown,
    #[error("internal error")]
    Internal,
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid { field: field.into(), reason: reason.into() }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(detail) => {
                warn!(%detail, "redis unavailable");
                Error::Unavailable
            }
            other => {
                tracing::error!(error = %other, "store error");
                Error::Internal
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Sizes the server accepts.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_payload: usize,
    pub max_result: usize,
    pub max_error: usize,
    pub max_batch_jobs: usize,
    pub max_batch_bytes: usize,
    pub max_in_flight: u32,
    pub max_session_state: usize,
    pub max_progress: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload: 1 << 20,
            max_result: 1 << 20,
            max_error: 16 << 10,
            max_batch_jobs: 1_000,
            max_batch_bytes: 16 << 20,
            max_in_flight: 1_000,
            max_session_state: 256 << 10,
            max_progress: 64 << 10,
        }
    }
}

/// The behaviour knobs of one instance.
#[derive(Clone, Debug)]
pub struct Settings {
    pub limits: Limits,
    pub idempotency_window: Duration,
    /// An instance that has not heartbeated for this long is dead; its leases are reaped.
    pub lease_ttl: Duration,
    /// Lost deliveries after which a job goes dead with reason "lost".
    pub max_lost: u32,
    /// Dispatchers run at least this often even without a wake-up (pub/sub may drop messages).
    pub safety_poll: Duration,
    /// How often this instance checks its view of its leases against Redis.
    pub reconcile_every: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            idempotency_window: Duration::from_secs(24 * 3600),
            lease_ttl: Duration::from_secs(30),
            max_lost: 5,
            safety_poll: Duration::from_secs(5),
            reconcile_every: Duration::from_secs(5),
        }
    }
}

/// One jobwire instance's engine.
pub struct Engine {
    store: Arc<Store>,
    instance: String,
    hub: hub::Hub,
    settings: Settings,
    shutdown: CancellationToken,
    /// Ends the dispatchers; on shutdown it fires before leases are handed back, so that no
    /// lease round can complete after the hand-back.
    dispatch_stop: CancellationToken,
    dispatchers: TaskTracker,
    tasks: TaskTracker,
    /// Queues this instance has already put in the global registry.
    registered: Mutex<HashSet<String>>,
    redis_up: watch::Sender<bool>,
    events: events::EventHub,
    /// Concurrent adds and acks of one queue share script calls.
    adds: Arc<coalesce::Coalescer<Prepared, AddOutcome>>,
    acks: Arc<coalesce::Coalescer<OwnedAck, AckOutcome>>,
}

/// Keeps a worker stream registered; dropping it ends the stream and hands its unacknowledged
/// jobs back (as lost deliveries).
pub struct StreamGuard {
    engine: Arc<Engine>,
    id: u64,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let engine = self.engine.clone();
        let (held, orphaned) = engine.hub.close(self.id);
        drop(orphaned); // their dispatchers notice the queue has no stream and stop
        telemetry::set_worker_streams(engine.hub.stream_count());
        if held.is_empty() || engine.shutdown.is_cancelled() {
            // On shutdown, `Engine::shutdown` hands back everything still held.
            return;
        }
        engine.tasks.clone().spawn(async move {
            engine.give_back(held, true).await;
        });
    }
}

impl Engine {
    /// Starts an engine over `store` and its background tasks.
    pub fn start(store: Arc<Store>, settings: Settings) -> Arc<Self> {
        let instance = ulid::Ulid::new().to_string().to_lowercase()[10..].to_owned();
        let (redis_up, _) = watch::channel(false);
        let engine = Arc::new(Self {
            store,
            hub: hub::Hub::new(&instance),
            instance,
            settings,
            shutdown: CancellationToken::new(),
            dispatch_stop: CancellationToken::new(),
            dispatchers: TaskTracker::new(),
            tasks: TaskTracker::new(),
            registered: Mutex::new(HashSet::new()),
            redis_up,
            events: events::EventHub::default(),
            adds: Arc::default(),
            acks: Arc::default(),
        });
        info!(instance = %engine.instance, "engine started");
        engine.tasks.spawn(liveness::run(engine.clone()));
        engine.tasks.spawn(notices::listen(engine.clone()));
        engine.tasks.spawn(notices::reconcile(engine.clone()));
        engine
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Follows whether Redis answers (true) or not, as seen by the heartbeat.
    pub fn redis_up(&self) -> watch::Receiver<bool> {
        self.redis_up.subscribe()
    }

    fn check_open(&self) -> Result<()> {
        if self.shutdown.is_cancelled() { Err(Error::ShuttingDown) } else { Ok(()) }
    }

    async fn register(&self, queue: &str) -> Result<()> {
        let known = self.registered.lock().unwrap_or_else(|e| e.into_inner()).contains(queue);
        if !known {
            self.store.instances().register_queue(queue).await?;
            self.registered.lock().unwrap_or_else(|e| e.into_inner()).insert(queue.to_owned());
        }
        Ok(())
    }

    /// Adds one job, validated with field names prefixed by `field_prefix`, in a `job.add` span
    /// carrying the trace context of the job's `traceparent` header.
    pub async fn add(&self, job: NewJob, field_prefix: &str) -> Result<Added> {
        let span = add_span(&job.queue, &job.headers);
        let added = self.add_in_span(job, field_prefix).instrument(span.clone()).await?;
        span.record("job_id", tracing::field::display(&added.job_id));
        Ok(added)
    }

    async fn add_in_span(&self, job: NewJob, field_prefix: &str) -> Result<Added> {
        self.check_open()?;
        job.validate(&self.settings.limits, field_prefix)?;
        self.register(&job.queue).await?;
        let queue = job.queue.clone();
        let prepared = Prepared::new(job);
        let session = prepared.session.clone();
        let window = self.settings.idempotency_window;
        let (store, lane) = (self.store.clone(), queue.clone());
        let run = move |items: Vec<Prepared>| {
            let (store, lane) = (store.clone(), lane.clone());
            async move {
                let args: Vec<AddArgs> = items.iter().map(|p| p.args(window)).collect();
                store.jobs().add_many(&lane, &args).await
            }
        };
        let outcome = self.adds.submit(&queue, prepared, run).await?;
        let Added { job_id, duplicate } = added(&queue, outcome, session.as_ref(), field_prefix)?;
        if !duplicate {
            self.hub.wake(&queue);
            if let Some(m) = telemetry::queue(&queue) {
                m.added.increment(1);
            }
        }
        Ok(Added { job_id, duplicate })
    }

    /// Adds many jobs, each on its own; the batch as a whole is checked against the caps first.
    pub async fn add_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Result<Added>>> {
        self.check_open()?;
        let limits = &self.settings.limits;
        if jobs.is_empty() {
            return Err(Error::invalid("jobs", "must hold at least one job"));
        }
        if jobs.len() > limits.max_batch_jobs {
            return Err(Error::TooLarge(format!(
                "jobs: {} jobs is over the limit of {}",
                jobs.len(),
                limits.max_batch_jobs
            )));
        }
        let bytes: usize = jobs.iter().map(NewJob::size).sum();
        if bytes > limits.max_batch_bytes {
            return Err(Error::TooLarge(format!(
                "jobs: {bytes} bytes in all is over the limit of {} bytes",
                limits.max_batch_bytes
            )));
        }
        // Each queue's jobs go in with one script call per chunk, in request order, so a batch
        // keeps its FIFO order (and a repeated idempotency key within it is a duplicate).
        let mut results: Vec<Option<Result<Added>>> = jobs.iter().map(|_| None).collect();
        let mut by_queue: std::collections::BTreeMap<String, Vec<(usize, Prepared)>> = Default::default();
        for (i, job) in jobs.into_iter().enumerate() {
            match job.validate(limits, &format!("jobs[{i}].")) {
                Ok(()) => by_queue.entry(job.queue.clone()).or_default().push((i, Prepared::new(job))),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        for (queue, items) in by_queue {
            self.register(&queue).await?;
            for chunk in items.chunks(500) {
                let args: Vec<AddArgs> = chunk.iter().map(|(_, p)| p.args(self.settings.idempotency_window)).collect();
                let outcomes = self.store.jobs().add_many(&queue, &args).await?;
                for ((i, prepared), outcome) in chunk.iter().zip(outcomes) {
                    let result = added(&queue, outcome, prepared.session.as_ref(), &format!("jobs[{i}]."));
                    if let Ok(added) = &result {
                        // One script added the chunk: each job's span only records the outcome.
                        let span = add_span(&queue, &prepared.record.headers);
                        span.record("job_id", tracing::field::display(&added.job_id));
                        span.in_scope(|| tracing::debug!(duplicate = added.duplicate, "job added in a batch"));
                    }
                    if let (Ok(added), Some(m)) = (&result, telemetry::queue(&queue))
                        && !added.duplicate
                    {
                        m.added.increment(1);
                    }
                    results[*i] = Some(result);
                }
            }
            self.hub.wake(&queue);
        }
        Ok(results.into_iter().map(|r| r.unwrap_or(Err(Error::Internal))).collect())
    }

    /// Opens a worker stream. Jobs and control messages arrive on the receiver; the stream
    /// lasts as long as the guard.
    pub fn open_stream(self: &Arc<Self>, spec: WorkerSpec) -> Result<(StreamGuard, mpsc::Receiver<StreamEvent>)> {
        self.check_open()?;
        if spec.queues.is_empty() || spec.queues.len() > 32 {
            return Err(Error::invalid("queues", "must name 1 to 32 queues"));
        }
        for (i, q) in spec.queues.iter().enumerate() {
            validate_queue(q, &format!("queues[{i}]"))?;
        }
        if spec.queues.iter().collect::<HashSet<_>>().len() != spec.queues.len() {
            return Err(Error::invalid("queues", "must not repeat a queue"));
        }
        if spec.max_in_flight == 0 || spec.max_in_flight > self.settings.limits.max_in_flight {
            return Err(Error::invalid(
                "max_in_flight",
                format!("must be from 1 to {}", self.settings.limits.max_in_flight),
            ));
        }
        if spec.worker_id.len() > 128 {
            return Err(Error::invalid("worker_id", "at most 128 bytes"));
        }
        if spec.labels.len() > 32 {
            return Err(Error::invalid("labels", "at most 32 entries"));
        }
        // Room for every job the credit allows plus the control messages about them.
        let (tx, rx) = mpsc::channel(spec.max_in_flight as usize * 2 + 8);
        let (id, fresh) = self.hub.open(spec, tx).ok_or(Error::ShuttingDown)?;
        telemetry::set_worker_streams(self.hub.stream_count());
        for (queue, wake) in fresh {
            self.dispatchers.spawn(dispatch::run(self.clone(), queue, wake));
        }
        Ok((StreamGuard { engine: self.clone(), id }, rx))
    }

    /// Routes the outcome of an ack to the stream that held the lease, wherever it is.
    async fn settle(&self, job_id: &JobId, token: &str) {
        let Some((instance, stream)) = hub::parse_token(token) else {
            return;
        };
        if instance == self.instance {
            self.answered(job_id, self.hub.release(stream, job_id, token));
        } else {
            let channel = self.store.keys().instance_channel(instance);
            let notice = notices::Notice::Release { job_id: job_id.clone(), token: token.to_owned() };
            if let Err(e) = self.store.instances().publish(&channel, &notice.encode()).await {
                // The owner's reconciliation frees the credit within a few seconds anyway.
                warn!(error = %e, job_id = %job_id, "could not notify the lease owner");
            }
        }
    }

    /// A worker answered for a delivery of this instance (here or through another instance):
    /// the time it held the job goes to the run-time histogram. A revoked delivery's answer
    /// is not a run (it timed out or was cancelled under the worker).
    fn answered(&self, job_id: &JobId, released: Option<hub::Released>) {
        if let Some(released) = released.filter(|r| !r.revoked)
            && let Some(m) = telemetry::queue(&job_id.queue)
        {
            m.run.record(released.held_for);
        }
    }

    /// The trace context of an ack: the one the request carried, else the one of the delivery
    /// when this instance made it.
    fn ack_trace(&self, job_id: &JobId, token: &str, given: Option<TraceContext>) -> Option<TraceContext> {
        given.or_else(|| {
            let (instance, stream) = hub::parse_token(token)?;
            if instance != self.instance {
                return None;
            }
            self.hub.trace_of(stream, job_id, token)
        })
    }

    /// Stops dispatch to the stream that received `token`, on whichever instance holds it.
    async fn stop_stream_of(&self, job_id: &JobId, token: &str) {
        let Some((instance, stream)) = hub::parse_token(token) else { return };
        if instance == self.instance {
            self.hub.stop_stream(stream);
            return;
        }
        let channel = self.store.keys().instance_channel(instance);
        let notice = notices::Notice::StopStream { job_id: job_id.clone(), token: token.to_owned() };
        if let Err(e) = self.store.instances().publish(&channel, &notice.encode()).await {
            warn!(error = %e, %job_id, "could not stop the worker's stream");
        }
    }

    fn lease_error(check: LeaseCheck, job_id: &JobId) -> Result<()> {
        match check {
            LeaseCheck::Held => Ok(()),
            LeaseCheck::UnknownJob => {
                Err(Error::NotFound(format!("job_id: job {job_id} does not exist or is no longer retained")))
            }
            LeaseCheck::Stale => Err(Error::StaleLease(format!(
                "lease_token: job {job_id} is not held by this lease (it timed out, was re-delivered or has finished)"
            ))),
        }
    }

    /// Completes an attempt. For a job of a session, `session_state` (JSON) replaces the
    /// session's state in the same atomic step, if the session is still at `expected_version`
    /// when one is given; on a mismatch nothing is written and the job stays leased.
    /// `trace` is the trace context the request carried, if any (see `ack_trace`).
    pub async fn complete(
        &self,
        job_id: &JobId,
        token: &str,
        result: &[u8],
        session_state: Option<(&str, Option<u64>)>,
        trace: Option<TraceContext>,
    ) -> Result<()> {
        let span = tracing::debug_span!(
            target: SPAN_TARGET,
            "job.complete",
            %job_id,
            trace_id = Empty,
            parent_span_id = Empty
        );
        traceparent::record(&span, self.ack_trace(job_id, token, trace).as_ref());
        self.complete_in_span(job_id, token, result, session_state).instrument(span).await
    }

    async fn complete_in_span(
        &self,
        job_id: &JobId,
        token: &str,
        result: &[u8],
        session_state: Option<(&str, Option<u64>)>,
    ) -> Result<()> {
        let limits = &self.settings.limits;
        if result.len() > limits.max_result {
            return Err(Error::TooLarge(format!(
                "result: {} bytes is over the limit of {} bytes",
                result.len(),
                limits.max_result
            )));
        }
        if let Some((state, _)) = session_state {
            sessions::validate_state(state, limits, "session_state")?;
        }
        let ack = OwnedAck {
            ulid: job_id.ulid.clone(),
            token: token.to_owned(),
            result: result.to_vec(),
            session_state: session_state.map(|(s, v)| (s.to_owned(), v)),
        };
        let (store, lane) = (self.store.clone(), job_id.queue.clone());
        let run = move |items: Vec<OwnedAck>| {
            let (store, lane) = (store.clone(), lane.clone());
            async move {
                let acks: Vec<Ack> = items.iter().map(OwnedAck::borrow).collect();
                store.jobs().complete(&lane, &acks).await
            }
        };
        let outcome = self.acks.submit(&job_id.queue, ack, run).await?;
        tracing::debug!(job_id = %job_id, ?outcome, "complete");
        if !matches!(outcome, AckOutcome::UnknownJob | AckOutcome::VersionMismatch | AckOutcome::NotInSession) {
            self.settle(job_id, token).await;
        }
        if outcome == AckOutcome::Completed
            && let Some(m) = telemetry::queue(&job_id.queue)
        {
            m.completed.increment(1);
        }
        match outcome {
            AckOutcome::Completed | AckOutcome::Cancelled => Ok(()),
            AckOutcome::UnknownJob => Self::lease_error(LeaseCheck::UnknownJob, job_id),
            AckOutcome::Stale => Self::lease_error(LeaseCheck::Stale, job_id),
            AckOutcome::VersionMismatch => Err(Error::Aborted(format!(
                "expected_session_version: the session of job {job_id} changed; nothing was written and the job is still yours"
            ))),
            AckOutcome::SessionGone => Err(Error::NotFound(format!(
                "session_id: the session of job {job_id} was deleted; the job ended cancelled"
            ))),
            AckOutcome::NotInSession => {
                Err(Error::invalid("session_state", format!("job {job_id} does not belong to a session")))
            }
        }
    }

    /// Fails an attempt; returns the job's new state and when it runs again.
    /// `trace` is the trace context the request carried, if any (see `ack_trace`).
    pub async fn fail(
        &self,
        job_id: &JobId,
        token: &str,
        error: &str,
        retryable: bool,
        retry_after: Option<Duration>,
        trace: Option<TraceContext>,
    ) -> Result<(JobState, Option<SystemTime>)> {
        let span = tracing::debug_span!(
            target: SPAN_TARGET,
            "job.fail",
            %job_id,
            retryable,
            trace_id = Empty,
            parent_span_id = Empty
        );
        traceparent::record(&span, self.ack_trace(job_id, token, trace).as_ref());
        self.fail_in_span(job_id, token, error, retryable, retry_after).instrument(span).await
    }

    async fn fail_in_span(
        &self,
        job_id: &JobId,
        token: &str,
        error: &str,
        retryable: bool,
        retry_after: Option<Duration>,
    ) -> Result<(JobState, Option<SystemTime>)> {
        if retry_after.is_some_and(|d| d > MAX_RETRY_WAIT) {
            return Err(Error::invalid("retry_after", "at most 7 days"));
        }
        let error = truncate(error, self.settings.limits.max_error);
        let outcome = self
            .store
            .jobs()
            .fail(&job_id.queue, &job_id.ulid, token, error, retryable, retry_after, rand::random())
            .await?;
        if outcome.check != LeaseCheck::UnknownJob {
            self.settle(job_id, token).await;
        }
        Self::lease_error(outcome.check, job_id)?;
        if let Some(m) = telemetry::queue(&job_id.queue)
            && outcome.state != Some(RecordState::Cancelled)
        {
            m.failed.increment(1);
            if matches!(outcome.state, Some(RecordState::Waiting | RecordState::Retrying)) {
                m.retried.increment(1);
            }
        }
        Ok(match outcome.state {
            Some(RecordState::Dead) => (JobState::Dead, None),
            Some(RecordState::Waiting) => (JobState::Waiting, Some(from_ms(outcome.run_at_ms))),
            Some(RecordState::Cancelled) => (JobState::Cancelled, None),
            _ => (JobState::Retrying, Some(from_ms(outcome.run_at_ms))),
        })
    }

    pub async fn extend(&self, job_id: &JobId, token: &str, by: Duration) -> Result<SystemTime> {
        if by.is_zero() || by > MAX_TIMEOUT {
            return Err(Error::invalid("extend_by", "must be from 1 ms to 24 h"));
        }
        let (check, deadline) = self.store.jobs().extend(&job_id.queue, &job_id.ulid, token, by).await?;
        Self::lease_error(check, job_id)?;
        Ok(from_ms(deadline))
    }

    /// Hands a held job back unprocessed (not a failed attempt, not a lost delivery).
    /// With `stop_stream`, the stream that received the job gets no more jobs (its worker is
    /// stopping); that holds even when the job itself could not be handed back.
    pub async fn give_back_one(&self, job_id: &JobId, token: &str, stop_stream: bool) -> Result<()> {
        let leases = [(job_id.ulid.clone(), token.to_owned())];
        let moved = self.store.jobs().requeue(&job_id.queue, &leases, false, self.settings.max_lost).await?;
        if stop_stream {
            self.stop_stream_of(job_id, token).await;
        }
        if moved == 0 {
            // Tell "unknown" from "not yours" the way every other lease call does.
            let found = self.store.admin().info(&job_id.queue, &job_id.ulid).await?;
            return Self::lease_error(if found.is_some() { LeaseCheck::Stale } else { LeaseCheck::UnknownJob }, job_id);
        }
        self.settle(job_id, token).await;
        Ok(())
    }

    pub async fn info(&self, job_id: &JobId) -> Result<JobView> {
        let found = self.store.admin().info(&job_id.queue, &job_id.ulid).await?;
        let (record, lease) = found
            .ok_or_else(|| Error::NotFound(format!("job_id: job {job_id} does not exist or is no longer retained")))?;
        Ok(JobView::new(job_id.clone(), record, lease))
    }

    pub async fn stats(&self, queue: &str) -> Result<crate::store::QueueCounts> {
        validate_queue(queue, "queue")?;
        Ok(self.store.admin().stats(queue).await?)
    }

    pub async fn list_queues(&self) -> Result<Vec<(String, crate::store::QueueCounts)>> {
        let mut out = Vec::new();
        for queue in self.store.instances().queues().await? {
            let counts = self.store.admin().stats(&queue).await?;
            out.push((queue, counts));
        }
        Ok(out)
    }

    /// Starts refreshing the per-queue gauges from Redis every `every` (see `gauges.rs`); the
    /// server does it when it serves metrics.
    pub fn start_gauges(self: &Arc<Self>, every: Duration) {
        self.tasks.spawn(gauges::run(self.clone(), every));
    }

    /// Hands leases back to the head of their queues, retrying while Redis is away: a lease
    /// that is never handed back would only return after this instance is declared dead.
    /// Returns false when some could not be handed back (they return through the reaper).
    async fn give_back(&self, held: Vec<hub::HeldLease>, lost: bool) -> bool {
        let mut all = true;
        let mut by_queue: std::collections::HashMap<String, Vec<(String, String)>> = Default::default();
        for h in held {
            by_queue.entry(h.job_id.queue).or_default().push((h.job_id.ulid, h.token));
        }
        for (queue, leases) in by_queue {
            let mut wait = Duration::from_millis(100);
            for tries in 1.. {
                match self.store.jobs().requeue(&queue, &leases, lost, self.settings.max_lost).await {
                    Ok(n) => {
                        info!(%queue, returned = n, lost, "leases handed back");
                        if let Some(m) = telemetry::queue(&queue).filter(|_| lost) {
                            m.lost.increment(n);
                        }
                        break;
                    }
                    Err(e) if self.shutdown.is_cancelled() && tries >= 5 => {
                        warn!(%queue, error = %e, "giving up handing leases back; the reaper returns them after the lease TTL");
                        all = false;
                        break;
                    }
                    Err(e) => {
                        warn!(%queue, error = %e, "handing leases back failed; retrying");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(2));
                    }
                }
            }
        }
        all
    }

    /// Stops this instance: no new streams or jobs, workers told to drain, acks accepted for
    /// `grace` (or until nothing is held), then every lease still held is handed back (not as a
    /// lost delivery), the instance leaves the registry and background tasks end.
    pub async fn shutdown(&self, grace: Duration) {
        info!(?grace, "draining");
        self.hub.drain_all(grace);
        let deadline = tokio::time::Instant::now() + grace;
        while self.hub.in_flight_total() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // No lease round may complete after the hand-back: stop the dispatchers and wait.
        self.dispatch_stop.cancel();
        self.dispatchers.close();
        self.dispatchers.wait().await;
        self.shutdown.cancel();
        let held = self.hub.held();
        self.hub.forget_all();
        // Only an instance that handed everything back may leave the registry: otherwise the
        // reaper of another instance must still see it die and return its jobs.
        if self.give_back(held, false).await
            && let Err(e) = self.store.instances().forget_instances(std::slice::from_ref(&self.instance)).await
        {
            warn!(error = %e, "could not leave the instance registry");
        }
        self.hub.disconnect_all();
        telemetry::set_worker_streams(0);
        self.tasks.close();
        self.tasks.wait().await;
        info!("engine stopped");
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The `job.add` span of one job, with the trace context of its `traceparent` header; the
/// job id is recorded once known.
fn add_span(queue: &str, headers: &[(String, String)]) -> tracing::Span {
    let span = tracing::debug_span!(
        target: SPAN_TARGET,
        "job.add",
        queue,
        job_id = Empty,
        trace_id = Empty,
        parent_span_id = Empty
    );
    let trace = TraceContext::from_headers(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    traceparent::record(&span, trace.as_ref());
    span
}

/// A validated job, ready for the add script.
struct Prepared {
    ulid: String,
    record: crate::store::JobRecord,
    delay_ms: Option<u64>,
    run_at_ms: Option<i64>,
    session: Option<SessionId>,
}

impl Prepared {
    fn new(job: NewJob) -> Self {
        let ulid = ulid::Ulid::new();
        let (delay_ms, run_at_ms) = match job.schedule {
            Schedule::Now => (None, None),
            Schedule::After(d) => (Some(d.as_millis() as u64), None),
            Schedule::At(t) => (None, Some(to_ms(t))),
        };
        let session = job.session.clone();
        Self {
            record: job.into_record(ulid.timestamp_ms() as i64),
            ulid: ulid.to_string(),
            delay_ms,
            run_at_ms,
            session,
        }
    }

    fn args(&self, idempotency_window: Duration) -> AddArgs<'_> {
        AddArgs {
            ulid: &self.ulid,
            record: &self.record,
            delay_ms: self.delay_ms,
            run_at_ms: self.run_at_ms,
            idempotency_window,
            session: self.session.as_ref().map(|s| s.name.as_str()),
        }
    }
}

/// What the add script said, for the caller.
fn added(queue: &str, outcome: AddOutcome, session: Option<&SessionId>, field_prefix: &str) -> Result<Added> {
    match outcome {
        AddOutcome::Added(u) => Ok(Added { job_id: JobId::new(queue, &u), duplicate: false }),
        AddOutcome::Duplicate(u) => Ok(Added { job_id: JobId::new(queue, &u), duplicate: true }),
        AddOutcome::NoSession => {
            let id = session.map(|s| s.to_string()).unwrap_or_default();
            Err(Error::NotFound(format!("{field_prefix}session_id: session {id} does not exist")))
        }
    }
}

/// An acknowledgement waiting for its batch.
struct OwnedAck {
    ulid: String,
    token: String,
    result: Vec<u8>,
    session_state: Option<(String, Option<u64>)>,
}

impl OwnedAck {
    fn borrow(&self) -> Ack<'_> {
        Ack {
            ulid: &self.ulid,
            token: &self.token,
            result: &self.result,
            session_state: self.session_state.as_ref().map(|(s, v)| (s.as_str(), *v)),
        }
    }
}
