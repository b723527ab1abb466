//! Schedules: jobs a queue adds by itself, on a cron timetable or a fixed interval, with no
//! leader among the instances.
//!
//! A schedule is a definition (its queue and name, the job template, the timetable with its
//! start, end and jitter, the missed-fire and overlap policies) stored in its queue's schedules
//! hash (`store::Schedules`), plus how far it has fired. Every instance keeps a timer for the
//! next due time of every schedule it knows (`timer.rs`); when it goes off the instance
//! computes what the fire owes (`timing.rs`: the due times since the last fire, under the
//! missed-fire policy) and claims it in Redis with one function call that compares how far
//! the schedule has fired, moves it on and adds the jobs, so whichever instances race, each due
//! time adds one job. Its job id is derived from the schedule and the due time, the same on
//! every instance.
//!
//! This file is the room's front: validating a definition (each refusal names its field, as
//! the request spells it: `schedule.cron`, `schedule.template.type`), turning it into what the
//! store keeps (the timetable and policies as a JSON `Spec`, the template as a job record with
//! the `jobwire-schedule` header), and the reads and writes of UpsertSchedule and the other
//! RPCs. Owns the timer task. Calls `registry` (a queue with a schedule is registered, so every
//! instance's timer finds it), `leases` (`wake`, after a fire added jobs; `follow_schedules`,
//! the notices of changes made elsewhere), `overrides` (`shards_of`) and `background`.
//!
//! A sharded queue's schedule is kept in one shard (`shards::for_schedule`: the shard its job's
//! key picks, else the one its name picks), since its fire claims a due time and adds the job
//! in one call there; the timer knows it as that shard's. Every read and change by name looks
//! for it in the shard its name picks, then in the others; ListSchedules lists shard after
//! shard (its token says which, `<shard>.<cursor>`). An upsert that would move a schedule to
//! another shard (a new key) is refused: how far it has fired lives in the old one.

mod timer;
mod timing;

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use timing::{MissedFires, Timetable, TimingError};

use super::{
    background::Background,
    error::{Error, Result},
    job::{BackoffRequest, JobId, NewJob, duration_ms, from_ms, to_ms, validate_queue},
    leases::Leases,
    overrides::Overrides,
    registry::QueueRegistry,
    settings::Limits,
    shards,
};
use crate::store::{BackoffSpec, JobRecord, ScheduleTiming, Store, StoredSchedule};

/// The header every job a schedule adds carries: the schedule's name.
pub const SCHEDULE_HEADER: &str = "jobwire-schedule";
/// The shortest interval.
const MIN_EVERY: Duration = Duration::from_secs(1);
/// The longest interval.
const MAX_EVERY: Duration = Duration::from_secs(366 * 24 * 3600);
/// The longest jitter.
const MAX_JITTER: Duration = Duration::from_secs(3600);
/// Missed times run by MISSED_FIRE_POLICY_RUN_ALL when the definition does not say.
const DEFAULT_CATCH_UP: u32 = 10;
/// The most a schedule catches up at once (a fire's job cap, `store::MAX_FIRE_JOBS`, less the
/// on-time one).
const MAX_CATCH_UP: u32 = 99;
/// Most schedules per ListSchedules page.
const MAX_PAGE: u32 = 1_000;
/// Due times a schedule's view lists ahead (`ScheduleView::upcoming_fires`): enough to see a
/// timetable's rhythm, few enough that a page of 1,000 cron schedules stays cheap to compute.
const UPCOMING: usize = 5;

/// When a schedule is due.
#[derive(Clone, Debug, PartialEq)]
pub enum Timing {
    /// A cron expression (5 fields, or 6 with seconds first) in an IANA zone (empty: UTC).
    Cron {
        /// The expression.
        expression: String,
        /// The zone it is read in.
        time_zone: String,
    },
    /// A fixed interval, 1 s to 366 days.
    Every(Duration),
}

/// The missed-fire policy as asked for (the cap of `RunAll` is apart, in `catch_up_max`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissedPolicy {
    /// Missed times add nothing.
    #[default]
    Skip,
    /// One job for all the missed times.
    RunOnce,
    /// One job per missed time, the latest `catch_up_max`.
    RunAll,
}

