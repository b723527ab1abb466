//! The gRPC transport: each handler converts the request, calls the engine, converts the answer.
//! No business rule lives here; domain errors become statuses in `status.rs` only.
//!
//! This file holds the `QueueService` handlers (jobs, worker streams, events, administration),
//! `sessions.rs` the `SessionService` ones, `convert.rs` the message <-> domain conversions and
//! the checks only the wire format needs. Nothing here is public: `server` mounts the two
//! services.

mod convert;
mod sessions;
mod status;

pub(crate) use sessions::SessionApi;

use std::{pin::Pin, sync::Arc, time::Duration};

use futures::Stream;
use tonic::{Request, Response, Status};

use crate::{
    proto::{self, queue_service_server::QueueService},
    queue::{Engine, JobId, WorkerSpec},
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
}

type JobStream = Pin<Box<dyn Stream<Item = Result<proto::GetJobResponse, Status>> + Send>>;
type EventStream<R> = Pin<Box<dyn Stream<Item = Result<R, Status>> + Send>>;

/// Turns an engine event feed into a gRPC stream of `R`, the RPC's message around each event.
fn event_stream<R: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<crate::queue::Result<crate::queue::EventView>>,
    wrap: fn(proto::JobEvent) -> R,
) -> EventStream<R> {
    Box::pin(futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), move |item| {
        item.map(|event| wrap(convert::event(event))).map_err(Status::from)
    }))
}

#[tonic::async_trait]
impl QueueService for QueueApi {
    async fn add_job(&self, request: Request<proto::AddJobRequest>) -> Result<Response<proto::AddJobResponse>, Status> {
        let job = convert::new_job(request.into_inner(), "")?;
        let added = self.engine.add(job).await?;
        tracing::debug!(job_id = %added.job_id, duplicate = added.duplicate, "job added");
        Ok(Response::new(proto::AddJobResponse { job_id: added.job_id.to_string(), duplicate: added.duplicate }))
    }

