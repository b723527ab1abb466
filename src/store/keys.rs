//! The Redis key layout. Everything of one queue shares the hash tag `{queue}`, so every script
//! touching a queue runs on one Redis Cluster slot, and so does its wake-up channel (a shard
//! channel, which a script may `SPUBLISH` on its own slot only); the few global keys (queue
//! registry, instance registry, schema version, worker lists) are each a key of its own,
//! touched only by single-key commands and single-key functions, outside queue scripts, so on a
//! cluster each lives on whatever node owns its slot and no command spans two slots.
//!
//! ```text
//! {prefix}:{queue}:jobs       hash  ULID -> packed record (record.rs)
//! {prefix}:{queue}:active     hash  ULID -> lease "token|started_ms|attempt[|flags]"
//! {prefix}:{queue}:deadlines  zset  ULID by attempt deadline
//! {prefix}:{queue}:delayed    zset  ULID by ready time
//! {prefix}:{queue}:completed  list  ULIDs of retained completed jobs, oldest first
//! {prefix}:{queue}:dead       zset  ULID by finish time
//! {prefix}:{queue}:meta       hash  paused, dead_evicted, *_shed (shed.lua), session_seq
//! {prefix}:{queue}:events     stream of job transitions, capped
//! {prefix}:{queue}:sessions   hash  session name -> packed meta
//! {prefix}:{queue}:session_state  hash  session name -> state JSON
//! {prefix}:{queue}:session_jobs   zset  "name/seq/ULID": jobs not yet released by their session
//! {prefix}:{queue}:session_ttl    zset  session name by expiry time
//! {prefix}:{queue}:cancelled  zset  ULID by cancel time
//! {prefix}:{queue}:outcomes   hash  ULID -> packed outcome of a completed job (record.rs)
//! {prefix}:{queue}:activity   hash  "<kind><minute>" -> jobs added / completed / failed that minute
//! {prefix}:{queue}:settings   hash  the queue's settings set at run time (queue_settings.rs)
//! {prefix}:{queue}:keyed      zset  "<group>\0<order>\0<ULID>": ready jobs with a rate or
//!                                    concurrency key, by group (lua/limits_lib.lua)
//! {prefix}:{queue}:key_due    zset  group by when it may next lease
//! {prefix}:{queue}:key_parked zset  groups whose concurrency key is at its cap
//! {prefix}:{queue}:key_state  hash  "t<rate key>" -> GCRA TAT, "a<concurrency key>" -> leases
//! {prefix}:{queue}:ready:{p}  list  ready ULIDs of priority p, FIFO
//! {prefix}:{queue}:tombstones:{w}:{n}  hash  idempotency key -> ULID of its first add, for
//!                                    the keys added in bucket n of width w ms (tombstones.rs)
//! {prefix}:{queue}:schedules  hash  schedule name -> its packed definition (schedules.rs)
//! {prefix}:{queue}:schedule_state  hash  schedule name -> its packed fire state (schedules.rs)
//! {prefix}:queues             set   every queue ever added to
//! {prefix}:instances          zset  instance id by last heartbeat
//! {prefix}:schema             string layout version
//! {prefix}:{queue}:wake       shard channel: the queue got work (message = queue name)
//! {prefix}:instance:{id}      pub/sub channel: notices for one instance
//! {prefix}:schedules          pub/sub channel: a schedule changed (message = queue/name)
//! {prefix}:workers:{id}       string  JSON list of one instance's worker streams (TTL)
//! ```

/// Highest job priority; one ready list per level.
pub const MAX_PRIORITY: i32 = 5;
/// Lowest job priority.
pub const MIN_PRIORITY: i32 = -5;

/// The queue's structures other than its ready lists, in the order of KEYS (lua/lib.lua).
const STRUCTURES: [&str; 20] = [
    "jobs",
    "active",
    "deadlines",
    "delayed",
    "completed",
    "dead",
    "meta",
    "events",
    "sessions",
    "session_state",
    "session_jobs",
    "session_ttl",
    "cancelled",
    "outcomes",
    "activity",
    "settings",
    "keyed",
    "key_due",
    "key_parked",
    "key_state",
];