/// The job each fire adds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobTemplate {
    /// The handler name.
    pub job_type: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// Headers (the server adds `jobwire-schedule`).
    pub headers: Vec<(String, String)>,
    /// -5 to 5.
    pub priority: i32,
    /// Attempts before dead; None: the default.
    pub max_attempts: Option<u32>,
    /// The retry waits; None: the default.
    pub backoff: Option<BackoffRequest>,
    /// An attempt's timeout; None: the default.
    pub timeout: Option<Duration>,
    /// Every job's rate key (`NewJob::rate_key`); None: none.
    pub rate_key: Option<String>,
    /// Every job's concurrency key (`NewJob::concurrency_key`); None: none.
    pub concurrency_key: Option<String>,
}

/// A schedule's definition.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleDefinition {
    /// Its queue.
    pub queue: String,
    /// Its name in the queue.
    pub name: String,
    /// The job each fire adds.
    pub template: JobTemplate,
    /// When it is due.
    pub timing: Timing,
    /// No due time before this.
    pub start: Option<SystemTime>,
    /// No due time at or after this.
    pub end: Option<SystemTime>,
    /// Each job runs up to this long after its due time.
    pub jitter: Option<Duration>,
    /// What missed times do.
    pub missed: MissedPolicy,
    /// With `MissedPolicy::RunAll`, how many of the latest missed times run; 0: the default.
    pub catch_up_max: u32,
    /// Skip a fire while the previous fire's job has not finished.
    pub skip_overlap: bool,
}

/// A schedule as it is now.
#[derive(Clone, Debug)]
pub struct ScheduleView {
    /// Its definition.
    pub definition: ScheduleDefinition,
    /// Paused.
    pub paused: bool,
    /// When it fires next (now when missed times are owed); None when paused or finished.
    pub next_fire_at: Option<SystemTime>,
    /// Its next [`UPCOMING`] due times after now not yet fired, earliest first; empty when
    /// paused or finished.
    pub upcoming_fires: Vec<SystemTime>,
    /// The due time of the last job a fire added.
    pub last_fire_at: Option<SystemTime>,
    /// The last job it added.
    pub last_job_id: Option<JobId>,
    /// Jobs added.
    pub fires: u64,
    /// Due times skipped for overlap.
    pub skipped: u64,
    /// Fires refused at the queue's cap of waiting jobs.
    pub refused: u64,
    /// Upserts so far.
    pub revision: u64,
    /// When it was created.
    pub created_at: SystemTime,
    /// When its definition was last upserted.
    pub updated_at: SystemTime,
}

/// The timetable and policies as the store keeps them (JSON text in the schedule).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cron: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    time_zone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    every_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end_ms: Option<i64>,
    #[serde(default)]
    jitter_ms: u64,
    /// `skip`, `run_once` or `run_all`.
    missed: String,
    #[serde(default)]
    catch_up_max: u32,
    #[serde(default)]
    skip_overlap: bool,
}

/// A stored spec made ready to compute with.
#[derive(Clone, Debug)]
struct Compiled {
    timetable: Timetable,
    jitter_ms: u64,
    missed: MissedFires,
    skip_overlap: bool,
}

impl Spec {
    fn compile(&self) -> Result<Compiled, String> {
        let timetable = match (&self.cron, self.every_ms) {
            (Some(cron), None) => Timetable::cron(cron, &self.time_zone, self.start_ms, self.end_ms)
                .map_err(|e| format!("an unreadable timetable: {e:?}"))?,
            (None, Some(every)) => {
                Timetable::every(i64::try_from(every).unwrap_or(i64::MAX), self.start_ms, self.end_ms)
            }
            _ => return Err("neither cron nor every".into()),
        };
        let missed = match self.missed.as_str() {
            "skip" => MissedFires::Skip,
            "run_once" => MissedFires::RunOnce,
            "run_all" => MissedFires::RunAll(self.catch_up_max),
            other => return Err(format!("an unknown missed-fire policy {other:?}")),
        };
        Ok(Compiled { timetable, jitter_ms: self.jitter_ms, missed, skip_overlap: self.skip_overlap })
    }
}

