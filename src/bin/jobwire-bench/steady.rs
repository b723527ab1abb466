//! Scenario i: Redis memory after jobs were added and completed at a steady rate, each with the
//! idempotency key every client generates by default (`Client::add`). What stays is bounded by
//! retention (completed jobs are capped per queue, events too) and by the retry window (the
//! tombstones of the last window or so of adds), not by the number of jobs: so the figures are
//! per job/s of steady rate. The server runs with `--idempotency-retry-window` of the run's
//! size (short by default, so that a run of a minute spans several windows).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::ensure;
use jobwire::client::{Client, NewJob};
use tokio::task::JoinSet;

use crate::{
    Bench, JOB_TYPE,
    load::{Ticker, check_all_completed, payload, wait_settled},
    procs::WorkerSpec,
    results::{Recorder, num},
};

/// How scenario i runs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Steady {
    /// Jobs added (and completed) in all.
    pub jobs: u64,
    /// Jobs added per second.
    pub rate: u64,
    /// The server's retry window: how long a generated key is remembered.
    pub retry_window: Duration,
}

/// Adds are sent this often, `rate / TICKS_PER_SECOND` at a time.
const TICKS_PER_SECOND: u64 = 100;

impl Bench {
    pub(crate) async fn steady(&self, out: &mut Recorder<'_>) -> anyhow::Result<()> {
        let Steady { jobs, rate, retry_window } = self.steady;
        let window = humantime::format_duration(retry_window).to_string();
        let server = self.fresh_server_with(&["--idempotency-retry-window", &window]).await?;
        let client = server.client().await?;
        let queue = "bench-i";
        let spec = WorkerSpec { queue, concurrency: 16, expect: jobs, samples: false, fail_first: false, prefetch: 0 };
        let mut worker = self.worker(&server, &spec).await?;
        worker.go().await?;
        let before = self.redis.info_number("memory", "used_memory").await?;
        steady_adds(&client, queue, jobs, rate).await?;
        let limit = retry_window + Duration::from_secs(60);
        worker.wait_for("done", limit, Some((queue, jobs))).await?;
        let stats = wait_settled(&client, queue).await?;
        check_all_completed(&stats, jobs)?;
        let after = self.redis.info_number("memory", "used_memory").await?;
        let (tombstones, held) = self.tombstones(queue).await?;
        worker.finish().await?;
        server.stop().await;
        let rate_f = rate as f64;
        eprintln!(
            "    {} jobs at {} jobs/s, retry window {window}: {} MB more in Redis, {} MB of it in {} tombstones",
            num(jobs as f64),
            num(rate_f),
            num((after - before) / 1e6),
            num(tombstones / 1e6),
            num(held)
        );
        out.record("Redis memory after the run", "MB", None, (after - before) / 1e6);
        out.record("of it, idempotency tombstones", "MB", None, tombstones / 1e6);
        out.record("tombstones held per job/s: seconds of adds", "s", None, held / rate_f);
        out.record("bytes per tombstone", "bytes", None, tombstones / held);
        out.record("tombstone memory per job/s of steady rate", "KB", None, tombstones / rate_f / 1e3);
        Ok(())
    }

    /// The bytes held by the idempotency tombstone buckets of `queue` (MEMORY USAGE, exact)
    /// and the tombstones in them.
    async fn tombstones(&self, queue: &str) -> anyhow::Result<(f64, f64)> {
        let mut conn = self.redis.conn.clone();
        let (mut bytes, mut held) = (0u64, 0u64);
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("*{{{queue}}}:tombstones:*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            for key in keys {
                let usage: Option<u64> =
                    redis::cmd("MEMORY").arg("USAGE").arg(&key).arg("SAMPLES").arg(0).query_async(&mut conn).await?;
                let len: u64 = redis::cmd("HLEN").arg(&key).query_async(&mut conn).await?;
                bytes += usage.unwrap_or(0);
                held += len;
            }
            if next == 0 {
                return Ok((bytes as f64, held as f64));
            }
            cursor = next;
        }
    }
}

/// Adds `jobs` jobs to `queue` with `Client::add` (so each carries a generated key), `rate` a
/// second in ticks of `1 / TICKS_PER_SECOND` s, not waiting for answers; checks every answer.
async fn steady_adds(client: &Client, queue: &str, jobs: u64, rate: u64) -> anyhow::Result<()> {
    let per_tick = rate.div_ceil(TICKS_PER_SECOND).max(1);
    let every = Duration::from_secs(1).mul_f64(per_tick as f64 / rate as f64);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let done = Arc::new(AtomicU64::new(0));
    let _ticker = Ticker::start("AddJob".into(), jobs, done.clone());
    let mut tasks = JoinSet::new();
    let mut sent = 0;
    while sent < jobs {
        tick.tick().await;
        for n in sent..(sent + per_tick).min(jobs) {
            let (client, done) = (client.clone(), done.clone());
            let job = NewJob::new(queue, JOB_TYPE).payload(payload(n)).untraced();
            tasks.spawn(async move {
                client.add(job).await?;
                done.fetch_add(1, Ordering::Relaxed);
                anyhow::Ok(())
            });
        }
        sent = (sent + per_tick).min(jobs);
        while let Some(joined) = tasks.try_join_next() {
            joined??;
        }
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    ensure!(done.load(Ordering::Relaxed) == jobs, "adds missing");
    Ok(())
}
