//! The job transitions of the hot paths: add (which may lease jobs for waiting workers in the
//! same call), lease, complete (which may lease the acking workers' next jobs in the same call)
//! — and fail, extend, progress,
//! requeue, reap and reclaim, the other calls a lease holder (or its loss) makes — plus the lease
//! reads that let an owner reconcile its in-flight set. Each is one function call; add, lease and
//! complete have budgeted instruction counts, so nothing here does work per call beyond
//! writing the arguments and decoding the answer.

use std::{sync::Arc, time::Duration};

use foldhash::{HashSet, HashSetExt};

use super::{
    JobRecord, Lease, LeaseToken, RecordState, Result, StoreError,
    args::{
        AddBatchArgs, AddLeaseArgs, AddReply, CompleteArgs, CompleteLeaseArgs, ExtendArgs, FailArgs, FailLeaseArgs,
        LeaseArgs, PostponeArgs, ProgressArgs, ReapArgs, ReclaimArgs, RequeueArgs,
    },
    backend::Backend,
    decoded, tombstones,
};

/// A job handed out by one lease round.
#[derive(Debug)]
pub struct LeasedJob {
    /// The job, within the round's queue.
    pub ulid: String,
    /// Its record as it was when leased (its `attempts` not yet counting this one).
    pub record: JobRecord,
    /// The lease token it was leased with: the one of the round's tokens at its position.
    pub token: String,
    /// When this attempt times out: epoch ms by Redis's clock (the round's `now_ms` plus the
    /// job's timeout).
    pub deadline_ms: i64,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// For a job of a session: the session's state and version at delivery.
    pub session: Option<SessionSnapshot>,
}

/// A session as a job of it is delivered: what the worker computes its next state from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSnapshot {
    /// The session's name within the queue.
    pub name: String,
    /// The session's state document (JSON text), as it was at the delivery.
    pub state: String,
    /// The version of that state, the one a completion writing a new state names.
    pub version: u64,
}

/// What one lease round did (see lua/lease.lua).
#[derive(Debug)]
pub struct LeaseRound {
    /// The jobs leased, in the order of the tokens they took: at most one per token.
    pub jobs: Vec<LeasedJob>,
    /// Timed-out leases `(ulid, token)` whose holders must be told.
    pub revoked: Vec<(String, String)>,
    /// Until the next delayed job or deadline is due.
    pub next_wake: Option<Duration>,
    /// Redis's clock (epoch ms) when the round ran: the queue's one clock.
    pub now_ms: i64,
    /// A rate limit held jobs back: the next round leases what the rate lets go by then, not
    /// what the streams' credit would take.
    pub rate_held: bool,
}

/// The jobs a call leased in passing with the tokens it carried: an ack call with its refill
/// tokens (see lua/complete.lua), an add with those of waiting streams (lua/add.lua).
#[derive(Debug, Default)]
pub struct Refill {
    /// The tokens offered: those of the acks that ended their lease, in ack order; every token
    /// of an add.
    pub offered: Vec<String>,
    /// The jobs leased, the i-th holding the i-th token offered: fewer than offered when the
    /// queue ran short (or is paused).
    pub leased: Vec<LeasedJob>,
    /// The Redis time of the call that leased them (0 when no refill was given).
    pub now_ms: i64,
    /// Until the earliest delayed job is due, as the call left them (None when none is, or no
    /// refill was given).
    pub next_delayed: Option<Duration>,
}

/// What one batch of acks did, and the jobs it leased for their workers.
#[derive(Debug)]
pub struct Completion {
    /// One per ack, in order.
    pub outcomes: Vec<AckOutcome>,
    /// What the refill tokens the acks carried leased.
    pub refill: Refill,
}

/// The outcome of a call that presents a lease token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseCheck {
    /// The token holds the job: the call took effect.
    Held,
    /// No such job in the queue (never added, or no longer retained).
    UnknownJob,
    /// The job exists but this token does not hold it (another holder, or not active):
    /// nothing changed.
    Stale,
}

impl LeaseCheck {
    /// Reads a lease check code of the Lua functions (`check_lease` in lua/lib.lua): 1 held,
    /// 0 unknown job, anything else stale.
    pub fn from_code(code: i64) -> Self {
        match code {
            1 => LeaseCheck::Held,
            0 => LeaseCheck::UnknownJob,
            _ => LeaseCheck::Stale,
        }
    }
}

