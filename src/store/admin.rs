//! Operator-facing calls: cancel, pause, retry, delete, purge, paged listings of a state, a
//! queue's figures and one job's record. None is on a hot path; listings read structures
//! directly, everything that changes state is one function call.

use std::sync::Arc;

use redis::AsyncCommands;

use super::{
    JobRecord, Lease, Result, StoreError,
    args::{CancelArgs, DeleteArgs, InfoArgs, PauseArgs, PurgeArgs, RetryArgs, StatsArgs},
    backend::Backend,
    decoded,
    keys::QueueKeys,
};

/// The outcome of `cancel` (see lua/cancel.lua).
#[derive(Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was waiting, delayed or pending in its session: now cancelled.
    Cancelled,
    /// Active: marked; the holder of this lease token must be told, and whatever happens to
    /// the attempt next ends the job cancelled.
    Marked(String),
    /// No such job in the queue.
    UnknownJob,
    /// Completed, dead or cancelled already: nothing changed.
    AlreadyFinished,
}

/// Job states an operator can list or purge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    /// Ready to run, in dispatch order.
    Waiting,
    /// Waiting for a delay, a `run_at` or a retry backoff, by due time.
    Delayed,
    /// Leased to a worker.
    Active,
    /// Completed and retained, newest first.
    Completed,
    /// In the dead-letter set, newest first.
    Dead,
    /// Cancelled and retained, newest first.
    Cancelled,
}

impl Listing {
    /// The state's name, as `lua/purge.lua` reads it.
    pub fn name(self) -> &'static str {
        match self {
            Listing::Waiting => "waiting",
            Listing::Delayed => "delayed",
            Listing::Active => "active",
            Listing::Completed => "completed",
            Listing::Dead => "dead",
            Listing::Cancelled => "cancelled",
        }
    }
}

/// Raw counts of one queue, read in one step (lua/stats.lua).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueueCounts {
    /// Jobs in the ready lists (not those still pending inside a session).
    pub waiting: u64,
    /// Jobs waiting for a delay, a `run_at` or a retry backoff.
    pub delayed: u64,
    /// Jobs leased to a worker.
    pub active: u64,
    /// Completed jobs retained.
    pub completed: u64,
    /// Dead jobs retained.
    pub dead: u64,
    /// Dead jobs dropped past the dead window or cap, in all (a running total).
    pub dead_evicted: u64,
    /// Whether the queue is paused (delivers nothing; adds still succeed).
    pub paused: bool,
    /// Since when the oldest ready job has been ready (epoch ms); None when none is ready.
    pub oldest_ready_ms: Option<i64>,
    /// Redis's clock when the counts were read (epoch ms).
    pub now_ms: i64,
    /// Cancelled jobs retained.
    pub cancelled: u64,
    /// Sessions of the queue.
    pub sessions: u64,
    /// Jobs still waiting inside their session (not yet released to the queue).
    pub session_pending: u64,
    /// Completed jobs dropped under memory pressure (`Memory::shed`), in all.
    pub completed_shed: u64,
    /// Cancelled jobs dropped under memory pressure, in all.
    pub cancelled_shed: u64,
    /// Dead jobs dropped under memory pressure (only when configured), in all.
    pub dead_shed: u64,
    /// Event stream entries dropped under memory pressure, in all.
    pub events_shed: u64,
    /// The queue's concurrency cap (its setting), None without one.
    pub concurrency: Option<u64>,
    /// Ready jobs a rate limit holds back now: None when the queue's own rate lets none go (all
    /// of `waiting` are held); else those of the keys over their `key_rate`.
    pub held_by_rate: Option<u64>,
    /// Ready jobs whose concurrency key is at its cap.
    pub held_by_key_concurrency: u64,
    /// Rate and concurrency keys (pairs of them) with jobs waiting.
    pub waiting_keys: u64,
}

/// See [`Admin::snapshot`].
#[derive(Debug)]
pub struct JobSnapshot {
    /// The job's record, its completion's outcome applied.
    pub record: JobRecord,
    /// Its lease while active.
    pub lease: Option<Lease>,
    /// The id of the queue's latest event at the time of the read ("0-0" when none).
    pub last_event: String,
}

/// One job of a listing: its position in the listing's order, ULID, record and lease while
/// active.
pub type ListedJob = (u64, String, JobRecord, Option<Lease>);

/// A page of jobs, and the offset of the next page.
type Page = (Vec<ListedJob>, Option<u64>);

/// An offset or length of a listing as Redis's signed index (saturating: no structure is near).
fn index(n: u64) -> isize {
    isize::try_from(n).unwrap_or(isize::MAX)
}

/// The operator calls (see the module doc).
#[derive(Clone)]
pub struct Admin {
    backend: Arc<Backend>,
}

