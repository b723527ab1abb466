//! complete.lua and fail.lua: every answer to a worker's report on its attempt.

use std::time::Duration;

use jobwire::store::{Ack, AckOutcome, BackoffSpec, FailOutcome, LeaseCheck, LeasedJob, RecordState};

use super::{Case, Job, LONG_BACKOFF_MS, Places, next_ulid};

const STATE: &str = r#"{"step":2}"#;

/// Fails a held attempt as retryable; the outcome and how long after the call the retry runs
/// (by Redis's clock, read just before, so within a second of the true wait).
async fn fail_retrying(case: &Case, held: &LeasedJob, retry_after: Option<Duration>, rand: f64) -> (FailOutcome, i64) {
    let before = case.stats().await.now_ms;
    let outcome = case.fail(&held.ulid, &held.token, true, retry_after, rand).await;
    let wait = outcome.run_at_ms - before;
    (outcome, wait)
}

fn with_state<'a>(ulid: &'a str, token: &'a str, expected: Option<u64>) -> Ack<'a> {
    Ack { ulid, token, result: b"done", session_state: Some((STATE, expected)) }
}

#[tokio::test]
async fn complete_of_a_held_attempt_keeps_its_outcome() {
    let case = Case::start().await;
    let held = case.add_active().await;
    assert_eq!(case.ack(&held.ulid, &held.token).await, AckOutcome::Completed);
    assert_eq!(case.places().await, Places { completed: 1, ..Places::default() });
    let info = case.info(&held.ulid).await.expect("retained");
    assert_eq!(info.lease, None);
    let record = info.record;
    assert_eq!((record.state, record.attempts), (RecordState::Completed, 1));
    assert_eq!(record.result.as_deref(), Some(&b"done"[..]));
    assert!(record.finished_ms >= record.started_ms && record.started_ms.is_some());
    case.assert_invariants().await;
}

#[tokio::test]
async fn complete_with_a_stale_token_or_an_unknown_job_changes_nothing() {
    let case = Case::start().await;
    let held = case.add_active().await;
    let stranger = case.token();
    let unknown = next_ulid();
    let piped = format!("{}|0|1", held.token);
    let acks = [
        Ack { ulid: &held.ulid, token: &stranger, result: b"", session_state: None },
        Ack { ulid: &unknown, token: &held.token, result: b"", session_state: None },
        // A token cannot hold a '|': it would otherwise match the head of the lease.
        Ack { ulid: &held.ulid, token: &piped, result: b"", session_state: None },
    ];
    assert_eq!(case.complete(&acks).await, [AckOutcome::Stale, AckOutcome::UnknownJob, AckOutcome::Stale]);
    assert_eq!(case.places().await, Places { active: 1, ..Places::default() });
    assert_eq!(case.info(&held.ulid).await.expect("retained").lease.expect("held").token.as_str(), held.token);
    case.assert_invariants().await;
}

#[tokio::test]
async fn complete_of_a_batch_applies_each_ack_on_its_own() {
    let case = Case::start().await;
    let (a, b) = (case.add_active().await, case.add_active().await);
    let stranger = case.token();
    let acks = [
        Ack { ulid: &a.ulid, token: &stranger, result: b"", session_state: None },
        Ack { ulid: &b.ulid, token: &b.token, result: b"first", session_state: None },
        // The same job again: answered after the first ack, which took its lease.
        Ack { ulid: &b.ulid, token: &b.token, result: b"second", session_state: None },
    ];
    assert_eq!(case.complete(&acks).await, [AckOutcome::Stale, AckOutcome::Completed, AckOutcome::Stale]);
    assert_eq!(case.places().await, Places { active: 1, completed: 1, ..Places::default() });
    assert_eq!(case.record(&b.ulid).await.result.as_deref(), Some(&b"first"[..]));
    case.assert_invariants().await;
}

#[tokio::test]
async fn complete_past_the_completed_cap_drops_the_oldest() {
    let case = Case::with_retention(|r| r.completed_max = 1).await;
    let (a, b) = (case.add_active().await, case.add_active().await);
    assert_eq!(case.ack(&a.ulid, &a.token).await, AckOutcome::Completed);
    assert_eq!(case.ack(&b.ulid, &b.token).await, AckOutcome::Completed);
    assert_eq!(case.places().await, Places { completed: 1, ..Places::default() });
    assert!(case.info(&a.ulid).await.is_none(), "the oldest went with its record");
    assert_eq!(case.record(&b.ulid).await.state, RecordState::Completed);
    case.assert_invariants().await;
}

