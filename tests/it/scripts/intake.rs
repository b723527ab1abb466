//! add.lua: plain, batched, delayed, scheduled, idempotent and session jobs, and refusals.

use std::time::Duration;

use jobwire::store::{AddOutcome, LeaseToken, RecordState};

use super::{Case, Job, Places, QUEUE};

#[tokio::test]
async fn add_plain_makes_the_job_ready_with_its_record() {
    let case = Case::start().await;
    let job = Job::plain().with(|r| r.payload = b"hello".to_vec());
    assert_eq!(case.add(&job).await, AddOutcome::Added(job.ulid.clone()));
    assert_eq!(case.places().await, Places { waiting: 1, ..Places::default() });
    let stored = case.record(&job.ulid).await;
    assert_eq!(stored, job.record, "stored as given");
    assert_eq!(case.stats().await.oldest_ready_ms, Some(job.record.created_ms));
    case.assert_invariants().await;
}

#[tokio::test]
async fn add_many_keeps_add_order_within_a_priority_and_refuses_only_the_bad_job() {
    let case = Case::start().await;
    let jobs = [Job::plain(), Job::plain().in_session("nobody"), Job::plain(), Job::plain().with(|r| r.priority = 5)];
    let outcomes = case.add_many(&jobs).await;
    let expected = [
        AddOutcome::Added(jobs[0].ulid.clone()),
        AddOutcome::NoSession,
        AddOutcome::Added(jobs[2].ulid.clone()),
        AddOutcome::Added(jobs[3].ulid.clone()),
    ];
    assert_eq!(outcomes, expected);
    assert_eq!(case.places().await, Places { waiting: 3, ..Places::default() });
    assert!(case.info(&jobs[1].ulid).await.is_none(), "the refused job left no record");
    let order: Vec<String> = case.lease(5).await.jobs.into_iter().map(|j| j.ulid).collect();
    assert_eq!(order, [jobs[3].ulid.clone(), jobs[0].ulid.clone(), jobs[2].ulid.clone()]);
    case.assert_invariants().await;
}

#[tokio::test]
async fn add_with_a_delay_schedules_the_job() {
    let case = Case::start().await;
    let before = case.stats().await.now_ms;
    let job = Job::plain().delayed(60_000);
    assert_eq!(case.add(&job).await, AddOutcome::Added(job.ulid.clone()));
    let after = case.stats().await.now_ms;
    assert_eq!(case.places().await, Places { delayed: 1, ..Places::default() });
    let stored = case.record(&job.ulid).await;
    assert_eq!(stored.state, RecordState::Delayed);
    let run_at = stored.run_at_ms.expect("a run time");
    assert!((before + 60_000..=after + 60_000).contains(&run_at), "runs a minute after the add: {run_at}");
    case.assert_invariants().await;
}

#[tokio::test]
async fn add_with_a_run_time_schedules_a_future_one_and_readies_a_past_one() {
    let case = Case::start().await;
    let now = case.stats().await.now_ms;
    let later = Job::plain().run_at(now + 60_000);
    let past = Job::plain().run_at(now - 1_000);
    let zero_delay = Job::plain().delayed(0);
    let outcomes = case.add_many(&[later.clone(), past.clone(), zero_delay.clone()]).await;
    assert!(outcomes.iter().all(|o| matches!(o, AddOutcome::Added(_))), "{outcomes:?}");
    assert_eq!(case.places().await, Places { waiting: 2, delayed: 1, ..Places::default() });
    let scheduled = case.record(&later.ulid).await;
    assert_eq!((scheduled.state, scheduled.run_at_ms), (RecordState::Delayed, Some(now + 60_000)));
    assert_eq!(case.record(&past.ulid).await.state, RecordState::Waiting);
    assert_eq!(case.record(&zero_delay.ulid).await.state, RecordState::Waiting);
    case.assert_invariants().await;
}

