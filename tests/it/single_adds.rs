//! `Client::add` under concurrency: adds made while others are in flight share `AddJobs` calls,
//! and each caller still gets what `AddJob` would have answered it. The calls are counted by a
//! TCP relay in front of the real server ([`Relay`]), which can also hold the client's bytes
//! back: that is how a test makes adds queue behind calls in flight, without timing anything.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::future::join_all;
use jobwire::{
    auth::Role,
    client::{Client, ClientError, NewJob},
    proto,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};
use tonic::{Code, Status};

use crate::{
    auth::{self, spec},
    harness::{Process, Redis, Server, eventually, unique_prefix},
};

const WAIT: Duration = Duration::from_secs(10);
/// The most calls of one client's adds in flight (`client/adds.rs`).
const MAX_CALLS: usize = 4;

/// A TCP relay in front of a server that counts the gRPC calls going through it: a call opens
/// an HTTP/2 stream with one HEADERS frame from the client (a gRPC client sends no trailers),
/// so the client's HEADERS frames are its calls. While held, the client's bytes are read (and
/// counted) but not passed on, so its calls stay in flight.
struct Relay {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    open: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let calls = Arc::new(AtomicUsize::new(0));
        let (open, gate) = watch::channel(true);
        let task = tokio::spawn({
            let calls = calls.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let server = TcpStream::connect(upstream).await.expect("connect upstream");
                    tokio::spawn(relay(client, server, calls.clone(), gate.clone()));
                }
            }
        });
        Self { addr, calls, open, task }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn hold(&self) {
        self.open.send_replace(false);
    }

    fn release(&self) {
        self.open.send_replace(true);
    }

    async fn client(&self) -> Client {
        Client::connect(&format!("http://{}", self.addr)).await.expect("connect")
    }

    async fn wait_calls(&self, calls: usize) {
        eventually(WAIT, &format!("{calls} calls at the relay"), || async { self.calls() == calls }).await;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Passes one connection on both ways, counting the client's HEADERS frames as they are read
/// (held or not: the reading goes on, only the passing on waits for the gate).
async fn relay(client: TcpStream, server: TcpStream, calls: Arc<AtomicUsize>, mut gate: watch::Receiver<bool>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    });
    let (read, mut to_pass) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(bytes) = to_pass.recv().await {
            if gate.wait_for(|open| *open).await.is_err() || server_write.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    // The connection preface, then frames: a 9-byte header (24-bit length, type) and its payload.
    let mut skip = 24usize;
    let mut header = Vec::with_capacity(9);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match client_read.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut i = 0;
        while i < n {
            if skip > 0 {
                let k = skip.min(n - i);
                skip -= k;
                i += k;
                continue;
            }
            header.push(buf[i]);
            i += 1;
            if header.len() == 9 {
                skip = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
                if header[3] == 1 {
                    calls.fetch_add(1, Ordering::SeqCst);
                }
                header.clear();
            }
        }
        if read.send(buf[..n].to_vec()).is_err() {
            return;
        }
    }
}

/// A test Redis, a server over it, a relay in front of the server and a client of the relay.
async fn relayed() -> (Redis, Server, Relay, Client) {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let relay = Relay::start(server.addr).await;
    let client = relay.client().await;
    (redis, server, relay, client)
}

fn new_job(queue: &str, n: usize) -> NewJob {
    NewJob::new(queue, "t").payload(n.to_string())
}

/// `jobwire serve` on `listen` over the Redis at `url`, under `prefix`, with `more` flags.
fn serve_args(listen: &str, url: &str, prefix: &str, more: &[&str]) -> Vec<String> {
    let args = ["serve", "--listen", listen, "--redis-url", url, "--key-prefix", prefix];
    args.iter().chain(more).map(|a| (*a).to_owned()).collect()
}

/// Spawns `client.add(job)`.
fn spawn_add(client: &Client, job: NewJob) -> JoinHandle<Result<String, ClientError>> {
    let client = client.clone();
    tokio::spawn(async move { client.add(job).await })
}

