//! The processes of a run (the private Redis, a jobwire server, worker processes) as guards that
//! kill them when dropped, and the CPU and memory they use, read from /proc.

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail, ensure};
use jobwire::{
    client::Client,
    redis_server::{RedisConfig, RedisServer},
    server::ReadyFile,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{ChildStdin, ChildStdout, Command},
};

use crate::{secure::Access, worker::WorkerProtocol};

/// A temp directory of our own (Redis socket, log and lock; the servers' ready files), removed on
/// drop.
pub(crate) struct WorkDir(PathBuf);

impl WorkDir {
    pub(crate) fn create() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("jobwire-bench-{}", ulid::Ulid::new().to_string().to_lowercase()));
        std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self(path))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process, killed when dropped and when the bench dies.
pub(crate) struct Spawned {
    name: &'static str,
    pub child: tokio::process::Child,
}

/// A command for a child: no inherited `JOBWIRE_*` settings (the bench sets what it means),
/// and death with the bench (PR_SET_PDEATHSIG; the spawning thread is a runtime thread that
/// lives as long as the bench).
pub(crate) fn command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("JOBWIRE_") {
            cmd.env_remove(key);
        }
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe and touches only the calling (child) process.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

impl Spawned {
    pub(crate) fn spawn(name: &'static str, mut cmd: Command) -> anyhow::Result<Self> {
        let child = cmd.spawn().with_context(|| format!("cannot start the {name}"))?;
        Ok(Self { name, child })
    }

    pub(crate) fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().ok_or_else(|| anyhow!("the {} has exited", self.name))
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub(crate) async fn stop(mut self, grace: Duration) {
        if let Some(pid) = self.child.id().and_then(|pid| libc::pid_t::try_from(pid).ok()) {
            // SAFETY: signalling our own child by pid.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        if tokio::time::timeout(grace, self.child.wait()).await.is_err() {
            eprintln!("    the {} did not stop within {grace:?}; killed", self.name);
            let _ = self.child.kill().await;
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The private redis-server: default config, no persistence, a unix socket only.
pub(crate) struct Redis {
    pub server: RedisServer,
    pub url: String,
    pub conn: redis::aio::MultiplexedConnection,
}

impl Redis {
    pub(crate) async fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::launch(RedisConfig::new(dir)).await
    }

    /// Starts one with `config` (a cluster node, in `cluster.rs`). Servers use its `url`; the
    /// bench's own connection goes over its unix socket, which every node serves.
    pub(crate) async fn launch(config: RedisConfig) -> anyhow::Result<Self> {
        let server = RedisServer::start_async(config).await?;
        let url = server.url();
        // The bench's own reads and FLUSHALLs get longer than the client's default response
        // timeout: freeing the hundreds of MB scenario f leaves takes seconds on a busy machine,
        // and a Redis under callgrind (`--callgrind redis`) answers slowly. They are not timed.
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(60)));
        let conn =
            redis::Client::open(server.socket_url())?.get_multiplexed_async_connection_with_config(&config).await?;
        Ok(Self { server, url, conn })
    }

    pub(crate) fn pid(&self) -> anyhow::Result<u32> {
        self.server.pid().context("redis-server has exited")
    }

    pub(crate) async fn flushall(&self) -> anyhow::Result<()> {
        let () = redis::cmd("FLUSHALL").query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    pub(crate) async fn info_field(&self, section: &str, field: &str) -> anyhow::Result<String> {
        let info: String = redis::cmd("INFO").arg(section).query_async(&mut self.conn.clone()).await?;
        info.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| anyhow!("INFO {section} has no {field}"))
    }

    /// Clears INFO commandstats, to read one window's commands.
    pub(crate) async fn reset_stats(&self) -> anyhow::Result<()> {
        let () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// INFO commandstats as `(command, calls, µs executing)`, most called first. Commands that
    /// scripts run are counted too, and their time is also inside the script's.
    pub(crate) async fn command_stats(&self) -> anyhow::Result<Vec<CommandStat>> {
        let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut self.conn.clone()).await?;
        let mut stats: Vec<CommandStat> = info
            .lines()
            .filter_map(|line| {
                let (name, fields) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let field = |key: &str| -> Option<f64> {
                    fields.split(',').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
                };
                Some(CommandStat { name: name.to_owned(), calls: field("calls")?, usec: field("usec")? })
            })
            .collect();
        stats.sort_by(|a, b| b.calls.total_cmp(&a.calls));
        Ok(stats)
    }

