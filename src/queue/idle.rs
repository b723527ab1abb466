//! Idle queues: what this instance keeps in memory per queue goes once the queue is idle here,
//! so a client that uses a million queue names once each does not grow the server for good.
//!
//! A queue is in use while a call that names it runs (`QueueUse::enter`, held by the adds, the
//! acks and the cancels, the calls that record its metrics and fill its caches), while a worker
//! stream here serves it or while a WatchJob or Subscribe here follows it; it is idle once none
//! of that has happened for `--queue-idle-after`. Every half of that period the sweep drops, for
//! the idle queues: its metric series (`telemetry::forget_idle_queue`, so `/metrics` stops
//! listing it; kept while the gauges say it holds jobs, which alerts watch), the registry's
//! memory that it is registered, its cached settings, its key names in the store, and the
//! ended tailers of the events room. The dispatcher of a queue goes with its last stream
//! (`leases/dispatch.rs`) and a coalescer's lane with its last pending call (`coalesce.rs`), so
//! those need no sweep. Each of these comes back on the queue's next use, read again from
//! Redis (where every figure lives), so a queue that comes back answers as it would have.
//!
//! The sweep then takes the queues that hold nothing out of the registry of queues (see
//! `registry.rs`), the ones this instance does not use: one check per registered queue every
//! half period.
//!
//! Owns the map of queues in use and the sweep's task. Calls `registry`, `overrides` and
//! `events` (`forget_unless`, `followed_queues`), `leases` (`served_queues`), the store
//! (`forget_unused_key_names`), `telemetry` and `background`.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use foldhash::HashMap;

use super::{
    background::Background, events::Events, leases::Leases, overrides::Overrides, registry::QueueRegistry, shards,
};
use crate::{store::Store, telemetry};

/// The queues used lately on this instance. A shard's use is its queue's (`shards::logical`):
/// the queue's metric series and cached settings serve every shard, so they go only once no
/// shard of it is in use.
#[derive(Default)]
pub(super) struct QueueUse {
    /// By queue name, shared with the `InUse` of its running calls: entering a call allocates
    /// nothing once the queue is known (every ack of a busy queue enters one).
    queues: Mutex<HashMap<Arc<str>, Use>>,
}

struct Use {
    /// Calls naming it that are running.
    open: u32,
    /// When the last of them ended (or the first began); read only while none runs.
    last: Instant,
}

/// A call naming `queue` is running: the queue stays in use until it is dropped.
pub(super) struct InUse {
    uses: Arc<QueueUse>,
    queue: Arc<str>,
}

impl Drop for InUse {
    fn drop(&mut self) {
        if let Some(u) = self.uses.lock().get_mut(&self.queue) {
            u.open = u.open.saturating_sub(1);
            if u.open == 0 {
                u.last = Instant::now();
            }
        }
    }
}

impl QueueUse {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Use>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks `queue` in use until the answer is dropped.
    pub(super) fn enter(self: &Arc<Self>, queue: &str) -> InUse {
        let queue = shards::logical(queue);
        let mut queues = self.lock();
        let known = queues.get_key_value(queue).map(|(name, _)| name.clone());
        let name = match known {
            Some(name) => {
                if let Some(u) = queues.get_mut(queue) {
                    u.open += 1;
                }
                name
            }
            None => {
                let name: Arc<str> = Arc::from(queue);
                queues.insert(name.clone(), Use { open: 1, last: Instant::now() });
                name
            }
        };
        InUse { uses: self.clone(), queue: name }
    }

    /// Marks each of `queues` used now (a stream serves it, a follower follows it).
    pub(super) fn touch(&self, queues: impl IntoIterator<Item = String>) {
        let now = Instant::now();
        let mut map = self.lock();
        for queue in queues {
            map.entry(Arc::from(shards::logical(&queue))).or_insert(Use { open: 0, last: now }).last = now;
        }
    }

    /// Takes out the queues with no call running and none for `idle_after`: they are idle.
    pub(super) fn take_idle(&self, idle_after: Duration) -> Vec<String> {
        let mut idle = Vec::new();
        self.lock().retain(|queue, u| {
            let keep = u.open > 0 || u.last.elapsed() < idle_after;
            if !keep {
                idle.push(queue.to_string());
            }
            keep
        });
        idle
    }

