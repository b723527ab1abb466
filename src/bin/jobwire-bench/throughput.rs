//! The throughput scenarios: a (enqueue, singly, through the client's `add` and in bulk), b (processing at concurrency 1,
//! 10 and 100) and e (the retry path), each with the CPU every process spent per job.

use std::time::{Duration, Instant};

use anyhow::ensure;
use jobwire::proto;

use crate::{
    Bench, IN_FLIGHT,
    load::{add_in_bulk, add_singly, add_through_client, check_all_completed, job, wait_settled},
    probe::Role,
    procs::{CpuUse, CpuWindow, WorkerSpec},
    results::{Recorder, Target, percentile},
};

impl Bench {
    pub(crate) async fn enqueue(&self, out: &mut Recorder<'_>) -> anyhow::Result<()> {
        let n = self.sizes.enqueue;
        let server = self.fresh_server().await?;
        let client = server.client().await?;
        let roles = [(Role::Redis, self.redis.pid()?), (Role::Server, server.pid()?)];
        let pids = roles.map(|(_, pid)| pid);

        // The single adds' window is counted as b's are (--count, --callgrind redis,server).
        let probes = self.probes.open(&roles).await?;
        self.redis.reset_stats().await?;
        let cpu = CpuWindow::open(&pids)?;
        add_singly(&client, n, IN_FLIGHT, |i| job("bench-a1", i)).await?;
        let used = cpu.close(n)?;
        probes.close(n, "AddJob, ≤ 100 in flight", out).await?;
        self.explain_redis(n, &used).await?;
        let CpuUse { elapsed, per_unit: per_job, .. } = used;
        ensure!(client.stats("bench-a1").await?.waiting == n, "jobs missing");
        out.record(
            "AddJob, ≤ 100 in flight",
            "jobs/s",
            Some(Target::AtLeast(50_000.0)),
            n as f64 / elapsed.as_secs_f64(),
        );
        out.record("AddJob: redis-server CPU", "µs/job", None, per_job[0]);
        out.record("AddJob: jobwire server CPU", "µs/job", None, per_job[1]);

        // The same with the key every client generates by default: what its tombstone costs.
        self.redis.reset_stats().await?;
        let cpu = CpuWindow::open(&pids)?;
        add_singly(&client, n, IN_FLIGHT, |i| job("bench-a4", i).generated_idempotency_key()).await?;
        let used = cpu.close(n)?;
        self.explain_redis(n, &used).await?;
        ensure!(client.stats("bench-a4").await?.waiting == n, "jobs missing");
        out.record("AddJob + generated key: redis-server CPU", "µs/job", None, used.per_unit[0]);

        // The same jobs through `Client::add` (which gives each the generated key above): the
        // client's concurrent adds share AddJobs calls.
        self.redis.reset_stats().await?;
        let cpu = CpuWindow::open(&pids)?;
        add_through_client(&client, n, IN_FLIGHT, |i| job("bench-a5", i)).await?;
        let used = cpu.close(n)?;
        self.explain_redis(n, &used).await?;
        let CpuUse { elapsed, per_unit: per_job, .. } = used;
        ensure!(client.stats("bench-a5").await?.waiting == n, "jobs missing");
        out.record("Client::add, ≤ 100 in flight", "jobs/s", None, n as f64 / elapsed.as_secs_f64());
        out.record("Client::add: redis-server CPU", "µs/job", None, per_job[0]);
        out.record("Client::add: jobwire server CPU", "µs/job", None, per_job[1]);

        self.redis.reset_stats().await?;
        let cpu = CpuWindow::open(&pids)?;
        add_in_bulk(&client, n, |i| job("bench-a2", i)).await?;
        let used = cpu.close(n)?;
        self.explain_redis(n, &used).await?;
        let CpuUse { elapsed, per_unit: per_job, .. } = used;
        ensure!(client.stats("bench-a2").await?.waiting == n, "jobs missing");
        out.record(
            "AddJobs of 1,000, ≤ 4 calls in flight",
            "jobs/s",
            Some(Target::AtLeast(150_000.0)),
            n as f64 / elapsed.as_secs_f64(),
        );
        out.record("AddJobs: redis-server CPU", "µs/job", None, per_job[0]);
        out.record("AddJobs: jobwire server CPU", "µs/job", None, per_job[1]);

        // One call at a time: the round trip, to read against h's bare unary call.
        let mut raw = client.raw();
        let mut rtts = Vec::with_capacity(usize::try_from(self.sizes.round_trips)?);
        for i in 0..self.sizes.round_trips {
            let req = job("bench-a3", i).into_request();
            let t = Instant::now();
            raw.add_job(req).await?;
            rtts.push(t.elapsed().as_secs_f64() * 1e3);
        }
        rtts.sort_by(f64::total_cmp);
        out.record("AddJob round trip, 1 in flight, p50", "ms", None, percentile(&rtts, 0.5));
        server.stop().await;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// b. Processing
// ---------------------------------------------------------------------------------------------

impl Bench {
    pub(crate) async fn processing(&self, out: &mut Recorder<'_>) -> anyhow::Result<()> {
        let n = self.sizes.process;
        let concurrency = if self.concurrency.is_empty() { &[1, 10, 100][..] } else { &self.concurrency };
        for (concurrency, prefetch) in processing_runs(concurrency, self.prefetch) {
            let target = match concurrency {
                1 => 10_000.0,
                100 => 30_000.0,
                _ => 0.0,
            };
            let queue = "bench-b";
            let server = self.fresh_server().await?;
            let client = server.client().await?;
            add_in_bulk(&client, n, |i| job(queue, i)).await?;
            if let Some(cap) = self.concurrency_cap {
                let settings = proto::QueueSettings { concurrency: Some(cap), ..Default::default() };
                let req =
                    proto::SetQueueSettingsRequest { queue: queue.into(), settings: Some(settings), clear: vec![] };
                client.raw().set_queue_settings(req).await?;
            }
            let spec = WorkerSpec { queue, concurrency, expect: n, samples: false, fail_first: false, prefetch };
            let mut worker = self.worker(&server, &spec).await?;
            let pids = [(Role::Redis, self.redis.pid()?), (Role::Server, server.pid()?), (Role::Worker, worker.pid()?)];
            let probes = self.probes.open(&pids).await?;
            self.redis.reset_stats().await?;
            let cpu = CpuWindow::open(&pids.map(|(_, pid)| pid))?;
            worker.go().await?;
            let label = processing_label(concurrency, prefetch, self.concurrency_cap);
            let limit = Duration::from_secs(if self.probes.any() { 3600 } else { 600 });
            worker.wait_for("done", limit, Some((&label, n))).await?;
            let stats = wait_settled(&client, queue).await?;
            let used = cpu.close(n)?;
            probes.close(n, &label, out).await?;
            let scripts = self.explain_redis(n, &used).await?;
            check_all_completed(&stats, n)?;
            worker.finish().await?;
            server.stop().await;
            let per_job = &used.per_unit;
            out.record(
                &format!("{label}: throughput"),
                "jobs/s",
                (target > 0.0).then_some(Target::AtLeast(target)),
                n as f64 / used.elapsed.as_secs_f64(),
            );
            out.record(&format!("{label}: redis-server CPU"), "µs/job", Some(Target::AtMost(15.0)), per_job[0]);
            out.record(&format!("{label}: redis script calls"), "calls/job", None, scripts.calls);
            out.record(&format!("{label}: redis time in scripts"), "µs/job", None, scripts.usec);
            out.record(&format!("{label}: jobwire server CPU"), "µs/job", None, per_job[1]);
            out.record(&format!("{label}: worker process CPU"), "µs/job", None, per_job[2]);
        }
        Ok(())
    }
}

/// b's runs as (concurrency, prefetch): each of `concurrency` (1, 10 and 100 unless told) with
/// the bench's prefetch, and with a prefetch, concurrency 1 also without it (the figure
/// prefetch is measured against).
fn processing_runs(concurrency: &[u32], prefetch: u32) -> Vec<(u32, u32)> {
    let mut runs = Vec::new();
    for &c in concurrency {
        if c == 1 && prefetch > 0 {
            runs.push((1, 0));
        }
        runs.push((c, prefetch));
    }
    runs
}

/// A b run's name in the table: `concurrency C`, then `, prefetch P` when it prefetches.
fn processing_label(concurrency: u32, prefetch: u32, cap: Option<u32>) -> String {
    let mut label = format!("concurrency {concurrency}");
    if prefetch > 0 {
        label.push_str(&format!(", prefetch {prefetch}"));
    }
    if let Some(cap) = cap {
        label.push_str(&format!(", queue cap {cap}"));
    }
    label
}

// ---------------------------------------------------------------------------------------------
// e. Retry path
// ---------------------------------------------------------------------------------------------

impl Bench {
    pub(crate) async fn retries(&self, out: &mut Recorder<'_>) -> anyhow::Result<()> {
        let n = self.sizes.retry_jobs;
        for backoff_ms in [0, 10] {
            let queue = "bench-e";
            let server = self.fresh_server().await?;
            let client = server.client().await?;
            let backoff = Duration::from_millis(backoff_ms);
            add_in_bulk(&client, n, |i| job(queue, i).max_attempts(3).fixed_backoff(backoff)).await?;
            let spec = WorkerSpec {
                queue,
                concurrency: 100,
                expect: n,
                samples: false,
                fail_first: true,
                prefetch: self.prefetch,
            };
            let mut worker = self.worker(&server, &spec).await?;
            self.redis.reset_stats().await?;
            let cpu = CpuWindow::open(&[self.redis.pid()?, server.pid()?])?;
            worker.go().await?;
            let label = format!("backoff {backoff_ms} ms");
            worker.wait_for("done", Duration::from_secs(600), Some((&label, n))).await?;
            let stats = wait_settled(&client, queue).await?;
            let used = cpu.close(n)?;
            let scripts = self.explain_redis(n, &used).await?;
            let CpuUse { elapsed, per_unit: per_job, .. } = used;
            check_all_completed(&stats, n)?;
            worker.finish().await?;
            server.stop().await;
            out.record(
                &format!("fail once, backoff {backoff_ms} ms: throughput"),
                "jobs/s",
                None,
                n as f64 / elapsed.as_secs_f64(),
            );
            out.record(&format!("fail once, backoff {backoff_ms} ms: redis-server CPU"), "µs/job", None, per_job[0]);
            out.record(
                &format!("fail once, backoff {backoff_ms} ms: redis script calls"),
                "calls/job",
                None,
                scripts.calls,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_prefetch_b_runs_each_concurrency_once() {
        assert_eq!(processing_runs(&[1, 10, 100], 0), [(1, 0), (10, 0), (100, 0)]);
        assert_eq!(processing_label(10, 0, None), "concurrency 10");
        assert_eq!(processing_label(100, 0, Some(50)), "concurrency 100, queue cap 50");
    }

    #[test]
    fn with_prefetch_b_runs_concurrency_1_with_and_without_it() {
        assert_eq!(processing_runs(&[1, 10, 100], 4), [(1, 0), (1, 4), (10, 4), (100, 4)]);
        assert_eq!(processing_runs(&[10], 4), [(10, 4)]);
        assert_eq!(processing_label(1, 4, None), "concurrency 1, prefetch 4");
    }
}
