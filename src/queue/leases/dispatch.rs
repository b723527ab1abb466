//! One dispatcher per queue with a worker stream on this instance.
//!
//! It sleeps until there may be work — a wake-up (a local add, a pub/sub notice of an add
//! elsewhere, credit coming back), its own timer for the next delayed job or deadline, or the
//! slow safety poll — then runs lease rounds: reserve the streams' free credit, lease that many
//! jobs in one script call, hand them out. No Redis call blocks, so a thousand idle streams cost
//! nothing in Redis.

use std::{sync::Arc, time::Duration};

use tokio::{sync::Notify, time::Instant};
use tracing::{debug, field::Empty, warn};

use super::{Leases, Notice, RevokeReason};
use crate::{
    queue::job::{Delivery, JobId, SessionId, from_ms},
    store::{LeaseToken, LeasedJob, StoreError},
    telemetry::{self, SPAN_TARGET, TraceContext, traceparent},
};

/// Most jobs one lease round hands out.
const MAX_ROUND: usize = 500;

/// How many lease tokens the first round of a wake is given. While a rate limit holds the
/// queue's jobs back, a round leases what the rate lets go since the last one (a batch:
/// `limits_lib.lua`, "Batches"), a handful, not the streams' free credit; yet every token given
/// is an argument Redis reads and the script makes a string of. So such a round is given twice
/// what the last wakes took (the most of them, forgotten by a quarter per wake), and two more.
/// Twice, because the script takes the tokens as the credit the streams have: it sets the next
/// wake for when the rate lets go a batch or what the tokens left over would take, whichever is
/// fewer (`batch_at`), so a round given barely what it takes wakes the next one for fewer jobs
/// and the rounds shrink; with twice, the leftover exceeds what the round took and a wake's take
/// grows back to the rate's batch. A round that uses every token it was given is followed at
/// once by one given all the credit (`rounds`), so a small round costs at most one more call,
/// never a job the rate lets go.
#[derive(Debug, Default)]
struct RoundSize {
    /// What the last wakes took while a rate held jobs back; None when none held them.
    took: Option<usize>,
}

impl RoundSize {
    /// Tokens for the first round of a wake.
    fn tokens(&self) -> usize {
        self.took.map_or(MAX_ROUND, |n| (2 * n + 2).min(MAX_ROUND))
    }

    /// A wake's rounds leased `leased` in all, the last of them `rate_held` (see `LeaseRound`).
    fn learn(&mut self, leased: usize, rate_held: bool) {
        self.took = rate_held.then(|| self.took.map_or(leased, |n| leased.max(n - n / 4)));
    }
}

