//! `jobwire bench`: the benchmark harness behind BENCHMARKS.md. It measures the budgets of
//! DESIGN.md end to end, through the public gRPC contract, and prints a table (or JSON).
//!
//! Why it is shaped this way:
//! - **Processes as in production.** A private `redis-server` (default config, no persistence, a
//!   unix socket in a temp dir), the jobwire server as a process of its own (this binary,
//!   `serve`), and workers as processes of their own (this binary, the hidden `bench worker`,
//!   running the typed client's `Worker`). Nothing shares a process with the server, so the CPU
//!   of each party is read apart from `/proc/<pid>/stat` (utime + stime) over the window.
//! - **Fresh state per run.** Every scenario run flushes Redis and starts a fresh server, so no
//!   run inherits another's dispatchers, retained jobs or memory.
//! - **The transport's ceiling in the same invocation** (scenario h: a bare tonic unary call and
//!   a bare server stream, served by a process of its own, the hidden `bench ceiling`), so every
//!   figure can be read against what tonic allows on this machine at this moment.
//! - **Correctness before speed.** Every scenario checks that what it added was delivered (or is
//!   waiting) and that nothing went dead; a failed check fails the bench, it does not print a
//!   number.
//! - **Nothing left behind.** Every child is killed when its guard drops (on success, on error,
//!   on Ctrl-C), and dies with the bench if the bench itself is killed (PR_SET_PDEATHSIG).
//!
//! Workers talk to the bench over their stdin/stdout: they print `ready` once connected, start
//! on `go`, print `started` at their first job, `progress N` every two seconds and `done` once
//! `--expect` handlers succeeded; on `stop` (or EOF) they finish, print `samples [[n, unix_ns],
//! ...]` (the handler start time of each job, by the payload's `n`) and exit.
//!
//! The file is sectioned: arguments, the driver, results, processes, load helpers, one section
//! per scenario (a to h), and the two hidden roles (worker, ceiling).

use std::{
    collections::{HashMap, VecDeque},
    io::Write,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, anyhow, bail, ensure};
use clap::{Args, Subcommand, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use jobwire::{
    client::{Client, JobContext, JobError, NewJob, Worker},
    proto,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{ChildStdin, ChildStdout, Command},
    sync::Notify,
    task::JoinSet,
};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    role: Option<Role>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Scenarios to run, comma-separated: a enqueue, b processing, c latency, d delayed
    /// accuracy, e retries, f Redis memory, g idle streams, h transport ceiling. Default: all.
    #[arg(long, value_enum, value_delimiter = ',')]
    scenarios: Vec<Scenario>,
    /// Runs of each scenario; the table shows the median and the range.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Print the results as JSON on stdout (the table then goes to stderr).
    #[arg(long)]
    json: bool,
    /// About a tenth of the sizes: a smoke run, not numbers to quote.
    #[arg(long)]
    quick: bool,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// A worker process of the bench (internal).
    #[command(hide = true)]
    Worker(WorkerArgs),
    /// The bare tonic service of scenario h (internal).
    #[command(hide = true)]
    Ceiling,
}

#[derive(Args, Debug)]
struct WorkerArgs {
    /// Server URI.
    #[arg(long)]
    addr: String,
    #[arg(long)]
    queue: String,
    #[arg(long)]
    concurrency: u32,
    /// Print `done` once this many handlers succeeded.
    #[arg(long)]
    expect: u64,
    /// Record each job's handler start time (for latency).
    #[arg(long)]
    samples: bool,
    /// Fail every job's first attempt (retryable).
    #[arg(long)]
    fail_first: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Scenario {
    A,
    B,
    C,
    D,
    E,
    F,
    G,
    H,
}

impl Scenario {
    fn letter(self) -> &'static str {
        match self {
            Scenario::A => "a",
            Scenario::B => "b",
            Scenario::C => "c",
            Scenario::D => "d",
            Scenario::E => "e",
            Scenario::F => "f",
            Scenario::G => "g",
            Scenario::H => "h",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Scenario::A => "enqueue",
            Scenario::B => "processing",
            Scenario::C => "latency at light load",
            Scenario::D => "delayed accuracy",
            Scenario::E => "retry path",
            Scenario::F => "Redis memory per waiting job",
            Scenario::G => "idle worker streams",
            Scenario::H => "transport ceiling (bare tonic)",
        }
    }
}

/// How much work each scenario does; `--quick` takes about a tenth.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    enqueue: u64,
    round_trips: u64,
    process: u64,
    latency_jobs: u64,
    delayed_jobs: u64,
    retry_jobs: u64,
    memory_jobs: u64,
    idle_streams: u64,
    ceiling_calls: u64,
}

const FULL: Sizes = Sizes {
    enqueue: 50_000,
    round_trips: 2_000,
    process: 50_000,
    latency_jobs: 2_000,
    delayed_jobs: 1_000,
    retry_jobs: 5_000,
    memory_jobs: 100_000,
    idle_streams: 10_000,
    ceiling_calls: 50_000,
};

const QUICK: Sizes = Sizes {
    enqueue: 5_000,
    round_trips: 200,
    process: 5_000,
    latency_jobs: 200,
    delayed_jobs: 100,
    retry_jobs: 500,
    memory_jobs: 10_000,
    idle_streams: 1_000,
    ceiling_calls: 5_000,
};

