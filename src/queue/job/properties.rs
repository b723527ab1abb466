//! Properties of `NewJob::validate`, checked with proptest: no request makes it panic; a
//! request that differs from a valid one in one field is refused exactly when that field breaks
//! its documented limit (the proto's and `NewJob`'s docs), and the refusal names that field
//! behind the batch prefix; every job it accepts becomes a record the store can write and read
//! back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::{option, prelude::*};

use super::*;

/// The batch prefix every refusal must put before the field.
const PREFIX: &str = "jobs[7].";
/// A small payload limit, so both sides of it are reached.
const MAX_PAYLOAD: usize = 64;

fn limits() -> Limits {
    Limits { max_payload: MAX_PAYLOAD, ..Limits::default() }
}

fn ms(max: u64) -> impl Strategy<Value = Duration> {
    (0..=max).prop_map(Duration::from_millis)
}

const DAY_MS: u64 = 24 * 3600 * 1000;

/// Text that is often valid for a name and sometimes anything at all.
fn name_like() -> impl Strategy<Value = String> {
    prop_oneof!["[A-Za-z0-9_.:-]{1,130}", "[!-~]{0,130}", any::<String>()]
}

/// A job every documented limit accepts.
fn valid_job() -> impl Strategy<Value = NewJob> {
    let schedule = prop_oneof![
        Just(Schedule::Now),
        ms(365 * DAY_MS).prop_map(Schedule::After),
        ms(364 * DAY_MS).prop_map(|d| Schedule::At(SystemTime::now() + d)),
        ms(10_000 * DAY_MS).prop_map(|d| Schedule::At(UNIX_EPOCH + d)),
    ];
    let backoff = (any::<bool>(), option::of(ms(DAY_MS)), option::of(1.0..=100.0), option::of(ms(7 * DAY_MS)))
        .prop_flat_map(|(fixed, base, factor, max)| {
            option::of(0.0..=1.0).prop_map(move |jitter| BackoffRequest { fixed, base, factor, max, jitter })
        });
    (
        ("[A-Za-z0-9_.:-]{1,128}", "[!-~]{1,128}", prop::collection::vec(any::<u8>(), 0..=MAX_PAYLOAD)),
        prop::collection::vec(("[a-z]{1,128}", ".{0,64}"), 0..8),
        (-5..=5, schedule, option::of(1u32..=1_000)),
        (option::of(backoff), option::of((10..=DAY_MS).prop_map(Duration::from_millis))),
        (option::of("[ -~]{0,256}"), option::of("[A-Za-z0-9_.:-]{1,128}")),
    )
        .prop_map(
            |(
                (queue, job_type, payload),
                headers,
                (priority, schedule, max_attempts),
                (backoff, timeout),
                (key, session),
            )| {
                let session = session.map(|name| SessionId::new(&queue, &name));
                NewJob {
                    queue,
                    job_type,
                    payload,
                    headers,
                    priority,
                    schedule,
                    max_attempts,
                    backoff,
                    timeout,
                    idempotency_key: key,
                    idempotency_key_generated: false,
                    session,
                    rate_key: None,
                    concurrency_key: None,
                }
            },
        )
}

/// One field set to a value that may or may not keep to its limit.
#[derive(Clone, Debug)]
enum Change {
    Queue(String),
    Type(String),
    Payload(usize),
    Headers(Vec<(String, String)>),
    Priority(i32),
    Delay(Duration),
    RunAt(SystemTime),
    MaxAttempts(u32),
    Timeout(Duration),
    Backoff(BackoffRequest),
    Session(String),
    IdempotencyKey(String),
}

fn change() -> impl Strategy<Value = Change> {
    let backoff = (
        any::<bool>(),
        option::of(ms(2 * DAY_MS)),
        option::of(prop_oneof![0.0..=120.0, any::<f64>()]),
        option::of(ms(8 * DAY_MS)),
        option::of(prop_oneof![-0.5..=1.5, any::<f64>()]),
    )
        .prop_map(|(fixed, base, factor, max, jitter)| {
            Change::Backoff(BackoffRequest { fixed, base, factor, max, jitter })
        });
    prop_oneof![
        name_like().prop_map(Change::Queue),
        name_like().prop_map(Change::Type),
        (0..=2 * MAX_PAYLOAD).prop_map(Change::Payload),
        prop::collection::vec(("[a-z]{0,130}", "[a-z]{0,400}"), 0..70).prop_map(Change::Headers),
        prop_oneof![-7..=7, any::<i32>()].prop_map(Change::Priority),
        ms(400 * DAY_MS).prop_map(Change::Delay),
        prop_oneof![ms(364 * DAY_MS), (366 * DAY_MS..=1_000 * DAY_MS).prop_map(Duration::from_millis)]
            .prop_map(|d| Change::RunAt(SystemTime::now() + d)),
        prop_oneof![0u32..=1_001, any::<u32>()].prop_map(Change::MaxAttempts),
        ms(DAY_MS + 1_000).prop_map(Change::Timeout),
        backoff,
        name_like().prop_map(Change::Session),
        "[ -~]{0,300}".prop_map(Change::IdempotencyKey),
    ]
}

