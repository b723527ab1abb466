//! Queue settings at run time (SetQueueSettings, GetQueueSettings, `jobwire queue`): stored with
//! the queue, applied by every instance, falling back to the flags, invalid values refused.

use std::time::{Duration, Instant};

use jobwire::proto;
use jobwire::store::{Kind, Outcome};
use tonic::Code;

use crate::{
    harness::{
        Client, Redis, Server, ServerBuilder, Worker, add, eventually, info, job, millis, run_jobwire, unique_prefix,
    },
    metrics::Scrape,
};

const LIMIT: Duration = Duration::from_secs(20);

async fn set(client: &mut Client, settings: proto::QueueSettings, clear: &[&str]) -> proto::SetQueueSettingsResponse {
    let req = proto::SetQueueSettingsRequest {
        queue: "q".into(),
        settings: Some(settings),
        clear: clear.iter().map(|s| (*s).to_owned()).collect(),
    };
    client.set_queue_settings(req).await.expect("set settings").into_inner()
}

async fn get(client: &mut Client) -> proto::GetQueueSettingsResponse {
    client.get_queue_settings(proto::GetQueueSettingsRequest { queue: "q".into() }).await.expect("get").into_inner()
}

#[tokio::test]
async fn settings_override_the_flags_until_cleared() {
    let redis = Redis::start();
    let server =
        ServerBuilder::new(&redis).settings(|s| s.max_waiting = Some(100)).retention(|r| r.dead_max = 50).start().await;
    let mut client = server.client().await;
    let before = get(&mut client).await;
    assert_eq!(before.settings, Some(proto::QueueSettings::default()), "nothing set");
    let effective = before.effective.expect("effective");
    assert_eq!((effective.max_waiting, effective.max_attempts, effective.dead_max), (Some(100), Some(3), Some(50)));

    let answer = set(
        &mut client,
        proto::QueueSettings {
            max_waiting: Some(2),
            max_attempts: Some(5),
            timeout: Some(millis(1_500)),
            ..Default::default()
        },
        &[],
    )
    .await;
    let effective = answer.effective.expect("effective");
    assert_eq!((effective.max_waiting, effective.max_attempts, effective.dead_max), (Some(2), Some(5), Some(50)));
    assert_eq!(get(&mut client).await.settings, answer.settings, "Get answers what Set stored");

    let first = add(&mut client, job("q", "t", b"1")).await;
    let own = proto::AddJobRequest { max_attempts: Some(9), ..job("q", "t", b"2") };
    let second = add(&mut client, own).await;
    let refused = client.add_job(job("q", "t", b"3")).await.expect_err("past the queue's own cap");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("(2 waiting)"), "{}", refused.message());
    assert_eq!(info(&mut client, &first).await.max_attempts, 5, "the queue's default");
    assert_eq!(info(&mut client, &second).await.max_attempts, 9, "a job's own value wins");

    set(&mut client, proto::QueueSettings::default(), &["max_waiting"]).await;
    add(&mut client, job("q", "t", b"3")).await;
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let delivered = worker.job().await;
    let deadline = std::time::SystemTime::try_from(delivered.deadline.expect("deadline")).expect("a time");
    let left = deadline.duration_since(std::time::SystemTime::now()).unwrap_or_default();
    assert!(
        left <= Duration::from_millis(1_500) && left > Duration::from_millis(500),
        "the queue's default timeout: {left:?}"
    );
    worker.complete(&delivered, b"").await.expect("complete");
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn invalid_settings_are_refused_naming_the_field() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let cases: [(proto::QueueSettings, &[&str], &str); 5] = [
        (proto::QueueSettings { max_attempts: Some(0), ..Default::default() }, &[], "settings.max_attempts"),
        (proto::QueueSettings { max_waiting: Some(0), ..Default::default() }, &[], "settings.max_waiting"),
        (proto::QueueSettings { timeout: Some(millis(1)), ..Default::default() }, &[], "settings.timeout"),
        (
            proto::QueueSettings {
                backoff: Some(proto::Backoff { factor: Some(500.0), ..Default::default() }),
                ..Default::default()
            },
            &[],
            "settings.backoff.factor",
        ),
        (proto::QueueSettings { dead_max: Some(3), ..Default::default() }, &["dead_max"], "clear"),
    ];
    for (settings, clear, field) in cases {
        let req = proto::SetQueueSettingsRequest {
            queue: "q".into(),
            settings: Some(settings),
            clear: clear.iter().map(|s| (*s).to_owned()).collect(),
        };
        let refused = client.set_queue_settings(req).await.expect_err("invalid");
        assert_eq!(refused.code(), Code::InvalidArgument, "{field}");
        assert!(refused.message().starts_with(field), "{field}: {}", refused.message());
    }
    let unknown = proto::SetQueueSettingsRequest { queue: "q".into(), settings: None, clear: vec!["speed".into()] };
    let refused = client.set_queue_settings(unknown).await.expect_err("an unknown name");
    assert!(refused.message().starts_with("clear"), "{}", refused.message());
    assert_eq!(get(&mut client).await.settings, Some(proto::QueueSettings::default()), "nothing was written");
}

