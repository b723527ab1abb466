//! The schedule and queue-settings ops of the Rust driver (`tests/conformance/README.md`), over
//! `jobwire::client`: its typed schedule calls ([`NewSchedule`]) and its settings calls (answered
//! as the generated types). Apart from `main.rs` so that each file stays about one part of the
//! API.

use std::time::Duration;

use jobwire::{
    client::{Client, NewSchedule},
    proto,
};
use serde_json::{Value, json};
use tonic::Code;

use super::{Reply, failed, json_bytes, number, text};

/// The settings of the ops that are counts; the durations are `timeout`, `completed_retention`
/// and `dead_retention`, given and answered as `<name>_ms`.
const COUNTS: [&str; 6] =
    ["max_waiting", "max_attempts", "concurrency", "completed_max", "dead_max", "key_concurrency"];
const DURATIONS: [&str; 3] = ["timeout", "completed_retention", "dead_retention"];

/// The reply to `op`, or None when it is none of these ops.
pub(crate) async fn serve(client: &Client, op: &str, req: &Value) -> Option<Reply> {
    let (queue, name) = (text(req, "queue"), text(req, "name"));
    let reply = match op {
        "schedule_upsert" => upsert(client, req).await,
        "schedule_get" => client.schedule(&queue, &name).await.map(|s| schedule_json(&s)).map_err(failed),
        "schedule_list" => client.list_schedules(&queue).await.map_err(failed).map(|all| {
            let mut names: Vec<String> = all.into_iter().filter_map(|s| s.definition.map(|d| d.name)).collect();
            names.sort();
            json!({ "names": names })
        }),
        "schedule_pause" | "schedule_resume" => {
            client.pause_schedule(&queue, &name, op == "schedule_pause").await.map(|()| json!({})).map_err(failed)
        }
        "schedule_delete" => client.delete_schedule(&queue, &name).await.map(|()| json!({})).map_err(failed),
        "schedule_trigger" => {
            client.trigger_schedule(&queue, &name).await.map(|id| json!({ "job_id": id })).map_err(failed)
        }
        "settings_get" => {
            client.queue_settings(&queue).await.map(|r| settings_json(r.settings, r.effective)).map_err(failed)
        }
        "settings_set" => settings_set(client, req).await,
        _ => return None,
    };
    Some(reply)
}

async fn upsert(client: &Client, req: &Value) -> Reply {
    let (queue, name, job_type) = (text(req, "queue"), text(req, "name"), text(req, "type"));
    let mut schedule = match req.get("cron").and_then(Value::as_str) {
        Some(cron) => NewSchedule::cron(&queue, &name, &job_type, cron),
        None => {
            NewSchedule::every(&queue, &name, &job_type, Duration::from_millis(number(req, "every_ms").unwrap_or(0)))
        }
    }
    .payload(json_bytes(req, "payload"));
    if let Some(headers) = req.get("headers").and_then(Value::as_object) {
        for (key, value) in headers {
            schedule = schedule.header(key, value.as_str().unwrap_or_default());
        }
    }
    if let Some(attempts) = number(req, "max_attempts").and_then(|n| u32::try_from(n).ok()) {
        schedule = schedule.max_attempts(attempts);
    }
    if req.get("time_zone").is_some() {
        schedule = schedule.time_zone(&text(req, "time_zone"));
    }
    if let Some(jitter) = number(req, "jitter_ms") {
        schedule = schedule.jitter(Duration::from_millis(jitter));
    }
    if req.get("missed_fires").is_some() {
        let name = format!("MISSED_FIRE_POLICY_{}", text(req, "missed_fires"));
        let policy = proto::MissedFirePolicy::from_str_name(&name)
            .ok_or_else(|| (Code::InvalidArgument, format!("the driver knows no {name}")))?;
        let catch_up_max = number(req, "catch_up_max").and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
        schedule = schedule.missed_fires(policy, catch_up_max);
    }
    if text(req, "overlap") == "SKIP" {
        schedule = schedule.skip_overlap();
    }
    let (stored, created) = client.upsert_schedule(schedule).await.map_err(failed)?;
    let mut out = schedule_json(&stored);
    out["created"] = json!(created);
    Ok(out)
}

fn millis(d: &prost_types::Duration) -> i64 {
    d.seconds.saturating_mul(1000).saturating_add(i64::from(d.nanos / 1_000_000))
}

fn schedule_json(s: &proto::Schedule) -> Value {
    let d = s.definition.clone().unwrap_or_default();
    let (cron, every_ms) = match &d.timing {
        Some(proto::schedule_definition::Timing::Cron(cron)) => (json!(cron), Value::Null),
        Some(proto::schedule_definition::Timing::Every(every)) => (Value::Null, json!(millis(every))),
        None => (Value::Null, Value::Null),
    };
    json!({
        "name": d.name,
        "type": d.template.as_ref().map(|t| t.r#type.clone()).unwrap_or_default(),
        "every_ms": every_ms,
        "cron": cron,
        "time_zone": d.time_zone,
        "paused": s.paused,
        "has_next_fire": s.next_fire_at.is_some(),
        "fires": s.fires,
        "revision": s.revision,
        "last_job_id": s.last_job_id,
        "overlap": d.overlap().as_str_name().trim_start_matches("OVERLAP_POLICY_"),
        "missed_fires": d.missed_fires().as_str_name().trim_start_matches("MISSED_FIRE_POLICY_"),
        "catch_up_max": d.catch_up_max,
    })
}

async fn settings_set(client: &Client, req: &Value) -> Reply {
    let given = req.get("settings").cloned().unwrap_or_else(|| json!({}));
    let count = |name: &str| given.get(name).and_then(Value::as_u64);
    let small = |name: &str| count(name).and_then(|n| u32::try_from(n).ok());
    let duration = |name: &str| {
        count(&format!("{name}_ms")).and_then(|ms| prost_types::Duration::try_from(Duration::from_millis(ms)).ok())
    };
    let settings = proto::QueueSettings {
        max_waiting: count("max_waiting"),
        max_attempts: small("max_attempts"),
        concurrency: small("concurrency"),
        completed_max: count("completed_max"),
        dead_max: count("dead_max"),
        key_concurrency: small("key_concurrency"),
        timeout: duration("timeout"),
        completed_retention: duration("completed_retention"),
        dead_retention: duration("dead_retention"),
        ..Default::default()
    };
    let clear: Vec<String> = req
        .get("clear")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    let clear: Vec<&str> = clear.iter().map(String::as_str).collect();
    let answer = client.set_queue_settings(&text(req, "queue"), settings, &clear).await.map_err(failed)?;
    Ok(settings_json(answer.settings, answer.effective))
}

fn settings_json(held: Option<proto::QueueSettings>, effective: Option<proto::QueueSettings>) -> Value {
    json!({ "settings": one(&held.unwrap_or_default()), "effective": one(&effective.unwrap_or_default()) })
}

/// Every setting of the ops by its name, null where unset.
fn one(s: &proto::QueueSettings) -> Value {
    let counts = [
        s.max_waiting,
        s.max_attempts.map(u64::from),
        s.concurrency.map(u64::from),
        s.completed_max,
        s.dead_max,
        s.key_concurrency.map(u64::from),
    ];
    let durations = [&s.timeout, &s.completed_retention, &s.dead_retention];
    let mut out = serde_json::Map::new();
    for (name, value) in COUNTS.iter().zip(counts) {
        out.insert((*name).to_owned(), json!(value));
    }
    for (name, value) in DURATIONS.iter().zip(durations) {
        out.insert(format!("{name}_ms"), json!(value.as_ref().map(millis)));
    }
    Value::Object(out)
}
