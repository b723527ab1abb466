//! The activity counts of lib.lua, written inside add, complete, fail and the lease round's
//! timeouts: what each counts, that a repeat add counts nothing, and that old minutes go.

use std::time::Duration;

use jobwire::store::{ACTIVITY_MINUTES, Ack, AddOutcome, MinuteCounts};

use super::{Case, Job, QUEUE};

impl Case {
    /// This queue's activity, the current minute last.
    async fn activity(&self) -> Vec<MinuteCounts> {
        self.store.activity().last_hour(QUEUE).await.expect("activity")
    }

    /// The current minute's counts (the test's calls all land in it, or in the one before if
    /// the minute turned meanwhile: both are summed).
    async fn recent(&self) -> MinuteCounts {
        let minutes = self.activity().await;
        let mut sum = MinuteCounts::default();
        for m in minutes.iter().rev().take(2) {
            sum.added += m.added;
            sum.completed += m.completed;
            sum.failed += m.failed;
        }
        sum
    }
}

#[tokio::test]
async fn adds_completions_and_failed_attempts_are_counted_where_they_happen() {
    let case = Case::start().await;
    let keyed = Job::plain().keyed("k", Duration::from_secs(60));
    assert!(matches!(case.add(&keyed).await, AddOutcome::Added(_)));
    let again = Job { ulid: super::next_ulid(), ..keyed.clone() };
    assert!(matches!(case.add(&again).await, AddOutcome::Duplicate(_)), "a repeat adds nothing");
    case.add_many(&[Job::plain(), Job::plain(), Job::plain()]).await;
    let round = case.lease(4).await;
    let [a, b, c, d] = &round.jobs[..] else { panic!("four jobs leased: {:?}", round.jobs.len()) };
    let acks = [a, b].map(|j| Ack { ulid: &j.ulid, token: &j.token, result: b"ok", session_state: None });
    case.complete(&acks).await;
    case.fail(&c.ulid, &c.token, true, None, 0.0).await;
    case.fail(&d.ulid, &d.token, false, None, 0.0).await;
    assert_eq!(
        case.recent().await,
        MinuteCounts { minute: 0, added: 4, completed: 2, failed: 2 },
        "4 added (the repeat not), 2 completed, one retry and one death failed"
    );
    case.assert_invariants().await;
}

#[tokio::test]
async fn the_last_hour_is_every_minute_with_zeros_and_old_minutes_are_dropped() {
    let case = Case::start().await;
    let key = case.store.keys().queue(QUEUE).activity().to_owned();
    let now_minute = case.stats().await.now_ms / 60_000;
    let old = format!("c{}", now_minute - 100);
    let kept = format!("c{}", now_minute - 30);
    let mut conn = case.raw_connection().await;
    let () =
        redis::cmd("HSET").arg(&key).arg(&old).arg(7).arg(&kept).arg(3).query_async(&mut conn).await.expect("hset");
    case.add_ready().await;
    let fields: Vec<String> = redis::cmd("HKEYS").arg(&key).query_async(&mut conn).await.expect("hkeys");
    assert!(!fields.contains(&old), "a minute past the hour is dropped by the next new minute: {fields:?}");
    assert!(fields.contains(&kept), "{fields:?}");
    let minutes = case.activity().await;
    assert_eq!(minutes.len(), usize::try_from(ACTIVITY_MINUTES).expect("small") + 1);
    assert!(minutes.windows(2).all(|w| w[1].minute == w[0].minute + 1), "consecutive minutes");
    let thirty_ago = minutes.iter().find(|m| i64::try_from(m.minute).ok() == Some(now_minute - 30));
    assert_eq!(thirty_ago.map(|m| m.completed), Some(3));
    assert_eq!(minutes.iter().map(|m| m.added).sum::<u64>(), 1);
    case.assert_invariants().await;
}
