//! The packed job record: two msgpack arrays per job, stored as one hash field; and the lease
//! string of an active job. Every number read back is checked into its type: a value that does
//! not fit is corrupt data, never a silent wrap.
//!
//! Why packed: a Redis hash per job leaves the compact listpack encoding as soon as one field
//! passes 64 bytes (any real payload) and then costs 800-1,200 bytes; one packed value keeps a
//! waiting job under the 300-byte budget. The Lua scripts read and rewrite the same arrays with
//! `cmsgpack`, so the field order here is the `R_*` order in `lua/lib.lua`. Absent values are
//! `false`, never nil: a nil would punch a hole that turns the Lua array into a map.
//!
//! Why two arrays: the first holds only what a lease reads (attempts, timeout, session, cancel
//! flag), so leasing decodes four fields instead of the whole record. And a completion does
//! not rewrite the record at all: its outcome is stored apart (see `decode_completed`).

use rmpv::Value;

use super::{LeaseToken, StoreError};

mod fields;

use fields::{Fields, Item};

/// A lease as stored: who holds the job since when, and which attempt it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The holder: only a call presenting this token changes the job.
    pub token: LeaseToken,
    /// When the attempt started (epoch ms, Redis's clock).
    pub started_ms: i64,
    /// The attempt's number, from 1.
    pub attempt: u32,
}

impl Lease {
    /// `token|started_ms|attempt`, optionally followed by `|flags` (see `lua/lib.lua`); None
    /// when any of the three, the token included, does not parse.
    pub fn parse(raw: &str) -> Option<Self> {
        let mut parts = raw.split('|');
        let token = LeaseToken::parse(parts.next()?)?;
        let started_ms = parts.next()?.parse().ok()?;
        let attempt = parts.next()?.parse().ok()?;
        Some(Lease { token, started_ms, attempt })
    }

    /// A lease read from the active hash, if the job holds one; one that does not parse is
    /// corrupt data.
    pub fn decode(raw: Option<&str>) -> Result<Option<Self>, StoreError> {
        raw.map(|raw| Self::parse(raw).ok_or_else(|| corrupt("an unreadable lease"))).transpose()
    }
}

/// Where a record says the job is; "active" is not stored here but in the lease hash (an
/// active job's record keeps the state it was leased from). The values are `S_*` of
/// `lua/lib.lua`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordState {
    /// Ready in its priority's list, or pending in its session.
    Waiting = 1,
    /// Waiting for its delay or `run_at` (in the delayed set, or pending in its session).
    Delayed = 2,
    /// Failed, and waiting out its retry backoff in the delayed set.
    Retrying = 4,
    /// Completed; retained for the completed window with its result.
    Completed = 5,
    /// Out of attempts, failed for good or lost too often: in the dead-letter set.
    Dead = 6,
    /// Cancelled by an operator, or because its session went.
    Cancelled = 7,
}

/// Retry wait policy as stored: `[kind, base_ms, factor, max_ms, jitter]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackoffSpec {
    /// Every retry waits `base_ms`; otherwise the wait grows by `factor` per attempt.
    pub fixed: bool,
    /// The wait before the first retry.
    pub base_ms: u64,
    /// The growth per attempt of an exponential backoff (ignored when `fixed`).
    pub factor: f64,
    /// The longest wait of an exponential backoff.
    pub max_ms: u64,
    /// In [0, 1]: the share of the wait taken off at random (0: exact waits).
    pub jitter: f64,
}

