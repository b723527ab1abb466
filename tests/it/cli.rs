//! The client commands of the `jobwire` binary (`add`, `stats`, `health`, and how any command
//! reports a failure), run as real processes against an in-process server: what they print and
//! how they exit.

use std::time::Duration;

use jobwire::proto::JobState;

use crate::{
    admission::remembered_as_generated,
    harness::{Redis, Server, Worker, add, eventually, info, job, run_jobwire},
};

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn add_prints_a_job_id_and_wait_prints_the_result() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let addr = server.addr.to_string();
    let ran = run_jobwire(
        &["add", "--addr", &addr, "--queue", "emails", "--type", "welcome", "--payload", r#"{"to":"a@b.c"}"#],
        LIMIT,
    )
    .await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let id = ran.stdout.trim().to_owned();
    assert!(id.starts_with("emails/") && id.len() == "emails/".len() + 26, "a job id on stdout: {:?}", ran.stdout);
    let mut client = server.client().await;
    let added = info(&mut client, &id).await;
    assert_eq!(
        (added.state(), added.r#type.as_str(), added.payload.as_slice()),
        (JobState::Waiting, "welcome", br#"{"to":"a@b.c"}"#.as_slice())
    );

    let waiting = tokio::spawn({
        let addr = addr.clone();
        async move {
            run_jobwire(
                &["add", "--addr", &addr, "--queue", "emails", "--type", "receipt", "--payload", "42", "--wait", "15s"],
                LIMIT,
            )
            .await
        }
    });
    let mut worker = Worker::open(&server, &["emails"], 2).await;
    let first = worker.job().await;
    assert_eq!(first.id, id);
    worker.complete(&first, b"").await.expect("complete");
    let second = worker.job().await;
    assert_eq!(second.payload, b"42");
    worker.complete(&second, b"receipt sent").await.expect("complete");
    let ran = waiting.await.expect("add --wait");
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(ran.stdout, "receipt sent\n", "the result, on stdout");
    assert!(ran.stderr.contains(&second.id), "the id goes to stderr: {}", ran.stderr);
    server.assert_invariants("emails").await;
}

#[tokio::test]
async fn add_marks_the_key_it_generates_and_not_one_given_with_the_flag() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let addr = server.addr.to_string();
    let mut client = server.client().await;
    for (extra, generated) in [(&[][..], true), (&["--idempotency-key", "order-17"][..], false)] {
        let mut args = vec!["add", "--addr", &addr, "--queue", "q", "--type", "t"];
        args.extend(extra);
        let ran = run_jobwire(&args, LIMIT).await;
        assert_eq!(ran.code, Some(0), "{}", ran.stderr);
        assert_eq!(remembered_as_generated(&mut client, ran.stdout.trim()).await, Some(generated), "{args:?}");
    }
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn add_wait_fails_when_the_job_dies() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let addr = server.addr.to_string();
    let waiting = tokio::spawn(async move {
        run_jobwire(&["add", "--addr", &addr, "--queue", "q", "--type", "t", "--wait", "15s"], LIMIT).await
    });
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let delivered = worker.job().await;
    worker.fail(&delivered, "no such user", false).await;
    let ran = waiting.await.expect("add --wait");
    assert_ne!(ran.code, Some(0));
    assert!(ran.stdout.is_empty(), "no result: {:?}", ran.stdout);
    assert!(ran.stderr.contains("dead") && ran.stderr.contains("no such user"), "{}", ran.stderr);
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn stats_prints_a_table_and_json_with_the_counts() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    for i in 0..4 {
        add(&mut client, job("emails", "t", format!("{i}").as_bytes())).await;
    }
    add(&mut client, job("other", "t", b"")).await;
    let mut worker = Worker::open(&server, &["emails"], 2).await;
    let first = worker.job().await;
    let _second = worker.job().await;
    worker.complete(&first, b"").await.expect("complete");
    let _third = worker.job().await;
    // emails: 1 waiting, 2 active (the worker's whole credit), 1 completed; other: 1 waiting.
    let s = server.stats("emails").await;
    let (waiting, active) = (s.waiting, s.active);
    assert_eq!((waiting, active, s.completed), (1, 2, 1));
    let addr = server.addr.to_string();

    let table = run_jobwire(&["stats", "--addr", &addr], LIMIT).await;
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    let mut lines = table.stdout.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["QUEUE", "WAITING", "DELAYED", "ACTIVE", "COMPLETED", "DEAD", "EVICTED", "PAUSED", "OLDEST"]);
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    let emails = rows
        .iter()
        .find(|r| r.first() == Some(&"emails"))
        .unwrap_or_else(|| panic!("a row for emails: {}", table.stdout));
    let expected =
        [waiting.to_string(), "0".into(), active.to_string(), "1".into(), "0".into(), "0".into(), "no".into()];
    assert_eq!(&emails[1..8], expected, "{}", table.stdout);
    assert!(emails[8].ends_with('s'), "the oldest age: {}", emails[8]);
    assert!(rows.iter().any(|r| r.first() == Some(&"other")));

    let json = run_jobwire(&["stats", "--addr", &addr, "--json"], LIMIT).await;
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    let parsed: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON on stdout");
    let queues = parsed.as_array().expect("an array of queues");
    assert_eq!(queues.len(), 2);
    let emails = queues.iter().find(|q| q["queue"] == "emails").expect("emails");
    assert_eq!(emails["waiting"], waiting);
    assert_eq!(emails["active"], active);
    assert_eq!(emails["completed"], 1);
    assert_eq!(emails["dead"], 0);
    assert_eq!(emails["paused"], false);
    assert!(emails["oldest_waiting_age_seconds"].is_number());

    let one = run_jobwire(&["stats", "--addr", &addr, "--json", "other"], LIMIT).await;
    let parsed: serde_json::Value = serde_json::from_str(&one.stdout).expect("JSON on stdout");
    assert_eq!(parsed.as_array().map(Vec::len), Some(1));
    assert_eq!(parsed[0]["queue"], "other");
    assert_eq!(parsed[0]["waiting"], 1);
    server.assert_invariants("emails").await;
    server.assert_invariants("other").await;
}

