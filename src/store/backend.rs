//! The one handle every part of the store holds: the link to Redis (one node's pool or a
//! cluster's connection, `link.rs`), the key space, the function library and the retention
//! settings. Parts reach Redis only through it, so "which connection, which timeout, how a
//! missing library is reloaded, how a call is timed" is decided here once, and so are the few
//! operations a cluster runs node by node: a SCAN (per master, or on the master of one
//! queue's slot), a read of every master (`INFO memory`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bb8_redis::bb8;
use redis::{
    Cmd, PushInfo, RedisError, Value,
    cluster_routing::{MultipleNodeRoutingInfo, Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr},
};
use tokio::sync::mpsc;

use super::{
    Result, StoreConfig, StoreError,
    args::{GlobalFunction, LeadingArgs, QueueFunction},
    connection::Connection,
    keys::{KeySpace, QueueKeys},
    link::{Calls, Link},
    millis,
    pool::is_transport,
    scripts::Scripts,
};

pub(super) struct Backend {
    link: Link,
    keys: KeySpace,
    scripts: Scripts,
    leading: LeadingArgs,
    timeout: Duration,
    /// `WAIT` for this many replicas after the calls that must survive a failover (0: none).
    wait_replicas: u32,
    /// The key names of the queues in use, formatted once: every script call passes 31 of
    /// them (some 2 KB a queue). Bounded: see [`KeysCache`].
    queue_keys: Mutex<KeysCache>,
}

/// The key names of recently used queues. Once it holds `high_water` queues, the ones no call
/// holds right now go, and the mark moves to twice what is left (at least [`KEYS_CACHED`]): an
/// idle queue's names do not stay for good, a busy instance formats a queue's names again at
/// most once per round of evictions, and the sweep costs O(1) per insert, amortized.
struct KeysCache {
    queues: HashMap<String, Arc<QueueKeys>>,
    high_water: usize,
}

/// Queues whose key names are kept before idle ones are evicted.
const KEYS_CACHED: usize = 1_024;

/// Where a cluster-wide SCAN cursor keeps the index of its master, above the node's own cursor.
const SCAN_NODE_SHIFT: u32 = 48;
const SCAN_CURSOR_MASK: u64 = (1 << SCAN_NODE_SHIFT) - 1;

/// Whether Redis answered that the called function is not loaded there (nothing ran).
pub(super) fn is_function_missing(e: &RedisError) -> bool {
    e.detail().is_some_and(|d| d.starts_with("Function not found"))
}

/// `call`, its round trip recorded in the Redis latency histogram when metrics are on.
async fn timed<T>(call: impl Future<Output = Result<T, RedisError>>) -> Result<T, RedisError> {
    let timed = crate::telemetry::redis_calls().map(|h| (h, std::time::Instant::now()));
    let result = call.await;
    if let Some((histogram, started)) = timed {
        histogram.record(started.elapsed());
    }
    result
}

impl Default for KeysCache {
    fn default() -> Self {
        Self { queues: HashMap::new(), high_water: KEYS_CACHED }
    }
}

impl KeysCache {
    /// The key names of `queue`, formatted by `make` unless cached.
    fn get(&mut self, queue: &str, make: impl FnOnce() -> QueueKeys) -> Arc<QueueKeys> {
        if let Some(keys) = self.queues.get(queue) {
            return keys.clone();
        }
        if self.queues.len() >= self.high_water {
            // Only this map holds them: no call of that queue is running.
            self.queues.retain(|_, keys| Arc::strong_count(keys) > 1);
            self.high_water = KEYS_CACHED.max(self.queues.len() * 2);
        }
        let keys = Arc::new(make());
        self.queues.insert(queue.to_owned(), keys.clone());
        keys
    }
}

impl Backend {
    /// Builds the pool without waiting for Redis: a server must start (and report NOT_SERVING)
    /// while Redis is still down.
    pub(super) fn new(config: &StoreConfig) -> Result<Self> {
        let keys = KeySpace::new(&config.prefix);
        Ok(Self {
            link: Link::new(config)?,
            leading: LeadingArgs::new(&config.retention),
            keys,
            scripts: Scripts::load(),
            timeout: config.timeout,
            wait_replicas: config.wait_replicas,
            queue_keys: Mutex::default(),
        })
    }

