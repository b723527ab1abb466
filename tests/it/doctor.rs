//! The queue registry and `jobwire doctor`: a refused add registers nothing; a queue known only
//! by its keys is still reaped and swept; doctor finds each kind of damage planted by hand,
//! `--repair` mends it, and a repair racing a change that mended it first changes nothing.

use std::time::Duration;

use jobwire::proto::{self, session_service_client::SessionServiceClient};
use redis::AsyncCommands;
use tonic::Code;

use crate::harness::{
    Process, Redis, RedisBackend, ServerBuilder, Worker, eventually, job, run_jobwire, unique_prefix,
};

async fn redis_conn(redis: &Redis) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url()).expect("url").get_multiplexed_async_connection().await.expect("connect")
}

async fn registry(redis: &Redis, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = redis_conn(redis).await.smembers(format!("{prefix}:queues")).await.expect("smembers");
    names.sort();
    names
}

fn in_session(queue: &str, session: &str) -> proto::AddJobRequest {
    proto::AddJobRequest { session_id: session.into(), ..job(queue, "t", b"") }
}

#[tokio::test]
async fn refused_adds_single_or_batched_leave_the_queue_registry_as_it_was() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let server = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let mut client = server.client().await;
    let refused = client.add_job(in_session("ghost", "ghost/nope")).await.expect_err("no such session");
    assert_eq!(refused.code(), Code::NotFound);
    let batch = vec![in_session("ghost2", "ghost2/nope"), in_session("ghost3", "ghost3/nope")];
    let results = client.add_jobs(proto::AddJobsRequest { jobs: batch }).await.expect("add_jobs").into_inner().results;
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|r| r.code == Code::NotFound as i32), "each entry refused: {results:?}");
    assert_eq!(registry(&redis, &prefix).await, Vec::<String>::new(), "a refused add registers no queue");
    let listed = client.list_queues(proto::ListQueuesRequest {}).await.expect("list").into_inner().queues;
    assert!(listed.is_empty(), "ListQueues shows no queue that never had a job: {listed:?}");

    let mixed = vec![in_session("half", "half/nope"), job("half", "t", b"")];
    client.add_jobs(proto::AddJobsRequest { jobs: mixed }).await.expect("add_jobs");
    client.add_job(job("real", "t", b"")).await.expect("add");
    assert_eq!(registry(&redis, &prefix).await, vec!["half".to_owned(), "real".to_owned()]);
    server.assert_invariants("real").await;
}

#[tokio::test]
async fn a_queue_known_only_by_its_keys_still_gets_its_leases_reaped_and_its_sessions_swept() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let args = ["serve", "--listen", "127.0.0.1:0", "--redis-url", &redis.url(), "--key-prefix", &prefix];
    let doomed = Process::start(&[&args[..], &["--lease-ttl", "1s"]].concat());
    let mut client = doomed.client().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", doomed.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let session = proto::CreateSessionRequest {
        queue: "q".into(),
        name: "idle".into(),
        ttl: Some(crate::harness::millis(2_000)),
        ..Default::default()
    };
    SessionServiceClient::new(channel).create_session(session).await.expect("create session");
    let id = client.add_job(job("q", "t", b"")).await.expect("add").into_inner().job_id;
    let mut stream = client
        .get_job(proto::GetJobRequest { queues: vec!["q".into()], max_in_flight: 1, ..Default::default() })
        .await
        .expect("stream")
        .into_inner();
    loop {
        if let Some(proto::get_job_response::Message::Job(j)) =
            stream.message().await.expect("message").expect("open").message
        {
            assert_eq!(j.id, id);
            break;
        }
    }
    doomed.signal(libc::SIGKILL);
    let _: () = redis_conn(&redis).await.del(format!("{prefix}:queues")).await.expect("forget every queue");

    let survivor =
        ServerBuilder::new(&redis).prefix(&prefix).settings(|s| s.lease_ttl = Duration::from_secs(1)).start().await;
    let mut worker = Worker::open(&survivor, &["q"], 1).await;
    let again = worker.next_job(Duration::from_secs(10)).await.expect("the dead instance's lease is reaped");
    assert_eq!(again.id, id);
    worker.complete(&again, b"").await.expect("complete");
    let sessions = SessionServiceClient::new(survivor.channel().await);
    eventually(Duration::from_secs(10), "the idle session to be swept", || {
        let mut sessions = sessions.clone();
        async move { sessions.get_session(proto::GetSessionRequest { session_id: "q/idle".into() }).await.is_err() }
    })
    .await;
    assert_eq!(registry(&redis, &prefix).await, vec!["q".to_owned()], "discovery registered the queue again");
    survivor.assert_invariants("q").await;
}

