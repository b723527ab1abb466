//! `jobwire work` (a command per job), the admin CLI commands, and a processor run in a session
//! with its result awaited, end to end with the Rust client.

use std::{path::Path, process::Stdio, time::Duration};

use jobwire::{
    client::{Client, ClientError, JobError, NewJob, Worker},
    proto::{self, JobState},
};

use crate::harness::{Redis, Server, eventually, info, pid_t};

fn cli(server: &Server, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobwire"))
        .args(args)
        .env("JOBWIRE_ADDR", server.addr.to_string())
        .output()
        .expect("run jobwire");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `jobwire work` as a child process, stopped (SIGTERM) on drop.
struct WorkProcess(std::process::Child);

impl WorkProcess {
    fn start(server: &Server, extra: &[&str], script: &str) -> Self {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_jobwire"))
            .args(["work", "--addr", &server.addr.to_string(), "--queue", "q"])
            .args(extra)
            .args(["--", "sh", "-c", script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn jobwire work");
        Self(child)
    }
}

impl Drop for WorkProcess {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid_t(self.0.id()), libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

async fn client(server: &Server) -> Client {
    Client::connect(&format!("http://{}", server.addr)).await.expect("client")
}

const SCRIPT: &str = r#"
case "$JOBWIRE_JOB_TYPE" in
  echo) printf '%s|%s|%s' "$(cat)" "$JOBWIRE_QUEUE" "$JOBWIRE_ATTEMPT" ;;
  fail) echo "boom on attempt $JOBWIRE_ATTEMPT" >&2; exit 3 ;;
  bad)  echo "bad input" >&2; exit 65 ;;
  hang) sleep 300 & echo $! > "$PIDFILE"; wait ;;
esac
"#;

