//! The limits a broken or abusive client meets, each against a real server and a real client:
//! the credit a worker stream may ask for (`--max-credit`), the distinct queues Redis may hold
//! over every instance (`--max-queues`), the calls one connection and the streams one token may
//! hold open, the size of a call's headers and of its message, and the closing of a connection
//! with no call open (`--idle-timeout`), which an open worker stream never meets.

use std::time::Duration;

use jobwire::{
    auth::Role,
    proto::{self, queue_service_client::QueueServiceClient, session_service_client::SessionServiceClient},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, metadata::MetadataValue};

use crate::{
    auth::{Tokens, client, next_job, spec},
    harness::{Redis, ServerBuilder, eventually, unique_prefix},
};

fn get_job(queue: &str, max_in_flight: u32) -> proto::GetJobRequest {
    proto::GetJobRequest { queues: vec![queue.into()], max_in_flight, ..Default::default() }
}

fn add(queue: &str) -> proto::AddJobRequest {
    proto::AddJobRequest { queue: queue.into(), r#type: "t".into(), ..Default::default() }
}

#[tokio::test]
async fn a_worker_stream_asks_for_at_most_max_credit() {
    let redis = Redis::start();
    let server = ServerBuilder::new(&redis).settings(|s| s.limits.max_in_flight = 5).start().await;
    let mut client = server.client().await;
    let refused = client.get_job(get_job("credit", 6)).await.expect_err("over the credit cap");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("max_in_flight") && refused.message().contains("1 to 5"), "{refused:?}");
    let mut work = QueueServiceClient::new(server.channel().await);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(proto::WorkRequest {
        message: Some(proto::work_request::Message::Open(proto::WorkOpen {
            queues: vec!["credit".into()],
            max_in_flight: 1,
            prefetch: 6,
            ..Default::default()
        })),
    })
    .await
    .expect("queued");
    let refused = match work.work(tokio_stream::wrappers::ReceiverStream::new(rx)).await {
        Err(status) => status,
        Ok(response) => response.into_inner().message().await.expect_err("the open is refused"),
    };
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("prefetch"), "{refused:?}");

    let mut jobs = client.get_job(get_job("credit", 5)).await.expect("at the cap").into_inner();
    client.add_job(add("credit")).await.expect("add");
    next_job(&mut jobs).await;
    server.assert_invariants("credit").await;
}

#[tokio::test]
async fn past_max_queues_a_new_queue_is_refused_by_every_instance_and_writes_nothing() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let one = ServerBuilder::new(&redis).prefix(&prefix).settings(|s| s.max_queues = Some(3)).start().await;
    let two = ServerBuilder::new(&redis).prefix(&prefix).settings(|s| s.max_queues = Some(3)).start().await;
    let (mut a, mut b) = (one.client().await, two.client().await);
    a.add_job(add("q1")).await.expect("first queue");
    b.add_job(add("q2")).await.expect("second queue, through the other instance");
    let mut sessions = SessionServiceClient::new(one.channel().await);
    let session = proto::CreateSessionRequest {
        queue: "q3".into(),
        name: "s".into(),
        state: "{}".into(),
        ttl: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        max_concurrency: None,
    };
    sessions.create_session(session.clone()).await.expect("a session makes the third queue");

    for refused in [
        a.add_job(add("q4")).await.expect_err("a fourth queue"),
        b.add_job(add("q4")).await.expect_err("a fourth queue, through the other instance"),
        sessions
            .create_session(proto::CreateSessionRequest { queue: "q5".into(), ..session.clone() })
            .await
            .expect_err("a session in a fourth queue"),
        b.pause_queue(proto::PauseQueueRequest { queue: "q6".into() }).await.expect_err("pausing a fourth queue"),
    ] {
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert!(refused.message().contains("--max-queues"), "{refused:?}");
    }
    let batch = proto::AddJobsRequest { jobs: vec![add("q1"), add("q7"), add("q2")] };
    let results = b.add_jobs(batch).await.expect("the batch is answered").into_inner().results;
    let codes: Vec<i32> = results.iter().map(|r| r.code).collect();
    assert_eq!(codes, [0, Code::ResourceExhausted as i32, 0], "{results:?}");
    a.add_job(add("q1")).await.expect("a known queue takes jobs still");

    let listed: Vec<String> = a
        .list_queues(proto::ListQueuesRequest::default())
        .await
        .expect("list")
        .into_inner()
        .queues
        .into_iter()
        .map(|q| q.queue)
        .collect();
    assert_eq!(listed, ["q1", "q2", "q3"]);
    let mut redis_conn =
        redis::Client::open(redis.url()).expect("url").get_multiplexed_async_connection().await.expect("connect");
    for (queue, in_redis) in [("q1", true), ("q4", false), ("q5", false), ("q6", false), ("q7", false)] {
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{prefix}:{{{queue}}}:*")).query_async(&mut redis_conn).await.expect("keys");
        assert_eq!(!keys.is_empty(), in_redis, "keys of queue {queue} in Redis: {keys:?}");
    }
    for queue in ["q1", "q2", "q3"] {
        one.assert_invariants(queue).await;
    }
}

