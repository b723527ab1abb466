//! The client's side of the `ScheduleService`: a schedule built fluently ([`NewSchedule`]) and
//! the calls that manage one, on [`Client`].
//!
//! ```no_run
//! # async fn demo(client: jobwire::client::Client) -> Result<(), jobwire::client::ClientError> {
//! use jobwire::client::NewSchedule;
//! let nightly = NewSchedule::cron("reports", "nightly", "build-report", "0 30 2 * * *").time_zone("Europe/Berlin");
//! client.upsert_schedule(nightly).await?;
//! # Ok(()) }
//! ```

use std::time::{Duration, SystemTime};

use super::{Client, ClientError, Transport};
use crate::proto::{self, schedule_service_client::ScheduleServiceClient};

/// A schedule to create or replace. Unset options take the server's defaults (no start, end or
/// jitter; missed fires skipped; overlapping fires allowed).
#[derive(Clone, Debug)]
pub struct NewSchedule(proto::ScheduleDefinition);

impl NewSchedule {
    fn new(queue: &str, name: &str, job_type: &str, timing: proto::schedule_definition::Timing) -> Self {
        Self(proto::ScheduleDefinition {
            queue: queue.into(),
            name: name.into(),
            template: Some(proto::JobTemplate { r#type: job_type.into(), ..Default::default() }),
            timing: Some(timing),
            ..Default::default()
        })
    }

    /// A schedule of `queue` named `name` adding a job of `job_type` every `every` (1 s to
    /// 366 days).
    pub fn every(queue: &str, name: &str, job_type: &str, every: Duration) -> Self {
        let every =
            prost_types::Duration::try_from(every).unwrap_or(prost_types::Duration { seconds: i64::MAX, nanos: 0 });
        Self::new(queue, name, job_type, proto::schedule_definition::Timing::Every(every))
    }

    /// A schedule adding a job of `job_type` at each time of a cron expression (5 fields, or 6
    /// with seconds first), in UTC unless [`time_zone`](Self::time_zone) says otherwise.
    pub fn cron(queue: &str, name: &str, job_type: &str, expression: &str) -> Self {
        Self::new(queue, name, job_type, proto::schedule_definition::Timing::Cron(expression.into()))
    }

    fn template(&mut self) -> &mut proto::JobTemplate {
        self.0.template.get_or_insert_with(Default::default)
    }

    /// The IANA zone the cron expression is read in (`Europe/Berlin`).
    pub fn time_zone(mut self, zone: &str) -> Self {
        self.0.time_zone = zone.into();
        self
    }

    /// Each job's payload.
    pub fn payload(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.template().payload = bytes.into();
        self
    }

    /// Each job's payload, as JSON.
    pub fn json(self, value: &serde_json::Value) -> Self {
        self.payload(value.to_string())
    }

    /// A header of each job.
    pub fn header(mut self, key: &str, value: &str) -> Self {
        self.template().headers.insert(key.into(), value.into());
        self
    }

    /// Each job's priority, -5 to 5.
    pub fn priority(mut self, priority: i32) -> Self {
        self.template().priority = priority;
        self
    }

    /// Each job's attempts before it goes dead.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.template().max_attempts = Some(attempts);
        self
    }

    /// Each attempt's timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.template().timeout = prost_types::Duration::try_from(timeout).ok();
        self
    }

    /// Each job's rate key: its leases count against the queue's `key_rate` limit for it.
    pub fn rate_key(mut self, key: &str) -> Self {
        self.template().rate_key = key.into();
        self
    }

    /// Each job's concurrency key: its leases count against the queue's `key_concurrency` cap
    /// for it.
    pub fn concurrency_key(mut self, key: &str) -> Self {
        self.template().concurrency_key = key.into();
        self
    }

    /// No due time before `start`.
    pub fn start(mut self, start: SystemTime) -> Self {
        self.0.start = Some(start.into());
        self
    }

    /// No due time at or after `end`.
    pub fn end(mut self, end: SystemTime) -> Self {
        self.0.end = Some(end.into());
        self
    }

    /// Each job runs a delay of up to `jitter` after its due time.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.0.jitter = prost_types::Duration::try_from(jitter).ok();
        self
    }

    /// What missed due times do; `catch_up_max` only with `RunAll` (0: the default, 10).
    pub fn missed_fires(mut self, policy: proto::MissedFirePolicy, catch_up_max: u32) -> Self {
        self.0.missed_fires = policy as i32;
        self.0.catch_up_max = catch_up_max;
        self
    }

    /// Skip a fire while the previous fire's job has not finished.
    pub fn skip_overlap(mut self) -> Self {
        self.0.overlap = proto::OverlapPolicy::Skip as i32;
        self
    }

    /// The definition as sent.
    pub fn into_definition(self) -> proto::ScheduleDefinition {
        self.0
    }
}

impl Client {
    /// The generated client of the `ScheduleService`, for calls this wrapper does not cover.
    pub fn raw_schedules(&self) -> ScheduleServiceClient<Transport> {
        ScheduleServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    /// Creates a schedule or replaces the one of its name; returns it as stored, and whether it
    /// was created.
    pub async fn upsert_schedule(&self, schedule: NewSchedule) -> Result<(proto::Schedule, bool), ClientError> {
        let request = proto::UpsertScheduleRequest { schedule: Some(schedule.into_definition()) };
        let resp = self.raw_schedules().upsert_schedule(request).await?.into_inner();
        let schedule = resp.schedule.ok_or_else(|| tonic::Status::internal("empty answer"))?;
        Ok((schedule, resp.created))
    }

    /// One schedule, with its next fire time.
    pub async fn schedule(&self, queue: &str, name: &str) -> Result<proto::Schedule, ClientError> {
        let request = proto::GetScheduleRequest { queue: queue.into(), name: name.into() };
        let resp = self.raw_schedules().get_schedule(request).await?.into_inner();
        resp.schedule.ok_or_else(|| tonic::Status::internal("empty answer").into())
    }

    /// Every schedule of `queue`, page after page.
    pub async fn list_schedules(&self, queue: &str) -> Result<Vec<proto::Schedule>, ClientError> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = proto::ListSchedulesRequest { queue: queue.into(), page_size: 1_000, page_token };
            let page = self.raw_schedules().list_schedules(request).await?.into_inner();
            out.extend(page.schedules);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = page.next_page_token;
        }
    }

    /// Deletes a schedule (its jobs stay).
    pub async fn delete_schedule(&self, queue: &str, name: &str) -> Result<(), ClientError> {
        let request = proto::DeleteScheduleRequest { queue: queue.into(), name: name.into() };
        self.raw_schedules().delete_schedule(request).await?;
        Ok(())
    }

    /// Pauses a schedule (`paused`) or resumes it.
    pub async fn pause_schedule(&self, queue: &str, name: &str, paused: bool) -> Result<(), ClientError> {
        let mut raw = self.raw_schedules();
        if paused {
            raw.pause_schedule(proto::PauseScheduleRequest { queue: queue.into(), name: name.into() }).await?;
        } else {
            raw.resume_schedule(proto::ResumeScheduleRequest { queue: queue.into(), name: name.into() }).await?;
        }
        Ok(())
    }

    /// Adds one job from the schedule's template now; returns its id.
    pub async fn trigger_schedule(&self, queue: &str, name: &str) -> Result<String, ClientError> {
        let request = proto::TriggerScheduleRequest { queue: queue.into(), name: name.into() };
        Ok(self.raw_schedules().trigger_schedule(request).await?.into_inner().job_id)
    }
}
