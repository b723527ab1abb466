//! Jobs as the domain sees them: ids, what a producer asks for (validated here, against the
//! limits), what a worker receives, and what an operator reads; and the conversions between the
//! domain's times and the milliseconds the store keeps.
//!
//! The `pub` items are what the transport uses; the `pub(super)` ones are shared by the rooms.

use std::{
    borrow::Cow,
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::store::{BackoffSpec, JobRecord, Lease, MAX_PRIORITY, MIN_PRIORITY, RecordState};

use super::{error::Error, settings::Limits, shards};

/// The attempts of a job added without its own, in a queue without a setting of its own.
pub(super) const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// The attempt timeout of a job added without its own, in a queue without a setting of its own.
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const MAX_NAME: usize = 128;
/// The most attempts a job may have.
pub(super) const MAX_ATTEMPTS: u32 = 1_000;
/// The shortest attempt timeout.
pub(super) const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// The longest an attempt may run, as asked at add or by one extension.
pub(super) const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
const MAX_SCHEDULE: Duration = Duration::from_secs(365 * 24 * 3600);
const MAX_HEADERS: usize = 64;
const MAX_HEADER_BYTES: usize = 16 * 1024;
const MAX_IDEMPOTENCY_KEY: usize = 256;
/// The longest rate or concurrency key.
const MAX_LIMIT_KEY: usize = 128;
const MAX_BACKOFF_BASE: Duration = Duration::from_secs(24 * 3600);
/// The longest wait before a retry, from a backoff or a failure's `retry_after`.
pub(super) const MAX_RETRY_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// `<queue>/<ULID>`: leads to the queue's keys without any global lookup.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JobId {
    /// The job's queue (valid as `validate_queue` checks).
    pub queue: String,
    /// The ULID given at add: unique, and sortable by creation time.
    pub ulid: String,
}

impl JobId {
    pub(super) fn new(queue: &str, ulid: &str) -> Self {
        Self { queue: queue.to_owned(), ulid: ulid.to_owned() }
    }

    /// Reads a job id as a caller sent it; anything else is `Invalid`, naming `field`.
    pub fn parse(raw: &str, field: &str) -> Result<Self, Error> {
        let invalid = || Error::invalid(field, "must be a job id of the form <queue>/<ULID>");
        let (queue, ulid) = raw.rsplit_once('/').ok_or_else(invalid)?;
        validate_physical_queue(queue, field)?;
        if ulid.parse::<ulid::Ulid>().is_err() {
            return Err(invalid());
        }
        Ok(Self::new(queue, ulid))
    }

    /// The queue the job belongs to as callers name it: its shard's queue (`Q` for `Q~c`).
    pub fn queue_name(&self) -> &str {
        shards::logical(&self.queue)
    }

    /// The error for a job that does not exist, or no longer.
    pub(super) fn not_found(&self) -> Error {
        Error::NotFound(format!("job_id: job {self} does not exist or is no longer retained"))
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.queue, self.ulid)
    }
}

/// `<queue>/<name>`: leads to the session's keys (in its queue's) without any lookup.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionId {
    /// The session's queue: its jobs run there.
    pub queue: String,
    /// Its name, unique in the queue (same alphabet as a queue name).
    pub name: String,
}

impl SessionId {
    pub(super) fn new(queue: &str, name: &str) -> Self {
        Self { queue: queue.to_owned(), name: name.to_owned() }
    }

    /// Reads a session id as a caller sent it; anything else is `Invalid`, naming `field`.
    pub fn parse(raw: &str, field: &str) -> Result<Self, Error> {
        let (queue, name) = raw
            .split_once('/')
            .ok_or_else(|| Error::invalid(field, "must be a session id of the form <queue>/<name>"))?;
        validate_physical_queue(queue, field)?;
        validate_queue(name, field)?;
        Ok(Self::new(queue, name))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.queue, self.name)
    }
}

impl SessionId {
    /// The queue the session belongs to as callers name it (`Q` for a session in shard `Q~c`).
    pub fn queue_name(&self) -> &str {
        shards::logical(&self.queue)
    }
}

/// Checks a queue (or session) name: 1 to 128 of A-Z a-z 0-9 `_` `.` `:` `-`, so that it can
/// never break out of its hash tag. Errors name `field`.
pub(super) fn validate_queue(queue: &str, field: &str) -> Result<(), Error> {
    if queue.is_empty() || queue.len() > MAX_NAME {
        return Err(Error::invalid(field, "must be 1 to 128 characters"));
    }
    if !queue.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')) {
        return Err(Error::invalid(field, "may only contain A-Z a-z 0-9 _ . : -"));
    }
    Ok(())
}

