//! stats.lua, info.lua, cancel.lua, pause.lua, retry.lua, delete.lua and purge.lua: what an
//! operator reads and does.

use std::time::Duration;

use jobwire::store::{AckOutcome, CancelOutcome, Listing, Push, QueueCounts, RecordState};

use super::{Case, Job, Places, QUEUE, next_ulid};

#[tokio::test]
async fn stats_of_a_fresh_queue_counts_nothing() {
    let case = Case::start().await;
    let stats = case.stats().await;
    assert!(stats.now_ms > 0);
    assert_eq!(stats, QueueCounts { now_ms: stats.now_ms, held_by_rate: Some(0), ..QueueCounts::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn stats_counts_every_place_and_the_oldest_ready_job() {
    let case = Case::start().await;
    case.open_session("s", 1).await;
    case.add_many(&[
        Job::plain().with(|r| (r.priority, r.created_ms) = (0, 5_000)),
        Job::plain().with(|r| (r.priority, r.created_ms) = (5, 9_000)),
        Job::plain().delayed(60_000),
        Job::plain().in_session("s").with(|r| r.created_ms = 7_000),
        Job::plain().in_session("s"),
    ])
    .await;
    let stats = case.stats().await;
    let expected = QueueCounts {
        waiting: 3,
        delayed: 1,
        oldest_ready_ms: Some(5_000),
        now_ms: stats.now_ms,
        sessions: 1,
        session_pending: 1,
        held_by_rate: Some(0),
        ..QueueCounts::default()
    };
    assert_eq!(stats, expected);
    case.pause(true).await;
    assert!(case.stats().await.paused);
    case.assert_invariants().await;
}

#[tokio::test]
async fn info_reads_the_record_the_lease_and_the_latest_event() {
    let case = Case::start().await;
    assert!(case.info(&next_ulid()).await.is_none(), "unknown job");
    let held = case.add_active().await;
    let info = case.info(&held.ulid).await.expect("retained");
    assert_eq!(info.record.state, RecordState::Waiting, "an active record keeps its last resting state");
    let lease = info.lease.expect("active");
    assert_eq!((lease.token.as_str(), lease.attempt), (held.token.as_str(), 1));
    assert_ne!(info.last_event, "0-0");
    assert_eq!(case.ack(&held.ulid, &held.token).await, AckOutcome::Completed);
    let done = case.info(&held.ulid).await.expect("retained");
    assert_eq!((done.record.state, done.lease), (RecordState::Completed, None));
    assert!(done.last_event > info.last_event, "the completion came after: {} {}", done.last_event, info.last_event);
    case.assert_invariants().await;
}

#[tokio::test]
async fn cancel_of_a_waiting_or_delayed_job_ends_it_at_once() {
    let case = Case::start().await;
    let waiting = case.add_ready().await;
    let delayed = Job::plain().delayed(60_000);
    case.add(&delayed).await;
    assert_eq!(case.cancel(&waiting).await, CancelOutcome::Cancelled);
    assert_eq!(case.cancel(&delayed.ulid).await, CancelOutcome::Cancelled);
    assert_eq!(case.places().await, Places { cancelled: 2, ..Places::default() });
    let record = case.record(&waiting).await;
    assert_eq!((record.state, record.cancel_requested), (RecordState::Cancelled, true));
    assert!(record.finished_ms.is_some());
    assert!(case.lease(1).await.jobs.is_empty(), "nothing left to lease");
    case.assert_invariants().await;
}

#[tokio::test]
async fn cancel_of_session_jobs_releases_the_next_only_for_a_released_one() {
    let case = Case::start().await;
    case.open_session("s", 1).await;
    let jobs = [Job::plain().in_session("s"), Job::plain().in_session("s"), Job::plain().in_session("s")];
    case.add_many(&jobs).await;
    // Pending inside the session: the released job is unaffected.
    assert_eq!(case.cancel(&jobs[2].ulid).await, CancelOutcome::Cancelled);
    assert_eq!(case.places().await, Places { waiting: 1, pending: 1, cancelled: 1, ..Places::default() });
    // Released: the session moves on to the next.
    assert_eq!(case.cancel(&jobs[0].ulid).await, CancelOutcome::Cancelled);
    assert_eq!(case.places().await, Places { waiting: 1, cancelled: 2, ..Places::default() });
    assert_eq!(case.take().await.ulid, jobs[1].ulid);
    case.assert_invariants().await;
}

#[tokio::test]
async fn cancel_of_an_active_job_marks_it_once_and_names_its_holder() {
    let case = Case::start().await;
    let held = case.add_active_in_session("s").await;
    assert_eq!(case.cancel(&held.ulid).await, CancelOutcome::Marked(held.token.clone()));
    assert_eq!(case.cancel(&held.ulid).await, CancelOutcome::Marked(held.token.clone()), "again: same answer");
    let lease = case.raw_lease(&held.ulid).await.expect("still leased");
    assert!(lease.ends_with("|1|sc"), "flagged once, after the session flag: {lease}");
    assert!(case.record(&held.ulid).await.cancel_requested);
    assert_eq!(case.places().await, Places { active: 1, ..Places::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn cancel_of_an_unknown_or_finished_job_is_refused() {
    let case = Case::start().await;
    assert_eq!(case.cancel(&next_ulid()).await, CancelOutcome::UnknownJob);
    let done = case.add_active().await;
    case.ack(&done.ulid, &done.token).await;
    let dead = case.add_dead().await;
    let cancelled = case.add_ready().await;
    case.cancel(&cancelled).await;
    for ulid in [&done.ulid, &dead, &cancelled] {
        assert_eq!(case.cancel(ulid).await, CancelOutcome::AlreadyFinished, "{ulid}");
    }
    assert_eq!(case.places().await, Places { completed: 1, dead: 1, cancelled: 1, ..Places::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn pause_sets_the_flag_and_resume_wakes_the_dispatchers() {
    let case = Case::start().await;
    let mut subscriber = case.store.subscriber().await.expect("subscriber");
    let channel = case.store.keys().wake_channel(QUEUE);
    subscriber.subscribe_shard(&channel).await.expect("subscribe");
    case.pause(true).await;
    assert!(case.stats().await.paused);
    case.pause(false).await;
    assert!(!case.stats().await.paused);
    let message = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Push::Message { channel, payload } = subscriber.next().await {
                return (channel, payload);
            }
        }
    })
    .await
    .expect("a wake-up within 5 s");
    assert_eq!(message, (channel, QUEUE.to_owned()), "the queue woken, on its own shard channel");
    case.assert_invariants().await;
}

#[tokio::test]
async fn retry_of_a_dead_job_makes_it_ready_with_a_fresh_count() {
    let case = Case::start().await;
    let dead = case.add_dead().await;
    assert_eq!(case.retry(Some(&dead), 1).await, (1, 1));
    assert_eq!(case.places().await, Places { waiting: 1, ..Places::default() });
    let record = case.record(&dead).await;
    assert_eq!((record.state, record.attempts, record.lost, record.finished_ms), (RecordState::Waiting, 0, 0, None));
    assert_eq!(case.take().await.attempt, 1);
    case.assert_invariants().await;
}

#[tokio::test]
async fn retry_of_an_unknown_or_live_job_is_refused() {
    let case = Case::start().await;
    assert_eq!(case.retry(Some(&next_ulid()), 1).await, (0, 0));
    let waiting = case.add_ready().await;
    assert_eq!(case.retry(Some(&waiting), 1).await, (-1, 0));
    let done = case.add_active().await;
    case.ack(&done.ulid, &done.token).await;
    assert_eq!(case.retry(Some(&done.ulid), 1).await, (-1, 0));
    assert_eq!(case.places().await, Places { waiting: 1, completed: 1, ..Places::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn retry_of_a_dead_session_job_counts_it_released_again() {
    let case = Case::start().await;
    let held = case.add_active_in_session("s").await;
    case.fail(&held.ulid, &held.token, false, None, 0.0).await;
    assert_eq!(case.session_get("s").await.expect("session").started, 0);
    assert_eq!(case.retry(Some(&held.ulid), 1).await, (1, 1));
    assert_eq!(case.session_get("s").await.expect("session").queued, 1);
    assert_eq!(case.places().await, Places { waiting: 1, ..Places::default() });
    assert_eq!(case.take().await.ulid, held.ulid);
    assert_eq!(case.session_get("s").await.expect("session").started, 1);
    case.assert_invariants().await;
}

#[tokio::test]
async fn retry_of_a_dead_session_job_keeps_the_session_to_its_concurrency() {
    let case = Case::start().await;
    case.open_session("s", 1).await;
    case.add_many(&[Job::plain().in_session("s"), Job::plain().in_session("s")]).await;
    let held = case.take().await;
    case.fail(&held.ulid, &held.token, false, None, 0.0).await;
    assert_eq!(case.places().await, Places { waiting: 1, dead: 1, ..Places::default() });
    assert_eq!(case.retry(Some(&held.ulid), 1).await, (1, 1));
    assert_eq!(case.lease(2).await.jobs.len(), 1, "a session of max_concurrency 1 runs one job at a time");
    case.assert_invariants().await;
}

#[tokio::test]
async fn retry_of_a_dead_session_job_puts_it_back_in_its_place_in_the_session() {
    let case = Case::start().await;
    case.open_session("s", 1).await;
    let jobs = [Job::plain().in_session("s"), Job::plain().in_session("s"), Job::plain().in_session("s")];
    case.add_many(&jobs).await;
    let first = case.take().await;
    case.fail(&first.ulid, &first.token, false, None, 0.0).await;
    let second = case.take().await;
    assert_eq!(case.retry(Some(&first.ulid), 1).await, (1, 1));
    assert_eq!(case.places().await, Places { active: 1, pending: 2, ..Places::default() });
    assert_eq!(case.record(&first.ulid).await.state, RecordState::Waiting);
    // Released when the running job ends, before the job added after it.
    assert_eq!(case.ack(&second.ulid, &second.token).await, AckOutcome::Completed);
    let again = case.take().await;
    assert_eq!((again.ulid.as_str(), again.attempt), (first.ulid.as_str(), 1));
    assert_eq!(case.ack(&again.ulid, &again.token).await, AckOutcome::Completed);
    assert_eq!(case.take().await.ulid, jobs[2].ulid);
    case.assert_invariants().await;
}

#[tokio::test]
async fn retry_of_a_dead_job_whose_session_is_gone_is_refused() {
    let case = Case::start().await;
    let held = case.add_active_in_session("s").await;
    case.fail(&held.ulid, &held.token, false, None, 0.0).await;
    assert!(case.session_delete("s").await);
    assert_eq!(case.retry(Some(&held.ulid), 1).await, (-2, 0));
    assert_eq!(case.retry(None, 10).await, (1, 0), "batch mode skips it too");
    assert_eq!(case.record(&held.ulid).await.state, RecordState::Dead);
    assert_eq!(case.places().await, Places { dead: 1, ..Places::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn retry_in_batch_moves_the_oldest_dead_jobs() {
    let case = Case::start().await;
    let first = case.add_dead().await;
    let second = case.add_dead().await;
    let third = case.add_dead().await;
    assert_eq!(case.retry(None, 2).await, (1, 2));
    assert_eq!(case.places().await, Places { waiting: 2, dead: 1, ..Places::default() });
    assert_eq!(case.record(&third).await.state, RecordState::Dead);
    let order: Vec<String> = case.lease(2).await.jobs.into_iter().map(|j| j.ulid).collect();
    assert_eq!(order, [first, second]);
    case.assert_invariants().await;
}

#[tokio::test]
async fn retry_in_batch_with_a_limit_of_zero_moves_nothing() {
    let case = Case::start().await;
    case.add_dead().await;
    assert_eq!(case.retry(None, 0).await, (1, 0));
    assert_eq!(case.places().await, Places { dead: 1, ..Places::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn delete_removes_a_job_of_any_resting_state_with_its_record() {
    let case = Case::start().await;
    let waiting = case.add_ready().await;
    let delayed = Job::plain().delayed(60_000);
    case.add(&delayed).await;
    let done = case.add_active().await;
    case.ack(&done.ulid, &done.token).await;
    let dead = case.add_dead().await;
    let cancelled = case.add_ready().await;
    case.cancel(&cancelled).await;
    for ulid in [&waiting, &delayed.ulid, &done.ulid, &dead, &cancelled] {
        assert_eq!(case.delete(ulid).await, 1, "{ulid}");
        assert!(case.info(ulid).await.is_none(), "{ulid} has no record left");
    }
    assert_eq!(case.places().await, Places::default());
    case.assert_invariants().await;
}

#[tokio::test]
async fn delete_of_session_jobs_releases_the_next_only_for_a_released_one() {
    let case = Case::start().await;
    case.open_session("s", 1).await;
    let jobs = [Job::plain().in_session("s"), Job::plain().in_session("s"), Job::plain().in_session("s")];
    case.add_many(&jobs).await;
    assert_eq!(case.delete(&jobs[2].ulid).await, 1);
    assert_eq!(case.places().await, Places { waiting: 1, pending: 1, ..Places::default() });
    assert_eq!(case.delete(&jobs[0].ulid).await, 1);
    assert_eq!(case.places().await, Places { waiting: 1, ..Places::default() });
    assert_eq!(case.take().await.ulid, jobs[1].ulid);
    case.assert_invariants().await;
}

#[tokio::test]
async fn delete_of_an_active_or_unknown_job_is_refused() {
    let case = Case::start().await;
    let held = case.add_active().await;
    assert_eq!(case.delete(&held.ulid).await, -1);
    assert_eq!(case.delete(&next_ulid()).await, 0);
    assert_eq!(case.places().await, Places { active: 1, ..Places::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn purge_removes_the_states_asked_for_and_never_active_jobs() {
    let case = Case::start().await;
    case.add_ready().await;
    case.add(&Job::plain().delayed(60_000)).await;
    let done = case.add_active().await;
    case.ack(&done.ulid, &done.token).await;
    case.add_dead().await;
    let cancelled = case.add_ready().await;
    case.cancel(&cancelled).await;
    let held = case.add_active().await;
    assert_eq!(case.purge(&[Listing::Active]).await, 0);
    assert_eq!(case.purge(&[Listing::Waiting]).await, 1);
    assert_eq!(
        case.places().await,
        Places { delayed: 1, active: 1, completed: 1, dead: 1, cancelled: 1, ..Places::default() }
    );
    let rest = [Listing::Delayed, Listing::Completed, Listing::Dead, Listing::Cancelled, Listing::Active];
    assert_eq!(case.purge(&rest).await, 4);
    assert_eq!(case.places().await, Places { active: 1, ..Places::default() });
    assert!(case.info(&done.ulid).await.is_none(), "records go too");
    assert_eq!(case.ack(&held.ulid, &held.token).await, AckOutcome::Completed);
    case.assert_invariants().await;
}

#[tokio::test]
async fn purge_of_session_jobs_keeps_the_session_counts() {
    let case = Case::start().await;
    case.open_session("s", 1).await;
    case.open_session("r", 1).await;
    case.add_many(&[Job::plain().in_session("s"), Job::plain().in_session("s"), Job::plain().in_session("s")]).await;
    case.add_many(&[Job::plain().in_session("r"), Job::plain().in_session("r")]).await;
    let retrying = case.take().await;
    case.fail(&retrying.ulid, &retrying.token, true, None, 0.0).await;
    assert_eq!(case.places().await, Places { waiting: 1, delayed: 1, pending: 3, ..Places::default() });
    // The released job of r, the job r releases in its place, and the pending jobs of s.
    assert_eq!(case.purge(&[Listing::Waiting]).await, 4);
    assert_eq!(case.places().await, Places { delayed: 1, ..Places::default() });
    assert_eq!(case.session_get("s").await.expect("session").queued, 1, "the retrying job");
    assert_eq!(case.purge(&[Listing::Delayed]).await, 1);
    assert_eq!(case.places().await, Places::default());
    for name in ["s", "r"] {
        let session = case.session_get(name).await.expect("the session stays");
        assert_eq!((session.started, session.queued, session.pending), (0, 0, 0), "{name}");
    }
    case.assert_invariants().await;
}

#[tokio::test]
async fn purge_of_delayed_jobs_keeps_waiting_jobs_pending_in_a_session() {
    let case = Case::start().await;
    case.open_session("s", 1).await;
    case.add_many(&[Job::plain().in_session("s"), Job::plain().in_session("s")]).await;
    assert_eq!(case.places().await, Places { waiting: 1, pending: 1, ..Places::default() });
    assert_eq!(case.purge(&[Listing::Delayed]).await, 0, "no job is delayed");
    assert_eq!(case.places().await, Places { waiting: 1, pending: 1, ..Places::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn purge_of_waiting_jobs_keeps_delayed_jobs_pending_in_a_session() {
    let case = Case::start().await;
    case.open_session("s", 1).await;
    let delayed = Job::plain().in_session("s").delayed(60_000);
    case.add_many(&[Job::plain().in_session("s"), delayed.clone(), Job::plain().in_session("s")]).await;
    assert_eq!(case.places().await, Places { waiting: 1, pending: 2, ..Places::default() });
    assert_eq!(case.purge(&[Listing::Waiting]).await, 2, "the released job and the waiting one behind the delayed");
    assert_eq!(case.places().await, Places { delayed: 1, ..Places::default() }, "released in turn, still delayed");
    assert_eq!(case.record(&delayed.ulid).await.state, RecordState::Delayed);
    case.assert_invariants().await;
}

#[tokio::test]
async fn purge_of_delayed_jobs_reads_every_job_pending_in_sessions_batch_after_batch() {
    let case = Case::start().await;
    case.open_session("s", 1).await;
    let mut jobs: Vec<Job> = (0..1_502).map(|_| Job::plain().in_session("s")).collect();
    let delayed = Job::plain().in_session("s").delayed(60_000);
    jobs.push(delayed.clone());
    case.add_many(&jobs).await;
    assert_eq!(case.purge(&[Listing::Delayed]).await, 1, "the one delayed job, past a batch of waiting ones");
    assert!(case.info(&delayed.ulid).await.is_none());
    assert_eq!(case.places().await, Places { waiting: 1, pending: 1_501, ..Places::default() });
    assert_eq!(case.purge(&[Listing::Waiting]).await, 1_502);
    assert_eq!(case.places().await, Places::default());
    case.assert_invariants().await;
}
