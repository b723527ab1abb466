//! Metrics (Prometheus) and trace context (W3C `traceparent`).
//!
//! **Metrics** go through the `metrics` facade to a Prometheus recorder that is installed only
//! when `--metrics-listen` is given (see [`MetricsEndpoint`]); without it every recording point
//! costs one atomic load and nothing else. The recorder is process-global (that is how the
//! facade works), so the figures of several engines in one process (tests) add up per queue.
//!
//! Why the per-queue handles are cached here: the facade's macros build a `Key` (name + labels)
//! and look it up in the recorder's registry on every call, and a queue label built from a
//! `&str` is a `String` allocation per call. [`queue`] hands out the registered handles of a
//! queue from a map instead, so recording a job transition allocates nothing after the queue's
//! first one. Names are `'static` constants: the list in [`names`] is the whole vocabulary (the
//! README lists the same).
//!
//! Which figures are per instance and which are global: counters and histograms count what this
//! instance did (sum them over instances); the per-queue gauges are read from Redis and are the
//! same on every instance (take the max, not the sum); `jobwire_worker_streams` counts the
//! streams held by this instance.
//!
//! **Trace context** lives in [`traceparent`]: a job added with a `traceparent` header gets the
//! header's trace id and parent span id as the `trace_id` and `parent_span_id` fields of the
//! server's spans about that job (`job.add`, `job.deliver`, `job.complete`, `job.fail`, target
//! `jobwire::job`). For acks the server takes the context from the request's `traceparent`
//! metadata when the worker sends one (any instance), else from the lease, when this instance
//! delivered it (it remembers the context of every job it holds out). The spans are plain
//! `tracing` spans: any subscriber sees them, and one bridging to OpenTelemetry can use the two
//! fields to parent them. Spans are DEBUG, so they cost nothing at the default log level.
//!
//! **Logs** of both binaries are set up by [`log_to_stderr`].

mod exporter;
pub mod traceparent;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock, RwLock},
    time::Duration,
};

use metrics::{Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use exporter::MetricsEndpoint;
pub use traceparent::TraceContext;

/// Every metric name jobwire exports.
pub mod names {
    /// Counter: jobs added by this instance (duplicates not counted).
    pub const JOBS_ADDED: &str = "jobwire_jobs_added_total";
    /// Counter: jobs completed through this instance.
    pub const JOBS_COMPLETED: &str = "jobwire_jobs_completed_total";
    /// Counter: attempts workers reported failed (FailJob) through this instance.
    pub const JOBS_FAILED: &str = "jobwire_jobs_failed_total";
    /// Counter: of those, the ones scheduled to run again.
    pub const JOBS_RETRIED: &str = "jobwire_jobs_retried_total";
    /// Counter: deliveries lost (the worker's stream ended while holding them).
    pub const JOBS_LOST: &str = "jobwire_jobs_lost_total";
    /// Counter: attempts past their deadline, found by this instance's dispatcher.
    pub const JOBS_TIMED_OUT: &str = "jobwire_jobs_timed_out_total";
    /// Counter: jobs cancelled (CancelJob) through this instance.
    pub const JOBS_CANCELLED: &str = "jobwire_jobs_cancelled_total";
    /// Histogram, seconds: from delivery to the worker's answer, per attempt.
    pub const JOB_RUN: &str = "jobwire_job_run_seconds";
    /// Histogram, seconds: from ready to delivery.
    pub const JOB_WAIT: &str = "jobwire_job_wait_seconds";
    /// Gauge, read from Redis: jobs ready to run.
    pub const QUEUE_WAITING: &str = "jobwire_queue_waiting";
    /// Gauge, read from Redis: jobs delivered and not yet acknowledged.
    pub const QUEUE_ACTIVE: &str = "jobwire_queue_active";
    /// Gauge, read from Redis: jobs waiting for a delay, `run_at` or retry backoff.
    pub const QUEUE_DELAYED: &str = "jobwire_queue_delayed";
    /// Gauge, read from Redis: dead jobs retained.
    pub const QUEUE_DEAD: &str = "jobwire_queue_dead";
    /// Gauge, seconds, read from Redis: how long the oldest ready job has waited.
    pub const QUEUE_OLDEST_WAITING: &str = "jobwire_queue_oldest_waiting_seconds";
    /// Gauge, read from Redis: retained history dropped under memory pressure, in all, by
    /// `kind` (`events` in stream entries; `completed`, `cancelled`, `dead` in jobs).
    pub const QUEUE_SHED: &str = "jobwire_queue_shed";
    /// Gauge, read from Redis: the queue's concurrency cap, 0 when it has none.
    pub const QUEUE_CONCURRENCY_LIMIT: &str = "jobwire_queue_concurrency_limit";
    /// Gauge, read from Redis: jobs ready but held back, by `reason` (`concurrency`: the queue
    /// is at its cap).
    pub const QUEUE_HELD: &str = "jobwire_queue_held";
    /// Gauge: worker streams connected to this instance (no queue label).
    pub const WORKER_STREAMS: &str = "jobwire_worker_streams";
    /// Gauge, bytes: Redis's used memory as last read (no queue label).
    pub const REDIS_USED_MEMORY: &str = "jobwire_redis_used_memory_bytes";
    /// Gauge, bytes: Redis's maxmemory, 0 for none (no queue label).
    pub const REDIS_MAX_MEMORY: &str = "jobwire_redis_max_memory_bytes";
    /// Gauge: 1 while adds are refused because Redis is full, else 0 (no queue label).
    pub const REDIS_FULL: &str = "jobwire_redis_full";
    /// Histogram, seconds: one Redis call's round trip (no queue label).
    pub const REDIS_CALL: &str = "jobwire_redis_call_seconds";
}

/// The label naming the queue.
const QUEUE: &str = "queue";
/// The label naming what was shed.
const KIND: &str = "kind";
/// The label naming why jobs are held back.
const REASON: &str = "reason";

/// Job durations: from a millisecond to an hour.
const JOB_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0];
/// Redis round trips: from 100 µs to the default 2 s call timeout.
const REDIS_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0];

