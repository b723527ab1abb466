//! The fault suite: a workload of thousands of jobs with unique payloads through real `jobwire`
//! processes and real workers (the Rust client's `Worker` in this process, `jobwire work` where a
//! worker must be killed), one fault injected mid-run, then the books: the producer's record of
//! every add answered OK (with its id) against the workers' record of every delivery, and the
//! server's final word on each job. Every accepted job must end completed, none waiting or
//! active, a job may run twice only where a delivery was really lost to the fault, and the
//! queue's invariants must hold. Each scenario prints one line of figures (README, "Guarantees
//! and how we test them").
//!
//! Scenario 9 (`full.rs`) fills Redis mid-run: there a job may end no longer retained, its
//! completed record shed for memory; it counts completed when a worker finished it and the
//! queue counts at least as many completed jobs shed (`Figures::shed`).
//!
//! These tests kill and pause processes: they run one at a time (nextest group `processes`).

mod full;
mod instances;
mod network;
mod outages;
mod proxy;
mod workers;

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use jobwire::{
    client::{Client, NewJob, Worker},
    proto::{self, JobState},
};
use tokio::{sync::watch, task::JoinHandle};
use tonic::transport::Endpoint;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::harness::{Process, Redis, assert_invariants_at, eventually};

/// The queue every scenario works on (each has its own Redis).
pub const QUEUE: &str = "faults";
/// Jobs of a run started by [`start`].
pub const JOBS: usize = 5_000;
/// Adds a second of a run started by [`start`].
pub const RATE: u32 = 1_000;
/// How long a handler holds its job: enough that a fault always finds jobs running (at 1,000
/// jobs/s, about 20 at a time).
const HOLD: Duration = Duration::from_millis(20);
/// Jobs a worker of a fleet runs at once.
pub const CONCURRENCY: u32 = 10;
/// How long after the last add the queue may take to drain, fault recovery included.
const DRAIN_LIMIT: Duration = Duration::from_secs(40);
/// A message is in transit for less than this: a run that ended this long before a fault was
/// acknowledged before it, and one that began this long after it was not sent before it.
const TRANSIT: Duration = Duration::from_millis(500);

/// `jobwire serve` on `listen` with the suite's short timers (2 s lease TTL, half-second polls
/// and Redis timeout), retention large enough to keep every job of a run, and `extra` flags.
pub fn serve_args(listen: &str, redis_url: &str, prefix: &str, extra: &[&str]) -> Vec<String> {
    let base = [
        "serve",
        "--listen",
        listen,
        "--redis-url",
        redis_url,
        "--key-prefix",
        prefix,
        "--lease-ttl",
        "2s",
        "--reconcile-every",
        "500ms",
        "--safety-poll",
        "500ms",
        "--redis-timeout",
        "500ms",
        "--drain-grace",
        "2s",
        "--completed-max",
        "100000",
        "--events-max",
        "100000",
    ];
    base.iter().chain(extra).map(|s| s.to_string()).collect()
}

/// One run of a job by a worker, as the worker saw it.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub job_id: String,
    pub payload: String,
    pub worker: String,
    /// When the handler started; None for a worker process (its log keeps no times).
    pub started: Option<Instant>,
    /// When the handler returned; None if it never did (killed, aborted).
    pub finished: Option<Instant>,
}

/// The producer's and the workers' records.
#[derive(Default)]
pub struct Books {
    /// Job id -> payload, for every add answered OK.
    accepted: Mutex<HashMap<String, String>>,
    deliveries: Mutex<Vec<Delivery>>,
    /// Adds answered with an error (and retried), by status code.
    refused: Mutex<HashMap<tonic::Code, usize>>,
    /// When adds were answered OK after an error.
    ok_after_refusal: Mutex<Vec<Instant>>,
    added: AtomicUsize,
}

impl Books {
    pub fn added(&self) -> usize {
        self.added.load(Ordering::SeqCst)
    }

    pub fn refused(&self, code: tonic::Code) -> usize {
        self.refused.lock().expect("books").get(&code).copied().unwrap_or(0)
    }

    /// The first add answered OK after an error, from `since` on.
    pub fn first_ok_after_refusal(&self, since: Instant) -> Option<Instant> {
        self.ok_after_refusal.lock().expect("books").iter().copied().filter(|t| *t >= since).min()
    }

    /// Records a delivery as it starts; returns its number for `finish`.
    fn start(&self, delivery: Delivery) -> usize {
        let mut deliveries = self.deliveries.lock().expect("books");
        deliveries.push(delivery);
        deliveries.len() - 1
    }

    fn finish(&self, serial: usize) {
        self.deliveries.lock().expect("books")[serial].finished = Some(Instant::now());
    }

