//! Client commands of the `jobwire` binary: `add`, `stats`, `health`, `jobs`, `retry`, `cancel`,
//! `pause`/`resume`, `workers`, `sessions` and `queue` (in `cli/settings.rs`; `work` has a file
//! of its own, `schedule` its submodule, `cli/schedule.rs`). They use the typed
//! client (`jobwire::client`) and, for the calls it does not wrap, the generated clients, and
//! print for people (tables) or programs (`--json`, exit codes).
//!
//! Every command reaches the server through [`Target`]: its address and, for a TLS server, the
//! `--tls-*` flags of [`TlsArgs`] (grpc_health_probe's, so `health` is a drop-in probe).
//! Each takes `--token` (`JOBWIRE_TOKEN`) for a server with `--auth-tokens`; `health` needs none.

mod schedule;
pub(crate) mod settings;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Args;
use jobwire::{
    client::{Client, NewJob, Tls},
    proto,
};
pub(crate) use schedule::{ScheduleCommand, schedule};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

fn duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

/// `host:port` as grpc_health_probe takes it, or a full `http://` URI.
fn uri(addr: &str) -> String {
    if addr.contains("://") { addr.to_owned() } else { format!("http://{addr}") }
}

/// A bearer token given on the command line or in `JOBWIRE_TOKEN`; its `Debug` hides it.
#[derive(Clone)]
pub(crate) struct TokenArg(String);

impl std::str::FromStr for TokenArg {
    type Err = std::convert::Infallible;

    /// Takes anything: a bad token is refused by the client without being repeated, where a
    /// parse error here would print it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl std::fmt::Debug for TokenArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenArg(..)")
    }
}

#[derive(Args, Debug, Clone)]
pub(crate) struct Target {
    /// Server address (host:port or URI).
    #[arg(long, env = "JOBWIRE_ADDR", default_value = "127.0.0.1:50051")]
    addr: String,
    /// Bearer token for a server with --auth-tokens (better given as JOBWIRE_TOKEN: a
    /// command line is visible to other users of the machine).
    #[arg(long, env = "JOBWIRE_TOKEN", hide_env_values = true)]
    token: Option<TokenArg>,
    #[command(flatten)]
    tls: TlsArgs,
}

impl Target {
    /// Connects to the address, through TLS when the flags ask for it, sending the token with
    /// every call when there is one.
    pub(crate) async fn connect(&self) -> anyhow::Result<Client> {
        let client = match self.tls.load()? {
            None => Client::connect(&uri(&self.addr)).await?,
            Some(tls) => Client::connect_tls(&self.addr, &tls).await?,
        };
        Ok(match &self.token {
            Some(TokenArg(token)) => client.with_token(token)?,
            None => client,
        })
    }
}

/// The endpoint of `addr` (host:port or URI), through TLS when `tls` asks for it.
fn endpoint(addr: &str, tls: &TlsArgs) -> anyhow::Result<tonic::transport::Endpoint> {
    let tls = tls.load()?;
    let addr = if tls.is_some() { addr.to_owned() } else { uri(addr) };
    Ok(jobwire::client::endpoint(&addr, tls.as_ref())?)
}

/// How a command reaches a TLS server (`jobwire serve --tls-cert`); the names of
/// grpc_health_probe's flags. Any of them, or an `https://` address, means TLS.
#[derive(Args, Debug, Clone)]
pub(crate) struct TlsArgs {
    /// Use TLS, trusting the system's roots unless --tls-ca-cert says otherwise.
    #[arg(long)]
    tls: bool,
    /// Trust this CA certificate (PEM) for the server's certificate.
    #[arg(long, env = "JOBWIRE_TLS_CA_CERT", value_name = "FILE")]
    tls_ca_cert: Option<PathBuf>,
    /// Present this client certificate (PEM) to a server that requires one (mutual TLS).
    #[arg(long, env = "JOBWIRE_TLS_CLIENT_CERT", value_name = "FILE", requires = "tls_client_key")]
    tls_client_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-client-cert.
    #[arg(long, env = "JOBWIRE_TLS_CLIENT_KEY", value_name = "FILE", requires = "tls_client_cert")]
    tls_client_key: Option<PathBuf>,
    /// Check the server's certificate against this name instead of the address's host.
    #[arg(long, env = "JOBWIRE_TLS_SERVER_NAME", value_name = "NAME")]
    tls_server_name: Option<String>,
}

