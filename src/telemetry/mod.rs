//! Metrics (Prometheus) and trace context (W3C `traceparent`).
//!
//! **Metrics** go through the `metrics` facade to a Prometheus recorder that is installed only
//! when `--metrics-listen` is given (see [`MetricsEndpoint`]); without it every recording point
//! costs one atomic load and nothing else. The recorder is process-global (that is how the
//! facade works), so the figures of several engines in one process (tests) add up per queue.
//!
//! The series with a queue label are not the recorder's: `queues.rs` keeps them, one set per
//! queue, so that an idle queue's series can go (`forget_idle_queue`) and a client inventing
//! queue names cannot grow the server's memory for good. [`queue`] hands out a queue's handles
//! from a map, so recording a job transition allocates nothing after the queue's first one.
//! Names are `'static` constants: the list in [`names`] is the whole vocabulary (the README
//! lists the same).
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
mod queues;
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
    /// The storage behind these handles, which `/metrics` renders (`queues.rs`).
    series: queues::QueueSeries,
}

impl QueueMetrics {
    fn register(queue: &str) -> Self {
        use names::*;
        let mut b = queues::Builder::new();
        let gauge = |b: &mut queues::Builder, name| b.gauge(name, None);
        Self {
            added: b.counter(JOBS_ADDED),
            completed: b.counter(JOBS_COMPLETED),
            failed: b.counter(JOBS_FAILED),
            retried: b.counter(JOBS_RETRIED),
            lost: b.counter(JOBS_LOST),
            timed_out: b.counter(JOBS_TIMED_OUT),
            cancelled: b.counter(JOBS_CANCELLED),
            run: b.histogram(JOB_RUN, JOB_BUCKETS),
            wait: b.histogram(JOB_WAIT, JOB_BUCKETS),
            waiting: gauge(&mut b, QUEUE_WAITING),
            active: gauge(&mut b, QUEUE_ACTIVE),
            delayed: gauge(&mut b, QUEUE_DELAYED),
            dead: gauge(&mut b, QUEUE_DEAD),
            oldest_waiting: gauge(&mut b, QUEUE_OLDEST_WAITING),
            shed_events: b.gauge(QUEUE_SHED, Some((KIND, "events"))),
            shed_completed: b.gauge(QUEUE_SHED, Some((KIND, "completed"))),
            shed_cancelled: b.gauge(QUEUE_SHED, Some((KIND, "cancelled"))),
            shed_dead: b.gauge(QUEUE_SHED, Some((KIND, "dead"))),
            concurrency_limit: gauge(&mut b, QUEUE_CONCURRENCY_LIMIT),
            held_by_concurrency: b.gauge(QUEUE_HELD, Some((REASON, "concurrency"))),
            held_by_rate: b.gauge(QUEUE_HELD, Some((REASON, "rate"))),
            held_by_key_concurrency: b.gauge(QUEUE_HELD, Some((REASON, "key_concurrency"))),
            series: b.finish(queue),
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

/// Drops the series of `queue` (so `/metrics` stops listing it) unless the gauges last read it
/// holding jobs: the idle sweep's call (`queue/idle.rs`). Its next use registers them afresh,
/// from zero (a counter reset, as after a restart).
pub fn forget_idle_queue(queue: &str) {
    if let Some(installed) = INSTALLED.get() {
        let mut queues = installed.queues.write().unwrap_or_else(|e| e.into_inner());
        if queues.get(queue).is_some_and(|m| m.series.holds_no_job()) {
            queues.remove(queue);
        }
    }
}

/// Drops the series of `queue` whatever they last read: the gauges' call, when Redis has just
/// said the queue holds no job and nobody uses it here.
pub fn forget_queue(queue: &str) {
    if let Some(installed) = INSTALLED.get() {
        installed.queues.write().unwrap_or_else(|e| e.into_inner()).remove(queue);
    }
}

/// The queues whose series `/metrics` lists, sorted.
pub fn queues_with_series() -> Vec<String> {
    let Some(installed) = INSTALLED.get() else { return Vec::new() };
    let mut names: Vec<String> = installed.queues.read().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
    names.sort();
    names
}

/// Everything `/metrics` answers: the recorder's series, then the per-queue ones, queues by name.
fn render(handle: &PrometheusHandle) -> String {
    let mut out = handle.render();
    if let Some(installed) = INSTALLED.get() {
        let queues = installed.queues.read().unwrap_or_else(|e| e.into_inner());
        let mut sorted: Vec<(&String, &Arc<QueueMetrics>)> = queues.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        queues::render(sorted.iter().map(|(_, m)| &m.series), &mut out);
    }
    out
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
