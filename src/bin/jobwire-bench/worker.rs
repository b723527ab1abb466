//! The hidden `worker` role: a worker process of the bench, driven over its stdin and stdout
//! (the protocol is in the crate doc).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::bail;
use clap::{Args, ValueEnum};
use jobwire::client::{Client, JobContext, JobError, Protocol, Worker};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    sync::Notify,
};

use crate::{JOB_TYPE, secure::Access};

/// The wall clock in ns since the epoch: when a worker starts a job, and when the bench sent it
/// (both processes on one machine, so one clock).
pub(crate) fn unix_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[derive(Args, Debug)]
pub(crate) struct WorkerArgs {
    /// Server URI.
    #[arg(long)]
    pub addr: String,
    #[arg(long)]
    pub queue: String,
    #[arg(long)]
    pub concurrency: u32,
    /// Print `done` once this many handlers succeeded.
    #[arg(long)]
    pub expect: u64,
    /// Record each job's handler start time (for latency).
    #[arg(long)]
    pub samples: bool,
    /// Fail every job's first attempt (retryable).
    #[arg(long)]
    pub fail_first: bool,
    #[arg(long, value_enum, default_value_t)]
    pub protocol: WorkerProtocol,
    /// Jobs held beyond `--concurrency` (Work protocol only).
    #[arg(long, default_value_t = 0)]
    pub prefetch: u32,
    /// Connect over TLS trusting this CA, sending `JOBWIRE_TOKEN` (a `--secure` run).
    #[arg(long, requires = "token")]
    pub tls_ca_cert: Option<std::path::PathBuf>,
    /// The bearer token of a `--secure` run.
    #[arg(long, env = "JOBWIRE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// The protocol the worker processes speak: a flag's face on `jobwire::client::Protocol`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum WorkerProtocol {
    /// The bidirectional `Work` stream: jobs and acks on one stream, prefetch possible.
    #[default]
    Work,
    /// A `GetJob` stream and one unary call per ack, as a client without `Work`.
    Unary,
}

impl WorkerProtocol {
    /// Its flag value, for command lines, table headers and JSON.
    pub(crate) fn name(self) -> &'static str {
        match self {
            WorkerProtocol::Work => "work",
            WorkerProtocol::Unary => "unary",
        }
    }

    fn client(self) -> Protocol {
        match self {
            WorkerProtocol::Work => Protocol::Work,
            WorkerProtocol::Unary => Protocol::Unary,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The hidden roles: a worker process, and the bare tonic service
// ---------------------------------------------------------------------------------------------

/// The hidden `worker` role: a `jobwire::client::Worker` with a no-op handler (see the module doc for
/// its protocol on stdin/stdout).
pub(crate) async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let client = match (args.tls_ca_cert, args.token) {
        (Some(ca), Some(token)) => Access::read(ca, token)?.connect(&args.addr).await?,
        _ => Client::connect(&args.addr).await?,
    };
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
    let monitor = tokio::spawn(report(succeeded.clone(), milestone, args.expect));
    // `count` asks how many handlers succeeded so far: the bench sums several workers' counts
    // without polling Redis inside the window it measures.
    let stop = async move {
        while let Ok(Some(line)) = stdin.next_line().await
            && line != "stop"
        {
            if line == "count" {
                println!("count {}", succeeded.load(Ordering::Relaxed));
            }
        }
    };
    Worker::new(client, &[&args.queue])
        .concurrency(args.concurrency)
        .protocol(args.protocol.client())
        .prefetch(args.prefetch)
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
pub(crate) async fn report(succeeded: Arc<AtomicU64>, milestone: Arc<Notify>, expect: u64) {
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
