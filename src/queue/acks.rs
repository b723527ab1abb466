//! What the holder of a lease says about its job: complete, fail, extend, return it, report
//! progress. Each is fenced by the lease token (only the current holder's call changes the
//! job; a stale one gets `StaleLease` and changes nothing), and each answer that ends a lease
//! frees the credit of the stream that held it, wherever it is (`Leases::tell_owner`).
//!
//! Owns: the coalescer of completions (concurrent completions of one queue share a script
//! call, `coalesce.rs`; two such calls of a queue at once). That call, and a fail's, also
//! leases the acking streams' next jobs when they may have them (`leases/refill.rs`): a busy
//! worker's job costs one Redis call.
//! Calls `leases` (`Leases::tell_owner`, `Leases::trace_of` for the trace context of a delivery
//! made here, `plan_refills`/`settle_refills`) and `sessions` (`validate_state`, for the session
//! state a completion writes).
//!
//! Instrumentation: completions and failures count in the queue's metrics and run in a span
//! (`job.complete`, `job.fail`) carrying the trace context of the request, else of the delivery.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, SystemTime},
};

use tracing::{Instrument, Span, field::Empty};

use super::{
    coalesce::{Coalescer, Ticket},
    error::{Error, Result},
    job::{JobId, JobState, MAX_RETRY_WAIT, MAX_TIMEOUT, from_ms},
    leases::{Leases, Notice},
    sessions::validate_state,
    settings::Limits,
};
use crate::{
    store::{Ack, AckOutcome, FailArgs, LeaseCheck, LeaseToken, RecordState, Store},
    telemetry::{self, SPAN_TARGET, TraceContext, traceparent},
};

/// Completion batches of one queue in flight at once: while Redis runs one, the server settles
/// the one before, and the worker runs the jobs it leased.
const COMPLETION_BATCHES: usize = 2;

/// The acks room: the lease holder's calls and the coalescer of completions.
pub(super) struct Acks {
    store: Arc<Store>,
    leases: Arc<Leases>,
    limits: Limits,
    max_lost: u32,
    completions: Arc<Coalescer<OwnedAck, AckOutcome>>,
}

impl Acks {
    pub(super) fn new(store: Arc<Store>, leases: Arc<Leases>, limits: Limits, max_lost: u32) -> Self {
        Self { store, leases, limits, max_lost, completions: Arc::new(Coalescer::with_leaders(COMPLETION_BATCHES)) }
    }

