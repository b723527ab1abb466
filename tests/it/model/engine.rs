//! The same model driven through the `Engine`: its dispatcher, one worker stream at a time, and
//! the engine's acks, cancel, retry, pause and the requeue of a dropped stream. After every step
//! the stream must have received exactly the jobs the model says its free credit takes, in
//! priority and FIFO order, and the revokes of the jobs cancelled while it held them; then the
//! queue must be as the model has it (`check_queue`).
//!
//! Waiting for deliveries is the one timing in these cases, so every delay, timeout and backoff
//! here is zero or long: nothing becomes due during a case, and what the dispatcher hands out
//! follows from the steps alone.

use std::time::Duration;

use jobwire::queue::{
    BackoffRequest, Engine, Error, JobId, JobState, NewJob as EngineJob, RevokeReason, Schedule, StreamEvent,
    StreamGuard, WorkerSpec,
};
use jobwire::store::{AckOutcome, CancelOutcome, LeaseToken, RecordState};
use proptest::{prelude::*, test_runner::TestCaseError};
use tokio::sync::mpsc;

use super::{
    MAX_LOST, NewJob, Pick, Span, check_queue, is_active, is_unfinished, new_job, pick,
    queue::{FAILURE, Instance, Job, Model, Place},
};
use crate::{
    harness::{Redis, Server, ServerBuilder},
    scripts::QUEUE,
};

/// The credit of every stream: how many jobs it holds at most.
const CREDIT: u32 = 2;
/// How long a delivery the model expects may take to arrive.
const DELIVERY: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub(super) enum EngineOp {
    Add(NewJob),
    Complete {
        job: Pick,
    },
    Fail {
        job: Pick,
        retryable: bool,
    },
    Cancel {
        job: Pick,
    },
    RetryDead {
        job: Pick,
    },
    Pause(bool),
    /// The worker's stream ends: its jobs go back as lost deliveries; a new stream opens.
    DropStream,
}

pub(super) fn engine_op() -> impl Strategy<Value = EngineOp> {
    prop_oneof![
        5 => new_job(false).prop_map(EngineOp::Add),
        3 => pick().prop_map(|job| EngineOp::Complete { job }),
        3 => (pick(), any::<bool>()).prop_map(|(job, retryable)| EngineOp::Fail { job, retryable }),
        1 => pick().prop_map(|job| EngineOp::Cancel { job }),
        1 => pick().prop_map(|job| EngineOp::RetryDead { job }),
        1 => prop::bool::weighted(0.3).prop_map(EngineOp::Pause),
        1 => Just(EngineOp::DropStream),
    ]
}

/// One case: a jobwire engine on a fresh Redis, every op applied to it and the model.
pub(super) async fn run(ops: Vec<EngineOp>) -> Result<(), TestCaseError> {
    let redis = Redis::start();
    let server = ServerBuilder::new(&redis).settings(|s| s.max_lost = MAX_LOST).start().await;
    let mut sut = EngineSut::start(&server).await;
    for (step, op) in ops.iter().enumerate() {
        let fail = |e: String| TestCaseError::fail(format!("step {step} ({op:?}): {e}"));
        sut.apply(op).await.map_err(fail)?;
        sut.settle().await.map_err(fail)?;
        sut.clock_ms = check_queue(&server.store, &sut.model).await.map_err(fail)?;
    }
    server.assert_invariants(QUEUE).await;
    Ok(())
}

struct EngineSut<'a> {
    engine: &'a Engine,
    stream: Option<(StreamGuard, mpsc::Receiver<StreamEvent>)>,
    model: Model,
    /// Jobs cancelled while the stream held them, whose revoke has not come yet.
    revokes_due: Vec<String>,
    clock_ms: i64,
}

impl<'a> EngineSut<'a> {
    async fn start(server: &'a Server) -> Self {
        let mut sut = Self {
            engine: &server.engine,
            stream: None,
            model: Model::default(),
            revokes_due: Vec::new(),
            clock_ms: 0,
        };
        sut.open_stream().await;
        sut
    }

    async fn open_stream(&mut self) {
        let spec = WorkerSpec {
            worker_id: "model".into(),
            labels: Vec::new(),
            queues: vec![QUEUE.into()],
            max_in_flight: CREDIT,
            prefetch: 0,
        };
        self.stream = Some(self.engine.open_stream(spec).await.expect("a stream opens"));
    }

    fn job_id(&self, i: usize) -> JobId {
        JobId { queue: QUEUE.into(), ulid: self.model.jobs[i].ulid.clone() }
    }