/// Reads a stored spec; a spec this build cannot read is corrupt data.
fn compile(spec: &str) -> std::result::Result<Compiled, String> {
    serde_json::from_str::<Spec>(spec).map_err(|e| e.to_string())?.compile()
}

/// The instance's clock, epoch ms: the clock due times are reckoned by.
fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

/// The schedules room.
pub(super) struct Schedules {
    store: Arc<Store>,
    registry: Arc<QueueRegistry>,
    /// A sharded queue's shards, among which each of its schedules lives in one.
    overrides: Arc<Overrides>,
    background: Background,
    limits: Limits,
}

impl Schedules {
    /// The room, and its timer started; `max_waiting` is the server's cap of waiting jobs
    /// (`--max-waiting`), which fires respect as adds do.
    pub(super) fn start(
        store: Arc<Store>,
        registry: Arc<QueueRegistry>,
        leases: Arc<Leases>,
        overrides: Arc<Overrides>,
        background: Background,
        limits: Limits,
        max_waiting: Option<u64>,
    ) -> Self {
        let notices = leases.follow_schedules();
        background.spawn(timer::run(store.clone(), leases, background.clone(), notices, max_waiting));
        Self { store, registry, overrides, background, limits }
    }

    /// Creates or replaces a schedule; returns whether it was created and the schedule.
    pub(super) async fn upsert(&self, definition: ScheduleDefinition) -> Result<(bool, ScheduleView)> {
        self.background.check_open()?;
        let (spec, record) = self.validate(&definition)?;
        let spec = serde_json::to_string(&spec).map_err(|_| Error::Internal)?;
        let (queue, name) = (&definition.queue, &definition.name);
        let names = self.overrides.shards_of(queue).await?;
        let key = [&record.concurrency_key, &record.rate_key]
            .into_iter()
            .find_map(|k| k.as_deref().filter(|k| !k.is_empty()));
        let home = shards::for_schedule(&names, key, name).ok_or(Error::Internal)?;
        // On an unsharded queue there is nowhere else to look.
        if names.len() > 1
            && let Some((found, _)) = self.find(&names, name).await?
            && found != home
        {
            return Err(Error::Precondition(format!(
                "schedule.template: its key would move schedule {name} to another shard of queue {queue}; \
                 delete it and create it again"
            )));
        }
        let (created, stored) = self.store.schedules().set(home, name, &spec, &record, now_ms()).await?;
        self.registry.register_again(home).await;
        Ok((created, view(queue, home, name, stored)?))
    }

