//! lua/limits_lib.lua through the functions that use it: keyed jobs made ready by add and
//! leased by lease and by an ack's refill, rate limits (per queue and per rate key, GCRA) and the
//! per-key concurrency cap, and every way a keyed lease ends giving its key's slot back.

use std::time::Duration;

use jobwire::store::{Ack, AckOutcome, CancelOutcome, LeaseCheck, RateSpec, RecordState, StoredSettings};

use super::{Case, Job, QUEUE};

fn rate(count: u64, period_ms: u64, burst: u64) -> Option<RateSpec> {
    Some(RateSpec { count, period_ms, burst })
}

async fn set(case: &Case, settings: StoredSettings) {
    case.store.queue_settings().change(QUEUE, &settings, &[]).await.expect("set");
}

fn rate_keyed(key: &str) -> Job {
    let key = key.to_owned();
    Job::plain().with(|r| r.rate_key = Some(key))
}

fn conc_keyed(key: &str) -> Job {
    let key = key.to_owned();
    Job::plain().with(|r| r.concurrency_key = Some(key))
}

fn ulids(jobs: &[Job]) -> Vec<String> {
    jobs.iter().map(|j| j.ulid.clone()).collect()
}

#[tokio::test]
async fn keyed_jobs_keep_their_order_within_a_key_and_keys_take_turns() {
    let case = Case::start().await;
    let a_low = rate_keyed("a");
    let a_high = rate_keyed("a").with(|r| r.priority = 2);
    let a_next = rate_keyed("a");
    let b = rate_keyed("b");
    case.add_many(&[a_low.clone(), a_high.clone(), a_next.clone(), b.clone()]).await;
    assert_eq!(case.places().await.waiting, 4, "keyed jobs count as waiting");
    let mut leased = Vec::new();
    for _ in 0..4 {
        leased.push(case.take().await.ulid);
    }
    // Key a: priority first, then FIFO; key b gets its turn after a's first job.
    assert_eq!(leased, [a_high.ulid, b.ulid, a_low.ulid, a_next.ulid]);
    case.assert_invariants().await;
}

#[tokio::test]
async fn a_key_out_of_rate_is_skipped_and_the_round_says_when_it_may_go() {
    let case = Case::start().await;
    set(&case, StoredSettings { key_rate: rate(2, 1_000, 2), ..StoredSettings::default() }).await;
    let a: Vec<Job> = (0..4).map(|_| rate_keyed("a")).collect();
    let b: Vec<Job> = (0..2).map(|_| rate_keyed("b")).collect();
    case.add_many(&a).await;
    case.add_many(&b).await;
    let plain = case.add_ready().await;
    let round = case.lease(10).await;
    let mut got: Vec<String> = round.jobs.iter().map(|j| j.ulid.clone()).collect();
    got.sort();
    let mut want = vec![a[0].ulid.clone(), a[1].ulid.clone(), b[0].ulid.clone(), b[1].ulid.clone(), plain];
    want.sort();
    assert_eq!(got, want, "a burst of two per key, and the unkeyed job: a's other jobs wait");
    assert!(round.rate_held, "a's rate held its other jobs back");
    let wake = round.next_wake.expect("a wake for key a");
    assert!(wake <= Duration::from_millis(500) && wake > Duration::ZERO, "a's next job in one interval: {wake:?}");
    assert!(case.lease(10).await.jobs.is_empty(), "key a has no budget yet");
    let stats = case.stats().await;
    assert_eq!((stats.held_by_rate, stats.waiting_keys), (Some(2), 1), "a's two jobs, held by its rate");
    let at = round.now_ms + i64::try_from(wake.as_millis()).expect("ms");
    case.redis_time_when(|now| now >= at).await;
    let next = case.lease(10).await;
    assert!(next.rate_held, "a's last job waits for its rate");
    assert_eq!(
        ulids(&a[2..3]),
        next.jobs.iter().map(|j| j.ulid.clone()).collect::<Vec<_>>(),
        "one more of a, in order"
    );
    case.assert_invariants().await;
}

#[tokio::test]
async fn the_queue_rate_holds_every_job_and_the_refill_too() {
    let case = Case::start().await;
    set(&case, StoredSettings { rate: rate(3, 1_000, 3), ..StoredSettings::default() }).await;
    case.add_many(&(0..6).map(|_| Job::plain()).collect::<Vec<_>>()).await;
    let round = case.lease(10).await;
    assert_eq!(round.jobs.len(), 3, "the burst of three");
    assert!(round.rate_held, "the queue's rate held three back");
    let wake = round.next_wake.expect("the queue's next job");
    assert!(wake > Duration::ZERO && wake <= Duration::from_millis(334), "{wake:?}");
    assert_eq!(case.stats().await.held_by_rate, None, "the queue's rate holds every waiting job");
    let held = &round.jobs[0];
    let refill = case.token();
    let ack = Ack { ulid: &held.ulid, token: &held.token, result: b"", session_state: None };
    let done = case.complete_and_lease(&[ack], &[Some(refill.as_str())]).await;
    assert_eq!(done.outcomes, [AckOutcome::Completed]);
    assert!(done.refill.leased.is_empty(), "the refill is held by the rate too");
    assert!(done.refill.next_delayed.is_some_and(|d| d <= Duration::from_millis(334)), "{:?}", done.refill);
    case.assert_invariants().await;
}

