//! lua/schedule_set, schedule_fire, schedule_trigger, schedule_pause and schedule_delete.

use jobwire::store::{AckOutcome, Fire, FireJob, FireOutcome, JobRecord, RecordState, StoredSchedule, StoredSettings};

use super::{Case, Job, Places, QUEUE, next_ulid};

const NAME: &str = "nightly";
const SPEC: &str = r#"{"every_ms":1000,"missed":"skip"}"#;

impl Case {
    async fn schedule_set(&self, name: &str, now_ms: i64) -> (bool, StoredSchedule) {
        let template = Job::plain().with(|r| r.headers = vec![("jobwire-schedule".into(), name.into())]).record;
        self.store.schedules().set(QUEUE, name, SPEC, &template, now_ms).await.expect("schedule_set")
    }

    async fn schedule_fire(&self, fires: &[Fire]) -> Vec<FireOutcome> {
        self.store.schedules().fire(QUEUE, fires, None).await.expect("schedule_fire")
    }

    async fn schedule(&self, name: &str) -> Option<StoredSchedule> {
        self.store.schedules().get(QUEUE, name).await.expect("get")
    }
}

/// A fire of `NAME` from what `s` says, adding one job per due time (ready at once).
fn fire(s: &StoredSchedule, through: i64, dues: &[i64], skip_overlap: bool) -> Fire {
    Fire {
        name: NAME.into(),
        revision: s.revision,
        fired_through_ms: s.fired_through_ms,
        next_through_ms: through,
        skip_overlap,
        jobs: dues.iter().map(|&due| FireJob { ulid: next_ulid(), due_ms: due, ready_ms: due }).collect(),
    }
}

#[tokio::test]
async fn set_creates_then_replaces_keeping_how_far_it_fired() {
    let case = Case::start().await;
    let (created, first) = case.schedule_set(NAME, 1_000).await;
    assert!(created);
    assert_eq!((first.revision, first.fired_through_ms, first.paused, first.fires), (1, 1_000, false, 0));
    assert_eq!(first.spec, SPEC);
    assert_eq!(first.template.job_type, "t");
    assert_eq!(case.store.schedules().set_paused(QUEUE, NAME, true).await.expect("pause"), Some(true));
    let (created, second) = case.schedule_set(NAME, 500).await;
    assert!(!created);
    assert_eq!(second.revision, 2);
    assert_eq!(second.fired_through_ms, 1_000, "never moved back");
    assert!(second.paused, "a replacement keeps the pause");
    let (_, third) = case.schedule_set(NAME, 9_000).await;
    assert_eq!(third.fired_through_ms, 9_000, "a replacement owes nothing from before it");
    case.assert_invariants().await;
}

#[tokio::test]
async fn a_due_time_is_claimed_once_and_its_job_added_from_the_template() {
    let case = Case::start().await;
    let (_, s) = case.schedule_set(NAME, 1_000).await;
    let first = fire(&s, 2_000, &[2_000], false);
    let mut rival = first.clone();
    rival.jobs[0].ulid = next_ulid();
    assert_eq!(case.schedule_fire(std::slice::from_ref(&first)).await, vec![FireOutcome::Fired(1)]);
    let outcome = case.schedule_fire(&[rival]).await;
    assert_eq!(outcome, vec![FireOutcome::FiredElsewhere(2_000)], "the rival learns how far it fired");
    assert_eq!(case.places().await, Places { waiting: 1, ..Default::default() });
    let record = case.record(&first.jobs[0].ulid).await;
    assert_eq!((record.state, record.created_ms, record.job_type.as_str()), (RecordState::Waiting, 2_000, "t"));
    assert_eq!(record.headers, vec![("jobwire-schedule".to_owned(), NAME.to_owned())]);
    let s = case.schedule(NAME).await.expect("kept");
    assert_eq!((s.fires, s.last_due_ms, s.last_job.as_deref()), (1, Some(2_000), Some(first.jobs[0].ulid.as_str())));
    case.assert_invariants().await;
}