    /// The shard among `names` that holds the schedule `name`, and the schedule: the shard its
    /// name picks is looked at first (where a schedule without a key lives).
    async fn find<'a>(&self, names: &'a [String], name: &str) -> Result<Option<(&'a str, StoredSchedule)>> {
        let first = shards::for_schedule(names, None, name);
        let order = first.into_iter().chain(names.iter().map(String::as_str).filter(|n| Some(*n) != first));
        for shard in order {
            if let Some(stored) = self.store.schedules().get(shard, name).await? {
                return Ok(Some((shard, stored)));
            }
        }
        Ok(None)
    }

    /// The physical queue that holds the schedule `name` of `queue`: the queue itself when it
    /// is not sharded (with no lookup), else the shard that has it.
    async fn home_of(&self, queue: &str, name: &str) -> Result<String> {
        let names = self.overrides.shards_of(queue).await?;
        if let [only] = &names[..] {
            return Ok(only.clone());
        }
        let found = self.find(&names, name).await?;
        found.map(|(shard, _)| shard.to_owned()).ok_or_else(|| not_found(queue, name))
    }

    /// One schedule.
    pub(super) async fn get(&self, queue: &str, name: &str) -> Result<ScheduleView> {
        validate_names(queue, name, "")?;
        let names = self.overrides.shards_of(queue).await?;
        let (shard, stored) = self.find(&names, name).await?.ok_or_else(|| not_found(queue, name))?;
        view(queue, shard, name, stored)
    }

    /// A page of a queue's schedules and the token of the next (empty on the last page); a
    /// sharded queue's are listed shard after shard, so a page may end short where a shard does.
    pub(super) async fn list(&self, queue: &str, page_size: u32, token: &str) -> Result<(Vec<ScheduleView>, String)> {
        validate_queue(queue, "queue")?;
        let bad_token = || Error::invalid("page_token", "is not a token this server issued");
        let (index, cursor) = shards::parse_page(token).ok_or_else(bad_token)?;
        let cursor = if cursor.is_empty() { Ok(0) } else { cursor.parse::<u64>() }.map_err(|_| bad_token())?;
        let names = self.overrides.shards_of(queue).await?;
        let shard = names.get(index).ok_or_else(bad_token)?;
        let count = if page_size == 0 { 100 } else { page_size.min(MAX_PAGE) };
        let (next, page) = self.store.schedules().page(shard, cursor, count).await?;
        let views = page.into_iter().map(|(name, stored)| view(queue, shard, &name, stored?)).collect::<Result<_>>()?;
        Ok((views, shards::next_page(index, names.len(), (next != 0).then(|| next.to_string()))))
    }

    /// Deletes a schedule (its jobs stay).
    pub(super) async fn delete(&self, queue: &str, name: &str) -> Result<()> {
        validate_names(queue, name, "")?;
        let home = self.home_of(queue, name).await?;
        if self.store.schedules().delete(&home, name).await? { Ok(()) } else { Err(not_found(queue, name)) }
    }

    /// Pauses or resumes a schedule (either is a no-op when it is so already).
    pub(super) async fn set_paused(&self, queue: &str, name: &str, paused: bool) -> Result<()> {
        validate_names(queue, name, "")?;
        let home = self.home_of(queue, name).await?;
        match self.store.schedules().set_paused(&home, name, paused).await? {
            Some(_) => Ok(()),
            None => Err(not_found(queue, name)),
        }
    }

    /// Adds one job from the schedule's template now (in the schedule's shard); returns its id.
    pub(super) async fn trigger(&self, queue: &str, name: &str) -> Result<JobId> {
        self.background.check_open()?;
        validate_names(queue, name, "")?;
        let home = self.home_of(queue, name).await?;
        let ulid = ulid::Ulid::new().to_string();
        if self.store.schedules().trigger(&home, name, &ulid).await? {
            Ok(JobId::new(&home, &ulid))
        } else {
            Err(not_found(queue, name))
        }
    }

    /// Checks every field of a definition (errors name the request's field) and turns it into
    /// what the store keeps.
    fn validate(&self, d: &ScheduleDefinition) -> Result<(Spec, JobRecord)> {
        validate_names(&d.queue, &d.name, "schedule.")?;
        let t = &d.template;
        if t.headers.iter().any(|(k, _)| k == SCHEDULE_HEADER) {
            return Err(Error::invalid("schedule.template.headers", format!("{SCHEDULE_HEADER} is set by the server")));
        }
        if t.headers.len() >= 64 {
            return Err(Error::invalid("schedule.template.headers", "at most 63 entries"));
        }
        let mut headers = t.headers.clone();
        headers.push((SCHEDULE_HEADER.to_owned(), d.name.clone()));
        let job = NewJob {
            queue: d.queue.clone(),
            job_type: t.job_type.clone(),
            payload: t.payload.clone(),
            headers,
            priority: t.priority,
            max_attempts: t.max_attempts,
            backoff: t.backoff.clone(),
            timeout: t.timeout,
            rate_key: t.rate_key.clone(),
            concurrency_key: t.concurrency_key.clone(),
            ..NewJob::default()
        };
        job.validate(&self.limits, "schedule.template.")?;
        let start_ms = d.start.map(to_ms);
        let end_ms = d.end.map(to_ms);
        if let (Some(start), Some(end)) = (start_ms, end_ms)
            && end <= start
        {
            return Err(Error::invalid("schedule.end", "must be after start"));
        }
        let jitter = d.jitter.unwrap_or_default();
        if jitter > MAX_JITTER {
            return Err(Error::invalid("schedule.jitter", "at most 1 h"));
        }
        let mut spec = Spec { start_ms, end_ms, jitter_ms: duration_ms(jitter), ..Spec::default() };
        match &d.timing {
            Timing::Cron { expression, time_zone } => {
                let timetable = Timetable::cron(expression, time_zone, start_ms, None).map_err(|e| match e {
                    TimingError::Cron(reason) => Error::invalid("schedule.cron", reason),
                    TimingError::TimeZone => Error::invalid("schedule.time_zone", "is not an IANA time zone name"),
                })?;
                if timetable.next_after(now_ms()).is_none() {
                    return Err(Error::invalid("schedule.cron", "matches no time to come"));
                }
                spec.cron = Some(expression.clone());
                spec.time_zone = time_zone.clone();
            }
            Timing::Every(every) => {
                if !(MIN_EVERY..=MAX_EVERY).contains(every) {
                    return Err(Error::invalid("schedule.every", "must be from 1 s to 366 days"));
                }
                if every.as_nanos() % 1_000_000 != 0 {
                    return Err(Error::invalid("schedule.every", "must be whole milliseconds"));
                }
                if jitter >= *every {
                    return Err(Error::invalid("schedule.jitter", "must be shorter than every"));
                }
                spec.every_ms = Some(duration_ms(*every));
            }
        }
        let (missed, catch_up) = match d.missed {
            MissedPolicy::Skip => ("skip", 0),
            MissedPolicy::RunOnce => ("run_once", 0),
            MissedPolicy::RunAll => ("run_all", if d.catch_up_max == 0 { DEFAULT_CATCH_UP } else { d.catch_up_max }),
        };
        if d.missed != MissedPolicy::RunAll && d.catch_up_max != 0 {
            return Err(Error::invalid("schedule.catch_up_max", "only with MISSED_FIRE_POLICY_RUN_ALL"));
        }
        if catch_up > MAX_CATCH_UP {
            return Err(Error::invalid("schedule.catch_up_max", "must be from 1 to 99"));
        }
        spec.missed = missed.to_owned();
        spec.catch_up_max = catch_up;
        spec.skip_overlap = d.skip_overlap;
        Ok((spec, job.into_record(0)))
    }
}

