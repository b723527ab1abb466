//! `jobwire-bench`: the benchmark harness behind BENCHMARKS.md. It measures the budgets of
//! DESIGN.md end to end, through the public gRPC contract, and prints a table (or JSON). Run it
//! from a release build: `cargo build --release && target/release/jobwire-bench`.
//!
//! Why it is shaped this way:
//! - **A binary of its own, on the public API.** It uses only what the library exports (the
//!   typed client, the Redis launcher, the ready file), so it measures what users get, and the
//!   server binary carries no bench code.
//! - **Processes as in production.** A private `redis-server` (`jobwire::redis_server`: default
//!   config, no persistence, a unix socket in a temp dir), the jobwire server as a process of
//!   its own (the `jobwire` binary next to this one, `serve`, its address read from its
//!   `--ready-file`), and workers as processes of their own (this binary, the hidden `worker`
//!   role, running the typed client's `Worker`). Nothing shares a process with the server, so
//!   the CPU of each party is read apart from `/proc/<pid>/stat` (utime + stime) over the window.
//! - **Fresh state per run.** Every scenario run flushes Redis and starts a fresh server, so no
//!   run inherits another's dispatchers, retained jobs or memory.
//! - **The transport's ceiling in the same invocation** (scenario h: a bare tonic unary call and
//!   a bare server stream, served by a process of its own, the hidden `ceiling` role), so every
//!   figure can be read against what tonic allows on this machine at this moment.
//! - **Correctness before speed.** Every scenario checks that what it added was delivered (or is
//!   waiting) and that nothing went dead; a failed check fails the bench, it does not print a
//!   number.
//! - **Nothing left behind.** Every child is killed when its guard drops (on success, on error,
//!   on Ctrl-C), and dies with the bench if the bench itself is killed (PR_SET_PDEATHSIG).
//!
//! Workers talk to the bench over their stdin/stdout: they print `ready` once connected, start
//! on `go`, print `started` at their first job, `progress N` every two seconds and `done` once
//! `--expect` handlers succeeded, answer `count` with `count N` (the handlers that succeeded so
//! far); on `stop` (or EOF) they finish, print `samples [[n, unix_ns], ...]` (the handler start
//! time of each job, by the payload's `n`) and exit.
//!
//! Files: this one (arguments, the driver), `results` (figures, table, JSON), `procs` (the
//! processes and their CPU), `load` (load helpers), one file per group of scenarios
//! (`throughput`: a, b, e; `latency`: c, d, g; `memory`: f; `ceiling`: h; `steady`: i;
//! `schedules`: j; `rates`: k; `scaling`: l), `cluster` (the local Redis Cluster of l), `probe`
//! (`--count`, `--callgrind`), `worker` (the hidden worker role) and `secure` (TLS and a token
//! for every process, with `--secure`).

mod ceiling;
mod cluster;
mod latency;
mod load;
mod memory;
mod probe;
mod procs;
mod rates;
mod results;
mod scaling;
mod schedules;
mod secure;
mod steady;
mod throughput;
mod worker;

use std::{io::Write, path::PathBuf, time::Instant};

use anyhow::{Context, bail, ensure};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    procs::{Redis, WorkDir, raise_nofile_limit},
    results::Results,
    scaling::Scaling,
    steady::Steady,
    worker::{WorkerArgs, WorkerProtocol},
};

/// The server's allocator (mimalloc, see src/main.rs), so the worker processes and the bare
/// service measure the same allocator as when they ran inside the server binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------