#[tokio::test]
async fn add_with_a_known_idempotency_key_returns_the_first_job() {
    let case = Case::start().await;
    let window = Duration::from_secs(60);
    let first = Job::plain().keyed("order-1", window);
    let again = Job::plain().keyed("order-1", window);
    assert_eq!(case.add(&first).await, AddOutcome::Added(first.ulid.clone()));
    assert_eq!(case.add(&again).await, AddOutcome::Duplicate(first.ulid.clone()));
    assert!(case.info(&again.ulid).await.is_none(), "the repeat wrote no record");
    assert_eq!(case.places().await, Places { waiting: 1, ..Places::default() });
    // The tombstone outlives the job itself.
    assert_eq!(case.delete(&first.ulid).await, 1);
    assert_eq!(case.add(&again).await, AddOutcome::Duplicate(first.ulid.clone()));
    assert_eq!(case.places().await, Places::default());
    case.assert_invariants().await;
}

#[tokio::test]
async fn add_many_with_one_key_twice_adds_the_first_only() {
    let case = Case::start().await;
    let window = Duration::from_secs(60);
    let jobs = [Job::plain().keyed("k", window), Job::plain().keyed("k", window), Job::plain().keyed("other", window)];
    let outcomes = case.add_many(&jobs).await;
    let expected = [
        AddOutcome::Added(jobs[0].ulid.clone()),
        AddOutcome::Duplicate(jobs[0].ulid.clone()),
        AddOutcome::Added(jobs[2].ulid.clone()),
    ];
    assert_eq!(outcomes, expected);
    assert_eq!(case.places().await, Places { waiting: 2, ..Places::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn add_after_the_idempotency_window_adds_again() {
    let case = Case::start().await;
    let window = Duration::from_millis(30);
    let first = Job::plain().keyed("k", window);
    let later = Job::plain().keyed("k", window);
    assert_eq!(case.add(&first).await, AddOutcome::Added(first.ulid.clone()));
    tokio::time::sleep(window + Duration::from_millis(20)).await;
    assert_eq!(case.add(&later).await, AddOutcome::Added(later.ulid.clone()));
    assert_eq!(case.places().await, Places { waiting: 2, ..Places::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn add_to_an_unknown_session_writes_nothing_and_keeps_the_key_free() {
    let case = Case::start().await;
    let window = Duration::from_secs(60);
    let refused = Job::plain().in_session("nobody").keyed("k", window);
    assert_eq!(case.add(&refused).await, AddOutcome::NoSession);
    assert!(case.info(&refused.ulid).await.is_none());
    assert_eq!(case.places().await, Places::default());
    let retried = Job::plain().keyed("k", window);
    assert_eq!(case.add(&retried).await, AddOutcome::Added(retried.ulid.clone()), "no tombstone was left");
    case.assert_invariants().await;
}

#[tokio::test]
async fn add_to_a_session_releases_one_job_and_holds_the_rest() {
    let case = Case::start().await;
    case.open_session("s", 2).await;
    let jobs = [Job::plain().in_session("s"), Job::plain().in_session("s"), Job::plain().in_session("s")];
    let outcomes = case.add_many(&jobs).await;
    assert!(outcomes.iter().all(|o| matches!(o, AddOutcome::Added(_))), "{outcomes:?}");
    // One released job waits to start; the others stay inside the session, in add order.
    assert_eq!(case.places().await, Places { waiting: 1, pending: 2, ..Places::default() });
    let first = case.record(&jobs[0].ulid).await;
    assert_eq!(first.session_name(), Some("s"));
    assert_eq!(first.state, RecordState::Waiting);
    let session = case.session_get("s").await.expect("session");
    assert_eq!((session.queued, session.started, session.pending), (1, 0, 2));
    let mut members = Vec::new();
    for job in &jobs {
        members.push(case.record(&job.ulid).await.session.expect("a session member"));
    }
    let mut sorted = members.clone();
    sorted.sort();
    assert_eq!(members, sorted, "members sort in add order");
    case.assert_invariants().await;
}

#[tokio::test]
async fn add_a_delayed_job_to_a_session_releases_it_as_delayed() {
    let case = Case::start().await;
    case.open_session("s", 1).await;
    let delayed = Job::plain().in_session("s").delayed(60_000);
    let next = Job::plain().in_session("s");
    case.add_many(&[delayed.clone(), next.clone()]).await;
    // The delayed job holds its place: the next one stays inside the session.
    assert_eq!(case.places().await, Places { delayed: 1, pending: 1, ..Places::default() });
    assert_eq!(case.record(&delayed.ulid).await.state, RecordState::Delayed);
    assert_eq!(case.session_get("s").await.expect("session").queued, 1);
    case.assert_invariants().await;
}

#[tokio::test]
async fn add_with_a_zero_idempotency_window_writes_the_job_whole_or_not_at_all() {
    let case = Case::start().await;
    let job = Job::plain().delayed(60_000).keyed("k", Duration::ZERO);
    let added = case.try_add(&job).await;
    let stored = case.info(&job.ulid).await;
    assert_eq!(added.is_ok(), stored.is_some(), "answered {added:?}, yet the record is {stored:?}");
    case.assert_invariants().await;
}

#[tokio::test]
async fn add_with_a_zero_idempotency_window_is_refused_before_anything_is_written() {
    let case = Case::start().await;
    case.open_session("s", 1).await;
    // One key with a zero window refuses the whole batch, the jobs before it included.
    let jobs = [Job::plain(), Job::plain().in_session("s"), Job::plain().delayed(60_000).keyed("k", Duration::ZERO)];
    assert!(case.try_add_many(&jobs).await.is_err());
    for job in &jobs {
        assert!(case.info(&job.ulid).await.is_none(), "{} not written", job.ulid);
    }
    assert_eq!(case.places().await, Places::default());
    assert_eq!(case.session_get("s").await.expect("session").queued, 0);
    case.assert_invariants().await;
}

#[tokio::test]
async fn add_with_a_key_is_a_duplicate_across_a_bucket_boundary() {
    let case = Case::start().await;
    // Buckets of a quarter window: 100 ms.
    let window = Duration::from_millis(400);
    let first = Job::plain().keyed("k", window);
    let (start, added_by) = case.add_timed(&first).await;
    case.redis_time_when(|now| now / 100 > added_by / 100).await;
    let again = Job::plain().keyed("k", window);
    assert_eq!(case.add(&again).await, AddOutcome::Duplicate(first.ulid.clone()), "the next bucket's add");
    let repeated_by = case.stats().await.now_ms;
    assert!(repeated_by - start < 400, "the repeat came within the window: {} ms", repeated_by - start);
    assert_eq!(case.places().await, Places { waiting: 1, ..Places::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn add_remembers_a_key_for_its_whole_window_and_at_most_a_bucket_longer() {
    let case = Case::start().await;
    let window = Duration::from_millis(200);
    let first = Job::plain().keyed("k", window);
    let (start, added_by) = case.add_timed(&first).await;
    let mut repeats = 0;
    loop {
        let outcome = case.add(&Job::plain().keyed("k", window)).await;
        let by = case.stats().await.now_ms;
        if by - start >= 200 {
            break;
        }
        assert_eq!(outcome, AddOutcome::Duplicate(first.ulid.clone()), "{} ms after the first add", by - start);
        repeats += 1;
    }
    assert!(repeats > 0, "some repeats came within the window");
    // Past the window and the one bucket (50 ms) it may be remembered beyond it, forgotten:
    // once Redis's clock reads past that both before and after the add. A clock stepped back
    // between the two readings (seen once on a CI machine) says nothing of the window: that
    // add is a duplicate by the clock it read, and the add is tried again once past.
    loop {
        let before = case.redis_time_when(|now| now >= added_by + 250).await;
        let later = Job::plain().keyed("k", window);
        let outcome = case.add(&later).await;
        let after = case.stats().await.now_ms;
        if after >= before {
            assert_eq!(outcome, AddOutcome::Added(later.ulid.clone()), "{} ms after the first add", after - added_by);
            break;
        }
        assert_eq!(outcome, AddOutcome::Duplicate(first.ulid.clone()), "the clock stepped back: still a duplicate");
    }
    case.assert_invariants().await;
}

#[tokio::test]
async fn add_looks_a_key_up_among_the_keys_of_its_own_window() {
    let case = Case::start().await;
    let (chosen, generated) = (Duration::from_secs(3_600), Duration::from_secs(60));
    let jobs = [
        Job::plain().keyed("k", chosen),
        Job::plain().keyed("k", generated),
        Job::plain().keyed("k", generated),
        Job::plain().keyed("k", chosen),
    ];
    let outcomes = case.add_many(&jobs).await;
    let expected = [
        AddOutcome::Added(jobs[0].ulid.clone()),
        AddOutcome::Added(jobs[1].ulid.clone()),
        AddOutcome::Duplicate(jobs[1].ulid.clone()),
        AddOutcome::Duplicate(jobs[0].ulid.clone()),
    ];
    assert_eq!(outcomes, expected);
    assert_eq!(case.add(&Job::plain().keyed("k", generated)).await, AddOutcome::Duplicate(jobs[1].ulid.clone()));
    assert_eq!(case.add(&Job::plain().keyed("k", chosen)).await, AddOutcome::Duplicate(jobs[0].ulid.clone()));
    assert_eq!(case.places().await, Places { waiting: 2, ..Places::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn add_finds_its_tombstones_whatever_the_callers_clock_says() {
    let case = Case::start().await;
    let window = Duration::from_secs(600);
    let redis_now = u64::try_from(case.stats().await.now_ms).expect("a time after 1970");
    let first = Job::plain().keyed("k", window);
    // Named from a clock a day behind Redis's: past the margin, so the add names them again.
    let day_behind = redis_now - 86_400_000;
    assert_eq!(case.add_at(&first, day_behind).await, AddOutcome::Added(first.ulid.clone()));
    for clock in [redis_now, redis_now + 60_000, redis_now + 10 * 365 * 86_400_000, 0, day_behind] {
        let again = Job::plain().keyed("k", window);
        assert_eq!(case.add_at(&again, clock).await, AddOutcome::Duplicate(first.ulid.clone()), "clock {clock}");
    }
    assert_eq!(case.places().await, Places { waiting: 1, ..Places::default() });
    // The one bucket written is Redis's clock's (the invariant check reads its expiry).
    case.assert_invariants().await;
}

#[tokio::test]
async fn a_tombstone_is_its_keys_digest_cut_to_14_bytes_and_an_earlier_releases_whole_digest_is_still_found() {
    use sha2::{Digest, Sha256};
    let case = Case::start().await;
    let window = Duration::from_secs(600);
    let width = u64::try_from(window.as_millis().div_ceil(4)).expect("a small width");
    let first = Job::plain().keyed("new", window);
    assert_eq!(case.add(&first).await, AddOutcome::Added(first.ulid.clone()));
    let now = u64::try_from(case.stats().await.now_ms).expect("a time after 1970");
    let keys = case.store.keys().queue(QUEUE);
    let bucket = |index: u64| keys.tombstones(width, index);
    let mut conn = case.raw_connection().await;
    let fields: Vec<Vec<u8>> =
        redis::cmd("HKEYS").arg(bucket(now / width)).query_async(&mut conn).await.expect("hkeys");
    assert_eq!(fields, [Sha256::digest(b"new")[..14].to_vec()], "the field is the digest's first 14 bytes");

    // A tombstone as a release before wrote it: the whole 16-byte digest, in the bucket before.
    let earlier = Job::plain();
    let () = redis::cmd("HSET")
        .arg(bucket(now / width - 1))
        .arg(&Sha256::digest(b"old")[..16])
        .arg(&earlier.ulid)
        .query_async(&mut conn)
        .await
        .expect("hset");
    let again = Job::plain().keyed("old", window);
    assert_eq!(case.add(&again).await, AddOutcome::Duplicate(earlier.ulid.clone()), "found by its whole digest");
    let repeat = Job::plain().keyed("new", window);
    assert_eq!(case.add(&repeat).await, AddOutcome::Duplicate(first.ulid.clone()));
    assert_eq!(case.places().await, Places { waiting: 1, ..Places::default() });
}

/// The `SPUBLISH`es Redis ran since the last reset of its stats (the wake-ups published).
async fn wake_ups(case: &Case) -> u64 {
    let info: String =
        redis::cmd("INFO").arg("commandstats").query_async(&mut case.raw_connection().await).await.expect("info");
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_spublish:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("a count"))
}

async fn reset_stats(case: &Case) {
    let _: () =
        redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut case.raw_connection().await).await.expect("reset");
}

#[tokio::test]
async fn add_with_tokens_leases_what_it_added_by_priority_and_keeps_its_wake_up_when_nothing_is_left() {
    let case = Case::start().await;
    let low = Job::plain().with(|r| r.priority = -5);
    let high = Job::plain().with(|r| r.priority = 5);
    let plain = Job::plain();
    let tokens = [case.token(), case.token(), case.token(), case.token()];
    reset_stats(&case).await;
    let (outcomes, refill) = case.add_and_lease(&[low.clone(), plain.clone(), high.clone()], &tokens).await;
    assert!(outcomes.iter().all(|o| matches!(o, AddOutcome::Added(_))), "{outcomes:?}");
    let leased: Vec<(&str, &str)> = refill.leased.iter().map(|j| (j.ulid.as_str(), j.token.as_str())).collect();
    assert_eq!(
        leased,
        [(&*high.ulid, &*tokens[0]), (&*plain.ulid, &*tokens[1]), (&*low.ulid, &*tokens[2])],
        "by priority, then in add order, the i-th job with the i-th token"
    );
    assert_eq!(refill.offered, tokens, "every token offered");
    assert!(refill.now_ms > 0 && refill.next_delayed.is_none());
    assert_eq!(refill.leased[0].attempt, 1);
    assert_eq!(case.places().await, Places { active: 3, ..Places::default() });
    assert_eq!(wake_ups(&case).await, 0, "every job leased: nobody to wake");
    case.assert_invariants().await;
}

#[tokio::test]
async fn add_with_fewer_tokens_than_jobs_leases_the_oldest_and_wakes_for_the_rest() {
    let case = Case::start().await;
    let (first, second) = (Job::plain(), Job::plain());
    let later = Job::plain().delayed(60_000);
    let token = case.token();
    reset_stats(&case).await;
    let (_, refill) = case.add_and_lease(&[first.clone(), second.clone(), later], std::slice::from_ref(&token)).await;
    let leased: Vec<&str> = refill.leased.iter().map(|j| j.ulid.as_str()).collect();
    assert_eq!(leased, [&*first.ulid]);
    assert!(refill.next_delayed.is_some_and(|d| d > Duration::from_secs(50)), "{:?}", refill.next_delayed);
    assert_eq!(case.places().await, Places { waiting: 1, delayed: 1, active: 1, ..Places::default() });
    // One for the ready list (a job is left for others), one for the earliest delayed job.
    assert_eq!(wake_ups(&case).await, 2, "jobs left: the dispatchers are woken");
    case.assert_invariants().await;
}

#[tokio::test]
async fn add_with_tokens_of_a_paused_queue_leases_nothing() {
    let case = Case::start().await;
    case.pause(true).await;
    let job = Job::plain();
    let (outcomes, refill) = case.add_and_lease(std::slice::from_ref(&job), &[case.token(), case.token()]).await;
    assert_eq!(outcomes, [AddOutcome::Added(job.ulid.clone())]);
    assert!(refill.leased.is_empty());
    assert_eq!(case.places().await, Places { waiting: 1, ..Places::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn add_with_tokens_whose_buckets_missed_redis_clock_adds_and_leases_once() {
    let case = Case::start().await;
    let redis_now = u64::try_from(case.stats().await.now_ms).expect("a time after 1970");
    let job = Job::plain().keyed("k", Duration::from_secs(600));
    let tokens =
        [LeaseToken::parse(&case.token()).expect("a token"), LeaseToken::parse(&case.token()).expect("a token")];
    let day_behind = redis_now - 86_400_000;
    let (report, refill) =
        case.store.jobs().add_and_lease_at(QUEUE, &[job.args()], day_behind, None, &tokens).await.expect("add");
    assert_eq!(report.outcomes, [AddOutcome::Added(job.ulid.clone())]);
    let leased: Vec<&str> = refill.leased.iter().map(|j| j.ulid.as_str()).collect();
    assert_eq!(leased, [&*job.ulid]);
    assert_eq!(case.places().await, Places { active: 1, ..Places::default() });
    case.assert_invariants().await;
}
