//! `jobwire schedule set|list|get|delete|pause|resume|trigger`: a queue's schedules, through
//! the `ScheduleService` (writes need an admin token, reads a reader's).

use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Args, ValueEnum};
use jobwire::{client::NewSchedule, proto};

use super::{Target, duration, timestamp};

/// A schedule named in its queue.
#[derive(Args, Debug)]
pub(crate) struct Named {
    #[command(flatten)]
    target: Target,
    /// The schedule's name.
    name: String,
    /// Its queue.
    #[arg(long)]
    queue: String,
}

/// What missed due times do (`--missed`).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Missed {
    /// Missed times add nothing.
    Skip,
    /// One job for all the missed times.
    RunOnce,
    /// One job per missed time, the latest --catch-up-max.
    RunAll,
}

#[derive(clap::Subcommand, Debug)]
#[expect(clippy::large_enum_variant, reason = "parsed once per command line")]
pub(crate) enum ScheduleCommand {
    /// Create a schedule, or replace the one of that name in the queue.
    Set {
        #[command(flatten)]
        target: Target,
        /// The schedule's name in its queue.
        name: String,
        /// The queue its jobs go to.
        #[arg(long)]
        queue: String,
        /// The jobs' type.
        #[arg(long = "type")]
        job_type: String,
        /// A fixed interval (`30s`, `5m`, 1 s to 366 days).
        #[arg(long, value_parser = duration, conflicts_with = "cron", required_unless_present = "cron")]
        every: Option<Duration>,
        /// A cron expression: 5 fields, or 6 with seconds first (`'0 30 2 * * *'`).
        #[arg(long)]
        cron: Option<String>,
        /// The IANA time zone of --cron (default UTC).
        #[arg(long, requires = "cron")]
        tz: Option<String>,
        /// The jobs' payload (JSON by convention).
        #[arg(long, default_value = "")]
        payload: String,
        /// A header of every job, KEY=VALUE (repeatable).
        #[arg(long = "header", value_parser = key_value)]
        headers: Vec<(String, String)>,
        /// The jobs' priority, -5 to 5.
        #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
        priority: i32,
        /// The jobs' attempts before they go dead.
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Each attempt's timeout.
        #[arg(long, value_parser = duration)]
        timeout: Option<Duration>,
        /// Every job's rate key: held by the queue's per-key rate limit (`key_rate`).
        #[arg(long)]
        rate_key: Option<String>,
        /// Every job's concurrency key: held by the queue's per-key cap (`key_concurrency`).
        #[arg(long)]
        concurrency_key: Option<String>,
        /// No due time before this (RFC 3339, `2026-01-01T00:00:00Z`).
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        start: Option<SystemTime>,
        /// No due time at or after this (RFC 3339).
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        end: Option<SystemTime>,
        /// Each job runs up to this long after its due time (at most 1 h).
        #[arg(long, value_parser = duration)]
        jitter: Option<Duration>,
        /// What missed due times do.
        #[arg(long, value_enum, default_value = "skip")]
        missed: Missed,
        /// With --missed run-all: how many of the latest missed times run (default 10).
        #[arg(long, default_value_t = 0)]
        catch_up_max: u32,
        /// Skip a fire while the previous fire's job has not finished.
        #[arg(long)]
        skip_overlap: bool,
    },
    /// List a queue's schedules with their next fire times.
    List {
        #[command(flatten)]
        target: Target,
        /// The queue.
        #[arg(long)]
        queue: String,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a schedule as JSON.
    Get(Named),
    /// Delete a schedule; the jobs it added stay.
    Delete(Named),
    /// Pause a schedule: its due times meanwhile are missed fires.
    Pause(Named),
    /// Resume a paused schedule.
    Resume(Named),
    /// Add one job from the schedule's template now; prints its id.
    Trigger(Named),
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| "expected KEY=VALUE".to_owned())
}

fn schedule_json(s: &proto::Schedule) -> serde_json::Value {
    let d = s.definition.clone().unwrap_or_default();
    let (cron, every) = match &d.timing {
        Some(proto::schedule_definition::Timing::Cron(c)) => (Some(c.clone()), None),
        Some(proto::schedule_definition::Timing::Every(e)) => {
            (None, Duration::try_from(*e).ok().map(|e| humantime::format_duration(e).to_string()))
        }
        None => (None, None),
    };
    let template = d.template.unwrap_or_default();
    let policy = proto::MissedFirePolicy::try_from(d.missed_fires).map(|p| p.as_str_name()).unwrap_or("?");
    serde_json::json!({
        "queue": d.queue, "name": d.name, "cron": cron, "every": every, "time_zone": d.time_zone,
        "type": template.r#type, "rate_key": template.rate_key, "concurrency_key": template.concurrency_key,
        "start": timestamp(&d.start), "end": timestamp(&d.end),
        "missed_fires": policy.trim_start_matches("MISSED_FIRE_POLICY_").to_lowercase(),
        "catch_up_max": d.catch_up_max, "skip_overlap": d.overlap == proto::OverlapPolicy::Skip as i32,
        "paused": s.paused, "next_fire_at": timestamp(&s.next_fire_at),
        "upcoming_fires": s.upcoming_fires.iter().map(|t| timestamp(&Some(*t))).collect::<Vec<_>>(),
        "last_fire_at": timestamp(&s.last_fire_at),
        "last_job_id": s.last_job_id, "fires": s.fires, "skipped": s.skipped, "refused": s.refused,
        "revision": s.revision,
    })
}

