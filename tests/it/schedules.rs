//! Schedules end to end: real jobwire servers (two where it matters) over one Redis, each with
//! its own timer, and the jobs the schedules add counted in the queue. A job's due time is its
//! ULID's timestamp.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jobwire::proto::{self, JobState, schedule_service_client::ScheduleServiceClient};
use jobwire::store::Kind;
use tonic::{Code, transport::Channel};

use crate::harness::{Client, Process, Redis, Server, ServerBuilder, Worker, eventually, run_jobwire, unique_prefix};

type Schedules = ScheduleServiceClient<Channel>;

const QUEUE: &str = "q";

fn now_ms() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis()).expect("fits")
}

fn at(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).expect("fits"),
    }
}

fn secs(s: i64) -> prost_types::Duration {
    prost_types::Duration { seconds: s, nanos: 0 }
}

/// A schedule of `QUEUE` every second, adding jobs of type `tick`.
fn every_second(name: &str) -> proto::ScheduleDefinition {
    proto::ScheduleDefinition {
        queue: QUEUE.into(),
        name: name.into(),
        template: Some(proto::JobTemplate { r#type: "tick".into(), payload: b"{}".to_vec(), ..Default::default() }),
        timing: Some(proto::schedule_definition::Timing::Every(secs(1))),
        ..Default::default()
    }
}

async fn schedules(server: &Server) -> Schedules {
    ScheduleServiceClient::new(server.channel().await)
}

async fn upsert(client: &mut Schedules, definition: proto::ScheduleDefinition) -> proto::Schedule {
    let request = proto::UpsertScheduleRequest { schedule: Some(definition) };
    client.upsert_schedule(request).await.expect("upsert").into_inner().schedule.expect("schedule")
}

async fn get(client: &mut Schedules, name: &str) -> Result<proto::Schedule, tonic::Status> {
    let request = proto::GetScheduleRequest { queue: QUEUE.into(), name: name.into() };
    Ok(client.get_schedule(request).await?.into_inner().schedule.expect("schedule"))
}

/// The due times (ULID timestamps, ms) of the jobs of `QUEUE` in `state` added by schedule
/// `name`, sorted.
async fn dues(client: &mut Client, name: &str, state: JobState) -> Vec<i64> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = proto::ListJobsRequest {
            queue: QUEUE.into(),
            state: state as i32,
            page_size: 500,
            page_token,
            filter: None,
        };
        let page = client.list_jobs(request).await.expect("list").into_inner();
        for job in page.jobs {
            if job.headers.get("jobwire-schedule").map(String::as_str) == Some(name) {
                let ulid: ulid::Ulid = job.id.rsplit('/').next().expect("an id").parse().expect("a ULID");
                out.push(i64::try_from(ulid.timestamp_ms()).expect("fits"));
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    out.sort_unstable();
    out
}

/// Waits (at most `limit`) until the due times of schedule `name`'s waiting jobs satisfy `done`.
async fn wait_for_dues(client: &Client, name: &str, limit: Duration, what: &str, done: impl Fn(&[i64]) -> bool) {
    let client = client.clone();
    eventually(limit, what, || {
        let mut client = client.clone();
        let name = name.to_owned();
        let done = &done;
        async move { done(&dues(&mut client, &name, JobState::Waiting).await) }
    })
    .await;
}

/// Waits until the instance's clock is at `ms` or later.
async fn sleep_until_ms(ms: i64) {
    let wait = ms - now_ms();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(u64::try_from(wait).expect("positive"))).await;
    }
}

#[tokio::test]
async fn two_instances_add_exactly_one_job_per_second_between_start_and_end() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let a = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let b = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let t0 = (now_ms() / 1000 + 2) * 1000;
    let mut definition = every_second("tick");
    definition.start = Some(at(t0));
    definition.end = Some(at(t0 + 10_000));
    let created = upsert(&mut schedules(&a).await, definition).await;
    assert_eq!(created.next_fire_at, Some(at(t0)));
    sleep_until_ms(t0 + 11_500).await;
    let mut client = a.client().await;
    let expected: Vec<i64> = (0..10).map(|k| t0 + k * 1000).collect();
    assert_eq!(dues(&mut client, "tick", JobState::Waiting).await, expected, "one job per due time in [t0, t0 + 10 s)");
    let s = get(&mut schedules(&b).await, "tick").await.expect("get");
    assert_eq!(s.fires, 10);
    assert_eq!(s.next_fire_at, None, "no due time left");
    a.assert_invariants(QUEUE).await;
}