/// Checks the queue of an id: a queue name, or one of a sharded queue's shards (`Q~c`, see
/// `shards.rs`), which ids name but callers cannot create.
fn validate_physical_queue(queue: &str, field: &str) -> Result<(), Error> {
    if !shards::shard_suffix_ok(queue) {
        return Err(Error::invalid(field, "names no shard of a queue"));
    }
    validate_queue(shards::logical(queue), field)
}

/// When a new job may first run.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Schedule {
    /// As soon as a worker has credit.
    #[default]
    Now,
    /// After this long (at most 365 days).
    After(Duration),
    /// At this time on the Redis server's clock (at most 365 days ahead); a past time means now.
    At(SystemTime),
}

/// A retry policy as asked for; unset parts take the defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackoffRequest {
    /// Every wait is `base`; else the waits grow by `factor` per attempt.
    pub fixed: bool,
    /// The first (or, fixed, every) wait; default 1 s, at most 24 h.
    pub base: Option<Duration>,
    /// Growth per attempt, 1 to 100; default 2.
    pub factor: Option<f64>,
    /// The longest wait; default 1 h, at most 7 days.
    pub max: Option<Duration>,
    /// The randomized fraction of each wait, 0 to 1; default 0.5, or 0 when fixed.
    pub jitter: Option<f64>,
}

impl BackoffRequest {
    /// Checks every part; `prefix` goes before the part names in messages (`backoff.`).
    pub(super) fn validate(&self, prefix: &str) -> Result<(), Error> {
        let name = |f: &str| format!("{prefix}{f}");
        if self.base.is_some_and(|d| d > MAX_BACKOFF_BASE) {
            return Err(Error::invalid(name("base"), "at most 24 h"));
        }
        if self.factor.is_some_and(|f| !(1.0..=100.0).contains(&f)) {
            return Err(Error::invalid(name("factor"), "must be from 1 to 100"));
        }
        if self.max.is_some_and(|d| d > MAX_RETRY_WAIT) {
            return Err(Error::invalid(name("max"), "at most 7 days"));
        }
        if self.jitter.is_some_and(|j| !(0.0..=1.0).contains(&j)) {
            return Err(Error::invalid(name("jitter"), "must be from 0 to 1"));
        }
        Ok(())
    }

    /// The backoff as stored, its unset parts given their defaults.
    pub(super) fn into_spec(self) -> BackoffSpec {
        BackoffSpec {
            fixed: self.fixed,
            base_ms: self.base.map_or(1_000, duration_ms),
            factor: self.factor.unwrap_or(2.0),
            max_ms: self.max.map_or(3_600_000, duration_ms),
            jitter: self.jitter.unwrap_or(if self.fixed { 0.0 } else { 0.5 }),
        }
    }

    /// A stored backoff, every part given.
    pub(super) fn from_spec(spec: &BackoffSpec) -> Self {
        Self {
            fixed: spec.fixed,
            base: Some(Duration::from_millis(spec.base_ms)),
            factor: Some(spec.factor),
            max: Some(Duration::from_millis(spec.max_ms)),
            jitter: Some(spec.jitter),
        }
    }
}

/// What a producer asks to add.
#[derive(Clone, Debug, Default)]
pub struct NewJob {
    /// The queue to add to; created on first use.
    pub queue: String,
    /// The handler name workers dispatch on: 1 to 128 printable bytes, no spaces.
    pub job_type: String,
    /// Opaque bytes for the worker, at most `Limits::max_payload`.
    pub payload: Vec<u8>,
    /// Free-form headers delivered with the job (a W3C `traceparent` among them is followed):
    /// at most 64, keys 1 to 128 bytes, 16 KiB in all.
    pub headers: Vec<(String, String)>,
    /// Higher runs first, -5 to 5; FIFO within one priority.
    pub priority: i32,
    /// When it may first run.
    pub schedule: Schedule,
    /// Attempts before it goes dead, counting the first: 1 to 1,000; default 3.
    pub max_attempts: Option<u32>,
    /// The wait before each retry; None: exponential with the defaults of `BackoffRequest`.
    pub backoff: Option<BackoffRequest>,
    /// How long one attempt may run before it is revoked: 10 ms to 24 h; default 30 min.
    pub timeout: Option<Duration>,
    /// A repeat add with this key (at most 256 bytes) within the idempotency window adds
    /// nothing; None or empty: no key.
    pub idempotency_key: Option<String>,
    /// The key was generated by the client library for its own retries of this add, not chosen
    /// by the caller: it is remembered for the retry window instead (ignored without a key).
    pub idempotency_key_generated: bool,
    /// The session the job runs in (of the same queue).
    pub session: Option<SessionId>,
    /// The key whose rate limit (the queue's `key_rate` setting) its leases count against:
    /// 1 to 128 bytes, no control characters; None or empty: none.
    pub rate_key: Option<String>,
    /// The key whose concurrency cap (the queue's `key_concurrency` setting) its leases count
    /// against: as `rate_key`.
    pub concurrency_key: Option<String>,
}

