//! Cross-instance notices over the one shared pub/sub connection of this instance, and the
//! reconciliation that makes up for notices pub/sub may drop.
//!
//! The reconciliation runs both ways: the leases this instance holds are checked against Redis,
//! and Redis's leases naming this instance are checked against what it holds.
//!
//! Channels: each queue's `wake` shard channel, subscribed while the queue has a stream here
//! (the queue got work; message = queue name; `SPUBLISH` from its functions, so on a cluster it
//! is heard from the master of the queue's slot), `schedules` (a schedule changed;
//! message = `queue/name`, passed on to the schedules' timer, `Leases::follow_schedules`) and
//! this instance's own channel
//! (an ack for one of our leases reached another instance: free the credit; another instance
//! timed out or cancelled one of our leases: revoke it; a worker returning a job through
//! another instance is stopping: stop its stream). What goes on the own channel is sent by
//! `Leases::tell_owner`, and applied here by the same `Leases::apply` an owner on this instance
//! uses.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use tracing::{debug, info, warn};

use super::{Leases, RevokeReason, hub::HeldLease};
use crate::{
    queue::job::JobId,
    store::{LeaseToken, Push, Subscriber},
};

/// What the owner of a lease is told about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Notice {
    /// The lease was answered (through this instance or another): free its credit.
    Release,
    /// Tell the worker to stop running the job.
    Revoke(RevokeReason),
    /// The worker of the stream that received this lease is stopping: send it nothing more.
    StopStream,
}

/// `<kind> <job id> <token>[ <reason>]`, the message on the owner's channel.
pub(super) fn encode(notice: Notice, job_id: &JobId, token: &LeaseToken) -> String {
    match notice {
        Notice::Release => format!("release {job_id} {token}"),
        Notice::StopStream => format!("stop {job_id} {token}"),
        Notice::Revoke(reason) => {
            let reason = match reason {
                RevokeReason::Timeout => "timeout",
                RevokeReason::Cancelled => "cancelled",
                RevokeReason::LeaseLost => "lost",
            };
            format!("revoke {job_id} {token} {reason}")
        }
    }
}

fn decode(raw: &str) -> Option<(Notice, JobId, LeaseToken)> {
    let mut parts = raw.split(' ');
    let (kind, job_id, token) = (parts.next()?, parts.next()?, parts.next()?);
    let job_id = JobId::parse(job_id, "job_id").ok()?;
    let token = LeaseToken::parse(token)?;
    let notice = match kind {
        "release" => Notice::Release,
        "stop" => Notice::StopStream,
        "revoke" => Notice::Revoke(match parts.next() {
            Some("cancelled") => RevokeReason::Cancelled,
            Some("lost") => RevokeReason::LeaseLost,
            _ => RevokeReason::Timeout,
        }),
        _ => return None,
    };
    Some((notice, job_id, token))
}

