//! The binary's side of tokens: `serve` refuses a non-loopback address without tokens unless
//! told (`--insecure-no-auth`, logged at WARN), with the embedded Redis too; `jobwire token`
//! edits the file and prints only the secret; the CLI and `jobwire work` send their `--token`
//! (`JOBWIRE_TOKEN`); SIGHUP reloads the file; no token reaches the log or the metrics, and
//! every admin action writes one audit line.

use std::{process::Command, time::Duration};

use jobwire::{
    auth::{Role, SECRET_PREFIX, TokenFile},
    client::{Client, NewJob},
    proto,
};
use tonic::Code;

use super::{Secured, Tokens, end_of, next_job, spec};
use crate::harness::{
    Process, Redis, eventually, jobwire_command, run_command, run_jobwire, unique_prefix, wait_until,
};

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn off_loopback_it_refuses_to_serve_without_tokens_unless_told() {
    let redis = Redis::start();
    let url = redis.url();
    let refused = run_jobwire(&["serve", "--listen", "0.0.0.0:0", "--redis-url", &url], LIMIT).await;
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("loopback")
            && refused.stderr.contains("--auth-tokens")
            && refused.stderr.contains("--insecure-no-auth"),
        "the refusal says why and what to do: {}",
        refused.stderr
    );

    // The embedded Redis is not even started.
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut cmd = jobwire_command(&["serve"]);
    cmd.env("JOBWIRE_LISTEN", "0.0.0.0:0").env("JOBWIRE_DATA_DIR", &data).env_remove("JOBWIRE_REDIS_URL");
    let embedded = run_command(cmd, LIMIT).await;
    assert_eq!(embedded.code, Some(1), "{}", embedded.stderr);
    assert!(embedded.stderr.contains("--auth-tokens"), "{}", embedded.stderr);
    assert!(!data.join("redis.sock").exists(), "no redis-server was started");

    // Told, it serves, and says so at WARN.
    let log = dir.path().join("insecure.log");
    let mut insecure = Command::new(env!("CARGO_BIN_EXE_jobwire"));
    insecure.args(["serve", "--listen", "0.0.0.0:0", "--redis-url", &url, "--key-prefix", &unique_prefix()]);
    insecure.env("JOBWIRE_INSECURE_NO_AUTH", "true").env("NO_COLOR", "1");
    let mut process = Process::start_logging(&mut insecure, std::fs::File::create(&log).expect("log file"));
    let mut raw = process.client().await;
    raw.stats(proto::StatsRequest { queue: "q".into() }).await.expect("no token needed");
    assert!(process.terminate(LIMIT).await.success());
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.lines().any(|l| l.contains("WARN") && l.contains("WITHOUT AUTHENTICATION")), "{text}");
}

#[tokio::test]
async fn with_tokens_the_embedded_redis_serves_off_loopback() {
    let tokens = Tokens::write(vec![spec("ops", Role::Admin)]);
    let data = tokens.dir().join("data");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jobwire"));
    cmd.args(["serve", "--listen", "0.0.0.0:0", "--data-dir"]).arg(&data).env("JOBWIRE_AUTH_TOKENS", tokens.path());
    let mut process = Process::start_command(&mut cmd);
    assert!(process.addr.ip().is_unspecified());
    let addr = format!("http://127.0.0.1:{}", process.addr.port());
    let ops = Client::connect(&addr).await.expect("connect").with_token(tokens.secret("ops")).expect("token");
    let id = ops.add(NewJob::new("q", "t")).await.expect("adds with a token");
    assert_eq!(ops.info(&id).await.expect("info").state(), proto::JobState::Waiting);
    let anonymous = Client::connect(&addr).await.expect("connect");
    assert!(
        matches!(anonymous.stats("q").await, Err(jobwire::client::ClientError::Rpc(s)) if s.code() == Code::Unauthenticated)
    );
    assert!(process.terminate(LIMIT).await.success());
}

