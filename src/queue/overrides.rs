//! Queue settings set at run time (SetQueueSettings, `jobwire queue set`): validated here, stored
//! in Redis with the queue (`store/queue_settings.rs`), shown with the flags they override.
//!
//! Two ways a setting takes effect, by where it is enforced:
//! - inside Redis (concurrency caps, rate limits, max waiting, retention): the functions read the queue's settings themselves
//!   in the call they enforce them in, so a change holds for every instance from the next call
//!   on, with no cache to go stale;
//! - before the call (a new job's default attempts, timeout and backoff, packed into its record
//!   here): read through a cache of at most [`FRESH`] per queue, so every instance applies a
//!   change within a second of it, at the cost of one `HGETALL` per queue and half second of
//!   adds.
//!
//! Owns: that cache, and the shards room (`shards.rs`): a queue's shard count is one of its
//! settings, so where its adds go (`prepare`) and what a stream on it serves (`shards_of`)
//! are read through the same cache. Calls no room.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{
    error::{Error, Result},
    job::{
        BackoffRequest, DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT, MAX_ATTEMPTS, MAX_TIMEOUT, MIN_TIMEOUT, NewJob,
        duration_ms, validate_queue,
    },
    shards::{MAX_SHARDS, Shards},
};
use crate::store::{RateSpec, Retention, SettingField, Store, StoredSettings};

/// How old a queue's cached settings may be when a job is added with them.
pub(super) const FRESH: Duration = Duration::from_millis(500);
/// The largest count a setting takes (jobs waiting, jobs retained).
const MAX_COUNT: u64 = 1_000_000_000;
/// The longest retention a setting takes.
const MAX_RETENTION: Duration = Duration::from_secs(365 * 24 * 3600);
/// The most jobs a rate lets through per period, or at once.
const MAX_RATE_COUNT: u32 = 1_000_000;
/// The longest period of a rate.
const MAX_RATE_PERIOD: Duration = Duration::from_secs(24 * 3600);

/// A rate limit: at most `count` jobs per `period`, at most `burst` at once (GCRA, enforced in
/// `lua/limits_lib.lua`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Jobs per period: 1 to 1,000,000.
    pub count: u32,
    /// The period: 1 ms to 24 h.
    pub period: Duration,
    /// The most jobs at once: 1 to 1,000,000; 0 when asked for means the jobs of a tenth of the
    /// period, at least 1 (what is stored is always from 1).
    pub burst: u32,
}

impl RateLimit {
    /// The burst in effect: `burst`, or a tenth of `count` (at least 1) when 0.
    fn burst_or_default(&self) -> u32 {
        if self.burst == 0 { (self.count / 10).max(1) } else { self.burst }
    }

    fn validate(&self, field: &str) -> Result<()> {
        if !(1..=MAX_RATE_COUNT).contains(&self.count) {
            return Err(Error::invalid(format!("{field}.count"), "must be from 1 to 1000000"));
        }
        if self.period.is_zero()
            || self.period > MAX_RATE_PERIOD
            || !self.period.subsec_nanos().is_multiple_of(1_000_000)
        {
            return Err(Error::invalid(format!("{field}.period"), "must be whole ms from 1 ms to 24 h"));
        }
        if self.burst > MAX_RATE_COUNT {
            return Err(Error::invalid(format!("{field}.burst"), "must be from 0 to 1000000"));
        }
        Ok(())
    }

    fn to_spec(self) -> RateSpec {
        RateSpec {
            count: u64::from(self.count),
            period_ms: duration_ms(self.period),
            burst: u64::from(self.burst_or_default()),
        }
    }

    fn from_spec(spec: RateSpec) -> Self {
        Self {
            count: u32::try_from(spec.count).unwrap_or(u32::MAX),
            period: Duration::from_millis(spec.period_ms),
            burst: u32::try_from(spec.burst).unwrap_or(u32::MAX),
        }
    }
}

