//! Redis: the key layout, the records, the Lua function library and the pool, behind one
//! front.
//!
//! Every state change is one script call, atomic on the queue's Cluster slot. This layer knows
//! keys, records and scripts; it knows nothing of gRPC or of the rules that decide what a caller
//! may do (that is `queue`).
//!
//! [`Store`] is a thin front over parts that each own one capability, reached through an
//! accessor (`store.sessions().create_session(..)`):
//! - [`Jobs`] (`jobs.rs`): the transitions of the hot paths — add, lease, complete, fail,
//!   extend, progress, requeue, reap, reclaim — and the lease reads that reconcile them;
//! - [`Sessions`] (`sessions.rs`): session documents and their lines of jobs;
//! - [`Events`] (`events.rs`): reading a queue's event stream;
//! - [`Admin`] (`admin.rs`): cancel, pause, retry, delete, purge, listings, stats, info;
//! - [`Activity`] (`activity.rs`): reading the per-minute counts of added, completed and
//!   failed jobs that the functions keep;
//! - [`Instances`] (`instances.rs`): heartbeats, the queue and instance registries, worker
//!   listings, publishing notices;
//! - [`Schedules`] (`schedules.rs`): a queue's schedules, and the fires that add their jobs;
//! - [`Memory`] (`memory.rs`): what Redis's memory is at, and shedding retained history when it
//!   runs short;
//! - [`QueueSettings`] (`queue_settings.rs`): the settings of a queue set at run time, which
//!   the functions read themselves;
//! - [`Invariants`] (`invariants.rs`): the structural checks of a queue, for tests;
//! - [`Doctor`] (`doctor.rs`): the operator's check of a live Redis, in bounded pages, and its
//!   repairs.
//!
//! They share one `Backend` (`backend.rs`: pool, key space, library, retention) and
//! nothing else; `scripts.rs` assembles the function library from `lua/`, `args.rs` holds the
//! typed arguments of each Lua function, `pool.rs` the connection pool, `connect.rs` how a
//! connection reaches Redis (URL, TLS, password), `acl.rs` the Redis ACL rules jobwire needs,
//! `link.rs` the link to one node (the pool) or to a cluster, `pubsub.rs` the subscriptions,
//! `keys.rs` the layout, `record.rs` the packed job record and lease, `token.rs` the
//! [`LeaseToken`], `tombstones.rs` the time buckets of the idempotency tombstones.

mod acl;
mod activity;
mod admin;
mod args;
mod backend;
mod connect;
mod connection;
mod doctor;
mod events;
mod instances;
mod invariants;
mod jobs;
mod keys;
mod link;
mod memory;
mod pool;
mod pubsub;
mod queue_settings;
mod record;
mod schedules;
mod scripts;
mod sessions;
mod token;
mod tombstones;

use std::{collections::HashMap, sync::Arc, time::Duration};

use redis::{AsyncCommands, RedisError};

pub use acl::{COMMANDS as ACL_COMMANDS, acl_rules};
pub use activity::{ACTIVITY_MINUTES, Activity, MinuteCounts};
pub use admin::{Admin, CancelOutcome, JobSnapshot, ListedJob, Listing, QueueCounts};
pub use args::FailArgs;
use backend::Backend;
pub use connect::{RedisAccess, RedisIdentity};
pub use doctor::{Doctor, Finding, Kind, Outcome, Report, ScheduleJudge, ScheduleTiming};
pub use events::{BlockingConnection, Events, StoredEvent, event_order, is_event_cursor};
pub use instances::{Instances, SHARD_SEPARATOR};
pub use invariants::Invariants;
pub use jobs::{
    Ack, AckOutcome, AddArgs, AddOutcome, AddReport, Completion, FailOutcome, Jobs, LeaseCheck, LeaseRound, LeasedJob,
    Refill, SessionSnapshot,
};
pub use keys::{KeySpace, MAX_PRIORITY, MIN_PRIORITY};
pub use link::is_cluster_url;
pub use memory::{Memory, MemoryReading, Shed, ShedKind};
pub use pubsub::{Push, Subscriber};
pub use queue_settings::{QueueSettings, RateSpec, SettingField, StoredSettings};
pub use record::{BackoffSpec, JobRecord, Lease, RecordState};
pub use schedules::{Fire, FireJob, FireOutcome, MAX_FIRE_JOBS, Named, RELEASE_BATCH, Schedules, StoredSchedule};
pub use sessions::{PendingJob, PendingPage, SessionRecord, Sessions, SetOutcome};
pub use token::LeaseToken;

