//! The add lane: single adds ([`Client::add`](super::Client::add)) of one client that come
//! while others are in flight share a call, so that a producer with many adds in flight pays a
//! gRPC call per batch rather than per job (the call is most of an add's cost: the server's
//! Redis side already coalesces them).
//!
//! - At most [`MAX_CALLS`] calls of a lane are in flight. An add that finds the lane idle (no
//!   call in flight, nothing queued) goes at once as its own `AddJob`, in its caller's task: an
//!   add alone waits for nothing. Otherwise it is queued, and a free slot (or the next one to
//!   come free) sends what is queued as one `AddJobs` (up to [`MAX_BATCH`] jobs and
//!   [`MAX_BATCH_BYTES`]; a batch of one goes as `AddJob`) from a task of its own, so no
//!   caller's future carries the others' adds. That task yields once before it takes each
//!   batch: the producers woken by the last answers (or with the first add) queue their next
//!   adds first, and go in that batch. Without it, the first of them found a free slot and went
//!   alone, and a lane with many adds in flight sent every other call with one job (bench a:
//!   `Client::add`, ≤ 100 in flight: a median of 47k jobs/s before, 62k after).
//! - Each caller gets what `AddJob` would have answered it: its entry's id and `duplicate`, or
//!   its entry's own status (the `jobs[i].` the batch puts before a field name taken off). A
//!   refusal of the whole call reaches each of its callers, except one that is about the batch
//!   rather than its jobs (a message naming `jobs` or an entry, or the transport's message size):
//!   then each job is sent alone, so an invalid or out-of-scope job fails only its own caller.
//! - UNAVAILABLE (the whole call, or one entry), and a call whose connection failed under it
//!   (a server killed mid-call), are retried as `AddJob` is, a few times with backoff; every
//!   job carries an idempotency key by then, so a retry never adds one twice. A batch keeps its
//!   callers' order, and the server takes a key repeated within one batch as a duplicate of the
//!   first, as it takes two concurrent adds with the same key.
//! - A caller that gives up (drops its future) loses nothing of the others': its job is left
//!   out if its batch has not been sent yet, and may still be added if it has (or if it went
//!   alone and the call was already sent).

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use prost::Message;
use tokio::sync::oneshot;
use tonic::{Code, Status};

use super::Transport;
use crate::proto::{self, queue_service_client::QueueServiceClient};

/// Most calls of one lane in flight at once: enough to keep a batch being read while the next
/// one fills, few enough that adds under load gather into batches.
const MAX_CALLS: usize = 4;
/// Most jobs one batch carries: AddJobs's own limit.
const MAX_BATCH: usize = 1_000;
/// Most encoded bytes one batch carries (a larger job goes alone): far under the server's
/// default `--max-batch-bytes` (16 MiB), and within its smallest message size.
const MAX_BATCH_BYTES: usize = 1 << 20;
/// Calls made for one add before UNAVAILABLE is given up on.
const ATTEMPTS: u32 = 5;
/// The wait before the first retry; it doubles each time.
const FIRST_RETRY: Duration = Duration::from_millis(100);

/// What an add is answered.
type Answer = Result<proto::AddJobResponse, Status>;

/// The adds of one client and its clones, over their generated client (its channel and token).
pub(super) struct AddLane {
    raw: QueueServiceClient<Transport>,
    state: Mutex<LaneState>,
}

#[derive(Default)]
struct LaneState {
    /// Calls in flight (an add gone alone, or a task sending batches): at most `MAX_CALLS`.
    calls: usize,
    /// Adds waiting for a slot, oldest first.
    queued: VecDeque<Queued>,
}

/// An add waiting for a slot, and where its answer goes.
struct Queued {
    request: proto::AddJobRequest,
    answer: oneshot::Sender<Answer>,
}

impl AddLane {
    pub(super) fn new(raw: QueueServiceClient<Transport>) -> Self {
        Self { raw, state: Mutex::default() }
    }

    /// Adds one job (which must carry its idempotency key: retries depend on it), alone or
    /// with the adds of the lane queued beside it.
    pub(super) async fn add(self: &Arc<Self>, request: proto::AddJobRequest) -> Answer {
        let (waiting, sender) = {
            let mut state = self.state();
            if state.calls == 0 && state.queued.is_empty() {
                state.calls += 1;
                (Err(request), None)
            } else {
                let (answer, waiting) = oneshot::channel();
                state.queued.push_back(Queued { request, answer });
                // Queued with a slot free: a task of its own takes it and sends the batch.
                let free = state.calls < MAX_CALLS;
                state.calls += usize::from(free);
                (Ok(waiting), free.then(|| Slot(Some(self.clone()))))
            }
        };
        if let Some(slot) = sender {
            slot.hand_to_task();
        }
        match waiting {
            Ok(waiting) => waiting.await.unwrap_or_else(|_| {
                Err(Status::cancelled(
                    "the task sending this add was stopped (the runtime is ending); it may have been added",
                ))
            }),
            Err(request) => {
                let _slot = Slot(Some(self.clone()));
                add_alone(&self.raw, request).await
            }
        }
    }