    /// Completes an attempt. For a job of a session, `session_state` (JSON) replaces the
    /// session's state in the same atomic step, if the session is still at `expected_version`
    /// when one is given; on a mismatch nothing is written and the job stays leased.
    /// `trace` is the trace context the request carried, if any.
    ///
    /// The completion is checked and taken in for its queue's next script call at once, when
    /// this is called; the returned future waits for its answer. Completions taken in before any
    /// of their futures runs share one call (the acks of one Work message): poll them together.
    pub(super) fn complete(
        &self,
        job_id: JobId,
        token: &str,
        result: Vec<u8>,
        session_state: Option<(String, Option<u64>)>,
        trace: Option<TraceContext>,
    ) -> impl Future<Output = Result<()>> + Send + use<> {
        let token = LeaseToken::parse(token);
        let span = tracing::debug_span!(
            target: SPAN_TARGET,
            "job.complete",
            %job_id,
            trace_id = Empty,
            parent_span_id = Empty
        );
        self.record_trace(&span, &job_id, token.as_ref(), trace);
        let taken = span.in_scope(|| self.take_completion(&job_id, token, result, session_state));
        let (store, leases) = (self.store.clone(), self.leases.clone());
        // Boxed here, once: the callers' futures (the api's, a Work stream's) then carry a
        // pointer, not this state, which would be copied at every layer.
        Box::pin(async move {
            let Some((ticket, token)) = taken? else {
                return Err(not_held(&store, &job_id).await);
            };
            let outcome = ticket.answer().await?;
            tracing::debug!(job_id = %job_id, ?outcome, "complete");
            if !matches!(outcome, AckOutcome::UnknownJob | AckOutcome::VersionMismatch | AckOutcome::NotInSession) {
                leases.tell_owner(Notice::Release, &job_id, &token).await;
            }
            if outcome == AckOutcome::Completed
                && let Some(m) = telemetry::queue(crate::queue::shards::logical(&job_id.queue))
            {
                m.completed.increment(1);
            }
            match outcome {
                AckOutcome::Completed | AckOutcome::Cancelled => Ok(()),
                AckOutcome::UnknownJob => lease_error(LeaseCheck::UnknownJob, &job_id),
                AckOutcome::Stale => lease_error(LeaseCheck::Stale, &job_id),
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
        .instrument(span))
    }

    /// Checks a completion and takes it in for its queue's next call; None when the token, not
    /// being one, holds no lease.
    fn take_completion(
        &self,
        job_id: &JobId,
        token: Option<LeaseToken>,
        result: Vec<u8>,
        session_state: Option<(String, Option<u64>)>,
    ) -> Result<Option<(Ticket<AckOutcome>, LeaseToken)>> {
        if result.len() > self.limits.max_result {
            return Err(Error::TooLarge(format!(
                "result: {} bytes is over the limit of {} bytes",
                result.len(),
                self.limits.max_result
            )));
        }
        if let Some((state, _)) = &session_state {
            validate_state(state, &self.limits, "session_state")?;
        }
        let Some(token) = token else { return Ok(None) };
        let ack = OwnedAck { ulid: job_id.ulid.clone(), token: token.clone(), result, session_state };
        let (store, leases, lane) = (self.store.clone(), self.leases.clone(), job_id.queue.clone());
        let run = move |items: Vec<OwnedAck>| {
            let (store, leases, lane) = (store.clone(), leases.clone(), lane.clone());
            async move {
                let plan = leases.plan_refills(&lane, items.iter().map(|a| (a.ulid.as_str(), &a.token)));
                let acks: Vec<Ack> = items.iter().map(OwnedAck::borrow).collect();
                let answer = store.jobs().complete_and_lease(&lane, &acks, &plan.tokens()).await;
                leases.settle_refills(&lane, plan, answer.map(|c| (c.outcomes, c.refill))).await
            }
        };
        Ok(Some((self.completions.enqueue(&job_id.queue, ack, run), token)))
    }

    /// Fails an attempt; returns the job's new state and when it runs again.
    /// `trace` is the trace context the request carried, if any.
    pub(super) async fn fail(
        &self,
        job_id: &JobId,
        token: &str,
        error: &str,
        retryable: bool,
        retry_after: Option<Duration>,
        trace: Option<TraceContext>,
    ) -> Result<(JobState, Option<SystemTime>)> {
        let token = LeaseToken::parse(token);
        let span = tracing::debug_span!(
            target: SPAN_TARGET,
            "job.fail",
            %job_id,
            retryable,
            trace_id = Empty,
            parent_span_id = Empty
        );
        self.record_trace(&span, job_id, token.as_ref(), trace);
        self.fail_in_span(job_id, token, error, retryable, retry_after).instrument(span).await
    }

    async fn fail_in_span(
        &self,
        job_id: &JobId,
        token: Option<LeaseToken>,
        error: &str,
        retryable: bool,
        retry_after: Option<Duration>,
    ) -> Result<(JobState, Option<SystemTime>)> {
        if retry_after.is_some_and(|d| d > MAX_RETRY_WAIT) {
            return Err(Error::invalid("retry_after", "at most 7 days"));
        }
        let token = self.presented(job_id, token).await?;
        let error = truncate(error, self.limits.max_error);
        let plan = self.leases.plan_refills(&job_id.queue, [(job_id.ulid.as_str(), &token)]);
        let refill = plan.tokens().first().copied().flatten();
        let failure =
            FailArgs { ulid: &job_id.ulid, token: token.as_str(), error, retryable, retry_after, rand: rand::random() };
        let answer = self.store.jobs().fail_and_lease(&job_id.queue, &failure, refill).await;
        let outcome = self.leases.settle_refills(&job_id.queue, plan, answer).await?;
        if outcome.check != LeaseCheck::UnknownJob {
            self.leases.tell_owner(Notice::Release, job_id, &token).await;
        }
        lease_error(outcome.check, job_id)?;
        if let Some(m) = telemetry::queue(crate::queue::shards::logical(&job_id.queue))
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

    /// Moves the attempt's deadline to `by` from now (1 ms to 24 h); returns the new deadline.
    pub(super) async fn extend(&self, job_id: &JobId, token: &str, by: Duration) -> Result<SystemTime> {
        if by.is_zero() || by > MAX_TIMEOUT {
            return Err(Error::invalid("extend_by", "must be from 1 ms to 24 h"));
        }
        let token = self.presented(job_id, LeaseToken::parse(token)).await?;
        let (check, deadline) = self.store.jobs().extend(&job_id.queue, &job_id.ulid, token.as_str(), by).await?;
        lease_error(check, job_id)?;
        Ok(from_ms(deadline))
    }

    /// Hands a held job back unprocessed (not a failed attempt, not a lost delivery).
    /// With `stop_stream`, the stream that received the job gets no more jobs (its worker is
    /// stopping); that holds even when the job itself could not be handed back.
    pub(super) async fn give_back(&self, job_id: &JobId, token: &str, stop_stream: bool) -> Result<()> {
        let token = self.presented(job_id, LeaseToken::parse(token)).await?;
        let leases = [(job_id.ulid.clone(), token.as_str().to_owned())];
        let moved = self.store.jobs().requeue(&job_id.queue, &leases, false, self.max_lost).await?;
        if stop_stream {
            self.leases.tell_owner(Notice::StopStream, job_id, &token).await;
        }
        if moved == 0 {
            return Err(not_held(&self.store, job_id).await);
        }
        self.leases.tell_owner(Notice::Release, job_id, &token).await;
        Ok(())
    }

    /// "Rate limited upstream, retry after `delay`": hands a held job back to run again then,
    /// without spending an attempt or counting a lost delivery; with `hold_key`, its rate key's
    /// other jobs wait as long (under the queue's `key_rate`). `stop_stream` as `give_back`.
    pub(super) async fn postpone(
        &self,
        job_id: &JobId,
        token: &str,
        delay: Duration,
        hold_key: bool,
        stop_stream: bool,
    ) -> Result<()> {
        if delay > MAX_RETRY_WAIT {
            return Err(Error::invalid("retry_after", "at most 7 days"));
        }
        let token = self.presented(job_id, LeaseToken::parse(token)).await?;
        let outcome = self.store.jobs().postpone(&job_id.queue, &job_id.ulid, token.as_str(), delay, hold_key).await?;
        if stop_stream {
            self.leases.tell_owner(Notice::StopStream, job_id, &token).await;
        }
        lease_error(outcome.check, job_id)?;
        self.leases.tell_owner(Notice::Release, job_id, &token).await;
        Ok(())
    }

    /// Stores the attempt's progress (at most `Limits::max_progress` bytes), emitted as an event.
    pub(super) async fn report_progress(&self, job_id: &JobId, token: &str, progress: &[u8]) -> Result<()> {
        let max = self.limits.max_progress;
        if progress.len() > max {
            return Err(Error::TooLarge(format!(
                "progress: {} bytes is over the limit of {max} bytes",
                progress.len()
            )));
        }
        let token = self.presented(job_id, LeaseToken::parse(token)).await?;
        let code = self.store.jobs().progress(&job_id.queue, &job_id.ulid, token.as_str(), progress).await?;
        lease_error(LeaseCheck::from_code(code), job_id)
    }

    /// The token a request presented, parsed; a malformed one holds no lease, and the caller
    /// hears that the way any other token that is not the lease's is answered.
    async fn presented(&self, job_id: &JobId, token: Option<LeaseToken>) -> Result<LeaseToken> {
        match token {
            Some(token) => Ok(token),
            None => Err(not_held(&self.store, job_id).await),
        }
    }

    /// Records in the ack's span the trace context of the ack: the one the request carried, else
    /// the one of the delivery when this instance made it. Nothing is looked up for a span that
    /// is off (the usual case: they are debug spans).
    fn record_trace(&self, span: &Span, job_id: &JobId, token: Option<&LeaseToken>, given: Option<TraceContext>) {
        if span.is_disabled() {
            return;
        }
        let trace = given.or_else(|| self.leases.trace_of(job_id, token?));
        traceparent::record(span, trace.as_ref());
    }
}

/// Why a token holds no lease of the job: the job is unknown, or the lease is not that one.
async fn not_held(store: &Store, job_id: &JobId) -> Error {
    match store.admin().info(&job_id.queue, &job_id.ulid).await {
        Ok(Some(_)) => stale_lease(job_id),
        Ok(None) => job_id.not_found(),
        Err(e) => e.into(),
    }
}

fn lease_error(check: LeaseCheck, job_id: &JobId) -> Result<()> {
    match check {
        LeaseCheck::Held => Ok(()),
        LeaseCheck::UnknownJob => Err(job_id.not_found()),
        LeaseCheck::Stale => Err(stale_lease(job_id)),
    }
}

fn stale_lease(job_id: &JobId) -> Error {
    Error::StaleLease(format!(
        "lease_token: job {job_id} is not held by this lease (it timed out, was re-delivered or has finished)"
    ))
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

/// An acknowledgement waiting for its batch.
struct OwnedAck {
    ulid: String,
    token: LeaseToken,
    result: Vec<u8>,
    session_state: Option<(String, Option<u64>)>,
}

impl OwnedAck {
    fn borrow(&self) -> Ack<'_> {
        Ack {
            ulid: &self.ulid,
            token: self.token.as_str(),
            result: &self.result,
            session_state: self.session_state.as_ref().map(|(s, v)| (s.as_str(), *v)),
        }
    }
}