#[tokio::test]
async fn token_create_prints_only_the_secret_and_list_and_revoke_edit_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("tokens.json");
    let file_arg = file.to_str().expect("utf-8 path");
    let create = |args: &[&str]| {
        let mut all = vec!["token", "create", "--file", file_arg];
        all.extend_from_slice(args);
        all.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_jobwire(&args, LIMIT).await
    };
    let ops = run(create(&["--name", "ops", "--role", "admin"])).await;
    assert_eq!(ops.code, Some(0), "{}", ops.stderr);
    let secret = ops.stdout.strip_suffix('\n').expect("one line");
    assert!(secret.starts_with(SECRET_PREFIX) && secret.len() == SECRET_PREFIX.len() + 64 && !secret.contains('\n'));
    assert!(ops.stderr.contains("ops") && !ops.stderr.contains(secret), "{}", ops.stderr);
    let app = run(create(&["--name", "app", "--role", "producer", "--queues", "emails,jobs-*"])).await;
    assert_eq!(app.code, Some(0), "{}", app.stderr);
    let dash = run(create(&["--name", "dash", "--role", "reader", "--reveal", "results,payloads"])).await;
    assert_eq!(dash.code, Some(0), "{}", dash.stderr);

    let stored = std::fs::read_to_string(&file).expect("the file");
    assert!(!stored.contains(secret) && !stored.contains(app.stdout.trim()), "the file holds no secret");
    let parsed = TokenFile::load(&file).expect("valid");
    assert_eq!(parsed.tokens[1].queues, Some(vec!["emails".to_owned(), "jobs-*".to_owned()]));
    assert_eq!(parsed.tokens[0].sha256, Some(hex(jobwire::auth::digest(secret))));

    let taken = run(create(&["--name", "ops", "--role", "reader"])).await;
    assert_eq!(taken.code, Some(1));
    assert!(taken.stderr.contains("another entry has this name") && taken.stdout.is_empty(), "{}", taken.stderr);
    let bad_glob = run(create(&["--name", "x", "--role", "worker", "--queues", "a*b"])).await;
    assert_eq!(bad_glob.code, Some(1), "{}", bad_glob.stderr);
    let bad_role = run(create(&["--name", "x", "--role", "root"])).await;
    assert_eq!(bad_role.code, Some(2), "a wrong command line: {}", bad_role.stderr);

    let list = run_jobwire(&["token", "list", "--file", file_arg], LIMIT).await;
    assert_eq!(list.code, Some(0), "{}", list.stderr);
    for expected in ["ops", "admin", "app", "producer", "emails,jobs-*", "dash", "results,payloads"] {
        assert!(list.stdout.contains(expected), "{expected} in {}", list.stdout);
    }
    assert!(!list.stdout.contains(SECRET_PREFIX), "{}", list.stdout);
    let json = run_jobwire(&["token", "list", "--file", file_arg, "--json"], LIMIT).await;
    let rows: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(rows.as_array().map(Vec::len), Some(3));

    let revoked = run_jobwire(&["token", "revoke", "--file", file_arg, "--name", "app"], LIMIT).await;
    assert_eq!(revoked.code, Some(0), "{}", revoked.stderr);
    let names: Vec<_> = TokenFile::load(&file).expect("valid").tokens.into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["ops", "dash"]);
    let again = run_jobwire(&["token", "revoke", "--file", file_arg, "--name", "app"], LIMIT).await;
    assert_eq!(again.code, Some(1));
    assert!(again.stderr.contains("no token named \"app\""), "{}", again.stderr);
}

