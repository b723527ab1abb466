//! The gRPC `ScheduleService`: authorize (`auth/`: admin for the writes, each audited; reader for
//! the reads), convert, call the engine, convert back. A service of its own rather than more
//! admin RPCs on `QueueService`: a schedule is a resource with its own lifecycle (upsert, read,
//! pause, delete), as a session is, and clients that never schedule need not carry it.
//!
//! A reader is shown a schedule's template without its payload unless its token reveals
//! payloads, as for jobs.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{auth::Caller, convert};
use crate::{
    proto::{self, schedule_service_server::ScheduleService},
    queue::{Engine, Error, JobTemplate, MissedPolicy, ScheduleDefinition, ScheduleView, Timing},
};

/// The `ScheduleService` handlers, over the instance's engine.
pub(crate) struct ScheduleApi {
    engine: Arc<Engine>,
}

impl ScheduleApi {
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

#[tonic::async_trait]
impl ScheduleService for ScheduleApi {
    async fn upsert_schedule(
        &self,
        request: Request<proto::UpsertScheduleRequest>,
    ) -> Result<Response<proto::UpsertScheduleResponse>, Status> {
        let caller = Caller::authorize(&request)?;
        let definition = request.into_inner().schedule.ok_or_else(|| Error::invalid("schedule", "is required"))?;
        let (created, view) = self.engine.upsert_schedule(definition_from(definition)?).await?;
        Ok(Response::new(proto::UpsertScheduleResponse {
            schedule: Some(caller.redacted_schedule(schedule(view))),
            created,
        }))
    }

    async fn get_schedule(
        &self,
        request: Request<proto::GetScheduleRequest>,
    ) -> Result<Response<proto::GetScheduleResponse>, Status> {
        let caller = Caller::authorize(&request)?;
        let req = request.into_inner();
        let view = self.engine.get_schedule(&req.queue, &req.name).await?;
        Ok(Response::new(proto::GetScheduleResponse { schedule: Some(caller.redacted_schedule(schedule(view))) }))
    }

    async fn list_schedules(
        &self,
        request: Request<proto::ListSchedulesRequest>,
    ) -> Result<Response<proto::ListSchedulesResponse>, Status> {
        let caller = Caller::authorize(&request)?;
        let req = request.into_inner();
        let (views, next) = self.engine.list_schedules(&req.queue, req.page_size, &req.page_token).await?;
        Ok(Response::new(proto::ListSchedulesResponse {
            schedules: views.into_iter().map(|v| caller.redacted_schedule(schedule(v))).collect(),
            next_page_token: next,
        }))
    }

    async fn delete_schedule(
        &self,
        request: Request<proto::DeleteScheduleRequest>,
    ) -> Result<Response<proto::DeleteScheduleResponse>, Status> {
        Caller::authorize(&request)?;
        let req = request.into_inner();
        self.engine.delete_schedule(&req.queue, &req.name).await?;
        Ok(Response::new(proto::DeleteScheduleResponse {}))
    }

    async fn pause_schedule(
        &self,
        request: Request<proto::PauseScheduleRequest>,
    ) -> Result<Response<proto::PauseScheduleResponse>, Status> {
        Caller::authorize(&request)?;
        let req = request.into_inner();
        self.engine.set_schedule_paused(&req.queue, &req.name, true).await?;
        Ok(Response::new(proto::PauseScheduleResponse {}))
    }

    async fn resume_schedule(
        &self,
        request: Request<proto::ResumeScheduleRequest>,
    ) -> Result<Response<proto::ResumeScheduleResponse>, Status> {
        Caller::authorize(&request)?;
        let req = request.into_inner();
        self.engine.set_schedule_paused(&req.queue, &req.name, false).await?;
        Ok(Response::new(proto::ResumeScheduleResponse {}))
    }

