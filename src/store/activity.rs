//! Reading a queue's per-minute activity counts (`lua/lib.lua` writes them, inside the calls that
//! add, complete and fail jobs: see its Activity section). A read is one pipelined round trip
//! (the hash, which holds at most about 190 small fields, and Redis's clock); nothing here writes.

use std::sync::Arc;

use super::{Result, StoreError, backend::Backend};

/// The minutes read besides the current one.
pub const ACTIVITY_MINUTES: u64 = 60;

/// What one queue did in one minute of the Redis clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MinuteCounts {
    /// The minute: Unix milliseconds / 60,000.
    pub minute: u64,
    /// Jobs added.
    pub added: u64,
    /// Jobs completed.
    pub completed: u64,
    /// Attempts failed (retried or dead).
    pub failed: u64,
}

/// The activity counters of every queue (see the module doc).
#[derive(Clone)]
pub struct Activity {
    backend: Arc<Backend>,
}

impl Activity {
    pub(super) fn new(backend: Arc<Backend>) -> Self {
        Self { backend }
    }

    /// The last [`ACTIVITY_MINUTES`] whole minutes and the current one, oldest first, with zeros
    /// for minutes without activity.
    pub async fn last_hour(&self, queue: &str) -> Result<Vec<MinuteCounts>> {
        let keys = self.backend.queue_keys(queue);
        let mut reads = redis::pipe();
        reads.cmd("HGETALL").arg(keys.activity()).cmd("TIME");
        let (fields, (seconds, _)): (Vec<(String, u64)>, (u64, u64)) =
            self.backend.with_conn(async |c| reads.query_async(c).await).await?;
        let now = seconds / 60;
        let first = now.saturating_sub(ACTIVITY_MINUTES);
        let mut minutes: Vec<MinuteCounts> =
            (first..=now).map(|minute| MinuteCounts { minute, ..MinuteCounts::default() }).collect();
        for (field, count) in fields {
            let (kind, minute) = field.split_at_checked(1).unwrap_or_default();
            let minute: u64 =
                minute.parse().map_err(|_| StoreError::Corrupt(format!("activity field {field:?} names no minute")))?;
            let Some(slot) = minute.checked_sub(first).and_then(|i| usize::try_from(i).ok()) else { continue };
            let Some(counts) = minutes.get_mut(slot) else { continue };
            match kind {
                "a" => counts.added = count,
                "c" => counts.completed = count,
                "f" => counts.failed = count,
                _ => return Err(StoreError::Corrupt(format!("activity field {field:?} is of no kind"))),
            }
        }
        Ok(minutes)
    }
}
