//! Sharded queues (`shards` setting, `src/queue/shards.rs`): the count set once, adds spread
//! round robin or by key, one stream on the queue served from every shard, each job once
//! through two instances, order per key and FIFO within a shard; every shard ends with the
//! invariant check. `flows` runs on one Redis here and on the cluster in
//! `redis_cluster/sharded.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jobwire::proto::{self, session_service_client::SessionServiceClient};
use tonic::Code;

use crate::harness::{Client, Redis, Server, ServerBuilder, Worker, add, job, unique_prefix};

/// The queue's shard count in a settings request.
fn shards(queue: &str, count: u32) -> proto::SetQueueSettingsRequest {
    proto::SetQueueSettingsRequest {
        queue: queue.into(),
        settings: Some(proto::QueueSettings { shards: Some(count), ..Default::default() }),
        clear: Vec::new(),
    }
}

/// The physical queue a job id names (`q~7` of `q~7/01J...`).
pub fn shard_of(id: &str) -> String {
    id.rsplit_once('/').map(|(q, _)| q.to_owned()).expect("a job id")
}

/// Receives `count` jobs on `worker`, completing each through `acks`; returns them in order.
async fn drain(worker: &mut Worker, acks: &mut Client, count: usize) -> Vec<proto::Job> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        let delivered = worker.job().await;
        complete(acks, &delivered).await;
        got.push(delivered);
    }
    got
}

