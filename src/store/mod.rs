//! Redis: the connection pool, the key layout and one typed function per Lua script.
//!
//! Every state change is one script call, atomic on the queue's Cluster slot. This layer knows
//! keys, records and scripts; it knows nothing of gRPC or of the rules that decide what a caller
//! may do (that is `queue`).
//!
//! The pool holds multiplexed connections (many requests in flight on each). Connections are not
//! PINGed on checkout — that would add a round trip to every call — instead a connection that
//! returns an I/O error or times out is marked broken and bb8 replaces it, so the pool heals by
//! itself once Redis is back.

mod admin;
mod events;
mod invariants;
mod keys;
mod record;
mod scripts;
mod sessions;
mod token;

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use redis::{AsyncCommands, RedisError, aio::MultiplexedConnection};

pub use admin::{CancelOutcome, Listing};
pub use events::{StoredEvent, event_order, is_event_cursor};
pub use keys::{KeySpace, MAX_PRIORITY, MIN_PRIORITY, QueueKeys};
pub use record::{BackoffSpec, JobRecord, RecordState};
use scripts::{Call, Function, Scripts};
pub use sessions::{SessionRecord, SetOutcome};
pub use token::LeaseToken;

/// The layout version this build reads and writes.
const SCHEMA_VERSION: i64 = 2;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Redis cannot be reached, timed out, or is loading: the call may be retried.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// Redis answered with an error we did not expect (a script bug, a wrong key type).
    #[error("redis error: {0}")]
    Redis(String),
    /// A stored value does not decode.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The data was written by a newer jobwire with a different layout.
    #[error("redis holds schema version {found}; this build understands {SCHEMA_VERSION}")]
    Schema { found: i64 },
}

/// Transport-level failures: the call may succeed later, and the connection should be replaced.
fn is_transport(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

impl From<RedisError> for StoreError {
    fn from(e: RedisError) -> Self {
        let retryable = matches!(e.kind(), redis::ErrorKind::BusyLoadingError | redis::ErrorKind::TryAgain);
        if is_transport(&e) || retryable {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Redis(e.to_string())
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How long finished jobs stay, per queue.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub completed_for: Duration,
    pub completed_max: u64,
    pub dead_for: Duration,
    pub dead_max: u64,
    /// Events kept per queue (approximately: Redis trims whole stream nodes).
    pub events_max: u64,
}

pub struct StoreConfig {
    pub url: String,
    pub prefix: String,
    pub pool_size: u32,
    /// Connect and response timeout of each Redis call.
    pub timeout: Duration,
    pub retention: Retention,
}

/// A pooled multiplexed connection that remembers whether it failed.
pub struct Conn {
    inner: MultiplexedConnection,
    broken: bool,
}

struct Manager {
    client: redis::Client,
    config: redis::AsyncConnectionConfig,
}

impl bb8::ManageConnection for Manager {
    type Connection = Conn;
    type Error = RedisError;

    async fn connect(&self) -> Result<Conn, RedisError> {
        let inner = self.client.get_multiplexed_async_connection_with_config(&self.config).await?;
        Ok(Conn { inner, broken: false })
    }

    async fn is_valid(&self, conn: &mut Conn) -> Result<(), RedisError> {
        redis::cmd("PING").query_async(&mut conn.inner).await
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken
    }
}

/// A job handed out by one lease round.
#[derive(Debug)]
pub struct LeasedJob {
    pub ulid: String,
    pub record: JobRecord,
    pub token: String,
    pub deadline_ms: i64,
    pub attempt: u32,
    /// For a job of a session: the session's state and version at delivery.
    pub session: Option<SessionSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSnapshot {
    pub name: String,
    pub state: String,
    pub version: u64,
}

#[derive(Debug)]
pub struct LeaseRound {
    pub jobs: Vec<LeasedJob>,
    /// Timed-out leases `(ulid, token)` whose holders must be told.
    pub revoked: Vec<(String, String)>,
    /// Until the next delayed job or deadline is due.
    pub next_wake: Option<Duration>,
    pub now_ms: i64,
}

/// The outcome of a call that presents a lease token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseCheck {
    Held,
    UnknownJob,
    Stale,
}

impl LeaseCheck {
    pub fn from_code(code: i64) -> Self {
        match code {
            1 => LeaseCheck::Held,
            0 => LeaseCheck::UnknownJob,
            _ => LeaseCheck::Stale,
        }
    }
}

/// One acknowledgement for `complete`.
pub struct Ack<'a> {
    pub ulid: &'a str,
    pub token: &'a str,
    pub result: &'a [u8],
    /// A new session state, written atomically with the completion, and the session version
    /// it was computed from (checked when given).
    pub session_state: Option<(&'a str, Option<u64>)>,
}

/// What happened to one acknowledgement (see lua/complete.lua).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckOutcome {
    Completed,
    UnknownJob,
    Stale,
    /// The job had been cancelled; the ack was accepted and the job ended cancelled.
    Cancelled,
    /// The expected session version did not match; nothing was written.
    VersionMismatch,
    /// The job's session was deleted; the job ended cancelled.
    SessionGone,
    /// A session state was given for a job outside any session; nothing was written.
    NotInSession,
}

impl AckOutcome {
    fn from_code(code: i64) -> Self {
        match code {
            1 => AckOutcome::Completed,
            2 => AckOutcome::Cancelled,
            0 => AckOutcome::UnknownJob,
            -2 => AckOutcome::VersionMismatch,
            -3 => AckOutcome::SessionGone,
            -4 => AckOutcome::NotInSession,
            _ => AckOutcome::Stale,
        }
    }
}

/// What the add script needs besides the record.
pub struct AddArgs<'a> {
    pub ulid: &'a str,
    pub record: &'a JobRecord,
    pub delay_ms: Option<u64>,
    pub run_at_ms: Option<i64>,
    pub idempotency_window: Duration,
    /// The session (name within the queue) the job belongs to.
    pub session: Option<&'a str>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum AddOutcome {
    Added(String),
    Duplicate(String),
    NoSession,
}

#[derive(Debug, PartialEq, Eq)]
pub struct FailOutcome {
    pub check: LeaseCheck,
    pub state: Option<RecordState>,
    pub run_at_ms: i64,
}

/// Raw counts of one queue.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueueCounts {
    pub waiting: u64,
    pub delayed: u64,
    pub active: u64,
    pub completed: u64,
    pub dead: u64,
    pub dead_evicted: u64,
    pub paused: bool,
    pub oldest_ready_ms: Option<i64>,
    pub now_ms: i64,
    pub cancelled: u64,
    pub sessions: u64,
    /// Jobs still waiting inside their session (not yet released to the queue).
    pub session_pending: u64,
}