impl TlsArgs {
    /// The TLS settings, its files read; None for plain text.
    pub(crate) fn load(&self) -> anyhow::Result<Option<Tls>> {
        let read =
            |flag: &str, path: &PathBuf| std::fs::read(path).with_context(|| format!("{flag} {}", path.display()));
        let wanted =
            self.tls || self.tls_ca_cert.is_some() || self.tls_client_cert.is_some() || self.tls_server_name.is_some();
        if !wanted {
            return Ok(None);
        }
        let mut tls = Tls::new();
        if let Some(path) = &self.tls_ca_cert {
            tls = tls.ca_certificate(read("--tls-ca-cert", path)?);
        }
        if let (Some(cert), Some(key)) = (&self.tls_client_cert, &self.tls_client_key) {
            tls = tls.client_certificate(read("--tls-client-cert", cert)?, read("--tls-client-key", key)?);
        }
        if let Some(name) = &self.tls_server_name {
            tls = tls.server_name(name);
        }
        Ok(Some(tls))
    }
}

#[derive(Args, Debug)]
pub(crate) struct AddArgs {
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
    /// Run the job in this session (`<queue>/<name>`).
    #[arg(long)]
    session: Option<String>,
    /// The key whose rate limit (the queue's key_rate) the job counts against.
    #[arg(long)]
    rate_key: Option<String>,
    /// The key whose concurrency cap (the queue's key_concurrency) the job counts against.
    #[arg(long)]
    concurrency_key: Option<String>,
    /// Wait up to this long for the result and print it (exit 1 if the job dies).
    #[arg(long, value_parser = duration)]
    wait: Option<Duration>,
}