/// The registered handles of one queue's metrics.
pub struct QueueMetrics {
    /// Jobs added (duplicates not counted).
    pub added: Counter,
    /// Jobs completed.
    pub completed: Counter,
    /// Attempts a worker reported failed (FailJob), whatever comes next.
    pub failed: Counter,
    /// Of those, the ones scheduled to run again.
    pub retried: Counter,
    /// Deliveries lost: the worker's stream ended while it held them.
    pub lost: Counter,
    /// Attempts past their deadline, found by this instance's dispatcher.
    pub timed_out: Counter,
    /// Jobs cancelled through CancelJob.
    pub cancelled: Counter,
    /// From delivery to the worker's answer.
    pub run: Histogram,
    /// From ready to delivery.
    pub wait: Histogram,
    /// Jobs ready to run, read from Redis every refresh period (`queue::gauges`).
    pub waiting: Gauge,
    /// Jobs delivered and not yet acknowledged, read from Redis.
    pub active: Gauge,
    /// Jobs waiting for a delay, `run_at` or retry backoff, read from Redis.
    pub delayed: Gauge,
    /// Dead jobs retained, read from Redis.
    pub dead: Gauge,
    /// Seconds the oldest ready job has waited, read from Redis.
    pub oldest_waiting: Gauge,
    /// Event stream entries shed under memory pressure, in all, read from Redis.
    pub shed_events: Gauge,
    /// Completed jobs shed under memory pressure, in all, read from Redis.
    pub shed_completed: Gauge,
    /// Cancelled jobs shed under memory pressure, in all, read from Redis.
    pub shed_cancelled: Gauge,
    /// Dead jobs shed under memory pressure, in all, read from Redis.
    pub shed_dead: Gauge,
    /// The queue's concurrency cap (0: none), read from Redis.
    pub concurrency_limit: Gauge,
    /// Ready jobs held back at the concurrency cap, read from Redis.
    pub held_by_concurrency: Gauge,
    /// Ready jobs held back by a rate limit (the queue's or their rate key's), read from Redis.
    pub held_by_rate: Gauge,
    /// Ready jobs held back at their concurrency key's cap, read from Redis.
    pub held_by_key_concurrency: Gauge,
}

