//! Job administration: job info, cancel, pause/resume, retry, delete, purge, listings and the
//! figures of queues. Beside it: `filter.rs` (which jobs a filter means, error groups),
//! `walk.rs` (filtered pages and dead-letter groups, walking a listing in chunks), `bulk.rs`
//! (retry, cancel, delete of a selection or a query) and `activity.rs` (jobs per minute).
//!
//! Owns nothing but the domain types of what it reads (`QueueFigures`, `Listing`): the store's
//! types are converted here, so the transport sees only this layer's. Calls `registry` (pausing
//! a queue registers it), `leases` (`Leases::tell_owner`: an active job that is cancelled is
//! revoked through its lease's owner) and `overrides` (`shards_of`: what is asked of a sharded
//! queue is done on each of its shards and the answers summed or listed one after the other;
//! ListQueues shows it as one queue).

mod activity;
mod bulk;
mod filter;
mod walk;

use std::{collections::BTreeSet, sync::Arc, time::Duration};

pub use activity::ActivityMinute;
pub(super) use activity::validate_queues;
pub use bulk::{BulkAction, BulkOutcome, Selection};
pub use filter::{JobFilter, error_group};
pub use walk::{DeadGroup, DeadGroups};

use super::{
    error::{Error, Result},
    job::{JobId, JobView, validate_queue},
    leases::{Leases, Notice, RevokeReason},
    overrides::Overrides,
    registry::QueueRegistry,
    shards,
};
use crate::store::{self, CancelOutcome, LeaseToken, QueueCounts, Store};

const MAX_PAGE: u64 = 1_000;

/// What a queue holds, as Stats and ListQueues show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueFigures {
    /// Jobs ready to run.
    pub waiting: u64,
    /// Jobs waiting for a delay, a run time or a retry's backoff.
    pub delayed: u64,
    /// Jobs delivered and not yet answered.
    pub active: u64,
    /// Completed jobs still retained.
    pub completed: u64,
    /// Dead jobs still retained.
    pub dead: u64,
    /// Dead jobs dropped by the retention (age or count cap) since the queue began.
    pub dead_evicted: u64,
    /// The queue delivers nothing while paused.
    pub paused: bool,
    /// How long the oldest waiting job has waited (zero when none waits).
    pub oldest_waiting: Duration,
    /// Cancelled jobs still retained.
    pub cancelled: u64,
    /// Sessions of the queue.
    pub sessions: u64,
    /// Jobs still waiting inside their session (not yet released to the queue).
    pub session_pending: u64,
    /// Completed jobs dropped under memory pressure since the queue began.
    pub completed_shed: u64,
    /// Cancelled jobs dropped under memory pressure since the queue began.
    pub cancelled_shed: u64,
    /// Dead jobs dropped under memory pressure (only with `MemoryLimits::shed_dead`).
    pub dead_shed: u64,
    /// Event stream entries dropped under memory pressure since the queue began.
    pub events_shed: u64,
    /// The queue's concurrency cap, None without one.
    pub concurrency_limit: Option<u64>,
    /// Jobs ready to run but held back because the queue is at its concurrency cap: all of
    /// `waiting` while it is, else 0.
    pub held_by_concurrency: u64,
    /// Ready jobs held back by a rate limit: all of `waiting` while the queue's own rate lets
    /// none go, else the jobs of the keys over their `key_rate`.
    pub held_by_rate: u64,
    /// Ready jobs whose concurrency key is at its cap (`key_concurrency`).
    pub held_by_key_concurrency: u64,
    /// Keys (pairs of rate and concurrency key) with jobs waiting.
    pub waiting_keys: u64,
}

impl QueueFigures {
    /// The figures of two shards of one queue as one: counts summed, paused if either is, the
    /// longer wait; the limits are the queue's (the same in every shard).
    pub(super) fn plus(self, o: Self) -> Self {
        Self {
            waiting: self.waiting + o.waiting,
            delayed: self.delayed + o.delayed,
            active: self.active + o.active,
            completed: self.completed + o.completed,
            dead: self.dead + o.dead,
            dead_evicted: self.dead_evicted + o.dead_evicted,
            paused: self.paused || o.paused,
            oldest_waiting: self.oldest_waiting.max(o.oldest_waiting),
            cancelled: self.cancelled + o.cancelled,
            sessions: self.sessions + o.sessions,
            session_pending: self.session_pending + o.session_pending,
            completed_shed: self.completed_shed + o.completed_shed,
            cancelled_shed: self.cancelled_shed + o.cancelled_shed,
            dead_shed: self.dead_shed + o.dead_shed,
            events_shed: self.events_shed + o.events_shed,
            concurrency_limit: self.concurrency_limit,
            held_by_concurrency: self.held_by_concurrency + o.held_by_concurrency,
            held_by_rate: self.held_by_rate + o.held_by_rate,
            held_by_key_concurrency: self.held_by_key_concurrency + o.held_by_key_concurrency,
            waiting_keys: self.waiting_keys + o.waiting_keys,
        }
    }