impl Admin {
    pub(super) fn new(backend: Arc<Backend>) -> Self {
        Self { backend }
    }

    /// Cancels one job (see lua/cancel.lua and [`CancelOutcome`]).
    pub async fn cancel(&self, queue: &str, ulid: &str) -> Result<CancelOutcome> {
        let (code, token) = self.backend.call(queue, &CancelArgs { ulid }).await?;
        Ok(match code {
            1 => CancelOutcome::Cancelled,
            2 => CancelOutcome::Marked(token),
            0 => CancelOutcome::UnknownJob,
            _ => CancelOutcome::AlreadyFinished,
        })
    }

    /// Pauses (nothing is delivered; adds still succeed) or resumes the queue, waking its
    /// dispatchers on resume.
    pub async fn set_paused(&self, queue: &str, paused: bool) -> Result<()> {
        self.backend.call(queue, &PauseArgs { paused }).await?;
        Ok(())
    }

    /// Retries one dead job (`Some(ulid)`) or up to `limit` of the oldest. Returns the script's
    /// code (1 done, 0 unknown, -1 not dead, -2 session gone) and how many moved.
    pub async fn retry_dead(&self, queue: &str, ulid: Option<&str>, limit: u64) -> Result<(i64, u64)> {
        let (code, moved) = self.backend.call(queue, &RetryArgs { ulid, limit }).await?;
        Ok((code, decoded(moved, "the retried count")?))
    }

    /// Deletes a job that is not active: 1 deleted, 0 unknown, -1 active.
    pub async fn delete(&self, queue: &str, ulid: &str) -> Result<i64> {
        self.backend.call(queue, &DeleteArgs { ulid }).await
    }

    /// Removes every job in `states` (never active ones), in bounded script calls.
    pub async fn purge(&self, queue: &str, states: &[Listing]) -> Result<u64> {
        let names: Vec<&str> = states.iter().filter(|s| **s != Listing::Active).map(|s| s.name()).collect();
        if names.is_empty() {
            return Ok(0);
        }
        let states = names.join(",");
        let mut total: u64 = 0;
        let mut cursor = String::new();
        loop {
            let (removed, next) =
                self.backend.call(queue, &PurgeArgs { states: &states, batch: 1_000, cursor: &cursor }).await?;
            total = total.saturating_add(decoded(removed, "the purged count")?);
            if removed == 0 && next.is_empty() {
                return Ok(total);
            }
            cursor = next;
        }
    }

    /// The queue's counts, read in one step.
    pub async fn stats(&self, queue: &str) -> Result<QueueCounts> {
        let v = self.backend.call(queue, &StatsArgs).await?;
        let [
            waiting,
            delayed,
            active,
            completed,
            dead,
            dead_evicted,
            paused,
            oldest,
            now_ms,
            cancelled,
            sessions,
            pending,
            completed_shed,
            cancelled_shed,
            dead_shed,
            events_shed,
            concurrency,
            held_by_rate,
            held_by_key_cap,
            waiting_keys,
        ] = v[..]
        else {
            return Err(StoreError::Corrupt("stats script returned the wrong arity".into()));
        };
        Ok(QueueCounts {
            waiting: decoded(waiting, "the waiting count")?,
            delayed: decoded(delayed, "the delayed count")?,
            active: decoded(active, "the active count")?,
            completed: decoded(completed, "the completed count")?,
            dead: decoded(dead, "the dead count")?,
            dead_evicted: decoded(dead_evicted, "the evicted count")?,
            paused: paused == 1,
            oldest_ready_ms: (oldest >= 0).then_some(oldest),
            now_ms,
            cancelled: decoded(cancelled, "the cancelled count")?,
            sessions: decoded(sessions, "the session count")?,
            session_pending: decoded(pending, "the session-pending count")?,
            completed_shed: decoded(completed_shed, "the completed shed count")?,
            cancelled_shed: decoded(cancelled_shed, "the cancelled shed count")?,
            dead_shed: decoded(dead_shed, "the dead shed count")?,
            events_shed: decoded(events_shed, "the events shed count")?,
            concurrency: (concurrency >= 0).then(|| decoded(concurrency, "the concurrency cap")).transpose()?,
            held_by_rate: if held_by_rate < 0 { None } else { Some(decoded(held_by_rate, "the jobs held by rate")?) },
            held_by_key_concurrency: decoded(held_by_key_cap, "the jobs held by key caps")?,
            waiting_keys: decoded(waiting_keys, "the keys waiting")?,
        })
    }

    /// One job's record and its lease while active; None when the job is not retained.
    pub async fn info(&self, queue: &str, ulid: &str) -> Result<Option<(JobRecord, Option<Lease>)>> {
        Ok(self.snapshot(queue, ulid).await?.map(|s| (s.record, s.lease)))
    }