impl QueueMetrics {
    fn register(queue: &str) -> Self {
        use names::*;
        let name = || queue.to_owned();
        Self {
            added: metrics::counter!(JOBS_ADDED, QUEUE => name()),
            completed: metrics::counter!(JOBS_COMPLETED, QUEUE => name()),
            failed: metrics::counter!(JOBS_FAILED, QUEUE => name()),
            retried: metrics::counter!(JOBS_RETRIED, QUEUE => name()),
            lost: metrics::counter!(JOBS_LOST, QUEUE => name()),
            timed_out: metrics::counter!(JOBS_TIMED_OUT, QUEUE => name()),
            cancelled: metrics::counter!(JOBS_CANCELLED, QUEUE => name()),
            run: metrics::histogram!(JOB_RUN, QUEUE => name()),
            wait: metrics::histogram!(JOB_WAIT, QUEUE => name()),
            waiting: metrics::gauge!(QUEUE_WAITING, QUEUE => name()),
            active: metrics::gauge!(QUEUE_ACTIVE, QUEUE => name()),
            delayed: metrics::gauge!(QUEUE_DELAYED, QUEUE => name()),
            dead: metrics::gauge!(QUEUE_DEAD, QUEUE => name()),
            oldest_waiting: metrics::gauge!(QUEUE_OLDEST_WAITING, QUEUE => name()),
            shed_events: metrics::gauge!(QUEUE_SHED, QUEUE => name(), KIND => "events"),
            shed_completed: metrics::gauge!(QUEUE_SHED, QUEUE => name(), KIND => "completed"),
            shed_cancelled: metrics::gauge!(QUEUE_SHED, QUEUE => name(), KIND => "cancelled"),
            shed_dead: metrics::gauge!(QUEUE_SHED, QUEUE => name(), KIND => "dead"),
            concurrency_limit: metrics::gauge!(QUEUE_CONCURRENCY_LIMIT, QUEUE => name()),
            held_by_concurrency: metrics::gauge!(QUEUE_HELD, QUEUE => name(), REASON => "concurrency"),
            held_by_rate: metrics::gauge!(QUEUE_HELD, QUEUE => name(), REASON => "rate"),
            held_by_key_concurrency: metrics::gauge!(QUEUE_HELD, QUEUE => name(), REASON => "key_concurrency"),
        }
    }
}

/// What exists once the recorder is installed.
struct Installed {
    handle: PrometheusHandle,
    queues: RwLock<HashMap<String, Arc<QueueMetrics>>>,
    streams: Gauge,
    redis_calls: Histogram,
    redis_used: Gauge,
    redis_max: Gauge,
    redis_full: Gauge,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// Why metrics could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Something else in the process installed a `metrics` recorder first.
    #[error("another metrics recorder is already installed in this process")]
    RecorderTaken,
    /// The exporter refused a bucket list (a bug of this module).
    #[error("invalid histogram buckets: {0}")]
    Buckets(String),
    /// The metrics address could not be bound.
    #[error("cannot listen for metrics: {0}")]
    Listen(#[from] std::io::Error),
}

/// Installs the Prometheus recorder for this process (once; later calls return the same
/// handle). Until it is installed, every recording point is a no-op.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    // Serialised so that two servers starting at once in one process (tests) share one
    // recorder instead of one of them failing to install its own.
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(installed) = INSTALLED.get() {
        return Ok(installed.handle.clone());
    }
    let buckets = |e: metrics_exporter_prometheus::BuildError| MetricsError::Buckets(e.to_string());
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(names::JOB_RUN.into()), JOB_BUCKETS)
        .map_err(buckets)?
        .set_buckets_for_metric(Matcher::Full(names::JOB_WAIT.into()), JOB_BUCKETS)
        .map_err(buckets)?
        .set_buckets_for_metric(Matcher::Full(names::REDIS_CALL.into()), REDIS_BUCKETS)
        .map_err(buckets)?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| MetricsError::RecorderTaken)?;
    describe();
    let installed = Installed {
        handle: handle.clone(),
        queues: RwLock::new(HashMap::new()),
        streams: metrics::gauge!(names::WORKER_STREAMS),
        redis_calls: metrics::histogram!(names::REDIS_CALL),
        redis_used: metrics::gauge!(names::REDIS_USED_MEMORY),
        redis_max: metrics::gauge!(names::REDIS_MAX_MEMORY),
        redis_full: metrics::gauge!(names::REDIS_FULL),
    };
    let _ = INSTALLED.set(installed);
    Ok(handle)
}