/// See [`Store::snapshot`].
#[derive(Debug)]
pub struct JobSnapshot {
    pub record: JobRecord,
    pub lease: Option<Lease>,
    pub last_event: String,
}

/// A lease as stored: who holds the job since when, and which attempt it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub token: String,
    pub started_ms: i64,
    pub attempt: u32,
}

impl Lease {
    /// `token|started_ms|attempt`, optionally followed by `|flags` (see `lua/lib.lua`).
    fn parse(raw: &str) -> Option<Self> {
        let mut parts = raw.split('|');
        let token = parts.next()?.to_owned();
        let started_ms = parts.next()?.parse().ok()?;
        let attempt = parts.next()?.parse().ok()?;
        Some(Lease { token, started_ms, attempt })
    }
}

pub struct Store {
    pool: bb8::Pool<Manager>,
    client: redis::Client,
    keys: KeySpace,
    scripts: Scripts,
    retention: Retention,
    timeout: Duration,
    /// The key names of each queue, formatted once: every script call passes 25 of them.
    /// Grows with the number of queues this instance touches, like the queue registry.
    queue_keys: std::sync::Mutex<HashMap<String, std::sync::Arc<QueueKeys>>>,
}

impl Store {
    /// Builds the pool without waiting for Redis: a server must start (and report NOT_SERVING)
    /// while Redis is still down.
    pub fn new(config: &StoreConfig) -> Result<Self> {
        let client = redis::Client::open(config.url.as_str())?;
        let conn_config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(config.timeout)
            .set_response_timeout(config.timeout);
        let pool = bb8::Pool::builder()
            .max_size(config.pool_size)
            .min_idle(Some(1))
            .test_on_check_out(false)
            .retry_connection(false)
            .connection_timeout(config.timeout)
            .build_unchecked(Manager { client: client.clone(), config: conn_config });
        Ok(Self {
            pool,
            client,
            keys: KeySpace::new(&config.prefix),
            scripts: Scripts::load(),
            retention: config.retention,
            timeout: config.timeout,
            queue_keys: Default::default(),
        })
    }

    pub fn keys(&self) -> &KeySpace {
        &self.keys
    }

