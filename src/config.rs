//! Flags and environment (`JOBWIRE_*`) of `jobwire serve`, parsed and validated once at start.
//! `jobwire serve --help` is the reference; the README has the same table.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::Args;

use crate::{
    auth::Reflection,
    listener::{ServerTls, TlsError, TlsFiles},
    queue::{Limits, MemoryLimits, Settings},
    server::{ConnectionLimits, Keepalive},
    store::{RedisAccess, RedisIdentity, Retention, StoreConfig},
};

fn duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

/// The flags of `jobwire serve`; each field's doc is its `--help` text.
#[derive(Args, Debug, Clone)]
pub struct ServeConfig {
    /// gRPC listen address.
    #[arg(long, env = "JOBWIRE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Redis to use, e.g. redis://host:6379/0, rediss://user@host:6380 (TLS) or
    /// unix:///path/redis.sock; a Redis Cluster by its seed nodes,
    /// redis+cluster://host:port,host:port (rediss+cluster:// for TLS). Without it, jobwire starts and supervises its own redis-server
    /// with its data in --data-dir.
    #[arg(long, env = "JOBWIRE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// TLS files and the password file of --redis-url.
    #[command(flatten)]
    pub redis: RedisFlags,
    /// Data directory of the embedded Redis (only without --redis-url).
    #[arg(long, env = "JOBWIRE_DATA_DIR", default_value = "./jobwire-data")]
    pub data_dir: PathBuf,
    /// Namespace of every Redis key and channel.
    #[arg(long, env = "JOBWIRE_KEY_PREFIX", default_value = "jw")]
    pub key_prefix: String,
    /// Threads that run the server. Default: one per core, less one for the redis-server jobwire
    /// starts itself when no --redis-url is given (at least one), so that the two do not take
    /// turns on the same cores; TOKIO_WORKER_THREADS, when set, in place of that default.
    #[arg(long, env = "JOBWIRE_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Redis connections in the pool (each one multiplexed).
    #[arg(long, env = "JOBWIRE_REDIS_POOL", default_value_t = 8)]
    pub redis_pool: u32,
    /// Connect and response timeout of a Redis call; past it the call fails with UNAVAILABLE.
    #[arg(long, env = "JOBWIRE_REDIS_TIMEOUT", default_value = "2s", value_parser = duration)]
    pub redis_timeout: Duration,
    /// Replicas that must have an add (AddJob, AddJobs) or a completion before it answers OK: a
    /// `WAIT` for them on the same connection, right after the write (0: none). Costs a round
    /// trip to the replica per call; fewer replicas within half of --redis-timeout answers
    /// UNAVAILABLE. For Redis Cluster (or one Redis with replicas): without it, a write a
    /// master acknowledged just before it died may be missing on the replica that takes over.
    #[arg(long, env = "JOBWIRE_REDIS_WAIT_REPLICAS", default_value_t = 0)]
    pub redis_wait_replicas: u32,
    /// An instance silent for this long is dead: its jobs go back to their queues.
    #[arg(long, env = "JOBWIRE_LEASE_TTL", default_value = "30s", value_parser = duration)]
    pub lease_ttl: Duration,
    /// On SIGTERM/SIGINT, how long acks are still accepted before held jobs are handed back.
    #[arg(long, env = "JOBWIRE_DRAIN_GRACE", default_value = "30s", value_parser = duration)]
    pub drain_grace: Duration,
    /// Lost deliveries (stream ended without an ack) after which a job goes dead.
    #[arg(long, env = "JOBWIRE_MAX_LOST_DELIVERIES", default_value_t = 5)]
    pub max_lost_deliveries: u32,
    /// How long an idempotency key is remembered, per queue: at least 1ms (there is no "off": a
    /// job added with a key is always deduplicated within the window).
    #[arg(long, env = "JOBWIRE_IDEMPOTENCY_WINDOW", default_value = "24h", value_parser = duration)]
    pub idempotency_window: Duration,
    /// How long a key the client library generated for its own retries
    /// (`idempotency_key_generated`) is remembered, per queue: long enough for any retry of one
    /// add, at least 1ms. Memory for tombstones grows with throughput times this window.
    #[arg(long, env = "JOBWIRE_IDEMPOTENCY_RETRY_WINDOW", default_value = "10m", value_parser = duration)]
    pub idempotency_retry_window: Duration,
    /// How long completed jobs (and their results) are kept.
    #[arg(long, env = "JOBWIRE_COMPLETED_RETENTION", default_value = "1h", value_parser = duration)]
    pub completed_retention: Duration,
    /// At most this many completed jobs are kept per queue (0: none).
    #[arg(long, env = "JOBWIRE_COMPLETED_MAX", default_value_t = 10_000)]
    pub completed_max: u64,
    /// How long dead jobs are kept.
    #[arg(long, env = "JOBWIRE_DEAD_RETENTION", default_value = "7d", value_parser = duration)]
    pub dead_retention: Duration,
    /// At most this many dead jobs are kept per queue; older ones are evicted and counted.
    #[arg(long, env = "JOBWIRE_DEAD_MAX", default_value_t = 10_000)]
    pub dead_max: u64,
    /// Events kept per queue for Subscribe and WatchJob, about: older ones are trimmed in whole
    /// stream entries, each holding one transition of up to 16 jobs.
    #[arg(long, env = "JOBWIRE_EVENTS_MAX", default_value_t = 10_000)]
    pub events_max: u64,
    /// Percent of Redis's maxmemory above which AddJob, AddJobs and CreateSession are refused
    /// (RESOURCE_EXHAUSTED "Redis is full: used X of Y") until used memory is back 5 points
    /// below it; 10 to 100. Memory is read once a second, never per add. Nothing is refused for
    /// memory against a Redis without maxmemory.
    #[arg(long, env = "JOBWIRE_MEMORY_WATERMARK", default_value_t = 90, value_name = "PERCENT")]
    pub memory_watermark: u8,
    /// Percent of Redis's maxmemory above which retained history is shed, oldest first, until
    /// memory is back under it: events beyond the last 1,000 per queue, then completed jobs and
    /// their results, then cancelled jobs (then dead jobs, with --shed-dead); at most the
    /// watermark.
    #[arg(long, env = "JOBWIRE_MEMORY_SHED_AT", default_value_t = 80, value_name = "PERCENT")]
    pub memory_shed_at: u8,
    /// Under memory pressure, shed dead jobs too, once nothing else is left to shed (off: dead
    /// jobs stay until their retention, a retry or a delete).
    #[arg(long, env = "JOBWIRE_SHED_DEAD")]
    pub shed_dead: bool,
    /// The most jobs one queue may hold waiting (ready, delayed or retrying, or pending in a
    /// session); an add past it is refused (RESOURCE_EXHAUSTED "queue Q is full (N waiting)").
    /// Unset: no cap.
    #[arg(long, env = "JOBWIRE_MAX_WAITING", value_name = "N")]
    pub max_waiting: Option<u64>,
    /// Largest job payload in bytes.
    #[arg(long, env = "JOBWIRE_MAX_PAYLOAD", default_value_t = 1 << 20)]
    pub max_payload: usize,
    /// Largest job result in bytes.
    #[arg(long, env = "JOBWIRE_MAX_RESULT", default_value_t = 1 << 20)]
    pub max_result: usize,
    /// Largest AddJobs request: payloads and headers summed, in bytes.
    #[arg(long, env = "JOBWIRE_MAX_BATCH_BYTES", default_value_t = 16 << 20)]
    pub max_batch_bytes: usize,
    /// The most credit a worker stream may ask for: its `max_in_flight`, and its `prefetch`
    /// (each at most this); a stream asking for more is refused (INVALID_ARGUMENT).
    #[arg(long, env = "JOBWIRE_MAX_CREDIT", default_value_t = 1_000)]
    pub max_credit: u32,
    /// The most distinct queues Redis may hold, over every instance: a write that would make
    /// one more (an add, a session, a pause of a queue never used) is refused
    /// (RESOURCE_EXHAUSTED, naming --max-queues), and writes nothing. A queue counts from its
    /// first write on (its entry in the registry of queues) until it holds nothing again: no
    /// job in any state, session, setting, schedule or live idempotency key; 0: no cap.
    #[arg(long, env = "JOBWIRE_MAX_QUEUES", default_value_t = 10_000)]
    pub max_queues: u64,
    /// The most calls one HTTP/2 connection may have open at once (its
    /// SETTINGS_MAX_CONCURRENT_STREAMS): a client's further calls wait for one to end.
    #[arg(long, env = "JOBWIRE_MAX_STREAMS_PER_CONNECTION", default_value_t = 200)]
    pub max_streams_per_connection: u32,
    /// With --auth-tokens, the most streams (GetJob, Work, WatchJob, Subscribe) one token may
    /// have open on this instance; one more is refused (RESOURCE_EXHAUSTED).
    #[arg(long, env = "JOBWIRE_MAX_STREAMS_PER_TOKEN", default_value_t = 10_000)]
    pub max_streams_per_token: usize,
    /// Largest header block (metadata) of a call, in bytes (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE);
    /// a call with more is refused and the connection goes on.
    #[arg(long, env = "JOBWIRE_MAX_HEADER_BYTES", default_value_t = 16 << 10)]
    pub max_header_bytes: u32,
    /// A connection with no call open for this long is closed (a client's next call opens a new
    /// one). An open GetJob or Work stream is a call: a waiting worker is never idle.
    #[arg(long, env = "JOBWIRE_IDLE_TIMEOUT", default_value = "10m", value_parser = duration)]
    pub idle_timeout: Duration,
    /// A queue this instance has not used for this long (no call naming it, no worker stream,
    /// no WatchJob or Subscribe) is idle here: its metric series, cached settings and key names
    /// go from memory, and come back on its next use.
    #[arg(long, env = "JOBWIRE_QUEUE_IDLE_AFTER", default_value = "5m", value_parser = duration)]
    pub queue_idle_after: Duration,
    /// Dispatchers look at their queue at least this often, even without a wake-up.
    #[arg(long, env = "JOBWIRE_SAFETY_POLL", default_value = "5s", value_parser = duration)]
    pub safety_poll: Duration,
    /// How often the instance checks its leases against Redis.
    #[arg(long, env = "JOBWIRE_RECONCILE_EVERY", default_value = "5s", value_parser = duration)]
    pub reconcile_every: Duration,
    /// An idle worker stream hears a ping at least this often (after a random half to whole
    /// period, so streams opened together do not ping together).
    #[arg(long, env = "JOBWIRE_PING_EVERY", default_value = "15s", value_parser = duration)]
    pub ping_every: Duration,
    /// A connection that has sent nothing for this long gets an HTTP/2 PING, so a peer behind a
    /// dead network path (no FIN, no RST) is noticed: the keep-alive interval.
    #[arg(long, env = "JOBWIRE_HTTP2_KEEPALIVE_INTERVAL", default_value = "5s", value_parser = duration)]
    pub http2_keepalive_interval: Duration,
    /// A PING not answered within this closes the connection, ending its worker streams (their
    /// jobs go back to ready at once). With the interval, it bounds how long a worker cut off
    /// without a FIN keeps its jobs: at most interval + timeout (10 s by default).
    #[arg(long, env = "JOBWIRE_HTTP2_KEEPALIVE_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub http2_keepalive_timeout: Duration,
    /// Serve Prometheus metrics at http://ADDR/metrics (off when unset). Per-queue gauges are
    /// read from Redis every 5 s; counters and histograms count what this instance did.
    #[arg(long, env = "JOBWIRE_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// The TLS of the gRPC listener.
    #[command(flatten)]
    pub tls: TlsFlags,
    /// Serve the dashboard on the gRPC address (http://ADDR/ in a browser): its assets over
    /// HTTP/1.1 and the API over gRPC-web, with the same tokens as every client. `false` keeps
    /// the port to HTTP/2 gRPC alone.
    #[arg(long, env = "JOBWIRE_UI", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub ui: bool,
    /// Once the listeners are bound, write their addresses to this file: the gRPC address on
    /// line 1, the metrics address on line 2 (with --metrics-listen). Written to a temp file and
    /// renamed, so a reader sees all of it or nothing: wait for it instead of parsing logs when
    /// listening on port 0. Use a path that does not exist yet.
    #[arg(long, env = "JOBWIRE_READY_FILE", value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// The token file (JSON; `jobwire token create` writes it): every call then needs an
    /// `authorization: Bearer <token>` of a role that allows it, for queues in the token's scope
    /// (health excepted). Re-read on SIGHUP. Without it, jobwire serves only on a loopback address.
    #[arg(long, env = "JOBWIRE_AUTH_TOKENS", value_name = "FILE")]
    pub auth_tokens: Option<PathBuf>,
    /// Serve on a non-loopback address without any authentication: anyone who can reach the port
    /// can add, take, cancel and purge any job. For a network that is already closed to others.
    #[arg(long, env = "JOBWIRE_INSECURE_NO_AUTH", conflicts_with = "auth_tokens")]
    pub insecure_no_auth: bool,
    /// Whether gRPC reflection needs a token (any role) or is open to anyone (with
    /// --auth-tokens; without, everything is open).
    #[arg(long, env = "JOBWIRE_REFLECTION", value_enum, default_value_t = Reflection::Token)]
    pub reflection: Reflection,
}

