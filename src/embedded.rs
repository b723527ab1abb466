//! The embedded default: without `--redis-url`, jobwire runs its own `redis-server` child so the
//! first `jobwire serve` just works and keeps its jobs across restarts.
//!
//! - Data (AOF, fsync every second) lives in the data directory, which a lock file reserves for
//!   one jobwire at a time: two servers on one directory would corrupt each other's view.
//! - Redis listens on a unix socket in that directory only (no TCP port to collide or expose).
//! - The child dies with jobwire: PR_SET_PDEATHSIG covers a crash or `kill -9` of jobwire, and
//!   `stop` shuts it down cleanly (SIGTERM lets Redis flush its AOF).
//! - A supervisor restarts the child if it crashes; the pool reconnects by itself.

use std::{
    fs::{self, File, TryLockError},
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use tokio::{process::Command, sync::Notify};
use tracing::{error, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "redis-server is not on PATH. Install it (Debian/Ubuntu: `apt-get install redis-server`, macOS: `brew install redis`) or pass --redis-url"
    )]
    NotInstalled,
    #[error("data directory {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    #[error("data directory {0} is in use by another jobwire")]
    Locked(PathBuf),
    #[error("redis-server did not start: {0}")]
    Start(String),
}

pub struct EmbeddedRedis {
    socket: PathBuf,
    stopping: Arc<Notify>,
    supervisor: tokio::task::JoinHandle<()>,
    _lock: File,
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|p| p.is_file())
}

fn spawn(binary: &Path, dir: &Path, socket: &Path) -> std::io::Result<tokio::process::Child> {
    let mut cmd = Command::new(binary);
    cmd.args(["--port", "0", "--unixsocketperm", "700", "--appendonly", "yes", "--appendfsync", "everysec"])
        .arg("--save")
        .arg("")
        .arg("--unixsocket")
        .arg(socket)
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe and touches only the calling (child) process.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

async fn wait_ready(socket: &Path, child: &mut tokio::process::Child) -> Result<(), EmbeddedError> {
    let url = format!("unix://{}", socket.display());
    let client = redis::Client::open(url.as_str()).map_err(|e| EmbeddedError::Start(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(EmbeddedError::Start(format!("exited with {status}; see redis.log in the data directory")));
        }
        if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
            let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
            if pong.is_ok() {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(EmbeddedError::Start("no answer on its socket within 15 s".into()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl EmbeddedRedis {
    pub async fn start(data_dir: &Path) -> Result<Self, EmbeddedError> {
        let binary = find_on_path("redis-server").ok_or(EmbeddedError::NotInstalled)?;
        fs::create_dir_all(data_dir).map_err(|e| EmbeddedError::DataDir(data_dir.into(), e))?;
        let dir = data_dir.canonicalize().map_err(|e| EmbeddedError::DataDir(data_dir.into(), e))?;
        let lock = File::create(dir.join("jobwire.lock")).map_err(|e| EmbeddedError::DataDir(dir.clone(), e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(EmbeddedError::Locked(dir)),
            Err(TryLockError::Error(e)) => return Err(EmbeddedError::DataDir(dir, e)),
        }
        let socket = dir.join("redis.sock");
        let mut child = spawn(&binary, &dir, &socket).map_err(|e| EmbeddedError::Start(e.to_string()))?;
        wait_ready(&socket, &mut child).await?;
        info!(dir = %dir.display(), "embedded redis-server started");

        let stopping = Arc::new(Notify::new());
        let supervisor = tokio::spawn(supervise(child, binary, dir, socket.clone(), stopping.clone()));
        Ok(Self { socket, stopping, supervisor, _lock: lock })
    }

    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Stops the child cleanly (SIGTERM, so the AOF is flushed) and waits for it.
    pub async fn stop(self) {
        self.stopping.notify_one();
        let _ = self.supervisor.await;
    }
}

async fn supervise(
    mut child: tokio::process::Child,
    binary: PathBuf,
    dir: PathBuf,
    socket: PathBuf,
    stopping: Arc<Notify>,
) {
    let mut wait = Duration::from_millis(200);
    loop {
        tokio::select! {
            _ = stopping.notified() => {
                if let Some(pid) = child.id() {
                    // SAFETY: signalling our own child by pid.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
                }
                let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
                let _ = child.start_kill();
                return;
            }
            status = child.wait() => {
                error!(?status, "embedded redis-server exited; restarting");
            }
        }
        loop {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
            match spawn(&binary, &dir, &socket) {
                Ok(mut fresh) => match wait_ready(&socket, &mut fresh).await {
                    Ok(()) => {
                        info!("embedded redis-server restarted");
                        wait = Duration::from_millis(200);
                        child = fresh;
                        break;
                    }
                    Err(e) => warn!(error = %e, "embedded redis-server restart failed"),
                },
                Err(e) => warn!(error = %e, "embedded redis-server restart failed"),
            }
        }
    }
}
