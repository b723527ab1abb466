//! The `jobwire` binary: parses flags, sets up logging, and runs the server or a client command
//! (`cli.rs`, `work.rs`); `exit.rs` reports a failure. Serving here is start-up only: the
//! token file (`--auth-tokens`, re-read on SIGHUP), the embedded redis-server when no
//! `--redis-url` is given (and the runtime's threads, one fewer beside it: `--threads`), the TLS
//! and Redis files read (the TLS ones again on every SIGHUP), waiting for Redis and its schema,
//! warnings about a Redis that would lose jobs, binding the listeners and the ready file; the
//! server itself is `jobwire::server`.

use std::{sync::Arc, time::Duration};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use jobwire::{
    auth::Authority,
    config::ServeConfig,
    listener::ServerTls,
    queue::Engine,
    redis_server::{RedisConfig, RedisServer},
    server::{self, ReadyFile, ServerOptions},
    store::{Store, StoreError},
};
use tracing::{error, info, warn};

/// glibc's malloc showed as 17 % of the server's CPU under load (BENCHMARKS.md); mimalloc keeps
/// per-thread free lists for the many short-lived buffers of requests and replies.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "jobwire",
    version,
    about = "A language-agnostic job queue: gRPC in front, Redis behind.",
    after_help = exit::EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default when no command is given).
    Serve(Box<ServeConfig>),
    /// Add one job; with --wait, wait for its result and print it.
    Add(cli::AddArgs),
    /// Print the figures of every queue (or one), as a table or JSON.
    Stats(cli::StatsArgs),
    /// Check a server's health like grpc_health_probe, with its exit codes: 0 serving,
    /// 2 connection failure, 3 RPC failure, 4 not serving.
    Health(cli::HealthArgs),
    /// List a queue's jobs in one state.
    Jobs(cli::JobsArgs),
    /// Move a dead job (or a queue's dead jobs) back to waiting.
    Retry(cli::RetryArgs),
    /// Cancel a job.
    Cancel(cli::CancelArgs),
    /// Pause a queue: it delivers nothing until resumed; adds still succeed.
    Pause(cli::QueueArgs),
    /// Resume a paused queue.
    Resume(cli::QueueArgs),
    /// List the worker streams connected to any instance.
    Workers(cli::WorkersArgs),
    /// Create, inspect, list and delete sessions.
    #[command(subcommand)]
    Sessions(cli::SessionsCommand),
    /// Create, inspect, list, pause, resume, trigger and delete schedules (cron or intervals).
    #[command(subcommand)]
    Schedule(cli::ScheduleCommand),
    /// Set and read a queue's settings at run time (max waiting, job defaults, retention).
    #[command(subcommand)]
    Queue(cli::settings::QueueCommand),
    /// Run a command per job: payload on stdin, JOBWIRE_* env vars, exit 0 completes it with
    /// stdout as the result, non-zero fails it with stderr as the error.
    Work(work::WorkArgs),
    /// Check a live Redis against jobwire's invariants, straight through --redis-url (no server
    /// needed), and with --repair mend what is found. Exit codes: 0 clean, 1 damaged, 2 the
    /// check could not run.
    Doctor(doctor::DoctorArgs),
    /// Create, list and revoke the tokens of a token file (`serve --auth-tokens`). `create`
    /// prints only the new token's secret on stdout; a running server loads changes on SIGHUP.
    #[command(subcommand)]
    Token(token::TokenCommand),
}

mod cli;
mod doctor;
mod exit;
mod token;
mod work;

/// Runs the command; a failure is printed as one line, with the exit code of `exit.rs`.
fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    jobwire::telemetry::log_to_stderr();
    run(cli).unwrap_or_else(|error| exit::report(&error))
}

fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let ok = std::process::ExitCode::SUCCESS;
    let command = cli.command.unwrap_or_else(|| Command::Serve(Box::new(ServeConfig::parse_from_env())));
    let runtime = match &command {
        Command::Serve(config) => server_runtime(config)?,
        _ => tokio::runtime::Runtime::new()?,
    };
    match command {
        Command::Serve(config) => runtime.block_on(serve(*config)).map(|()| ok),
        Command::Add(args) => runtime.block_on(cli::add(args)).map(|()| ok),
        Command::Stats(args) => runtime.block_on(cli::stats(args)).map(|()| ok),
        Command::Health(args) => Ok(runtime.block_on(cli::health(args))),
        Command::Jobs(args) => runtime.block_on(cli::jobs(args)).map(|()| ok),
        Command::Retry(args) => runtime.block_on(cli::retry(args)).map(|()| ok),
        Command::Cancel(args) => runtime.block_on(cli::cancel(args)).map(|()| ok),
        Command::Pause(args) => runtime.block_on(cli::pause(args, true)).map(|()| ok),
        Command::Resume(args) => runtime.block_on(cli::pause(args, false)).map(|()| ok),
        Command::Workers(args) => runtime.block_on(cli::workers(args)).map(|()| ok),
        Command::Sessions(command) => runtime.block_on(cli::sessions(command)).map(|()| ok),
        Command::Schedule(command) => runtime.block_on(cli::schedule(command)).map(|()| ok),
        Command::Queue(command) => runtime.block_on(cli::settings::run(command)).map(|()| ok),
        Command::Work(args) => runtime.block_on(work::run(args)).map(|()| ok),
        Command::Doctor(args) => Ok(runtime.block_on(doctor::run(args))),
        Command::Token(command) => token::run(command).map(|()| ok),
    }
}

/// The server's runtime: as many threads as `ServeConfig::threads` says (tokio's choice when it
/// says none).
fn server_runtime(config: &ServeConfig) -> std::io::Result<tokio::runtime::Runtime> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.threads() {
        runtime.worker_threads(threads);
    }
    runtime.enable_all().build()
}

trait FromEnv {
    fn parse_from_env() -> Self;
}

impl FromEnv for ServeConfig {
    /// `jobwire` alone behaves as `jobwire serve` with flags from the environment.
    fn parse_from_env() -> Self {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            config: ServeConfig,
        }
        Only::parse_from(["jobwire"]).config
    }
}

/// Listens for SIGTERM and SIGINT from now on (not from the first poll: a signal during
/// start-up must still mean a graceful stop) and cancels the returned token on the first one.
fn shutdown_signal() -> anyhow::Result<tokio_util::sync::CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let token = tokio_util::sync::CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        info!("stop signal received");
        fire.cancel();
    });
    Ok(token)
}

