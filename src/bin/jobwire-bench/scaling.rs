//! Scenario l: scenario b over a local Redis Cluster (`cluster.rs`), row by row: 1 or 3
//! masters, 1 or 2 jobwire instances, an unsharded queue or one of 3 shards (`--masters`,
//! `--instances`, `--shards`), at concurrency 100 unless told (`--concurrency`, `--prefetch`).
//!
//! Each row, as b: the cluster flushed, fresh server instances over it (the queue's `shards`
//! set through the first before the second starts, so no instance has the old count cached;
//! with it `completed_max`, which each shard applies on its own, at the server's cap ÷ shards,
//! so the queue keeps the 10,000 completed jobs an unsharded one keeps and every row trims the
//! same share of its jobs: with a shard's own 10,000, the 50,000 jobs of a window would trim
//! 40 % of them on 3 shards against 80 % unsharded, a saving of the bench's size only),
//! the jobs added first (through every instance, an equal part each), then one worker process
//! per instance, the concurrency split between them; the window runs from `go` until the
//! workers together handled every job (their `count` answers: nothing polls Redis inside the
//! window) and the queue has nothing waiting or active. What travels to real machines is per
//! job and per process: each node's CPU and function calls, each instance's CPU, the workers'.
//! With as many shards as masters, the row's summed Redis CPU (and with `--callgrind redis` its
//! instructions, the figure a loaded machine does not move) is also set against the 1-master
//! unsharded row of the same run (the target: within 15 %).

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use jobwire::{client::Client, proto};

use crate::{
    Bench, COMPLETED_CAP,
    cluster::ClusterRig,
    load::{add_in_bulk, explain_node, job, wait_settled},
    probe::Role,
    procs::{CpuWindow, Server, WorkerProc, WorkerSpec},
    results::{Recorder, Target},
};

/// How far the sharded rows' summed Redis CPU may exceed the 1-master unsharded row's.
const SHARDED_REDIS_CPU_RATIO: f64 = 1.15;

/// The rows l runs (`--masters`, `--instances`, `--shards`).
#[derive(Clone, Debug)]
pub(crate) struct Scaling {
    pub masters: Vec<u32>,
    pub instances: Vec<u32>,
    pub shards: Vec<u32>,
}

/// One row of l.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Row {
    masters: u32,
    instances: u32,
    shards: u32,
    concurrency: u32,
    prefetch: u32,
}

impl Row {
    /// Its name in the table, e.g. `3 masters, 2 instances, 3 shards, c100`.
    fn label(&self) -> String {
        let plural = |n: u32, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let mut label = format!(
            "{}, {}, {}, c{}",
            plural(self.masters, "master", "masters"),
            plural(self.instances, "instance", "instances"),
            if self.shards == 1 { "unsharded".to_owned() } else { format!("{} shards", self.shards) },
            self.concurrency
        );
        if self.prefetch > 0 {
            label.push_str(&format!(", prefetch {}", self.prefetch));
        }
        label
    }

    /// The row its summed Redis CPU is judged against, when it is one the issue names: as many
    /// shards as masters (more than one), against 1 master and an unsharded queue.
    fn baseline(&self) -> Option<Row> {
        (self.masters > 1 && self.shards == self.masters).then_some(Row { masters: 1, shards: 1, ..*self })
    }
}

/// What a row's Redis nodes spent per job, summed: CPU µs, and thousands of instructions when
/// they ran under callgrind (`--callgrind redis`: the figure that does not depend on the load).
struct RedisUse {
    cpu: f64,
    instructions: Option<f64>,
}

/// Each worker's part of `concurrency` over `workers` workers (the first ones take the rest).
fn split(concurrency: u32, workers: u32) -> Vec<u32> {
    (0..workers).map(|i| concurrency / workers + u32::from(i < concurrency % workers)).collect()
}