/// The flows of a queue with 3 shards through instances `a` and `b`; returns its shards.
pub async fn flows(a: &Server, b: &Server, queue: &str) -> Vec<String> {
    let mut via_a = a.client().await;
    let mut via_b = b.client().await;
    let set = via_a.set_queue_settings(shards(queue, 3)).await.expect("shards set").into_inner();
    assert_eq!(set.effective.and_then(|e| e.shards), Some(3));
    let again = via_b.set_queue_settings(shards(queue, 4)).await.expect_err("the count is set once");
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    let rate = proto::QueueSettings {
        rate: Some(proto::RateLimit { count: 10, period: None, burst: 0 }),
        ..Default::default()
    };
    let req = proto::SetQueueSettingsRequest { queue: queue.into(), settings: Some(rate), clear: Vec::new() };
    let refused = via_a.set_queue_settings(req).await.expect_err("no queue-wide rate on a sharded queue");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().starts_with("settings.rate"), "{}", refused.message());

    // Opened before any add: the stream serves every shard from the start.
    let mut worker = Worker::open(b, &[queue], 4).await;

    // Without a key: round robin over the three shards.
    let mut plain = Vec::new();
    for i in 0..12 {
        plain.push(add(&mut via_a, job(queue, "plain", format!("{i}").as_bytes())).await);
    }
    let mut per_shard: BTreeMap<String, usize> = BTreeMap::new();
    for id in &plain {
        *per_shard.entry(shard_of(id)).or_default() += 1;
    }
    assert_eq!(per_shard.len(), 3, "spread over three shards: {per_shard:?}");
    assert!(per_shard.values().all(|n| *n == 4), "round robin: {per_shard:?}");
    let names: Vec<String> = per_shard.keys().cloned().collect();
    assert!(names.iter().any(|n| n == queue), "shard 0 is the queue itself: {names:?}");

    // By key, in one batch: each key's jobs in one shard.
    let keyed: Vec<proto::AddJobRequest> = (0..30)
        .map(|i| proto::AddJobRequest {
            concurrency_key: format!("k{}", i % 5),
            ..job(queue, "keyed", format!("k{}-{i}", i % 5).as_bytes())
        })
        .collect();
    let batch = via_b.add_jobs(proto::AddJobsRequest { jobs: keyed }).await.expect("add_jobs").into_inner();
    let mut shard_of_key: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (i, result) in batch.results.iter().enumerate() {
        assert_eq!(result.code, 0, "entry {i}: {}", result.message);
        let id = result.job_id.clone();
        shard_of_key.entry(format!("k{}", i % 5)).or_default().insert(shard_of(&id));
    }
    assert!(shard_of_key.values().all(|s| s.len() == 1), "one key, one shard: {shard_of_key:?}");

    // An idempotency key picks one shard, so a retry through the other instance is recognised.
    let keyed_add = || proto::AddJobRequest { idempotency_key: "order-1".into(), ..job(queue, "once", b"order-1") };
    let first = via_a.add_job(keyed_add()).await.expect("add").into_inner();
    let retry = via_b.add_job(keyed_add()).await.expect("retry").into_inner();
    assert_eq!((retry.job_id.as_str(), retry.duplicate), (first.job_id.as_str(), true));

    // One stream on B gets every job once, from every shard; acks go through A.
    let got = drain(&mut worker, &mut via_a, 12 + 30 + 1).await;
    let ids: BTreeSet<&str> = got.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids.len(), got.len(), "each job once");
    assert!(plain.iter().all(|id| ids.contains(id.as_str())) && ids.contains(first.job_id.as_str()));
    let mut last: HashMap<String, i64> = HashMap::new();
    for delivered in &got {
        let payload = String::from_utf8_lossy(&delivered.payload).into_owned();
        // Plain jobs by shard (FIFO within a shard), keyed jobs by key (their order).
        let (lane, seq) = match payload.split_once('-') {
            Some((key, seq)) => (key.to_owned(), seq.parse::<i64>().expect("a number")),
            None if delivered.r#type == "plain" => (shard_of(&delivered.id), payload.parse().expect("a number")),
            None => continue,
        };
        let before = last.insert(lane.clone(), seq);
        assert!(before.is_none_or(|b| b < seq), "{lane}: {seq} after {before:?}");
    }

    // Two streams, one on each instance: each job once; SubscribeQueues follows every shard.
    let mut feed = via_b
        .subscribe_queues(proto::SubscribeQueuesRequest { queues: vec![queue.into()] })
        .await
        .expect("subscribe_queues")
        .into_inner();
    let mut on_a = Worker::open(a, &[queue], 2).await;
    let more: Vec<proto::AddJobRequest> = (0..40).map(|i| job(queue, "more", format!("{i}").as_bytes())).collect();
    via_a.add_jobs(proto::AddJobsRequest { jobs: more }).await.expect("add_jobs");
    let mut seen = BTreeSet::new();
    let (mut acks_a, mut acks_b) = (a.client().await, b.client().await);
    while seen.len() < 40 {
        let delivered = tokio::select! {
            j = on_a.job() => { complete(&mut acks_b, &j).await; j }
            j = worker.job() => { complete(&mut acks_a, &j).await; j }
        };
        assert!(seen.insert(delivered.id.clone()), "{} delivered twice", delivered.id);
    }
    let mut heard = BTreeSet::new();
    while heard.len() < 3 {
        let message = feed.message().await.expect("the feed goes on").expect("an event");
        assert_eq!(message.queue, queue, "the queue's name, not its shard's");
        heard.insert(shard_of(&message.event.expect("an event").job_id));
    }
    drop(on_a);
    sessions_live_in_one_shard(a, &mut via_a, &mut worker, queue, &names).await;
    reads_and_actions_cover_every_shard(a, &mut via_a, &mut worker, queue, 12 + 30 + 1 + 40 + 18).await;
    for shard in &names {
        a.assert_invariants(shard).await;
    }
    names
}