/// A queue's settings; None: not set (in what is stored) or no limit (in what is in effect).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueSettings {
    /// The most jobs the queue may have active at once, on every instance together (leased or
    /// prefetched): a lease round or an ack's refill leases no more than the room left.
    pub concurrency: Option<u32>,
    /// The most jobs the queue may hold waiting; an add past it is refused.
    pub max_waiting: Option<u64>,
    /// The attempts of a job added without its own.
    pub max_attempts: Option<u32>,
    /// The attempt timeout of a job added without its own.
    pub timeout: Option<Duration>,
    /// The backoff of a job added without its own.
    pub backoff: Option<BackoffRequest>,
    /// How long completed and cancelled jobs are kept.
    pub completed_retention: Option<Duration>,
    /// How many completed and cancelled jobs are kept.
    pub completed_max: Option<u64>,
    /// How long dead jobs are kept.
    pub dead_retention: Option<Duration>,
    /// How many dead jobs are kept.
    pub dead_max: Option<u64>,
    /// How fast the queue's jobs may start, all keys together.
    pub rate: Option<RateLimit>,
    /// How fast the jobs of each rate key may start.
    pub key_rate: Option<RateLimit>,
    /// The most jobs of one concurrency key active at once, on every instance together.
    pub key_concurrency: Option<u32>,
    /// How many shards the queue is spread over (`shards.rs`): 1 to 16, set once.
    pub shards: Option<u32>,
}

/// A queue's settings, and those in effect with the flags for the ones not set.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueSettingsView {
    /// What the queue holds.
    pub settings: QueueSettings,
    /// What applies: `settings`, and the flags for the rest.
    pub effective: QueueSettings,
}

/// The names a caller clears settings by: the fields of the proto's QueueSettings.
const NAMES: [(&str, SettingField); 13] = [
    ("concurrency", SettingField::Concurrency),
    ("max_waiting", SettingField::MaxWaiting),
    ("max_attempts", SettingField::MaxAttempts),
    ("timeout", SettingField::Timeout),
    ("backoff", SettingField::Backoff),
    ("completed_retention", SettingField::CompletedRetention),
    ("completed_max", SettingField::CompletedMax),
    ("dead_retention", SettingField::DeadRetention),
    ("dead_max", SettingField::DeadMax),
    ("rate", SettingField::Rate),
    ("key_rate", SettingField::KeyRate),
    ("key_concurrency", SettingField::KeyConcurrency),
    ("shards", SettingField::Shards),
];

/// The room of queue settings.
pub(super) struct Overrides {
    store: Arc<Store>,
    /// `--max-waiting`.
    max_waiting_flag: Option<u64>,
    /// The retention flags.
    retention: Retention,
    /// Per queue: when its settings were read, and what they were. The idle sweep drops the
    /// entries of idle queues and stale ones (`idle.rs`).
    cache: Mutex<HashMap<String, (Instant, Arc<StoredSettings>)>>,
    /// The names of sharded queues' shards, and where adds go.
    shards: Shards,
}

impl Overrides {
    pub(super) fn new(store: Arc<Store>, max_waiting_flag: Option<u64>) -> Self {
        let retention = store.retention();
        Self { store, max_waiting_flag, retention, cache: Mutex::default(), shards: Shards::default() }
    }

    /// A queue's settings and those in effect.
    pub(super) async fn get(&self, queue: &str) -> Result<QueueSettingsView> {
        validate_queue(queue, "queue")?;
        let stored = self.store.queue_settings().get(queue).await?;
        Ok(self.view(queue, stored))
    }

    /// Sets the settings of `set` and removes those named in `clear` (by their proto field
    /// names), in one step; answers as `get`.
    pub(super) async fn change(&self, queue: &str, set: QueueSettings, clear: &[String]) -> Result<QueueSettingsView> {
        validate_queue(queue, "queue")?;
        validate(&set)?;
        let stored_set = to_stored(set);
        let mut fields = Vec::with_capacity(clear.len());
        for name in clear {
            let Some((_, field)) = NAMES.iter().find(|(n, _)| n == name) else {
                return Err(Error::invalid("clear", format!("{name:?} is not a queue setting")));
            };
            if stored_set.is_set(*field) {
                return Err(Error::invalid("clear", format!("{name} is both set and cleared")));
            }
            fields.push(*field);
        }
        let before = self.store.queue_settings().get(queue).await?;
        check_shards(&before, &stored_set, &fields)?;
        let stored = self.store.queue_settings().change(queue, &stored_set, &fields).await?;
        let count = shard_count(&stored);
        if count > 1 {
            // Every shard enforces the queue's settings in its own hash.
            for shard in self.shards.names(queue, count).iter().skip(1) {
                self.store.queue_settings().mirror(shard, &stored).await?;
            }
        }
        Ok(self.view(queue, stored))
    }

    /// The physical queues of `queue`, shard 0 (`queue` itself) first, as its settings said at
    /// most [`FRESH`] ago: a queue becomes sharded within that on every instance.
    pub(super) async fn shards_of(&self, queue: &str) -> Result<Arc<[String]>> {
        Ok(self.shards.names(queue, shard_count(&*self.cached(queue).await?)))
    }