pub(crate) async fn add(args: AddArgs) -> anyhow::Result<()> {
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
    if let Some(s) = &args.session {
        job = job.session(s);
    }
    if let Some(k) = &args.rate_key {
        job = job.rate_key(k);
    }
    if let Some(k) = &args.concurrency_key {
        job = job.concurrency_key(k);
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
pub(crate) struct StatsArgs {
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

pub(crate) async fn stats(args: StatsArgs) -> anyhow::Result<()> {
    let mut client = args.target.connect().await?.raw();
    let (queues, memory): (Vec<proto::QueueStats>, _) = match &args.queue {
        Some(queue) => {
            let answer = client.stats(proto::StatsRequest { queue: queue.clone() }).await?.into_inner();
            (answer.stats.into_iter().collect(), answer.redis_memory)
        }
        None => {
            let answer = client.list_queues(proto::ListQueuesRequest {}).await?.into_inner();
            (answer.queues, answer.redis_memory)
        }
    };
    let memory = memory.unwrap_or_default();
    if args.json {
        let rows: Vec<serde_json::Value> = queues
            .iter()
            .map(|q| {
                serde_json::json!({
                    "queue": q.queue, "waiting": q.waiting, "delayed": q.delayed, "active": q.active,
                    "completed": q.completed, "dead": q.dead, "dead_evicted": q.dead_evicted,
                    "paused": q.paused, "oldest_waiting_age_seconds": age(&q.oldest_waiting_age),
                    "completed_shed": q.completed_shed, "cancelled_shed": q.cancelled_shed,
                    "dead_shed": q.dead_shed, "events_shed": q.events_shed,
                    "concurrency_limit": q.concurrency_limit, "held_by_concurrency": q.held_by_concurrency,
                    "redis_used_bytes": memory.used_bytes, "redis_max_bytes": memory.max_bytes,
                    "redis_full": memory.full,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if memory.full {
        println!(
            "Redis is full (used {} of {} bytes): adds are refused until workers drain it",
            memory.used_bytes, memory.max_bytes
        );
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
pub(crate) struct HealthArgs {
    /// Server address (host:port or URI), as grpc_health_probe's -addr.
    #[arg(long, env = "JOBWIRE_ADDR", default_value = "127.0.0.1:50051")]
    addr: String,
    /// Service to check; empty means the server as a whole.
    #[arg(long, default_value = "")]
    service: String,
    #[command(flatten)]
    tls: TlsArgs,
    /// How long to wait for the connection.
    #[arg(long, default_value = "1s", value_parser = duration)]
    connect_timeout: Duration,
    /// How long to wait for the answer.
    #[arg(long, default_value = "1s", value_parser = duration)]
    rpc_timeout: Duration,
}

pub(crate) async fn health(args: HealthArgs) -> ExitCode {
    let endpoint = match endpoint(&args.addr, &args.tls) {
        Ok(e) => e.connect_timeout(args.connect_timeout),
        Err(e) => {
            eprintln!("error: invalid --addr {} or --tls-* flags: {e:#}", args.addr);
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

fn timestamp(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .and_then(|t| std::time::SystemTime::try_from(*t).ok())
        .map(|t| humantime::format_rfc3339_millis(t).to_string())
        .unwrap_or_else(|| "-".into())
}

fn state_name(state: i32) -> String {
    proto::JobState::try_from(state)
        .map(|s| s.as_str_name().trim_start_matches("JOB_STATE_").to_lowercase())
        .unwrap_or_else(|_| "?".into())
}

fn parse_state(s: &str) -> Result<proto::JobState, String> {
    proto::JobState::from_str_name(&format!("JOB_STATE_{}", s.to_uppercase()))
        .filter(|s| *s != proto::JobState::Unspecified)
        .ok_or_else(|| format!("{s}: expected waiting, delayed, active, completed, dead or cancelled"))
}

#[derive(Args, Debug)]
pub(crate) struct JobsArgs {
    #[command(flatten)]
    target: Target,
    /// The queue.
    queue: String,
    /// Which jobs: waiting, delayed, active, completed, dead, cancelled.
    #[arg(long, default_value = "waiting", value_parser = parse_state)]
    state: proto::JobState,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn jobs(args: JobsArgs) -> anyhow::Result<()> {
    let client = args.target.connect().await?;
    let req = proto::ListJobsRequest {
        queue: args.queue,
        state: args.state as i32,
        page_size: args.limit.clamp(1, 1000),
        page_token: String::new(),
        filter: None,
    };
    let jobs = client.raw().list_jobs(req).await?.into_inner().jobs;
    if args.json {
        let rows: Vec<serde_json::Value> = jobs
            .iter()
            .map(|j| {
                serde_json::json!({
                    "id": j.id, "type": j.r#type, "state": state_name(j.state), "attempts": j.attempts,
                    "max_attempts": j.max_attempts, "lost_deliveries": j.lost_deliveries,
                    "created_at": timestamp(&j.created_at), "last_error": j.last_error,
                    "session_id": j.session_id, "payload": String::from_utf8_lossy(&j.payload),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("{:<42} {:<16} {:<10} {:>8} {:<24} LAST ERROR", "ID", "TYPE", "STATE", "ATTEMPTS", "CREATED");
    for j in &jobs {
        println!(
            "{:<42} {:<16} {:<10} {:>8} {:<24} {}",
            j.id,
            j.r#type,
            state_name(j.state),
            format!("{}/{}", j.attempts, j.max_attempts),
            timestamp(&j.created_at),
            j.last_error
        );
    }
    Ok(())
}

#[derive(Args, Debug)]
pub(crate) struct RetryArgs {
    #[command(flatten)]
    target: Target,
    /// A dead job to retry.
    #[arg(conflicts_with = "queue", required_unless_present = "queue")]
    job_id: Option<String>,
    /// Retry the oldest dead jobs of this queue instead.
    #[arg(long)]
    queue: Option<String>,
    /// With --queue: at most this many.
    #[arg(long, default_value_t = 1_000)]
    limit: u32,
}

pub(crate) async fn retry(args: RetryArgs) -> anyhow::Result<()> {
    let mut raw = args.target.connect().await?.raw();
    match (args.job_id, args.queue) {
        (Some(job_id), _) => {
            raw.retry_job(proto::RetryJobRequest { job_id: job_id.clone() }).await?;
            println!("{job_id}: waiting again");
        }
        (None, Some(queue)) => {
            let resp = raw.retry_dead_jobs(proto::RetryDeadJobsRequest { queue, limit: args.limit }).await?;
            println!("{} dead jobs waiting again", resp.into_inner().retried);
        }
        (None, None) => unreachable!("clap requires a job id or --queue"),
    }
    Ok(())
}

#[derive(Args, Debug)]
pub(crate) struct CancelArgs {
    #[command(flatten)]
    target: Target,
    /// The job to cancel.
    job_id: String,
}

pub(crate) async fn cancel(args: CancelArgs) -> anyhow::Result<()> {
    args.target.connect().await?.cancel(&args.job_id).await?;
    println!("{}: cancelled", args.job_id);
    Ok(())
}

#[derive(Args, Debug)]
pub(crate) struct QueueArgs {
    #[command(flatten)]
    target: Target,
    /// The queue.
    queue: String,
}

pub(crate) async fn pause(args: QueueArgs, paused: bool) -> anyhow::Result<()> {
    let mut raw = args.target.connect().await?.raw();
    if paused {
        raw.pause_queue(proto::PauseQueueRequest { queue: args.queue.clone() }).await?;
    } else {
        raw.resume_queue(proto::ResumeQueueRequest { queue: args.queue.clone() }).await?;
    }
    println!("{}: {}", args.queue, if paused { "paused" } else { "resumed" });
    Ok(())
}

#[derive(Args, Debug)]
pub(crate) struct WorkersArgs {
    #[command(flatten)]
    target: Target,
    /// Only workers serving this queue.
    #[arg(long)]
    queue: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn workers(args: WorkersArgs) -> anyhow::Result<()> {
    let mut raw = args.target.connect().await?.raw();
    let req = proto::ListWorkersRequest { queue: args.queue.unwrap_or_default() };
    let workers = raw.list_workers(req).await?.into_inner().workers;
    if args.json {
        let rows: Vec<serde_json::Value> = workers
            .iter()
            .map(|w| {
                serde_json::json!({
                    "instance": w.instance, "worker_id": w.worker_id, "labels": w.labels, "queues": w.queues,
                    "max_in_flight": w.max_in_flight, "in_flight": w.in_flight,
                    "connected_at": timestamp(&w.connected_at),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("{:<18} {:<24} {:<30} {:>9} {:<24}", "INSTANCE", "WORKER", "QUEUES", "IN FLIGHT", "CONNECTED");
    for w in &workers {
        println!(
            "{:<18} {:<24} {:<30} {:>9} {:<24}",
            w.instance,
            w.worker_id,
            w.queues.join(","),
            format!("{}/{}", w.in_flight, w.max_in_flight),
            timestamp(&w.connected_at)
        );
    }
    Ok(())
}

#[derive(clap::Subcommand, Debug)]
pub(crate) enum SessionsCommand {
    /// List a queue's sessions.
    List(QueueArgs),
    /// Create a session; prints its id.
    Create {
        #[command(flatten)]
        target: Target,
        /// The queue its jobs run in.
        queue: String,
        /// Its name (default: generated).
        #[arg(long)]
        name: Option<String>,
        /// Initial state (JSON).
        #[arg(long, default_value = "{}")]
        state: String,
        /// Jobs of the session running at once.
        #[arg(long, default_value_t = 1)]
        max_concurrency: u32,
        /// Expire after this long without activity.
        #[arg(long, value_parser = duration)]
        ttl: Option<Duration>,
    },
    /// Print a session (state and counts) as JSON.
    Get {
        #[command(flatten)]
        target: Target,
        /// `<queue>/<name>`.
        session_id: String,
    },
    /// Delete a session and its jobs not yet started.
    Delete {
        #[command(flatten)]
        target: Target,
        /// `<queue>/<name>`.
        session_id: String,
    },
}

fn session_json(s: &proto::Session) -> serde_json::Value {
    serde_json::json!({
        "id": s.id,
        "state": serde_json::from_str::<serde_json::Value>(&s.state).unwrap_or(serde_json::Value::Null),
        "version": s.version, "max_concurrency": s.max_concurrency, "running_jobs": s.running_jobs,
        "queued_jobs": s.queued_jobs, "pending_jobs": s.pending_jobs,
        "created_at": timestamp(&s.created_at), "updated_at": timestamp(&s.updated_at),
    })
}

pub(crate) async fn sessions(command: SessionsCommand) -> anyhow::Result<()> {
    let target = match &command {
        SessionsCommand::List(a) => &a.target,
        SessionsCommand::Create { target, .. }
        | SessionsCommand::Get { target, .. }
        | SessionsCommand::Delete { target, .. } => target,
    };
    let mut api = target.connect().await?.raw_sessions();
    match command {
        SessionsCommand::List(args) => {
            let mut token = String::new();
            loop {
                let req =
                    proto::ListSessionsRequest { queue: args.queue.clone(), page_size: 100, page_token: token.clone() };
                let page = api.list_sessions(req).await?.into_inner();
                for s in &page.sessions {
                    println!("{}", session_json(s));
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
        }
        SessionsCommand::Create { queue, name, state, max_concurrency, ttl, .. } => {
            let req = proto::CreateSessionRequest {
                queue,
                name: name.unwrap_or_default(),
                state,
                ttl: ttl.map(prost_types::Duration::try_from).transpose().context("--ttl is too long")?,
                max_concurrency: Some(max_concurrency),
            };
            let session = api.create_session(req).await?.into_inner().session.context("empty answer")?;
            println!("{}", session.id);
        }
        SessionsCommand::Get { session_id, .. } => {
            let session = api
                .get_session(proto::GetSessionRequest { session_id })
                .await?
                .into_inner()
                .session
                .context("empty")?;
            println!("{}", serde_json::to_string_pretty(&session_json(&session))?);
        }
        SessionsCommand::Delete { session_id, .. } => {
            api.delete_session(proto::DeleteSessionRequest { session_id: session_id.clone() }).await?;
            println!("{session_id}: deleted");
        }
    }
    Ok(())
}