/// Checks a rate or concurrency key: 1 to 128 bytes without control characters (the keyed jobs'
/// members in Redis are separated by control characters, `lua/limits_lib.lua`).
/// `{prefix}{field}`, formatted only when there is a prefix: a single add (no prefix) checks
/// its fields without an allocation per field name.
pub(super) fn prefixed<'a>(prefix: &str, field: &'a str) -> Cow<'a, str> {
    if prefix.is_empty() { Cow::Borrowed(field) } else { Cow::Owned(format!("{prefix}{field}")) }
}

fn validate_limit_key(key: Option<&String>, field: &str) -> Result<(), Error> {
    match key {
        Some(k) if k.len() > MAX_LIMIT_KEY => Err(Error::invalid(field, "at most 128 bytes")),
        Some(k) if k.chars().any(char::is_control) => Err(Error::invalid(field, "must hold no control characters")),
        _ => Ok(()),
    }
}

impl NewJob {
    /// Bytes this job brings in, for batch caps.
    pub(super) fn size(&self) -> usize {
        self.payload.len() + self.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    }

    /// Checks every field; `prefix` goes before the field names in messages (`jobs[3].`).
    pub(super) fn validate(&self, limits: &Limits, prefix: &str) -> Result<(), Error> {
        let name = |f: &'static str| prefixed(prefix, f);
        validate_queue(&self.queue, &name("queue"))?;
        if self.job_type.is_empty() || self.job_type.len() > MAX_NAME {
            return Err(Error::invalid(name("type"), "must be 1 to 128 bytes"));
        }
        if self.job_type.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::invalid(name("type"), "must be printable, without spaces"));
        }
        if self.payload.len() > limits.max_payload {
            return Err(Error::TooLarge(format!(
                "{}: {} bytes is over the limit of {} bytes",
                name("payload"),
                self.payload.len(),
                limits.max_payload
            )));
        }
        if self.headers.len() > MAX_HEADERS {
            return Err(Error::invalid(name("headers"), "at most 64 entries"));
        }
        if self.headers.iter().any(|(k, _)| k.is_empty() || k.len() > MAX_NAME) {
            return Err(Error::invalid(name("headers"), "keys must be 1 to 128 bytes"));
        }
        if self.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() > MAX_HEADER_BYTES {
            return Err(Error::invalid(name("headers"), "at most 16 KiB in all"));
        }
        if !(MIN_PRIORITY..=MAX_PRIORITY).contains(&self.priority) {
            return Err(Error::invalid(name("priority"), "must be from -5 to 5"));
        }
        match &self.schedule {
            Schedule::After(d) if *d > MAX_SCHEDULE => {
                return Err(Error::invalid(name("delay"), "at most 365 days"));
            }
            Schedule::At(t) if *t > SystemTime::now() + MAX_SCHEDULE => {
                return Err(Error::invalid(name("run_at"), "at most 365 days ahead"));
            }
            _ => {}
        }
        if self.max_attempts.is_some_and(|n| n == 0 || n > MAX_ATTEMPTS) {
            return Err(Error::invalid(name("max_attempts"), "must be from 1 to 1000"));
        }
        if self.timeout.is_some_and(|t| !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&t)) {
            return Err(Error::invalid(name("timeout"), "must be from 10 ms to 24 h"));
        }
        if let Some(b) = &self.backoff {
            b.validate(&name("backoff."))?;
        }
        if self.session.as_ref().is_some_and(|s| s.queue_name() != self.queue) {
            return Err(Error::invalid(name("session_id"), "the session belongs to another queue"));
        }
        if self.idempotency_key.as_ref().is_some_and(|k| k.len() > MAX_IDEMPOTENCY_KEY) {
            return Err(Error::invalid(name("idempotency_key"), "at most 256 bytes"));
        }
        validate_limit_key(self.rate_key.as_ref(), &name("rate_key"))?;
        validate_limit_key(self.concurrency_key.as_ref(), &name("concurrency_key"))?;
        let keyed = self.rate_key.as_ref().is_some_and(|k| !k.is_empty())
            || self.concurrency_key.as_ref().is_some_and(|k| !k.is_empty());
        if keyed && self.session.is_some() {
            return Err(Error::invalid(
                name("session_id"),
                "a job of a session takes no rate_key or concurrency_key (its session orders it)",
            ));
        }
        Ok(())
    }

    /// The record to store; `created_ms` comes from the ULID so both agree.
    pub(super) fn into_record(self, created_ms: i64) -> JobRecord {
        let backoff = self.backoff.map(BackoffRequest::into_spec);
        JobRecord {
            state: RecordState::Waiting,
            job_type: self.job_type,
            payload: self.payload,
            headers: self.headers,
            priority: self.priority,
            max_attempts: self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
            attempts: 0,
            lost: 0,
            created_ms,
            ready_at_ms: None,
            backoff,
            timeout_ms: duration_ms(self.timeout.unwrap_or(DEFAULT_TIMEOUT)),
            idempotency_key: self.idempotency_key.filter(|k| !k.is_empty()),
            started_ms: None,
            finished_ms: None,
            last_error: None,
            result: None,
            run_at_ms: None,
            session: None,
            cancel_requested: false,
            progress: None,
            rate_key: self.rate_key.filter(|k| !k.is_empty()),
            concurrency_key: self.concurrency_key.filter(|k| !k.is_empty()),
        }
    }
}

