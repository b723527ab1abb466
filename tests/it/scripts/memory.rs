//! The library when Redis is out of memory (each function's flags: what frees or moves memory
//! runs, what only adds is refused whole, reads answer), shed.lua (retained history in its
//! order) and add.lua's cap of waiting jobs.

use std::time::Duration;

use jobwire::store::{AckOutcome, AddOutcome, CancelOutcome, LeaseCheck, Listing, RecordState, ShedKind, StoreError};

use super::{Case, Job, QUEUE, next_ulid};

const MINUTE: Duration = Duration::from_secs(60);

fn out_of_memory<T: std::fmt::Debug>(answer: Result<T, StoreError>, what: &str) {
    assert!(matches!(answer, Err(StoreError::OutOfMemory)), "{what} when Redis is full: {answer:?}");
}

#[tokio::test]
async fn when_redis_is_full_what_frees_memory_runs_and_what_only_adds_is_refused_whole() {
    let case = Case::start().await;
    case.open_session("s", 1).await;
    let mut held = Vec::new();
    for _ in 0..7 {
        held.push(case.add_active().await);
    }
    let (to_lease, to_delete) = (case.add_ready().await, case.add_ready().await);
    let dead = case.add_dead().await;
    case.set_maxmemory(1).await;

    // What only adds: refused before it writes anything, a batch as a whole.
    let before = case.places().await;
    let batch =
        [Job::plain(), Job::plain().keyed("k", MINUTE), Job::plain().delayed(60_000), Job::plain().in_session("s")];
    out_of_memory(case.try_add_many(&batch).await, "a batch add");
    assert_eq!(case.places().await, before, "nothing of the batch was written");
    out_of_memory(case.try_session_create("t", "{}", MINUTE, 1).await, "a session create");
    out_of_memory(case.try_session_set("s", "{\"a\":1}", 1).await, "a session write");
    out_of_memory(case.try_progress(&held[0].ulid, &held[0].token, b"50%").await, "a progress report");

    // Reads answer.
    assert_eq!(case.stats().await.active, 7);
    assert!(case.info(&to_lease).await.is_some());
    assert_eq!(case.session_get("s").await.map(|s| s.version), Some(1));

    // Everything that frees or moves memory runs.
    let round = case.lease(1).await;
    assert_eq!(round.jobs.iter().map(|j| j.ulid.as_str()).collect::<Vec<_>>(), [to_lease.as_str()]);
    assert_eq!(case.ack(&held[0].ulid, &held[0].token).await, AckOutcome::Completed);
    assert_eq!(case.shed(10, false).await, Some((ShedKind::Completed, 1)));
    assert_eq!(case.fail(&held[1].ulid, &held[1].token, true, None, 0.0).await.state, Some(RecordState::Retrying));
    assert_eq!(case.extend(&held[2].ulid, &held[2].token, MINUTE).await.0, LeaseCheck::Held);
    assert_eq!(case.requeue(&[(held[3].ulid.clone(), held[3].token.clone())], true, 5).await, 1);
    assert_eq!(case.reap(std::slice::from_ref(&held[4].token)).await, 1);
    assert_eq!(case.reclaim(&[(held[5].ulid.clone(), held[5].token.clone())], Duration::ZERO).await, 1);
    assert_eq!(case.cancel(&held[6].ulid).await, CancelOutcome::Marked(held[6].token.clone()));
    assert_eq!(case.retry(Some(&dead), 1).await, (1, 1));
    case.pause(true).await;
    case.pause(false).await;
    assert_eq!(case.delete(&to_delete).await, 1);
    // Requeued, reaped, reclaimed and retried: back in the ready lists.
    assert_eq!(case.purge(&[Listing::Waiting]).await, 4);
    assert!(case.session_delete("s").await);
    assert!(case.session_sweep().await.is_empty());
    case.heartbeat("i2", MINUTE).await;
    case.publish_workers("i2", "[]", MINUTE).await.expect("the worker list is published");
    case.register_queue(QUEUE).await.expect("the queue is registered");
    assert!(case.admit_queue(QUEUE, 1).await.expect("a known queue is admitted"), "admitted under the cap");

    case.set_maxmemory(0).await;
    case.assert_invariants().await;
}