fn hex(digest: [u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn the_cli_and_jobwire_work_send_their_token() {
    let secured = Secured::start(vec![
        spec("app", Role::Producer).queues(&["emails"]),
        spec("runner", Role::Worker),
        spec("ops", Role::Admin),
    ])
    .await;
    let (server, tokens) = (&secured.server, &secured.tokens);
    let addr = server.addr.to_string();
    let add = |token: Option<&str>, queue: &str, wait: bool| {
        let mut args = vec!["add", "--addr", &addr, "--queue", queue, "--type", "t", "--payload", "hi"];
        if wait {
            args.extend(["--wait", "15s"]);
        }
        let mut cmd = jobwire_command(&args);
        cmd.env_remove("JOBWIRE_TOKEN");
        if let Some(token) = token {
            cmd.env("JOBWIRE_TOKEN", token);
        }
        run_command(cmd, LIMIT)
    };
    let anonymous = add(None, "emails", false).await;
    assert_eq!(anonymous.code, Some(1));
    assert!(anonymous.stderr.contains("UNAUTHENTICATED"), "{}", anonymous.stderr);
    let outside = add(Some(tokens.secret("app")), "other", false).await;
    assert_eq!(outside.code, Some(1));
    assert!(outside.stderr.contains("PERMISSION_DENIED") && outside.stderr.contains("other"), "{}", outside.stderr);
    assert!(!outside.stderr.contains(tokens.secret("app")));

    let stats = run_jobwire(&["stats", "--addr", &addr, "--token", tokens.secret("ops"), "emails"], LIMIT).await;
    assert_eq!(stats.code, Some(0), "--token works as the variable does: {}", stats.stderr);
    let help = run_command(
        {
            let mut cmd = jobwire_command(&["stats", "--help"]);
            cmd.env("JOBWIRE_TOKEN", tokens.secret("ops"));
            cmd
        },
        LIMIT,
    )
    .await;
    assert!(help.stdout.contains("JOBWIRE_TOKEN") && !help.stdout.contains(tokens.secret("ops")), "{}", help.stdout);

    // The worker's token is not handed to the command it runs.
    let mut work = jobwire_command(&[
        "work",
        "--addr",
        &addr,
        "--queue",
        "emails",
        "--",
        "sh",
        "-c",
        "printf '%s/%s' \"$(cat)\" \"${JOBWIRE_TOKEN:-none}\"",
    ]);
    work.env("JOBWIRE_TOKEN", tokens.secret("runner")).stdout(std::process::Stdio::null());
    let mut worker = work.spawn().expect("jobwire work starts");
    let ran = add(Some(tokens.secret("app")), "emails", true).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(ran.stdout.trim(), "hi/none");
    worker.kill().await.expect("stopped");
    server.assert_invariants("emails").await;
}

#[tokio::test]
async fn sighup_reloads_the_token_file_and_ends_the_streams_of_a_revoked_token() {
    let redis = Redis::start();
    let tokens = Tokens::write(vec![spec("ops", Role::Admin), spec("runner", Role::Worker)]);
    let log = tokens.dir().join("server.log");
    let prefix = unique_prefix();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jobwire"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--redis-url", &redis.url(), "--key-prefix", &prefix]);
    cmd.arg("--auth-tokens").arg(tokens.path()).env("NO_COLOR", "1");
    let process = Process::start_logging(&mut cmd, std::fs::File::create(&log).expect("log file"));
    let addr = format!("http://{}", process.addr);
    let ops = Client::connect(&addr).await.expect("connect").with_token(tokens.secret("ops")).expect("token");
    let runner = Client::connect(&addr).await.expect("connect").with_token(tokens.secret("runner")).expect("token");
    let req = proto::GetJobRequest { queues: vec!["q".into()], max_in_flight: 1, ..Default::default() };
    let mut stream = runner.raw().get_job(req).await.expect("opens").into_inner();
    let id = ops.add(NewJob::new("q", "t")).await.expect("add");
    assert_eq!(next_job(&mut stream).await.id, id);

    let revoke = ["token", "revoke", "--file", tokens.path().to_str().expect("utf-8"), "--name", "runner"];
    assert_eq!(run_jobwire(&revoke, LIMIT).await.code, Some(0));
    process.signal(libc::SIGHUP);
    let ended = tokio::time::timeout(Duration::from_secs(1), end_of(stream))
        .await
        .expect("the stream ends within a second of the SIGHUP");
    assert_eq!(ended.map(|s| s.code()), Some(Code::Unauthenticated));
    eventually(Duration::from_secs(1), "the job ready again", || async {
        ops.info(&id).await.is_ok_and(|job| job.state() == proto::JobState::Waiting)
    })
    .await;

    // A broken file is refused whole: the tokens loaded before stay in force.
    std::fs::write(tokens.path(), "{ not json").expect("write");
    process.signal(libc::SIGHUP);
    wait_until(LIMIT, "the refusal in the log", || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains("token file NOT reloaded"))
    });
    ops.stats("q").await.expect("the old tokens still work");
    crate::harness::assert_invariants_at(&redis.url(), &prefix, "q").await;
}

