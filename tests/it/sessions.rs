//! Sessions: per-session order and concurrency, fairness, state CAS and merge patch, atomic
//! state + completion, deletion and expiry leaving no key behind, listing a session and its line.

use std::time::Duration;

use jobwire::proto::{self, JobState, session_service_client::SessionServiceClient, update_session_request::Update};
use tonic::{Code, transport::Channel};

use crate::harness::{Redis, Server, ServerBuilder, Worker, add, eventually, info, job};

async fn sessions(server: &Server) -> SessionServiceClient<Channel> {
    SessionServiceClient::new(server.channel().await)
}

async fn create(server: &Server, queue: &str, name: &str, max: u32) -> proto::Session {
    let req = proto::CreateSessionRequest {
        queue: queue.into(),
        name: name.into(),
        state: r#"{"count":0}"#.into(),
        ttl: None,
        max_concurrency: Some(max),
    };
    sessions(server).await.create_session(req).await.expect("create").into_inner().session.expect("session")
}

fn in_session(queue: &str, session: &str, payload: &str) -> proto::AddJobRequest {
    proto::AddJobRequest { session_id: session.into(), ..job(queue, "step", payload.as_bytes()) }
}

#[tokio::test]
async fn jobs_of_a_session_start_in_order_one_at_a_time_across_workers() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let s = create(&server, "q", "chat-1", 1).await;
    assert_eq!(s.id, "q/chat-1");
    for i in 0..4 {
        let mut req = in_session("q", &s.id, &i.to_string());
        req.priority = 5 - i; // priority must not reorder a session
        add(&mut client, req).await;
    }
    let mut a = Worker::open(&server, &["q"], 5).await;
    let mut b = Worker::open(&server, &["q"], 5).await;
    let mut order = Vec::new();
    for _ in 0..4 {
        let (j, from_a) = tokio::select! {
            j = a.next_job(Duration::from_secs(5)) => (j.expect("a job"), true),
            j = b.next_job(Duration::from_secs(5)) => (j.expect("a job"), false),
        };
        assert_eq!(j.session.as_ref().map(|s| s.session_id.as_str()), Some("q/chat-1"));
        order.push(String::from_utf8(j.payload.clone()).expect("utf8"));
        // Only one job of the session at a time: nobody gets the next one before this ends.
        a.expect_nothing(Duration::from_millis(100)).await;
        b.expect_nothing(Duration::from_millis(10)).await;
        let w = if from_a { &mut a } else { &mut b };
        w.complete(&j, b"").await.expect("complete");
    }
    assert_eq!(order, ["0", "1", "2", "3"]);
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn max_concurrency_bounds_a_session_and_sessions_run_in_parallel() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let wide = create(&server, "q", "wide", 2).await;
    let other = create(&server, "q", "other", 1).await;
    for i in 0..4 {
        add(&mut client, in_session("q", &wide.id, &format!("w{i}"))).await;
    }
    add(&mut client, in_session("q", &other.id, "o0")).await;
    let mut worker = Worker::open(&server, &["q"], 10).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(String::from_utf8(worker.job().await.payload).expect("utf8"));
    }
    worker.expect_nothing(Duration::from_millis(300)).await;
    got.sort();
    assert_eq!(got, ["o0", "w0", "w1"], "two of the wide session, and the other session alongside");
    let view = sessions(&server).await.get_session(proto::GetSessionRequest { session_id: wide.id.clone() }).await;
    let view = view.expect("get").into_inner().session.expect("session");
    assert_eq!((view.running_jobs, view.queued_jobs, view.pending_jobs), (2, 0, 2));
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_huge_session_does_not_starve_a_small_one() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let huge = create(&server, "q", "huge", 1).await;
    let small = create(&server, "q", "small", 1).await;
    let jobs: Vec<_> = (0..1_000).map(|i| in_session("q", &huge.id, &format!("h{i}"))).collect();
    for chunk in jobs.chunks(500) {
        client.add_jobs(proto::AddJobsRequest { jobs: chunk.to_vec() }).await.expect("bulk");
    }
    add(&mut client, in_session("q", &small.id, "s0")).await;
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let j = worker.job().await;
        seen.push(String::from_utf8(j.payload.clone()).expect("utf8"));
        worker.complete(&j, b"").await.expect("complete");
    }
    assert!(seen.iter().take(2).any(|p| p == "s0"), "the small session waited more than one round: {seen:?}");
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn session_state_compare_and_set_and_merge_patch() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let s = create(&server, "q", "doc", 1).await;
    assert_eq!((s.version, s.state.as_str()), (1, r#"{"count":0}"#));
    let mut api = sessions(&server).await;
    let update = |update, expected| proto::UpdateSessionRequest {
        session_id: "q/doc".into(),
        update: Some(update),
        expected_version: expected,
    };
    let v = api.update_session(update(Update::State(r#"{"count":1,"tags":["a"]}"#.into()), Some(1))).await;
    assert_eq!(v.expect("cas").into_inner().version, 2);
    let stale = api.update_session(update(Update::State("{}".into()), Some(1))).await.expect_err("stale version");
    assert_eq!(stale.code(), Code::FailedPrecondition);
    let patched = api.update_session(update(Update::MergePatch(r#"{"count":null,"who":"x"}"#.into()), None)).await;
    assert_eq!(patched.expect("patch").into_inner().version, 3);
    let bad = api.update_session(update(Update::State("{nope".into()), None)).await.expect_err("invalid json");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let got = api.get_session(proto::GetSessionRequest { session_id: "q/doc".into() }).await.expect("get");
    let got = got.into_inner().session.expect("session");
    let state: serde_json::Value = serde_json::from_str(&got.state).expect("json");
    assert_eq!(state, serde_json::json!({"tags": ["a"], "who": "x"}));
    assert_eq!(got.version, 3, "nothing written by the failed calls");

    let dup = proto::CreateSessionRequest { queue: "q".into(), name: "doc".into(), ..Default::default() };
    assert_eq!(api.create_session(dup).await.expect_err("exists").code(), Code::AlreadyExists);
    let missing = api.get_session(proto::GetSessionRequest { session_id: "q/none".into() }).await;
    assert_eq!(missing.expect_err("unknown").code(), Code::NotFound);
    let mut client = server.client().await;
    let orphan = client.add_job(in_session("q", "q/none", "x")).await.expect_err("unknown session");
    assert_eq!(orphan.code(), Code::NotFound);
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn completion_writes_the_session_state_atomically_or_not_at_all() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let s = create(&server, "q", "acc", 1).await;
    add(&mut client, in_session("q", &s.id, "a")).await;
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let j = worker.job().await;
    let snap = j.session.clone().expect("session snapshot");
    assert_eq!((snap.state.as_str(), snap.version), (r#"{"count":0}"#, 1));

    // Someone else writes meanwhile: the worker's completion must not overwrite it.
    let mut api = sessions(&server).await;
    api.update_session(proto::UpdateSessionRequest {
        session_id: s.id.clone(),
        update: Some(Update::State(r#"{"count":10}"#.into())),
        expected_version: None,
    })
    .await
    .expect("update");
    let complete = |state: &str, version| proto::CompleteJobRequest {
        job_id: j.id.clone(),
        lease_token: j.lease_token.clone(),
        result: b"done".to_vec(),
        session_state: Some(state.into()),
        expected_session_version: Some(version),
    };
    let conflict = client.complete_job(complete(r#"{"count":1}"#, 1)).await.expect_err("version moved");
    assert_eq!(conflict.code(), Code::Aborted);
    assert_eq!(info(&mut client, &j.id).await.state(), JobState::Active, "the job stays leased");
    client.complete_job(complete(r#"{"count":11}"#, 2)).await.expect("retry with the new version");
    let got = api.get_session(proto::GetSessionRequest { session_id: s.id.clone() }).await.expect("get");
    let got = got.into_inner().session.expect("session");
    assert_eq!((got.state.as_str(), got.version), (r#"{"count":11}"#, 3));
    assert_eq!(info(&mut client, &j.id).await.result, b"done");
    server.assert_invariants("q").await;
}

async fn keys_of(redis: &Redis, pattern: &str) -> Vec<String> {
    let mut conn =
        redis::Client::open(redis.url()).expect("url").get_multiplexed_async_connection().await.expect("conn");
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) =
            redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(pattern).query_async(&mut conn).await.expect("scan");
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

async fn fields_of(redis: &Redis, key: &str) -> Vec<String> {
    let mut conn =
        redis::Client::open(redis.url()).expect("url").get_multiplexed_async_connection().await.expect("conn");
    let kind: String = redis::cmd("TYPE").arg(key).query_async(&mut conn).await.expect("type");
    match kind.as_str() {
        "hash" => redis::cmd("HKEYS").arg(key).query_async(&mut conn).await.expect("hkeys"),
        "zset" => redis::cmd("ZRANGE").arg(key).arg(0).arg(-1).query_async(&mut conn).await.expect("zrange"),
        _ => Vec::new(),
    }
}

#[tokio::test]
async fn deleting_a_session_removes_its_jobs_and_fences_its_running_one() {
    let redis = Redis::start();
    let prefix = crate::harness::unique_prefix();
    let server = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let mut client = server.client().await;
    let s = create(&server, "q", "gone", 1).await;
    for i in 0..3 {
        add(&mut client, in_session("q", &s.id, &i.to_string())).await;
    }
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let running = worker.job().await;
    sessions(&server)
        .await
        .delete_session(proto::DeleteSessionRequest { session_id: s.id.clone() })
        .await
        .expect("delete");
    let late = worker.complete(&running, b"").await.expect_err("its session is gone");
    assert_eq!(late.code(), Code::NotFound);
    assert_eq!(info(&mut client, &running.id).await.state(), JobState::Cancelled);
    worker.expect_nothing(Duration::from_millis(300)).await;
    let stats = server.stats("q").await;
    assert_eq!((stats.waiting, stats.session_pending, stats.sessions), (0, 0, 0));
    for key in keys_of(&redis, &format!("{prefix}:{{q}}:session*")).await {
        let fields = fields_of(&redis, &key).await;
        assert!(fields.iter().all(|f| !f.starts_with("gone")), "{key} still holds {fields:?}");
    }
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn idle_sessions_expire_without_a_trace_but_never_while_holding_jobs() {
    let redis = Redis::start();
    let prefix = crate::harness::unique_prefix();
    let server = ServerBuilder::new(&redis).prefix(&prefix).start().await;
    let mut client = server.client().await;
    let mut api = sessions(&server).await;
    let short = |name: &str| proto::CreateSessionRequest {
        queue: "q".into(),
        name: name.into(),
        ttl: Some(crate::harness::millis(300)),
        ..Default::default()
    };
    api.create_session(short("idle")).await.expect("create");
    api.create_session(short("busy")).await.expect("create");
    let held = add(&mut client, in_session("q", "q/busy", "x")).await;
    eventually(Duration::from_secs(5), "the idle session to expire", || {
        let mut api = api.clone();
        async move { api.get_session(proto::GetSessionRequest { session_id: "q/idle".into() }).await.is_err() }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let busy = api.get_session(proto::GetSessionRequest { session_id: "q/busy".into() }).await;
    assert!(busy.is_ok(), "a session holding a job must not expire");
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let j = worker.job().await;
    assert_eq!(j.id, held);
    worker.complete(&j, b"").await.expect("complete");
    eventually(Duration::from_secs(5), "the emptied session to expire", || {
        let mut api = api.clone();
        async move { api.get_session(proto::GetSessionRequest { session_id: "q/busy".into() }).await.is_err() }
    })
    .await;
    for key in keys_of(&redis, &format!("{prefix}:{{q}}:session*")).await {
        let fields = fields_of(&redis, &key).await;
        assert!(fields.is_empty(), "{key} still holds {fields:?}");
    }
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn list_sessions_pages_through_every_session() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    for i in 0..25 {
        create(&server, "q", &format!("s{i}"), 1).await;
    }
    let mut api = sessions(&server).await;
    let mut seen = std::collections::BTreeSet::new();
    let mut token = String::new();
    loop {
        let page = api
            .list_sessions(proto::ListSessionsRequest { queue: "q".into(), page_size: 10, page_token: token.clone() })
            .await
            .expect("list")
            .into_inner();
        assert!(page.sessions.len() <= 10, "a page of {} sessions, asked for 10", page.sessions.len());
        for session in page.sessions {
            assert!(seen.insert(session.id.clone()), "{} sent twice", session.id);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 25);
    server.assert_invariants("q").await;
}

/// Every pending job of `session`, page by page.
async fn pending(server: &Server, session: &str, page_size: u32) -> Vec<proto::JobInfo> {
    let mut api = sessions(server).await;
    let (mut jobs, mut page_token) = (Vec::new(), String::new());
    loop {
        let req = proto::ListSessionJobsRequest { session_id: session.into(), page_size, page_token };
        let page = api.list_session_jobs(req).await.expect("list session jobs").into_inner();
        assert!(page.pending_jobs.len() <= page_size as usize);
        jobs.extend(page.pending_jobs);
        if page.next_page_token.is_empty() {
            return jobs;
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn list_session_jobs_shows_the_pending_jobs_in_order_as_the_session_moves_on() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let s = create(&server, "q", "line", 1).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut req = in_session("q", &s.id, &i.to_string());
        req.priority = i - 2; // priority must not reorder a session's line
        ids.push(add(&mut client, req).await);
    }
    // The first job is released to the queue; the other four wait inside, in add order.
    let listed = pending(&server, &s.id, 2).await;
    assert_eq!(listed.iter().map(|j| j.id.clone()).collect::<Vec<_>>(), ids[1..]);
    assert!(listed.iter().all(|j| j.session_id == s.id && j.payload.len() == 1), "{listed:?}");
    assert_eq!(info(&mut client, &ids[0]).await.state, JobState::Waiting as i32);
    let mut api = sessions(&server).await;
    let session = api.get_session(proto::GetSessionRequest { session_id: s.id.clone() }).await.expect("get");
    let session = session.into_inner().session.expect("session");
    assert_eq!((session.queued_jobs, session.pending_jobs), (1, 4));

    // Completing the first releases the second: the line moves on by one.
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let first = worker.job().await;
    assert_eq!(first.id, ids[0]);
    worker.complete(&first, b"").await.expect("complete");
    let listed = pending(&server, &s.id, 100).await;
    assert_eq!(listed.iter().map(|j| j.id.clone()).collect::<Vec<_>>(), ids[2..]);
    let second = worker.job().await;
    assert_eq!(second.id, ids[1]);
    assert_eq!(pending(&server, &s.id, 1).await.len(), 3, "a running job is not pending");

    // An unknown session, and a token the server did not issue.
    let req = proto::ListSessionJobsRequest { session_id: "q/nobody".into(), ..Default::default() };
    assert_eq!(api.list_session_jobs(req).await.expect_err("unknown").code(), Code::NotFound);
    let req = proto::ListSessionJobsRequest { session_id: s.id.clone(), page_token: "x".into(), ..Default::default() };
    let refused = api.list_session_jobs(req).await.expect_err("forged token");
    assert!(refused.code() == Code::InvalidArgument && refused.message().contains("page_token"), "{refused:?}");
    server.assert_invariants("q").await;
}
