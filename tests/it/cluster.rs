//! Several jobwire instances over one Redis: adds and acks that cross instances (in-process
//! servers sharing one key prefix), a rolling restart of real `jobwire` processes under load, and
//! what an instance does while it drains. These tests stop and restart servers and measure
//! latencies, so they run one at a time (nextest group `processes`).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use jobwire::{
    client::{Client, NewJob, Worker as RustWorker},
    proto::{self, JobState, RevokeReason, get_job_response::Message},
    queue::Settings,
    store::LeaseToken,
};
use tokio::sync::watch;
use tonic::Code;

use crate::harness::{
    Process, Redis, Server, ServerBuilder, Worker, add, assert_invariants_at, eventually, info, job, unique_prefix,
};

/// Slow timers, so only pub/sub can explain anything that happens fast: the safety poll and the
/// reconciliation both wait 10 s.
fn pubsub_only(settings: &mut Settings) {
    settings.safety_poll = Duration::from_secs(10);
    settings.reconcile_every = Duration::from_secs(10);
}

/// Waits until `count` instances listen on the shared schedule channel. Each instance subscribes
/// to it and its own notice channel in one SUBSCRIBE, so both are live then (a queue's wake-up
/// channel follows when a stream of the queue opens, and its confirmation wakes the queue).
async fn wait_subscribed(redis: &Redis, server: &Server, count: i64) {
    let channel = server.store.keys().schedule_channel();
    let client = redis::Client::open(redis.url()).expect("url");
    eventually(Duration::from_secs(10), "every instance to subscribe to notices", || {
        let (client, channel) = (client.clone(), channel.clone());
        async move {
            let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                return false;
            };
            let numsub: redis::RedisResult<(String, i64)> =
                redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query_async(&mut conn).await;
            numsub.is_ok_and(|(_, n)| n >= count)
        }
    })
    .await;
}

async fn complete_via(client: &mut crate::harness::Client, job: &proto::Job, result: &[u8]) {
    client
        .complete_job(proto::CompleteJobRequest {
            job_id: job.id.clone(),
            lease_token: job.lease_token.clone(),
            result: result.to_vec(),
            ..Default::default()
        })
        .await
        .expect("any instance accepts an ack for a lease held on another");
}

#[tokio::test]
async fn an_add_through_one_instance_reaches_a_worker_on_another_at_once() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let a = ServerBuilder::new(&redis).prefix(&prefix).settings(pubsub_only).start().await;
    let b = ServerBuilder::new(&redis).prefix(&prefix).settings(pubsub_only).start().await;
    wait_subscribed(&redis, &a, 2).await;
    let mut producer = a.client().await;
    let mut worker = Worker::open(&b, &["q"], 1).await;
    // The dispatcher's first round (on the stream's arrival) finds nothing; from here on only a
    // wake-up can make B look at the queue before its 10 s safety poll.
    worker.expect_nothing(Duration::from_millis(200)).await;

    let mut latencies = Vec::new();
    for i in 0..5 {
        let added_at = Instant::now();
        let id = add(&mut producer, job("q", "t", format!("{i}").as_bytes())).await;
        let delivered = worker
            .next_job(Duration::from_secs(3))
            .await
            .expect("the job reaches B's worker through the wake-up, not the 10 s poll");
        latencies.push(added_at.elapsed());
        assert_eq!(delivered.id, id);
        worker.complete(&delivered, b"").await.expect("complete");
        // The credit coming back wakes B's dispatcher once; let that round find nothing.
        worker.expect_nothing(Duration::from_millis(200)).await;
    }
    latencies.sort();
    eprintln!("figure: cross-instance add -> delivery latencies {latencies:?}");
    assert!(latencies[latencies.len() - 1] < Duration::from_secs(1), "cross-instance delivery too slow: {latencies:?}");
    assert_eq!(b.stats("q").await.completed, 5);
    a.assert_invariants("q").await;
    b.assert_invariants("q").await;
}