#[tokio::test]
async fn a_change_on_one_instance_holds_on_another_within_a_second() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let one = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let other = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let (mut a, mut b) = (one.client().await, other.client().await);
    // The other instance has read the queue's settings (none) before the change.
    let before = add(&mut b, job("q", "t", b"")).await;
    assert_eq!(info(&mut b, &before).await.max_attempts, 3);

    set(&mut a, proto::QueueSettings { max_attempts: Some(7), max_waiting: Some(1), ..Default::default() }, &[]).await;
    let changed = Instant::now();
    let refused = b.add_job(job("q", "t", b"")).await.expect_err("the cap holds at once: Redis enforces it");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    set(&mut a, proto::QueueSettings::default(), &["max_waiting"]).await;
    loop {
        let id = add(&mut b, job("q", "t", b"")).await;
        if info(&mut b, &id).await.max_attempts == 7 {
            break;
        }
        assert!(changed.elapsed() < Duration::from_secs(1), "the other instance took the default within a second");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    one.assert_invariants("q").await;
}

#[tokio::test]
async fn queue_set_and_get_from_the_command_line() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let addr = server.addr.to_string();
    let ran = run_jobwire(
        &[
            "queue",
            "set",
            "q",
            "--addr",
            &addr,
            "--max-waiting",
            "5",
            "--backoff",
            "fixed:2s",
            "--dead-max",
            "9",
            "--shards",
            "2",
        ],
        LIMIT,
    )
    .await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stdout.contains("max_waiting"), "a table: {}", ran.stdout);
    let ran = run_jobwire(&["queue", "get", "q", "--addr", &addr, "--json"], LIMIT).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let printed: serde_json::Value = serde_json::from_str(&ran.stdout).expect("json");
    assert_eq!(printed["settings"]["max_waiting"], "5");
    assert_eq!(printed["settings"]["backoff"], "fixed:2s");
    assert_eq!(printed["settings"]["dead_max"], "9");
    assert_eq!(printed["settings"]["shards"], "2");
    assert_eq!(printed["effective"]["max_attempts"], "3", "the default where none is set");
    let ran = run_jobwire(&["queue", "get", "q", "--addr", &addr], LIMIT).await;
    assert!(ran.stdout.lines().any(|l| l.starts_with("shards") && l.contains('2')), "the table: {}", ran.stdout);

    let ran = run_jobwire(&["queue", "set", "q", "--addr", &addr, "--clear", "dead_max", "--json"], LIMIT).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let printed: serde_json::Value = serde_json::from_str(&ran.stdout).expect("json");
    assert!(printed["settings"].get("dead_max").is_none(), "{printed}");
    let ran = run_jobwire(&["queue", "set", "q", "--addr", &addr, "--attempts", "0"], LIMIT).await;
    assert_ne!(ran.code, Some(0));
    assert!(ran.stderr.contains("settings.max_attempts"), "{}", ran.stderr);
}