    /// The token an ack of job `i` presents: its latest lease's, or one no lease ever had.
    fn token(&self, i: usize) -> String {
        self.model.jobs[i].last_token.clone().unwrap_or_else(|| "nobody.1.1".into())
    }

    async fn apply(&mut self, op: &EngineOp) -> Result<(), String> {
        match op {
            EngineOp::Add(new) => self.add(new).await?,
            EngineOp::Complete { job } => {
                let Some(i) = job.job(&self.model, is_active) else { return Ok(()) };
                let token = self.token(i);
                let found = self.engine.complete(&self.job_id(i), &token, b"done", None, None).await;
                let expected = self.model.complete(i, &token);
                match (found, expected) {
                    (Ok(()), AckOutcome::Completed | AckOutcome::Cancelled)
                    | (Err(Error::StaleLease(_)), AckOutcome::Stale) => {}
                    (found, expected) => {
                        return Err(format!("the ack: the engine says {found:?}, the model {expected:?}"));
                    }
                }
            }
            EngineOp::Fail { job, retryable } => {
                let Some(i) = job.job(&self.model, is_active) else { return Ok(()) };
                let token = self.token(i);
                let found = self.engine.fail(&self.job_id(i), &token, FAILURE, *retryable, None, None).await;
                // Every backoff here is zero or long: the due time is the engine's answer.
                let due_ms = found.as_ref().ok().and_then(|(_, at)| *at).map(epoch_ms).unwrap_or_default();
                let (_, state, _) = self.model.fail(i, &token, *retryable, due_ms);
                match (&found, state.map(job_state)) {
                    (Ok((found, _)), Some(expected)) if *found == expected => {}
                    (Err(Error::StaleLease(_)), None) => {}
                    (found, expected) => {
                        return Err(format!("the failure: the engine says {found:?}, the model {expected:?}"));
                    }
                }
            }
            EngineOp::Cancel { job } => {
                let Some(i) = job.job(&self.model, is_unfinished) else { return Ok(()) };
                let found = self.engine.cancel(&self.job_id(i)).await;
                let expected = self.model.cancel(i);
                match (found, expected) {
                    (Ok(()), CancelOutcome::Marked(_)) => {
                        self.revokes_due.push(self.model.jobs[i].ulid.clone());
                    }
                    (Ok(()), CancelOutcome::Cancelled) => {}
                    (Err(Error::Precondition(_)), CancelOutcome::AlreadyFinished) => {}
                    (found, expected) => {
                        return Err(format!("the cancel: the engine says {found:?}, the model {expected:?}"));
                    }
                }
            }
            EngineOp::RetryDead { job } => {
                let Some(i) = job.job(&self.model, |p| *p == Place::Dead) else { return Ok(()) };
                let found = self.engine.retry_job(&self.job_id(i)).await;
                match (found, self.model.retry(i)) {
                    (Ok(()), (1, 1)) | (Err(Error::Precondition(_)), (-1, 0)) => {}
                    (found, expected) => {
                        return Err(format!("the retry: the engine says {found:?}, the model {expected:?}"));
                    }
                }
            }
            EngineOp::Pause(paused) => {
                self.engine.set_paused(QUEUE, *paused).await.map_err(|e| e.to_string())?;
                self.model.paused = *paused;
            }
            EngineOp::DropStream => self.drop_stream().await?,
        }
        Ok(())
    }

    async fn add(&mut self, new: &NewJob) -> Result<(), String> {
        let base = Duration::from_millis(new.backoff.ms());
        let job = EngineJob {
            queue: QUEUE.into(),
            job_type: "t".into(),
            payload: b"payload".to_vec(),
            priority: new.priority,
            schedule: match new.delay {
                Span::Zero => Schedule::Now,
                Span::Short | Span::Long => Schedule::After(Duration::from_millis(new.delay.ms())),
            },
            max_attempts: Some(new.max_attempts),
            backoff: Some(BackoffRequest { fixed: true, base: Some(base), jitter: Some(0.0), ..Default::default() }),
            idempotency_key: new.key.map(|key| format!("key-{key}")),
            ..Default::default()
        };
        let added = self.engine.add(job).await.map_err(|e| e.to_string())?;
        if let Some(first) = new.key.and_then(|key| self.model.first_with_key(key)) {
            if !(added.duplicate && added.job_id.ulid == first) {
                return Err(format!("a repeated key added {added:?}; the first job was {first}"));
            }
            return Ok(());
        }
        let place = match new.delay {
            Span::Zero => Place::Waiting,
            Span::Short | Span::Long => {
                let view = self.engine.info(&added.job_id).await.map_err(|e| e.to_string())?;
                Place::Delayed { due_ms: view.run_at.map(epoch_ms).ok_or("a delayed job without a run time")? }
            }
        };
        let job = Job {
            ulid: added.job_id.ulid,
            priority: new.priority,
            max_attempts: new.max_attempts,
            // The engine's default timeout (30 min) never passes within a case.
            timeout_ms: i64::MAX / 2,
            backoff_ms: new.backoff.ms().try_into().unwrap_or(i64::MAX),
            place,
            attempts: 0,
            lost: 0,
            cancel: false,
            error: None,
            last_token: None,
        };
        self.model.added(job, new.key);
        Ok(())
    }

