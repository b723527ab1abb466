//! Load helpers shared by the scenarios: the issue's job shape, adding singly and in bulk,
//! waiting for a queue to settle, the open loop of the latency figures, and where Redis spent
//! a window.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure};
use futures::{StreamExt, TryStreamExt};
use jobwire::{
    client::{Client, NewJob},
    proto,
};
use tokio::task::JoinSet;

use crate::{
    BULK, BULK_IN_FLIGHT, Bench, COMPLETED_CAP, JOB_TYPE, PAD,
    probe::Role,
    procs::{CommandStat, CpuUse, Redis, Server, WorkerProc, WorkerSpec},
    results::num,
    worker::unix_nanos,
};

/// `{"n": i, "pad": "<100 bytes>"}`
pub(crate) fn payload(n: u64) -> Vec<u8> {
    format!(r#"{{"n":{n},"pad":"{PAD}"}}"#).into_bytes()
}

/// The issue's job: the payload and nothing else. The typed client's default `traceparent`
/// header (~70 bytes) is left out so every figure is of the plain `AddJob` contract; scenario f
/// measures it apart.
pub(crate) fn job(queue: &str, n: u64) -> NewJob {
    NewJob::new(queue, JOB_TYPE).payload(payload(n)).untraced()
}

/// Prints `label: done/total` every two seconds while alive.
pub(crate) struct Ticker(tokio::task::JoinHandle<()>);

impl Ticker {
    pub(crate) fn start(label: String, total: u64, done: Arc<AtomicU64>) -> Self {
        Self(tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(2));
            every.tick().await;
            loop {
                every.tick().await;
                eprintln!("    {label}: {}/{total}", done.load(Ordering::Relaxed));
            }
        }))
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Bench {
    /// A fresh server over a flushed Redis.
    pub(crate) async fn fresh_server(&self) -> anyhow::Result<Server> {
        self.fresh_server_with(&[]).await
    }

    /// A fresh server over a flushed Redis, with `flags` added to its command line.
    pub(crate) async fn fresh_server_with(&self, flags: &[&str]) -> anyhow::Result<Server> {
        self.redis.flushall().await?;
        self.another_server(flags).await
    }

    /// One more server over the same Redis (nothing flushed), with `flags` added.
    pub(crate) async fn another_server(&self, flags: &[&str]) -> anyhow::Result<Server> {
        self.server_over(&self.redis.url, flags).await
    }

    /// A server over the Redis at `redis_url` (the private one, or a cluster's seeds), with
    /// `flags` added.
    pub(crate) async fn server_over(&self, redis_url: &str, flags: &[&str]) -> anyhow::Result<Server> {
        let ready = self.work.path().join(format!("ready-{}", ulid::Ulid::new()));
        let slow_redis = self.probes.callgrind.contains(&Role::Redis);
        let mut cmd = self.probes.command(Role::Server, &self.server_exe);
        if let Some(n) = self.server_threads {
            cmd.env("TOKIO_WORKER_THREADS", n.to_string());
        }
        let Some(security) = &self.security else {
            return Server::start(cmd, redis_url, &ready, slow_redis, flags, None).await;
        };
        let mut all: Vec<&str> = security.server_flags.iter().map(String::as_str).collect();
        all.extend(flags);
        Server::start(cmd, redis_url, &ready, slow_redis, &all, Some(security.access.clone())).await
    }

    pub(crate) async fn worker(&self, server: &Server, spec: &WorkerSpec<'_>) -> anyhow::Result<WorkerProc> {
        let mut cmd = self.probes.command(Role::Worker, &self.exe);
        if let Some(n) = self.worker_threads {
            cmd.env("TOKIO_WORKER_THREADS", n.to_string());
        }
        WorkerProc::start(cmd, server, spec, self.protocol).await
    }
}

impl Bench {
    /// Prints where the private Redis spent a window (see [`explain_node`]) and returns its
    /// script calls and the µs spent executing them, per job.
    pub(crate) async fn explain_redis(&self, n: u64, used: &CpuUse) -> anyhow::Result<CommandStat> {
        explain_node(&self.redis, "redis", n, used.per_unit[0], used.system_per_unit[0]).await
    }
}