/// A store of its own on the test Redis, for calling the doctor directly.
fn store_at(redis: &Redis, prefix: &str) -> jobwire::store::Store {
    jobwire::store::Store::new(&jobwire::store::StoreConfig {
        url: redis.url(),
        access: Default::default(),
        prefix: prefix.to_owned(),
        pool_size: 1,
        timeout: Duration::from_secs(2),
        retention: crate::harness::retention(),
        wait_replicas: 0,
    })
    .expect("store")
}

/// Runs `jobwire doctor --json` (with `--repair` when asked): its exit code and report.
pub(crate) async fn doctor(redis: &impl RedisBackend, prefix: &str, repair: bool) -> (Option<i32>, serde_json::Value) {
    let url = redis.url();
    let mut args = vec!["doctor", "--redis-url", &url, "--key-prefix", prefix, "--json"];
    if repair {
        args.push("--repair");
    }
    let ran = run_jobwire(&args, Duration::from_secs(30)).await;
    let report = serde_json::from_str(&ran.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", ran.stdout, ran.stderr));
    (ran.code, report)
}

/// The kinds of a report's findings, sorted and deduplicated.
fn kinds(report: &serde_json::Value) -> Vec<String> {
    let mut kinds: Vec<String> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["kind"].as_str().expect("kind").to_owned())
        .collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

async fn create_session(server: &crate::harness::Server, queue: &str, name: &str) {
    let req = proto::CreateSessionRequest { queue: queue.into(), name: name.into(), ..Default::default() };
    SessionServiceClient::new(server.channel().await).create_session(req).await.expect("create session");
}

/// A workload touching every place: completed, dead, delayed, ready, session and idempotent jobs.
async fn workload(server: &crate::harness::Server, queue: &str) {
    let mut client = server.client().await;
    create_session(server, queue, "s").await;
    for i in 0..6 {
        client.add_job(job(queue, "t", format!("{i}").as_bytes())).await.expect("add");
    }
    let keyed = proto::AddJobRequest { idempotency_key: "once".into(), ..job(queue, "t", b"k") };
    client.add_job(keyed.clone()).await.expect("add");
    client.add_job(keyed).await.expect("repeat add");
    let delay = Some(proto::add_job_request::Schedule::Delay(crate::harness::millis(3_600_000)));
    let later = proto::AddJobRequest { schedule: delay, ..job(queue, "t", b"later") };
    client.add_job(later).await.expect("add delayed");
    client.add_job(in_session(queue, &format!("{queue}/s"))).await.expect("add in session");
    client.add_job(in_session(queue, &format!("{queue}/s"))).await.expect("add in session");
    let mut worker = Worker::open(server, &[queue], 1).await;
    let first = worker.job().await;
    worker.complete(&first, b"done").await.expect("complete");
    let second = worker.job().await;
    worker.fail(&second, "no", false).await;
}

#[tokio::test]
async fn a_queue_after_a_normal_workload_is_clean() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let server = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    workload(&server, "q").await;
    let (code, report) = doctor(&redis, &prefix, false).await;
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(kinds(&report), Vec::<String>::new());
    assert_eq!(report["queues"], 1);
    server.assert_invariants("q").await;
}

const NO_JOB: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";

/// Fields of a session's packed meta (M_UPDATED and M_STARTED of lua/lib.lua, from 0).
const UPDATED: usize = 2;
const STARTED: usize = 5;

