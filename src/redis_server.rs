//! The one way jobwire starts a `redis-server` of its own: the embedded default of `jobwire
//! serve`, the bench's private Redis and the integration tests' Redis all come from here, so
//! they behave alike and a fix reaches all three.
//!
//! - **One directory per server** holds its unix socket (`redis.sock`), log (`redis.log`), AOF,
//!   cluster nodes file and a lock file (`jobwire.lock`): two servers on one directory would
//!   corrupt each other's data, so a second launch on a locked directory is refused.
//! - **The unix socket is always on**, and readiness is a PING answered on it within a
//!   deadline (never a fixed sleep). Redis serves that socket in plain text whatever the TCP and
//!   TLS setup, so the check needs no TLS client and works for cluster nodes too.
//! - **TCP, TLS and the cluster bus** listen on 127.0.0.1 on ports picked free at start (bind
//!   port 0, read it, release it) and kept across restarts, so URLs stay valid.
//! - **The child dies with its launcher**: PR_SET_PDEATHSIG (SIGTERM, so an AOF is flushed)
//!   covers a crash or `kill -9` of the parent, and dropping a [`RedisServer`] kills it.
//!   PR_SET_PDEATHSIG fires when the spawning *thread* ends, so children are spawned on the
//!   caller's thread, never on a short-lived blocking thread.
//! - [`RedisServer::supervise`] hands the child to a task that restarts it when it crashes
//!   (the embedded default's promise); tests that kill Redis on purpose do not supervise.

use std::{
    fs::{self, File, TryLockError},
    net::{Ipv4Addr, TcpListener},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::Notify,
};
use tracing::{error, info, warn};

/// A queue's jobs in flight are a hash (the active leases) and a sorted set (their deadlines)
/// that every ack and lease changes. Redis keeps such small ones as listpacks, flat arrays it
/// walks from the front on every read and write (decoding each score in the sorted set), up to
/// 128 entries by default; past 16 entries a hash table and a skiplist cost less. With 110 jobs
/// in flight (bench b, concurrency 100, prefetch 10) that took Redis from 106 k to 71 k
/// instructions per job, and with 20 (concurrency 10) from 110 k to 97 k (BENCHMARKS.md, "Jobs in
/// flight as hash tables"). The per-job structures of waiting jobs (the jobs hash, the ready
/// lists) are large or lists already, so this costs memory only in a few per-queue structures.
/// README ("Against your own Redis") advises the same for a Redis jobwire does not start.
const IN_FLIGHT_ENCODINGS: [&str; 4] = ["--hash-max-listpack-entries", "16", "--zset-max-listpack-entries", "16"];
/// How long a start may take before it counts as failed (an AOF replay included).
const START_DEADLINE: Duration = Duration::from_secs(15);
/// Between two readiness checks.
const CHECK_EVERY: Duration = Duration::from_millis(20);
/// How long a stop waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Why a `redis-server` could not be started; each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum RedisServerError {
    /// No `redis-server` executable on `PATH`.
    #[error(
        "redis-server is not on PATH. Install it (Debian/Ubuntu: `apt-get install redis-server`, macOS: `brew install redis`) or pass --redis-url"
    )]
    NotInstalled,
    /// The directory could not be created, resolved or locked.
    #[error("data directory {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    /// Another launcher holds the directory's lock.
    #[error("data directory {0} is in use by another jobwire")]
    Locked(PathBuf),
    /// No port could be bound on 127.0.0.1 to pick a free one.
    #[error("cannot find a free port: {0}")]
    NoFreePort(std::io::Error),
    /// The child could not be spawned, exited, or did not answer PING in time.
    #[error("redis-server did not start: {0}")]
    Start(String),
}

/// `maxmemory` and what Redis does when it is reached.
#[derive(Clone, Debug)]
pub struct MaxMemory {
    /// The limit, in bytes of Redis's used memory.
    pub bytes: u64,
    /// A `maxmemory-policy` value, e.g. `noeviction`.
    pub policy: String,
}

/// The certificate, key and CA files of a TLS port (clients must present a certificate signed
/// by the CA, Redis's default `tls-auth-clients yes`, unless
/// [`RedisConfig::tls_client_certificates_optional`]).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The server's certificate (PEM).
    pub cert: PathBuf,
    /// The server certificate's private key (PEM).
    pub key: PathBuf,
    /// The CA that signs the clients' certificates (PEM).
    pub ca: PathBuf,
}

