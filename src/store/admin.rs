//! Operator-facing store calls: cancel, pause, retry, delete, purge, progress, listings, and the
//! registry of connected workers.

use std::collections::HashMap;

use redis::AsyncCommands;

use super::{JobRecord, Lease, Result, Store};

/// The outcome of `cancel` (see lua/cancel.lua).
#[derive(Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled,
    /// Active: marked; the holder of this lease token must be told.
    Marked(String),
    UnknownJob,
    AlreadyFinished,
}

/// Job states an operator can list or purge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    Waiting,
    Delayed,
    Active,
    Completed,
    Dead,
    Cancelled,
}

impl Listing {
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

impl Store {
    pub async fn cancel(&self, queue: &str, ulid: &str) -> Result<CancelOutcome> {
        let keys = self.queue_keys(queue);
        let mut inv = self.invocation(&self.scripts.cancel, queue, &keys);
        inv.arg(ulid);
        let (code, token): (i64, String) = self.run(&inv).await?;
        Ok(match code {
            1 => CancelOutcome::Cancelled,
            2 => CancelOutcome::Marked(token),
            0 => CancelOutcome::UnknownJob,
            _ => CancelOutcome::AlreadyFinished,
        })
    }

    /// Stores a held attempt's progress; returns 1 held, 0 unknown, -1 stale.
    pub async fn progress(&self, queue: &str, ulid: &str, token: &str, progress: &[u8]) -> Result<i64> {
        let keys = self.queue_keys(queue);
        let mut inv = self.invocation(&self.scripts.progress, queue, &keys);
        inv.arg(ulid).arg(token).arg(progress);
        self.run(&inv).await
    }

    pub async fn set_paused(&self, queue: &str, paused: bool) -> Result<()> {
        let keys = self.queue_keys(queue);
        let mut inv = self.invocation(&self.scripts.pause, queue, &keys);
        inv.arg(if paused { 1 } else { 0 });
        let _: i64 = self.run(&inv).await?;
        Ok(())
    }

    /// Retries one dead job (`Some(ulid)`) or up to `limit` of the oldest. Returns the script's
    /// code (1 done, 0 unknown, -1 not dead, -2 session gone) and how many moved.
    pub async fn retry_dead(&self, queue: &str, ulid: Option<&str>, limit: u64) -> Result<(i64, u64)> {
        let keys = self.queue_keys(queue);
        let mut inv = self.invocation(&self.scripts.retry, queue, &keys);
        inv.arg(ulid.unwrap_or_default()).arg(limit);
        self.run(&inv).await
    }

    /// Deletes a job that is not active: 1 deleted, 0 unknown, -1 active.
    pub async fn delete(&self, queue: &str, ulid: &str) -> Result<i64> {
        let keys = self.queue_keys(queue);
        let mut inv = self.invocation(&self.scripts.delete, queue, &keys);
        inv.arg(ulid);
        self.run(&inv).await
    }

    /// Removes every job in `states` (never active ones), in bounded script calls.
    pub async fn purge(&self, queue: &str, states: &[Listing]) -> Result<u64> {
        let names: Vec<&str> = states.iter().filter(|s| **s != Listing::Active).map(|s| s.name()).collect();
        if names.is_empty() {
            return Ok(0);
        }
        let keys = self.queue_keys(queue);
        let mut total = 0;
        loop {
            let mut inv = self.invocation(&self.scripts.purge, queue, &keys);
            inv.arg(names.join(",")).arg(1_000);
            let removed: u64 = self.run(&inv).await?;
            total += removed;
            if removed == 0 {
                return Ok(total);
            }
        }
    }