    /// No job waiting, delayed, active or dead (the figures the per-queue gauges watch).
    pub(super) fn holds_no_job(&self) -> bool {
        self.waiting == 0 && self.delayed == 0 && self.active == 0 && self.dead == 0 && self.session_pending == 0
    }
}

impl From<QueueCounts> for QueueFigures {
    fn from(c: QueueCounts) -> Self {
        let oldest = c.oldest_ready_ms.map_or(0, |since| (c.now_ms - since).max(0));
        let at_cap = c.concurrency.is_some_and(|cap| c.active >= cap);
        Self {
            waiting: c.waiting,
            delayed: c.delayed,
            active: c.active,
            completed: c.completed,
            dead: c.dead,
            dead_evicted: c.dead_evicted,
            paused: c.paused,
            oldest_waiting: Duration::from_millis(u64::try_from(oldest).unwrap_or_default()),
            cancelled: c.cancelled,
            sessions: c.sessions,
            session_pending: c.session_pending,
            completed_shed: c.completed_shed,
            cancelled_shed: c.cancelled_shed,
            dead_shed: c.dead_shed,
            events_shed: c.events_shed,
            concurrency_limit: c.concurrency,
            held_by_concurrency: if at_cap { c.waiting } else { 0 },
            held_by_rate: c.held_by_rate.unwrap_or(c.waiting),
            held_by_key_concurrency: c.held_by_key_concurrency,
            waiting_keys: c.waiting_keys,
        }
    }
}

/// The jobs of one state, for listings and purges (delayed and retrying jobs are one listing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    /// Jobs ready to run.
    Waiting,
    /// Delayed and retrying jobs.
    Delayed,
    /// Jobs delivered and not yet answered (listed, never purged).
    Active,
    /// Completed jobs still retained.
    Completed,
    /// Dead jobs still retained.
    Dead,
    /// Cancelled jobs still retained.
    Cancelled,
}

impl From<Listing> for store::Listing {
    fn from(listing: Listing) -> Self {
        match listing {
            Listing::Waiting => store::Listing::Waiting,
            Listing::Delayed => store::Listing::Delayed,
            Listing::Active => store::Listing::Active,
            Listing::Completed => store::Listing::Completed,
            Listing::Dead => store::Listing::Dead,
            Listing::Cancelled => store::Listing::Cancelled,
        }
    }
}

/// The admin room.
pub(super) struct Admin {
    store: Arc<Store>,
    registry: Arc<QueueRegistry>,
    leases: Arc<Leases>,
    /// A sharded queue's shards, which every read and action on the queue covers.
    overrides: Arc<Overrides>,
}

impl Admin {
    pub(super) fn new(
        store: Arc<Store>,
        registry: Arc<QueueRegistry>,
        leases: Arc<Leases>,
        overrides: Arc<Overrides>,
    ) -> Self {
        Self { store, registry, leases, overrides }
    }

    pub(super) async fn info(&self, job_id: &JobId) -> Result<JobView> {
        let found = self.store.admin().info(&job_id.queue, &job_id.ulid).await?;
        let (record, lease) = found.ok_or_else(|| job_id.not_found())?;
        Ok(JobView::new(job_id.clone(), record, lease))
    }

    /// The figures of a queue, summed over its shards when it is sharded.
    pub(super) async fn stats(&self, queue: &str) -> Result<QueueFigures> {
        validate_queue(queue, "queue")?;
        let mut figures: Option<QueueFigures> = None;
        for shard in self.overrides.shards_of(queue).await?.iter() {
            let more: QueueFigures = self.store.admin().stats(shard).await?.into();
            figures = Some(match figures {
                Some(sum) => sum.plus(more),
                None => more,
            });
        }
        figures.ok_or(Error::Internal)
    }

    /// Every queue in the global registry with its figures, one Stats call per queue (per shard
    /// of a sharded one, which shows as one queue).
    pub(super) async fn list_queues(&self) -> Result<Vec<(String, QueueFigures)>> {
        // A shard in the registry stands for its queue, registered or not (an add goes to a
        // shard and registers only it).
        let queues: BTreeSet<String> =
            self.store.instances().queues().await?.iter().map(|q| shards::logical(q).to_owned()).collect();
        let mut out = Vec::with_capacity(queues.len());
        for queue in queues {
            let figures = self.stats(&queue).await?;
            out.push((queue, figures));
        }
        Ok(out)
    }

