//! Properties of the record codec and the lease parse, checked with proptest: every record the
//! store can write reads back as written (alone, or completed with an outcome), a number that
//! does not fit msgpack is refused rather than wrapped, and no input at all — random bytes, cut
//! or altered encodings, random outcomes, lease strings and tokens — makes the decoder panic:
//! it is read, or refused as corrupt data.

use proptest::{option, prelude::*, sample::Index};

use super::*;

/// Milliseconds and other unsigned numbers the record packs as msgpack integers (i64).
fn packable() -> impl Strategy<Value = u64> {
    0..=i64::MAX.unsigned_abs()
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..48)
}

fn state() -> impl Strategy<Value = RecordState> {
    use RecordState::*;
    prop::sample::select(vec![Waiting, Delayed, Retrying, Completed, Dead, Cancelled])
}

fn backoff() -> impl Strategy<Value = BackoffSpec> {
    (any::<bool>(), packable(), -1e12..1e12, packable(), 0.0..=1.0)
        .prop_map(|(fixed, base_ms, factor, max_ms, jitter)| BackoffSpec { fixed, base_ms, factor, max_ms, jitter })
}

/// Any record the store could write.
fn record() -> impl Strategy<Value = JobRecord> {
    let first = (
        state(),
        any::<String>(),
        bytes(),
        prop::collection::vec((any::<String>(), any::<String>()), 0..4),
        any::<i32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<i64>(),
        option::of(any::<i64>()),
        option::of(backoff()),
        packable(),
    );
    let rest = (
        option::of(any::<String>()),
        option::of(any::<i64>()),
        option::of(any::<i64>()),
        option::of(any::<String>()),
        option::of(bytes()),
        option::of(any::<i64>()),
        option::of(any::<String>()),
        any::<bool>(),
        option::of(bytes()),
    );
    let keys = (option::of(any::<String>()), option::of(any::<String>()));
    (first, rest, keys).prop_map(|(first, rest, (rate_key, concurrency_key))| {
        let (
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
        ) = first;
        let (
            idempotency_key,
            started_ms,
            finished_ms,
            last_error,
            result,
            run_at_ms,
            session,
            cancel_requested,
            progress,
        ) = rest;
        JobRecord {
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
            idempotency_key,
            started_ms,
            finished_ms,
            last_error,
            result,
            run_at_ms,
            session,
            cancel_requested,
            progress,
            rate_key,
            concurrency_key,
        }
    })
}

/// An instance id as instances make them: no `.` (it separates the token's parts), no `|`.
fn instance() -> impl Strategy<Value = String> {
    "[^.|]{1,12}"
}

/// An outcome as lua/complete.lua packs it.
fn outcome(finished_ms: i64, lease: &str, result: &[u8]) -> Vec<u8> {
    let mut p = Packer::new(0);
    p.int(finished_ms);
    p.bytes(lease.as_bytes());
    p.bytes(result);
    p.out
}

