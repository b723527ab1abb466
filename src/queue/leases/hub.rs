//! The in-memory side of dispatch on one instance: which worker streams are open, which queues
//! they serve, how much credit each has left, and which leases each holds.
//!
//! One `std::sync::Mutex` guards it all; it is held only for map updates, never across an await.
//! Redis is the truth about leases; this is the instance's view, reconciled against Redis by
//! the reconciliation in `notices.rs` because cross-instance notices ride pub/sub, which may drop
//! messages. Only the leases room reaches the hub (`pub(super)`); it calls no room.
//!
//! Credit is reserved when a dispatcher plans a lease round, or an ack plans the refill of the
//! credit it frees (`refill`), and settled when that call returns, so two queues' dispatchers and
//! the acks can never hand one stream more than its credit (`max_in_flight + prefetch`).
//!
//! Prefetch: on a stream opened with `prefetch > 0`, a delivered lease is held "not started"
//! until the worker reports it handed the job to a handler (`mark_started`); when the stream
//! closes, the unstarted ones go back without counting a lost delivery.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime},
};

use foldhash::{HashMap, HashMapExt};
use tokio::sync::{Notify, mpsc};

use self::turns::{in_turn, later_queues, share};
use super::stream::{RevokeReason, StreamEvent, WorkerSpec};
use crate::{
    queue::job::{Delivery, JobId},
    store::LeaseToken,
    telemetry::TraceContext,
};

/// A queue that got its first stream here, with the wake-up its new dispatcher waits on.
pub(super) type NewQueue = (String, Arc<Notify>);

#[derive(Debug)]
struct Held {
    job_id: JobId,
    token: LeaseToken,
    /// Revoked (timed out, cancelled or found lost): the worker was told to stop, but the credit
    /// stays used until it answers or the stream ends.
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
pub(super) struct Released {
    /// From hand-over to the stream until now.
    pub(super) held_for: Duration,
    /// It had been revoked (timed out or cancelled) before the answer came.
    pub(super) revoked: bool,
}

struct StreamSlot {
    tx: mpsc::Sender<StreamEvent>,
    spec: WorkerSpec,
    reserved: u32,
    /// The leases it holds, by their token's sequence number (unique on this instance): every
    /// question about a lease comes with its token, and a `started` report with nothing else.
    in_flight: HashMap<u64, Held>,
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
        let in_flight = u32::try_from(self.in_flight.len()).unwrap_or(u32::MAX);
        self.spec.credit().saturating_sub(self.reserved.saturating_add(in_flight))
    }
}