    /// Cancels a job: waiting or delayed ones at once; an active one is marked and its worker
    /// told, and it ends cancelled whatever the worker answers.
    pub(super) async fn cancel(&self, job_id: &JobId) -> Result<()> {
        let counted = || {
            if let Some(m) = crate::telemetry::queue(shards::logical(&job_id.queue)) {
                m.cancelled.increment(1);
            }
        };
        match self.store.admin().cancel(&job_id.queue, &job_id.ulid).await? {
            CancelOutcome::Cancelled => {
                counted();
                Ok(())
            }
            CancelOutcome::Marked(token) => {
                counted();
                if let Some(token) = LeaseToken::parse(&token) {
                    self.leases.tell_owner(Notice::Revoke(RevokeReason::Cancelled), job_id, &token).await;
                }
                Ok(())
            }
            CancelOutcome::UnknownJob => Err(job_id.not_found()),
            CancelOutcome::AlreadyFinished => {
                Err(Error::Precondition(format!("job_id: job {job_id} has already finished")))
            }
        }
    }

    /// Pauses or resumes a queue: every shard of a sharded one, one after the other.
    pub(super) async fn set_paused(&self, queue: &str, paused: bool) -> Result<()> {
        validate_queue(queue, "queue")?;
        for shard in self.overrides.shards_of(queue).await?.iter() {
            self.registry.register(shard).await?;
            self.store.admin().set_paused(shard, paused).await?;
            // The shard may have left the registry between the registration and the write.
            self.registry.register_again(shard).await;
        }
        Ok(())
    }

    pub(super) async fn retry_job(&self, job_id: &JobId) -> Result<()> {
        match self.store.admin().retry_dead(&job_id.queue, Some(&job_id.ulid), 1).await?.0 {
            1 => Ok(()),
            0 => Err(job_id.not_found()),
            -1 => Err(Error::Precondition(format!("job_id: job {job_id} is not dead"))),
            _ => Err(Error::Precondition(format!("job_id: the session of job {job_id} was deleted"))),
        }
    }

    /// Moves up to `limit` of the oldest dead jobs back to ready; returns how many.
    pub(super) async fn retry_dead(&self, queue: &str, limit: u64) -> Result<u64> {
        validate_queue(queue, "queue")?;
        if limit == 0 || limit > 100_000 {
            return Err(Error::invalid("limit", "must be from 1 to 100000"));
        }
        let mut moved = 0;
        for shard in self.overrides.shards_of(queue).await?.iter() {
            while moved < limit {
                let batch = (limit - moved).min(MAX_PAGE);
                let (_, n) = self.store.admin().retry_dead(shard, None, batch).await?;
                moved += n;
                if n < batch {
                    break;
                }
            }
        }
        Ok(moved)
    }

    pub(super) async fn delete_job(&self, job_id: &JobId) -> Result<()> {
        match self.store.admin().delete(&job_id.queue, &job_id.ulid).await? {
            1 => Ok(()),
            0 => Err(job_id.not_found()),
            _ => Err(Error::Precondition(format!("job_id: job {job_id} is active; cancel it first"))),
        }
    }

    pub(super) async fn purge(&self, queue: &str, states: &[Listing]) -> Result<u64> {
        validate_queue(queue, "queue")?;
        if states.is_empty() {
            return Err(Error::invalid("states", "name at least one state"));
        }
        if states.contains(&Listing::Active) {
            return Err(Error::invalid("states", "active jobs cannot be purged; cancel them"));
        }
        let states: Vec<store::Listing> = states.iter().map(|s| (*s).into()).collect();
        let mut purged = 0;
        for shard in self.overrides.shards_of(queue).await?.iter() {
            purged += self.store.admin().purge(shard, &states).await?;
        }
        Ok(purged)
    }

    /// A page of jobs in one state matching `filter`; the token is opaque (empty: first page;
    /// returned empty on the last page). A filtered page examines a bounded part of the listing
    /// (`walk.rs`), so it may be short, or empty, and still have a next page. A sharded queue
    /// is listed shard after shard (its token says which: `<shard>.<offset>`), so a page ends
    /// where a shard does and may be short too.
    pub(super) async fn list_jobs(
        &self,
        queue: &str,
        state: Listing,
        page_size: u64,
        token: &str,
        filter: &JobFilter,
    ) -> Result<(Vec<JobView>, String)> {
        validate_queue(queue, "queue")?;
        filter.validate("filter.")?;
        let bad_token = || Error::invalid("page_token", "is not a token this server issued");
        let (index, offset) = shards::parse_page(token).ok_or_else(bad_token)?;
        let offset: u64 = if offset.is_empty() { 0 } else { offset.parse().map_err(|_| bad_token())? };
        let names = self.overrides.shards_of(queue).await?;
        let queue = names.get(index).ok_or_else(bad_token)?.as_str();
        let page_size = page_size.clamp(1, MAX_PAGE);
        let (views, next) = if filter.is_empty() {
            let (jobs, next) = self.store.admin().list_jobs(queue, state.into(), offset, page_size).await?;
            let views = jobs
                .into_iter()
                .map(|(_, ulid, record, lease)| JobView::new(JobId::new(queue, &ulid), record, lease))
                .collect();
            (views, next)
        } else {
            self.filtered_page(queue, state, filter, offset, page_size).await?
        };
        Ok((views, shards::next_page(index, names.len(), next.map(|n| n.to_string()))))
    }
}
