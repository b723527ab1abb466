//! Test harness: a private `redis-server` on a unix socket in a temp dir, and real jobwire
//! servers (in-process on port 0, or the binary as a child process for tests that kill it).
//! Everything started here is stopped on Drop. Waits are on conditions with deadlines, never
//! on fixed sleeps.

use std::{
    future::Future,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use jobwire::{
    auth::Authority,
    proto::{self, queue_service_client::QueueServiceClient},
    queue::{Engine, Settings},
    redis_server::{RedisConfig, RedisServer},
    server::{self, ConnectionLimits, Keepalive, ReadyFile, ServerOptions},
    store::{RedisAccess, Retention, Store, StoreConfig},
    telemetry::MetricsEndpoint,
};
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub type Client = QueueServiceClient<Channel>;

/// A private redis-server (the library's launcher) on a unix socket in a temp dir. Killed on
/// drop, before the dir goes.
pub struct Redis {
    server: RedisServer,
    _dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// With `appendonly`, data survives `restart`.
    pub fn start_with(appendonly: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let server =
            RedisServer::start(RedisConfig::new(dir.path()).appendonly(appendonly)).expect("redis-server starts");
        Self { server, _dir: dir }
    }

    /// With the launcher's options as `configure` sets them (e.g. AOF with `appendfsync always`).
    pub fn start_config(configure: impl FnOnce(RedisConfig) -> RedisConfig) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = RedisServer::start(configure(RedisConfig::new(dir.path()))).expect("redis-server starts");
        Self { server, _dir: dir }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Its data directory (the AOF is under `appendonlydir/`).
    pub fn dir(&self) -> &std::path::Path {
        self.server.dir()
    }

    /// Kills Redis (SIGKILL: no clean shutdown).
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// Starts Redis again on the same socket and data directory.
    pub fn restart(&mut self) {
        self.server.restart().expect("redis-server restarts");
    }

    pub fn signal(&self, signal: i32) {
        self.server.signal(signal);
    }
}

/// What a jobwire server can be pointed at: one Redis, or a Redis Cluster
/// (`redis_cluster::Cluster`).
pub trait RedisBackend {
    /// The `--redis-url` of it.
    fn url(&self) -> String;

    /// What reaching it takes beyond the URL (a TLS cluster's CA and client certificate).
    fn access(&self) -> RedisAccess {
        RedisAccess::default()
    }
}

impl RedisBackend for Redis {
    fn url(&self) -> String {
        Redis::url(self)
    }
}

/// Polls `condition` until it holds, or panics after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Async form of `wait_until`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn unique_prefix() -> String {
    format!("t{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// Settings with short timers, so tests wait for milliseconds, not for defaults.
pub fn fast_settings() -> Settings {
    Settings {
        lease_ttl: Duration::from_millis(1_500),
        safety_poll: Duration::from_millis(500),
        reconcile_every: Duration::from_millis(300),
        ..Settings::default()
    }
}

pub fn retention() -> Retention {
    Retention {
        completed_for: Duration::from_secs(3600),
        completed_max: 10_000,
        dead_for: Duration::from_secs(7 * 24 * 3600),
        dead_max: 10_000,
        events_max: 10_000,
    }
}

/// Logs of in-process servers go to the test's captured output (shown when a test fails);
/// `JOBWIRE_TEST_LOG` sets the filter (default: warnings).
fn init_tracing() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = std::env::var("JOBWIRE_TEST_LOG").unwrap_or_else(|_| "warn".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    });
}

/// A jobwire server running in this process on 127.0.0.1:0.
pub struct Server {
    pub addr: std::net::SocketAddr,
    /// Where `/metrics` is served, when the builder asked for it.
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub engine: Arc<Engine>,
    pub store: Arc<Store>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub struct ServerBuilder {
    url: String,
    access: RedisAccess,
    prefix: String,
    settings: Settings,
    retention: Retention,
    drain_grace: Duration,
    ping_every: Duration,
    /// Serve metrics, refreshing the gauges this often.
    metrics: Option<Duration>,
    /// Serve TLS with this configuration (`tls::` tests).
    tls: Option<Arc<jobwire::listener::ServerTls>>,
    auth: Option<Arc<Authority>>,
    connections: ConnectionLimits,
    /// `--redis-wait-replicas`.
    wait_replicas: u32,
}

impl ServerBuilder {
    pub fn new(redis: &impl RedisBackend) -> Self {
        Self {
            url: redis.url(),
            access: redis.access(),
            prefix: unique_prefix(),
            settings: fast_settings(),
            retention: retention(),
            drain_grace: Duration::from_millis(200),
            ping_every: Duration::from_secs(15),
            metrics: None,
            tls: None,
            auth: None,
            connections: ConnectionLimits::default(),
            wait_replicas: 0,
        }
    }