impl ServeConfig {
    /// The server's threads (see `--threads`); None: tokio's own choice, TOKIO_WORKER_THREADS or
    /// one per core, as with a Redis of the user's.
    pub fn threads(&self) -> Option<usize> {
        match self.threads {
            Some(threads) => Some(usize::from(threads)),
            None if self.redis_url.is_none() && std::env::var_os("TOKIO_WORKER_THREADS").is_none() => {
                let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
                Some(cores.saturating_sub(1).max(1))
            }
            None => None,
        }
    }

    /// Checks what clap cannot; returns a message naming the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}']) {
            return Err("--key-prefix must be non-empty and contain no { or }".into());
        }
        if self.redis_pool == 0 {
            return Err("--redis-pool must be at least 1".into());
        }
        if self.lease_ttl < Duration::from_millis(300) {
            return Err("--lease-ttl must be at least 300ms".into());
        }
        for (flag, window) in [
            ("--idempotency-window", self.idempotency_window),
            ("--idempotency-retry-window", self.idempotency_retry_window),
        ] {
            if window < Duration::from_millis(1) {
                return Err(format!("{flag} must be at least 1ms"));
            }
        }
        if self.auth_tokens.is_none() && !self.insecure_no_auth && !self.listen.ip().is_loopback() {
            return Err(format!(
                "--listen {} is not a loopback address, and no --auth-tokens are given: anyone who can reach it \
                 could add, take, cancel and purge any job. Give --auth-tokens FILE (`jobwire token create` \
                 writes one), listen on 127.0.0.1, or pass --insecure-no-auth to serve without authentication",
                self.listen
            ));
        }
        if self.max_lost_deliveries == 0 {
            return Err("--max-lost-deliveries must be at least 1".into());
        }
        if !(10..=100).contains(&self.memory_watermark) {
            return Err("--memory-watermark must be from 10 to 100 (percent)".into());
        }
        if self.memory_shed_at == 0 || self.memory_shed_at > self.memory_watermark {
            return Err("--memory-shed-at must be from 1 to --memory-watermark (percent)".into());
        }
        if self.max_credit == 0 {
            return Err("--max-credit must be at least 1".into());
        }
        if self.max_streams_per_connection == 0 || self.max_streams_per_token == 0 {
            return Err("--max-streams-per-connection and --max-streams-per-token must be at least 1".into());
        }
        if self.max_header_bytes < 1024 {
            return Err("--max-header-bytes must be at least 1024".into());
        }
        if self.max_waiting == Some(0) {
            return Err("--max-waiting must be at least 1".into());
        }
        for (flag, value) in [
            ("--redis-timeout", self.redis_timeout),
            ("--safety-poll", self.safety_poll),
            ("--reconcile-every", self.reconcile_every),
            ("--ping-every", self.ping_every),
            ("--http2-keepalive-interval", self.http2_keepalive_interval),
            ("--http2-keepalive-timeout", self.http2_keepalive_timeout),
            ("--idle-timeout", self.idle_timeout),
            ("--queue-idle-after", self.queue_idle_after),
        ] {
            if value.is_zero() {
                return Err(format!("{flag} must be above zero"));
            }
        }
        Ok(())
    }

    /// The store's configuration, for the Redis at `url` (`--redis-url`, or the embedded one's)
    /// reached with `access` (`RedisFlags::access`).
    pub fn store(&self, url: String, access: RedisAccess) -> StoreConfig {
        StoreConfig {
            url,
            access,
            prefix: self.key_prefix.clone(),
            pool_size: self.redis_pool,
            timeout: self.redis_timeout,
            wait_replicas: self.redis_wait_replicas,
            retention: Retention {
                completed_for: self.completed_retention,
                completed_max: self.completed_max,
                dead_for: self.dead_retention,
                dead_max: self.dead_max,
                events_max: self.events_max,
            },
        }
    }

    /// The engine's settings: limits, windows and the periods of its background tasks.
    pub fn settings(&self) -> Settings {
        Settings {
            limits: Limits {
                max_payload: self.max_payload,
                max_result: self.max_result,
                max_batch_bytes: self.max_batch_bytes,
                max_in_flight: self.max_credit,
                ..Limits::default()
            },
            idempotency_window: self.idempotency_window,
            idempotency_retry_window: self.idempotency_retry_window,
            lease_ttl: self.lease_ttl,
            max_lost: self.max_lost_deliveries,
            safety_poll: self.safety_poll,
            reconcile_every: self.reconcile_every,
            memory: MemoryLimits {
                watermark: self.memory_watermark,
                shed_at: self.memory_shed_at,
                shed_dead: self.shed_dead,
                ..MemoryLimits::default()
            },
            max_waiting: self.max_waiting,
            max_queues: (self.max_queues > 0).then_some(self.max_queues),
            queue_idle_after: self.queue_idle_after,
        }
    }

    /// The HTTP/2 keep-alive of the gRPC connections.
    pub fn keepalive(&self) -> Keepalive {
        Keepalive { interval: self.http2_keepalive_interval, timeout: self.http2_keepalive_timeout }
    }

    /// What one connection and one token may hold open, and how big a call's headers may be.
    pub fn connections(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_streams_per_connection: self.max_streams_per_connection,
            max_streams_per_token: self.max_streams_per_token,
            max_header_bytes: self.max_header_bytes,
            idle_timeout: self.idle_timeout,
        }
    }

    /// The largest gRPC message the server decodes: the biggest legal request plus room for
    /// its framing. Past it, the transport itself answers OUT_OF_RANGE ("decoded message length
    /// too large"), before any handler runs, and the connection goes on.
    pub fn max_message(&self) -> usize {
        self.max_payload.max(self.max_result).max(self.max_batch_bytes) + (1 << 20)
    }
}