/// Rewrites one field of a session's packed meta, as damage (or a server's move) would.
async fn set_session_field(c: &mut redis::aio::MultiplexedConnection, key: &str, name: &str, field: usize, value: i64) {
    let raw: Vec<u8> = c.hget(key, name).await.expect("session meta");
    let mut rest = raw.as_slice();
    let mut meta = rmpv::decode::read_value(&mut rest).expect("meta array");
    let since = rmpv::decode::read_value(&mut rest).expect("since");
    if let rmpv::Value::Array(fields) = &mut meta {
        fields[field] = rmpv::Value::from(value);
    }
    let mut packed = Vec::new();
    rmpv::encode::write_value(&mut packed, &meta).expect("pack");
    rmpv::encode::write_value(&mut packed, &since).expect("pack");
    let _: () = c.hset(key, name, packed).await.expect("rewrite the session");
}

#[tokio::test]
async fn each_kind_of_damage_is_found_then_repaired_and_a_second_run_is_clean() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let server = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    workload(&server, "q").await;
    let mut client = server.client().await;
    client.add_job(job("lost", "t", b"")).await.expect("add");
    server.stop().await;

    let mut c = redis_conn(&redis).await;
    let k = |name: &str| format!("{prefix}:{{q}}:{name}");
    let ready: Vec<String> = c.lrange(k("ready:0"), 0, -1).await.expect("ready");
    let [twice, orphan, foreign, ..] = ready.as_slice() else { panic!("ready jobs: {ready:?}") };
    let _: () = c.hset(k("active"), NO_JOB, "abc.1.1|1|1").await.expect("a lease without a job");
    let _: () = c.rpush(k("ready:0"), twice).await.expect("a job listed twice");
    let _: () = c.lrem(k("ready:0"), 0, orphan).await.expect("an orphaned record");
    let _: () = c.lrem(k("ready:0"), 0, foreign).await.expect("a lease of an unknown instance");
    let _: () = c.hset(k("active"), foreign, "gone.1.1|1|1").await.expect("with no deadline");
    let _: () = c.rpush(k("ready:0"), "01BX5ZZKBKACTAV9WEVGEMMVRZ").await.expect("a job with no record");
    let _: () = c.zadd(k("deadlines"), "01BX5ZZKBKACTAV9WEVGEMMVS0", 5).await.expect("a deadline without a lease");
    let _: () = c.hset(k("meta"), "session_seq", 0).await.expect("a counter behind");
    let buckets: Vec<String> = c.keys(k("tombstones:*")).await.expect("tombstone buckets");
    let [bucket] = buckets.as_slice() else { panic!("one bucket of tombstones: {buckets:?}") };
    let _: () = c.hset(bucket, "bad", "not-a-ulid").await.expect("a tombstone naming no job");
    let _: bool = c.persist(bucket).await.expect("a bucket that never expires");
    let _: () = c.set(k("idem:before-buckets"), NO_JOB).await.expect("a tombstone of the layout before buckets");
    let _: () = c.set(k("bogus"), "1").await.expect("a stray key");
    let _: () = c.srem(format!("{prefix}:queues"), "lost").await.expect("an unregistered queue");
    let _: () = c.del(format!("{prefix}:schema")).await.expect("no schema version");
    set_session_field(&mut c, &k("sessions"), "s", STARTED, 3).await;

    let (code, report) = doctor(&redis, &prefix, false).await;
    assert_eq!(code, Some(1), "{report:#}");
    let expected = [
        "deadline-without-lease",
        "idempotency-key",
        "lease-of-unknown-instance",
        "lease-without-deadline",
        "lease-without-job",
        "missing-record",
        "orphaned-record",
        "schema",
        "session-counts",
        "session-sequence",
        "stray-key",
        "two-places",
        "unregistered-queue",
    ];
    assert_eq!(kinds(&report), expected, "{report:#}");

    let (code, repaired) = doctor(&redis, &prefix, true).await;
    assert_eq!(code, Some(0), "{repaired:#}");
    let (code, again) = doctor(&redis, &prefix, false).await;
    assert_eq!(code, Some(0), "a second run is clean: {again:#}");
    crate::harness::assert_invariants_at(&redis.url(), &prefix, "q").await;
    crate::harness::assert_invariants_at(&redis.url(), &prefix, "lost").await;
}

