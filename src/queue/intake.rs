//! Intake: jobs coming in. One path for a single add and a batch: each job is validated,
//! prepared for the add script, added, and its outcome turned into the caller's answer (counted,
//! recorded in its `job.add` span) the same way. Concurrent single adds of one queue share a
//! script call (`coalesce.rs`: fewer calls under load, no wait when idle); a batch goes in one
//! call per chunk of each queue, in request order, so it keeps its FIFO order (and a repeated
//! idempotency key within it is a duplicate). Each job's key is remembered for the window of its
//! kind: the idempotency window for a key the caller chose, the retry window for one its client
//! generated for its own retries.
//!
//! Room for the job is checked twice: against Redis's memory before anything is sent (`memory`:
//! `check_room`, a lock and no Redis call), and against the queue's cap of waiting jobs
//! (its `max_waiting` setting, else `--max-waiting`) inside the add script, per job and
//! atomically. A job without its own attempts, timeout or backoff takes the queue's defaults
//! (`overrides`: `prepare`, which also picks a sharded queue's shard). AddJob is refused whole;
//! AddJobs is refused whole when Redis is full as it arrives, and otherwise answers each entry:
//! the jobs that fit under the cap go in and the rest are refused, as an entry naming a missing
//! session is, and the entries of a chunk Redis itself refused for memory are refused each
//! (its earlier chunks went in).
//!
//! Owns: the coalescer of single adds. Calls `overrides` (`prepare`), `memory`
//! (`check_room`, `refusal`), `registry` (a
//! queue's first add here registers it before the add, within `--max-queues`: a queue past the
//! cap gets no job and no entry; only a first add Redis then refuses for memory leaves the entry
//! of a queue with no keys. An add into a session skips that: the session's creation registered
//! its queue, and a missing session must not register one), `background` (no adds once the instance stops) and `leases`
//! (`Leases::plan_add_leases` and `settle_add_leases`: an add of a queue whose streams here
//! wait leases their jobs in its own call, see `leases/adds.rs`; `Leases::wake`: any other add
//! with new work wakes the queue's dispatcher here; other instances hear of it from the add
//! script itself).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tracing::{Instrument, Span, field::Empty};

use super::{
    background::Background,
    coalesce::Coalescer,
    error::{Error, Result},
    job::{Added, JobId, NewJob, Schedule, SessionId, duration_ms, to_ms},
    leases::Leases,
    memory::Memory,
    overrides::Overrides,
    registry::QueueRegistry,
    settings::Limits,
};
use crate::{
    store::{AddArgs, AddOutcome, AddReport, JobRecord, Store, StoreError},
    telemetry::{self, SPAN_TARGET, TraceContext, traceparent},
};

/// Most jobs of one queue one batch script call carries.
const MAX_CHUNK: usize = 500;

/// How long idempotency keys are remembered, by who made them up.
#[derive(Clone, Copy, Debug)]
pub(super) struct KeyWindows {
    /// A key the caller chose: the idempotency window.
    pub(super) chosen: Duration,
    /// A key the client library generated for its own retries: the retry window.
    pub(super) generated: Duration,
}

/// The intake room: the add path and the coalescer of single adds.
pub(super) struct Intake {
    store: Arc<Store>,
    registry: Arc<QueueRegistry>,
    leases: Arc<Leases>,
    memory: Arc<Memory>,
    overrides: Arc<Overrides>,
    background: Background,
    limits: Limits,
    windows: KeyWindows,
    /// The most jobs a queue may hold waiting (`Settings::max_waiting`), unless the queue's
    /// settings say otherwise (the add function reads them).
    max_waiting: Option<u64>,
    /// Single adds, coalesced per queue.
    adds: Arc<Coalescer<Prepared, Answer>>,
}

/// What an intake is given besides the rooms it calls.
pub(super) struct IntakeSettings {
    pub limits: Limits,
    pub windows: KeyWindows,
    pub max_waiting: Option<u64>,
}

impl Intake {
    pub(super) fn new(
        store: Arc<Store>,
        registry: Arc<QueueRegistry>,
        leases: Arc<Leases>,
        memory: Arc<Memory>,
        overrides: Arc<Overrides>,
        background: Background,
        settings: IntakeSettings,
    ) -> Self {
        let IntakeSettings { limits, windows, max_waiting } = settings;
        Self {
            store,
            registry,
            leases,
            memory,
            overrides,
            background,
            limits,
            windows,
            max_waiting,
            adds: Arc::default(),
        }
    }

    /// Adds one job, in a `job.add` span carrying the trace context of its `traceparent`
    /// header.
    pub(super) async fn add(&self, job: NewJob) -> Result<Added> {
        let span = add_span(&job.queue, &job.headers);
        self.add_in_span(job, &span).instrument(span.clone()).await
    }