#[tokio::test]
async fn a_schedule_made_through_one_instance_is_fired_by_another_within_a_second() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let a = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let b = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let client = b.client().await;
    // b has read every queue's schedules already: only the notice tells it of this one.
    upsert(&mut schedules(&a).await, every_second("tick")).await;
    a.stop().await;
    let since = now_ms();
    // The first due time after a stopped is at most a second away: b fires it, and the next.
    let first = (since / 1000 + 1) * 1000;
    let wanted = [first, first + 1000];
    wait_for_dues(&client, "tick", Duration::from_millis(3_000), "b fires the schedule", |d| {
        wanted.iter().all(|w| d.contains(w))
    })
    .await;
    b.assert_invariants(QUEUE).await;
}

/// A jobwire process over `redis` under `prefix`, to be killed.
fn process(redis: &Redis, prefix: &str) -> Process {
    Process::start(&["serve", "--listen", "127.0.0.1:0", "--redis-url", &redis.url(), "--key-prefix", prefix])
}

/// Each schedule has one owner among the live instances, which fires it on time; the others fire
/// it only a grace later. Killing one instance halfway through loses no due time of any
/// schedule (the survivor fires the dead one's late until it stops counting it live) and
/// fires none twice.
#[tokio::test]
async fn killing_an_instance_loses_no_due_time_of_the_schedules_it_owned() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let mut doomed = process(&redis, &prefix);
    let survivor = process(&redis, &prefix);
    let channel =
        Channel::from_shared(format!("http://{}", survivor.addr)).expect("uri").connect().await.expect("connect");
    let mut admin = ScheduleServiceClient::new(channel);
    let t0 = (now_ms() / 1000 + 2) * 1000;
    let names: Vec<String> = (0..20).map(|n| format!("s{n}")).collect();
    for name in &names {
        let mut definition = every_second(name);
        definition.start = Some(at(t0));
        definition.end = Some(at(t0 + 8_000));
        upsert(&mut admin, definition).await;
    }
    sleep_until_ms(t0 + 2_500).await;
    doomed.child.kill().expect("kill");
    doomed.child.wait().expect("reaped");
    let mut client = survivor.client().await;
    let expected: Vec<i64> = (0..8).map(|k| t0 + k * 1000).collect();
    for name in &names {
        let client = client.clone();
        let what = format!("{name}'s 8 fires");
        wait_for_dues(&client, name, Duration::from_secs(10), &what, |d| d.len() >= expected.len()).await;
    }
    for name in &names {
        assert_eq!(dues(&mut client, name, JobState::Waiting).await, expected, "{name}: one job per due time");
    }
}

