//! What jobwire instances share outside any queue: the instance registry (heartbeats, and which
//! instances stopped proving themselves alive), the registry of queues, each instance's list of
//! worker streams, and publishing notices (wake-ups are published by the queue functions
//! themselves, on each queue's shard channel). These keys are global, not on a queue's slot, so
//! nothing here is atomic with a queue's scripts — on purpose: they only feed listings and the
//! reaper. Each is one key, written by a single-key function, so on a Redis Cluster each lives
//! on the master of its own slot; the worker lists are read with one `MGET`, which the cluster
//! client splits by slot.
//!
//! A queue leaves the registry once it holds nothing (`retire_queue`, whose doc says why that
//! cannot lose a queue that has jobs): the queue function `queue_retire.lua` drops its leftovers,
//! then a plain SREM.
//!
//! What writes goes through the global functions of the library (`lua/heartbeat.lua`,
//! `workers_publish.lua`, `queues_register.lua`, and `queue_admit.lua`, which holds the
//! registry to `--max-queues`), registered `allow-oom`: a Redis out of memory refuses plain
//! writes (a SET, a ZADD), and an instance that could not heartbeat would take itself for cut
//! off. Removals (ZREM) and reads are plain commands, which Redis runs anyway.

use std::{collections::HashMap, sync::Arc, time::Duration};

use redis::{AsyncCommands, Cmd};

use super::{
    Result,
    args::{GlobalFunction, QueueFunction},
    backend::Backend,
    keys::QueueKeys,
    millis,
    scripts::{Function, Scripts},
    tombstones::{self, Family},
};

/// The most instances `Instances::live` reads: far more than a deployment runs.
const MAX_LIVE: isize = 256;

/// lua/heartbeat.lua: KEYS[1] the instance registry, ARGV[1] this instance's id, ARGV[2] lease
/// TTL ms.
struct HeartbeatArgs<'a> {
    registry: &'a str,
    instance: &'a str,
    ttl: Duration,
}

impl GlobalFunction for HeartbeatArgs<'_> {
    /// (now ms, instances whose heartbeat is older than the TTL).
    type Reply = (i64, Vec<String>);

    fn function(scripts: &Scripts) -> &Function {
        &scripts.heartbeat
    }

    fn keys(&self) -> Vec<&str> {
        vec![self.registry]
    }

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.instance).arg(millis(self.ttl));
    }
}

/// lua/workers_publish.lua: KEYS[1] the instance's worker list, ARGV[1] the list, ARGV[2] TTL ms.
struct WorkersArgs<'a> {
    key: &'a str,
    json: &'a str,
    ttl: Duration,
}

impl GlobalFunction for WorkersArgs<'_> {
    type Reply = i64;

    fn function(scripts: &Scripts) -> &Function {
        &scripts.workers_publish
    }

    fn keys(&self) -> Vec<&str> {
        vec![self.key]
    }

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.json).arg(millis(self.ttl));
    }
}

/// lua/queues_register.lua: KEYS[1] the queue registry, KEYS[2] its shards, ARGV[1] how many
/// of the queues are shards, then the queues (at least one), the shards last.
struct RegisterArgs<'a> {
    registry: &'a str,
    shards: &'a str,
    queues: &'a [&'a str],
}

impl GlobalFunction for RegisterArgs<'_> {
    /// How many were new.
    type Reply = i64;

    fn function(scripts: &Scripts) -> &Function {
        &scripts.queues_register
    }

    fn keys(&self) -> Vec<&str> {
        vec![self.registry, self.shards]
    }

    fn write_args(&self, cmd: &mut Cmd) {
        let (shards, queues): (Vec<&str>, Vec<&str>) = self.queues.iter().partition(|q| is_shard(q));
        cmd.arg(shards.len()).arg(queues).arg(shards);
    }
}

/// Whether `queue` names a shard of a sharded queue (`Q~n`; shard 0 is `Q` itself).
fn is_shard(queue: &str) -> bool {
    queue.contains(SHARD_SEPARATOR)
}

