//! The global registry of queues (what the reaper, the session sweep, the gauges and
//! ListQueues walk), and which queues this instance has already put in it: a queue is
//! registered before its first write here (an add, a session, a pause), once per instance. The
//! heartbeat's discovery (`leases/liveness.rs`) registers the queues that have keys but no
//! entry (an entry deleted by hand, a registry older than this rule).
//!
//! The registry is also what `--max-queues` counts: a queue that is not in it yet gets in only
//! while the registry holds fewer than the cap, checked and added by one Redis function on the
//! one registry key, so the cap holds over every instance at once. It counts queues, not
//! shards: a shard of a sharded queue gets in once its queue (shard 0) is in, uncounted. A
//! sharded queue whose shard 0 held nothing and left the registry while other shards hold jobs
//! counts for nothing until shard 0 is registered again (its next write, or any new shard's).
//! A refused queue writes nothing anywhere, so a client inventing queue names cannot grow Redis
//! past the cap. (The discovery registers without the cap: what it finds already has keys.)
//!
//! What this instance remembers (the names it registered) is bounded by the cap too, and the idle
//! sweep forgets the names of idle queues (`idle.rs`).
//!
//! A queue leaves the registry once it holds nothing (`retire_empty`, run by the idle sweep; the
//! store's `Instances::retire_queue` says what "nothing" is and why the removal cannot lose a
//! queue that has jobs): so `--max-queues` counts the queues that hold something, and a writer
//! whose memory says a queue is registered may be wrong. That is why an add whose function
//! reports the queue unmarked, and every other write that registers a queue, register it again
//! after writing (`register_again`).

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{
    error::{Error, Result},
    shards,
};
use crate::store::Store;

/// This instance's memory of the queues it registered, over the global registry in Redis.
pub(super) struct QueueRegistry {
    store: Arc<Store>,
    /// `--max-queues`; None: no cap.
    max_queues: Option<u64>,
    registered: Mutex<HashSet<String>>,
    /// The idempotency windows of the adds here: a queue with a live tombstone of either stays.
    windows: [Duration; 2],
}

impl QueueRegistry {
    pub(super) fn new(store: Arc<Store>, max_queues: Option<u64>, windows: [Duration; 2]) -> Self {
        Self { store, max_queues, registered: Mutex::new(HashSet::new()), windows }
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.registered.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `queue` in the registry unless this instance already did; refused (`Full`) when
    /// that would make more distinct queues than `--max-queues`. A shard of a sharded queue is
    /// admitted by its queue (`shards::logical`), which is admitted first: the cap counts queues.
    pub(super) async fn register(&self, queue: &str) -> Result<()> {
        let known = self.remembered().contains(queue);
        if known {
            return Ok(());
        }
        let logical = shards::logical(queue);
        if logical != queue {
            Box::pin(self.register(logical)).await?;
        }
        match self.max_queues {
            None => self.store.instances().register_queue(queue).await?,
            Some(cap) => {
                if !self.store.instances().admit_queue(queue, cap).await? {
                    return Err(Error::Full(format!(
                        "queue {queue} would be one queue more than --max-queues allows ({cap} distinct queues exist)"
                    )));
                }
            }
        }
        self.remembered().insert(queue.to_owned());
        Ok(())
    }

    /// Puts `queue` in the registry again after a write that may have raced its retirement
    /// (an add that found the queue unmarked, any write but an add): without the cap, as the
    /// queue now has keys. A failure is logged, not the write's: the heartbeat's discovery
    /// registers a queue that has keys.
    pub(super) async fn register_again(&self, queue: &str) {
        match self.store.instances().register_queue(queue).await {
            Ok(()) => {
                self.remembered().insert(queue.to_owned());
            }
            Err(e) => tracing::warn!(%queue, error = %e, "could not register the queue; discovery will"),
        }
    }

    /// Takes out of the registry every queue that holds nothing and that `in_use` says this
    /// instance is not using (see `Instances::retire_queue`); returns how many went. One
    /// `queue_retire` call per queue of the registry that is not in use here.
    pub(super) async fn retire_empty(&self, in_use: impl Fn(&str) -> bool) -> Result<usize> {
        let mut retired = 0;
        for queue in self.store.instances().queues().await? {
            if in_use(&queue) {
                continue;
            }
            if self.store.instances().retire_queue(&queue, &self.windows).await? {
                self.remembered().remove(&queue);
                retired += 1;
            }
        }
        Ok(retired)
    }

    /// Forgets that this instance registered the queues `keep` says no (the idle sweep): the
    /// next write to one asks the registry again. Returns how many it still remembers.
    pub(super) fn forget_unless(&self, keep: impl Fn(&str) -> bool) -> usize {
        let mut registered = self.remembered();
        registered.retain(|queue| keep(queue));
        registered.len()
    }
}
