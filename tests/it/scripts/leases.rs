//! lease.lua, extend.lua, progress.lua, requeue.lua, reap.lua, reclaim.lua and heartbeat.lua:
//! who holds a job, until when, and how it comes back.

use std::time::Duration;

use jobwire::store::{AckOutcome, CancelOutcome, LeaseCheck, RecordState};

use super::{Case, INSTANCE, Job, LONG_BACKOFF_MS, Places, next_ulid};

#[tokio::test]
async fn lease_of_an_empty_queue_hands_out_nothing() {
    let case = Case::start().await;
    let round = case.lease(3).await;
    assert!(round.jobs.is_empty() && round.revoked.is_empty());
    assert_eq!(round.next_wake, None, "nothing to wake for");
    assert!(round.now_ms > 0);
    case.assert_invariants().await;
}

#[tokio::test]
async fn lease_without_tokens_leases_nothing() {
    let case = Case::start().await;
    case.add_ready().await;
    assert!(case.lease(0).await.jobs.is_empty());
    assert_eq!(case.places().await, Places { waiting: 1, ..Places::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn lease_hands_out_jobs_by_priority_then_age_one_per_token() {
    let case = Case::start().await;
    let low = Job::plain().with(|r| r.priority = -5);
    let high = Job::plain().with(|r| r.priority = 5);
    let (a, b) = (Job::plain(), Job::plain());
    case.add_many(&[low.clone(), a.clone(), high.clone(), b.clone()]).await;
    let tokens = [case.token(), case.token(), case.token()];
    let round = case.lease_with(&tokens, 0.0, false).await;
    let leased: Vec<(&str, &str)> = round.jobs.iter().map(|j| (j.ulid.as_str(), j.token.as_str())).collect();
    assert_eq!(leased, [(&*high.ulid, &*tokens[0]), (&*a.ulid, &*tokens[1]), (&*b.ulid, &*tokens[2])]);
    let first = &round.jobs[0];
    assert_eq!(first.attempt, 1);
    assert_eq!(first.deadline_ms, round.now_ms + 30_000);
    assert_eq!(first.record, high.record);
    assert_eq!(round.next_wake, Some(Duration::from_millis(30_000)), "the earliest deadline");
    assert_eq!(case.places().await, Places { waiting: 1, active: 3, ..Places::default() });
    let lease = case.info(&high.ulid).await.expect("retained").lease.expect("a lease");
    assert_eq!((lease.token.as_str(), lease.started_ms, lease.attempt), (&*tokens[0], round.now_ms, 1));
    case.assert_invariants().await;
}

#[tokio::test]
async fn lease_of_a_paused_queue_hands_out_nothing_until_resumed() {
    let case = Case::start().await;
    case.pause(true).await;
    let ulid = case.add_ready().await;
    assert!(case.stats().await.paused);
    assert!(case.lease(1).await.jobs.is_empty());
    assert_eq!(case.places().await, Places { waiting: 1, ..Places::default() });
    case.pause(false).await;
    assert!(!case.stats().await.paused);
    assert_eq!(case.take().await.ulid, ulid);
    case.assert_invariants().await;
}

#[tokio::test]
async fn lease_promotes_a_delayed_job_once_due() {
    let case = Case::start().await;
    let job = Job::plain().delayed(40);
    case.add(&job).await;
    let early = case.lease(1).await;
    assert!(early.jobs.is_empty());
    let wake = early.next_wake.expect("a wake time");
    assert!(wake <= Duration::from_millis(40), "{wake:?}");
    tokio::time::sleep(wake + Duration::from_millis(5)).await;
    // Promoted even without a token to lease it with.
    assert!(case.lease(0).await.jobs.is_empty());
    assert_eq!(case.places().await, Places { waiting: 1, ..Places::default() });
    let record = case.record(&job.ulid).await;
    assert_eq!((record.state, record.run_at_ms), (RecordState::Waiting, None));
    assert_eq!(case.take().await.ulid, job.ulid);
    case.assert_invariants().await;
}

#[tokio::test]
async fn lease_revokes_a_timed_out_attempt_and_schedules_its_retry() {
    let case = Case::start().await;
    case.add(&Job::plain().with(|r| r.timeout_ms = 20)).await;
    let held = case.take().await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let round = case.lease(1).await;
    assert!(round.jobs.is_empty(), "the retry waits out its backoff");
    assert_eq!(round.revoked, [(held.ulid.clone(), held.token.clone())]);
    assert_eq!(case.places().await, Places { delayed: 1, ..Places::default() });
    let record = case.record(&held.ulid).await;
    assert_eq!(record.state, RecordState::Retrying);
    assert_eq!((record.attempts, record.last_error.as_deref()), (1, Some("timeout")));
    assert_eq!(record.run_at_ms, Some(round.now_ms + i64::try_from(LONG_BACKOFF_MS).expect("a minute of ms fits")));
    assert_eq!(case.ack(&held.ulid, &held.token).await, AckOutcome::Stale, "the old holder is fenced off");
    case.assert_invariants().await;
}

#[tokio::test]
async fn lease_buries_a_timed_out_last_attempt() {
    let case = Case::start().await;
    case.add(&Job::plain().with(|r| (r.timeout_ms, r.max_attempts) = (20, 1))).await;
    let held = case.take().await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(case.lease(1).await.revoked.len(), 1);
    assert_eq!(case.places().await, Places { dead: 1, ..Places::default() });
    assert_eq!(case.record(&held.ulid).await.state, RecordState::Dead);
    case.assert_invariants().await;
}

#[tokio::test]
async fn lease_ends_a_timed_out_attempt_of_a_cancelled_job_cancelled() {
    let case = Case::start().await;
    case.add(&Job::plain().with(|r| r.timeout_ms = 20)).await;
    let held = case.take().await;
    case.request_cancel(&held).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(case.lease(1).await.revoked, [(held.ulid.clone(), held.token.clone())]);
    assert_eq!(case.places().await, Places { cancelled: 1, ..Places::default() });
    let record = case.record(&held.ulid).await;
    assert_eq!((record.state, record.attempts), (RecordState::Cancelled, 1));
    case.assert_invariants().await;
}

#[tokio::test]
async fn lease_respects_session_concurrency_and_delivers_the_session_state() {
    let case = Case::start().await;
    assert!(case.session_create("s", r#"{"n":1}"#, Duration::from_secs(60), 2).await);
    let jobs = [Job::plain().in_session("s"), Job::plain().in_session("s"), Job::plain().in_session("s")];
    case.add_many(&jobs).await;
    // Starting the released job releases the next, which the same round starts; then two run.
    let first = case.lease(3).await.jobs;
    let order: Vec<&str> = first.iter().map(|j| j.ulid.as_str()).collect();
    assert_eq!(order, [&*jobs[0].ulid, &*jobs[1].ulid]);
    for job in &first {
        let snapshot = job.session.as_ref().expect("the session at delivery");
        assert_eq!((snapshot.name.as_str(), snapshot.state.as_str(), snapshot.version), ("s", r#"{"n":1}"#, 1));
    }
    assert!(case.lease(3).await.jobs.is_empty(), "two running: the third waits");
    let session = case.session_get("s").await.expect("session");
    assert_eq!((session.started, session.queued, session.pending), (2, 0, 1));
    assert_eq!(case.places().await, Places { active: 2, pending: 1, ..Places::default() });
    assert_eq!(case.ack(&first[0].ulid, &first[0].token).await, AckOutcome::Completed);
    assert_eq!(case.places().await, Places { waiting: 1, active: 1, completed: 1, ..Places::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn lease_of_a_job_whose_session_is_gone_cancels_it() {
    let case = Case::start().await;
    case.open_session("s", 1).await;
    let job = Job::plain().in_session("s");
    case.add(&job).await;
    assert!(case.session_delete("s").await);
    assert!(case.lease(1).await.jobs.is_empty());
    assert_eq!(case.places().await, Places { cancelled: 1, ..Places::default() });
    assert_eq!(case.record(&job.ulid).await.state, RecordState::Cancelled);
    case.assert_invariants().await;
}

#[tokio::test]
async fn lease_with_trim_drops_finished_jobs_past_their_windows() {
    let window = Duration::from_millis(30);
    let case = Case::with_retention(|r| (r.completed_for, r.dead_for) = (window, window)).await;
    let done = case.add_active().await;
    assert_eq!(case.ack(&done.ulid, &done.token).await, AckOutcome::Completed);
    let dead = case.add_dead().await;
    let cancelled = case.add_ready().await;
    assert_eq!(case.cancel(&cancelled).await, CancelOutcome::Cancelled);
    tokio::time::sleep(window + Duration::from_millis(10)).await;
    case.lease(0).await;
    assert_eq!(case.places().await, Places { completed: 1, dead: 1, cancelled: 1, ..Places::default() });
    case.lease_with(&[], 0.0, true).await;
    assert_eq!(case.places().await, Places::default());
    for ulid in [&done.ulid, &dead, &cancelled] {
        assert!(case.info(ulid).await.is_none(), "{ulid} dropped with its record");
    }
    assert_eq!(case.stats().await.dead_evicted, 1);
    case.assert_invariants().await;
}

#[tokio::test]
async fn extend_moves_the_deadline_of_a_held_attempt() {
    let case = Case::start().await;
    case.add(&Job::plain().with(|r| r.timeout_ms = 20)).await;
    let held = case.take().await;
    let before = case.stats().await.now_ms;
    let (check, deadline) = case.extend(&held.ulid, &held.token, Duration::from_secs(60)).await;
    assert_eq!(check, LeaseCheck::Held);
    assert!(deadline >= before + 60_000 && deadline <= case.stats().await.now_ms + 60_000, "{deadline}");
    tokio::time::sleep(Duration::from_millis(30)).await;
    let round = case.lease(1).await;
    assert!(round.revoked.is_empty(), "the old deadline is gone");
    assert_eq!(case.places().await, Places { active: 1, ..Places::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn extend_with_a_stale_token_or_an_unknown_job_changes_nothing() {
    let case = Case::start().await;
    let held = case.add_active().await;
    let by = Duration::from_secs(60);
    assert_eq!(case.extend(&held.ulid, &case.token(), by).await, (LeaseCheck::Stale, 0));
    assert_eq!(case.extend(&next_ulid(), &held.token, by).await, (LeaseCheck::UnknownJob, 0));
    let waiting = case.add_ready().await;
    assert_eq!(case.extend(&waiting, &held.token, by).await, (LeaseCheck::Stale, 0), "not active");
    let wake = case.lease(0).await.next_wake.expect("the held attempt's deadline");
    assert!(wake <= Duration::from_millis(30_000), "the deadline did not move: {wake:?}");
    case.assert_invariants().await;
}

#[tokio::test]
async fn progress_of_a_held_attempt_is_stored_and_emitted() {
    let case = Case::start().await;
    let held = case.add_active().await;
    let before = case.info(&held.ulid).await.expect("retained").last_event;
    assert_eq!(case.progress(&held.ulid, &held.token, b"50%").await, 1);
    let after = case.info(&held.ulid).await.expect("retained");
    assert_eq!(after.record.progress.as_deref(), Some(&b"50%"[..]));
    assert_ne!(after.last_event, before, "an event was written");
    assert!(after.lease.is_some(), "still held");
    case.assert_invariants().await;
}

#[tokio::test]
async fn progress_with_a_stale_token_or_an_unknown_job_is_refused() {
    let case = Case::start().await;
    let held = case.add_active().await;
    assert_eq!(case.progress(&held.ulid, &case.token(), b"x").await, -1);
    assert_eq!(case.progress(&next_ulid(), &held.token, b"x").await, 0);
    assert_eq!(case.record(&held.ulid).await.progress, None);
    case.assert_invariants().await;
}

#[tokio::test]
async fn requeue_puts_leases_back_at_the_head_in_delivery_order() {
    let case = Case::start().await;
    let (a, b) = (case.add_ready().await, case.add_ready().await);
    let behind = case.add_ready().await;
    let round = case.lease(2).await;
    let leases: Vec<(String, String)> = round.jobs.iter().map(|j| (j.ulid.clone(), j.token.clone())).collect();
    assert_eq!(case.requeue(&leases, false, 5).await, 2);
    assert_eq!(case.places().await, Places { waiting: 3, ..Places::default() });
    let record = case.record(&a).await;
    assert_eq!((record.state, record.attempts, record.lost), (RecordState::Waiting, 0, 0), "not an attempt");
    let order: Vec<String> = case.lease(3).await.jobs.into_iter().map(|j| j.ulid).collect();
    assert_eq!(order, [a, b, behind]);
    case.assert_invariants().await;
}

#[tokio::test]
async fn requeue_as_lost_counts_the_delivery_and_buries_at_the_limit() {
    let case = Case::start().await;
    let held = case.add_active().await;
    let lease = [(held.ulid.clone(), held.token.clone())];
    assert_eq!(case.requeue(&lease, true, 2).await, 1);
    assert_eq!(case.record(&held.ulid).await.lost, 1);
    let again = case.take().await;
    assert_eq!(case.requeue(&[(again.ulid.clone(), again.token.clone())], true, 2).await, 1);
    assert_eq!(case.places().await, Places { dead: 1, ..Places::default() });
    let record = case.record(&held.ulid).await;
    assert_eq!((record.state, record.lost, record.last_error.as_deref()), (RecordState::Dead, 2, Some("lost")));
    case.assert_invariants().await;
}

#[tokio::test]
async fn requeue_with_a_stale_token_moves_nothing() {
    let case = Case::start().await;
    let held = case.add_active().await;
    assert_eq!(case.requeue(&[(held.ulid.clone(), case.token())], true, 1).await, 0);
    assert_eq!(case.requeue(&[(next_ulid(), held.token.clone())], true, 1).await, 0);
    assert_eq!(case.places().await, Places { active: 1, ..Places::default() });
    assert_eq!(case.record(&held.ulid).await.lost, 0);
    case.assert_invariants().await;
}

#[tokio::test]
async fn requeue_of_a_cancelled_job_ends_it_cancelled_without_counting_it_lost() {
    let case = Case::start().await;
    let held = case.add_active().await;
    case.request_cancel(&held).await;
    assert_eq!(case.requeue(&[(held.ulid.clone(), held.token.clone())], true, 1).await, 1);
    assert_eq!(case.places().await, Places { cancelled: 1, ..Places::default() });
    let record = case.record(&held.ulid).await;
    assert_eq!((record.state, record.lost), (RecordState::Cancelled, 0));
    case.assert_invariants().await;
}

#[tokio::test]
async fn requeue_of_a_session_job_gives_it_back_to_its_session_or_cancels_it_once_gone() {
    let case = Case::start().await;
    case.open_session("s", 1).await;
    case.add_many(&[Job::plain().in_session("s"), Job::plain().in_session("s")]).await;
    let held = case.take().await;
    assert_eq!(case.requeue(&[(held.ulid.clone(), held.token.clone())], false, 5).await, 1);
    let session = case.session_get("s").await.expect("session");
    assert_eq!((session.started, session.queued, session.pending), (0, 1, 1), "released again, first in line");
    let again = case.take().await;
    assert_eq!(again.ulid, held.ulid);
    assert!(case.session_delete("s").await);
    assert_eq!(case.requeue(&[(again.ulid.clone(), again.token.clone())], false, 5).await, 1);
    assert_eq!(case.places().await, Places { cancelled: 1, ..Places::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn reap_returns_the_leases_of_dead_instances_and_given_tokens_only() {
    let case = Case::start().await;
    case.heartbeat("i2", Duration::from_secs(60)).await;
    let jobs: Vec<Job> = (0..250).map(|_| Job::plain()).collect();
    case.add_many(&jobs).await;
    let tokens: Vec<String> = (0..250).map(|n| format!("i2.1.{n}")).collect();
    assert_eq!(case.lease_with(&tokens, 0.0, false).await.jobs.len(), 250);
    let mine = case.add_active().await;
    let other = case.add_active().await;
    // More leases than one HSCAN page: the store walks the cursor to its end.
    assert_eq!(case.reap(&["i2".to_owned()]).await, 250);
    assert_eq!(case.places().await, Places { waiting: 250, active: 2, ..Places::default() });
    assert_eq!(case.record(&jobs[0].ulid).await.attempts, 0, "not a failed attempt");
    assert_eq!(case.reap(std::slice::from_ref(&mine.token)).await, 1);
    assert_eq!(case.reap(&["i3".to_owned()]).await, 0);
    assert_eq!(case.places().await, Places { waiting: 251, active: 1, ..Places::default() });
    assert_eq!(case.take().await.ulid, mine.ulid, "back at the head");
    assert!(case.info(&other.ulid).await.expect("retained").lease.is_some());
    case.assert_invariants().await;
}

#[tokio::test]
async fn reap_of_a_cancelled_job_ends_it_cancelled() {
    let case = Case::start().await;
    let held = case.add_active().await;
    case.request_cancel(&held).await;
    assert_eq!(case.reap(&[INSTANCE.to_owned()]).await, 1);
    assert_eq!(case.places().await, Places { cancelled: 1, ..Places::default() });
    assert_eq!(case.record(&held.ulid).await.state, RecordState::Cancelled);
    case.assert_invariants().await;
}

#[tokio::test]
async fn reclaim_returns_only_leases_old_enough_and_still_held_by_the_token() {
    let case = Case::start().await;
    let (first, second) = (case.add_active().await, case.add_active().await);
    let pairs = [(first.ulid.clone(), first.token.clone()), (second.ulid.clone(), second.token.clone())];
    assert_eq!(case.reclaim(&pairs, Duration::from_secs(60)).await, 0, "a fresh lease stays");
    let stale = [(first.ulid.clone(), case.token())];
    assert_eq!(case.reclaim(&stale, Duration::ZERO).await, 0, "another token holds it");
    assert_eq!(case.places().await, Places { active: 2, ..Places::default() });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(case.reclaim(&pairs, Duration::from_millis(10)).await, 2);
    assert_eq!(case.places().await, Places { waiting: 2, ..Places::default() });
    let record = case.record(&first.ulid).await;
    assert_eq!((record.attempts, record.lost), (0, 0), "not a failed attempt, nor a lost delivery");
    assert_eq!(case.take().await.ulid, first.ulid, "back at the head, in delivery order");
    assert_eq!(case.reclaim(&pairs, Duration::ZERO).await, 0, "taken again: no longer the token's");
    case.assert_invariants().await;
}

#[tokio::test]
async fn heartbeat_names_the_instances_past_the_ttl() {
    let case = Case::start().await;
    let ttl = Duration::from_millis(100);
    case.heartbeat(INSTANCE, ttl).await;
    let (now, stale) = case.heartbeat("i2", ttl).await;
    assert_eq!(stale, Vec::<String>::new(), "both beat just now");
    assert!((now - case.stats().await.now_ms).abs() < 1_000, "Redis's clock");
    tokio::time::sleep(ttl + Duration::from_millis(10)).await;
    let (_, stale) = case.heartbeat("i3", ttl).await;
    assert_eq!(stale, [INSTANCE.to_owned(), "i2".to_owned()], "oldest beat first");
    case.heartbeat(INSTANCE, ttl).await;
    let (_, stale) = case.heartbeat("i3", ttl).await;
    assert_eq!(stale, ["i2".to_owned()], "a new beat takes an instance off the list");
    case.assert_invariants().await;
}
