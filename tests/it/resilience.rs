//! Unhappy paths: Redis going away and coming back, a paused Redis, a killed jobwire instance,
//! and the operator surfaces (health, reflection).

use std::time::{Duration, Instant};

use jobwire::{
    proto::{self, JobState},
    store::{Store, StoreConfig, StoreError},
};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::harness::{Process, Redis, Server, ServerBuilder, Worker, add, eventually, info, job, retention};

async fn health(server: &Server, service: &str) -> ServingStatus {
    let mut health = HealthClient::new(server.channel().await);
    health
        .check(HealthCheckRequest { service: service.into() })
        .await
        .map(|r| r.into_inner().status())
        .unwrap_or(ServingStatus::Unknown)
}

async fn wait_health(server: &Server, want: ServingStatus) {
    eventually(Duration::from_secs(10), &format!("health {want:?}"), || async {
        health(server, "").await == want && health(server, "jobwire.v1.QueueService").await == want
    })
    .await;
}

#[tokio::test]
async fn redis_down_fails_fast_and_the_server_recovers_by_itself() {
    let mut redis = Redis::start_with(true);
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let kept = add(&mut client, job("q", "t", b"before")).await;
    wait_health(&server, ServingStatus::Serving).await;

    redis.kill();
    let started = Instant::now();
    let err = client.add_job(job("q", "t", b"during")).await.expect_err("redis is down");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    wait_health(&server, ServingStatus::NotServing).await;

    redis.restart();
    wait_health(&server, ServingStatus::Serving).await;
    eventually(Duration::from_secs(5), "adds to work again", || {
        let mut client = client.clone();
        async move { client.add_job(job("q", "t", b"after")).await.is_ok() }
    })
    .await;
    let mut worker = Worker::open(&server, &["q"], 10).await;
    let first = worker.job().await;
    assert_eq!(first.id, kept, "the job accepted before the outage survived it (AOF)");
    assert_eq!(worker.job().await.payload, b"after");
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_redis_restarted_empty_gets_the_function_library_again() {
    let mut redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    add(&mut client, job("q", "t", b"before")).await;

    // No persistence: the restarted Redis has neither the job nor the library.
    redis.kill();
    redis.restart();
    eventually(Duration::from_secs(5), "adds to work again", || {
        let mut client = client.clone();
        async move { client.add_job(job("q", "t", b"after")).await.is_ok() }
    })
    .await;
    let mut worker = Worker::open(&server, &["q"], 10).await;
    let only = worker.job().await;
    assert_eq!(only.payload, b"after");
    worker.complete(&only, b"done").await.expect("complete");
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_redis_holding_another_layout_version_is_refused_and_left_alone() {
    let redis = Redis::start();
    let mut admin =
        redis::Client::open(redis.url()).expect("url").get_multiplexed_async_connection().await.expect("connect");
    let _: () = redis::cmd("SET").arg("jw:schema").arg(1).query_async(&mut admin).await.expect("set");
    let store = Store::new(&StoreConfig {
        url: redis.url(),
        access: Default::default(),
        prefix: "jw".into(),
        pool_size: 1,
        timeout: Duration::from_millis(500),
        retention: retention(),
        wait_replicas: 0,
    })
    .expect("store");
    let refused = store.ensure_schema().await.expect_err("an older layout");
    assert!(matches!(refused, StoreError::Schema { found: 1 }), "{refused}");
    let kept: i64 = redis::cmd("GET").arg("jw:schema").query_async(&mut admin).await.expect("get");
    assert_eq!(kept, 1, "the version is not overwritten");
}

#[tokio::test]
async fn a_paused_redis_does_not_get_live_jobs_reaped() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let id = add(&mut client, job("q", "t", b"")).await;
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let held = worker.job().await;

    // Longer than the lease TTL (1.5 s): every heartbeat looks stale when Redis wakes up.
    redis.signal(libc::SIGSTOP);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    redis.signal(libc::SIGCONT);
    // Give the reaper well over a TTL to make the mistake, if it would.
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    let still = info(&mut client, &id).await;
    assert_eq!((still.state(), still.lost_deliveries), (JobState::Active, 0));
    worker.expect_nothing(Duration::from_millis(100)).await;
    worker.complete(&held, b"").await.expect("the worker still holds its lease");
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn jobs_of_a_killed_instance_come_back_through_another_after_the_ttl() {
    let redis = Redis::start();
    let prefix = crate::harness::unique_prefix();
    let doomed = Process::start(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--redis-url",
        &redis.url(),
        "--key-prefix",
        &prefix,
        "--lease-ttl",
        "1s",
    ]);
    let mut client = doomed.client().await;
    let id = add(&mut client, job("q", "t", b"")).await;
    let mut stream = client
        .get_job(proto::GetJobRequest { queues: vec!["q".into()], max_in_flight: 1, ..Default::default() })
        .await
        .expect("stream")
        .into_inner();
    let delivered = loop {
        match stream.message().await.expect("message").expect("open").message {
            Some(proto::get_job_response::Message::Job(j)) => break j,
            _ => continue,
        }
    };
    assert_eq!(delivered.id, id);
    doomed.signal(libc::SIGKILL);

    let survivor =
        ServerBuilder::new(&redis).prefix(&prefix).settings(|s| s.lease_ttl = Duration::from_secs(1)).start().await;
    let killed_at = Instant::now();
    let mut worker = Worker::open(&survivor, &["q"], 1).await;
    let again = worker.next_job(Duration::from_secs(10)).await.expect("the job comes back");
    assert_eq!(again.id, id);
    assert!(killed_at.elapsed() >= Duration::from_millis(500), "reaped before the TTL: {:?}", killed_at.elapsed());
    assert_eq!(again.lost_deliveries, 0, "an instance's death is not the worker's lost delivery");
    let stale = worker
        .client
        .complete_job(proto::CompleteJobRequest {
            job_id: delivered.id.clone(),
            lease_token: delivered.lease_token.clone(),
            result: Vec::new(),
            ..Default::default()
        })
        .await
        .expect_err("the dead instance's lease is fenced off");
    assert_eq!(stale.code(), Code::FailedPrecondition);
    worker.complete(&again, b"").await.expect("complete");
    survivor.assert_invariants("q").await;
}

#[tokio::test]
async fn health_follows_redis_and_reflection_lists_every_service() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    wait_health(&server, ServingStatus::Serving).await;

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses =
        reflection.server_reflection_info(futures::stream::iter([request])).await.expect("reflection").into_inner();
    let response = responses.message().await.expect("answer").expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["jobwire.v1.QueueService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }

    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest as AlphaRequest, server_reflection_client::ServerReflectionClient as AlphaClient,
        server_reflection_request::MessageRequest as AlphaMessage,
    };
    let mut alpha = AlphaClient::new(server.channel().await);
    let request = AlphaRequest {
        host: String::new(),
        message_request: Some(AlphaMessage::FileContainingSymbol("jobwire.v1.QueueService".into())),
    };
    let mut responses =
        alpha.server_reflection_info(futures::stream::iter([request])).await.expect("v1alpha").into_inner();
    assert!(responses.message().await.expect("answer").is_some());
}