/// One ready list per priority level.
const READY_LISTS: usize = 11;
#[expect(clippy::cast_possible_truncation, clippy::cast_possible_wrap, reason = "11 fits; try_from is not const")]
const _: () = assert!(MAX_PRIORITY - MIN_PRIORITY + 1 == READY_LISTS as i32);

/// Names of the global keys and channels under one prefix.
#[derive(Clone, Debug)]
pub struct KeySpace {
    prefix: String,
}

impl KeySpace {
    /// The key space under `prefix` (the store's `StoreConfig::prefix`).
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned() }
    }

    /// The keys of one queue, all under its hash tag.
    pub fn queue(&self, queue: &str) -> QueueKeys {
        let base = format!("{}:{{{queue}}}", self.prefix);
        let mut keys: Vec<String> = STRUCTURES.iter().map(|name| format!("{base}:{name}")).collect();
        keys.extend((MIN_PRIORITY..=MAX_PRIORITY).rev().map(|p| format!("{base}:ready:{p}")));
        QueueKeys { wake_channel: format!("{base}:wake"), base, keys }
    }

    /// The set of every queue ever added to.
    pub fn queues(&self) -> String {
        format!("{}:queues", self.prefix)
    }

    /// The set of the shards (physical queues named `Q~n`) the registry of queues took in, so
    /// `--max-queues` can count queues, not shards. Its hash tag is the registry's whole name
    /// (which has no braces), so it lives in the registry's Cluster slot and one function
    /// may touch both. Under the prefix (ACL key patterns) and outside `all_queues_pattern`.
    pub fn queue_shards(&self) -> String {
        format!("{0}:queue-shards:{{{0}:queues}}", self.prefix)
    }

    /// The instance registry: instance ids by last heartbeat.
    pub fn instances(&self) -> String {
        format!("{}:instances", self.prefix)
    }

    /// The layout version.
    pub fn schema(&self) -> String {
        format!("{}:schema", self.prefix)
    }

    /// The shard channel on which the scripts announce that `queue` got work (message: the
    /// queue's name), on the queue's slot.
    pub fn wake_channel(&self, queue: &str) -> String {
        format!("{}:{{{queue}}}:wake", self.prefix)
    }

    /// The pub/sub channel of the notices for one instance about the leases it issued.
    pub fn instance_channel(&self, instance: &str) -> String {
        format!("{}:instance:{instance}", self.prefix)
    }

    /// The pub/sub channel on which the schedule functions announce that a schedule changed
    /// (message: `queue/name`).
    pub fn schedule_channel(&self) -> String {
        format!("{}:schedules", self.prefix)
    }

    /// The JSON list of one instance's worker streams.
    pub fn workers(&self, instance: &str) -> String {
        format!("{}:workers:{instance}", self.prefix)
    }

    /// Every key that can hold data of `queue` matches this pattern (for the invariant check).
    pub fn queue_pattern(&self, queue: &str) -> String {
        format!("{}:{{{queue}}}:*", self.prefix)
    }

    /// Every key of every queue matches this pattern (for discovery and the doctor's SCAN).
    pub(crate) fn all_queues_pattern(&self) -> String {
        format!("{}:{{*}}:*", self.prefix)
    }

    /// Every key under the prefix matches this pattern.
    pub(crate) fn prefix_pattern(&self) -> String {
        format!("{}:*", self.prefix)
    }

    /// The queue a key under this prefix belongs to: the name inside its hash tag, or None
    /// for a global key (or one of no queue). Queue names hold no braces, so the first `}`
    /// ends the tag.
    pub(crate) fn queue_of<'k>(&self, key: &'k str) -> Option<&'k str> {
        let rest = key.strip_prefix(self.prefix.as_str())?.strip_prefix(":{")?;
        let (queue, after) = rest.split_once('}')?;
        (!queue.is_empty() && after.starts_with(':')).then_some(queue)
    }
}