/// The TLS flags of `jobwire serve`.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsFlags {
    /// Serve TLS with this certificate chain (PEM, leaf first); needs --tls-key. Re-read, with
    /// the key and the client CA, on SIGHUP: new connections get the new files, open ones keep
    /// theirs, and files that do not load keep the old ones (the error is logged).
    #[arg(long, env = "JOBWIRE_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "JOBWIRE_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require every client to present a certificate signed by one of these CA certificates
    /// (PEM): mutual TLS. Needs --tls-cert.
    #[arg(long, env = "JOBWIRE_TLS_CLIENT_CA", value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

impl TlsFlags {
    /// The server's TLS configuration, loaded from the files; None without --tls-cert.
    pub fn load(&self) -> Result<Option<ServerTls>, TlsError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => ServerTls::load(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            })
            .map(Some),
            // clap makes each of the two require the other.
            _ => Ok(None),
        }
    }
}

/// How jobwire reaches a Redis beyond its URL: a CA and a client certificate for `rediss://`,
/// and the password from a file. Shared by `jobwire serve` and `jobwire doctor`.
#[derive(Args, Debug, Clone, Default)]
pub struct RedisFlags {
    /// Trust this CA (PEM) for the Redis server's certificate (rediss:// or rediss+cluster://
    /// only), instead of the system's roots.
    #[arg(long, env = "JOBWIRE_REDIS_CA", value_name = "FILE")]
    pub redis_ca: Option<PathBuf>,
    /// Present this client certificate (PEM) to a Redis that requires one (tls-auth-clients);
    /// needs --redis-client-key.
    #[arg(long, env = "JOBWIRE_REDIS_CLIENT_CERT", value_name = "FILE", requires = "redis_client_key")]
    pub redis_client_cert: Option<PathBuf>,
    /// The private key (PEM) of --redis-client-cert.
    #[arg(long, env = "JOBWIRE_REDIS_CLIENT_KEY", value_name = "FILE", requires = "redis_client_cert")]
    pub redis_client_key: Option<PathBuf>,
    /// Read the Redis password (of the URL's user, e.g. rediss://jobwire@host:6380) from this
    /// file, its first line, instead of putting it in the URL; it replaces a password there.
    #[arg(long, env = "JOBWIRE_REDIS_PASSWORD_FILE", value_name = "FILE")]
    pub redis_password_file: Option<PathBuf>,
}

