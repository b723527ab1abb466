//! Cross-instance notices over the one shared pub/sub connection of this instance, and the
//! reconciliation that makes up for notices pub/sub may drop.
//!
//! Channels: `wake` (a queue got work; message = queue name) and this instance's own channel
//! (an ack for one of our leases reached another instance: free the credit; or another
//! instance's dispatcher timed out one of our leases: revoke it).

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::StreamExt;
use tracing::{debug, info, warn};

use super::{Engine, JobId, RevokeReason, hub::HeldLease};

#[derive(Debug, PartialEq, Eq)]
pub enum Notice {
    Release {
        job_id: JobId,
        token: String,
    },
    Revoke {
        job_id: JobId,
        token: String,
        reason: RevokeReason,
    },
    /// The worker of the stream that received this lease is stopping: send it nothing more.
    StopStream {
        job_id: JobId,
        token: String,
    },
}

impl Notice {
    pub fn encode(&self) -> String {
        match self {
            Notice::Release { job_id, token } => format!("release {job_id} {token}"),
            Notice::StopStream { job_id, token } => format!("stop {job_id} {token}"),
            Notice::Revoke { job_id, token, reason } => {
                let reason = match reason {
                    RevokeReason::Timeout => "timeout",
                    RevokeReason::Cancelled => "cancelled",
                    RevokeReason::LeaseLost => "lost",
                };
                format!("revoke {job_id} {token} {reason}")
            }
        }
    }

    pub fn decode(raw: &str) -> Option<Self> {
        let mut parts = raw.split(' ');
        let (kind, job_id, token) = (parts.next()?, parts.next()?, parts.next()?);
        let job_id = JobId::parse(job_id, "job_id").ok()?;
        let token = token.to_owned();
        match kind {
            "release" => Some(Notice::Release { job_id, token }),
            "stop" => Some(Notice::StopStream { job_id, token }),
            "revoke" => {
                let reason = match parts.next() {
                    Some("cancelled") => RevokeReason::Cancelled,
                    Some("lost") => RevokeReason::LeaseLost,
                    _ => RevokeReason::Timeout,
                };
                Some(Notice::Revoke { job_id, token, reason })
            }
            _ => None,
        }
    }
}

/// Subscribes and dispatches notices until shutdown, reconnecting with backoff.
pub async fn listen(engine: Arc<Engine>) {
    let wake_channel = engine.store.keys().wake_channel();
    let own_channel = engine.store.keys().instance_channel(&engine.instance);
    let mut wait = Duration::from_millis(100);
    while !engine.shutdown.is_cancelled() {
        let subscribed = async {
            let mut pubsub = engine.store.pubsub().await?;
            pubsub.subscribe(&[&wake_channel, &own_channel]).await?;
            Ok::<_, crate::store::StoreError>(pubsub)
        };
        let pubsub = tokio::select! {
            _ = engine.shutdown.cancelled() => return,
            r = subscribed => r,
        };
        let pubsub = match pubsub {
            Ok(p) => p,
            Err(e) => {
                debug!(error = %e, "pub/sub connect failed");
                tokio::select! {
                    _ = engine.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        info!("subscribed to wake-ups and notices");
        wait = Duration::from_millis(100);
        // Anything published while we were away is lost: look at every queue once.
        engine.hub.wake_all();
        let mut messages = pubsub.into_on_message();
        loop {
            let msg = tokio::select! {
                _ = engine.shutdown.cancelled() => return,
                m = messages.next() => m,
            };
            let Some(msg) = msg else { break };
            let Ok(payload) = msg.get_payload::<String>() else {
                continue;
            };
            if msg.get_channel_name() == wake_channel {
                engine.hub.wake(&payload);
                continue;
            }
            match Notice::decode(&payload) {
                Some(Notice::Release { job_id, token }) => {
                    if let Some((_, stream)) = super::hub::parse_token(&token) {
                        engine.answered(&job_id, engine.hub.release(stream, &job_id, &token));
                    }
                }
                Some(Notice::StopStream { token, .. }) => {
                    if let Some((_, stream)) = super::hub::parse_token(&token) {
                        engine.hub.stop_stream(stream);
                    }
                }
                Some(Notice::Revoke { job_id, token, reason }) => {
                    if let Some((_, stream)) = super::hub::parse_token(&token) {
                        engine.hub.revoke(stream, &job_id, &token, reason);
                    }
                }
                None => warn!(%payload, "unreadable notice"),
            }
        }
        warn!("pub/sub connection lost; reconnecting");
    }
}

/// Every few seconds, checks each lease this instance believes it holds against Redis. A lease
/// that is gone (acked through another instance whose notice was lost, or reaped while this
/// instance was cut off) frees its credit; the worker is told in case it still runs the job.
pub async fn reconcile(engine: Arc<Engine>) {
    let mut ticker = tokio::time::interval(engine.settings.reconcile_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = engine.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let mut by_queue: HashMap<String, Vec<HeldLease>> = HashMap::new();
        // A revoked lease keeps its credit until the worker answers, whatever Redis says.
        for held in engine.hub.held().into_iter().filter(|h| !h.revoked) {
            by_queue.entry(held.job_id.queue.clone()).or_default().push(held);
        }
        for (queue, held) in by_queue {
            let ulids: Vec<String> = held.iter().map(|h| h.job_id.ulid.clone()).collect();
            let leases = match engine.store.jobs().leases(&queue, &ulids).await {
                Ok(l) => l,
                Err(e) => {
                    debug!(%queue, error = %e, "reconcile skipped");
                    continue;
                }
            };
            for (h, lease) in held.iter().zip(leases) {
                if lease.is_none_or(|l| l.token != h.token) {
                    debug!(job_id = %h.job_id, "lease gone; freeing its credit");
                    engine.hub.revoke(h.stream, &h.job_id, &h.token, RevokeReason::LeaseLost);
                    engine.hub.release(h.stream, &h.job_id, &h.token);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip() {
        let job_id = JobId::new("q", "01JD8Y3V6Q0000000000000000");
        for notice in [
            Notice::Release { job_id: job_id.clone(), token: "i.1.2".into() },
            Notice::StopStream { job_id: job_id.clone(), token: "i.1.2".into() },
            Notice::Revoke { job_id, token: "i.1.3".into(), reason: RevokeReason::Cancelled },
        ] {
            assert_eq!(Notice::decode(&notice.encode()), Some(notice));
        }
        assert_eq!(Notice::decode("nonsense"), None);
    }
}