/// Checks a schedule's queue and name; errors name `{prefix}queue` and `{prefix}name`.
fn validate_names(queue: &str, name: &str, prefix: &str) -> Result<()> {
    validate_queue(queue, &format!("{prefix}queue"))?;
    validate_queue(name, &format!("{prefix}name"))
}

fn not_found(queue: &str, name: &str) -> Error {
    Error::NotFound(format!("name: schedule {name} of queue {queue} does not exist"))
}

/// The view of a stored schedule of `queue`, kept in its physical queue `home` (the queue, or
/// the shard its jobs go to); a spec or template this build cannot read is corrupt data.
fn view(queue: &str, home: &str, name: &str, s: StoredSchedule) -> Result<ScheduleView> {
    let spec: Spec = serde_json::from_str(&s.spec).map_err(|e| corrupt(queue, name, &e.to_string()))?;
    let compiled = spec.compile().map_err(|e| corrupt(queue, name, &e))?;
    let timing = match (&spec.cron, spec.every_ms) {
        (Some(cron), _) => Timing::Cron { expression: cron.clone(), time_zone: spec.time_zone.clone() },
        (None, every) => Timing::Every(Duration::from_millis(every.unwrap_or_default())),
    };
    let missed = match compiled.missed {
        MissedFires::Skip => MissedPolicy::Skip,
        MissedFires::RunOnce => MissedPolicy::RunOnce,
        MissedFires::RunAll(_) => MissedPolicy::RunAll,
    };
    let now = now_ms();
    let (next_fire_at, upcoming_fires) = if s.paused {
        (None, Vec::new())
    } else {
        let upcoming = compiled.timetable.upcoming(s.fired_through_ms.max(now), UPCOMING);
        (
            compiled.timetable.next_fire(s.fired_through_ms, now).map(from_ms),
            upcoming.into_iter().map(from_ms).collect(),
        )
    };
    let ms = |ms: i64| Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    Ok(ScheduleView {
        definition: ScheduleDefinition {
            queue: queue.to_owned(),
            name: name.to_owned(),
            template: template_of(s.template),
            timing,
            start: spec.start_ms.map(from_ms),
            end: spec.end_ms.map(from_ms),
            jitter: Some(spec.jitter_ms).filter(|&j| j > 0).map(|j| ms(i64::try_from(j).unwrap_or(i64::MAX))),
            missed,
            catch_up_max: spec.catch_up_max,
            skip_overlap: spec.skip_overlap,
        },
        paused: s.paused,
        next_fire_at,
        upcoming_fires,
        last_fire_at: s.last_due_ms.map(from_ms),
        last_job_id: s.last_job.map(|ulid| JobId::new(home, &ulid)),
        fires: s.fires,
        skipped: s.skipped,
        refused: s.refused,
        revision: s.revision,
        created_at: from_ms(s.created_ms),
        updated_at: from_ms(s.updated_ms),
    })
}