    /// Adds the deliveries a worker process logged: `<job id> <payload>` a line.
    pub fn add_logged(&self, worker: &str, log: &str) {
        for line in log.lines() {
            let Some((job_id, payload)) = line.split_once(' ') else {
                continue; // a line cut by the kill
            };
            self.start(Delivery {
                job_id: job_id.into(),
                payload: payload.into(),
                worker: worker.into(),
                started: None,
                finished: None,
            });
        }
    }

    /// How many jobs the workers whose names `worker` accepts are running now.
    pub fn running(&self, worker: impl Fn(&str) -> bool) -> usize {
        let deliveries = self.deliveries.lock().expect("books");
        deliveries.iter().filter(|d| d.finished.is_none() && worker(&d.worker)).count()
    }

    /// How many deliveries `worker` has had so far.
    pub fn deliveries_to(&self, worker: &str) -> usize {
        self.deliveries.lock().expect("books").iter().filter(|d| d.worker == worker).count()
    }
}

/// Adds `jobs` jobs with unique payloads at about `per_second`, from four tasks, each add
/// retried until answered OK (on the next address, after 20 ms) with the payload as its
/// idempotency key, so a retry never adds twice.
pub fn produce(books: Arc<Books>, addrs: Vec<SocketAddr>, jobs: usize, per_second: u32) -> JoinHandle<()> {
    const TASKS: usize = 4;
    tokio::spawn(async move {
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let (books, addrs) = (books.clone(), addrs.clone());
            tasks.push(tokio::spawn(async move {
                let mut clients = Vec::new();
                for addr in &addrs {
                    clients.push(Client::connect(&format!("http://{addr}")).await.expect("connect"));
                }
                let period = Duration::from_secs(1) * u32::try_from(TASKS).expect("few tasks") / per_second;
                let mut pace = tokio::time::interval(period);
                for i in (task..jobs).step_by(TASKS) {
                    pace.tick().await;
                    add_until_ok(&books, &clients, i).await;
                }
            }));
        }
        for task in tasks {
            task.await.expect("producer task");
        }
    })
}

