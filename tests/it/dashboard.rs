//! The dashboard's side of the server: its assets and gRPC-web on the gRPC port, and the calls
//! added for it (filtered listings, bulk actions, dead-letter groups, activity, one stream over
//! several queues, the holder of an active job), and Redis's memory on ListQueues, which the
//! overview shows. The browser suite (`ui/test.sh`) drives the page
//! itself.

use std::time::Duration;

use jobwire::{
    proto::{self, JobState},
    redis_server::MaxMemory,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

use jobwire::auth::Role;

use crate::{
    auth::{Secured, spec},
    harness::{Client, Redis, Server, ServerBuilder, Worker, add, eventually, job},
};

/// One HTTP/1.1 exchange on a fresh connection: the status line, headers and body as text.
async fn http(server: &Server, request: &[u8]) -> (String, Vec<u8>) {
    let mut conn = tokio::net::TcpStream::connect(server.addr).await.expect("connect");
    conn.write_all(request).await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await.expect("answer").expect("read");
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
    (String::from_utf8_lossy(&answer[..split]).to_lowercase(), answer[split + 4..].to_vec())
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: jobwire\r\nconnection: close\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn the_page_is_served_over_http1_with_a_strict_policy_and_nothing_else_is() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let (head, body) = http(&server, &get("/")).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(head.contains("content-security-policy: default-src 'none'; script-src 'self'"), "{head}");
    assert!(head.contains("x-content-type-options: nosniff") && head.contains("x-frame-options: deny"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("/app.js"));
    let (head, body) = http(&server, &get("/app.js")).await;
    assert!(head.starts_with("http/1.1 200") && head.contains("text/javascript"), "{head}");
    assert!(body.len() > 10_000, "the bundle is embedded");
    let (head, _) = http(&server, &get("/app.css")).await;
    assert!(head.starts_with("http/1.1 200") && head.contains("text/css"), "{head}");
    let (head, _) = http(&server, &get("/../Cargo.toml")).await;
    assert!(head.starts_with("http/1.1 404"), "{head}");
    let post = b"POST / HTTP/1.1\r\nhost: jobwire\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    let (head, _) = http(&server, post).await;
    assert!(head.starts_with("http/1.1 405"), "{head}");
}

/// Redis's memory as ListQueues reports it, once the server has read it.
async fn listed_memory(client: &mut Client) -> proto::RedisMemory {
    let answer = client.list_queues(proto::ListQueuesRequest {}).await.expect("list queues").into_inner();
    answer.redis_memory.expect("ListQueues carries Redis's memory")
}

#[tokio::test]
async fn list_queues_carries_redis_memory_as_it_grows() {
    const MAX: u64 = 64 << 20;
    let redis = Redis::start_config(|c| c.maxmemory(MaxMemory { bytes: MAX, policy: "noeviction".into() }));
    let server =
        ServerBuilder::new(&redis).settings(|s| s.memory.sample_every = Duration::from_millis(100)).start().await;
    let mut client = server.client().await;
    eventually(Duration::from_secs(5), "a first reading of Redis's memory", || {
        let mut client = client.clone();
        async move { listed_memory(&mut client).await.used_bytes > 0 }
    })
    .await;
    let before = listed_memory(&mut client).await;
    assert_eq!(before.max_bytes, MAX, "Redis's maxmemory");
    assert!(!before.full);
    // 4 MiB of payloads: the next readings see Redis grow by about that.
    let payload = vec![b'x'; 16 << 10];
    for _ in 0..256 {
        add(&mut client, job("memory", "t", &payload)).await;
    }
    eventually(Duration::from_secs(5), "the reading to take the jobs in", || {
        let mut client = client.clone();
        let used_before = before.used_bytes;
        async move { listed_memory(&mut client).await.used_bytes >= used_before + (3 << 20) }
    })
    .await;
    let after = listed_memory(&mut client).await;
    assert!(after.used_bytes < before.used_bytes + (8 << 20), "{after:?} against {before:?}");
    assert!(!after.full, "16 % of maxmemory is not full");
}

#[tokio::test]
async fn grpc_web_reaches_the_same_services() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    add(&mut client, job("web", "t", b"{}")).await;
    // A gRPC-web call of ListQueues over HTTP/1.1: one empty message frame.
    let frame = [0u8, 0, 0, 0, 0];
    let mut request = b"POST /jobwire.v1.QueueService/ListQueues HTTP/1.1\r\nhost: jobwire\r\n\
        content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\ncontent-length: 5\r\n\
        connection: close\r\n\r\n"
        .to_vec();
    request.extend_from_slice(&frame);
    let (head, body) = http(&server, &request).await;
    assert!(head.starts_with("http/1.1 200") && head.contains("application/grpc-web+proto"), "{head}");
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("web") && text.contains("grpc-status:0"), "{text:?}");
    // Plain gRPC over HTTP/2 is unchanged beside it.
    let err = client.get_job_info(proto::GetJobInfoRequest { job_id: "nope".into() }).await.expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);
}