    async fn add_jobs(
        &self,
        request: Request<proto::AddJobsRequest>,
    ) -> Result<Response<proto::AddJobsResponse>, Status> {
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
        let req = request.into_inner();
        let spec = WorkerSpec {
            worker_id: req.worker_id,
            labels: req.labels.into_iter().collect(),
            queues: req.queues,
            max_in_flight: req.max_in_flight,
        };
        let (guard, rx) = self.engine.open_stream(spec)?;
        let period = self.ping_every;
        // A quiet stream hears a ping after a random half to whole period: streams opened
        // together (a fleet of workers starting) must not ping together, forever in step.
        let next_ping = move || tokio::time::Instant::now() + period.mul_f64(0.5 + rand::random::<f64>() / 2.0);
        let ping = Box::pin(tokio::time::sleep_until(next_ping()));
        // The guard lives inside the stream: when tonic drops the stream (the worker went away),
        // the guard hands the stream's unacknowledged jobs back.
        let stream = futures::stream::unfold((guard, rx, ping), move |(guard, mut rx, mut ping)| async move {
            let item = tokio::select! {
                event = rx.recv() => convert::stream_event(event?),
                _ = ping.as_mut() => proto::GetJobResponse {
                    message: Some(proto::get_job_response::Message::Ping(proto::Ping {})),
                },
            };
            ping.as_mut().reset(next_ping());
            Some((Ok(item), (guard, rx, ping)))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn complete_job(
        &self,
        request: Request<proto::CompleteJobRequest>,
    ) -> Result<Response<proto::CompleteJobResponse>, Status> {
        let trace = convert::trace_context(request.metadata());
        let req = request.into_inner();
        let job_id = JobId::parse(&req.job_id, "job_id")?;
        let session_state = req.session_state.as_deref().map(|s| (s, req.expected_session_version));
        if session_state.is_none() && req.expected_session_version.is_some() {
            return Err(Status::invalid_argument("expected_session_version: given without session_state"));
        }
        self.engine.complete(&job_id, &req.lease_token, &req.result, session_state, trace).await?;
        tracing::debug!(%job_id, "job completed");
        Ok(Response::new(proto::CompleteJobResponse {}))
    }

    async fn fail_job(
        &self,
        request: Request<proto::FailJobRequest>,
    ) -> Result<Response<proto::FailJobResponse>, Status> {
        let trace = convert::trace_context(request.metadata());
        let req = request.into_inner();
        let job_id = JobId::parse(&req.job_id, "job_id")?;
        let retry_after = convert::duration(req.retry_after, "retry_after")?;
        let retryable = req.retryable.unwrap_or(true);
        let (state, next) =
            self.engine.fail(&job_id, &req.lease_token, &req.error, retryable, retry_after, trace).await?;
        tracing::debug!(%job_id, ?state, "job failed");
        Ok(Response::new(proto::FailJobResponse {
            state: convert::job_state(state) as i32,
            next_run_at: next.map(convert::to_timestamp),
        }))
    }

    async fn extend_lease(
        &self,
        request: Request<proto::ExtendLeaseRequest>,
    ) -> Result<Response<proto::ExtendLeaseResponse>, Status> {
        let req = request.into_inner();
        let job_id = JobId::parse(&req.job_id, "job_id")?;
        let by = convert::duration(req.extend_by, "extend_by")?.unwrap_or_default();
        let deadline = self.engine.extend(&job_id, &req.lease_token, by).await?;
        Ok(Response::new(proto::ExtendLeaseResponse { deadline: Some(convert::to_timestamp(deadline)) }))
    }

    async fn return_job(
        &self,
        request: Request<proto::ReturnJobRequest>,
    ) -> Result<Response<proto::ReturnJobResponse>, Status> {
        let req = request.into_inner();
        let job_id = JobId::parse(&req.job_id, "job_id")?;
        self.engine.give_back_one(&job_id, &req.lease_token, req.stop_stream).await?;
        Ok(Response::new(proto::ReturnJobResponse {}))
    }

    async fn get_job_info(
        &self,
        request: Request<proto::GetJobInfoRequest>,
    ) -> Result<Response<proto::GetJobInfoResponse>, Status> {
        let job_id = JobId::parse(&request.into_inner().job_id, "job_id")?;
        let view = self.engine.info(&job_id).await?;
        Ok(Response::new(proto::GetJobInfoResponse { job: Some(convert::job_info(view)) }))
    }

    async fn stats(&self, request: Request<proto::StatsRequest>) -> Result<Response<proto::StatsResponse>, Status> {
        let queue = request.into_inner().queue;
        let counts = self.engine.stats(&queue).await?;
        Ok(Response::new(proto::StatsResponse { stats: Some(convert::queue_stats(queue, counts)) }))
    }

    async fn list_queues(
        &self,
        _request: Request<proto::ListQueuesRequest>,
    ) -> Result<Response<proto::ListQueuesResponse>, Status> {
        let queues = self.engine.list_queues().await?;
        Ok(Response::new(proto::ListQueuesResponse {
            queues: queues.into_iter().map(|(q, c)| convert::queue_stats(q, c)).collect(),
        }))
    }

    type WatchJobStream = EventStream<proto::WatchJobResponse>;

    async fn watch_job(
        &self,
        request: Request<proto::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let job_id = JobId::parse(&request.into_inner().job_id, "job_id")?;
        let events = self.engine.watch(&job_id).await?;
        Ok(Response::new(event_stream(events, |event| proto::WatchJobResponse { event: Some(event) })))
    }

    type SubscribeStream = EventStream<proto::SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let req = request.into_inner();
        let cursor = Some(req.cursor.as_str()).filter(|c| !c.is_empty());
        let events = self.engine.subscribe(&req.queue, cursor).await?;
        Ok(Response::new(event_stream(events, |event| proto::SubscribeResponse { event: Some(event) })))
    }

    async fn report_progress(
        &self,
        request: Request<proto::ReportProgressRequest>,
    ) -> Result<Response<proto::ReportProgressResponse>, Status> {
        let req = request.into_inner();
        let job_id = JobId::parse(&req.job_id, "job_id")?;
        self.engine.report_progress(&job_id, &req.lease_token, &req.progress).await?;
        Ok(Response::new(proto::ReportProgressResponse {}))
    }

    async fn cancel_job(
        &self,
        request: Request<proto::CancelJobRequest>,
    ) -> Result<Response<proto::CancelJobResponse>, Status> {
        let job_id = JobId::parse(&request.into_inner().job_id, "job_id")?;
        self.engine.cancel(&job_id).await?;
        Ok(Response::new(proto::CancelJobResponse {}))
    }

    async fn pause_queue(
        &self,
        request: Request<proto::PauseQueueRequest>,
    ) -> Result<Response<proto::PauseQueueResponse>, Status> {
        self.engine.set_paused(&request.into_inner().queue, true).await?;
        Ok(Response::new(proto::PauseQueueResponse {}))
    }

    async fn resume_queue(
        &self,
        request: Request<proto::ResumeQueueRequest>,
    ) -> Result<Response<proto::ResumeQueueResponse>, Status> {
        self.engine.set_paused(&request.into_inner().queue, false).await?;
        Ok(Response::new(proto::ResumeQueueResponse {}))
    }

    async fn list_jobs(
        &self,
        request: Request<proto::ListJobsRequest>,
    ) -> Result<Response<proto::ListJobsResponse>, Status> {
        let req = request.into_inner();
        let state = convert::listing(req.state, "state")?;
        let page_size = if req.page_size == 0 { 100 } else { u64::from(req.page_size) };
        let (jobs, next) = self.engine.list_jobs(&req.queue, state, page_size, &req.page_token).await?;
        Ok(Response::new(proto::ListJobsResponse {
            jobs: jobs.into_iter().map(convert::job_info).collect(),
            next_page_token: next,
        }))
    }

    async fn retry_job(
        &self,
        request: Request<proto::RetryJobRequest>,
    ) -> Result<Response<proto::RetryJobResponse>, Status> {
        let job_id = JobId::parse(&request.into_inner().job_id, "job_id")?;
        self.engine.retry_job(&job_id).await?;
        Ok(Response::new(proto::RetryJobResponse {}))
    }

    async fn retry_dead_jobs(
        &self,
        request: Request<proto::RetryDeadJobsRequest>,
    ) -> Result<Response<proto::RetryDeadJobsResponse>, Status> {
        let req = request.into_inner();
        let retried = self.engine.retry_dead(&req.queue, u64::from(req.limit)).await?;
        Ok(Response::new(proto::RetryDeadJobsResponse { retried }))
    }

    async fn delete_job(
        &self,
        request: Request<proto::DeleteJobRequest>,
    ) -> Result<Response<proto::DeleteJobResponse>, Status> {
        let job_id = JobId::parse(&request.into_inner().job_id, "job_id")?;
        self.engine.delete_job(&job_id).await?;
        Ok(Response::new(proto::DeleteJobResponse {}))
    }

    async fn purge_queue(
        &self,
        request: Request<proto::PurgeQueueRequest>,
    ) -> Result<Response<proto::PurgeQueueResponse>, Status> {
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
        let queue = request.into_inner().queue;
        let workers = self.engine.list_workers(Some(queue.as_str()).filter(|q| !q.is_empty())).await?;
        Ok(Response::new(proto::ListWorkersResponse { workers: workers.into_iter().map(convert::worker).collect() }))
    }
}