/// Measure throughput, latency, CPU and memory against a private redis-server and a fresh
/// jobwire server per run (see BENCHMARKS.md). Use a release build.
#[derive(Parser, Debug)]
#[command(name = "jobwire-bench", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    role: Option<Role>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Scenarios to run, comma-separated: a enqueue, b processing, c latency, d delayed
    /// accuracy, e retries, f Redis memory, g idle streams, h transport ceiling, i Redis memory
    /// at a steady rate, j schedule lateness, k rate limits that bind, l b on a Redis Cluster
    /// (`--masters`, `--instances`, `--shards`). Default: all.
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
    /// The protocol the worker processes speak: `work` (the bidirectional `Work` stream) or
    /// `unary` (`GetJob` and one call per ack, as a client without `Work`).
    #[arg(long, value_enum, default_value_t)]
    protocol: WorkerProtocol,
    /// Jobs each worker process holds beyond its concurrency (`--protocol work` only). With
    /// N > 0, b runs concurrency 1 twice, without prefetch and with it.
    #[arg(long, default_value_t = 0)]
    prefetch: u32,
    /// Jobs scenario i adds and completes (default 60,000; 6,000 with --quick).
    #[arg(long)]
    steady_jobs: Option<u64>,
    /// Jobs per second scenario i adds.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    steady_rate: u64,
    /// Every server serves TLS and needs a token (certificates and a token made for the run),
    /// and every client and worker connects with both: set beside a plain run, what security
    /// costs.
    #[arg(long)]
    secure: bool,
    /// The server's --idempotency-retry-window in scenario i (e.g. 20s, 10m).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    steady_retry_window: std::time::Duration,
    /// Tokio worker threads of each jobwire server process (its TOKIO_WORKER_THREADS); default
    /// tokio's, one per core.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    server_threads: Option<u32>,
    /// Tokio worker threads of each worker process; default tokio's, one per core.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    worker_threads: Option<u32>,
    /// In b, give the queue a concurrency cap of N (SetQueueSettings) before its workers start:
    /// what the cap costs, read against a run without it.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency_cap: Option<u32>,
    /// b's and l's worker concurrencies, comma-separated (default: b 1,10,100; l 100). In l
    /// each instance's worker takes an equal part.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: Vec<u32>,
    /// l's cluster sizes (masters, no replicas), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 3], value_parser = clap::value_parser!(u32).range(1..=16))]
    masters: Vec<u32>,
    /// l's jobwire instances over the cluster, comma-separated; one worker process each.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2], value_parser = clap::value_parser!(u32).range(1..=8))]
    instances: Vec<u32>,
    /// l's queue shards (1: unsharded), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 3], value_parser = clap::value_parser!(u32).range(1..=16))]
    shards: Vec<u32>,
    /// In b's windows and a's single adds, also count each process's context switches and
    /// system calls per job (`perf stat` attached to it; see probe.rs).
    #[arg(long)]
    count: bool,
    /// In b's windows and a's single adds, also count the instructions per job of these
    /// processes (redis, server, worker; comma-separated) under valgrind's callgrind (see
    /// probe.rs: Redis needs a wrapper on PATH). Slow: use with --quick.
    #[arg(long, value_enum, value_delimiter = ',')]
    callgrind: Vec<probe::Role>,
    /// Where --count and --callgrind leave their files (default: the bench's temp dir, removed
    /// at the end).
    #[arg(long)]
    probe_dir: Option<PathBuf>,
}

