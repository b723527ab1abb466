//! The per-minute activity of queues (GetQueueActivity): the counts the store's functions keep,
//! with their minutes as times, summed over the shards of a sharded queue.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::Admin;
use crate::queue::{
    error::{Error, Result},
    job::validate_queue,
};

/// Queues one call may ask for.
const MAX_QUEUES: usize = 100;

/// What one queue did in one minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActivityMinute {
    /// The minute's start (Redis clock).
    pub start: SystemTime,
    /// Jobs added.
    pub added: u64,
    /// Jobs completed.
    pub completed: u64,
    /// Attempts failed.
    pub failed: u64,
}

/// Checks a list of 1 to [`MAX_QUEUES`] queue names, naming `field`.
pub(in crate::queue) fn validate_queues(queues: &[String], field: &str) -> Result<()> {
    if queues.is_empty() || queues.len() > MAX_QUEUES {
        return Err(Error::invalid(field, format!("name 1 to {MAX_QUEUES} queues")));
    }
    for (i, queue) in queues.iter().enumerate() {
        validate_queue(queue, &format!("{field}[{i}]"))?;
    }
    Ok(())
}

impl Admin {
    /// The last hour of each queue, minute by minute (see `store::Activity::last_hour`).
    pub(in crate::queue) async fn activity(&self, queues: &[String]) -> Result<Vec<Vec<ActivityMinute>>> {
        validate_queues(queues, "queues")?;
        let mut out = Vec::with_capacity(queues.len());
        for queue in queues {
            // A sharded queue's minutes are the sums of its shards'.
            let mut by_minute: BTreeMap<u64, ActivityMinute> = BTreeMap::new();
            for shard in self.overrides.shards_of(queue).await?.iter() {
                for m in self.store.activity().last_hour(shard).await? {
                    let start = UNIX_EPOCH + Duration::from_secs(m.minute.saturating_mul(60));
                    let sum = by_minute.entry(m.minute).or_insert(ActivityMinute {
                        start,
                        added: 0,
                        completed: 0,
                        failed: 0,
                    });
                    sum.added += m.added;
                    sum.completed += m.completed;
                    sum.failed += m.failed;
                }
            }
            out.push(by_minute.into_values().collect());
        }
        Ok(out)
    }
}
