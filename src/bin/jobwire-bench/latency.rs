//! The latency scenarios, all open loops read by a worker process: c (light load), d (delayed
//! jobs' lateness) and g (the same with 10,000 idle worker streams held open).

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{bail, ensure};
use jobwire::{client::Client, proto};
use tokio::task::JoinSet;

use crate::{
    Bench, STREAMS_PER_CONNECTION,
    load::{OpenLoop, Ticker, measure_latency},
    procs::{CpuWindow, rss_bytes},
    results::{Recorder, Target, percentile},
};

impl Bench {
    pub(crate) async fn latency(&self, out: &mut Recorder<'_>) -> anyhow::Result<()> {
        let server = self.fresh_server().await?;
        let client = server.client().await?;
        let every = Duration::from_millis(2);
        let count = self.sizes.latency_jobs;
        self.redis.reset_stats().await?;
        let cpu = CpuWindow::open(&[self.redis.pid()?])?;
        let load = OpenLoop { queue: "bench-c", count, every, delay: None, concurrency: 10 };
        let sample = measure_latency(self, &server, &client, &load).await?;
        self.explain_redis(count, &cpu.close(count)?).await?;
        server.stop().await;
        out.latencies("latency", &sample, Some(0.5), Some(2.0));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// d. Delayed accuracy
// ---------------------------------------------------------------------------------------------

impl Bench {
    pub(crate) async fn delayed(&self, out: &mut Recorder<'_>) -> anyhow::Result<()> {
        let server = self.fresh_server().await?;
        let client = server.client().await?;
        // Redis keeps its default `hz 10`: the server must not depend on Redis timers.
        let hz = self.redis.info_number("server", "hz").await?;
        ensure!(hz == 10.0, "redis runs at hz {hz}, not its default 10");
        let load = OpenLoop {
            queue: "bench-d",
            count: self.sizes.delayed_jobs,
            every: Duration::from_millis(1),
            delay: Some(Duration::from_millis(500)),
            concurrency: 100,
        };
        let sample = measure_latency(self, &server, &client, &load).await?;
        server.stop().await;
        out.latencies("lateness, 500 ms delay", &sample, None, Some(5.0));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// g. Idle worker streams
// ---------------------------------------------------------------------------------------------

impl Bench {
    pub(crate) async fn idle_streams(&self, out: &mut Recorder<'_>) -> anyhow::Result<()> {
        let server = self.fresh_server().await?;
        let client = server.client().await?;
        let every = Duration::from_millis(2);
        // Two queues, so each measurement checks its own completions.
        let load = OpenLoop { queue: "bench-g1", count: self.sizes.latency_jobs, every, delay: None, concurrency: 10 };
        let baseline = measure_latency(self, &server, &client, &load).await?;
        let rss_before = rss_bytes(server.pid()?)?;

        let wanted = self.sizes.idle_streams;
        let opened = Arc::new(AtomicU64::new(0));
        let ticker = Ticker::start("streams opened".into(), wanted, opened.clone());
        let mut holders = JoinSet::new();
        let mut channels = Vec::new();
        let connections = wanted.div_ceil(STREAMS_PER_CONNECTION);
        for c in 0..connections {
            let idle = server.client().await?;
            channels.push(idle.clone());
            let here = STREAMS_PER_CONNECTION.min(wanted - c * STREAMS_PER_CONNECTION);
            let opened = opened.clone();
            holders.spawn(async move { hold_streams(idle, here, opened).await });
        }
        // Wait until every stream is open (or one failed).
        let deadline = Instant::now() + Duration::from_secs(120);
        while opened.load(Ordering::Relaxed) < wanted {
            if let Some(joined) = holders.try_join_next() {
                joined??;
                bail!("a connection's streams ended while opening");
            }
            ensure!(
                Instant::now() < deadline,
                "only {} of {wanted} streams opened within 120 s",
                opened.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(ticker);
        // Let the open-time dispatcher rounds settle before measuring.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_after = rss_bytes(server.pid()?)?;
        // What merely holding the streams costs: CPU over a few idle seconds (per second).
        let idle_for = Duration::from_secs(3);
        let cpu = CpuWindow::open(&[self.redis.pid()?, server.pid()?])?;
        tokio::time::sleep(idle_for).await;
        let idle = cpu.close(idle_for.as_secs())?;
        // Minus the bench's own connection.
        let redis_clients = self.redis.info_number("clients", "connected_clients").await? - 1.0;
        let loaded = measure_latency(self, &server, &client, &OpenLoop { queue: "bench-g2", ..load }).await?;
        ensure!(holders.try_join_next().is_none(), "idle streams ended during the measurement");
        holders.abort_all();
        drop(channels);
        server.stop().await;

        let p99 = |s: &[f64]| {
            let mut v = s.to_vec();
            v.sort_by(f64::total_cmp);
            percentile(&v, 0.99)
        };
        out.record(
            "idle GetJob streams held",
            "streams",
            Some(Target::AtLeast(wanted as f64)),
            opened.load(Ordering::Relaxed) as f64,
        );
        out.record("redis connections of the server", "conns", Some(Target::AtMost(16.0)), redis_clients);
        out.record("server RSS with the streams", "MB", Some(Target::AtMost(300.0)), rss_after / 1e6);
        out.record("server RSS per idle stream", "KB", None, (rss_after - rss_before) / wanted as f64 / 1e3);
        out.record("server CPU while the streams idle", "% of a core", None, idle.per_unit[1] / 1e4);
        out.record("redis-server CPU while the streams idle", "% of a core", None, idle.per_unit[0] / 1e4);
        out.record("c latency p99, no idle streams", "ms", None, p99(&baseline));
        out.record("c latency p99, with the streams", "ms", None, p99(&loaded));
        out.record(
            "c p99 with / without the streams",
            "ratio",
            Some(Target::AtMost(1.2)),
            p99(&loaded) / p99(&baseline),
        );
        Ok(())
    }
}

/// Opens `count` GetJob streams on one connection and reads them until they end; counts opens.
pub(crate) async fn hold_streams(client: Client, count: u64, opened: Arc<AtomicU64>) -> anyhow::Result<()> {
    let mut readers = JoinSet::new();
    for i in 0..count {
        let req = proto::GetJobRequest {
            worker_id: format!("idle-{i}"),
            labels: HashMap::new(),
            queues: vec!["bench-g-idle".into()],
            max_in_flight: 1,
        };
        let mut stream = client.raw().get_job(req).await?.into_inner();
        opened.fetch_add(1, Ordering::Relaxed);
        readers.spawn(async move { while let Ok(Some(_)) = stream.message().await {} });
    }
    // Streams end only when the server goes; the bench aborts this task first.
    while readers.join_next().await.is_some() {}
    Ok(())
}