#[tokio::test]
async fn a_key_at_its_cap_is_parked_and_every_way_a_lease_ends_frees_its_slot() {
    let case = Case::start().await;
    set(&case, StoredSettings { key_concurrency: Some(1), ..StoredSettings::default() }).await;
    let c: Vec<Job> = (0..5).map(|_| conc_keyed("c")).collect();
    let d = conc_keyed("d");
    case.add_many(&c).await;
    case.add_many(std::slice::from_ref(&d)).await;
    let round = case.lease(10).await;
    let mut got: Vec<String> = round.jobs.iter().map(|j| j.ulid.clone()).collect();
    got.sort();
    let mut want = vec![c[0].ulid.clone(), d.ulid.clone()];
    want.sort();
    assert_eq!(got, want, "one per key");
    let first = round.jobs.iter().find(|j| j.ulid == c[0].ulid).expect("c's first");
    assert!(case.raw_lease(&first.ulid).await.expect("leased").ends_with("|k"), "flagged: it holds a slot");
    assert!(case.lease(10).await.jobs.is_empty(), "c is at its cap");
    let stats = case.stats().await;
    assert_eq!((stats.held_by_key_concurrency, stats.waiting_keys), (4, 1), "c's four others, parked");
    case.assert_invariants().await;

    // complete, with the fused refill taking the freed slot
    let refill = case.token();
    let ack = Ack { ulid: &first.ulid, token: &first.token, result: b"", session_state: None };
    let done = case.complete_and_lease(&[ack], &[Some(refill.as_str())]).await;
    assert_eq!(done.refill.leased.iter().map(|j| j.ulid.clone()).collect::<Vec<_>>(), ulids(&c[1..2]));
    case.assert_invariants().await;
    // fail
    let held = &done.refill.leased[0];
    assert_eq!(case.fail(&held.ulid, &held.token, false, None, 0.0).await.check, LeaseCheck::Held);
    let held = case.take().await;
    assert_eq!(held.ulid, c[2].ulid, "the slot came back with the failure");
    // requeue (a stream lost): the job goes back at the head of its key
    assert_eq!(case.requeue(&[(held.ulid.clone(), held.token.clone())], true, 5).await, 1);
    let again = case.take().await;
    assert_eq!(again.ulid, c[2].ulid, "back at the head of key c");
    // cancel while active, then the ack ends it cancelled
    case.request_cancel(&again).await;
    assert_eq!(case.ack(&again.ulid, &again.token).await, AckOutcome::Cancelled);
    let next = case.take().await;
    assert_eq!(next.ulid, c[3].ulid);
    // a waiting keyed job cancelled and another deleted leave the key's group consistent
    assert_eq!(case.cancel(&c[4].ulid).await, CancelOutcome::Cancelled);
    case.assert_invariants().await;
    assert!(case.lease(3).await.jobs.is_empty(), "c's one slot is held, nothing of it waits");
    case.assert_invariants().await;
}

#[tokio::test]
async fn a_job_whose_key_may_run_goes_before_a_higher_priority_one_whose_key_is_full() {
    let case = Case::start().await;
    set(&case, StoredSettings { key_concurrency: Some(1), ..StoredSettings::default() }).await;
    case.add_many(&[conc_keyed("c").with(|r| r.priority = 5)]).await;
    let held = case.take().await;
    let urgent = conc_keyed("c").with(|r| r.priority = 5);
    let ordinary = Job::plain().with(|r| r.priority = -1);
    case.add_many(&[urgent.clone(), ordinary.clone()]).await;
    assert_eq!(case.take().await.ulid, ordinary.ulid, "the job that may run");
    assert_eq!(case.ack(&held.ulid, &held.token).await, AckOutcome::Completed);
    assert_eq!(case.take().await.ulid, urgent.ulid, "the key's slot came free: its job runs");
    case.assert_invariants().await;
}

#[tokio::test]
async fn raising_the_key_cap_releases_parked_keys_and_delete_and_purge_clear_keyed_jobs() {
    let case = Case::start().await;
    set(&case, StoredSettings { key_concurrency: Some(1), ..StoredSettings::default() }).await;
    let c: Vec<Job> = (0..4).map(|_| conc_keyed("c")).collect();
    case.add_many(&c).await;
    let _held = case.take().await;
    assert!(case.lease(3).await.jobs.is_empty(), "parked");
    set(&case, StoredSettings { key_concurrency: Some(2), ..StoredSettings::default() }).await;
    assert_eq!(case.lease(3).await.jobs.len(), 1, "one more slot");
    assert_eq!(case.delete(&c[2].ulid).await, 1);
    case.assert_invariants().await;
    case.purge(&[jobwire::store::Listing::Waiting]).await;
    assert_eq!(case.places().await.waiting, 0);
    case.assert_invariants().await;
}