#[tokio::test]
async fn shedding_drops_events_then_completed_then_cancelled_and_dead_only_when_asked() {
    let case = Case::start().await;
    // History: each call below writes an event entry of its own.
    let mut ready = Vec::new();
    for _ in 0..150 {
        ready.push(case.add_ready().await);
    }
    for _ in 0..10 {
        let ulid = case.add_ready().await;
        assert_eq!(case.cancel(&ulid).await, CancelOutcome::Cancelled);
    }
    let round = case.lease(150).await;
    assert_eq!(round.jobs.len(), 150);
    let (to_complete, to_bury) = round.jobs.split_at(120);
    for job in to_complete {
        assert_eq!(case.ack(&job.ulid, &job.token).await, AckOutcome::Completed);
    }
    for job in to_bury {
        assert_eq!(case.fail(&job.ulid, &job.token, false, None, 0.0).await.state, Some(RecordState::Dead));
    }
    // Work, which is never shed.
    let waiting = case.add_ready().await;
    let active = case.add_active().await;
    let entries = case.event_entries().await;
    assert!(entries > 300, "{entries} event entries");

    // Events first, in whole stream nodes (up to 100 entries), down to about the 10 kept.
    let mut events_shed = 0;
    let next = loop {
        match case.shed(10, false).await {
            Some((ShedKind::Events, n)) => events_shed += n,
            other => break other,
        }
    };
    let left = case.event_entries().await;
    assert!(events_shed > 0 && (10..110).contains(&left), "{events_shed} shed, {left} left");
    assert_eq!(left, entries - events_shed);
    // Then the oldest completed jobs, with their results; then cancelled ones.
    assert_eq!(next, Some((ShedKind::Completed, 120)));
    assert!(case.info(&to_complete[0].ulid).await.is_none(), "the completed job and its result are gone");
    assert_eq!(case.shed(10, false).await, Some((ShedKind::Cancelled, 10)));
    // Dead jobs only when asked.
    assert_eq!(case.shed(10, false).await, None);
    assert_eq!(case.shed(10, true).await, Some((ShedKind::Dead, 30)));
    assert_eq!(case.shed(10, true).await, None);

    let stats = case.stats().await;
    assert_eq!((stats.completed, stats.cancelled, stats.dead), (0, 0, 0));
    assert_eq!((stats.waiting, stats.active), (1, 1));
    assert_eq!((stats.completed_shed, stats.cancelled_shed, stats.dead_shed), (120, 10, 30));
    assert_eq!(stats.events_shed, events_shed);
    assert_eq!(stats.dead_evicted, 0, "shedding is counted apart from the retention");
    assert!(case.info(&waiting).await.is_some() && case.info(&active.ulid).await.is_some());
    case.assert_invariants().await;
}

#[tokio::test]
async fn an_add_past_the_cap_of_waiting_jobs_is_refused_job_by_job() {
    let case = Case::start().await;
    case.open_session("s", 1).await;
    // Ready, delayed and pending in a session all count: the first job of the session is
    // released to the ready list, the second waits inside it.
    let four = [Job::plain(), Job::plain().delayed(60_000), Job::plain().in_session("s"), Job::plain().in_session("s")];
    let added = case.add_capped(&four, 4).await;
    assert!(added.iter().all(|o| matches!(o, AddOutcome::Added(_))), "{added:?}");
    let before = case.places().await;
    assert_eq!((before.waiting, before.delayed, before.pending), (2, 1, 1));

    let keyed = Job::plain().keyed("k", MINUTE);
    assert_eq!(
        case.add_capped(&[Job::plain(), keyed.clone()], 4).await,
        [AddOutcome::QueueFull(4), AddOutcome::QueueFull(4)]
    );
    assert_eq!(case.places().await, before, "nothing refused was written");

    // A job leased makes room for one: the first that fits goes in, the next is refused.
    case.take().await;
    let outcomes = case.add_capped(&[keyed.clone(), Job::plain()], 4).await;
    assert_eq!(outcomes, [AddOutcome::Added(keyed.ulid.clone()), AddOutcome::QueueFull(4)]);
    // A repeat of a job that went in is its duplicate, full or not.
    let repeat = Job { ulid: next_ulid(), ..keyed.clone() };
    assert_eq!(case.add_capped(&[repeat], 4).await, [AddOutcome::Duplicate(keyed.ulid.clone())]);
    // Without a cap, nothing is refused.
    let plain = Job::plain();
    assert_eq!(case.add(&plain).await, AddOutcome::Added(plain.ulid.clone()));
    case.assert_invariants().await;
}
