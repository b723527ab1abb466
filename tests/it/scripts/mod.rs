//! Every function of the Lua library (`src/store/lua/`) driven directly through `Store`: no gRPC,
//! no jobwire server. One case per outcome of each function; each case asserts the answer and
//! what Redis then holds (counts from `stats`, records from `info`), and ends with the queue
//! invariant check. Each case has its own redis-server (the harness's) and key prefix.
//!
//! Cases call the library only through the methods of [`Case`], one per Lua function, so a
//! change of the store's method names is an edit here, not in every case.

mod acks;
mod activity;
mod admin;
mod intake;
mod leases;
mod limits;
mod memory;
mod registry;
mod schedules;
mod sessions;
mod settings;

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use jobwire::store::{
    Ack, AckOutcome, AddArgs, AddOutcome, BackoffSpec, CancelOutcome, Completion, FailArgs, FailOutcome, JobRecord,
    JobSnapshot, LeaseCheck, LeaseRound, LeaseToken, LeasedJob, Listing, MAX_PRIORITY, QueueCounts, RecordState,
    Refill, Retention, SessionRecord, SetOutcome, Shed, Store, StoreConfig, StoreError,
};

use crate::harness::{Redis, retention, unique_prefix};

/// The instance every case's lease tokens name; registered by [`Case::start`], as the invariant
/// check wants every lease held by a live instance.
pub const INSTANCE: &str = "i1";
/// The queue of every case (each case has its own prefix, so the name can repeat).
pub const QUEUE: &str = "q";
/// A retry wait long enough that a retrying job stays delayed for the rest of a case.
pub const LONG_BACKOFF_MS: u64 = 60_000;

/// A fresh ULID, greater than every one before it: where two jobs tie on a score (the same
/// millisecond), Redis orders them by ULID, so ties keep the order the case made them in.
pub fn next_ulid() -> String {
    static ULIDS: Mutex<ulid::Generator> = Mutex::new(ulid::Generator::new());
    let mut ulids = ULIDS.lock().unwrap_or_else(|e| e.into_inner());
    ulids.generate().unwrap_or_else(|_| ulid::Ulid::new()).to_string()
}

/// A job to add: a record and what the add script reads besides it.
#[derive(Clone)]
pub struct Job {
    pub ulid: String,
    pub record: JobRecord,
    pub delay_ms: Option<u64>,
    pub run_at_ms: Option<i64>,
    pub session: Option<String>,
    pub window: Duration,
}

impl Job {
    /// A plain job: priority 0, three attempts, a 30 s timeout, a fixed retry wait.
    pub fn plain() -> Self {
        Self {
            ulid: next_ulid(),
            record: JobRecord {
                state: RecordState::Waiting,
                job_type: "t".into(),
                payload: b"payload".to_vec(),
                headers: Vec::new(),
                priority: 0,
                max_attempts: 3,
                attempts: 0,
                lost: 0,
                created_ms: 1_000,
                ready_at_ms: None,
                backoff: Some(BackoffSpec {
                    fixed: true,
                    base_ms: LONG_BACKOFF_MS,
                    factor: 1.0,
                    max_ms: LONG_BACKOFF_MS,
                    jitter: 0.0,
                }),
                timeout_ms: 30_000,
                idempotency_key: None,
                started_ms: None,
                finished_ms: None,
                last_error: None,
                result: None,
                run_at_ms: None,
                session: None,
                cancel_requested: false,
                progress: None,
                rate_key: None,
                concurrency_key: None,
            },
            delay_ms: None,
            run_at_ms: None,
            session: None,
            window: Duration::from_secs(60),
        }
    }

    pub fn with(mut self, change: impl FnOnce(&mut JobRecord)) -> Self {
        change(&mut self.record);
        self
    }

    pub fn delayed(mut self, ms: u64) -> Self {
        self.delay_ms = Some(ms);
        self
    }

    pub fn run_at(mut self, at_ms: i64) -> Self {
        self.run_at_ms = Some(at_ms);
        self
    }

    pub fn in_session(mut self, name: &str) -> Self {
        self.session = Some(name.to_owned());
        self
    }

    pub fn keyed(mut self, key: &str, window: Duration) -> Self {
        self.record.idempotency_key = Some(key.to_owned());
        self.window = window;
        self
    }

    fn args(&self) -> AddArgs<'_> {
        AddArgs {
            ulid: &self.ulid,
            record: &self.record,
            delay_ms: self.delay_ms,
            run_at_ms: self.run_at_ms,
            idempotency_window: self.window,
            session: self.session.as_deref(),
        }
    }
}