fn describe() {
    use names::*;
    metrics::describe_counter!(JOBS_ADDED, "Jobs added by this instance (duplicates not counted)");
    metrics::describe_counter!(JOBS_COMPLETED, "Jobs completed through this instance");
    metrics::describe_counter!(JOBS_FAILED, "Attempts workers reported failed (FailJob) through this instance");
    metrics::describe_counter!(JOBS_RETRIED, "Failed attempts (FailJob) scheduled to run again");
    metrics::describe_counter!(JOBS_LOST, "Deliveries lost: the worker's stream ended while holding them");
    metrics::describe_counter!(JOBS_TIMED_OUT, "Attempts past their deadline, found by this instance's dispatcher");
    metrics::describe_counter!(JOBS_CANCELLED, "Jobs cancelled (CancelJob) through this instance");
    metrics::describe_histogram!(JOB_RUN, Unit::Seconds, "From delivery to the worker's answer, per attempt");
    metrics::describe_histogram!(JOB_WAIT, Unit::Seconds, "From ready to delivery");
    metrics::describe_gauge!(QUEUE_WAITING, "Jobs ready to run (read from Redis every few seconds)");
    metrics::describe_gauge!(QUEUE_ACTIVE, "Jobs delivered and not yet acknowledged (from Redis)");
    metrics::describe_gauge!(QUEUE_DELAYED, "Jobs waiting for a delay, run_at or retry backoff (from Redis)");
    metrics::describe_gauge!(QUEUE_DEAD, "Dead jobs retained (from Redis)");
    metrics::describe_gauge!(QUEUE_OLDEST_WAITING, Unit::Seconds, "How long the oldest ready job has waited");
    metrics::describe_gauge!(QUEUE_SHED, "Retained history dropped under memory pressure, by kind (from Redis)");
    metrics::describe_gauge!(QUEUE_CONCURRENCY_LIMIT, "The queue's concurrency cap, 0 for none (from Redis)");
    metrics::describe_gauge!(QUEUE_HELD, "Ready jobs held back, by reason (from Redis)");
    metrics::describe_gauge!(WORKER_STREAMS, "Worker streams connected to this instance");
    metrics::describe_gauge!(REDIS_USED_MEMORY, Unit::Bytes, "Redis used memory, as last read");
    metrics::describe_gauge!(REDIS_MAX_MEMORY, Unit::Bytes, "Redis maxmemory (0: none)");
    metrics::describe_gauge!(REDIS_FULL, "1 while adds are refused because Redis is full");
    metrics::describe_histogram!(REDIS_CALL, Unit::Seconds, "One Redis call (script or command), round trip");
}

/// The handles of `queue`'s metrics; None while metrics are off.
pub fn queue(queue: &str) -> Option<Arc<QueueMetrics>> {
    let installed = INSTALLED.get()?;
    let known = installed.queues.read().unwrap_or_else(|e| e.into_inner()).get(queue).cloned();
    if known.is_some() {
        return known;
    }
    let mut queues = installed.queues.write().unwrap_or_else(|e| e.into_inner());
    Some(queues.entry(queue.to_owned()).or_insert_with(|| Arc::new(QueueMetrics::register(queue))).clone())
}

/// Sets the number of worker streams held by this instance.
pub fn set_worker_streams(count: usize) {
    if let Some(installed) = INSTALLED.get() {
        installed.streams.set(count as f64);
    }
}

/// Sets Redis's memory as last read, and whether adds are refused for it.
pub fn set_redis_memory(used: u64, max: u64, full: bool) {
    if let Some(installed) = INSTALLED.get() {
        installed.redis_used.set(used as f64);
        installed.redis_max.set(max as f64);
        installed.redis_full.set(if full { 1.0 } else { 0.0 });
    }
}

/// The histogram of Redis calls; None while metrics are off (so callers skip the clock too).
pub fn redis_calls() -> Option<&'static Histogram> {
    INSTALLED.get().map(|i| &i.redis_calls)
}

/// Drains histogram samples into their buckets. The recorder needs it periodically whether or
/// not anyone scrapes, or samples pile up in memory.
pub fn upkeep() {
    if let Some(installed) = INSTALLED.get() {
        installed.handle.run_upkeep();
    }
}

/// The target of the per-job spans (`job.add`, `job.deliver`, `job.complete`, `job.fail`), so a
/// log filter can keep or drop them apart: `JOBWIRE_LOG=info,jobwire::job=off`.
pub const SPAN_TARGET: &str = "jobwire::job";

/// How often the per-queue gauges are read from Redis, unless the endpoint says otherwise.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(5);

/// The log setup of both binaries (`jobwire`, `jobwire-bench`): stderr, filtered by
/// `JOBWIRE_LOG` (default `info`), coloured only on a terminal.
pub fn log_to_stderr() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("JOBWIRE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
