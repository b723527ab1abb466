//! The behaviour knobs of one instance and the sizes it accepts, read once at start
//! (`config.rs`) and handed to the rooms that enforce them.

use std::time::Duration;

/// Sizes the server accepts; a request over one is refused (`TooLarge` or `Invalid`, naming the
/// field), except an error text, which is cut. `config.rs` sets the payload, result and batch
/// bytes from flags; the others keep their defaults.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest job payload, in bytes.
    pub max_payload: usize,
    /// Largest result of a completion, in bytes.
    pub max_result: usize,
    /// Longest error text a failure keeps, in bytes; a longer one is cut at a character boundary.
    pub max_error: usize,
    /// Most jobs in one batch add.
    pub max_batch_jobs: usize,
    /// Largest batch add: payloads and headers summed, in bytes.
    pub max_batch_bytes: usize,
    /// Highest credit (`WorkerSpec::max_in_flight`, and its `prefetch`) a worker stream may ask
    /// for (`--max-credit`).
    pub max_in_flight: u32,
    /// Largest session state (JSON), in bytes.
    pub max_session_state: usize,
    /// Largest progress report, in bytes.
    pub max_progress: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload: 1 << 20,
            max_result: 1 << 20,
            max_error: 16 << 10,
            max_batch_jobs: 1_000,
            max_batch_bytes: 16 << 20,
            max_in_flight: 1_000,
            max_session_state: 256 << 10,
            max_progress: 64 << 10,
        }
    }
}

/// What an instance does as Redis's memory runs short (`memory.rs`), in percent of Redis's
/// `maxmemory` (nothing is done for memory against a Redis without one).
#[derive(Clone, Debug)]
pub struct MemoryLimits {
    /// Above this, AddJob, AddJobs and CreateSession are refused (RESOURCE_EXHAUSTED) until used
    /// memory is back at or below this less `memory::RESUME_MARGIN` points; from 10 to 100.
    pub watermark: u8,
    /// Above this, retained history is shed, oldest first, until memory is back under it; at
    /// most `watermark`.
    pub shed_at: u8,
    /// Whether dead jobs are shed too, once nothing else is left (off: they stay until their
    /// retention drops them or someone retries or deletes them).
    pub shed_dead: bool,
    /// How often Redis's memory is read (`INFO memory`): never per add.
    pub sample_every: Duration,
}

impl Default for MemoryLimits {
    fn default() -> Self {
        Self { watermark: 90, shed_at: 80, shed_dead: false, sample_every: Duration::from_secs(1) }
    }
}

/// The behaviour knobs of one instance.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The sizes accepted.
    pub limits: Limits,
    /// How long an idempotency key is remembered, per queue: a repeat add within it adds nothing.
    pub idempotency_window: Duration,
    /// How long a key the client generated for its own retries is remembered, per queue.
    pub idempotency_retry_window: Duration,
    /// An instance that has not heartbeated for this long is dead; its leases are reaped.
    pub lease_ttl: Duration,
    /// Lost deliveries after which a job goes dead with reason "lost".
    pub max_lost: u32,
    /// Dispatchers run at least this often even without a wake-up (pub/sub may drop messages).
    pub safety_poll: Duration,
    /// How often this instance checks its view of its leases against Redis.
    pub reconcile_every: Duration,
    /// What is refused and shed as Redis's memory runs short.
    pub memory: MemoryLimits,
    /// The most jobs a queue may hold waiting (ready, delayed or retrying, or pending in a
    /// session); an add past it is refused (RESOURCE_EXHAUSTED). None: no cap.
    pub max_waiting: Option<u64>,
    /// The most distinct queues the registry may hold, over every instance: a write that would
    /// register one more is refused (RESOURCE_EXHAUSTED). None: no cap.
    pub max_queues: Option<u64>,
    /// A queue not used here for this long (no call naming it, no worker stream, no follower)
    /// is idle: what this instance kept in memory for it goes (`idle.rs`).
    pub queue_idle_after: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            idempotency_window: Duration::from_secs(24 * 3600),
            idempotency_retry_window: Duration::from_secs(600),
            lease_ttl: Duration::from_secs(30),
            max_lost: 5,
            safety_poll: Duration::from_secs(5),
            reconcile_every: Duration::from_secs(5),
            memory: MemoryLimits::default(),
            max_waiting: None,
            max_queues: Some(10_000),
            queue_idle_after: Duration::from_secs(300),
        }
    }
}