    pub(super) fn keys(&self) -> &KeySpace {
        &self.keys
    }

    pub(super) fn queue_keys(&self, queue: &str) -> Arc<QueueKeys> {
        let mut cache = self.queue_keys.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(queue, || self.keys.queue(queue))
    }

    /// Drops the key names no call holds now; returns how many stay.
    pub(super) fn forget_unused_key_names(&self) -> usize {
        let mut cache = self.queue_keys.lock().unwrap_or_else(|e| e.into_inner());
        cache.queues.retain(|_, keys| Arc::strong_count(keys) > 1);
        cache.high_water = KEYS_CACHED;
        cache.queues.len()
    }

    /// Whether Redis is a cluster (for what differs: the scan of every master, the memory of
    /// every master).
    pub(super) fn is_cluster(&self) -> bool {
        self.link.is_cluster()
    }

    /// A RESP3 connection for subscriptions, and the receiver of its pushes (see `link.rs`).
    pub(super) async fn subscriber(&self) -> Result<(Connection, mpsc::UnboundedReceiver<PushInfo>)> {
        self.link.subscriber(self.timeout).await
    }

    /// A connection outside the pool for blocking reads of `key`, whose responses may take
    /// `block` longer than a call's timeout (a blocking read would stall every request
    /// multiplexed on a pooled connection); on a cluster, to the master of `key`'s slot alone.
    pub(super) async fn blocking_connection(&self, key: &str, block: Duration) -> Result<Connection> {
        self.link.blocking_connection(key, block, self.timeout).await
    }

    /// Runs `f` on a connection: a pooled one, marked broken on transport errors, or a handle
    /// of the cluster connection, which heals by itself. With metrics on, the call's round trip
    /// (not the wait for a pooled connection) goes to the Redis latency histogram; with them
    /// off, not even the clock is read.
    pub(super) async fn with_conn<T, F>(&self, f: F) -> Result<T>
    where
        F: AsyncFnOnce(&mut Connection) -> Result<T, RedisError>,
    {
        let pool = match self.link.calls() {
            Calls::Pool(pool) => pool,
            Calls::Cluster(cluster) => {
                let mut conn = Connection::Cluster(cluster);
                let result = timed(f(&mut conn)).await;
                let lost = |e: &RedisError| is_transport(e) || e.kind() == redis::ErrorKind::ClusterConnectionNotFound;
                if result.as_ref().is_err_and(lost) {
                    self.link.renew_after_failure();
                }
                return result.map_err(|e| self.link.call_error(e));
            }
        };
        let mut conn = pool.get().await.map_err(|e| match e {
            bb8::RunError::User(e) => StoreError::from(e),
            bb8::RunError::TimedOut => StoreError::Unavailable("no redis connection within the timeout".into()),
        })?;
        let result = timed(f(&mut conn.inner)).await;
        if result.as_ref().is_err_and(|e| is_transport(e) || e.is_unrecoverable_error()) {
            conn.broken = true;
        }
        result.map_err(StoreError::from)
    }

    /// Runs `cmd` on every master of a cluster (each answer in the order of the masters'
    /// addresses), or on the one node.
    pub(super) async fn on_every_master(&self, cmd: &Cmd) -> Result<Vec<Value>> {
        if !self.is_cluster() {
            return Ok(vec![self.with_conn(async |c| cmd.query_async(c).await).await?]);
        }
        let mut answers = self.by_master(cmd.clone()).await?;
        answers.sort_by(|a, b| a.0.cmp(&b.0));
        answers.into_iter().map(|(_, value)| value.extract_error().map_err(StoreError::from)).collect()
    }

    /// `cmd`'s answer of each master of the cluster, by the master's address.
    async fn by_master(&self, cmd: Cmd) -> Result<Vec<(String, Value)>> {
        let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        let value = self
            .with_conn(async |c| match c {
                Connection::Cluster(cluster) => cluster.route_command(cmd, routing).await,
                Connection::Node(node) => cmd.query_async(node).await,
            })
            .await?;
        let Value::Map(answers) = value else {
            return Err(StoreError::Corrupt("a command on every master did not answer by node".into()));
        };
        answers.into_iter().map(|(address, value)| Ok((redis::from_redis_value::<String>(address)?, value))).collect()
    }

