//! The model: one queue as the README, the proto and the Lua headers describe it, in memory.
//! Every method takes what the store's call takes and answers what the store should answer; it
//! reads the clock only as the store reports it (a lease round's `now_ms`, a failure's
//! `run_at_ms`), so the model decides everything else itself.
//!
//! The ready lists keep FIFO order within a priority, with one tolerance: the jobs a reap puts
//! back go to the head in the order Redis's HSCAN walks the active hash, which no document
//! promises, so they form one group whose members may leave in any order (the group as a whole
//! still leaves before everything behind it).

use std::collections::{BTreeMap, HashMap, VecDeque};

use jobwire::store::{AckOutcome, CancelOutcome, LeaseCheck, RecordState};

use crate::scripts::Places;

/// The jobwire instance a lease round runs for; reaping `Second` stands for its death.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instance {
    First,
    Second,
}

impl Instance {
    pub fn id(self) -> &'static str {
        match self {
            Instance::First => crate::scripts::INSTANCE,
            Instance::Second => "i2",
        }
    }
}

/// Where a job is, as the documents define it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    Waiting,
    Delayed { due_ms: i64 },
    Retrying { due_ms: i64 },
    Active { token: String, attempt: u32, deadline_ms: i64, instance: Instance },
    Completed,
    Dead,
    Cancelled,
}

/// One job of the model.
#[derive(Clone, Debug)]
pub struct Job {
    pub ulid: String,
    pub priority: i32,
    pub max_attempts: u32,
    pub timeout_ms: i64,
    /// The fixed wait before a retry (0: ready again at once).
    pub backoff_ms: i64,
    pub place: Place,
    /// Attempts that ended; an active attempt is not counted yet.
    pub attempts: u32,
    pub lost: u32,
    /// Cancelled while active: whatever ends the attempt ends the job cancelled.
    pub cancel: bool,
    /// The last error recorded: "timeout", "lost" or the test's failure message.
    pub error: Option<&'static str>,
    /// The last lease token the job was leased with.
    pub last_token: Option<String>,
}

/// The error message of every failure the tests report (the one `Case::fail` sends).
pub const FAILURE: &str = "boom";

/// One queue (see the module doc).
#[derive(Default)]
pub struct Model {
    pub jobs: Vec<Job>,
    pub paused: bool,
    /// Idempotency key -> the ULID first added with it (the window outlasts every case).
    keys: HashMap<u8, String>,
    by_ulid: HashMap<String, usize>,
    /// Ready lists by priority, each a line of groups (see the module doc).
    ready: BTreeMap<i32, VecDeque<Vec<usize>>>,
}

impl Model {
    /// The job first added with `key`, if any: a repeat add of it is a duplicate.
    pub fn first_with_key(&self, key: u8) -> Option<&str> {
        self.keys.get(&key).map(String::as_str)
    }

    /// The job of a ULID.
    pub fn index_of(&self, ulid: &str) -> Option<usize> {
        self.by_ulid.get(ulid).copied()
    }

    /// A job the store added (waiting, or delayed until `due_ms`).
    pub fn added(&mut self, job: Job, key: Option<u8>) {
        let index = self.jobs.len();
        if let Some(key) = key {
            self.keys.insert(key, job.ulid.clone());
        }
        self.by_ulid.insert(job.ulid.clone(), index);
        let waiting = job.place == Place::Waiting;
        self.jobs.push(job);
        if waiting {
            self.push(index, false);
        }
    }

    /// A lease round at `now_ms` with `tokens` (all of `instance`) in which the store leased
    /// `leased` (ULIDs, one per token from the first): expires the attempts past their deadline,
    /// readies the delayed jobs that are due, then checks each lease against the ready lists.
    /// Returns the revocations the round must report, `(ULID, token)` by deadline.
    pub fn lease_round(
        &mut self,
        now_ms: i64,
        tokens: &[String],
        instance: Instance,
        leased: &[String],
    ) -> Result<Vec<(String, String)>, String> {
        let revoked = self.expire(now_ms);
        let mut due: Vec<(i64, String, usize)> = self
            .jobs
            .iter()
            .enumerate()
            .filter_map(|(i, j)| match j.place {
                Place::Delayed { due_ms } | Place::Retrying { due_ms } if due_ms <= now_ms => {
                    Some((due_ms, j.ulid.clone(), i))
                }
                _ => None,
            })
            .collect();
        due.sort();
        for (_, _, i) in due {
            self.jobs[i].place = Place::Waiting;
            self.push(i, false);
        }
        if self.paused && !leased.is_empty() {
            return Err(format!("a paused queue leased {leased:?}"));
        }
        for (ulid, token) in leased.iter().zip(tokens) {
            let i = self.take_next(ulid)?;
            let job = &mut self.jobs[i];
            job.place = Place::Active {
                token: token.clone(),
                attempt: job.attempts + 1,
                deadline_ms: now_ms + job.timeout_ms,
                instance,
            };
            job.last_token = Some(token.clone());
        }
        if leased.len() < tokens.len() && !self.paused && self.ready.values().any(|line| !line.is_empty()) {
            return Err(format!("{} tokens leased only {} jobs while others were ready", tokens.len(), leased.len()));
        }
        Ok(revoked)
    }