#[tokio::test]
async fn no_token_reaches_the_log_or_the_metrics_and_each_admin_action_is_audited() {
    let redis = Redis::start();
    let tokens = Tokens::write(vec![
        spec("ops", Role::Admin),
        spec("app", Role::Producer),
        spec("runner", Role::Worker),
        spec("dash", Role::Reader),
    ]);
    let log = tokens.dir().join("server.log");
    let prefix = unique_prefix();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jobwire"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--redis-url", &redis.url(), "--key-prefix", &prefix]);
    cmd.args(["--metrics-listen", "127.0.0.1:0", "--drain-grace", "200ms"]).arg("--auth-tokens").arg(tokens.path());
    cmd.env("JOBWIRE_LOG", "trace").env("NO_COLOR", "1");
    let mut process = Process::start_logging(&mut cmd, std::fs::File::create(&log).expect("log file"));
    let addr = format!("http://{}", process.addr);
    let connect = |token: String| {
        let addr = addr.clone();
        async move { Client::connect(&addr).await.expect("connect").with_token(&token).expect("token") }
    };
    let (ops, app, runner, dash) = (
        connect(tokens.secret("ops").into()).await,
        connect(tokens.secret("app").into()).await,
        connect(tokens.secret("runner").into()).await,
        connect(tokens.secret("dash").into()).await,
    );
    let guessed = format!("{SECRET_PREFIX}{}", "5eca".repeat(16));
    let stranger = connect(guessed.clone()).await;

    // Every kind of call, refused ones included.
    let done = app.add(NewJob::new("audit", "t").payload("p")).await.expect("add");
    let dead = app.add(NewJob::new("audit", "t").max_attempts(1)).await.expect("add");
    let req = proto::GetJobRequest { queues: vec!["audit".into()], max_in_flight: 2, ..Default::default() };
    let mut stream = runner.raw().get_job(req).await.expect("opens").into_inner();
    for job in [next_job(&mut stream).await, next_job(&mut stream).await] {
        let mut raw = runner.raw();
        if job.id == done {
            let req = proto::CompleteJobRequest { job_id: job.id, lease_token: job.lease_token, ..Default::default() };
            raw.complete_job(req).await.expect("complete");
        } else {
            let req = proto::FailJobRequest { job_id: job.id, lease_token: job.lease_token, ..Default::default() };
            raw.fail_job(req).await.expect("fail");
        }
    }
    dash.list_queues().await.expect("read");
    dash.info(&done).await.expect("read");
    assert!(stranger.stats("audit").await.is_err());
    assert!(app.cancel(&done).await.is_err(), "a producer may not cancel");
    let pending = app.add(NewJob::new("audit", "t").delay(Duration::from_secs(3600))).await.expect("add");

    // Seven admin actions, each one audit line.
    let mut raw = ops.raw();
    ops.cancel(&pending).await.expect("cancel");
    raw.pause_queue(proto::PauseQueueRequest { queue: "audit".into() }).await.expect("pause");
    raw.resume_queue(proto::ResumeQueueRequest { queue: "audit".into() }).await.expect("resume");
    raw.retry_job(proto::RetryJobRequest { job_id: dead.clone() }).await.expect("retry");
    raw.retry_dead_jobs(proto::RetryDeadJobsRequest { queue: "audit".into(), limit: 10 }).await.expect("retry all");
    raw.delete_job(proto::DeleteJobRequest { job_id: done.clone() }).await.expect("delete");
    let states = vec![proto::JobState::Cancelled as i32];
    raw.purge_queue(proto::PurgeQueueRequest { queue: "audit".into(), states }).await.expect("purge");

    // A reader revoked while it follows a job, and then refused.
    let watch = dash.raw().watch_job(proto::WatchJobRequest { job_id: dead.clone() }).await.expect("watch");
    tokens.remove("dash");
    process.signal(libc::SIGHUP);
    let ended = tokio::time::timeout(LIMIT, end_of(watch.into_inner())).await.expect("the watch ends");
    assert_eq!(ended.map(|s| s.code()), Some(Code::Unauthenticated));
    assert!(dash.stats("audit").await.is_err());

    let metrics = process.metrics_addr.expect("metrics are served");
    let (_, exposed) = crate::metrics::http_get(metrics, "/metrics").await;
    assert!(process.terminate(LIMIT).await.success());
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.lines().count() > 100, "a trace-level log was written: {} lines", text.lines().count());
    for secret in tokens.all_secrets().chain([guessed.as_str()]) {
        assert!(!text.contains(secret), "a token is in the log");
        assert!(!text.contains(&secret[SECRET_PREFIX.len()..]), "a token is in the log");
        assert!(!exposed.contains(secret), "a token is in the metrics");
    }
    for name in ["ops", "app", "runner", "dash"] {
        assert!(!exposed.contains(&format!("\"{name}\"")), "no token name is a metric label: {exposed}");
    }

    let audit: Vec<&str> = text.lines().filter(|l| l.contains("jobwire::audit")).collect();
    let expected = [
        ("CancelJob", format!("job {pending}")),
        ("PauseQueue", "queue audit".into()),
        ("ResumeQueue", "queue audit".into()),
        ("RetryJob", format!("job {dead}")),
        ("RetryDeadJobs", "queue audit".into()),
        ("DeleteJob", format!("job {done}")),
        ("PurgeQueue", "queue audit".into()),
    ];
    assert_eq!(audit.len(), expected.len(), "one audit line per admin action: {audit:#?}");
    for (line, (rpc, target)) in audit.iter().zip(expected) {
        assert!(line.contains("ops") && line.contains(rpc) && line.contains(&target), "{line} names {rpc} {target}");
    }
}
