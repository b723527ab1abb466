//! A schedule's template keys and its refused count, through real jobwire processes: a
//! template's `rate_key` and `concurrency_key` go on every job it adds, which the key's limits
//! then hold like any added job's; a fire refused at the queue's cap of waiting jobs is counted
//! in GetSchedule's `refused` and in `jobwire schedule get`, a waiting job with a key counting
//! toward that cap as any waiting job does.

use std::time::Duration;

use jobwire::proto::{self, schedule_service_client::ScheduleServiceClient};

use crate::harness::{Redis, Server, ServerBuilder, Worker, eventually, run_jobwire};

const QUEUE: &str = "q";

fn every_second(name: &str, template: proto::JobTemplate) -> proto::ScheduleDefinition {
    proto::ScheduleDefinition {
        queue: QUEUE.into(),
        name: name.into(),
        template: Some(proto::JobTemplate { r#type: "tick".into(), ..template }),
        timing: Some(proto::schedule_definition::Timing::Every(prost_types::Duration { seconds: 1, nanos: 0 })),
        ..Default::default()
    }
}

async fn get(server: &Server, name: &str) -> proto::Schedule {
    let mut schedules = ScheduleServiceClient::new(server.channel().await);
    let request = proto::GetScheduleRequest { queue: QUEUE.into(), name: name.into() };
    schedules.get_schedule(request).await.expect("get").into_inner().schedule.expect("schedule")
}

/// `jobwire schedule ARGS --addr ADDR`, which must succeed; its stdout.
async fn cli(server: &Server, args: &[&str]) -> String {
    let addr = server.addr.to_string();
    let mut full = vec!["schedule"];
    full.extend(args);
    full.extend(["--addr", &addr]);
    let ran = run_jobwire(&full, Duration::from_secs(20)).await;
    assert_eq!(ran.code, Some(0), "{full:?}: {}", ran.stderr);
    ran.stdout
}

#[tokio::test]
async fn a_schedules_jobs_carry_its_keys_and_are_held_by_the_keys_limits() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let settings = proto::QueueSettings { key_concurrency: Some(1), ..Default::default() };
    let req = proto::SetQueueSettingsRequest { queue: QUEUE.into(), settings: Some(settings), clear: Vec::new() };
    client.set_queue_settings(req).await.expect("set settings");
    let set = ["set", "keyed", "--queue", QUEUE, "--type", "tick", "--every", "1s"];
    cli(&server, &[&set[..], &["--rate-key", "r1", "--concurrency-key", "c1"]].concat()).await;
    let got: serde_json::Value =
        serde_json::from_str(&cli(&server, &["get", "keyed", "--queue", QUEUE]).await).expect("json");
    assert_eq!((got["rate_key"].as_str(), got["concurrency_key"].as_str()), (Some("r1"), Some("c1")));
    let template = get(&server, "keyed").await.definition.expect("definition").template.expect("template");
    assert_eq!((template.rate_key.as_str(), template.concurrency_key.as_str()), ("r1", "c1"));

    let mut worker = Worker::open(&server, &[QUEUE], 5).await;
    let first = worker.next_job(Duration::from_secs(3)).await.expect("the first fire's job");
    eventually(Duration::from_secs(4), "a second fire held by its concurrency key", || async {
        let stats = server.stats(QUEUE).await;
        stats.held_by_key_concurrency >= 1 && stats.waiting_keys == 1
    })
    .await;
    worker.expect_nothing(Duration::from_millis(300)).await;
    worker.complete(&first, b"").await.expect("complete");
    let second = worker.next_job(Duration::from_secs(2)).await.expect("the key's next job once the slot is free");
    assert_ne!(second.id, first.id);
    worker.complete(&second, b"").await.expect("complete");
    server.assert_invariants(QUEUE).await;
}

#[tokio::test]
async fn fires_refused_at_the_cap_of_waiting_jobs_are_counted_in_get_and_the_cli() {
    let redis = Redis::start();
    let server = ServerBuilder::new(&redis).settings(|s| s.max_waiting = Some(1)).start().await;
    let mut schedules = ScheduleServiceClient::new(server.channel().await);
    let request = proto::UpsertScheduleRequest { schedule: Some(every_second("capped", Default::default())) };
    let created = schedules.upsert_schedule(request).await.expect("upsert").into_inner().schedule.expect("schedule");
    assert_eq!(created.refused, 0, "none refused before the first fire");
    eventually(Duration::from_secs(6), "two fires refused at the cap", || async {
        get(&server, "capped").await.refused >= 2
    })
    .await;
    let got: serde_json::Value =
        serde_json::from_str(&cli(&server, &["get", "capped", "--queue", QUEUE]).await).expect("json");
    assert!(got["refused"].as_u64().is_some_and(|n| n >= 2), "{got}");
    assert_eq!(got["fires"].as_u64(), Some(1), "the cap holds one job: {got}");
    server.assert_invariants(QUEUE).await;
}

#[tokio::test]
async fn a_keyed_job_waiting_counts_toward_the_cap_a_fire_meets() {
    // A job with a key waits among the keyed jobs, not in a ready list: the cap counts it too.
    let redis = Redis::start();
    let server = ServerBuilder::new(&redis).settings(|s| s.max_waiting = Some(1)).start().await;
    let mut schedules = ScheduleServiceClient::new(server.channel().await);
    let template = proto::JobTemplate { concurrency_key: "c1".into(), ..Default::default() };
    let request = proto::UpsertScheduleRequest { schedule: Some(every_second("keyed-capped", template)) };
    schedules.upsert_schedule(request).await.expect("upsert");
    eventually(Duration::from_secs(6), "two fires refused at the cap", || async {
        get(&server, "keyed-capped").await.refused >= 2
    })
    .await;
    let schedule = get(&server, "keyed-capped").await;
    assert_eq!(schedule.fires, 1, "the one keyed job waiting fills the cap: {schedule:?}");
    assert_eq!(server.stats(QUEUE).await.waiting, 1);
    server.assert_invariants(QUEUE).await;
}