impl RunArgs {
    /// What the worker processes run, for the table's header.
    fn workers(&self) -> String {
        let mut text = format!("workers: {} protocol, prefetch {}", self.protocol.name(), self.prefetch);
        if self.prefetch > 0 {
            text.push_str(" (b at concurrency 1 also without)");
        }
        let threads = |n: Option<u32>| n.map_or_else(|| "one per core".to_owned(), |n| n.to_string());
        text.push_str(&format!(
            "; tokio threads: server {}, worker {}",
            threads(self.server_threads),
            threads(self.worker_threads)
        ));
        if self.secure {
            text.push_str("; TLS and a token on every connection");
        }
        text
    }
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
    I,
    J,
    K,
    L,
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
            Scenario::I => "i",
            Scenario::J => "j",
            Scenario::K => "k",
            Scenario::L => "l",
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
            Scenario::I => "Redis memory at a steady rate",
            Scenario::J => "schedule lateness",
            Scenario::K => "rate limits that bind",
            Scenario::L => "scaling out on Redis Cluster",
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
    steady_jobs: u64,
    /// Schedules of scenario j, each every second.
    schedules: u64,
    /// Seconds of due times scenario j measures.
    schedule_seconds: u64,
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
    steady_jobs: 60_000,
    schedules: 1_000,
    schedule_seconds: 20,
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
    steady_jobs: 6_000,
    schedules: 100,
    schedule_seconds: 5,
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Cli::parse();
    jobwire::telemetry::log_to_stderr();
    match args.role {
        Some(Role::Worker(w)) => worker::run(w).await,
        Some(Role::Ceiling) => ceiling::serve_bare().await,
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

/// What every scenario needs: this binary, the server binary, the private Redis, the sizes.
struct Bench {
    /// This binary: the worker processes and the bare service run it.
    exe: PathBuf,
    /// The `jobwire` binary next to it (the same target dir).
    server_exe: PathBuf,
    redis: Redis,
    sizes: Sizes,
    /// What every worker process speaks.
    protocol: WorkerProtocol,
    /// Jobs every worker process holds beyond its concurrency (b at concurrency 1 also runs
    /// without).
    prefetch: u32,
    /// How scenario i runs.
    steady: Steady,
    /// b's and l's worker concurrencies, when told (each has its default).
    concurrency: Vec<u32>,
    /// l's rows.
    scaling: Scaling,
    /// b's queue's concurrency cap, when set.
    concurrency_cap: Option<u32>,
    /// Tokio worker threads of the server and worker processes, when set.
    server_threads: Option<u32>,
    worker_threads: Option<u32>,
    /// What b's windows count besides CPU time.
    probes: probe::Probes,
    /// With `--secure`: the servers' TLS and token flags, and the clients' CA and token.
    security: Option<secure::Security>,
    /// Holds the servers' ready files; dropped after `redis`, which lives in it.
    work: WorkDir,
}

async fn drive(opts: RunArgs) -> anyhow::Result<()> {
    let mut scenarios =
        if opts.scenarios.is_empty() { Scenario::value_variants().to_vec() } else { opts.scenarios.clone() };
    scenarios.sort();
    scenarios.dedup();
    let mut sizes = if opts.quick { QUICK } else { FULL };
    if let Some(jobs) = opts.steady_jobs {
        sizes.steady_jobs = jobs;
    }
    let steady = Steady { jobs: sizes.steady_jobs, rate: opts.steady_rate, retry_window: opts.steady_retry_window };
    ensure!(
        opts.prefetch == 0 || opts.protocol == WorkerProtocol::Work,
        "--prefetch needs --protocol work: a unary worker does not prefetch"
    );
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; build with `cargo build --release` for real numbers");
    }
    let nofile = raise_nofile_limit()?;
    let work = WorkDir::create()?;
    let redis = Redis::start(work.path()).await?;
    let machine = Machine::read(&redis).await;
    let load_before = load_average();
    eprintln!(
        "jobwire-bench: {} runs of {} on {} ({} cores, {} MiB), redis {}, RLIMIT_NOFILE {nofile}, load average {load_before}, {}{}",
        opts.runs,
        scenarios.iter().map(|s| s.letter()).collect::<Vec<_>>().join(","),
        machine.cpu,
        machine.cores,
        machine.memory_mib,
        machine.redis,
        opts.workers(),
        if opts.quick { ", quick sizes" } else { "" }
    );
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let server_exe = exe.with_file_name("jobwire");
    ensure!(server_exe.is_file(), "no server binary at {}: build it (cargo build --release)", server_exe.display());
    let probes = probe::Probes {
        count: opts.count,
        callgrind: opts.callgrind.clone(),
        dir: opts.probe_dir.clone().unwrap_or_else(|| work.path().to_owned()),
    };
    let security = match opts.secure {
        true => Some(secure::Security::make(work.path(), &server_exe)?),
        false => None,
    };
    let bench = Bench {
        exe,
        server_exe,
        redis,
        sizes,
        protocol: opts.protocol,
        prefetch: opts.prefetch,
        concurrency: opts.concurrency.clone(),
        scaling: Scaling {
            masters: opts.masters.clone(),
            instances: opts.instances.clone(),
            shards: opts.shards.clone(),
        },
        concurrency_cap: opts.concurrency_cap,
        server_threads: opts.server_threads,
        worker_threads: opts.worker_threads,
        probes,
        steady,
        security,
        work,
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
                Scenario::I => bench.steady(out).await,
                Scenario::J => bench.schedule_lateness(out).await,
                Scenario::K => bench.rate_limits(out).await,
                Scenario::L => bench.scaling(out).await,
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
    let table = results.table(&opts.workers());
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