    pub(crate) async fn info_number(&self, section: &str, field: &str) -> anyhow::Result<f64> {
        let text = self.info_field(section, field).await?;
        text.parse().with_context(|| format!("INFO {field} is not a number: {text}"))
    }
}

/// One line of INFO commandstats.
pub(crate) struct CommandStat {
    pub name: String,
    pub calls: f64,
    pub usec: f64,
}

/// A jobwire server process on 127.0.0.1:0 over the private Redis.
pub(crate) struct Server {
    pub proc: Spawned,
    pub uri: String,
    /// With `--secure`: how clients reach it (its `uri` is then `https://`).
    pub access: Option<Access>,
}

impl Server {
    /// Starts it with `cmd` (the `jobwire` binary, perhaps under a counter: `probe.rs`) and
    /// waits for its ready file (`ready`, a path not yet used); `slow_redis` when Redis runs
    /// under callgrind; `flags` go beyond the bench's own; `access` is what its clients need
    /// when `flags` make it secure.
    pub(crate) async fn start(
        mut cmd: Command,
        redis_url: &str,
        ready: &Path,
        slow_redis: bool,
        flags: &[&str],
        access: Option<Access>,
    ) -> anyhow::Result<Self> {
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--redis-url", redis_url])
            .args(["--key-prefix", "bench", "--drain-grace", "1s"])
            // A Redis under callgrind answers slowly: its calls must not time out.
            .args(if slow_redis { &["--redis-timeout", "60s"][..] } else { &[] })
            .args(flags)
            .arg("--ready-file")
            .arg(ready)
            .env("JOBWIRE_LOG", "info")
            .stderr(Stdio::piped());
        let mut proc = Spawned::spawn("jobwire server", cmd)?;
        let stderr = proc.child.stderr.take().context("the server's stderr is not piped")?;
        // Keep draining its log so it never blocks on a full pipe; pass errors on, and keep the
        // last lines for a start that fails.
        let tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let mut drain = tokio::spawn({
            let tail = tail.clone();
            async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.contains("ERROR") {
                        eprintln!("    [server] {line}");
                    }
                    let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                    if tail.len() == 20 {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            }
        });
        // Long enough for a start under valgrind.
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            if let Some(announced) = ReadyFile::read(ready) {
                break announced.grpc;
            }
            if proc.child.try_wait()?.is_some() {
                // Its last lines are read once the pipe closes.
                let _ = tokio::time::timeout(Duration::from_secs(1), &mut drain).await;
                let tail = Vec::from(std::mem::take(&mut *tail.lock().unwrap_or_else(|e| e.into_inner())));
                bail!("the server exited before it was ready; its last lines:\n{}", tail.join("\n"));
            }
            ensure!(Instant::now() < deadline, "the server did not write its ready file within 60 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let scheme = if access.is_some() { "https" } else { "http" };
        Ok(Self { proc, uri: format!("{scheme}://{addr}"), access })
    }

    pub(crate) fn pid(&self) -> anyhow::Result<u32> {
        self.proc.pid()
    }

    /// A client of its own connection (TLS and the token with `--secure`).
    pub(crate) async fn client(&self) -> anyhow::Result<Client> {
        match &self.access {
            None => Ok(Client::connect(&self.uri).await?),
            Some(access) => access.connect(&self.uri).await,
        }
    }

    pub(crate) async fn stop(self) {
        self.proc.stop(Duration::from_secs(10)).await;
    }
}

/// What a worker process does.
pub(crate) struct WorkerSpec<'a> {
    pub queue: &'a str,
    pub concurrency: u32,
    pub expect: u64,
    pub samples: bool,
    pub fail_first: bool,
    /// Jobs it holds beyond `concurrency` (0 = none).
    pub prefetch: u32,
}