#[tokio::test]
async fn a_repair_racing_a_change_that_mended_the_damage_first_changes_nothing() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let server = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let mut client = server.client().await;
    for _ in 0..3 {
        client.add_job(job("q", "t", b"")).await.expect("add");
    }
    server.stop().await;
    let mut c = redis_conn(&redis).await;
    let ready_key = format!("{prefix}:{{q}}:ready:0");
    let ready: Vec<String> = c.lrange(&ready_key, 0, -1).await.expect("ready");
    let _: () = c.lrem(&ready_key, 0, &ready[0]).await.expect("an orphaned record");
    let _: () = c.rpush(&ready_key, &ready[1]).await.expect("a job listed twice");
    let active = format!("{prefix}:{{q}}:active");
    let _: () = c.hset(&active, NO_JOB, "abc.1.1|1|1").await.expect("a lease without a job");
    let held = &ready[2];
    let _: () = c.lrem(&ready_key, 0, held).await.expect("leased");
    let _: () = c.hset(&active, held, "late.1.1|1|1").await.expect("held by an instance not yet registered");
    let _: () = c.zadd(format!("{prefix}:{{q}}:deadlines"), held, 1).await.expect("its deadline");

    let store = store_at(&redis, &prefix);
    let report = store.doctor().examine(None).await.expect("examine");
    let mut found: Vec<&str> = report.findings.iter().map(|f| f.kind.name()).collect();
    found.sort();
    assert_eq!(found, ["lease-of-unknown-instance", "lease-without-job", "orphaned-record", "two-places"]);
    // A live server (here: the test) mends each one first.
    let _: () = c.rpush(&ready_key, &ready[0]).await.expect("placed again");
    let _: () = c.lrem(&ready_key, -1, &ready[1]).await.expect("listed once again");
    let _: () = c.hdel(&active, NO_JOB).await.expect("lease gone");
    let _: () = c.zadd(format!("{prefix}:instances"), "late", 1).await.expect("the instance registers");
    let before: Vec<String> = c.lrange(&ready_key, 0, -1).await.expect("ready");

    let outcomes = store.doctor().repair(&report.findings).await.expect("repair");
    assert!(outcomes.iter().all(|o| *o == jobwire::store::Outcome::AlreadyRight), "{outcomes:?}");
    let after: Vec<String> = c.lrange(&ready_key, 0, -1).await.expect("ready");
    assert_eq!(after, before, "the repair changed nothing");
    let lease: Option<String> = c.hget(&active, held).await.expect("hget");
    assert_eq!(lease.as_deref(), Some("late.1.1|1|1"), "a live instance's lease stays");
    assert!(store.doctor().examine(None).await.expect("examine").findings.is_empty());
}

#[tokio::test]
async fn session_counts_are_left_alone_when_the_session_moved_after_the_check() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let server = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    create_session(&server, "q", "s").await;
    server.client().await.add_job(in_session("q", "q/s")).await.expect("add");
    server.stop().await;
    let mut c = redis_conn(&redis).await;
    let sessions = format!("{prefix}:{{q}}:sessions");
    set_session_field(&mut c, &sessions, "s", STARTED, 3).await;
    let store = store_at(&redis, &prefix);
    let report = store.doctor().examine(None).await.expect("examine");
    let found: Vec<&str> = report.findings.iter().map(|f| f.kind.name()).collect();
    assert_eq!(found, ["session-counts"]);
    // A server moves the session on (any move of its jobs updates it) before the repair runs.
    set_session_field(&mut c, &sessions, "s", UPDATED, 1).await;
    let outcomes = store.doctor().repair(&report.findings).await.expect("repair");
    assert_eq!(outcomes, [jobwire::store::Outcome::AlreadyRight]);
    let record = store.sessions().session("q", "s").await.expect("read").expect("session");
    assert_eq!(record.started, 3, "the repair changed nothing");
}