/// What separates a queue's name from its shard's number in the name of a shard (`Q~n`): outside
/// the queue-name alphabet, so no caller can name one.
pub const SHARD_SEPARATOR: char = '~';

/// lua/queue_admit.lua: KEYS[1] the queue registry, KEYS[2] its shards, ARGV[1] the cap,
/// ARGV[2] the queue, ARGV[3] whether it is a shard.
struct AdmitArgs<'a> {
    registry: &'a str,
    shards: &'a str,
    cap: u64,
    queue: &'a str,
}

impl GlobalFunction for AdmitArgs<'_> {
    /// 1: in the registry; 0: the registry is at the cap without it.
    type Reply = i64;

    fn function(scripts: &Scripts) -> &Function {
        &scripts.queue_admit
    }

    fn keys(&self) -> Vec<&str> {
        vec![self.registry, self.shards]
    }

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.cap).arg(self.queue).arg(u8::from(is_shard(self.queue)));
    }
}

/// lua/queue_retire.lua: the queue keys, KEYS[32] the schedules hash, KEYS[33] their fire state,
/// then the tombstone buckets
/// of `windows` that may still live.
struct RetireArgs<'a> {
    windows: &'a [Duration],
    now_ms: u64,
}

impl QueueFunction for RetireArgs<'_> {
    /// 1: the queue held nothing, its leftovers are gone; 0: it holds something.
    type Reply = i64;

    fn function(scripts: &Scripts) -> &Function {
        &scripts.queue_retire
    }

    fn own_keys(&self, keys: &QueueKeys) -> Vec<String> {
        let mut own = vec![keys.schedules(), keys.schedule_state()];
        for window in self.windows {
            // The buckets an add would name now: every one that has not expired, and the next.
            own.extend(Family::new(tombstones::width(*window), self.now_ms).keys(keys));
        }
        own
    }

    fn write_args(&self, _cmd: &mut Cmd) {}
}

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
        self.backend.call_global(&HeartbeatArgs { registry: &registry, instance, ttl }).await
    }

    /// Whether every master answers (one PING each; on one node, nothing to check beyond the
    /// heartbeat): on a cluster the heartbeat reaches only the registry's master, and a queue
    /// whose master is down, or failed over but not yet followed, cannot be served.
    pub async fn every_master_answers(&self) -> Result<()> {
        if self.backend.is_cluster() {
            self.backend.on_every_master(&redis::cmd("PING")).await?;
        }
        Ok(())
    }

    /// The instances that heartbeat within `within` of the latest heartbeat of any (the
    /// registry's own clock, so no instance's clock is compared with Redis's), at most
    /// `MAX_LIVE` of the latest, sorted by id.
    pub async fn live(&self, within: Duration) -> Result<Vec<String>> {
        let key = self.backend.keys().instances();
        let latest: Vec<(String, f64)> = self
            .backend
            .with_conn(async |c| {
                redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(MAX_LIVE - 1)
                    .arg("REV")
                    .arg("WITHSCORES")
                    .query_async(c)
                    .await
            })
            .await?;
        let newest = latest.first().map_or(0.0, |(_, ms)| *ms);
        let window = within.as_secs_f64() * 1000.0;
        let mut ids: Vec<String> =
            latest.into_iter().filter(|(_, ms)| newest - ms <= window).map(|(id, _)| id).collect();
        ids.sort_unstable();
        Ok(ids)
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
        self.register_queues(&[queue]).await
    }

    /// Puts `queue` in the registry of queues unless the registry already holds `cap` others;
    /// returns whether the queue is in it. The cap holds over every instance: one function on
    /// the registry key (and its set of shards, in the same slot) checks and adds. It counts
    /// queues, not shards: a shard (`Q~n`) gets in without the check, once the caller has
    /// admitted its queue `Q`.
    pub async fn admit_queue(&self, queue: &str, cap: u64) -> Result<bool> {
        let (registry, shards) = (self.backend.keys().queues(), self.backend.keys().queue_shards());
        let admitted =
            self.backend.call_global(&AdmitArgs { registry: &registry, shards: &shards, cap, queue }).await?;
        Ok(admitted == 1)
    }

    /// Puts `queues` (at least one) in the registry of queues.
    async fn register_queues(&self, queues: &[&str]) -> Result<()> {
        let (registry, shards) = (self.backend.keys().queues(), self.backend.keys().queue_shards());
        self.backend.call_global(&RegisterArgs { registry: &registry, shards: &shards, queues }).await?;
        Ok(())
    }

    /// One step of the SCAN over every queue's keys (on a cluster, master after master): registers the queues found in this page
    /// (registering is idempotent) and returns the cursor of the next step (0 once the scan
    /// went round) and the queues found. Each step costs one SCAN of `count` and, when it found
    /// any queue, one `queues_register` call; a full round takes as many steps as the keyspace
    /// has `count`s.
    pub async fn discover_queues(&self, cursor: u64, count: usize) -> Result<(u64, Vec<String>)> {
        let keys = self.backend.keys();
        let pattern = keys.all_queues_pattern();
        let (next, batch) = self.backend.scan_page(cursor, &pattern, count, None).await?;
        let mut queues: Vec<&str> = batch.iter().filter_map(|k| keys.queue_of(k)).collect();
        queues.sort_unstable();
        queues.dedup();
        if !queues.is_empty() {
            self.register_queues(&queues).await?;
        }
        Ok((next, queues.into_iter().map(str::to_owned).collect()))
    }

    /// Takes `queue` out of the registry of queues if it holds nothing (see `queue_retire.lua`;
    /// `windows` are the idempotency windows its adds use, whose tombstones keep it); returns
    /// whether it went. Then `--max-queues` counts it no more and ListQueues stops showing it.
    ///
    /// Three steps, as the queue's keys and the registry are on two slots of a Redis Cluster:
    /// (1) `queue_retire` on the queue's slot drops its leftovers if it holds nothing, (2) SREM
    /// from the registry, (3) if the queue has any key again, SADD it back. An add that raced
    /// the removal cannot leave jobs outside the registry: the add function marks the queue's
    /// meta hash (which step 1 deletes) and reports when the mark was missing, and its caller
    /// then registers the queue again (`Jobs::add_many`, `AddReport::registers_again`); every
    /// other write that makes a queue registers it after writing as well as before. So the first
    /// write after step 1 is followed by a registration; if that registration came before step
    /// 2, the write came before step 3, which sees the key it made and registers the queue back.
    /// Either way the last word on the registry is an SADD. A crash between steps 2 and 3 (or of
    /// a writer between its write and its registration) is what the heartbeat's discovery is for
    /// (`leases/liveness.rs`): it registers every queue with keys, within one round of its SCAN.
    pub async fn retire_queue(&self, queue: &str, windows: &[Duration]) -> Result<bool> {
        let now_ms = tombstones::local_now_ms();
        if self.backend.call(queue, &RetireArgs { windows, now_ms }).await? == 0 {
            return Ok(false);
        }
        let registry = self.backend.keys().queues();
        let _: i64 = self.backend.with_conn(async |c| c.srem(&registry, queue).await).await?;
        if is_shard(queue) {
            // Out of the set of shards too (no harm if this is lost: the count only counts the
            // shards that are in the registry).
            let shards = self.backend.keys().queue_shards();
            let _: i64 = self.backend.with_conn(async |c| c.srem(&shards, queue).await).await?;
        }
        let keys = self.backend.queue_keys(queue);
        let mut any: Vec<String> = keys.all().to_vec();
        any.extend(RetireArgs { windows, now_ms }.own_keys(&keys));
        let existing: i64 = self.backend.with_conn(async |c| c.exists(&any).await).await?;
        if existing > 0 {
            self.register_queue(queue).await?;
            return Ok(false);
        }
        Ok(true)
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
        self.backend.call_global(&WorkersArgs { key: &key, json: workers_json, ttl }).await?;
        Ok(())
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