async fn add_until_ok(books: &Books, clients: &[Client], i: usize) {
    let payload = format!("job-{i:05}");
    let deadline = Instant::now() + Duration::from_secs(30);
    for attempt in 0.. {
        let req = NewJob::new(QUEUE, "work").payload(payload.clone()).idempotency_key(&payload).into_request();
        match clients[(i + attempt) % clients.len()].raw().add_job(req).await {
            Ok(answer) => {
                books.accepted.lock().expect("books").insert(answer.into_inner().job_id, payload);
                if attempt > 0 {
                    books.ok_after_refusal.lock().expect("books").push(Instant::now());
                }
                books.added.fetch_add(1, Ordering::SeqCst);
                return;
            }
            Err(status) => {
                assert!(Instant::now() < deadline, "cannot add {payload} for 30 s: {status}");
                *books.refused.lock().expect("books").entry(status.code()).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// A server, three workers and the producer of `JOBS` jobs, running.
pub struct Run {
    pub server: Process,
    pub books: Arc<Books>,
    pub fleet: Fleet,
    pub producer: JoinHandle<()>,
}

/// Starts `jobwire serve` (the suite's flags, then `extra`), three workers of `CONCURRENCY` and
/// the producer of `JOBS` jobs at `RATE`; returns once two fifths are added.
pub async fn start(redis: &Redis, prefix: &str, extra: &[&str]) -> Run {
    let server = Process::start_async(serve_args("127.0.0.1:0", &redis.url(), prefix, extra)).await;
    let books = Arc::new(Books::default());
    let mut fleet = Fleet::new();
    for n in 0..3 {
        let client = Client::connect(&format!("http://{}", server.addr)).await.expect("connect");
        fleet.spawn(&books, client, &format!("w{n}"));
    }
    let producer = produce(books.clone(), vec![server.addr], JOBS, RATE);
    added(&books, JOBS * 2 / 5).await;
    Run { server, books, fleet, producer }
}

/// Waits until the producer has added `n` jobs.
pub async fn added(books: &Books, n: usize) {
    eventually(Duration::from_secs(30), &format!("{n} jobs added"), || async { books.added() >= n }).await;
}

/// In-process workers (the Rust client's `Worker`), each recording its deliveries in the books.
pub struct Fleet {
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<Result<(), jobwire::client::ClientError>>>,
}

impl Fleet {
    pub fn new() -> Self {
        Self { stop: watch::channel(false).0, workers: Vec::new() }
    }

    /// Starts a worker named `name` running `CONCURRENCY` jobs at once on `client`'s connection.
    pub fn spawn(&mut self, books: &Arc<Books>, client: Client, name: &str) {
        let (books, worker) = (books.clone(), name.to_owned());
        let handler = move |ctx: jobwire::client::JobContext| {
            let (books, worker) = (books.clone(), worker.clone());
            async move {
                let serial = books.start(Delivery {
                    job_id: ctx.id().to_owned(),
                    payload: String::from_utf8_lossy(ctx.payload()).into_owned(),
                    worker: worker.clone(),
                    started: Some(Instant::now()),
                    finished: None,
                });
                tokio::time::sleep(HOLD).await;
                books.finish(serial);
                Ok(worker.into_bytes())
            }
        };
        let worker = Worker::new(client, &[QUEUE]).concurrency(CONCURRENCY).worker_id(name).handle("work", handler);
        let mut stopped = self.stop.subscribe();
        self.workers.push(tokio::spawn(worker.run(async move {
            let _ = stopped.wait_for(|s| *s).await;
        })));
    }

    /// Drops every worker at once, with whatever it runs (e.g. acks hanging on a dead path).
    pub fn abort(self) {
        for worker in self.workers {
            worker.abort();
        }
    }

    /// Stops every worker (each finishes what it runs) and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for worker in self.workers {
            tokio::time::timeout(Duration::from_secs(10), worker)
                .await
                .expect("a stopped worker returns")
                .expect("worker task")
                .expect("worker");
        }
    }
}

/// What a scenario measured.
#[derive(Debug)]
pub struct Figures {
    pub jobs: usize,
    /// Accepted jobs that did not end completed.
    pub lost: Vec<String>,
    /// Deliveries beyond the first of a job.
    pub duplicates: usize,
    /// Duplicates whose earlier delivery was not hit by the fault (each a bug).
    pub unexplained: Vec<String>,
    /// Deliveries of jobs no add was acknowledged for.
    pub phantoms: Vec<String>,
    /// Waiting, delayed or active once the queue should have drained.
    pub stuck: u64,
    /// Accepted jobs no longer retained, each finished by a worker and within the count of
    /// completed jobs the queue shed for memory: counted completed, not lost.
    pub shed: usize,
    /// From the fault to the last job it took from its worker running again (or, if it took
    /// none, to the first delivery after it).
    pub recovery: Duration,
}

impl Figures {
    /// Prints the scenario's line of figures, with `extra` (e.g. `unavailable=12`).
    pub fn print(&self, scenario: &str, extra: &str) {
        println!(
            "faults: {scenario} jobs={} lost={} duplicates={} stuck={} recovery={:.1}s{}{extra}",
            self.jobs,
            self.lost.len(),
            self.duplicates,
            self.stuck,
            self.recovery.as_secs_f64(),
            if extra.is_empty() { "" } else { " " },
        );
    }

    /// Nothing lost, nothing stuck, nothing run twice without a lost delivery, nothing run that
    /// was never accepted.
    pub fn assert_balanced(&self) {
        assert!(self.lost.is_empty(), "{} accepted jobs not completed: {:?}", self.lost.len(), head(&self.lost));
        assert_eq!(self.stuck, 0, "jobs left waiting or active");
        assert!(
            self.unexplained.is_empty(),
            "{} jobs ran again although their earlier delivery was not lost: {:?}",
            self.unexplained.len(),
            head(&self.unexplained)
        );
        assert!(self.phantoms.is_empty(), "jobs ran that no add accepted: {:?}", head(&self.phantoms));
    }
}

fn head(list: &[String]) -> &[String] {
    &list[..list.len().min(10)]
}

/// Whether a delivery may have been running (or its messages in transit) while a fault lasted
/// over `window`: started before it ended, and not finished (so acknowledged) before it began.
pub fn in_flight_during(window: std::ops::Range<Instant>) -> impl Fn(&Delivery) -> bool {
    move |d| d.started.is_none_or(|s| s < window.end + TRANSIT) && d.finished.is_none_or(|f| f + TRANSIT > window.start)
}

/// Waits for the queue to drain (or `DRAIN_LIMIT`), then balances the books: `hit` tells which
/// deliveries the fault (injected at `fault`) may have lost; the server at `addr` is asked about
/// every job.
pub async fn balance(books: &Books, addr: SocketAddr, fault: Instant, hit: impl Fn(&Delivery) -> bool) -> Figures {
    let client = Client::connect(&format!("http://{addr}")).await.expect("connect");
    let jobs = books.accepted.lock().expect("books").len();
    let deadline = Instant::now() + DRAIN_LIMIT;
    let stats = loop {
        let stats = client.stats(QUEUE).await;
        if let Ok(s) = &stats {
            let open = s.waiting + s.delayed + s.active;
            let ended = s.completed + s.completed_shed + s.dead;
            if (open == 0 && ended >= u64::try_from(jobs).expect("jobs fit")) || Instant::now() > deadline {
                break s.clone();
            }
        }
        assert!(Instant::now() < deadline + Duration::from_secs(5), "no stats from the server: {stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let accepted = books.accepted.lock().expect("books").clone();
    let infos: Vec<(String, Option<proto::JobInfo>)> = futures::stream::iter(accepted.keys().cloned())
        .map(|id| {
            let client = client.clone();
            async move {
                let info = job_info(&client, &id).await;
                (id, info)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut deliveries = books.deliveries.lock().expect("books").clone();
    let finished: HashSet<String> =
        deliveries.iter().filter(|d| d.finished.is_some()).map(|d| d.job_id.clone()).collect();
    let gone_finished = infos.iter().filter(|(id, info)| info.is_none() && finished.contains(id)).count();
    // Read after the jobs were: shedding may have gone on meanwhile, and its count only grows.
    let completed_shed = client.stats(QUEUE).await.expect("stats after the books").completed_shed;
    let shed = if u64::try_from(gone_finished).is_ok_and(|n| n <= completed_shed) { gone_finished } else { 0 };
    let lost = infos
        .iter()
        .filter(|(id, info)| match info {
            Some(info) => info.state() != JobState::Completed,
            None => shed == 0 || !finished.contains(id),
        })
        .map(|(id, info)| {
            let runs: Vec<&Delivery> = deliveries.iter().filter(|d| &d.job_id == id).collect();
            let state = info.as_ref().map(|i| (i.state(), i.attempts, i.lost_deliveries));
            format!("{id}: (state, attempts, lost deliveries) {state:?}, runs {runs:?}")
        })
        .collect();

    // A worker process's deliveries (no times) came first: it was killed before the others ran.
    deliveries.sort_by_key(|d| d.started);
    let mut by_job: HashMap<&str, Vec<&Delivery>> = HashMap::new();
    for d in &deliveries {
        by_job.entry(d.job_id.as_str()).or_default().push(d);
    }
    let (mut duplicates, mut unexplained, mut phantoms) = (0, Vec::new(), Vec::new());
    let mut recovery = None::<Duration>;
    for (id, runs) in &by_job {
        if !accepted.get(*id).is_some_and(|payload| runs.iter().all(|d| &d.payload == payload)) {
            phantoms.push(id.to_string());
        }
        for pair in runs.windows(2) {
            duplicates += 1;
            if !hit(pair[0]) {
                unexplained.push(format!("{id}: {:?} then {:?}", pair[0], pair[1]));
            }
            if let Some(again) = pair[1].started.filter(|s| *s > fault) {
                recovery = Some(recovery.unwrap_or_default().max(again - fault));
            }
        }
    }
    let recovery = recovery.unwrap_or_else(|| {
        deliveries.iter().filter_map(|d| d.started).filter(|s| *s > fault).min().map(|s| s - fault).unwrap_or_default()
    });
    Figures {
        jobs,
        lost,
        duplicates,
        unexplained,
        phantoms,
        stuck: stats.waiting + stats.delayed + stats.active,
        shed,
        recovery,
    }
}

/// The server's word on one job: None when it is not (or no longer) retained. Any other
/// refusal (a Redis call past the suite's 500 ms timeout on a busy machine) is asked again, so
/// a job the server could not look up is not taken for lost.
async fn job_info(client: &Client, id: &str) -> Option<proto::JobInfo> {
    for _ in 0..20 {
        match client.info(id).await {
            Ok(info) => return Some(info),
            Err(jobwire::client::ClientError::Rpc(status)) if status.code() == tonic::Code::NotFound => return None,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("the server did not answer GetJobInfo of {id} in 20 tries");
}

/// The health of the server at `addr` ("" service); Unknown when it does not answer.
pub async fn health(addr: SocketAddr) -> ServingStatus {
    let Ok(channel) = Endpoint::from_shared(format!("http://{addr}")).expect("uri").connect().await else {
        return ServingStatus::Unknown;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest { service: String::new() })
        .await
        .map(|r| r.into_inner().status())
        .unwrap_or(ServingStatus::Unknown)
}

/// Waits until the server at `addr` reports `want`; returns when it did.
pub async fn wait_health(addr: SocketAddr, want: ServingStatus, limit: Duration) -> Instant {
    eventually(limit, &format!("health {want:?}"), || async { health(addr).await == want }).await;
    Instant::now()
}

/// The books balance and the queue's invariants hold.
pub async fn assert_clean(figures: &Figures, redis_url: &str, prefix: &str) {
    figures.assert_balanced();
    assert_invariants_at(redis_url, prefix, QUEUE).await;
}
