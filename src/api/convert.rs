//! Conversions between the protobuf messages and the domain types, with the checks only the
//! wire format needs (negative durations, out-of-range timestamps). Field names in errors are
//! the proto's. `listings.rs` holds those of the dashboard's calls (filters, selections, bulk
//! outcomes, dead-letter groups, activity), `settings.rs` those of queue settings.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{
    proto,
    queue::{
        self, Delivery, Error, EventKind, EventView, JobState, JobView, Listing, NewJob, QueueFigures, Schedule,
        SessionId, SessionView, WorkerSpec, WorkerView,
    },
    telemetry::{TraceContext, traceparent},
};

pub(super) fn duration(d: Option<prost_types::Duration>, field: &str) -> Result<Option<Duration>, Error> {
    let Some(d) = d else { return Ok(None) };
    let (Ok(seconds), Ok(nanos)) = (u64::try_from(d.seconds), u32::try_from(d.nanos)) else {
        return Err(Error::invalid(field, "must not be negative"));
    };
    if nanos >= 1_000_000_000 {
        return Err(Error::invalid(field, "nanos must be below 1e9"));
    }
    Ok(Some(Duration::new(seconds, nanos)))
}

pub(super) fn timestamp(t: Option<prost_types::Timestamp>, field: &str) -> Result<Option<SystemTime>, Error> {
    let Some(t) = t else { return Ok(None) };
    match (u64::try_from(t.seconds), u32::try_from(t.nanos)) {
        (Ok(seconds), Ok(nanos)) if nanos < 1_000_000_000 => Ok(Some(UNIX_EPOCH + Duration::new(seconds, nanos))),
        _ => Err(Error::invalid(field, "must be a valid time after 1970")),
    }
}

/// The W3C trace context a request carries in its `traceparent` metadata (as OpenTelemetry's
/// gRPC instrumentation and the Rust client's worker send it); None when absent or invalid.
pub(super) fn trace_context(metadata: &tonic::metadata::MetadataMap) -> Option<TraceContext> {
    metadata.get(traceparent::HEADER).and_then(|v| v.to_str().ok()).and_then(TraceContext::parse)
}

pub(super) fn to_timestamp(t: SystemTime) -> prost_types::Timestamp {
    t.into()
}

/// A domain duration on the wire; one past the wire's range (about 292 billion years) is sent as
/// the longest the wire holds.
pub(super) fn to_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap_or(prost_types::Duration { seconds: i64::MAX, nanos: 999_999_999 })
}

pub(super) fn new_job(req: proto::AddJobRequest, prefix: &str) -> Result<NewJob, Error> {
    let field = |f: &str| format!("{prefix}{f}");
    let schedule = match req.schedule {
        None => Schedule::Now,
        Some(proto::add_job_request::Schedule::Delay(d)) => {
            Schedule::After(duration(Some(d), &field("delay"))?.unwrap_or_default())
        }
        Some(proto::add_job_request::Schedule::RunAt(t)) => {
            Schedule::At(timestamp(Some(t), &field("run_at"))?.unwrap_or(UNIX_EPOCH))
        }
    };
    let backoff = req.backoff.map(|b| settings::backoff(b, &field("backoff."))).transpose()?;
    let mut headers: Vec<(String, String)> = req.headers.into_iter().collect();
    headers.sort();
    Ok(NewJob {
        queue: req.queue,
        job_type: req.r#type,
        payload: req.payload,
        headers,
        priority: req.priority,
        schedule,
        max_attempts: req.max_attempts,
        backoff,
        // Its field name is formatted only for a timeout given (most adds give none).
        timeout: match req.timeout {
            None => None,
            timeout => duration(timeout, &field("timeout"))?,
        },
        idempotency_key: Some(req.idempotency_key).filter(|k| !k.is_empty()),
        idempotency_key_generated: req.idempotency_key_generated,
        session: match req.session_id.as_str() {
            "" => None,
            id => Some(SessionId::parse(id, &field("session_id"))?),
        },
        rate_key: Some(req.rate_key).filter(|k| !k.is_empty()),
        concurrency_key: Some(req.concurrency_key).filter(|k| !k.is_empty()),
    })
}