    /// Adds and completions wait for this many replicas (`--redis-wait-replicas`).
    pub fn wait_replicas(mut self, replicas: u32) -> Self {
        self.wait_replicas = replicas;
        self
    }

    /// What one connection and one token may hold open (`limits::` tests).
    pub fn connections(mut self, f: impl FnOnce(&mut ConnectionLimits)) -> Self {
        f(&mut self.connections);
        self
    }

    pub fn tls(mut self, tls: Arc<jobwire::listener::ServerTls>) -> Self {
        self.tls = Some(tls);
        self
    }

    pub fn ping_every(mut self, every: Duration) -> Self {
        self.ping_every = every;
        self
    }

    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_owned();
        self
    }

    pub fn settings(mut self, f: impl FnOnce(&mut Settings)) -> Self {
        f(&mut self.settings);
        self
    }

    pub fn retention(mut self, f: impl FnOnce(&mut Retention)) -> Self {
        f(&mut self.retention);
        self
    }

    pub async fn start(self) -> Server {
        init_tracing();
        let store = Arc::new(
            Store::new(&StoreConfig {
                url: self.url,
                access: self.access,
                prefix: self.prefix,
                pool_size: 4,
                timeout: Duration::from_millis(500),
                retention: self.retention,
                wait_replicas: self.wait_replicas,
            })
            .expect("store"),
        );
        store.ensure_schema().await.expect("schema");
        let engine = Engine::start(store.clone(), self.settings);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let metrics = match self.metrics {
            Some(every) => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind metrics");
                Some(MetricsEndpoint::from_listener(listener).expect("metrics recorder").refresh_every(every))
            }
            None => None,
        };
        let metrics_addr = metrics.as_ref().map(|m| m.local_addr().expect("metrics addr"));
        let options = ServerOptions {
            max_message: 4 << 20,
            ping_every: self.ping_every,
            drain_grace: self.drain_grace,
            metrics,
            keepalive: Keepalive { interval: Duration::from_secs(5), timeout: Duration::from_secs(5) },
            tls: self.tls,
            auth: self.auth,
            dashboard: true,
            connections: self.connections,
        };
        let task = tokio::spawn({
            let engine = engine.clone();
            async move {
                server::run(listener, engine, options, async {
                    let _ = stopped.await;
                })
                .await
                .expect("server runs");
            }
        });
        let server = Server { addr, metrics_addr, engine, store, stop: Some(stop), task: Some(task) };
        let mut up = server.engine.redis_up();
        let _ = tokio::time::timeout(Duration::from_secs(5), up.wait_for(|u| *u)).await;
        server
    }
}

impl Server {
    pub async fn start(redis: &impl RedisBackend) -> Self {
        ServerBuilder::new(redis).start().await
    }

    pub async fn client(&self) -> Client {
        QueueServiceClient::connect(format!("http://{}", self.addr)).await.expect("connect")
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr)).expect("uri").connect().await.expect("connect")
    }

    /// Asserts the queue's structural invariants (see `store::Invariants::check_invariants`).
    pub async fn assert_invariants(&self, queue: &str) {
        let problems = self.store.invariants().check_invariants(queue).await.expect("invariant check runs");
        assert!(problems.is_empty(), "invariants broken in {queue}: {problems:#?}");
    }

    pub async fn stats(&self, queue: &str) -> proto::QueueStats {
        let mut client = self.client().await;
        client
            .stats(proto::StatsRequest { queue: queue.into() })
            .await
            .expect("stats")
            .into_inner()
            .stats
            .expect("stats body")
    }

    /// Graceful stop, as on SIGTERM.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The `jobwire` binary as a child process, for tests that kill servers. Its addresses come
/// from its `--ready-file` (given through `JOBWIRE_READY_FILE`, so plain `jobwire` works too).
pub struct Process {
    pub child: Child,
    pub addr: std::net::SocketAddr,
    /// Where `/metrics` is served, when the arguments asked for it.
    pub metrics_addr: Option<std::net::SocketAddr>,
    _dir: tempfile::TempDir,
}

impl Process {
    pub fn start(args: &[&str]) -> Self {
        Self::start_command(Command::new(env!("CARGO_BIN_EXE_jobwire")).args(args))
    }

    /// Starts `cmd` (the jobwire binary with its arguments and environment) and waits for its
    /// ready file. Its log is shown with `JOBWIRE_TEST_LOG`.
    pub fn start_command(cmd: &mut Command) -> Self {
        let log = if std::env::var_os("JOBWIRE_TEST_LOG").is_some() { Stdio::inherit() } else { Stdio::null() };
        Self::start_logging(cmd, log)
    }