/// A job as stored in its queue's jobs hash (see the module doc for the packing).
#[derive(Clone, Debug, PartialEq)]
pub struct JobRecord {
    /// Where the job is (see [`RecordState`]).
    pub state: RecordState,
    /// The handler name workers dispatch on, given at add.
    pub job_type: String,
    /// The producer's bytes, opaque to jobwire.
    pub payload: Vec<u8>,
    /// The producer's key/value headers (e.g. `traceparent`), in the order given.
    pub headers: Vec<(String, String)>,
    /// From `MIN_PRIORITY` to `MAX_PRIORITY`; higher runs first.
    pub priority: i32,
    /// Attempts allowed before the job goes dead.
    pub max_attempts: u32,
    /// Attempts that ended (completed, failed or timed out); a lost delivery is not one.
    pub attempts: u32,
    /// Deliveries lost (the worker's stream ended while holding the job).
    pub lost: u32,
    /// When it was added (epoch ms, the adding instance's clock).
    pub created_ms: i64,
    /// When it last became ready (epoch ms, Redis's clock); None before it first did.
    pub ready_at_ms: Option<i64>,
    /// None: the default policy of lib.lua (exponential 1 s x2 up to 1 h, jitter 0.5).
    pub backoff: Option<BackoffSpec>,
    /// How long one attempt may run before it times out.
    pub timeout_ms: u64,
    /// The producer's key that makes repeated adds one job (within the idempotency window).
    pub idempotency_key: Option<String>,
    /// When the last attempt that ended had started (epoch ms, Redis's clock); an active
    /// attempt's start is in its [`Lease`].
    pub started_ms: Option<i64>,
    /// When the job completed, died or was cancelled (epoch ms, Redis's clock).
    pub finished_ms: Option<i64>,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
    /// The result of the completing attempt.
    pub result: Option<Vec<u8>>,
    /// While delayed or retrying: when it becomes ready (epoch ms, Redis's clock).
    pub run_at_ms: Option<i64>,
    /// `name/seq/ULID` for a job of a session (its place in the session's order).
    pub session: Option<String>,
    /// Cancelled while active: whatever happens next ends it cancelled.
    pub cancel_requested: bool,
    /// The last progress its current or last holder reported, opaque to jobwire.
    pub progress: Option<Vec<u8>>,
    /// The key whose rate limit the job's leases count against (`lua/limits_lib.lua`).
    pub rate_key: Option<String>,
    /// The key whose concurrency cap the job's leases count against.
    pub concurrency_key: Option<String>,
}

impl JobRecord {
    /// The session's name, for a job of a session.
    pub fn session_name(&self) -> Option<&str> {
        self.session.as_deref().and_then(|m| m.split('/').next())
    }
}

/// Fields of the leading array (read by every lease), then of the second one.
const HOT_FIELDS: usize = 4;
const COLD_FIELDS: usize = 20;
/// The cold fields of a job without a rate or concurrency key: the three after them (the keys
/// and the job's place among the keyed jobs, written by Lua) are left out.
const UNKEYED_COLD_FIELDS: usize = 17;
/// ... and of one without progress either, which ends the array one field earlier. No more is
/// left out: the functions of earlier releases, which may run beside these during a rolling
/// upgrade, set a later field on its own only to the progress (`lua/progress.lua`), and a field
/// set past a missing one would leave a hole that cmsgpack packs as a map. One byte, and the
/// one that takes bench f's job with a generated key (payload, key and all: 188 bytes) into
/// Redis's 192-byte allocation from the 224-byte one.
const UNKEYED_COLD_FIELDS_NO_PROGRESS: usize = 16;

/// A msgpack writer for the subset Redis's `cmsgpack` reads back. Bytes are written as msgpack
/// *str*, never *bin*: cmsgpack predates the bin family and refuses it.
struct Packer {
    out: Vec<u8>,
    /// A length or number msgpack cannot hold was met (the record is refused).
    overflow: bool,
}

// Writing into a Vec cannot fail, so the writers' results are ignored.
impl Packer {
    fn new(capacity: usize) -> Self {
        Self { out: Vec::with_capacity(capacity), overflow: false }
    }

    fn len(&mut self, n: usize) -> u32 {
        u32::try_from(n).unwrap_or_else(|_| {
            self.overflow = true;
            0
        })
    }

    fn bytes(&mut self, b: &[u8]) {
        let len = self.len(b.len());
        let _ = rmp::encode::write_str_len(&mut self.out, len);
        self.out.extend_from_slice(b);
    }

    fn uint(&mut self, n: u64) {
        let n = i64::try_from(n).unwrap_or_else(|_| {
            self.overflow = true;
            0
        });
        self.int(n);
    }

    fn int(&mut self, i: i64) {
        let _ = rmp::encode::write_sint(&mut self.out, i);
    }

    fn float(&mut self, f: f64) {
        let _ = rmp::encode::write_f64(&mut self.out, f);
    }

    fn absent(&mut self) {
        let _ = rmp::encode::write_bool(&mut self.out, false);
    }

    fn array(&mut self, len: usize) {
        let len = self.len(len);
        let _ = rmp::encode::write_array_len(&mut self.out, len);
    }