    async fn trigger_schedule(
        &self,
        request: Request<proto::TriggerScheduleRequest>,
    ) -> Result<Response<proto::TriggerScheduleResponse>, Status> {
        Caller::authorize(&request)?;
        let req = request.into_inner();
        let job_id = self.engine.trigger_schedule(&req.queue, &req.name).await?;
        Ok(Response::new(proto::TriggerScheduleResponse { job_id: job_id.to_string() }))
    }
}

/// A definition as sent; errors name the request's field (`schedule.…`).
fn definition_from(d: proto::ScheduleDefinition) -> Result<ScheduleDefinition, Error> {
    let t = d.template.ok_or_else(|| Error::invalid("schedule.template", "is required"))?;
    let mut headers: Vec<(String, String)> = t.headers.into_iter().collect();
    headers.sort();
    let template = JobTemplate {
        job_type: t.r#type,
        payload: t.payload,
        headers,
        priority: t.priority,
        max_attempts: t.max_attempts,
        backoff: t.backoff.map(|b| convert::settings::backoff(b, "schedule.template.backoff.")).transpose()?,
        timeout: convert::duration(t.timeout, "schedule.template.timeout")?,
        rate_key: Some(t.rate_key).filter(|k| !k.is_empty()),
        concurrency_key: Some(t.concurrency_key).filter(|k| !k.is_empty()),
    };
    let timing = match d.timing {
        Some(proto::schedule_definition::Timing::Cron(expression)) => {
            Timing::Cron { expression, time_zone: d.time_zone }
        }
        Some(proto::schedule_definition::Timing::Every(every)) => {
            if !d.time_zone.is_empty() {
                return Err(Error::invalid("schedule.time_zone", "only with cron"));
            }
            Timing::Every(convert::duration(Some(every), "schedule.every")?.unwrap_or_default())
        }
        None => return Err(Error::invalid("schedule.cron", "give cron or every")),
    };
    let missed = match proto::MissedFirePolicy::try_from(d.missed_fires) {
        Ok(proto::MissedFirePolicy::Unspecified | proto::MissedFirePolicy::Skip) => MissedPolicy::Skip,
        Ok(proto::MissedFirePolicy::RunOnce) => MissedPolicy::RunOnce,
        Ok(proto::MissedFirePolicy::RunAll) => MissedPolicy::RunAll,
        Err(_) => return Err(Error::invalid("schedule.missed_fires", "unknown missed-fire policy")),
    };
    let skip_overlap = match proto::OverlapPolicy::try_from(d.overlap) {
        Ok(proto::OverlapPolicy::Skip) => true,
        Ok(_) => false,
        Err(_) => return Err(Error::invalid("schedule.overlap", "unknown overlap policy")),
    };
    Ok(ScheduleDefinition {
        queue: d.queue,
        name: d.name,
        template,
        timing,
        start: convert::timestamp(d.start, "schedule.start")?,
        end: convert::timestamp(d.end, "schedule.end")?,
        jitter: convert::duration(d.jitter, "schedule.jitter")?,
        missed,
        catch_up_max: d.catch_up_max,
        skip_overlap,
    })
}

/// A schedule on the wire.
fn schedule(v: ScheduleView) -> proto::Schedule {
    let d = v.definition;
    let t = d.template;
    let (timing, time_zone) = match d.timing {
        Timing::Cron { expression, time_zone } => (proto::schedule_definition::Timing::Cron(expression), time_zone),
        Timing::Every(every) => (proto::schedule_definition::Timing::Every(convert::to_duration(every)), String::new()),
    };
    proto::Schedule {
        definition: Some(proto::ScheduleDefinition {
            queue: d.queue,
            name: d.name,
            template: Some(proto::JobTemplate {
                r#type: t.job_type,
                payload: t.payload,
                headers: t.headers.into_iter().collect(),
                priority: t.priority,
                max_attempts: t.max_attempts,
                backoff: t.backoff.map(|b| proto::Backoff {
                    kind: if b.fixed { proto::BackoffKind::Fixed } else { proto::BackoffKind::Exponential } as i32,
                    base: b.base.map(convert::to_duration),
                    factor: b.factor,
                    max: b.max.map(convert::to_duration),
                    jitter: b.jitter,
                }),
                timeout: t.timeout.map(convert::to_duration),
                rate_key: t.rate_key.unwrap_or_default(),
                concurrency_key: t.concurrency_key.unwrap_or_default(),
            }),
            timing: Some(timing),
            time_zone,
            start: d.start.map(convert::to_timestamp),
            end: d.end.map(convert::to_timestamp),
            jitter: d.jitter.map(convert::to_duration),
            missed_fires: match d.missed {
                MissedPolicy::Skip => proto::MissedFirePolicy::Skip,
                MissedPolicy::RunOnce => proto::MissedFirePolicy::RunOnce,
                MissedPolicy::RunAll => proto::MissedFirePolicy::RunAll,
            } as i32,
            catch_up_max: d.catch_up_max,
            overlap: if d.skip_overlap { proto::OverlapPolicy::Skip } else { proto::OverlapPolicy::Allow } as i32,
        }),
        paused: v.paused,
        next_fire_at: v.next_fire_at.map(convert::to_timestamp),
        upcoming_fires: v.upcoming_fires.into_iter().map(convert::to_timestamp).collect(),
        last_fire_at: v.last_fire_at.map(convert::to_timestamp),
        last_job_id: v.last_job_id.map(|id| id.to_string()).unwrap_or_default(),
        fires: v.fires,
        skipped: v.skipped,
        refused: v.refused,
        revision: v.revision,
        created_at: Some(convert::to_timestamp(v.created_at)),
        updated_at: Some(convert::to_timestamp(v.updated_at)),
    }
}
