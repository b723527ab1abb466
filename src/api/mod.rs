//! The gRPC transport: each handler converts the request, calls the engine, converts the answer.
//! No business rule lives here; domain errors become statuses in `status.rs` only.
//!
//! This file holds the `QueueService` handlers (jobs, worker streams, events, administration),
//! `sessions.rs` the `SessionService` ones, `schedules.rs` the `ScheduleService` ones, `convert.rs` the message <-> domain conversions and
//! the checks only the wire format needs; `auth/` the access checks. Nothing here is public:
//! `server` mounts the three services behind the auth layer.
//!
//! Every handler starts with `Caller::authorize` (or `Caller::of` where the request is a
//! stream): the queues its request names must be in the caller's scope. Listings show only
//! what the scope covers, and what a reader is not shown is emptied from the answer.

mod acks;
mod auth;
mod convert;
mod feed;
mod schedules;
mod sessions;
mod status;
mod work;

pub(crate) use auth::AuthLayer;
pub(crate) use schedules::ScheduleApi;
pub(crate) use sessions::SessionApi;

use std::{pin::Pin, sync::Arc, time::Duration};

use futures::Stream;
use tonic::{Request, Response, Status};

use auth::Caller;
use convert::{listings, settings};
use feed::Feed;

use crate::{
    proto::{self, queue_service_server::QueueService},
    queue::{BulkAction, Engine, JobId},
};

/// The `QueueService` handlers, over the instance's engine.
pub(crate) struct QueueApi {
    engine: Arc<Engine>,
    /// A ping goes out on a worker stream after this long without any other message.
    ping_every: Duration,
}

impl QueueApi {
    pub(crate) fn new(engine: Arc<Engine>, ping_every: Duration) -> Self {
        Self { engine, ping_every }
    }

    /// RetryJobs, CancelJobs and DeleteJobs: the selection converted, the action applied.
    async fn bulk(
        &self,
        action: BulkAction,
        selection: Option<proto::JobSelection>,
    ) -> Result<Option<proto::BulkOutcome>, Status> {
        let outcome = self.engine.bulk(action, listings::selection(selection)?).await?;
        Ok(Some(listings::bulk_outcome(outcome)))
    }
}

type JobStream = Pin<Box<dyn Stream<Item = Result<proto::GetJobResponse, Status>> + Send>>;
type EventStream<R> = Pin<Box<dyn Stream<Item = Result<R, Status>> + Send>>;

/// Turns an engine event feed into a gRPC stream of `R`, the RPC's message around each event,
/// each event redacted for `caller`.
fn event_stream<R: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<crate::queue::Result<crate::queue::EventView>>,
    caller: Caller,
    wrap: fn(proto::JobEvent) -> R,
) -> EventStream<R> {
    Box::pin(futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), move |item| {
        item.map(|event| wrap(caller.redacted_event(convert::event(event)))).map_err(Status::from)
    }))
}

#[tonic::async_trait]
impl QueueService for QueueApi {
    async fn add_job(&self, request: Request<proto::AddJobRequest>) -> Result<Response<proto::AddJobResponse>, Status> {
        Caller::authorize(&request)?;
        let job = convert::new_job(request.into_inner(), "")?;
        let added = self.engine.add(job).await?;
        tracing::debug!(job_id = %added.job_id, duplicate = added.duplicate, "job added");
        Ok(Response::new(proto::AddJobResponse { job_id: added.job_id.to_string(), duplicate: added.duplicate }))
    }

    async fn add_jobs(
        &self,
        request: Request<proto::AddJobsRequest>,
    ) -> Result<Response<proto::AddJobsResponse>, Status> {
        Caller::authorize(&request)?;
        let entries = request.into_inner().jobs.into_iter().enumerate();
        let jobs = entries.map(|(i, req)| convert::new_job(req, &format!("jobs[{i}]."))).collect();
        let results = self
            .engine
            .add_batch(jobs)
            .await?
            .into_iter()
            .map(|r| match r {
                Ok(added) => proto::AddJobsResult {
                    job_id: added.job_id.to_string(),
                    duplicate: added.duplicate,
                    code: 0,
                    message: String::new(),
                },
                Err(e) => {
                    let status = Status::from(e);
                    proto::AddJobsResult {
                        job_id: String::new(),
                        duplicate: false,
                        code: status.code() as i32,
                        message: status.message().to_owned(),
                    }
                }
            })
            .collect();
        Ok(Response::new(proto::AddJobsResponse { results }))
    }

    type GetJobStream = JobStream;

