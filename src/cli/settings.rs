//! `jobwire queue set Q ...` and `jobwire queue get Q`: a queue's settings at run time
//! (SetQueueSettings, GetQueueSettings), printed as a table of what is set and what is in effect,
//! or as JSON.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use jobwire::proto;

use super::{Target, duration};

#[derive(clap::Subcommand, Debug)]
pub(crate) enum QueueCommand {
    /// Change a queue's settings; every instance applies them within a second. Flags not given
    /// leave a setting as it is; --clear makes the server's flag apply again.
    Set(Box<SetArgs>),
    /// Print a queue's settings and those in effect.
    Get(GetArgs),
}

#[derive(Args, Debug)]
pub(crate) struct SetArgs {
    #[command(flatten)]
    target: Target,
    /// The queue.
    queue: String,
    /// Most jobs of the queue active at once, on every instance together.
    #[arg(long)]
    concurrency: Option<u32>,
    /// Most jobs the queue may hold waiting; an add past it is refused.
    #[arg(long)]
    max_waiting: Option<u64>,
    /// Attempts of a job added without its own (1 to 1000).
    #[arg(long)]
    attempts: Option<u32>,
    /// Attempt timeout of a job added without its own (10ms to 24h).
    #[arg(long, value_parser = duration)]
    timeout: Option<Duration>,
    /// Backoff of a job added without its own: `fixed:WAIT` or
    /// `exponential:BASE[:FACTOR[:MAX[:JITTER]]]`, e.g. `exponential:1s:2:1h:0.5`.
    #[arg(long, value_parser = parse_backoff)]
    backoff: Option<proto::Backoff>,
    /// How long completed and cancelled jobs are kept.
    #[arg(long, value_parser = duration)]
    completed_retention: Option<Duration>,
    /// How many completed and cancelled jobs are kept.
    #[arg(long)]
    completed_max: Option<u64>,
    /// How long dead jobs are kept.
    #[arg(long, value_parser = duration)]
    dead_retention: Option<Duration>,
    /// How many dead jobs are kept.
    #[arg(long)]
    dead_max: Option<u64>,
    /// How fast the queue's jobs may start, all keys together: `COUNT/PERIOD[:BURST]`, e.g.
    /// `1000/s`, `100/10s:20` (burst: jobs at once; default a tenth of COUNT, at least 1).
    #[arg(long, value_parser = parse_rate)]
    rate: Option<proto::RateLimit>,
    /// How fast the jobs of each `rate_key` may start, every key on its own: as --rate.
    #[arg(long, value_parser = parse_rate)]
    key_rate: Option<proto::RateLimit>,
    /// Most jobs of one `concurrency_key` active at once, on every instance together.
    #[arg(long)]
    key_concurrency: Option<u32>,
    /// Spread the queue over N shards (1 to 16), each its own Redis Cluster slot; set once,
    /// best before the first add. FIFO then holds within a shard, not across.
    #[arg(long)]
    shards: Option<u32>,
    /// A setting to remove (the flag applies again), by its name in `queue get`; repeatable.
    #[arg(long)]
    clear: Vec<String>,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct GetArgs {
    #[command(flatten)]
    target: Target,
    /// The queue.
    queue: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `fixed:WAIT` or `exponential:BASE[:FACTOR[:MAX[:JITTER]]]`.
fn parse_backoff(s: &str) -> Result<proto::Backoff, String> {
    let mut parts = s.split(':');
    let kind = match parts.next() {
        Some("fixed") => proto::BackoffKind::Fixed,
        Some("exponential") => proto::BackoffKind::Exponential,
        _ => return Err("must start with fixed: or exponential:".into()),
    };
    let wait = |p: Option<&str>| -> Result<Option<prost_types::Duration>, String> {
        p.map(|p| {
            let d = duration(p).map_err(|e| format!("{p}: {e}"))?;
            prost_types::Duration::try_from(d).map_err(|e| format!("{p}: {e}"))
        })
        .transpose()
    };
    let number = |p: Option<&str>| p.map(|p| p.parse::<f64>().map_err(|e| format!("{p}: {e}"))).transpose();
    let base = wait(parts.next())?;
    if base.is_none() {
        return Err("needs a wait after the kind".into());
    }
    let backoff = if kind == proto::BackoffKind::Fixed {
        proto::Backoff { kind: kind.into(), base, ..Default::default() }
    } else {
        let factor = number(parts.next())?;
        let max = wait(parts.next())?;
        let jitter = number(parts.next())?;
        proto::Backoff { kind: kind.into(), base, factor, max, jitter }
    };
    match parts.next() {
        Some(_) => Err("too many parts".into()),
        None => Ok(backoff),
    }
}

/// `COUNT/PERIOD[:BURST]`: PERIOD a unit (`ms`, `s`, `m`, `h`: one of it) or a duration (`10s`).
fn parse_rate(s: &str) -> Result<proto::RateLimit, String> {
    let (count, rest) = s.split_once('/').ok_or("must be COUNT/PERIOD[:BURST], e.g. 100/s")?;
    let (period, burst) = match rest.split_once(':') {
        Some((period, burst)) => (period, burst.parse::<u32>().map_err(|e| format!("burst {burst}: {e}"))?),
        None => (rest, 0),
    };
    let count = count.parse::<u32>().map_err(|e| format!("count {count}: {e}"))?;
    let period = match period {
        "ms" | "s" | "m" | "h" => duration(&format!("1{period}")),
        other => duration(other),
    }
    .map_err(|e| format!("period {period}: {e}"))?;
    let period = prost_types::Duration::try_from(period).map_err(|e| format!("period: {e}"))?;
    Ok(proto::RateLimit { count, period: Some(period), burst })
}

fn show_rate(r: &proto::RateLimit) -> String {
    let period = r.period.as_ref().map(show_duration).unwrap_or_default();
    format!("{}/{period}:{}", r.count, r.burst)
}

fn proto_duration(d: Option<Duration>, flag: &str) -> anyhow::Result<Option<prost_types::Duration>> {
    d.map(prost_types::Duration::try_from).transpose().with_context(|| format!("{flag} is too long"))
}

pub(crate) async fn run(command: QueueCommand) -> anyhow::Result<()> {
    match command {
        QueueCommand::Set(args) => {
            let settings = proto::QueueSettings {
                concurrency: args.concurrency,
                max_waiting: args.max_waiting,
                max_attempts: args.attempts,
                timeout: proto_duration(args.timeout, "--timeout")?,
                backoff: args.backoff,
                completed_retention: proto_duration(args.completed_retention, "--completed-retention")?,
                completed_max: args.completed_max,
                dead_retention: proto_duration(args.dead_retention, "--dead-retention")?,
                dead_max: args.dead_max,
                rate: args.rate,
                key_rate: args.key_rate,
                key_concurrency: args.key_concurrency,
                shards: args.shards,
            };
            let req = proto::SetQueueSettingsRequest {
                queue: args.queue.clone(),
                settings: Some(settings),
                clear: args.clear,
            };
            let answer = args.target.connect().await?.raw().set_queue_settings(req).await?.into_inner();
            print(&args.queue, answer.settings.unwrap_or_default(), answer.effective.unwrap_or_default(), args.json)
        }
        QueueCommand::Get(args) => {
            let req = proto::GetQueueSettingsRequest { queue: args.queue.clone() };
            let answer = args.target.connect().await?.raw().get_queue_settings(req).await?.into_inner();
            print(&args.queue, answer.settings.unwrap_or_default(), answer.effective.unwrap_or_default(), args.json)
        }
    }
}

fn show_duration(d: &prost_types::Duration) -> String {
    let d = Duration::try_from(*d).unwrap_or_default();
    humantime::format_duration(d).to_string()
}

fn show_backoff(b: &proto::Backoff) -> String {
    let wait = |d: &Option<prost_types::Duration>| d.as_ref().map(show_duration).unwrap_or_default();
    if b.kind == i32::from(proto::BackoffKind::Fixed) {
        format!("fixed:{}", wait(&b.base))
    } else {
        let number = |n: Option<f64>| n.map(|n| n.to_string()).unwrap_or_default();
        format!("exponential:{}:{}:{}:{}", wait(&b.base), number(b.factor), wait(&b.max), number(b.jitter))
    }
}

/// Each setting's name and its value as text ("" when unset).
fn rows(s: &proto::QueueSettings) -> Vec<(&'static str, String)> {
    let count = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_default();
    let wait = |d: &Option<prost_types::Duration>| d.as_ref().map(show_duration).unwrap_or_default();
    vec![
        ("concurrency", s.concurrency.map(|n| n.to_string()).unwrap_or_default()),
        ("max_waiting", count(s.max_waiting)),
        ("max_attempts", s.max_attempts.map(|n| n.to_string()).unwrap_or_default()),
        ("timeout", wait(&s.timeout)),
        ("backoff", s.backoff.as_ref().map(show_backoff).unwrap_or_default()),
        ("completed_retention", wait(&s.completed_retention)),
        ("completed_max", count(s.completed_max)),
        ("dead_retention", wait(&s.dead_retention)),
        ("dead_max", count(s.dead_max)),
        ("rate", s.rate.as_ref().map(show_rate).unwrap_or_default()),
        ("key_rate", s.key_rate.as_ref().map(show_rate).unwrap_or_default()),
        ("key_concurrency", s.key_concurrency.map(|n| n.to_string()).unwrap_or_default()),
        ("shards", s.shards.map(|n| n.to_string()).unwrap_or_default()),
    ]
}

fn print(
    queue: &str,
    settings: proto::QueueSettings,
    effective: proto::QueueSettings,
    json: bool,
) -> anyhow::Result<()> {
    let (set, applied) = (rows(&settings), rows(&effective));
    if json {
        let object = |rows: &[(&str, String)]| -> serde_json::Map<String, serde_json::Value> {
            rows.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| ((*k).to_owned(), v.clone().into())).collect()
        };
        let out = serde_json::json!({ "queue": queue, "settings": object(&set), "effective": object(&applied) });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{:<20} {:<28} {:<28}", "SETTING", "SET FOR THE QUEUE", "IN EFFECT");
    for ((name, value), (_, in_effect)) in set.iter().zip(&applied) {
        let in_effect = if in_effect.is_empty() { "(no limit)" } else { in_effect.as_str() };
        println!("{name:<20} {value:<28} {in_effect:<28}");
    }
    Ok(())
}
