//! With metrics on: reads `Stats` of every known queue every few seconds into the per-queue
//! gauges (waiting, active, delayed, dead, oldest waiting age, what was shed under memory
//! pressure), and runs the recorder's upkeep.
//!
//! Why a poll and not bookkeeping on every transition: the figures live in Redis and change
//! through every instance (and through the reaper and the timers of the scripts); one Stats
//! script per queue per period reads them exactly, at a cost that does not grow with traffic.
//! The queues are read one at a time, so a deployment with many queues spreads its reads over the
//! period instead of bursting; a round that overruns the period delays the next one rather than
//! stacking up. Nothing is read while Redis is known to be unreachable.
//!
//! A sharded queue has one set of series, labelled with its name: its shards' figures summed
//! (the shards in the registry of queues; one not in it holds nothing).
//!
//! A queue that holds no job and is not in use here (`idle.rs`) gets no series: its figures are
//! zeros, and listing every empty queue ever named is what the idle sweep exists to avoid.
//!
//! Owns nothing but its task; calls `leases` (`Leases::stream_count`, `Leases::redis_is_up`),
//! `idle` (`QueueUse::in_use`) and `background`, and shows the figures as `admin`'s `QueueFigures` read them.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tracing::debug;

use super::{admin::QueueFigures, background::Background, idle::QueueUse, leases::Leases, shards};
use crate::{store::Store, telemetry};

/// Refreshes the gauges every `every` until the instance stops.
pub(super) async fn run(
    store: Arc<Store>,
    leases: Arc<Leases>,
    uses: Arc<QueueUse>,
    background: Background,
    every: Duration,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = background.stopped() => return,
            _ = ticker.tick() => {}
        }
        telemetry::upkeep();
        telemetry::set_worker_streams(leases.stream_count());
        if !leases.redis_is_up() {
            continue;
        }
        let queues = match store.instances().queues().await {
            Ok(q) => q,
            Err(e) => {
                debug!(error = %e, "gauges: cannot list queues");
                continue;
            }
        };
        // A sharded queue's series are the queue's: its registered shards are read and summed.
        let mut by_queue: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for physical in &queues {
            by_queue.entry(shards::logical(physical)).or_default().push(physical);
        }
        'queues: for (queue, physical) in by_queue {
            if background.is_stopping() {
                return;
            }
            let mut sum: Option<QueueFigures> = None;
            for shard in physical {
                let figures: QueueFigures = match store.admin().stats(shard).await {
                    Ok(c) => c.into(),
                    Err(e) => {
                        debug!(queue = %shard, error = %e, "gauges: cannot read stats");
                        break 'queues;
                    }
                };
                sum = Some(match sum {
                    Some(sum) => sum.plus(figures),
                    None => figures,
                });
            }
            let Some(figures) = sum else { continue };
            // An empty queue nobody uses here gets no series (a million queue names used
            // once each would otherwise all be listed); one holding jobs keeps them.
            if figures.holds_no_job() && !uses.in_use(queue) {
                telemetry::forget_queue(queue);
                continue;
            }
            let Some(m) = telemetry::queue(queue) else { return };
            m.waiting.set(figures.waiting as f64);
            m.active.set(figures.active as f64);
            m.delayed.set(figures.delayed as f64);
            m.dead.set(figures.dead as f64);
            m.oldest_waiting.set(figures.oldest_waiting.as_secs_f64());
            m.shed_events.set(figures.events_shed as f64);
            m.shed_completed.set(figures.completed_shed as f64);
            m.shed_cancelled.set(figures.cancelled_shed as f64);
            m.shed_dead.set(figures.dead_shed as f64);
            m.concurrency_limit.set(figures.concurrency_limit.unwrap_or(0) as f64);
            m.held_by_concurrency.set(figures.held_by_concurrency as f64);
            m.held_by_rate.set(figures.held_by_rate as f64);
            m.held_by_key_concurrency.set(figures.held_by_key_concurrency as f64);
        }
    }
}