    /// Whether `queue` was used within the idle period, or a call naming it runs.
    pub(super) fn in_use(&self, queue: &str) -> bool {
        self.lock().contains_key(shards::logical(queue))
    }

    /// How many queues are in use (for tests: 0 once every queue went idle).
    pub(super) fn count(&self) -> usize {
        self.lock().len()
    }
}

/// What the sweep reads and drops.
pub(super) struct Sweep {
    pub(super) uses: Arc<QueueUse>,
    pub(super) idle_after: Duration,
    pub(super) registry: Arc<QueueRegistry>,
    pub(super) overrides: Arc<Overrides>,
    pub(super) leases: Arc<Leases>,
    pub(super) events: Arc<Events>,
    pub(super) store: Arc<Store>,
    pub(super) background: Background,
}

/// What this instance holds per queue, map by map (for tests and the sweep's debug log).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueuesInMemory {
    /// Queues used within the idle period.
    pub in_use: usize,
    /// Queues the registry's memory says this instance registered.
    pub registered: usize,
    /// Queues with cached settings.
    pub settings: usize,
    /// Queues whose key names the store keeps formatted.
    pub key_names: usize,
    /// Queues with metric series (none while metrics are off).
    pub metric_series: usize,
    /// Queues with a dispatcher here (served by a worker stream).
    pub dispatchers: usize,
}

impl Sweep {
    /// Runs a sweep every half idle period until the instance stops: a queue goes at most one
    /// and a half periods after its last use.
    pub(super) async fn run(self: Arc<Self>) {
        let mut ticker = tokio::time::interval((self.idle_after / 2).max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.background.stopped() => return,
                _ = ticker.tick() => {}
            }
            let left = self.once();
            tracing::debug!(?left, "idle queues swept");
            if self.leases.redis_is_up() {
                match self.retire().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(queues = n, "queues that held nothing left the registry"),
                    Err(e) => tracing::debug!(error = %e, "could not retire empty queues; next sweep"),
                }
            }
        }
    }

    /// Takes the queues that hold nothing, and that this instance does not use, out of the
    /// registry (`QueueRegistry::retire_empty`); answers how many went.
    pub(super) async fn retire(&self) -> super::error::Result<usize> {
        self.registry.retire_empty(|queue| self.uses.in_use(queue)).await
    }

    /// One sweep; answers what stays.
    pub(super) fn once(&self) -> QueuesInMemory {
        // Streams and followers keep their queues in use.
        let dispatchers = self.leases.served_queues();
        let served = dispatchers.len();
        self.uses.touch(dispatchers);
        if let Some(followed) = self.events.followed_queues() {
            self.uses.touch(followed);
        }
        for queue in self.uses.take_idle(self.idle_after) {
            telemetry::forget_idle_queue(&queue);
        }
        // The series a call made without being counted in use (a lease handed back as lost, a
        // gauge read from Redis): those of a queue not in use go too, unless it holds jobs.
        for queue in telemetry::queues_with_series() {
            if !self.uses.in_use(&queue) {
                telemetry::forget_idle_queue(&queue);
            }
        }
        let in_use = |queue: &str| self.uses.in_use(queue);
        QueuesInMemory {
            registered: self.registry.forget_unless(in_use),
            settings: self.overrides.forget_unless(in_use),
            key_names: self.store.forget_unused_key_names(),
            metric_series: telemetry::queues_with_series().len(),
            in_use: self.uses.count(),
            dispatchers: served,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_is_idle_only_with_no_call_running_and_none_for_the_period() {
        let uses = Arc::new(QueueUse::default());
        let held = uses.enter("a");
        drop(uses.enter("b"));
        assert!(uses.take_idle(Duration::from_secs(60)).is_empty(), "both used just now");
        let idle = uses.take_idle(Duration::ZERO);
        assert_eq!(idle, vec!["b".to_owned()], "a call on a still runs");
        assert!(uses.in_use("a") && !uses.in_use("b"));
        drop(held);
        assert_eq!(uses.take_idle(Duration::ZERO), vec!["a".to_owned()]);
        assert_eq!(uses.count(), 0);
    }
}