    /// The attempts past their deadline, failed with "timeout" in deadline order.
    fn expire(&mut self, now_ms: i64) -> Vec<(String, String)> {
        let mut expired: Vec<(i64, String, usize, String, u32)> = self
            .jobs
            .iter()
            .enumerate()
            .filter_map(|(i, j)| match &j.place {
                Place::Active { token, attempt, deadline_ms, .. } if *deadline_ms <= now_ms => {
                    Some((*deadline_ms, j.ulid.clone(), i, token.clone(), *attempt))
                }
                _ => None,
            })
            .collect();
        expired.sort();
        expired
            .into_iter()
            .map(|(_, ulid, i, token, attempt)| {
                let retry_at = now_ms + self.jobs[i].backoff_ms;
                self.attempt_failed(i, attempt, "timeout", true, retry_at);
                (ulid, token)
            })
            .collect()
    }

    /// Removes `ulid` from the head of the highest priority that holds jobs, where a lease must
    /// take it from.
    fn take_next(&mut self, ulid: &str) -> Result<usize, String> {
        let wanted = self.index_of(ulid).ok_or_else(|| format!("leased {ulid}, a job never added"))?;
        let Some((priority, line)) = self.ready.iter_mut().rev().find(|(_, line)| !line.is_empty()) else {
            return Err(format!("leased {ulid} while no job was ready"));
        };
        let head = line.front_mut().ok_or("an empty line")?;
        let Some(at) = head.iter().position(|&i| i == wanted) else {
            let expected: Vec<&str> = head.iter().map(|&i| self.jobs[i].ulid.as_str()).collect();
            return Err(format!("leased {ulid}; the next at priority {priority} is one of {expected:?}"));
        };
        head.remove(at);
        if head.is_empty() {
            line.pop_front();
        }
        Ok(wanted)
    }

    /// CompleteJob with `token`.
    pub fn complete(&mut self, i: usize, token: &str) -> AckOutcome {
        let Some(attempt) = self.held(i, token) else { return AckOutcome::Stale };
        let job = &mut self.jobs[i];
        job.attempts = attempt;
        if job.cancel {
            job.place = Place::Cancelled;
            AckOutcome::Cancelled
        } else {
            job.place = Place::Completed;
            AckOutcome::Completed
        }
    }

    /// FailJob with `token`; `run_at_ms` is what the store answered (the retry's due time).
    /// Returns the check and new state the store must answer, and for a retry the wait after
    /// the failure's time that `run_at_ms` must show.
    pub fn fail(
        &mut self,
        i: usize,
        token: &str,
        retryable: bool,
        run_at_ms: i64,
    ) -> (LeaseCheck, Option<RecordState>, Option<i64>) {
        let Some(attempt) = self.held(i, token) else { return (LeaseCheck::Stale, None, None) };
        let state = self.attempt_failed(i, attempt, FAILURE, retryable, run_at_ms);
        let wait = matches!(state, RecordState::Retrying | RecordState::Waiting).then_some(self.jobs[i].backoff_ms);
        (LeaseCheck::Held, Some(state), wait)
    }

    /// The requeue of a stream's leases (`lost`: the stream ended) or of leases handed back;
    /// pairs are `(job, token)` in delivery order. Returns how many moved.
    pub fn requeue(&mut self, pairs: &[(usize, String)], lost: bool, max_lost: u32) -> u64 {
        let mut moved = 0;
        for (i, token) in pairs.iter().rev() {
            if self.held(*i, token).is_none() {
                continue;
            }
            moved += 1;
            let job = &mut self.jobs[*i];
            if lost && !job.cancel {
                job.lost += 1;
                if job.lost >= max_lost {
                    job.error = Some("lost");
                    job.place = Place::Dead;
                    continue;
                }
            }
            self.back_to_queue(*i, true);
        }
        moved
    }