/// A gRPC-web call of ListQueues (one empty message frame), with `token` when given.
fn grpc_web_list_queues(token: Option<&str>) -> Vec<u8> {
    let authorization = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    let mut request = format!(
        "POST /jobwire.v1.QueueService/ListQueues HTTP/1.1\r\nhost: jobwire\r\n\
         content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n{authorization}\
         content-length: 5\r\nconnection: close\r\n\r\n"
    )
    .into_bytes();
    request.extend_from_slice(&[0u8, 0, 0, 0, 0]);
    request
}

#[tokio::test]
async fn with_tokens_the_page_is_open_and_every_call_it_makes_needs_a_token() {
    let secured = Secured::start(vec![spec("reader-1", Role::Reader)]).await;
    let (head, body) = http(&secured.server, &get("/")).await;
    assert!(head.starts_with("http/1.1 200") && String::from_utf8_lossy(&body).contains("/app.js"), "{head}");
    let (head, _) = http(&secured.server, &get("/app.js")).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // Refused in gRPC-web's own content type, so the page can read the status from the headers.
    let (head, _) = http(&secured.server, &grpc_web_list_queues(None)).await;
    assert!(head.starts_with("http/1.1 200") && head.contains("content-type: application/grpc-web+proto"), "{head}");
    assert!(head.contains("grpc-status: 16"), "UNAUTHENTICATED: {head}");
    let token = secured.tokens.secret("reader-1");
    let (head, body) = http(&secured.server, &grpc_web_list_queues(Some(token))).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("grpc-status:0"), "{head}");
    // A path that is neither an asset nor a method is still refused.
    let (head, _) = http(&secured.server, &get("/jobwire.v1.QueueService/Nope")).await;
    assert!(!head.starts_with("http/1.1 200") || head.contains("grpc-status: 7"), "{head}");
}

async fn list(client: &mut Client, queue: &str, state: JobState, filter: proto::JobFilter) -> Vec<proto::JobInfo> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let req = proto::ListJobsRequest {
            queue: queue.into(),
            state: state as i32,
            page_size: 2,
            page_token,
            filter: Some(filter.clone()),
        };
        let page = client.list_jobs(req).await.expect("list").into_inner();
        out.extend(page.jobs);
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
}

/// Adds `n` jobs of `job_type` to `queue` that go dead at once with `error` (plus their number).
async fn dead_jobs(
    server: &Server,
    client: &mut Client,
    queue: &str,
    job_type: &str,
    error: &str,
    n: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(add(client, proto::AddJobRequest { max_attempts: Some(1), ..job(queue, job_type, b"x") }).await);
    }
    let mut worker = Worker::open(server, &[queue], 100).await;
    for i in 0..n {
        let held = worker.job().await;
        worker.fail(&held, &format!("{error} {i}\ndetails"), false).await;
    }
    ids
}

