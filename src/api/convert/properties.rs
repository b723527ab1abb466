//! Properties of the wire conversions, checked with proptest: no request makes them panic; a
//! duration or time is accepted exactly when the wire value means one (and reads back the same
//! when sent again); every refusal names the proto's field behind the batch prefix; and an
//! accepted `AddJobRequest` hands the domain what it carried.

use proptest::{option, prelude::*};

use super::*;

/// The batch prefix every refusal must put before the field.
const PREFIX: &str = "jobs[3].";
/// The fields of `AddJobRequest` whose wire form `new_job` checks (the rest is `NewJob::validate`'s).
const CHECKED_HERE: [&str; 7] =
    ["delay", "run_at", "backoff.kind", "backoff.base", "backoff.max", "timeout", "session_id"];

fn seconds() -> impl Strategy<Value = i64> {
    prop_oneof![-2..=400 * 86_400_i64, any::<i64>()]
}

fn nanos() -> impl Strategy<Value = i32> {
    prop_oneof![-2..=1_000_000_001_i32, any::<i32>()]
}

fn wire_duration() -> impl Strategy<Value = prost_types::Duration> {
    (seconds(), nanos()).prop_map(|(seconds, nanos)| prost_types::Duration { seconds, nanos })
}

fn wire_time() -> impl Strategy<Value = prost_types::Timestamp> {
    (seconds(), nanos()).prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos })
}

fn request() -> impl Strategy<Value = proto::AddJobRequest> {
    use proto::add_job_request::Schedule as Wire;
    let schedule = option::of(prop_oneof![wire_duration().prop_map(Wire::Delay), wire_time().prop_map(Wire::RunAt)]);
    let backoff = option::of(
        (
            prop_oneof![0..=2, any::<i32>()],
            option::of(wire_duration()),
            option::of(any::<f64>()),
            option::of(wire_duration()),
            option::of(any::<f64>()),
        )
            .prop_map(|(kind, base, factor, max, jitter)| proto::Backoff { kind, base, factor, max, jitter }),
    );
    (
        (".{0,12}", ".{0,12}", prop::collection::vec(any::<u8>(), 0..16)),
        (prop::collection::hash_map(".{0,8}", ".{0,8}", 0..4), any::<i32>(), schedule),
        (option::of(any::<u32>()), backoff, option::of(wire_duration())),
        (prop_oneof!["", ".{1,8}"], any::<bool>(), prop_oneof!["", "[a-z]{1,4}/[a-z]{1,4}", ".{1,12}"]),
    )
        .prop_map(
            |(
                (queue, r#type, payload),
                (headers, priority, schedule),
                (max_attempts, backoff, timeout),
                (key, generated, session),
            )| {
                proto::AddJobRequest {
                    queue,
                    r#type,
                    payload,
                    headers,
                    priority,
                    schedule,
                    max_attempts,
                    backoff,
                    timeout,
                    idempotency_key: key,
                    idempotency_key_generated: generated,
                    session_id: session,
                    rate_key: String::new(),
                    concurrency_key: String::new(),
                }
            },
        )
}

/// The field an `Invalid` error names behind `PREFIX`.
fn named_field(error: &Error) -> Option<&str> {
    match error {
        Error::Invalid { field, .. } => field.strip_prefix(PREFIX),
        _ => None,
    }
}

fn means_a_duration(seconds: i64, nanos: i32) -> bool {
    seconds >= 0 && (0..1_000_000_000).contains(&nanos)
}

proptest! {
    #[test]
    fn a_duration_is_read_exactly_when_the_wire_means_one(d in wire_duration()) {
        let field = format!("{PREFIX}timeout");
        match duration(Some(d), &field) {
            Ok(read) => {
                prop_assert!(means_a_duration(d.seconds, d.nanos));
                prop_assert_eq!(read.map(to_duration), Some(d));
            }
            Err(e) => {
                prop_assert!(!means_a_duration(d.seconds, d.nanos));
                prop_assert_eq!(named_field(&e), Some("timeout"));
            }
        }
    }

    #[test]
    fn a_time_is_read_exactly_when_the_wire_means_one_after_1970(t in wire_time()) {
        let field = format!("{PREFIX}run_at");
        match timestamp(Some(t), &field) {
            Ok(read) => {
                prop_assert!(means_a_duration(t.seconds, t.nanos));
                prop_assert_eq!(read.map(to_timestamp), Some(t));
            }
            Err(e) => {
                prop_assert!(!means_a_duration(t.seconds, t.nanos));
                prop_assert_eq!(named_field(&e), Some("run_at"));
            }
        }
    }

    #[test]
    fn any_add_request_converts_or_is_refused_naming_its_field(req in request()) {
        let sent = req.clone();
        match new_job(req, PREFIX) {
            Ok(job) => {
                prop_assert_eq!(
                    (job.queue.as_str(), job.job_type.as_str(), &job.payload, job.priority, job.max_attempts),
                    (sent.queue.as_str(), sent.r#type.as_str(), &sent.payload, sent.priority, sent.max_attempts)
                );
                let mut headers: Vec<(String, String)> = sent.headers.into_iter().collect();
                headers.sort();
                prop_assert_eq!(job.headers, headers);
                let key = Some(sent.idempotency_key).filter(|k| !k.is_empty());
                prop_assert_eq!(job.idempotency_key, key);
                prop_assert_eq!(job.idempotency_key_generated, sent.idempotency_key_generated);
                prop_assert_eq!(job.session.map(|s| s.to_string()), Some(sent.session_id).filter(|s| !s.is_empty()));
            }
            Err(e) => {
                prop_assert!(named_field(&e).is_some_and(|f| CHECKED_HERE.contains(&f)), "{e}");
            }
        }
    }

    #[test]
    fn any_state_number_is_a_listing_or_refused_naming_the_field(state in prop_oneof![-1..=9, any::<i32>()]) {
        if let Err(e) = listing(state, &format!("{PREFIX}state")) {
            prop_assert_eq!(named_field(&e), Some("state"));
        }
    }
}
