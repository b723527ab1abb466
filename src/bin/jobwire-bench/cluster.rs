//! The rig of scenario l: a local Redis Cluster of N masters that the bench starts itself,
//! each node a `jobwire::redis_server` of its own (the launcher of the private Redis and of the
//! tests' clusters: no persistence, a unix socket for the bench's own reads, free TCP and
//! cluster bus ports), with the default `cluster-node-timeout`.
//!
//! No replicas: the bench measures the steady path, where a replica adds only the replication
//! stream its master sends it (and a process on the same two cores); failover and `WAIT` are
//! the tests' business (`tests/it/redis_cluster/`). A 1-master cluster is still cluster mode:
//! the server talks to it with its cluster client, so it prices the cluster client apart from
//! the spread.
//!
//! The slots are assigned as `redis-cli --cluster create` assigns them (N equal ranges, in the
//! nodes' order), by hand, because `redis-cli` refuses fewer than 3 masters: each node adds its
//! range and a config epoch of its own, the first node meets the others, and the rig is ready
//! when every node knows every other and says `cluster_state:ok`.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use jobwire::redis_server::RedisConfig;

use crate::procs::Redis;

/// Redis Cluster's slot count.
const SLOTS: u64 = 16_384;

/// A running cluster; every node is killed when it drops.
pub(crate) struct ClusterRig {
    pub nodes: Vec<Redis>,
}

impl ClusterRig {
    /// Starts `masters` nodes in directories of their own under `parent` and makes them one
    /// cluster.
    pub(crate) async fn start(parent: &std::path::Path, masters: usize) -> anyhow::Result<Self> {
        ensure!(masters >= 1, "a cluster needs a master");
        let dir = parent.join(format!("cluster-{}", ulid::Ulid::new().to_string().to_lowercase()));
        let mut nodes = Vec::with_capacity(masters);
        for i in 0..masters {
            nodes.push(Redis::launch(RedisConfig::new(dir.join(i.to_string())).cluster()).await?);
        }
        let rig = Self { nodes };
        for (i, (node, (first, last))) in rig.nodes.iter().zip(slot_ranges(masters)).enumerate() {
            rig.command(node, redis::cmd("CLUSTER").arg("ADDSLOTSRANGE").arg(first).arg(last)).await?;
            rig.command(node, redis::cmd("CLUSTER").arg("SET-CONFIG-EPOCH").arg(i + 1)).await?;
        }
        for node in &rig.nodes[1..] {
            let (port, bus) = ports(node)?;
            rig.command(&rig.nodes[0], redis::cmd("CLUSTER").arg("MEET").arg("127.0.0.1").arg(port).arg(bus)).await?;
        }
        rig.wait_ready(Duration::from_secs(30)).await?;
        Ok(rig)
    }

    /// `redis+cluster://` with every node as a seed.
    pub(crate) fn url(&self) -> anyhow::Result<String> {
        let seeds: Vec<String> =
            self.nodes.iter().map(|n| Ok(format!("127.0.0.1:{}", ports(n)?.0))).collect::<anyhow::Result<_>>()?;
        Ok(format!("redis+cluster://{}", seeds.join(",")))
    }

    /// Empties every node (the functions stay loaded, as after a FLUSHALL on one Redis).
    pub(crate) async fn flushall(&self) -> anyhow::Result<()> {
        for node in &self.nodes {
            node.flushall().await?;
        }
        Ok(())
    }

    pub(crate) fn pids(&self) -> anyhow::Result<Vec<u32>> {
        self.nodes.iter().map(Redis::pid).collect()
    }

    async fn command(&self, node: &Redis, cmd: &redis::Cmd) -> anyhow::Result<()> {
        let () = cmd.query_async(&mut node.conn.clone()).await.with_context(|| format!("{cmd:?}"))?;
        Ok(())
    }

    /// Waits until every node knows all of them and every slot is served.
    async fn wait_ready(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        let want = self.nodes.len().to_string();
        loop {
            let mut ready = true;
            for node in &self.nodes {
                let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(&mut node.conn.clone()).await?;
                let field = |name: &str| info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':'));
                ready &= field("cluster_state") == Some("ok")
                    && field("cluster_known_nodes") == Some(want.as_str())
                    && field("cluster_slots_ok") == Some("16384");
            }
            if ready {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "the cluster of {want} masters was not ready within {limit:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A node's TCP and cluster bus ports.
fn ports(node: &Redis) -> anyhow::Result<(u16, u16)> {
    let port = node.server.tcp_port().context("a cluster node without a TCP port")?;
    let bus = node.server.cluster_bus_port().context("a cluster node without a bus port")?;
    Ok((port, bus))
}

/// The slots of each of `masters` nodes as `redis-cli --cluster create` cuts them: node i
/// ends at the nearest whole slot to (i + 1) × 16,384 / N, the last one at 16,383.
fn slot_ranges(masters: usize) -> Vec<(u64, u64)> {
    let n = masters as u64;
    let mut first = 0;
    (0..n)
        .map(|i| {
            let last = if i + 1 == n { SLOTS - 1 } else { ((i + 1) * SLOTS + n / 2) / n - 1 };
            let range = (first, last);
            first = last + 1;
            range
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-made assembly is the one part the bench's own runs would not check before
    /// they measure: three nodes, each serving the range it was given, all seeds in the URL.
    #[tokio::test]
    async fn three_nodes_make_one_cluster_with_a_range_each() {
        let dir = crate::procs::WorkDir::create().expect("temp dir");
        let rig = ClusterRig::start(dir.path(), 3).await.expect("the cluster starts");
        // `<id> 127.0.0.1:<port>@<bus> <flags> <master> <ping> <pong> <epoch> <link> <slots>`
        let nodes: String =
            redis::cmd("CLUSTER").arg("NODES").query_async(&mut rig.nodes[2].conn.clone()).await.expect("NODES");
        let mut served: Vec<(String, String)> = nodes
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let port = fields[1].split(['@', ':']).nth(1).expect("an address").to_owned();
                (port, fields.get(8).copied().unwrap_or_default().to_owned())
            })
            .collect();
        served.sort();
        let mut want: Vec<(String, String)> = rig
            .nodes
            .iter()
            .zip(slot_ranges(3))
            .map(|(n, (first, last))| (ports(n).expect("ports").0.to_string(), format!("{first}-{last}")))
            .collect();
        want.sort();
        assert_eq!(served, want);
        assert_eq!(rig.url().expect("url").matches("127.0.0.1:").count(), 3);
    }

    #[test]
    fn slots_are_cut_as_redis_cli_cuts_them() {
        assert_eq!(slot_ranges(1), [(0, 16_383)]);
        // What `redis-cli --cluster create` prints for three masters.
        assert_eq!(slot_ranges(3), [(0, 5_460), (5_461, 10_922), (10_923, 16_383)]);
    }
}