    async fn add_in_span(&self, mut job: NewJob, span: &Span) -> Result<Added> {
        self.background.check_open()?;
        job.validate(&self.limits, "")?;
        self.memory.check_room()?;
        let queue = self.overrides.prepare(&mut job).await?;
        let prepared = Prepared::new(job, self.windows);
        let session = prepared.session.clone();
        if session.is_none() {
            self.registry.register(&queue).await?;
        }
        let max_waiting = self.max_waiting;
        let (store, leases, lane) = (self.store.clone(), self.leases.clone(), queue.clone());
        let run = move |items: Vec<Prepared>| {
            let (store, leases, lane) = (store.clone(), leases.clone(), lane.clone());
            async move {
                let args: Vec<AddArgs> = items.iter().map(Prepared::args).collect();
                let (report, leased) = add_leasing(&store, &leases, &lane, &args, max_waiting).await?;
                let registers_again = report.registers_again;
                Ok(report.outcomes.into_iter().map(|outcome| Answer { outcome, registers_again, leased }).collect())
            }
        };
        let answer = self.adds.submit(&queue, prepared, run).await.map_err(|e| self.memory.refusal(e))?;
        let added = accepted(&queue, answer.outcome, session.as_ref(), "", span)?;
        if answer.registers_again {
            self.registry.register_again(&queue).await;
        } else if session.is_some() {
            self.note_registered(&queue).await;
        }
        if !added.duplicate && !answer.leased {
            self.leases.wake(&queue);
        }
        Ok(added)
    }

