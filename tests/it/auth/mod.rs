//! Tokens, roles and scopes: the role × RPC matrix (`matrix.rs`), scopes, listings and what a
//! reader is shown (`scopes.rs`), reloads and revocation ending streams (`revocation.rs`), and
//! the binary's side (`process.rs`): refusing to serve off loopback without tokens, `jobwire
//! token`, the CLI's and `jobwire work`'s `--token`, SIGHUP, audit lines and the log-leak check.
//!
//! `call` is one call of each RPC by name, against a `Place` (a queue with a job and a session
//! in it), so that the matrix and the scope tests walk every method of the service descriptors
//! with the same calls: a method without a call here fails them.

mod matrix;
mod process;
mod revocation;
mod scopes;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use jobwire::{
    auth::{Authority, Reflection, Reveal, Role, Secret, TokenEntry, TokenFile},
    client::{Client, NewJob, NewSchedule},
    proto::{self, work_ack::Ack, work_request},
};
use prost::Message;
use tonic::{Code, Status};

use crate::harness::{Redis, Server, ServerBuilder};

/// One entry to write: a name, a role, optionally queues and what a reader is shown.
pub struct Spec {
    name: String,
    role: Role,
    queues: Option<Vec<String>>,
    reveal: Vec<Reveal>,
}

pub fn spec(name: &str, role: Role) -> Spec {
    Spec { name: name.into(), role, queues: None, reveal: Vec::new() }
}

impl Spec {
    pub fn queues(mut self, queues: &[&str]) -> Self {
        self.queues = Some(queues.iter().map(|q| q.to_string()).collect());
        self
    }

    pub fn reveal(mut self, reveal: &[Reveal]) -> Self {
        self.reveal = reveal.to_vec();
        self
    }
}

/// A token file in a temp dir, and the secrets of its entries.
pub struct Tokens {
    dir: tempfile::TempDir,
    path: PathBuf,
    secrets: HashMap<String, String>,
}

impl Tokens {
    pub fn write(specs: Vec<Spec>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tokens.json");
        let mut tokens = Self { dir, path, secrets: HashMap::new() };
        let mut file = TokenFile::default();
        for spec in specs {
            let secret = Secret::generate().expect("random");
            let entry = TokenEntry {
                name: spec.name.clone(),
                role: spec.role,
                queues: spec.queues,
                sha256: Some(secret.sha256_hex()),
                subject: None,
                reveal: spec.reveal,
            };
            file.add(entry).expect("a valid entry");
            tokens.secrets.insert(spec.name, secret.expose().to_owned());
        }
        file.save(&tokens.path).expect("saved");
        tokens
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temp dir holding the file, for other files of a test.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn secret(&self, name: &str) -> &str {
        self.secrets.get(name).unwrap_or_else(|| panic!("no token {name}"))
    }

    /// Every secret written, for the log-leak check.
    pub fn all_secrets(&self) -> impl Iterator<Item = &str> {
        self.secrets.values().map(String::as_str)
    }

    /// Rewrites the file without `name` (as `jobwire token revoke` does).
    pub fn remove(&self, name: &str) {
        let mut file = TokenFile::load(&self.path).expect("loads");
        file.revoke(name).expect("the token is in the file");
        file.save(&self.path).expect("saved");
    }

    pub fn authority(&self) -> Arc<Authority> {
        Arc::new(Authority::load(&self.path, Reflection::Token).expect("the token file loads"))
    }
}

/// A test Redis, a token file of `specs`, and a server in this process that needs its tokens.
pub struct Secured {
    pub server: Server,
    pub tokens: Tokens,
    pub authority: Arc<Authority>,
    pub redis: Redis,
}

impl Secured {
    pub async fn start(specs: Vec<Spec>) -> Self {
        let redis = Redis::start();
        let tokens = Tokens::write(specs);
        let authority = tokens.authority();
        let server = start(&redis, authority.clone()).await;
        Self { server, tokens, authority, redis }
    }

