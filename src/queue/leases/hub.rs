//! The in-memory side of dispatch on one instance: which worker streams are open, which queues
//! they serve, how much credit each has left, and which leases each holds.
//!
//! One `std::sync::Mutex` guards it all; it is held only for map updates, never across an await.
//! Redis is the truth about leases; this is the instance's view, reconciled against Redis by
//! the reconciliation in `notices.rs` because cross-instance notices ride pub/sub, which may drop messages.
//!
//! Credit is reserved when a dispatcher plans a lease round and settled when the round returns,
//! so two queues' dispatchers can never hand one stream more than its credit
//! (`max_in_flight + prefetch`).
//!
//! Prefetch: on a stream opened with `prefetch > 0`, a delivered lease is held "not started"
//! until the worker reports it handed the job to a handler (`mark_started`); when the stream
//! closes, the unstarted ones go back without counting a lost delivery.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::{Notify, mpsc};

use crate::{
    queue::job::{Delivery, JobId},
    store::LeaseToken,
    telemetry::TraceContext,
};

/// Messages on a worker stream, besides the transport's own pings.
#[derive(Debug)]
pub enum StreamEvent {
    Job(Box<Delivery>),
    Revoke { job_id: JobId, lease_token: LeaseToken, reason: RevokeReason },
    Drain { grace: std::time::Duration },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeReason {
    Timeout,
    LeaseLost,
    Cancelled,
}

/// A queue that got its first stream here, with the wake-up its new dispatcher waits on.
pub type NewQueue = (String, Arc<Notify>);

/// Who opened a stream and what it serves.
#[derive(Clone, Debug)]
pub struct WorkerSpec {
    pub worker_id: String,
    pub labels: Vec<(String, String)>,
    pub queues: Vec<String>,
    pub max_in_flight: u32,
    /// Jobs the worker may hold beyond `max_in_flight` before handing them to a handler.
    pub prefetch: u32,
}

impl WorkerSpec {
    /// How many unacknowledged jobs the stream may hold at once.
    fn credit(&self) -> u32 {
        self.max_in_flight.saturating_add(self.prefetch)
    }
}

#[derive(Debug)]
struct Held {
    token: LeaseToken,
    /// Revoked (timed out): the lease is gone, but the credit stays used until the worker
    /// answers or the stream ends.
    revoked: bool,
    /// When it was handed to the stream, or to a handler when prefetched (for the run-time
    /// histogram).
    since: Instant,
    /// The worker handed it to a handler (always, on a stream without prefetch): when the
    /// stream ends, only a started lease counts as a lost delivery.
    started: bool,
    /// The job's trace context, for the spans of acks that reach this instance.
    trace: Option<TraceContext>,
}

/// A delivery whose credit came back (see `Hub::release`).
#[derive(Clone, Copy, Debug)]
pub struct Released {
    /// From hand-over to the stream until now.
    pub held_for: Duration,
    /// It had been revoked (timed out or cancelled) before the answer came.
    pub revoked: bool,
}

struct StreamSlot {
    tx: mpsc::Sender<StreamEvent>,
    spec: WorkerSpec,
    reserved: u32,
    in_flight: HashMap<JobId, Held>,
    /// Another queue's dispatcher wanted this stream's credit while it was reserved; when the
    /// reservation comes back unused, the stream's queues must look again.
    contended: bool,
    draining: bool,
    connected_at: SystemTime,
}

impl StreamSlot {
    fn free(&self) -> u32 {
        if self.draining {
            return 0;
        }
        self.spec.credit().saturating_sub(self.reserved + self.in_flight.len() as u32)
    }
}

pub struct QueueSlot {
    streams: Vec<u64>,
    pub wake: Arc<Notify>,
    /// The last lease round of this queue found it empty (or paused) and nothing has been added
    /// since: streams may take later queues' jobs. Streams serve their queues in strict order.
    drained: bool,
}

#[derive(Default)]
struct State {
    streams: HashMap<u64, StreamSlot>,
    queues: HashMap<String, QueueSlot>,
    next_stream: u64,
    next_seq: u64,
    rotation: usize,
    /// Bumped whenever a stream opens or closes or its in-flight count changes.
    generation: u64,
    /// Bumped whenever a stream opens or closes.
    streams_generation: u64,
    /// The instance is shutting down: no new streams, no credit for the open ones.
    draining: bool,
}

/// A lease still held through a stream of this instance.
#[derive(Clone, Debug)]
pub struct HeldLease {
    pub job_id: JobId,
    /// Names the stream that holds it.
    pub token: LeaseToken,
    /// Revoked (timed out or cancelled): the worker was told to stop.
    pub revoked: bool,
    /// A handler got it (see `Held::started`).
    pub(crate) started: bool,
}

/// A connected worker stream, for listings.
#[derive(Clone, Debug)]
pub struct StreamInfo {
    pub id: u64,
    pub spec: WorkerSpec,
    pub in_flight: usize,
    pub connected_at: SystemTime,
}

pub struct Hub {
    instance: String,
    state: Mutex<State>,
}

impl Hub {
    pub fn new(instance: &str) -> Self {
        Self { instance: instance.to_owned(), state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind, still consistent enough to
        // serve; recover rather than poison every later call.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a stream; returns its id and the queues that had no stream here before (their
    /// dispatchers must be started). Wakes every queue the stream serves. None while draining.
    pub fn open(&self, spec: WorkerSpec, tx: mpsc::Sender<StreamEvent>) -> Option<(u64, Vec<NewQueue>)> {
        let mut state = self.lock();
        if state.draining {
            return None;
        }
        state.next_stream += 1;
        let id = state.next_stream;
        let mut fresh = Vec::new();
        for queue in &spec.queues {
            let slot = state.queues.entry(queue.clone()).or_insert_with(|| {
                let wake = Arc::new(Notify::new());
                fresh.push((queue.clone(), wake.clone()));
                QueueSlot { streams: Vec::new(), wake, drained: false }
            });
            slot.streams.push(id);
            slot.wake.notify_one();
        }
        let slot = StreamSlot {
            tx,
            spec,
            reserved: 0,
            in_flight: HashMap::new(),
            contended: false,
            draining: false,
            connected_at: SystemTime::now(),
        };
        state.streams.insert(id, slot);
        state.generation += 1;
        state.streams_generation += 1;
        Some((id, fresh))
    }

    /// Unregisters a stream. Returns the leases it still held, to be handed back (a revoked one is
    /// only handed back if its lease is still held, i.e. it was cancelled, not timed out), and
    /// the queues left without any stream (their dispatchers stop).
    pub fn close(&self, id: u64) -> (Vec<HeldLease>, Vec<String>) {
        let mut state = self.lock();
        let Some(slot) = state.streams.remove(&id) else {
            return (Vec::new(), Vec::new());
        };
        state.generation += 1;
        state.streams_generation += 1;
        let mut orphaned = Vec::new();
        for queue in &slot.spec.queues {
            if let Some(q) = state.queues.get_mut(queue) {
                q.streams.retain(|s| *s != id);
                if q.streams.is_empty() {
                    state.queues.remove(queue);
                    orphaned.push(queue.clone());
                }
            }
        }
        let mut held: Vec<HeldLease> = slot
            .in_flight
            .into_iter()
            .map(|(job_id, h)| HeldLease { job_id, token: h.token, revoked: h.revoked, started: h.started })
            .collect();
        held.sort_by_key(|h| h.token.seq());
        (held, orphaned)
    }

    /// Reserves credit for one lease round of `queue`, fairly: tokens alternate between the
    /// eligible streams, starting from a rotating offset. Returns one token per job wanted.
    pub fn plan(&self, queue: &str, max: usize) -> Vec<LeaseToken> {
        let mut state = self.lock();
        // A queue its last round found empty gets no credit until something wakes it: its
        // reservations would only keep later queues of the same streams waiting.
        let Some(q) = state.queues.get(queue).filter(|q| !q.drained) else {
            return Vec::new();
        };
        let candidates = q.streams.clone();
        for id in &candidates {
            if let Some(s) = state.streams.get_mut(id).filter(|s| s.reserved > 0 && s.free() == 0) {
                s.contended = true;
            }
        }
        let eligible: Vec<u64> = candidates
            .into_iter()
            .filter(|id| {
                state.streams.get(id).is_some_and(|s| {
                    s.free() > 0
                        && s.spec
                            .queues
                            .iter()
                            .take_while(|name| name.as_str() != queue)
                            .all(|earlier| state.queues.get(earlier).is_none_or(|e| e.drained))
                })
            })
            .collect();
        if eligible.is_empty() {
            return Vec::new();
        }
        state.rotation = state.rotation.wrapping_add(1);
        let start = state.rotation % eligible.len();
        let mut free: Vec<(u64, u32)> = eligible
            .iter()
            .cycle()
            .skip(start)
            .take(eligible.len())
            .map(|id| (*id, state.streams[id].free()))
            .collect();
        let mut picks = Vec::new();
        while picks.len() < max {
            let before = picks.len();
            for (id, left) in free.iter_mut() {
                if *left > 0 && picks.len() < max {
                    *left -= 1;
                    picks.push(*id);
                }
            }
            if picks.len() == before {
                break;
            }
        }
        let mut tokens = Vec::with_capacity(picks.len());
        for id in picks {
            state.next_seq += 1;
            tokens.push(LeaseToken::new(&self.instance, id, state.next_seq));
            if let Some(s) = state.streams.get_mut(&id) {
                s.reserved += 1;
            }
        }
        tokens
    }

    /// Settles a lease round: hands each job to the stream its token names, and releases the
    /// reservations the round did not use. Returns the leases that could not be handed over
    /// (stream gone or not reading); they must go back to the queue.
    pub fn deliver(&self, tokens: &[LeaseToken], jobs: Vec<Delivery>) -> Vec<HeldLease> {
        let mut state = self.lock();
        for token in tokens {
            if let Some(s) = state.streams.get_mut(&token.stream()) {
                s.reserved = s.reserved.saturating_sub(1);
            }
        }
        let mut used: HashMap<u64, u32> = HashMap::new();
        for job in &jobs {
            *used.entry(job.lease_token.stream()).or_default() += 1;
        }
        let mut recheck = Vec::new();
        for token in tokens {
            let id = token.stream();
            let unused = used.get(&id).is_none_or(|n| *n == 0);
            if let Some(s) = state.streams.get_mut(&id).filter(|s| unused && s.contended) {
                s.contended = false;
                recheck.extend(s.spec.queues.iter().cloned());
            }
        }
        for queue in recheck {
            if let Some(q) = state.queues.get(&queue) {
                q.wake.notify_one();
            }
        }
        let mut delivered = false;
        let mut undelivered = Vec::new();
        let now = Instant::now();
        for job in jobs {
            let held = HeldLease {
                job_id: job.job_id.clone(),
                token: job.lease_token.clone(),
                revoked: false,
                started: false,
            };
            let Some(stream) = state.streams.get_mut(&held.token.stream()) else {
                undelivered.push(held);
                continue;
            };
            let job_id = job.job_id.clone();
            let token = job.lease_token.clone();
            let trace = job.trace;
            let started = stream.spec.prefetch == 0;
            if stream.tx.try_send(StreamEvent::Job(Box::new(job))).is_ok() {
                stream.in_flight.insert(job_id, Held { token, revoked: false, since: now, started, trace });
                delivered = true;
            } else {
                undelivered.push(held);
            }
        }
        if delivered {
            state.generation += 1;
        }
        undelivered
    }

    /// Whether `wake` is still the dispatcher wake-up of `queue` (the queue still has streams here
    /// and no newer dispatcher replaced the caller).
    pub fn serves(&self, queue: &str, wake: &Arc<Notify>) -> bool {
        self.lock().queues.get(queue).is_some_and(|q| Arc::ptr_eq(&q.wake, wake))
    }

    /// Records what a lease round learned about the queue being empty; when it is, later
    /// queues of the same streams may now serve them.
    pub fn set_drained(&self, queue: &str, drained: bool) {
        let mut state = self.lock();
        let Some(q) = state.queues.get_mut(queue) else {
            return;
        };
        let was = std::mem::replace(&mut q.drained, drained);
        if drained && !was {
            let later = later_queues(&state, queue);
            for name in later {
                if let Some(q) = state.queues.get(&name) {
                    q.wake.notify_one();
                }
            }
        }
    }

    /// A queue got work: it is not drained any more, and its dispatcher should run.
    pub fn wake(&self, queue: &str) {
        let mut state = self.lock();
        if let Some(q) = state.queues.get_mut(queue) {
            q.drained = false;
            q.wake.notify_one();
        }
    }

    /// Forgets that `queue` was found empty, without waking its dispatcher (which is running):
    /// for the periodic look that makes up for lost wake-ups.
    pub fn undrain(&self, queue: &str) {
        if let Some(q) = self.lock().queues.get_mut(queue) {
            q.drained = false;
        }
    }

    /// Changes whenever what `streams()` would list changes: (streams opened or closed, any
    /// change including in-flight counts).
    pub fn generation(&self) -> (u64, u64) {
        let state = self.lock();
        (state.streams_generation, state.generation)
    }

    pub fn wake_all(&self) {
        let mut state = self.lock();
        for q in state.queues.values_mut() {
            q.drained = false;
            q.wake.notify_one();
        }
    }

    /// The worker answered for a job (or its lease was found gone): free its credit.
    /// Only the delivery named by `token` is released, never a later one of the same job.
    /// Returns what was released; None when the stream did not hold that delivery.
    pub fn release(&self, job_id: &JobId, token: &LeaseToken) -> Option<Released> {
        let mut state = self.lock();
        let s = state.streams.get_mut(&token.stream())?;
        if s.in_flight.get(job_id).is_none_or(|h| h.token != *token) {
            return None;
        }
        let held = s.in_flight.remove(job_id)?;
        let queues = s.spec.queues.clone();
        state.generation += 1;
        for q in queues {
            if let Some(q) = state.queues.get(&q) {
                q.wake.notify_one();
            }
        }
        Some(Released { held_for: held.since.elapsed(), revoked: held.revoked })
    }

    /// Stream `id`'s worker handed the delivery named by `token` to a handler (see `Held::started`).
    /// A token the stream does not hold is ignored.
    pub(crate) fn mark_started(&self, id: u64, token: &LeaseToken) {
        let mut state = self.lock();
        let Some(s) = state.streams.get_mut(&id).filter(|_| token.stream() == id) else {
            return;
        };
        if let Some(h) = s.in_flight.values_mut().find(|h| h.token == *token && !h.started) {
            h.started = true;
            h.since = Instant::now();
        }
    }

    /// The trace context of a delivery a stream of this instance holds.
    pub fn trace_of(&self, job_id: &JobId, token: &LeaseToken) -> Option<TraceContext> {
        let state = self.lock();
        state.streams.get(&token.stream())?.in_flight.get(job_id).filter(|h| h.token == *token)?.trace
    }

    /// Open worker streams.
    pub fn stream_count(&self) -> usize {
        self.lock().streams.len()
    }

    /// Stops dispatch to the stream that received `token` (its worker is stopping); it keeps
    /// what it holds.
    pub fn stop_stream(&self, token: &LeaseToken) {
        if let Some(s) = self.lock().streams.get_mut(&token.stream()) {
            s.draining = true;
        }
    }

    /// Tells the worker holding a lease to stop; keeps its credit used until it answers.
    pub fn revoke(&self, job_id: &JobId, token: &LeaseToken, reason: RevokeReason) {
        let mut state = self.lock();
        let Some(s) = state.streams.get_mut(&token.stream()) else {
            return;
        };
        let Some(held) = s.in_flight.get_mut(job_id).filter(|h| h.token == *token) else {
            return;
        };
        held.revoked = true;
        let _ = s.tx.try_send(StreamEvent::Revoke { job_id: job_id.clone(), lease_token: token.clone(), reason });
    }

    /// Every lease held through this instance, for reconciliation and shutdown.
    pub fn held(&self) -> Vec<HeldLease> {
        let state = self.lock();
        let mut held = state
            .streams
            .values()
            .flat_map(|s| {
                s.in_flight.iter().map(|(job_id, h)| HeldLease {
                    job_id: job_id.clone(),
                    token: h.token.clone(),
                    revoked: h.revoked,
                    started: h.started,
                })
            })
            .collect::<Vec<_>>();
        held.sort_by_key(|h| h.token.seq());
        held
    }

    /// Stops dispatch to every stream and asks the workers to leave.
    pub fn drain_all(&self, grace: std::time::Duration) {
        let mut state = self.lock();
        state.draining = true;
        for s in state.streams.values_mut() {
            s.draining = true;
            let _ = s.tx.try_send(StreamEvent::Drain { grace });
        }
    }

    /// Forgets every held lease (after they were handed back on shutdown).
    pub fn forget_all(&self) {
        let mut state = self.lock();
        for s in state.streams.values_mut() {
            s.in_flight.clear();
        }
    }

    /// Ends every stream (their senders are dropped); used last on shutdown.
    pub fn disconnect_all(&self) {
        let mut state = self.lock();
        state.streams.clear();
        state.queues.clear();
    }

    pub fn in_flight_total(&self) -> usize {
        self.lock().streams.values().map(|s| s.in_flight.values().filter(|h| !h.revoked).count()).sum()
    }

    pub fn streams(&self) -> Vec<StreamInfo> {
        let state = self.lock();
        let mut out: Vec<StreamInfo> = state
            .streams
            .iter()
            .map(|(id, s)| StreamInfo {
                id: *id,
                spec: s.spec.clone(),
                in_flight: s.in_flight.len(),
                connected_at: s.connected_at,
            })
            .collect();
        out.sort_by_key(|s| s.id);
        out
    }
}

/// Queues that some stream serves after `queue`.
fn later_queues(state: &State, queue: &str) -> Vec<String> {
    let mut later = Vec::new();
    if let Some(q) = state.queues.get(queue) {
        for id in &q.streams {
            if let Some(s) = state.streams.get(id) {
                later.extend(s.spec.queues.iter().skip_while(|n| n.as_str() != queue).skip(1).cloned());
            }
        }
    }
    later
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(queues: &[&str], credit: u32) -> WorkerSpec {
        WorkerSpec {
            worker_id: "w".into(),
            labels: Vec::new(),
            queues: queues.iter().map(|q| q.to_string()).collect(),
            max_in_flight: credit,
            prefetch: 0,
        }
    }

    #[test]
    fn plan_spreads_credit_fairly_and_reserves_it() {
        let hub = Hub::new("i1");
        let (tx, _rx1) = mpsc::channel(16);
        let (a, _) = hub.open(spec(&["q"], 2), tx).expect("open");
        let (tx, _rx2) = mpsc::channel(16);
        let (b, _) = hub.open(spec(&["q"], 2), tx).expect("open");
        let tokens = hub.plan("q", 10);
        assert_eq!(tokens.len(), 4);
        let streams: Vec<u64> = tokens.iter().map(LeaseToken::stream).collect();
        assert_eq!(streams.iter().filter(|s| **s == a).count(), 2);
        assert_eq!(streams.iter().filter(|s| **s == b).count(), 2);
        assert_ne!(streams[0], streams[1], "alternates between streams");
        assert!(hub.plan("q", 10).is_empty(), "credit stays reserved until the round settles");
        hub.deliver(&tokens, Vec::new());
        assert_eq!(hub.plan("q", 10).len(), 4, "unused reservations come back");
    }

    #[test]
    fn prefetch_adds_to_a_streams_credit() {
        let hub = Hub::new("i1");
        let (tx, _rx) = mpsc::channel(16);
        hub.open(WorkerSpec { prefetch: 2, ..spec(&["q"], 1) }, tx).expect("open");
        assert_eq!(hub.plan("q", 10).len(), 3);
    }

    #[test]
    fn later_queues_wait_until_earlier_ones_are_drained() {
        let hub = Hub::new("i1");
        let (tx, _rx) = mpsc::channel(16);
        hub.open(spec(&["high", "low"], 1), tx).expect("open");
        assert!(hub.plan("low", 10).is_empty());
        hub.set_drained("high", true);
        assert_eq!(hub.plan("low", 10).len(), 1);
    }
}
