//! Whose turn it is: which queue of a stream may take its credit now (strict order between
//! queues, a fair share between the shards of one queue), and whom a drained queue lets go.

use super::{State, StreamSlot, WorkerSpec};
use crate::queue::shards;

/// Whether a stream may take jobs of `queue` now: it serves its queues in strict order, so only
/// once every queue it names before this one was found drained. The shards of one sharded
/// queue (`shards.rs`) are one step of that order: none waits for another.
pub(super) fn in_turn(state: &State, spec: &WorkerSpec, queue: &str) -> bool {
    let group = shards::logical(queue);
    spec.queues
        .iter()
        .take_while(|name| shards::logical(name) != group)
        .all(|earlier| state.queues.get(earlier).is_none_or(|e| e.drained))
}

/// The credit of stream `s` a lease round of `queue` may reserve. The shards of one queue
/// share a stream fairly: while k of them the stream serves are not drained, each may hold at
/// most a k-th of its credit (rounded up), so no shard's dispatcher takes it all because it
/// ran first; alone, a shard (or any other queue) may take all the free credit.
pub(super) fn share(state: &State, s: &StreamSlot, queue: &str) -> u32 {
    let group = shards::logical(queue);
    let busy = s
        .spec
        .queues
        .iter()
        .filter(|name| shards::logical(name) == group && state.queues.get(*name).is_some_and(|q| !q.drained))
        .count();
    if busy <= 1 {
        return s.free();
    }
    let fair = s.spec.credit().div_ceil(u32::try_from(busy).unwrap_or(u32::MAX));
    let held = u32::try_from(s.in_flight.values().filter(|h| h.job_id.queue == queue).count()).unwrap_or(u32::MAX);
    s.free().min(fair.saturating_sub(held))
}

/// Queues that some stream serves after `queue`, and the other shards of its queue (whose
/// share of the streams' credit grows when it drains).
pub(super) fn later_queues(state: &State, queue: &str) -> Vec<String> {
    let group = shards::logical(queue);
    let mut later = Vec::new();
    if let Some(q) = state.queues.get(queue) {
        for id in &q.streams {
            if let Some(s) = state.streams.get(id) {
                later.extend(s.spec.queues.iter().skip_while(|n| n.as_str() != queue).skip(1).cloned());
                later.extend(
                    s.spec.queues.iter().filter(|n| n.as_str() != queue && shards::logical(n) == group).cloned(),
                );
            }
        }
    }
    later
}
