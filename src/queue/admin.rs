//! Job administration: cancel, progress, pause/resume, retry, delete, purge, listings, and the
//! registry of connected workers (each instance publishes its own with its heartbeat).

use std::time::{Duration, SystemTime};

use tracing::warn;

use super::{
    Engine, Error, JobId, JobView, Result, RevokeReason, from_ms, hub, notices::Notice, to_ms, validate_queue,
};
use crate::store::{CancelOutcome, Listing};

const MAX_PAGE: u64 = 1_000;

/// A worker stream connected to some instance.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct WorkerView {
    pub instance: String,
    pub worker_id: String,
    pub labels: Vec<(String, String)>,
    pub queues: Vec<String>,
    pub max_in_flight: u32,
    pub in_flight: usize,
    pub connected_at_ms: i64,
}

impl WorkerView {
    pub fn connected_at(&self) -> SystemTime {
        from_ms(self.connected_at_ms)
    }
}

impl Engine {
    /// Cancels a job: waiting or delayed ones at once; an active one is marked and its worker
    /// told, and it ends cancelled whatever the worker answers.
    pub async fn cancel(&self, job_id: &JobId) -> Result<()> {
        let counted = || {
            if let Some(m) = crate::telemetry::queue(&job_id.queue) {
                m.cancelled.increment(1);
            }
        };
        match self.store.admin().cancel(&job_id.queue, &job_id.ulid).await? {
            CancelOutcome::Cancelled => {
                counted();
                Ok(())
            }
            CancelOutcome::Marked(token) => {
                counted();
                self.revoke_anywhere(job_id, &token, RevokeReason::Cancelled).await;
                Ok(())
            }
            CancelOutcome::UnknownJob => {
                Err(Error::NotFound(format!("job_id: job {job_id} does not exist or is no longer retained")))
            }
            CancelOutcome::AlreadyFinished => {
                Err(Error::Precondition(format!("job_id: job {job_id} has already finished")))
            }
        }
    }

    /// Tells the holder of a lease to stop, on this instance or another.
    pub(super) async fn revoke_anywhere(&self, job_id: &JobId, token: &str, reason: RevokeReason) {
        let Some((instance, stream)) = hub::parse_token(token) else { return };
        if instance == self.instance {
            self.hub.revoke(stream, job_id, token, reason);
            return;
        }
        let notice = Notice::Revoke { job_id: job_id.clone(), token: token.to_owned(), reason };
        let channel = self.store.keys().instance_channel(instance);
        if let Err(e) = self.store.instances().publish(&channel, &notice.encode()).await {
            warn!(error = %e, %job_id, "could not tell the lease owner to stop");
        }
    }

    pub async fn report_progress(&self, job_id: &JobId, token: &str, progress: &[u8]) -> Result<()> {
        let max = self.settings.limits.max_progress;
        if progress.len() > max {
            return Err(Error::TooLarge(format!(
                "progress: {} bytes is over the limit of {max} bytes",
                progress.len()
            )));
        }
        let code = self.store.jobs().progress(&job_id.queue, &job_id.ulid, token, progress).await?;
        Self::lease_error(crate::store::LeaseCheck::from_code(code), job_id)
    }

    pub async fn set_paused(&self, queue: &str, paused: bool) -> Result<()> {
        validate_queue(queue, "queue")?;
        self.register(queue).await?;
        Ok(self.store.admin().set_paused(queue, paused).await?)
    }

    pub async fn retry_job(&self, job_id: &JobId) -> Result<()> {
        match self.store.admin().retry_dead(&job_id.queue, Some(&job_id.ulid), 1).await?.0 {
            1 => Ok(()),
            0 => Err(Error::NotFound(format!("job_id: job {job_id} does not exist or is no longer retained"))),
            -1 => Err(Error::Precondition(format!("job_id: job {job_id} is not dead"))),
            _ => Err(Error::Precondition(format!("job_id: the session of job {job_id} was deleted"))),
        }
    }