impl RedisFlags {
    /// Whether any flag is set (they need a Redis of the operator's: --redis-url).
    pub fn any(&self) -> bool {
        self.redis_ca.is_some()
            || self.redis_client_cert.is_some()
            || self.redis_client_key.is_some()
            || self.redis_password_file.is_some()
    }

    /// Reads the files; an error names the flag and the file.
    pub fn access(&self) -> Result<RedisAccess, String> {
        let read = |flag: &str, path: &Path| std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()));
        let ca = self.redis_ca.as_deref().map(|path| read("--redis-ca", path)).transpose()?;
        let client_identity = match (&self.redis_client_cert, &self.redis_client_key) {
            (Some(cert), Some(key)) => {
                Some(RedisIdentity { cert: read("--redis-client-cert", cert)?, key: read("--redis-client-key", key)? })
            }
            // clap makes each of the two require the other.
            _ => None,
        };
        let password = match &self.redis_password_file {
            None => None,
            Some(path) => {
                let text = String::from_utf8(read("--redis-password-file", path)?)
                    .map_err(|_| format!("--redis-password-file {}: not UTF-8 text", path.display()))?;
                let first = text.lines().next().unwrap_or_default();
                if first.is_empty() {
                    return Err(format!("--redis-password-file {}: its first line is empty", path.display()));
                }
                Some(first.to_owned())
            }
        };
        Ok(RedisAccess { ca, client_identity, password })
    }
}