    fn opt_int(&mut self, i: Option<i64>) {
        match i {
            Some(i) => self.int(i),
            None => self.absent(),
        }
    }

    fn opt_bytes(&mut self, b: Option<&[u8]>) {
        match b {
            Some(b) => self.bytes(b),
            None => self.absent(),
        }
    }
}

impl JobRecord {
    /// Packs the record; refused when a length or number does not fit msgpack.
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        let mut p = Packer::new(self.payload.len() + 64);
        p.array(HOT_FIELDS);
        p.int(i64::from(self.attempts));
        p.uint(self.timeout_ms);
        p.opt_bytes(self.session.as_deref().map(str::as_bytes));
        let _ = rmp::encode::write_bool(&mut p.out, self.cancel_requested);
        let keyed = self.rate_key.is_some() || self.concurrency_key.is_some();
        p.array(match (keyed, &self.progress) {
            (true, _) => COLD_FIELDS,
            (false, Some(_)) => UNKEYED_COLD_FIELDS,
            (false, None) => UNKEYED_COLD_FIELDS_NO_PROGRESS,
        });
        p.int(self.state as i64);
        p.bytes(self.job_type.as_bytes());
        p.bytes(&self.payload);
        if self.headers.is_empty() {
            p.absent();
        } else {
            p.array(self.headers.len().saturating_mul(2));
            for (k, v) in &self.headers {
                p.bytes(k.as_bytes());
                p.bytes(v.as_bytes());
            }
        }
        p.int(i64::from(self.priority));
        p.int(i64::from(self.max_attempts));
        p.int(i64::from(self.lost));
        p.int(self.created_ms);
        p.opt_int(self.ready_at_ms);
        match self.backoff {
            Some(b) => {
                p.array(5);
                p.int(if b.fixed { 2 } else { 1 });
                p.uint(b.base_ms);
                p.float(b.factor);
                p.uint(b.max_ms);
                p.float(b.jitter);
            }
            None => p.absent(),
        }
        p.opt_bytes(self.idempotency_key.as_deref().map(str::as_bytes));
        p.opt_int(self.started_ms);
        p.opt_int(self.finished_ms);
        p.opt_bytes(self.last_error.as_deref().map(str::as_bytes));
        p.opt_bytes(self.result.as_deref());
        p.opt_int(self.run_at_ms);
        if keyed || self.progress.is_some() {
            p.opt_bytes(self.progress.as_deref());
        }
        if keyed {
            p.opt_bytes(self.rate_key.as_deref().map(str::as_bytes));
            p.opt_bytes(self.concurrency_key.as_deref().map(str::as_bytes));
            // Its place among the keyed jobs: written by the function that makes it ready.
            p.absent();
        }
        if p.overflow {
            return Err(corrupt("a record too large to pack"));
        }
        Ok(p.out)
    }

    /// Reads a record as stored in the jobs hash, with the outcome of its completion if any.
    pub fn decode(raw: &[u8], outcome: Option<&[u8]>) -> Result<Self, StoreError> {
        match outcome {
            Some(outcome) => Self::decode_completed(raw, outcome),
            None => Self::decode_record(raw),
        }
    }

    fn decode_record(raw: &[u8]) -> Result<Self, StoreError> {
        let mut fields = Fields::new(raw);
        let record = Self::read_fields(&mut fields)?;
        if !fields.is_done() {
            return Err(corrupt("bytes after the record"));
        }
        Ok(record)
    }

    /// Reads the record of a completed job with its outcome: msgpack finish time (ms), the
    /// attempt's lease (`token|started_ms|attempt[|flags]`) and result, one after the other,
    /// as `lua/complete.lua` writes them.
    fn decode_completed(raw: &[u8], outcome: &[u8]) -> Result<Self, StoreError> {
        let mut record = Self::decode_record(raw)?;
        let mut rest = Fields::new(outcome);
        let finished = rest.item()?.int()?;
        let lease = rest.item()?.text()?;
        let result = rest.item()?.bytes()?;
        let lease = Lease::parse(&lease).ok_or_else(|| corrupt("outcome with an unreadable lease"))?;
        record.state = RecordState::Completed;
        record.finished_ms = Some(finished);
        record.started_ms = Some(lease.started_ms);
        record.attempts = lease.attempt;
        record.result = Some(result);
        Ok(record)
    }

    /// The two arrays of a record, field by field in the `R_*` order.
    fn read_fields(fields: &mut Fields<'_>) -> Result<Self, StoreError> {
        // Lua leaves out trailing absent fields when it repacks; they read as absent.
        let mut hot = fields.array(HOT_FIELDS, "the record's first array")?;
        let attempts = fields.field(&mut hot)?.number("attempts")?;
        let timeout_ms = fields.field(&mut hot)?.number("the timeout")?;
        let session = fields.field(&mut hot)?.maybe(Item::text)?;
        let cancel_requested = matches!(fields.field(&mut hot)?, Item::True);
        let mut cold = fields.array(COLD_FIELDS, "the record's second array")?;
        let state = match fields.field(&mut cold)?.int()? {
            1 => RecordState::Waiting,
            2 => RecordState::Delayed,
            4 => RecordState::Retrying,
            5 => RecordState::Completed,
            6 => RecordState::Dead,
            7 => RecordState::Cancelled,
            other => return Err(corrupt(&format!("unknown state {other}"))),
        };
        let job_type = fields.field(&mut cold)?.text()?;
        let payload = fields.field(&mut cold)?.bytes()?;
        let headers = match fields.field(&mut cold)? {
            Item::Array(n) => {
                let mut pairs = Vec::with_capacity(usize::try_from(n / 2).unwrap_or(0).min(64));
                for _ in 0..n / 2 {
                    let key = fields.item()?.text()?;
                    pairs.push((key, fields.item()?.text()?));
                }
                if n % 2 == 1 {
                    fields.item()?;
                }
                pairs
            }
            _ => Vec::new(),
        };
        let priority = fields.field(&mut cold)?.number("the priority")?;
        let max_attempts = fields.field(&mut cold)?.number("max attempts")?;
        let lost = fields.field(&mut cold)?.number("lost deliveries")?;
        let created_ms = fields.field(&mut cold)?.int()?;
        let ready_at_ms = fields.field(&mut cold)?.maybe(Item::int)?;
        let backoff = match fields.field(&mut cold)? {
            Item::Absent => None,
            Item::Array(5) => Some(BackoffSpec {
                fixed: fields.item()?.int()? == 2,
                base_ms: fields.item()?.number("the backoff base")?,
                factor: fields.item()?.float()?,
                max_ms: fields.item()?.number("the backoff maximum")?,
                jitter: fields.item()?.float()?,
            }),
            _ => return Err(corrupt("backoff is not a 5-array")),
        };
        Ok(JobRecord {
            state,
            job_type,
            payload,
            headers,
            priority,
            max_attempts,
            attempts,
            lost,
            created_ms,
            ready_at_ms,
            backoff,
            timeout_ms,
            idempotency_key: fields.field(&mut cold)?.maybe(Item::text)?,
            started_ms: fields.field(&mut cold)?.maybe(Item::int)?,
            finished_ms: fields.field(&mut cold)?.maybe(Item::int)?,
            last_error: fields.field(&mut cold)?.maybe(Item::text)?,
            result: fields.field(&mut cold)?.maybe(Item::bytes)?,
            run_at_ms: fields.field(&mut cold)?.maybe(Item::int)?,
            session,
            cancel_requested,
            progress: fields.field(&mut cold)?.maybe(Item::bytes)?,
            rate_key: fields.field(&mut cold)?.maybe(Item::text)?,
            concurrency_key: {
                let key = fields.field(&mut cold)?.maybe(Item::text)?;
                // The job's place among the keyed jobs is Lua's alone.
                fields.field(&mut cold)?;
                key
            },
        })
    }
}