    fn state(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends what is queued, batch after batch, while there is any; then gives the slot back.
    /// Each batch is taken after a yield, so that the adds of the tasks woken meanwhile are in it.
    async fn send_queued(mut slot: Slot) {
        loop {
            tokio::task::yield_now().await;
            let Some((lane, batch)) = slot.next_batch() else { return };
            lane.send(batch).await;
        }
    }

    /// Sends one batch and answers each of its adds.
    async fn send(&self, mut batch: Vec<Queued>) {
        if batch.len() == 1
            && let Some(only) = batch.pop()
        {
            let _ = only.answer.send(add_alone(&self.raw, only.request).await);
            return;
        }
        let mut wait = FIRST_RETRY;
        for attempt in 1..=ATTEMPTS {
            let retry = attempt < ATTEMPTS;
            let request = proto::AddJobsRequest { jobs: batch.iter().map(|q| q.request.clone()).collect() };
            match self.raw.clone().add_jobs(request).await {
                Ok(response) => {
                    batch = answer_entries(batch, response.into_inner().results, retry);
                    if batch.is_empty() {
                        return;
                    }
                }
                Err(status) if worth_retrying(&status) && retry => {}
                Err(status) if about_the_batch(&status) => {
                    let alone = batch.into_iter().map(|q| async move {
                        let _ = q.answer.send(add_alone(&self.raw, q.request).await);
                    });
                    futures::future::join_all(alone).await;
                    return;
                }
                Err(status) => {
                    for q in batch {
                        let _ = q.answer.send(Err(status.clone()));
                    }
                    return;
                }
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
}

/// One slot of a lane's calls, held while its call (or its task's calls) is in flight. Given
/// back when dropped, unless adds are queued: then it goes on to a task that sends them.
struct Slot(Option<Arc<AddLane>>);

impl Slot {
    /// The next batch to send: queued adds, oldest first, up to the batch's limits (those whose
    /// caller has given up are left out). With none queued, the slot is given back.
    fn next_batch(&mut self) -> Option<(Arc<AddLane>, Vec<Queued>)> {
        let lane = self.0.take()?;
        let batch = {
            let mut state = lane.state();
            let batch = take_batch(&mut state.queued);
            if batch.is_empty() {
                state.calls -= 1;
            }
            batch
        };
        if batch.is_empty() {
            return None;
        }
        self.0 = Some(lane.clone());
        Some((lane, batch))
    }

    /// Has a task of its own send what is queued. Outside a runtime (a future dropped after its
    /// runtime ended) no task can run: the slot is given back, and the next add made in a
    /// runtime finds the adds left queued and has them sent.
    fn hand_to_task(mut self) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(AddLane::send_queued(self));
            }
            Err(_) => {
                if let Some(lane) = self.0.take() {
                    lane.state().calls -= 1;
                }
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(lane) = self.0.take() else { return };
        let queued = {
            let mut state = lane.state();
            let queued = !state.queued.is_empty();
            if !queued {
                state.calls -= 1;
            }
            queued
        };
        if queued {
            Slot(Some(lane)).hand_to_task();
        }
    }
}

/// Takes the next batch off `queued`: at least one add when any is live, then as many as fit.
fn take_batch(queued: &mut VecDeque<Queued>) -> Vec<Queued> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    while let Some(next) = queued.front() {
        if next.answer.is_closed() {
            queued.pop_front();
            continue;
        }
        let size = next.request.encoded_len();
        if batch.len() == MAX_BATCH || (!batch.is_empty() && bytes + size > MAX_BATCH_BYTES) {
            break;
        }
        bytes += size;
        batch.extend(queued.pop_front());
    }
    batch
}

/// Answers each add of a batch from its entry, and returns those to send again: the entries
/// answered UNAVAILABLE, while `retry`. A response that does not hold one result per entry
/// answers each add INTERNAL.
fn answer_entries(batch: Vec<Queued>, results: Vec<proto::AddJobsResult>, retry: bool) -> Vec<Queued> {
    if results.len() != batch.len() {
        let status = Status::internal(format!(
            "AddJobs answered {} results for {} jobs; the adds may have been made",
            results.len(),
            batch.len()
        ));
        for q in batch {
            let _ = q.answer.send(Err(status.clone()));
        }
        return Vec::new();
    }
    let mut again = Vec::new();
    for (i, (q, result)) in batch.into_iter().zip(results).enumerate() {
        if retry && Code::from(result.code) == Code::Unavailable {
            again.push(q);
        } else {
            let _ = q.answer.send(entry_answer(i, result));
        }
    }
    again
}

/// What AddJob would have answered the job of entry `i`.
fn entry_answer(i: usize, result: proto::AddJobsResult) -> Answer {
    match Code::from(result.code) {
        Code::Ok => Ok(proto::AddJobResponse { job_id: result.job_id, duplicate: result.duplicate }),
        code => {
            let prefix = format!("jobs[{i}].");
            let message = result.message.strip_prefix(&prefix).unwrap_or(&result.message);
            Err(Status::new(code, message))
        }
    }
}

/// Whether a refusal of a whole AddJobs is about the batch (its size, or one entry the server
/// checks before adding any: a field out of the caller's scope, a session id that does not
/// parse) rather than something every add of it would have met.
fn about_the_batch(status: &Status) -> bool {
    status.code() == Code::OutOfRange || status.message().starts_with("jobs:") || status.message().starts_with("jobs[")
}

/// One AddJob, UNAVAILABLE retried with backoff.
/// Whether a call may be sent again: the server answered UNAVAILABLE, or no answer came because
/// the connection failed under the call (tonic's UNKNOWN with the transport's error as its
/// source: a server killed mid-call). Every add carries its idempotency key by then, so sending it
/// again never adds a job twice.
fn worth_retrying(status: &Status) -> bool {
    status.code() == Code::Unavailable
        || (status.code() == Code::Unknown
            && std::error::Error::source(status).is_some_and(|e| e.is::<tonic::transport::Error>()))
}

async fn add_alone(raw: &QueueServiceClient<Transport>, request: proto::AddJobRequest) -> Answer {
    let mut wait = FIRST_RETRY;
    for _ in 1..ATTEMPTS {
        match raw.clone().add_job(request.clone()).await {
            Err(status) if worth_retrying(&status) => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            answer => return answer.map(tonic::Response::into_inner),
        }
    }
    raw.clone().add_job(request).await.map(tonic::Response::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(payload: usize) -> (Queued, oneshot::Receiver<Answer>) {
        let (answer, receiver) = oneshot::channel();
        let request = proto::AddJobRequest { queue: "q".into(), payload: vec![b'x'; payload], ..Default::default() };
        (Queued { request, answer }, receiver)
    }

    #[test]
    fn a_batch_stops_at_its_count_and_bytes_and_skips_adds_given_up() {
        let mut lane = VecDeque::new();
        let mut receivers = Vec::new();
        for _ in 0..MAX_BATCH + 5 {
            let (q, r) = queued(10);
            lane.push_back(q);
            receivers.push(r);
        }
        drop(receivers.remove(0));
        assert_eq!(take_batch(&mut lane).len(), MAX_BATCH, "the first add, given up, is left out");
        assert_eq!(take_batch(&mut lane).len(), 4);

        let (big, _big) = queued(MAX_BATCH_BYTES);
        let (small, _small) = queued(10);
        lane.extend([big, small]);
        assert_eq!(take_batch(&mut lane).len(), 1, "a job past the byte budget goes alone");
        assert_eq!(take_batch(&mut lane).len(), 1);
        assert!(take_batch(&mut lane).is_empty());
    }

    #[test]
    fn an_entrys_error_reads_as_addjobs_would_have_said_it() {
        let result = |code: Code, message: &str| proto::AddJobsResult {
            job_id: String::new(),
            duplicate: false,
            code: code as i32,
            message: message.into(),
        };
        let err = entry_answer(3, result(Code::InvalidArgument, "jobs[3].priority: must be from -5 to 5"))
            .expect_err("refused");
        assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "priority: must be from -5 to 5"));
        let err = entry_answer(1, result(Code::NotFound, "jobs[3].x")).expect_err("refused");
        assert_eq!(err.message(), "jobs[3].x", "only the entry's own prefix is taken off");
        let ok = proto::AddJobsResult { job_id: "q/1".into(), duplicate: true, code: 0, message: String::new() };
        assert_eq!(
            entry_answer(0, ok).expect("added"),
            proto::AddJobResponse { job_id: "q/1".into(), duplicate: true }
        );
    }

    #[test]
    fn only_refusals_about_the_batch_send_its_jobs_alone() {
        assert!(about_the_batch(&Status::resource_exhausted("jobs: 2000000 bytes in all is over the limit")));
        assert!(about_the_batch(&Status::permission_denied("jobs[2].queue: token \"t\" does not cover queue")));
        assert!(about_the_batch(&Status::out_of_range("decoded message length too large")));
        assert!(!about_the_batch(&Status::resource_exhausted("Redis is full")));
        assert!(!about_the_batch(&Status::unauthenticated("AddJobs needs a token")));
    }
}