pub(crate) async fn schedule(command: ScheduleCommand) -> anyhow::Result<()> {
    match command {
        ScheduleCommand::Set {
            target,
            name,
            queue,
            job_type,
            every,
            cron,
            tz,
            payload,
            headers,
            priority,
            max_attempts,
            timeout,
            rate_key,
            concurrency_key,
            start,
            end,
            jitter,
            missed,
            catch_up_max,
            skip_overlap,
        } => {
            let mut new = match (every, cron) {
                (Some(every), _) => NewSchedule::every(&queue, &name, &job_type, every),
                (None, Some(cron)) => NewSchedule::cron(&queue, &name, &job_type, &cron),
                (None, None) => anyhow::bail!("give --every or --cron"),
            };
            if let Some(tz) = tz {
                new = new.time_zone(&tz);
            }
            new = new.payload(payload).priority(priority);
            for (key, value) in &headers {
                new = new.header(key, value);
            }
            if let Some(attempts) = max_attempts {
                new = new.max_attempts(attempts);
            }
            if let Some(timeout) = timeout {
                new = new.timeout(timeout);
            }
            if let Some(key) = rate_key {
                new = new.rate_key(&key);
            }
            if let Some(key) = concurrency_key {
                new = new.concurrency_key(&key);
            }
            if let Some(start) = start {
                new = new.start(start);
            }
            if let Some(end) = end {
                new = new.end(end);
            }
            if let Some(jitter) = jitter {
                new = new.jitter(jitter);
            }
            let policy = match missed {
                Missed::Skip => proto::MissedFirePolicy::Skip,
                Missed::RunOnce => proto::MissedFirePolicy::RunOnce,
                Missed::RunAll => proto::MissedFirePolicy::RunAll,
            };
            new = new.missed_fires(policy, catch_up_max);
            if skip_overlap {
                new = new.skip_overlap();
            }
            let (stored, created) = target.connect().await?.upsert_schedule(new).await?;
            let verb = if created { "created" } else { "replaced" };
            println!("{queue}/{name}: {verb}, next fire {}", timestamp(&stored.next_fire_at));
        }
        ScheduleCommand::List { target, queue, json } => {
            let schedules = target.connect().await?.list_schedules(&queue).await?;
            if json {
                for s in &schedules {
                    println!("{}", schedule_json(s));
                }
                return Ok(());
            }
            println!("{:<24} {:<20} {:<30} {:<7} {:>8}", "NAME", "TIMING", "NEXT FIRE", "PAUSED", "FIRES");
            for s in &schedules {
                let row = schedule_json(s);
                let timing = row["cron"].as_str().or(row["every"].as_str()).unwrap_or("?").to_owned();
                let name = row["name"].as_str().unwrap_or_default();
                let next = row["next_fire_at"].as_str().unwrap_or_default();
                println!("{name:<24} {timing:<20} {next:<30} {:<7} {:>8}", s.paused, s.fires);
            }
        }
        ScheduleCommand::Get(Named { target, name, queue }) => {
            let s = target.connect().await?.schedule(&queue, &name).await?;
            println!("{}", serde_json::to_string_pretty(&schedule_json(&s))?);
        }
        ScheduleCommand::Delete(Named { target, name, queue }) => {
            target.connect().await?.delete_schedule(&queue, &name).await?;
            println!("{queue}/{name}: deleted");
        }
        ScheduleCommand::Pause(Named { target, name, queue }) => {
            target.connect().await?.pause_schedule(&queue, &name, true).await?;
            println!("{queue}/{name}: paused");
        }
        ScheduleCommand::Resume(Named { target, name, queue }) => {
            target.connect().await?.pause_schedule(&queue, &name, false).await?;
            println!("{queue}/{name}: resumed");
        }
        ScheduleCommand::Trigger(Named { target, name, queue }) => {
            let job_id = target.connect().await?.trigger_schedule(&queue, &name).await.context("trigger")?;
            println!("{job_id}");
        }
    }
    Ok(())
}