#[tokio::test]
async fn filters_select_by_type_id_error_time_and_session() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let mails = dead_jobs(&server, &mut client, "f", "mail", "smtp refused", 3).await;
    let texts = dead_jobs(&server, &mut client, "f", "sms", "gateway timeout", 2).await;
    let by = |f: proto::JobFilter| f;
    let ids = |jobs: Vec<proto::JobInfo>| {
        let mut ids: Vec<String> = jobs.into_iter().map(|j| j.id).collect();
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let dead = JobState::Dead;
    let mail = by(proto::JobFilter { r#type: "mail".into(), ..Default::default() });
    assert_eq!(ids(list(&mut client, "f", dead, mail).await), sorted(mails.clone()));
    let error = by(proto::JobFilter { error_contains: "GATEWAY".into(), ..Default::default() });
    assert_eq!(ids(list(&mut client, "f", dead, error).await), sorted(texts.clone()));
    let group = by(proto::JobFilter { error_group: "smtp refused #".into(), ..Default::default() });
    assert_eq!(ids(list(&mut client, "f", dead, group).await), sorted(mails.clone()));
    let tail = mails[1].rsplit('/').next().expect("ulid")[16..].to_lowercase();
    let part = by(proto::JobFilter { id_contains: tail, ..Default::default() });
    assert_eq!(ids(list(&mut client, "f", dead, part).await), vec![mails[1].clone()]);
    let future = prost_types::Timestamp { seconds: 4_000_000_000, nanos: 0 };
    let later = by(proto::JobFilter { created_after: Some(future), ..Default::default() });
    assert!(list(&mut client, "f", dead, later).await.is_empty());
    let earlier = by(proto::JobFilter { created_before: Some(future), ..Default::default() });
    assert_eq!(list(&mut client, "f", dead, earlier).await.len(), 5);

    let sessions = jobwire::proto::session_service_client::SessionServiceClient::new(server.channel().await);
    let created = sessions
        .clone()
        .create_session(proto::CreateSessionRequest { queue: "f".into(), name: "s1".into(), ..Default::default() })
        .await
        .expect("session");
    let session_id = created.into_inner().session.expect("session").id;
    let in_session =
        add(&mut client, proto::AddJobRequest { session_id: session_id.clone(), ..job("f", "x", b"") }).await;
    add(&mut client, job("f", "x", b"")).await;
    let of_session = by(proto::JobFilter { session_id, ..Default::default() });
    assert_eq!(ids(list(&mut client, "f", JobState::Waiting, of_session).await), vec![in_session]);

    let long = by(proto::JobFilter { error_contains: "e".repeat(300), ..Default::default() });
    let req =
        proto::ListJobsRequest { queue: "f".into(), state: dead as i32, filter: Some(long), ..Default::default() };
    let err = client.list_jobs(req).await.expect_err("too long");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("filter.error_contains"), "{}", err.message());
    server.assert_invariants("f").await;
}

#[tokio::test]
async fn bulk_actions_apply_to_a_selection_or_a_query_and_skip_what_they_do_not_fit() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let mails = dead_jobs(&server, &mut client, "b", "mail", "smtp refused", 3).await;
    dead_jobs(&server, &mut client, "b", "sms", "gateway timeout", 2).await;
    let rust = jobwire::client::Client::from_channel(server.channel().await);
    use jobwire::client::listings::{ids, query};

    let group = proto::JobFilter { error_group: "gateway timeout #".into(), ..Default::default() };
    let retried = rust.retry_jobs(query("b", JobState::Dead, Some(group))).await.expect("retry");
    assert_eq!((retried.applied, retried.skipped, retried.more), (2, 0, false));
    assert_eq!(server.stats("b").await.waiting, 2);

    let refs: Vec<&str> = mails.iter().map(String::as_str).chain(["b/01ARZ3NDEKTSV4RRFFQ69G5FAV"]).collect();
    let deleted = rust.delete_jobs(ids(&refs)).await.expect("delete");
    assert_eq!((deleted.applied, deleted.skipped), (3, 1), "the unknown job is skipped");
    assert_eq!(server.stats("b").await.dead, 0);

    let sms = proto::JobFilter { r#type: "sms".into(), ..Default::default() };
    let cancelled = rust.cancel_jobs(query("b", JobState::Waiting, Some(sms))).await.expect("cancel");
    assert_eq!(cancelled.applied, 2);
    assert_eq!(server.stats("b").await.cancelled, 2);
    let again = rust.cancel_jobs(ids(&[])).await.expect_err("no ids");
    assert!(again.to_string().contains("selection.ids.job_ids"), "{again}");
    let wrong = rust.retry_jobs(query("b", JobState::Waiting, None)).await.expect_err("not dead");
    assert!(wrong.to_string().contains("selection.query.state"), "{wrong}");
    server.assert_invariants("b").await;
}

#[tokio::test]
async fn dead_jobs_group_by_their_error_with_numbers_folded() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let mails = dead_jobs(&server, &mut client, "g", "mail", "smtp refused", 3).await;
    dead_jobs(&server, &mut client, "g", "sms", "gateway timeout", 1).await;
    let rust = jobwire::client::Client::from_channel(server.channel().await);
    let groups = rust.dead_job_groups("g").await.expect("groups");
    assert!(groups.complete);
    assert_eq!(groups.examined, 4);
    let summary: Vec<(&str, u64)> = groups.groups.iter().map(|g| (g.group.as_str(), g.count)).collect();
    assert_eq!(summary, vec![("smtp refused #", 3), ("gateway timeout #", 1)]);
    assert_eq!(groups.groups[0].newest_job_id, mails[2]);
    assert_eq!(groups.groups[0].example, "smtp refused 2\ndetails");
}