/// Subscribes and dispatches notices until shutdown, reconnecting with backoff.
pub(super) async fn listen(leases: Arc<Leases>) {
    let keys = leases.store.keys().clone();
    let own_channel = keys.instance_channel(&leases.instance);
    let schedule_channel = keys.schedule_channel();
    let mut wait = Duration::from_millis(100);
    while !leases.background.is_stopping() {
        let subscribed = async {
            let mut subscriber = leases.store.subscriber().await?;
            subscriber.subscribe(&[own_channel.clone(), schedule_channel.clone()]).await?;
            Ok::<_, crate::store::StoreError>(subscriber)
        };
        let subscriber = tokio::select! {
            _ = leases.background.stopped() => return,
            r = subscribed => r,
        };
        let mut subscriber = match subscriber {
            Ok(s) => s,
            Err(e) => {
                debug!(error = %e, "pub/sub connect failed");
                tokio::select! {
                    _ = leases.background.stopped() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        info!("subscribed to notices");
        wait = Duration::from_millis(100);
        // Anything published while we were away is lost: look at every queue once.
        leases.hub.wake_all();
        leases.schedule_notice(None);
        let mut wake_channels = HashSet::new();
        // The wake-up subscriptions are made at once on a new connection, then on each change.
        let mut catch_up = true;
        let mut follow = true;
        while follow {
            let heard = tokio::select! {
                _ = leases.background.stopped() => return,
                push = subscriber.next() => Some(push),
                _ = leases.queues_changed.notified() => None,
                _ = std::future::ready(()), if catch_up => None,
            };
            let Some(push) = heard else {
                catch_up = false;
                if let Err(e) = follow_queues(&leases, &mut subscriber, &mut wake_channels).await {
                    warn!(error = %e, "wake-up subscriptions failed; reconnecting");
                    follow = false;
                }
                continue;
            };
            match push {
                Push::Message { channel, payload } => {
                    if channel == own_channel {
                        match decode(&payload) {
                            Some((notice, job_id, token)) => leases.apply(notice, &job_id, &token),
                            None => warn!(%payload, "unreadable notice"),
                        }
                    } else if channel == schedule_channel {
                        leases.schedule_notice(Some(payload));
                    } else {
                        leases.hub.wake(&payload);
                    }
                }
                // A subscription took effect (first, or again after a failover): what was
                // published before it is lost, so look once.
                Push::Subscribed { channel } => match keys.queue_of(&channel) {
                    Some(queue) => leases.hub.wake(queue),
                    None => {
                        leases.hub.wake_all();
                        leases.schedule_notice(None);
                    }
                },
                Push::Closed => follow = false,
            }
        }
        warn!("pub/sub connection lost; reconnecting");
    }
}

/// Subscribes to the wake-up channel of each queue with a stream here and leaves those of the
/// queues without any more. A subscription's confirmation wakes its queue's dispatcher
/// (`Push::Subscribed`), for what was added before it took effect.
async fn follow_queues(
    leases: &Leases,
    subscriber: &mut Subscriber,
    subscribed: &mut HashSet<String>,
) -> crate::store::Result<()> {
    let queues: HashSet<String> = leases.hub.queues().into_iter().collect();
    let keys = leases.store.keys();
    let gone: Vec<String> = subscribed.difference(&queues).cloned().collect();
    for queue in gone {
        subscriber.unsubscribe_shard(&keys.wake_channel(&queue)).await?;
        subscribed.remove(&queue);
    }
    for queue in queues {
        if !subscribed.contains(&queue) {
            subscriber.subscribe_shard(&keys.wake_channel(&queue)).await?;
            subscribed.insert(queue);
        }
    }
    Ok(())
}

/// Every few seconds, checks each lease this instance believes it holds against Redis. A lease
/// that is gone (acked through another instance whose notice was lost, or reaped while this
/// instance was cut off) frees its credit; the worker is told in case it still runs the job.
/// Then the other way round: Redis's leases naming this instance that no stream here holds go
/// back to their queues (`reclaim_unknown`).
///
/// A lease found gone is only taken as lost when the next period finds it gone and still held
/// here: an ack ends the lease in Redis before its answer (or its owner's notice, when it went
/// through another instance) releases it here, and a lease read in that window is not lost.
/// A lost notice thus frees its credit within two periods.
pub(super) async fn reconcile(leases: Arc<Leases>) {
    let mut sweeps: HashMap<String, u64> = HashMap::new();
    let mut gone_last_period: HashSet<(JobId, LeaseToken)> = HashSet::new();
    let mut ticker = tokio::time::interval(leases.settings.reconcile_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = leases.background.stopped() => return,
            _ = ticker.tick() => {}
        }
        let mut gone = HashSet::new();
        let mut by_queue: HashMap<String, Vec<HeldLease>> = HashMap::new();
        // A revoked lease keeps its credit until the worker answers, whatever Redis says.
        for held in leases.hub.held().into_iter().filter(|h| !h.revoked) {
            by_queue.entry(held.job_id.queue.clone()).or_default().push(held);
        }
        for (queue, held) in by_queue {
            let ulids: Vec<String> = held.iter().map(|h| h.job_id.ulid.clone()).collect();
            let stored = match leases.store.jobs().leases(&queue, &ulids).await {
                Ok(l) => l,
                Err(e) => {
                    debug!(%queue, error = %e, "reconcile skipped");
                    continue;
                }
            };
            for (h, lease) in held.into_iter().zip(stored) {
                if lease.is_some_and(|l| l.token == h.token) {
                    continue;
                }
                let lease = (h.job_id, h.token);
                if gone_last_period.contains(&lease) {
                    debug!(job_id = %lease.0, "lease gone; freeing its credit");
                    leases.hub.revoke(&lease.0, &lease.1, RevokeReason::LeaseLost);
                    leases.hub.release(&lease.0, &lease.1);
                } else {
                    gone.insert(lease);
                }
            }
        }
        gone_last_period = gone;
        reclaim_unknown(&leases, &mut sweeps).await;
    }
}

/// Leases of the active hash one reconciliation reads per queue: a sweep of a queue with `n`
/// leases takes `n / SWEEP_PAGE` periods (one, below Redis's listpack size, whose HSCAN answers
/// the whole hash at once).
const SWEEP_PAGE: u32 = 500;

/// One step, per known queue, of a sweep over Redis's leases for those naming this instance that
/// no stream here holds, and returns them to their queues. Only this instance can tell they are
/// orphans (the reaper takes the leases of dead instances only), and they would otherwise stay
/// active until the job's timeout. They come from a Redis that lost its last writes: restarted
/// from an `appendfsync everysec` AOF after a crash, it has the leases back but not the
/// completions that ended them. Not a lost delivery: the worker did not lose the job, Redis
/// forgot what became of it.
///
/// A lease round answers after Redis wrote its leases, and the hub records them only then: the
/// hub is read after the page, and `reclaim.lua` takes only leases still held by the token read
/// and at least one reconciliation period old, so a lease whose round's answer is still on its
/// way is left alone. (A lease a closing stream is handing back as lost may be taken here
/// first, as not lost; the hand-back then finds it gone.)
///
/// Cost per period: one HSCAN page of `SWEEP_PAGE` entries per known queue, and a `reclaim`
/// call only for a queue whose page holds such a lease.
async fn reclaim_unknown(leases: &Leases, cursors: &mut HashMap<String, u64>) {
    let queues = match leases.store.instances().queues().await {
        Ok(q) => q,
        Err(e) => return debug!(error = %e, "reclaim skipped"),
    };
    cursors.retain(|queue, _| queues.contains(queue));
    for queue in queues {
        let cursor = cursors.get(&queue).copied().unwrap_or(0);
        let page = match leases.store.jobs().lease_page(&queue, cursor, SWEEP_PAGE).await {
            Ok((next, page)) => {
                cursors.insert(queue.clone(), next);
                page
            }
            Err(e) => {
                debug!(%queue, error = %e, "reclaim skipped");
                continue;
            }
        };
        let mut unknown: Vec<_> = page
            .into_iter()
            .filter(|(ulid, lease)| {
                lease.token.instance() == leases.instance && !leases.hub.holds(&JobId::new(&queue, ulid), &lease.token)
            })
            .map(|(ulid, lease)| (ulid, lease.token))
            .collect();
        if unknown.is_empty() {
            continue;
        }
        unknown.sort_by_key(|(_, token)| token.seq());
        let unknown: Vec<(String, String)> = unknown.into_iter().map(|(ulid, token)| (ulid, token.into())).collect();
        match leases.store.jobs().reclaim(&queue, &unknown, leases.settings.reconcile_every).await {
            Ok(0) => {}
            Ok(n) => info!(%queue, returned = n, "returned leases naming this instance that no stream here holds"),
            Err(e) => debug!(%queue, error = %e, "reclaim failed; retrying on the next period"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip() {
        let job_id = JobId::new("q", "01JD8Y3V6Q0000000000000000");
        for (notice, token) in [
            (Notice::Release, LeaseToken::new("i", 1, 2)),
            (Notice::StopStream, LeaseToken::new("i", 1, 2)),
            (Notice::Revoke(RevokeReason::Cancelled), LeaseToken::new("i", 1, 3)),
        ] {
            assert_eq!(decode(&encode(notice, &job_id, &token)), Some((notice, job_id.clone(), token)));
        }
        assert_eq!(decode("nonsense"), None);
    }
}