    /// As `start_command`, with the log (stderr) going to `log`, at `JOBWIRE_LOG=info` unless
    /// `cmd` sets another level.
    pub fn start_logging(cmd: &mut Command, log: impl Into<Stdio>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ready = dir.path().join("ready");
        if !cmd.get_envs().any(|(key, _)| key == "JOBWIRE_LOG") {
            cmd.env("JOBWIRE_LOG", "info");
        }
        let mut child =
            cmd.env("JOBWIRE_READY_FILE", &ready).stdout(Stdio::null()).stderr(log).spawn().expect("spawn jobwire");
        let mut announced = None;
        wait_until(Duration::from_secs(20), "jobwire to write its ready file", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("jobwire exited with {status} before it was ready");
            }
            announced = ReadyFile::read(&ready);
            announced.is_some()
        });
        let ReadyFile { grpc, metrics } = announced.expect("read above");
        Self { child, addr: grpc, metrics_addr: metrics, _dir: dir }
    }

    pub async fn client(&self) -> Client {
        QueueServiceClient::connect(format!("http://{}", self.addr)).await.expect("connect")
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(pid_t(self.child.id()), signal) };
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal add request.
pub fn job(queue: &str, job_type: &str, payload: &[u8]) -> proto::AddJobRequest {
    proto::AddJobRequest {
        queue: queue.into(),
        r#type: job_type.into(),
        payload: payload.to_vec(),
        ..Default::default()
    }
}

pub fn millis(ms: u64) -> prost_types::Duration {
    Duration::from_millis(ms).try_into().expect("a test's milliseconds fit the wire")
}

/// A child's pid as `kill` takes it (the kernel's pids fit `pid_t`).
pub fn pid_t(pid: u32) -> libc::pid_t {
    libc::pid_t::try_from(pid).expect("a pid fits pid_t")
}

/// A worker stream under test control.
pub struct Worker {
    pub stream: tonic::Streaming<proto::GetJobResponse>,
    pub client: Client,
}

impl Worker {
    pub async fn open(server: &Server, queues: &[&str], credit: u32) -> Self {
        let mut client = server.client().await;
        let stream = client
            .get_job(proto::GetJobRequest {
                worker_id: "test-worker".into(),
                labels: Default::default(),
                queues: queues.iter().map(|q| q.to_string()).collect(),
                max_in_flight: credit,
            })
            .await
            .expect("get_job")
            .into_inner();
        Self { stream, client }
    }

    /// The next message that is not a ping, within `limit`.
    pub async fn next_message(&mut self, limit: Duration) -> Option<proto::get_job_response::Message> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.stream.message()).await.ok()?.ok()??;
            match msg.message {
                Some(proto::get_job_response::Message::Ping(_)) | None => continue,
                other => return other,
            }
        }
    }

    pub async fn next_job(&mut self, limit: Duration) -> Option<proto::Job> {
        match self.next_message(limit).await? {
            proto::get_job_response::Message::Job(job) => Some(job),
            other => panic!("expected a job, got {other:?}"),
        }
    }

    pub async fn job(&mut self) -> proto::Job {
        self.next_job(Duration::from_secs(5)).await.expect("a job within 5 s")
    }

    /// Asserts nothing arrives within `wait`.
    pub async fn expect_nothing(&mut self, wait: Duration) {
        if let Some(msg) = self.next_message(wait).await {
            panic!("expected nothing, got {msg:?}");
        }
    }

    pub async fn complete(&mut self, job: &proto::Job, result: &[u8]) -> Result<(), tonic::Status> {
        self.client
            .complete_job(proto::CompleteJobRequest {
                job_id: job.id.clone(),
                lease_token: job.lease_token.clone(),
                result: result.to_vec(),
                ..Default::default()
            })
            .await
            .map(|_| ())
    }

    pub async fn fail(&mut self, job: &proto::Job, error: &str, retryable: bool) -> proto::FailJobResponse {
        self.client
            .fail_job(proto::FailJobRequest {
                job_id: job.id.clone(),
                lease_token: job.lease_token.clone(),
                error: error.into(),
                retryable: Some(retryable),
                retry_after: None,
            })
            .await
            .expect("fail_job")
            .into_inner()
    }
}

pub async fn add(client: &mut Client, req: proto::AddJobRequest) -> String {
    client.add_job(req).await.expect("add_job").into_inner().job_id
}

pub async fn info(client: &mut Client, job_id: &str) -> proto::JobInfo {
    client
        .get_job_info(proto::GetJobInfoRequest { job_id: job_id.into() })
        .await
        .expect("get_job_info")
        .into_inner()
        .job
        .expect("job info")
}

// Helpers of the cluster, CLI, embedded and client tests.

impl ServerBuilder {
    /// Talks to Redis through `url` instead of the test Redis's own (e.g. as another ACL user).
    pub fn redis_url(mut self, url: &str) -> Self {
        self.url = url.to_owned();
        self
    }

