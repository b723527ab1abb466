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
//! master, and to a master that joins, while jobs flow; `tls.rs` runs jobwire over a TLS-only
//! cluster (`Cluster::start_tls`: no plain-text port, the cluster bus and replication over
//! TLS, client certificates required), its certificates made with the rcgen helpers of
//! `tls::pki`.

mod doctor;
mod failover;
mod lifecycle;
mod resharding;
mod schedules;
mod sharded;
mod tls;

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use jobwire::{
    proto,
    redis_server::{RedisConfig, RedisServer, TlsFiles},
    store::{RedisAccess, RedisIdentity},
};
use tonic::Code;

use crate::{
    harness::{Client, RedisBackend, Worker, eventually, info, job, wait_until},
    tls::pki::{Ca, Files, Leaf, arg},
};

/// How long a node may be unreachable before the cluster fails it over.
const NODE_TIMEOUT: Duration = Duration::from_millis(1000);

/// A local Redis Cluster (see the module doc).
pub struct Cluster {
    nodes: Vec<RedisServer>,
    /// The nodes' data dirs, dropped after them.
    dirs: Vec<tempfile::TempDir>,
    /// Replicas each master has once the cluster is healthy.
    replicas: usize,
    /// The certificates of a TLS-only cluster ([`Cluster::start_tls`]).
    tls: Option<ClusterTls>,
}

/// The certificates of a TLS-only cluster, all signed by one CA: every node's (a server's and a
/// client's at once: the cluster bus and replication connect with it), and a client's that
/// redis-cli and jobwire present (the nodes require one, `tls-auth-clients yes`).
pub struct ClusterTls {
    /// The temp dir of the PEM files, kept while the nodes run.
    _files: Files,
    ca: Ca,
    node: TlsFiles,
    /// The client certificate, and where its files are.
    client: Leaf,
    client_files: (PathBuf, PathBuf),
}

impl ClusterTls {
    fn new() -> Self {
        let files = Files::new();
        let ca = Ca::new("cluster CA");
        let (cert, key) = files.leaf("node", &ca.cluster_node(&["127.0.0.1"]));
        let node = TlsFiles { cert, key, ca: files.write("ca.pem", &ca.pem) };
        let client = ca.client("jobwire", "ops", vec![]);
        let client_files = files.leaf("client", &client);
        Self { _files: files, ca, node, client, client_files }
    }

    /// redis-cli's TLS flags for these certificates.
    fn cli_args(&self) -> Vec<String> {
        let mut args = vec!["--tls".to_owned(), "--cacert".to_owned(), arg(&self.node.ca)];
        let (cert, key) = &self.client_files;
        args.extend(["--cert".to_owned(), arg(cert), "--key".to_owned(), arg(key)]);
        args
    }

    /// Where the PEM files are (for jobwire's `--redis-ca`, `--redis-client-cert`,
    /// `--redis-client-key`): the CA, the client certificate, its key.
    pub fn client_files(&self) -> [String; 3] {
        [arg(&self.node.ca), arg(&self.client_files.0), arg(&self.client_files.1)]
    }
}

impl RedisBackend for Cluster {
    fn url(&self) -> String {
        let seeds: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", port(n))).collect();
        let scheme = if self.tls.is_some() { "rediss+cluster" } else { "redis+cluster" };
        format!("{scheme}://{}", seeds.join(","))
    }

    fn access(&self) -> RedisAccess {
        let Some(tls) = &self.tls else { return RedisAccess::default() };
        let (cert, key) = (tls.client.cert.clone().into_bytes(), tls.client.key.clone().into_bytes());
        RedisAccess {
            ca: Some(tls.ca.pem.clone().into_bytes()),
            client_identity: Some(RedisIdentity { cert, key }),
            password: None,
        }
    }
}

/// The port clients reach `node` on: its TLS port in a TLS-only cluster, else its TCP port.
fn port(node: &RedisServer) -> u16 {
    node.tls_port().or_else(|| node.tcp_port()).expect("a cluster node has a TCP or TLS port")
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

/// A `redis-cli` run that must succeed.
fn redis_cli(args: &[String]) {
    let out = Command::new("redis-cli").args(args).output().expect("redis-cli runs (package redis-tools)");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "redis-cli {}: {stdout}{stderr}", args.join(" "));
}

impl Cluster {
    /// Starts 6 nodes and makes them a cluster of 3 masters with a replica each.
    pub fn start() -> Self {
        Self::assemble(3, 1, None)
    }

    /// Starts a TLS-only cluster of `masters` masters with `replicas` replicas each: no plain
    /// TCP port on any node (`port 0`), the cluster bus and replication over TLS, and every
    /// client asked for a certificate of the cluster's CA.
    pub fn start_tls(masters: usize, replicas: usize) -> Self {
        Self::assemble(masters, replicas, Some(ClusterTls::new()))
    }