pub(super) fn read(rest: &mut &[u8]) -> Result<Value, StoreError> {
    rmpv::decode::read_value(rest).map_err(|e| corrupt(&e.to_string()))
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

/// A msgpack integer (also read by the session meta).
pub(super) fn int(value: &Value) -> Result<i64, StoreError> {
    match value {
        Value::Integer(i) => i.as_i64().ok_or_else(|| corrupt("integer out of range")),
        // Lua numbers are doubles; cmsgpack writes integral ones as integers, but be lenient.
        #[expect(clippy::cast_possible_truncation, reason = "an integral double this side of ±2^63 converts exactly")]
        Value::F64(f) if f.fract() == 0.0 && f.abs() < 9_223_372_036_854_775_808.0 => Ok(*f as i64),
        _ => Err(corrupt("expected an integer")),
    }
}

/// A msgpack integer as the type of its field.
pub(super) fn number<T: TryFrom<i64>>(value: &Value, what: &str) -> Result<T, StoreError> {
    let n = int(value)?;
    T::try_from(n).map_err(|_| corrupt(&format!("{what} out of range: {n}")))
}

pub(super) fn bytes(value: Value) -> Result<Vec<u8>, StoreError> {
    match value {
        Value::Binary(b) => Ok(b),
        // cmsgpack writes every Lua string as a msgpack str, valid UTF-8 or not.
        Value::String(s) => Ok(s.into_bytes()),
        _ => Err(corrupt("expected bytes")),
    }
}

pub(super) fn text(value: Value) -> Result<String, StoreError> {
    String::from_utf8(bytes(value)?).map_err(|_| corrupt("expected UTF-8 text"))
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting() -> JobRecord {
        JobRecord {
            state: RecordState::Waiting,
            job_type: "t".into(),
            payload: b"{}".to_vec(),
            headers: Vec::new(),
            priority: 0,
            max_attempts: 3,
            attempts: 0,
            lost: 0,
            created_ms: 1_764_000_000_000,
            ready_at_ms: Some(1_764_000_000_000),
            backoff: None,
            timeout_ms: 30_000,
            idempotency_key: None,
            started_ms: None,
            finished_ms: None,
            last_error: None,
            result: None,
            run_at_ms: None,
            session: None,
            cancel_requested: false,
            progress: None,
            rate_key: None,
            concurrency_key: None,
        }
    }

    #[test]
    fn an_outcome_completes_the_record() {
        let raw = waiting().encode().expect("encodes");
        let mut p = Packer::new(0);
        p.int(1_764_000_000_900);
        p.bytes(b"i1.2.3|1764000000500|2|s");
        p.bytes(b"the result");
        let expected = JobRecord {
            state: RecordState::Completed,
            attempts: 2,
            started_ms: Some(1_764_000_000_500),
            finished_ms: Some(1_764_000_000_900),
            result: Some(b"the result".to_vec()),
            ..waiting()
        };
        assert_eq!(JobRecord::decode(&raw, Some(&p.out)).expect("decodes"), expected);
        assert!(JobRecord::decode(&raw, Some(&p.out[..p.out.len() - 2])).is_err(), "a cut outcome is corrupt");
        assert!(JobRecord::decode(&raw[..raw.len() - 2], None).is_err(), "a cut record is corrupt");
    }

    #[test]
    fn round_trips_every_field() {
        let record = JobRecord {
            state: RecordState::Retrying,
            job_type: "email".into(),
            payload: vec![0, 159, 146, 150, 255],
            headers: vec![("traceparent".into(), "00-abc".into())],
            priority: -3,
            max_attempts: 7,
            attempts: 2,
            lost: 1,
            created_ms: 1_764_000_000_123,
            ready_at_ms: Some(1_764_000_000_999),
            backoff: Some(BackoffSpec { fixed: true, base_ms: 250, factor: 1.5, max_ms: 9_000, jitter: 0.25 }),
            timeout_ms: 30_000,
            idempotency_key: Some("order-17".into()),
            started_ms: Some(5),
            finished_ms: None,
            last_error: Some("boom".into()),
            result: Some(b"ok".to_vec()),
            run_at_ms: Some(77),
            session: Some("s1/0000000000000001/01JD8Y3V6Q0000000000000000".into()),
            cancel_requested: true,
            progress: Some(b"50%".to_vec()),
            rate_key: Some("api.example".into()),
            concurrency_key: Some("tenant-7".into()),
        };
        assert_eq!(JobRecord::decode(&record.encode().expect("encodes"), None).expect("decodes"), record);
    }

    #[test]
    fn a_record_ends_before_an_unset_progress_and_nowhere_earlier() {
        let cold_len = |record: &JobRecord| {
            let raw = record.encode().expect("encodes");
            let mut fields = Fields::new(&raw);
            let _ = fields.array(HOT_FIELDS, "hot").expect("the first array");
            (0..HOT_FIELDS).for_each(|_| {
                let _ = fields.item().expect("a hot field");
            });
            fields.array(COLD_FIELDS, "cold").expect("the second array")
        };
        let plain = waiting();
        assert_eq!(cold_len(&plain), 16, "no progress: it ends at the run time, set or not");
        let reported = JobRecord { progress: Some(b"1/2".to_vec()), ..waiting() };
        assert_eq!(cold_len(&reported), 17);
        let keyed = JobRecord { rate_key: Some("r".into()), ..waiting() };
        assert_eq!(cold_len(&keyed), 20, "a keyed job keeps the place Lua writes");
        for record in [plain, reported, keyed] {
            assert_eq!(JobRecord::decode(&record.encode().expect("encodes"), None).expect("decodes"), record);
        }
    }

    #[test]
    fn refuses_numbers_that_do_not_fit_their_field() {
        let mut record = waiting();
        record.timeout_ms = u64::MAX;
        assert!(record.encode().is_err(), "a timeout past i64 cannot be packed");
        let mut p = Packer::new(0);
        p.array(HOT_FIELDS);
        p.int(-1);
        p.int(30_000);
        p.absent();
        p.absent();
        let mut raw = p.out;
        let encoded = waiting().encode().expect("encodes");
        let mut cold = &encoded[..];
        rmpv::decode::read_value(&mut cold).expect("the first array");
        raw.extend_from_slice(cold);
        assert!(JobRecord::decode(&raw, None).is_err(), "negative attempts are corrupt, not a wrap");
    }

    #[test]
    fn parses_leases_with_dots_and_pipes_in_order() {
        let lease = Lease::parse("abc.7.42|1700000000000|3").expect("parses");
        assert_eq!(lease, Lease { token: LeaseToken::new("abc", 7, 42), started_ms: 1_700_000_000_000, attempt: 3 });
        assert_eq!(Lease::parse("garbage"), None);
        assert_eq!(Lease::parse("abc|1700000000000|3"), None, "a token that is not one");
    }

    #[test]
    fn reads_what_lua_may_write_short_arrays_doubles_and_bin() {
        let mut raw = Vec::new();
        rmp::encode::write_array_len(&mut raw, 2).expect("write");
        rmp::encode::write_f64(&mut raw, 2.0).expect("write");
        rmp::encode::write_u16(&mut raw, 30_000).expect("write");
        // Eight of the seventeen fields of the second array: the ones a record cannot lack.
        rmp::encode::write_array_len(&mut raw, 8).expect("write");
        rmp::encode::write_u8(&mut raw, 1).expect("write");
        rmp::encode::write_bin(&mut raw, b"t").expect("write");
        rmp::encode::write_str(&mut raw, "{}").expect("write");
        rmp::encode::write_array_len(&mut raw, 3).expect("write");
        for header in ["traceparent", "00-x", "odd one out"] {
            rmp::encode::write_str(&mut raw, header).expect("write");
        }
        rmp::encode::write_sint(&mut raw, -1).expect("write");
        rmp::encode::write_f64(&mut raw, 3.0).expect("write");
        rmp::encode::write_u8(&mut raw, 0).expect("write");
        rmp::encode::write_u64(&mut raw, 1_764_000_000_000).expect("write");
        let record = JobRecord::decode(&raw, None).expect("decodes");
        assert_eq!((record.attempts, record.timeout_ms, record.state), (2, 30_000, RecordState::Waiting));
        assert_eq!((record.job_type.as_str(), record.payload.as_slice()), ("t", b"{}".as_slice()));
        assert_eq!(record.headers, [("traceparent".to_owned(), "00-x".to_owned())]);
        assert_eq!((record.priority, record.max_attempts, record.created_ms), (-1, 3, 1_764_000_000_000));
        assert_eq!((record.session, record.backoff, record.ready_at_ms, record.progress), (None, None, None, None));
        let mut map = raw.clone();
        map.truncate(map.len() - 9);
        map.push(0x80);
        assert!(JobRecord::decode(&map, None).is_err(), "a map where a number should be");
    }

    #[test]
    fn rejects_garbage() {
        assert!(JobRecord::decode(b"\x93\x01\x02", None).is_err());
        assert!(JobRecord::decode(b"not msgpack", None).is_err());
    }
}