    /// Makes `job` ready for its add, from one read of the queue's settings (at most
    /// [`FRESH`] old): gives it the queue's default attempts, timeout and backoff where it has
    /// none of its own, and returns the physical queue it goes to: its queue, or the shard its
    /// key picks when the queue is sharded (`shards.rs`).
    pub(super) async fn prepare(&self, job: &mut NewJob) -> Result<String> {
        let settings = self.cached(&job.queue).await?;
        if job.max_attempts.is_none() {
            job.max_attempts = settings.max_attempts;
        }
        if job.timeout.is_none() {
            job.timeout = settings.timeout_ms.map(Duration::from_millis);
        }
        if job.backoff.is_none() {
            job.backoff = settings.backoff.as_ref().map(BackoffRequest::from_spec);
        }
        match shard_count(&settings) {
            0 | 1 => Ok(job.queue.clone()),
            count => {
                let names = self.shards.names(&job.queue, count);
                let session = job.session.as_ref().map(|s| s.queue.as_str());
                let keys = [job.concurrency_key.as_deref(), job.rate_key.as_deref(), job.idempotency_key.as_deref()];
                let index = self.shards.route(&names, session, &keys);
                Ok(names.get(index).cloned().unwrap_or_else(|| job.queue.clone()))
            }
        }
    }

    /// Drops the cached settings of the queues `keep` says no, and every entry past [`FRESH`]
    /// (the idle sweep); returns how many stay.
    pub(super) fn forget_unless(&self, keep: impl Fn(&str) -> bool) -> usize {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|queue, (read_at, _)| read_at.elapsed() < FRESH && keep(queue));
        cache.len()
    }

    /// The queue's settings as read at most [`FRESH`] ago.
    async fn cached(&self, queue: &str) -> Result<Arc<StoredSettings>> {
        let lock = || self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((read_at, settings)) = lock().get(queue)
            && read_at.elapsed() < FRESH
        {
            return Ok(settings.clone());
        }
        let read_at = Instant::now();
        let settings = Arc::new(self.store.queue_settings().get(queue).await?);
        lock().insert(queue.to_owned(), (read_at, settings.clone()));
        Ok(settings)
    }

    /// The view of what `queue` holds; this instance's cache takes it at once.
    fn view(&self, queue: &str, stored: StoredSettings) -> QueueSettingsView {
        let settings = from_stored(&stored);
        let flags = &self.retention;
        let effective = QueueSettings {
            concurrency: settings.concurrency,
            max_waiting: settings.max_waiting.or(self.max_waiting_flag),
            max_attempts: Some(settings.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS)),
            timeout: Some(settings.timeout.unwrap_or(DEFAULT_TIMEOUT)),
            backoff: Some(
                settings
                    .backoff
                    .clone()
                    .unwrap_or_else(|| BackoffRequest::from_spec(&BackoffRequest::default().into_spec())),
            ),
            completed_retention: Some(settings.completed_retention.unwrap_or(flags.completed_for)),
            completed_max: Some(settings.completed_max.unwrap_or(flags.completed_max)),
            dead_retention: Some(settings.dead_retention.unwrap_or(flags.dead_for)),
            dead_max: Some(settings.dead_max.unwrap_or(flags.dead_max)),
            rate: settings.rate,
            key_rate: settings.key_rate,
            key_concurrency: settings.key_concurrency,
            shards: Some(settings.shards.unwrap_or(1)),
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(queue.to_owned(), (Instant::now(), Arc::new(stored)));
        QueueSettingsView { settings, effective }
    }
}