/// A retry policy as asked for; errors name `{prefix}backoff.…`.
pub(super) fn job_state(state: JobState) -> proto::JobState {
    match state {
        JobState::Waiting => proto::JobState::Waiting,
        JobState::Delayed => proto::JobState::Delayed,
        JobState::Active => proto::JobState::Active,
        JobState::Retrying => proto::JobState::Retrying,
        JobState::Completed => proto::JobState::Completed,
        JobState::Dead => proto::JobState::Dead,
        JobState::Cancelled => proto::JobState::Cancelled,
    }
}

/// The listing for a state named in a request.
pub(super) fn listing(state: i32, field: &str) -> Result<Listing, Error> {
    Ok(match proto::JobState::try_from(state) {
        Ok(proto::JobState::Waiting) => Listing::Waiting,
        Ok(proto::JobState::Delayed | proto::JobState::Retrying) => Listing::Delayed,
        Ok(proto::JobState::Active) => Listing::Active,
        Ok(proto::JobState::Completed) => Listing::Completed,
        Ok(proto::JobState::Dead) => Listing::Dead,
        Ok(proto::JobState::Cancelled) => Listing::Cancelled,
        _ => return Err(Error::invalid(field, "must name a job state")),
    })
}

pub(super) fn event(e: EventView) -> proto::JobEvent {
    let kind = match e.kind {
        EventKind::Waiting => proto::JobEventType::Waiting,
        EventKind::Delayed => proto::JobEventType::Delayed,
        EventKind::Active => proto::JobEventType::Active,
        EventKind::Progress => proto::JobEventType::Progress,
        EventKind::Retrying => proto::JobEventType::Retrying,
        EventKind::Completed => proto::JobEventType::Completed,
        EventKind::Dead => proto::JobEventType::Dead,
        EventKind::Cancelled => proto::JobEventType::Cancelled,
    };
    proto::JobEvent {
        cursor: e.cursor,
        job_id: e.job_id.to_string(),
        r#type: kind as i32,
        attempt: e.attempt,
        error: e.error,
        next_run_at: e.run_at.map(to_timestamp),
        progress: e.progress,
        result: e.result.unwrap_or_default(),
        time: Some(to_timestamp(e.time)),
    }
}

pub(super) fn session(v: SessionView) -> proto::Session {
    proto::Session {
        id: v.id.to_string(),
        state: v.state,
        version: v.version,
        created_at: Some(to_timestamp(v.created_at)),
        updated_at: Some(to_timestamp(v.updated_at)),
        ttl: Some(to_duration(v.ttl)),
        max_concurrency: v.max_concurrency,
        running_jobs: v.running_jobs,
        queued_jobs: v.queued_jobs,
        pending_jobs: v.pending_jobs,
    }
}

pub(super) fn worker(w: WorkerView) -> proto::WorkerInfo {
    proto::WorkerInfo {
        connected_at: Some(to_timestamp(w.connected_at())),
        stream_id: w.stream_id(),
        instance: w.instance,
        worker_id: w.worker_id,
        labels: w.labels.into_iter().collect(),
        queues: w.queues,
        max_in_flight: w.max_in_flight,
        in_flight: u32::try_from(w.in_flight).unwrap_or(u32::MAX),
    }
}