/// One acknowledgement for `complete`.
pub struct Ack<'a> {
    /// The job, within the queue passed alongside.
    pub ulid: &'a str,
    /// The lease token the completing holder presents.
    pub token: &'a str,
    /// The job's result, kept with the completed job while it is retained.
    pub result: &'a [u8],
    /// A new session state, written atomically with the completion, and the session version
    /// it was computed from (checked when given).
    pub session_state: Option<(&'a str, Option<u64>)>,
}

/// What happened to one acknowledgement (see lua/complete.lua).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckOutcome {
    /// The job is completed (and its result kept, if completed jobs are retained).
    Completed,
    /// No such job in the queue; nothing was written.
    UnknownJob,
    /// The token does not hold the job; nothing was written.
    Stale,
    /// The job had been cancelled; the ack was accepted and the job ended cancelled.
    Cancelled,
    /// The expected session version did not match; nothing was written.
    VersionMismatch,
    /// The job's session was deleted; the job ended cancelled.
    SessionGone,
    /// A session state was given for a job outside any session; nothing was written.
    NotInSession,
}

impl AckOutcome {
    fn from_code(code: i64) -> Self {
        match code {
            1 => AckOutcome::Completed,
            2 => AckOutcome::Cancelled,
            0 => AckOutcome::UnknownJob,
            -2 => AckOutcome::VersionMismatch,
            -3 => AckOutcome::SessionGone,
            -4 => AckOutcome::NotInSession,
            _ => AckOutcome::Stale,
        }
    }
}

/// What the add script needs besides the record.
pub struct AddArgs<'a> {
    /// The new job's id within the queue, chosen by the caller (a ULID: ids sort by time).
    pub ulid: &'a str,
    /// The job as stored, in state `Waiting`; its `idempotency_key`, if any, is checked.
    pub record: &'a JobRecord,
    /// Ready this long after the add; wins over `run_at_ms`.
    pub delay_ms: Option<u64>,
    /// Ready at this epoch ms (Redis's clock); a time already past is ready at once.
    pub run_at_ms: Option<i64>,
    /// How long the record's idempotency key (if any) is remembered, beyond the job's
    /// retention: at least this long, at most a quarter longer (see `tombstones.rs`).
    pub idempotency_window: Duration,
    /// The session (name within the queue) the job belongs to.
    pub session: Option<&'a str>,
}

/// What happened to one job of [`Jobs::add_many`].
#[derive(Debug, PartialEq, Eq)]
pub enum AddOutcome {
    /// Stored, under this ULID (the one given).
    Added(String),
    /// Its idempotency key was seen within the window: nothing was written; the ULID of the
    /// job first added with that key.
    Duplicate(String),
    /// Its session does not exist: nothing was written.
    NoSession,
    /// The queue holds its cap of waiting jobs (this many): nothing was written.
    QueueFull(u64),
}

/// What [`Jobs::add_many`] did: one outcome per job, and whether the caller must register the
/// queue again (jobs went in and the queue had no registry mark: see
/// `Instances::retire_queue`).
#[derive(Debug, PartialEq, Eq)]
pub struct AddReport {
    /// One per job, in order.
    pub outcomes: Vec<AddOutcome>,
    /// Register the queue (after this add): it may have been taken out of the registry.
    pub registers_again: bool,
}

/// What [`Jobs::fail`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct FailOutcome {
    /// Whether the token held the job; anything but `Held` changed nothing.
    pub check: LeaseCheck,
    /// Where the job went: `Retrying` (delayed until `run_at_ms`), `Waiting` (ready again at
    /// once, or back in its session), `Dead` or `Cancelled`; None when the token did not hold
    /// it.
    pub state: Option<RecordState>,
    /// When the job runs again (epoch ms, Redis's clock): the retry's due time for `Retrying`,
    /// the failure's time for `Waiting`; not a due time for the other states.
    pub run_at_ms: i64,
}