/// Calls in flight for "≤ 100 in flight" figures.
const IN_FLIGHT: usize = 100;
/// AddJobs calls in flight for the bulk figure.
const BULK_IN_FLIGHT: usize = 4;
/// Jobs per AddJobs call (the server's maximum).
const BULK: u64 = 1_000;
/// Worker streams per HTTP/2 connection in scenario g.
const STREAMS_PER_CONNECTION: u64 = 100;
const JOB_TYPE: &str = "bench";
/// The 100 bytes of padding in every payload.
const PAD: &str =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyz=+";
/// The server's default completed-job cap: stats never count more completed jobs than this.
const COMPLETED_CAP: u64 = 10_000;

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.role {
        Some(Role::Worker(w)) => worker_main(w).await,
        Some(Role::Ceiling) => ceiling_main().await,
        None => {
            // Dropping the driver drops every process guard, so Ctrl-C leaves nothing behind.
            tokio::select! {
                result = drive(args.run) => result,
                _ = tokio::signal::ctrl_c() => bail!("interrupted; the processes the bench started were stopped"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The driver
// ---------------------------------------------------------------------------------------------

/// What every scenario needs: this binary, the private Redis, the sizes.
struct Bench {
    exe: PathBuf,
    redis: Redis,
    sizes: Sizes,
    /// Dropped after `redis`, which lives in it.
    _work: WorkDir,
}

async fn drive(opts: RunArgs) -> anyhow::Result<()> {
    let mut scenarios =
        if opts.scenarios.is_empty() { Scenario::value_variants().to_vec() } else { opts.scenarios.clone() };
    scenarios.sort();
    scenarios.dedup();
    let sizes = if opts.quick { QUICK } else { FULL };
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; build with `cargo build --release` for real numbers");
    }
    let nofile = raise_nofile_limit()?;
    let work = WorkDir::create()?;
    let redis = Redis::start(work.path()).await?;
    let machine = Machine::read(&redis).await;
    let load_before = load_average();
    eprintln!(
        "jobwire bench: {} runs of {} on {} ({} cores, {} MiB), redis {}, RLIMIT_NOFILE {nofile}, load average {load_before}{}",
        opts.runs,
        scenarios.iter().map(|s| s.letter()).collect::<Vec<_>>().join(","),
        machine.cpu,
        machine.cores,
        machine.memory_mib,
        machine.redis,
        if opts.quick { ", quick sizes" } else { "" }
    );
    let bench = Bench {
        exe: std::env::current_exe().context("cannot find this binary to start the server")?,
        redis,
        sizes,
        _work: work,
    };
    let mut results = Results::default();
    let started = Instant::now();
    for scenario in &scenarios {
        for run in 1..=opts.runs {
            eprintln!("[{}] {} — run {run}/{}", scenario.letter(), scenario.title(), opts.runs);
            let out = &mut results.scenario(*scenario);
            match scenario {
                Scenario::A => bench.enqueue(out).await,
                Scenario::B => bench.processing(out).await,
                Scenario::C => bench.latency(out).await,
                Scenario::D => bench.delayed(out).await,
                Scenario::E => bench.retries(out).await,
                Scenario::F => bench.memory(out).await,
                Scenario::G => bench.idle_streams(out).await,
                Scenario::H => bench.ceiling(out).await,
            }
            .with_context(|| format!("scenario {}, run {run}", scenario.letter()))?;
        }
    }
    let load_after = load_average();
    eprintln!(
        "done in {:.0} s; load average (1 min) {load_before} at the start, {load_after} at the end, on {} cores",
        started.elapsed().as_secs_f64(),
        machine.cores
    );
    let table = results.table();
    if opts.json {
        eprint!("{table}");
        let mut json = results.json(&machine, &opts, &sizes);
        json["load_average"] = serde_json::json!({"start": load_before, "end": load_after});
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{table}");
    }
    std::io::stdout().flush()?;
    Ok(())
}

/// The machine, for the record.
struct Machine {
    cpu: String,
    cores: usize,
    memory_mib: u64,
    redis: String,
    kernel: String,
}

impl Machine {
    async fn read(redis: &Redis) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown CPU".to_owned(), |(_, v)| v.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_mib: memory_kib / 1024,
            redis: redis.info_field("server", "redis_version").await.unwrap_or_else(|_| "unknown".into()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned()),
        }
    }
}

/// The 1-minute load average: how busy the machine was besides the bench (it is shared).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Target {
    AtLeast(f64),
    AtMost(f64),
}

impl Target {
    fn met(self, value: f64) -> bool {
        match self {
            Target::AtLeast(t) => value >= t,
            Target::AtMost(t) => value <= t,
        }
    }

    fn text(self) -> String {
        match self {
            Target::AtLeast(t) => format!("≥ {}", num(t)),
            Target::AtMost(t) => format!("≤ {}", num(t)),
        }
    }
}

/// One figure across runs.
struct Metric {
    scenario: Scenario,
    name: String,
    unit: &'static str,
    target: Option<Target>,
    runs: Vec<f64>,
}

impl Metric {
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.runs.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    fn median(&self) -> f64 {
        let v = self.sorted();
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }

    fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }

    /// Judged on the median.
    fn met(&self) -> Option<bool> {
        self.target.map(|t| t.met(self.median()))
    }
}

#[derive(Default)]
struct Results {
    metrics: Vec<Metric>,
}

/// Records the figures of one scenario run.
struct Recorder<'a> {
    scenario: Scenario,
    results: &'a mut Results,
}

impl Results {
    fn scenario(&mut self, scenario: Scenario) -> Recorder<'_> {
        Recorder { scenario, results: self }
    }

    fn table(&self) -> String {
        let mut out = String::new();
        let header = format!(
            "{:<3} {:<50} {:>10} {:>21} {:<12} {:<10} {}\n",
            "", "METRIC", "MEDIAN", "MIN–MAX", "UNIT", "TARGET", "STATUS"
        );
        out.push_str(&header);
        let mut last = None;
        for m in &self.metrics {
            if last.is_some() && last != Some(m.scenario) {
                out.push('\n');
            }
            last = Some(m.scenario);
            let status = match m.met() {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "",
            };
            out.push_str(&format!(
                "{:<3} {:<50} {:>10} {:>21} {:<12} {:<10} {}\n",
                m.scenario.letter(),
                m.name,
                num(m.median()),
                format!("{}–{}", num(m.min()), num(m.max())),
                m.unit,
                m.target.map(Target::text).unwrap_or_default(),
                status
            ));
        }
        out
    }

    fn json(&self, machine: &Machine, opts: &RunArgs, sizes: &Sizes) -> serde_json::Value {
        let results: Vec<serde_json::Value> = self
            .metrics
            .iter()
            .map(|m| {
                serde_json::json!({
                    "scenario": m.scenario.letter(),
                    "metric": m.name,
                    "unit": m.unit,
                    "median": m.median(),
                    "min": m.min(),
                    "max": m.max(),
                    "runs": m.runs,
                    "target": m.target.map(|t| match t {
                        Target::AtLeast(v) => serde_json::json!({"at_least": v}),
                        Target::AtMost(v) => serde_json::json!({"at_most": v}),
                    }),
                    "met": m.met(),
                })
            })
            .collect();
        serde_json::json!({
            "jobwire_version": env!("CARGO_PKG_VERSION"),
            "build": if cfg!(debug_assertions) { "debug" } else { "release" },
            "runs": opts.runs,
            "quick": opts.quick,
            "sizes": {
                "enqueue": sizes.enqueue,
                "round_trips": sizes.round_trips,
                "process": sizes.process,
                "latency_jobs": sizes.latency_jobs,
                "delayed_jobs": sizes.delayed_jobs,
                "retry_jobs": sizes.retry_jobs,
                "memory_jobs": sizes.memory_jobs,
                "idle_streams": sizes.idle_streams,
                "ceiling_calls": sizes.ceiling_calls,
            },
            "machine": {
                "cpu": machine.cpu,
                "cores": machine.cores,
                "memory_mib": machine.memory_mib,
                "kernel": machine.kernel,
                "redis_version": machine.redis,
            },
            "results": results,
        })
    }
}

