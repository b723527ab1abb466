//! Queue settings (SetQueueSettings, GetQueueSettings) between the wire and the domain, and the
//! backoff they share with AddJob.

use super::{duration, to_duration};
use crate::{
    proto,
    queue::{BackoffRequest, Error, QueueSettings, QueueSettingsView, RateLimit},
};

/// A rate limit as asked for; errors name `{field}.…`.
fn rate(r: proto::RateLimit, field: &str) -> Result<RateLimit, Error> {
    Ok(RateLimit {
        count: r.count,
        period: duration(r.period, &format!("{field}.period"))?.unwrap_or(std::time::Duration::from_secs(1)),
        burst: r.burst,
    })
}

fn to_rate(r: &RateLimit) -> proto::RateLimit {
    proto::RateLimit { count: r.count, period: Some(to_duration(r.period)), burst: r.burst }
}

/// A backoff as asked for; `prefix` goes before the part names in messages (`backoff.`).
pub(in crate::api) fn backoff(b: proto::Backoff, prefix: &str) -> Result<BackoffRequest, Error> {
    let field = |f: &str| format!("{prefix}{f}");
    Ok(BackoffRequest {
        fixed: match proto::BackoffKind::try_from(b.kind) {
            Ok(proto::BackoffKind::Fixed) => true,
            Ok(_) => false,
            Err(_) => return Err(Error::invalid(field("kind"), "unknown backoff kind")),
        },
        base: duration(b.base, &field("base"))?,
        factor: b.factor,
        max: duration(b.max, &field("max"))?,
        jitter: b.jitter,
    })
}

fn to_backoff(b: &BackoffRequest) -> proto::Backoff {
    proto::Backoff {
        kind: if b.fixed { proto::BackoffKind::Fixed } else { proto::BackoffKind::Exponential }.into(),
        base: b.base.map(to_duration),
        factor: b.factor,
        max: b.max.map(to_duration),
        jitter: b.jitter,
    }
}

/// The settings of a request; none given reads as none set.
pub(in crate::api) fn queue_settings(s: Option<proto::QueueSettings>) -> Result<QueueSettings, Error> {
    let Some(s) = s else { return Ok(QueueSettings::default()) };
    Ok(QueueSettings {
        concurrency: s.concurrency,
        max_waiting: s.max_waiting,
        max_attempts: s.max_attempts,
        timeout: duration(s.timeout, "settings.timeout")?,
        backoff: s.backoff.map(|b| backoff(b, "settings.backoff.")).transpose()?,
        completed_retention: duration(s.completed_retention, "settings.completed_retention")?,
        completed_max: s.completed_max,
        dead_retention: duration(s.dead_retention, "settings.dead_retention")?,
        dead_max: s.dead_max,
        rate: s.rate.map(|r| rate(r, "settings.rate")).transpose()?,
        key_rate: s.key_rate.map(|r| rate(r, "settings.key_rate")).transpose()?,
        key_concurrency: s.key_concurrency,
        shards: s.shards,
    })
}

fn to_settings(s: &QueueSettings) -> proto::QueueSettings {
    proto::QueueSettings {
        concurrency: s.concurrency,
        max_waiting: s.max_waiting,
        max_attempts: s.max_attempts,
        timeout: s.timeout.map(to_duration),
        backoff: s.backoff.as_ref().map(to_backoff),
        completed_retention: s.completed_retention.map(to_duration),
        completed_max: s.completed_max,
        dead_retention: s.dead_retention.map(to_duration),
        dead_max: s.dead_max,
        rate: s.rate.as_ref().map(to_rate),
        key_rate: s.key_rate.as_ref().map(to_rate),
        key_concurrency: s.key_concurrency,
        shards: s.shards,
    }
}

/// (settings, effective) of an answer.
pub(in crate::api) fn view(v: &QueueSettingsView) -> (Option<proto::QueueSettings>, Option<proto::QueueSettings>) {
    (Some(to_settings(&v.settings)), Some(to_settings(&v.effective)))
}