    fn queue_keys(&self, queue: &str) -> std::sync::Arc<QueueKeys> {
        let mut cache = self.queue_keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(keys) = cache.get(queue) {
            return keys.clone();
        }
        let keys = std::sync::Arc::new(self.keys.queue(queue));
        cache.insert(queue.to_owned(), keys.clone());
        keys
    }

    /// A dedicated pub/sub connection (one per instance, shared by all its streams).
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub> {
        Ok(self.client.get_async_pubsub().await?)
    }

    /// Runs `f` on a pooled connection, marking the connection broken on transport errors.
    /// With metrics on, the call's round trip (not the wait for a pooled connection) goes to
    /// the Redis latency histogram; with them off, not even the clock is read.
    async fn with_conn<T, F>(&self, f: F) -> Result<T>
    where
        F: AsyncFnOnce(&mut MultiplexedConnection) -> Result<T, RedisError>,
    {
        let mut conn = self.pool.get().await.map_err(|e| match e {
            bb8::RunError::User(e) => StoreError::from(e),
            bb8::RunError::TimedOut => StoreError::Unavailable("no redis connection within the timeout".into()),
        })?;
        let timed = crate::telemetry::redis_calls().map(|h| (h, std::time::Instant::now()));
        let result = f(&mut conn.inner).await;
        if let Some((histogram, started)) = timed {
            histogram.record(started.elapsed());
        }
        if result.as_ref().is_err_and(|e| is_transport(e) || e.is_unrecoverable_error()) {
            conn.broken = true;
        }
        result.map_err(StoreError::from)
    }

    /// Sets the schema version on a fresh Redis, refuses a layout from a newer release, and loads
    /// the function library (Redis 7 or later).
    pub async fn ensure_schema(&self) -> Result<()> {
        let key = self.keys.schema();
        let found: i64 = self
            .with_conn(async |c| {
                let _: () = redis::cmd("SET").arg(&key).arg(SCHEMA_VERSION).arg("NX").query_async(c).await?;
                c.get(&key).await
            })
            .await?;
        if found != SCHEMA_VERSION {
            return Err(StoreError::Schema { found });
        }
        self.with_conn(async |c| self.load_library(c).await).await
    }