/// Prints where a Redis (`name`: the private one, or a cluster node) spent a window of `n`
/// jobs (per job: its CPU and the system part, `cpu_us` and `system_us`, and its commands by
/// calls) and returns the script calls and the µs spent executing them, per job. The rest of
/// Redis's CPU is its event loop: reading, parsing and answering requests.
pub(crate) async fn explain_node(
    redis: &Redis,
    name: &str,
    n: u64,
    cpu_us: f64,
    system_us: f64,
) -> anyhow::Result<CommandStat> {
    let stats = redis.command_stats().await?;
    let per_job = |v: f64| v / n as f64;
    let commands: Vec<String> = stats
        .iter()
        .take(12)
        .map(|c| format!("{} {} ({} µs)", c.name, num(per_job(c.calls)), num(per_job(c.usec))))
        .collect();
    let mut scripts = CommandStat { name: "scripts".into(), calls: 0.0, usec: 0.0 };
    for c in stats.iter().filter(|c| ["fcall", "evalsha", "eval"].contains(&c.name.as_str())) {
        scripts.calls += per_job(c.calls);
        scripts.usec += per_job(c.usec);
    }
    eprintln!(
        "    {name} per job: {} µs CPU ({} µs system), {} µs inside scripts; commands per job (µs inside): {}",
        num(cpu_us),
        num(system_us),
        num(scripts.usec),
        commands.join(", ")
    );
    Ok(scripts)
}

/// Adds `n` jobs, one AddJob each, at most `in_flight` at once; checks every answer.
pub(crate) async fn add_singly(
    client: &Client,
    n: u64,
    in_flight: usize,
    make: impl Fn(u64) -> NewJob,
) -> anyhow::Result<()> {
    add_each("AddJob", n, in_flight, make, |job| {
        let mut raw = client.raw();
        async move {
            let resp = raw.add_job(job.into_request()).await?.into_inner();
            ensure!(!resp.duplicate, "an add without a key came back duplicate");
            Ok(resp.job_id)
        }
    })
    .await
    .map(drop)
}

/// Adds `n` jobs through the typed client's `Client::add`, at most `in_flight` at once: what
/// an application adding single jobs gets, its concurrent adds sharing calls; checks that
/// each job got its own id.
pub(crate) async fn add_through_client(
    client: &Client,
    n: u64,
    in_flight: usize,
    make: impl Fn(u64) -> NewJob,
) -> anyhow::Result<()> {
    let ids = add_each("Client::add", n, in_flight, make, |job| async move { Ok(client.add(job).await?) }).await?;
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    ensure!(distinct.len() == ids.len(), "{} of {} adds share an id", ids.len() - distinct.len(), ids.len());
    Ok(())
}

/// Adds the jobs `make` builds for 0..n, each through `add` (the job's id out), at most
/// `in_flight` at once, ticking under `label`; returns the ids.
async fn add_each<Add, Added>(
    label: &str,
    n: u64,
    in_flight: usize,
    make: impl Fn(u64) -> NewJob,
    add: Add,
) -> anyhow::Result<Vec<String>>
where
    Add: Fn(NewJob) -> Added,
    Added: Future<Output = anyhow::Result<String>>,
{
    let done = Arc::new(AtomicU64::new(0));
    let _ticker = Ticker::start(label.into(), n, done.clone());
    let jobs: Vec<NewJob> = (0..n).map(make).collect();
    futures::stream::iter(jobs)
        .map(|job| {
            let added = add(job);
            let done = done.clone();
            async move {
                let id = added.await?;
                done.fetch_add(1, Ordering::Relaxed);
                Ok::<_, anyhow::Error>(id)
            }
        })
        .buffer_unordered(in_flight)
        .try_collect()
        .await
}

/// Adds `n` jobs with AddJobs of 1,000, `BULK_IN_FLIGHT` calls at once; checks every entry.
pub(crate) async fn add_in_bulk(client: &Client, n: u64, make: impl Fn(u64) -> NewJob) -> anyhow::Result<()> {
    let done = Arc::new(AtomicU64::new(0));
    let _ticker = Ticker::start("AddJobs".into(), n, done.clone());
    let batches: Vec<Vec<NewJob>> =
        (0..n.div_ceil(BULK)).map(|b| (b * BULK..((b + 1) * BULK).min(n)).map(&make).collect()).collect();
    futures::stream::iter(batches)
        .map(|batch| {
            let client = client.clone();
            let done = done.clone();
            async move {
                let len = batch.len();
                let results = client.add_many(batch).await?;
                ensure!(results.len() == len, "AddJobs answered {} of {len}", results.len());
                if let Some(bad) = results.iter().find(|r| r.code != 0 || r.duplicate) {
                    bail!("AddJobs rejected an entry: {} {}", bad.code, bad.message);
                }
                done.fetch_add(u64::try_from(len)?, Ordering::Relaxed);
                Ok(())
            }
        })
        .buffer_unordered(BULK_IN_FLIGHT)
        .try_collect::<()>()
        .await
}