impl Bench {
    pub(crate) async fn scaling(&self, out: &mut Recorder<'_>) -> anyhow::Result<()> {
        let concurrency = if self.concurrency.is_empty() { vec![100] } else { self.concurrency.clone() };
        let mut summed: Vec<(Row, RedisUse)> = Vec::new();
        for &masters in &self.scaling.masters {
            let cluster = ClusterRig::start(self.work.path(), usize::try_from(masters)?).await?;
            for &instances in &self.scaling.instances {
                for &shards in &self.scaling.shards {
                    for &concurrency in &concurrency {
                        let row = Row { masters, instances, shards, concurrency, prefetch: self.prefetch };
                        let redis = self.scaling_row(&cluster, row, out).await.with_context(|| row.label())?;
                        summed.push((row, redis));
                    }
                }
            }
        }
        for (row, redis) in &summed {
            let Some(baseline) = row.baseline() else { continue };
            let Some((_, base)) = summed.iter().find(|(r, _)| *r == baseline) else { continue };
            let name = format!("{} ÷ {}", row.label(), baseline.label());
            let target = Some(Target::AtMost(SHARDED_REDIS_CPU_RATIO));
            out.record(&format!("{name}: redis CPU"), "ratio", target, redis.cpu / base.cpu);
            if let (Some(mine), Some(theirs)) = (redis.instructions, base.instructions) {
                out.record(&format!("{name}: redis instructions"), "ratio", target, mine / theirs);
            }
        }
        Ok(())
    }

    /// Runs one row and records its figures; returns what its Redis nodes spent per job.
    async fn scaling_row(&self, cluster: &ClusterRig, row: Row, out: &mut Recorder<'_>) -> anyhow::Result<RedisUse> {
        let n = self.sizes.process;
        let queue = "bench-l";
        let label = row.label();
        ensure!(row.concurrency >= row.instances, "{label}: every instance's worker needs a concurrency of 1 or more");
        cluster.flushall().await?;
        let url = cluster.url()?;
        let mut servers: Vec<Server> = Vec::new();
        for _ in 0..row.instances {
            servers.push(self.server_over(&url, &[]).await?);
            if servers.len() == 1 && row.shards > 1 {
                let settings = proto::QueueSettings {
                    shards: Some(row.shards),
                    completed_max: Some(COMPLETED_CAP.div_ceil(u64::from(row.shards))),
                    ..Default::default()
                };
                let req =
                    proto::SetQueueSettingsRequest { queue: queue.into(), settings: Some(settings), clear: vec![] };
                servers[0].client().await?.raw().set_queue_settings(req).await?;
            }
        }
        let mut clients: Vec<Client> = Vec::new();
        for server in &servers {
            clients.push(server.client().await?);
        }
        // An equal part through each instance, the parts added at once.
        let part = n.div_ceil(u64::from(row.instances));
        futures::future::try_join_all(clients.iter().zip(0u64..).map(|(client, i)| {
            let first = i * part;
            add_in_bulk(client, part.min(n.saturating_sub(first)), move |j| job(queue, first + j))
        }))
        .await?;
        let mut workers: Vec<WorkerProc> = Vec::new();
        for (server, concurrency) in servers.iter().zip(split(row.concurrency, row.instances)) {
            let spec =
                WorkerSpec { queue, concurrency, expect: n, samples: false, fail_first: false, prefetch: row.prefetch };
            workers.push(self.worker(server, &spec).await?);
        }

        let mut roles: Vec<(Role, u32)> = cluster.pids()?.into_iter().map(|pid| (Role::Redis, pid)).collect();
        for server in &servers {
            roles.push((Role::Server, server.pid()?));
        }
        for worker in &workers {
            roles.push((Role::Worker, worker.pid()?));
        }
        let probes = self.probes.open(&roles).await?;
        for node in &cluster.nodes {
            node.reset_stats().await?;
        }
        let pids: Vec<u32> = roles.iter().map(|(_, pid)| *pid).collect();
        let cpu = CpuWindow::open(&pids)?;
        for worker in &mut workers {
            worker.go().await?;
        }
        let limit = Duration::from_secs(if self.probes.any() { 3600 } else { 600 });
        let handled = wait_handled(&mut workers, n, limit, &label).await?;
        let stats = wait_settled(&clients[0], queue).await?;
        let used = cpu.close(n)?;
        let counted = probes.close(n, &label, out).await?;
        ensure!(handled == n, "the workers handled {handled} jobs of {n}: some ran twice");
        ensure!(stats.dead == 0, "{} jobs went dead", stats.dead);
        // Each shard keeps its own completed jobs, up to its cap (its part of the server's).
        ensure!(stats.completed >= n.min(COMPLETED_CAP), "{} jobs counted as completed of {n}", stats.completed);

        let (masters, instances) = (cluster.nodes.len(), servers.len());
        let mut calls = Vec::with_capacity(masters);
        for (i, node) in cluster.nodes.iter().enumerate() {
            let name = format!("redis node {}", i + 1);
            calls.push(explain_node(node, &name, n, used.per_unit[i], used.system_per_unit[i]).await?.calls);
        }
        for worker in workers {
            worker.finish().await?;
        }
        for server in servers {
            server.stop().await;
        }

        let redis_cpu: f64 = used.per_unit[..masters].iter().sum();
        let server_cpu = &used.per_unit[masters..masters + instances];
        let worker_cpu: f64 = used.per_unit[masters + instances..].iter().sum();
        out.record(&format!("{label}: throughput"), "jobs/s", None, n as f64 / used.elapsed.as_secs_f64());
        out.record(&format!("{label}: redis CPU, all nodes"), "µs/job", None, redis_cpu);
        let redis_counted: Vec<f64> = counted.iter().filter(|(r, _)| *r == Role::Redis).map(|(_, k)| *k).collect();
        let instructions = (!redis_counted.is_empty()).then(|| redis_counted.iter().sum::<f64>());
        if let Some(k) = instructions.filter(|_| masters > 1) {
            out.record(&format!("{label}: redis instructions, all nodes"), "k/job", None, k);
        }
        if masters > 1 {
            for (i, (cpu, calls)) in used.per_unit.iter().zip(&calls).enumerate() {
                out.record(&format!("{label}: redis node {} CPU", i + 1), "µs/job", None, *cpu);
                out.record(&format!("{label}: redis node {} script calls", i + 1), "calls/job", None, *calls);
            }
        }
        out.record(&format!("{label}: redis script calls, all nodes"), "calls/job", None, calls.iter().sum());
        for (i, cpu) in server_cpu.iter().enumerate() {
            let name =
                if server_cpu.len() == 1 { "jobwire server".to_owned() } else { format!("jobwire server {}", i + 1) };
            out.record(&format!("{label}: {name} CPU"), "µs/job", None, *cpu);
        }
        out.record(&format!("{label}: worker process CPU, all"), "µs/job", None, worker_cpu);
        out.record(&format!("{label}: every process CPU"), "µs/job", None, used.per_unit.iter().sum());
        Ok(RedisUse { cpu: redis_cpu, instructions })
    }
}

