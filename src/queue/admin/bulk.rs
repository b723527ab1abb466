//! Bulk actions: retry, cancel or delete the jobs an operator selected, named one by one or as
//! every job of a listing matching a filter.
//!
//! Each job goes through the same path as its single-job call (one function call per job, so
//! each is atomic on its own and fenced as usual); a job the action does not apply to (not dead
//! for a retry, finished for a cancel, active for a delete, gone) is skipped. A query first
//! collects the ids it selects (walking the listing: `walk.rs`; of a sharded queue, shard after
//! shard), then acts, so acting cannot shift the walk. Calls run [`IN_FLIGHT`] at a time on the pool's multiplexed connections.
//! An error of Redis ends the call with part of the selection done; calling again is safe.

use futures::{StreamExt, TryStreamExt};

use super::{Admin, Listing, filter::JobFilter};
use crate::queue::{
    error::{Error, Result},
    job::{JobId, validate_queue},
};

/// Job ids one call may name.
const MAX_IDS: usize = 1_000;
/// Jobs a query acts on at most per call.
const QUERY_MATCHES: usize = 10_000;
/// Jobs a query examines at most per call.
const QUERY_EXAMINES: u64 = 100_000;
/// Single-job calls in flight at once.
const IN_FLIGHT: usize = 32;

/// What a bulk action does to each job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BulkAction {
    /// Dead jobs back to waiting (RetryJob).
    Retry,
    /// Cancel (CancelJob).
    Cancel,
    /// Delete a job that is not active (DeleteJob).
    Delete,
}

impl BulkAction {
    /// Whether a query over `state` can select jobs this action applies to.
    fn applies_to(self, state: Listing) -> bool {
        match self {
            BulkAction::Retry => state == Listing::Dead,
            BulkAction::Cancel => matches!(state, Listing::Waiting | Listing::Delayed | Listing::Active),
            BulkAction::Delete => state != Listing::Active,
        }
    }
}

/// The jobs a bulk action applies to.
#[derive(Clone, Debug)]
pub enum Selection {
    /// These jobs, 1 to 1,000.
    Ids(Vec<JobId>),
    /// Every job of a queue's listing that matches a filter.
    Query {
        /// The queue.
        queue: String,
        /// The listing.
        state: Listing,
        /// The filter.
        filter: JobFilter,
    },
}

/// What a bulk action did (see the proto's `BulkOutcome`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BulkOutcome {
    /// Jobs it was applied to.
    pub applied: u64,
    /// Jobs selected that it does not apply to, or that were gone.
    pub skipped: u64,
    /// A query stopped at its limits before the end of its listing.
    pub more: bool,
}

impl Admin {
    /// Applies `action` to the jobs of `selection` (see the module doc).
    pub(in crate::queue) async fn bulk(&self, action: BulkAction, selection: Selection) -> Result<BulkOutcome> {
        let (ids, more) = match selection {
            Selection::Ids(ids) => {
                if ids.is_empty() || ids.len() > MAX_IDS {
                    return Err(Error::invalid("selection.ids.job_ids", format!("name 1 to {MAX_IDS} jobs")));
                }
                (ids, false)
            }
            Selection::Query { queue, state, filter } => {
                validate_queue(&queue, "selection.query.queue")?;
                filter.validate("selection.query.filter.")?;
                if !action.applies_to(state) {
                    return Err(Error::invalid("selection.query.state", format!("{action:?} does not apply to it")));
                }
                let mut ids = Vec::new();
                let complete = self
                    .walk_shards(&queue, state, &filter, QUERY_EXAMINES, |view| {
                        ids.push(view.id);
                        ids.len() < QUERY_MATCHES
                    })
                    .await?;
                (ids, !complete)
            }
        };
        let applied: Vec<bool> = futures::stream::iter(ids)
            .map(|id| async move {
                let done = match action {
                    BulkAction::Retry => self.retry_job(&id).await,
                    BulkAction::Cancel => self.cancel(&id).await,
                    BulkAction::Delete => self.delete_job(&id).await,
                };
                match done {
                    Ok(()) => Ok(true),
                    Err(Error::NotFound(_) | Error::Precondition(_)) => Ok(false),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect()
            .await?;
        let done = u64::try_from(applied.iter().filter(|a| **a).count()).unwrap_or(u64::MAX);
        let total = u64::try_from(applied.len()).unwrap_or(u64::MAX);
        Ok(BulkOutcome { applied: done, skipped: total - done, more })
    }
}