impl Change {
    /// Applies the change to `job`; returns the fields a refusal may name, and whether the
    /// documented limits accept the value.
    fn apply(&self, job: &mut NewJob) -> (&'static [&'static str], bool) {
        let name_ok = |s: &str| {
            (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
        };
        match self {
            Change::Queue(q) => {
                job.queue = q.clone();
                let same_session = job.session.as_ref().is_none_or(|s| s.queue == *q);
                (&["queue", "session_id"], name_ok(q) && same_session)
            }
            Change::Type(t) => {
                job.job_type = t.clone();
                let printable = !t.chars().any(|c| c.is_whitespace() || c.is_control());
                (&["type"], (1..=128).contains(&t.len()) && printable)
            }
            Change::Payload(n) => {
                job.payload = vec![b'x'; *n];
                (&["payload"], *n <= MAX_PAYLOAD)
            }
            Change::Headers(h) => {
                job.headers = h.clone();
                let keys = h.iter().all(|(k, _)| (1..=128).contains(&k.len()));
                let total: usize = h.iter().map(|(k, v)| k.len() + v.len()).sum();
                (&["headers"], h.len() <= 64 && keys && total <= 16 * 1024)
            }
            Change::Priority(p) => {
                job.priority = *p;
                (&["priority"], (-5..=5).contains(p))
            }
            Change::Delay(d) => {
                job.schedule = Schedule::After(*d);
                (&["delay"], *d <= Duration::from_millis(365 * DAY_MS))
            }
            Change::RunAt(t) => {
                job.schedule = Schedule::At(*t);
                (&["run_at"], *t <= SystemTime::now() + Duration::from_millis(365 * DAY_MS))
            }
            Change::MaxAttempts(n) => {
                job.max_attempts = Some(*n);
                (&["max_attempts"], (1..=1_000).contains(n))
            }
            Change::Timeout(t) => {
                job.timeout = Some(*t);
                (&["timeout"], (Duration::from_millis(10)..=Duration::from_millis(DAY_MS)).contains(t))
            }
            Change::Backoff(b) => {
                job.backoff = Some(b.clone());
                let ok = b.base.is_none_or(|d| d <= Duration::from_millis(DAY_MS))
                    && b.factor.is_none_or(|f| (1.0..=100.0).contains(&f))
                    && b.max.is_none_or(|d| d <= Duration::from_millis(7 * DAY_MS))
                    && b.jitter.is_none_or(|j| (0.0..=1.0).contains(&j));
                (&["backoff.base", "backoff.factor", "backoff.max", "backoff.jitter"], ok)
            }
            Change::Session(name) => {
                job.session = Some(SessionId::new(&job.queue, name));
                // The session's name is checked where its id is parsed, not here.
                (&["session_id"], true)
            }
            Change::IdempotencyKey(k) => {
                job.idempotency_key = Some(k.clone());
                (&["idempotency_key"], k.len() <= 256)
            }
        }
    }
}

/// The field a refusal names, behind `PREFIX`; None for an error that names none.
fn named_field(error: &Error) -> Option<String> {
    match error {
        Error::Invalid { field, .. } => field.strip_prefix(PREFIX).map(str::to_owned),
        Error::TooLarge(message) => message.strip_prefix(PREFIX).and_then(|m| m.split(':').next()).map(str::to_owned),
        _ => None,
    }
}

proptest! {
    #[test]
    fn every_job_within_the_documented_limits_is_accepted_and_storable(job in valid_job(), created_ms in any::<i64>()) {
        prop_assert!(job.validate(&limits(), PREFIX).is_ok(), "{:?}", job.validate(&limits(), PREFIX));
        let record = job.into_record(created_ms);
        let raw = record.encode().expect("a valid job's record encodes");
        prop_assert_eq!(JobRecord::decode(&raw, None).expect("decodes"), record);
    }

    #[test]
    fn ids_of_any_text_are_read_or_refused_naming_the_field(raw in prop_oneof![
        "[a-z]{1,8}/[0-9A-Z]{26}",
        "[a-z{}]{0,8}/.{0,30}",
        any::<String>(),
    ]) {
        let job = JobId::parse(&raw, &format!("{PREFIX}job_id")).map(|id| id.to_string());
        let session = SessionId::parse(&raw, &format!("{PREFIX}session_id")).map(|id| id.to_string());
        for result in [job, session] {
            match result {
                Ok(id) => prop_assert_eq!(id, raw.clone()),
                Err(e) => prop_assert!(named_field(&e).is_some_and(|f| f.ends_with("_id")), "{e}"),
            }
        }
    }
}

proptest! {
    // Twelve kinds of change, each on both sides of its limit: more cases than the default 256.
    #![proptest_config(ProptestConfig::with_cases(1_024))]

    #[test]
    fn one_changed_field_is_refused_by_its_limit_and_named(job in valid_job(), change in change()) {
        let mut job = job;
        let (fields, documented) = change.apply(&mut job);
        match job.validate(&limits(), PREFIX) {
            Ok(()) => prop_assert!(documented, "accepted a value past its limit"),
            Err(e) => {
                prop_assert!(!documented, "refused a value within its limits: {e}");
                let named = named_field(&e);
                prop_assert!(named.as_deref().is_some_and(|f| fields.contains(&f)), "{e} names none of {fields:?}");
            }
        }
    }
}
