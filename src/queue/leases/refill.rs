//! The fused ack: a busy worker's ack (a completion or a fail) leases its next job in the same
//! Redis call, so a job costs one function call instead of a lease round and an ack.
//!
//! Before a batch of completions (or a fail) goes to Redis, each ack of a delivery held by a
//! stream of this instance may get a refill token (`Hub::refill`: the credit the ack frees,
//! reserved for the same stream and queue under the rules of a lease round's plan). The function
//! makes the due delayed jobs ready and leases one ready job per refill token of an ack that
//! ended its lease; the answer is then settled like a lease round's: the acked deliveries are
//! released, the jobs handed to their streams, unused tokens give their credit back, and a short
//! answer marks the queue drained (and tells the dispatcher when the next delayed job is due) so
//! the dispatcher takes over. A call whose answer was lost has its leases taken back as a lost
//! lease round's are. Refills count as dispatcher work: none is planned once the dispatchers
//! are stopped, and shutdown waits for those in flight before it hands leases back.
//!
//! An ack that reaches another instance than the lease owner's is not fused: the owner is told
//! (`Leases::tell_owner`) and its dispatcher refills the credit.

use std::sync::Arc;

use foldhash::{HashSet, HashSetExt};

use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::warn;

use super::{Leases, dispatch};
use crate::{
    queue::job::JobId,
    store::{LeaseToken, Refill, StoreError},
};

/// The refills planned for one batch of acks, by ack position; holds the dispatchers' tracker
/// until settled, so shutdown waits for it.
pub(crate) struct RefillPlan {
    /// Per ack: the token of the stream's next job, and the delivery (job and token) acked.
    refills: Vec<Option<(LeaseToken, JobId, LeaseToken)>>,
    /// The queue's wake-ups when planned (`Hub::found_empty`).
    wakes: u64,
    _running: TaskTrackerToken,
}

impl RefillPlan {
    /// The refill token of each ack, by position, as the store takes them.
    pub(crate) fn tokens(&self) -> Vec<Option<&str>> {
        self.refills.iter().map(|r| r.as_ref().map(|(token, _, _)| token.as_str())).collect()
    }

    fn reserved(&self) -> Vec<LeaseToken> {
        self.refills.iter().flatten().map(|(token, _, _)| token.clone()).collect()
    }
}

impl Leases {
    /// Plans the refills of acks of `queue` (a batch of completions, or a fail), given as
    /// (ULID, token) in order: one token for each ack of a delivery a stream here holds and may
    /// replace.
    pub(crate) fn plan_refills<'a>(
        &self,
        queue: &str,
        acks: impl IntoIterator<Item = (&'a str, &'a LeaseToken)>,
    ) -> RefillPlan {
        // Taken before looking at the stop: `stop_dispatch` cancels, then waits for this.
        let running = self.dispatchers.token();
        let stopped = self.dispatch_stop.is_cancelled();
        let wakes = self.hub.wakes(queue);
        let mut seen = HashSet::new();
        let refills = acks
            .into_iter()
            .map(|(ulid, token)| {
                let job_id = JobId::new(queue, ulid);
                // A job acked twice in one batch frees its credit once.
                let fresh = !stopped && token.instance() == self.instance && seen.insert(ulid);
                let refill = if fresh { self.hub.refill(&job_id, token) } else { None };
                refill.map(|refill| (refill, job_id, token.clone()))
            })
            .collect();
        RefillPlan { refills, wakes, _running: running }
    }

    /// Settles an ack call that carried `plan` (see the module doc); returns what the call
    /// answered about the acks, or its error.
    pub(crate) async fn settle_refills<T>(
        self: &Arc<Self>,
        queue: &str,
        plan: RefillPlan,
        answer: Result<(T, Refill), StoreError>,
    ) -> Result<T, StoreError> {
        let reserved = plan.reserved();
        let (acked, refill) = match answer {
            Ok(answer) => answer,
            Err(e) => {
                dispatch::unanswered(self, queue, &reserved, &e);
                return Err(e);
            }
        };
        let offered: HashSet<&str> = refill.offered.iter().map(String::as_str).collect();
        for (token, job_id, held) in plan.refills.iter().flatten() {
            if offered.contains(token.as_str()) {
                self.answered(job_id, self.hub.release_refilled(job_id, held));
            }
        }
        settle_leased(self, queue, &reserved, plan.wakes, refill).await;
        Ok(acked)
    }
}

/// Settles what a call that leased in passing answered (an ack's refills, an add's leases), the
/// reservations `reserved` made after `wakes` wake-ups of `queue`: the jobs go to their streams
/// and the unused reservations come back. A short answer (fewer jobs than tokens offered) marks
/// the queue drained, unless a wake-up came meanwhile, and tells the dispatcher when the next
/// delayed job is due: the streams may now idle, and the dispatcher takes over. A job leased
/// with a timeout shorter than the safety poll sets the dispatcher's timer for its deadline
/// (the dispatcher's upkeep expires deadlines; a longer one is met by the periodic upkeep).
/// Returns whether the answer was short.
pub(super) async fn settle_leased(
    leases: &Arc<Leases>,
    queue: &str,
    reserved: &[LeaseToken],
    wakes: u64,
    refill: Refill,
) -> bool {
    let short = refill.leased.len() < refill.offered.len();
    let soonest = refill.leased.iter().map(|job| job.deadline_ms.saturating_sub(refill.now_ms)).min();
    if let Some(timeout) = soonest.and_then(|ms| u64::try_from(ms).ok()).map(std::time::Duration::from_millis)
        && timeout < leases.settings.safety_poll
    {
        leases.hub.due_in(queue, timeout);
    }
    if let Err(e) = dispatch::hand_over(leases, queue, reserved, refill.leased, refill.now_ms).await {
        // The call's own change stands all the same; the jobs not handed over return at their
        // deadline.
        warn!(%queue, error = %e, "could not hand back jobs leased for a stream that left");
    }
    if short {
        leases.hub.found_empty(queue, wakes);
        if let Some(wait) = refill.next_delayed {
            leases.hub.due_in(queue, wait);
        }
    }
    short
}