    /// One page of a SCAN for `pattern`, from `cursor` (0 to start; the answer's is 0 once
    /// the scan went round). On a cluster, with `slot_of` (a key), on the master of that key's
    /// slot alone (one queue's keys all live there); without, master after master, the cursor
    /// carrying which master (in the order of their addresses) in its top 16 bits.
    pub(super) async fn scan_page(
        &self,
        cursor: u64,
        pattern: &str,
        count: usize,
        slot_of: Option<&str>,
    ) -> Result<(u64, Vec<String>)> {
        let scan = |cursor: u64| {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(count);
            cmd
        };
        if !self.is_cluster() {
            let cmd = scan(cursor);
            return self.with_conn(async |c| cmd.query_async(c).await).await;
        }
        if let Some(key) = slot_of {
            let routing =
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master)));
            let value = self.route(scan(cursor), routing).await?;
            return Ok(redis::from_redis_value(value)?);
        }
        let mut masters: Vec<String> = self.by_master(redis::cmd("PING")).await?.into_iter().map(|(a, _)| a).collect();
        masters.sort();
        let node = usize::try_from(cursor >> SCAN_NODE_SHIFT).unwrap_or(usize::MAX);
        let Some(address) = masters.get(node) else {
            return Ok((0, Vec::new()));
        };
        let (host, port) = address
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host.to_owned(), port.parse::<u16>().ok()?)))
            .ok_or_else(|| StoreError::Corrupt(format!("a cluster node address without a port: {address}")))?;
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
        let value = self.route(scan(cursor & SCAN_CURSOR_MASK), routing).await?;
        let (next, keys): (u64, Vec<String>) = redis::from_redis_value(value)?;
        if next > SCAN_CURSOR_MASK {
            return Err(StoreError::Corrupt(format!("a SCAN cursor past 48 bits: {next}")));
        }
        let node = u64::try_from(node).unwrap_or(u64::MAX);
        let next = match next {
            0 if node + 1 < u64::try_from(masters.len()).unwrap_or(u64::MAX) => (node + 1) << SCAN_NODE_SHIFT,
            0 => 0,
            next => (node << SCAN_NODE_SHIFT) | next,
        };
        Ok((next, keys))
    }

    /// Runs `cmd` on the cluster node `routing` picks.
    async fn route(&self, cmd: Cmd, routing: RoutingInfo) -> Result<Value> {
        self.with_conn(async |c| match c {
            Connection::Cluster(cluster) => cluster.route_command(cmd, routing).await,
            Connection::Node(node) => cmd.query_async(node).await,
        })
        .await
    }

    /// Calls a queue function of the library: `FCALL name numkeys` (`FCALL_RO` for a read), the
    /// queue keys, the function's own keys, the leading arguments, then the function's own.
    pub(super) async fn call<F: QueueFunction>(&self, queue: &str, args: &F) -> Result<F::Reply> {
        self.run(&self.command(queue, args)).await
    }

    /// Calls a queue function as `call` does, then, with `wait_replicas` set, `WAIT`s for that
    /// many replicas on the same connection (one pipeline, so on a cluster the master of the
    /// queue's slot): `WAIT` covers the writes made on its own connection, the function's
    /// among them. Fewer replicas within half the call timeout is `Unavailable`: the write was
    /// made on the master but may not survive its failover (an add retried with its
    /// idempotency key is not added twice).
    pub(super) async fn call_replicated<F: QueueFunction>(&self, queue: &str, args: &F) -> Result<F::Reply> {
        if self.wait_replicas == 0 {
            return self.call(queue, args).await;
        }
        let wait_ms = millis(self.timeout / 2);
        let mut pipe = redis::pipe();
        pipe.add_command(self.command(queue, args)).cmd("WAIT").arg(self.wait_replicas).arg(wait_ms);
        let (reply, replicas): (F::Reply, u32) = self
            .with_conn(async |c| match pipe.query_async(c).await {
                Err(e) if is_function_missing(&e) => {
                    self.load_library(c).await?;
                    pipe.query_async(c).await
                }
                result => result,
            })
            .await?;
        if replicas < self.wait_replicas {
            return Err(StoreError::Unavailable(format!(
                "written on the master, but {replicas} of {} replicas confirmed it within {wait_ms} ms",
                self.wait_replicas
            )));
        }
        Ok(reply)
    }

    /// The `FCALL` of a queue function (see `call`).
    fn command<F: QueueFunction>(&self, queue: &str, args: &F) -> Cmd {
        let keys = self.queue_keys(queue);
        let own_keys = args.own_keys(&keys);
        let function = F::function(&self.scripts);
        let mut cmd = redis::cmd(function.command());
        cmd.arg(function.name()).arg(QueueKeys::COUNT + own_keys.len()).arg(keys.all());
        for key in &own_keys {
            cmd.arg(key);
        }
        self.leading.write(queue, keys.wake_channel(), &mut cmd);
        args.write_args(&mut cmd);
        cmd
    }

    /// Calls a global function of the library: `FCALL name numkeys`, its keys, its arguments.
    pub(super) async fn call_global<F: GlobalFunction>(&self, args: &F) -> Result<F::Reply> {
        let function = F::function(&self.scripts);
        let keys = args.keys();
        let mut cmd = redis::cmd(function.command());
        cmd.arg(function.name()).arg(keys.len()).arg(keys);
        args.write_args(&mut cmd);
        self.run(&cmd).await
    }

    /// Runs a library call, loading the library first when Redis does not have it. On a
    /// cluster the answer comes from the master of the call's slot: one that joined, or lost
    /// the library, gets it then (`FUNCTION LOAD` goes to every master of the slot map). A
    /// master that a slot is moving to, asked over (`ASK`) before the slot map names it, is
    /// out of that reach: the call still finding no function answers `Unavailable` (nothing
    /// ran), and a retry once the move is done finds the master in the map.
    async fn run<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T> {
        self.with_conn(async |c| match cmd.query_async(c).await {
            Err(e) if is_function_missing(&e) => {
                self.load_library(c).await?;
                cmd.query_async(c).await
            }
            result => result,
        })
        .await
    }

    /// Loads the library unless Redis has it already (one of its name is this one: see
    /// `Scripts::library_name`). Asking first lets an instance start beside a Redis at its
    /// `maxmemory`, which refuses `FUNCTION LOAD` (a write) but answers `FUNCTION LIST`. A
    /// refused `FUNCTION LIST` (an ACL user set up by an earlier release's rules, which lack it)
    /// loads as before. On a cluster the answer may come from one master only; one that lacks
    /// the library gets it at the first call that finds no function (`run`).
    pub(super) async fn ensure_library(&self, c: &mut Connection) -> Result<(), RedisError> {
        let found: Result<Vec<redis::Value>, RedisError> =
            redis::cmd("FUNCTION").arg("LIST").arg("LIBRARYNAME").arg(&self.scripts.library_name).query_async(c).await;
        match found {
            Ok(libraries) if !libraries.is_empty() => Ok(()),
            _ => self.load_library(c).await,
        }
    }

    /// Loads the library (on a cluster, on every master: the cluster client sends
    /// `FUNCTION LOAD` to each).
    pub(super) async fn load_library(&self, c: &mut Connection) -> Result<(), RedisError> {
        redis::cmd("FUNCTION").arg("LOAD").arg("REPLACE").arg(&self.scripts.library).query_async(c).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_names_of_idle_queues_go_once_the_cache_is_full_and_those_in_use_stay() {
        let space = KeySpace::new("t");
        let mut cache = KeysCache::default();
        let busy = cache.get("busy", || space.queue("busy"));
        for i in 1..KEYS_CACHED {
            cache.get(&format!("idle-{i}"), || space.queue(&format!("idle-{i}")));
        }
        assert_eq!(cache.queues.len(), KEYS_CACHED);
        cache.get("new", || space.queue("new"));
        assert_eq!(cache.queues.len(), 2, "the idle queues went; the busy one and the new one stay");
        assert!(Arc::ptr_eq(&busy, &cache.get("busy", || space.queue("busy"))), "a queue in use keeps its names");
    }
}
