//! The gRPC `SessionService`: authorize (`auth/`), validate, call the engine, convert; a
//! reader's answers without the session states it is not shown.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{auth::Caller, convert};
use crate::{
    proto::{self, session_service_server::SessionService},
    queue::{Engine, SessionId, SessionUpdate},
};

/// The `SessionService` handlers, over the instance's engine.
pub(crate) struct SessionApi {
    engine: Arc<Engine>,
}

impl SessionApi {
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

#[tonic::async_trait]
impl SessionService for SessionApi {
    async fn create_session(
        &self,
        request: Request<proto::CreateSessionRequest>,
    ) -> Result<Response<proto::CreateSessionResponse>, Status> {
        Caller::authorize(&request)?;
        let req = request.into_inner();
        let ttl = convert::duration(req.ttl, "ttl")?;
        let name = Some(req.name.as_str()).filter(|n| !n.is_empty());
        let state = Some(req.state.as_str()).filter(|s| !s.is_empty());
        let session = self.engine.create_session(&req.queue, name, state, ttl, req.max_concurrency).await?;
        Ok(Response::new(proto::CreateSessionResponse { session: Some(convert::session(session)) }))
    }

    async fn get_session(
        &self,
        request: Request<proto::GetSessionRequest>,
    ) -> Result<Response<proto::GetSessionResponse>, Status> {
        let caller = Caller::authorize(&request)?;
        let id = SessionId::parse(&request.into_inner().session_id, "session_id")?;
        let session = caller.redacted_session(convert::session(self.engine.get_session(&id).await?));
        Ok(Response::new(proto::GetSessionResponse { session: Some(session) }))
    }

    async fn update_session(
        &self,
        request: Request<proto::UpdateSessionRequest>,
    ) -> Result<Response<proto::UpdateSessionResponse>, Status> {
        Caller::authorize(&request)?;
        let req = request.into_inner();
        let id = SessionId::parse(&req.session_id, "session_id")?;
        let update = match req.update {
            Some(proto::update_session_request::Update::State(s)) => SessionUpdate::Replace(s),
            Some(proto::update_session_request::Update::MergePatch(p)) => SessionUpdate::MergePatch(p),
            None => return Err(Status::invalid_argument("update: give state or merge_patch")),
        };
        let version = self.engine.update_session(&id, update, req.expected_version).await?;
        Ok(Response::new(proto::UpdateSessionResponse { version }))
    }

    async fn delete_session(
        &self,
        request: Request<proto::DeleteSessionRequest>,
    ) -> Result<Response<proto::DeleteSessionResponse>, Status> {
        Caller::authorize(&request)?;
        let id = SessionId::parse(&request.into_inner().session_id, "session_id")?;
        self.engine.delete_session(&id).await?;
        Ok(Response::new(proto::DeleteSessionResponse {}))
    }

    async fn list_sessions(
        &self,
        request: Request<proto::ListSessionsRequest>,
    ) -> Result<Response<proto::ListSessionsResponse>, Status> {
        let caller = Caller::authorize(&request)?;
        let req = request.into_inner();
        let page_size = if req.page_size == 0 { 100 } else { u64::from(req.page_size) };
        let (sessions, next) = self.engine.list_sessions(&req.queue, page_size, &req.page_token).await?;
        Ok(Response::new(proto::ListSessionsResponse {
            sessions: sessions.into_iter().map(|view| caller.redacted_session(convert::session(view))).collect(),
            next_page_token: next,
        }))
    }

    async fn list_session_jobs(
        &self,
        request: Request<proto::ListSessionJobsRequest>,
    ) -> Result<Response<proto::ListSessionJobsResponse>, Status> {
        let caller = Caller::authorize(&request)?;
        let req = request.into_inner();
        let id = SessionId::parse(&req.session_id, "session_id")?;
        let page_size = if req.page_size == 0 { 100 } else { u64::from(req.page_size) };
        let (jobs, next) = self.engine.session_jobs(&id, page_size, &req.page_token).await?;
        Ok(Response::new(proto::ListSessionJobsResponse {
            pending_jobs: jobs.into_iter().map(|view| caller.redacted_job(convert::job_info(view))).collect(),
            next_page_token: next,
        }))
    }
}