/// How far a schedule's next fire may lie in the past, or how far it may have fired ahead of
/// the clock, before the doctor calls its timing wrong: far past the on-time window, a resync
/// of every instance's timer (`timer.rs`, 30 s) and any clock skew between instances.
const TIMING_TOLERANCE_MS: i64 = 60_000;

/// The doctor's judge of a stored schedule's timing (`store::ScheduleJudge`), by this process's
/// clock: None when it is right or paused. Wrong are an active schedule whose next fire is more
/// than `TIMING_TOLERANCE_MS` past (no instance fired it: mended by announcing it, so that
/// every live instance's timer looks again and fires what its missed-fire policy owes), one
/// that has fired more than that ahead of the clock (an instance with a clock far ahead claimed
/// due times that have not come: mended by moving how far it has fired back to now, or to its
/// last job's due time when that is later, so that no due time adds a second job), and one whose
/// timetable does not read (left for a person).
pub fn schedule_timing(stored: &StoredSchedule) -> Option<ScheduleTiming> {
    if stored.paused {
        return None;
    }
    let compiled = match compile(&stored.spec) {
        Ok(compiled) => compiled,
        Err(e) => {
            return Some(ScheduleTiming { detail: format!("its timetable does not read: {e}"), through_ms: None });
        }
    };
    let now = now_ms();
    let through = stored.fired_through_ms;
    if through > now + TIMING_TOLERANCE_MS {
        let detail =
            format!("fired through {} ms ahead of the clock: its due times until then would not fire", through - now);
        let mended = now.max(stored.last_due_ms.unwrap_or(0));
        return Some(ScheduleTiming { detail, through_ms: Some(mended) });
    }
    let due = compiled.timetable.next_after(through)?;
    (due < now - TIMING_TOLERANCE_MS).then(|| ScheduleTiming {
        detail: format!(
            "its next fire was due {} s ago and no instance fired it (is a server up?)",
            (now - due) / 1000
        ),
        through_ms: Some(through),
    })
}

fn corrupt(queue: &str, name: &str, detail: &str) -> Error {
    tracing::error!(%queue, %name, %detail, "a stored schedule does not read");
    Error::Internal
}

/// The template a stored job record was made from (less the header the server adds).
fn template_of(record: JobRecord) -> JobTemplate {
    JobTemplate {
        job_type: record.job_type,
        payload: record.payload,
        headers: record.headers.into_iter().filter(|(k, _)| k != SCHEDULE_HEADER).collect(),
        priority: record.priority,
        max_attempts: Some(record.max_attempts),
        backoff: record.backoff.map(|b: BackoffSpec| BackoffRequest {
            fixed: b.fixed,
            base: Some(Duration::from_millis(b.base_ms)),
            factor: Some(b.factor),
            max: Some(Duration::from_millis(b.max_ms)),
            jitter: Some(b.jitter),
        }),
        timeout: Some(Duration::from_millis(record.timeout_ms)),
        rate_key: record.rate_key,
        concurrency_key: record.concurrency_key,
    }
}