/// Waits until nothing of `queue` is waiting, delayed or active; returns its final figures.
pub(crate) async fn wait_settled(client: &Client, queue: &str) -> anyhow::Result<proto::QueueStats> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = client.stats(queue).await?;
        if stats.waiting == 0 && stats.delayed == 0 && stats.active == 0 {
            return Ok(stats);
        }
        ensure!(
            Instant::now() < deadline,
            "queue {queue} did not settle within 60 s: {} waiting, {} delayed, {} active",
            stats.waiting,
            stats.delayed,
            stats.active
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Checks that every job of a drained queue completed: none dead, all counted (up to the
/// server's completed-job cap).
pub(crate) fn check_all_completed(stats: &proto::QueueStats, n: u64) -> anyhow::Result<()> {
    ensure!(stats.dead == 0, "{} jobs went dead", stats.dead);
    ensure!(
        stats.completed == n.min(COMPLETED_CAP),
        "{} jobs completed, expected {}",
        stats.completed,
        n.min(COMPLETED_CAP)
    );
    Ok(())
}

/// Open loop: one AddJob every `every`, not waiting for answers. Returns `(n, unix ns just
/// before its AddJob)` for n in 1..=count.
pub(crate) async fn open_loop(
    client: &Client,
    queue: &str,
    count: u64,
    every: Duration,
    delay: Option<Duration>,
) -> anyhow::Result<Vec<(u64, i64)>> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = JoinSet::new();
    for n in 1..=count {
        tick.tick().await;
        let mut new = job(queue, n);
        if let Some(d) = delay {
            new = new.delay(d);
        }
        let req = new.into_request();
        let mut raw = client.raw();
        tasks.spawn(async move {
            let before = unix_nanos();
            raw.add_job(req).await.map(|_| (n, before))
        });
    }
    let mut sent = Vec::with_capacity(usize::try_from(count)?);
    while let Some(joined) = tasks.join_next().await {
        sent.push(joined??);
    }
    Ok(sent)
}

/// One open-loop latency measurement (c, d, g): `count` jobs, one every `every`, each delayed
/// by `delay`, for a worker process of `concurrency`.
#[derive(Clone, Copy)]
pub(crate) struct OpenLoop<'a> {
    pub queue: &'a str,
    pub count: u64,
    pub every: Duration,
    pub delay: Option<Duration>,
    pub concurrency: u32,
}

/// Starts a fresh worker process, adds a warm-up job that proves its stream is open, then runs
/// the open loop. Returns each job's latency in ms: handler start − (just before AddJob + delay).
pub(crate) async fn measure_latency(
    bench: &Bench,
    server: &Server,
    client: &Client,
    load: &OpenLoop<'_>,
) -> anyhow::Result<Vec<f64>> {
    let OpenLoop { queue, count, every, delay, concurrency } = *load;
    let spec = WorkerSpec {
        queue,
        concurrency,
        expect: count + 1,
        samples: true,
        fail_first: false,
        prefetch: bench.prefetch,
    };
    let mut worker = bench.worker(server, &spec).await?;
    worker.go().await?;
    client.raw().add_job(job(queue, 0).into_request()).await?;
    worker.wait_for("started", Duration::from_secs(20), None).await?;
    let sent = open_loop(client, queue, count, every, delay).await?;
    worker.wait_for("done", Duration::from_secs(120), Some((queue, count + 1))).await?;
    let stats = wait_settled(client, queue).await?;
    check_all_completed(&stats, count + 1)?;
    let samples = worker.finish().await?;
    let mut first_start: HashMap<u64, i64> = HashMap::new();
    for (n, at) in samples {
        let slot = first_start.entry(n).or_insert(at);
        *slot = (*slot).min(at);
    }
    let offset = delay.map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    sent.iter()
        .map(|(n, before)| {
            let start = first_start.get(n).ok_or_else(|| anyhow!("job {n} was never handled"))?;
            Ok((start - before - offset) as f64 / 1e6)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_the_issues_shape() {
        let p = payload(42);
        let v: serde_json::Value = serde_json::from_slice(&p).expect("json");
        assert_eq!(v["n"], 42);
        assert_eq!(v["pad"].as_str().map(str::len), Some(100));
    }
}