    /// A job and the id of the queue's latest event, read in one step: events after that id are
    /// exactly the transitions after this snapshot.
    pub async fn snapshot(&self, queue: &str, ulid: &str) -> Result<Option<JobSnapshot>> {
        let (raw, lease, last_event, outcome) = self.backend.call(queue, &InfoArgs { ulid }).await?;
        let Some(raw) = raw else { return Ok(None) };
        Ok(Some(JobSnapshot {
            record: JobRecord::decode(&raw, outcome.as_deref())?,
            lease: Lease::decode(lease.as_deref())?,
            last_event,
        }))
    }

    /// A page of jobs in one state: `offset` into the state's order (ready order for waiting,
    /// due time for delayed, newest first for finished jobs, hash order for active).
    /// Returns the jobs (with their positions, and their leases when active) and the next
    /// offset, if any.
    pub async fn list_jobs(&self, queue: &str, state: Listing, offset: u64, limit: u64) -> Result<Page> {
        let keys = self.backend.queue_keys(queue);
        // One more than a page: whether it comes tells whether there is a next page.
        let want = limit.saturating_add(1);
        let (first, last) = (index(offset), index(offset.saturating_add(limit)));
        let mut ids: Vec<String> = match state {
            Listing::Waiting => self.ready_page(&keys, offset, want).await?,
            _ => {
                self.backend
                    .with_conn(async |c| match state {
                        Listing::Delayed => c.zrange(keys.delayed(), first, last).await,
                        Listing::Completed => {
                            // Oldest first in the list: the newest page is counted from its tail.
                            let mut ids: Vec<String> =
                                c.lrange(keys.completed(), -first - index(limit) - 1, -first - 1).await?;
                            ids.reverse();
                            Ok(ids)
                        }
                        Listing::Dead => c.zrevrange(keys.dead(), first, last).await,
                        Listing::Cancelled => c.zrevrange(keys.cancelled(), first, last).await,
                        Listing::Active | Listing::Waiting => {
                            let mut all: Vec<String> = c.hkeys(keys.active()).await?;
                            all.sort();
                            Ok(all.into_iter().skip(usize::try_from(offset).unwrap_or(usize::MAX)).collect())
                        }
                    })
                    .await?
            }
        };
        let page = usize::try_from(limit).unwrap_or(usize::MAX);
        let next = (ids.len() > page).then_some(offset.saturating_add(limit));
        ids.truncate(page);
        if ids.is_empty() {
            return Ok((Vec::new(), None));
        }
        type Stored = (Vec<Option<Vec<u8>>>, Vec<Option<String>>, Vec<Option<Vec<u8>>>);
        let mut reads = redis::pipe();
        for key in [keys.jobs(), keys.active(), keys.outcomes()] {
            reads.cmd("HMGET").arg(key).arg(&ids);
        }
        let (records, leases, outcomes): Stored = self.backend.with_conn(async |c| reads.query_async(c).await).await?;
        let mut jobs = Vec::with_capacity(ids.len());
        let found = ids.into_iter().zip(records).zip(leases).zip(outcomes);
        for (position, (((ulid, raw), lease), outcome)) in (offset..).zip(found) {
            if let Some(raw) = raw {
                let record = JobRecord::decode(&raw, outcome.as_deref())?;
                jobs.push((position, ulid, record, Lease::decode(lease.as_deref())?));
            }
        }
        Ok((jobs, next))
    }

    /// Up to `want` ready ULIDs from `offset` on, walking the ready lists in dispatch order as
    /// one sequence: their lengths in one round trip, then the ranges that hold the page.
    async fn ready_page(&self, keys: &QueueKeys, offset: u64, want: u64) -> Result<Vec<String>> {
        let mut lengths = redis::pipe();
        for key in keys.ready() {
            lengths.cmd("LLEN").arg(key);
        }
        let lengths: Vec<i64> = self.backend.with_conn(async |c| lengths.query_async(c).await).await?;
        let mut ranges = redis::pipe();
        let (mut skip, mut left) = (offset, want);
        for (key, len) in keys.ready().iter().zip(lengths) {
            let len: u64 = decoded(len, "a ready list's length")?;
            if left == 0 {
                break;
            }
            if skip >= len {
                skip -= len;
                continue;
            }
            let take = left.min(len - skip);
            ranges.cmd("LRANGE").arg(key).arg(skip).arg(skip + take - 1);
            left -= take;
            skip = 0;
        }
        if left == want {
            return Ok(Vec::new());
        }
        let pages: Vec<Vec<String>> = self.backend.with_conn(async |c| ranges.query_async(c).await).await?;
        Ok(pages.concat())
    }
}