/// Re-reads, on every SIGHUP, what may change without a restart: the TLS files. Listening starts
/// before the server does, so a SIGHUP never ends a server (its default action).
fn reload_on_hangup(tls: Option<Arc<ServerTls>>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match &tls {
                None => info!("SIGHUP: nothing to reload"),
                Some(tls) => match tls.reload() {
                    Ok(()) => info!("SIGHUP: TLS files reloaded; new connections get them"),
                    Err(error) => error!(%error, "SIGHUP: TLS files not reloaded; the previous ones keep serving"),
                },
            }
        }
    });
    Ok(())
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let stop = shutdown_signal()?;
    if let Err(message) = config.validate() {
        bail!(message);
    }
    if config.redis.any() && config.redis_url.is_none() {
        bail!("--redis-ca, --redis-client-cert and --redis-password-file are for a Redis of yours: pass --redis-url");
    }
    let tls = config.tls.load()?.map(Arc::new);
    reload_on_hangup(tls.clone())?;
    let access = config.redis.access().map_err(anyhow::Error::msg)?;
    let auth = match &config.auth_tokens {
        Some(path) => {
            let authority = Arc::new(Authority::load(path, config.reflection)?);
            authority.reload_on_sighup().context("cannot listen for SIGHUP")?;
            info!(file = %path.display(), tokens = authority.len(), "every call needs a token");
            Some(authority)
        }
        None if !config.listen.ip().is_loopback() => {
            warn!(addr = %config.listen, "SERVING WITHOUT AUTHENTICATION (--insecure-no-auth) on a non-loopback address: \
                anyone who can reach it can add, take, cancel and purge any job");
            None
        }
        None => None,
    };
    let embedded = match &config.redis_url {
        Some(_) => None,
        None => {
            let redis = RedisServer::start_async(RedisConfig::new(&config.data_dir).appendonly(true)).await?;
            info!(dir = %redis.dir().display(), "embedded redis-server started");
            Some(redis.supervise()?)
        }
    };
    let url = match (&config.redis_url, &embedded) {
        (Some(url), _) => url.clone(),
        (None, Some(e)) => e.url(),
        (None, None) => unreachable!("embedded redis is started when no url is given"),
    };
    let store = Arc::new(Store::new(&config.store(url, access)).context("invalid --redis-url")?);
    tokio::select! {
        ready = wait_for_schema(&store) => ready?,
        _ = stop.cancelled() => {
            if let Some(redis) = embedded {
                redis.stop().await;
            }
            return Ok(());
        }
    }
    if config.redis_url.is_some() {
        warn_about_redis_config(&store).await;
    }
    let engine = Engine::start(store, config.settings());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let grpc = listener.local_addr()?;
    let mutual = tls.as_ref().is_some_and(|tls| tls.requires_client_certificates());
    let threads = tokio::runtime::Handle::current().metrics().num_workers();
    info!(addr = %grpc, tls = tls.is_some(), client_certificates = mutual, threads, "jobwire listening");
    let metrics = match config.metrics_listen {
        Some(addr) => Some(
            jobwire::telemetry::MetricsEndpoint::bind(addr)
                .await
                .with_context(|| format!("cannot serve metrics on {addr}"))?,
        ),
        None => None,
    };
    if let Some(path) = &config.ready_file {
        let metrics = metrics.as_ref().map(|m| m.local_addr()).transpose()?;
        ReadyFile { grpc, metrics }
            .write(path)
            .with_context(|| format!("cannot write --ready-file {}", path.display()))?;
    }
    let options = ServerOptions {
        max_message: config.max_message(),
        ping_every: config.ping_every,
        drain_grace: config.drain_grace,
        metrics,
        keepalive: config.keepalive(),
        tls,
        auth,
        dashboard: config.ui,
        connections: config.connections(),
    };
    server::run(listener, engine, options, stop.cancelled_owned()).await?;
    if let Some(redis) = embedded {
        redis.stop().await;
    }
    info!("bye");
    Ok(())
}

/// Waits for Redis to answer, then checks the layout version.
async fn wait_for_schema(store: &Store) -> anyhow::Result<()> {
    let mut logged = false;
    loop {
        match store.ensure_schema().await {
            Ok(()) => return Ok(()),
            Err(StoreError::Unavailable(detail)) => {
                if !logged {
                    warn!(%detail, "waiting for redis");
                    logged = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Warns loudly about Redis settings that would lose jobs; says so when Redis does not let it
/// read them (a managed Redis, an ACL user without CONFIG).
async fn warn_about_redis_config(store: &Store) {
    let Some(policy) = store.config_get("maxmemory-policy").await.ok().flatten() else {
        info!(
            "Redis refused CONFIG GET: not checking maxmemory-policy and persistence (use noeviction and appendonly yes)"
        );
        return;
    };
    if policy != "noeviction" {
        warn!(%policy, "REDIS WILL EVICT KEYS UNDER MEMORY PRESSURE: jobs can be lost. Set maxmemory-policy noeviction");
    }
    let aof = store.config_get("appendonly").await.ok().flatten();
    let save = store.config_get("save").await.ok().flatten();
    if aof.as_deref() == Some("no") && save.as_deref() == Some("") {
        warn!("REDIS PERSISTS NOTHING (no AOF, no RDB snapshots): a Redis restart loses every job. Set appendonly yes");
    }
}
