//! With metrics on: reads `Stats` of every known queue every few seconds into the per-queue
//! gauges (waiting, active, delayed, dead, oldest waiting age), and runs the recorder's upkeep.
//!
//! Why a poll and not bookkeeping on every transition: the figures live in Redis and change
//! through every instance (and through the reaper and the timers of the scripts); one Stats
//! script per queue per period reads them exactly, at a cost that does not grow with traffic.
//! The queues are read one at a time, so a deployment with many queues spreads its reads over the
//! period instead of bursting; a round that overruns the period delays the next one rather than
//! stacking up. Nothing is read while Redis is known to be unreachable.

use std::{sync::Arc, time::Duration};

use tracing::debug;

use super::Engine;
use crate::telemetry;

pub async fn run(engine: Arc<Engine>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = engine.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        telemetry::upkeep();
        telemetry::set_worker_streams(engine.hub.stream_count());
        if !*engine.redis_up.borrow() {
            continue;
        }
        let queues = match engine.store.instances().queues().await {
            Ok(q) => q,
            Err(e) => {
                debug!(error = %e, "gauges: cannot list queues");
                continue;
            }
        };
        for queue in queues {
            if engine.shutdown.is_cancelled() {
                return;
            }
            let counts = match engine.store.admin().stats(&queue).await {
                Ok(c) => c,
                Err(e) => {
                    debug!(%queue, error = %e, "gauges: cannot read stats");
                    break;
                }
            };
            let Some(m) = telemetry::queue(&queue) else { return };
            m.waiting.set(counts.waiting as f64);
            m.active.set(counts.active as f64);
            m.delayed.set(counts.delayed as f64);
            m.dead.set(counts.dead as f64);
            let oldest = counts.oldest_ready_ms.map_or(0, |since| (counts.now_ms - since).max(0));
            m.oldest_waiting.set(oldest as f64 / 1000.0);
        }
    }
}
