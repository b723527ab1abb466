//! The client's calls for operators and dashboards: filtered listings, bulk actions on a
//! selection or a query, dead-letter groups, per-minute activity, one event stream over
//! several queues, a queue's sessions and a session's pending jobs, pause and resume, queue settings. Thin: each is one RPC,
//! answered as the generated types.

use super::{Client, ClientError};
use crate::proto;

/// The jobs a bulk call applies to: listed ids, or a query over one listing of a queue.
pub fn ids(job_ids: &[&str]) -> proto::JobSelection {
    let list = proto::JobIdList { job_ids: job_ids.iter().map(|id| (*id).to_owned()).collect() };
    proto::JobSelection { selection: Some(proto::job_selection::Selection::Ids(list)) }
}

/// Every job of `queue`'s listing of `state` matching `filter` (None: every job of it).
pub fn query(queue: &str, state: proto::JobState, filter: Option<proto::JobFilter>) -> proto::JobSelection {
    let query = proto::JobQuery { queue: queue.into(), state: state as i32, filter };
    proto::JobSelection { selection: Some(proto::job_selection::Selection::Query(query)) }
}

impl Client {
    /// A page of `queue`'s jobs in `state` matching `filter`; `page_token` from the previous page
    /// ("" for the first).
    pub async fn list_jobs(
        &self,
        queue: &str,
        state: proto::JobState,
        filter: Option<proto::JobFilter>,
        page_size: u32,
        page_token: &str,
    ) -> Result<proto::ListJobsResponse, ClientError> {
        let req = proto::ListJobsRequest {
            queue: queue.into(),
            state: state as i32,
            page_size,
            page_token: page_token.into(),
            filter,
        };
        Ok(self.inner.clone().list_jobs(req).await?.into_inner())
    }

    /// Retries the dead jobs of `selection`.
    pub async fn retry_jobs(&self, selection: proto::JobSelection) -> Result<proto::BulkOutcome, ClientError> {
        let resp = self.inner.clone().retry_jobs(proto::RetryJobsRequest { selection: Some(selection) }).await?;
        resp.into_inner().outcome.ok_or_else(|| tonic::Status::internal("empty answer").into())
    }

    /// Cancels the jobs of `selection`.
    pub async fn cancel_jobs(&self, selection: proto::JobSelection) -> Result<proto::BulkOutcome, ClientError> {
        let resp = self.inner.clone().cancel_jobs(proto::CancelJobsRequest { selection: Some(selection) }).await?;
        resp.into_inner().outcome.ok_or_else(|| tonic::Status::internal("empty answer").into())
    }

    /// Deletes the jobs of `selection` that are not active.
    pub async fn delete_jobs(&self, selection: proto::JobSelection) -> Result<proto::BulkOutcome, ClientError> {
        let resp = self.inner.clone().delete_jobs(proto::DeleteJobsRequest { selection: Some(selection) }).await?;
        resp.into_inner().outcome.ok_or_else(|| tonic::Status::internal("empty answer").into())
    }

    /// `queue`'s dead jobs grouped by error, largest group first.
    pub async fn dead_job_groups(&self, queue: &str) -> Result<proto::ListDeadJobGroupsResponse, ClientError> {
        let req = proto::ListDeadJobGroupsRequest { queue: queue.into() };
        Ok(self.inner.clone().list_dead_job_groups(req).await?.into_inner())
    }

    /// Jobs added, completed and failed per minute over the last hour, per queue.
    pub async fn queue_activity(&self, queues: &[&str]) -> Result<Vec<proto::QueueActivity>, ClientError> {
        let req = proto::GetQueueActivityRequest { queues: queues.iter().map(|q| (*q).to_owned()).collect() };
        Ok(self.inner.clone().get_queue_activity(req).await?.into_inner().queues)
    }

    /// A page of `queue`'s sessions (`page_size` 0: the server's default); `page_token` from the
    /// previous page ("" for the first).
    pub async fn list_sessions(
        &self,
        queue: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<proto::ListSessionsResponse, ClientError> {
        let req = proto::ListSessionsRequest { queue: queue.into(), page_size, page_token: page_token.into() };
        Ok(self.raw_sessions().list_sessions(req).await?.into_inner())
    }

    /// A page of the jobs still pending inside session `session_id`, next to be released first
    /// (`page_size` 0: the server's default); `page_token` from the previous page ("" for the
    /// first).
    pub async fn list_session_jobs(
        &self,
        session_id: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<proto::ListSessionJobsResponse, ClientError> {
        let req =
            proto::ListSessionJobsRequest { session_id: session_id.into(), page_size, page_token: page_token.into() };
        Ok(self.raw_sessions().list_session_jobs(req).await?.into_inner())
    }

    /// Stops delivering `queue`'s jobs (adds still succeed) on every instance.
    pub async fn pause_queue(&self, queue: &str) -> Result<(), ClientError> {
        self.inner.clone().pause_queue(proto::PauseQueueRequest { queue: queue.into() }).await?;
        Ok(())
    }

    /// Delivers `queue`'s jobs again.
    pub async fn resume_queue(&self, queue: &str) -> Result<(), ClientError> {
        self.inner.clone().resume_queue(proto::ResumeQueueRequest { queue: queue.into() }).await?;
        Ok(())
    }

    /// The settings `queue` holds, and those in effect (the server's flags for the rest).
    pub async fn queue_settings(&self, queue: &str) -> Result<proto::GetQueueSettingsResponse, ClientError> {
        let req = proto::GetQueueSettingsRequest { queue: queue.into() };
        Ok(self.inner.clone().get_queue_settings(req).await?.into_inner())
    }

    /// Sets the fields of `settings` that are given and clears those named in `clear` (their
    /// proto names: `max_waiting`, `timeout`...), at run time; answers the settings as they now
    /// are. An invalid value is INVALID_ARGUMENT naming the field.
    pub async fn set_queue_settings(
        &self,
        queue: &str,
        settings: proto::QueueSettings,
        clear: &[&str],
    ) -> Result<proto::SetQueueSettingsResponse, ClientError> {
        let clear = clear.iter().map(|name| (*name).to_owned()).collect();
        let req = proto::SetQueueSettingsRequest { queue: queue.into(), settings: Some(settings), clear };
        Ok(self.inner.clone().set_queue_settings(req).await?.into_inner())
    }

    /// Every event of `queues` from now on, on one stream.
    pub async fn subscribe_queues(
        &self,
        queues: &[&str],
    ) -> Result<tonic::Streaming<proto::SubscribeQueuesResponse>, ClientError> {
        let req = proto::SubscribeQueuesRequest { queues: queues.iter().map(|q| (*q).to_owned()).collect() };
        Ok(self.inner.clone().subscribe_queues(req).await?.into_inner())
    }
}