    /// A client sending the token named `name`.
    pub async fn client(&self, name: &str) -> Client {
        client(&self.server, Some(self.tokens.secret(name))).await
    }
}

/// A server in this process that needs tokens of `authority`.
pub async fn start(redis: &Redis, authority: Arc<Authority>) -> Server {
    ServerBuilder::new(redis).auth(authority).start().await
}

/// A client of `server`, sending `token` when there is one.
pub async fn client(server: &Server, token: Option<&str>) -> Client {
    let client = Client::connect(&format!("http://{}", server.addr)).await.expect("connect");
    match token {
        Some(token) => client.with_token(token).expect("a header-safe token"),
        None => client,
    }
}

/// A queue with a job (delayed an hour, so no call here leases it) and a session in it.
pub struct Place {
    pub queue: String,
    pub job_id: String,
    pub session_id: String,
}

impl Place {
    /// Made by `admin`, an unscoped admin client.
    pub async fn make(admin: &Client, queue: &str) -> Self {
        let job_id =
            admin.add(NewJob::new(queue, "t").payload("p").delay(Duration::from_secs(3600))).await.expect("add");
        let session = admin.create_session(queue, None, &serde_json::json!({"s": 1}), 1).await.expect("session");
        Self { queue: queue.into(), job_id, session_id: session.id }
    }
}

/// Every method of the jobwire services, by name, from the descriptor set reflection serves.
pub fn jobwire_methods() -> Vec<String> {
    let bytes: &[u8] = tonic::include_file_descriptor_set!("jobwire_descriptor");
    let set = prost_types::FileDescriptorSet::decode(bytes).expect("a valid descriptor set");
    let services = set.file.iter().flat_map(|file| file.service.iter());
    services.flat_map(|service| service.method.iter().map(|m| m.name().to_owned())).collect()
}

fn add_request(queue: &str) -> proto::AddJobRequest {
    NewJob::new(queue, "t").payload("x").delay(Duration::from_secs(3600)).into_request()
}

/// Calls `method` once with `client`, naming `place`; Ok or the status the server answered.
/// A streaming call counts as answered once its stream opens.
pub async fn call(method: &str, client: &Client, place: &Place) -> Result<(), Status> {
    let (mut raw, mut sessions, mut schedules) = (client.raw(), client.raw_sessions(), client.raw_schedules());
    let (queue, job_id, session_id) = (place.queue.clone(), place.job_id.clone(), place.session_id.clone());
    let lease_token = "not-a-lease".to_owned();
    match method {
        "AddJob" => raw.add_job(add_request(&queue)).await.map(drop),
        "AddJobs" => raw.add_jobs(proto::AddJobsRequest { jobs: vec![add_request(&queue)] }).await.map(drop),
        "GetJob" => {
            let req = proto::GetJobRequest { queues: vec![queue], max_in_flight: 1, ..Default::default() };
            raw.get_job(req).await.map(drop)
        }
        "Work" => {
            let open = proto::WorkOpen { queues: vec![queue], max_in_flight: 1, ..Default::default() };
            let open = proto::WorkRequest { message: Some(work_request::Message::Open(open)) };
            raw.work(tokio_stream::iter(vec![open])).await.map(drop)
        }
        "CompleteJob" => {
            raw.complete_job(proto::CompleteJobRequest { job_id, lease_token, ..Default::default() }).await.map(drop)
        }
        "FailJob" => raw.fail_job(proto::FailJobRequest { job_id, lease_token, ..Default::default() }).await.map(drop),
        "ExtendLease" => {
            let extend_by = Some(crate::harness::millis(1_000));
            raw.extend_lease(proto::ExtendLeaseRequest { job_id, lease_token, extend_by }).await.map(drop)
        }
        "ReturnJob" => raw
            .return_job(proto::ReturnJobRequest { job_id, lease_token, stop_stream: false, ..Default::default() })
            .await
            .map(drop),
        "ReportProgress" => {
            let req = proto::ReportProgressRequest { job_id, lease_token, progress: b"1".to_vec() };
            raw.report_progress(req).await.map(drop)
        }
        "GetJobInfo" => raw.get_job_info(proto::GetJobInfoRequest { job_id }).await.map(drop),
        "Stats" => raw.stats(proto::StatsRequest { queue }).await.map(drop),
        "ListQueues" => raw.list_queues(proto::ListQueuesRequest {}).await.map(drop),
        "WatchJob" => raw.watch_job(proto::WatchJobRequest { job_id }).await.map(drop),
        "Subscribe" => raw.subscribe(proto::SubscribeRequest { queue, cursor: String::new() }).await.map(drop),
        "CancelJob" => raw.cancel_job(proto::CancelJobRequest { job_id }).await.map(drop),
        "PauseQueue" => raw.pause_queue(proto::PauseQueueRequest { queue }).await.map(drop),
        "ResumeQueue" => raw.resume_queue(proto::ResumeQueueRequest { queue }).await.map(drop),
        "SetQueueSettings" => {
            let req = proto::SetQueueSettingsRequest { queue, settings: None, clear: vec!["max_waiting".into()] };
            raw.set_queue_settings(req).await.map(drop)
        }
        "GetQueueSettings" => raw.get_queue_settings(proto::GetQueueSettingsRequest { queue }).await.map(drop),
        "ListJobs" => {
            let req = proto::ListJobsRequest { queue, state: proto::JobState::Delayed as i32, ..Default::default() };
            raw.list_jobs(req).await.map(drop)
        }
        "RetryJob" => raw.retry_job(proto::RetryJobRequest { job_id }).await.map(drop),
        "RetryDeadJobs" => raw.retry_dead_jobs(proto::RetryDeadJobsRequest { queue, limit: 1 }).await.map(drop),
        "DeleteJob" => raw.delete_job(proto::DeleteJobRequest { job_id }).await.map(drop),
        "PurgeQueue" => {
            let states = vec![proto::JobState::Dead as i32];
            raw.purge_queue(proto::PurgeQueueRequest { queue, states }).await.map(drop)
        }
        "RetryJobs" => raw.retry_jobs(proto::RetryJobsRequest { selection: selection(&job_id) }).await.map(drop),
        "CancelJobs" => raw.cancel_jobs(proto::CancelJobsRequest { selection: selection(&job_id) }).await.map(drop),
        "DeleteJobs" => raw.delete_jobs(proto::DeleteJobsRequest { selection: selection(&job_id) }).await.map(drop),
        "ListDeadJobGroups" => raw.list_dead_job_groups(proto::ListDeadJobGroupsRequest { queue }).await.map(drop),
        "GetQueueActivity" => {
            raw.get_queue_activity(proto::GetQueueActivityRequest { queues: vec![queue] }).await.map(drop)
        }
        "GetAccess" => raw.get_access(proto::GetAccessRequest {}).await.map(drop),
        "SubscribeQueues" => {
            raw.subscribe_queues(proto::SubscribeQueuesRequest { queues: vec![queue] }).await.map(drop)
        }
        "ListWorkers" => raw.list_workers(proto::ListWorkersRequest { queue }).await.map(drop),
        "CreateSession" => {
            let name = ulid::Ulid::new().to_string();
            let req = proto::CreateSessionRequest { queue, name, ..Default::default() };
            sessions.create_session(req).await.map(drop)
        }
        "GetSession" => sessions.get_session(proto::GetSessionRequest { session_id }).await.map(drop),
        "UpdateSession" => {
            let update = Some(proto::update_session_request::Update::MergePatch("{}".into()));
            let req = proto::UpdateSessionRequest { session_id, update, expected_version: None };
            sessions.update_session(req).await.map(drop)
        }
        "DeleteSession" => sessions.delete_session(proto::DeleteSessionRequest { session_id }).await.map(drop),
        "ListSessionJobs" => {
            let req = proto::ListSessionJobsRequest { session_id, ..Default::default() };
            sessions.list_session_jobs(req).await.map(drop)
        }
        "ListSessions" => {
            sessions.list_sessions(proto::ListSessionsRequest { queue, ..Default::default() }).await.map(drop)
        }
        "UpsertSchedule" => {
            let yearly = NewSchedule::cron(&queue, "yearly", "t", "0 0 1 1 *").into_definition();
            schedules.upsert_schedule(proto::UpsertScheduleRequest { schedule: Some(yearly) }).await.map(drop)
        }
        "GetSchedule" => {
            schedules.get_schedule(proto::GetScheduleRequest { queue, name: "yearly".into() }).await.map(drop)
        }
        "ListSchedules" => {
            schedules.list_schedules(proto::ListSchedulesRequest { queue, ..Default::default() }).await.map(drop)
        }
        "DeleteSchedule" => {
            schedules.delete_schedule(proto::DeleteScheduleRequest { queue, name: "gone".into() }).await.map(drop)
        }
        "PauseSchedule" => {
            schedules.pause_schedule(proto::PauseScheduleRequest { queue, name: "yearly".into() }).await.map(drop)
        }
        "ResumeSchedule" => {
            schedules.resume_schedule(proto::ResumeScheduleRequest { queue, name: "yearly".into() }).await.map(drop)
        }
        "TriggerSchedule" => {
            schedules.trigger_schedule(proto::TriggerScheduleRequest { queue, name: "gone".into() }).await.map(drop)
        }
        other => panic!("tests/it/auth has no call for {other}: add one to `call`"),
    }
}

/// A bulk action's selection of one job.
fn selection(job_id: &str) -> Option<proto::JobSelection> {
    let ids = proto::JobIdList { job_ids: vec![job_id.to_owned()] };
    Some(proto::JobSelection { selection: Some(proto::job_selection::Selection::Ids(ids)) })
}

/// Whether the access checks let the call through (whatever the engine answered then).
pub fn let_through(result: &Result<(), Status>) -> bool {
    !matches!(result, Err(status) if matches!(status.code(), Code::PermissionDenied | Code::Unauthenticated))
}

/// The next message of `stream`, within 5 s; it must not end.
pub async fn next_message<T>(stream: &mut tonic::Streaming<T>) -> T {
    let message = tokio::time::timeout(Duration::from_secs(5), stream.message()).await.expect("in time");
    message.expect("no error").expect("the stream goes on")
}

/// The next job a GetJob stream delivers.
pub async fn next_job(stream: &mut tonic::Streaming<proto::GetJobResponse>) -> proto::Job {
    loop {
        if let Some(proto::get_job_response::Message::Job(job)) = next_message(stream).await.message {
            return job;
        }
    }
}

/// Reads `stream` until it ends; its closing status, or None when it ended cleanly.
async fn end_of<T>(mut stream: impl futures::Stream<Item = Result<T, tonic::Status>> + Unpin) -> Option<tonic::Status> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut stream))
            .await
            .expect("the stream ends in time")
        {
            Some(Ok(_)) => continue,
            Some(Err(status)) => return Some(status),
            None => return None,
        }
    }
}

/// A Work ack naming `job_id`, with a lease token that holds nothing.
pub fn stale_ack(ack_id: u64, job_id: &str) -> proto::WorkAck {
    let req = proto::ExtendLeaseRequest {
        job_id: job_id.into(),
        lease_token: "not-a-lease".into(),
        extend_by: Some(crate::harness::millis(1_000)),
    };
    proto::WorkAck { ack_id, ack: Some(Ack::Extend(req)) }
}
