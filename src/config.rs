//! Flags and environment (`JOBWIRE_*`) of `jobwire serve`, parsed and validated once at start.
//! `jobwire serve --help` is the reference; the README has the same table.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;

use crate::{
    queue::{Limits, Settings},
    server::Keepalive,
    store::{Retention, StoreConfig},
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
    /// Redis to use, e.g. redis://host:6379/0 or unix:///path/redis.sock. Without it, jobwire
    /// starts and supervises its own redis-server with its data in --data-dir.
    #[arg(long, env = "JOBWIRE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Data directory of the embedded Redis (only without --redis-url).
    #[arg(long, env = "JOBWIRE_DATA_DIR", default_value = "./jobwire-data")]
    pub data_dir: PathBuf,
    /// Namespace of every Redis key and channel.
    #[arg(long, env = "JOBWIRE_KEY_PREFIX", default_value = "jw")]
    pub key_prefix: String,
    /// Redis connections in the pool (each one multiplexed).
    #[arg(long, env = "JOBWIRE_REDIS_POOL", default_value_t = 8)]
    pub redis_pool: u32,
    /// Connect and response timeout of a Redis call; past it the call fails with UNAVAILABLE.
    #[arg(long, env = "JOBWIRE_REDIS_TIMEOUT", default_value = "2s", value_parser = duration)]
    pub redis_timeout: Duration,
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
    /// Largest job payload in bytes.
    #[arg(long, env = "JOBWIRE_MAX_PAYLOAD", default_value_t = 1 << 20)]
    pub max_payload: usize,
    /// Largest job result in bytes.
    #[arg(long, env = "JOBWIRE_MAX_RESULT", default_value_t = 1 << 20)]
    pub max_result: usize,
    /// Largest AddJobs request: payloads and headers summed, in bytes.
    #[arg(long, env = "JOBWIRE_MAX_BATCH_BYTES", default_value_t = 16 << 20)]
    pub max_batch_bytes: usize,
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
}

impl ServeConfig {
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
        if self.idempotency_window < Duration::from_millis(1) {
            return Err("--idempotency-window must be at least 1ms".into());
        }
        if self.max_lost_deliveries == 0 {
            return Err("--max-lost-deliveries must be at least 1".into());
        }
        for (flag, value) in [
            ("--redis-timeout", self.redis_timeout),
            ("--safety-poll", self.safety_poll),
            ("--reconcile-every", self.reconcile_every),
            ("--ping-every", self.ping_every),
            ("--http2-keepalive-interval", self.http2_keepalive_interval),
            ("--http2-keepalive-timeout", self.http2_keepalive_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("{flag} must be above zero"));
            }
        }
        Ok(())
    }

    /// The store's configuration, for the Redis at `url` (`--redis-url`, or the embedded one's).
    pub fn store(&self, url: String) -> StoreConfig {
        StoreConfig {
            url,
            prefix: self.key_prefix.clone(),
            pool_size: self.redis_pool,
            timeout: self.redis_timeout,
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
                ..Limits::default()
            },
            idempotency_window: self.idempotency_window,
            lease_ttl: self.lease_ttl,
            max_lost: self.max_lost_deliveries,
            safety_poll: self.safety_poll,
            reconcile_every: self.reconcile_every,
        }
    }

    /// The HTTP/2 keep-alive of the gRPC connections.
    pub fn keepalive(&self) -> Keepalive {
        Keepalive { interval: self.http2_keepalive_interval, timeout: self.http2_keepalive_timeout }
    }

    /// The largest gRPC message the server decodes: the biggest legal request plus room for
    /// its framing. Past it, the transport itself answers RESOURCE_EXHAUSTED.
    pub fn max_message(&self) -> usize {
        self.max_payload.max(self.max_result).max(self.max_batch_bytes) + (1 << 20)
    }
}