#[tokio::test]
async fn a_graceful_stop_drains_streams_and_hands_back_held_jobs_uncounted() {
    let redis = Redis::start();
    let prefix = crate::harness::unique_prefix();
    let server = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let mut client = server.client().await;
    let id = add(&mut client, job("q", "t", b"")).await;
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let held = worker.job().await;
    let stopping = tokio::spawn(server.stop());
    match worker.next_message(Duration::from_secs(3)).await {
        Some(proto::get_job_response::Message::Drain(d)) => assert!(d.grace.is_some()),
        other => panic!("expected drain, got {other:?}"),
    }
    stopping.await.expect("stopped");

    let next = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let mut client = next.client().await;
    let back = info(&mut client, &id).await;
    assert_eq!((back.state(), back.lost_deliveries), (JobState::Waiting, 0), "handed back, not lost");
    let mut worker = Worker::open(&next, &["q"], 1).await;
    let again = worker.job().await;
    assert_eq!((again.id.as_str(), again.attempt), (held.id.as_str(), 1));
    worker.complete(&again, b"").await.expect("complete");
    next.assert_invariants("q").await;
}

#[tokio::test]
async fn a_lease_round_during_a_redis_pause_loses_nothing() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let id = add(&mut client, job("q", "t", b"")).await;
    // Redis stops answering while a worker connects: the lease rounds time out in jobwire (the
    // test store times out after 500 ms); whatever Redis does with them once it wakes up, the
    // job must still reach the worker, once, as its first attempt.
    redis.signal(libc::SIGSTOP);
    let mut worker = Worker::open(&server, &["q"], 1).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    redis.signal(libc::SIGCONT);
    let j = worker.next_job(Duration::from_secs(10)).await.expect("the job is delivered after all");
    assert_eq!((j.id.as_str(), j.attempt, j.lost_deliveries), (id.as_str(), 1, 0));
    worker.complete(&j, b"").await.expect("complete");
    server.assert_invariants("q").await;
}