    async fn get_job(&self, request: Request<proto::GetJobRequest>) -> Result<Response<JobStream>, Status> {
        Caller::authorize(&request)?;
        let req = request.into_inner();
        let spec = convert::worker_spec(req.worker_id, req.labels, req.queues, req.max_in_flight, 0);
        let feed = Feed::open(&self.engine, spec, self.ping_every).await?;
        let stream = futures::stream::unfold(feed, |mut feed| async move {
            let message = feed.next().await?;
            Some((Ok(proto::GetJobResponse { message: Some(message) }), feed))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    type WorkStream = work::WorkStream;

    async fn work(
        &self,
        request: Request<tonic::Streaming<proto::WorkRequest>>,
    ) -> Result<Response<work::WorkStream>, Status> {
        let caller = Caller::of(&request)?;
        Ok(Response::new(work::open(self.engine.clone(), self.ping_every, caller, request.into_inner()).await?))
    }

    async fn complete_job(
        &self,
        request: Request<proto::CompleteJobRequest>,
    ) -> Result<Response<proto::CompleteJobResponse>, Status> {
        Caller::authorize(&request)?;
        let trace = convert::trace_context(request.metadata());
        Ok(Response::new(acks::complete(&self.engine, request.into_inner(), trace).await?))
    }

    async fn fail_job(
        &self,
        request: Request<proto::FailJobRequest>,
    ) -> Result<Response<proto::FailJobResponse>, Status> {
        Caller::authorize(&request)?;
        let trace = convert::trace_context(request.metadata());
        Ok(Response::new(acks::fail(&self.engine, request.into_inner(), trace).await?))
    }

    async fn extend_lease(
        &self,
        request: Request<proto::ExtendLeaseRequest>,
    ) -> Result<Response<proto::ExtendLeaseResponse>, Status> {
        Caller::authorize(&request)?;
        Ok(Response::new(acks::extend(&self.engine, request.into_inner()).await?))
    }

    async fn return_job(
        &self,
        request: Request<proto::ReturnJobRequest>,
    ) -> Result<Response<proto::ReturnJobResponse>, Status> {
        Caller::authorize(&request)?;
        Ok(Response::new(acks::give_back(&self.engine, request.into_inner()).await?))
    }

    async fn get_job_info(
        &self,
        request: Request<proto::GetJobInfoRequest>,
    ) -> Result<Response<proto::GetJobInfoResponse>, Status> {
        let caller = Caller::authorize(&request)?;
        let job_id = JobId::parse(&request.into_inner().job_id, "job_id")?;
        let job = caller.redacted_job(convert::job_info(self.engine.info(&job_id).await?));
        Ok(Response::new(proto::GetJobInfoResponse { job: Some(job) }))
    }

    async fn stats(&self, request: Request<proto::StatsRequest>) -> Result<Response<proto::StatsResponse>, Status> {
        Caller::authorize(&request)?;
        let queue = request.into_inner().queue;
        let counts = self.engine.stats(&queue).await?;
        Ok(Response::new(proto::StatsResponse {
            stats: Some(convert::queue_stats(queue, counts)),
            redis_memory: Some(convert::redis_memory(self.engine.redis_memory())),
        }))
    }

    async fn list_queues(
        &self,
        request: Request<proto::ListQueuesRequest>,
    ) -> Result<Response<proto::ListQueuesResponse>, Status> {
        let caller = Caller::authorize(&request)?;
        let queues = self.engine.list_queues().await?;
        Ok(Response::new(proto::ListQueuesResponse {
            queues: queues
                .into_iter()
                .filter(|(q, _)| caller.covers(q))
                .map(|(q, c)| convert::queue_stats(q, c))
                .collect(),
            redis_memory: Some(convert::redis_memory(self.engine.redis_memory())),
        }))
    }

    type WatchJobStream = EventStream<proto::WatchJobResponse>;

    async fn watch_job(
        &self,
        request: Request<proto::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let caller = Caller::authorize(&request)?;
        let job_id = JobId::parse(&request.into_inner().job_id, "job_id")?;
        let events = self.engine.watch(&job_id).await?;
        Ok(Response::new(event_stream(events, caller, |event| proto::WatchJobResponse { event: Some(event) })))
    }

    type SubscribeStream = EventStream<proto::SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = Caller::authorize(&request)?;
        let req = request.into_inner();
        let cursor = Some(req.cursor.as_str()).filter(|c| !c.is_empty());
        let events = self.engine.subscribe(&req.queue, cursor).await?;
        Ok(Response::new(event_stream(events, caller, |event| proto::SubscribeResponse { event: Some(event) })))
    }

    async fn report_progress(
        &self,
        request: Request<proto::ReportProgressRequest>,
    ) -> Result<Response<proto::ReportProgressResponse>, Status> {
        Caller::authorize(&request)?;
        Ok(Response::new(acks::progress(&self.engine, request.into_inner()).await?))
    }

    async fn cancel_job(
        &self,
        request: Request<proto::CancelJobRequest>,
    ) -> Result<Response<proto::CancelJobResponse>, Status> {
        Caller::authorize(&request)?;
        let job_id = JobId::parse(&request.into_inner().job_id, "job_id")?;
        self.engine.cancel(&job_id).await?;
        Ok(Response::new(proto::CancelJobResponse {}))
    }

    async fn pause_queue(
        &self,
        request: Request<proto::PauseQueueRequest>,
    ) -> Result<Response<proto::PauseQueueResponse>, Status> {
        Caller::authorize(&request)?;
        self.engine.set_paused(&request.into_inner().queue, true).await?;
        Ok(Response::new(proto::PauseQueueResponse {}))
    }

    async fn resume_queue(
        &self,
        request: Request<proto::ResumeQueueRequest>,
    ) -> Result<Response<proto::ResumeQueueResponse>, Status> {
        Caller::authorize(&request)?;
        self.engine.set_paused(&request.into_inner().queue, false).await?;
        Ok(Response::new(proto::ResumeQueueResponse {}))
    }

    async fn set_queue_settings(
        &self,
        request: Request<proto::SetQueueSettingsRequest>,
    ) -> Result<Response<proto::SetQueueSettingsResponse>, Status> {
        Caller::authorize(&request)?;
        let req = request.into_inner();
        let set = settings::queue_settings(req.settings)?;
        let view = self.engine.set_queue_settings(&req.queue, set, &req.clear).await?;
        let (settings, effective) = settings::view(&view);
        Ok(Response::new(proto::SetQueueSettingsResponse { settings, effective }))
    }

    async fn get_queue_settings(
        &self,
        request: Request<proto::GetQueueSettingsRequest>,
    ) -> Result<Response<proto::GetQueueSettingsResponse>, Status> {
        Caller::authorize(&request)?;
        let view = self.engine.queue_settings(&request.into_inner().queue).await?;
        let (settings, effective) = settings::view(&view);
        Ok(Response::new(proto::GetQueueSettingsResponse { settings, effective }))
    }

    async fn list_jobs(
        &self,
        request: Request<proto::ListJobsRequest>,
    ) -> Result<Response<proto::ListJobsResponse>, Status> {
        let caller = Caller::authorize(&request)?;
        let req = request.into_inner();
        let state = convert::listing(req.state, "state")?;
        let page_size = if req.page_size == 0 { 100 } else { u64::from(req.page_size) };
        let filter = listings::filter(req.filter, "filter.")?;
        let (jobs, next) = self.engine.list_jobs(&req.queue, state, page_size, &req.page_token, &filter).await?;
        Ok(Response::new(proto::ListJobsResponse {
            jobs: jobs.into_iter().map(|view| caller.redacted_job(convert::job_info(view))).collect(),
            next_page_token: next,
        }))
    }

    async fn retry_job(
        &self,
        request: Request<proto::RetryJobRequest>,
    ) -> Result<Response<proto::RetryJobResponse>, Status> {
        Caller::authorize(&request)?;
        let job_id = JobId::parse(&request.into_inner().job_id, "job_id")?;
        self.engine.retry_job(&job_id).await?;
        Ok(Response::new(proto::RetryJobResponse {}))
    }

    async fn retry_dead_jobs(
        &self,
        request: Request<proto::RetryDeadJobsRequest>,
    ) -> Result<Response<proto::RetryDeadJobsResponse>, Status> {
        Caller::authorize(&request)?;
        let req = request.into_inner();
        let retried = self.engine.retry_dead(&req.queue, u64::from(req.limit)).await?;
        Ok(Response::new(proto::RetryDeadJobsResponse { retried }))
    }

    async fn delete_job(
        &self,
        request: Request<proto::DeleteJobRequest>,
    ) -> Result<Response<proto::DeleteJobResponse>, Status> {
        Caller::authorize(&request)?;
        let job_id = JobId::parse(&request.into_inner().job_id, "job_id")?;
        self.engine.delete_job(&job_id).await?;
        Ok(Response::new(proto::DeleteJobResponse {}))
    }

    async fn purge_queue(
        &self,
        request: Request<proto::PurgeQueueRequest>,
    ) -> Result<Response<proto::PurgeQueueResponse>, Status> {
        Caller::authorize(&request)?;
        let req = request.into_inner();
        let states = req
            .states
            .iter()
            .enumerate()
            .map(|(i, s)| convert::listing(*s, &format!("states[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let deleted = self.engine.purge(&req.queue, &states).await?;
        Ok(Response::new(proto::PurgeQueueResponse { deleted }))
    }

    async fn list_workers(
        &self,
        request: Request<proto::ListWorkersRequest>,
    ) -> Result<Response<proto::ListWorkersResponse>, Status> {
        let caller = Caller::authorize(&request)?;
        let queue = request.into_inner().queue;
        let workers = self.engine.list_workers(Some(queue.as_str()).filter(|q| !q.is_empty())).await?;
        // A worker is shown with the queues in scope only, and not at all without one.
        let workers = workers
            .into_iter()
            .map(convert::worker)
            .filter_map(|mut worker| {
                worker.queues.retain(|q| caller.covers(q));
                (!worker.queues.is_empty()).then_some(worker)
            })
            .collect();
        Ok(Response::new(proto::ListWorkersResponse { workers }))
    }

    async fn retry_jobs(
        &self,
        request: Request<proto::RetryJobsRequest>,
    ) -> Result<Response<proto::RetryJobsResponse>, Status> {
        Caller::authorize(&request)?;
        let outcome = self.bulk(BulkAction::Retry, request.into_inner().selection).await?;
        Ok(Response::new(proto::RetryJobsResponse { outcome }))
    }

    async fn cancel_jobs(
        &self,
        request: Request<proto::CancelJobsRequest>,
    ) -> Result<Response<proto::CancelJobsResponse>, Status> {
        Caller::authorize(&request)?;
        let outcome = self.bulk(BulkAction::Cancel, request.into_inner().selection).await?;
        Ok(Response::new(proto::CancelJobsResponse { outcome }))
    }

    async fn delete_jobs(
        &self,
        request: Request<proto::DeleteJobsRequest>,
    ) -> Result<Response<proto::DeleteJobsResponse>, Status> {
        Caller::authorize(&request)?;
        let outcome = self.bulk(BulkAction::Delete, request.into_inner().selection).await?;
        Ok(Response::new(proto::DeleteJobsResponse { outcome }))
    }

    async fn list_dead_job_groups(
        &self,
        request: Request<proto::ListDeadJobGroupsRequest>,
    ) -> Result<Response<proto::ListDeadJobGroupsResponse>, Status> {
        Caller::authorize(&request)?;
        let groups = self.engine.dead_groups(&request.into_inner().queue).await?;
        Ok(Response::new(listings::dead_groups(groups)))
    }

    async fn get_queue_activity(
        &self,
        request: Request<proto::GetQueueActivityRequest>,
    ) -> Result<Response<proto::GetQueueActivityResponse>, Status> {
        Caller::authorize(&request)?;
        let queues = request.into_inner().queues;
        let minutes = self.engine.activity(&queues).await?;
        let queues = queues.into_iter().zip(minutes).map(|(q, m)| listings::activity(q, m)).collect();
        Ok(Response::new(proto::GetQueueActivityResponse { queues }))
    }

    async fn get_access(
        &self,
        request: Request<proto::GetAccessRequest>,
    ) -> Result<Response<proto::GetAccessResponse>, Status> {
        Ok(Response::new(Caller::of(&request)?.access()))
    }

    type SubscribeQueuesStream = EventStream<proto::SubscribeQueuesResponse>;

    async fn subscribe_queues(
        &self,
        request: Request<proto::SubscribeQueuesRequest>,
    ) -> Result<Response<Self::SubscribeQueuesStream>, Status> {
        let caller = Caller::authorize(&request)?;
        let feeds = self.engine.subscribe_queues(&request.into_inner().queues).await?;
        // Each event names its job, whose id names its queue: one merged stream of all feeds.
        let merged = futures::stream::select_all(feeds.into_iter().map(tokio_stream::wrappers::ReceiverStream::new));
        Ok(Response::new(Box::pin(futures::StreamExt::map(merged, move |item| {
            item.map(|event| proto::SubscribeQueuesResponse {
                queue: event.job_id.queue_name().to_owned(),
                event: Some(caller.redacted_event(convert::event(event))),
            })
            .map_err(Status::from)
        }))))
    }
}