#[tokio::test]
async fn wrong_places_dangling_session_keys_and_a_lost_completion_are_mended() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let server = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    workload(&server, "q").await;
    server.stop().await;
    let mut c = redis_conn(&redis).await;
    let k = |name: &str| format!("{prefix}:{{q}}:{name}");
    let ready: Vec<String> = c.lrange(k("ready:0"), 0, -1).await.expect("ready");
    let _: () = c.zadd(k("dead"), &ready[0], 1).await.expect("a waiting job also dead");
    let completed: Vec<String> = c.lrange(k("completed"), 0, -1).await.expect("completed");
    let _: () = c.lrem(k("completed"), 0, &completed[0]).await.expect("a completion out of its list");
    let _: () = c.hset(k("session_state"), "ghost", "{}").await.expect("a state with no session");
    let _: () = c.zadd(k("session_ttl"), "ghost2", 1).await.expect("an expiry with no session");
    let _: () = c.zrem(k("session_ttl"), "s").await.expect("a session that never expires");

    let (code, report) = doctor(&redis, &prefix, false).await;
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(kinds(&report), ["orphaned-record", "session-keys", "stray-outcome", "wrong-place"], "{report:#}");
    assert_eq!(report["findings"].as_array().map(Vec::len), Some(6), "{report:#}");
    let (code, repaired) = doctor(&redis, &prefix, true).await;
    assert_eq!(code, Some(0), "{repaired:#}");
    let (code, again) = doctor(&redis, &prefix, false).await;
    assert_eq!(code, Some(0), "a second run is clean: {again:#}");
    let back: Vec<String> = c.lrange(k("completed"), 0, -1).await.expect("completed");
    assert_eq!(back, completed, "the completion is listed again");
    crate::harness::assert_invariants_at(&redis.url(), &prefix, "q").await;
}

#[tokio::test]
async fn another_releases_schema_version_and_a_corrupt_record_are_reported_and_left_alone() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let mut c = redis_conn(&redis).await;
    let _: () = c.set(format!("{prefix}:schema"), 99).await.expect("set");
    let _: () = c.hset(format!("{prefix}:{{q}}:jobs"), NO_JOB, "garbage").await.expect("a corrupt record");
    let _: () = c.rpush(format!("{prefix}:{{q}}:ready:0"), NO_JOB).await.expect("listed");
    let _: () = c.sadd(format!("{prefix}:queues"), "q").await.expect("registered");
    let (code, report) = doctor(&redis, &prefix, true).await;
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(kinds(&report), ["corrupt-record", "schema"]);
    let outcomes: Vec<&serde_json::Value> =
        report["findings"].as_array().expect("findings").iter().map(|f| &f["outcome"]).collect();
    assert!(outcomes.iter().all(|o| *o == "left-alone"), "{report:#}");
    let version: i64 = c.get(format!("{prefix}:schema")).await.expect("get");
    assert_eq!(version, 99);
    let url = redis.url();
    let table = run_jobwire(&["doctor", "--redis-url", &url, "--key-prefix", &prefix], Duration::from_secs(30)).await;
    assert_eq!(table.code, Some(1), "{}", table.stderr);
    assert!(table.stdout.starts_with("KIND"), "a table for people: {}", table.stdout);
    assert!(table.stdout.contains("corrupt-record") && table.stdout.contains("2 finding(s)"), "{}", table.stdout);
}