/// Checks every setting given; messages name the field as `settings.<name>`.
fn validate(s: &QueueSettings) -> Result<()> {
    let count = |value: Option<u64>, name: &str, least: u64| match value {
        Some(n) if !(least..=MAX_COUNT).contains(&n) => {
            Err(Error::invalid(format!("settings.{name}"), format!("must be from {least} to {MAX_COUNT}")))
        }
        _ => Ok(()),
    };
    count(s.concurrency.map(u64::from), "concurrency", 1)?;
    count(s.key_concurrency.map(u64::from), "key_concurrency", 1)?;
    if let Some(r) = &s.rate {
        r.validate("settings.rate")?;
    }
    if let Some(r) = &s.key_rate {
        r.validate("settings.key_rate")?;
    }
    count(s.max_waiting, "max_waiting", 1)?;
    count(s.completed_max, "completed_max", 0)?;
    count(s.dead_max, "dead_max", 0)?;
    if s.max_attempts.is_some_and(|n| n == 0 || n > MAX_ATTEMPTS) {
        return Err(Error::invalid("settings.max_attempts", "must be from 1 to 1000"));
    }
    if s.timeout.is_some_and(|t| !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&t)) {
        return Err(Error::invalid("settings.timeout", "must be from 10 ms to 24 h"));
    }
    if let Some(b) = &s.backoff {
        b.validate("settings.backoff.")?;
    }
    if s.completed_retention.is_some_and(|d| d > MAX_RETENTION) {
        return Err(Error::invalid("settings.completed_retention", "at most 365 days"));
    }
    if s.dead_retention.is_some_and(|d| d.is_zero() || d > MAX_RETENTION) {
        return Err(Error::invalid("settings.dead_retention", "must be from 1 ms to 365 days"));
    }
    if s.shards.is_some_and(|n| n == 0 || n > MAX_SHARDS) {
        return Err(Error::invalid("settings.shards", format!("must be from 1 to {MAX_SHARDS}")));
    }
    Ok(())
}

/// How many shards `settings` spread the queue over: 1 when it is not sharded.
fn shard_count(settings: &StoredSettings) -> u32 {
    settings.shards.and_then(|n| u32::try_from(n).ok()).unwrap_or(1)
}

/// What a change may not do to a sharded queue: change or clear its shard count once set (the
/// key -> shard map depends on it), or give it a queue-wide `concurrency` or `rate` (each shard
/// would enforce it on its own, so the queue would run N times over it).
fn check_shards(before: &StoredSettings, set: &StoredSettings, clear: &[SettingField]) -> Result<()> {
    if clear.contains(&SettingField::Shards) {
        return Err(Error::invalid("clear", "shards cannot be cleared"));
    }
    if let (Some(was), Some(asked)) = (before.shards, set.shards)
        && was != asked
    {
        return Err(Error::Precondition(format!(
            "settings.shards: the queue has {was} shards, set once; it cannot change to {asked}"
        )));
    }
    let sharded = set.shards.or(before.shards).is_some_and(|n| n > 1);
    let kept = |field: SettingField| set.is_set(field) || (before.is_set(field) && !clear.contains(&field));
    for (field, name) in [(SettingField::Concurrency, "concurrency"), (SettingField::Rate, "rate")] {
        if sharded && kept(field) {
            return Err(Error::invalid(
                format!("settings.{name}"),
                "a sharded queue takes no queue-wide limit (per-key limits are exact: key_concurrency, key_rate)",
            ));
        }
    }
    Ok(())
}

fn to_stored(s: QueueSettings) -> StoredSettings {
    StoredSettings {
        concurrency: s.concurrency.map(u64::from),
        max_waiting: s.max_waiting,
        max_attempts: s.max_attempts,
        timeout_ms: s.timeout.map(duration_ms),
        backoff: s.backoff.map(BackoffRequest::into_spec),
        completed_ms: s.completed_retention.map(duration_ms),
        completed_max: s.completed_max,
        dead_ms: s.dead_retention.map(duration_ms),
        dead_max: s.dead_max,
        rate: s.rate.map(RateLimit::to_spec),
        key_rate: s.key_rate.map(RateLimit::to_spec),
        key_concurrency: s.key_concurrency.map(u64::from),
        shards: s.shards.map(u64::from),
    }
}

fn from_stored(s: &StoredSettings) -> QueueSettings {
    QueueSettings {
        concurrency: s.concurrency.and_then(|n| u32::try_from(n).ok()),
        max_waiting: s.max_waiting,
        max_attempts: s.max_attempts,
        timeout: s.timeout_ms.map(Duration::from_millis),
        backoff: s.backoff.as_ref().map(BackoffRequest::from_spec),
        completed_retention: s.completed_ms.map(Duration::from_millis),
        completed_max: s.completed_max,
        dead_retention: s.dead_ms.map(Duration::from_millis),
        dead_max: s.dead_max,
        rate: s.rate.map(RateLimit::from_spec),
        key_rate: s.key_rate.map(RateLimit::from_spec),
        key_concurrency: s.key_concurrency.and_then(|n| u32::try_from(n).ok()),
        shards: s.shards.and_then(|n| u32::try_from(n).ok()),
    }
}