/// A queue served by streams here.
struct QueueSlot {
    streams: Vec<u64>,
    /// What its dispatcher waits on.
    wake: Arc<Notify>,
    /// The last lease round of this queue found it empty (or paused) and nothing has been added
    /// since: streams may take later queues' jobs. Streams serve their queues in strict order,
    /// the shards of one queue fairly (`share`).
    drained: bool,
    /// Wake-ups so far: a lease call that found the queue empty marks it drained only if none
    /// came while it ran (the work it announced may have come after the call looked).
    wakes: u64,
    /// When the earliest delayed job is due, as an ack's refill last saw it: for the dispatcher's
    /// timer (`take_due`), which no lease round of its own set meanwhile.
    due: Option<Instant>,
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
pub(super) struct HeldLease {
    pub(super) job_id: JobId,
    /// Names the stream that holds it.
    pub(super) token: LeaseToken,
    /// Revoked (timed out, cancelled or found lost): the worker was told to stop.
    pub(super) revoked: bool,
    /// A handler got it (see `Held::started`).
    pub(super) started: bool,
}

/// A connected worker stream, for listings.
#[derive(Clone, Debug)]
pub(super) struct StreamInfo {
    pub(super) id: u64,
    pub(super) spec: WorkerSpec,
    /// Jobs it holds, revoked ones included.
    pub(super) in_flight: usize,
    pub(super) connected_at: SystemTime,
}

/// The streams, queues and leases of this instance, behind one lock.
pub(super) struct Hub {
    instance: String,
    state: Mutex<State>,
}

impl Hub {
    /// An empty hub of the instance `instance`, which every lease token it makes names.
    pub(super) fn new(instance: &str) -> Self {
        Self { instance: instance.to_owned(), state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind, still consistent enough to
        // serve; recover rather than poison every later call.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a stream; returns its id and the queues that had no stream here before (their
    /// dispatchers must be started). Wakes every queue the stream serves. None while draining.
    pub(super) fn open(&self, spec: WorkerSpec, tx: mpsc::Sender<StreamEvent>) -> Option<(u64, Vec<NewQueue>)> {
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
                QueueSlot { streams: Vec::new(), wake, drained: false, wakes: 0, due: None }
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
    pub(super) fn close(&self, id: u64) -> (Vec<HeldLease>, Vec<String>) {
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
            .into_values()
            .map(|h| HeldLease { job_id: h.job_id, token: h.token, revoked: h.revoked, started: h.started })
            .collect();
        held.sort_by_key(|h| h.token.seq());
        (held, orphaned)
    }

    /// Reserves credit for one lease round of `queue`, fairly: tokens alternate between the
    /// eligible streams, starting from a rotating offset. Returns one token per job wanted.
    pub(super) fn plan(&self, queue: &str, max: usize) -> Vec<LeaseToken> {
        let mut state = self.lock();
        // A queue its last round found empty gets no credit until something wakes it: its
        // reservations would only keep later queues of the same streams waiting.
        if state.queues.get(queue).is_none_or(|q| q.drained) {
            return Vec::new();
        }
        self.reserve(&mut state, queue, max)
    }

    /// Reserves credit for the leases an add of `queue` makes in its own call, as `plan` does
    /// for a round, but only while the queue is drained: its streams are waiting and no lease
    /// round is due (when it is not drained, its dispatcher is about to run and the add only
    /// wakes it). Returns the tokens, and the queue's wake-ups so far (for `found_empty`); no
    /// token while the instance is draining, or when no stream may take a job of the queue now.
    pub(super) fn plan_add(&self, queue: &str, max: usize) -> (Vec<LeaseToken>, u64) {
        let mut state = self.lock();
        let Some(wakes) = state.queues.get(queue).filter(|q| q.drained && !state.draining).map(|q| q.wakes) else {
            return (Vec::new(), 0);
        };
        (self.reserve(&mut state, queue, max), wakes)
    }

    /// The reservation of `plan` and `plan_add`: up to `max` tokens shared out fairly between
    /// the streams of `queue` that may take its jobs now.
    fn reserve(&self, state: &mut State, queue: &str, max: usize) -> Vec<LeaseToken> {
        let Some(q) = state.queues.get(queue) else {
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
                state.streams.get(id).is_some_and(|s| share(state, s, queue) > 0 && in_turn(state, &s.spec, queue))
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
            .map(|id| (*id, share(state, &state.streams[id], queue)))
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

    /// Reserves the credit an ack is about to free, for the acking stream's next job of the
    /// same queue (leased in the ack's own call): one token, settled by `deliver` like a lease
    /// round's. None when `plan` would not give that stream a job of the queue now: the
    /// instance or the stream is draining, the ack is not for a delivery the stream holds (or
    /// that delivery was revoked), the queue was found drained, an earlier queue of the stream
    /// was not — or another stream of the queue has free credit, which the dispatcher shares
    /// out fairly.
    pub(crate) fn refill(&self, job_id: &JobId, token: &LeaseToken) -> Option<LeaseToken> {
        let mut state = self.lock();
        let queue = job_id.queue.as_str();
        let q = state.queues.get(queue).filter(|q| !state.draining && !q.drained)?;
        let stream = token.stream();
        let s = state.streams.get(&stream)?;
        if s.draining || held_by(s, job_id, token).is_none_or(|h| h.revoked) {
            return None;
        }
        let others_busy = q.streams.iter().filter(|id| **id != stream).all(|id| {
            state
                .streams
                .get(id)
                .is_none_or(|other| share(&state, other, queue) == 0 || !in_turn(&state, &other.spec, queue))
        });
        if !in_turn(&state, &s.spec, queue) || !others_busy {
            return None;
        }
        state.next_seq += 1;
        let refill = LeaseToken::new(&self.instance, stream, state.next_seq);
        if let Some(s) = state.streams.get_mut(&stream) {
            s.reserved += 1;
        }
        Some(refill)
    }

    /// Settles a lease round: hands each job to the stream its token names, and releases the
    /// reservations the round did not use. Returns the leases that could not be handed over
    /// (stream gone, draining or not reading); they must go back to the queue.
    pub(super) fn deliver(&self, tokens: &[LeaseToken], jobs: Vec<Delivery>) -> Vec<HeldLease> {
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
            // A stream told to drain (or whose worker is stopping) since the round began takes no
            // more: the job goes back, not counted lost, instead of arriving as the worker leaves.
            let Some(stream) = state.streams.get_mut(&job.lease_token.stream()).filter(|s| !s.draining) else {
                undelivered.push(HeldLease {
                    job_id: job.job_id,
                    token: job.lease_token,
                    revoked: false,
                    started: false,
                });
                continue;
            };
            let held = Held {
                job_id: job.job_id.clone(),
                token: job.lease_token.clone(),
                revoked: false,
                since: now,
                started: stream.spec.prefetch == 0,
                trace: job.trace,
            };
            if stream.tx.try_send(StreamEvent::Job(Box::new(job))).is_ok() {
                stream.in_flight.insert(held.token.seq(), held);
                delivered = true;
            } else {
                undelivered.push(HeldLease { job_id: held.job_id, token: held.token, revoked: false, started: false });
            }
        }
        if delivered {
            state.generation += 1;
        }
        undelivered
    }

    /// The queues served by streams here (each with its dispatcher), sorted.
    pub(super) fn queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = self.lock().queues.keys().cloned().collect();
        queues.sort_unstable();
        queues
    }

    /// Whether `wake` is still the dispatcher wake-up of `queue` (the queue still has streams here
    /// and no newer dispatcher replaced the caller).
    pub(super) fn serves(&self, queue: &str, wake: &Arc<Notify>) -> bool {
        self.lock().queues.get(queue).is_some_and(|q| Arc::ptr_eq(&q.wake, wake))
    }

    /// Records what a lease round learned about the queue being empty; when it is, later
    /// queues of the same streams may now serve them.
    pub(super) fn set_drained(&self, queue: &str, drained: bool) {
        set_drained(&mut self.lock(), queue, drained);
    }

    /// The wake-ups `queue` has had so far: taken before a lease call, for `found_empty`.
    pub(crate) fn wakes(&self, queue: &str) -> u64 {
        self.lock().queues.get(queue).map_or(0, |q| q.wakes)
    }

    /// A delayed job of `queue` is due in `wait`: its dispatcher is woken to set its timer.
    pub(crate) fn due_in(&self, queue: &str, wait: Duration) {
        let at = Instant::now() + wait;
        if let Some(q) = self.lock().queues.get_mut(queue) {
            q.due = Some(q.due.map_or(at, |due| due.min(at)));
            q.wake.notify_one();
        }
    }

    /// When a delayed job of `queue` is due, if an ack's refill said so since the last call.
    pub(crate) fn take_due(&self, queue: &str) -> Option<Instant> {
        self.lock().queues.get_mut(queue)?.due.take()
    }

    /// A lease call that started after `since` wake-ups came back short: the queue is drained,
    /// unless a wake-up came meanwhile.
    pub(crate) fn found_empty(&self, queue: &str, since: u64) {
        let mut state = self.lock();
        if state.queues.get(queue).is_some_and(|q| q.wakes == since) {
            set_drained(&mut state, queue, true);
        }
    }

    /// A queue got work: it is not drained any more, and its dispatcher should run.
    pub(super) fn wake(&self, queue: &str) {
        let mut state = self.lock();
        if let Some(q) = state.queues.get_mut(queue) {
            q.drained = false;
            q.wakes += 1;
            q.wake.notify_one();
        }
    }

    /// Forgets that `queue` was found empty, without waking its dispatcher (which is running):
    /// for the periodic look that makes up for lost wake-ups.
    pub(super) fn undrain(&self, queue: &str) {
        if let Some(q) = self.lock().queues.get_mut(queue) {
            q.drained = false;
        }
    }

    /// Two counters of what `streams()` would list: the first moves when a stream opens or
    /// closes, the second on any change, in-flight counts included.
    pub(super) fn generation(&self) -> (u64, u64) {
        let state = self.lock();
        (state.streams_generation, state.generation)
    }

    /// Wakes every dispatcher here and forgets which queues were found empty: for when wake-ups
    /// may have been missed (pub/sub reconnected, Redis back).
    pub(super) fn wake_all(&self) {
        let mut state = self.lock();
        for q in state.queues.values_mut() {
            q.drained = false;
            q.wakes += 1;
            q.wake.notify_one();
        }
    }

    /// The worker answered for a job (or its lease was found gone): free its credit.
    /// Only the delivery named by `token` is released, never a later one of the same job.
    /// Returns what was released; None when the stream did not hold that delivery.
    pub(super) fn release(&self, job_id: &JobId, token: &LeaseToken) -> Option<Released> {
        let mut state = self.lock();
        let released = take_held(&mut state, job_id, token)?;
        if let Some(s) = state.streams.get(&token.stream()) {
            for q in &s.spec.queues {
                if let Some(q) = state.queues.get(q) {
                    q.wake.notify_one();
                }
            }
        }
        Some(released)
    }

    /// As `release`, for an ack whose refill reserved the credit it frees: no dispatcher is woken
    /// for it (if the refill comes back short, `found_empty` wakes whom it concerns).
    pub(crate) fn release_refilled(&self, job_id: &JobId, token: &LeaseToken) -> Option<Released> {
        take_held(&mut self.lock(), job_id, token)
    }

    /// Stream `id`'s worker handed the delivery named by `token` to a handler (see `Held::started`).
    /// A token the stream does not hold is ignored.
    pub(crate) fn mark_started(&self, id: u64, token: &LeaseToken) {
        let mut state = self.lock();
        let Some(s) = state.streams.get_mut(&id).filter(|_| token.stream() == id) else {
            return;
        };
        if let Some(h) = s.in_flight.get_mut(&token.seq()).filter(|h| h.token == *token && !h.started) {
            h.started = true;
            h.since = Instant::now();
        }
    }

    /// The trace context of a delivery a stream of this instance holds.
    pub(super) fn trace_of(&self, job_id: &JobId, token: &LeaseToken) -> Option<TraceContext> {
        let state = self.lock();
        held_by(state.streams.get(&token.stream())?, job_id, token)?.trace
    }

    /// Open worker streams.
    pub(super) fn stream_count(&self) -> usize {
        self.lock().streams.len()
    }

    /// Stops dispatch to the stream that received `token` (its worker is stopping); it keeps
    /// what it holds.
    pub(super) fn stop_stream(&self, token: &LeaseToken) {
        if let Some(s) = self.lock().streams.get_mut(&token.stream()) {
            s.draining = true;
        }
    }

    /// Tells the worker holding a lease to stop; keeps its credit used until it answers.
    pub(super) fn revoke(&self, job_id: &JobId, token: &LeaseToken, reason: RevokeReason) {
        let mut state = self.lock();
        let Some(s) = state.streams.get_mut(&token.stream()) else {
            return;
        };
        let Some(held) = s.in_flight.get_mut(&token.seq()).filter(|h| h.job_id == *job_id && h.token == *token) else {
            return;
        };
        held.revoked = true;
        let _ = s.tx.try_send(StreamEvent::Revoke { job_id: job_id.clone(), lease_token: token.clone(), reason });
    }

    /// Every lease held through this instance, for reconciliation and shutdown.
    pub(super) fn held(&self) -> Vec<HeldLease> {
        let state = self.lock();
        let mut held = state
            .streams
            .values()
            .flat_map(|s| {
                s.in_flight.values().map(|h| HeldLease {
                    job_id: h.job_id.clone(),
                    token: h.token.clone(),
                    revoked: h.revoked,
                    started: h.started,
                })
            })
            .collect::<Vec<_>>();
        held.sort_by_key(|h| h.token.seq());
        held
    }

    /// Whether the stream `token` names holds the lease of `job_id` taken with `token` (revoked
    /// or not).
    pub(super) fn holds(&self, job_id: &JobId, token: &LeaseToken) -> bool {
        let state = self.lock();
        state.streams.get(&token.stream()).and_then(|s| held_by(s, job_id, token)).is_some()
    }

    /// Stops dispatch to every stream and asks the workers to leave.
    pub(super) fn drain_all(&self, grace: std::time::Duration) {
        let mut state = self.lock();
        state.draining = true;
        for s in state.streams.values_mut() {
            s.draining = true;
            let _ = s.tx.try_send(StreamEvent::Drain { grace });
        }
    }

    /// Forgets every held lease (after they were handed back on shutdown).
    pub(super) fn forget_all(&self) {
        let mut state = self.lock();
        for s in state.streams.values_mut() {
            s.in_flight.clear();
        }
    }

    /// Ends every stream (their senders are dropped); used last on shutdown.
    pub(super) fn disconnect_all(&self) {
        let mut state = self.lock();
        state.streams.clear();
        state.queues.clear();
    }

    /// Leases held through every stream and not revoked: what a drain waits for.
    pub(super) fn in_flight_total(&self) -> usize {
        self.lock().streams.values().map(|s| s.in_flight.values().filter(|h| !h.revoked).count()).sum()
    }

    /// The open streams in the order they opened, for the published worker list.
    pub(super) fn streams(&self) -> Vec<StreamInfo> {
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

/// The delivery of `job_id` named by `token`, if the stream holds it.
fn held_by<'a>(s: &'a StreamSlot, job_id: &JobId, token: &LeaseToken) -> Option<&'a Held> {
    s.in_flight.get(&token.seq()).filter(|h| h.job_id == *job_id && h.token == *token)
}

/// Removes the delivery named by `token` from its stream's in-flight set, if it holds it.
fn take_held(state: &mut State, job_id: &JobId, token: &LeaseToken) -> Option<Released> {
    let s = state.streams.get_mut(&token.stream())?;
    held_by(s, job_id, token)?;
    let held = s.in_flight.remove(&token.seq())?;
    state.generation += 1;
    Some(Released { held_for: held.since.elapsed(), revoked: held.revoked })
}

/// Records what a lease call learned about `queue` being empty; when it is, later queues of the
/// same streams may now serve them.
fn set_drained(state: &mut State, queue: &str, drained: bool) {
    let Some(q) = state.queues.get_mut(queue) else {
        return;
    };
    let was = std::mem::replace(&mut q.drained, drained);
    if drained && !was {
        for name in later_queues(state, queue) {
            if let Some(q) = state.queues.get(&name) {
                q.wake.notify_one();
            }
        }
    }
}

mod turns;

#[cfg(test)]
mod tests;