/// Redis's time, when the add function refused its call because the tombstone buckets named did
/// not hold those of Redis's clock (its answer is then the one triple `(0, -2, time)`).
fn buckets_missed(refused: &[(i64, i64, String)]) -> Result<Option<u64>> {
    match refused {
        [(0, -2, now)] => {
            now.parse().map(Some).map_err(|_| StoreError::Corrupt(format!("the add script gave the time {now:?}")))
        }
        _ => Ok(None),
    }
}

/// The job transitions (see the module doc).
#[derive(Clone)]
pub struct Jobs {
    backend: Arc<Backend>,
}

impl Jobs {
    pub(super) fn new(backend: Arc<Backend>) -> Self {
        Self { backend }
    }

    /// Adds jobs of one queue in one script call, in order; one outcome per job. A job that
    /// would take the queue's waiting jobs (ready, delayed or retrying, or pending in a session)
    /// past `max_waiting` is `QueueFull`: checked per job inside the script, so the jobs that fit
    /// go in and the rest are refused.
    pub async fn add_many(&self, queue: &str, jobs: &[AddArgs<'_>], max_waiting: Option<u64>) -> Result<AddReport> {
        self.add_many_at(queue, jobs, tombstones::local_now_ms(), max_waiting).await
    }

    /// Adds jobs as `add_many` does, naming the idempotency tombstone buckets from a clock
    /// reading `now_ms` (epoch ms), as if this machine's clock said so. The function picks the
    /// buckets by Redis's clock among those named; when that clock is too far from `now_ms`
    /// for them (see `tombstones.rs`), nothing is written and the call is made once more with
    /// the buckets named from Redis's own time. So any clock gives the same outcome.
    pub async fn add_many_at(
        &self,
        queue: &str,
        jobs: &[AddArgs<'_>],
        now_ms: u64,
        max_waiting: Option<u64>,
    ) -> Result<AddReport> {
        Ok(self.add_and_lease_at(queue, jobs, now_ms, max_waiting, &[]).await?.0)
    }

    /// Adds jobs as `add_many` does, then leases up to one ready job per token in the same call,
    /// as a lease round would (see lua/add.lua): `tokens` are those of worker streams waiting
    /// for the queue's jobs. The refill's jobs hold the tokens in order; fewer than the tokens
    /// when the queue ran short.
    pub async fn add_and_lease(
        &self,
        queue: &str,
        jobs: &[AddArgs<'_>],
        max_waiting: Option<u64>,
        tokens: &[LeaseToken],
    ) -> Result<(AddReport, Refill)> {
        self.add_and_lease_at(queue, jobs, tombstones::local_now_ms(), max_waiting, tokens).await
    }

    /// `add_and_lease` with the tombstone buckets named from `now_ms` (see `add_many_at`).
    pub async fn add_and_lease_at(
        &self,
        queue: &str,
        jobs: &[AddArgs<'_>],
        now_ms: u64,
        max_waiting: Option<u64>,
        tokens: &[LeaseToken],
    ) -> Result<(AddReport, Refill)> {
        let mut args = AddBatchArgs::new(jobs, now_ms, max_waiting)?;
        // The jobs not added, as (job number from 1, code, first ULID or the cap); the rest
        // were added. A call refused for its buckets leased nothing either.
        let (mut refused, mut refill) = self.add_call(queue, &args, tokens).await?;
        if let Some(redis_now) = buckets_missed(&refused)? {
            args.rename_buckets(redis_now);
            (refused, refill) = self.add_call(queue, &args, tokens).await?;
            if buckets_missed(&refused)?.is_some() {
                return Err(StoreError::Redis("add: the tombstone buckets named from Redis's time missed it".into()));
            }
        }
        let mut outcomes: Vec<AddOutcome> = jobs.iter().map(|job| AddOutcome::Added(job.ulid.to_owned())).collect();
        let mut registers_again = false;
        for (n, code, first) in refused {
            if (n, code) == (0, -4) {
                registers_again = true;
                continue;
            }
            let index = usize::try_from(n).ok().and_then(|n| n.checked_sub(1));
            let Some(outcome) = index.and_then(|i| outcomes.get_mut(i)) else {
                return Err(StoreError::Corrupt("the add script named a job it was not given".into()));
            };
            *outcome = match code {
                0 => AddOutcome::Duplicate(first),
                -3 => {
                    AddOutcome::QueueFull(first.parse().map_err(|_| StoreError::Corrupt("an unreadable cap".into()))?)
                }
                _ => AddOutcome::NoSession,
            };
        }
        Ok((AddReport { outcomes, registers_again }, refill))
    }

    /// One call of the add function, with `tokens` to lease with if any.
    async fn add_call(
        &self,
        queue: &str,
        args: &AddBatchArgs<'_>,
        tokens: &[LeaseToken],
    ) -> Result<(AddReply, Refill)> {
        if tokens.is_empty() {
            return Ok((self.backend.call_replicated(queue, args).await?, Refill::default()));
        }
        let (refused, jobs, sessions, now_ms, next_delayed) =
            self.backend.call_replicated(queue, &AddLeaseArgs { add: args, tokens }).await?;
        let leased = leased_jobs(jobs, sessions, tokens, now_ms)?;
        let offered = tokens.iter().map(|t| t.as_str().to_owned()).collect();
        Ok((refused, Refill { offered, leased, now_ms, next_delayed: wait_ms(next_delayed) }))
    }

    /// One dispatcher round (see lua/lease.lua): expire, promote, lease one job per token, and
    /// with `trim`, enforce the retention windows.
    pub async fn lease(&self, queue: &str, tokens: &[LeaseToken], rand: f64, trim: bool) -> Result<LeaseRound> {
        let (jobs, revoked, next_wake, now_ms, sessions, rate_held) =
            self.backend.call(queue, &LeaseArgs { rand, trim, tokens }).await?;
        let leased = leased_jobs(jobs, sessions, tokens, now_ms)?;
        let revoked = revoked.chunks_exact(2).map(|p| (p[0].clone(), p[1].clone())).collect();
        Ok(LeaseRound { jobs: leased, revoked, next_wake: wait_ms(next_wake), now_ms, rate_held: rate_held == 1 })
    }

    /// Completes a batch of attempts; one outcome per entry, in order. The function takes
    /// distinct jobs: an entry repeating an earlier one's job goes in a later call, which sees
    /// what the earlier one did.
    pub async fn complete(&self, queue: &str, acks: &[Ack<'_>]) -> Result<Vec<AckOutcome>> {
        Ok(self.complete_and_lease(queue, acks, &[]).await?.outcomes)
    }

    /// Completes a batch of attempts as `complete` does, and leases the acking workers' next
    /// jobs in the same call: `refills[i]`, when given, is the lease token of ack i's next job,
    /// leased when that ack ended its lease and a job is ready (see lua/complete.lua).
    pub async fn complete_and_lease(
        &self,
        queue: &str,
        acks: &[Ack<'_>],
        refills: &[Option<&str>],
    ) -> Result<Completion> {
        let mut completion = Completion { outcomes: vec![AckOutcome::Stale; acks.len()], refill: Refill::default() };
        let mut pending: Vec<usize> = (0..acks.len()).collect();
        while !pending.is_empty() {
            let mut seen = HashSet::new();
            let (batch, later): (Vec<usize>, Vec<usize>) =
                pending.into_iter().partition(|&i| seen.insert(acks[i].ulid));
            let distinct: Vec<&Ack<'_>> = batch.iter().map(|&i| &acks[i]).collect();
            let batch_refills: Vec<Option<&str>> = batch.iter().map(|&i| refills.get(i).copied().flatten()).collect();
            let codes = if batch_refills.iter().all(Option::is_none) {
                self.backend.call_replicated(queue, &CompleteArgs { acks: &distinct }).await?
            } else {
                let args = CompleteLeaseArgs { acks: &distinct, refills: &batch_refills };
                let (codes, offered, jobs, sessions, now_ms, next_delayed) =
                    self.backend.call_replicated(queue, &args).await?;
                let refill = &mut completion.refill;
                refill.leased.extend(leased_jobs(jobs, sessions, &offered, now_ms)?);
                refill.offered.extend(offered);
                refill.now_ms = now_ms;
                refill.next_delayed = wait_ms(next_delayed);
                codes
            };
            if codes.len() != batch.len() {
                return Err(StoreError::Corrupt("the complete script answered for another number of acks".into()));
            }
            for (i, code) in batch.into_iter().zip(codes) {
                completion.outcomes[i] = AckOutcome::from_code(code);
            }
            pending = later;
        }
        Ok(completion)
    }

    /// Ends a held attempt as failed (see lua/fail.lua): the job is retried after its backoff
    /// (or `retry_after`) while it is retryable and has attempts left, else dead; cancelled
    /// instead when it was cancelled meanwhile or its session is gone.
    pub async fn fail(&self, queue: &str, args: &FailArgs<'_>) -> Result<FailOutcome> {
        Ok(self.fail_and_lease(queue, args, None).await?.0)
    }

    /// Fails an attempt as `fail` does and, with a `refill` token, leases the worker's next job
    /// with it in the same call when the fail ended the lease (see lua/fail.lua).
    pub async fn fail_and_lease(
        &self,
        queue: &str,
        args: &FailArgs<'_>,
        refill: Option<&str>,
    ) -> Result<(FailOutcome, Refill)> {
        let ((code, state, run_at_ms), leased) = match refill {
            None => (self.backend.call(queue, args).await?, Refill::default()),
            Some(refill) => {
                let (code, state, run_at_ms, jobs, sessions, now_ms, next_delayed) =
                    self.backend.call(queue, &FailLeaseArgs { fail: *args, refill }).await?;
                // The token is offered when the fail ended the lease.
                let offered = if code == 1 { vec![refill.to_owned()] } else { Vec::new() };
                let leased = leased_jobs(jobs, sessions, &offered, now_ms)?;
                ((code, state, run_at_ms), Refill { offered, leased, now_ms, next_delayed: wait_ms(next_delayed) })
            }
        };
        let state = match state {
            1 => Some(RecordState::Waiting),
            4 => Some(RecordState::Retrying),
            6 => Some(RecordState::Dead),
            7 => Some(RecordState::Cancelled),
            _ => None,
        };
        Ok((FailOutcome { check: LeaseCheck::from_code(code), state, run_at_ms }, leased))
    }

    /// Hands a held job back to run again after `delay` ("rate limited upstream, retry after"),
    /// without spending an attempt or counting a lost delivery; with `hold_key`, no job of its
    /// rate key starts before then either (see lua/postpone.lua). The outcome's state is
    /// `Delayed` (or `Waiting` for no delay, `Cancelled` for a job cancelled meanwhile).
    pub async fn postpone(
        &self,
        queue: &str,
        ulid: &str,
        token: &str,
        delay: Duration,
        hold_key: bool,
    ) -> Result<FailOutcome> {
        let (code, state, run_at_ms) = self.backend.call(queue, &PostponeArgs { ulid, token, delay, hold_key }).await?;
        let state = match state {
            1 => Some(RecordState::Waiting),
            2 => Some(RecordState::Delayed),
            7 => Some(RecordState::Cancelled),
            _ => None,
        };
        Ok(FailOutcome { check: LeaseCheck::from_code(code), state, run_at_ms })
    }

    /// Moves a held attempt's deadline to now + `by`; returns the check and the new deadline.
    pub async fn extend(&self, queue: &str, ulid: &str, token: &str, by: Duration) -> Result<(LeaseCheck, i64)> {
        let (code, deadline) = self.backend.call(queue, &ExtendArgs { ulid, token, by }).await?;
        Ok((LeaseCheck::from_code(code), deadline))
    }

    /// Stores a held attempt's progress; returns 1 held, 0 unknown, -1 stale.
    pub async fn progress(&self, queue: &str, ulid: &str, token: &str, progress: &[u8]) -> Result<i64> {
        self.backend.call(queue, &ProgressArgs { ulid, token, progress }).await
    }

    /// Returns held leases `(ulid, token)` to the head of their queue; `lost` counts the
    /// delivery as lost (and buries jobs lost `max_lost` times). Returns how many moved.
    pub async fn requeue(&self, queue: &str, leases: &[(String, String)], lost: bool, max_lost: u32) -> Result<u64> {
        let moved = self.backend.call(queue, &RequeueArgs { lost, max_lost, leases }).await?;
        decoded(moved, "the requeued count")
    }

    /// Returns every lease of `queue` held by one of `dead` instances or taken with one of the
    /// lease tokens in `dead`. Returns how many.
    pub async fn reap(&self, queue: &str, dead: &[String]) -> Result<u64> {
        let mut cursor = "0".to_owned();
        let mut total: u64 = 0;
        loop {
            let (next, moved) = self.backend.call(queue, &ReapArgs { cursor: &cursor, count: 200, dead }).await?;
            total = total.saturating_add(decoded(moved, "the reaped count")?);
            if next == "0" {
                return Ok(total);
            }
            cursor = next;
        }
    }

    /// One page of the leases of `queue`, `(ulid, lease)`, from `cursor` of an HSCAN over its
    /// active hash (`count` entries, about): the next cursor (0 when the scan is complete) and
    /// the page. A plain read, for the reconciliation to find the leases naming its instance
    /// that its view lacks; one that does not parse is corrupt data.
    pub async fn lease_page(&self, queue: &str, cursor: u64, count: u32) -> Result<(u64, Vec<(String, Lease)>)> {
        let keys = self.backend.queue_keys(queue);
        let (next, raw): (u64, Vec<(String, String)>) = self
            .backend
            .with_conn(async |c| {
                redis::cmd("HSCAN").arg(keys.active()).arg(cursor).arg("COUNT").arg(count).query_async(c).await
            })
            .await?;
        let page = raw
            .into_iter()
            .map(|(ulid, lease)| {
                let lease = Lease::parse(&lease).ok_or_else(|| StoreError::Corrupt("an unreadable lease".into()))?;
                Ok((ulid, lease))
            })
            .collect::<Result<_>>()?;
        Ok((next, page))
    }

    /// Returns leases `(ulid, token)` that their instance found it does not hold to the head of
    /// their queue (see lua/reclaim.lua): only those still held by the token and at least
    /// `min_age` old; not a lost delivery. Returns how many moved.
    pub async fn reclaim(&self, queue: &str, leases: &[(String, String)], min_age: Duration) -> Result<u64> {
        let moved = self.backend.call(queue, &ReclaimArgs { min_age, leases }).await?;
        decoded(moved, "the reclaimed count")
    }

    /// The current leases of `ulids` (None where the job holds no lease), for reconciliation.
    pub async fn leases(&self, queue: &str, ulids: &[String]) -> Result<Vec<Option<Lease>>> {
        if ulids.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.backend.queue_keys(queue);
        let raw: Vec<Option<String>> = self
            .backend
            .with_conn(async |c| redis::cmd("HMGET").arg(keys.active()).arg(ulids).query_async(c).await)
            .await?;
        raw.iter().map(|l| Lease::decode(l.as_deref())).collect()
    }
}

/// The jobs a lease answered, `jobs` {ULID, record} and `sessions` {job number, state,
/// version}, the i-th job holding `tokens[i]`, leased at `now_ms`.
fn leased_jobs(
    jobs: Vec<(String, Vec<u8>)>,
    sessions: Vec<(i64, String, i64)>,
    tokens: &[impl AsRef<str>],
    now_ms: i64,
) -> Result<Vec<LeasedJob>> {
    if jobs.len() > tokens.len() {
        return Err(StoreError::Corrupt("a lease leased more jobs than it had tokens".into()));
    }
    let mut leased = Vec::with_capacity(jobs.len());
    for ((ulid, raw), token) in jobs.into_iter().zip(tokens) {
        let record = JobRecord::decode(&raw, None)?;
        // Decoded from an i64, so it fits one.
        let timeout_ms = i64::try_from(record.timeout_ms).unwrap_or(i64::MAX);
        leased.push(LeasedJob {
            ulid,
            token: token.as_ref().to_owned(),
            deadline_ms: now_ms.saturating_add(timeout_ms),
            attempt: record.attempts.saturating_add(1),
            session: None,
            record,
        });
    }
    for (n, state, version) in sessions {
        let index = usize::try_from(n).ok().and_then(|n| n.checked_sub(1));
        let Some(job) = index.and_then(|i| leased.get_mut(i)) else {
            return Err(StoreError::Corrupt("a lease named a session of no leased job".into()));
        };
        let name = job.record.session_name().unwrap_or_default().to_owned();
        job.session = Some(SessionSnapshot { name, state, version: decoded(version, "a session version")? });
    }
    Ok(leased)
}

/// A wait in ms as the functions answer it, -1 for none.
fn wait_ms(ms: i64) -> Option<Duration> {
    u64::try_from(ms).ok().map(Duration::from_millis)
}
