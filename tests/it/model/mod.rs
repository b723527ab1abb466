//! Model-based tests of the store and the engine: random sequences of operations — adds (with
//! delays, priorities, idempotency keys, short or long timeouts and backoffs), lease rounds of two
//! instances, completions and failures with the holder's or a stale token, streams dropped (their
//! leases requeued as lost) or jobs handed back, waits that let short timeouts and delays pass,
//! cancels, retries of dead jobs, pause and resume, and the reap of the second instance — run
//! against a real Redis through `Store` (the `Case` of `scripts/`), each answer compared with
//! the in-memory model of `queue.rs`. After every step the queue's counts (`stats`) and every
//! job's state, attempts, lost deliveries, last error and lease must be the model's; each case
//! ends with the store's invariant check. `engine.rs` drives the same model through the
//! `Engine` (its dispatcher and one worker stream, acks, cancel, retry, pause, a dropped stream).
//!
//! The sequence is a plain `Vec<Op>` rather than proptest-state-machine's reference machine: the
//! model needs the clock Redis reports (a lease round's `now_ms`, a retry's due time) to know
//! which deadlines and delays have passed, and a reference machine must decide every step before
//! it runs. Jobs are named by a [`Pick`] (an index into the jobs an op applies to), so a shrunk
//! sequence stays meaningful. Time: the outcome of every step follows from the clock
//! values the store reports, so the test does not depend on how fast the machine is; only how
//! often the short timeouts and delays actually pass does.

mod engine;
mod queue;

use std::{cell::Cell, time::Duration};

use jobwire::store::{AddOutcome, BackoffSpec, RecordState, Store};
use proptest::{
    prelude::*,
    sample::Index,
    test_runner::{Config, TestCaseError, TestRunner},
};
use queue::{Instance, Model, Place};

use crate::scripts::{Case, Job, Places, QUEUE};

/// Cases per run, and steps per case: 64 cases of up to 50 steps take about 14 s on a 2-core
/// machine under a load of 8 (a redis-server per case, a `stats` and a read of every job after
/// each step), which CI affords on every run, and they reach timeouts, lost deliveries, reaps and
/// retries from dead in most runs. `PROPTEST_CASES` asks for more locally.
const CASES: u32 = 64;
const MAX_STEPS: usize = 50;
/// Cases of the engine's model (`engine.rs`): about 5 s (each starts a jobwire server).
const ENGINE_CASES: u32 = 48;
/// A short delay, timeout or backoff: passes within a few steps or a `Wait`.
const SHORT_MS: u64 = 30;
/// A long one: never passes within a case.
const LONG_MS: u64 = 60_000;
/// How long a `Wait` sleeps: longer than `SHORT_MS`.
const WAIT_MS: u64 = 40;
/// Lost deliveries that bury a job (the engine's `--max-lost`; small so cases reach it).
const MAX_LOST: u32 = 2;

/// A span of a new job: its delay, timeout or backoff.
#[derive(Clone, Copy, Debug)]
enum Span {
    Zero,
    Short,
    Long,
}

impl Span {
    fn ms(self) -> u64 {
        match self {
            Span::Zero => 0,
            Span::Short => SHORT_MS,
            Span::Long => LONG_MS,
        }
    }
}

/// A new job's settings.
#[derive(Clone, Debug)]
struct NewJob {
    priority: i32,
    delay: Span,
    /// One of three idempotency keys, so repeats happen.
    key: Option<u8>,
    max_attempts: u32,
    /// Never zero: `Short` or `Long`.
    timeout: Span,
    backoff: Span,
}

/// Which token an ack presents: the job's latest lease (its holder's, while active), or one
/// that never held it.
#[derive(Clone, Copy, Debug)]
enum Holder {
    Latest,
    Stranger,
}

/// The job an op acts on: with `fitting`, one of those it applies to (active ones for an ack,
/// dead ones for a retry, unfinished ones for a cancel) when there are any; else any job added.
#[derive(Clone, Debug)]
struct Pick {
    fitting: bool,
    index: Index,
}