pub(super) fn job_info(v: JobView) -> proto::JobInfo {
    proto::JobInfo {
        id: v.id.to_string(),
        queue: v.id.queue.clone(),
        r#type: v.job_type,
        state: job_state(v.state) as i32,
        payload: v.payload,
        headers: v.headers.into_iter().collect(),
        priority: v.priority,
        attempts: v.attempts,
        max_attempts: v.max_attempts,
        lost_deliveries: v.lost_deliveries,
        created_at: Some(to_timestamp(v.created_at)),
        started_at: v.started_at.map(to_timestamp),
        finished_at: v.finished_at.map(to_timestamp),
        run_at: v.run_at.map(to_timestamp),
        last_error: v.last_error.unwrap_or_default(),
        result: v.result.unwrap_or_default(),
        idempotency_key: v.idempotency_key.unwrap_or_default(),
        session_id: v.session.map(|s| s.to_string()).unwrap_or_default(),
        progress: v.progress.unwrap_or_default(),
        worker_stream: v.worker_stream.unwrap_or_default(),
    }
}

pub(super) fn queue_stats(queue: String, c: QueueFigures) -> proto::QueueStats {
    proto::QueueStats {
        queue,
        waiting: c.waiting,
        delayed: c.delayed,
        active: c.active,
        completed: c.completed,
        dead: c.dead,
        dead_evicted: c.dead_evicted,
        paused: c.paused,
        oldest_waiting_age: Some(to_duration(c.oldest_waiting)),
        cancelled: c.cancelled,
        sessions: c.sessions,
        session_pending: c.session_pending,
        completed_shed: c.completed_shed,
        cancelled_shed: c.cancelled_shed,
        dead_shed: c.dead_shed,
        events_shed: c.events_shed,
        concurrency_limit: c.concurrency_limit,
        held_by_concurrency: c.held_by_concurrency,
        held_by_rate: c.held_by_rate,
        held_by_key_concurrency: c.held_by_key_concurrency,
        waiting_keys: c.waiting_keys,
    }
}

pub(super) fn redis_memory(m: queue::RedisMemory) -> proto::RedisMemory {
    proto::RedisMemory { used_bytes: m.used, max_bytes: m.max, full: m.full }
}

/// The worker stream a GetJob request or a Work `open` asks for.
pub(super) fn worker_spec(
    worker_id: String,
    labels: std::collections::HashMap<String, String>,
    queues: Vec<String>,
    max_in_flight: u32,
    prefetch: u32,
) -> WorkerSpec {
    WorkerSpec { worker_id, labels: labels.into_iter().collect(), queues, max_in_flight, prefetch }
}

/// A message for a worker stream (GetJob's; Work regroups them).
pub(super) fn stream_event(event: queue::StreamEvent) -> proto::get_job_response::Message {
    use proto::get_job_response::Message;
    match event {
        queue::StreamEvent::Job(d) => Message::Job(job(*d)),
        queue::StreamEvent::Revoke { job_id, lease_token, reason } => Message::Revoke(proto::Revoke {
            job_id: job_id.to_string(),
            lease_token: lease_token.into(),
            reason: match reason {
                queue::RevokeReason::Timeout => proto::RevokeReason::Timeout,
                queue::RevokeReason::LeaseLost => proto::RevokeReason::LeaseLost,
                queue::RevokeReason::Cancelled => proto::RevokeReason::Cancelled,
            } as i32,
        }),
        queue::StreamEvent::Drain { grace } => Message::Drain(proto::Drain { grace: Some(to_duration(grace)) }),
    }
}

pub(super) fn job(d: Delivery) -> proto::Job {
    proto::Job {
        id: d.job_id.to_string(),
        queue: d.job_id.queue,
        r#type: d.job_type,
        payload: d.payload,
        headers: d.headers.into_iter().collect(),
        priority: d.priority,
        attempt: d.attempt,
        max_attempts: d.max_attempts,
        lost_deliveries: d.lost_deliveries,
        lease_token: d.lease_token.into(),
        deadline: Some(to_timestamp(d.deadline)),
        created_at: Some(to_timestamp(d.created_at)),
        session: d.session.map(|(id, state, version)| proto::SessionSnapshot {
            session_id: id.to_string(),
            state,
            version,
        }),
    }
}

pub(super) mod listings;
#[cfg(test)]
mod properties;
pub(super) mod settings;