    /// The reap of every lease of a dead `instance`; returns how many.
    pub fn reap(&mut self, instance: Instance) -> u64 {
        let reaped: Vec<usize> = (0..self.jobs.len())
            .filter(|&i| matches!(self.jobs[i].place, Place::Active { instance: of, .. } if of == instance))
            .collect();
        let mut groups: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for &i in &reaped {
            let job = &mut self.jobs[i];
            if job.cancel {
                job.place = Place::Cancelled;
            } else {
                job.place = Place::Waiting;
                groups.entry(job.priority).or_default().push(i);
            }
        }
        for (priority, group) in groups {
            self.ready.entry(priority).or_default().push_front(group);
        }
        u64::try_from(reaped.len()).unwrap_or(u64::MAX)
    }

    /// CancelJob.
    pub fn cancel(&mut self, i: usize) -> CancelOutcome {
        match &self.jobs[i].place {
            Place::Active { token, .. } => {
                let token = token.clone();
                self.jobs[i].cancel = true;
                CancelOutcome::Marked(token)
            }
            Place::Completed | Place::Dead | Place::Cancelled => CancelOutcome::AlreadyFinished,
            Place::Waiting | Place::Delayed { .. } | Place::Retrying { .. } => {
                self.unlist(i);
                self.jobs[i].place = Place::Cancelled;
                CancelOutcome::Cancelled
            }
        }
    }

    /// RetryJob of one job: (code, moved) as lua/retry.lua answers.
    pub fn retry(&mut self, i: usize) -> (i64, u64) {
        if self.jobs[i].place != Place::Dead {
            return (-1, 0);
        }
        let job = &mut self.jobs[i];
        job.attempts = 0;
        job.lost = 0;
        job.place = Place::Waiting;
        self.push(i, false);
        (1, 1)
    }

    /// The counts `stats` must report.
    pub fn counts(&self) -> Places {
        let waiting = self.ready.values().flatten().map(Vec::len).sum::<usize>();
        let mut places = Places { waiting: waiting.try_into().unwrap_or(u64::MAX), ..Places::default() };
        for job in &self.jobs {
            let count = match job.place {
                Place::Waiting => continue,
                Place::Delayed { .. } | Place::Retrying { .. } => &mut places.delayed,
                Place::Active { .. } => &mut places.active,
                Place::Completed => &mut places.completed,
                Place::Dead => &mut places.dead,
                Place::Cancelled => &mut places.cancelled,
            };
            *count += 1;
        }
        places
    }

    /// The attempt `token` holds, if it holds job `i`.
    fn held(&self, i: usize, token: &str) -> Option<u32> {
        match &self.jobs[i].place {
            Place::Active { token: held, attempt, .. } if held == token => Some(*attempt),
            _ => None,
        }
    }

    /// An attempt ended as failed (its lease is gone): cancelled when cancel was asked, dead
    /// without a retry left, else retrying until `retry_at_ms` (ready at once without backoff).
    fn attempt_failed(
        &mut self,
        i: usize,
        attempt: u32,
        error: &'static str,
        retryable: bool,
        retry_at_ms: i64,
    ) -> RecordState {
        let job = &mut self.jobs[i];
        job.attempts = attempt;
        job.error = Some(error);
        if job.cancel {
            job.place = Place::Cancelled;
            return RecordState::Cancelled;
        }
        if !retryable || attempt >= job.max_attempts {
            job.place = Place::Dead;
            return RecordState::Dead;
        }
        if job.backoff_ms > 0 {
            job.place = Place::Retrying { due_ms: retry_at_ms };
            return RecordState::Retrying;
        }
        self.back_to_queue(i, false);
        RecordState::Waiting
    }

    /// A job back in its ready list, unless it was cancelled meanwhile.
    fn back_to_queue(&mut self, i: usize, at_head: bool) {
        if self.jobs[i].cancel {
            self.jobs[i].place = Place::Cancelled;
        } else {
            self.jobs[i].place = Place::Waiting;
            self.push(i, at_head);
        }
    }

    fn push(&mut self, i: usize, at_head: bool) {
        let line = self.ready.entry(self.jobs[i].priority).or_default();
        if at_head {
            line.push_front(vec![i]);
        } else {
            line.push_back(vec![i]);
        }
    }

    fn unlist(&mut self, i: usize) {
        if let Some(line) = self.ready.get_mut(&self.jobs[i].priority) {
            for group in line.iter_mut() {
                group.retain(|&j| j != i);
            }
            line.retain(|group| !group.is_empty());
        }
    }
}