impl WorkerSpec<'_> {
    /// The command line of the hidden `worker` role for this spec.
    pub(crate) fn args(&self, server_uri: &str, protocol: WorkerProtocol) -> Vec<String> {
        let mut args: Vec<String> =
            ["worker", "--addr", server_uri, "--queue", self.queue, "--protocol", protocol.name()]
                .map(str::to_owned)
                .into();
        args.extend(["--concurrency".into(), self.concurrency.to_string(), "--expect".into(), self.expect.to_string()]);
        args.extend(["--prefetch".into(), self.prefetch.to_string()]);
        if self.samples {
            args.push("--samples".into());
        }
        if self.fail_first {
            args.push("--fail-first".into());
        }
        args
    }
}

/// A worker process (the hidden `worker` role), driven over its stdin and stdout.
pub(crate) struct WorkerProc {
    pub proc: Spawned,
    pub stdin: ChildStdin,
    pub stdout: Lines<BufReader<ChildStdout>>,
}

impl WorkerProc {
    /// Starts it with `cmd` (this binary, perhaps under a counter: `probe.rs`) and waits until
    /// it is connected (not yet working).
    pub(crate) async fn start(
        mut cmd: Command,
        server: &Server,
        spec: &WorkerSpec<'_>,
        protocol: WorkerProtocol,
    ) -> anyhow::Result<Self> {
        cmd.args(spec.args(&server.uri, protocol));
        if let Some(access) = &server.access {
            cmd.arg("--tls-ca-cert").arg(&access.ca_file).env("JOBWIRE_TOKEN", &access.token);
        }
        cmd.env("JOBWIRE_LOG", "warn").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut proc = Spawned::spawn("bench worker", cmd)?;
        let stdin = proc.child.stdin.take().context("worker stdin")?;
        let stdout = proc.child.stdout.take().context("worker stdout")?;
        let mut worker = Self { proc, stdin, stdout: BufReader::new(stdout).lines() };
        worker.wait_for("ready", Duration::from_secs(60), None).await?;
        Ok(worker)
    }

    pub(crate) fn pid(&self) -> anyhow::Result<u32> {
        self.proc.pid()
    }

    pub(crate) async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// Opens its stream and starts working.
    pub(crate) async fn go(&mut self) -> anyhow::Result<()> {
        self.send("go").await
    }

    /// Waits for a line from the worker, showing its progress lines meanwhile.
    pub(crate) async fn wait_for(
        &mut self,
        want: &str,
        limit: Duration,
        progress: Option<(&str, u64)>,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let line = tokio::time::timeout_at(deadline, self.stdout.next_line())
                .await
                .map_err(|_| anyhow!("the worker did not say `{want}` within {limit:?}"))??
                .ok_or_else(|| anyhow!("the worker exited before saying `{want}`"))?;
            if line == want {
                return Ok(());
            }
            if let (Some(count), Some((label, total))) = (line.strip_prefix("progress "), progress) {
                eprintln!("    {label}: {count}/{total} jobs handled");
            }
        }
    }

    /// How many handlers have succeeded so far (its answer to `count`).
    pub(crate) async fn handled(&mut self) -> anyhow::Result<u64> {
        self.send("count").await?;
        loop {
            let line = tokio::time::timeout(Duration::from_secs(10), self.stdout.next_line())
                .await
                .map_err(|_| anyhow!("the worker did not answer `count` within 10 s"))??
                .ok_or_else(|| anyhow!("the worker exited before answering `count`"))?;
            if let Some(count) = line.strip_prefix("count ") {
                return count.parse().with_context(|| format!("an odd count from the worker: {line}"));
            }
        }
    }

    /// Stops it (running jobs finish and are acked) and returns its samples.
    pub(crate) async fn finish(mut self) -> anyhow::Result<Vec<(u64, i64)>> {
        self.send("stop").await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let samples = loop {
            let line = tokio::time::timeout_at(deadline, self.stdout.next_line())
                .await
                .map_err(|_| anyhow!("the worker did not stop within 30 s"))??
                .ok_or_else(|| anyhow!("the worker exited without its samples"))?;
            if let Some(json) = line.strip_prefix("samples ") {
                break serde_json::from_str::<Vec<(u64, i64)>>(json).context("the worker's samples do not parse")?;
            }
        };
        if tokio::time::timeout(Duration::from_secs(10), self.proc.child.wait()).await.is_err() {
            eprintln!("    the worker did not exit after stop; killed");
        }
        Ok(samples)
    }
}