#[tokio::test]
async fn an_ack_through_another_instance_gives_the_credit_back_at_once() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let a = ServerBuilder::new(&redis).prefix(&prefix).settings(pubsub_only).start().await;
    let b = ServerBuilder::new(&redis).prefix(&prefix).settings(pubsub_only).start().await;
    wait_subscribed(&redis, &a, 2).await;
    let mut via_a = a.client().await;
    let first_id = add(&mut via_a, job("q", "t", b"first")).await;
    let second_id = add(&mut via_a, job("q", "t", b"second")).await;
    let mut worker = Worker::open(&b, &["q"], 1).await;
    let first = worker.job().await;
    assert_eq!(first.id, first_id);
    worker.expect_nothing(Duration::from_millis(300)).await;

    let acked_at = Instant::now();
    complete_via(&mut via_a, &first, b"done by B, acked through A").await;
    // Only the release notice on B's channel can free the credit before B's 10 s reconciliation
    // (a revoke here would mean the reconciliation did it).
    let second = worker.next_job(Duration::from_secs(3)).await.expect("B's worker gets its credit back");
    let latency = acked_at.elapsed();
    eprintln!("figure: cross-instance ack -> next delivery {latency:?}");
    assert_eq!(second.id, second_id);
    assert!(latency < Duration::from_secs(1), "credit came back late: {latency:?}");

    complete_via(&mut via_a, &second, b"").await;
    let done = info(&mut via_a, &first_id).await;
    assert_eq!((done.state(), done.result.as_slice()), (JobState::Completed, b"done by B, acked through A".as_slice()));
    let stats = b.stats("q").await;
    assert_eq!((stats.waiting, stats.active, stats.completed), (0, 0, 2));
    worker.expect_nothing(Duration::from_millis(100)).await;
    a.assert_invariants("q").await;
    b.assert_invariants("q").await;
}

#[tokio::test]
async fn without_the_notice_reconciliation_alone_gives_the_credit_back() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    // A talks to Redis as a user that may not PUBLISH: its release notices are lost, as pub/sub
    // may lose them in real life. Everything else it does works.
    let admin = redis::Client::open(redis.url()).expect("url");
    let mut conn = admin.get_multiplexed_async_connection().await.expect("connect");
    let () = redis::cmd("ACL")
        .arg(&["SETUSER", "mute", "on", ">mute", "~*", "&*", "+@all", "-publish"])
        .query_async(&mut conn)
        .await
        .expect("acl");
    let mute_url = format!("{}?user=mute&pass=mute", redis.url());
    let mut mute = redis::Client::open(mute_url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect as mute");
    let denied: redis::RedisResult<i64> = redis::cmd("PUBLISH").arg("x").arg("y").query_async(&mut mute).await;
    assert!(denied.is_err(), "the mute user cannot publish");

    let reconcile_every = Duration::from_secs(1);
    let a = ServerBuilder::new(&redis).redis_url(&mute_url).prefix(&prefix).settings(pubsub_only).start().await;
    let b = ServerBuilder::new(&redis)
        .prefix(&prefix)
        .settings(|s| {
            s.safety_poll = Duration::from_secs(10);
            s.reconcile_every = reconcile_every;
        })
        .start()
        .await;
    wait_subscribed(&redis, &b, 2).await;
    // Adds publish a wake-up from their script, so they go through B.
    let mut via_b = b.client().await;
    let first_id = add(&mut via_b, job("q", "t", b"first")).await;
    let second_id = add(&mut via_b, job("q", "t", b"second")).await;
    let mut worker = Worker::open(&b, &["q"], 1).await;
    let first = worker.job().await;
    assert_eq!(first.id, first_id);
    worker.expect_nothing(Duration::from_millis(300)).await;

    let mut via_a = a.client().await;
    let acked_at = Instant::now();
    complete_via(&mut via_a, &first, b"").await;
    let mut revoked = false;
    let second = loop {
        match worker
            .next_message(reconcile_every * 4)
            .await
            .expect("the reconciliation frees the credit within its interval")
        {
            Message::Revoke(r) => {
                // The reconciliation tells the worker the lease is gone, in case it still runs.
                assert_eq!((r.job_id.as_str(), r.reason()), (first_id.as_str(), RevokeReason::LeaseLost));
                revoked = true;
            }
            Message::Job(j) => break j,
            other => panic!("unexpected {other:?}"),
        }
    };
    let latency = acked_at.elapsed();
    eprintln!("figure: ack with a lost notice -> next delivery {latency:?}");
    assert!(revoked, "the credit was freed by the reconciliation");
    assert_eq!(second.id, second_id);
    assert!(
        // Found gone in one period and confirmed in the next (see `notices::reconcile`).
        latency < reconcile_every * 2 + Duration::from_millis(700),
        "took {latency:?} with reconciliation every {reconcile_every:?}"
    );
    worker.complete(&second, b"").await.expect("complete");
    let stats = b.stats("q").await;
    assert_eq!((stats.waiting, stats.active, stats.completed), (0, 0, 2));
    a.assert_invariants("q").await;
    b.assert_invariants("q").await;
}

