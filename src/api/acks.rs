//! What a lease holder says, from its request message to the engine and back: one function per
//! ack, shared by the unary RPCs (`CompleteJob`, `FailJob`...) and the acks of a `Work` stream,
//! so both paths check and answer exactly alike.

use std::future::Future;

use tonic::Status;

use super::convert;
use crate::{
    proto,
    queue::{Engine, JobId},
    telemetry::TraceContext,
};

pub(super) async fn complete(
    engine: &Engine,
    req: proto::CompleteJobRequest,
    trace: Option<TraceContext>,
) -> Result<proto::CompleteJobResponse, Status> {
    start_complete(engine, req, trace).await
}

/// As `complete`, but the completion is checked and taken in for its queue's next Redis call
/// now, when this is called; the future only waits for the answer (see `Engine::start_complete`).
pub(super) fn start_complete(
    engine: &Engine,
    req: proto::CompleteJobRequest,
    trace: Option<TraceContext>,
) -> impl Future<Output = Result<proto::CompleteJobResponse, Status>> + Send + use<> {
    let started = (|| {
        let job_id = JobId::parse(&req.job_id, "job_id")?;
        if req.session_state.is_none() && req.expected_session_version.is_some() {
            return Err(Status::invalid_argument("expected_session_version: given without session_state"));
        }
        let session_state = req.session_state.map(|s| (s, req.expected_session_version));
        let completing = engine.start_complete(job_id.clone(), &req.lease_token, req.result, session_state, trace);
        Ok((job_id, completing))
    })();
    async move {
        let (job_id, completing) = started?;
        completing.await?;
        tracing::debug!(%job_id, "job completed");
        Ok(proto::CompleteJobResponse {})
    }
}

pub(super) async fn fail(
    engine: &Engine,
    req: proto::FailJobRequest,
    trace: Option<TraceContext>,
) -> Result<proto::FailJobResponse, Status> {
    let job_id = JobId::parse(&req.job_id, "job_id")?;
    let retry_after = convert::duration(req.retry_after, "retry_after")?;
    let retryable = req.retryable.unwrap_or(true);
    let (state, next) = engine.fail(&job_id, &req.lease_token, &req.error, retryable, retry_after, trace).await?;
    tracing::debug!(%job_id, ?state, "job failed");
    Ok(proto::FailJobResponse { state: convert::job_state(state) as i32, next_run_at: next.map(convert::to_timestamp) })
}

pub(super) async fn extend(
    engine: &Engine,
    req: proto::ExtendLeaseRequest,
) -> Result<proto::ExtendLeaseResponse, Status> {
    let job_id = JobId::parse(&req.job_id, "job_id")?;
    let by = convert::duration(req.extend_by, "extend_by")?.unwrap_or_default();
    let deadline = engine.extend(&job_id, &req.lease_token, by).await?;
    Ok(proto::ExtendLeaseResponse { deadline: Some(convert::to_timestamp(deadline)) })
}

pub(super) async fn give_back(
    engine: &Engine,
    req: proto::ReturnJobRequest,
) -> Result<proto::ReturnJobResponse, Status> {
    let job_id = JobId::parse(&req.job_id, "job_id")?;
    match convert::duration(req.retry_after, "retry_after")? {
        Some(delay) => engine.postpone_one(&job_id, &req.lease_token, delay, req.hold_key, req.stop_stream).await?,
        None if req.hold_key => return Err(Status::invalid_argument("hold_key: needs retry_after")),
        None => engine.give_back_one(&job_id, &req.lease_token, req.stop_stream).await?,
    }
    Ok(proto::ReturnJobResponse {})
}

pub(super) async fn progress(
    engine: &Engine,
    req: proto::ReportProgressRequest,
) -> Result<proto::ReportProgressResponse, Status> {
    let job_id = JobId::parse(&req.job_id, "job_id")?;
    engine.report_progress(&job_id, &req.lease_token, &req.progress).await?;
    Ok(proto::ReportProgressResponse {})
}
