//! The global registry of queues (what the reaper, the session sweep, the gauges and
//! ListQueues walk), and which queues this instance has already put in it: a queue is
//! registered before its first write here (an add, a session, a pause), once per instance. The
//! heartbeat's discovery (`leases/liveness.rs`) registers the queues that have keys but no
//! entry (an entry deleted by hand, a registry older than this rule).
//!
//! The registry is also what `--max-queues` counts: a queue that is not in it yet gets in only
//! while the registry holds fewer than the cap, checked and added by one Redis function on the
//! one registry key, so the cap holds over every instance at once. A refused queue writes
//! nothing anywhere, so a client inventing queue names cannot grow Redis past the cap. (The
//! discovery registers without the cap: what it finds already has keys.)
//!
//! What this instance remembers (the names it registered) is bounded by the cap too.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use super::error::{Error, Result};
use crate::store::Store;

/// This instance's memory of the queues it registered, over the global registry in Redis.
pub(super) struct QueueRegistry {
    store: Arc<Store>,
    /// `--max-queues`; None: no cap.
    max_queues: Option<u64>,
    registered: Mutex<HashSet<String>>,
}

impl QueueRegistry {
    pub(super) fn new(store: Arc<Store>, max_queues: Option<u64>) -> Self {
        Self { store, max_queues, registered: Mutex::new(HashSet::new()) }
    }

    /// Puts `queue` in the registry unless this instance already did; refused (`Full`) when
    /// that would make more distinct queues than `--max-queues`.
    pub(super) async fn register(&self, queue: &str) -> Result<()> {
        let known = self.registered.lock().unwrap_or_else(|e| e.into_inner()).contains(queue);
        if known {
            return Ok(());
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
        self.registered.lock().unwrap_or_else(|e| e.into_inner()).insert(queue.to_owned());
        Ok(())
    }

    /// Forgets that this instance registered the queues `keep` says no (the idle sweep): the
    /// next write to one asks the registry again. Returns how many it still remembers.
    pub(super) fn forget_unless(&self, keep: impl Fn(&str) -> bool) -> usize {
        let mut registered = self.registered.lock().unwrap_or_else(|e| e.into_inner());
        registered.retain(|queue| keep(queue));
        registered.len()
    }
}
