//! Metrics and trace context: the `/metrics` endpoint's figures move with the jobs (scraped over
//! plain HTTP/1.1 and parsed as Prometheus text), the binary serves it with
//! `--metrics-listen`, and a job's `traceparent` shows up as the `trace_id` / `parent_span_id`
//! fields of the server's spans about that job (captured by a test `tracing` layer) and of the
//! Rust worker's handler span.
//!
//! The metrics recorder is per process, so each test uses queue names of its own.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use jobwire::{
    client::{Client, NewJob, Worker as ClientWorker},
    proto,
    telemetry::TraceContext,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{
    Subscriber,
    field::{Field, Visit},
    span::{Attributes, Id, Record},
};
use tracing_subscriber::{Layer, layer::Context, prelude::*, registry::LookupSpan};

use crate::harness::{self, Process, Redis, Server, ServerBuilder, Worker, eventually, unique_prefix};

const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Scraping
// ---------------------------------------------------------------------------------------------

/// GETs `path` with a bare HTTP/1.1 request; returns the status code and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect to the metrics endpoint");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send the request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read the answer");
    let text = String::from_utf8(raw).expect("the answer is UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status code");
    (status, body.to_owned())
}

/// One scrape, parsed: series (`name{labels}` exactly as exposed) to value.
pub struct Scrape {
    series: HashMap<String, f64>,
    text: String,
}

impl Scrape {
    pub async fn take(addr: std::net::SocketAddr) -> Self {
        let (status, text) = http_get(addr, "/metrics").await;
        assert_eq!(status, 200, "{text}");
        let mut series = HashMap::new();
        for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample line: {line:?}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a sample value: {line:?}"));
            series.insert(name.to_owned(), value);
        }
        Self { series, text }
    }

    /// A series of `queue`; 0 when it does not exist (yet).
    fn queue(&self, name: &str, queue: &str) -> f64 {
        self.series.get(&format!("{name}{{queue=\"{queue}\"}}")).copied().unwrap_or(0.0)
    }

    fn plain(&self, name: &str) -> Option<f64> {
        self.series.get(name).copied()
    }

    /// The series of `name` carrying every one of `labels` (in any order); 0 when none does.
    pub fn labelled(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        self.series
            .iter()
            .find(|(series, _)| {
                series.strip_prefix(name).is_some_and(|rest| rest.starts_with('{'))
                    && wanted.iter().all(|label| series.contains(label.as_str()))
            })
            .map_or(0.0, |(_, value)| *value)
    }
}