#[tokio::test]
async fn a_batch_of_completions_larger_than_a_trim_still_keeps_the_cap() {
    let case = Case::with_retention(|r| r.completed_max = 5).await;
    let mut held = Vec::new();
    for _ in 0..160 {
        held.push(case.add_active().await);
    }
    let acks: Vec<Ack> =
        held.iter().map(|h| Ack { ulid: &h.ulid, token: &h.token, result: b"", session_state: None }).collect();
    assert!(case.complete(&acks).await.iter().all(|o| *o == AckOutcome::Completed));
    assert_eq!(case.places().await, Places { completed: 5, ..Places::default() });
    assert!(case.info(&held[154].ulid).await.is_none(), "the oldest went with their records");
    assert_eq!(case.record(&held[159].ulid).await.state, RecordState::Completed);
    case.assert_invariants().await;
}

#[tokio::test]
async fn complete_without_retention_drops_the_record_at_once() {
    let case = Case::with_retention(|r| r.completed_max = 0).await;
    let held = case.add_active().await;
    assert_eq!(case.ack(&held.ulid, &held.token).await, AckOutcome::Completed);
    assert_eq!(case.places().await, Places::default());
    assert!(case.info(&held.ulid).await.is_none());
    case.assert_invariants().await;
}

#[tokio::test]
async fn complete_of_a_session_job_writes_the_state_and_releases_the_next() {
    let case = Case::start().await;
    case.open_session("s", 1).await;
    let jobs = [Job::plain().in_session("s"), Job::plain().in_session("s"), Job::plain().in_session("s")];
    case.add_many(&jobs).await;
    let first = case.take().await;
    assert_eq!(case.complete(&[with_state(&first.ulid, &first.token, Some(1))]).await, [AckOutcome::Completed]);
    let session = case.session_get("s").await.expect("session");
    assert_eq!((session.state.as_str(), session.version), (STATE, 2));
    assert_eq!((session.started, session.queued, session.pending), (0, 1, 1));
    // Unchecked (no expected version), and without a state: the next ones complete too.
    let second = case.take().await;
    assert_eq!(case.complete(&[with_state(&second.ulid, &second.token, None)]).await, [AckOutcome::Completed]);
    assert_eq!(case.session_get("s").await.expect("session").version, 3);
    let third = case.take().await;
    assert_eq!(case.ack(&third.ulid, &third.token).await, AckOutcome::Completed);
    assert_eq!(case.session_get("s").await.expect("session").version, 3, "no state, no new version");
    assert_eq!(case.places().await, Places { completed: 3, ..Places::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn complete_with_a_stale_session_version_writes_nothing() {
    let case = Case::start().await;
    let held = case.add_active_in_session("s").await;
    assert_eq!(case.complete(&[with_state(&held.ulid, &held.token, Some(7))]).await, [AckOutcome::VersionMismatch]);
    let session = case.session_get("s").await.expect("session");
    assert_eq!((session.state.as_str(), session.version, session.started), ("{}", 1, 1));
    assert_eq!(case.places().await, Places { active: 1, ..Places::default() }, "still leased");
    case.assert_invariants().await;
}

#[tokio::test]
async fn complete_with_a_session_state_for_a_job_outside_sessions_writes_nothing() {
    let case = Case::start().await;
    let held = case.add_active().await;
    assert_eq!(case.complete(&[with_state(&held.ulid, &held.token, None)]).await, [AckOutcome::NotInSession]);
    assert_eq!(case.places().await, Places { active: 1, ..Places::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn complete_of_a_cancelled_job_ends_it_cancelled() {
    let case = Case::start().await;
    let held = case.add_active().await;
    case.request_cancel(&held).await;
    assert_eq!(case.ack(&held.ulid, &held.token).await, AckOutcome::Cancelled);
    assert_eq!(case.places().await, Places { cancelled: 1, ..Places::default() });
    let record = case.record(&held.ulid).await;
    assert_eq!((record.state, record.attempts, record.result), (RecordState::Cancelled, 1, None));
    case.assert_invariants().await;
}

#[tokio::test]
async fn complete_of_a_job_whose_session_is_gone_ends_it_cancelled() {
    let case = Case::start().await;
    let held = case.add_active_in_session("s").await;
    assert!(case.session_delete("s").await);
    assert_eq!(case.complete(&[with_state(&held.ulid, &held.token, Some(1))]).await, [AckOutcome::SessionGone]);
    assert_eq!(case.places().await, Places { cancelled: 1, ..Places::default() });
    assert_eq!(case.record(&held.ulid).await.state, RecordState::Cancelled);
    assert!(case.session_get("s").await.is_none(), "the state was not written back");
    case.assert_invariants().await;
}

#[tokio::test]
async fn fail_retryable_waits_out_the_backoff() {
    let case = Case::start().await;
    let held = case.add_active().await;
    let (outcome, wait) = fail_retrying(&case, &held, None, 0.9).await;
    assert_eq!((outcome.check, outcome.state), (LeaseCheck::Held, Some(RecordState::Retrying)));
    // A fixed backoff without jitter: exactly its base.
    let backoff = i64::try_from(LONG_BACKOFF_MS).expect("a minute of ms fits");
    assert!((backoff..backoff + 1_000).contains(&wait), "{wait}");
    assert_eq!(case.places().await, Places { delayed: 1, ..Places::default() });
    let record = case.record(&held.ulid).await;
    assert_eq!((record.state, record.attempts, record.last_error.as_deref()), (RecordState::Retrying, 1, Some("boom")));
    assert_eq!(record.run_at_ms, Some(outcome.run_at_ms));
    case.assert_invariants().await;
}

#[tokio::test]
async fn fail_with_an_exponential_backoff_grows_caps_and_jitters_the_wait() {
    let case = Case::start().await;
    let exponential = Job::plain().with(|r| {
        r.backoff = Some(BackoffSpec { fixed: false, base_ms: 40_000, factor: 3.0, max_ms: 100_000, jitter: 0.5 });
    });
    case.add(&exponential).await;
    let first = case.take().await;
    // Retry at once (retry_after 0) to reach a second attempt without waiting.
    let outcome = case.fail(&first.ulid, &first.token, true, Some(Duration::ZERO), 0.0).await;
    assert_eq!(outcome.state, Some(RecordState::Waiting));
    let second = case.take().await;
    assert_eq!(second.attempt, 2);
    let (_, wait) = fail_retrying(&case, &second, None, 0.5).await;
    // min(100 s, 40 s * 3) = 100 s, less a jitter of 0.5 * 0.5: 75 s.
    assert!((75_000..76_000).contains(&wait), "{wait}");
    assert_eq!(case.places().await, Places { delayed: 1, ..Places::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn fail_without_a_stored_backoff_uses_the_default_policy() {
    let case = Case::start().await;
    case.add(&Job::plain().with(|r| r.backoff = None)).await;
    let held = case.take().await;
    let (_, wait) = fail_retrying(&case, &held, None, 0.5).await;
    // Exponential from 1 s with a jitter of 0.5: the first retry waits 1 s * (1 - 0.5 * 0.5).
    assert!((750..1_750).contains(&wait), "{wait}");
    assert_eq!(case.places().await, Places { delayed: 1, ..Places::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn fail_with_retry_after_uses_it_and_zero_makes_the_job_ready() {
    let case = Case::start().await;
    let held = case.add_active().await;
    let (outcome, wait) = fail_retrying(&case, &held, Some(Duration::from_secs(5)), 0.0).await;
    assert_eq!(outcome.state, Some(RecordState::Retrying));
    assert!((5_000..6_000).contains(&wait), "{wait}");
    let other = case.add_active().await;
    let now = case.stats().await.now_ms;
    let outcome = case.fail(&other.ulid, &other.token, true, Some(Duration::ZERO), 0.0).await;
    assert_eq!(outcome.state, Some(RecordState::Waiting));
    assert!((now..now + 1_000).contains(&outcome.run_at_ms), "ready now");
    assert_eq!(case.places().await, Places { waiting: 1, delayed: 1, ..Places::default() });
    assert_eq!(case.record(&other.ulid).await.attempts, 1);
    case.assert_invariants().await;
}

#[tokio::test]
async fn fail_of_the_last_attempt_buries_the_job() {
    let case = Case::start().await;
    case.add(&Job::plain().with(|r| r.max_attempts = 2)).await;
    let first = case.take().await;
    case.fail(&first.ulid, &first.token, true, Some(Duration::ZERO), 0.0).await;
    let last = case.take().await;
    let outcome = case.fail(&last.ulid, &last.token, true, None, 0.0).await;
    assert_eq!(outcome, FailOutcome { check: LeaseCheck::Held, state: Some(RecordState::Dead), run_at_ms: 0 });
    assert_eq!(case.places().await, Places { dead: 1, ..Places::default() });
    let record = case.record(&last.ulid).await;
    assert_eq!((record.state, record.attempts, record.last_error.as_deref()), (RecordState::Dead, 2, Some("boom")));
    assert!(record.finished_ms.is_some());
    case.assert_invariants().await;
}

#[tokio::test]
async fn fail_permanent_buries_the_job_with_attempts_left() {
    let case = Case::start().await;
    let held = case.add_active().await;
    let outcome = case.fail(&held.ulid, &held.token, false, None, 0.0).await;
    assert_eq!(outcome.state, Some(RecordState::Dead));
    assert_eq!(case.places().await, Places { dead: 1, ..Places::default() });
    assert_eq!(case.record(&held.ulid).await.attempts, 1);
    case.assert_invariants().await;
}

#[tokio::test]
async fn fail_past_the_dead_cap_evicts_the_oldest() {
    let case = Case::with_retention(|r| r.dead_max = 1).await;
    let first = case.add_dead().await;
    let second = case.add_dead().await;
    let stats = case.stats().await;
    assert_eq!((stats.dead, stats.dead_evicted), (1, 1));
    assert!(case.info(&first).await.is_none());
    assert_eq!(case.record(&second).await.state, RecordState::Dead);
    case.assert_invariants().await;
}

#[tokio::test]
async fn fail_with_a_stale_token_or_an_unknown_job_changes_nothing() {
    let case = Case::start().await;
    let held = case.add_active().await;
    let refused = |check| FailOutcome { check, state: None, run_at_ms: 0 };
    assert_eq!(case.fail(&held.ulid, &case.token(), true, None, 0.0).await, refused(LeaseCheck::Stale));
    let unknown = next_ulid();
    assert_eq!(case.fail(&unknown, &held.token, true, None, 0.0).await, refused(LeaseCheck::UnknownJob));
    assert_eq!(case.places().await, Places { active: 1, ..Places::default() });
    assert_eq!(case.record(&held.ulid).await.attempts, 0);
    case.assert_invariants().await;
}

#[tokio::test]
async fn fail_of_a_cancelled_job_ends_it_cancelled() {
    let case = Case::start().await;
    let held = case.add_active().await;
    case.request_cancel(&held).await;
    let outcome = case.fail(&held.ulid, &held.token, true, None, 0.0).await;
    assert_eq!(outcome.state, Some(RecordState::Cancelled));
    assert_eq!(case.places().await, Places { cancelled: 1, ..Places::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn fail_of_a_session_job_holds_its_place_while_it_retries() {
    let case = Case::start().await;
    case.open_session("s", 1).await;
    case.add_many(&[Job::plain().in_session("s"), Job::plain().in_session("s")]).await;
    let held = case.take().await;
    let outcome = case.fail(&held.ulid, &held.token, true, None, 0.0).await;
    assert_eq!(outcome.state, Some(RecordState::Retrying));
    let session = case.session_get("s").await.expect("session");
    assert_eq!((session.started, session.queued, session.pending), (0, 1, 1), "the next job stays behind");
    assert_eq!(case.places().await, Places { delayed: 1, pending: 1, ..Places::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn fail_of_a_job_whose_session_is_gone_ends_it_cancelled() {
    let case = Case::start().await;
    let held = case.add_active_in_session("s").await;
    assert!(case.session_delete("s").await);
    let outcome = case.fail(&held.ulid, &held.token, true, None, 0.0).await;
    assert_eq!(outcome.state, Some(RecordState::Cancelled));
    assert_eq!(case.places().await, Places { cancelled: 1, ..Places::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn complete_with_a_session_state_of_a_cancelled_job_ends_it_cancelled_unwritten() {
    let case = Case::start().await;
    let held = case.add_active_in_session("s").await;
    case.request_cancel(&held).await;
    assert_eq!(case.complete(&[with_state(&held.ulid, &held.token, Some(1))]).await, [AckOutcome::Cancelled]);
    let session = case.session_get("s").await.expect("session");
    assert_eq!((session.state.as_str(), session.version, session.started), ("{}", 1, 0));
    assert_eq!(case.places().await, Places { cancelled: 1, ..Places::default() });
    case.assert_invariants().await;
}

/// A plain ack of a held attempt, for the fused lease tests.
fn plain(held: &LeasedJob) -> Ack<'_> {
    Ack { ulid: &held.ulid, token: &held.token, result: b"done", session_state: None }
}

fn ulids(jobs: &[LeasedJob]) -> Vec<&str> {
    jobs.iter().map(|j| j.ulid.as_str()).collect()
}

#[tokio::test]
async fn complete_with_refills_leases_the_next_jobs_by_priority_then_in_order() {
    let case = Case::start().await;
    let (a, b) = (case.add_active().await, case.add_active().await);
    let (x, y, z) = (Job::plain(), Job::plain().with(|r| r.priority = 3), Job::plain());
    case.add_many(&[x.clone(), y.clone(), z.clone()]).await;
    let (ta, tb) = (case.token(), case.token());
    let done = case.complete_and_lease(&[plain(&a), plain(&b)], &[Some(&ta), Some(&tb)]).await;
    assert_eq!(done.outcomes, [AckOutcome::Completed, AckOutcome::Completed]);
    assert_eq!(done.refill.offered, [ta.clone(), tb.clone()]);
    assert_eq!(ulids(&done.refill.leased), [&*y.ulid, &*x.ulid], "higher priority first, then FIFO");
    let tokens: Vec<&str> = done.refill.leased.iter().map(|j| j.token.as_str()).collect();
    assert_eq!(tokens, [&*ta, &*tb]);
    for job in &done.refill.leased {
        assert_eq!(job.attempt, 1);
        assert!(job.deadline_ms > done.refill.now_ms, "the deadline runs from the call");
        let lease = case.raw_lease(&job.ulid).await.expect("leased");
        assert!(lease.starts_with(&format!("{}|", job.token)), "{lease} is held by {}", job.token);
    }
    assert_eq!(case.places().await, Places { waiting: 1, active: 2, completed: 2, ..Places::default() });
    assert_eq!(case.lease(1).await.jobs[0].ulid, z.ulid, "the rest waits in order");
    case.assert_invariants().await;
}

#[tokio::test]
async fn complete_with_refills_leases_fewer_when_the_queue_runs_short() {
    let case = Case::start().await;
    let (a, b) = (case.add_active().await, case.add_active().await);
    let waiting = case.add_ready().await;
    let (ta, tb) = (case.token(), case.token());
    let done = case.complete_and_lease(&[plain(&a), plain(&b)], &[Some(&ta), Some(&tb)]).await;
    assert_eq!(done.refill.offered.len(), 2);
    assert_eq!(ulids(&done.refill.leased), [&*waiting]);
    assert_eq!(case.places().await, Places { active: 1, completed: 2, ..Places::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn complete_with_refills_of_a_paused_queue_leases_nothing() {
    let case = Case::start().await;
    let held = case.add_active().await;
    case.add_ready().await;
    case.pause(true).await;
    let refill = case.token();
    let done = case.complete_and_lease(&[plain(&held)], &[Some(&refill)]).await;
    assert_eq!(done.outcomes, [AckOutcome::Completed]);
    assert_eq!(done.refill.offered, [refill]);
    assert!(done.refill.leased.is_empty());
    assert_eq!(case.places().await, Places { waiting: 1, completed: 1, ..Places::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn complete_with_a_refill_starts_the_next_job_of_its_session_within_its_limit() {
    let case = Case::start().await;
    case.session_create("s", r#"{"n":1}"#, Duration::from_secs(60), 1).await;
    let jobs = [Job::plain().in_session("s"), Job::plain().in_session("s")];
    case.add_many(&jobs).await;
    let first = case.take().await;
    let other = case.add_active().await;
    // The session runs its one job: another ack's refill may not start the second.
    let refill = case.token();
    let done = case.complete_and_lease(&[plain(&other)], &[Some(&refill)]).await;
    assert!(done.refill.leased.is_empty(), "the session is at its limit");
    // Its own ack releases the second, which its refill starts, with the session's state.
    let refill = case.token();
    let done = case.complete_and_lease(&[plain(&first)], &[Some(&refill)]).await;
    assert_eq!(ulids(&done.refill.leased), [&*jobs[1].ulid]);
    let snapshot = done.refill.leased[0].session.as_ref().expect("the session at delivery");
    assert_eq!((snapshot.name.as_str(), snapshot.state.as_str()), ("s", r#"{"n":1}"#));
    let session = case.session_get("s").await.expect("session");
    assert_eq!((session.started, session.queued, session.pending), (1, 0, 0));
    assert_eq!(case.places().await, Places { active: 1, completed: 2, ..Places::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn complete_with_a_stale_token_refills_nothing() {
    let case = Case::start().await;
    let (held, version_held) = (case.add_active().await, case.add_active_in_session("s").await);
    let waiting = case.add_ready().await;
    let (stranger, unknown) = (case.token(), next_ulid());
    let acks = [
        Ack { ulid: &held.ulid, token: &stranger, result: b"", session_state: None },
        Ack { ulid: &unknown, token: &held.token, result: b"", session_state: None },
        // A version mismatch keeps the lease: no credit is freed.
        with_state(&version_held.ulid, &version_held.token, Some(7)),
    ];
    let refills = [case.token(), case.token(), case.token()];
    let done = case.complete_and_lease(&acks, &refills.iter().map(|t| Some(t.as_str())).collect::<Vec<_>>()).await;
    assert_eq!(done.outcomes, [AckOutcome::Stale, AckOutcome::UnknownJob, AckOutcome::VersionMismatch]);
    assert!(done.refill.offered.is_empty() && done.refill.leased.is_empty());
    assert_eq!(case.places().await, Places { waiting: 1, active: 2, ..Places::default() });
    assert_eq!(case.lease(1).await.jobs[0].ulid, waiting);
    case.assert_invariants().await;
}

#[tokio::test]
async fn fail_with_a_refill_leases_the_next_job_and_a_stale_one_refills_nothing() {
    let case = Case::start().await;
    let held = case.add_active().await;
    let waiting = case.add_ready().await;
    let stranger = case.token();
    let (refused, refill) = case.fail_and_lease(&held.ulid, &stranger, &case.token()).await;
    assert_eq!(refused.check, LeaseCheck::Stale);
    assert!(refill.offered.is_empty() && refill.leased.is_empty());
    let token = case.token();
    let (outcome, refill) = case.fail_and_lease(&held.ulid, &held.token, &token).await;
    assert_eq!((outcome.check, outcome.state), (LeaseCheck::Held, Some(RecordState::Dead)));
    assert_eq!(refill.offered, std::slice::from_ref(&token));
    assert_eq!(ulids(&refill.leased), [&*waiting]);
    assert_eq!(refill.leased[0].token, token);
    assert_eq!(case.places().await, Places { active: 1, dead: 1, ..Places::default() });
    let (_, refill) = case.fail_and_lease(&waiting, &token, &case.token()).await;
    assert!(refill.leased.is_empty(), "the queue ran short");
    case.assert_invariants().await;
}

#[tokio::test]
async fn complete_with_refills_makes_due_retries_ready_first_and_says_when_the_next_is_due() {
    let case = Case::start().await;
    let (a, b, c) = (case.add_active().await, case.add_active().await, case.add_active().await);
    let soon = case.fail(&b.ulid, &b.token, true, Some(Duration::from_millis(1)), 0.0).await;
    assert_eq!(soon.state, Some(RecordState::Retrying));
    let later = case.fail(&c.ulid, &c.token, true, Some(Duration::from_secs(60)), 0.0).await;
    assert_eq!(later.state, Some(RecordState::Retrying));
    // Time passing, not a wait for anything to start: b's retry comes due.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let refill = case.token();
    let done = case.complete_and_lease(&[plain(&a)], &[Some(&refill)]).await;
    assert_eq!(ulids(&done.refill.leased), [&*b.ulid]);
    let next = done.refill.next_delayed.expect("c's retry is still delayed");
    assert!(next > Duration::from_secs(50) && next <= Duration::from_secs(60), "{next:?}");
    assert_eq!(case.places().await, Places { delayed: 1, active: 1, completed: 1, ..Places::default() });
    case.assert_invariants().await;
}