#[tokio::test]
async fn tombstone_buckets_that_outlive_their_name_and_tombstones_naming_no_job_are_mended() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let server = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let mut client = server.client().await;
    for (queue, key) in [("q", "k1"), ("r", "k2")] {
        let keyed = proto::AddJobRequest { idempotency_key: key.into(), ..job(queue, "t", b"") };
        client.add_job(keyed).await.expect("add");
    }
    server.stop().await;
    let mut c = redis_conn(&redis).await;
    let bucket_of = async |c: &mut redis::aio::MultiplexedConnection, queue: &str| {
        let buckets: Vec<String> = c.keys(format!("{prefix}:{{{queue}}}:tombstones:*")).await.expect("buckets");
        assert_eq!(buckets.len(), 1, "{buckets:?}");
        buckets[0].clone()
    };
    let (late, dangling) = (bucket_of(&mut c, "q").await, bucket_of(&mut c, "r").await);
    let due: i64 = redis::cmd("PEXPIRETIME").arg(&late).query_async(&mut c).await.expect("pexpiretime");
    let _: bool = c.pexpire_at(&late, due + 3_600_000).await.expect("an expiry later than the name says");
    let _: () = c.hset(&dangling, "odd", "not-a-ulid").await.expect("a tombstone naming no job");

    let (code, report) = doctor(&redis, &prefix, false).await;
    assert_eq!(code, Some(1), "{report:#}");
    let mut found: Vec<(String, String)> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (f["subject"].as_str().unwrap_or_default().to_owned(), f["detail"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    found.sort();
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].0, late, "{found:?}");
    assert!(found[0].1.contains("as its name says"), "{found:?}");
    assert_eq!(found[1].0, dangling, "{found:?}");
    assert!(found[1].1.contains("6f6464"), "{found:?}");

    let (code, repaired) = doctor(&redis, &prefix, true).await;
    assert_eq!(code, Some(0), "{repaired:#}");
    let mended: i64 = redis::cmd("PEXPIRETIME").arg(&late).query_async(&mut c).await.expect("pexpiretime");
    assert_eq!(mended, due, "the bucket expires when its name says");
    let kept: Vec<Vec<u8>> = c.hkeys(&dangling).await.expect("hkeys");
    // A tombstone's field is the first 14 bytes of its key's SHA-256 (store/tombstones.rs).
    let k2 = <sha2::Sha256 as sha2::Digest>::digest(b"k2")[..14].to_vec();
    assert_eq!(kept, [k2], "the good tombstone is kept, the bad one dropped");
    let (code, again) = doctor(&redis, &prefix, false).await;
    assert_eq!(code, Some(0), "a second run is clean: {again:#}");
    crate::harness::assert_invariants_at(&redis.url(), &prefix, "q").await;
    crate::harness::assert_invariants_at(&redis.url(), &prefix, "r").await;
}

#[tokio::test]
async fn keyed_jobs_are_placed_and_a_drifted_key_count_is_found_and_recounted() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let server = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let mut client = server.client().await;
    for i in 0..3 {
        let req = proto::AddJobRequest { concurrency_key: "c".into(), ..job("q", "t", format!("{i}").as_bytes()) };
        client.add_job(req).await.expect("add");
    }
    let req = proto::AddJobRequest { rate_key: "r".into(), ..job("q", "t", b"r") };
    client.add_job(req).await.expect("add");
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let _held = worker.job().await;
    let (code, report) = doctor(&redis, &prefix, false).await;
    assert_eq!((code, kinds(&report)), (Some(0), Vec::<String>::new()), "keyed jobs are placed: {report:#}");

    let mut c = redis_conn(&redis).await;
    let _: () = c.hset(format!("{prefix}:{{q}}:key_state"), "ac", 3).await.expect("a count that drifted");
    let (code, report) = doctor(&redis, &prefix, false).await;
    assert_eq!((code, kinds(&report)), (Some(1), vec!["key-count".to_owned()]), "{report:#}");
    let (code, repaired) = doctor(&redis, &prefix, true).await;
    assert_eq!(code, Some(0), "{repaired:#}");
    let count: u64 = c.hget(format!("{prefix}:{{q}}:key_state"), "ac").await.expect("count");
    assert_eq!(count, 1, "recounted: the one live lease of key c");
    server.assert_invariants("q").await;
}

fn epoch_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970");
    i64::try_from(since.as_millis()).expect("fits")
}

/// How far a stored schedule has fired (SC_THROUGH of its fire state in lua/schedules_lib.lua,
/// from 0).
const FIRED_THROUGH: usize = 2;

/// One value of a stored schedule's fire state (a whole number; the state is msgpack values one
/// after the other).
async fn schedule_field(c: &mut redis::aio::MultiplexedConnection, key: &str, name: &str, field: usize) -> i64 {
    let raw: Vec<u8> = c.hget(key, name).await.expect("schedule");
    let mut rest = raw.as_slice();
    let mut value = rmpv::decode::read_value(&mut rest).expect("a value");
    for _ in 0..field {
        value = rmpv::decode::read_value(&mut rest).expect("a value");
    }
    value.as_i64().expect("a whole number")
}