#[derive(Clone, Debug)]
enum Op {
    Add(NewJob),
    Lease {
        tokens: usize,
        instance: Instance,
    },
    Complete {
        job: Pick,
        holder: Holder,
    },
    Fail {
        job: Pick,
        holder: Holder,
        retryable: bool,
    },
    /// `lost`: the stream holding these leases ended; else the worker handed them back.
    Requeue {
        jobs: Vec<Pick>,
        lost: bool,
    },
    Cancel {
        job: Pick,
    },
    RetryDead {
        job: Pick,
    },
    Pause(bool),
    /// The second instance died: its leases are reaped.
    ReapSecond,
    /// Lets short delays, timeouts and backoffs pass.
    Wait,
}

/// A new job; without `timing`, its delay and backoff are zero or long, its timeout long.
fn new_job(timing: bool) -> impl Strategy<Value = NewJob> {
    let (delay, timeout, backoff) = if timing {
        (
            prop_oneof![3 => Just(Span::Zero), 1 => Just(Span::Short), 1 => Just(Span::Long)].boxed(),
            prop_oneof![Just(Span::Short), Just(Span::Long)].boxed(),
            prop_oneof![Just(Span::Zero), Just(Span::Short), Just(Span::Long)].boxed(),
        )
    } else {
        (
            prop_oneof![3 => Just(Span::Zero), 1 => Just(Span::Long)].boxed(),
            Just(Span::Long).boxed(),
            prop_oneof![Just(Span::Zero), Just(Span::Long)].boxed(),
        )
    };
    (prop::sample::select(vec![-1, 0, 0, 1, 5]), delay, prop::option::weighted(0.3, 0u8..3), 1u32..=3, timeout, backoff)
        .prop_map(|(priority, delay, key, max_attempts, timeout, backoff)| NewJob {
            priority,
            delay,
            key,
            max_attempts,
            timeout,
            backoff,
        })
}

fn holder() -> impl Strategy<Value = Holder> {
    prop_oneof![4 => Just(Holder::Latest), 1 => Just(Holder::Stranger)]
}

impl Pick {
    /// The job this pick names in `model` (see [`Pick`]); None before the first add.
    fn job(&self, model: &Model, fits: impl Fn(&Place) -> bool) -> Option<usize> {
        let fitting: Vec<usize> = (0..model.jobs.len()).filter(|&i| fits(&model.jobs[i].place)).collect();
        if self.fitting && !fitting.is_empty() {
            return Some(fitting[self.index.index(fitting.len())]);
        }
        (!model.jobs.is_empty()).then(|| self.index.index(model.jobs.len()))
    }
}

fn pick() -> impl Strategy<Value = Pick> {
    (prop::bool::weighted(0.8), any::<Index>()).prop_map(|(fitting, index)| Pick { fitting, index })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => new_job(true).prop_map(Op::Add),
        5 => (1usize..=3, prop_oneof![3 => Just(Instance::First), 1 => Just(Instance::Second)])
            .prop_map(|(tokens, instance)| Op::Lease { tokens, instance }),
        2 => (pick(), holder()).prop_map(|(job, holder)| Op::Complete { job, holder }),
        2 => (pick(), holder(), any::<bool>()).prop_map(|(job, holder, retryable)| Op::Fail { job, holder, retryable }),
        2 => (prop::collection::vec(pick(), 1..=3), any::<bool>()).prop_map(|(jobs, lost)| Op::Requeue { jobs, lost }),
        1 => pick().prop_map(|job| Op::Cancel { job }),
        1 => pick().prop_map(|job| Op::RetryDead { job }),
        1 => prop::bool::weighted(0.3).prop_map(Op::Pause),
        1 => Just(Op::ReapSecond),
        3 => Just(Op::Wait),
    ]
}

