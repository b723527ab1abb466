//! `jobwire doctor [--repair]`: checks a live Redis against the layout's invariants and, with
//! `--repair`, mends what it found (`jobwire::store::Doctor` does the work). It talks to Redis
//! directly, not through a server: it is the tool an operator reaches for when something is
//! wrong, which may well be while no jobwire instance is up.

use std::{process::ExitCode, time::Duration};

use clap::Args;
use jobwire::{
    config::RedisFlags,
    store::{Finding, Outcome, Report, Retention, Store, StoreConfig},
};

/// Exit code of a run that found nothing (or, with --repair, mended everything it found).
const CLEAN: u8 = 0;
/// Exit code of a run that found damage (with --repair: damage it could not mend).
const DAMAGED: u8 = 1;
/// Exit code of a run that could not check (Redis unreachable, a bad URL).
const FAILED: u8 = 2;

#[derive(Args, Debug)]
#[command(after_help = "Exit codes: 0 clean (with --repair: every finding mended or already right), \
                        1 damage found (with --repair: some left for a person), 2 the check could not run.")]
pub(crate) struct DoctorArgs {
    /// The Redis to check, e.g. redis://host:6379/0, rediss://user@host:6380,
    /// unix:///path/redis.sock, or a cluster's seeds (redis+cluster://host:port,host:port;
    /// rediss+cluster:// for TLS).
    #[arg(long, env = "JOBWIRE_REDIS_URL")]
    redis_url: String,
    #[command(flatten)]
    redis: RedisFlags,
    /// Namespace of the keys to check (the servers' --key-prefix).
    #[arg(long, env = "JOBWIRE_KEY_PREFIX", default_value = "jw")]
    key_prefix: String,
    /// Only this queue's keys (and the schema version).
    #[arg(long)]
    queue: Option<String>,
    /// Mend each finding, each with a function that checks it again inside Redis first.
    #[arg(long)]
    repair: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: DoctorArgs) -> ExitCode {
    match check(&args).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("doctor: {e:#}");
            ExitCode::from(FAILED)
        }
    }
}

async fn check(args: &DoctorArgs) -> anyhow::Result<u8> {
    // Repairs never trim retained history: that stays the servers' job, with their settings.
    // Limits far past any real one, yet exact as the Lua numbers (doubles) they become.
    let (forever, unlimited) = (Duration::from_secs(100 * 365 * 24 * 3600), 1 << 50);
    let keep_all = Retention {
        completed_for: forever,
        completed_max: unlimited,
        dead_for: forever,
        dead_max: unlimited,
        events_max: unlimited,
    };
    let store = Store::new(&StoreConfig {
        url: args.redis_url.clone(),
        access: args.redis.access().map_err(anyhow::Error::msg)?,
        prefix: args.key_prefix.clone(),
        pool_size: 1,
        timeout: Duration::from_secs(10),
        retention: keep_all,
        wait_replicas: 0,
    })?;
    let started = std::time::Instant::now();
    let doctor = store.doctor().judging_schedules(std::sync::Arc::new(jobwire::queue::schedule_timing));
    let report = doctor.examine(args.queue.as_deref()).await?;
    let outcomes = if args.repair { Some(doctor.repair(&report.findings).await?) } else { None };
    let elapsed = started.elapsed();
    let left = match &outcomes {
        None => report.findings.len(),
        Some(o) => o.iter().filter(|o| **o == Outcome::LeftAlone).count(),
    };
    if args.json {
        print_json(&report, outcomes.as_deref(), elapsed)?;
    } else {
        print_table(&report, outcomes.as_deref(), elapsed);
    }
    Ok(if left == 0 && !report.truncated { CLEAN } else { DAMAGED })
}

fn print_json(report: &Report, outcomes: Option<&[Outcome]>, elapsed: Duration) -> anyhow::Result<()> {
    let findings: Vec<serde_json::Value> = report
        .findings
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut v = serde_json::to_value(f)?;
            if let (Some(o), Some(map)) = (outcomes.and_then(|o| o.get(i)), v.as_object_mut()) {
                map.insert("outcome".into(), serde_json::to_value(o)?);
            }
            Ok(v)
        })
        .collect::<serde_json::Result<_>>()?;
    let out = serde_json::json!({
        "queues": report.queues,
        "jobs": report.jobs,
        "keys": report.keys,
        "seconds": elapsed.as_secs_f64(),
        "truncated": report.truncated,
        "findings": findings,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn print_table(report: &Report, outcomes: Option<&[Outcome]>, elapsed: Duration) {
    if !report.findings.is_empty() {
        let rows: Vec<[String; 5]> =
            report.findings.iter().enumerate().map(|(i, f)| row(f, outcomes.and_then(|o| o.get(i)))).collect();
        let header =
            ["KIND", "QUEUE", "SUBJECT", "DETAIL", if outcomes.is_some() { "REPAIR" } else { "" }].map(str::to_owned);
        let widths: Vec<usize> =
            (0..4).map(|c| rows.iter().chain([&header]).map(|r| r[c].len()).max().unwrap_or(0)).collect();
        for r in [&header].into_iter().chain(&rows) {
            let line = format!(
                "{:w0$}  {:w1$}  {:w2$}  {:w3$}  {}",
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3]
            );
            println!("{}", line.trim_end());
        }
    }
    let verdict = match (report.findings.len(), outcomes) {
        (0, _) => "clean".to_owned(),
        (n, None) => format!("{n} finding(s)"),
        (n, Some(o)) => {
            let count = |want: Outcome| o.iter().filter(|x| **x == want).count();
            format!(
                "{n} finding(s): {} repaired, {} already right, {} left for a person",
                count(Outcome::Repaired),
                count(Outcome::AlreadyRight),
                count(Outcome::LeftAlone)
            )
        }
    };
    let cut = if report.truncated { " (stopped at the findings limit: repair and run again)" } else { "" };
    println!(
        "checked {} queue(s), {} job(s), {} key(s) in {:.1}s: {verdict}{cut}",
        report.queues,
        report.jobs,
        report.keys,
        elapsed.as_secs_f64()
    );
}

fn row(f: &Finding, outcome: Option<&Outcome>) -> [String; 5] {
    let outcome = match outcome {
        None => "",
        Some(Outcome::Repaired) => "repaired",
        Some(Outcome::AlreadyRight) => "already right",
        Some(Outcome::LeftAlone) => "left for a person",
    };
    [
        f.kind.name().to_owned(),
        f.queue.clone().unwrap_or_else(|| "-".into()),
        f.subject.clone(),
        f.detail.clone(),
        outcome.to_owned(),
    ]
}