/// Holds the relay, fills the client's call slots with adds of `queue`, and waits until they
/// are all in flight: adds made after this queue until `release`.
async fn fill_slots(relay: &Relay, client: &Client, queue: &str) -> Vec<JoinHandle<Result<String, ClientError>>> {
    relay.hold();
    let before = relay.calls();
    // One at a time: adds made together would go as one call.
    let mut fillers = Vec::new();
    for n in 0..MAX_CALLS {
        fillers.push(spawn_add(client, new_job(queue, n)));
        relay.wait_calls(before + n + 1).await;
    }
    fillers
}

async fn joined<T>(tasks: Vec<JoinHandle<T>>) -> Vec<T> {
    join_all(tasks).await.into_iter().map(|t| t.expect("add task")).collect()
}

fn rpc_status(result: Result<String, ClientError>) -> Status {
    match result {
        Err(ClientError::Rpc(status)) => status,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn concurrent_adds_share_calls_and_each_job_goes_in_once() {
    let (_redis, server, relay, client) = relayed().await;
    let reader = Client::connect(&format!("http://{}", server.addr)).await.expect("connect");

    let adds = (0..200).map(|n| client.add(new_job("q", n)));
    let ids: Vec<String> = join_all(adds).await.into_iter().map(|r| r.expect("added")).collect();
    let calls = relay.calls();
    assert!(calls <= 20, "200 adds took {calls} calls");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 200, "every add has its own job");
    for (n, id) in ids.iter().enumerate() {
        let info = reader.info(id).await.expect("info");
        assert_eq!(info.payload, n.to_string().into_bytes(), "{id} is the job of add {n}");
    }
    assert_eq!(server.stats("q").await.waiting, 200);
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn an_add_alone_goes_at_once_and_only_a_full_set_of_calls_makes_adds_wait() {
    let (_redis, server, relay, client) = relayed().await;
    client.add(new_job("q", 0)).await.expect("the connection is up");
    let base = relay.calls();
    // Each add finding a free slot and nothing queued goes out without waiting for company
    // (the first alone, the others as a batch of one), while the earlier ones are in flight.
    let mut adds = fill_slots(&relay, &client, "q").await;
    // With every slot taken, the next adds wait, and go together once a call ends.
    adds.extend((MAX_CALLS + 1..=MAX_CALLS + 3).map(|n| spawn_add(&client, new_job("q", n))));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(relay.calls(), base + MAX_CALLS, "the adds past the slots wait");
    relay.release();
    let ids: Vec<String> = joined(adds).await.into_iter().map(|r| r.expect("added")).collect();
    assert_eq!(relay.calls(), base + MAX_CALLS + 1, "the waiting adds went as one call");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), MAX_CALLS + 3);
    assert_eq!(server.stats("q").await.waiting, u64::try_from(MAX_CALLS + 4).expect("small"));
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn adds_made_together_while_a_call_is_in_flight_go_as_one_call() {
    let (_redis, server, relay, client) = relayed().await;
    client.add(new_job("q", 0)).await.expect("the connection is up");
    relay.hold();
    let base = relay.calls();
    let first = spawn_add(&client, new_job("q", 1));
    relay.wait_calls(base + 1).await;
    // Fifty adds made in one go, as by producers woken by the same answers: the lane is not
    // idle, so none goes alone while slots are free; they wait to be taken as one batch.
    let burst = {
        let client = client.clone();
        tokio::spawn(async move { join_all((2..52).map(|n| client.add(new_job("q", n)))).await })
    };
    relay.wait_calls(base + 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(relay.calls(), base + 2, "the fifty went as one call beside the one in flight");
    relay.release();
    let mut ids = vec![first.await.expect("add task").expect("added")];
    ids.extend(burst.await.expect("burst task").into_iter().map(|r| r.expect("added")));
    assert_eq!(relay.calls(), base + 2);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 51, "every add has its own job");
    assert_eq!(server.stats("q").await.waiting, 52);
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn each_entrys_refusal_reaches_only_its_own_caller_as_addjob_words_it() {
    let (_redis, server, relay, client) = relayed().await;
    let mut raw = server.client().await;
    let settings = proto::QueueSettings { max_waiting: Some(1), ..Default::default() };
    raw.set_queue_settings(proto::SetQueueSettingsRequest {
        queue: "capped".into(),
        settings: Some(settings),
        clear: vec![],
    })
    .await
    .expect("a cap of one waiting job");
    let invalid = NewJob::new("q", "t").priority(9);
    let missing_session = NewJob::new("q", "t").session("q/nobody");
    // What AddJob answers these, for the same jobs (the session's refusal names the session).
    let invalid_alone = raw.add_job(invalid.clone().into_request()).await.expect_err("invalid");
    let missing_alone = raw.add_job(missing_session.clone().into_request()).await.expect_err("no session");

    let fillers = fill_slots(&relay, &client, "q").await;
    let batch = [
        new_job("q", 10),
        invalid,
        NewJob::new("q", "t").idempotency_key("order-1"),
        missing_session,
        new_job("capped", 11),
        new_job("capped", 12),
        NewJob::new("q", "t").idempotency_key("order-1"),
        new_job("q", 13),
    ];
    let adds: Vec<_> = batch.into_iter().map(|job| spawn_add(&client, job)).collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = relay.calls();
    relay.release();
    let mut answers = joined(adds).await.into_iter();
    for filler in joined(fillers).await {
        filler.expect("the fillers went in");
    }
    assert_eq!(relay.calls(), before + 1, "the eight adds went as one call");

    let first = answers.next().expect("8").expect("a valid job goes in beside invalid ones");
    let refused = rpc_status(answers.next().expect("8"));
    assert_eq!((refused.code(), refused.message()), (invalid_alone.code(), invalid_alone.message()));
    assert!(refused.message().starts_with("priority"), "names the field: {}", refused.message());
    let keyed = answers.next().expect("8").expect("a keyed job goes in");
    let refused = rpc_status(answers.next().expect("8"));
    assert_eq!((refused.code(), refused.message()), (missing_alone.code(), missing_alone.message()));
    assert_eq!(refused.code(), Code::NotFound);
    answers.next().expect("8").expect("the capped queue takes one job");
    let refused = rpc_status(answers.next().expect("8"));
    assert_eq!(refused.code(), Code::ResourceExhausted, "past the cap: {refused:?}");
    assert_eq!(answers.next().expect("8").expect("a repeated key is a duplicate"), keyed, "the first job's id");
    let last = answers.next().expect("8").expect("the last valid job goes in");
    assert_eq!([&first, &keyed, &last].into_iter().collect::<HashSet<_>>().len(), 3);
    assert_eq!(server.stats("q").await.waiting, u64::try_from(MAX_CALLS + 3).expect("small"));
    assert_eq!(server.stats("capped").await.waiting, 1);
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_job_the_token_may_not_add_fails_alone_and_a_refused_call_fails_every_add() {
    let secured =
        auth::Secured::start(vec![spec("producer", Role::Producer).queues(&["q"]), spec("admin", Role::Admin)]).await;
    let admin = secured.client("admin").await;
    let relay = Relay::start(secured.server.addr).await;
    let scoped = relay.client().await.with_token(secured.tokens.secret("producer")).expect("token");
    let direct = auth::client(&secured.server, Some(secured.tokens.secret("producer"))).await;
    let alone = rpc_status(direct.add(NewJob::new("elsewhere", "t")).await);

    // AddJobs checks every queue it names first: the one out of scope must not sink the others.
    let fillers = fill_slots(&relay, &scoped, "q").await;
    let adds: Vec<_> = [new_job("q", 1), NewJob::new("elsewhere", "t"), new_job("q", 2)]
        .into_iter()
        .map(|job| spawn_add(&scoped, job))
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    relay.release();
    let mut answers = joined(adds).await.into_iter();
    joined(fillers).await.into_iter().for_each(|f| drop(f.expect("the fillers went in")));
    answers.next().expect("3").expect("in scope");
    let refused = rpc_status(answers.next().expect("3"));
    assert_eq!((refused.code(), refused.message()), (Code::PermissionDenied, alone.message()));
    answers.next().expect("3").expect("in scope");
    assert_eq!(admin.stats("q").await.expect("stats").waiting, u64::try_from(MAX_CALLS + 2).expect("small"));

    // A call without a token is refused whole: every add it carried hears it.
    let anonymous = relay.client().await;
    let fillers = fill_slots(&relay, &anonymous, "q").await;
    let adds: Vec<_> = (0..5).map(|n| spawn_add(&anonymous, new_job("q", n))).collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    relay.release();
    for answer in joined(fillers).await.into_iter().chain(joined(adds).await) {
        assert_eq!(rpc_status(answer).code(), Code::Unauthenticated);
    }
    assert_eq!(admin.stats("q").await.expect("stats").waiting, u64::try_from(MAX_CALLS + 2).expect("small"));
}

#[tokio::test]
async fn a_caller_giving_up_loses_nothing_of_the_others() {
    let (_redis, server, relay, client) = relayed().await;
    let fillers = fill_slots(&relay, &client, "q").await;
    let mut adds: Vec<_> = (0..10).map(|n| spawn_add(&client, new_job("q", 100 + n))).collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Three waiting adds and one in flight give up.
    let gave_up = [adds.remove(7), adds.remove(3), adds.remove(0)];
    for add in gave_up.iter().chain(&fillers[..1]) {
        add.abort();
    }
    let kept_fillers: Vec<_> = fillers.into_iter().skip(1).collect();
    relay.release();
    let ids: Vec<String> = joined(adds).await.into_iter().map(|r| r.expect("added")).collect();
    for filler in joined(kept_fillers).await {
        filler.expect("added");
    }
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 7);
    // The waiting adds that gave up were left out; the filler's call had gone out and may
    // have been made.
    let waiting = server.stats("q").await.waiting;
    assert!(waiting == 7 + 3 || waiting == 7 + 4, "{waiting} jobs");
    // The lane goes on: its slots came back.
    let more = join_all((0..20).map(|n| client.add(new_job("q", n)))).await;
    assert!(more.iter().all(Result::is_ok), "{more:?}");
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn adds_made_while_the_server_restarts_each_go_in_once() {
    let redis = Redis::start();
    let (url, prefix) = (redis.url(), unique_prefix());
    let serve = |listen: &str| serve_args(listen, &url, &prefix, &["--drain-grace", "100ms"]);
    let mut first = Process::start_async(serve("127.0.0.1:0")).await;
    let addr = first.addr;
    let client = Client::connect(&format!("http://{addr}")).await.expect("connect");
    client.add(new_job("q", 0)).await.expect("added before the restart");
    first.signal(libc::SIGTERM);
    first.wait_exit(WAIT).await;
    // UNAVAILABLE while nothing listens: retried, with the key each add was given.
    let adds: Vec<_> = (1..=100).map(|n| spawn_add(&client, new_job("q", n))).collect();
    let _second = Process::start_async(serve(&addr.to_string())).await;
    let ids: Vec<String> = joined(adds).await.into_iter().map(|r| r.expect("added across the restart")).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 100);
    let stats = client.stats("q").await.expect("stats");
    assert_eq!(stats.waiting, 101, "each job once");
    crate::harness::assert_invariants_at(&url, &prefix, "q").await;
}

#[tokio::test]
async fn adds_in_flight_when_the_server_is_killed_each_go_in_once() {
    let redis = Redis::start();
    let (url, prefix) = (redis.url(), unique_prefix());
    let serve = |listen: &str| serve_args(listen, &url, &prefix, &[]);
    let mut first = Process::start_async(serve("127.0.0.1:0")).await;
    let addr = first.addr;
    let client = Client::connect(&format!("http://{addr}")).await.expect("connect");
    client.add(new_job("q", 0)).await.expect("added before the kill");
    // Twenty producers adding one job after another, so that calls are in flight when the
    // server dies: each add must still go in, once.
    let done = Arc::new(AtomicUsize::new(0));
    let producers: Vec<_> = (0..20)
        .map(|p| {
            let (client, done) = (client.clone(), done.clone());
            tokio::spawn(async move {
                for n in 0..100 {
                    client.add(new_job("q", 1 + p * 100 + n)).await?;
                    done.fetch_add(1, Ordering::SeqCst);
                }
                Ok::<(), ClientError>(())
            })
        })
        .collect();
    eventually(WAIT, "300 adds before the kill", || async { done.load(Ordering::SeqCst) >= 300 }).await;
    first.signal(libc::SIGKILL);
    first.wait_exit(WAIT).await;
    let _second = Process::start_async(serve(&addr.to_string())).await;
    for producer in joined(producers).await {
        producer.expect("every add goes in across the kill");
    }
    let stats = client.stats("q").await.expect("stats");
    assert_eq!(stats.waiting, 2_001, "each job once");
    crate::harness::assert_invariants_at(&url, &prefix, "q").await;
}