/// When Redis fsyncs its AOF (`appendfsync`): what a crash of the machine (or a `kill -9`) may
/// take of the writes Redis already acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendFsync {
    /// Before answering each write: nothing acknowledged is lost, at a cost per write.
    Always,
    /// Once a second, in the background: up to about a second of writes may be lost.
    EverySec,
}

/// What to start. `RedisConfig::new(dir)` alone is a unix socket, no persistence, no limit.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    dir: PathBuf,
    tcp: bool,
    appendonly: bool,
    appendfsync: AppendFsync,
    maxmemory: Option<MaxMemory>,
    tls: Option<TlsFiles>,
    tls_clients_optional: bool,
    cluster: bool,
    cluster_node_timeout: Option<Duration>,
}

impl RedisConfig {
    /// A server on `dir` (created if missing; see the module doc for what it holds).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            tcp: false,
            appendonly: false,
            appendfsync: AppendFsync::EverySec,
            maxmemory: None,
            tls: None,
            tls_clients_optional: false,
            cluster: false,
            cluster_node_timeout: None,
        }
    }

    /// Also listen on plain TCP, 127.0.0.1 on a free port.
    pub fn tcp(mut self) -> Self {
        self.tcp = true;
        self
    }

    /// Persist to an AOF in the directory (fsynced as `appendfsync` says), so data survives a
    /// restart.
    pub fn appendonly(mut self, on: bool) -> Self {
        self.appendonly = on;
        self
    }

    /// When the AOF is fsynced (with `appendonly`; default every second).
    pub fn appendfsync(mut self, policy: AppendFsync) -> Self {
        self.appendfsync = policy;
        self
    }

    /// Cap Redis's memory (no limit by default).
    pub fn maxmemory(mut self, limit: MaxMemory) -> Self {
        self.maxmemory = Some(limit);
        self
    }

    /// Listen for TLS on 127.0.0.1 on a free port (instead of plain TCP unless `tcp` is set).
    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }

    /// With `tls`: clients may connect without a certificate (`tls-auth-clients optional`, as
    /// most managed Redis services run); one they present must still be the CA's.
    pub fn tls_client_certificates_optional(mut self) -> Self {
        self.tls_clients_optional = true;
        self
    }

    /// Run as a cluster node (`cluster-enabled yes`, its nodes file in the directory), with a
    /// TCP port and a cluster bus port; assembling nodes into a cluster is the caller's job.
    /// With `tls`, a TLS-only node: no plain TCP port (unless `tcp` is set), and the cluster
    /// bus and replication speak TLS too (`tls-cluster`, `tls-replication`), so the node
    /// announces its TLS port to clients.
    pub fn cluster(mut self) -> Self {
        self.cluster = true;
        self
    }

    /// With `cluster`: how long a node may be unreachable before it counts as failed (and a
    /// replica of a failed master takes over); Redis's default is 15 s.
    pub fn cluster_node_timeout(mut self, timeout: Duration) -> Self {
        self.cluster_node_timeout = Some(timeout);
        self
    }
}

/// The ports picked for a server, once, at its first start.
#[derive(Clone, Copy, Debug)]
struct Ports {
    tcp: Option<u16>,
    tls: Option<u16>,
    cluster_bus: Option<u16>,
}

fn free_port() -> Result<u16, RedisServerError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(RedisServerError::NoFreePort)?;
    Ok(listener.local_addr().map_err(RedisServerError::NoFreePort)?.port())
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// A running `redis-server` child. Killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    config: RedisConfig,
    ports: Ports,
    child: Option<Child>,
    _lock: File,
}

impl RedisServer {
    /// Starts it and waits (blocking this thread) until it answers PING.
    pub fn start(config: RedisConfig) -> Result<Self, RedisServerError> {
        let mut server = Self::launch(config)?;
        server.wait_ready()?;
        Ok(server)
    }

    /// Starts it and waits, without blocking the runtime, until it answers PING.
    pub async fn start_async(config: RedisConfig) -> Result<Self, RedisServerError> {
        let mut server = Self::launch(config)?;
        server.wait_ready_async().await?;
        Ok(server)
    }

