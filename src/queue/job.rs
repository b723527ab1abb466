//! Jobs as the domain sees them: ids, what a producer asks for (validated here, against the
//! limits), what a worker receives, and what an operator reads.

use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::store::{BackoffSpec, JobRecord, Lease, MAX_PRIORITY, MIN_PRIORITY, RecordState};

use super::{error::Error, settings::Limits};

pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const MAX_NAME: usize = 128;
const MAX_ATTEMPTS: u32 = 1_000;
const MIN_TIMEOUT: Duration = Duration::from_millis(10);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
const MAX_SCHEDULE: Duration = Duration::from_secs(365 * 24 * 3600);
const MAX_HEADERS: usize = 64;
const MAX_HEADER_BYTES: usize = 16 * 1024;
const MAX_IDEMPOTENCY_KEY: usize = 256;
const MAX_BACKOFF_BASE: Duration = Duration::from_secs(24 * 3600);
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// `<queue>/<ULID>`: leads to the queue's keys without any global lookup.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JobId {
    pub queue: String,
    pub ulid: String,
}

impl JobId {
    pub fn new(queue: &str, ulid: &str) -> Self {
        Self { queue: queue.to_owned(), ulid: ulid.to_owned() }
    }

    pub fn parse(raw: &str, field: &str) -> Result<Self, Error> {
        let invalid = || Error::invalid(field, "must be a job id of the form <queue>/<ULID>");
        let (queue, ulid) = raw.rsplit_once('/').ok_or_else(invalid)?;
        validate_queue(queue, field)?;
        if ulid.parse::<ulid::Ulid>().is_err() {
            return Err(invalid());
        }
        Ok(Self::new(queue, ulid))
    }

    /// The error for a job that does not exist, or no longer.
    pub fn not_found(&self) -> Error {
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
    pub queue: String,
    pub name: String,
}

impl SessionId {
    pub fn new(queue: &str, name: &str) -> Self {
        Self { queue: queue.to_owned(), name: name.to_owned() }
    }

    pub fn parse(raw: &str, field: &str) -> Result<Self, Error> {
        let (queue, name) = raw
            .split_once('/')
            .ok_or_else(|| Error::invalid(field, "must be a session id of the form <queue>/<name>"))?;
        validate_queue(queue, field)?;
        validate_queue(name, field)?;
        Ok(Self::new(queue, name))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.queue, self.name)
    }
}

pub fn validate_queue(queue: &str, field: &str) -> Result<(), Error> {
    if queue.is_empty() || queue.len() > MAX_NAME {
        return Err(Error::invalid(field, "must be 1 to 128 characters"));
    }
    if !queue.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')) {
        return Err(Error::invalid(field, "may only contain A-Z a-z 0-9 _ . : -"));
    }
    Ok(())
}

#[derive(Clone, Debug, Default, PartialEq)]
pub enum Schedule {
    #[default]
    Now,
    After(Duration),
    At(SystemTime),
}

/// A retry policy as asked for; unset parts take the defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackoffRequest {
    pub fixed: bool,
    pub base: Option<Duration>,
    pub factor: Option<f64>,
    pub max: Option<Duration>,
    pub jitter: Option<f64>,
}

/// What a producer asks to add.
#[derive(Clone, Debug, Default)]
pub struct NewJob {
    pub queue: String,
    pub job_type: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub priority: i32,
    pub schedule: Schedule,
    pub max_attempts: Option<u32>,
    pub backoff: Option<BackoffRequest>,
    pub timeout: Option<Duration>,
    pub idempotency_key: Option<String>,
    /// The session the job runs in (of the same queue).
    pub session: Option<SessionId>,
}

impl NewJob {
    /// Bytes this job brings in, for batch caps.
    pub fn size(&self) -> usize {
        self.payload.len() + self.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    }