/// Runs the dispatcher of `queue` until the dispatchers stop or the queue has no stream here
/// any more (or another dispatcher took its place: `wake` is no longer the queue's).
pub(super) async fn run(leases: Arc<Leases>, queue: String, wake: Arc<Notify>) {
    let mut next_timer: Option<Instant> = None;
    let mut failures = 0u32;
    let mut last_periodic: Option<Instant> = None;
    let mut size = RoundSize::default();
    loop {
        let timer = async {
            match next_timer {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = leases.dispatch_stop.cancelled() => return,
            _ = wake.notified() => {}
            _ = timer => {}
            _ = tokio::time::sleep(leases.settings.safety_poll) => {}
        }
        if !leases.hub.serves(&queue, &wake) {
            return;
        }
        // An ack's refill saw a delayed job this dispatcher's rounds have not.
        if let Some(due) = leases.hub.take_due(&queue) {
            let due = tokio::time::Instant::from_std(due);
            next_timer = Some(next_timer.map_or(due, |t| t.min(due)));
        }
        // Upkeep (expiring deadlines, promoting delayed jobs) is due when the timer fired or a
        // safety period passed; a wake-up without free credit then costs no call. Retention is
        // enforced once per safety period only: the timer of a queue a rate limit holds back
        // fires many times a second, and each trim reads the retained sets again.
        let now = Instant::now();
        let periodic = last_periodic.is_none_or(|t| now.duration_since(t) >= leases.settings.safety_poll);
        let upkeep = periodic || next_timer.is_some_and(|t| t <= now);
        if periodic {
            last_periodic = Some(now);
        }
        if upkeep {
            leases.hub.undrain(&queue);
        }
        match rounds(&leases, &queue, upkeep, periodic, &mut size).await {
            Ok(None) => {}
            Ok(Some(next)) => {
                failures = 0;
                next_timer = next.map(|d| Instant::now() + d);
            }
            Err(e) => {
                failures += 1;
                let wait = Duration::from_millis(100 * 2u64.pow(failures.min(5)));
                warn!(%queue, error = %e, ?wait, "lease round failed");
                next_timer = Some(Instant::now() + wait);
            }
        }
    }
}

/// Leases until the streams' credit or the queue runs out; returns when the next delayed job
/// or deadline is due, or None when there was nothing to do (no credit, no upkeep due). The
/// first call enforces retention when `trim` says so (`upkeep` is then set too). The first
/// round is given the tokens `size` says, the others all the credit.
async fn rounds(
    leases: &Arc<Leases>,
    queue: &str,
    upkeep: bool,
    trim: bool,
    size: &mut RoundSize,
) -> Result<Option<Option<Duration>>, StoreError> {
    // After a full round, the next one runs only if credit is left: the full round already did
    // the upkeep and said when the next delayed job or deadline is due.
    let mut done: Option<Option<Duration>> = None;
    let mut leased = 0;
    loop {
        let wakes = leases.hub.wakes(queue);
        let most = if done.is_none() { size.tokens() } else { MAX_ROUND };
        let tokens = leases.hub.plan(queue, most);
        if tokens.is_empty() && (done.is_some() || !upkeep) {
            return Ok(done);
        }
        let trim = trim && done.is_none();
        let round = match leases.store.jobs().lease(queue, &tokens, rand::random(), trim).await {
            Ok(round) => round,
            Err(e) => {
                unanswered(leases, queue, &tokens, &e);
                return Err(e);
            }
        };
        for (ulid, token) in &round.revoked {
            if let Some(token) = LeaseToken::parse(token) {
                leases.tell_owner(Notice::Revoke(RevokeReason::Timeout), &JobId::new(queue, ulid), &token).await;
            }
        }
        if let Some(m) = telemetry::queue(crate::queue::shards::logical(queue)).filter(|_| !round.revoked.is_empty()) {
            m.timed_out.increment(u64::try_from(round.revoked.len()).unwrap_or(u64::MAX));
        }
        let full = !tokens.is_empty() && round.jobs.len() == tokens.len();
        debug!(%queue, wanted = tokens.len(), leased = round.jobs.len(), round.rate_held, "lease round");
        leased += round.jobs.len();
        let rate_held = round.rate_held;
        hand_over(leases, queue, &tokens, round.jobs, round.now_ms).await?;
        if full {
            leases.hub.set_drained(queue, false);
        } else if !tokens.is_empty() {
            leases.hub.found_empty(queue, wakes);
        }
        done = Some(round.next_wake);
        if !full {
            // A round without tokens (no credit) says nothing of what the rate lets go.
            if !tokens.is_empty() {
                size.learn(leased, rate_held);
            }
            return Ok(done);
        }
    }
}

/// Hands the jobs a lease call leased at `now_ms` to the streams their tokens name and settles
/// the reservations of `tokens` (`Hub::deliver`); jobs whose stream left go back to the queue.
pub(super) async fn hand_over(
    leases: &Leases,
    queue: &str,
    tokens: &[LeaseToken],
    jobs: Vec<LeasedJob>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let metrics = telemetry::queue(crate::queue::shards::logical(queue));
    let deliveries = jobs
        .into_iter()
        .filter_map(|job| {
            let Some(lease_token) = LeaseToken::parse(&job.token) else {
                // Never: the call answers the tokens it was given. The lease times out.
                warn!(%queue, token = %job.token, "a lease answered a token it was not given");
                return None;
            };
            let r = job.record;
            let job_id = JobId::new(queue, &job.ulid);
            let trace = TraceContext::from_headers(r.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let waited_ms = now_ms - r.ready_at_ms.unwrap_or(r.created_ms);
            if let Some(m) = &metrics {
                // created_ms comes from the adding instance's clock: clamp any skew at zero.
                m.wait.record(waited_ms.max(0) as f64 / 1000.0);
            }
            let span = tracing::debug_span!(
                target: SPAN_TARGET,
                "job.deliver",
                %job_id,
                attempt = job.attempt,
                trace_id = Empty,
                parent_span_id = Empty
            );
            traceparent::record(&span, trace.as_ref());
            span.in_scope(|| debug!(waited_ms, "job leased"));
            Some(Delivery {
                job_id,
                job_type: r.job_type,
                payload: r.payload,
                headers: r.headers,
                priority: r.priority,
                attempt: job.attempt,
                max_attempts: r.max_attempts,
                lost_deliveries: r.lost,
                lease_token,
                deadline: from_ms(job.deadline_ms),
                created_at: from_ms(r.created_ms),
                session: job.session.map(|s| (SessionId::new(queue, &s.name), s.state, s.version)),
                trace,
            })
        })
        .collect();
    let undelivered = leases.hub.deliver(tokens, deliveries);
    if !undelivered.is_empty() {
        debug!(%queue, count = undelivered.len(), "streams left or began draining before delivery; handing back");
        let held: Vec<(String, String)> = undelivered.into_iter().map(|h| (h.job_id.ulid, h.token.into())).collect();
        leases.store.jobs().requeue(queue, &held, false, leases.settings.max_lost).await?;
    }
    Ok(())
}

/// A call that leases with `tokens` failed: their reservations come back. When Redis was
/// unavailable the call may have run with its answer lost (a timeout), leaving leases nobody
/// here knows of: they are taken back once Redis answers again.
pub(super) fn unanswered(leases: &Arc<Leases>, queue: &str, tokens: &[LeaseToken], error: &StoreError) {
    leases.hub.deliver(tokens, Vec::new());
    if matches!(error, StoreError::Unavailable(_)) && !tokens.is_empty() {
        let texts = tokens.iter().map(|t| t.as_str().to_owned()).collect();
        leases.background.spawn(take_back_unanswered(leases.clone(), queue.to_owned(), texts));
    }
}

/// Returns the leases a failed lease call may have taken, retrying until Redis answers (or the
/// instance stops: then the reaper of another instance returns them after the lease TTL).
async fn take_back_unanswered(leases: Arc<Leases>, queue: String, tokens: Vec<String>) {
    let mut wait = Duration::from_millis(200);
    loop {
        match leases.store.jobs().reap(&queue, &tokens).await {
            Ok(0) => return,
            Ok(n) => return warn!(%queue, returned = n, "took back leases of a lease round whose answer was lost"),
            Err(e) => debug!(%queue, error = %e, "cannot take back an unanswered lease round yet"),
        }
        tokio::select! {
            _ = leases.background.stopped() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_a_rate_holds_back_is_given_twice_what_the_last_wakes_took() {
        let mut size = RoundSize::default();
        assert_eq!(size.tokens(), MAX_ROUND, "no rate held anything back yet");
        size.learn(11, true);
        assert_eq!(size.tokens(), 24);
        // An early wake took 4: the 11 before it is remembered, less a quarter.
        size.learn(4, true);
        assert_eq!(size.tokens(), 20);
        size.learn(40, true);
        assert_eq!(size.tokens(), 82);
        size.learn(40, false);
        assert_eq!(size.tokens(), MAX_ROUND, "no rate holds jobs back: all the credit");
        size.learn(400, true);
        assert_eq!(size.tokens(), MAX_ROUND, "never more than a round's most");
    }
}