/// Rewrites how far a stored schedule has fired, as a fleet stopped for an hour, or an instance
/// whose clock ran an hour ahead, leaves it. Packed by Lua's cmsgpack, as the functions pack
/// it.
async fn set_fired_through(c: &mut redis::aio::MultiplexedConnection, key: &str, name: &str, ms: i64) {
    let rewrite = "local s = { cmsgpack.unpack(redis.call('HGET', KEYS[1], ARGV[1])) } \
                   s[3] = tonumber(ARGV[2]) redis.call('HSET', KEYS[1], ARGV[1], cmsgpack.pack(unpack(s)))";
    let _: () =
        redis::cmd("EVAL").arg(rewrite).arg(1).arg(key).arg(name).arg(ms).query_async(c).await.expect("rewrite");
}

#[tokio::test]
async fn a_schedule_left_unfired_or_fired_ahead_of_the_clock_is_found_and_armed_again() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let server = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let mut admin = jobwire::proto::schedule_service_client::ScheduleServiceClient::new(server.channel().await);
    for name in ["behind", "ahead", "paused"] {
        let definition = proto::ScheduleDefinition {
            queue: "q".into(),
            name: name.into(),
            template: Some(proto::JobTemplate { r#type: "tick".into(), ..Default::default() }),
            timing: Some(proto::schedule_definition::Timing::Every(prost_types::Duration { seconds: 1, nanos: 0 })),
            ..Default::default()
        };
        admin.upsert_schedule(proto::UpsertScheduleRequest { schedule: Some(definition) }).await.expect("upsert");
    }
    let pause = proto::PauseScheduleRequest { queue: "q".into(), name: "paused".into() };
    admin.pause_schedule(pause).await.expect("pause");
    server.stop().await;
    let (code, report) = doctor(&redis, &prefix, false).await;
    assert_eq!((code, kinds(&report)), (Some(0), Vec::<String>::new()), "fresh schedules are on time: {report:#}");

    let mut c = redis_conn(&redis).await;
    let key = format!("{prefix}:{{q}}:schedule_state");
    let hour = 3_600_000;
    set_fired_through(&mut c, &key, "behind", epoch_ms() - hour).await;
    set_fired_through(&mut c, &key, "ahead", epoch_ms() + hour).await;
    set_fired_through(&mut c, &key, "paused", epoch_ms() - hour).await;
    let (code, report) = doctor(&redis, &prefix, false).await;
    assert_eq!(code, Some(1), "{report:#}");
    let mut subjects: Vec<&str> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            assert_eq!(f["kind"], "schedule-timing", "{report:#}");
            f["subject"].as_str().expect("subject")
        })
        .collect();
    subjects.sort_unstable();
    assert_eq!(subjects, ["schedule ahead", "schedule behind"], "a paused schedule owes nothing yet: {report:#}");

    let before = epoch_ms();
    let (code, report) = doctor(&redis, &prefix, true).await;
    assert_eq!(code, Some(0), "{report:#}");
    let outcomes: Vec<&serde_json::Value> =
        report["findings"].as_array().expect("findings").iter().map(|f| &f["outcome"]).collect();
    assert_eq!(outcomes, ["repaired", "repaired"], "{report:#}");
    let ahead = schedule_field(&mut c, &key, "ahead", FIRED_THROUGH).await;
    assert!(ahead >= before && ahead <= epoch_ms(), "fired through now, not an hour on: {ahead}");

    // The one left behind waits for an instance: the repair only asked the timers to look again.
    let server = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    eventually(Duration::from_secs(10), "the schedule left behind fires again", || {
        let mut c = c.clone();
        let key = key.clone();
        async move { schedule_field(&mut c, &key, "behind", FIRED_THROUGH).await > epoch_ms() - 5_000 }
    })
    .await;
    let (code, report) = doctor(&redis, &prefix, false).await;
    assert_eq!((code, kinds(&report)), (Some(0), Vec::<String>::new()), "{report:#}");
    server.assert_invariants("q").await;
    server.stop().await;
}
