//! lua/settings_set.lua, and the settings the other functions read themselves: max waiting in
//! add, retention in complete, the concurrency cap in lease and in an ack's refill.

use jobwire::store::{Ack, AckOutcome, AddOutcome, BackoffSpec, LeaseCheck, SettingField, StoredSettings};
use redis::AsyncCommands;

use super::{Case, Job, QUEUE};

#[tokio::test]
async fn settings_set_sets_clears_and_answers_what_is_stored() {
    let case = Case::start().await;
    let settings = case.store.queue_settings();
    assert_eq!(settings.get(QUEUE).await.expect("get"), StoredSettings::default(), "none before any set");
    let backoff = BackoffSpec { fixed: true, base_ms: 250, factor: 1.0, max_ms: 250, jitter: 0.0 };
    let set = StoredSettings {
        concurrency: Some(4),
        max_waiting: Some(10),
        max_attempts: Some(7),
        timeout_ms: Some(5_000),
        backoff: Some(backoff),
        completed_ms: Some(60_000),
        completed_max: Some(3),
        dead_ms: Some(120_000),
        dead_max: Some(4),
        rate: Some(jobwire::store::RateSpec { count: 100, period_ms: 1_000, burst: 10 }),
        key_rate: Some(jobwire::store::RateSpec { count: 5, period_ms: 1_000, burst: 20 }),
        key_concurrency: Some(3),
        shards: Some(2),
    };
    let stored = settings.change(QUEUE, &set, &[]).await.expect("set");
    assert_eq!(stored, set, "the answer is what is stored");
    assert_eq!(settings.get(QUEUE).await.expect("get"), set);

    let only_attempts = StoredSettings { max_attempts: Some(2), ..StoredSettings::default() };
    let stored = settings
        .change(QUEUE, &only_attempts, &[SettingField::MaxWaiting, SettingField::Backoff])
        .await
        .expect("change");
    assert_eq!(
        stored,
        StoredSettings { max_waiting: None, max_attempts: Some(2), backoff: None, ..set },
        "a field given is set, those cleared go, the rest stay"
    );
    case.assert_invariants().await;
}

#[tokio::test]
async fn settings_set_keeps_the_shard_count_once_set() {
    let case = Case::start().await;
    let settings = case.store.queue_settings();
    let shards = |n| StoredSettings { shards: Some(n), ..StoredSettings::default() };
    assert_eq!(settings.change(QUEUE, &shards(3), &[]).await.expect("set").shards, Some(3));
    assert_eq!(settings.change(QUEUE, &shards(3), &[]).await.expect("same").shards, Some(3), "the same count again");
    assert_eq!(
        settings.change(QUEUE, &shards(5), &[]).await.expect("other").shards,
        Some(3),
        "another count is skipped"
    );
    let cleared = settings.change(QUEUE, &StoredSettings::default(), &[SettingField::Shards]).await.expect("clear");
    assert_eq!(cleared.shards, Some(3), "a clear is skipped");
    case.assert_invariants().await;
}

#[tokio::test]
async fn add_holds_the_queues_max_waiting_over_the_flag() {
    let case = Case::start().await;
    let cap = StoredSettings { max_waiting: Some(2), ..StoredSettings::default() };
    case.store.queue_settings().change(QUEUE, &cap, &[]).await.expect("set");
    let outcomes = case.add_capped(&[Job::plain(), Job::plain(), Job::plain()], 100).await;
    assert!(matches!(outcomes[..2], [AddOutcome::Added(_), AddOutcome::Added(_)]), "{outcomes:?}");
    assert_eq!(outcomes[2], AddOutcome::QueueFull(2), "the queue's own cap, not the flag's 100");

    case.store
        .queue_settings()
        .change(QUEUE, &StoredSettings::default(), &[SettingField::MaxWaiting])
        .await
        .expect("clear");
    let outcomes = case.add_capped(&[Job::plain()], 3).await;
    assert!(matches!(outcomes[..], [AddOutcome::Added(_)]), "the flag again: {outcomes:?}");
    assert_eq!(case.add_capped(&[Job::plain()], 3).await, [AddOutcome::QueueFull(3)]);
    case.assert_invariants().await;
}