    /// Reads one CONFIG value (None when the server refuses CONFIG, as managed services do).
    pub async fn config_get(&self, name: &str) -> Result<Option<String>> {
        let result: Result<HashMap<String, String>> =
            self.with_conn(async |c| redis::cmd("CONFIG").arg("GET").arg(name).query_async(c).await).await;
        match result {
            Ok(map) => Ok(map.get(name).cloned()),
            Err(StoreError::Redis(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Adds `queue` to the registry of known queues. Not atomic with the add on purpose: the
    /// registry is global (not on the queue's slot) and only feeds listings and the reaper.
    pub async fn register_queue(&self, queue: &str) -> Result<()> {
        let key = self.keys.queues();
        self.with_conn(async |c| c.sadd(&key, queue).await).await
    }

    pub async fn queues(&self) -> Result<Vec<String>> {
        let key = self.keys.queues();
        let mut names: Vec<String> = self
            .with_conn(async |c| {
                let mut cursor = 0u64;
                let mut names = Vec::new();
                loop {
                    let (next, batch): (u64, Vec<String>) =
                        redis::cmd("SSCAN").arg(&key).arg(cursor).arg("COUNT").arg(500).query_async(c).await?;
                    names.extend(batch);
                    if next == 0 {
                        return Ok(names);
                    }
                    cursor = next;
                }
            })
            .await?;
        names.sort();
        Ok(names)
    }

    /// Starts a call of a queue function with the queue keys and the common arguments.
    fn invocation<'a>(&self, function: &'a Function, queue: &str, keys: &QueueKeys) -> Call<'a> {
        let mut inv = function.call();
        for key in keys.all() {
            inv.key(key);
        }
        let r = &self.retention;
        inv.arg(self.keys.wake_channel())
            .arg(queue)
            .arg(r.completed_for.as_millis() as u64)
            .arg(r.completed_max)
            .arg(r.dead_for.as_millis() as u64)
            .arg(r.dead_max)
            .arg(r.events_max);
        inv
    }

    /// Calls a library function, loading the library first when Redis does not have it.
    async fn run<T: redis::FromRedisValue>(&self, call: &Call<'_>) -> Result<T> {
        let cmd = call.command();
        self.with_conn(async |c| match cmd.query_async(c).await {
            Err(e) if e.to_string().contains("Function not found") => {
                self.load_library(c).await?;
                cmd.query_async(c).await
            }
            result => result,
        })
        .await
    }

    async fn load_library(&self, c: &mut MultiplexedConnection) -> Result<(), RedisError> {
        redis::cmd("FUNCTION").arg("LOAD").arg("REPLACE").arg(&self.scripts.library).query_async(c).await
    }

    pub async fn add(&self, queue: &str, args: &AddArgs<'_>) -> Result<AddOutcome> {
        let mut outcomes = self.add_many(queue, std::slice::from_ref(args)).await?;
        outcomes.pop().ok_or_else(|| StoreError::Corrupt("the add script answered nothing".into()))
    }

    /// Adds jobs of one queue in one script call, in order; one outcome per job.
    pub async fn add_many(&self, queue: &str, jobs: &[AddArgs<'_>]) -> Result<Vec<AddOutcome>> {
        let keys = self.queue_keys(queue);
        let mut inv = self.invocation(&self.scripts.add, queue, &keys);
        let window = jobs.first().map_or(0, |j| j.idempotency_window.as_millis() as u64);
        inv.arg(window);
        let mut tombstones = 0;
        for job in jobs {
            let tombstone = match &job.record.idempotency_key {
                Some(key) => {
                    inv.key(keys.idempotency(key));
                    tombstones += 1;
                    keys.all().len() + tombstones
                }
                None => 0,
            };
            inv.arg(job.ulid).arg(job.record.encode()).arg(job.record.priority);
            let plain = job.delay_ms.is_none() && job.run_at_ms.is_none() && job.session.is_none() && tombstone == 0;
            if plain {
                inv.arg("");
            } else {
                inv.arg("+")
                    .arg(job.delay_ms.map_or(-1, |d| d as i64))
                    .arg(job.run_at_ms.unwrap_or(-1))
                    .arg(job.session.unwrap_or_default())
                    .arg(tombstone);
            }
        }
        // The jobs not added, as (job number from 1, code, first ULID); the rest were added.
        let refused: Vec<(usize, i64, String)> = self.run(&inv).await?;
        let mut outcomes: Vec<AddOutcome> = jobs.iter().map(|job| AddOutcome::Added(job.ulid.to_owned())).collect();
        for (n, code, first) in refused {
            let Some(outcome) = n.checked_sub(1).and_then(|i| outcomes.get_mut(i)) else {
                return Err(StoreError::Corrupt("the add script named a job it was not given".into()));
            };
            *outcome = if code == 0 { AddOutcome::Duplicate(first) } else { AddOutcome::NoSession };
        }
        Ok(outcomes)
    }

    /// One dispatcher round (see lua/lease.lua): expire, promote, lease one job per token, and
    /// with `trim`, enforce the retention windows.
    pub async fn lease(&self, queue: &str, tokens: &[String], rand: f64, trim: bool) -> Result<LeaseRound> {
        let keys = self.queue_keys(queue);
        let mut inv = self.invocation(&self.scripts.lease, queue, &keys);
        inv.arg(rand).arg(if trim { 1 } else { 0 });
        for token in tokens {
            inv.arg(token);
        }
        type Answer = (Vec<(String, Vec<u8>)>, Vec<String>, i64, i64, Vec<(usize, String, i64)>);
        let (jobs, revoked, next_wake, now_ms, sessions): Answer = self.run(&inv).await?;
        if jobs.len() > tokens.len() {
            return Err(StoreError::Corrupt("the lease script leased more jobs than it had tokens".into()));
        }
        let mut leased = Vec::with_capacity(jobs.len());
        for ((ulid, raw), token) in jobs.into_iter().zip(tokens) {
            let record = JobRecord::decode(&raw, None)?;
            leased.push(LeasedJob {
                ulid,
                token: token.clone(),
                deadline_ms: now_ms + record.timeout_ms as i64,
                attempt: record.attempts + 1,
                session: None,
                record,
            });
        }
        for (n, state, version) in sessions {
            let job = n.checked_sub(1).and_then(|i| leased.get_mut(i));
            let Some(job) = job else {
                return Err(StoreError::Corrupt("the lease script named a session of no leased job".into()));
            };
            let name = job.record.session_name().unwrap_or_default().to_owned();
            job.session = Some(SessionSnapshot { name, state, version: version.max(0) as u64 });
        }
        let revoked = revoked.chunks_exact(2).map(|p| (p[0].clone(), p[1].clone())).collect();
        Ok(LeaseRound {
            jobs: leased,
            revoked,
            next_wake: u64::try_from(next_wake).ok().map(Duration::from_millis),
            now_ms,
        })
    }

    /// Completes a batch of attempts; one outcome per entry, in order. The function takes
    /// distinct jobs: an entry repeating an earlier one's job goes in a later call, which sees
    /// what the earlier one did.
    pub async fn complete(&self, queue: &str, acks: &[Ack<'_>]) -> Result<Vec<AckOutcome>> {
        let mut outcomes = vec![AckOutcome::Stale; acks.len()];
        let mut pending: Vec<usize> = (0..acks.len()).collect();
        while !pending.is_empty() {
            let mut seen = HashSet::new();
            let (batch, later): (Vec<usize>, Vec<usize>) =
                pending.into_iter().partition(|&i| seen.insert(acks[i].ulid));
            let distinct: Vec<&Ack<'_>> = batch.iter().map(|&i| &acks[i]).collect();
            let codes = self.complete_distinct(queue, &distinct).await?;
            if codes.len() != batch.len() {
                return Err(StoreError::Corrupt("the complete script answered for another number of acks".into()));
            }
            for (i, code) in batch.into_iter().zip(codes) {
                outcomes[i] = AckOutcome::from_code(code);
            }
            pending = later;
        }
        Ok(outcomes)
    }

    async fn complete_distinct(&self, queue: &str, acks: &[&Ack<'_>]) -> Result<Vec<i64>> {
        let keys = self.queue_keys(queue);
        let mut inv = self.invocation(&self.scripts.complete, queue, &keys);
        inv.arg(acks.len());
        for ack in acks {
            // The function finds a token at the head of the lease, before a '|': a token holding
            // one can hold nothing, and is sent as the empty token, which holds nothing either.
            let token = if ack.token.contains('|') { "" } else { ack.token };
            inv.arg(ack.ulid).arg(token).arg(ack.result);
        }
        for (n, ack) in acks.iter().enumerate() {
            if let Some((state, expected)) = &ack.session_state {
                inv.arg(n + 1).arg(*state).arg(expected.map_or(-1, |v| v as i64));
            }
        }
        self.run(&inv).await
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn fail(
        &self,
        queue: &str,
        ulid: &str,
        token: &str,
        error: &str,
        retryable: bool,
        retry_after: Option<Duration>,
        rand: f64,
    ) -> Result<FailOutcome> {
        let keys = self.queue_keys(queue);
        let mut inv = self.invocation(&self.scripts.fail, queue, &keys);
        inv.arg(ulid)
            .arg(token)
            .arg(error)
            .arg(if retryable { 1 } else { 0 })
            .arg(retry_after.map_or(-1, |d| d.as_millis() as i64))
            .arg(rand);
        let (code, state, run_at_ms): (i64, i64, i64) = self.run(&inv).await?;
        let state = match state {
            1 => Some(RecordState::Waiting),
            4 => Some(RecordState::Retrying),
            6 => Some(RecordState::Dead),
            7 => Some(RecordState::Cancelled),
            _ => None,
        };
        Ok(FailOutcome { check: LeaseCheck::from_code(code), state, run_at_ms })
    }

    /// Moves a held attempt's deadline to now + `by`; returns the check and the new deadline.
    pub async fn extend(&self, queue: &str, ulid: &str, token: &str, by: Duration) -> Result<(LeaseCheck, i64)> {
        let keys = self.queue_keys(queue);
        let mut inv = self.invocation(&self.scripts.extend, queue, &keys);
        inv.arg(ulid).arg(token).arg(by.as_millis() as u64);
        let (code, deadline): (i64, i64) = self.run(&inv).await?;
        Ok((LeaseCheck::from_code(code), deadline))
    }

    /// Returns held leases `(ulid, token)` to the head of their queue; `lost` counts the
    /// delivery as lost (and buries jobs lost `max_lost` times). Returns how many moved.
    pub async fn requeue(&self, queue: &str, leases: &[(String, String)], lost: bool, max_lost: u32) -> Result<u64> {
        let keys = self.queue_keys(queue);
        let mut inv = self.invocation(&self.scripts.requeue, queue, &keys);
        inv.arg(if lost { 1 } else { 0 }).arg(max_lost);
        for (ulid, token) in leases {
            inv.arg(ulid).arg(token);
        }
        self.run(&inv).await
    }

    /// Returns every lease of `queue` held by one of `dead` instances or taken with one of the
    /// lease tokens in `dead`. Returns how many.
    pub async fn reap(&self, queue: &str, dead: &[String]) -> Result<u64> {
        let keys = self.queue_keys(queue);
        let mut cursor = "0".to_owned();
        let mut total = 0;
        loop {
            let mut inv = self.invocation(&self.scripts.reap, queue, &keys);
            inv.arg(&cursor).arg(200);
            for id in dead {
                inv.arg(id);
            }
            let (next, moved): (String, u64) = self.run(&inv).await?;
            total += moved;
            if next == "0" {
                return Ok(total);
            }
            cursor = next;
        }
    }

    pub async fn stats(&self, queue: &str) -> Result<QueueCounts> {
        let keys = self.queue_keys(queue);
        let inv = self.invocation(&self.scripts.stats, queue, &keys);
        let v: Vec<i64> = self.run(&inv).await?;
        let [
            waiting,
            delayed,
            active,
            completed,
            dead,
            dead_evicted,
            paused,
            oldest,
            now_ms,
            cancelled,
            sessions,
            pending,
        ] = v[..]
        else {
            return Err(StoreError::Corrupt("stats script returned the wrong arity".into()));
        };
        let count = |n: i64| n.max(0) as u64;
        Ok(QueueCounts {
            waiting: count(waiting),
            delayed: count(delayed),
            active: count(active),
            completed: count(completed),
            dead: count(dead),
            dead_evicted: count(dead_evicted),
            paused: paused == 1,
            oldest_ready_ms: (oldest >= 0).then_some(oldest),
            now_ms,
            cancelled: count(cancelled),
            sessions: count(sessions),
            session_pending: count(pending),
        })
    }

    /// One job's record and its lease while active; None when the job is not retained.
    pub async fn info(&self, queue: &str, ulid: &str) -> Result<Option<(JobRecord, Option<Lease>)>> {
        Ok(self.snapshot(queue, ulid).await?.map(|s| (s.record, s.lease)))
    }

    /// A job and the id of the queue's latest event, read in one step: events after that id are
    /// exactly the transitions after this snapshot.
    pub async fn snapshot(&self, queue: &str, ulid: &str) -> Result<Option<JobSnapshot>> {
        let keys = self.queue_keys(queue);
        let mut inv = self.invocation(&self.scripts.info, queue, &keys);
        inv.arg(ulid);
        type Answer = (Option<Vec<u8>>, Option<String>, String, Option<Vec<u8>>);
        let (raw, lease, last_event, outcome): Answer = self.run(&inv).await?;
        let Some(raw) = raw else { return Ok(None) };
        Ok(Some(JobSnapshot {
            record: JobRecord::decode(&raw, outcome.as_deref())?,
            lease: lease.as_deref().and_then(Lease::parse),
            last_event,
        }))
    }

    /// The current leases of `ulids` (None where the job holds no lease), for reconciliation.
    pub async fn leases(&self, queue: &str, ulids: &[String]) -> Result<Vec<Option<Lease>>> {
        if ulids.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.queue_keys(queue).active().to_owned();
        let raw: Vec<Option<String>> =
            self.with_conn(async |c| redis::cmd("HMGET").arg(&key).arg(ulids).query_async(c).await).await?;
        Ok(raw.into_iter().map(|l| l.as_deref().and_then(Lease::parse)).collect())
    }

    /// Records this instance's heartbeat; returns Redis's clock and the instances whose
    /// heartbeat is older than `ttl`.
    pub async fn heartbeat(&self, instance: &str, ttl: Duration) -> Result<(i64, Vec<String>)> {
        let mut inv = self.scripts.heartbeat.prepare_invoke();
        inv.key(self.keys.instances()).arg(instance).arg(ttl.as_millis() as u64);
        self.with_conn(async |c| inv.invoke_async(c).await).await
    }

    /// Drops instances from the registry once their leases have been reaped everywhere.
    pub async fn forget_instances(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let key = self.keys.instances();
        self.with_conn(async |c| c.zrem(&key, ids).await).await
    }

    pub async fn publish(&self, channel: &str, message: &str) -> Result<()> {
        self.with_conn(async |c| c.publish(channel, message).await).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_leases_with_dots_and_pipes_in_order() {
        let lease = Lease::parse("abc.7.42|1700000000000|3").expect("parses");
        assert_eq!(lease, Lease { token: "abc.7.42".into(), started_ms: 1_700_000_000_000, attempt: 3 });
        assert_eq!(Lease::parse("garbage"), None);
    }
}