    /// Serves Prometheus metrics on 127.0.0.1:0 (see `Server::metrics_addr`), refreshing the
    /// per-queue gauges every `refresh`. The recorder is per process: give each test its own
    /// queue names.
    pub fn metrics(mut self, refresh: Duration) -> Self {
        self.metrics = Some(refresh);
        self
    }

    /// Every call needs a token of `authority` (see `auth/`).
    pub fn auth(mut self, authority: Arc<Authority>) -> Self {
        self.auth = Some(authority);
        self
    }

    /// How long a graceful stop keeps accepting acks (default here: 200 ms).
    pub fn drain_grace(mut self, grace: Duration) -> Self {
        self.drain_grace = grace;
        self
    }
}

impl Process {
    /// Starts the binary off the async runtime: `start` blocks until the address is printed,
    /// which must not stall the workers and producers of the test meanwhile.
    pub async fn start_async(args: Vec<String>) -> Self {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Self::start(&args)
        })
        .await
        .expect("start task")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit, at most `limit`, without blocking the runtime.
    pub async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "jobwire (pid {}) did not exit within {limit:?}",
                self.child.id()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Worker {
    /// A worker stream on any server address (e.g. a `Process`).
    pub async fn open_at(addr: std::net::SocketAddr, queues: &[&str], credit: u32) -> Self {
        let mut client = QueueServiceClient::connect(format!("http://{addr}")).await.expect("connect");
        let stream = client
            .get_job(proto::GetJobRequest {
                worker_id: "test-worker".into(),
                labels: Default::default(),
                queues: queues.iter().map(|q| q.to_string()).collect(),
                max_in_flight: credit,
            })
            .await
            .expect("get_job")
            .into_inner();
        Self { stream, client }
    }
}

/// The invariant violations of a queue, read through a store of its own: for servers that run
/// as processes.
pub async fn invariant_problems(url: &str, prefix: &str, queue: &str) -> Vec<String> {
    let store = Store::new(&StoreConfig {
        url: url.to_owned(),
        access: Default::default(),
        prefix: prefix.to_owned(),
        pool_size: 1,
        timeout: Duration::from_secs(2),
        retention: retention(),
        wait_replicas: 0,
    })
    .expect("store");
    store.invariants().check_invariants(queue).await.expect("invariant check runs")
}

/// Asserts a queue's invariants through a store of its own: for servers that run as processes.
pub async fn assert_invariants_at(url: &str, prefix: &str, queue: &str) {
    let problems = invariant_problems(url, prefix, queue).await;
    assert!(problems.is_empty(), "invariants broken in {queue}: {problems:#?}");
}

/// The `jobwire` binary as a one-shot command (client commands, refused starts); killed if the
/// test drops it.
pub fn jobwire_command(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobwire"));
    cmd.args(args).env("JOBWIRE_LOG", "info").stdin(Stdio::null()).kill_on_drop(true);
    cmd
}

/// What a finished command printed, and how it ended.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command to its end, at most `limit`.
pub async fn run_command(mut cmd: tokio::process::Command, limit: Duration) -> Ran {
    let output = tokio::time::timeout(limit, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{cmd:?} did not finish within {limit:?}"))
        .expect("the command runs");
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `jobwire <args>` to its end, at most `limit`.
pub async fn run_jobwire(args: &[&str], limit: Duration) -> Ran {
    run_command(jobwire_command(args), limit).await
}

/// The live children of `pid` with their command lines (from /proc).
pub fn children_of(pid: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so parse after its closing paren.
        let mut rest = stat.rsplit_once(')').map_or("", |(_, r)| r).split_whitespace();
        let (state, ppid) = (rest.next(), rest.next().and_then(|p| p.parse::<u32>().ok()));
        if ppid == Some(pid) && state != Some("Z") {
            let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            found.push((child, cmdline.trim().to_owned()));
        }
    }
    found
}

/// Whether `pid` runs. A zombie (exited, not yet reaped by whoever adopted it) does not.
pub fn is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X"))
        }
    }
}

/// Test logs for tests without an in-process server (which sets them up itself).
pub fn init_test_tracing() {
    init_tracing();
}

impl Process {
    /// Waits until the process catches SIGTERM itself (its `SigCgt` mask in /proc), so that a
    /// SIGTERM from the test means a graceful stop rather than the default action.
    pub async fn wait_handles_sigterm(&self) {
        let pid = self.pid();
        eventually(Duration::from_secs(10), "jobwire to handle SIGTERM", || async move {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            status
                .lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))
                .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
                .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
        })
        .await;
    }

    /// SIGTERM once the process handles it, then its exit status (within `limit`).
    pub async fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        self.wait_handles_sigterm().await;
        self.signal(libc::SIGTERM);
        self.wait_exit(limit).await
    }
}