/// The next job either worker receives within `limit`, with the worker's number (0 or 1).
async fn next_of(workers: &mut [Worker; 2], limit: Duration) -> Option<(usize, proto::Job)> {
    let [a, b] = workers;
    tokio::select! {
        job = a.next_job(limit) => job.map(|j| (0, j)),
        job = b.next_job(limit) => job.map(|j| (1, j)),
    }
}

#[tokio::test]
async fn the_concurrency_cap_holds_across_instances_and_a_freed_slot_wakes_the_dispatchers() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    // No safety poll within the test: a job that moves does so because a wake-up said so.
    let slow_poll = |s: &mut jobwire::queue::Settings| s.safety_poll = Duration::from_secs(60);
    let one = ServerBuilder::new(&redis).prefix(&prefix).settings(slow_poll).start().await;
    let other = ServerBuilder::new(&redis).prefix(&prefix).settings(slow_poll).start().await;
    let mut client = one.client().await;
    let answer = set(&mut client, proto::QueueSettings { concurrency: Some(2), ..Default::default() }, &[]).await;
    assert_eq!(answer.effective.and_then(|e| e.concurrency), Some(2));
    for i in 0..6 {
        add(&mut client, job("q", "t", format!("{i}").as_bytes())).await;
    }
    let mut workers = [Worker::open(&one, &["q"], 5).await, Worker::open(&other, &["q"], 5).await];
    let mut held: Vec<(usize, proto::Job)> = Vec::new();
    for _ in 0..2 {
        held.push(next_of(&mut workers, LIMIT).await.expect("a job under the cap"));
    }
    assert!(next_of(&mut workers, Duration::from_millis(300)).await.is_none(), "nothing past the cap");
    let stats = one.stats("q").await;
    assert_eq!((stats.active, stats.waiting), (2, 4));
    assert_eq!(
        (stats.concurrency_limit, stats.held_by_concurrency),
        (Some(2), 4),
        "Stats says what the cap holds back"
    );

    // A completion frees its slot: the next job goes out at once, to whichever stream.
    let (w, done) = held.remove(0);
    workers[w].complete(&done, b"").await.expect("complete");
    held.push(next_of(&mut workers, Duration::from_secs(2)).await.expect("a slot freed by a completion"));
    // So does a failure that ends the job.
    let (w, failed) = held.remove(0);
    workers[w].fail(&failed, "no", false).await;
    held.push(next_of(&mut workers, Duration::from_secs(2)).await.expect("a slot freed by a failure"));
    assert!(next_of(&mut workers, Duration::from_millis(300)).await.is_none(), "still at the cap");
    assert_eq!(one.stats("q").await.active, 2);

    // A stream that ends gives its jobs back: the other stream gets them, still two at a time.
    let (lost, _) = held[0];
    let [first, second] = workers;
    let mut survivor = if lost == 0 {
        drop(first);
        second
    } else {
        drop(second);
        first
    };
    let kept = held.iter().filter(|(w, _)| *w != lost).count();
    for _ in kept..2 {
        survivor.next_job(Duration::from_secs(2)).await.expect("a slot freed by a lost stream");
    }
    survivor.expect_nothing(Duration::from_millis(300)).await;
    assert_eq!(one.stats("q").await.active, 2);
    one.assert_invariants("q").await;
}

#[tokio::test]
async fn the_metrics_show_the_cap_and_the_jobs_it_holds_back() {
    let redis = Redis::start();
    let server = ServerBuilder::new(&redis).metrics(Duration::from_millis(100)).start().await;
    let addr = server.metrics_addr.expect("metrics are served");
    let mut client = server.client().await;
    set(&mut client, proto::QueueSettings { concurrency: Some(1), ..Default::default() }, &[]).await;
    for _ in 0..3 {
        add(&mut client, job("q", "t", b"")).await;
    }
    let mut worker = Worker::open(&server, &["q"], 3).await;
    worker.job().await;
    eventually(LIMIT, "the gauges of the cap", || async {
        let scrape = Scrape::take(addr).await;
        scrape.labelled("jobwire_queue_concurrency_limit", &[("queue", "q")]) == 1.0
            && scrape.labelled("jobwire_queue_held", &[("queue", "q"), ("reason", "concurrency")]) == 2.0
    })
    .await;
}

