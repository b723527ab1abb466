//! Walking a listing a chunk at a time, for what a plain page cannot answer: filtered pages, the
//! jobs a bulk query selects, and the dead-letter groups.
//!
//! A walk reads the listing in its order (`store::Admin::list_jobs`, one pipelined read per
//! chunk of [`CHUNK`] jobs) and hands each job's view to a visitor, until the visitor has enough,
//! the listing ends, or the walk has examined its limit. Positions are offsets into the listing,
//! as page tokens are: a listing that changes between chunks may show a job twice or skip one,
//! as paging by hand would.

use std::collections::HashMap;
use std::time::SystemTime;

use super::{Admin, Listing, filter::JobFilter};
use crate::queue::{
    error::Result,
    job::{JobId, JobView, validate_queue},
};

/// Jobs read per round trip. Records are read whole (payload included), so this bounds what one
/// chunk holds in memory too.
const CHUNK: u64 = 250;
/// Jobs a filtered page examines at most.
const PAGE_EXAMINES: u64 = 10_000;
/// Dead jobs the grouping examines at most, newest first.
const GROUPS_EXAMINE: u64 = 10_000;
/// Groups returned at most.
const MAX_GROUPS: usize = 500;
/// Bytes of a group's example error kept.
const EXAMPLE_BYTES: usize = 4_096;

/// Where a walk stopped.
pub(super) struct Walked {
    /// The position to go on from; None when the listing ended.
    pub(super) next: Option<u64>,
    /// Jobs read.
    examined: u64,
}

/// Dead jobs whose errors share a group (see `filter::error_group`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadGroup {
    /// The group.
    pub group: String,
    /// Dead jobs in it.
    pub count: u64,
    /// The last error of its newest job, cut to 4 KiB.
    pub example: String,
    /// Its newest job.
    pub newest_job: JobId,
    /// When its newest job died.
    pub newest_at: SystemTime,
    /// When its oldest job died.
    pub oldest_at: SystemTime,
}

/// The groups of a queue's dead jobs, and how much of the dead-letter set they cover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadGroups {
    /// Largest first.
    pub groups: Vec<DeadGroup>,
    /// Dead jobs examined.
    pub examined: u64,
    /// Whether every dead job was examined.
    pub complete: bool,
}

impl Admin {
    /// Visits the jobs of `state` from `offset` on that match `filter`, until `visit` returns
    /// false (the walk then goes on after that job) or `examine` jobs have been read.
    pub(super) async fn walk(
        &self,
        queue: &str,
        state: Listing,
        filter: &JobFilter,
        offset: u64,
        examine: u64,
        mut visit: impl FnMut(JobView) -> bool,
    ) -> Result<Walked> {
        let mut from = offset;
        let mut examined = 0;
        while from - offset < examine {
            let chunk = CHUNK.min(examine - (from - offset));
            let (jobs, next) = self.store.admin().list_jobs(queue, state.into(), from, chunk).await?;
            for (position, ulid, record, lease) in jobs {
                examined += 1;
                let view = JobView::new(JobId::new(queue, &ulid), record, lease);
                if filter.matches(&view) && !visit(view) {
                    return Ok(Walked { next: Some(position + 1), examined });
                }
            }
            match next {
                Some(next) => from = next,
                None => return Ok(Walked { next: None, examined }),
            }
        }
        Ok(Walked { next: Some(from), examined })
    }

    /// As `walk` from the start, over every shard of `queue` one after the other, `examine`
    /// jobs at most in all; answers whether every shard was walked to its end.
    pub(super) async fn walk_shards(
        &self,
        queue: &str,
        state: Listing,
        filter: &JobFilter,
        examine: u64,
        mut visit: impl FnMut(JobView) -> bool,
    ) -> Result<bool> {
        let mut left = examine;
        for shard in self.overrides.shards_of(queue).await?.iter() {
            let mut enough = false;
            let walked = self
                .walk(shard, state, filter, 0, left, |view| {
                    enough = !visit(view);
                    !enough
                })
                .await?;
            left = left.saturating_sub(walked.examined);
            if walked.next.is_some() || enough || left == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// A page of the jobs of `state` matching `filter`, from `offset`, examining at most
    /// [`PAGE_EXAMINES`] jobs; and the next page's offset.
    pub(super) async fn filtered_page(
        &self,
        queue: &str,
        state: Listing,
        filter: &JobFilter,
        offset: u64,
        page_size: u64,
    ) -> Result<(Vec<JobView>, Option<u64>)> {
        let mut page = Vec::new();
        let wanted = usize::try_from(page_size).unwrap_or(usize::MAX);
        let walked = self
            .walk(queue, state, filter, offset, PAGE_EXAMINES, |view| {
                page.push(view);
                page.len() < wanted
            })
            .await?;
        Ok((page, walked.next))
    }

    /// The newest [`GROUPS_EXAMINE`] dead jobs of `queue` (of each shard in turn, newest
    /// first, when it is sharded), grouped by error.
    pub(in crate::queue) async fn dead_groups(&self, queue: &str) -> Result<DeadGroups> {
        validate_queue(queue, "queue")?;
        let mut groups: HashMap<String, DeadGroup> = HashMap::new();
        let mut examined = 0;
        let complete = self
            .walk_shards(queue, Listing::Dead, &JobFilter::default(), GROUPS_EXAMINE, |view| {
                examined += 1;
                let error = view.last_error.unwrap_or_default();
                let died = view.finished_at.unwrap_or(view.created_at);
                let group = super::filter::error_group(&error);
                // Newest first: the first job seen of a group is its newest.
                let entry = groups.entry(group.clone()).or_insert_with(|| DeadGroup {
                    group,
                    count: 0,
                    example: cut(&error, EXAMPLE_BYTES),
                    newest_job: view.id.clone(),
                    newest_at: died,
                    oldest_at: died,
                });
                entry.count += 1;
                entry.oldest_at = entry.oldest_at.min(died);
                true
            })
            .await?;
        let mut groups: Vec<DeadGroup> = groups.into_values().collect();
        groups.sort_by(|a, b| b.count.cmp(&a.count).then(b.newest_at.cmp(&a.newest_at)));
        groups.truncate(MAX_GROUPS);
        Ok(DeadGroups { groups, examined, complete })
    }
}

/// `text` cut to at most `limit` bytes, on a character boundary.
fn cut(text: &str, limit: usize) -> String {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}