#[tokio::test]
async fn complete_keeps_the_queues_completed_max() {
    let case = Case::start().await;
    let keep_one = StoredSettings { completed_max: Some(1), ..StoredSettings::default() };
    case.store.queue_settings().change(QUEUE, &keep_one, &[]).await.expect("set");
    for _ in 0..3 {
        let held = case.add_active().await;
        let ack = Ack { ulid: &held.ulid, token: &held.token, result: b"r", session_state: None };
        assert_eq!(case.complete(&[ack]).await, [AckOutcome::Completed]);
    }
    assert_eq!(case.stats().await.completed, 1, "the queue's cap of 1, not the flag's");
    case.assert_invariants().await;
}

async fn set_concurrency(case: &Case, cap: u64) {
    let set = StoredSettings { concurrency: Some(cap), ..StoredSettings::default() };
    case.store.queue_settings().change(QUEUE, &set, &[]).await.expect("set");
}

/// Whether the queue's meta says a round stopped at the cap (and no slot was freed since).
async fn capped(case: &Case) -> bool {
    let meta = case.store.keys().queue(QUEUE).meta().to_owned();
    case.raw_connection().await.hexists(meta, "capped").await.expect("hexists")
}

#[tokio::test]
async fn lease_and_refill_stop_at_the_concurrency_cap() {
    let case = Case::start().await;
    set_concurrency(&case, 2).await;
    case.add_many(&[Job::plain(), Job::plain(), Job::plain(), Job::plain()]).await;
    let round = case.lease(4).await;
    assert_eq!(round.jobs.len(), 2, "two of four: the cap");
    assert!(capped(&case).await, "the round stopped at the cap");
    assert!(case.lease(4).await.jobs.is_empty(), "no room while both are active");

    // An ack frees its slot, and its refill takes it: one job, though two tokens were offered.
    let first = &round.jobs[0];
    let (a, b) = (case.token(), case.token());
    let ack = Ack { ulid: &first.ulid, token: &first.token, result: b"", session_state: None };
    let done = case.complete_and_lease(&[ack], &[Some(a.as_str())]).await;
    assert_eq!(done.refill.leased.len(), 1, "the freed slot, refilled");
    assert!(capped(&case).await, "the refill filled the cap again");
    let second = &round.jobs[1];
    let (outcome, refill) = case.fail_and_lease(&second.ulid, &second.token, &b).await;
    assert_eq!(outcome.check, LeaseCheck::Held, "{outcome:?}");
    assert_eq!(refill.leased.len(), 1, "a failure's slot, refilled");
    assert_eq!(case.stats().await.active, 2);
    case.assert_invariants().await;
}

#[tokio::test]
async fn a_lease_ending_below_the_cap_clears_the_mark_and_raising_the_cap_leases_more() {
    let case = Case::start().await;
    set_concurrency(&case, 1).await;
    case.add_many(&[Job::plain(), Job::plain(), Job::plain()]).await;
    let held = case.lease(3).await.jobs.remove(0);
    assert!(capped(&case).await);
    let ack = Ack { ulid: &held.ulid, token: &held.token, result: b"", session_state: None };
    assert_eq!(case.complete(&[ack]).await, [AckOutcome::Completed]);
    assert!(!capped(&case).await, "a slot came free: the mark goes (and the dispatchers are woken)");
    set_concurrency(&case, 5).await;
    assert_eq!(case.lease(5).await.jobs.len(), 2, "the rest, under the raised cap");
    assert!(!capped(&case).await, "the queue ran out before the cap");
    case.assert_invariants().await;
}

#[tokio::test]
async fn the_invariant_check_finds_a_settings_hash_it_cannot_read() {
    let case = Case::start().await;
    let key = case.store.keys().queue(QUEUE).settings().to_owned();
    let mut c = case.raw_connection().await;
    let _: () = c.hset(&key, "concurrency", "many").await.expect("hset");
    let _: () = c.hset(&key, "speed", "1").await.expect("hset");
    let problems = case.store.invariants().check_invariants(QUEUE).await.expect("check");
    assert_eq!(
        problems,
        [
            "queue settings: corrupt data: queue setting concurrency: \"many\"",
            "queue settings: unknown field \"speed\"",
        ]
    );
}