#[tokio::test]
async fn fires_are_refused_for_another_revision_a_pause_or_no_schedule() {
    let case = Case::start().await;
    let (_, s) = case.schedule_set(NAME, 1_000).await;
    let stale = fire(&s, 2_000, &[2_000], false);
    case.schedule_set(NAME, 1_000).await;
    assert!(matches!(case.schedule_fire(&[stale]).await.as_slice(), [FireOutcome::Refused(r)] if r.revision == 2));
    let s = case.schedule(NAME).await.expect("kept");
    case.store.schedules().set_paused(QUEUE, NAME, true).await.expect("pause");
    assert!(
        matches!(case.schedule_fire(&[fire(&s, 2_000, &[2_000], false)]).await.as_slice(), [FireOutcome::Refused(r)] if r.paused)
    );
    let mut gone = fire(&s, 2_000, &[2_000], false);
    gone.name = "other".into();
    assert_eq!(case.schedule_fire(&[gone]).await, vec![FireOutcome::Gone]);
    assert_eq!(case.places().await, Places::default(), "nothing added");
    case.assert_invariants().await;
}

#[tokio::test]
async fn overlap_skip_adds_nothing_while_the_last_job_is_unfinished() {
    let case = Case::start().await;
    let (_, s) = case.schedule_set(NAME, 1_000).await;
    assert_eq!(case.schedule_fire(&[fire(&s, 2_000, &[2_000], true)]).await, vec![FireOutcome::Fired(1)]);
    let s = case.schedule(NAME).await.expect("kept");
    assert_eq!(case.schedule_fire(&[fire(&s, 3_000, &[3_000], true)]).await, vec![FireOutcome::Fired(0)]);
    let held = case.take().await;
    let s = case.schedule(NAME).await.expect("kept");
    assert_eq!((s.skipped, s.fires), (1, 1));
    assert_eq!(case.schedule_fire(&[fire(&s, 4_000, &[4_000], true)]).await, vec![FireOutcome::Fired(0)], "active");
    assert_eq!(case.ack(&held.ulid, &held.token).await, AckOutcome::Completed);
    let s = case.schedule(NAME).await.expect("kept");
    assert_eq!(case.schedule_fire(&[fire(&s, 5_000, &[5_000], true)]).await, vec![FireOutcome::Fired(1)], "finished");
    // Catching up several times under overlap skip: the first goes in, the rest wait on it.
    let s = case.schedule(NAME).await.expect("kept");
    assert_eq!(case.schedule_fire(&[fire(&s, 9_000, &[6_000, 7_000], false)]).await, vec![FireOutcome::Fired(2)]);
    assert_eq!(case.places().await, Places { waiting: 3, completed: 1, ..Default::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn a_job_ready_after_its_due_time_waits_delayed() {
    let case = Case::start().await;
    let (_, s) = case.schedule_set(NAME, 1_000).await;
    let now = case.stats().await.now_ms;
    let mut f = fire(&s, 2_000, &[2_000], false);
    f.jobs[0].ready_ms = now + 60_000;
    assert_eq!(case.schedule_fire(&[f]).await, vec![FireOutcome::Fired(1)]);
    assert_eq!(case.places().await, Places { delayed: 1, ..Default::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn trigger_pause_and_delete() {
    let case = Case::start().await;
    assert!(!case.store.schedules().trigger(QUEUE, NAME, &next_ulid()).await.expect("trigger"));
    case.schedule_set(NAME, 1_000).await;
    let ulid = next_ulid();
    assert!(case.store.schedules().trigger(QUEUE, NAME, &ulid).await.expect("trigger"));
    assert_eq!(case.record(&ulid).await.state, RecordState::Waiting);
    let s = case.schedule(NAME).await.expect("kept");
    assert_eq!((s.fires, s.last_job.as_deref(), s.fired_through_ms), (1, Some(ulid.as_str()), 1_000));
    let schedules = case.store.schedules();
    assert_eq!(schedules.set_paused(QUEUE, NAME, true).await.expect("pause"), Some(true));
    assert_eq!(schedules.set_paused(QUEUE, NAME, true).await.expect("pause"), Some(false));
    assert_eq!(schedules.set_paused(QUEUE, NAME, false).await.expect("resume"), Some(true));
    assert_eq!(schedules.set_paused(QUEUE, "other", true).await.expect("pause"), None);
    assert!(schedules.delete(QUEUE, NAME).await.expect("delete"));
    assert!(!schedules.delete(QUEUE, NAME).await.expect("delete"));
    assert_eq!(case.places().await, Places { waiting: 1, ..Default::default() }, "its job stays");
    case.assert_invariants().await;
}

#[tokio::test]
async fn overlap_skip_catching_up_adds_only_the_first_missed_time() {
    let case = Case::start().await;
    let (_, s) = case.schedule_set(NAME, 1_000).await;
    assert_eq!(case.schedule_fire(&[fire(&s, 4_000, &[2_000, 3_000, 4_000], true)]).await, vec![FireOutcome::Fired(1)]);
    let s = case.schedule(NAME).await.expect("kept");
    assert_eq!((s.fires, s.skipped, s.last_due_ms, s.fired_through_ms), (1, 2, Some(2_000), 4_000));
    assert_eq!(case.places().await, Places { waiting: 1, ..Default::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn a_fire_stops_at_the_queues_cap_of_waiting_jobs_and_counts_the_refusal() {
    let case = Case::start().await;
    let (_, s) = case.schedule_set(NAME, 1_000).await;
    // The flag's cap of 2: two of the three due times fit; the fire has fired through the one
    // before the refused one.
    let catch_up = fire(&s, 4_000, &[2_000, 3_000, 4_000], false);
    let outcome = case.store.schedules().fire(QUEUE, &[catch_up], Some(2)).await.expect("fire");
    assert_eq!(outcome, vec![FireOutcome::QueueFull(3_999)]);
    let s = case.schedule(NAME).await.expect("kept");
    assert_eq!((s.fires, s.refused, s.fired_through_ms, s.last_due_ms), (2, 1, 3_999, Some(3_000)));
    assert_eq!(case.places().await, Places { waiting: 2, ..Default::default() });
    // The queue's own setting overrides the flag: with room for one more, the next fire fits.
    let room = StoredSettings { max_waiting: Some(3), ..StoredSettings::default() };
    case.store.queue_settings().change(QUEUE, &room, &[]).await.expect("set");
    let next = fire(&s, 5_000, &[5_000], false);
    assert_eq!(case.store.schedules().fire(QUEUE, &[next], Some(2)).await.expect("fire"), vec![FireOutcome::Fired(1)]);
    let s = case.schedule(NAME).await.expect("kept");
    assert_eq!((s.fires, s.refused, s.fired_through_ms), (3, 1, 5_000));
    case.assert_invariants().await;
}

#[tokio::test]
async fn the_first_pages_of_several_queues_are_read_in_one_call() {
    let case = Case::start().await;
    case.schedule_set(NAME, 1_000).await;
    case.schedule_set("hourly", 1_000).await;
    let queues = [QUEUE.to_owned(), "no-schedules".to_owned()];
    let pages = case.store.schedules().first_pages(&queues, 200).await.expect("first pages");
    let [(0, first), (0, none)] = pages.as_slice() else { panic!("two complete pages: {pages:?}") };
    let mut names: Vec<&str> = first
        .iter()
        .map(|(name, stored)| {
            assert!(stored.is_ok(), "{name} reads");
            name.as_str()
        })
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["hourly", NAME]);
    assert!(none.is_empty());
}

/// Writes `name` as an older release stored a schedule: one msgpack array in the schedules hash
/// (revision 1, fired through 1,000, created and updated at 1,000), with no fire state apart;
/// `refused` adds the twelfth field, which that layout had once a fire was refused.
async fn write_old_layout(case: &Case, name: &str, paused: bool, refused: Option<u64>) -> JobRecord {
    let template = Job::plain()
        .with(|r| {
            r.headers = vec![("jobwire-schedule".into(), name.into())];
            r.priority = 3;
            // As an upsert writes a template.
            r.created_ms = 0;
        })
        .record;
    let encoded = template.encode().expect("encode");
    let write = "local s = {1, tonumber(ARGV[4]), 1000, 0, '', 0, 0, ARGV[2], ARGV[3], 1000, 1000} \
                 if ARGV[5] ~= '' then s[12] = tonumber(ARGV[5]) end \
                 redis.call('HSET', KEYS[1], ARGV[1], cmsgpack.pack(s))";
    let mut c =
        redis::Client::open(case.redis.url()).expect("url").get_multiplexed_async_connection().await.expect("conn");
    let key = case.store.keys().queue(QUEUE).schedules().to_owned();
    let refused = refused.map(|n| n.to_string()).unwrap_or_default();
    let _: () = redis::cmd("EVAL")
        .arg(write)
        .arg(1)
        .arg(&key)
        .arg(name)
        .arg(SPEC)
        .arg(encoded)
        .arg(u8::from(paused))
        .arg(refused)
        .query_async(&mut c)
        .await
        .expect("old layout written");
    template
}

/// Whether `name`'s definition is in the current layout (it opens with the layout, 2) and its
/// fire state is kept apart.
async fn in_current_layout(case: &Case, name: &str) -> bool {
    let mut c =
        redis::Client::open(case.redis.url()).expect("url").get_multiplexed_async_connection().await.expect("conn");
    let keys = case.store.keys().queue(QUEUE);
    let definition: Vec<u8> = redis::AsyncCommands::hget(&mut c, keys.schedules(), name).await.expect("definition");
    let state: Option<Vec<u8>> = redis::AsyncCommands::hget(&mut c, keys.schedule_state(), name).await.expect("state");
    definition.first() == Some(&2) && state.is_some()
}

#[tokio::test]
async fn a_schedule_in_the_old_layout_is_read_fired_and_moved_to_the_current_one() {
    let case = Case::start().await;
    let template = write_old_layout(&case, NAME, false, None).await;
    let s = case.schedule(NAME).await.expect("read from the old layout");
    assert_eq!((s.revision, s.fired_through_ms, s.paused, s.fires, s.refused), (1, 1_000, false, 0, 0));
    assert_eq!((s.spec.as_str(), &s.template), (SPEC, &template));
    let pages = case.store.schedules().first_pages(&[QUEUE.to_owned()], 200).await.expect("first pages");
    assert!(matches!(pages.as_slice(), [(0, page)] if page.len() == 1 && page[0].1.is_ok()), "listed: {pages:?}");
    assert!(!in_current_layout(&case, NAME).await);

    // A rival's fire from the same read is refused with how far it fired, and moves nothing.
    let first = fire(&s, 2_000, &[2_000], false);
    let mut rival = first.clone();
    rival.jobs[0].ulid = next_ulid();
    assert_eq!(case.schedule_fire(std::slice::from_ref(&first)).await, vec![FireOutcome::Fired(1)]);
    assert!(in_current_layout(&case, NAME).await, "the fire wrote it in the current layout");
    assert_eq!(case.schedule_fire(&[rival]).await, vec![FireOutcome::FiredElsewhere(2_000)]);
    let record = case.record(&first.jobs[0].ulid).await;
    let mut expected = template.clone();
    expected.created_ms = 2_000;
    expected.ready_at_ms = record.ready_at_ms;
    assert_eq!(record, expected, "the job is the template's, created at its due time");
    let s = case.schedule(NAME).await.expect("kept");
    assert_eq!((s.revision, s.fires, s.last_due_ms, s.fired_through_ms), (1, 1, Some(2_000), 2_000));
    assert_eq!(&s.template, &template, "the template reads back as it was");
    assert_eq!(case.places().await, Places { waiting: 1, ..Default::default() });

    // A paused one with refused fires: resumed, it keeps its counts; upserted, its revision.
    write_old_layout(&case, "paused", true, Some(3)).await;
    let s = case.store.schedules().get(QUEUE, "paused").await.expect("get").expect("kept");
    assert_eq!((s.paused, s.refused), (true, 3));
    let outcome = case.schedule_fire(&[Fire { name: "paused".into(), ..fire(&s, 2_000, &[2_000], false) }]).await;
    assert!(matches!(outcome.as_slice(), [FireOutcome::Refused(r)] if r.paused && r.refused == 3), "{outcome:?}");
    assert_eq!(case.store.schedules().set_paused(QUEUE, "paused", false).await.expect("resume"), Some(true));
    assert!(in_current_layout(&case, "paused").await);
    let s = case.store.schedules().get(QUEUE, "paused").await.expect("get").expect("kept");
    assert_eq!((s.paused, s.refused, s.revision, s.fired_through_ms), (false, 3, 1, 1_000));
    write_old_layout(&case, "upserted", false, None).await;
    let (created, s) = case.schedule_set("upserted", 5_000).await;
    assert!(!created);
    assert_eq!((s.revision, s.fired_through_ms), (2, 5_000));
    assert!(in_current_layout(&case, "upserted").await);
    case.assert_invariants().await;
    assert!(case.store.schedules().delete(QUEUE, NAME).await.expect("delete"));
    assert!(case.schedule(NAME).await.is_none());
    case.assert_invariants().await;
}

/// A fire of `NAME` from what `s` says, claimed `ahead_ms` before its due time (Redis's clock),
/// as the owner's timer claims an on-time one: its job waits delayed until that time.
async fn ahead(case: &Case, s: &StoredSchedule, ahead_ms: i64) -> Fire {
    let due = case.stats().await.now_ms + ahead_ms;
    fire(s, due, &[due], false)
}

#[tokio::test]
async fn a_fire_claimed_ahead_waits_delayed_and_is_released_at_its_due_time() {
    let case = Case::start().await;
    let (_, s) = case.schedule_set(NAME, 1_000).await;
    let early = ahead(&case, &s, 1_000).await;
    let due = early.jobs[0].due_ms;
    assert_eq!(case.schedule_fire(std::slice::from_ref(&early)).await, vec![FireOutcome::Fired(1)]);
    assert_eq!(case.places().await, Places { delayed: 1, ..Default::default() });
    let record = case.record(&early.jobs[0].ulid).await;
    assert_eq!((record.state, record.ready_at_ms), (RecordState::Waiting, Some(due)), "delayed in its ready form");
    case.assert_invariants().await;
    assert_eq!(case.store.schedules().release(QUEUE, 0).await.expect("release"), 0, "not before its due time");
    assert_eq!(case.store.schedules().release(QUEUE, due - 1).await.expect("release"), 0, "nor by the caller's clock");
    assert_eq!(case.places().await, Places { delayed: 1, ..Default::default() });
    assert_eq!(case.store.schedules().release(QUEUE, due).await.expect("release"), 1, "due by the caller's clock");
    let record = case.record(&early.jobs[0].ulid).await;
    assert_eq!((record.state, record.created_ms), (RecordState::Waiting, due));
    assert!(record.ready_at_ms >= Some(due), "ready at its due time, not before: {:?} < {due}", record.ready_at_ms);
    case.redis_time_when(|now| now >= due).await;
    // Its due time has come: a pause no longer withdraws it.
    case.store.schedules().set_paused(QUEUE, NAME, true).await.expect("pause");
    assert_eq!(case.places().await, Places { waiting: 1, ..Default::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn a_release_makes_a_batch_ready_per_call_until_none_is_due() {
    let case = Case::start().await;
    let (_, s) = case.schedule_set(NAME, 1_000).await;
    let (_, other) = case.schedule_set("other", 1_000).await;
    let due = case.stats().await.now_ms + 500;
    let dues: Vec<i64> = (0..100).map(|n| due - n).collect();
    let mut second = fire(&other, due, &dues[..50], false);
    second.name = "other".into();
    let fires = [fire(&s, due, &dues, false), second];
    assert_eq!(case.schedule_fire(&fires).await, vec![FireOutcome::Fired(100), FireOutcome::Fired(50)]);
    case.redis_time_when(|now| now >= due).await;
    let releases = [case.store.schedules().release(QUEUE, 0), case.store.schedules().release(QUEUE, 0)];
    let released: Vec<u64> = futures::future::try_join_all(releases).await.expect("release");
    assert_eq!(released.iter().sum::<u64>(), 150);
    assert!(released.iter().all(|&n| n <= 100), "{released:?}");
    assert_eq!(case.store.schedules().release(QUEUE, 0).await.expect("release"), 0);
    assert_eq!(case.places().await, Places { waiting: 150, ..Default::default() });
    case.assert_invariants().await;
}

#[tokio::test]
async fn a_pause_change_or_delete_before_the_due_time_withdraws_the_job_claimed_ahead() {
    let case = Case::start().await;
    let schedules = case.store.schedules();
    let (_, s) = case.schedule_set(NAME, 1_000).await;
    // A pause: the job goes, and its due time is owed again.
    let paused = ahead(&case, &s, 60_000).await;
    let (ulid, due) = (paused.jobs[0].ulid.clone(), paused.jobs[0].due_ms);
    assert_eq!(case.schedule_fire(std::slice::from_ref(&paused)).await, vec![FireOutcome::Fired(1)]);
    assert_eq!(schedules.set_paused(QUEUE, NAME, true).await.expect("pause"), Some(true));
    assert!(case.info(&ulid).await.is_none(), "withdrawn");
    assert_eq!(case.places().await, Places::default());
    let s = case.schedule(NAME).await.expect("kept");
    assert_eq!((s.fired_through_ms, s.fires, s.last_job.as_deref()), (due - 1, 0, Some(ulid.as_str())));
    assert_eq!(schedules.set_paused(QUEUE, NAME, false).await.expect("resume"), Some(true));
    let again = Fire { jobs: paused.jobs.clone(), ..fire(&s, due, &[due], false) };
    assert_eq!(case.schedule_fire(&[again]).await, vec![FireOutcome::Fired(1)], "owed again, under the same id");
    // A new definition: the job claimed ahead of a later due time goes; the one before stays.
    let s = case.schedule(NAME).await.expect("kept");
    let changed = fire(&s, due + 1_000, &[due + 1_000], false);
    assert_eq!(case.schedule_fire(std::slice::from_ref(&changed)).await, vec![FireOutcome::Fired(1)]);
    let (_, s) = case.schedule_set(NAME, case.stats().await.now_ms).await;
    assert!(case.info(&changed.jobs[0].ulid).await.is_none(), "withdrawn");
    assert_eq!((s.fired_through_ms, s.fires), (due + 999, 1));
    // A delete: the same.
    let deleted = fire(&s, due + 2_000, &[due + 2_000], false);
    assert_eq!(case.schedule_fire(std::slice::from_ref(&deleted)).await, vec![FireOutcome::Fired(1)]);
    assert!(schedules.delete(QUEUE, NAME).await.expect("delete"));
    assert!(case.info(&deleted.jobs[0].ulid).await.is_none(), "withdrawn");
    assert_eq!(
        case.record(&ulid).await.state,
        RecordState::Waiting,
        "the job of the fire before stays, in its ready form"
    );
    assert_eq!(case.places().await, Places { delayed: 1, ..Default::default() });
    case.assert_invariants().await;
}
