//! The queue registry and `jobwire doctor`: a refused add registers nothing; a queue known only
//! by its keys is still reaped and swept; doctor finds each kind of damage planted by hand,
//! `--repair` mends it, and a repair racing a change that mended it first changes nothing.

use std::time::Duration;

use jobwire::proto::{self, session_service_client::SessionServiceClient};
use redis::AsyncCommands;
use tonic::Code;

use crate::harness::{Process, Redis, ServerBuilder, Worker, eventually, job, unique_prefix};

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
