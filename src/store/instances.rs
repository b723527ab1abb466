//! What jobwire instances share outside any queue: the instance registry (heartbeats, and which
//! instances stopped proving themselves alive), the registry of queues, each instance's list of
//! worker streams, and publishing notices and wake-ups. These keys are global, not on a queue's
//! slot, so nothing here is atomic with a queue's scripts — on purpose: they only feed
//! listings, the reaper and wake-ups.

use std::{collections::HashMap, sync::Arc, time::Duration};

use redis::AsyncCommands;

use super::{Result, args::HeartbeatArgs, backend::Backend, millis};

/// The instance and queue registries (see the module doc).
#[derive(Clone)]
pub struct Instances {
    backend: Arc<Backend>,
}

impl Instances {
    pub(super) fn new(backend: Arc<Backend>) -> Self {
        Self { backend }
    }

    /// Records this instance's heartbeat; returns Redis's clock (epoch ms) and the instances
    /// whose heartbeat is older than `ttl` (at most 100 per call).
    pub async fn heartbeat(&self, instance: &str, ttl: Duration) -> Result<(i64, Vec<String>)> {
        let registry = self.backend.keys().instances();
        let args = HeartbeatArgs { registry: &registry, instance, ttl };
        let invocation = args.invocation(&self.backend.scripts().heartbeat);
        self.backend.with_conn(async |c| invocation.invoke_async(c).await).await
    }

    /// Drops instances from the registry once their leases have been reaped everywhere.
    pub async fn forget_instances(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let key = self.backend.keys().instances();
        self.backend.with_conn(async |c| c.zrem(&key, ids).await).await
    }

    /// Adds `queue` to the registry of known queues. Not atomic with the add on purpose: the
    /// registry is global (not on the queue's slot, so no queue script may touch it under
    /// Redis Cluster) and only feeds listings, the reaper and the sweep; `discover_queues`
    /// finds the queues a crash left out of it.
    pub async fn register_queue(&self, queue: &str) -> Result<()> {
        let key = self.backend.keys().queues();
        self.backend.with_conn(async |c| c.sadd(&key, queue).await).await
    }

    /// One step of the SCAN over every queue's keys: registers the queues found in this page
    /// (registering is idempotent) and returns the cursor of the next step (0 once the scan
    /// went round) and the queues found. Each step costs one SCAN of `count` and, when it found
    /// any queue, one SADD; a full round takes as many steps as the keyspace has `count`s.
    pub async fn discover_queues(&self, cursor: u64, count: usize) -> Result<(u64, Vec<String>)> {
        let keys = self.backend.keys();
        let (pattern, registry) = (keys.all_queues_pattern(), keys.queues());
        self.backend
            .with_conn(async |c| {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(count)
                    .query_async(c)
                    .await?;
                let mut queues: Vec<String> =
                    batch.iter().filter_map(|k| keys.queue_of(k)).map(str::to_owned).collect();
                queues.sort();
                queues.dedup();
                if !queues.is_empty() {
                    let _: () = c.sadd(&registry, &queues).await?;
                }
                Ok((next, queues))
            })
            .await
    }

    /// Every queue ever added to, sorted by name.
    pub async fn queues(&self) -> Result<Vec<String>> {
        let key = self.backend.keys().queues();
        let mut names: Vec<String> = self
            .backend
            .with_conn(async |c| {
                let mut cursor = 0u64;
                let mut names = Vec::new();
                loop {
                    let (next, batch): (u64, Vec<String>) =
                        redis::cmd("SSCAN").arg(&key).arg(cursor).arg("COUNT").arg(500).query_async(c).await?;
                    names.extend(batch);
                    if next == 0 {
                        return Ok(names);
                    }
                    cursor = next;
                }
            })
            .await?;
        names.sort();
        Ok(names)
    }

    /// Publishes this instance's worker streams (JSON), kept for `ttl`.
    pub async fn set_workers(&self, instance: &str, workers_json: &str, ttl: Duration) -> Result<()> {
        let key = self.backend.keys().workers(instance);
        self.backend.with_conn(async |c| c.pset_ex(&key, workers_json, millis(ttl)).await).await
    }

    /// The worker lists (JSON) of every registered instance, by instance id.
    pub async fn workers(&self) -> Result<HashMap<String, String>> {
        let instances_key = self.backend.keys().instances();
        let instances: Vec<String> = self.backend.with_conn(async |c| c.zrange(&instances_key, 0, -1).await).await?;
        if instances.is_empty() {
            return Ok(HashMap::new());
        }
        let keys: Vec<String> = instances.iter().map(|i| self.backend.keys().workers(i)).collect();
        let lists: Vec<Option<String>> =
            self.backend.with_conn(async |c| redis::cmd("MGET").arg(&keys).query_async(c).await).await?;
        Ok(instances.into_iter().zip(lists).filter_map(|(i, l)| l.map(|l| (i, l))).collect())
    }

    /// Publishes `message` on a pub/sub channel (a wake-up or an instance's notices, named by
    /// [`KeySpace`](super::KeySpace)); fire and forget: nobody listening is not an error.
    pub async fn publish(&self, channel: &str, message: &str) -> Result<()> {
        self.backend.with_conn(async |c| c.publish(channel, message).await).await
    }
}
