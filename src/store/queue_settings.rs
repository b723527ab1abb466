//! A queue's settings set at run time: one small hash under the queue's hash tag
//! (`{prefix}:{queue}:settings`), field -> value as text. A field that is absent falls back to the
//! server's flag. The functions that enforce a setting read it there themselves, in the same call
//! (`lua/lib.lua`: `load_settings`, `max_waiting`), so a change holds for every instance at
//! once; what the server applies before a call (a job's default attempts, backoff and timeout)
//! it reads here, through the cache of `queue/overrides.rs`.
//!
//! Changes go through one function, `lua/settings_set.lua`; reads are one `HGETALL`.

use std::{collections::HashMap, sync::Arc};

use redis::{AsyncCommands, Cmd};

use super::{
    BackoffSpec, Result, StoreError,
    args::QueueFunction,
    backend::Backend,
    scripts::{Function, Scripts},
};

/// One setting a queue may hold, by the name of its field in the hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SettingField {
    /// The most jobs the queue may have active at once.
    Concurrency,
    /// The most jobs the queue may hold waiting.
    MaxWaiting,
    /// The attempts of a job added without its own.
    MaxAttempts,
    /// The attempt timeout of a job added without its own.
    Timeout,
    /// The backoff of a job added without its own.
    Backoff,
    /// How long completed and cancelled jobs are kept.
    CompletedRetention,
    /// How many completed and cancelled jobs are kept.
    CompletedMax,
    /// How long dead jobs are kept.
    DeadRetention,
    /// How many dead jobs are kept.
    DeadMax,
    /// The queue's rate limit.
    Rate,
    /// The rate limit of each rate key.
    KeyRate,
    /// The most jobs of one concurrency key active at once.
    KeyConcurrency,
    /// How many shards the queue is spread over (`queue/shards.rs`); set once.
    Shards,
}

impl SettingField {
    /// Every field, in the order they are listed.
    pub const ALL: [SettingField; 13] = [
        SettingField::Concurrency,
        SettingField::MaxWaiting,
        SettingField::MaxAttempts,
        SettingField::Timeout,
        SettingField::Backoff,
        SettingField::CompletedRetention,
        SettingField::CompletedMax,
        SettingField::DeadRetention,
        SettingField::DeadMax,
        SettingField::Rate,
        SettingField::KeyRate,
        SettingField::KeyConcurrency,
        SettingField::Shards,
    ];

    /// The field's name in the hash (the names `lua/lib.lua` reads, `SET_*`).
    pub fn key(self) -> &'static str {
        match self {
            SettingField::Concurrency => "concurrency",
            SettingField::MaxWaiting => "max_waiting",
            SettingField::MaxAttempts => "max_attempts",
            SettingField::Timeout => "timeout_ms",
            SettingField::Backoff => "backoff",
            SettingField::CompletedRetention => "completed_ms",
            SettingField::CompletedMax => "completed_max",
            SettingField::DeadRetention => "dead_ms",
            SettingField::DeadMax => "dead_max",
            SettingField::Rate => "rate",
            SettingField::KeyRate => "key_rate",
            SettingField::KeyConcurrency => "key_concurrency",
            SettingField::Shards => "shards",
        }
    }
}

/// The settings one queue holds; None: not set (the flag applies).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoredSettings {
    /// The most jobs the queue may have active at once, on every instance together.
    pub concurrency: Option<u64>,
    /// The most jobs the queue may hold waiting (replaces `--max-waiting`).
    pub max_waiting: Option<u64>,
    /// The attempts of a job added without `max_attempts`.
    pub max_attempts: Option<u32>,
    /// The attempt timeout of a job added without one, ms.
    pub timeout_ms: Option<u64>,
    /// The backoff of a job added without one.
    pub backoff: Option<BackoffSpec>,
    /// How long completed (and cancelled) jobs are kept, ms.
    pub completed_ms: Option<u64>,
    /// How many completed (and cancelled) jobs are kept.
    pub completed_max: Option<u64>,
    /// How long dead jobs are kept, ms.
    pub dead_ms: Option<u64>,
    /// How many dead jobs are kept.
    pub dead_max: Option<u64>,
    /// The queue's rate limit, all keys together.
    pub rate: Option<RateSpec>,
    /// The rate limit of each rate key.
    pub key_rate: Option<RateSpec>,
    /// The most jobs of one concurrency key active at once.
    pub key_concurrency: Option<u64>,
    /// How many shards the queue is spread over; only shard 0's hash holds it.
    pub shards: Option<u64>,
}