impl Recorder<'_> {
    fn record(&mut self, name: &str, unit: &'static str, target: Option<Target>, value: f64) {
        eprintln!("    {name}: {} {unit}", num(value));
        let scenario = self.scenario;
        match self.results.metrics.iter_mut().find(|m| m.scenario == scenario && m.name == name) {
            Some(m) => m.runs.push(value),
            None => {
                self.results.metrics.push(Metric { scenario, name: name.to_owned(), unit, target, runs: vec![value] })
            }
        }
    }

    /// p50, p90, p99 and max of a latency sample, in ms.
    fn latencies(&mut self, what: &str, sample: &[f64], p50: Option<f64>, p99: Option<f64>) {
        let mut sorted = sample.to_vec();
        sorted.sort_by(f64::total_cmp);
        self.record(&format!("{what} p50"), "ms", p50.map(Target::AtMost), percentile(&sorted, 0.50));
        self.record(&format!("{what} p90"), "ms", None, percentile(&sorted, 0.90));
        self.record(&format!("{what} p99"), "ms", p99.map(Target::AtMost), percentile(&sorted, 0.99));
        self.record(&format!("{what} max"), "ms", None, sorted.last().copied().unwrap_or(f64::NAN));
    }
}

/// Nearest-rank percentile of a sorted sample.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A figure for people: thousands grouped, a few significant digits below 100.
fn num(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let a = v.abs();
    if a >= 1000.0 {
        let digits = (v.round() as i64).unsigned_abs().to_string();
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if v < 0.0 { format!("-{grouped}") } else { grouped }
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A temp directory of our own (Redis socket and log), removed on drop.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("jobwire-bench-{}", ulid::Ulid::new().to_string().to_lowercase()));
        std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process, killed when dropped and when the bench dies.
struct Spawned {
    name: &'static str,
    child: tokio::process::Child,
}

/// A command for a child: no inherited `JOBWIRE_*` settings (the bench sets what it means),
/// and death with the bench (PR_SET_PDEATHSIG; the spawning thread is a runtime thread that
/// lives as long as the bench).
fn command(program: &Path) -> Command {
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
    fn spawn(name: &'static str, mut cmd: Command) -> anyhow::Result<Self> {
        let child = cmd.spawn().with_context(|| format!("cannot start the {name}"))?;
        Ok(Self { name, child })
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().ok_or_else(|| anyhow!("the {} has exited", self.name))
    }

    /// SIGTERM, then SIGKILL after `grace`.
    async fn stop(mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            // SAFETY: signalling our own child by pid.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
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
struct Redis {
    proc: Spawned,
    url: String,
    conn: redis::aio::MultiplexedConnection,
}

impl Redis {
    async fn start(dir: &Path) -> anyhow::Result<Self> {
        let socket = dir.join("redis.sock");
        let mut cmd = command(Path::new("redis-server"));
        cmd.args(["--port", "0", "--save", "", "--appendonly", "no"])
            .args(["--unixsocketperm", "700"])
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"));
        let proc = Spawned::spawn("redis-server (is it installed and on PATH?)", cmd)?;
        let url = format!("unix://{}", socket.display());
        let client = redis::Client::open(url.as_str())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let conn = loop {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
                if pong.is_ok() {
                    break conn;
                }
            }
            ensure!(Instant::now() < deadline, "redis-server did not answer within 10 s (see its log)");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Ok(Self { proc, url, conn })
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.proc.pid()
    }

    async fn flushall(&self) -> anyhow::Result<()> {
        let () = redis::cmd("FLUSHALL").query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    async fn info_field(&self, section: &str, field: &str) -> anyhow::Result<String> {
        let info: String = redis::cmd("INFO").arg(section).query_async(&mut self.conn.clone()).await?;
        info.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| anyhow!("INFO {section} has no {field}"))
    }

    /// Clears INFO commandstats, to read one window's commands.
    async fn reset_stats(&self) -> anyhow::Result<()> {
        let () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// INFO commandstats as `(command, calls, µs executing)`, most called first. Commands that
    /// scripts run are counted too, and their time is also inside the script's.
    async fn command_stats(&self) -> anyhow::Result<Vec<CommandStat>> {
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

    async fn info_number(&self, section: &str, field: &str) -> anyhow::Result<f64> {
        let text = self.info_field(section, field).await?;
        text.parse().with_context(|| format!("INFO {field} is not a number: {text}"))
    }
}

/// One line of INFO commandstats.
struct CommandStat {
    name: String,
    calls: f64,
    usec: f64,
}

/// A jobwire server process on 127.0.0.1:0 over the private Redis.
struct Server {
    proc: Spawned,
    uri: String,
}

impl Server {
    async fn start(exe: &Path, redis_url: &str) -> anyhow::Result<Self> {
        let mut cmd = command(exe);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--redis-url", redis_url])
            .args(["--key-prefix", "bench", "--drain-grace", "1s"])
            .env("JOBWIRE_LOG", "info")
            .stderr(Stdio::piped());
        let mut proc = Spawned::spawn("jobwire server", cmd)?;
        let stderr = proc.child.stderr.take().context("the server's stderr is not piped")?;
        let mut lines = BufReader::new(stderr).lines();
        let mut tail: VecDeque<String> = VecDeque::new();
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = listening_addr(&line) {
                    return Ok(Some(addr));
                }
                if tail.len() == 20 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
            Ok::<_, std::io::Error>(None)
        })
        .await;
        let addr = match found {
            Ok(Ok(Some(addr))) => addr,
            Ok(Ok(None)) => {
                bail!("the server exited before listening; its last lines:\n{}", Vec::from(tail).join("\n"))
            }
            Ok(Err(e)) => bail!("cannot read the server's stderr: {e}"),
            Err(_) => bail!("the server did not listen within 20 s"),
        };
        // Keep draining its log so it never blocks on a full pipe; pass errors on.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("ERROR") {
                    eprintln!("    [server] {line}");
                }
            }
        });
        Ok(Self { proc, uri: format!("http://{addr}") })
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.proc.pid()
    }

    async fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::connect(&self.uri).await?)
    }

    async fn stop(self) {
        self.proc.stop(Duration::from_secs(10)).await;
    }
}

/// `... jobwire listening addr=127.0.0.1:43121` -> the address.
fn listening_addr(line: &str) -> Option<std::net::SocketAddr> {
    let rest = &line[line.find("jobwire listening")?..];
    let addr = rest.split_once("addr=")?.1.split_whitespace().next()?;
    addr.parse().ok()
}

/// What a worker process does.
struct WorkerSpec<'a> {
    queue: &'a str,
    concurrency: u32,
    expect: u64,
    samples: bool,
    fail_first: bool,
}