/// Sessions of a sharded queue each live in the shard their name picks (their id names it);
/// their jobs go there and start in their order.
async fn sessions_live_in_one_shard(
    server: &Server,
    client: &mut Client,
    worker: &mut Worker,
    queue: &str,
    names: &[String],
) {
    let mut sessions = SessionServiceClient::new(server.channel().await);
    let mut homes = BTreeSet::new();
    for name in ["s1", "s2", "s3", "s4", "s5", "s6"] {
        let session = sessions
            .create_session(proto::CreateSessionRequest {
                queue: queue.into(),
                name: name.into(),
                state: "{}".into(),
                ttl: None,
                max_concurrency: Some(1),
            })
            .await
            .expect("create session")
            .into_inner()
            .session
            .expect("session");
        let home = shard_of(&session.id);
        assert!(names.contains(&home), "{} is in a shard of {queue}", session.id);
        homes.insert(home.clone());
        let mut ids = Vec::new();
        for i in 0..3 {
            let req = proto::AddJobRequest {
                session_id: session.id.clone(),
                ..job(queue, "session", i.to_string().as_bytes())
            };
            let id = add(client, req).await;
            assert_eq!(shard_of(&id), home, "a session's job goes to its shard");
            ids.push(id);
        }
        let order: Vec<String> = drain(worker, client, 3).await.into_iter().map(|j| j.id).collect();
        assert_eq!(order, ids, "the session's jobs in their order");
    }
    assert!(homes.len() > 1, "sessions spread over the shards: {homes:?}");
    let (mut listed, mut token) = (BTreeSet::new(), String::new());
    loop {
        let page = sessions
            .list_sessions(proto::ListSessionsRequest { queue: queue.into(), page_size: 2, page_token: token })
            .await
            .expect("list_sessions")
            .into_inner();
        listed.extend(page.sessions.into_iter().map(|s| s.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(listed.len(), 6, "every shard's sessions listed: {listed:?}");
}

/// Stats, ListQueues and ListJobs of the queue sum or list its shards; pause and resume reach
/// every shard. `completed` jobs went through it, and `worker` serves it.
async fn reads_and_actions_cover_every_shard(
    server: &Server,
    client: &mut Client,
    worker: &mut Worker,
    queue: &str,
    completed: u64,
) {
    let stats = server.stats(queue).await;
    assert_eq!((stats.completed, stats.waiting, stats.active), (completed, 0, 0), "{stats:?}");
    let listed = client.list_queues(proto::ListQueuesRequest {}).await.expect("list_queues").into_inner().queues;
    let ours: Vec<&proto::QueueStats> = listed.iter().filter(|q| q.queue.starts_with(queue)).collect();
    assert_eq!(ours.len(), 1, "one queue, not its shards: {ours:?}");
    assert_eq!(ours[0].completed, completed);

    let mut ids = BTreeSet::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_jobs(proto::ListJobsRequest {
                queue: queue.into(),
                state: proto::JobState::Completed.into(),
                page_size: 25,
                page_token: token.clone(),
                filter: None,
            })
            .await
            .expect("list_jobs")
            .into_inner();
        ids.extend(page.jobs.into_iter().map(|j| j.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(u64::try_from(ids.len()).expect("fits"), completed, "every shard listed");

    // Paused, every shard gathers jobs of three priorities; resumed, each shard hands its own
    // out highest priority first, FIFO within a priority (not across shards).
    client.pause_queue(proto::PauseQueueRequest { queue: queue.into() }).await.expect("pause");
    for i in 0..18 {
        let priority = i % 3 - 1;
        add(client, proto::AddJobRequest { priority, ..job(queue, "paused", format!("{i}").as_bytes()) }).await;
    }
    assert!(server.stats(queue).await.paused);
    worker.expect_nothing(std::time::Duration::from_millis(300)).await;
    client.resume_queue(proto::ResumeQueueRequest { queue: queue.into() }).await.expect("resume");
    let mut last: HashMap<String, (i32, i32)> = HashMap::new();
    for delivered in drain(worker, client, 18).await {
        assert_eq!(delivered.r#type, "paused");
        let seq: i32 = String::from_utf8_lossy(&delivered.payload).parse().expect("a number");
        let place = (-delivered.priority, seq);
        let shard = shard_of(&delivered.id);
        let before = last.insert(shard.clone(), place);
        assert!(before.is_none_or(|b| b < place), "{shard}: {place:?} after {before:?}");
    }
}

async fn complete(client: &mut Client, delivered: &proto::Job) {
    client
        .complete_job(proto::CompleteJobRequest {
            job_id: delivered.id.clone(),
            lease_token: delivered.lease_token.clone(),
            ..Default::default()
        })
        .await
        .expect("complete");
}

#[tokio::test]
async fn a_sharded_queue_spreads_adds_and_serves_every_shard_on_one_redis() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let a = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let b = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let names = flows(&a, &b, "orders").await;
    assert_eq!(names.len(), 3);

    // A queue whose jobs all went to shards other than 0 still lists, once, by its name.
    let mut client = a.client().await;
    client.set_queue_settings(shards("elsewhere", 2)).await.expect("shards set");
    let mut added = None;
    for i in 0..50 {
        let req = proto::AddJobRequest { concurrency_key: format!("key{i}"), ..job("elsewhere", "t", b"") };
        let id = add(&mut client, req).await;
        if shard_of(&id) != "elsewhere" {
            added = Some(id);
            break;
        }
    }
    let id = added.expect("a key of shard 1 among 50");
    let listed = client.list_queues(proto::ListQueuesRequest {}).await.expect("list_queues").into_inner().queues;
    let ours: Vec<&str> = listed.iter().map(|q| q.queue.as_str()).filter(|q| q.starts_with("elsewhere")).collect();
    assert_eq!(ours, ["elsewhere"], "the queue, not its shard");
    a.assert_invariants(&shard_of(&id)).await;
}

/// The next event of a Subscribe stream, within 5 s.
async fn next_event(feed: &mut tonic::Streaming<proto::SubscribeResponse>) -> proto::JobEvent {
    let message = tokio::time::timeout(std::time::Duration::from_secs(5), feed.message()).await;
    message.expect("an event within 5 s").expect("the stream goes on").expect("an event").event.expect("an event")
}

/// A Subscribe of the queue, from `cursor` ("" for now).
async fn subscribe(client: &mut Client, queue: &str, cursor: &str) -> tonic::Streaming<proto::SubscribeResponse> {
    let req = proto::SubscribeRequest { queue: queue.into(), cursor: cursor.into() };
    client.subscribe(req).await.expect("subscribe").into_inner()
}

#[tokio::test]
async fn subscribe_covers_every_shard_and_resumes_per_shard() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let a = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let b = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    events_of_every_shard(&a, &b, "feed").await;
}

/// Subscribe on a queue with 3 shards through `a`, resumed through `b` mid-stream: every
/// shard's events, in order within each, with no gap and no repeat; returns the shards heard.
pub async fn events_of_every_shard(a: &Server, b: &Server, queue: &str) -> BTreeSet<String> {
    let mut client = a.client().await;
    client.set_queue_settings(shards(queue, 3)).await.expect("shards set");

    let mut feed = subscribe(&mut client, queue, "").await;
    let mut added = Vec::new();
    for i in 0..9 {
        added.push(add(&mut client, job(queue, "t", format!("{i}").as_bytes())).await);
    }
    let mut first = Vec::new();
    for _ in 0..9 {
        first.push(next_event(&mut feed).await);
    }
    drop(feed);
    let heard: BTreeSet<&str> = first.iter().map(|e| e.job_id.as_str()).collect();
    assert_eq!(heard, added.iter().map(String::as_str).collect(), "every shard's events, once each");
    let shards_heard: BTreeSet<String> = first.iter().map(|e| shard_of(&e.job_id)).collect();
    assert_eq!(shards_heard.len(), 3, "{shards_heard:?}");
    // Within a shard, in the order of its transitions.
    for shard in &shards_heard {
        let in_shard: Vec<&str> = first.iter().map(|e| e.job_id.as_str()).filter(|id| shard_of(id) == *shard).collect();
        let added_there: Vec<&str> = added.iter().map(String::as_str).filter(|id| shard_of(id) == *shard).collect();
        assert_eq!(in_shard, added_there, "{shard} in order");
    }
    let cursor = first[3].cursor.clone();
    assert_eq!(cursor.split(',').count(), 3, "one position per shard: {cursor}");

    // Resumed through the other instance after the fourth event, with more events meanwhile:
    // everything after it in every shard, nothing before it.
    let mut more = Vec::new();
    for i in 0..6 {
        more.push(add(&mut client, job(queue, "t", format!("more {i}").as_bytes())).await);
    }
    let mut via_b = b.client().await;
    let mut resumed = subscribe(&mut via_b, queue, &cursor).await;
    let mut second = BTreeSet::new();
    for _ in 0..(5 + 6) {
        assert!(second.insert(next_event(&mut resumed).await.job_id), "no event twice");
    }
    let expected: BTreeSet<String> = first[4..].iter().map(|e| e.job_id.clone()).chain(more).collect();
    assert_eq!(second, expected, "no gap, no duplicate in any shard");
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(300), resumed.message()).await;
    assert!(quiet.is_err(), "nothing more: {quiet:?}");

    // One position stands for that point in every shard: from the start, every kept event.
    let mut replayed = subscribe(&mut via_b, queue, "0-0").await;
    let mut all = BTreeSet::new();
    for _ in 0..(9 + 6) {
        assert!(all.insert(next_event(&mut replayed).await.job_id), "no event twice");
    }
    assert_eq!(all.len(), 15, "every shard's events from the start");
    // Another number of positions than shards does not resume it; an unsharded queue's cursor
    // is one position, as it always was.
    let refused = via_b
        .subscribe(proto::SubscribeRequest { queue: queue.into(), cursor: "1-0,1-0".into() })
        .await
        .expect_err("a cursor of two positions");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let plain_queue = format!("{queue}-plain");
    let mut plain = subscribe(&mut client, &plain_queue, "").await;
    add(&mut client, job(&plain_queue, "t", b"")).await;
    let event = next_event(&mut plain).await;
    assert!(!event.cursor.contains(','), "{}", event.cursor);
    shards_heard
}

#[tokio::test]
async fn dead_job_groups_and_bulk_queries_cover_every_shard() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let server = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let mut client = server.client().await;
    client.set_queue_settings(shards("bulk", 3)).await.expect("shards set");
    let mut homes = BTreeSet::new();
    for i in 0..12 {
        let req = proto::AddJobRequest { max_attempts: Some(1), ..job("bulk", "t", format!("{i}").as_bytes()) };
        homes.insert(shard_of(&add(&mut client, req).await));
    }
    assert_eq!(homes.len(), 3, "{homes:?}");
    let mut worker = Worker::open(&server, &["bulk"], 4).await;
    for _ in 0..12 {
        let delivered = worker.job().await;
        let seq: u32 = String::from_utf8_lossy(&delivered.payload).parse().expect("a number");
        let error = if seq.is_multiple_of(3) { format!("timeout after {seq} s") } else { format!("bad input {seq}") };
        worker.fail(&delivered, &error, false).await;
    }
    drop(worker);
    assert_eq!(server.stats("bulk").await.dead, 12);

    let groups = client
        .list_dead_job_groups(proto::ListDeadJobGroupsRequest { queue: "bulk".into() })
        .await
        .expect("list_dead_job_groups")
        .into_inner();
    let counts: BTreeMap<&str, u64> = groups.groups.iter().map(|g| (g.group.as_str(), g.count)).collect();
    assert_eq!(counts, BTreeMap::from([("bad input #", 8), ("timeout after # s", 4)]), "{groups:?}");
    assert_eq!((groups.examined, groups.complete), (12, true));

    let query = |group: &str| proto::JobSelection {
        selection: Some(proto::job_selection::Selection::Query(proto::JobQuery {
            queue: "bulk".into(),
            state: proto::JobState::Dead.into(),
            filter: Some(proto::JobFilter { error_group: group.into(), ..Default::default() }),
        })),
    };
    let retried = client
        .retry_jobs(proto::RetryJobsRequest { selection: Some(query("timeout after # s")) })
        .await
        .expect("retry_jobs")
        .into_inner()
        .outcome
        .expect("an outcome");
    assert_eq!((retried.applied, retried.skipped, retried.more), (4, 0, false));
    let everything = proto::JobSelection {
        selection: Some(proto::job_selection::Selection::Query(proto::JobQuery {
            queue: "bulk".into(),
            state: proto::JobState::Dead.into(),
            filter: None,
        })),
    };
    let deleted = client
        .delete_jobs(proto::DeleteJobsRequest { selection: Some(everything) })
        .await
        .expect("delete_jobs")
        .into_inner()
        .outcome
        .expect("an outcome");
    assert_eq!((deleted.applied, deleted.more), (8, false));
    let stats = server.stats("bulk").await;
    assert_eq!((stats.dead, stats.waiting), (0, 4), "{stats:?}");
    for shard in &homes {
        server.assert_invariants(shard).await;
    }
}

#[tokio::test]
async fn schedules_live_in_the_shard_of_their_jobs_and_fire_once_per_due_time() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let a = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let b = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    schedules_in_their_shards(&a, &b, "cron").await;
}

/// Eight schedules of a queue with 3 shards (one keyed), made through `a` and `b`: each in the
/// shard its key or name picks, firing once per due time through both instances, found by
/// every call by name and listed across shards; returns the shards they live in.
pub async fn schedules_in_their_shards(a: &Server, b: &Server, queue: &str) -> BTreeSet<String> {
    use jobwire::proto::schedule_service_client::ScheduleServiceClient;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    let mut client = a.client().await;
    client.set_queue_settings(shards(queue, 3)).await.expect("shards set");
    let (mut via_a, mut via_b) =
        (ScheduleServiceClient::new(a.channel().await), ScheduleServiceClient::new(b.channel().await));

    let now_ms =
        i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis()).expect("fits");
    let t0 = (now_ms / 1000 + 2) * 1000;
    let at = |ms: i64| prost_types::Timestamp { seconds: ms / 1000, nanos: 0 };
    let definition = |name: &str, key: &str| proto::ScheduleDefinition {
        queue: queue.into(),
        name: name.into(),
        template: Some(proto::JobTemplate { r#type: "tick".into(), concurrency_key: key.into(), ..Default::default() }),
        timing: Some(proto::schedule_definition::Timing::Every(prost_types::Duration { seconds: 1, nanos: 0 })),
        start: Some(at(t0)),
        end: Some(at(t0 + 3_000)),
        ..Default::default()
    };
    let names: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        let key = if i == 0 { "tenant-1" } else { "" };
        let schedules = if i % 2 == 0 { &mut via_a } else { &mut via_b };
        let req = proto::UpsertScheduleRequest { schedule: Some(definition(name, key)) };
        schedules.upsert_schedule(req).await.expect("upsert");
    }
    // The keyed schedule's jobs go where an add with its key goes.
    let keyed_add = proto::AddJobRequest { concurrency_key: "tenant-1".into(), ..job(queue, "other", b"") };
    let key_home = shard_of(&add(&mut client, keyed_add).await);

    tokio::time::sleep(Duration::from_millis(u64::try_from(t0 + 4_500 - now_ms).expect("ahead"))).await;
    let mut per_schedule: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_jobs(proto::ListJobsRequest {
                queue: queue.into(),
                state: proto::JobState::Waiting.into(),
                page_size: 100,
                page_token: token,
                filter: None,
            })
            .await
            .expect("list_jobs")
            .into_inner();
        for job in page.jobs {
            if let Some(name) = job.headers.get("jobwire-schedule") {
                per_schedule.entry(name.clone()).or_default().push(job.id);
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut homes = BTreeSet::new();
    // Every due time once in all: 8 schedules x 3, and the keyed add.
    assert_eq!(a.stats(queue).await.waiting, 8 * 3 + 1);
    for name in &names {
        let got = via_b
            .get_schedule(proto::GetScheduleRequest { queue: queue.into(), name: name.clone() })
            .await
            .expect("get_schedule")
            .into_inner()
            .schedule
            .expect("a schedule");
        assert_eq!(got.fires, 3, "{name}");
        assert_eq!(got.definition.expect("a definition").queue, queue, "the queue's name, not its shard's");
        if name == "s0" {
            // Its jobs wait in their key's line, which ListJobs does not show.
            assert_eq!(shard_of(&got.last_job_id), key_home, "a keyed schedule lives where its key's adds go");
            homes.insert(key_home.clone());
            continue;
        }
        let ids = per_schedule.get(name).cloned().unwrap_or_default();
        let mut dues: Vec<u64> = ids
            .iter()
            .map(|id| id.rsplit('/').next().expect("an id").parse::<ulid::Ulid>().expect("a ULID").timestamp_ms())
            .collect();
        dues.sort_unstable();
        let t0 = u64::try_from(t0).expect("positive");
        assert_eq!(dues, [t0, t0 + 1_000, t0 + 2_000], "{name}: one job per due time, through two instances");
        let shard: BTreeSet<String> = ids.iter().map(|id| shard_of(id)).collect();
        assert_eq!(shard.len(), 1, "{name}: its jobs in one shard: {shard:?}");
        let home = shard.into_iter().next().expect("a shard");
        assert_eq!(shard_of(&got.last_job_id), home);
        homes.insert(home);
    }
    assert!(homes.len() > 1, "the schedules spread over the shards: {homes:?}");

    // Listed shard after shard, every one once.
    let (mut listed, mut token) = (BTreeSet::new(), String::new());
    loop {
        let page = via_a
            .list_schedules(proto::ListSchedulesRequest { queue: queue.into(), page_size: 3, page_token: token })
            .await
            .expect("list_schedules")
            .into_inner();
        for schedule in page.schedules {
            assert!(listed.insert(schedule.definition.expect("a definition").name), "listed once");
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(listed, names.iter().cloned().collect(), "every shard's schedules listed");

    // Every call by name finds the schedule in its shard.
    for name in &names[1..4] {
        let name = name.clone();
        via_b
            .pause_schedule(proto::PauseScheduleRequest { queue: queue.into(), name: name.clone() })
            .await
            .expect("pause");
        via_a
            .resume_schedule(proto::ResumeScheduleRequest { queue: queue.into(), name: name.clone() })
            .await
            .expect("resume");
        let triggered = via_b
            .trigger_schedule(proto::TriggerScheduleRequest { queue: queue.into(), name: name.clone() })
            .await
            .expect("trigger")
            .into_inner();
        assert_eq!(shard_of(&triggered.job_id), shard_of(&per_schedule[&name][0]), "{name}: triggered in its shard");
        via_a
            .delete_schedule(proto::DeleteScheduleRequest { queue: queue.into(), name: name.clone() })
            .await
            .expect("delete");
        let gone =
            via_b.get_schedule(proto::GetScheduleRequest { queue: queue.into(), name }).await.expect_err("deleted");
        assert_eq!(gone.code(), Code::NotFound);
    }

    // A new key that picks another shard does not move a schedule (how far it fired is there).
    let mut refused = 0;
    for i in 0..20 {
        let req = proto::UpsertScheduleRequest { schedule: Some(definition("s7", &format!("key{i}"))) };
        match via_a.upsert_schedule(req).await {
            Ok(_) => {}
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "some of 20 keys pick another shard");
    for shard in &homes {
        a.assert_invariants(shard).await;
    }
    homes
}

#[tokio::test]
async fn a_sharded_queue_has_one_set_of_metric_series_summed_over_its_shards() {
    use crate::metrics::{Scrape, http_get};

    let redis = Redis::start();
    let server = ServerBuilder::new(&redis).metrics(std::time::Duration::from_millis(100)).start().await;
    let addr = server.metrics_addr.expect("metrics are served");
    let mut client = server.client().await;
    client.set_queue_settings(shards("measured", 3)).await.expect("shards set");
    let mut homes = BTreeSet::new();
    for i in 0..9 {
        homes.insert(shard_of(&add(&mut client, job("measured", "t", format!("{i}").as_bytes())).await));
    }
    assert_eq!(homes.len(), 3);
    let queue = [("queue", "measured")];
    crate::harness::eventually(std::time::Duration::from_secs(10), "the waiting gauge sums the shards", || async {
        Scrape::take(addr).await.labelled("jobwire_queue_waiting", &queue) == 9.0
    })
    .await;
    assert_eq!(Scrape::take(addr).await.labelled("jobwire_jobs_added_total", &queue), 9.0);
    let mut worker = Worker::open(&server, &["measured"], 9).await;
    for delivered in drain(&mut worker, &mut client, 9).await {
        assert_eq!(delivered.r#type, "t");
    }
    let scrape = Scrape::take(addr).await;
    assert_eq!(scrape.labelled("jobwire_jobs_completed_total", &queue), 9.0);
    let (_, text) = http_get(addr, "/metrics").await;
    assert!(!text.contains("queue=\"measured~"), "no series per shard:\n{text}");
}

#[tokio::test]
async fn max_queues_counts_a_sharded_queue_once() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let server = ServerBuilder::new(&redis).prefix(&prefix).settings(|s| s.max_queues = Some(2)).start().await;
    let mut client = server.client().await;
    client.set_queue_settings(shards("wide", 3)).await.expect("shards set");
    let mut homes = BTreeSet::new();
    for i in 0..9 {
        homes.insert(shard_of(&add(&mut client, job("wide", "t", format!("{i}").as_bytes())).await));
    }
    assert_eq!(homes.len(), 3, "every shard holds jobs: {homes:?}");
    let registered = server.store.instances().queues().await.expect("registry");
    assert_eq!(registered.len(), 3, "each shard is registered: {registered:?}");
    add(&mut client, job("second", "t", b"")).await;
    let refused = client.add_job(job("third", "t", b"")).await.expect_err("over --max-queues");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    // Through a second instance too (the count is in Redis, not in an instance's memory).
    let other = ServerBuilder::new(&redis).prefix(&prefix).settings(|s| s.max_queues = Some(2)).start().await;
    let mut via_other = other.client().await;
    add(&mut via_other, job("wide", "t", b"again")).await;
    let refused = via_other.add_job(job("third", "t", b"")).await.expect_err("over --max-queues");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    for shard in &homes {
        server.assert_invariants(shard).await;
    }
}
