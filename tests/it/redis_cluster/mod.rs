//! jobwire over a Redis Cluster (`redis+cluster://`): a local cluster of 3 masters and 3
//! replicas, each node on free ports (its cluster bus port picked free as well, `cluster-port`),
//! `cluster-node-timeout` 1 s so a failover takes a few seconds, assembled with `redis-cli
//! --cluster create` and ready once every node says `cluster_state:ok` and every master has a
//! replica that finished its first sync. Everything is stopped on Drop.
//!
//! `lifecycle.rs` runs the core flows against it (lifecycle, delivery order, retries, sessions,
//! events, two instances), each ending with the invariant check (which reads the queue's keys on
//! the master of its slot); `sharded.rs` spreads one queue over three masters; `doctor.rs`
//! plants damage on every master for `jobwire doctor` to find and mend; `schedules.rs` fires
//! schedules on every master through two instances; `failover.rs` kills a master mid-run (the
//! serial group, as it kills processes); `resharding.rs` moves a busy queue's slot to another
//! master while jobs flow.

mod doctor;
mod failover;
mod lifecycle;
mod resharding;
mod schedules;
mod sharded;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use jobwire::redis_server::{RedisConfig, RedisServer};

use jobwire::proto;
use tonic::Code;

use crate::harness::{Client, RedisBackend, Worker, eventually, job, wait_until};

/// How long a node may be unreachable before the cluster fails it over.
const NODE_TIMEOUT: Duration = Duration::from_millis(1000);

/// A local Redis Cluster (see the module doc).
pub struct Cluster {
    nodes: Vec<RedisServer>,
    _dirs: Vec<tempfile::TempDir>,
}

impl RedisBackend for Cluster {
    fn url(&self) -> String {
        let seeds: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", port(n))).collect();
        format!("redis+cluster://{}", seeds.join(","))
    }
}

fn port(node: &RedisServer) -> u16 {
    node.tcp_port().expect("a cluster node has a TCP port")
}

/// One command on one node, over its unix socket (no cluster routing).
fn on_node<T: redis::FromRedisValue>(node: &RedisServer, cmd: &redis::Cmd) -> redis::RedisResult<T> {
    let mut conn = redis::Client::open(node.socket_url())?.get_connection()?;
    cmd.query(&mut conn)
}

/// The value of `field` in the `INFO` text of `node`.
fn info_field(node: &RedisServer, section: &str, field: &str) -> Option<String> {
    let info: String = on_node(node, redis::cmd("INFO").arg(section)).ok()?;
    info.lines().find_map(|l| l.strip_prefix(&format!("{field}:")).map(|v| v.trim().to_owned()))
}

impl Cluster {
    /// Starts 6 nodes and makes them a cluster of 3 masters with a replica each.
    pub fn start() -> Self {
        let dirs: Vec<tempfile::TempDir> = (0..6).map(|_| tempfile::tempdir().expect("temp dir")).collect();
        let nodes: Vec<RedisServer> = dirs
            .iter()
            .map(|d| {
                RedisServer::start(RedisConfig::new(d.path()).cluster().cluster_node_timeout(NODE_TIMEOUT))
                    .expect("a cluster node starts")
            })
            .collect();
        for node in &nodes {
            // A replica syncs at once rather than after Redis's 5 s diskless delay: one that has
            // not synced yet cannot take over.
            let _: () = on_node(node, redis::cmd("CONFIG").arg("SET").arg("repl-diskless-sync-delay").arg(0))
                .expect("CONFIG SET");
        }
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", port(n))).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli runs (package redis-tools)");
        assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
        let cluster = Self { nodes, _dirs: dirs };
        cluster.wait_healthy(Duration::from_secs(30));
        cluster
    }

    /// Waits until every live node says `cluster_state:ok`, and every master has a replica that
    /// finished its sync (`state=online`: only such a replica can take over).
    pub fn wait_healthy(&self, limit: Duration) {
        wait_until(limit, "the cluster to be ok, every master with a replica", || {
            let live: Vec<&RedisServer> = self.nodes.iter().filter(|n| n.pid().is_some()).collect();
            live.iter().all(|n| info_field_cluster(n, "cluster_state").as_deref() == Some("ok"))
                && live.iter().all(|n| {
                    info_field(n, "replication", "role").as_deref() != Some("master")
                        || info_field(n, "replication", "slave0").is_some_and(|r| r.contains("state=online"))
                })
        });
    }

    /// The index of the node that is master of `key`'s slot now.
    pub fn master_of(&self, key: &str) -> usize {
        let mut found = None;
        wait_until(Duration::from_secs(10), "a master to own the slot", || {
            found = self.nodes.iter().position(|n| {
                n.pid().is_some()
                    && info_field(n, "replication", "role").as_deref() == Some("master")
                    && on_node::<redis::Value>(n, redis::cmd("EXISTS").arg(key)).is_ok()
            });
            found.is_some()
        });
        found.expect("a master owns the slot")
    }

    /// Waits until a replica took over every dead master: every live node says
    /// `cluster_state:ok` and three of them are masters. Async, so the servers of the test's
    /// runtime go on meanwhile.
    pub async fn wait_failed_over(&self, limit: Duration) {
        eventually(limit, "a replica to take over", || {
            let live: Vec<&RedisServer> = self.nodes.iter().filter(|n| n.pid().is_some()).collect();
            let over = live.iter().all(|n| info_field_cluster(n, "cluster_state").as_deref() == Some("ok"))
                && live.iter().filter(|n| info_field(n, "replication", "role").as_deref() == Some("master")).count()
                    == 3;
            std::future::ready(over)
        })
        .await;
    }

    /// Starts node `index` again (after its replica took over: it rejoins as that one's
    /// replica, with nothing of its own, as it persists nothing).
    pub fn restart(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        node.restart().expect("the node restarts");
        let _: () =
            on_node(node, redis::cmd("CONFIG").arg("SET").arg("repl-diskless-sync-delay").arg(0)).expect("CONFIG SET");
    }

    /// Kills node `index` (SIGKILL).
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].kill();
    }
}

/// A field of `CLUSTER INFO` on `node`.
fn info_field_cluster(node: &RedisServer, field: &str) -> Option<String> {
    let info: String = on_node(node, redis::cmd("CLUSTER").arg("INFO")).ok()?;
    info.lines().find_map(|l| l.strip_prefix(&format!("{field}:")).map(|v| v.trim().to_owned()))
}

/// Adds one job, retrying while the cluster fails over or moves a slot (its idempotency key
/// makes the retries one job); the id once acknowledged.
async fn add_through_the_gap(client: &mut Client, queue: &str, key: String) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let req = proto::AddJobRequest {
            idempotency_key: key.clone(),
            idempotency_key_generated: true,
            ..job(queue, "t", key.as_bytes())
        };
        match client.add_job(req).await {
            Ok(r) => return r.into_inner().job_id,
            Err(e) if e.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("add {key}: {e}"),
        }
    }
}

/// Completes `j`, retrying UNAVAILABLE; a lease found gone (FAILED_PRECONDITION) is left, as
/// its job comes again.
async fn complete_through_the_gap(worker: &mut Worker, j: &proto::Job) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match worker.complete(j, b"").await {
            Ok(()) => return,
            Err(e) if e.code() == Code::FailedPrecondition => return,
            Err(e) if e.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("complete {}: {e}", j.id),
        }
    }
}
