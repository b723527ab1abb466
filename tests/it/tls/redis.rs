//! jobwire over `rediss://` (a real redis-server with a TLS port, its certificate from a test
//! CA) as an ACL user with exactly `jobwire::store::acl_rules`: its keys, its channels, the
//! commands it sends and no others. The whole flow runs as that user (every RPC, the Work and
//! GetJob streams, sessions, admin calls, a drain, `jobwire doctor --repair`), then Redis's
//! `ACL LOG` must hold no denial but the `CONFIG GET` jobwire tries at start (not granted: it
//! would read passwords too).

use std::{collections::HashMap, path::PathBuf, time::Duration};

use jobwire::{
    client::{Client, NewJob, Worker},
    proto::{self, JobState, session_service_client::SessionServiceClient},
    redis_server::{RedisConfig, RedisServer, TlsFiles},
    store::acl_rules,
};
use redis::AsyncCommands;

use super::pki::{Ca, Files, arg};
use crate::harness::{self, Process, assert_invariants_at, eventually, job, run_jobwire, unique_prefix};

const WAIT: Duration = Duration::from_secs(10);

/// A redis-server with a TLS port whose certificate `ca` signed; with `clients_optional`,
/// clients need no certificate (as with most managed services). Returns it and its CA file.
fn tls_redis(files: &Files, ca: &Ca, clients_optional: bool) -> (RedisServer, PathBuf) {
    let (cert, key) = files.leaf("redis", &ca.server(&["127.0.0.1"]));
    let ca_file = files.write("redis-ca.pem", &ca.pem);
    let mut config = RedisConfig::new(files.dir().join("redis")).tls(TlsFiles { cert, key, ca: ca_file.clone() });
    if clients_optional {
        config = config.tls_client_certificates_optional();
    }
    (RedisServer::start(config).expect("redis-server with TLS starts"), ca_file)
}

/// The default user, on the unix socket (plain text): what an operator sets up ACLs with.
async fn admin(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis.socket_url()).expect("socket url");
    client.get_multiplexed_async_connection().await.expect("admin connection")
}