/// A rate limit as stored ("count period_ms burst", read by `lua/limits_lib.lua`): at most
/// `count` jobs per `period_ms`, `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateSpec {
    /// Jobs per period, from 1.
    pub count: u64,
    /// The period, ms, from 1.
    pub period_ms: u64,
    /// The most jobs at once, from 1.
    pub burst: u64,
}

impl StoredSettings {
    /// Whether `field` is set.
    pub fn is_set(&self, field: SettingField) -> bool {
        self.text(field).is_some()
    }

    /// The value of `field` as the hash holds it, None when not set.
    fn text(&self, field: SettingField) -> Option<String> {
        match field {
            SettingField::Concurrency => self.concurrency.map(|n| n.to_string()),
            SettingField::MaxWaiting => self.max_waiting.map(|n| n.to_string()),
            SettingField::MaxAttempts => self.max_attempts.map(|n| n.to_string()),
            SettingField::Timeout => self.timeout_ms.map(|n| n.to_string()),
            SettingField::Backoff => self
                .backoff
                .as_ref()
                .map(|b| format!("{} {} {} {} {}", u8::from(b.fixed), b.base_ms, b.factor, b.max_ms, b.jitter)),
            SettingField::CompletedRetention => self.completed_ms.map(|n| n.to_string()),
            SettingField::CompletedMax => self.completed_max.map(|n| n.to_string()),
            SettingField::DeadRetention => self.dead_ms.map(|n| n.to_string()),
            SettingField::DeadMax => self.dead_max.map(|n| n.to_string()),
            SettingField::Rate => self.rate.map(|r| format!("{} {} {}", r.count, r.period_ms, r.burst)),
            SettingField::KeyRate => self.key_rate.map(|r| format!("{} {} {}", r.count, r.period_ms, r.burst)),
            SettingField::KeyConcurrency => self.key_concurrency.map(|n| n.to_string()),
            SettingField::Shards => self.shards.map(|n| n.to_string()),
        }
    }

    /// The settings a hash holds; a value that does not read is corrupt data. Fields of no
    /// setting this build knows are left alone (a newer build may have written them).
    pub(super) fn from_hash(hash: &HashMap<String, String>) -> Result<Self> {
        let number = |field: SettingField| -> Result<Option<u64>> {
            hash.get(field.key()).map(|v| v.parse().map_err(|_| corrupt(field, v))).transpose()
        };
        let max_attempts = number(SettingField::MaxAttempts)?
            .map(|n| u32::try_from(n).map_err(|_| corrupt(SettingField::MaxAttempts, &n.to_string())))
            .transpose()?;
        let backoff = hash.get(SettingField::Backoff.key()).map(|v| parse_backoff(v)).transpose()?;
        let rate = |field: SettingField| hash.get(field.key()).map(|v| parse_rate(field, v)).transpose();
        Ok(Self {
            concurrency: number(SettingField::Concurrency)?,
            max_waiting: number(SettingField::MaxWaiting)?,
            max_attempts,
            timeout_ms: number(SettingField::Timeout)?,
            backoff,
            completed_ms: number(SettingField::CompletedRetention)?,
            completed_max: number(SettingField::CompletedMax)?,
            dead_ms: number(SettingField::DeadRetention)?,
            dead_max: number(SettingField::DeadMax)?,
            rate: rate(SettingField::Rate)?,
            key_rate: rate(SettingField::KeyRate)?,
            key_concurrency: number(SettingField::KeyConcurrency)?,
            shards: number(SettingField::Shards)?,
        })
    }
}