/// Where a queue's jobs are, as `stats` counts them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Places {
    pub waiting: u64,
    pub delayed: u64,
    pub active: u64,
    pub completed: u64,
    pub dead: u64,
    pub cancelled: u64,
    /// Still inside their session.
    pub pending: u64,
}

/// One case: a private Redis, a store on a fresh prefix, and the queue `QUEUE`.
pub struct Case {
    pub store: Store,
    tokens: AtomicU64,
    redis: Redis,
}

impl Case {
    pub async fn start() -> Self {
        Self::with_retention(|_| {}).await
    }

    pub async fn with_retention(change: impl FnOnce(&mut Retention)) -> Self {
        let redis = Redis::start();
        let mut kept = retention();
        change(&mut kept);
        let store = Store::new(&StoreConfig {
            url: redis.url(),
            access: Default::default(),
            prefix: unique_prefix(),
            pool_size: 2,
            timeout: Duration::from_secs(2),
            retention: kept,
            wait_replicas: 0,
        })
        .expect("store");
        store.ensure_schema().await.expect("schema");
        let case = Self { store, tokens: AtomicU64::new(0), redis };
        case.heartbeat(INSTANCE, Duration::from_secs(60)).await;
        case
    }

    /// A fresh lease token of `INSTANCE`.
    pub fn token(&self) -> String {
        format!("{INSTANCE}.1.{}", self.tokens.fetch_add(1, Ordering::Relaxed))
    }

    /// Asserts the queue's structural invariants (see `Store::check_invariants`).
    pub async fn assert_invariants(&self) {
        let problems = self.store.invariants().check_invariants(QUEUE).await.expect("invariant check runs");
        assert!(problems.is_empty(), "invariants broken: {problems:#?}");
    }

    pub async fn places(&self) -> Places {
        let s = self.stats().await;
        Places {
            waiting: s.waiting,
            delayed: s.delayed,
            active: s.active,
            completed: s.completed,
            dead: s.dead,
            cancelled: s.cancelled,
            pending: s.session_pending,
        }
    }

    /// The record of a retained job.
    pub async fn record(&self, ulid: &str) -> JobRecord {
        self.info(ulid).await.expect("the job is retained").record
    }

    /// A plain job added; its ULID.
    pub async fn add_ready(&self) -> String {
        let job = Job::plain();
        assert_eq!(self.add(&job).await, AddOutcome::Added(job.ulid.clone()));
        job.ulid
    }

    /// Adds a job that must go in; Redis's clock (epoch ms) just before and just after.
    pub async fn add_timed(&self, job: &Job) -> (i64, i64) {
        let before = self.stats().await.now_ms;
        assert_eq!(self.add(job).await, AddOutcome::Added(job.ulid.clone()));
        (before, self.stats().await.now_ms)
    }

    /// Redis's clock (epoch ms), read again until it is `reached`: a wait on the one clock of
    /// the queue, not on this machine's.
    pub async fn redis_time_when(&self, reached: impl Fn(i64) -> bool) -> i64 {
        loop {
            let now = self.stats().await.now_ms;
            if reached(now) {
                return now;
            }
        }
    }

    /// Leases one ready job, which must be there.
    pub async fn take(&self) -> LeasedJob {
        let mut round = self.lease(1).await;
        assert_eq!(round.jobs.len(), 1, "one job leased");
        round.jobs.remove(0)
    }

    /// A session of `QUEUE` with state `{}` and a TTL of a minute.
    pub async fn open_session(&self, name: &str, max_concurrency: u32) {
        assert!(self.session_create(name, "{}", Duration::from_secs(60), max_concurrency).await, "created");
    }

    /// A job added and leased: at the highest priority, so that it is the one leased even
    /// while other jobs wait.
    pub async fn add_active(&self) -> LeasedJob {
        self.add_and_take(Job::plain().with(|r| r.priority = MAX_PRIORITY)).await
    }

    /// The one job of a new session `name` (of concurrency 1), added and leased.
    pub async fn add_active_in_session(&self, name: &str) -> LeasedJob {
        self.open_session(name, 1).await;
        self.add_and_take(Job::plain().in_session(name)).await
    }