#[test]
fn the_store_follows_the_model_of_the_queue() {
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() { Config::default().cases } else { CASES };
    let config = Config { cases, max_shrink_iters: 500, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&prop::collection::vec(op(), 1..=MAX_STEPS), |ops| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        runtime.block_on(run(ops))
    });
    if let Err(failure) = result {
        panic!("the store left the model: {failure}");
    }
}

#[test]
fn the_engine_follows_the_model_of_the_queue() {
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() { Config::default().cases } else { ENGINE_CASES };
    let config = Config { cases, max_shrink_iters: 200, failure_persistence: None, ..Config::default() };
    let result = TestRunner::new(config).run(&prop::collection::vec(engine::engine_op(), 1..=MAX_STEPS), |ops| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        runtime.block_on(engine::run(ops))
    });
    if let Err(failure) = result {
        panic!("the engine left the model: {failure}");
    }
}

/// One case: a fresh Redis, every op applied to the store and the model, then the invariants.
async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut sut = Sut::start().await;
    for (step, op) in ops.iter().enumerate() {
        sut.apply(op).await.map_err(|e| TestCaseError::fail(format!("step {step} ({op:?}): {e}")))?;
        sut.clock_ms = check_queue(&sut.case.store, &sut.model)
            .await
            .map_err(|e| TestCaseError::fail(format!("after step {step} ({op:?}): {e}")))?;
    }
    sut.case.assert_invariants().await;
    Ok(())
}

/// What `prop_assert_eq!` does, for the steps' own error type.
macro_rules! expect_eq {
    ($found:expr, $expected:expr, $what:expr) => {{
        let (found, expected) = (&$found, &$expected);
        if found != expected {
            return Err(format!("{}: the store says {found:?}, the model {expected:?}", $what));
        }
    }};
}

/// The store under test and the model it must follow.
struct Sut {
    case: Case,
    model: Model,
    /// Redis's clock at the last `stats`: every later call runs at this time or after.
    clock_ms: i64,
    /// Lease tokens handed out so far (each token is used once).
    tokens: Cell<u64>,
}

impl Sut {
    async fn start() -> Self {
        let case = Case::start().await;
        case.heartbeat(Instance::Second.id(), Duration::from_secs(60)).await;
        let clock_ms = case.stats().await.now_ms;
        Self { case, model: Model::default(), clock_ms, tokens: Cell::new(0) }
    }

    fn token(&self, instance: Instance) -> String {
        let n = self.tokens.replace(self.tokens.get() + 1);
        format!("{}.1.{n}", instance.id())
    }

    /// The token an ack of job `i` presents.
    fn presented(&self, i: usize, holder: Holder) -> String {
        match (holder, &self.model.jobs[i].last_token) {
            (Holder::Latest, Some(token)) => token.clone(),
            _ => self.token(Instance::First),
        }
    }

    /// Checks that a time the store derived from its clock during the last call (`at_ms`,
    /// `wait_ms` after the call's time) lies between the clock before and after that call.
    async fn within_call(&mut self, at_ms: i64, wait_ms: u64, what: &str) -> Result<(), String> {
        let after = self.case.stats().await.now_ms;
        let wait = i64::try_from(wait_ms).unwrap_or(i64::MAX);
        if !(self.clock_ms + wait..=after + wait).contains(&at_ms) {
            return Err(format!("{what} {at_ms} is not {wait} ms after a time within [{}, {after}]", self.clock_ms));
        }
        Ok(())
    }