/// What the add returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Added {
    /// The job's id; for a duplicate, the id of the job first added with the key.
    pub job_id: JobId,
    /// The idempotency key was seen within the window: nothing was added.
    pub duplicate: bool,
}

/// A job handed to a worker stream.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The job's id.
    pub job_id: JobId,
    /// Its handler name, as added.
    pub job_type: String,
    /// Its payload, as added.
    pub payload: Vec<u8>,
    /// Its headers, as added.
    pub headers: Vec<(String, String)>,
    /// Its priority, as added.
    pub priority: i32,
    /// This attempt's number, from 1; lost deliveries do not use up attempts.
    pub attempt: u32,
    /// Its max_attempts.
    pub max_attempts: u32,
    /// Earlier deliveries whose stream ended without an answer.
    pub lost_deliveries: u32,
    /// The lease: only calls presenting it may complete, fail, extend or give back this attempt.
    pub lease_token: crate::store::LeaseToken,
    /// When this attempt times out unless extended (Redis server clock).
    pub deadline: SystemTime,
    /// When the job was added.
    pub created_at: SystemTime,
    /// For a job of a session: the session, its state and version at delivery.
    pub session: Option<(SessionId, String, u64)>,
    /// The job's `traceparent` header, parsed (None when absent or invalid).
    pub trace: Option<crate::telemetry::TraceContext>,
}

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Ready: delivered as soon as a worker has credit.
    Waiting,
    /// Added with a delay or a run time that has not come yet.
    Delayed,
    /// Delivered to a worker and not yet answered.
    Active,
    /// Failed an attempt and waits out its backoff.
    Retrying,
    /// Completed; kept, with its result, for the queue's retention.
    Completed,
    /// Out of attempts, not retryable or lost too often; kept in the dead-letter set.
    Dead,
    /// Cancelled (by a cancel, or because its session was deleted).
    Cancelled,
}

/// Everything known about one job.
#[derive(Clone, Debug)]
pub struct JobView {
    /// The job's id.
    pub id: JobId,
    /// Where it is now.
    pub state: JobState,
    /// Its handler name.
    pub job_type: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Its headers.
    pub headers: Vec<(String, String)>,
    /// Its priority.
    pub priority: i32,
    /// Attempts started so far, the running one included.
    pub attempts: u32,
    /// Its max_attempts.
    pub max_attempts: u32,
    /// Deliveries whose stream ended without an answer.
    pub lost_deliveries: u32,
    /// When it was added.
    pub created_at: SystemTime,
    /// When the current or last attempt started; None before the first.
    pub started_at: Option<SystemTime>,
    /// When it reached a final state; None before.
    pub finished_at: Option<SystemTime>,
    /// When a delayed or retrying job becomes ready; None otherwise.
    pub run_at: Option<SystemTime>,
    /// The last error (from a failure, or "timeout" / "lost"); None if none.
    pub last_error: Option<String>,
    /// The result of a completed job.
    pub result: Option<Vec<u8>>,
    /// The idempotency key given at add, if any.
    pub idempotency_key: Option<String>,
    /// The job's session, if any.
    pub session: Option<SessionId>,
    /// The last progress reported for it, if any.
    pub progress: Option<Vec<u8>>,
    /// While active: the worker stream holding it, `<instance>.<stream>` (never the lease
    /// token itself, which would let a reader ack the job).
    pub worker_stream: Option<String>,
}