    /// Checks every field; `field` prefixes the names in messages (`jobs[3].`).
    pub fn validate(&self, limits: &Limits, prefix: &str) -> Result<(), Error> {
        let name = |f: &str| format!("{prefix}{f}");
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
            if b.base.is_some_and(|d| d > MAX_BACKOFF_BASE) {
                return Err(Error::invalid(name("backoff.base"), "at most 24 h"));
            }
            if b.factor.is_some_and(|f| !(1.0..=100.0).contains(&f)) {
                return Err(Error::invalid(name("backoff.factor"), "must be from 1 to 100"));
            }
            if b.max.is_some_and(|d| d > MAX_RETRY_WAIT) {
                return Err(Error::invalid(name("backoff.max"), "at most 7 days"));
            }
            if b.jitter.is_some_and(|j| !(0.0..=1.0).contains(&j)) {
                return Err(Error::invalid(name("backoff.jitter"), "must be from 0 to 1"));
            }
        }
        if self.session.as_ref().is_some_and(|s| s.queue != self.queue) {
            return Err(Error::invalid(name("session_id"), "the session belongs to another queue"));
        }
        if self.idempotency_key.as_ref().is_some_and(|k| k.len() > MAX_IDEMPOTENCY_KEY) {
            return Err(Error::invalid(name("idempotency_key"), "at most 256 bytes"));
        }
        Ok(())
    }

    /// The record to store; `created_ms` comes from the ULID so both agree.
    pub fn into_record(self, created_ms: i64) -> JobRecord {
        let backoff = self.backoff.map(|b| BackoffSpec {
            fixed: b.fixed,
            base_ms: b.base.map_or(1_000, |d| d.as_millis() as u64),
            factor: b.factor.unwrap_or(2.0),
            max_ms: b.max.map_or(3_600_000, |d| d.as_millis() as u64),
            jitter: b.jitter.unwrap_or(if b.fixed { 0.0 } else { 0.5 }),
        });
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
            timeout_ms: self.timeout.unwrap_or(DEFAULT_TIMEOUT).as_millis() as u64,
            idempotency_key: self.idempotency_key.filter(|k| !k.is_empty()),
            started_ms: None,
            finished_ms: None,
            last_error: None,
            result: None,
            run_at_ms: None,
            session: None,
            cancel_requested: false,
            progress: None,
        }
    }
}

/// What the add returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Added {
    pub job_id: JobId,
    pub duplicate: bool,
}

/// A job handed to a worker stream.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub job_id: JobId,
    pub job_type: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub priority: i32,
    pub attempt: u32,
    pub max_attempts: u32,
    pub lost_deliveries: u32,
    pub lease_token: crate::store::LeaseToken,
    pub deadline: SystemTime,
    pub created_at: SystemTime,
    /// For a job of a session: the session, its state and version at delivery.
    pub session: Option<(SessionId, String, u64)>,
    /// The job's `traceparent` header, parsed (None when absent or invalid).
    pub trace: Option<crate::telemetry::TraceContext>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    Waiting,
    Delayed,
    Active,
    Retrying,
    Completed,
    Dead,
    Cancelled,
}

impl JobState {
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Completed | JobState::Dead | JobState::Cancelled)
    }
}

/// Everything known about one job.
#[derive(Clone, Debug)]
pub struct JobView {
    pub id: JobId,
    pub state: JobState,
    pub job_type: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub priority: i32,
    pub attempts: u32,
    pub max_attempts: u32,
    pub lost_deliveries: u32,
    pub created_at: SystemTime,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    pub run_at: Option<SystemTime>,
    pub last_error: Option<String>,
    pub result: Option<Vec<u8>>,
    pub idempotency_key: Option<String>,
    pub session: Option<SessionId>,
    pub progress: Option<Vec<u8>>,
}

impl JobView {
    pub fn new(id: JobId, record: JobRecord, lease: Option<Lease>) -> Self {
        let session = record.session_name().map(|name| SessionId::new(&id.queue, name));
        let (state, attempts, started_ms) = match &lease {
            Some(l) => (JobState::Active, l.attempt, Some(l.started_ms)),
            None => (
                match record.state {
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
            run_at: record.run_at_ms.map(from_ms),
            last_error: record.last_error,
            session,
            result: record.result,
            idempotency_key: record.idempotency_key,
            progress: record.progress,
        }
    }
}

pub fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

pub fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

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