    fn assemble(masters: usize, replicas: usize, tls: Option<ClusterTls>) -> Self {
        let mut cluster = Self { nodes: Vec::new(), dirs: Vec::new(), replicas, tls };
        for _ in 0..masters * (1 + replicas) {
            cluster.start_node();
        }
        let mut args = cluster.cli_args();
        args.extend(["--cluster".to_owned(), "create".to_owned()]);
        args.extend(cluster.nodes.iter().map(|n| format!("127.0.0.1:{}", port(n))));
        args.extend(["--cluster-replicas".to_owned(), replicas.to_string(), "--cluster-yes".to_owned()]);
        redis_cli(&args);
        cluster.wait_healthy(Duration::from_secs(30));
        cluster
    }

    /// Starts one more node, not yet part of the cluster; its index.
    fn start_node(&mut self) -> usize {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = RedisConfig::new(dir.path()).cluster().cluster_node_timeout(NODE_TIMEOUT);
        if let Some(tls) = &self.tls {
            config = config.tls(tls.node.clone());
        }
        let node = RedisServer::start(config).expect("a cluster node starts");
        // A replica syncs at once rather than after Redis's 5 s diskless delay: one that has
        // not synced yet cannot take over.
        let _: () =
            on_node(&node, redis::cmd("CONFIG").arg("SET").arg("repl-diskless-sync-delay").arg(0)).expect("CONFIG SET");
        self.nodes.push(node);
        self.dirs.push(dir);
        self.nodes.len() - 1
    }

    /// redis-cli's flags for reaching the nodes (TLS ones in a TLS-only cluster).
    fn cli_args(&self) -> Vec<String> {
        self.tls.as_ref().map(ClusterTls::cli_args).unwrap_or_default()
    }

    /// The certificates of a TLS-only cluster.
    pub fn tls(&self) -> &ClusterTls {
        self.tls.as_ref().expect("a TLS-only cluster")
    }

    /// A new node joins as a master with no slot (`redis-cli --cluster add-node`), known to
    /// every node once this returns; its index. Async, so the servers of the test's runtime
    /// go on meanwhile.
    pub async fn add_master(&mut self) -> usize {
        let new = self.start_node();
        let mut args = self.cli_args();
        args.extend(["--cluster".to_owned(), "add-node".to_owned()]);
        args.push(format!("127.0.0.1:{}", port(&self.nodes[new])));
        args.push(format!("127.0.0.1:{}", port(&self.nodes[0])));
        let out = tokio::process::Command::new("redis-cli").args(&args).output().await.expect("redis-cli runs");
        assert!(out.status.success(), "redis-cli --cluster add-node: {}", String::from_utf8_lossy(&out.stdout));
        let live: Vec<&RedisServer> = self.nodes.iter().filter(|n| n.pid().is_some()).collect();
        let count = live.len().to_string();
        eventually(Duration::from_secs(30), "every node to know the new master", || {
            let known = live.iter().all(|n| {
                info_field_cluster(n, "cluster_known_nodes").as_deref() == Some(count.as_str())
                    && info_field_cluster(n, "cluster_state").as_deref() == Some("ok")
            });
            std::future::ready(known)
        })
        .await;
        new
    }

    /// The indexes of the nodes that are masters now.
    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i].pid().is_some()
                    && info_field(&self.nodes[i], "replication", "role").as_deref() == Some("master")
            })
            .collect()
    }

    /// Waits until every live node says `cluster_state:ok`, and (in a cluster with replicas)
    /// every master has a replica that finished its sync (`state=online`: only such a replica can take over).
    pub fn wait_healthy(&self, limit: Duration) {
        wait_until(limit, "the cluster to be ok, every master with a replica", || {
            let live: Vec<&RedisServer> = self.nodes.iter().filter(|n| n.pid().is_some()).collect();
            live.iter().all(|n| info_field_cluster(n, "cluster_state").as_deref() == Some("ok"))
                && live.iter().all(|n| {
                    self.replicas == 0
                        || info_field(n, "replication", "role").as_deref() != Some("master")
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

/// Completes `delivered` (streamed from instance B) through instance A, which takes the ack of
/// a lease B holds, then reads it through B: completed, with its result.
async fn complete_through_a_read_through_b(via_a: &mut Client, via_b: &mut Client, delivered: &proto::Job) {
    via_a
        .complete_job(proto::CompleteJobRequest {
            job_id: delivered.id.clone(),
            lease_token: delivered.lease_token.clone(),
            result: b"done".to_vec(),
            ..Default::default()
        })
        .await
        .expect("A takes the ack of a lease B holds");
    let done = info(via_b, &delivered.id).await;
    assert_eq!((done.state(), done.result.as_slice()), (proto::JobState::Completed, b"done".as_slice()));
}

/// Waits up to 10 s for an event that is `wanted` on an event stream (Subscribe or WatchJob,
/// whose messages carry it in `event`).
async fn saw<M>(
    stream: &mut tonic::Streaming<M>,
    event: impl Fn(&M) -> Option<&proto::JobEvent>,
    wanted: impl Fn(&proto::JobEvent) -> bool,
) -> bool {
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(m)) = stream.message().await {
            if event(&m).is_some_and(&wanted) {
                return true;
            }
        }
        false
    });
    found.await == Ok(true)
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