#[tokio::test]
async fn the_invariant_check_finds_a_concurrency_count_that_drifted() {
    let case = Case::start().await;
    case.add_many(&[conc_keyed("c")]).await;
    let _held = case.take().await;
    let key = case.store.keys().queue(QUEUE).key_state().to_owned();
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("ac")
        .arg("2")
        .query_async(&mut case.raw_connection().await)
        .await
        .expect("hset");
    let problems = case.store.invariants().check_invariants(QUEUE).await.expect("check");
    assert_eq!(problems, ["concurrency key \"c\" counts 2 leases, but 1 are live"]);
}

#[tokio::test]
async fn postpone_hands_a_job_back_for_later_without_an_attempt_and_may_hold_its_key() {
    let case = Case::start().await;
    set(&case, StoredSettings { key_rate: rate(100, 1_000, 1), ..StoredSettings::default() }).await;
    let first = rate_keyed("a");
    case.add_many(std::slice::from_ref(&first)).await;
    let held = case.take().await;
    let stale = case.postpone(&held.ulid, &case.token(), Duration::from_millis(300), true).await;
    assert_eq!(stale.check, LeaseCheck::Stale, "only the holder may");
    let outcome = case.postpone(&held.ulid, &held.token, Duration::from_millis(300), true).await;
    assert_eq!((outcome.check, outcome.state), (LeaseCheck::Held, Some(RecordState::Delayed)));
    let record = case.record(&held.ulid).await;
    assert_eq!((record.attempts, record.lost), (0, 0), "no attempt spent, no delivery lost");
    let second = rate_keyed("a");
    let other = rate_keyed("b");
    case.add_many(&[second.clone(), other.clone()]).await;
    let round = case.lease(5).await;
    assert_eq!(round.jobs.iter().map(|j| j.ulid.clone()).collect::<Vec<_>>(), [other.ulid], "key a is held, b is not");
    let wake = round.next_wake.expect("a wake when a's hold ends");
    assert!(wake <= Duration::from_millis(300), "{wake:?}");
    case.redis_time_when(|now| now >= outcome.run_at_ms).await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.extend(case.lease(5).await.jobs.into_iter().map(|j| j.ulid));
    }
    seen.sort();
    let mut want = vec![first.ulid, second.ulid];
    want.sort();
    assert_eq!(seen, want, "both of a's jobs once the hold is over");
    case.assert_invariants().await;
}

#[tokio::test]
async fn a_round_says_a_rate_held_jobs_back_only_when_one_did() {
    let case = Case::start().await;
    case.add_many(&[rate_keyed("a"), rate_keyed("a"), Job::plain()]).await;
    let round = case.lease(10).await;
    assert_eq!(round.jobs.len(), 3);
    assert!(!round.rate_held, "no rate is set");
    set(&case, StoredSettings { rate: rate(5, 10_000, 5), key_rate: rate(10, 1_000, 10), ..StoredSettings::default() })
        .await;
    case.add_many(&[rate_keyed("a"), rate_keyed("b"), Job::plain()]).await;
    let round = case.lease(10).await;
    assert_eq!(round.jobs.len(), 3, "within every budget");
    assert!(!round.rate_held, "the queue ran out of jobs before any rate held one back");
    case.add_many(&(0..8).map(|_| Job::plain()).collect::<Vec<_>>()).await;
    let round = case.lease(10).await;
    assert_eq!(round.jobs.len(), 2, "the rest of the queue's burst of five");
    assert!(round.rate_held, "the queue's rate held six back");
    case.assert_invariants().await;
}

#[tokio::test]
async fn a_rate_held_key_goes_in_batches_of_half_its_burst_in_order() {
    let case = Case::start().await;
    // 10 per second, burst 8: one job per 100 ms, so the batch is half the burst (4), not the
    // one job 100 ms lets through.
    set(&case, StoredSettings { key_rate: rate(10, 1_000, 8), ..StoredSettings::default() }).await;
    let a: Vec<Job> = (0..14).map(|_| rate_keyed("a")).collect();
    case.add_many(&a).await;
    let round = case.lease(20).await;
    assert_eq!(round.jobs.iter().map(|j| j.ulid.clone()).collect::<Vec<_>>(), ulids(&a[..8]), "the burst");
    assert!(round.rate_held, "a's rate held six back");
    let wake = round.next_wake.expect("a wake for key a");
    assert!(
        wake > Duration::from_millis(300) && wake <= Duration::from_millis(400),
        "the next round when four may go, not one: {wake:?}"
    );
    let at = round.now_ms + i64::try_from(wake.as_millis()).expect("ms");
    case.redis_time_when(|now| now >= at).await;
    let next = case.lease(20).await;
    // Four, or one more per 100 ms that this round came late.
    let n = next.jobs.len();
    assert!((4..=6).contains(&n), "a batch of four: {n}");
    assert_eq!(next.jobs.iter().map(|j| j.ulid.clone()).collect::<Vec<_>>(), ulids(&a[8..8 + n]), "in order");
    case.assert_invariants().await;
}
