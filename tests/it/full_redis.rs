//! Redis full, end to end: a real Redis at a small `maxmemory` (`noeviction`) behind a real
//! server. Adds fill it until they are refused with RESOURCE_EXHAUSTED "Redis is full: used X
//! of Y" (AddJob, AddJobs and CreateSession alike, nothing half-written), Stats answers and
//! shows the condition, health stays SERVING, a worker drains the queue to nothing waiting or
//! active while retained history is shed (counted in Stats and the metrics), and adds succeed
//! again. An add Redis itself refuses for memory gets the same answer; and `--max-waiting`
//! refuses adds past a queue's cap.

use std::time::Duration;

use jobwire::{
    client::{Client, Worker as ClientWorker},
    proto::{self, session_service_client::SessionServiceClient},
    redis_server::MaxMemory,
};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{
    faults::{health, wait_health},
    harness::{Redis, Server, ServerBuilder, eventually, job, unique_prefix},
    metrics::Scrape,
};

const MAXMEMORY: u64 = 6 << 20;
const PAYLOAD: usize = 2_048;
const WAIT: Duration = Duration::from_secs(20);

fn noeviction(bytes: u64) -> MaxMemory {
    MaxMemory { bytes, policy: "noeviction".into() }
}

fn queue_name(what: &str) -> String {
    format!("{what}-{}", unique_prefix())
}

async fn stats(server: &Server, queue: &str) -> (proto::QueueStats, proto::RedisMemory) {
    let answer = server.client().await.stats(proto::StatsRequest { queue: queue.into() }).await.expect("stats answers");
    let answer = answer.into_inner();
    (answer.stats.expect("queue stats"), answer.redis_memory.expect("redis memory"))
}

fn assert_full(status: &tonic::Status) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let message = status.message();
    assert!(message.starts_with("Redis is full: used ") && message.contains(" of "), "{message}");
}