/// The layout version this build reads and writes.
const SCHEMA_VERSION: i64 = 2;

/// Why a store call failed; `queue` maps each to its own error (`Unavailable` to a retryable
/// one, the others to an internal error).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Redis cannot be reached, timed out, or is loading: the call may be retried.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// Redis is out of memory (`maxmemory` under `noeviction`) and refused a call that may
    /// add to it; nothing of the call was written (Redis refuses a function before it runs).
    #[error("redis is out of memory")]
    OutOfMemory,
    /// Redis answered with an error we did not expect (a script bug, a wrong key type).
    #[error("redis error: {0}")]
    Redis(String),
    /// A stored value does not decode.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The connection settings are unusable (a URL that does not parse, TLS files on a plain
    /// URL, certificates that do not load): nothing to retry.
    #[error("redis connection settings: {0}")]
    Config(String),
    /// The data was written by a newer jobwire with a different layout.
    #[error("redis holds schema version {found}; this build understands {SCHEMA_VERSION}")]
    Schema {
        /// The version stored in Redis.
        found: i64,
    },
}

impl From<RedisError> for StoreError {
    fn from(e: RedisError) -> Self {
        use redis::{ErrorKind, ServerErrorKind};
        // Loading, or (on a cluster) a slot moving, without a master, or no node reached yet.
        let retryable = matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::Moved
                    | ServerErrorKind::Ask
            ) | ErrorKind::ClusterConnectionNotFound
        );
        // A function still missing after the library was loaded: a master mid-move that
        // the slot map does not name yet (`backend::Backend::run`).
        if pool::is_transport(&e) || retryable || backend::is_function_missing(&e) {
            StoreError::Unavailable(e.to_string())
        } else if e.code() == Some("OOM") {
            StoreError::OutOfMemory
        } else {
            StoreError::Redis(e.to_string())
        }
    }
}

impl From<redis::ParsingError> for StoreError {
    fn from(e: redis::ParsingError) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// The result of a store call.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A number read from Redis as the type it stands for; one that does not fit is corrupt data,
/// never a silent wrap.
fn decoded<T: TryFrom<i64>>(n: i64, what: &str) -> Result<T> {
    T::try_from(n).map_err(|_| StoreError::Corrupt(format!("{what} out of range: {n}")))
}

/// A duration as the milliseconds a script takes (saturating: no duration jobwire accepts is
/// anywhere near).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How long finished jobs stay, per queue. A job goes when it passes either its window or its
/// cap (oldest first), whichever comes first.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// How long a completed job (and its result) is kept after it completed; zero keeps none.
    pub completed_for: Duration,
    /// Most completed jobs kept per queue; 0 keeps none. Cancelled jobs share both limits.
    pub completed_max: u64,
    /// How long a dead job is kept after it died.
    pub dead_for: Duration,
    /// Most dead jobs kept per queue. Dead jobs dropped past either limit are counted in
    /// [`QueueCounts::dead_evicted`].
    pub dead_max: u64,
    /// Events kept per queue (approximately: Redis trims whole stream nodes).
    pub events_max: u64,
}

/// What [`Store::new`] needs.
pub struct StoreConfig {
    /// The Redis URL (`redis://`, `rediss://` or `unix://`; `redis+cluster://` and the seed
    /// nodes for a cluster), credentials included.
    pub url: String,
    /// TLS files and a password beyond the URL (`RedisAccess::default()`: none).
    pub access: RedisAccess,
    /// The prefix of every key and channel (no `{` or `}`: it sits outside the hash tag), so
    /// several deployments can share a Redis.
    pub prefix: String,
    /// Most pooled (multiplexed) connections to Redis.
    pub pool_size: u32,
    /// Connect and response timeout of each Redis call.
    pub timeout: Duration,
    /// The retention windows the scripts enforce.
    pub retention: Retention,
    /// Replicas that must have an add or a completion before it answers OK (`WAIT`); 0: none.
    pub wait_replicas: u32,
}

/// The Redis store of one jobwire instance (see the module doc), shared behind an `Arc` by the
/// rooms of `queue`; each part is reached through its accessor.
pub struct Store {
    backend: Arc<Backend>,
    jobs: Jobs,
    sessions: Sessions,
    events: Events,
    admin: Admin,
    activity: Activity,
    instances: Instances,
    schedules: Schedules,
    memory: Memory,
    queue_settings: QueueSettings,
    invariants: Invariants,
    doctor: Doctor,
    retention: Retention,
}

