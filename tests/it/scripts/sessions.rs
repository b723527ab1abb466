//! session_create.lua, session_get.lua, session_jobs.lua, session_set.lua, session_delete.lua and
//! session_sweep.lua: a session's state document and the life of the session itself.

use std::time::Duration;

use jobwire::store::{Ack, AckOutcome, PendingPage, RecordState, SetOutcome};

use super::{Case, Job, Places, QUEUE};

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn session_create_stores_the_state_at_version_one() {
    let case = Case::start().await;
    assert!(case.session_create("s", r#"{"a":1}"#, MINUTE, 3).await);
    let session = case.session_get("s").await.expect("created");
    assert_eq!((session.name.as_str(), session.state.as_str(), session.version), ("s", r#"{"a":1}"#, 1));
    assert_eq!((session.ttl, session.max_concurrency), (MINUTE, 3));
    assert_eq!((session.started, session.queued, session.pending), (0, 0, 0));
    assert_eq!(session.created_ms, session.updated_ms);
    assert_eq!(case.stats().await.sessions, 1);
    case.assert_invariants().await;
}

#[tokio::test]
async fn session_create_of_a_taken_name_writes_nothing() {
    let case = Case::start().await;
    assert!(case.session_create("s", r#"{"a":1}"#, MINUTE, 3).await);
    assert!(!case.session_create("s", r#"{"b":2}"#, Duration::from_secs(1), 1).await);
    let session = case.session_get("s").await.expect("created");
    assert_eq!((session.state.as_str(), session.ttl, session.max_concurrency), (r#"{"a":1}"#, MINUTE, 3));
    assert_eq!(case.stats().await.sessions, 1);
    case.assert_invariants().await;
}

#[tokio::test]
async fn session_get_of_an_unknown_session_is_none_and_counts_pending_jobs() {
    let case = Case::start().await;
    assert!(case.session_get("nobody").await.is_none());
    case.open_session("s", 1).await;
    case.open_session("s2", 1).await;
    case.add_many(&[Job::plain().in_session("s"), Job::plain().in_session("s"), Job::plain().in_session("s")]).await;
    case.add(&Job::plain().in_session("s2")).await;
    // Names that share a prefix do not share jobs.
    assert_eq!(case.session_get("s").await.expect("session").pending, 2);
    assert_eq!(case.session_get("s2").await.expect("session").pending, 0);
    case.assert_invariants().await;
}

#[tokio::test]
async fn session_set_writes_when_the_version_matches() {
    let case = Case::start().await;
    case.open_session("s", 1).await;
    let created = case.session_get("s").await.expect("session").updated_ms;
    assert_eq!(case.session_set("s", r#"{"n":2}"#, 1).await, SetOutcome::Written(2));
    assert_eq!(case.session_set("s", r#"{"n":3}"#, 2).await, SetOutcome::Written(3));
    let session = case.session_get("s").await.expect("session");
    assert_eq!((session.state.as_str(), session.version), (r#"{"n":3}"#, 3));
    assert!(session.updated_ms >= created);
    case.assert_invariants().await;
}

#[tokio::test]
async fn session_set_with_a_stale_version_or_an_unknown_session_writes_nothing() {
    let case = Case::start().await;
    case.open_session("s", 1).await;
    assert_eq!(case.session_set("s", r#"{"n":2}"#, 1).await, SetOutcome::Written(2));
    assert_eq!(case.session_set("s", r#"{"n":9}"#, 1).await, SetOutcome::VersionMismatch(2));
    assert_eq!(case.session_set("nobody", "{}", 1).await, SetOutcome::UnknownSession);
    let session = case.session_get("s").await.expect("session");
    assert_eq!((session.state.as_str(), session.version), (r#"{"n":2}"#, 2));
    assert!(case.session_get("nobody").await.is_none(), "not created by the attempt");
    case.assert_invariants().await;
}

#[tokio::test]
async fn session_delete_removes_the_session_and_its_pending_jobs() {
    let case = Case::start().await;
    case.open_session("s", 1).await;
    case.open_session("kept", 1).await;
    let jobs = [Job::plain().in_session("s"), Job::plain().in_session("s"), Job::plain().in_session("s")];
    case.add_many(&jobs).await;
    let other = Job::plain().in_session("kept");
    case.add(&other).await;
    let held = case.take().await;
    assert_eq!(held.ulid, jobs[0].ulid);
    assert!(case.session_delete("s").await);
    assert!(case.session_get("s").await.is_none());
    assert!(case.info(&jobs[2].ulid).await.is_none(), "a pending job goes with its session");
    assert_eq!(case.stats().await.sessions, 1);
    // The running job stays until it ends; the other session is untouched.
    assert_eq!(case.places().await, Places { waiting: 1, active: 1, ..Places::default() });
    assert_eq!(case.ack(&held.ulid, &held.token).await, AckOutcome::SessionGone);
    assert_eq!(case.take().await.ulid, other.ulid);
    assert!(!case.session_delete("s").await, "already gone");
    case.assert_invariants().await;
}

#[tokio::test]
async fn session_delete_of_more_pending_jobs_than_one_batch_removes_them_all() {
    let case = Case::start().await;
    case.open_session("s", 1).await;
    let jobs: Vec<Job> = (0..1_002).map(|_| Job::plain().in_session("s")).collect();
    case.add_many(&jobs).await;
    assert_eq!(case.places().await, Places { waiting: 1, pending: 1_001, ..Places::default() });
    assert!(case.session_delete("s").await);
    assert_eq!(case.places().await, Places { waiting: 1, ..Places::default() });
    assert!(case.info(&jobs[1_001].ulid).await.is_none());
    // The released job ends cancelled when it would start.
    assert!(case.lease(1).await.jobs.is_empty());
    assert_eq!(case.record(&jobs[0].ulid).await.state, RecordState::Cancelled);
    case.assert_invariants().await;
}

#[tokio::test]
async fn session_sweep_expires_idle_sessions_and_spares_busy_ones() {
    let case = Case::start().await;
    let ttl = Duration::from_millis(30);
    for name in ["idle", "pending", "running"] {
        assert!(case.session_create(name, "{}", ttl, 1).await);
    }
    assert!(case.session_create("fresh", "{}", MINUTE, 1).await);
    case.add_many(&[Job::plain().in_session("running"), Job::plain().in_session("pending")]).await;
    let held = case.take().await;
    let before = case.session_get("running").await.expect("session");
    tokio::time::sleep(ttl + Duration::from_millis(10)).await;
    assert_eq!(case.session_sweep().await, ["idle".to_owned()]);
    assert!(case.session_get("idle").await.is_none());
    for name in ["pending", "running", "fresh"] {
        assert!(case.session_get(name).await.is_some(), "{name} kept");
    }
    assert_eq!(case.session_get("running").await.expect("session"), before, "sparing changes no field");
    // The busy ones got one more TTL: a sweep right away finds nothing due.
    assert_eq!(case.session_sweep().await, Vec::<String>::new());
    assert_eq!(case.ack(&held.ulid, &held.token).await, AckOutcome::Completed);
    assert_eq!(case.stats().await.sessions, 3);
    case.assert_invariants().await;
}

#[tokio::test]
async fn a_job_of_a_deleted_session_leaves_a_new_session_of_its_name_alone() {
    let case = Case::start().await;
    let held = case.add_active_in_session("s").await;
    assert!(case.session_delete("s").await);
    assert!(case.session_create("s", "{}", MINUTE, 1).await);
    let ack = Ack { ulid: &held.ulid, token: &held.token, result: b"", session_state: Some(("{\"old\":1}", None)) };
    assert_eq!(case.complete(&[ack]).await, [AckOutcome::SessionGone]);
    let session = case.session_get("s").await.expect("the new session");
    assert_eq!((session.state.as_str(), session.version), ("{}", 1));
    case.assert_invariants().await;
}

#[tokio::test]
async fn a_job_of_a_new_session_of_a_reused_name_runs_as_usual_beside_one_of_the_old() {
    let case = Case::start().await;
    let old = case.add_active_in_session("s").await;
    assert!(case.session_delete("s").await);
    case.open_session("s", 1).await;
    let new = Job::plain().in_session("s");
    case.add(&new).await;
    // The old job counts nothing in the new session: the new one's job is released and starts.
    assert_eq!(case.session_get("s").await.expect("session").queued, 1);
    let held = case.take().await;
    assert_eq!(held.ulid, new.ulid);
    let ack = Ack { ulid: &held.ulid, token: &held.token, result: b"", session_state: Some(("{\"new\":1}", Some(1))) };
    assert_eq!(case.complete(&[ack]).await, [AckOutcome::Completed]);
    let session = case.session_get("s").await.expect("session");
    assert_eq!((session.state.as_str(), session.version), ("{\"new\":1}", 2));
    // The old job, failing, ends cancelled rather than retried into the new session.
    let failed = case.fail(&old.ulid, &old.token, true, None, 0.0).await;
    assert_eq!(failed.state, Some(RecordState::Cancelled));
    let session = case.session_get("s").await.expect("session");
    assert_eq!((session.started, session.queued, session.pending), (0, 0, 0));
    assert_eq!(case.places().await, Places { completed: 1, cancelled: 1, ..Places::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn a_released_job_of_a_deleted_session_is_not_started_in_a_new_session_of_its_name() {
    let case = Case::start().await;
    case.open_session("s", 1).await;
    let old = Job::plain().in_session("s");
    case.add(&old).await;
    assert!(case.session_delete("s").await);
    case.open_session("s", 1).await;
    let new = Job::plain().in_session("s");
    case.add(&new).await;
    assert_eq!(case.take().await.ulid, new.ulid, "the old job ends cancelled when it would start");
    assert_eq!(case.record(&old.ulid).await.state, RecordState::Cancelled);
    let session = case.session_get("s").await.expect("session");
    assert_eq!((session.started, session.queued), (1, 0));
    case.assert_invariants().await;
}

#[tokio::test]
async fn a_session_written_by_an_earlier_release_runs_its_jobs_as_before() {
    let case = Case::start().await;
    case.open_session("s", 1).await;
    case.strip_session_since("s").await;
    let jobs = [Job::plain().in_session("s"), Job::plain().in_session("s")];
    case.add_many(&jobs).await;
    assert_eq!(case.session_get("s").await.expect("session").pending, 1);
    let first = case.take().await;
    let ack = Ack { ulid: &first.ulid, token: &first.token, result: b"", session_state: Some(("{\"a\":1}", Some(1))) };
    assert_eq!(case.complete(&[ack]).await, [AckOutcome::Completed]);
    assert_eq!(case.take().await.ulid, jobs[1].ulid);
    let session = case.session_get("s").await.expect("session");
    assert_eq!((session.version, session.started, session.queued, session.pending), (2, 1, 0, 0));
    case.assert_invariants().await;
}

#[tokio::test]
async fn session_jobs_pages_through_the_pending_jobs_in_release_order() {
    let case = Case::start().await;
    assert!(case.store.sessions().pending_jobs(QUEUE, "s", "", 10).await.expect("read").is_none());
    case.open_session("s", 1).await;
    case.open_session("s2", 1).await;
    let jobs: Vec<Job> = (0..4).map(|_| Job::plain().in_session("s")).collect();
    case.add_many(&jobs).await;
    // A session whose name starts with the other's keeps its jobs apart.
    case.add_many(&[Job::plain().in_session("s2"), Job::plain().in_session("s2")]).await;
    let ulids = |page: &PendingPage| page.jobs.iter().map(|j| j.ulid.clone()).collect::<Vec<_>>();
    // The first job was released to the queue: the other three wait inside, in add order.
    let first = case.store.sessions().pending_jobs(QUEUE, "s", "", 2).await.expect("read").expect("session");
    assert_eq!(ulids(&first), [jobs[1].ulid.clone(), jobs[2].ulid.clone()]);
    assert!(first.more && first.jobs.iter().all(|j| j.record.is_some()));
    let after = first.jobs[1].place.clone();
    let rest = case.store.sessions().pending_jobs(QUEUE, "s", &after, 2).await.expect("read").expect("session");
    assert_eq!((ulids(&rest), rest.more), (vec![jobs[3].ulid.clone()], false));
    let other = case.store.sessions().pending_jobs(QUEUE, "s2", "", 10).await.expect("read").expect("session");
    assert_eq!(other.jobs.len(), 1);
    case.assert_invariants().await;
}