fn corrupt(field: SettingField, value: &str) -> StoreError {
    StoreError::Corrupt(format!("queue setting {}: {value:?}", field.key()))
}

/// "fixed base_ms factor max_ms jitter", as `StoredSettings::text` writes it.
fn parse_backoff(text: &str) -> Result<BackoffSpec> {
    let bad = || corrupt(SettingField::Backoff, text);
    let parts: Vec<&str> = text.split(' ').collect();
    let [fixed, base, factor, max, jitter] = parts.as_slice() else {
        return Err(bad());
    };
    Ok(BackoffSpec {
        fixed: match *fixed {
            "1" => true,
            "0" => false,
            _ => return Err(bad()),
        },
        base_ms: base.parse().map_err(|_| bad())?,
        factor: factor.parse().map_err(|_| bad())?,
        max_ms: max.parse().map_err(|_| bad())?,
        jitter: jitter.parse().map_err(|_| bad())?,
    })
}

/// "count period_ms burst", as `StoredSettings::text` writes it; each part from 1.
fn parse_rate(field: SettingField, text: &str) -> Result<RateSpec> {
    let bad = || corrupt(field, text);
    let parts: Vec<u64> = text.split(' ').map(|p| p.parse().map_err(|_| bad())).collect::<Result<_>>()?;
    match parts.as_slice() {
        &[count, period_ms, burst] if count > 0 && period_ms > 0 && burst > 0 => {
            Ok(RateSpec { count, period_ms, burst })
        }
        _ => Err(bad()),
    }
}

/// lua/settings_set.lua: ARGV[8..] pairs {field, value or '' to remove it}.
struct SettingsSetArgs {
    pairs: Vec<(&'static str, String)>,
}

impl QueueFunction for SettingsSetArgs {
    /// The settings now stored, field -> value.
    type Reply = HashMap<String, String>;

    fn function(scripts: &Scripts) -> &Function {
        &scripts.settings_set
    }

    fn write_args(&self, cmd: &mut Cmd) {
        for (field, value) in &self.pairs {
            cmd.arg(*field).arg(value);
        }
    }
}

/// Reading and changing the settings of queues.
pub struct QueueSettings {
    backend: Arc<Backend>,
}

impl QueueSettings {
    pub(super) fn new(backend: Arc<Backend>) -> Self {
        Self { backend }
    }

    /// The settings `queue` holds (all None for a queue that never had any).
    pub async fn get(&self, queue: &str) -> Result<StoredSettings> {
        let keys = self.backend.queue_keys(queue);
        let hash: HashMap<String, String> = self.backend.with_conn(async |c| c.hgetall(keys.settings()).await).await?;
        StoredSettings::from_hash(&hash)
    }

    /// Sets the fields `set` holds and removes those of `clear`, in one step; returns the
    /// settings then stored. A field both set and cleared is set.
    pub async fn change(&self, queue: &str, set: &StoredSettings, clear: &[SettingField]) -> Result<StoredSettings> {
        let pairs = SettingField::ALL
            .into_iter()
            .filter_map(|field| match set.text(field) {
                Some(value) => Some((field.key(), value)),
                None => clear.contains(&field).then(|| (field.key(), String::new())),
            })
            .collect();
        let hash = self.backend.call(queue, &SettingsSetArgs { pairs }).await?;
        StoredSettings::from_hash(&hash)
    }

    /// Makes the settings of `shard` (a shard of a sharded queue) those of its queue,
    /// `settings`, but for the shard count, which only the queue's own hash holds: the
    /// functions running on the shard enforce them there.
    pub async fn mirror(&self, shard: &str, settings: &StoredSettings) -> Result<()> {
        let pairs = SettingField::ALL
            .into_iter()
            .filter(|field| *field != SettingField::Shards)
            .map(|field| (field.key(), settings.text(field).unwrap_or_default()))
            .collect();
        self.backend.call(shard, &SettingsSetArgs { pairs }).await?;
        Ok(())
    }
}
