//! The one handle every part of the store holds: the pool, the client (for the connections
//! that must not be pooled), the key space, the function library and the retention settings.
//! Parts reach Redis only through it, so "which connection, which timeout, how a missing
//! library is reloaded, how a call is timed" is decided here once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bb8_redis::bb8;
use redis::{Cmd, RedisError, aio::MultiplexedConnection};

use super::{
    Result, StoreConfig, StoreError,
    args::{GlobalFunction, LeadingArgs, QueueFunction},
    keys::{KeySpace, QueueKeys},
    pool::{Manager, is_transport},
    scripts::Scripts,
};

pub(super) struct Backend {
    pool: bb8::Pool<Manager>,
    client: redis::Client,
    keys: KeySpace,
    scripts: Scripts,
    leading: LeadingArgs,
    timeout: Duration,
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
        let client = super::connect::client(&config.url, &config.access)?;
        let pool = Manager::new(&client, config.timeout)?.pool(config.pool_size);
        let keys = KeySpace::new(&config.prefix);
        Ok(Self {
            pool,
            client,
            leading: LeadingArgs::new(keys.wake_channel(), &config.retention),
            keys,
            scripts: Scripts::load(),
            timeout: config.timeout,
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

    /// A dedicated pub/sub connection (one per instance, shared by all its streams).
    pub(super) async fn pubsub(&self) -> Result<redis::aio::PubSub> {
        Ok(self.client.get_async_pubsub().await?)
    }

    /// A connection outside the pool whose responses may take `block` longer than a call's
    /// timeout (a blocking read would stall every request multiplexed on a pooled connection).
    pub(super) async fn blocking_connection(&self, block: Duration) -> Result<MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(block + self.timeout));
        Ok(self.client.get_multiplexed_async_connection_with_config(&config).await?)
    }

    /// Runs `f` on a pooled connection, marking the connection broken on transport errors.
    /// With metrics on, the call's round trip (not the wait for a pooled connection) goes to
    /// the Redis latency histogram; with them off, not even the clock is read.
    pub(super) async fn with_conn<T, F>(&self, f: F) -> Result<T>
    where
        F: AsyncFnOnce(&mut MultiplexedConnection) -> Result<T, RedisError>,
    {
        let mut conn = self.pool.get().await.map_err(|e| match e {
            bb8::RunError::User(e) => StoreError::from(e),
            bb8::RunError::TimedOut => StoreError::Unavailable("no redis connection within the timeout".into()),
        })?;
        let timed = crate::telemetry::redis_calls().map(|h| (h, std::time::Instant::now()));
        let result = f(&mut conn.inner).await;
        if let Some((histogram, started)) = timed {
            histogram.record(started.elapsed());
        }
        if result.as_ref().is_err_and(|e| is_transport(e) || e.is_unrecoverable_error()) {
            conn.broken = true;
        }
        result.map_err(StoreError::from)
    }

    /// Calls a queue function of the library: `FCALL name numkeys` (`FCALL_RO` for a read), the
    /// queue keys, the function's own keys, the leading arguments, then the function's own.
    pub(super) async fn call<F: QueueFunction>(&self, queue: &str, args: &F) -> Result<F::Reply> {
        let keys = self.queue_keys(queue);
        let own_keys = args.own_keys(&keys);
        let function = F::function(&self.scripts);
        let mut cmd = redis::cmd(function.command());
        cmd.arg(function.name()).arg(QueueKeys::COUNT + own_keys.len()).arg(keys.all());
        for key in &own_keys {
            cmd.arg(key);
        }
        self.leading.write(queue, &mut cmd);
        args.write_args(&mut cmd);
        self.run(&cmd).await
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

    /// Runs a library call, loading the library first when Redis does not have it.
    async fn run<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T> {
        self.with_conn(async |c| match cmd.query_async(c).await {
            Err(e) if e.detail().is_some_and(|d| d.starts_with("Function not found")) => {
                self.load_library(c).await?;
                cmd.query_async(c).await
            }
            result => result,
        })
        .await
    }

    pub(super) async fn load_library(&self, c: &mut MultiplexedConnection) -> Result<(), RedisError> {
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
