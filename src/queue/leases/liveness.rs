//! Liveness is proven per instance, not per job: each instance heartbeats into a registry, and
//! the leases of an instance whose heartbeat is older than the lease TTL are returned to their
//! queues by whichever instance notices first.
//!
//! The reaper only acts while its own view is fresh: after its heartbeats have succeeded without
//! a gap for a full TTL. So when Redis (or this instance) was paused or cut off, nobody is
//! declared dead until every live instance has had a full TTL to heartbeat again.
//!
//! On a Redis Cluster a heartbeat counts only when every master answers too (one PING each): the
//! registry lives on one master, and a queue whose master is down cannot be served, so health
//! is NOT_SERVING while any slot is unreachable, and the reaper's fresh period starts again
//! once the cluster is whole (no lease is reaped because of a failover's gap).
//!
//! Each heartbeat that succeeds also republishes this instance's worker list when it is due
//! (`workers.rs`) and expires the idle sessions of every known queue (`session_sweep.lua`).
//!
//! "Every known queue" is the global queue registry, which a queue enters before its first write
//! (and again after a write that may have raced its removal: a queue that holds nothing leaves
//! the registry, `queue/registry.rs`). A crash between a write and its registration, or an entry
//! deleted by hand, would hide that queue's leases and sessions
//! from the reaper and the sweep for good; so each heartbeat also takes one bounded step of a
//! SCAN over the queues' keys and registers what it finds (`discover_queues`): a full round
//! costs one SCAN of `DISCOVERY_PAGE` per heartbeat and takes (keys / `DISCOVERY_PAGE`)
//! heartbeats. The registry cannot be written inside the add script instead: it is a global
//! key, on another Redis Cluster slot than the queue's.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;
use tracing::{info, warn};

use super::{Leases, workers};

/// How stale the in-flight counts of `ListWorkers` may get.
const WORKERS_REFRESH: Duration = Duration::from_secs(5);

/// Keys one discovery step asks SCAN to look at (its COUNT).
const DISCOVERY_PAGE: usize = 1000;

/// Heartbeats every third of the lease TTL (at least once a second) until the instance stops; on
/// each success also republishes the worker list when due, sweeps idle sessions and reaps dead
/// instances.
pub(super) async fn run(leases: Arc<Leases>) {
    let ttl = leases.settings.lease_ttl;
    let every = (ttl / 3).min(Duration::from_secs(1));
    let mut fresh_since: Option<Instant> = None;
    let mut last_ok: Option<Instant> = None;
    let mut published: Option<((u64, u64), Instant)> = None;
    let mut discovery_cursor = 0u64;
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = leases.background.stopped() => return,
            _ = ticker.tick() => {}
        }
        let beat = async {
            let beat = leases.store.instances().heartbeat(&leases.instance, ttl).await?;
            leases.store.instances().every_master_answers().await?;
            Ok::<_, crate::store::StoreError>(beat)
        };
        match beat.await {
            Ok((_, dead)) => {
                let now = Instant::now();
                // A gap longer than half the TTL means we may have looked dead to others, and
                // others may have been unable to heartbeat: start the fresh period again.
                if last_ok.is_none_or(|t| now - t > ttl / 2) {
                    fresh_since = Some(now);
                }
                last_ok = Some(now);
                if leases.redis_up.send_if_modified(|up| !std::mem::replace(up, true)) {
                    info!("redis is reachable");
                    leases.hub.wake_all();
                }
                // The worker list is rewritten at the next heartbeat when streams opened or closed,
                // within a few seconds when only in-flight counts moved, and otherwise once a TTL
                // to keep its key alive: 10,000 idle streams cost nothing, busy ones little.
                let generation = leases.hub.generation();
                let due = published.is_none_or(|((streams, any), at): ((u64, u64), Instant)| {
                    let age = now - at;
                    streams != generation.0 || (any != generation.1 && age >= WORKERS_REFRESH) || age >= ttl
                });
                if due {
                    workers::publish(&leases, ttl * 3).await;
                    published = Some((generation, now));
                }
                discover_queues(&leases, &mut discovery_cursor).await;
                sweep_sessions(&leases).await;
                let dead: Vec<String> = dead.into_iter().filter(|id| *id != leases.instance).collect();
                if !dead.is_empty() && fresh_since.is_some_and(|t| now - t >= ttl) {
                    reap(&leases, &dead).await;
                }
            }
            Err(e) => {
                fresh_since = None;
                if leases.redis_up.send_if_modified(|up| std::mem::replace(up, false)) {
                    warn!(error = %e, "redis is unreachable");
                }
            }
        }
    }
}

/// One step of the discovery of queues missing from the registry (see the module doc).
async fn discover_queues(leases: &Leases, cursor: &mut u64) {
    match leases.store.instances().discover_queues(*cursor, DISCOVERY_PAGE).await {
        Ok((next, _)) => *cursor = next,
        Err(e) => warn!(error = %e, "queue discovery failed; retrying on the next heartbeat"),
    }
}

/// Returns the leases of dead instances in every known queue, then forgets the instances.
async fn reap(leases: &Leases, dead: &[String]) {
    let queues = match leases.store.instances().queues().await {
        Ok(q) => q,
        Err(e) => return warn!(error = %e, "reaper could not list queues"),
    };
    for queue in &queues {
        match leases.store.jobs().reap(queue, dead).await {
            Ok(0) => {}
            Ok(n) => {
                info!(%queue, returned = n, instances = ?dead, "reaped leases of dead instances")
            }
            Err(e) => {
                return warn!(%queue, error = %e, "reaping failed; retrying on the next heartbeat");
            }
        }
    }
    match leases.store.instances().forget_instances(dead).await {
        Ok(()) => info!(instances = ?dead, "dead instances forgotten"),
        Err(e) => warn!(error = %e, "could not forget dead instances"),
    }
}

/// Expires idle sessions in every known queue (each call is bounded; see session_sweep.lua).
async fn sweep_sessions(leases: &Leases) {
    let Ok(queues) = leases.store.instances().queues().await else { return };
    for queue in queues {
        match leases.store.sessions().sweep_sessions(&queue).await {
            Ok(gone) if !gone.is_empty() => info!(%queue, sessions = ?gone, "idle sessions expired"),
            Ok(_) => {}
            Err(e) => return warn!(%queue, error = %e, "session sweep failed"),
        }
    }
}