/// A lease in Redis naming a live instance that none of its streams holds (what a Redis restarted
/// from an `everysec` AOF after a crash brings back, its completion lost) goes back to the queue
/// within a few reconciliation periods, and then runs; the lease a worker holds is left alone.
#[tokio::test]
async fn a_lease_naming_a_live_instance_that_does_not_hold_it_goes_back() {
    let redis = Redis::start();
    let reconcile_every = Duration::from_millis(300);
    let server = ServerBuilder::new(&redis).settings(|s| s.reconcile_every = reconcile_every).start().await;
    let mut client = server.client().await;
    let held_id = add(&mut client, job("q", "t", b"held")).await;
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let held = worker.job().await;
    assert_eq!(held.id, held_id);
    let instance = held.lease_token.split('.').next().expect("a token names its instance");
    // Leased by hand, with a token naming the instance and a stream it never opened.
    let orphan_id = add(&mut client, job("q", "t", b"orphan")).await;
    let orphan_token = LeaseToken::new(instance, 999, 1);
    let round = server.store.jobs().lease("q", &[orphan_token], 0.0, false).await.expect("lease");
    assert_eq!(round.jobs.len(), 1, "the orphan is leased");
    let planted = Instant::now();
    eventually(reconcile_every * 8, "the orphan's lease to go back", || {
        let (mut client, orphan_id) = (client.clone(), orphan_id.clone());
        async move { info(&mut client, &orphan_id).await.state() == JobState::Waiting }
    })
    .await;
    eprintln!("figure: an orphan lease of a live instance back in {:?}", planted.elapsed());
    let still_held = info(&mut client, &held_id).await;
    assert_eq!(still_held.state(), JobState::Active, "the worker's own lease is left alone");
    assert_eq!(still_held.lost_deliveries, 0);
    worker.complete(&held, b"").await.expect("the worker still holds its lease");
    let orphan = worker.job().await;
    assert_eq!(orphan.id, orphan_id);
    assert_eq!(info(&mut client, &orphan_id).await.lost_deliveries, 0, "not a lost delivery");
    worker.complete(&orphan, b"").await.expect("complete");
    let stats = server.stats("q").await;
    assert_eq!((stats.waiting, stats.active, stats.completed), (0, 0, 2));
    server.assert_invariants("q").await;
}

/// Payload -> how many times a handler finished it.
type Runs = Arc<Mutex<HashMap<String, u32>>>;

fn serve_args(listen: &str, url: &str, prefix: &str) -> Vec<String> {
    [
        "serve",
        "--listen",
        listen,
        "--redis-url",
        url,
        "--key-prefix",
        prefix,
        "--drain-grace",
        "2s",
        "--lease-ttl",
        "2s",
    ]
    .map(String::from)
    .to_vec()
}