impl JobView {
    /// The view of a stored job; `lease` is its current lease when it is active. A waiting
    /// record whose ready time is still to come is a job written in its ready form ahead of it
    /// (a schedule's fire claimed ahead of its due time, which waits delayed until then): it is
    /// shown delayed until that time.
    pub(super) fn new(id: JobId, record: JobRecord, lease: Option<Lease>) -> Self {
        let session = record.session_name().map(|name| SessionId::new(&id.queue, name));
        let worker_stream = lease.as_ref().map(|l| format!("{}.{}", l.token.instance(), l.token.stream()));
        let ready_ahead = (record.state == RecordState::Waiting)
            .then_some(record.ready_at_ms)
            .flatten()
            .filter(|&ready| ready > to_ms(SystemTime::now()));
        let (state, attempts, started_ms) = match &lease {
            Some(l) => (JobState::Active, l.attempt, Some(l.started_ms)),
            None => (
                match record.state {
                    RecordState::Waiting if ready_ahead.is_some() => JobState::Delayed,
                    RecordState::Waiting => JobState::Waiting,
                    RecordState::Delayed => JobState::Delayed,
                    RecordState::Retrying => JobState::Retrying,
                    RecordState::Completed => JobState::Completed,
                    RecordState::Dead => JobState::Dead,
                    RecordState::Cancelled => JobState::Cancelled,
                },
                record.attempts,
                record.started_ms,
            ),
        };
        Self {
            id,
            state,
            job_type: record.job_type,
            payload: record.payload,
            headers: record.headers,
            priority: record.priority,
            attempts,
            max_attempts: record.max_attempts,
            lost_deliveries: record.lost,
            created_at: from_ms(record.created_ms),
            started_at: started_ms.map(from_ms),
            finished_at: record.finished_ms.map(from_ms),
            run_at: record.run_at_ms.or(ready_ahead).map(from_ms),
            last_error: record.last_error,
            session,
            result: record.result,
            idempotency_key: record.idempotency_key,
            progress: record.progress,
            worker_stream,
        }
    }
}

/// A time the store keeps as Unix milliseconds (one before 1970 reads as 1970).
pub(super) fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A time as the store keeps it, Unix milliseconds (before 1970: 0; saturating far ahead).
pub(super) fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A duration as the store keeps it, milliseconds (saturating: no duration this layer accepts is
/// anywhere near).
pub(super) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_round_trip_and_reject_garbage() {
        let id = JobId::parse("emails/01JD8Y3V6Q0000000000000000", "job_id").expect("valid");
        assert_eq!(id.queue, "emails");
        assert_eq!(id.to_string(), "emails/01JD8Y3V6Q0000000000000000");
        for bad in ["", "emails", "emails/", "/01JD8Y3V6Q0000000000000000", "e{x}/01JD8Y3V6Q0000000000000000", "q/nope"]
        {
            assert!(JobId::parse(bad, "job_id").is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn validation_names_the_field() {
        let limits = Limits::default();
        let base = NewJob { queue: "q".into(), job_type: "t".into(), ..Default::default() };
        assert!(base.validate(&limits, "").is_ok());
        let cases: Vec<(NewJob, &str)> = vec![
            (NewJob { priority: 6, ..base.clone() }, "priority"),
            (NewJob { queue: "a b".into(), ..base.clone() }, "queue"),
            (NewJob { job_type: String::new(), ..base.clone() }, "type"),
            (NewJob { max_attempts: Some(0), ..base.clone() }, "max_attempts"),
            (NewJob { timeout: Some(Duration::from_secs(90_000)), ..base.clone() }, "timeout"),
            (NewJob { payload: vec![0; limits.max_payload + 1], ..base.clone() }, "payload"),
        ];
        for (job, field) in cases {
            let err = job.validate(&limits, "jobs[2].").expect_err(field).to_string();
            assert!(err.starts_with(&format!("jobs[2].{field}")), "{err}");
        }
    }
}