    /// Adds a batch: one answer per entry, in order. An entry the caller could not even read
    /// comes in as its error and goes out as it came; the others are each added on their own.
    /// The batch as a whole is checked against the caps first.
    pub(super) async fn add_batch(&self, entries: Vec<Result<NewJob>>) -> Result<Vec<Result<Added>>> {
        if entries.is_empty() {
            return Err(Error::invalid("jobs", "must hold at least one job"));
        }
        self.background.check_open()?;
        self.memory.check_room()?;
        let readable = || entries.iter().filter_map(|e| e.as_ref().ok());
        let count = readable().count();
        if count > self.limits.max_batch_jobs {
            return Err(Error::TooLarge(format!(
                "jobs: {count} jobs is over the limit of {}",
                self.limits.max_batch_jobs
            )));
        }
        let bytes: usize = readable().map(NewJob::size).sum();
        if bytes > self.limits.max_batch_bytes {
            return Err(Error::TooLarge(format!(
                "jobs: {bytes} bytes in all is over the limit of {} bytes",
                self.limits.max_batch_bytes
            )));
        }
        // Every entry still held by `by_queue` gets its answer below.
        let mut results: Vec<Result<Added>> = Vec::with_capacity(entries.len());
        let mut by_queue: BTreeMap<String, Vec<(usize, Prepared)>> = BTreeMap::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let job = entry.and_then(|job| job.validate(&self.limits, &format!("jobs[{i}].")).map(|()| job));
            match job {
                Ok(mut job) => {
                    let shard = self.overrides.prepare(&mut job).await?;
                    by_queue.entry(shard).or_default().push((i, Prepared::new(job, self.windows)));
                    results.push(Err(Error::Internal));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        for (queue, items) in by_queue {
            let all_in_sessions = items.iter().all(|(_, p)| p.session.is_some());
            match if all_in_sessions { Ok(()) } else { self.registry.register(&queue).await } {
                Ok(()) => {}
                // Past --max-queues: this queue's entries are refused, the others go on.
                Err(Error::Full(message)) => {
                    for (i, _) in &items {
                        results[*i] = Err(Error::Full(message.clone()));
                    }
                    continue;
                }
                Err(e) => return Err(e),
            }
            let mut any_in = false;
            // Whether a chunk went in without leasing for waiting streams: its jobs wake the
            // dispatcher.
            let mut wakes = false;
            let mut registers_again = false;
            for chunk in items.chunks(MAX_CHUNK) {
                let args: Vec<AddArgs> = chunk.iter().map(|(_, p)| p.args()).collect();
                let outcomes = match add_leasing(&self.store, &self.leases, &queue, &args, self.max_waiting).await {
                    Ok((report, leased)) => {
                        registers_again |= report.registers_again;
                        wakes |= !leased && report.outcomes.iter().any(|o| matches!(o, AddOutcome::Added(_)));
                        report.outcomes
                    }
                    Err(StoreError::OutOfMemory) => {
                        // Nothing of this chunk went in; earlier chunks did and keep their answers.
                        for (i, _) in chunk {
                            results[*i] = Err(self.memory.refusal(StoreError::OutOfMemory));
                        }
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                for ((i, prepared), outcome) in chunk.iter().zip(outcomes) {
                    // One script added the chunk: each job's span only records the outcome.
                    let span = add_span(&queue, &prepared.record.headers);
                    let result = accepted(&queue, outcome, prepared.session.as_ref(), &format!("jobs[{i}]."), &span);
                    any_in |= result.is_ok();
                    if let Ok(added) = &result {
                        span.in_scope(|| tracing::debug!(duplicate = added.duplicate, "job added in a batch"));
                    }
                    results[*i] = result;
                }
            }
            if any_in {
                if registers_again {
                    self.registry.register_again(&queue).await;
                } else if all_in_sessions {
                    self.note_registered(&queue).await;
                }
                if wakes {
                    self.leases.wake(&queue);
                }
            }
        }
        Ok(results)
    }

    /// After a job went into a session: its queue is in the registry since the session was
    /// created there (a queue with a session is never taken out), and this only tells this
    /// instance so, from its memory after the first time. A failure is logged, never the add's:
    /// the heartbeat's discovery registers a queue that has keys.
    async fn note_registered(&self, queue: &str) {
        if let Err(e) = self.registry.register(queue).await {
            tracing::warn!(%queue, error = %e, "could not register the queue; discovery will");
        }
    }
}

/// One call of the add function for jobs of `queue`: when streams here wait for the queue's
/// jobs, the call leases them theirs (`Leases::plan_add_leases`). Returns what the add did, and
/// whether the call leased for waiting streams (their dispatcher is then taken care of: the
/// add must not wake it).
async fn add_leasing(
    store: &Store,
    leases: &Arc<Leases>,
    queue: &str,
    args: &[AddArgs<'_>],
    max_waiting: Option<u64>,
) -> std::result::Result<(AddReport, bool), StoreError> {
    let plan = leases.plan_add_leases(queue, args.len());
    let leased = plan.leases();
    let answer = store.jobs().add_and_lease(queue, args, max_waiting, plan.tokens()).await;
    Ok((leases.settle_add_leases(queue, plan, answer).await?, leased))
}

/// What the add function said about one single add.
struct Answer {
    outcome: AddOutcome,
    /// The queue must be registered again (`AddReport::registers_again`).
    registers_again: bool,
    /// The call leased for streams waiting here (see `add_leasing`).
    leased: bool,
}

/// What the add script said about one job, for its caller; a job newly added is counted and
/// its id recorded in its `job.add` span.
fn accepted(
    queue: &str,
    outcome: AddOutcome,
    session: Option<&SessionId>,
    field_prefix: &str,
    span: &Span,
) -> Result<Added> {
    let added = match outcome {
        AddOutcome::Added(u) => Added { job_id: JobId::new(queue, &u), duplicate: false },
        AddOutcome::Duplicate(u) => Added { job_id: JobId::new(queue, &u), duplicate: true },
        AddOutcome::NoSession => {
            let id = session.map(|s| s.to_string()).unwrap_or_default();
            return Err(Error::NotFound(format!("{field_prefix}session_id: session {id} does not exist")));
        }
        AddOutcome::QueueFull(cap) => return Err(Error::Full(format!("queue {queue} is full ({cap} waiting)"))),
    };
    span.record("job_id", tracing::field::display(&added.job_id));
    if !added.duplicate
        && let Some(m) = telemetry::queue(crate::queue::shards::logical(queue))
    {
        m.added.increment(1);
    }
    Ok(added)
}

/// The `job.add` span of one job, with the trace context of its `traceparent` header; the
/// job id is recorded once known.
fn add_span(queue: &str, headers: &[(String, String)]) -> Span {
    let span = tracing::debug_span!(
        target: SPAN_TARGET,
        "job.add",
        queue,
        job_id = Empty,
        trace_id = Empty,
        parent_span_id = Empty
    );
    let trace = TraceContext::from_headers(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    traceparent::record(&span, trace.as_ref());
    span
}

/// A validated job, ready for the add script.
struct Prepared {
    ulid: String,
    record: JobRecord,
    delay_ms: Option<u64>,
    run_at_ms: Option<i64>,
    session: Option<SessionId>,
    /// How long its idempotency key (if any) is remembered.
    key_window: Duration,
}

impl Prepared {
    fn new(job: NewJob, windows: KeyWindows) -> Self {
        let ulid = ulid::Ulid::new();
        let (delay_ms, run_at_ms) = match job.schedule {
            Schedule::Now => (None, None),
            Schedule::After(d) => (Some(duration_ms(d)), None),
            Schedule::At(t) => (None, Some(to_ms(t))),
        };
        let session = job.session.clone();
        let key_window = if job.idempotency_key_generated { windows.generated } else { windows.chosen };
        Self {
            // A ULID's timestamp has 48 bits: it always fits.
            record: job.into_record(i64::try_from(ulid.timestamp_ms()).unwrap_or(i64::MAX)),
            ulid: ulid.to_string(),
            delay_ms,
            run_at_ms,
            session,
            key_window,
        }
    }

    fn args(&self) -> AddArgs<'_> {
        AddArgs {
            ulid: &self.ulid,
            record: &self.record,
            delay_ms: self.delay_ms,
            run_at_ms: self.run_at_ms,
            idempotency_window: self.key_window,
            session: self.session.as_ref().map(|s| s.name.as_str()),
        }
    }
}