/// Asks the workers how many jobs they handled until together they handled `n`; shows the
/// progress every two seconds; returns their sum.
async fn wait_handled(workers: &mut [WorkerProc], n: u64, limit: Duration, label: &str) -> anyhow::Result<u64> {
    let started = Instant::now();
    let mut shown = Instant::now();
    loop {
        let mut handled = 0;
        for worker in workers.iter_mut() {
            handled += worker.handled().await?;
        }
        if handled >= n {
            return Ok(handled);
        }
        ensure!(started.elapsed() < limit, "{label}: {handled} of {n} jobs handled within {limit:?}");
        if shown.elapsed() >= Duration::from_secs(2) {
            eprintln!("    {label}: {handled}/{n} jobs handled");
            shown = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_concurrency_is_split_over_the_workers() {
        assert_eq!(split(100, 1), [100]);
        assert_eq!(split(100, 2), [50, 50]);
        assert_eq!(split(11, 2), [6, 5]);
    }

    #[test]
    fn rows_are_named_and_judged_against_one_unsharded_master() {
        let row = Row { masters: 3, instances: 2, shards: 3, concurrency: 100, prefetch: 0 };
        assert_eq!(row.label(), "3 masters, 2 instances, 3 shards, c100");
        let base = row.baseline().expect("a row the issue names");
        assert_eq!(base.label(), "1 master, 2 instances, unsharded, c100");
        assert_eq!(Row { shards: 1, ..row }.baseline(), None);
        assert_eq!(
            Row { masters: 1, shards: 1, prefetch: 4, ..row }.label(),
            "1 master, 2 instances, unsharded, c100, prefetch 4"
        );
    }
}
