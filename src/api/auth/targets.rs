//! The queues each request names, so that `Caller::check` can hold them against the caller's
//! scope: a queue field, a job id or a session id (both lead to their queue: `<queue>/…`).
//! One impl per request message of every RPC that names anything; the listings that name
//! nothing (`ListQueues`, `ListWorkers` without a queue) name no target and are filtered by the
//! handler instead. An id that does not parse is refused as the handler would refuse it
//! (INVALID_ARGUMENT), before any scope is looked at.

use tonic::Status;

use crate::{
    proto::{self, work_ack::Ack},
    queue::{JobId, SessionId},
};

/// One queue a request names, and how (for the refusal and the audit line).
pub(crate) struct Target {
    /// The request field that names it (`queue`, `jobs[2].queue`, `job_id`).
    pub(crate) field: String,
    /// The queue.
    pub(crate) queue: String,
    /// What is named, in words: `queue q`, `job q/01J…`, `session q/s`.
    pub(crate) named: String,
}

/// A request message that names queues, jobs or sessions.
pub(crate) trait Targets {
    /// Every queue it names, with the field naming it.
    fn targets(&self) -> Result<Vec<Target>, Status>;
}

fn queue(field: &str, queue: &str) -> Result<Target, Status> {
    Ok(Target { field: field.into(), queue: queue.into(), named: format!("queue {}", queue.escape_debug()) })
}

fn job(field: &str, raw: &str) -> Result<Target, Status> {
    let id = JobId::parse(raw, field)?;
    Ok(Target { field: field.into(), named: format!("job {id}"), queue: id.queue_name().to_owned() })
}

fn session(field: &str, raw: &str) -> Result<Target, Status> {
    let id = SessionId::parse(raw, field)?;
    Ok(Target { field: field.into(), named: format!("session {id}"), queue: id.queue_name().to_owned() })
}

/// A job's queue, and its session's when it names one (they must be the same queue; the
/// engine refuses one that is not, and a scope must cover both either way).
fn new_job(prefix: &str, req: &proto::AddJobRequest) -> Result<Vec<Target>, Status> {
    let mut targets = vec![queue(&format!("{prefix}queue"), &req.queue)?];
    if !req.session_id.is_empty() {
        targets.push(session(&format!("{prefix}session_id"), &req.session_id)?);
    }
    Ok(targets)
}

/// Implements `Targets` for request types that name one thing in one field: `$kind` (`queue`,
/// `job` or `session`) reads the field.
macro_rules! names_one {
    ($kind:ident in $field:ident: $($message:ty),* $(,)?) => {$(
        impl Targets for $message {
            fn targets(&self) -> Result<Vec<Target>, Status> {
                Ok(vec![$kind(stringify!($field), &self.$field)?])
            }
        }
    )*};
}

names_one!(
    queue in queue:
    proto::StatsRequest,
    proto::SubscribeRequest,
    proto::PauseQueueRequest,
    proto::ResumeQueueRequest,
    proto::SetQueueSettingsRequest,
    proto::GetQueueSettingsRequest,
    proto::ListJobsRequest,
    proto::RetryDeadJobsRequest,
    proto::PurgeQueueRequest,
    proto::ListDeadJobGroupsRequest,
    proto::CreateSessionRequest,
    proto::ListSessionsRequest,
    proto::GetScheduleRequest,
    proto::ListSchedulesRequest,
    proto::DeleteScheduleRequest,
    proto::PauseScheduleRequest,
    proto::ResumeScheduleRequest,
    proto::TriggerScheduleRequest,
);

names_one!(
    job in job_id:
    proto::CompleteJobRequest,
    proto::FailJobRequest,
    proto::ExtendLeaseRequest,
    proto::ReturnJobRequest,
    proto::ReportProgressRequest,
    proto::GetJobInfoRequest,
    proto::WatchJobRequest,
    proto::CancelJobRequest,
    proto::RetryJobRequest,
    proto::DeleteJobRequest,
);

names_one!(session in session_id: proto::GetSessionRequest, proto::UpdateSessionRequest, proto::DeleteSessionRequest, proto::ListSessionJobsRequest);