    /// A page of jobs in one state: `offset` into the state's order (ready order for waiting,
    /// due time for delayed, newest first for finished jobs, hash order for active).
    /// Returns the jobs (with their leases when active) and the next offset, if any.
    pub async fn list_jobs(
        &self,
        queue: &str,
        state: Listing,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<(String, JobRecord, Option<Lease>)>, Option<u64>)> {
        let keys = self.queue_keys(queue);
        let (ids, next): (Vec<String>, Option<u64>) = self
            .with_conn(async |c| {
                let end = (offset + limit) as isize - 1;
                let ids: Vec<String> = match state {
                    Listing::Waiting => {
                        // Walk the ready lists in dispatch order as one sequence.
                        let mut ids = Vec::new();
                        let mut skip = offset;
                        for key in keys.ready() {
                            let len: u64 = c.llen(key).await?;
                            if skip >= len {
                                skip -= len;
                                continue;
                            }
                            let want = limit + 1 - ids.len() as u64;
                            let page: Vec<String> = c.lrange(key, skip as isize, (skip + want) as isize - 1).await?;
                            skip = 0;
                            ids.extend(page);
                            if ids.len() as u64 > limit {
                                break;
                            }
                        }
                        ids
                    }
                    Listing::Delayed => c.zrange(keys.delayed(), offset as isize, end + 1).await?,
                    Listing::Completed => {
                        // Oldest first in the list: the newest page is counted from its tail.
                        let from_tail = -(offset as isize);
                        let mut ids: Vec<String> =
                            c.lrange(keys.completed(), from_tail - limit as isize - 1, from_tail - 1).await?;
                        ids.reverse();
                        ids
                    }
                    Listing::Dead => c.zrevrange(keys.dead(), offset as isize, end + 1).await?,
                    Listing::Cancelled => c.zrevrange(keys.cancelled(), offset as isize, end + 1).await?,
                    Listing::Active => {
                        let mut all: Vec<String> = c.hkeys(keys.active()).await?;
                        all.sort();
                        all.into_iter().skip(offset as usize).take(limit as usize + 1).collect()
                    }
                };
                let more = ids.len() as u64 > limit;
                Ok((ids.into_iter().take(limit as usize).collect(), more.then_some(offset + limit)))
            })
            .await?;
        if ids.is_empty() {
            return Ok((Vec::new(), None));
        }
        type Stored = (Vec<Option<Vec<u8>>>, Vec<Option<String>>, Vec<Option<Vec<u8>>>);
        let mut reads = redis::pipe();
        for key in [keys.jobs(), keys.active(), keys.outcomes()] {
            reads.cmd("HMGET").arg(key).arg(&ids);
        }
        let (records, leases, outcomes): Stored = self.with_conn(async |c| reads.query_async(c).await).await?;
        let mut jobs = Vec::with_capacity(ids.len());
        for (((ulid, raw), lease), outcome) in ids.into_iter().zip(records).zip(leases).zip(outcomes) {
            if let Some(raw) = raw {
                let record = JobRecord::decode(&raw, outcome.as_deref())?;
                jobs.push((ulid, record, lease.as_deref().and_then(Lease::parse)));
            }
        }
        Ok((jobs, next))
    }

    /// Publishes this instance's worker streams (JSON), kept for `ttl`.
    pub async fn set_workers(&self, instance: &str, workers_json: &str, ttl: std::time::Duration) -> Result<()> {
        let key = self.keys.workers(instance);
        self.with_conn(async |c| c.pset_ex(&key, workers_json, ttl.as_millis() as u64).await).await
    }

    /// The worker lists (JSON) of every registered instance, by instance id.
    pub async fn workers(&self) -> Result<HashMap<String, String>> {
        let instances_key = self.keys.instances();
        let instances: Vec<String> = self.with_conn(async |c| c.zrange(&instances_key, 0, -1).await).await?;
        if instances.is_empty() {
            return Ok(HashMap::new());
        }
        let keys: Vec<String> = instances.iter().map(|i| self.keys.workers(i)).collect();
        let lists: Vec<Option<String>> =
            self.with_conn(async |c| redis::cmd("MGET").arg(&keys).query_async(c).await).await?;
        Ok(instances.into_iter().zip(lists).filter_map(|(i, l)| l.map(|l| (i, l))).collect())
    }
}
