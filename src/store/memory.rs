//! Redis's memory: how much it uses against its `maxmemory` (`INFO memory`, a plain read that
//! Redis answers whatever its memory), and shedding a queue's retained history when it runs
//! short (`lua/shed.lua`: events beyond a minimum, then the oldest completed jobs, then
//! cancelled, then, only when asked, dead ones).
//!
//! This part only reads and sheds; when to refuse adds and when to shed is the queue layer's
//! call (`queue/memory.rs`).

use std::sync::Arc;

use redis::Cmd;

use super::{
    Result, StoreError,
    args::QueueFunction,
    backend::Backend,
    decoded,
    scripts::{Function, Scripts},
};

/// Redis's memory as `INFO memory` reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryReading {
    /// Bytes Redis has allocated (`used_memory`).
    pub used: u64,
    /// Its `maxmemory`; 0 when it has none.
    pub max: u64,
}

impl MemoryReading {
    /// Whether `used` is above `percent` of `max` (never without a `maxmemory`).
    pub fn above(&self, percent: u8) -> bool {
        self.max > 0 && u128::from(self.used) * 100 > u128::from(self.max) * u128::from(percent)
    }
}

/// What one shedding call dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShedKind {
    /// Event stream entries beyond the minimum kept.
    Events,
    /// The oldest retained completed jobs, with their results.
    Completed,
    /// The oldest retained cancelled jobs.
    Cancelled,
    /// The oldest dead jobs (only when asked for).
    Dead,
}

/// The answer of one shedding call: what it dropped and how many (jobs, or stream entries for
/// events); None when the queue had nothing left to shed.
pub type Shed = Option<(ShedKind, u64)>;

/// lua/shed.lua: ARGV[8] batch, [9] events kept, [10] dead jobs too.
struct ShedArgs {
    batch: u32,
    events_kept: u64,
    dead: bool,
}

impl QueueFunction for ShedArgs {
    /// (kind, count).
    type Reply = (i64, i64);

    fn function(scripts: &Scripts) -> &Function {
        &scripts.shed
    }

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.batch).arg(self.events_kept).arg(u8::from(self.dead));
    }
}

/// Redis's memory and the shedding of retained history (see the module doc).
#[derive(Clone)]
pub struct Memory {
    backend: Arc<Backend>,
}

/// How full a node is, for picking the fullest: the share of its `maxmemory` in use, or its
/// bytes in use (below any share) on a node without one.
fn fill(reading: &MemoryReading) -> (bool, f64) {
    #[expect(clippy::cast_precision_loss, reason = "a share for comparison only")]
    match reading.max {
        0 => (false, reading.used as f64),
        max => (true, reading.used as f64 / max as f64),
    }
}

impl Memory {
    /// Jobs (or stream entries) one shedding call drops at most. A stream is trimmed in whole
    /// nodes of up to 100 entries, so a smaller batch could trim no event at all.
    pub const SHED_BATCH: u32 = 500;

    pub(super) fn new(backend: Arc<Backend>) -> Self {
        Self { backend }
    }

    /// Redis's used memory and its `maxmemory`, as it reports them now: on a cluster, those of
    /// the master nearest its `maxmemory` (each master refuses adds on its own once full; the
    /// watermark follows the fullest, so adds are refused before any master refuses them).
    pub async fn reading(&self) -> Result<MemoryReading> {
        let answers = self.backend.on_every_master(redis::cmd("INFO").arg("memory")).await?;
        let mut fullest: Option<MemoryReading> = None;
        for answer in answers {
            let info: redis::InfoDict = redis::from_redis_value(answer)?;
            let field = |name: &str| {
                info.get::<u64>(name).ok_or_else(|| StoreError::Corrupt(format!("INFO memory without {name}")))
            };
            let reading = MemoryReading { used: field("used_memory")?, max: field("maxmemory")? };
            if fullest.is_none_or(|f| fill(&reading) > fill(&f)) {
                fullest = Some(reading);
            }
        }
        fullest.ok_or_else(|| StoreError::Unavailable("no Redis master answered INFO".into()))
    }

    /// Drops one batch of `queue`'s retained history (see lua/shed.lua): the first kind with any
    /// to drop of events beyond the `events_kept` most recent, completed, cancelled and, with
    /// `dead`, dead jobs. Each drop is counted in the queue's figures (`QueueCounts::*_shed`).
    pub async fn shed(&self, queue: &str, events_kept: u64, dead: bool) -> Result<Shed> {
        let args = ShedArgs { batch: Self::SHED_BATCH, events_kept, dead };
        let (kind, count) = self.backend.call(queue, &args).await?;
        let kind = match kind {
            0 => return Ok(None),
            1 => ShedKind::Events,
            2 => ShedKind::Completed,
            3 => ShedKind::Cancelled,
            4 => ShedKind::Dead,
            _ => return Err(StoreError::Corrupt(format!("the shed function answered kind {kind}"))),
        };
        Ok(Some((kind, decoded(count, "the shed count")?)))
    }
}