async fn health(addr: &str, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["health", "--addr", addr];
    args.extend_from_slice(extra);
    let ran = run_jobwire(&args, LIMIT).await;
    (ran.code, ran.stdout + &ran.stderr)
}

#[tokio::test]
async fn health_exits_0_when_serving_and_2_when_nothing_listens() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let addr = server.addr.to_string();
    let (code, out) = health(&addr, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("SERVING"), "{out}");
    let (code, out) = health(&addr, &["--service", "jobwire.v1.QueueService"]).await;
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = health(&addr, &["--service", "no.such.Service"]).await;
    assert_eq!(code, Some(3), "an unknown service is an RPC failure: {out}");

    // A port that was free a moment ago: nothing listens there.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let nowhere = free.local_addr().expect("addr").to_string();
    drop(free);
    let (code, out) = health(&nowhere, &[]).await;
    assert_eq!(code, Some(2), "{out}");
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn health_exits_4_while_redis_is_down() {
    let mut redis = Redis::start();
    let server = Server::start(&redis).await;
    let addr = server.addr.to_string();
    assert_eq!(health(&addr, &[]).await.0, Some(0));

    redis.kill();
    eventually(LIMIT, "health to report NOT_SERVING", || {
        let addr = addr.clone();
        async move { health(&addr, &[]).await.0 == Some(4) }
    })
    .await;
    let (code, out) = health(&addr, &["--service", "jobwire.v1.QueueService"]).await;
    assert_eq!(code, Some(4), "{out}");
    assert!(out.contains("NotServing"), "{out}");

    redis.restart();
    eventually(LIMIT, "health to report SERVING again", || {
        let addr = addr.clone();
        async move { health(&addr, &[]).await.0 == Some(0) }
    })
    .await;
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn serve_refuses_an_idempotency_window_of_zero_at_start() {
    for flag in ["--idempotency-window", "--idempotency-retry-window"] {
        let args = ["serve", "--listen", "127.0.0.1:0", "--redis-url", "redis://127.0.0.1:1", flag, "0s"];
        let ran = run_jobwire(&args, LIMIT).await;
        assert_eq!(ran.code, Some(1), "{}", ran.stderr);
        assert!(ran.stderr.contains(&format!("{flag} must be at least 1ms")), "{}", ran.stderr);
    }
}

#[tokio::test]
async fn a_refused_call_prints_one_line_with_the_status_and_exits_1() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let addr = server.addr.to_string();
    let ran = run_jobwire(&["cancel", "--addr", &addr, "q/01JD8Y3V6Q0000000000000000"], LIMIT).await;
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert_eq!(ran.stderr.lines().count(), 1, "one line: {:?}", ran.stderr);
    assert!(
        ran.stderr.starts_with("jobwire: NOT_FOUND: job_id: job q/01JD8Y3V6Q0000000000000000 does not exist"),
        "the status and the server's message: {:?}",
        ran.stderr
    );
    assert!(ran.stdout.is_empty(), "{:?}", ran.stdout);
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_server_out_of_reach_prints_one_line_and_exits_3() {
    // A port that was free a moment ago: nothing listens there.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let nowhere = free.local_addr().expect("addr").to_string();
    drop(free);
    let ran = run_jobwire(&["stats", "--addr", &nowhere], LIMIT).await;
    assert_eq!(ran.code, Some(3), "{}", ran.stderr);
    assert_eq!(ran.stderr.lines().count(), 1, "one line: {:?}", ran.stderr);
    assert!(ran.stderr.starts_with(&format!("jobwire: cannot connect to http://{nowhere}")), "{:?}", ran.stderr);
}