fn queue_name(what: &str) -> String {
    format!("{what}-{}", unique_prefix())
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn counters_gauges_and_histograms_move_with_the_jobs() {
    let redis = Redis::start();
    let server = ServerBuilder::new(&redis).metrics(Duration::from_millis(100)).start().await;
    let addr = server.metrics_addr.expect("metrics are served");
    let q = queue_name("basic");
    let mut client = server.client().await;

    let before = Scrape::take(addr).await;
    assert_eq!(before.queue("jobwire_jobs_added_total", &q), 0.0);

    for i in 0..3 {
        harness::add(&mut client, harness::job(&q, "t", format!("{i}").as_bytes())).await;
    }
    // A duplicate add is not an add.
    let keyed = proto::AddJobRequest { idempotency_key: "k".into(), ..harness::job(&q, "t", b"k") };
    harness::add(&mut client, keyed.clone()).await;
    harness::add(&mut client, keyed).await;
    let added = Scrape::take(addr).await;
    assert_eq!(added.queue("jobwire_jobs_added_total", &q), 4.0, "three plain adds and one keyed add");
    assert!(added.text.contains("# TYPE jobwire_jobs_added_total counter"), "{}", added.text);

    eventually(WAIT, "the waiting gauge to show the 4 jobs", || async {
        Scrape::take(addr).await.queue("jobwire_queue_waiting", &q) == 4.0
    })
    .await;

    let mut worker = Worker::open(&server, &[&q], 1).await;
    let streams = Scrape::take(addr).await.plain("jobwire_worker_streams").expect("the streams gauge");
    assert!(streams >= 1.0, "an open stream is counted: {streams}");

    let first = worker.job().await;
    worker.complete(&first, b"done").await.expect("complete");
    let second = worker.job().await;
    worker.fail(&second, "broken", false).await; // dead
    let third = worker.job().await;
    worker
        .client
        .fail_job(proto::FailJobRequest {
            job_id: third.id.clone(),
            lease_token: third.lease_token.clone(),
            error: "later".into(),
            retryable: Some(true),
            retry_after: Some(harness::millis(3_600_000)),
        })
        .await
        .expect("fail with a retry in an hour");
    let fourth = worker.job().await;
    worker.complete(&fourth, b"").await.expect("complete");

    let after = Scrape::take(addr).await;
    assert_eq!(after.queue("jobwire_jobs_completed_total", &q), 2.0);
    assert_eq!(after.queue("jobwire_jobs_failed_total", &q), 2.0, "both FailJob calls");
    assert_eq!(after.queue("jobwire_jobs_retried_total", &q), 1.0, "only the retryable one");
    assert_eq!(after.queue("jobwire_job_run_seconds_count", &q), 4.0, "one run per answered delivery");
    assert_eq!(after.queue("jobwire_job_wait_seconds_count", &q), 4.0, "one wait per delivery");
    assert!(after.queue("jobwire_job_wait_seconds_sum", &q) >= 0.0);
    let bucket = format!("jobwire_job_run_seconds_bucket{{queue=\"{q}\",le=\"+Inf\"}}");
    assert_eq!(after.series.get(&bucket).copied(), Some(4.0), "run time is a real histogram: {}", after.text);
    let redis_calls = after.plain("jobwire_redis_call_seconds_count").expect("redis calls are timed");
    assert!(redis_calls > 0.0);

    eventually(WAIT, "the gauges to show one dead and one delayed job, none waiting or active", || async {
        let now = Scrape::take(addr).await;
        [
            now.queue("jobwire_queue_waiting", &q),
            now.queue("jobwire_queue_active", &q),
            now.queue("jobwire_queue_delayed", &q),
            now.queue("jobwire_queue_dead", &q),
            now.queue("jobwire_queue_oldest_waiting_seconds", &q),
        ] == [0.0, 0.0, 1.0, 1.0, 0.0]
    })
    .await;

    let (status, _) = http_get(addr, "/").await;
    assert_eq!(status, 404, "only /metrics is served");
    server.assert_invariants(&q).await;
    server.stop().await;
}

#[tokio::test]
async fn lost_timed_out_and_cancelled_jobs_are_counted() {
    let redis = Redis::start();
    let server = ServerBuilder::new(&redis).metrics(Duration::from_millis(100)).start().await;
    let addr = server.metrics_addr.expect("metrics are served");
    let mut client = server.client().await;
    let (slow, dropped, cancelled) = (queue_name("slow"), queue_name("dropped"), queue_name("cancelled"));

    // An attempt that outlives its timeout.
    let short = proto::AddJobRequest {
        timeout: Some(harness::millis(50)),
        max_attempts: Some(1),
        ..harness::job(&slow, "t", b"")
    };
    let slow_id = harness::add(&mut client, short).await;
    let mut holder = Worker::open(&server, &[&slow], 1).await;
    assert_eq!(holder.job().await.id, slow_id);
    eventually(WAIT, "the timeout to be counted", || async {
        Scrape::take(addr).await.queue("jobwire_jobs_timed_out_total", &slow) == 1.0
    })
    .await;

    // A delivery whose stream goes away.
    harness::add(&mut client, harness::job(&dropped, "t", b"")).await;
    let mut leaver = Worker::open(&server, &[&dropped], 1).await;
    leaver.job().await;
    drop(leaver);
    eventually(WAIT, "the lost delivery to be counted", || async {
        Scrape::take(addr).await.queue("jobwire_jobs_lost_total", &dropped) == 1.0
    })
    .await;

    // A cancelled job.
    let later = proto::AddJobRequest {
        schedule: Some(proto::add_job_request::Schedule::Delay(harness::millis(3_600_000))),
        ..harness::job(&cancelled, "t", b"")
    };
    let id = harness::add(&mut client, later).await;
    client.cancel_job(proto::CancelJobRequest { job_id: id }).await.expect("cancel");
    assert_eq!(Scrape::take(addr).await.queue("jobwire_jobs_cancelled_total", &cancelled), 1.0);

    for q in [&slow, &dropped, &cancelled] {
        server.assert_invariants(q).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn the_binary_serves_metrics_when_asked() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let process = Process::start_command(
        std::process::Command::new(env!("CARGO_BIN_EXE_jobwire"))
            .args(["serve", "--listen", "127.0.0.1:0", "--redis-url", &redis.url(), "--key-prefix", &prefix])
            .env("JOBWIRE_METRICS_LISTEN", "127.0.0.1:0"),
    );
    let metrics = process.metrics_addr.expect("the ready file has the metrics address");

    let q = queue_name("binary");
    let mut client = process.client().await;
    harness::add(&mut client, harness::job(&q, "t", b"")).await;
    let scrape = Scrape::take(metrics).await;
    assert_eq!(scrape.queue("jobwire_jobs_added_total", &q), 1.0, "{}", scrape.text);
    assert!(scrape.text.contains("# HELP jobwire_jobs_added_total"), "metrics are described: {}", scrape.text);
    harness::assert_invariants_at(&redis.url(), &prefix, &q).await;
}

// ---------------------------------------------------------------------------------------------
// Trace context
// ---------------------------------------------------------------------------------------------

/// A closed span as the capture layer saw it.
#[derive(Clone, Debug)]
struct SpanSeen {
    name: &'static str,
    fields: HashMap<String, String>,
}

/// A `tracing` layer that keeps every closed span with its fields.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<SpanSeen>>>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut seen = SpanSeen { name: attrs.metadata().name(), fields: HashMap::new() };
        attrs.record(&mut Fields(&mut seen.fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(seen);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(seen) = span.extensions_mut().get_mut::<SpanSeen>()
        {
            values.record(&mut Fields(&mut seen.fields));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id)
            && let Some(seen) = span.extensions().get::<SpanSeen>()
        {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(seen.clone());
        }
    }
}

impl Capture {
    /// Captures the spans of everything on this thread (the whole test: `#[tokio::test]` runs
    /// the server, its tasks and the clients on one thread) until the guard drops.
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(tracing_subscriber::registry().with(self.clone()))
    }

    /// The closed spans named `name` whose `job_id` is `job_id`.
    fn spans(&self, name: &str, job_id: &str) -> Vec<SpanSeen> {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.iter().filter(|s| s.name == name && s.fields.get("job_id").is_some_and(|j| j == job_id)).cloned().collect()
    }

    /// Waits for exactly one such span and returns its fields.
    async fn one(&self, name: &str, job_id: &str) -> HashMap<String, String> {
        eventually(WAIT, &format!("a closed {name} span of {job_id}"), || async {
            !self.spans(name, job_id).is_empty()
        })
        .await;
        let spans = self.spans(name, job_id);
        assert_eq!(spans.len(), 1, "one {name} span of {job_id}: {spans:#?}");
        spans[0].fields.clone()
    }
}

const TRACE_A: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const TRACE_B: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// Trace B, as continued by a worker's own span.
const TRACE_B_WORKER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01";

fn traced(queue: &str, traceparent: &str) -> proto::AddJobRequest {
    let mut req = harness::job(queue, "t", b"");
    req.headers.insert("traceparent".into(), traceparent.into());
    req
}

fn assert_trace(fields: &HashMap<String, String>, trace_id: &str, parent_span_id: &str) {
    assert_eq!(fields.get("trace_id").map(String::as_str), Some(trace_id), "{fields:?}");
    assert_eq!(fields.get("parent_span_id").map(String::as_str), Some(parent_span_id), "{fields:?}");
}

#[tokio::test]
async fn a_jobs_traceparent_continues_in_the_servers_spans() {
    let capture = Capture::default();
    let _guard = capture.install();
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let q = queue_name("traced");
    let mut client = server.client().await;

    // Completed on the instance that delivered it, without metadata: the server remembers the
    // delivery's trace context.
    let a = harness::add(&mut client, traced(&q, TRACE_A)).await;
    assert_trace(&capture.one("job.add", &a).await, "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let mut worker = Worker::open(&server, &[&q], 1).await;
    let job = worker.job().await;
    assert_eq!(job.headers.get("traceparent").map(String::as_str), Some(TRACE_A), "the header is delivered as is");
    worker.complete(&job, b"").await.expect("complete");
    assert_trace(&capture.one("job.deliver", &a).await, "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    assert_trace(&capture.one("job.complete", &a).await, "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");

    // Failed with the worker's own context in the request metadata: that one wins.
    let b = harness::add(&mut client, traced(&q, TRACE_B)).await;
    let job = worker.job().await;
    let mut request = tonic::Request::new(proto::FailJobRequest {
        job_id: job.id.clone(),
        lease_token: job.lease_token.clone(),
        error: "no".into(),
        retryable: Some(false),
        retry_after: None,
    });
    request.metadata_mut().insert("traceparent", TRACE_B_WORKER.parse().expect("ascii"));
    worker.client.fail_job(request).await.expect("fail");
    assert_trace(&capture.one("job.add", &b).await, "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    assert_trace(&capture.one("job.fail", &b).await, "4bf92f3577b34da6a3ce929d0e0e4736", "1111111111111111");

    // A malformed header is kept as a header, and traces nothing.
    let c = harness::add(&mut client, traced(&q, "00-not-a-trace-01")).await;
    let job = worker.job().await;
    assert_eq!(job.headers.get("traceparent").map(String::as_str), Some("00-not-a-trace-01"));
    worker.complete(&job, b"").await.expect("complete");
    for name in ["job.add", "job.deliver", "job.complete"] {
        let fields = capture.one(name, &c).await;
        assert!(!fields.contains_key("trace_id") && !fields.contains_key("parent_span_id"), "{name}: {fields:?}");
    }

    // AddJobs: each job of the batch gets its own span, in its own trace.
    let batch = client
        .add_jobs(proto::AddJobsRequest { jobs: vec![traced(&q, TRACE_A), traced(&q, TRACE_B)] })
        .await
        .expect("add_jobs")
        .into_inner()
        .results;
    assert_trace(
        &capture.one("job.add", &batch[0].job_id).await,
        "0af7651916cd43dd8448eb211c80319c",
        "b7ad6b7169203331",
    );
    assert_trace(
        &capture.one("job.add", &batch[1].job_id).await,
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
    );

    server.assert_invariants(&q).await;
    server.stop().await;
}

#[tokio::test]
async fn the_rust_client_traces_every_job_and_runs_handlers_in_its_trace() {
    let capture = Capture::default();
    let _guard = capture.install();
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let q = queue_name("client");
    let producer = Client::connect(&format!("http://{}", server.addr)).await.expect("connect");

    // Without a traceparent, each job starts a trace of its own.
    let fresh = producer.add(NewJob::new(&q, "t")).await.expect("add");
    let other = producer.add(NewJob::new(&q, "t")).await.expect("add");
    let header = |info: &proto::JobInfo| info.headers.get("traceparent").cloned();
    let fresh_trace = header(&producer.info(&fresh).await.expect("info")).expect("a generated traceparent");
    let other_trace = header(&producer.info(&other).await.expect("info")).expect("a generated traceparent");
    let (fresh_ctx, other_ctx) = (TraceContext::parse(&fresh_trace), TraceContext::parse(&other_trace));
    assert!(fresh_ctx.is_some() && other_ctx.is_some(), "valid: {fresh_trace} {other_trace}");
    assert_ne!(fresh_ctx.map(|t| t.trace_id().to_string()), other_ctx.map(|t| t.trace_id().to_string()));

    // The caller's trace, an invalid one (ignored: the job keeps its own), and none at all.
    let continued = producer.add(NewJob::new(&q, "t").traceparent(TRACE_A)).await.expect("add");
    assert_eq!(header(&producer.info(&continued).await.expect("info")).as_deref(), Some(TRACE_A));
    let invalid = producer.add(NewJob::new(&q, "t").traceparent("nonsense")).await.expect("add");
    let kept = header(&producer.info(&invalid).await.expect("info")).expect("a traceparent");
    assert!(TraceContext::parse(&kept).is_some(), "{kept}");
    let untraced = producer.add(NewJob::new(&q, "t").untraced()).await.expect("add");
    assert_eq!(header(&producer.info(&untraced).await.expect("info")), None);

    // The worker runs the handler in a span of the job's trace, and its ack carries it.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = ClientWorker::new(Client::connect(&format!("http://{}", server.addr)).await.expect("connect"), &[&q])
        .handle("t", |_ctx| async move {
            tracing::info!("handling");
            Ok(Vec::new())
        });
    let task = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    producer.wait_for_result(&untraced, WAIT).await.expect("all five jobs ran");
    for id in [&fresh, &other, &continued, &invalid] {
        producer.wait_for_result(id, WAIT).await.expect("done");
    }
    let handler = capture.one("job", &continued).await;
    assert_trace(&handler, "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    assert_eq!(handler.get("job_type").map(String::as_str), Some("t"));
    assert_trace(
        &capture.one("job.complete", &continued).await,
        "0af7651916cd43dd8448eb211c80319c",
        "b7ad6b7169203331",
    );
    let untraced_run = capture.one("job", &untraced).await;
    assert!(!untraced_run.contains_key("trace_id"), "{untraced_run:?}");

    let _ = stop.send(());
    tokio::time::timeout(WAIT, task).await.expect("the worker stops").expect("worker task").expect("worker");
    server.assert_invariants(&q).await;
    server.stop().await;
}