#[tokio::test]
async fn activity_counts_the_last_hour_and_one_stream_follows_several_queues() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let rust = jobwire::client::Client::from_channel(server.channel().await);
    let mut events = rust.subscribe_queues(&["a1", "a2"]).await.expect("subscribe");
    let first = add(&mut client, job("a1", "t", b"")).await;
    let second = add(&mut client, job("a2", "t", b"")).await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(5), events.message()).await.expect("an event");
        let message = message.expect("stream").expect("open");
        let event = message.event.expect("event");
        assert!(event.job_id.starts_with(&format!("{}/", message.queue)));
        seen.push(event.job_id);
    }
    seen.sort();
    assert_eq!(seen, {
        let mut v = vec![first, second];
        v.sort();
        v
    });

    let mut worker = Worker::open(&server, &["a1"], 1).await;
    let held = worker.job().await;
    worker.complete(&held, b"").await.expect("complete");
    eventually(Duration::from_secs(5), "the completion is counted", || async {
        let activity = rust.queue_activity(&["a1", "a2"]).await.expect("activity");
        let sums: Vec<(u64, u64)> = activity
            .iter()
            .map(|q| q.minutes.iter().fold((0, 0), |(a, c), m| (a + m.added, c + m.completed)))
            .collect();
        activity.iter().all(|q| q.minutes.len() == 61) && sums == vec![(1, 1), (1, 0)]
    })
    .await;
    let none = rust.queue_activity(&[]).await.expect_err("no queue");
    assert!(none.to_string().contains("queues"), "{none}");
}

#[tokio::test]
async fn an_active_job_names_the_worker_stream_holding_it() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let id = add(&mut client, job("w", "t", b"")).await;
    let mut worker = Worker::open(&server, &["w"], 1).await;
    let held = worker.job().await;
    assert_eq!(held.id, id);
    let stream = crate::harness::info(&mut client, &id).await.worker_stream;
    assert!(!stream.is_empty());
    eventually(Duration::from_secs(5), "the worker list names the same stream", || async {
        let workers = client.clone().list_workers(proto::ListWorkersRequest::default()).await.expect("workers");
        workers.into_inner().workers.iter().any(|w| w.stream_id == stream && w.in_flight == 1)
    })
    .await;
    worker.complete(&held, b"").await.expect("complete");
    assert!(crate::harness::info(&mut client, &id).await.worker_stream.is_empty());
}