/// A fire that would pass the queue's cap of waiting jobs (`--max-waiting` here) adds nothing
/// and is counted; its due time is then a missed fire, which the skip policy drops, and once
/// there is room the schedule fires again on time.
#[tokio::test]
async fn fires_respect_the_cap_of_waiting_jobs_and_refused_times_are_missed_fires() {
    let redis = Redis::start();
    let server = ServerBuilder::new(&redis).settings(|s| s.max_waiting = Some(1)).start().await;
    upsert(&mut schedules(&server).await, every_second("tick")).await;
    let client = server.client().await;
    wait_for_dues(&client, "tick", Duration::from_secs(3), "the first fire", |d| !d.is_empty()).await;
    eventually(Duration::from_secs(4), "two fires refused at the cap", || async {
        let stored = server.store.schedules().get(QUEUE, "tick").await.expect("get").expect("kept");
        stored.refused >= 2
    })
    .await;
    let mut client = client;
    let held = dues(&mut client, "tick", JobState::Waiting).await;
    assert_eq!(held.len(), 1, "the cap holds: {held:?}");
    let mut worker = Worker::open(&server, &[QUEUE], 1).await;
    let job = worker.next_job(Duration::from_secs(2)).await.expect("the held job");
    worker.complete(&job, b"").await.expect("complete");
    let freed_at = now_ms();
    let next = worker.next_job(Duration::from_secs(3)).await.expect("a fire once there is room");
    let due = i64::try_from(
        next.id.rsplit('/').next().and_then(|u| u.parse::<ulid::Ulid>().ok()).expect("a ULID").timestamp_ms(),
    )
    .expect("fits");
    assert!(due > held[0] + 1_000, "the refused times did not run (skip): {due} after {}", held[0]);
    assert!(due >= freed_at - 1_000, "an on-time fire, not an old refused one: {due} vs {freed_at}");
    worker.complete(&next, b"").await.expect("complete");
    server.assert_invariants(QUEUE).await;
}

#[tokio::test]
async fn missed_fires_follow_each_policy_after_every_instance_was_down() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let first = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let mut admin = schedules(&first).await;
    let mut once = every_second("once");
    once.missed_fires = proto::MissedFirePolicy::RunOnce as i32;
    let mut all = every_second("all");
    all.missed_fires = proto::MissedFirePolicy::RunAll as i32;
    all.catch_up_max = 3;
    for definition in [every_second("skip"), once, all] {
        upsert(&mut admin, definition).await;
    }
    let client = first.client().await;
    for name in ["skip", "once", "all"] {
        wait_for_dues(&client, name, Duration::from_secs(5), "two fires", |d| d.len() >= 2).await;
    }
    first.stop().await;
    let stopped_at = now_ms();
    // Down for 5 s, back half a second into a second: its due time is then on time (under 1 s
    // old) and every earlier one since the stop is missed.
    let back_at = (stopped_at / 1000 + 6) * 1000 + 500;
    sleep_until_ms(back_at).await;
    let second = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let on_time = back_at - 500;
    let mut client = second.client().await;
    for name in ["skip", "once", "all"] {
        let next = on_time + 1000;
        wait_for_dues(&client, name, Duration::from_secs(3), "the next fire after the restart", |d| d.contains(&next))
            .await;
    }
    for (name, caught_up) in [("skip", 0), ("once", 1), ("all", 3)] {
        let all_dues = dues(&mut client, name, JobState::Waiting).await;
        // A due time up to 200 ms after the stop may have been claimed ahead before it: its job
        // waited delayed and ran late, not missed.
        let claimed_by = stopped_at + 200;
        let last_before = all_dues.iter().copied().filter(|&d| d <= claimed_by).max().expect("fired before the stop");
        let missed: Vec<i64> = all_dues.iter().copied().filter(|&d| d > last_before && d < on_time).collect();
        let expected: Vec<i64> = (1..=caught_up).rev().map(|k| on_time - k * 1000).collect();
        assert_eq!(missed, expected, "{name}: the missed times that ran");
        assert!(all_dues.contains(&on_time), "{name}: the on-time fire after the restart ran");
    }
    second.assert_invariants(QUEUE).await;
}