    /// Reserves the directory, picks the ports and spawns the child (not waiting for it).
    fn launch(mut config: RedisConfig) -> Result<Self, RedisServerError> {
        let binary = find_on_path("redis-server").ok_or(RedisServerError::NotInstalled)?;
        let asked = config.dir.clone();
        fs::create_dir_all(&asked).map_err(|e| RedisServerError::DataDir(asked.clone(), e))?;
        config.dir = asked.canonicalize().map_err(|e| RedisServerError::DataDir(asked, e))?;
        let dir = config.dir.clone();
        let lock = File::create(dir.join("jobwire.lock")).map_err(|e| RedisServerError::DataDir(dir.clone(), e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(RedisServerError::Locked(dir)),
            Err(TryLockError::Error(e)) => return Err(RedisServerError::DataDir(dir, e)),
        }
        let pick = |wanted: bool| wanted.then(free_port).transpose();
        let ports = Ports {
            tcp: pick(config.tcp || (config.cluster && config.tls.is_none()))?,
            tls: pick(config.tls.is_some())?,
            cluster_bus: pick(config.cluster)?,
        };
        let mut server = Self { binary, config, ports, child: None, _lock: lock };
        server.spawn()?;
        Ok(server)
    }

    /// The command line: everything Redis needs is an argument, no config file.
    fn command(&self) -> Command {
        let dir = &self.config.dir;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--port").arg(self.ports.tcp.unwrap_or(0).to_string());
        cmd.args(["--bind", "127.0.0.1", "--unixsocketperm", "700", "--save", ""]);
        cmd.arg("--unixsocket").arg(self.socket());
        cmd.arg("--dir").arg(dir).arg("--logfile").arg(dir.join("redis.log"));
        cmd.args(["--appendonly", if self.config.appendonly { "yes" } else { "no" }]);
        cmd.args(IN_FLIGHT_ENCODINGS);
        if self.config.appendonly {
            let policy = match self.config.appendfsync {
                AppendFsync::Always => "always",
                AppendFsync::EverySec => "everysec",
            };
            cmd.args(["--appendfsync", policy]);
        }
        if let Some(limit) = &self.config.maxmemory {
            cmd.arg("--maxmemory").arg(limit.bytes.to_string());
            cmd.arg("--maxmemory-policy").arg(&limit.policy);
        }
        if let (Some(tls), Some(port)) = (&self.config.tls, self.ports.tls) {
            cmd.arg("--tls-port").arg(port.to_string());
            cmd.arg("--tls-cert-file").arg(&tls.cert);
            cmd.arg("--tls-key-file").arg(&tls.key);
            cmd.arg("--tls-ca-cert-file").arg(&tls.ca);
            if self.config.tls_clients_optional {
                cmd.args(["--tls-auth-clients", "optional"]);
            }
            if self.config.cluster {
                cmd.args(["--tls-cluster", "yes", "--tls-replication", "yes"]);
            }
        }
        if let Some(bus) = self.ports.cluster_bus {
            cmd.args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]);
            cmd.arg("--cluster-port").arg(bus.to_string());
            if let Some(timeout) = self.config.cluster_node_timeout {
                cmd.arg("--cluster-node-timeout").arg(timeout.as_millis().to_string());
            }
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe and touches only the calling (child) process.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    fn spawn(&mut self) -> Result<(), RedisServerError> {
        let child = self.command().spawn().map_err(|e| RedisServerError::Start(e.to_string()))?;
        self.child = Some(child);
        Ok(())
    }

    /// One readiness check: `Ok(true)` once PING is answered on the socket; an error when the
    /// child exited or `deadline` passed.
    fn check_ready(&mut self, deadline: Instant) -> Result<bool, RedisServerError> {
        let child = self.child.as_mut().ok_or_else(|| RedisServerError::Start("it is not running".into()))?;
        if let Ok(Some(status)) = child.try_wait() {
            self.child = None;
            return Err(RedisServerError::Start(format!(
                "exited with {status}; see {}",
                self.config.dir.join("redis.log").display()
            )));
        }
        if self.answers_ping() {
            return Ok(true);
        }
        if Instant::now() > deadline {
            return Err(RedisServerError::Start(format!("no answer on its socket within {START_DEADLINE:?}")));
        }
        Ok(false)
    }

    /// A local unix-socket round trip: microseconds, so it may run on a runtime thread.
    fn answers_ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.socket_url()) else { return false };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200)) else { return false };
        let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
        redis::cmd("PING").query::<String>(&mut conn).is_ok()
    }

    fn wait_ready(&mut self) -> Result<(), RedisServerError> {
        let deadline = Instant::now() + START_DEADLINE;
        while !self.check_ready(deadline)? {
            std::thread::sleep(CHECK_EVERY);
        }
        Ok(())
    }

    async fn wait_ready_async(&mut self) -> Result<(), RedisServerError> {
        let deadline = Instant::now() + START_DEADLINE;
        while !self.check_ready(deadline)? {
            tokio::time::sleep(CHECK_EVERY).await;
        }
        Ok(())
    }

    /// The directory it runs in (canonical).
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// The unix socket's path (`<dir>/redis.sock`).
    pub fn socket(&self) -> PathBuf {
        self.config.dir.join("redis.sock")
    }

    /// `unix://<dir>/redis.sock`: always served, plain text.
    pub fn socket_url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The URL clients should use: TLS when configured, else TCP when configured, else the
    /// unix socket.
    pub fn url(&self) -> String {
        match self.ports {
            Ports { tls: Some(port), .. } => format!("rediss://127.0.0.1:{port}"),
            Ports { tcp: Some(port), .. } => format!("redis://127.0.0.1:{port}"),
            _ => self.socket_url(),
        }
    }

    /// The plain TCP port (with `tcp`, or `cluster` without `tls`).
    pub fn tcp_port(&self) -> Option<u16> {
        self.ports.tcp
    }

    /// The TLS port (with `tls`).
    pub fn tls_port(&self) -> Option<u16> {
        self.ports.tls
    }

    /// The cluster bus port (with `cluster`).
    pub fn cluster_bus_port(&self) -> Option<u16> {
        self.ports.cluster_bus
    }

    /// The child's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` to the child (e.g. SIGSTOP / SIGCONT to freeze it).
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid().and_then(|pid| libc::pid_t::try_from(pid).ok()) {
            // SAFETY: signalling our own child by pid; it is not reaped while `child` is held.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// Kills it (SIGKILL: no clean shutdown, as a crash) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it and starts it again on the same directory and ports; blocks until it answers.
    pub fn restart(&mut self) -> Result<(), RedisServerError> {
        self.kill();
        self.spawn()?;
        self.wait_ready()
    }

    /// Hands the child to a task that restarts it whenever it exits, until
    /// [`Supervised::stop`]. Must be called inside a tokio runtime.
    pub fn supervise(self) -> Result<Supervised, RedisServerError> {
        let exits = signal(SignalKind::child()).map_err(|e| RedisServerError::Start(e.to_string()))?;
        let url = self.url();
        let stopping = Arc::new(Notify::new());
        let task = tokio::spawn(supervise(self, exits, stopping.clone()));
        Ok(Supervised { url, stopping, task })
    }

    /// The child's exit status if it has exited (reaping it), else None.
    fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// SIGTERM (Redis flushes its AOF), then SIGKILL after `STOP_GRACE`.
    async fn terminate(&mut self, exits: &mut Signal) {
        self.signal(libc::SIGTERM);
        let _ = tokio::time::timeout(STOP_GRACE, async {
            while self.child.is_some() && self.exited().is_none() {
                exits.recv().await;
            }
        })
        .await;
        self.kill();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A supervised server (see [`RedisServer::supervise`]).
pub struct Supervised {
    url: String,
    stopping: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Supervised {
    /// The URL clients should use, as [`RedisServer::url`]; it stays valid across restarts.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Stops the child cleanly (SIGTERM, so the AOF is flushed) and waits for it.
    pub async fn stop(self) {
        self.stopping.notify_one();
        let _ = self.task.await;
    }
}

/// Waits for the child's exit (every SIGCHLD, then `try_wait`) and starts it again, with a
/// backoff from 200 ms to 5 s between failed attempts; stops it when told.
async fn supervise(mut server: RedisServer, mut exits: Signal, stopping: Arc<Notify>) {
    loop {
        // A SIGCHLD may be another child's, or may have come before this loop listened.
        while server.exited().is_none() {
            tokio::select! {
                _ = stopping.notified() => return server.terminate(&mut exits).await,
                _ = exits.recv() => {}
            }
        }
        error!("embedded redis-server exited; restarting");
        let mut wait = Duration::from_millis(200);
        loop {
            tokio::select! {
                _ = stopping.notified() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_secs(5));
            let started = match server.spawn() {
                Ok(()) => server.wait_ready_async().await,
                Err(e) => Err(e),
            };
            match started {
                Ok(()) => break info!("embedded redis-server restarted"),
                Err(e) => {
                    server.kill();
                    warn!(error = %e, "embedded redis-server restart failed");
                }
            }
        }
    }
}