    async fn apply(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::Add(new) => self.add(new).await?,
            Op::Lease { tokens, instance } => {
                let tokens: Vec<String> = (0..*tokens).map(|_| self.token(*instance)).collect();
                let round = self.case.lease_with(&tokens, 0.0, false).await;
                let leased: Vec<String> = round.jobs.iter().map(|j| j.ulid.clone()).collect();
                let revoked = self.model.lease_round(round.now_ms, &tokens, *instance, &leased)?;
                expect_eq!(round.revoked, revoked, "the timed-out leases");
                for (job, token) in round.jobs.iter().zip(&tokens) {
                    let expected = &self.model.jobs[self.model.index_of(&job.ulid).ok_or("an unknown job leased")?];
                    expect_eq!(job.token, *token, "the token of a leased job");
                    expect_eq!(job.attempt, expected.attempts + 1, "the attempt of a leased job");
                    expect_eq!(job.deadline_ms, round.now_ms + expected.timeout_ms, "the deadline of a leased job");
                }
            }
            Op::Complete { job, holder } => {
                let Some(i) = job.job(&self.model, is_active) else { return Ok(()) };
                let token = self.presented(i, *holder);
                let found = self.case.ack(&self.model.jobs[i].ulid, &token).await;
                expect_eq!(found, self.model.complete(i, &token), "the ack's outcome");
            }
            Op::Fail { job, holder, retryable } => {
                let Some(i) = job.job(&self.model, is_active) else { return Ok(()) };
                let token = self.presented(i, *holder);
                let found = self.case.fail(&self.model.jobs[i].ulid, &token, *retryable, None, 0.0).await;
                let (check, state, wait) = self.model.fail(i, &token, *retryable, found.run_at_ms);
                expect_eq!((found.check, found.state), (check, state), "the failure's outcome");
                if let Some(wait) = wait {
                    self.within_call(found.run_at_ms, wait.try_into().unwrap_or(0), "the retry time").await?;
                }
            }
            Op::Requeue { jobs, lost } => {
                let pairs: Vec<(usize, String)> = jobs
                    .iter()
                    .filter_map(|job| job.job(&self.model, is_active))
                    .map(|i| (i, self.presented(i, Holder::Latest)))
                    .collect();
                let leases: Vec<(String, String)> =
                    pairs.iter().map(|(i, token)| (self.model.jobs[*i].ulid.clone(), token.clone())).collect();
                let moved = self.case.requeue(&leases, *lost, MAX_LOST).await;
                expect_eq!(moved, self.model.requeue(&pairs, *lost, MAX_LOST), "the leases requeued");
            }
            Op::Cancel { job } => {
                let Some(i) = job.job(&self.model, is_unfinished) else { return Ok(()) };
                let found = self.case.cancel(&self.model.jobs[i].ulid).await;
                expect_eq!(found, self.model.cancel(i), "the cancel's outcome");
            }
            Op::RetryDead { job } => {
                let Some(i) = job.job(&self.model, |p| *p == Place::Dead) else { return Ok(()) };
                let found = self.case.retry(Some(&self.model.jobs[i].ulid), 1).await;
                expect_eq!(found, self.model.retry(i), "the retry's outcome");
            }
            Op::Pause(paused) => {
                self.case.pause(*paused).await;
                self.model.paused = *paused;
            }
            Op::ReapSecond => {
                let reaped = self.case.reap(&[Instance::Second.id().to_owned()]).await;
                expect_eq!(reaped, self.model.reap(Instance::Second), "the leases reaped");
            }
            Op::Wait => tokio::time::sleep(Duration::from_millis(WAIT_MS)).await,
        }
        Ok(())
    }

    async fn add(&mut self, new: &NewJob) -> Result<(), String> {
        let backoff =
            BackoffSpec { fixed: true, base_ms: new.backoff.ms(), factor: 1.0, max_ms: new.backoff.ms(), jitter: 0.0 };
        let mut job = Job::plain().with(|r| {
            r.priority = new.priority;
            r.max_attempts = new.max_attempts;
            r.timeout_ms = new.timeout.ms();
            r.backoff = Some(backoff);
        });
        if let Some(key) = new.key {
            job = job.keyed(&format!("key-{key}"), Duration::from_secs(3_600));
        }
        let delay = new.delay.ms();
        if delay > 0 {
            job = job.delayed(delay);
        }
        let found = self.case.add(&job).await;
        if let Some(first) = new.key.and_then(|key| self.model.first_with_key(key)) {
            expect_eq!(found, AddOutcome::Duplicate(first.to_owned()), "the add's outcome");
            return Ok(());
        }
        expect_eq!(found, AddOutcome::Added(job.ulid.clone()), "the add's outcome");
        let place = if delay > 0 {
            let due_ms = self.case.record(&job.ulid).await.run_at_ms.ok_or("a delayed job without a run time")?;
            self.within_call(due_ms, delay, "the delayed job's run time").await?;
            Place::Delayed { due_ms }
        } else {
            Place::Waiting
        };
        let model_job = queue::Job {
            ulid: job.ulid,
            priority: new.priority,
            max_attempts: new.max_attempts,
            timeout_ms: new.timeout.ms().try_into().unwrap_or(i64::MAX),
            backoff_ms: new.backoff.ms().try_into().unwrap_or(i64::MAX),
            place,
            attempts: 0,
            lost: 0,
            cancel: false,
            error: None,
            last_token: None,
        };
        self.model.added(model_job, new.key);
        Ok(())
    }
}