/// With no worker connected, each due time's job is claimed ahead (a DELAYED event before the due
/// time, ready at it) or, when the claim came late, added ready; either way it is ready at its
/// due time and not before, once.
#[tokio::test]
async fn jobs_claimed_ahead_are_ready_at_their_due_time_and_not_before() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let request = proto::SubscribeRequest { queue: QUEUE.into(), cursor: String::new() };
    let mut feed = client.subscribe(request).await.expect("subscribe").into_inner();
    upsert(&mut schedules(&server).await, every_second("tick")).await;
    let (mut ready, mut ahead) = (Vec::new(), 0);
    while ready.len() < 3 {
        let message = tokio::time::timeout(Duration::from_secs(3), feed.message()).await.expect("an event in time");
        let event = message.expect("the feed").expect("not ended").event.expect("an event");
        let ulid: ulid::Ulid = event.job_id.rsplit('/').next().expect("an id").parse().expect("a ULID");
        let due = i64::try_from(ulid.timestamp_ms()).expect("fits");
        let time = ms_of(&event.time.expect("a time"));
        match event.r#type() {
            proto::JobEventType::Delayed => {
                assert_eq!(event.next_run_at.as_ref().map(ms_of), Some(due), "delayed until its due time");
                assert!(time < due, "claimed ahead: at {time}, due {due}");
                let request = proto::GetJobInfoRequest { job_id: event.job_id.clone() };
                let job = client.get_job_info(request).await.expect("info").into_inner().job.expect("a job");
                if now_ms() < due {
                    assert_eq!(job.state(), JobState::Delayed, "shown delayed before its due time");
                    assert_eq!(job.run_at.as_ref().map(ms_of), Some(due));
                }
                ahead += 1;
            }
            proto::JobEventType::Waiting => {
                assert!(time >= due, "ready at {time}, before its due time {due}");
                assert!(!ready.contains(&due), "ready twice: {due}");
                ready.push(due);
            }
            other => panic!("no worker, yet {other:?}"),
        }
    }
    assert!(ahead >= 2, "the due times after the first are claimed ahead: {ahead} of {ready:?}");
    server.assert_invariants(QUEUE).await;
}

#[tokio::test]
async fn overlap_skip_waits_for_the_previous_job() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut admin = schedules(&server).await;
    let mut definition = every_second("tick");
    definition.overlap = proto::OverlapPolicy::Skip as i32;
    upsert(&mut admin, definition).await;
    eventually(Duration::from_secs(5), "two fires skipped", || {
        let mut admin = admin.clone();
        async move { get(&mut admin, "tick").await.expect("get").skipped >= 2 }
    })
    .await;
    let mut client = server.client().await;
    assert_eq!(dues(&mut client, "tick", JobState::Waiting).await.len(), 1, "one job while it waits");
    let mut worker = Worker::open(&server, &[QUEUE], 1).await;
    let job = worker.job().await;
    worker.complete(&job, b"done").await.expect("complete");
    let next = worker.job().await;
    assert_ne!(next.id, job.id, "a new job once the last finished");
    server.assert_invariants(QUEUE).await;
}