/// CPU seconds (user, system; all threads) a process has used so far.
pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).context("odd /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime), in clock ticks; `rest` starts at field 3.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("short /proc/<pid>/stat")?.parse::<u64>()? as f64)
    };
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ensure!(hz > 0, "sysconf(_SC_CLK_TCK) failed");
    Ok((ticks(11)? / hz as f64, ticks(12)? / hz as f64))
}

/// Resident memory of a process, bytes.
pub(crate) fn rss_bytes(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("no VmRSS in /proc/<pid>/status")?
        .parse()?;
    Ok(kib * 1024.0)
}

/// CPU of a set of processes over a window.
pub(crate) struct CpuWindow {
    pub pids: Vec<u32>,
    pub start: Vec<(f64, f64)>,
    pub at: Instant,
}

/// What a window measured: wall time, and per process the µs of CPU per unit of work (all,
/// and the system part of it).
pub(crate) struct CpuUse {
    pub elapsed: Duration,
    pub per_unit: Vec<f64>,
    pub system_per_unit: Vec<f64>,
}

impl CpuWindow {
    pub(crate) fn open(pids: &[u32]) -> anyhow::Result<Self> {
        Ok(Self {
            pids: pids.to_vec(),
            start: pids.iter().map(|p| cpu_seconds(*p)).collect::<anyhow::Result<_>>()?,
            at: Instant::now(),
        })
    }

    pub(crate) fn close(self, units: u64) -> anyhow::Result<CpuUse> {
        let elapsed = self.at.elapsed();
        let mut used = CpuUse { elapsed, per_unit: Vec::new(), system_per_unit: Vec::new() };
        for (pid, (user0, sys0)) in self.pids.iter().zip(&self.start) {
            let (user, sys) = cpu_seconds(*pid)?;
            used.per_unit.push((user - user0 + sys - sys0) * 1e6 / units as f64);
            used.system_per_unit.push((sys - sys0) * 1e6 / units as f64);
        }
        Ok(used)
    }
}

/// Raises the soft open-files limit to the hard one (inherited by the children): scenario g
/// holds thousands of streams.
pub(crate) fn raise_nofile_limit() -> anyhow::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error()).context("getrlimit");
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error()).context("setrlimit");
            }
        }
    }
    Ok(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_reads() {
        let (user, system) = cpu_seconds(std::process::id()).expect("stat");
        assert!(user >= 0.0 && system >= 0.0);
        assert!(rss_bytes(std::process::id()).expect("status") > 0.0);
    }

    #[test]
    fn a_worker_gets_the_protocol_and_prefetch_it_is_spawned_with() {
        use clap::Parser;

        let spec = WorkerSpec { queue: "q", concurrency: 10, expect: 7, samples: true, fail_first: false, prefetch: 3 };
        let argv = std::iter::once("jobwire-bench".to_owned()).chain(spec.args("http://x", WorkerProtocol::Unary));
        let Some(crate::Role::Worker(worker)) = crate::Cli::try_parse_from(argv).expect("parses").role else {
            panic!("not the worker role");
        };
        assert_eq!((worker.protocol, worker.prefetch), (WorkerProtocol::Unary, 3));
        assert_eq!((worker.concurrency, worker.expect, worker.samples, worker.fail_first), (10, 7, true, false));
    }

    #[test]
    fn the_bench_runs_work_without_prefetch_unless_told() {
        use clap::Parser;

        let plain = crate::Cli::try_parse_from(["jobwire-bench"]).expect("parses").run;
        assert_eq!((plain.protocol, plain.prefetch), (WorkerProtocol::Work, 0));
        let told = crate::Cli::try_parse_from(["jobwire-bench", "--protocol", "unary", "--prefetch", "2"])
            .expect("parses")
            .run;
        assert_eq!((told.protocol, told.prefetch), (WorkerProtocol::Unary, 2));
    }
}
