//! Memory pressure: what this instance does as Redis's memory runs short, so that a full Redis
//! refuses new work cleanly instead of wedging the service.
//!
//! Redis's memory is read once per `MemoryLimits::sample_every` (a second by default) with
//! `INFO memory`, never per add. From those readings:
//! - **The watermark.** Above `watermark` percent of `maxmemory`, AddJob, AddJobs and
//!   CreateSession are refused with `Full` ("Redis is full: used X of Y") before anything is
//!   sent to Redis; they are accepted again once used memory is at or below the watermark less
//!   `RESUME_MARGIN` points, so a Redis hovering at the watermark does not flip every second.
//!   Each start and end is one WARN line, not one per add. An add Redis itself refuses for
//!   memory (between two readings, or past `maxmemory` with the watermark at 100) gets the same
//!   answer and starts the condition at once: `refusal`.
//! - **Shedding.** Above `shed_at` percent, retained history gives way before new work is
//!   refused: each known queue in turn drops a bounded batch (`Store::memory().shed`: events
//!   beyond `EVENTS_KEPT`, then the oldest completed jobs and their results, then cancelled
//!   ones, then, only with `shed_dead`, dead ones), round after round until memory is back
//!   under `shed_at` or nothing is left to drop, at most `SHED_BUDGET` of each period. What
//!   frees memory in Redis (leases, acks, reaps) runs whatever its memory (the library's
//!   `allow-oom` functions), so workers drain the queues meanwhile and adds resume.
//!
//! The condition shows in `Stats` (`Engine::redis_memory`), in the `jobwire_redis_*` gauges and
//! in the log; what was shed shows in each queue's figures (`QueueFigures::*_shed`).
//!
//! Owns the last reading and whether Redis counts as full, and its task (on `background`).
//! Calls no room. Reached by `intake` and `sessions` (`check_room`, `refusal`) and the engine
//! (`status`). Against a Redis without `maxmemory` nothing is refused or shed here (Redis never
//! refuses for memory then either).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{
    background::Background,
    error::{Error, Result},
    settings::MemoryLimits,
};
use crate::{
    store::{MemoryReading, ShedKind, Store, StoreError},
    telemetry,
};

/// Points of `maxmemory` below the watermark that used memory must be back at for adds to
/// be accepted again.
const RESUME_MARGIN: u8 = 5;
/// Event stream entries each queue keeps under memory pressure (each holds one transition of
/// up to 16 jobs); a Subscribe resuming from before them gets OUT_OF_RANGE, as after any trim.
const EVENTS_KEPT: u64 = 1_000;
/// The most of each sampling period spent shedding, so shedding never crowds out the work
/// that drains the queues.
const SHED_BUDGET: Duration = Duration::from_millis(250);

/// Redis's memory as this instance last read it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedisMemory {
    /// Bytes Redis uses (`used_memory`).
    pub used: u64,
    /// Its `maxmemory`; 0 when it has none.
    pub max: u64,
    /// Whether adds and new sessions are refused for memory now.
    pub full: bool,
}

/// The memory room (see the module doc).
pub(super) struct Memory {
    store: Arc<Store>,
    limits: MemoryLimits,
    /// The last reading (None before the first) and whether Redis counts as full.
    state: Mutex<(Option<MemoryReading>, bool)>,
}

impl Memory {
    /// The room, with its sampling task on `background`.
    pub(super) fn start(store: Arc<Store>, limits: MemoryLimits, background: Background) -> Arc<Self> {
        let memory = Arc::new(Self { store, limits, state: Mutex::new((None, false)) });
        background.spawn(run(memory.clone(), background.clone()));
        memory
    }

    /// Refuses new work while Redis counts as full: one lock, no Redis call.
    pub(super) fn check_room(&self) -> Result<()> {
        let (reading, full) = *self.state();
        if full { Err(full_error(reading)) } else { Ok(()) }
    }

    /// The error a store call that added to Redis becomes: when Redis refused it for memory,
    /// the same `Full` the watermark gives (and the condition starts now, not at the next
    /// reading); anything else as usual.
    pub(super) fn refusal(&self, error: StoreError) -> Error {
        if !matches!(error, StoreError::OutOfMemory) {
            return error.into();
        }
        let mut state = self.state();
        if !state.1 {
            state.1 = true;
            warn!(
                reading = %state.0.map(describe).unwrap_or_default(),
                "Redis is full: it refused a write for memory; adds and new sessions are refused until workers drain it"
            );
        }
        full_error(state.0)
    }