#[tokio::test]
async fn pause_resume_delete_and_trigger() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut admin = schedules(&server).await;
    let mut client = server.client().await;
    upsert(&mut admin, every_second("tick")).await;
    wait_for_dues(&client, "tick", Duration::from_secs(3), "a fire", |d| !d.is_empty()).await;
    let name = || proto::PauseScheduleRequest { queue: QUEUE.into(), name: "tick".into() };
    admin.pause_schedule(name()).await.expect("pause");
    let paused = get(&mut admin, "tick").await.expect("get");
    assert!(paused.paused);
    assert_eq!(paused.next_fire_at, None);
    let count = dues(&mut client, "tick", JobState::Waiting).await.len();
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(dues(&mut client, "tick", JobState::Waiting).await.len(), count, "nothing while paused");

    admin
        .resume_schedule(proto::ResumeScheduleRequest { queue: QUEUE.into(), name: "tick".into() })
        .await
        .expect("resume");
    wait_for_dues(&client, "tick", Duration::from_secs(3), "fires again", |d| d.len() > count).await;
    let listed = admin
        .list_schedules(proto::ListSchedulesRequest { queue: QUEUE.into(), ..Default::default() })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.schedules.len(), 1);
    assert!(listed.schedules[0].next_fire_at.is_some(), "ListSchedules shows the next fire time");

    let triggered = admin
        .trigger_schedule(proto::TriggerScheduleRequest { queue: QUEUE.into(), name: "tick".into() })
        .await
        .expect("trigger")
        .into_inner()
        .job_id;
    let info = client.get_job_info(proto::GetJobInfoRequest { job_id: triggered.clone() }).await.expect("info");
    let info = info.into_inner().job.expect("job");
    assert_eq!(
        (info.r#type.as_str(), info.headers.get("jobwire-schedule").map(String::as_str)),
        ("tick", Some("tick"))
    );
    assert_eq!(get(&mut admin, "tick").await.expect("get").last_job_id, triggered);

    admin
        .delete_schedule(proto::DeleteScheduleRequest { queue: QUEUE.into(), name: "tick".into() })
        .await
        .expect("delete");
    assert_eq!(get(&mut admin, "tick").await.expect_err("deleted").code(), Code::NotFound);
    let count = dues(&mut client, "tick", JobState::Waiting).await.len();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(dues(&mut client, "tick", JobState::Waiting).await.len(), count, "nothing once deleted");
    let missing =
        admin.trigger_schedule(proto::TriggerScheduleRequest { queue: QUEUE.into(), name: "tick".into() }).await;
    assert_eq!(missing.expect_err("deleted").code(), Code::NotFound);
    server.assert_invariants(QUEUE).await;
}

#[tokio::test]
async fn invalid_definitions_are_refused_naming_the_field() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut admin = schedules(&server).await;
    let cron = |expression: &str, zone: &str| {
        let mut d = every_second("c");
        d.timing = Some(proto::schedule_definition::Timing::Cron(expression.into()));
        d.time_zone = zone.into();
        d
    };
    let with = |change: fn(&mut proto::ScheduleDefinition)| {
        let mut d = every_second("c");
        change(&mut d);
        d
    };
    let cases = [
        (cron("61 * * * *", ""), "schedule.cron"),
        (cron("0 0 30 2 *", ""), "schedule.cron"),
        (cron("0 3 * * *", "Europe/Nowhere"), "schedule.time_zone"),
        (with(|d| d.timing = Some(proto::schedule_definition::Timing::Every(secs(0)))), "schedule.every"),
        (with(|d| d.timing = None), "schedule.cron"),
        (with(|d| d.time_zone = "UTC".into()), "schedule.time_zone"),
        (with(|d| d.name = "a b".into()), "schedule.name"),
        (with(|d| d.queue = String::new()), "schedule.queue"),
        (with(|d| d.template = None), "schedule.template"),
        (with(|d| d.template.as_mut().expect("t").r#type = String::new()), "schedule.template.type"),
        (with(|d| d.template.as_mut().expect("t").priority = 9), "schedule.template.priority"),
        (
            with(|d| {
                d.template.as_mut().expect("t").headers.insert("jobwire-schedule".into(), "x".into());
            }),
            "schedule.template.headers",
        ),
        (
            with(|d| {
                d.start = Some(at(10_000));
                d.end = Some(at(5_000));
            }),
            "schedule.end",
        ),
        (with(|d| d.jitter = Some(secs(2))), "schedule.jitter"),
        (with(|d| d.catch_up_max = 5), "schedule.catch_up_max"),
        (with(|d| d.missed_fires = 42), "schedule.missed_fires"),
        (with(|d| d.overlap = 42), "schedule.overlap"),
    ];
    for (definition, field) in cases {
        let status =
            admin.upsert_schedule(proto::UpsertScheduleRequest { schedule: Some(definition) }).await.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(status.message().starts_with(&format!("{field}:")), "{field}: {}", status.message());
    }
    let status = admin.upsert_schedule(proto::UpsertScheduleRequest { schedule: None }).await.expect_err("no schedule");
    assert!(status.message().starts_with("schedule:"), "{}", status.message());
    let listed = admin
        .list_schedules(proto::ListSchedulesRequest { queue: QUEUE.into(), ..Default::default() })
        .await
        .expect("list");
    assert!(listed.into_inner().schedules.is_empty(), "nothing was written");
    server.assert_invariants(QUEUE).await;
}

#[tokio::test]
async fn doctor_and_the_invariant_check_know_the_schedules_and_flag_a_corrupt_one() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let server = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let mut definition = every_second("tick");
    definition.timing = Some(proto::schedule_definition::Timing::Cron("0 3 * * *".into()));
    definition.time_zone = "Europe/Berlin".into();
    upsert(&mut schedules(&server).await, definition).await;
    let report = server.store.doctor().examine(None).await.expect("doctor");
    assert!(report.findings.is_empty(), "a schedule is in the layout: {:?}", report.findings);
    server.assert_invariants(QUEUE).await;

    let mut conn =
        redis::Client::open(redis.url()).expect("url").get_multiplexed_async_connection().await.expect("conn");
    let key = format!("{prefix}:{{{QUEUE}}}:schedules");
    let _: () = redis::AsyncCommands::hset(&mut conn, &key, "broken", "not msgpack").await.expect("hset");
    let report = server.store.doctor().examine(None).await.expect("doctor");
    let kinds: Vec<_> = report.findings.iter().map(|f| (f.kind, f.subject.as_str())).collect();
    assert_eq!(kinds, vec![(Kind::CorruptSchedule, "schedule broken")]);
    let problems = server.store.invariants().check_invariants(QUEUE).await.expect("check");
    assert_eq!(problems.len(), 1, "{problems:?}");
    let _: () = redis::AsyncCommands::hdel(&mut conn, &key, "broken").await.expect("hdel");
}