#[tokio::test]
async fn the_metrics_show_the_jobs_rate_limits_and_key_caps_hold_back() {
    let redis = Redis::start();
    let server = ServerBuilder::new(&redis).metrics(Duration::from_millis(100)).start().await;
    let addr = server.metrics_addr.expect("metrics are served");
    let mut client = server.client().await;
    let slow = proto::RateLimit { count: 1, period: Some(millis(60_000)), burst: 1 };
    set(
        &mut client,
        proto::QueueSettings { key_rate: Some(slow), key_concurrency: Some(1), ..Default::default() },
        &[],
    )
    .await;
    for _ in 0..3 {
        add(&mut client, proto::AddJobRequest { rate_key: "r".into(), ..job("q", "t", b"") }).await;
        add(&mut client, proto::AddJobRequest { concurrency_key: "c".into(), ..job("q", "t", b"") }).await;
    }
    let mut worker = Worker::open(&server, &["q"], 10).await;
    worker.job().await;
    worker.job().await;
    eventually(LIMIT, "the gauges of the limits", || async {
        let scrape = Scrape::take(addr).await;
        scrape.labelled("jobwire_queue_held", &[("queue", "q"), ("reason", "rate")]) == 2.0
            && scrape.labelled("jobwire_queue_held", &[("queue", "q"), ("reason", "key_concurrency")]) == 2.0
    })
    .await;
}

#[tokio::test]
async fn the_doctor_removes_a_setting_that_does_not_read_unless_it_changed_since() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let server = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let mut client = server.client().await;
    add(&mut client, job("q", "t", b"")).await;
    let mut conn =
        redis::Client::open(redis.url()).expect("url").get_multiplexed_async_connection().await.expect("conn");
    let key = format!("{prefix}:{{q}}:settings");
    let _: () = redis::AsyncCommands::hset_multiple(
        &mut conn,
        &key,
        &[("max_waiting", "-5"), ("backoff", "fast"), ("dead_max", "7")],
    )
    .await
    .expect("hset");
    let report = server.store.doctor().examine(None).await.expect("doctor");
    let mut found: Vec<_> = report.findings.iter().map(|f| (f.kind, f.queue.as_deref(), f.subject.as_str())).collect();
    found.sort();
    assert_eq!(
        found,
        vec![(Kind::BadSetting, Some("q"), "setting backoff"), (Kind::BadSetting, Some("q"), "setting max_waiting"),],
        "a negative cap and an unreadable backoff, not the good dead_max"
    );
    let outcomes = server.store.doctor().repair(&report.findings).await.expect("repair");
    assert_eq!(outcomes, vec![Outcome::Repaired, Outcome::Repaired]);
    let left: std::collections::HashMap<String, String> =
        redis::AsyncCommands::hgetall(&mut conn, &key).await.expect("hgetall");
    assert_eq!(left, std::collections::HashMap::from([("dead_max".to_owned(), "7".to_owned())]));
    assert!(server.store.doctor().examine(None).await.expect("doctor").findings.is_empty(), "a second run is clean");
    // A value changed between the check and the repair is not the one the doctor read: left.
    let _: () = redis::AsyncCommands::hset(&mut conn, &key, "max_waiting", "-5").await.expect("hset");
    let report = server.store.doctor().examine(None).await.expect("doctor");
    let _: () = redis::AsyncCommands::hset(&mut conn, &key, "max_waiting", "x").await.expect("hset");
    assert_eq!(server.store.doctor().repair(&report.findings).await.expect("repair"), vec![Outcome::AlreadyRight]);
    let still: Option<String> = redis::AsyncCommands::hget(&mut conn, &key, "max_waiting").await.expect("hget");
    assert_eq!(still.as_deref(), Some("x"));
}