    /// Moves up to `limit` of the oldest dead jobs back to ready; returns how many.
    pub async fn retry_dead(&self, queue: &str, limit: u64) -> Result<u64> {
        validate_queue(queue, "queue")?;
        if limit == 0 || limit > 100_000 {
            return Err(Error::invalid("limit", "must be from 1 to 100000"));
        }
        let mut moved = 0;
        while moved < limit {
            let batch = (limit - moved).min(MAX_PAGE);
            let (_, n) = self.store.admin().retry_dead(queue, None, batch).await?;
            moved += n;
            if n < batch {
                break;
            }
        }
        Ok(moved)
    }

    pub async fn delete_job(&self, job_id: &JobId) -> Result<()> {
        match self.store.admin().delete(&job_id.queue, &job_id.ulid).await? {
            1 => Ok(()),
            0 => Err(Error::NotFound(format!("job_id: job {job_id} does not exist or is no longer retained"))),
            _ => Err(Error::Precondition(format!("job_id: job {job_id} is active; cancel it first"))),
        }
    }

    pub async fn purge(&self, queue: &str, states: &[Listing]) -> Result<u64> {
        validate_queue(queue, "queue")?;
        if states.is_empty() {
            return Err(Error::invalid("states", "name at least one state"));
        }
        if states.contains(&Listing::Active) {
            return Err(Error::invalid("states", "active jobs cannot be purged; cancel them"));
        }
        Ok(self.store.admin().purge(queue, states).await?)
    }

    /// A page of jobs in one state; the token is opaque (empty: first page; returned empty on
    /// the last page).
    pub async fn list_jobs(
        &self,
        queue: &str,
        state: Listing,
        page_size: u64,
        token: &str,
    ) -> Result<(Vec<JobView>, String)> {
        validate_queue(queue, "queue")?;
        let offset = if token.is_empty() {
            0
        } else {
            token.parse().map_err(|_| Error::invalid("page_token", "is not a token this server issued"))?
        };
        let (jobs, next) = self.store.admin().list_jobs(queue, state, offset, page_size.clamp(1, MAX_PAGE)).await?;
        let views = jobs
            .into_iter()
            .map(|(ulid, record, lease)| JobView::new(JobId::new(queue, &ulid), record, lease))
            .collect();
        Ok((views, next.map(|n| n.to_string()).unwrap_or_default()))
    }

    /// Connected worker streams on every live instance, optionally only those serving `queue`.
    pub async fn list_workers(&self, queue: Option<&str>) -> Result<Vec<WorkerView>> {
        let mut out = Vec::new();
        for (instance, json) in self.store.instances().workers().await? {
            match serde_json::from_str::<Vec<WorkerView>>(&json) {
                Ok(list) => out.extend(list),
                Err(e) => warn!(%instance, error = %e, "unreadable worker list"),
            }
        }
        out.retain(|w| queue.is_none_or(|q| w.queues.iter().any(|s| s == q)));
        out.sort_by(|a, b| (a.connected_at_ms, &a.worker_id).cmp(&(b.connected_at_ms, &b.worker_id)));
        Ok(out)
    }

    /// Publishes this instance's streams for `list_workers` (called with each heartbeat).
    pub(super) async fn publish_workers(&self, ttl: Duration) {
        let views: Vec<WorkerView> = self
            .hub
            .streams()
            .into_iter()
            .map(|s| WorkerView {
                instance: self.instance.clone(),
                worker_id: s.spec.worker_id,
                labels: s.spec.labels,
                queues: s.spec.queues,
                max_in_flight: s.spec.max_in_flight,
                in_flight: s.in_flight,
                connected_at_ms: to_ms(s.connected_at),
            })
            .collect();
        let json = serde_json::to_string(&views).unwrap_or_else(|_| "[]".into());
        if let Err(e) = self.store.instances().set_workers(&self.instance, &json, ttl).await {
            tracing::debug!(error = %e, "could not publish the worker list");
        }
    }
}