impl Store {
    /// Builds the pool without waiting for Redis: a server must start (and report NOT_SERVING)
    /// while Redis is still down.
    pub fn new(config: &StoreConfig) -> Result<Self> {
        let backend = Arc::new(Backend::new(config)?);
        let sessions = Sessions::new(backend.clone());
        Ok(Self {
            jobs: Jobs::new(backend.clone()),
            events: Events::new(backend.clone()),
            admin: Admin::new(backend.clone()),
            activity: Activity::new(backend.clone()),
            instances: Instances::new(backend.clone()),
            schedules: Schedules::new(backend.clone()),
            memory: Memory::new(backend.clone()),
            queue_settings: QueueSettings::new(backend.clone()),
            retention: config.retention,
            invariants: Invariants::new(backend.clone(), sessions.clone()),
            doctor: Doctor::new(backend.clone(), sessions.clone(), Instances::new(backend.clone())),
            sessions,
            backend,
        })
    }

    /// The job transitions: add, lease, complete, fail and the other calls of a lease holder.
    pub fn jobs(&self) -> &Jobs {
        &self.jobs
    }

    /// Session documents and their lines of jobs.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Reading the queues' event streams.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// The operator calls: cancel, pause, retry, delete, purge, listings, stats, info.
    pub fn admin(&self) -> &Admin {
        &self.admin
    }

    /// The per-minute activity counts of queues.
    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// Heartbeats, the queue and instance registries, worker listings, notices.
    pub fn instances(&self) -> &Instances {
        &self.instances
    }

    /// The queues' schedules and their fires.
    pub fn schedules(&self) -> &Schedules {
        &self.schedules
    }

    /// Redis's memory, and shedding retained history when it runs short.
    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    /// The settings of queues set at run time.
    pub fn queue_settings(&self) -> &QueueSettings {
        &self.queue_settings
    }

    /// The retention the flags set: what a queue without settings of its own keeps.
    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// The structural checks of a queue, for tests.
    pub fn invariants(&self) -> &Invariants {
        &self.invariants
    }

    /// The operator's check of a live Redis and its repairs (`jobwire doctor`).
    pub fn doctor(&self) -> &Doctor {
        &self.doctor
    }

    /// Drops the cached key names of every queue no call is using right now (the idle sweep,
    /// `queue/idle.rs`); returns how many queues' names stay cached.
    pub fn forget_unused_key_names(&self) -> usize {
        self.backend.forget_unused_key_names()
    }

    /// The names of the keys and channels under this store's prefix.
    pub fn keys(&self) -> &KeySpace {
        self.backend.keys()
    }

    /// A dedicated subscription connection (one per instance, shared by all its streams).
    pub async fn subscriber(&self) -> Result<Subscriber> {
        Subscriber::connect(&self.backend).await
    }

    /// Whether Redis is a cluster (`redis+cluster://`).
    pub fn is_cluster(&self) -> bool {
        self.backend.is_cluster()
    }

    /// Sets the schema version on a fresh Redis, refuses a layout from a newer release, and loads
    /// the function library (Redis 7 or later). Writes only on a fresh Redis, so an instance
    /// starts beside a Redis that is out of memory (which refuses a SET, even of a key that is
    /// there, but loads functions).
    pub async fn ensure_schema(&self) -> Result<()> {
        let key = self.keys().schema();
        let found: i64 = self
            .backend
            .with_conn(async |c| {
                let found: Option<i64> = c.get(&key).await?;
                if let Some(found) = found {
                    return Ok(found);
                }
                let _: () = redis::cmd("SET").arg(&key).arg(SCHEMA_VERSION).arg("NX").query_async(c).await?;
                c.get(&key).await
            })
            .await?;
        if found != SCHEMA_VERSION {
            return Err(StoreError::Schema { found });
        }
        self.backend.with_conn(async |c| self.backend.ensure_library(c).await).await
    }

    /// Reads one CONFIG value (None when the server refuses CONFIG, as managed services do).
    pub async fn config_get(&self, name: &str) -> Result<Option<String>> {
        let result: Result<HashMap<String, String>> =
            self.backend.with_conn(async |c| redis::cmd("CONFIG").arg("GET").arg(name).query_async(c).await).await;
        match result {
            Ok(map) => Ok(map.get(name).cloned()),
            Err(StoreError::Redis(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
