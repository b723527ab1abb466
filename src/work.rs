//! `jobwire work`: a worker with no client library at all. Each job runs COMMAND with the
//! payload on stdin and the job's metadata in `JOBWIRE_*` environment variables:
//! exit 0 completes the job with stdout as its result, any other exit fails it with stderr
//! (capped) as the error, and the `--no-retry-exit-code` fails it for good.
//!
//! Each command runs in a process group of its own, and the whole group is killed when the job
//! is revoked (timeout, cancel), when `--timeout` passes, and when the command ends (so nothing
//! it left in the background outlives its job).
//!
//! The worker's `--token` (or `JOBWIRE_TOKEN`) is not passed on to the commands.
//!
//! It is the Rust client's worker, so it speaks the `Work` protocol (acks on the job stream).

use std::{process::Stdio, sync::Arc, time::Duration};

use clap::Args;
use jobwire::client::{JobContext, JobError, Worker};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

const MAX_RESULT: u64 = 1 << 20;
const MAX_ERROR: u64 = 16 << 10;

fn duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

#[derive(Args, Debug, Clone)]
pub(crate) struct WorkArgs {
    #[command(flatten)]
    target: crate::cli::Target,
    /// A queue to serve; repeat for several, earlier ones first.
    #[arg(long = "queue", required = true)]
    queues: Vec<String>,
    /// Commands running at once.
    #[arg(long, default_value_t = 1)]
    concurrency: u32,
    /// Jobs held ready beyond --concurrency, so the next command starts without waiting on the
    /// network. They are leased from delivery: their job timeouts run while they wait.
    #[arg(long, default_value_t = 0)]
    prefetch: u32,
    /// Kill a command that runs longer than this; its job fails (and retries).
    #[arg(long, value_parser = duration)]
    timeout: Option<Duration>,
    /// The exit code that means "do not retry" (default 65, EX_DATAERR).
    #[arg(long, default_value_t = 65)]
    no_retry_exit_code: i32,
    /// The worker's id, for listings.
    #[arg(long)]
    worker_id: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// Kills a process group when dropped.
struct Group(Option<u32>);

impl Drop for Group {
    fn drop(&mut self) {
        // A pid past pid_t's range cannot come from the kernel: nothing to kill then.
        if let Some(pgid) = self.0.and_then(|pid| libc::pid_t::try_from(pid).ok()) {
            // SAFETY: signalling a process group we created; a stale id only fails with ESRCH.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

/// Reads all of `from`, keeping the first `cap` bytes.
async fn read_capped(mut from: impl AsyncRead + Unpin, cap: u64) -> Vec<u8> {
    let mut kept = Vec::new();
    let _ = (&mut from).take(cap).read_to_end(&mut kept).await;
    let _ = tokio::io::copy(&mut from, &mut tokio::io::sink()).await;
    kept
}

async fn run_one(ctx: JobContext, args: Arc<WorkArgs>) -> Result<Vec<u8>, JobError> {
    let job = &ctx.job;
    let mut cmd = tokio::process::Command::new(&args.command[0]);
    cmd.args(&args.command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // The worker's token is its own: the command does not get it.
        .env_remove("JOBWIRE_TOKEN")
        .env("JOBWIRE_JOB_ID", &job.id)
        .env("JOBWIRE_QUEUE", &job.queue)
        .env("JOBWIRE_JOB_TYPE", &job.r#type)
        .env("JOBWIRE_ATTEMPT", job.attempt.to_string())
        .env("JOBWIRE_MAX_ATTEMPTS", job.max_attempts.to_string())
        .env("JOBWIRE_LOST_DELIVERIES", job.lost_deliveries.to_string());
    if let Some(session) = &job.session {
        cmd.env("JOBWIRE_SESSION_ID", &session.session_id)
            .env("JOBWIRE_SESSION_STATE", &session.state)
            .env("JOBWIRE_SESSION_VERSION", session.version.to_string());
    }
    if let Some(traceparent) = job.headers.get("traceparent") {
        cmd.env("TRACEPARENT", traceparent);
    }
    let mut child = cmd.spawn().map_err(|e| JobError::retry(format!("cannot start {:?}: {e}", args.command[0])))?;
    let _group = Group(child.id());
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let payload = job.payload.clone();
    let feed = async move {
        if let Some(mut stdin) = stdin {
            // A command that does not read its input is fine: ignore a closed pipe.
            let _ = stdin.write_all(&payload).await;
        }
    };
    let out = async move {
        match stdout {
            Some(s) => read_capped(s, MAX_RESULT + 1).await,
            None => Vec::new(),
        }
    };
    let err = async move {
        match stderr {
            Some(s) => read_capped(s, MAX_ERROR).await,
            None => Vec::new(),
        }
    };
    let run = async { tokio::join!(feed, out, err, child.wait()) };
    let (_, stdout, stderr, status) = match args.timeout {
        Some(limit) => tokio::time::timeout(limit, run).await.map_err(|_| {
            JobError::retry(format!("killed after the --timeout of {}", humantime::format_duration(limit)))
        })?,
        None => run.await,
    };
    let status = status.map_err(|e| JobError::retry(format!("cannot wait for the command: {e}")))?;
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    match status.code() {
        Some(0) if u64::try_from(stdout.len()).unwrap_or(u64::MAX) > MAX_RESULT => {
            Err(JobError::permanent("stdout is over the 1 MiB result limit"))
        }
        Some(0) => Ok(stdout),
        Some(code) if code == args.no_retry_exit_code => Err(JobError::permanent(describe(&stderr, status))),
        _ => Err(JobError::retry(describe(&stderr, status))),
    }
}

fn describe(stderr: &str, status: std::process::ExitStatus) -> String {
    let stderr = stderr.trim_end();
    if stderr.is_empty() { format!("the command failed ({status})") } else { stderr.to_owned() }
}

async fn stop_signal() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

pub(crate) async fn run(args: WorkArgs) -> anyhow::Result<()> {
    let client = args.target.connect().await?;
    let queues: Vec<&str> = args.queues.iter().map(String::as_str).collect();
    let worker_id = args.worker_id.clone().unwrap_or_else(|| format!("work-{}", std::process::id()));
    let shared = Arc::new(args.clone());
    let worker = Worker::new(client, &queues)
        .concurrency(args.concurrency)
        .prefetch(args.prefetch)
        .worker_id(&worker_id)
        .handle_any(move |ctx| run_one(ctx, shared.clone()));
    tracing::info!(queues = ?args.queues, command = ?args.command, "working");
    worker.run(stop_signal()).await?;
    Ok(())
}