    /// Ends the stream; its jobs go back, lost, in delivery order; then a new stream opens.
    async fn drop_stream(&mut self) -> Result<(), String> {
        self.stream = None;
        let mut held: Vec<(usize, u64, String)> = (0..self.model.jobs.len())
            .filter_map(|i| match &self.model.jobs[i].place {
                Place::Active { token, .. } => Some((i, seq(token), token.clone())),
                _ => None,
            })
            .collect();
        held.sort_by_key(|(_, seq, _)| *seq);
        let pairs: Vec<(usize, String)> = held.into_iter().map(|(i, _, token)| (i, token)).collect();
        self.model.requeue(&pairs, true, MAX_LOST);
        self.revokes_due.clear();
        let deadline = tokio::time::Instant::now() + DELIVERY;
        while self.engine.stats(QUEUE).await.map_err(|e| e.to_string())?.active > 0 {
            if tokio::time::Instant::now() > deadline {
                return Err("the dropped stream's jobs did not go back".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.open_stream().await;
        Ok(())
    }

    /// Receives what the stream must get now: a job per free credit while jobs are ready (each
    /// checked against the model's next one), and the revokes of jobs cancelled while held.
    async fn settle(&mut self) -> Result<(), String> {
        loop {
            let held = self.model.jobs.iter().filter(|j| matches!(j.place, Place::Active { .. })).count();
            let ready = self.model.counts().waiting;
            let wants_job = !self.model.paused && ready > 0 && held < usize::try_from(CREDIT).unwrap_or(0);
            if !wants_job && self.revokes_due.is_empty() {
                return Ok(());
            }
            let (_, events) = self.stream.as_mut().ok_or("no stream")?;
            let event = tokio::time::timeout(DELIVERY, events.recv())
                .await
                .map_err(|_| format!("nothing came; expected a job: {wants_job}, revokes of {:?}", self.revokes_due))?
                .ok_or("the stream ended")?;
            match event {
                StreamEvent::Job(delivery) => {
                    let token = delivery.lease_token.as_str().to_owned();
                    let ulid = delivery.job_id.ulid.clone();
                    self.model.lease_round(self.clock_ms, &[token], Instance::First, &[ulid])?;
                }
                StreamEvent::Revoke { job_id, lease_token, reason } => {
                    let at = self.revokes_due.iter().position(|u| *u == job_id.ulid);
                    match (at, reason) {
                        (Some(at), RevokeReason::Cancelled) => {
                            self.revokes_due.remove(at);
                        }
                        // The reconciliation takes a lease as lost when two periods in a row
                        // read Redis between an ack and the engine's own release of it (a
                        // stalled engine): it tells the worker, as it must for a lease that is
                        // really gone.
                        (_, RevokeReason::LeaseLost) if !self.holds(&job_id.ulid, lease_token.as_str()) => {}
                        _ => return Err(format!("an unexpected revoke of {job_id} ({reason:?})")),
                    }
                }
                StreamEvent::Drain { .. } => return Err("the engine drains".into()),
            }
        }
    }
}

impl EngineSut<'_> {
    /// Whether the model has `token` holding the job.
    fn holds(&self, ulid: &str, token: &str) -> bool {
        let job = self.model.index_of(ulid).map(|i| &self.model.jobs[i].place);
        matches!(job, Some(Place::Active { token: held, .. }) if held == token)
    }
}

/// The delivery order of a lease token.
fn seq(token: &str) -> u64 {
    LeaseToken::parse(token).map_or(u64::MAX, |t| t.seq())
}

fn job_state(state: RecordState) -> JobState {
    match state {
        RecordState::Waiting => JobState::Waiting,
        RecordState::Delayed => JobState::Delayed,
        RecordState::Retrying => JobState::Retrying,
        RecordState::Completed => JobState::Completed,
        RecordState::Dead => JobState::Dead,
        RecordState::Cancelled => JobState::Cancelled,
    }
}

/// A time as the store keeps it: epoch ms.
fn epoch_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