    /// What Stats shows: the last reading and whether adds are refused for memory.
    pub(super) fn status(&self) -> RedisMemory {
        let (reading, full) = *self.state();
        let reading = reading.unwrap_or_default();
        RedisMemory { used: reading.used, max: reading.max, full }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, (Option<MemoryReading>, bool)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a reading in: whether Redis counts as full now (with the margin on the way down),
    /// a WARN line when that changes, the gauges.
    fn observe(&self, reading: MemoryReading) {
        let full = {
            let mut state = self.state();
            let threshold =
                if state.1 { self.limits.watermark.saturating_sub(RESUME_MARGIN) } else { self.limits.watermark };
            let full = reading.above(threshold);
            if full != state.1 {
                if full {
                    warn!(
                        reading = %describe(reading),
                        watermark = self.limits.watermark,
                        "Redis is full: adds and new sessions are refused until workers drain it"
                    );
                } else {
                    warn!(reading = %describe(reading), "Redis has room again: adds are accepted");
                }
            }
            *state = (Some(reading), full);
            full
        };
        telemetry::set_redis_memory(reading.used, reading.max, full);
    }

    /// Reads Redis's memory and takes the reading in; None when Redis did not answer.
    async fn sample(&self) -> Option<MemoryReading> {
        match self.store.memory().reading().await {
            Ok(reading) => {
                self.observe(reading);
                Some(reading)
            }
            Err(e) => {
                debug!(error = %e, "cannot read redis memory");
                None
            }
        }
    }

    /// Sheds rounds of retained history (one batch per known queue each) until memory is under
    /// `shed_at`, nothing is left to shed or the period's budget is spent. Returns whether any
    /// round found nothing left.
    async fn shed(&self, background: &Background, shed: &mut Tally) -> bool {
        let queues = match self.store.instances().queues().await {
            Ok(queues) => queues,
            Err(e) => {
                debug!(error = %e, "shedding: cannot list queues");
                return false;
            }
        };
        let began = Instant::now();
        loop {
            let mut any = false;
            for queue in &queues {
                match self.store.memory().shed(queue, EVENTS_KEPT, self.limits.shed_dead).await {
                    Ok(Some((kind, count))) => {
                        *shed.0.entry(kind_name(kind)).or_default() += count;
                        any = true;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        warn!(%queue, error = %e, "shedding failed; retrying in the next period");
                        return false;
                    }
                }
            }
            let under = self.sample().await.is_none_or(|r| !r.above(self.limits.shed_at));
            if !any {
                return true;
            }
            if under || began.elapsed() >= SHED_BUDGET || background.is_stopping() {
                return false;
            }
        }
    }
}

/// What one episode of memory pressure shed, by kind.
#[derive(Default)]
struct Tally(BTreeMap<&'static str, u64>);

/// Samples every period until the instance stops; sheds while over `shed_at`. An episode of
/// shedding is logged when it starts and when it ends (with what it shed), and once when
/// nothing is left to shed.
async fn run(memory: Arc<Memory>, background: Background) {
    let mut ticker = tokio::time::interval(memory.limits.sample_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The episode of shedding under way, and whether it ran out of things to shed.
    let mut episode: Option<(Tally, bool)> = None;
    loop {
        tokio::select! {
            _ = background.stopped() => return,
            _ = ticker.tick() => {}
        }
        let Some(reading) = memory.sample().await else { continue };
        if reading.above(memory.limits.shed_at) {
            let (tally, exhausted) = episode.get_or_insert_with(|| {
                info!(reading = %describe(reading), shed_at = memory.limits.shed_at, "Redis memory is short: shedding retained history");
                (Tally::default(), false)
            });
            if memory.shed(&background, tally).await && !*exhausted {
                *exhausted = true;
                warn!(reading = %describe(reading), "Redis memory is short and no retained history is left to shed");
            }
        } else if let Some((tally, _)) = episode.take() {
            info!(reading = %describe(reading), shed = ?tally.0, "Redis memory is back under the shedding threshold");
        }
    }
}

fn kind_name(kind: ShedKind) -> &'static str {
    match kind {
        ShedKind::Events => "events",
        ShedKind::Completed => "completed",
        ShedKind::Cancelled => "cancelled",
        ShedKind::Dead => "dead",
    }
}

/// The answer to an add refused for memory.
fn full_error(reading: Option<MemoryReading>) -> Error {
    Error::Full(match reading.filter(|r| r.max > 0) {
        Some(r) => format!("Redis is full: used {} of {}", human(r.used), human(r.max)),
        None => "Redis is full: it refused a write for lack of memory".into(),
    })
}

/// "used X of Y", for the log.
fn describe(reading: MemoryReading) -> String {
    format!("used {} of {}", human(reading.used), human(reading.max))
}

/// Bytes in binary units, one decimal past KiB: `512 B`, `2.9 MiB`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1024), "1.0 KiB");
        assert_eq!(human(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(human(2_936_012), "2.8 MiB");
        assert_eq!(human(u64::MAX), "16384.0 PiB");
    }

    #[test]
    fn the_watermark_is_a_share_of_maxmemory() {
        let reading = MemoryReading { used: 91, max: 100 };
        assert!(reading.above(90));
        assert!(!reading.above(91));
        assert!(!MemoryReading { used: u64::MAX, max: 0 }.above(1), "no maxmemory, no limit");
        assert!(MemoryReading { used: u64::MAX, max: u64::MAX - 1 }.above(100), "no overflow");
    }
}