/// A worker process (the hidden `bench worker`), driven over its stdin and stdout.
struct WorkerProc {
    proc: Spawned,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl WorkerProc {
    /// Starts it and waits until it is connected (not yet working).
    async fn start(exe: &Path, server: &Server, spec: &WorkerSpec<'_>) -> anyhow::Result<Self> {
        let mut cmd = command(exe);
        cmd.args(["bench", "worker", "--addr", &server.uri, "--queue", spec.queue])
            .args(["--concurrency", &spec.concurrency.to_string()])
            .args(["--expect", &spec.expect.to_string()])
            .env("JOBWIRE_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if spec.samples {
            cmd.arg("--samples");
        }
        if spec.fail_first {
            cmd.arg("--fail-first");
        }
        let mut proc = Spawned::spawn("bench worker", cmd)?;
        let stdin = proc.child.stdin.take().context("worker stdin")?;
        let stdout = proc.child.stdout.take().context("worker stdout")?;
        let mut worker = Self { proc, stdin, stdout: BufReader::new(stdout).lines() };
        worker.wait_for("ready", Duration::from_secs(20), None).await?;
        Ok(worker)
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.proc.pid()
    }

    async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// Opens its stream and starts working.
    async fn go(&mut self) -> anyhow::Result<()> {
        self.send("go").await
    }

    /// Waits for a line from the worker, showing its progress lines meanwhile.
    async fn wait_for(&mut self, want: &str, limit: Duration, progress: Option<(&str, u64)>) -> anyhow::Result<()> {
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

    /// Stops it (running jobs finish and are acked) and returns its samples.
    async fn finish(mut self) -> anyhow::Result<Vec<(u64, i64)>> {
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
fn cpu_seconds(pid: u32) -> anyhow::Result<(f64, f64)> {
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
fn rss_bytes(pid: u32) -> anyhow::Result<f64> {
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
struct CpuWindow {
    pids: Vec<u32>,
    start: Vec<(f64, f64)>,
    at: Instant,
}

/// What a window measured: wall time, and per process the µs of CPU per unit of work (all,
/// and the system part of it).
struct CpuUse {
    elapsed: Duration,
    per_unit: Vec<f64>,
    system_per_unit: Vec<f64>,
}

impl CpuWindow {
    fn open(pids: &[u32]) -> anyhow::Result<Self> {
        Ok(Self {
            pids: pids.to_vec(),
            start: pids.iter().map(|p| cpu_seconds(*p)).collect::<anyhow::Result<_>>()?,
            at: Instant::now(),
        })
    }

    fn close(self, units: u64) -> anyhow::Result<CpuUse> {
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
fn raise_nofile_limit() -> anyhow::Result<u64> {
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

// ---------------------------------------------------------------------------------------------
// Load helpers
// ---------------------------------------------------------------------------------------------

fn unix_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

/// `{"n": i, "pad": "<100 bytes>"}`
fn payload(n: u64) -> Vec<u8> {
    format!(r#"{{"n":{n},"pad":"{PAD}"}}"#).into_bytes()
}

/// The issue's job: the payload and nothing else. The typed client's default `traceparent`
/// header (~70 bytes) is left out so every figure is of the plain `AddJob` contract; scenario f
/// measures it apart.
fn job(queue: &str, n: u64) -> NewJob {
    NewJob::new(queue, JOB_TYPE).payload(payload(n)).untraced()
}

/// Prints `label: done/total` every two seconds while alive.
struct Ticker(tokio::task::JoinHandle<()>);

impl Ticker {
    fn start(label: String, total: u64, done: Arc<AtomicU64>) -> Self {
        Self(tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(2));
            every.tick().await;
            loop {
                every.tick().await;
                eprintln!("    {label}: {}/{total}", done.load(Ordering::Relaxed));
            }
        }))
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Bench {
    /// A fresh server over a flushed Redis.
    async fn fresh_server(&self) -> anyhow::Result<Server> {
        self.redis.flushall().await?;
        Server::start(&self.exe, &self.redis.url).await
    }

    async fn worker(&self, server: &Server, spec: &WorkerSpec<'_>) -> anyhow::Result<WorkerProc> {
        WorkerProc::start(&self.exe, server, spec).await
    }
}

impl Bench {
    /// Prints where Redis spent a window (per job: user and system CPU, commands by calls) and
    /// returns the script calls and the µs spent executing them, per job. The rest of Redis's
    /// CPU is its event loop: reading, parsing and answering requests.
    async fn explain_redis(&self, n: u64, used: &CpuUse) -> anyhow::Result<CommandStat> {
        let stats = self.redis.command_stats().await?;
        let per_job = |v: f64| v / n as f64;
        let commands: Vec<String> = stats
            .iter()
            .take(12)
            .map(|c| format!("{} {} ({} µs)", c.name, num(per_job(c.calls)), num(per_job(c.usec))))
            .collect();
        let mut scripts = CommandStat { name: "scripts".into(), calls: 0.0, usec: 0.0 };
        for c in stats.iter().filter(|c| ["fcall", "evalsha", "eval"].contains(&c.name.as_str())) {
            scripts.calls += per_job(c.calls);
            scripts.usec += per_job(c.usec);
        }
        eprintln!(
            "    redis per job: {} µs CPU ({} µs system), {} µs inside scripts; commands per job (µs inside): {}",
            num(used.per_unit[0]),
            num(used.system_per_unit[0]),
            num(scripts.usec),
            commands.join(", ")
        );
        Ok(scripts)
    }
}

/// Adds `n` jobs, one AddJob each, at most `in_flight` at once; checks every answer.
async fn add_singly(client: &Client, n: u64, in_flight: usize, make: impl Fn(u64) -> NewJob) -> anyhow::Result<()> {
    let done = Arc::new(AtomicU64::new(0));
    let _ticker = Ticker::start("AddJob".into(), n, done.clone());
    let requests: Vec<proto::AddJobRequest> = (0..n).map(|i| make(i).into_request()).collect();
    futures::stream::iter(requests)
        .map(|req| {
            let mut raw = client.raw();
            let done = done.clone();
            async move {
                let resp = raw.add_job(req).await?.into_inner();
                ensure!(!resp.duplicate, "an add without a key came back duplicate");
                done.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        })
        .buffer_unordered(in_flight)
        .try_collect::<()>()
        .await
}

/// Adds `n` jobs with AddJobs of 1,000, `BULK_IN_FLIGHT` calls at once; checks every entry.
async fn add_in_bulk(client: &Client, n: u64, make: impl Fn(u64) -> NewJob) -> anyhow::Result<()> {
    let done = Arc::new(AtomicU64::new(0));
    let _ticker = Ticker::start("AddJobs".into(), n, done.clone());
    let batches: Vec<Vec<NewJob>> =
        (0..n.div_ceil(BULK)).map(|b| (b * BULK..((b + 1) * BULK).min(n)).map(&make).collect()).collect();
    futures::stream::iter(batches)
        .map(|batch| {
            let client = client.clone();
            let done = done.clone();
            async move {
                let len = batch.len();
                let results = client.add_many(batch).await?;
                ensure!(results.len() == len, "AddJobs answered {} of {len}", results.len());
                if let Some(bad) = results.iter().find(|r| r.code != 0 || r.duplicate) {
                    bail!("AddJobs rejected an entry: {} {}", bad.code, bad.message);
                }
                done.fetch_add(len as u64, Ordering::Relaxed);
                Ok(())
            }
        })
        .buffer_unordered(BULK_IN_FLIGHT)
        .try_collect::<()>()
        .await
}

/// Waits until nothing of `queue` is waiting, delayed or active; returns its final figures.
async fn wait_settled(client: &Client, queue: &str) -> anyhow::Result<proto::QueueStats> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = client.stats(queue).await?;
        if stats.waiting == 0 && stats.delayed == 0 && stats.active == 0 {
            return Ok(stats);
        }
        ensure!(
            Instant::now() < deadline,
            "queue {queue} did not settle within 60 s: {} waiting, {} delayed, {} active",
            stats.waiting,
            stats.delayed,
            stats.active
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Checks that every job of a drained queue completed: none dead, all counted (up to the
/// server's completed-job cap).
fn check_all_completed(stats: &proto::QueueStats, n: u64) -> anyhow::Result<()> {
    ensure!(stats.dead == 0, "{} jobs went dead", stats.dead);
    ensure!(
        stats.completed == n.min(COMPLETED_CAP),
        "{} jobs completed, expected {}",
        stats.completed,
        n.min(COMPLETED_CAP)
    );
    Ok(())
}

/// Open loop: one AddJob every `every`, not waiting for answers. Returns `(n, unix ns just
/// before its AddJob)` for n in 1..=count.
async fn open_loop(
    client: &Client,
    queue: &str,
    count: u64,
    every: Duration,
    delay: Option<Duration>,
) -> anyhow::Result<Vec<(u64, i64)>> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = JoinSet::new();
    for n in 1..=count {
        tick.tick().await;
        let mut new = job(queue, n);
        if let Some(d) = delay {
            new = new.delay(d);
        }
        let req = new.into_request();
        let mut raw = client.raw();
        tasks.spawn(async move {
            let before = unix_nanos();
            raw.add_job(req).await.map(|_| (n, before))
        });
    }
    let mut sent = Vec::with_capacity(count as usize);
    while let Some(joined) = tasks.join_next().await {
        sent.push(joined??);
    }
    Ok(sent)
}

/// One open-loop latency measurement (c, d, g): `count` jobs, one every `every`, each delayed
/// by `delay`, for a worker process of `concurrency`.
#[derive(Clone, Copy)]
struct OpenLoop<'a> {
    queue: &'a str,
    count: u64,
    every: Duration,
    delay: Option<Duration>,
    concurrency: u32,
}

/// Starts a fresh worker process, adds a warm-up job that proves its stream is open, then runs
/// the open loop. Returns each job's latency in ms: handler start − (just before AddJob + delay).
async fn measure_latency(
    bench: &Bench,
    server: &Server,
    client: &Client,
    load: &OpenLoop<'_>,
) -> anyhow::Result<Vec<f64>> {
    let OpenLoop { queue, count, every, delay, concurrency } = *load;
    let spec = WorkerSpec { queue, concurrency, expect: count + 1, samples: true, fail_first: false };
    let mut worker = bench.worker(server, &spec).await?;
    worker.go().await?;
    client.raw().add_job(job(queue, 0).into_request()).await?;
    worker.wait_for("started", Duration::from_secs(20), None).await?;
    let sent = open_loop(client, queue, count, every, delay).await?;
    worker.wait_for("done", Duration::from_secs(120), Some((queue, count + 1))).await?;
    let stats = wait_settled(client, queue).await?;
    check_all_completed(&stats, count + 1)?;
    let samples = worker.finish().await?;
    let mut first_start: HashMap<u64, i64> = HashMap::new();
    for (n, at) in samples {
        let slot = first_start.entry(n).or_insert(at);
        *slot = (*slot).min(at);
    }
    let offset = delay.map_or(0, |d| d.as_nanos() as i64);
    sent.iter()
        .map(|(n, before)| {
            let start = first_start.get(n).ok_or_else(|| anyhow!("job {n} was never handled"))?;
            Ok((start - before - offset) as f64 / 1e6)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// a. Enqueue
// ---------------------------------------------------------------------------------------------

impl Bench {
    async fn enqueue(&self, out: &mut Recorder<'_>) -> anyhow::Result<()> {
        let n = self.sizes.enqueue;
        let server = self.fresh_server().await?;
        let client = server.client().await?;
        let pids = [self.redis.pid()?, server.pid()?];

        self.redis.reset_stats().await?;
        let cpu = CpuWindow::open(&pids)?;
        add_singly(&client, n, IN_FLIGHT, |i| job("bench-a1", i)).await?;
        let used = cpu.close(n)?;
        self.explain_redis(n, &used).await?;
        let CpuUse { elapsed, per_unit: per_job, .. } = used;
        ensure!(client.stats("bench-a1").await?.waiting == n, "jobs missing");
        out.record(
            "AddJob, ≤ 100 in flight",
            "jobs/s",
            Some(Target::AtLeast(50_000.0)),
            n as f64 / elapsed.as_secs_f64(),
        );
        out.record("AddJob: redis-server CPU", "µs/job", None, per_job[0]);
        out.record("AddJob: jobwire server CPU", "µs/job", None, per_job[1]);

        self.redis.reset_stats().await?;
        let cpu = CpuWindow::open(&pids)?;
        add_in_bulk(&client, n, |i| job("bench-a2", i)).await?;
        let used = cpu.close(n)?;
        self.explain_redis(n, &used).await?;
        let CpuUse { elapsed, per_unit: per_job, .. } = used;
        ensure!(client.stats("bench-a2").await?.waiting == n, "jobs missing");
        out.record(
            "AddJobs of 1,000, ≤ 4 calls in flight",
            "jobs/s",
            Some(Target::AtLeast(150_000.0)),
            n as f64 / elapsed.as_secs_f64(),
        );
        out.record("AddJobs: redis-server CPU", "µs/job", None, per_job[0]);
        out.record("AddJobs: jobwire server CPU", "µs/job", None, per_job[1]);

        // One call at a time: the round trip, to read against h's bare unary call.
        let mut raw = client.raw();
        let mut rtts = Vec::with_capacity(self.sizes.round_trips as usize);
        for i in 0..self.sizes.round_trips {
            let req = job("bench-a3", i).into_request();
            let t = Instant::now();
            raw.add_job(req).await?;
            rtts.push(t.elapsed().as_secs_f64() * 1e3);
        }
        rtts.sort_by(f64::total_cmp);
        out.record("AddJob round trip, 1 in flight, p50", "ms", None, percentile(&rtts, 0.5));
        server.stop().await;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// b. Processing
// ---------------------------------------------------------------------------------------------

impl Bench {
    async fn processing(&self, out: &mut Recorder<'_>) -> anyhow::Result<()> {
        let n = self.sizes.process;
        for (concurrency, target) in [(1, 10_000.0), (10, 0.0), (100, 30_000.0)] {
            let queue = "bench-b";
            let server = self.fresh_server().await?;
            let client = server.client().await?;
            add_in_bulk(&client, n, |i| job(queue, i)).await?;
            let spec = WorkerSpec { queue, concurrency, expect: n, samples: false, fail_first: false };
            let mut worker = self.worker(&server, &spec).await?;
            self.redis.reset_stats().await?;
            let cpu = CpuWindow::open(&[self.redis.pid()?, server.pid()?, worker.pid()?])?;
            worker.go().await?;
            let label = format!("concurrency {concurrency}");
            worker.wait_for("done", Duration::from_secs(600), Some((&label, n))).await?;
            let stats = wait_settled(&client, queue).await?;
            let used = cpu.close(n)?;
            let scripts = self.explain_redis(n, &used).await?;
            check_all_completed(&stats, n)?;
            worker.finish().await?;
            server.stop().await;
            let (c, per_job) = (concurrency, &used.per_unit);
            out.record(
                &format!("concurrency {c}: throughput"),
                "jobs/s",
                (target > 0.0).then_some(Target::AtLeast(target)),
                n as f64 / used.elapsed.as_secs_f64(),
            );
            out.record(&format!("concurrency {c}: redis-server CPU"), "µs/job", Some(Target::AtMost(15.0)), per_job[0]);
            out.record(&format!("concurrency {c}: redis script calls"), "calls/job", None, scripts.calls);
            out.record(&format!("concurrency {c}: redis time in scripts"), "µs/job", None, scripts.usec);
            out.record(&format!("concurrency {c}: jobwire server CPU"), "µs/job", None, per_job[1]);
            out.record(&format!("concurrency {c}: worker process CPU"), "µs/job", None, per_job[2]);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// c. Latency at light load
// ---------------------------------------------------------------------------------------------

impl Bench {
    async fn latency(&self, out: &mut Recorder<'_>) -> anyhow::Result<()> {
        let server = self.fresh_server().await?;
        let client = server.client().await?;
        let every = Duration::from_millis(2);
        let count = self.sizes.latency_jobs;
        self.redis.reset_stats().await?;
        let cpu = CpuWindow::open(&[self.redis.pid()?])?;
        let load = OpenLoop { queue: "bench-c", count, every, delay: None, concurrency: 10 };
        let sample = measure_latency(self, &server, &client, &load).await?;
        self.explain_redis(count, &cpu.close(count)?).await?;
        server.stop().await;
        out.latencies("latency", &sample, Some(0.5), Some(2.0));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// d. Delayed accuracy
// ---------------------------------------------------------------------------------------------

impl Bench {
    async fn delayed(&self, out: &mut Recorder<'_>) -> anyhow::Result<()> {
        let server = self.fresh_server().await?;
        let client = server.client().await?;
        // Redis keeps its default `hz 10`: the server must not depend on Redis timers.
        let hz = self.redis.info_number("server", "hz").await?;
        ensure!(hz == 10.0, "redis runs at hz {hz}, not its default 10");
        let load = OpenLoop {
            queue: "bench-d",
            count: self.sizes.delayed_jobs,
            every: Duration::from_millis(1),
            delay: Some(Duration::from_millis(500)),
            concurrency: 100,
        };
        let sample = measure_latency(self, &server, &client, &load).await?;
        server.stop().await;
        out.latencies("lateness, 500 ms delay", &sample, None, Some(5.0));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// e. Retry path
// ---------------------------------------------------------------------------------------------

impl Bench {
    async fn retries(&self, out: &mut Recorder<'_>) -> anyhow::Result<()> {
        let n = self.sizes.retry_jobs;
        for backoff_ms in [0, 10] {
            let queue = "bench-e";
            let server = self.fresh_server().await?;
            let client = server.client().await?;
            let backoff = Duration::from_millis(backoff_ms);
            add_in_bulk(&client, n, |i| job(queue, i).max_attempts(3).fixed_backoff(backoff)).await?;
            let spec = WorkerSpec { queue, concurrency: 100, expect: n, samples: false, fail_first: true };
            let mut worker = self.worker(&server, &spec).await?;
            self.redis.reset_stats().await?;
            let cpu = CpuWindow::open(&[self.redis.pid()?, server.pid()?])?;
            worker.go().await?;
            let label = format!("backoff {backoff_ms} ms");
            worker.wait_for("done", Duration::from_secs(600), Some((&label, n))).await?;
            let stats = wait_settled(&client, queue).await?;
            let used = cpu.close(n)?;
            let scripts = self.explain_redis(n, &used).await?;
            let CpuUse { elapsed, per_unit: per_job, .. } = used;
            check_all_completed(&stats, n)?;
            worker.finish().await?;
            server.stop().await;
            out.record(
                &format!("fail once, backoff {backoff_ms} ms: throughput"),
                "jobs/s",
                None,
                n as f64 / elapsed.as_secs_f64(),
            );
            out.record(&format!("fail once, backoff {backoff_ms} ms: redis-server CPU"), "µs/job", None, per_job[0]);
            out.record(
                &format!("fail once, backoff {backoff_ms} ms: redis script calls"),
                "calls/job",
                None,
                scripts.calls,
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// f. Redis memory per waiting job
// ---------------------------------------------------------------------------------------------

impl Bench {
    async fn memory(&self, out: &mut Recorder<'_>) -> anyhow::Result<()> {
        let n = self.sizes.memory_jobs;
        let server = self.fresh_server().await?;
        let client = server.client().await?;
        // The plain job; with the typed client's default traceparent header; and with that and
        // the idempotency key `Client::add` always sets.
        let variants = [
            ("bench-f1", "waiting job, 100-byte payload", Some(Target::AtMost(300.0))),
            ("bench-f2", "+ traceparent header (NewJob default)", None),
            ("bench-f3", "+ idempotency key (as Client::add sends)", None),
        ];
        for (v, (queue, name, target)) in variants.into_iter().enumerate() {
            let make = |i: u64| {
                let plain = job(queue, i);
                match v {
                    0 => plain,
                    1 => NewJob::new(queue, JOB_TYPE).payload(payload(i)),
                    _ => NewJob::new(queue, JOB_TYPE)
                        .payload(payload(i))
                        .idempotency_key(&format!("auto-{}", ulid::Ulid::new())),
                }
            };
            // A first job registers the queue and creates its keys: not part of the delta.
            client.raw().add_job(make(u64::MAX).into_request()).await?;
            let before = self.redis.info_number("memory", "used_memory").await?;
            add_in_bulk(&client, n, make).await?;
            let after = self.redis.info_number("memory", "used_memory").await?;
            ensure!(client.stats(queue).await?.waiting == n + 1, "jobs missing");
            if v == 0 {
                self.explain_memory(queue, n).await?;
            }
            out.record(name, "bytes/job", target, (after - before) / n as f64);
        }
        server.stop().await;
        Ok(())
    }
}

impl Bench {
    /// Prints the memory of each key of `queue` per job (MEMORY USAGE, exact), so a miss can be
    /// traced to a structure. Keys are found by the queue's hash tag, without knowing the layout.
    async fn explain_memory(&self, queue: &str, n: u64) -> anyhow::Result<()> {
        let mut conn = self.redis.conn.clone();
        let mut keys: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("*{{{queue}}}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let mut sizes = Vec::new();
        for key in keys {
            let bytes: Option<u64> =
                redis::cmd("MEMORY").arg("USAGE").arg(&key).arg("SAMPLES").arg(0).query_async(&mut conn).await?;
            sizes.push((bytes.unwrap_or(0), key));
        }
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        let listed: Vec<String> =
            sizes.iter().take(6).map(|(bytes, key)| format!("{key} {}", num(*bytes as f64 / n as f64))).collect();
        eprintln!("    memory by key, bytes per job: {}", listed.join(", "));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// g. Idle worker streams
// ---------------------------------------------------------------------------------------------

impl Bench {
    async fn idle_streams(&self, out: &mut Recorder<'_>) -> anyhow::Result<()> {
        let server = self.fresh_server().await?;
        let client = server.client().await?;
        let every = Duration::from_millis(2);
        // Two queues, so each measurement checks its own completions.
        let load = OpenLoop { queue: "bench-g1", count: self.sizes.latency_jobs, every, delay: None, concurrency: 10 };
        let baseline = measure_latency(self, &server, &client, &load).await?;
        let rss_before = rss_bytes(server.pid()?)?;

        let wanted = self.sizes.idle_streams;
        let opened = Arc::new(AtomicU64::new(0));
        let ticker = Ticker::start("streams opened".into(), wanted, opened.clone());
        let mut holders = JoinSet::new();
        let mut channels = Vec::new();
        let connections = wanted.div_ceil(STREAMS_PER_CONNECTION);
        for c in 0..connections {
            let idle = Client::connect(&server.uri).await?;
            channels.push(idle.clone());
            let here = STREAMS_PER_CONNECTION.min(wanted - c * STREAMS_PER_CONNECTION);
            let opened = opened.clone();
            holders.spawn(async move { hold_streams(idle, here, opened).await });
        }
        // Wait until every stream is open (or one failed).
        let deadline = Instant::now() + Duration::from_secs(120);
        while opened.load(Ordering::Relaxed) < wanted {
            if let Some(joined) = holders.try_join_next() {
                joined??;
                bail!("a connection's streams ended while opening");
            }
            ensure!(
                Instant::now() < deadline,
                "only {} of {wanted} streams opened within 120 s",
                opened.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(ticker);
        // Let the open-time dispatcher rounds settle before measuring.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_after = rss_bytes(server.pid()?)?;
        // What merely holding the streams costs: CPU over a few idle seconds (per second).
        let idle_for = Duration::from_secs(3);
        let cpu = CpuWindow::open(&[self.redis.pid()?, server.pid()?])?;
        tokio::time::sleep(idle_for).await;
        let idle = cpu.close(idle_for.as_secs())?;
        // Minus the bench's own connection.
        let redis_clients = self.redis.info_number("clients", "connected_clients").await? - 1.0;
        let loaded = measure_latency(self, &server, &client, &OpenLoop { queue: "bench-g2", ..load }).await?;
        ensure!(holders.try_join_next().is_none(), "idle streams ended during the measurement");
        holders.abort_all();
        drop(channels);
        server.stop().await;

        let p99 = |s: &[f64]| {
            let mut v = s.to_vec();
            v.sort_by(f64::total_cmp);
            percentile(&v, 0.99)
        };
        out.record(
            "idle GetJob streams held",
            "streams",
            Some(Target::AtLeast(wanted as f64)),
            opened.load(Ordering::Relaxed) as f64,
        );
        out.record("redis connections of the server", "conns", Some(Target::AtMost(16.0)), redis_clients);
        out.record("server RSS with the streams", "MB", Some(Target::AtMost(300.0)), rss_after / 1e6);
        out.record("server RSS per idle stream", "KB", None, (rss_after - rss_before) / wanted as f64 / 1e3);
        out.record("server CPU while the streams idle", "% of a core", None, idle.per_unit[1] / 1e4);
        out.record("redis-server CPU while the streams idle", "% of a core", None, idle.per_unit[0] / 1e4);
        out.record("c latency p99, no idle streams", "ms", None, p99(&baseline));
        out.record("c latency p99, with the streams", "ms", None, p99(&loaded));
        out.record(
            "c p99 with / without the streams",
            "ratio",
            Some(Target::AtMost(1.2)),
            p99(&loaded) / p99(&baseline),
        );
        Ok(())
    }
}

/// Opens `count` GetJob streams on one connection and reads them until they end; counts opens.
async fn hold_streams(client: Client, count: u64, opened: Arc<AtomicU64>) -> anyhow::Result<()> {
    let mut readers = JoinSet::new();
    for i in 0..count {
        let req = proto::GetJobRequest {
            worker_id: format!("idle-{i}"),
            labels: HashMap::new(),
            queues: vec!["bench-g-idle".into()],
            max_in_flight: 1,
        };
        let mut stream = client.raw().get_job(req).await?.into_inner();
        opened.fetch_add(1, Ordering::Relaxed);
        readers.spawn(async move { while let Ok(Some(_)) = stream.message().await {} });
    }
    // Streams end only when the server goes; the bench aborts this task first.
    while readers.join_next().await.is_some() {}
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// h. The transport's ceiling
// ---------------------------------------------------------------------------------------------

impl Bench {
    async fn ceiling(&self, out: &mut Recorder<'_>) -> anyhow::Result<()> {
        let mut cmd = command(&self.exe);
        cmd.args(["bench", "ceiling"])
            .env("JOBWIRE_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut proc = Spawned::spawn("bare tonic service", cmd)?;
        let stdout = proc.child.stdout.take().context("ceiling stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .context("the bare service did not start within 20 s")??
            .context("the bare service exited at start")?;
        let addr = line.strip_prefix("listening addr=").context("the bare service did not say where it listens")?;
        let channel = Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true).connect().await?;
        let health = HealthClient::new(channel);
        let check = || HealthCheckRequest { service: String::new() };

        let n = self.sizes.ceiling_calls;
        let cpu = CpuWindow::open(&[proc.pid()?])?;
        futures::stream::iter(0..n)
            .map(|_| {
                let mut h = health.clone();
                async move { h.check(check()).await.map(|_| ()) }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<()>()
            .await?;
        let CpuUse { elapsed, per_unit: per_call, .. } = cpu.close(n)?;
        out.record("bare unary (health Check), ≤ 100 in flight", "calls/s", None, n as f64 / elapsed.as_secs_f64());
        out.record("bare unary: server CPU", "µs/call", None, per_call[0]);

        let streams = n / 2;
        let t = Instant::now();
        futures::stream::iter(0..streams)
            .map(|_| {
                let h = health.clone();
                async move { first_watch_message(h).await }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<()>()
            .await?;
        out.record(
            "bare stream open + first message, ≤ 100 in flight",
            "streams/s",
            None,
            streams as f64 / t.elapsed().as_secs_f64(),
        );

        let rounds = self.sizes.round_trips;
        let mut unary = Vec::with_capacity(rounds as usize);
        let mut stream = Vec::with_capacity(rounds as usize);
        for _ in 0..rounds {
            let t = Instant::now();
            health.clone().check(check()).await?;
            unary.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            first_watch_message(health.clone()).await?;
            stream.push(t.elapsed().as_secs_f64() * 1e3);
        }
        unary.sort_by(f64::total_cmp);
        stream.sort_by(f64::total_cmp);
        out.record("bare unary round trip, 1 in flight, p50", "ms", None, percentile(&unary, 0.5));
        out.record("bare unary round trip, 1 in flight, p99", "ms", None, percentile(&unary, 0.99));
        out.record("bare stream open + first message, 1 in flight, p50", "ms", None, percentile(&stream, 0.5));
        drop(health);
        proc.stop(Duration::from_secs(5)).await;
        Ok(())
    }
}

/// A bare server-stream round trip: open health `Watch`, read its first message.
async fn first_watch_message(mut health: HealthClient<Channel>) -> anyhow::Result<()> {
    let mut stream = health.watch(HealthCheckRequest { service: String::new() }).await?.into_inner();
    stream.message().await?.context("the watch stream ended at once")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The hidden roles: a worker process, and the bare tonic service
// ---------------------------------------------------------------------------------------------

/// `bench worker`: a `jobwire::client::Worker` with a no-op handler (see the module doc for
/// its protocol on stdin/stdout).
async fn worker_main(args: WorkerArgs) -> anyhow::Result<()> {
    let client = Client::connect(&args.addr).await?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    println!("ready");
    match stdin.next_line().await? {
        Some(line) if line == "go" => {}
        other => bail!("expected `go` on stdin, got {other:?}"),
    }
    let succeeded = Arc::new(AtomicU64::new(0));
    let milestone = Arc::new(Notify::new());
    let samples: Arc<Mutex<Vec<(u64, i64)>>> = Arc::default();
    let handler = {
        let (succeeded, milestone, samples) = (succeeded.clone(), milestone.clone(), samples.clone());
        let (record, fail_first, expect) = (args.samples, args.fail_first, args.expect);
        move |ctx: JobContext| {
            let started = unix_nanos();
            let fail = fail_first && ctx.attempt() == 1;
            if !fail {
                if record {
                    let n = serde_json::from_slice::<serde_json::Value>(ctx.payload())
                        .ok()
                        .and_then(|v| v.get("n")?.as_u64());
                    if let Some(n) = n {
                        samples.lock().unwrap_or_else(|e| e.into_inner()).push((n, started));
                    }
                }
                let done = succeeded.fetch_add(1, Ordering::Relaxed) + 1;
                if done == 1 || done == expect {
                    milestone.notify_one();
                }
            }
            async move { if fail { Err(JobError::retry("bench: every first attempt fails")) } else { Ok(Vec::new()) } }
        }
    };
    let monitor = tokio::spawn(report(succeeded, milestone, args.expect));
    let stop = async move {
        while let Ok(Some(line)) = stdin.next_line().await
            && line != "stop"
        {}
    };
    Worker::new(client, &[&args.queue])
        .concurrency(args.concurrency)
        .worker_id("bench-worker")
        .handle(JOB_TYPE, handler)
        .run(stop)
        .await?;
    monitor.abort();
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    println!("samples {}", serde_json::to_string(&samples)?);
    Ok(())
}

/// Prints `started`, `progress N` every two seconds, and `done` for the bench.
async fn report(succeeded: Arc<AtomicU64>, milestone: Arc<Notify>, expect: u64) {
    let mut every = tokio::time::interval(Duration::from_secs(2));
    every.tick().await;
    let (mut started, mut done) = (false, false);
    loop {
        let tick = tokio::select! {
            _ = milestone.notified() => false,
            _ = every.tick() => true,
        };
        let count = succeeded.load(Ordering::Relaxed);
        if count >= 1 && !started {
            started = true;
            println!("started");
        }
        if count >= expect && !done {
            done = true;
            println!("done");
        } else if tick && !done {
            println!("progress {count}");
        }
    }
}

/// `bench ceiling`: tonic's own health service and nothing else, until stdin closes.
async fn ceiling_main() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening addr={}", listener.local_addr()?);
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    let stop = async {
        let mut stdin = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(_)) = stdin.next_line().await {}
    };
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder().add_service(service).serve_with_incoming_shutdown(incoming, stop).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(1_234_567.4), "1,234,567");
        assert_eq!(num(150_000.0), "150,000");
        assert_eq!(num(299.6), "300");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(1.234), "1.23");
        assert_eq!(num(0.4567), "0.457");
        assert_eq!(num(f64::NAN), "-");
    }

    #[test]
    fn the_listening_line_gives_the_address() {
        let line = "2025-01-01T00:00:00.000Z  INFO jobwire: jobwire listening addr=127.0.0.1:43121";
        assert_eq!(listening_addr(line), Some("127.0.0.1:43121".parse().expect("addr")));
        assert_eq!(listening_addr("INFO jobwire: engine started"), None);
    }

    #[test]
    fn payloads_are_the_issues_shape() {
        let p = payload(42);
        let v: serde_json::Value = serde_json::from_slice(&p).expect("json");
        assert_eq!(v["n"], 42);
        assert_eq!(v["pad"].as_str().map(str::len), Some(100));
    }

    #[test]
    fn own_cpu_time_reads() {
        let (user, system) = cpu_seconds(std::process::id()).expect("stat");
        assert!(user >= 0.0 && system >= 0.0);
        assert!(rss_bytes(std::process::id()).expect("status") > 0.0);
    }

    #[test]
    fn medians_and_targets() {
        let m = Metric {
            scenario: Scenario::A,
            name: "x".into(),
            unit: "jobs/s",
            target: Some(Target::AtLeast(10.0)),
            runs: vec![12.0, 8.0, 11.0],
        };
        assert_eq!(m.median(), 11.0);
        assert_eq!((m.min(), m.max()), (8.0, 12.0));
        assert_eq!(m.met(), Some(true));
    }
}