/// The keys every queue script receives, in the order lib.lua documents.
#[derive(Clone, Debug)]
pub struct QueueKeys {
    base: String,
    keys: Vec<String>,
    wake_channel: String,
}

impl QueueKeys {
    /// How many keys every queue function receives first.
    pub const COUNT: usize = STRUCTURES.len() + READY_LISTS;

    pub fn all(&self) -> &[String] {
        &self.keys
    }

    /// The queue's wake-up shard channel (`KeySpace::wake_channel`).
    pub fn wake_channel(&self) -> &str {
        &self.wake_channel
    }

    pub fn jobs(&self) -> &str {
        &self.keys[0]
    }

    pub fn active(&self) -> &str {
        &self.keys[1]
    }

    pub fn deadlines(&self) -> &str {
        &self.keys[2]
    }

    pub fn delayed(&self) -> &str {
        &self.keys[3]
    }

    pub fn completed(&self) -> &str {
        &self.keys[4]
    }

    pub fn dead(&self) -> &str {
        &self.keys[5]
    }

    pub fn events(&self) -> &str {
        &self.keys[7]
    }

    pub fn meta(&self) -> &str {
        &self.keys[6]
    }

    pub fn sessions(&self) -> &str {
        &self.keys[8]
    }

    pub fn session_state(&self) -> &str {
        &self.keys[9]
    }

    pub fn session_jobs(&self) -> &str {
        &self.keys[10]
    }

    pub fn session_ttl(&self) -> &str {
        &self.keys[11]
    }

    pub fn cancelled(&self) -> &str {
        &self.keys[12]
    }

    pub fn outcomes(&self) -> &str {
        &self.keys[13]
    }

    pub fn activity(&self) -> &str {
        &self.keys[14]
    }

    pub fn settings(&self) -> &str {
        &self.keys[15]
    }

    /// Ready jobs with a rate or concurrency key, by group (`lua/limits_lib.lua`).
    pub fn keyed(&self) -> &str {
        &self.keys[16]
    }

    /// Groups of keyed jobs by when each may next lease.
    pub fn key_due(&self) -> &str {
        &self.keys[17]
    }

    /// Groups of keyed jobs whose concurrency key is at its cap.
    pub fn key_parked(&self) -> &str {
        &self.keys[18]
    }

    /// Rate keys' TATs and concurrency keys' lease counts.
    pub fn key_state(&self) -> &str {
        &self.keys[19]
    }

    /// Ready lists, highest priority first.
    pub fn ready(&self) -> &[String] {
        &self.keys[STRUCTURES.len()..]
    }

    /// The idempotency tombstones added while Redis's clock was in `[index * width_ms, (index +
    /// 1) * width_ms)`, for the window of that width (see `tombstones.rs`).
    pub fn tombstones(&self, width_ms: u64, index: u64) -> String {
        format!("{}{width_ms}:{index}", self.tombstones_prefix())
    }

    /// The queue's schedules: name -> packed definition (`schedules.rs`).
    pub fn schedules(&self) -> String {
        format!("{}:schedules", self.base)
    }

    /// The queue's schedules' fire state: name -> packed state, what a fire reads and writes
    /// (`schedules.rs`).
    pub fn schedule_state(&self) -> String {
        format!("{}:schedule_state", self.base)
    }

    /// What the name of every tombstone bucket of the queue starts with.
    pub(crate) fn tombstones_prefix(&self) -> String {
        format!("{}:tombstones:", self.base)
    }

    /// The width and index of a tombstone bucket, read back from its name; None for a name that
    /// is not one.
    pub(crate) fn tombstone_bucket(&self, key: &str) -> Option<(u64, u64)> {
        let rest = key.strip_prefix(self.base.as_str())?.strip_prefix(":tombstones:")?;
        let (width, index) = rest.split_once(':')?;
        // Exactly as `tombstones` writes them: no sign, no leading zero.
        let parsed = |n: &str| n.parse::<u64>().ok().filter(|v| v.to_string() == n);
        let width = parsed(width).filter(|w| *w > 0)?;
        Some((width, parsed(index)?))
    }
}