/// Adds `count` jobs with unique payloads, alternating instances and switching to the other one
/// when an add fails; the payload is the idempotency key, so a retried add never adds twice.
async fn produce(addrs: [std::net::SocketAddr; 2], count: usize, added: Arc<AtomicUsize>) {
    let mut clients = Vec::new();
    for addr in addrs {
        clients.push(Client::connect(&format!("http://{addr}")).await.expect("connect"));
    }
    for i in 0..count {
        let payload = format!("job-{i:04}");
        let deadline = Instant::now() + Duration::from_secs(15);
        for attempt in 0.. {
            let req = NewJob::new("load", "work").payload(payload.clone()).idempotency_key(&payload).into_request();
            match clients[(i + attempt) % 2].raw().add_job(req).await {
                Ok(_) => break,
                Err(status) => {
                    assert!(Instant::now() < deadline, "cannot add {payload}: {status}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        added.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(8)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_nothing_and_runs_nothing_twice() {
    const N: usize = 300;
    let redis = Redis::start();
    let url = redis.url();
    let prefix = unique_prefix();
    crate::harness::init_test_tracing();
    let mut a = Process::start_async(serve_args("127.0.0.1:0", &url, &prefix)).await;
    let mut b = Process::start_async(serve_args("127.0.0.1:0", &url, &prefix)).await;
    let (addr_a, addr_b) = (a.addr, b.addr);

    // Two workers per instance. A worker reconnects to the same address, which the restarted
    // instance takes over, as it would behind a per-replica address or a load balancer.
    let runs: Runs = Arc::default();
    let (stop, stopped) = watch::channel(false);
    let mut workers = Vec::new();
    for (n, addr) in [addr_a, addr_a, addr_b, addr_b].into_iter().enumerate() {
        let client = Client::connect(&format!("http://{addr}")).await.expect("connect");
        let runs = runs.clone();
        let worker =
            RustWorker::new(client, &["load"]).concurrency(3).worker_id(&format!("w{n}")).handle("work", move |ctx| {
                let runs = runs.clone();
                async move {
                    let payload = String::from_utf8(ctx.payload().to_vec()).expect("utf8");
                    // 20 to 50 ms: enough that every SIGTERM finds jobs running.
                    let ms = 20 + payload.bytes().map(u64::from).sum::<u64>() % 31;
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    *runs.lock().expect("runs").entry(payload.clone()).or_default() += 1;
                    Ok(payload.into_bytes())
                }
            });
        let mut stopped = stopped.clone();
        workers.push(tokio::spawn(worker.run(async move {
            let _ = stopped.wait_for(|s| *s).await;
        })));
    }

    let added = Arc::new(AtomicUsize::new(0));
    let producer = tokio::spawn(produce([addr_a, addr_b], N, added.clone()));
    let reached = |n: usize| {
        let added = added.clone();
        move || {
            let added = added.clone();
            async move { added.load(Ordering::SeqCst) >= n }
        }
    };

    eventually(Duration::from_secs(20), "a third of the jobs added", reached(N / 3)).await;
    let began = Instant::now();
    let status = a.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "A exited with {status:?}");
    let a_down = began.elapsed();
    let a2 = Process::start_async(serve_args(&addr_a.to_string(), &url, &prefix)).await;
    let a_back = began.elapsed();

    eventually(Duration::from_secs(20), "two thirds of the jobs added", reached(2 * N / 3)).await;
    let b_began = Instant::now();
    let status = b.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "B exited with {status:?}");
    let b_down = b_began.elapsed();
    let b2 = Process::start_async(serve_args(&addr_b.to_string(), &url, &prefix)).await;
    let restart_took = began.elapsed();
    producer.await.expect("producer");

    let client = Client::connect(&format!("http://{}", a2.addr)).await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = client.stats("load").await;
        if stats.as_ref().is_ok_and(|s| s.completed == N as u64 && s.waiting + s.active + s.delayed == 0) {
            break;
        }
        if Instant::now() > deadline {
            let problems = crate::harness::invariant_problems(&url, &prefix, "load").await;
            panic!("not every job completed: {stats:?}; invariants: {problems:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = began.elapsed();
    stop.send(true).expect("workers listen");
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(10), worker)
            .await
            .expect("a stopped worker returns")
            .expect("worker task")
            .expect("worker");
    }
    eprintln!(
        "figure: rolling restart: A drained and exited in {a_down:?}, A' serving at {a_back:?}; \
         B drained and exited in {b_down:?}; both restarted after {restart_took:?}; all {N} jobs \
         completed {drained:?} after the first SIGTERM"
    );

    let stats = client.stats("load").await.expect("stats");
    assert_eq!((stats.waiting, stats.delayed, stats.active, stats.completed, stats.dead), (0, 0, 0, N as u64, 0));
    let runs = runs.lock().expect("runs").clone();
    let missing: Vec<String> = (0..N).map(|i| format!("job-{i:04}")).filter(|p| !runs.contains_key(p)).collect();
    assert!(missing.is_empty(), "never run: {missing:?}");
    assert_eq!(runs.len(), N, "only the added payloads ran");
    let twice: Vec<(&String, &u32)> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "ran more than once: {twice:?}");
    assert_invariants_at(&url, &prefix, "load").await;
    drop((a2, b2));
}

#[tokio::test]
async fn a_draining_instance_opens_no_new_streams() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let server = ServerBuilder::new(&redis).prefix(&prefix).drain_grace(Duration::from_secs(3)).start().await;
    let mut client = server.client().await;
    add(&mut client, job("q", "t", b"held")).await;
    let waiting = add(&mut client, job("q", "t", b"waiting")).await;
    let mut holder = Worker::open(&server, &["q"], 1).await;
    let held = holder.job().await;
    let addr = server.addr;
    let stopping = tokio::spawn(server.stop());
    match holder.next_message(Duration::from_secs(3)).await {
        Some(Message::Drain(_)) => {}
        other => panic!("expected drain, got {other:?}"),
    }

    // A worker that finished its jobs and reconnects to the same address, as the Rust worker
    // does after a drain. The instance is going away: it must refuse the stream (UNAVAILABLE)
    // or drain it at once, and never lease it a job.
    let mut late =
        crate::harness::Client::connect(format!("http://{addr}")).await.expect("the transport still accepts acks");
    let opened =
        late.get_job(proto::GetJobRequest { queues: vec!["q".into()], max_in_flight: 1, ..Default::default() }).await;
    let first_message = match opened {
        Err(status) => {
            assert_eq!(status.code(), Code::Unavailable, "{status}");
            None
        }
        Ok(stream) => {
            let mut stream = stream.into_inner();
            tokio::time::timeout(Duration::from_secs(1), stream.message())
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
                .and_then(|m| m.message)
        }
    };
    holder.complete(&held, b"").await.expect("acks go on while draining");
    match first_message {
        None | Some(Message::Drain(_)) => {}
        Some(Message::Job(j)) => {
            panic!("the draining instance leased {} to a stream opened after the drain began", j.id)
        }
        Some(other) => panic!("unexpected {other:?}"),
    }
    stopping.await.expect("stopped");
    let next = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let back = info(&mut next.client().await, &waiting).await;
    assert_eq!(back.state(), JobState::Waiting);
    next.assert_invariants("q").await;
}

#[tokio::test]
async fn a_lease_round_that_ends_during_shutdown_is_not_orphaned() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let server = ServerBuilder::new(&redis).prefix(&prefix).drain_grace(Duration::from_millis(50)).start().await;
    let mut client = server.client().await;
    let held_id = add(&mut client, job("q", "t", b"held")).await;
    let mut holder = Worker::open(&server, &["q"], 1).await;
    assert_eq!(holder.job().await.id, held_id);
    let id = add(&mut client, job("q", "t", b"in the round")).await;

    // Hold a lease round's script call in a paused Redis while the shutdown takes its snapshot
    // of the held leases (only the holder's job), then let both go on: the round ends while
    // the shutdown hands the snapshot back. The pauses are well under the store's 500 ms
    // response timeout, so no call fails.
    redis.signal(libc::SIGSTOP);
    // A stream's arrival wakes its queue's dispatcher at once; the round waits on Redis.
    let mut late = Worker::open(&server, &["q"], 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = tokio::spawn(server.stop());
    tokio::time::sleep(Duration::from_millis(150)).await; // past the 50 ms grace: snapshot taken
    redis.signal(libc::SIGCONT);
    stopping.await.expect("stopped");
    let mut delivered_while_stopping = false;
    while let Some(message) = late.next_message(Duration::from_millis(500)).await {
        delivered_while_stopping |= matches!(message, Message::Job(_));
    }
    drop(holder);

    // Both jobs must come back: handed back at shutdown, or reaped after the lease TTL (1.5 s)
    // by another instance.
    let next = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let mut again = Worker::open(&next, &["q"], 2).await;
    let first = again.job().await;
    assert_eq!(first.id, held_id, "the held job was handed back");
    let back = again.next_job(Duration::from_secs(6)).await;
    let problems = crate::harness::invariant_problems(&redis.url(), &prefix, "q").await;
    let state = info(&mut next.client().await, &id).await.state();
    assert!(
        back.is_some(),
        "job {id} is {state:?} for good (delivered while stopping: {delivered_while_stopping}); \
         invariants: {problems:#?}"
    );
    again.complete(&first, b"").await.expect("complete");
    again.complete(&back.expect("job"), b"").await.expect("complete");
    next.assert_invariants("q").await;
}

#[tokio::test]
async fn a_sigterm_right_after_start_up_is_a_graceful_stop() {
    let redis = Redis::start();
    let url = redis.url();
    let prefix = unique_prefix();
    // As an orchestrator may do: stop a replica the moment it says it listens. Several times,
    // as the window is short.
    for _ in 0..5 {
        let mut jobwire = Process::start_async(serve_args("127.0.0.1:0", &url, &prefix)).await;
        jobwire.signal(libc::SIGTERM);
        let status = jobwire.wait_exit(Duration::from_secs(10)).await;
        assert!(status.success(), "a SIGTERM after the `listening` line must drain and exit 0, got {status:?}");
    }
    assert_invariants_at(&url, &prefix, "q").await;
}

#[tokio::test]
async fn an_instance_whose_acl_rules_predate_function_list_still_loads_its_library() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let admin = redis::Client::open(redis.url()).expect("url");
    let mut conn = admin.get_multiplexed_async_connection().await.expect("connect");
    // The rules an earlier release documented: without FUNCTION LIST, which a start now asks
    // before it loads the library.
    let rules = jobwire::store::acl_rules(&prefix).replace(" +function|list", "");
    assert!(!rules.contains("function|list"), "{rules}");
    let mut setuser = redis::cmd("ACL");
    setuser.arg(&["SETUSER", "older", "reset", "on", ">older"]).arg(rules.split(' ').collect::<Vec<_>>());
    let () = setuser.query_async(&mut conn).await.expect("ACL SETUSER");
    let url = format!("{}?user=older&pass=older", redis.url());
    let server = ServerBuilder::new(&redis).redis_url(&url).prefix(&prefix).start().await;
    let mut client = server.client().await;
    add(&mut client, job("q", "t", b"x")).await;
    assert_eq!(server.stats("q").await.waiting, 1);
    let libraries: Vec<redis::Value> = redis::cmd("FUNCTION").arg("LIST").query_async(&mut conn).await.expect("list");
    assert_eq!(libraries.len(), 1, "the library was loaded: {libraries:?}");
}