/// Every RPC of both services through `addr`, as a worker fleet and an operator would.
async fn drive_every_rpc(addr: std::net::SocketAddr) {
    let client = Client::connect(&format!("http://{addr}")).await.expect("connect");
    let mut raw = client.raw();
    let worker = Worker::new(Client::connect(&format!("http://{addr}")).await.expect("connect"), &["q"])
        .handle("upper", |ctx| async move {
            ctx.progress(b"half".to_vec()).await?;
            ctx.extend(Duration::from_secs(60)).await?;
            Ok(ctx.payload().to_ascii_uppercase())
        })
        .handle("count", |ctx| async move {
            let turns = ctx.session_state().and_then(|s| s["turns"].as_u64()).unwrap_or(0) + 1;
            ctx.set_session_state(&serde_json::json!({ "turns": turns }));
            Ok(turns.to_string().into_bytes())
        });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    assert_eq!(client.run(NewJob::new("q", "upper").payload("acl"), WAIT).await.expect("Work"), b"ACL");
    let session = client.create_session("q", Some("s"), &serde_json::json!({ "turns": 0 }), 1).await.expect("session");
    let counted = client.run(NewJob::new("q", "count").session(&session.id), WAIT).await.expect("a session's job");
    assert_eq!(counted, b"1");
    client.patch_session(&session.id, &serde_json::json!({ "note": "patched" })).await.expect("UpdateSession");
    assert_eq!(client.session_state(&session.id).await.expect("GetSession")["turns"], 1);
    let mut sessions = SessionServiceClient::new(
        tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect"),
    );
    let listed = sessions.list_sessions(proto::ListSessionsRequest { queue: "q".into(), ..Default::default() });
    assert_eq!(listed.await.expect("ListSessions").into_inner().sessions.len(), 1);
    eventually(WAIT, "the worker to be listed (published with the heartbeat)", || {
        let mut raw = raw.clone();
        async move {
            let listed = raw.list_workers(proto::ListWorkersRequest::default()).await.expect("ListWorkers");
            listed.into_inner().workers.len() == 1
        }
    })
    .await;
    let _ = stop.send(());
    running.await.expect("worker task").expect("worker");
    client.delete_session(&session.id).await.expect("DeleteSession");

    // GetJob with unary acks: a job given back, failed for good, retried, failed again.
    let mut stream = harness::Worker::open_at(addr, &["r"], 1).await;
    let add = proto::AddJobRequest { max_attempts: Some(1), ..job("r", "t", b"") };
    let id = raw.add_job(add).await.expect("AddJob").into_inner().job_id;
    let first = stream.job().await;
    let back = proto::ReturnJobRequest {
        job_id: id.clone(),
        lease_token: first.lease_token,
        stop_stream: false,
        ..Default::default()
    };
    raw.return_job(back).await.expect("ReturnJob");
    let again = stream.job().await;
    assert_eq!(stream.fail(&again, "bad input", false).await.state(), JobState::Dead);
    raw.retry_job(proto::RetryJobRequest { job_id: id.clone() }).await.expect("RetryJob");
    let third = stream.job().await;
    stream.fail(&third, "still bad", false).await;
    let retried = raw.retry_dead_jobs(proto::RetryDeadJobsRequest { queue: "r".into(), limit: 10 });
    assert_eq!(retried.await.expect("RetryDeadJobs").into_inner().retried, 1);
    let fourth = stream.job().await;
    stream.complete(&fourth, b"finally").await.expect("CompleteJob");
    assert_eq!(client.wait_for_result(&id, WAIT).await.expect("WatchJob"), b"finally");

    // The operator's calls.
    let later = client.add(NewJob::new("r", "t").delay(Duration::from_secs(3600))).await.expect("a delayed add");
    client.cancel(&later).await.expect("CancelJob");
    raw.pause_queue(proto::PauseQueueRequest { queue: "r".into() }).await.expect("PauseQueue");
    raw.resume_queue(proto::ResumeQueueRequest { queue: "r".into() }).await.expect("ResumeQueue");
    // A queue no worker serves, so the batch stays waiting until the purge.
    let subscribe = proto::SubscribeRequest { queue: "s".into(), cursor: String::new() };
    let mut events = raw.subscribe(subscribe).await.expect("Subscribe").into_inner();
    let batch = vec![NewJob::new("s", "t"), NewJob::new("s", "t").priority(3)];
    assert_eq!(client.add_many(batch).await.expect("AddJobs").len(), 2);
    let event = tokio::time::timeout(WAIT, events.message()).await.expect("an event in time").expect("Subscribe");
    assert!(event.is_some(), "the adds are seen by Subscribe");
    for state in [JobState::Waiting, JobState::Delayed, JobState::Active, JobState::Completed, JobState::Dead] {
        let list = proto::ListJobsRequest {
            queue: "r".into(),
            state: state as i32,
            page_size: 10,
            page_token: "".into(),
            filter: None,
        };
        raw.list_jobs(list).await.expect("ListJobs");
    }
    let cancelled = proto::ListJobsRequest {
        queue: "r".into(),
        state: JobState::Cancelled as i32,
        page_size: 10,
        ..Default::default()
    };
    assert_eq!(raw.list_jobs(cancelled).await.expect("ListJobs").into_inner().jobs.len(), 1);
    raw.delete_job(proto::DeleteJobRequest { job_id: id.clone() }).await.expect("DeleteJob");
    let purged =
        raw.purge_queue(proto::PurgeQueueRequest { queue: "s".into(), states: vec![JobState::Waiting as i32] });
    assert_eq!(purged.await.expect("PurgeQueue").into_inner().deleted, 2);
    assert_eq!(client.stats("s").await.expect("Stats").waiting, 0);
    assert_eq!(client.list_queues().await.expect("ListQueues").len(), 3);
    assert_eq!(client.info(&later).await.expect("GetJobInfo").state(), JobState::Cancelled);
}

/// Redis's ACL LOG: the `object` (command or key) of each denial.
async fn denials(admin: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let log: Vec<HashMap<String, redis::Value>> =
        redis::cmd("ACL").arg("LOG").query_async(admin).await.expect("ACL LOG");
    log.iter()
        .map(|entry| {
            let text = |field: &str| {
                entry.get(field).and_then(|v| redis::from_redis_value_ref::<String>(v).ok()).unwrap_or_default()
            };
            format!("{} {} ({})", text("reason"), text("object"), text("username"))
        })
        .collect()
}

