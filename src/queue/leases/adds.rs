//! The add that leases: an add of a queue for which worker streams of this instance wait with
//! free credit leases their jobs in its own Redis call, so an idle worker's job costs no lease
//! round and no hop through the dispatcher between the add and the delivery.
//!
//! Only a drained queue's add does (its last lease round found nothing to lease and nothing
//! woke it since: its streams wait, and no round is due). Before the call the hub reserves, as
//! for a lease round and under the same rules (`Hub::plan_add`: fair between the streams, the
//! streams' queue order, none while draining), one token per job of the call plus one: the
//! spare token tells a call that leased all there was (it comes back short) from one that may
//! have left ready jobs behind (every token used). The function leases with them after the add
//! through the lease round's own path (`lease_refills` in lib.lua: pause, priorities, the
//! concurrency cap, rate limits, sessions). The answer is settled as a refill's
//! (`refill::settle_leased`): the jobs go to their streams, unused tokens give their credit
//! back, a short answer keeps the queue drained; when every token took a job, the dispatcher
//! is woken for what may be left. An add of a queue that is not drained, or has no stream
//! here, leases nothing and wakes the dispatcher as before; other instances hear of the jobs
//! from the add function's wake-up, which it publishes only when jobs may be left (see
//! lua/add.lua). As refills, these leases count as dispatcher work: none is planned once the
//! dispatchers are stopped, and shutdown waits for those in flight. A call whose answer was
//! lost has its leases taken back as a lost lease round's are.

use std::sync::Arc;

use tokio_util::task::task_tracker::TaskTrackerToken;

use super::{Leases, dispatch, refill};
use crate::store::{LeaseToken, Refill, StoreError};

/// The leases one add call may make, reserved before it; holds the dispatchers' tracker until
/// settled, so shutdown waits for it.
pub(crate) struct AddLeases {
    tokens: Vec<LeaseToken>,
    /// The queue's wake-ups when planned (`Hub::found_empty`).
    wakes: u64,
    _running: TaskTrackerToken,
}

impl AddLeases {
    /// The tokens the add function leases with; none: a plain add.
    pub(crate) fn tokens(&self) -> &[LeaseToken] {
        &self.tokens
    }

    /// Whether the call leases for waiting streams, and its settling takes care of the queue's
    /// dispatcher (the add need not wake it).
    pub(crate) fn leases(&self) -> bool {
        !self.tokens.is_empty()
    }
}

impl Leases {
    /// Plans the leases of an add call of `jobs` jobs of `queue` (see the module doc).
    pub(crate) fn plan_add_leases(&self, queue: &str, jobs: usize) -> AddLeases {
        // Taken before looking at the stop: `stop_dispatch` cancels, then waits for this.
        let running = self.dispatchers.token();
        let (tokens, wakes) = if self.dispatch_stop.is_cancelled() {
            (Vec::new(), 0)
        } else {
            self.hub.plan_add(queue, jobs.saturating_add(1))
        };
        AddLeases { tokens, wakes, _running: running }
    }

    /// Settles an add call that carried `plan` (see the module doc); returns what the call
    /// answered about the add, or its error.
    pub(crate) async fn settle_add_leases<T>(
        self: &Arc<Self>,
        queue: &str,
        plan: AddLeases,
        answer: Result<(T, Refill), StoreError>,
    ) -> Result<T, StoreError> {
        if plan.tokens.is_empty() {
            return answer.map(|(added, _)| added);
        }
        let (added, leased) = match answer {
            Ok(answer) => answer,
            Err(e) => {
                dispatch::unanswered(self, queue, &plan.tokens, &e);
                return Err(e);
            }
        };
        if !refill::settle_leased(self, queue, &plan.tokens, plan.wakes, leased).await {
            // Every token took a job: more may be ready, for the dispatcher's round.
            self.hub.wake(queue);
        }
        Ok(added)
    }
}