fn create_session(queue: &str) -> proto::CreateSessionRequest {
    proto::CreateSessionRequest { queue: queue.into(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_refuses_adds_answers_reads_drains_and_takes_adds_again() {
    let redis = Redis::start_config(|c| c.maxmemory(noeviction(MAXMEMORY)));
    let prefix = unique_prefix();
    let server = ServerBuilder::new(&redis)
        .prefix(&prefix)
        .settings(|s| s.memory.sample_every = Duration::from_millis(100))
        .retention(|r| r.completed_max = 100_000)
        .metrics(Duration::from_millis(200))
        .start()
        .await;
    let queue = queue_name("full");
    let mut client = server.client().await;

    // Fill: 2 KB jobs until the watermark (90 % of maxmemory) refuses them.
    let mut added: u64 = 0;
    let refused = loop {
        match client.add_job(job(&queue, "t", &[b'x'; PAYLOAD])).await {
            Ok(_) => added += 1,
            Err(status) => break status,
        }
        assert!(added < 10_000, "6 MiB never filled");
    };
    assert_full(&refused);
    let refused = refused.message().to_owned();
    assert!(added > 500, "only {added} jobs went in");
    let batch = proto::AddJobsRequest { jobs: vec![job(&queue, "t", b"a"), job(&queue, "t", b"b")] };
    assert_full(&client.add_jobs(batch).await.expect_err("a batch is refused whole"));
    let mut sessions = SessionServiceClient::new(server.channel().await);
    assert_full(&sessions.create_session(create_session(&queue)).await.expect_err("no new session"));

    // Reads answer, and show the condition; nothing refused was written; health stays SERVING.
    let (figures, memory) = stats(&server, &queue).await;
    assert_eq!(figures.waiting, added);
    assert!(memory.full && memory.max_bytes == MAXMEMORY, "{memory:?}");
    assert!(memory.used_bytes * 10 > memory.max_bytes * 8, "{memory:?}");
    assert_eq!(health(server.addr).await, ServingStatus::Serving);
    // A second instance starts beside the full Redis, and serves.
    let second = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    wait_health(second.addr, ServingStatus::Serving, WAIT).await;
    second.stop().await;

    // A worker drains it: leases and acks run however full Redis is, and the completed jobs
    // (payloads included) are shed as they pile up.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker =
        ClientWorker::new(Client::connect(&format!("http://{}", server.addr)).await.expect("connect"), &[&queue])
            .concurrency(50)
            .handle("t", |_job| async { Ok(b"ok".to_vec()) });
    let worker = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    eventually(WAIT, "the queue to drain", || async {
        let (s, _) = stats(&server, &queue).await;
        s.waiting + s.active == 0 && s.completed + s.completed_shed == added
    })
    .await;
    eventually(WAIT, "Redis to have room again", || async { !stats(&server, &queue).await.1.full }).await;
    let (figures, memory) = stats(&server, &queue).await;
    assert!(figures.completed_shed > 0, "{figures:?}");
    println!(
        "full redis: {added} jobs of {PAYLOAD} B filled {MAXMEMORY} B ({refused:?}); drained, shed {} completed and {} \
         event entries; used {} B now",
        figures.completed_shed, figures.events_shed, memory.used_bytes
    );

    // Adds succeed again.
    client.add_job(job(&queue, "t", b"again")).await.expect("an add after the drain");
    eventually(WAIT, "the shed gauge", || async {
        let scrape = Scrape::take(server.metrics_addr.expect("metrics")).await;
        scrape.labelled("jobwire_queue_shed", &[("queue", &queue), ("kind", "completed")]) > 0.0
    })
    .await;
    let _ = stop.send(());
    worker.await.expect("worker task").expect("worker");
    // Checked once the server has stopped: its shedding, still running while Redis stays above
    // the shed line, would otherwise drop jobs between the check's reads of the records and of
    // the completed list (which the check would take for orphaned records).
    server.stop().await;
    crate::harness::assert_invariants_at(&redis.url(), &prefix, &queue).await;
}

#[tokio::test]
async fn an_add_redis_itself_refuses_for_memory_is_answered_as_redis_full() {
    let redis = Redis::start_config(|c| c.maxmemory(noeviction(64 << 20)));
    // One reading at the start, none after it: the refusals below are Redis's own.
    let server = ServerBuilder::new(&redis)
        .settings(|s| {
            s.memory.watermark = 100;
            s.memory.sample_every = Duration::from_secs(3600);
        })
        .start()
        .await;
    let queue = queue_name("refused");
    let mut client = server.client().await;
    client.add_job(job(&queue, "t", b"in")).await.expect("room at first");
    eventually(WAIT, "the first reading", || async { stats(&server, &queue).await.1.max_bytes > 0 }).await;
    let mut admin =
        redis::Client::open(redis.url()).expect("url").get_multiplexed_async_connection().await.expect("connect");
    let () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(1).query_async(&mut admin).await.expect("config set");

    // A batch Redis refused: each of its entries answers RESOURCE_EXHAUSTED.
    let batch = proto::AddJobsRequest { jobs: vec![job(&queue, "t", b"a"), job(&queue, "t", b"b")] };
    let results = client.add_jobs(batch).await.expect("the batch is answered").into_inner().results;
    for result in &results {
        assert_eq!(result.code, Code::ResourceExhausted as i32, "{result:?}");
        assert!(result.message.starts_with("Redis is full: used "), "{result:?}");
    }
    // From then on the server refuses without asking Redis, with the same answer.
    assert_full(&client.add_job(job(&queue, "t", b"c")).await.expect_err("refused"));
    let (figures, memory) = stats(&server, &queue).await;
    assert_eq!(figures.waiting, 1, "nothing refused was written");
    assert!(memory.full);
    let () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0).query_async(&mut admin).await.expect("config set");
    server.assert_invariants(&queue).await;
}

#[tokio::test]
async fn max_waiting_refuses_adds_past_a_queues_cap() {
    let redis = Redis::start();
    let server = ServerBuilder::new(&redis).settings(|s| s.max_waiting = Some(3)).start().await;
    let queue = queue_name("capped");
    let mut client = server.client().await;
    for n in 0..3 {
        client.add_job(job(&queue, "t", format!("{n}").as_bytes())).await.expect("under the cap");
    }
    let refused = client.add_job(job(&queue, "t", b"4")).await.expect_err("past the cap");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(refused.message(), format!("queue {queue} is full (3 waiting)"));

    // In a batch each entry is answered: one leased job makes room for the first entry only.
    let mut worker = crate::harness::Worker::open(&server, &[&queue], 1).await;
    let held = worker.job().await;
    let batch = proto::AddJobsRequest { jobs: vec![job(&queue, "t", b"5"), job(&queue, "t", b"6")] };
    let results = client.add_jobs(batch).await.expect("the batch is answered").into_inner().results;
    assert_eq!(results[0].code, 0, "{results:?}");
    assert_eq!((results[1].code, results[1].message.as_str()), (Code::ResourceExhausted as i32, refused.message()));
    worker.complete(&held, b"done").await.expect("complete");
    let (figures, _) = stats(&server, &queue).await;
    assert_eq!((figures.waiting + figures.active, figures.completed), (3, 1));
    server.assert_invariants(&queue).await;
}