proptest! {
    #[test]
    fn every_record_reads_back_as_written(record in record()) {
        let raw = record.encode().expect("a record of packable numbers encodes");
        prop_assert_eq!(JobRecord::decode(&raw, None).expect("decodes"), record);
    }

    #[test]
    fn a_completed_record_reads_back_with_its_outcome(
        record in record(),
        finished_ms in any::<i64>(),
        (instance, stream, seq) in (instance(), any::<u64>(), any::<u64>()),
        started_ms in any::<i64>(),
        attempt in any::<u32>(),
        flags in "[sc]{0,2}",
        result in bytes(),
    ) {
        let raw = record.encode().expect("encodes");
        let token = LeaseToken::new(&instance, stream, seq);
        let bar = if flags.is_empty() { "" } else { "|" };
        let lease = format!("{token}|{started_ms}|{attempt}{bar}{flags}");
        let completed = JobRecord::decode(&raw, Some(&outcome(finished_ms, &lease, &result))).expect("decodes");
        let expected = JobRecord {
            state: RecordState::Completed,
            attempts: attempt,
            started_ms: Some(started_ms),
            finished_ms: Some(finished_ms),
            result: Some(result),
            ..record
        };
        prop_assert_eq!(completed, expected);
    }

    #[test]
    fn a_number_past_msgpack_is_refused_not_wrapped(
        record in record(),
        timeout_ms in any::<u64>(),
        base_ms in any::<u64>(),
    ) {
        let backoff = Some(BackoffSpec { fixed: true, base_ms, factor: 1.0, max_ms: 0, jitter: 0.0 });
        let record = JobRecord { timeout_ms, backoff, ..record };
        let fits = i64::try_from(timeout_ms).is_ok() && i64::try_from(base_ms).is_ok();
        match record.encode() {
            Ok(raw) => {
                prop_assert!(fits);
                prop_assert_eq!(JobRecord::decode(&raw, None).expect("decodes"), record);
            }
            Err(e) => {
                prop_assert!(!fits);
                prop_assert!(matches!(e, StoreError::Corrupt(_)), "{e:?}");
            }
        }
    }

    #[test]
    fn random_bytes_are_read_or_refused_as_corrupt(
        raw in prop::collection::vec(any::<u8>(), 0..256),
        outcome in option::of(prop::collection::vec(any::<u8>(), 0..64)),
    ) {
        if let Err(e) = JobRecord::decode(&raw, outcome.as_deref()) {
            prop_assert!(matches!(e, StoreError::Corrupt(_)), "{e:?}");
        }
    }

    #[test]
    fn a_cut_record_is_refused_and_an_altered_one_read_or_refused(
        record in record(),
        cut in any::<Index>(),
        (at, byte) in (any::<Index>(), any::<u8>()),
    ) {
        let raw = record.encode().expect("encodes");
        let cut = cut.index(raw.len());
        prop_assert!(JobRecord::decode(&raw[..cut], None).is_err(), "cut at {} of {}", cut, raw.len());
        let mut altered = raw.clone();
        altered[at.index(raw.len())] = byte;
        if let Err(e) = JobRecord::decode(&altered, None) {
            prop_assert!(matches!(e, StoreError::Corrupt(_)), "{e:?}");
        }
        let lease = "i.1.2|3|4";
        let whole = outcome(5, lease, b"result");
        let cut_outcome = &whole[..cut.min(whole.len() - 1)];
        prop_assert!(JobRecord::decode(&raw, Some(cut_outcome)).is_err(), "a cut outcome");
    }

    #[test]
    fn any_lease_text_is_parsed_or_refused(raw in any::<String>()) {
        match Lease::decode(Some(&raw)) {
            Ok(lease) => {
                let lease = lease.expect("a lease was given");
                prop_assert!(raw.starts_with(&format!("{}|", lease.token)), "{raw:?}");
            }
            Err(e) => prop_assert!(matches!(e, StoreError::Corrupt(_)), "{e:?}"),
        }
        if let Some(token) = LeaseToken::parse(&raw) {
            prop_assert_eq!(token.as_str(), raw.as_str());
        }
    }

    #[test]
    fn every_lease_an_instance_writes_parses_back(
        (instance, stream, seq) in (instance(), any::<u64>(), any::<u64>()),
        started_ms in any::<i64>(),
        attempt in any::<u32>(),
        flags in "[sc]{0,2}",
    ) {
        let token = LeaseToken::new(&instance, stream, seq);
        prop_assert_eq!(LeaseToken::parse(token.as_str()), Some(token.clone()));
        let bar = if flags.is_empty() { "" } else { "|" };
        let parsed = Lease::parse(&format!("{token}|{started_ms}|{attempt}{bar}{flags}"));
        prop_assert_eq!(parsed, Some(Lease { token, started_ms, attempt }));
    }
}
