//! The global registry of queues (what the reaper, the session sweep, the gauges and
//! ListQueues walk), and which queues this instance has already put in it: a queue is
//! registered when it is first written to (once an add went in, before a session or a pause),
//! once per instance. The heartbeat's discovery (`leases/liveness.rs`) registers the queues
//! that have keys but no entry (a crash right after an add, an entry deleted by hand).

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use super::error::Result;
use crate::store::Store;

/// This instance's memory of the queues it registered, over the global registry in Redis.
pub(super) struct QueueRegistry {
    store: Arc<Store>,
    registered: Mutex<HashSet<String>>,
}

impl QueueRegistry {
    pub(super) fn new(store: Arc<Store>) -> Self {
        Self { store, registered: Mutex::new(HashSet::new()) }
    }

    /// Puts `queue` in the registry unless this instance already did.
    pub(super) async fn register(&self, queue: &str) -> Result<()> {
        let known = self.registered.lock().unwrap_or_else(|e| e.into_inner()).contains(queue);
        if !known {
            self.store.instances().register_queue(queue).await?;
            self.registered.lock().unwrap_or_else(|e| e.into_inner()).insert(queue.to_owned());
        }
        Ok(())
    }
}