#[tokio::test]
async fn a_connection_holds_at_most_its_streams_and_further_calls_wait_for_one_to_end() {
    let redis = Redis::start();
    let server = ServerBuilder::new(&redis).connections(|c| c.max_streams_per_connection = 2).start().await;
    let mut client = QueueServiceClient::new(server.channel().await);
    let first = client.get_job(get_job("conn", 1)).await.expect("first stream").into_inner();
    let _second = client.get_job(get_job("conn", 1)).await.expect("second stream").into_inner();
    let third = tokio::spawn({
        let mut client = client.clone();
        async move { client.stats(proto::StatsRequest { queue: "conn".into() }).await }
    });
    // Waiting out a window in which nothing may happen: the third call is held by the client.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!third.is_finished(), "a third call went through on a connection of two");
    let mut other = server.client().await;
    other.stats(proto::StatsRequest { queue: "conn".into() }).await.expect("another connection is not held up");
    drop(first);
    let stats = tokio::time::timeout(Duration::from_secs(5), third).await.expect("once a stream ended");
    stats.expect("joined").expect("the third call is served");
    server.assert_invariants("conn").await;
}

#[tokio::test]
async fn a_token_holds_at_most_its_streams_and_gets_a_slot_back_when_one_ends() {
    let redis = Redis::start();
    let tokens = Tokens::write(vec![spec("w1", Role::Worker), spec("w2", Role::Worker)]);
    let server =
        ServerBuilder::new(&redis).auth(tokens.authority()).connections(|c| c.max_streams_per_token = 2).start().await;
    // Two connections of one token: the cap is the token's, whichever connection.
    let (w1a, w1b) =
        (client(&server, Some(tokens.secret("w1"))).await, client(&server, Some(tokens.secret("w1"))).await);
    let first = w1a.raw().get_job(get_job("tok", 1)).await.expect("first").into_inner();
    let _second = w1b.raw().get_job(get_job("tok", 1)).await.expect("second").into_inner();
    let refused = w1a.raw().get_job(get_job("tok", 1)).await.expect_err("a third stream of w1");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("\"w1\"") && refused.message().contains("--max-streams-per-token"),
        "{refused:?}"
    );
    let w2 = client(&server, Some(tokens.secret("w2"))).await;
    let _other = w2.raw().get_job(get_job("tok", 1)).await.expect("another token has its own streams");
    drop(first);
    eventually(Duration::from_secs(5), "w1's slot to come back", || async {
        w1a.raw().get_job(get_job("tok", 1)).await.map(|s| drop(s.into_inner())).is_ok()
    })
    .await;
    server.assert_invariants("tok").await;
}

#[tokio::test]
async fn a_call_with_headers_or_a_message_too_big_is_refused_and_the_server_goes_on() {
    let redis = Redis::start();
    let server = ServerBuilder::new(&redis).connections(|c| c.max_header_bytes = 4096).start().await;
    let mut client = server.client().await;
    let mut big_headers = tonic::Request::new(proto::StatsRequest { queue: "size".into() });
    let value = MetadataValue::try_from("x".repeat(8192)).expect("ascii");
    big_headers.metadata_mut().insert("x-padding", value);
    let refused = tokio::time::timeout(Duration::from_secs(5), client.stats(big_headers))
        .await
        .expect("refused in time, not left hanging")
        .expect_err("8 KB of headers over a 4 KB cap");
    // HTTP/2 answers 431 before any handler runs; gRPC clients report that as UNKNOWN.
    assert_eq!(refused.code(), Code::Unknown, "{refused:?}");
    assert!(refused.message().contains("431"), "{refused:?}");

    // The harness's largest message is 4 MiB.
    let mut big = add("size");
    big.payload = vec![7; 5 << 20];
    let refused = client.add_job(big).await.expect_err("a 5 MiB message");
    assert_eq!(refused.code(), Code::OutOfRange, "tonic's code for a message over the limit: {refused:?}");

    client.add_job(add("size")).await.expect("the same client is served after both");
    let stats = client.stats(proto::StatsRequest { queue: "size".into() }).await.expect("stats").into_inner();
    assert_eq!(stats.stats.expect("body").waiting, 1, "only the small job went in");
    server.assert_invariants("size").await;
}

/// Opens a bare HTTP/2 connection (the client preface and empty SETTINGS, no call) and reads
/// until the server closes it; returns how long that took.
async fn idle_connection_lifetime(addr: std::net::SocketAddr) -> Duration {
    let started = tokio::time::Instant::now();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.expect("preface");
    let mut buf = [0u8; 1024];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await;
        match read.expect("the server closes an idle connection") {
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => continue,
        }
    }
}

#[tokio::test]
async fn a_connection_with_no_call_open_is_closed_after_the_idle_timeout_but_a_worker_stream_never_is() {
    let redis = Redis::start();
    let timeout = Duration::from_millis(300);
    let server = ServerBuilder::new(&redis).connections(|c| c.idle_timeout = timeout).start().await;
    let lived = idle_connection_lifetime(server.addr).await;
    // Well before the keep-alive (5 s + 5 s in the harness) could close it.
    assert!(lived >= timeout && lived < Duration::from_secs(5), "closed after {lived:?}");

    let mut worker = QueueServiceClient::new(server.channel().await);
    let mut jobs = worker.get_job(get_job("idle", 2)).await.expect("stream").into_inner();
    let mut producer = server.client().await;
    producer.add_job(add("idle")).await.expect("add");
    next_job(&mut jobs).await;
    // Waiting out several idle timeouts with the stream open and nothing on it.
    tokio::time::sleep(timeout * 4).await;
    producer.add_job(add("idle")).await.expect("a producer whose connection was closed reconnects");
    let job = next_job(&mut jobs).await;
    assert_eq!(job.queue, "idle", "the worker's stream outlived four idle timeouts");
    server.assert_invariants("idle").await;
}
