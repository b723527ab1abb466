//! The registry of connected workers: each instance publishes the list of its own streams with
//! its heartbeat (see `liveness.rs`), under a key that expires with it, and ListWorkers reads
//! the lists of every live instance.

use std::time::{Duration, SystemTime};

use tracing::warn;

use super::Leases;
use crate::{
    queue::{
        error::Result,
        job::{from_ms, to_ms},
        shards,
    },
    store::Store,
};

/// A worker stream connected to some instance.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct WorkerView {
    /// The id of the instance it is connected to.
    pub instance: String,
    /// The stream's number on that instance (lists published before it was kept read as 0).
    #[serde(default)]
    pub stream: u64,
    /// The worker id it gave (may be empty).
    pub worker_id: String,
    /// The labels it gave.
    pub labels: Vec<(String, String)>,
    /// The queues it serves, in its order.
    pub queues: Vec<String>,
    /// Its credit.
    pub max_in_flight: u32,
    /// Jobs it holds, as of the instance's last publication (a few seconds old at most while it
    /// is busy).
    pub in_flight: usize,
    /// When it connected, in Unix milliseconds (the list is stored as JSON).
    pub connected_at_ms: i64,
}

impl WorkerView {
    /// The stream's id as jobs show their holder: `<instance>.<stream>`.
    pub fn stream_id(&self) -> String {
        format!("{}.{}", self.instance, self.stream)
    }

    /// When it connected.
    pub fn connected_at(&self) -> SystemTime {
        from_ms(self.connected_at_ms)
    }
}

/// Publishes this instance's streams, kept for `ttl`.
pub(super) async fn publish(leases: &Leases, ttl: Duration) {
    let views: Vec<WorkerView> = leases
        .hub
        .streams()
        .into_iter()
        .map(|s| WorkerView {
            instance: leases.instance.clone(),
            stream: s.id,
            worker_id: s.spec.worker_id,
            labels: s.spec.labels,
            // A sharded queue's shards show as the queue.
            queues: s.spec.queues.iter().filter(|q| shards::logical(q) == q.as_str()).cloned().collect(),
            max_in_flight: s.spec.max_in_flight,
            in_flight: s.in_flight,
            connected_at_ms: to_ms(s.connected_at),
        })
        .collect();
    let json = serde_json::to_string(&views).unwrap_or_else(|_| "[]".into());
    if let Err(e) = leases.store.instances().set_workers(&leases.instance, &json, ttl).await {
        tracing::debug!(error = %e, "could not publish the worker list");
    }
}

/// Connected worker streams on every live instance, optionally only those serving `queue`.
pub(super) async fn list(store: &Store, queue: Option<&str>) -> Result<Vec<WorkerView>> {
    let mut out = Vec::new();
    for (instance, json) in store.instances().workers().await? {
        match serde_json::from_str::<Vec<WorkerView>>(&json) {
            Ok(list) => out.extend(list),
            Err(e) => warn!(%instance, error = %e, "unreadable worker list"),
        }
    }
    out.retain(|w| queue.is_none_or(|q| w.queues.iter().any(|s| s == q)));
    out.sort_by(|a, b| (a.connected_at_ms, &a.worker_id).cmp(&(b.connected_at_ms, &b.worker_id)));
    Ok(out)
}