#[tokio::test]
async fn work_runs_a_command_per_job() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let client = client(&server).await;
    let _work = WorkProcess::start(&server, &["--concurrency", "2"], SCRIPT);
    let result = client.run(NewJob::new("q", "echo").payload("hello"), Duration::from_secs(10)).await.expect("echo");
    assert_eq!(result, b"hello|q|1", "stdin in, stdout out, metadata in the environment");

    let failing = NewJob::new("q", "fail").max_attempts(2).fixed_backoff(Duration::from_millis(10));
    match client.run(failing, Duration::from_secs(10)).await {
        Err(ClientError::Dead { error, .. }) => assert_eq!(error, "boom on attempt 2"),
        other => panic!("expected dead, got {other:?}"),
    }
    let id = client.add(NewJob::new("q", "bad").max_attempts(5)).await.expect("add");
    match client.wait_for_result(&id, Duration::from_secs(10)).await {
        Err(ClientError::Dead { error, .. }) => assert_eq!(error, "bad input"),
        other => panic!("expected dead, got {other:?}"),
    }
    let dead = client.info(&id).await.expect("info");
    assert_eq!(dead.attempts, 1, "the no-retry exit code is not retried");
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn work_with_prefetch_runs_every_job_once() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let client = client(&server).await;
    let _work = WorkProcess::start(&server, &["--concurrency", "1", "--prefetch", "2"], SCRIPT);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(client.add(NewJob::new("q", "echo").payload(format!("{i}"))).await.expect("add"));
    }
    for (i, id) in ids.iter().enumerate() {
        let result = client.wait_for_result(id, Duration::from_secs(10)).await.expect("echo");
        assert_eq!(result, format!("{i}|q|1").into_bytes());
        assert_eq!(client.info(id).await.expect("info").lost_deliveries, 0);
    }
    server.assert_invariants("q").await;
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[tokio::test]
async fn work_kills_the_whole_process_group_on_revoke() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let client = client(&server).await;
    let dir = tempfile::tempdir().expect("dir");
    let pidfile = dir.path().join("pid");
    let script = format!("PIDFILE={} ; {SCRIPT}", pidfile.display());
    let _work = WorkProcess::start(&server, &[], &script);
    let id =
        client.add(NewJob::new("q", "hang").timeout(Duration::from_millis(800)).max_attempts(1)).await.expect("add");
    let mut pid = None;
    eventually(Duration::from_secs(10), "the background child to start", || {
        pid = read_pid(&pidfile);
        std::future::ready(pid.is_some())
    })
    .await;
    let pid = pid.expect("pid");
    assert!(alive(pid));
    eventually(Duration::from_secs(10), "the timed-out job's process group to be killed", || {
        std::future::ready(!alive(pid))
    })
    .await;
    match client.wait_for_result(&id, Duration::from_secs(5)).await {
        Err(ClientError::Dead { error, .. }) => assert_eq!(error, "timeout"),
        other => panic!("expected dead by timeout, got {other:?}"),
    }
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_processor_runs_in_a_session_and_its_result_is_awaited() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let client = client(&server).await;
    let session =
        client.create_session("chat", Some("user-7"), &serde_json::json!({"turns": 0}), 1).await.expect("session");
    let worker = Worker::new(client.clone(), &["chat"]).concurrency(4).handle("reply", |ctx| async move {
        let state = ctx.session_state().ok_or_else(|| JobError::permanent("not in a session"))?;
        let turns = state["turns"].as_u64().unwrap_or(0) + 1;
        let said: String = ctx.json()?;
        ctx.set_session_state(&serde_json::json!({"turns": turns}));
        Ok(format!("reply {turns} to {said}").into_bytes())
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    let mut ids = Vec::new();
    for word in ["hi", "how", "bye"] {
        let job = NewJob::new("chat", "reply").session(&session.id).json(&serde_json::json!(word));
        ids.push(client.add(job).await.expect("add"));
    }
    let mut results = Vec::new();
    for id in &ids {
        results.push(
            String::from_utf8(client.wait_for_result(id, Duration::from_secs(10)).await.expect("result"))
                .expect("utf8"),
        );
    }
    assert_eq!(results, ["reply 1 to hi", "reply 2 to how", "reply 3 to bye"], "in order, each seeing the last state");
    assert_eq!(client.session_state(&session.id).await.expect("state"), serde_json::json!({"turns": 3}));
    let _ = stop.send(());
    running.await.expect("worker task").expect("worker");
    server.assert_invariants("chat").await;
}

// The CLI runs as a blocking child process: the in-process server needs threads of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_of_the_cli() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut raw = server.client().await;

    let (ok, out, err) = cli(&server, &["pause", "q"]);
    assert!(ok, "{err}");
    assert!(out.contains("paused"));
    let (_, id, _) = cli(&server, &["add", "--queue", "q", "--type", "t", "--payload", "{}"]);
    let id = id.trim().to_owned();
    assert!(server.stats("q").await.paused);
    let (ok, out, _) = cli(&server, &["jobs", "q", "--json"]);
    assert!(ok);
    let listed: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(listed[0]["id"], id.as_str());
    let (ok, _, err) = cli(&server, &["cancel", &id]);
    assert!(ok, "{err}");
    assert_eq!(info(&mut raw, &id).await.state(), JobState::Cancelled);
    let (ok, _, _) = cli(&server, &["resume", "q"]);
    assert!(ok);
    assert!(!server.stats("q").await.paused);

    let (ok, sid, err) = cli(&server, &["sessions", "create", "q", "--name", "s1", "--state", r#"{"a":1}"#]);
    assert!(ok, "{err}");
    assert_eq!(sid.trim(), "q/s1");
    let (ok, out, _) = cli(&server, &["sessions", "get", "q/s1"]);
    assert!(ok);
    let got: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(got["state"], serde_json::json!({"a": 1}));
    let (ok, out, _) = cli(&server, &["sessions", "list", "q"]);
    assert!(ok && out.contains("q/s1"));
    let (ok, _, _) = cli(&server, &["sessions", "delete", "q/s1"]);
    assert!(ok);
    let (ok, _, err) = cli(&server, &["sessions", "get", "q/s1"]);
    assert!(!ok && err.contains("does not exist"), "{err}");

    // A dead job, retried from the CLI.
    let mut worker = crate::harness::Worker::open(&server, &["d"], 1).await;
    let dead = crate::harness::add(&mut raw, crate::harness::job("d", "t", b"")).await;
    let j = worker.job().await;
    worker.fail(&j, "no", false).await;
    let (ok, _, err) = cli(&server, &["retry", &dead]);
    assert!(ok, "{err}");
    assert_eq!(worker.job().await.id, dead);
    let (ok, out, _) = cli(&server, &["workers", "--json"]);
    assert!(ok);
    let _: serde_json::Value = serde_json::from_str(&out).expect("json");
    server.assert_invariants("q").await;
    let _ = proto::JobState::Waiting;
}