#[tokio::test]
async fn the_cli_sets_lists_gets_pauses_resumes_triggers_and_deletes() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let addr = server.addr.to_string();
    let run = |args: Vec<&str>| {
        let mut full = vec!["schedule"];
        full.extend(args);
        full.extend(["--addr", &addr]);
        let owned: Vec<String> = full.into_iter().map(str::to_owned).collect();
        async move {
            let args: Vec<&str> = owned.iter().map(String::as_str).collect();
            let ran = run_jobwire(&args, Duration::from_secs(20)).await;
            assert_eq!(ran.code, Some(0), "{args:?}: {}", ran.stderr);
            ran.stdout
        }
    };
    let set =
        ["set", "nightly", "--queue", QUEUE, "--type", "report", "--cron", "0 30 2 * * *", "--tz", "Europe/Berlin"];
    let out = run([&set[..], &["--payload", r#"{"full":true}"#, "--missed", "run-once"]].concat()).await;
    assert!(out.starts_with("q/nightly: created, next fire 20"), "{out}");
    let listed = run(vec!["list", "--queue", QUEUE, "--json"]).await;
    let row: serde_json::Value = serde_json::from_str(listed.trim()).expect("one JSON line");
    assert_eq!((row["cron"].as_str(), row["time_zone"].as_str()), (Some("0 30 2 * * *"), Some("Europe/Berlin")));
    assert_eq!(row["missed_fires"].as_str(), Some("run_once"));
    run(vec!["pause", "nightly", "--queue", QUEUE]).await;
    let got: serde_json::Value =
        serde_json::from_str(&run(vec!["get", "nightly", "--queue", QUEUE]).await).expect("json");
    assert_eq!((got["paused"].as_bool(), got["next_fire_at"].as_str()), (Some(true), Some("-")));
    run(vec!["resume", "nightly", "--queue", QUEUE]).await;
    let job_id = run(vec!["trigger", "nightly", "--queue", QUEUE]).await;
    let mut client = server.client().await;
    let job = crate::harness::info(&mut client, job_id.trim()).await;
    assert_eq!((job.r#type.as_str(), job.payload.as_slice()), ("report", br#"{"full":true}"#.as_slice()));
    run(vec!["delete", "nightly", "--queue", QUEUE]).await;
    let gone =
        run_jobwire(&["schedule", "get", "nightly", "--queue", QUEUE, "--addr", &addr], Duration::from_secs(20)).await;
    assert_eq!(gone.code, Some(1), "{}", gone.stderr);
    assert!(gone.stderr.contains("NOT_FOUND"), "{}", gone.stderr);
    let bad = run_jobwire(
        &["schedule", "set", "x", "--queue", QUEUE, "--type", "t", "--every", "0s", "--addr", &addr],
        Duration::from_secs(20),
    )
    .await;
    assert!(bad.stderr.contains("INVALID_ARGUMENT: schedule.every"), "{}", bad.stderr);
    server.assert_invariants(QUEUE).await;
}

/// A timestamp as epoch ms.
fn ms_of(t: &prost_types::Timestamp) -> i64 {
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

#[tokio::test]
async fn a_schedule_shows_its_next_five_due_times_and_none_while_paused() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = schedules(&server).await;
    // An interval that starts in an hour: its due times are the start and each minute after.
    let start = (now_ms() / 1000 + 3600) * 1000;
    let mut minutely = every_second("minutely");
    minutely.timing = Some(proto::schedule_definition::Timing::Every(secs(60)));
    minutely.start = Some(at(start));
    let stored = upsert(&mut client, minutely.clone()).await;
    let upcoming: Vec<i64> = stored.upcoming_fires.iter().map(ms_of).collect();
    assert_eq!(upcoming, (0..5).map(|k| start + k * 60_000).collect::<Vec<_>>());
    assert_eq!(stored.next_fire_at.as_ref().map(ms_of), Some(start), "the first is the next fire");
    // An end before the fourth: three are left.
    minutely.end = Some(at(start + 150_000));
    let upcoming: Vec<i64> = upsert(&mut client, minutely).await.upcoming_fires.iter().map(ms_of).collect();
    assert_eq!(upcoming, vec![start, start + 60_000, start + 120_000]);

    // A cron in a time zone: 02:30 in Berlin, each day (23, 24 or 25 hours apart over DST).
    let mut nightly = every_second("nightly");
    nightly.timing = Some(proto::schedule_definition::Timing::Cron("0 30 2 * * *".into()));
    nightly.time_zone = "Europe/Berlin".into();
    let stored = upsert(&mut client, nightly).await;
    let upcoming: Vec<i64> = stored.upcoming_fires.iter().map(ms_of).collect();
    assert_eq!(upcoming.len(), 5);
    assert_eq!(stored.next_fire_at.as_ref().map(ms_of), upcoming.first().copied());
    assert!(upcoming.iter().all(|&t| t > now_ms() && (t / 60_000) % 60 == 30), "{upcoming:?}");
    let hour = 3_600_000;
    assert!(upcoming.windows(2).all(|w| [23 * hour, 24 * hour, 25 * hour].contains(&(w[1] - w[0]))), "{upcoming:?}");

    // Paused: no next fire, none upcoming; resumed: back.
    let target = || proto::PauseScheduleRequest { queue: QUEUE.into(), name: "nightly".into() };
    client.pause_schedule(target()).await.expect("pause");
    let paused = get(&mut client, "nightly").await.expect("get");
    assert!(paused.next_fire_at.is_none() && paused.upcoming_fires.is_empty(), "{paused:?}");
    let resume = proto::ResumeScheduleRequest { queue: QUEUE.into(), name: "nightly".into() };
    client.resume_schedule(resume).await.expect("resume");
    let listed = client
        .list_schedules(proto::ListSchedulesRequest { queue: QUEUE.into(), ..Default::default() })
        .await
        .expect("list")
        .into_inner()
        .schedules;
    let nightly = listed.iter().find(|s| s.definition.as_ref().is_some_and(|d| d.name == "nightly")).expect("listed");
    assert_eq!(nightly.upcoming_fires.len(), 5, "ListSchedules carries them too");
}