impl Targets for proto::AddJobRequest {
    fn targets(&self) -> Result<Vec<Target>, Status> {
        new_job("", self)
    }
}

/// The queue of the schedule it defines (none without a definition: the handler refuses it).
impl Targets for proto::UpsertScheduleRequest {
    fn targets(&self) -> Result<Vec<Target>, Status> {
        self.schedule.as_ref().map(|s| queue("schedule.queue", &s.queue)).into_iter().collect()
    }
}

impl Targets for proto::AddJobsRequest {
    fn targets(&self) -> Result<Vec<Target>, Status> {
        let mut targets = Vec::with_capacity(self.jobs.len());
        for (i, req) in self.jobs.iter().enumerate() {
            targets.extend(new_job(&format!("jobs[{i}]."), req)?);
        }
        Ok(targets)
    }
}

impl Targets for proto::GetJobRequest {
    fn targets(&self) -> Result<Vec<Target>, Status> {
        self.queues.iter().enumerate().map(|(i, q)| queue(&format!("queues[{i}]"), q)).collect()
    }
}

/// Each of `queues`, as field `field[i]`.
fn queues(field: &str, names: &[String]) -> Result<Vec<Target>, Status> {
    names.iter().enumerate().map(|(i, q)| queue(&format!("{field}[{i}]"), q)).collect()
}

impl Targets for proto::SubscribeQueuesRequest {
    fn targets(&self) -> Result<Vec<Target>, Status> {
        queues("queues", &self.queues)
    }
}

impl Targets for proto::GetQueueActivityRequest {
    fn targets(&self) -> Result<Vec<Target>, Status> {
        queues("queues", &self.queues)
    }
}

/// A bulk action's selection: each job of a list of ids, or the queue of a query.
fn selection(selection: Option<&proto::JobSelection>) -> Result<Vec<Target>, Status> {
    use proto::job_selection::Selection;
    match selection.and_then(|s| s.selection.as_ref()) {
        Some(Selection::Ids(list)) => {
            list.job_ids.iter().enumerate().map(|(i, id)| job(&format!("selection.ids.job_ids[{i}]"), id)).collect()
        }
        Some(Selection::Query(query)) => Ok(vec![queue("selection.query.queue", &query.queue)?]),
        None => Ok(Vec::new()),
    }
}

/// Implements `Targets` for the bulk actions, which name their jobs in a `selection`.
macro_rules! selects {
    ($($message:ty),* $(,)?) => {$(
        impl Targets for $message {
            fn targets(&self) -> Result<Vec<Target>, Status> {
                selection(self.selection.as_ref())
            }
        }
    )*};
}

selects!(proto::RetryJobsRequest, proto::CancelJobsRequest, proto::DeleteJobsRequest);

impl Targets for proto::WorkOpen {
    fn targets(&self) -> Result<Vec<Target>, Status> {
        self.queues.iter().enumerate().map(|(i, q)| queue(&format!("open.queues[{i}]"), q)).collect()
    }
}

/// An ack on a Work stream names its job, as the unary RPC of the same name does.
impl Targets for proto::WorkAck {
    fn targets(&self) -> Result<Vec<Target>, Status> {
        let job_id = match &self.ack {
            Some(Ack::Complete(req)) => &req.job_id,
            Some(Ack::Fail(req)) => &req.job_id,
            Some(Ack::Progress(req)) => &req.job_id,
            Some(Ack::Extend(req)) => &req.job_id,
            Some(Ack::GiveBack(req)) => &req.job_id,
            None => return Ok(Vec::new()),
        };
        Ok(vec![job("job_id", job_id)?])
    }
}

/// Names a queue only when it filters on one; the listing is filtered by scope either way.
impl Targets for proto::ListWorkersRequest {
    fn targets(&self) -> Result<Vec<Target>, Status> {
        if self.queue.is_empty() { Ok(Vec::new()) } else { Ok(vec![queue("queue", &self.queue)?]) }
    }
}

/// Names nothing: the handler shows only the queues the scope covers.
impl Targets for proto::ListQueuesRequest {
    fn targets(&self) -> Result<Vec<Target>, Status> {
        Ok(Vec::new())
    }
}
