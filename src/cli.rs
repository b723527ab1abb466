//! Client commands of the `jobwire` binary: `add`, `stats`, `health`. They use the typed client
//! (`jobwire::client`) and print for people (tables) or programs (`--json`, exit codes).

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Args;
use jobwire::{
    client::{Client, NewJob},
    proto,
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

fn duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

/// `host:port` as grpc_health_probe takes it, or a full `http://` URI.
fn uri(addr: &str) -> String {
    if addr.contains("://") { addr.to_owned() } else { format!("http://{addr}") }
}

#[derive(Args, Debug)]
pub struct Target {
    /// Server address (host:port or URI).
    #[arg(long, env = "JOBWIRE_ADDR", default_value = "127.0.0.1:50051")]
    addr: String,
}

impl Target {
    async fn connect(&self) -> anyhow::Result<Client> {
        Ok(Client::connect(&uri(&self.addr)).await?)
    }
}

#[derive(Args, Debug)]
pub struct AddArgs {
    #[command(flatten)]
    target: Target,
    /// Queue to add to.
    #[arg(long)]
    queue: String,
    /// Job type (the handler name).
    #[arg(long = "type")]
    job_type: String,
    /// Payload, as given (JSON by convention). Use `-` to read it from stdin.
    #[arg(long, default_value = "")]
    payload: String,
    /// Priority, -5 to 5.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,
    /// Run after this long (e.g. 30s, 5m).
    #[arg(long, value_parser = duration)]
    delay: Option<Duration>,
    /// Attempts before the job goes dead.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Per-attempt timeout (e.g. 30s).
    #[arg(long, value_parser = duration)]
    timeout: Option<Duration>,
    /// Idempotency key: a repeat add within the window returns the first job.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Wait up to this long for the result and print it (exit 1 if the job dies).
    #[arg(long, value_parser = duration)]
    wait: Option<Duration>,
}

pub async fn add(args: AddArgs) -> anyhow::Result<()> {
    let client = args.target.connect().await?;
    let payload = if args.payload == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("reading stdin")?;
        buf
    } else {
        args.payload.into_bytes()
    };
    let mut job = NewJob::new(&args.queue, &args.job_type).payload(payload).priority(args.priority);
    if let Some(d) = args.delay {
        job = job.delay(d);
    }
    if let Some(n) = args.max_attempts {
        job = job.max_attempts(n);
    }
    if let Some(t) = args.timeout {
        job = job.timeout(t);
    }
    if let Some(k) = &args.idempotency_key {
        job = job.idempotency_key(k);
    }
    let id = client.add(job).await?;
    match args.wait {
        None => println!("{id}"),
        Some(wait) => {
            eprintln!("{id}");
            let result = client.wait_for_result(&id, wait).await?;
            std::io::Write::write_all(&mut std::io::stdout(), &result)?;
            println!();
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    #[command(flatten)]
    target: Target,
    /// Only this queue.
    queue: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn age(d: &Option<prost_types::Duration>) -> f64 {
    d.as_ref().map_or(0.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
}

pub async fn stats(args: StatsArgs) -> anyhow::Result<()> {
    let client = args.target.connect().await?;
    let queues: Vec<proto::QueueStats> = match &args.queue {
        Some(q) => vec![client.stats(q).await?],
        None => client.list_queues().await?,
    };
    if args.json {
        let rows: Vec<serde_json::Value> = queues
            .iter()
            .map(|q| {
                serde_json::json!({
                    "queue": q.queue, "waiting": q.waiting, "delayed": q.delayed, "active": q.active,
                    "completed": q.completed, "dead": q.dead, "dead_evicted": q.dead_evicted,
                    "paused": q.paused, "oldest_waiting_age_seconds": age(&q.oldest_waiting_age),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>10} {:>8} {:>8} {:>7} {:>10}",
        "QUEUE", "WAITING", "DELAYED", "ACTIVE", "COMPLETED", "DEAD", "EVICTED", "PAUSED", "OLDEST"
    );
    for q in &queues {
        println!(
            "{:<24} {:>9} {:>9} {:>9} {:>10} {:>8} {:>8} {:>7} {:>9.1}s",
            q.queue,
            q.waiting,
            q.delayed,
            q.active,
            q.completed,
            q.dead,
            q.dead_evicted,
            if q.paused { "yes" } else { "no" },
            age(&q.oldest_waiting_age)
        );
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// Server address (host:port or URI), as grpc_health_probe's -addr.
    #[arg(long, env = "JOBWIRE_ADDR", default_value = "127.0.0.1:50051")]
    addr: String,
    /// Service to check; empty means the server as a whole.
    #[arg(long, default_value = "")]
    service: String,
    /// How long to wait for the connection.
    #[arg(long, default_value = "1s", value_parser = duration)]
    connect_timeout: Duration,
    /// How long to wait for the answer.
    #[arg(long, default_value = "1s", value_parser = duration)]
    rpc_timeout: Duration,
}

pub async fn health(args: HealthArgs) -> ExitCode {
    let endpoint = match tonic::transport::Endpoint::from_shared(uri(&args.addr)) {
        Ok(e) => e.connect_timeout(args.connect_timeout),
        Err(e) => {
            eprintln!("error: invalid --addr {}: {e}", args.addr);
            return ExitCode::from(1);
        }
    };
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: failed to connect to {}: {e}", args.addr);
            return ExitCode::from(2);
        }
    };
    let mut request = tonic::Request::new(HealthCheckRequest { service: args.service.clone() });
    request.set_timeout(args.rpc_timeout);
    match HealthClient::new(channel).check(request).await {
        Err(status) => {
            eprintln!("error: health rpc failed: {status}");
            ExitCode::from(3)
        }
        Ok(resp) if resp.get_ref().status() == ServingStatus::Serving => {
            println!("status: SERVING");
            ExitCode::SUCCESS
        }
        Ok(resp) => {
            println!("service unhealthy (responded with {:?})", resp.get_ref().status());
            ExitCode::from(4)
        }
    }
}