    async fn add_and_take(&self, job: Job) -> LeasedJob {
        assert_eq!(self.add(&job).await, AddOutcome::Added(job.ulid.clone()));
        let held = self.take().await;
        assert_eq!(held.ulid, job.ulid, "the job added is the one leased");
        held
    }

    /// Cancels an active job: marked, its holder named.
    pub async fn request_cancel(&self, held: &LeasedJob) {
        assert_eq!(self.cancel(&held.ulid).await, CancelOutcome::Marked(held.token.clone()));
    }

    /// Acknowledges one held attempt without a session state.
    pub async fn ack(&self, ulid: &str, token: &str) -> AckOutcome {
        let outcomes = self.complete(&[Ack { ulid, token, result: b"done", session_state: None }]).await;
        assert_eq!(outcomes.len(), 1);
        outcomes[0]
    }

    /// A plain job added, leased and failed for good: dead.
    pub async fn add_dead(&self) -> String {
        let held = self.add_active().await;
        assert_eq!(self.fail(&held.ulid, &held.token, false, None, 0.0).await.state, Some(RecordState::Dead));
        held.ulid
    }

    /// The raw lease of an active job, flags included.
    pub async fn raw_lease(&self, ulid: &str) -> Option<String> {
        let key = self.store.keys().queue(QUEUE).active().to_owned();
        redis::cmd("HGET").arg(key).arg(ulid).query_async(&mut self.raw_connection().await).await.expect("hget")
    }

    /// Rewrites a session's packed meta as a release before `M_SINCE` (lua/lib.lua) wrote it:
    /// the array alone.
    pub async fn strip_session_since(&self, name: &str) {
        let key = self.store.keys().queue(QUEUE).sessions().to_owned();
        let mut conn = self.raw_connection().await;
        let raw: Vec<u8> = redis::cmd("HGET").arg(&key).arg(name).query_async(&mut conn).await.expect("hget");
        let meta = rmpv::decode::read_value(&mut raw.as_slice()).expect("packed meta");
        let mut array = Vec::new();
        rmpv::encode::write_value(&mut array, &meta).expect("pack");
        assert!(array.len() < raw.len(), "a value followed the array");
        let () = redis::cmd("HSET").arg(&key).arg(name).arg(array).query_async(&mut conn).await.expect("hset");
    }

    /// Sets Redis's `maxmemory` (bytes; 0: none), under `noeviction`: 1 makes Redis out of
    /// memory at once, refusing every call that may add to it.
    pub async fn set_maxmemory(&self, bytes: u64) {
        let mut conn = self.raw_connection().await;
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg("noeviction")
            .arg("maxmemory")
            .arg(bytes)
            .query_async(&mut conn)
            .await
            .expect("config set");
    }

    /// Entries in the queue's event stream.
    pub async fn event_entries(&self) -> u64 {
        let key = self.store.keys().queue(QUEUE).events().to_owned();
        redis::cmd("XLEN").arg(key).query_async(&mut self.raw_connection().await).await.expect("xlen")
    }