/// Checks the queue's counts and every job against the model; returns Redis's clock at the check.
async fn check_queue(store: &Store, model: &Model) -> Result<i64, String> {
    let stats = store.admin().stats(QUEUE).await.map_err(|e| format!("stats: {e}"))?;
    let found = Places {
        waiting: stats.waiting,
        delayed: stats.delayed,
        active: stats.active,
        completed: stats.completed,
        dead: stats.dead,
        cancelled: stats.cancelled,
        pending: stats.session_pending,
    };
    expect_eq!(found, model.counts(), "the queue's counts");
    expect_eq!(stats.paused, model.paused, "paused");
    for job in &model.jobs {
        let snapshot = store.admin().snapshot(QUEUE, &job.ulid).await.map_err(|e| format!("info: {e}"))?;
        let snapshot = snapshot.ok_or_else(|| format!("job {} is gone", job.ulid))?;
        let record = &snapshot.record;
        let what = format!("job {}", job.ulid);
        let lease = snapshot.lease.as_ref().map(|l| (l.token.as_str().to_owned(), l.attempt));
        let (state, run_at, held) = match &job.place {
            Place::Waiting => (Some(RecordState::Waiting), None, None),
            Place::Delayed { due_ms } => (Some(RecordState::Delayed), Some(*due_ms), None),
            Place::Retrying { due_ms } => (Some(RecordState::Retrying), Some(*due_ms), None),
            // An active job's record keeps the state it was leased from.
            Place::Active { token, attempt, .. } => (None, None, Some((token.clone(), *attempt))),
            Place::Completed => (Some(RecordState::Completed), None, None),
            Place::Dead => (Some(RecordState::Dead), None, None),
            // A job cancelled while delayed keeps the run time it had.
            Place::Cancelled => (Some(RecordState::Cancelled), record.run_at_ms, None),
        };
        expect_eq!(lease, held, format!("{what}: its lease"));
        if let Some(state) = state {
            expect_eq!(record.state, state, format!("{what}: its state"));
        }
        expect_eq!(record.run_at_ms, run_at, format!("{what}: its run time"));
        expect_eq!((record.attempts, record.lost), (job.attempts, job.lost), format!("{what}: attempts, lost"));
        expect_eq!(record.last_error.as_deref(), job.error, format!("{what}: its last error"));
        let cancelled = job.cancel || job.place == Place::Cancelled;
        expect_eq!(record.cancel_requested, cancelled, format!("{what}: cancel requested"));
    }
    Ok(stats.now_ms)
}

fn is_active(place: &Place) -> bool {
    matches!(place, Place::Active { .. })
}

fn is_unfinished(place: &Place) -> bool {
    !matches!(place, Place::Completed | Place::Dead | Place::Cancelled)
}