#[tokio::test]
async fn an_acl_user_over_tls_runs_the_whole_flow_with_nothing_denied_but_config() {
    let files = Files::new();
    let ca = Ca::new("redis CA");
    let (redis, ca_file) = tls_redis(&files, &ca, true);
    let prefix = unique_prefix();
    let mut admin = admin(&redis).await;
    let mut setuser = redis::cmd("ACL");
    setuser.arg(&["SETUSER", "jobwire", "reset", "on", ">s3cret pass"]);
    setuser.arg(acl_rules(&prefix).split(' ').collect::<Vec<_>>());
    let () = setuser.query_async(&mut admin).await.expect("ACL SETUSER");
    let () = redis::cmd("ACL").arg(&["LOG", "RESET"]).query_async(&mut admin).await.expect("ACL LOG RESET");
    let password = arg(&files.write("password", "s3cret pass\n"));
    let url = format!("rediss://jobwire@127.0.0.1:{}", redis.tls_port().expect("a TLS port"));
    let ca_file = arg(&ca_file);
    let access =
        ["--redis-url", &url, "--redis-ca", &ca_file, "--redis-password-file", &password, "--key-prefix", &prefix];

    let mut server = Process::start_async(
        ["serve", "--listen", "127.0.0.1:0", "--lease-ttl", "1s"]
            .iter()
            .chain(&access)
            .map(|s| s.to_string())
            .collect(),
    )
    .await;
    drive_every_rpc(server.addr).await;
    assert!(server.terminate(WAIT).await.success(), "a graceful drain as the ACL user");

    let k = |name: &str| format!("{prefix}:{{r}}:{name}");
    let _: () = admin.rpush(k("ready:0"), "01BX5ZZKBKACTAV9WEVGEMMVRZ").await.expect("a job with no record");
    let _: () = admin.zadd(k("deadlines"), "01BX5ZZKBKACTAV9WEVGEMMVS0", 5).await.expect("a deadline without a lease");
    let _: () = admin.set(k("bogus"), "1").await.expect("a stray key");
    let _: () = admin.srem(format!("{prefix}:queues"), "r").await.expect("an unregistered queue");
    let _: () = admin.del(format!("{prefix}:schema")).await.expect("no schema version");
    let doctor = |repair: bool| {
        let mut args: Vec<&str> = vec!["doctor", "--json"];
        args.extend(access);
        if repair {
            args.push("--repair");
        }
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        async move { run_jobwire(&args.iter().map(String::as_str).collect::<Vec<_>>(), Duration::from_secs(30)).await }
    };
    let repaired = doctor(true).await;
    assert_eq!(repaired.code, Some(0), "{}{}", repaired.stdout, repaired.stderr);
    assert_eq!(repaired.stdout.matches("\"repaired\"").count(), 5, "{}", repaired.stdout);
    let again = doctor(false).await;
    assert_eq!(again.code, Some(0), "{}{}", again.stdout, again.stderr);

    let denied = denials(&mut admin).await;
    assert!(denied.iter().all(|d| d == "command config|get (jobwire)"), "{denied:#?}");
    assert!(!denied.is_empty(), "the CONFIG GET of the start-up check is denied, and only it");
    let socket = redis.socket_url();
    assert_invariants_at(&socket, &prefix, "q").await;
    assert_invariants_at(&socket, &prefix, "r").await;
    assert_invariants_at(&socket, &prefix, "s").await;
}

#[tokio::test]
async fn the_readme_grants_exactly_the_rules_of_the_default_prefix() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let line = format!("ACL SETUSER jobwire on >PASSWORD {}", acl_rules("jw"));
    assert!(readme.contains(&line), "README.md must show, on one line:\n{line}");
}

#[tokio::test]
async fn a_redis_that_requires_client_certificates_gets_jobwire_s() {
    let files = Files::new();
    let (redis_ca, client_ca) = (Ca::new("redis CA"), Ca::new("redis clients CA"));
    let (cert, key) = files.leaf("redis", &redis_ca.server(&["127.0.0.1"]));
    let ca = files.write("redis-ca.pem", &redis_ca.pem);
    let clients = files.write("clients-ca.pem", &client_ca.pem);
    let redis =
        RedisServer::start(RedisConfig::new(files.dir().join("redis")).tls(TlsFiles { cert, key, ca: clients }))
            .expect("redis-server with TLS starts");
    let url = format!("rediss://127.0.0.1:{}", redis.tls_port().expect("a TLS port"));
    let (client_cert, client_key) = files.leaf("client", &client_ca.client("jobwire", "ops", vec![]));
    let (ca, client_cert, client_key) = (arg(&ca), arg(&client_cert), arg(&client_key));
    let doctor = |extra: &[&str]| {
        let args: Vec<String> =
            ["doctor", "--redis-url", &url, "--redis-ca", &ca].iter().chain(extra).map(|s| s.to_string()).collect();
        async move { run_jobwire(&args.iter().map(String::as_str).collect::<Vec<_>>(), Duration::from_secs(30)).await }
    };
    let without = doctor(&[]).await;
    assert_eq!(without.code, Some(2), "no client certificate: {}", without.stderr);
    let with = doctor(&["--redis-client-cert", &client_cert, "--redis-client-key", &client_key, "--repair"]).await;
    assert_eq!(with.code, Some(0), "the repair writes the schema version: {}{}", with.stdout, with.stderr);

    let plain_url = format!("redis://127.0.0.1:{}", redis.tls_port().expect("a TLS port"));
    let refused = run_jobwire(&["doctor", "--redis-url", &plain_url, "--redis-ca", &ca], WAIT).await;
    assert_eq!(refused.code, Some(2));
    assert!(refused.stderr.contains("needs a rediss:// URL"), "{}", refused.stderr);
}