    pub(super) async fn raw_connection(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.redis.url()).expect("url");
        client.get_multiplexed_async_connection().await.expect("connect")
    }

    // One method per Lua function: the only calls into the store.

    pub async fn add(&self, job: &Job) -> AddOutcome {
        self.try_add(job).await.expect("add")
    }

    pub async fn try_add(&self, job: &Job) -> Result<AddOutcome, StoreError> {
        let mut report = self.store.jobs().add_many(QUEUE, &[job.args()], None).await?;
        Ok(report.outcomes.pop().expect("one outcome per job"))
    }

    /// An add whose caller's clock reads `now_ms`, however far from Redis's.
    pub async fn add_at(&self, job: &Job, now_ms: u64) -> AddOutcome {
        let mut report = self.store.jobs().add_many_at(QUEUE, &[job.args()], now_ms, None).await.expect("add");
        report.outcomes.pop().expect("one outcome per job")
    }

    pub async fn add_many(&self, jobs: &[Job]) -> Vec<AddOutcome> {
        self.try_add_many(jobs).await.expect("add")
    }

    pub async fn try_add_many(&self, jobs: &[Job]) -> Result<Vec<AddOutcome>, StoreError> {
        let args: Vec<AddArgs<'_>> = jobs.iter().map(Job::args).collect();
        Ok(self.store.jobs().add_many(QUEUE, &args, None).await?.outcomes)
    }

    /// Adds `jobs` in one call that then leases with `tokens` (each a `Case::token`).
    pub async fn add_and_lease(&self, jobs: &[Job], tokens: &[String]) -> (Vec<AddOutcome>, Refill) {
        let args: Vec<AddArgs<'_>> = jobs.iter().map(Job::args).collect();
        let tokens: Vec<LeaseToken> = tokens.iter().map(|t| LeaseToken::parse(t).expect("a token")).collect();
        let (report, refill) = self.store.jobs().add_and_lease(QUEUE, &args, None, &tokens).await.expect("add");
        (report.outcomes, refill)
    }

    /// Adds `jobs` in one call under a cap of `max_waiting` waiting jobs.
    pub async fn try_add_capped(&self, jobs: &[Job], max_waiting: u64) -> Result<Vec<AddOutcome>, StoreError> {
        let args: Vec<AddArgs<'_>> = jobs.iter().map(Job::args).collect();
        Ok(self.store.jobs().add_many(QUEUE, &args, Some(max_waiting)).await?.outcomes)
    }

    pub async fn add_capped(&self, jobs: &[Job], max_waiting: u64) -> Vec<AddOutcome> {
        self.try_add_capped(jobs, max_waiting).await.expect("add")
    }

    /// One shedding call, keeping `events_kept` events.
    pub async fn shed(&self, events_kept: u64, dead: bool) -> Shed {
        self.store.memory().shed(QUEUE, events_kept, dead).await.expect("shed")
    }

    /// A lease round with `n` fresh tokens, no jitter, no trimming.
    pub async fn lease(&self, n: usize) -> LeaseRound {
        let tokens: Vec<String> = (0..n).map(|_| self.token()).collect();
        self.lease_with(&tokens, 0.0, false).await
    }

    pub async fn lease_with(&self, tokens: &[String], rand: f64, trim: bool) -> LeaseRound {
        let tokens: Vec<LeaseToken> = tokens.iter().map(|t| LeaseToken::parse(t).expect("a lease token")).collect();
        self.store.jobs().lease(QUEUE, &tokens, rand, trim).await.expect("lease")
    }

    pub async fn complete(&self, acks: &[Ack<'_>]) -> Vec<AckOutcome> {
        self.store.jobs().complete(QUEUE, acks).await.expect("complete")
    }

    /// A completion that leases with `refills[i]` when ack i ends its lease.
    pub async fn complete_and_lease(&self, acks: &[Ack<'_>], refills: &[Option<&str>]) -> Completion {
        self.store.jobs().complete_and_lease(QUEUE, acks, refills).await.expect("complete")
    }

    pub async fn fail(
        &self,
        ulid: &str,
        token: &str,
        retryable: bool,
        retry_after: Option<Duration>,
        rand: f64,
    ) -> FailOutcome {
        let args = FailArgs { ulid, token, error: "boom", retryable, retry_after, rand };
        self.store.jobs().fail(QUEUE, &args).await.expect("fail")
    }

    /// A permanent fail that leases with `refill` when it ends the lease.
    pub async fn fail_and_lease(&self, ulid: &str, token: &str, refill: &str) -> (FailOutcome, Refill) {
        let args = FailArgs { ulid, token, error: "boom", retryable: false, retry_after: None, rand: 0.0 };
        self.store.jobs().fail_and_lease(QUEUE, &args, Some(refill)).await.expect("fail")
    }

    pub async fn postpone(&self, ulid: &str, token: &str, delay: Duration, hold_key: bool) -> FailOutcome {
        self.store.jobs().postpone(QUEUE, ulid, token, delay, hold_key).await.expect("postpone")
    }

    pub async fn extend(&self, ulid: &str, token: &str, by: Duration) -> (LeaseCheck, i64) {
        self.store.jobs().extend(QUEUE, ulid, token, by).await.expect("extend")
    }

    pub async fn requeue(&self, leases: &[(String, String)], lost: bool, max_lost: u32) -> u64 {
        self.store.jobs().requeue(QUEUE, leases, lost, max_lost).await.expect("requeue")
    }

    pub async fn reap(&self, dead: &[String]) -> u64 {
        self.store.jobs().reap(QUEUE, dead).await.expect("reap")
    }

    pub async fn reclaim(&self, leases: &[(String, String)], min_age: Duration) -> u64 {
        self.store.jobs().reclaim(QUEUE, leases, min_age).await.expect("reclaim")
    }

    pub async fn stats(&self) -> QueueCounts {
        self.store.admin().stats(QUEUE).await.expect("stats")
    }

    pub async fn info(&self, ulid: &str) -> Option<JobSnapshot> {
        self.store.admin().snapshot(QUEUE, ulid).await.expect("info")
    }

    pub async fn progress(&self, ulid: &str, token: &str, progress: &[u8]) -> i64 {
        self.try_progress(ulid, token, progress).await.expect("progress")
    }

    pub async fn try_progress(&self, ulid: &str, token: &str, progress: &[u8]) -> Result<i64, StoreError> {
        self.store.jobs().progress(QUEUE, ulid, token, progress).await
    }

    pub async fn cancel(&self, ulid: &str) -> CancelOutcome {
        self.store.admin().cancel(QUEUE, ulid).await.expect("cancel")
    }

    pub async fn pause(&self, paused: bool) {
        self.store.admin().set_paused(QUEUE, paused).await.expect("pause");
    }

    pub async fn retry(&self, ulid: Option<&str>, limit: u64) -> (i64, u64) {
        self.store.admin().retry_dead(QUEUE, ulid, limit).await.expect("retry")
    }

    pub async fn delete(&self, ulid: &str) -> i64 {
        self.store.admin().delete(QUEUE, ulid).await.expect("delete")
    }

    pub async fn purge(&self, states: &[Listing]) -> u64 {
        self.store.admin().purge(QUEUE, states).await.expect("purge")
    }

    pub async fn session_create(&self, name: &str, state: &str, ttl: Duration, max_concurrency: u32) -> bool {
        self.try_session_create(name, state, ttl, max_concurrency).await.expect("session_create")
    }

    pub async fn try_session_create(
        &self,
        name: &str,
        state: &str,
        ttl: Duration,
        max_concurrency: u32,
    ) -> Result<bool, StoreError> {
        self.store.sessions().create_session(QUEUE, name, state, ttl, max_concurrency).await
    }

    pub async fn session_get(&self, name: &str) -> Option<SessionRecord> {
        self.store.sessions().session(QUEUE, name).await.expect("session_get")
    }

    pub async fn session_set(&self, name: &str, state: &str, expected: u64) -> SetOutcome {
        self.try_session_set(name, state, expected).await.expect("session_set")
    }

    pub async fn try_session_set(&self, name: &str, state: &str, expected: u64) -> Result<SetOutcome, StoreError> {
        self.store.sessions().set_session_state(QUEUE, name, state, expected).await
    }

    pub async fn session_delete(&self, name: &str) -> bool {
        self.store.sessions().delete_session(QUEUE, name).await.expect("session_delete")
    }

    pub async fn session_sweep(&self) -> Vec<String> {
        self.store.sessions().sweep_sessions(QUEUE).await.expect("session_sweep")
    }

    pub async fn heartbeat(&self, instance: &str, ttl: Duration) -> (i64, Vec<String>) {
        self.store.instances().heartbeat(instance, ttl).await.expect("heartbeat")
    }

    pub async fn publish_workers(&self, instance: &str, json: &str, ttl: Duration) -> Result<(), StoreError> {
        self.store.instances().set_workers(instance, json, ttl).await
    }

    pub async fn register_queue(&self, queue: &str) -> Result<(), StoreError> {
        self.store.instances().register_queue(queue).await
    }

    pub async fn admit_queue(&self, queue: &str, cap: u64) -> Result<bool, StoreError> {
        self.store.instances().admit_queue(queue, cap).await
    }

    /// Adds `job` and answers whether the add asked to register the queue again.
    pub async fn add_registers_again(&self, job: &Job) -> bool {
        self.store.jobs().add_many(QUEUE, &[job.args()], None).await.expect("add").registers_again
    }

    /// Takes `QUEUE` out of the registry if it holds nothing (idempotency windows of an hour
    /// and a day).
    pub async fn retire_queue(&self) -> bool {
        let windows = [std::time::Duration::from_secs(3600), std::time::Duration::from_secs(86_400)];
        self.store.instances().retire_queue(QUEUE, &windows).await.expect("retire")
    }

    /// How many keys of `QUEUE` exist.
    pub async fn queue_key_count(&self) -> usize {
        let pattern = self.store.keys().queue_pattern(QUEUE);
        let mut conn = self.raw_connection().await;
        let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query_async(&mut conn).await.expect("KEYS");
        keys.len()
    }

    /// The registry of queues, sorted.
    pub async fn registered_queues(&self) -> Vec<String> {
        self.store.instances().queues().await.expect("the registry is read")
    }
}
