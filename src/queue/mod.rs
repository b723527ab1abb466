//! The job state machine and dispatch, independent of any transport.
//!
//! A job moves waiting (or delayed) -> active (leased to one worker stream) -> completed, or on a
//! failed attempt -> retrying (backoff) -> waiting again, until it is dead; a cancel ends it
//! cancelled. Every transition is one call of a store function (one Lua function in Redis); this
//! layer decides who may ask for which transition (validation, lease tokens) and runs the
//! background work of one instance.
//!
//! `Engine` is a thin front: each of its methods hands the call to one room (`shutdown` orders
//! the steps of two). A room owns its state and reaches another only through the methods named
//! below; the rooms call the store (`crate::store`) directly.
//! - `intake.rs`: validates and adds jobs, one at a time or in batches, within the queue's cap of
//!   waiting jobs. Owns the coalescer of single adds (`coalesce.rs`). Calls `overrides`
//!   (`prepare`), `memory`
//!   (`check_room`, `refusal`), `registry` (`register`), `leases` (`wake`: the queue got work)
//!   and `background` (`check_open`).
//! - `overrides.rs`: queue settings set at run time: validated, stored, shown with the flags
//!   they override. Owns the cache of each queue's settings that new jobs take their defaults
//!   from, and `shards.rs` (a sharded queue's shard names, and the shard each add goes to: the
//!   shard count is a setting). Calls no room.
//! - `memory.rs`: memory pressure. Owns the last reading of Redis's memory, whether Redis counts
//!   as full (past the watermark: adds and new sessions refused), and the task that samples it
//!   and sheds retained history under pressure. Calls `background`.
//! - `leases/`: worker streams and dispatch. Owns the hub (open streams, their credit and held
//!   leases), the instance id, whether Redis answers, and the tasks: one dispatcher per queue with
//!   a stream here (on a tracker of their own, stopped before the hand-back on shutdown), the
//!   heartbeat (which also publishes the worker list, expires idle sessions and reaps the leases
//!   of dead instances), the notice listener and the reconciliation. Calls `background`. Anything
//!   about a lease reaches its owner through `Leases::tell_owner`; see `leases/mod.rs`.
//! - `acks.rs`: what a lease holder says (complete, fail, extend, give back, progress). Owns the
//!   coalescer of completions. Calls `leases` (`tell_owner`, `trace_of`) and `sessions`
//!   (`validate_state`, for a session state sent with a completion).
//! - `sessions.rs`: session documents and their ordered lines of jobs. Owns its limits only
//!   (sessions live in Redis). Calls `memory` (`check_room`, `refusal`), `registry`
//!   (`register`), `overrides` (`shards_of`: a sharded queue's session lives in the shard its
//!   name picks) and `background` (`check_open`).
//! - `events.rs`: WatchJob and Subscribe. Owns the tailers (one task per queue followed here) and
//!   one task per follower. Calls `background`.
//! - `admin.rs`: job info, cancel, pause, retry, delete, purge, listings (filtered ones too),
//!   bulk actions, dead-letter groups, queue figures and activity (`admin/`). Owns nothing. Calls `registry` (`register`, on a pause), `leases` (`tell_owner`: revoke a
//!   cancelled active job) and `overrides` (`shards_of`: a sharded queue's reads and actions
//!   cover every shard).
//! - `gauges.rs`: with metrics on, the task refreshing the per-queue gauges. Calls `leases`
//!   (`stream_count`, `redis_is_up`) and `background`; converts with `admin`'s `QueueFigures`.
//! - `schedules/`: cron and interval schedules, fired by every instance's timer with each due
//!   time claimed in Redis in the call that adds its job (no leader). Owns the timer task.
//!   Calls `registry` (`register`), `leases` (`wake`, `follow_schedules`), `overrides`
//!   (`shards_of`: a sharded queue's schedule lives in the shard its job's key or its name
//!   picks) and `background`.
//! - `registry.rs`: puts a queue in the global registry of queues before its first write here,
//!   within `--max-queues` over every instance (and again after a write that may have raced
//!   its removal), and takes the queues that hold nothing out of it. Owns the set of queues this
//!   instance already registered. Calls no room.
//! - `idle.rs`: which queues are in use here, and the sweep that drops what an idle queue leaves
//!   in memory (metric series, cached settings, the registry's memory, key names). Owns the map
//!   of queues in use and the sweep's task. Calls `registry`, `overrides`, `events`, `leases`
//!   (`served_queues`) and `background`.
//! - `background.rs`: the cancellation token and task tracker of every background task but the
//!   dispatchers, so `Engine::shutdown` can stop them all and wait for them. Calls no room.
//!
//! Beneath them all, calling no room: `job.rs` (the ids, jobs as asked for, delivered and shown,
//! and the conversions to and from the store's milliseconds), `error.rs`, `settings.rs`, and
//! `coalesce.rs` (the batching of which intake and acks each own one). A room imports what it
//! uses from the file that defines it, never from this front, so no import runs back up to it.
//! Items the transport uses are `pub` (and re-exported here); those the rooms share are
//! `pub(super)`.
//!
//! Instrumentation: each transition counts in the queue's metrics (`crate::telemetry`; no-ops
//! while metrics are off) and runs in a span (`job.add` in intake, `job.complete` and
//! `job.fail` in acks, `job.deliver` in dispatch) carrying the job's W3C trace context.

mod acks;
mod admin;
mod background;
mod coalesce;
mod error;
mod events;
mod gauges;
mod idle;
mod intake;
mod job;
mod leases;
mod memory;
mod overrides;
mod registry;
mod schedules;
mod sessions;
mod settings;
mod shards;

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::sync::{mpsc, watch};
use tracing::info;

pub use admin::{
    ActivityMinute, BulkAction, BulkOutcome, DeadGroup, DeadGroups, JobFilter, Listing, QueueFigures, Selection,
    error_group,
};
use background::Background;
pub use error::{Error, Result};
pub use events::{EventKind, EventView};
pub use idle::QueuesInMemory;
pub use job::{Added, BackoffRequest, Delivery, JobId, JobState, JobView, NewJob, Schedule, SessionId};
pub use leases::{RevokeReason, StreamEvent, StreamGuard, WorkerSpec, WorkerView};
pub use memory::RedisMemory;
pub use overrides::{QueueSettings, QueueSettingsView, RateLimit};
pub use schedules::{
    JobTemplate, MissedPolicy, SCHEDULE_HEADER, ScheduleDefinition, ScheduleView, Timing, schedule_timing,
};
pub use sessions::{SessionUpdate, SessionView};
pub use settings::{Limits, MemoryLimits, Settings};

use crate::{store::Store, telemetry::TraceContext};

/// One jobwire instance's engine: the front the transport calls, over the rooms.
pub struct Engine {
    background: Background,
    intake: intake::Intake,
    leases: Arc<leases::Leases>,
    acks: acks::Acks,
    sessions: sessions::Sessions,
    events: Arc<events::Events>,
    admin: admin::Admin,
    schedules: schedules::Schedules,
    memory: Arc<memory::Memory>,
    overrides: Arc<overrides::Overrides>,
    store: Arc<Store>,
    /// The queues in use here, and the sweep that drops what idle queues leave in memory.
    uses: Arc<idle::QueueUse>,
    sweep: Arc<idle::Sweep>,
}

impl Engine {
    /// Starts an engine over `store` and its background tasks.
    pub fn start(store: Arc<Store>, settings: Settings) -> Arc<Self> {
        let background = Background::default();
        let windows = [settings.idempotency_window, settings.idempotency_retry_window];
        let registry = Arc::new(registry::QueueRegistry::new(store.clone(), settings.max_queues, windows));
        let leases = leases::Leases::start(store.clone(), settings.clone(), background.clone());
        let memory = memory::Memory::start(store.clone(), settings.memory.clone(), background.clone());
        let limits = settings.limits;
        let limits_for_schedules = limits.clone();
        let overrides = Arc::new(overrides::Overrides::new(store.clone(), settings.max_waiting));
        let events = Arc::new(events::Events::new(store.clone(), background.clone()));
        let uses = Arc::new(idle::QueueUse::default());
        let sweep = Arc::new(idle::Sweep {
            uses: uses.clone(),
            idle_after: settings.queue_idle_after,
            registry: registry.clone(),
            overrides: overrides.clone(),
            leases: leases.clone(),
            events: events.clone(),
            store: store.clone(),
            background: background.clone(),
        });
        let sweeping = sweep.clone();
        background.spawn(sweeping.run());
        let engine = Arc::new(Self {
            intake: intake::Intake::new(
                store.clone(),
                registry.clone(),
                leases.clone(),
                memory.clone(),
                overrides.clone(),
                background.clone(),
                intake::IntakeSettings {
                    limits: limits.clone(),
                    windows: intake::KeyWindows {
                        chosen: settings.idempotency_window,
                        generated: settings.idempotency_retry_window,
                    },
                    max_waiting: settings.max_waiting,
                },
            ),
            acks: acks::Acks::new(store.clone(), leases.clone(), limits.clone(), settings.max_lost),
            sessions: sessions::Sessions::new(
                store.clone(),
                registry.clone(),
                overrides.clone(),
                memory.clone(),
                background.clone(),
                limits,
            ),
            events,
            admin: admin::Admin::new(store.clone(), registry.clone(), leases.clone(), overrides.clone()),
            schedules: schedules::Schedules::start(
                store.clone(),
                registry,
                leases.clone(),
                overrides.clone(),
                background.clone(),
                limits_for_schedules,
                settings.max_waiting,
            ),
            memory,
            overrides,
            leases,
            background,
            store,
            uses,
            sweep,
        });
        info!(instance = %engine.instance(), "engine started");
        engine
    }

    /// This instance's id, fresh at every start: it names the instance in lease tokens, in the
    /// registry of live instances and in ListWorkers.
    pub fn instance(&self) -> &str {
        self.leases.instance()
    }

    /// Follows whether Redis answers (true) or not, as seen by the heartbeat.
    pub fn redis_up(&self) -> watch::Receiver<bool> {
        self.leases.redis_up()
    }

    /// Drops now what the idle queues leave in this instance's memory, as the sweep does every
    /// half `Settings::queue_idle_after` (see `idle.rs`), and answers what stays, map by map.
    pub fn sweep_idle_queues(&self) -> QueuesInMemory {
        self.sweep.once()
    }

    /// Takes the queues that hold nothing (and that this instance does not use) out of the
    /// registry now, as the sweep does after each round; answers how many went.
    pub async fn retire_empty_queues(&self) -> Result<usize> {
        self.sweep.retire().await
    }

    /// Starts refreshing the per-queue gauges from Redis every `every` (see `gauges.rs`); the
    /// server does it when it serves metrics.
    pub fn start_gauges(&self, every: Duration) {
        let task =
            gauges::run(self.store.clone(), self.leases.clone(), self.uses.clone(), self.background.clone(), every);
        self.background.spawn(task);
    }

    /// Validates and adds one job; a repeat of an idempotency key within the window adds nothing
    /// and answers the first job's id as a duplicate.
    pub async fn add(&self, job: NewJob) -> Result<Added> {
        let _in_use = self.uses.enter(&job.queue);
        self.intake.add(job).await
    }

    /// Adds a batch, one answer per entry in order; an entry given as an error (the caller could
    /// not read it) is answered with it.
    pub async fn add_batch(&self, entries: Vec<Result<NewJob>>) -> Result<Vec<Result<Added>>> {
        let mut queues: Vec<&str> = entries.iter().filter_map(|e| e.as_ref().ok()).map(|j| j.queue.as_str()).collect();
        queues.sort_unstable();
        queues.dedup();
        let _in_use: Vec<idle::InUse> = queues.into_iter().map(|q| self.uses.enter(q)).collect();
        self.intake.add_batch(entries).await
    }

    /// Opens a worker stream. Jobs and control messages arrive on the receiver; the stream
    /// lasts as long as the guard.
    /// A queue that is sharded is served over all its shards.
    pub async fn open_stream(&self, spec: WorkerSpec) -> Result<(StreamGuard, mpsc::Receiver<StreamEvent>)> {
        let mut physical = Vec::with_capacity(spec.queues.len());
        for queue in spec.queues.iter().take(leases::MAX_STREAM_QUEUES) {
            // A name that is not a queue's has no shards; `open_stream` refuses it.
            physical.push(match job::validate_queue(queue, "queues") {
                Ok(()) => self.overrides.shards_of(queue).await?,
                Err(_) => Arc::from(vec![queue.clone()]),
            });
        }
        self.leases.open_stream(spec, &physical)
    }

    /// Completes the attempt held with `token`, keeping `result`. For a job of a session,
    /// `session_state` (JSON, and the version the session must still be at) replaces the
    /// session's state in the same step. `trace` is the trace context the request carried.
    pub async fn complete(
        &self,
        job_id: &JobId,
        token: &str,
        result: &[u8],
        session_state: Option<(&str, Option<u64>)>,
        trace: Option<TraceContext>,
    ) -> Result<()> {
        let session_state = session_state.map(|(state, version)| (state.to_owned(), version));
        self.start_complete(job_id.clone(), token, result.to_vec(), session_state, trace).await
    }

    /// As `complete`, but the completion is checked and taken in for its queue's next Redis call
    /// now, when this is called, and the future only waits for the answer: completions started
    /// together, before any of their futures runs, share one call (poll them together).
    pub fn start_complete(
        &self,
        job_id: JobId,
        token: &str,
        result: Vec<u8>,
        session_state: Option<(String, Option<u64>)>,
        trace: Option<TraceContext>,
    ) -> impl Future<Output = Result<()>> + Send + use<> {
        let in_use = self.uses.enter(&job_id.queue);
        let completed = self.acks.complete(job_id, token, result, session_state, trace);
        async move {
            let _in_use = in_use;
            completed.await
        }
    }

    /// Fails the attempt held with `token`: retried after its backoff (or `retry_after`) while
    /// `retryable` and attempts are left, else dead. Returns the job's new state and when it
    /// runs again.
    pub async fn fail(
        &self,
        job_id: &JobId,
        token: &str,
        error: &str,
        retryable: bool,
        retry_after: Option<Duration>,
        trace: Option<TraceContext>,
    ) -> Result<(JobState, Option<SystemTime>)> {
        let _in_use = self.uses.enter(&job_id.queue);
        self.acks.fail(job_id, token, error, retryable, retry_after, trace).await
    }

    /// Pushes an attempt's deadline to `by` from now (1 ms to 24 h); returns the new deadline.
    pub async fn extend(&self, job_id: &JobId, token: &str, by: Duration) -> Result<SystemTime> {
        self.acks.extend(job_id, token, by).await
    }

    /// Hands a held job back unprocessed; with `stop_stream`, its stream gets no more jobs.
    pub async fn give_back_one(&self, job_id: &JobId, token: &str, stop_stream: bool) -> Result<()> {
        self.acks.give_back(job_id, token, stop_stream).await
    }

    /// Hands a held job back to run again after `delay` ("rate limited upstream"), without
    /// spending an attempt; with `hold_key`, its rate key's other jobs wait as long too.
    pub async fn postpone_one(
        &self,
        job_id: &JobId,
        token: &str,
        delay: Duration,
        hold_key: bool,
        stop_stream: bool,
    ) -> Result<()> {
        self.acks.postpone(job_id, token, delay, hold_key, stop_stream).await
    }

    /// Records the progress of a held job (at most `Limits::max_progress` bytes) and emits it as
    /// an event.
    pub async fn report_progress(&self, job_id: &JobId, token: &str, progress: &[u8]) -> Result<()> {
        self.acks.report_progress(job_id, token, progress).await
    }

    /// Creates a session in `queue`. Unset or empty: `name` a fresh ULID, `state` `{}`, `ttl`
    /// (of inactivity) 24 h, `max_concurrency` 1.
    pub async fn create_session(
        &self,
        queue: &str,
        name: Option<&str>,
        state: Option<&str>,
        ttl: Option<Duration>,
        max_concurrency: Option<u32>,
    ) -> Result<SessionView> {
        self.sessions.create(queue, name, state, ttl, max_concurrency).await
    }

    /// A session as it is now.
    pub async fn get_session(&self, id: &SessionId) -> Result<SessionView> {
        self.sessions.get(id).await
    }

    /// Writes the state (replaced or merge-patched); returns the new version. With `expected`,
    /// only while the session is at that version; without, a concurrent write is retried over.
    pub async fn update_session(&self, id: &SessionId, update: SessionUpdate, expected: Option<u64>) -> Result<u64> {
        self.sessions.update(id, update, expected).await
    }

    /// Deletes a session and the jobs still pending inside it; its jobs already released to the
    /// queue end cancelled instead of starting.
    pub async fn delete_session(&self, id: &SessionId) -> Result<()> {
        self.sessions.delete(id).await
    }

    /// A page of the jobs still pending inside a session, in release order, and the token of
    /// the next page (empty on the last page).
    pub async fn session_jobs(&self, id: &SessionId, page_size: u64, token: &str) -> Result<(Vec<JobView>, String)> {
        self.sessions.pending_jobs(id, page_size, token).await
    }

    /// A page of a queue's sessions and the token of the next (empty on the last page).
    pub async fn list_sessions(&self, queue: &str, page_size: u64, token: &str) -> Result<(Vec<SessionView>, String)> {
        self.sessions.list(queue, page_size, token).await
    }

    /// Follows one job until it reaches a final state.
    pub async fn watch(&self, job_id: &JobId) -> Result<mpsc::Receiver<Result<EventView>>> {
        self.events.watch(job_id).await
    }

    /// Every event of a queue after `cursor` (or from now), live; a sharded queue's cover every
    /// shard (`events.rs` says in what order, and how its cursor is made).
    pub async fn subscribe(&self, queue: &str, cursor: Option<&str>) -> Result<mpsc::Receiver<Result<EventView>>> {
        job::validate_queue(queue, "queue")?;
        let shards = self.overrides.shards_of(queue).await?;
        self.events.subscribe(&shards, cursor).await
    }

    /// Everything known about one job.
    pub async fn info(&self, job_id: &JobId) -> Result<JobView> {
        self.admin.info(job_id).await
    }

    /// The figures of one queue, read in one atomic snapshot.
    pub async fn stats(&self, queue: &str) -> Result<QueueFigures> {
        self.admin.stats(queue).await
    }

    /// Redis's memory as this instance last read it (about once a second), and whether adds
    /// are refused for it.
    pub fn redis_memory(&self) -> RedisMemory {
        self.memory.status()
    }

    /// Every queue in the global registry, with its figures.
    pub async fn list_queues(&self) -> Result<Vec<(String, QueueFigures)>> {
        self.admin.list_queues().await
    }

    /// Cancels a job: a waiting or delayed one at once; an active one is marked and its worker
    /// told, and it ends cancelled whatever the worker answers.
    pub async fn cancel(&self, job_id: &JobId) -> Result<()> {
        let _in_use = self.uses.enter(&job_id.queue);
        self.admin.cancel(job_id).await
    }

    /// Pauses a queue (it delivers nothing while paused) or resumes it.
    pub async fn set_paused(&self, queue: &str, paused: bool) -> Result<()> {
        self.admin.set_paused(queue, paused).await
    }

    /// Moves one dead job back to ready.
    pub async fn retry_job(&self, job_id: &JobId) -> Result<()> {
        self.admin.retry_job(job_id).await
    }

    /// Moves up to `limit` of the oldest dead jobs back to ready; returns how many.
    pub async fn retry_dead(&self, queue: &str, limit: u64) -> Result<u64> {
        self.admin.retry_dead(queue, limit).await
    }

    /// Deletes a job that is not active.
    pub async fn delete_job(&self, job_id: &JobId) -> Result<()> {
        self.admin.delete_job(job_id).await
    }

    /// Deletes every job of a queue in the given states (not active); returns how many.
    pub async fn purge(&self, queue: &str, states: &[Listing]) -> Result<u64> {
        self.admin.purge(queue, states).await
    }

    /// A page of jobs in one state matching `filter`, and the token of the next (empty on the
    /// last page).
    pub async fn list_jobs(
        &self,
        queue: &str,
        state: Listing,
        page_size: u64,
        token: &str,
        filter: &JobFilter,
    ) -> Result<(Vec<JobView>, String)> {
        self.admin.list_jobs(queue, state, page_size, token, filter).await
    }

    /// Retries, cancels or deletes the jobs of a selection; jobs it does not apply to are
    /// skipped.
    pub async fn bulk(&self, action: BulkAction, selection: Selection) -> Result<BulkOutcome> {
        self.admin.bulk(action, selection).await
    }

    /// A queue's newest dead jobs grouped by error, largest group first.
    pub async fn dead_groups(&self, queue: &str) -> Result<DeadGroups> {
        self.admin.dead_groups(queue).await
    }

    /// Jobs added, completed and failed per minute over the last hour, for each queue.
    pub async fn activity(&self, queues: &[String]) -> Result<Vec<Vec<ActivityMinute>>> {
        self.admin.activity(queues).await
    }

    /// Every event of each of `queues` from now on, one feed per queue (a queue named twice is
    /// followed once), each as Subscribe sends it (a sharded queue's covers every shard, and its
    /// cursors resume a Subscribe of the queue).
    pub async fn subscribe_queues(&self, queues: &[String]) -> Result<Vec<mpsc::Receiver<Result<EventView>>>> {
        admin::validate_queues(queues, "queues")?;
        let mut feeds = Vec::with_capacity(queues.len());
        for (i, queue) in queues.iter().enumerate() {
            if !queues[..i].contains(queue) {
                feeds.push(self.subscribe(queue, None).await?);
            }
        }
        Ok(feeds)
    }

    /// A queue's settings set at run time, and those in effect.
    pub async fn queue_settings(&self, queue: &str) -> Result<QueueSettingsView> {
        self.overrides.get(queue).await
    }

    /// Sets a queue's settings (those of `set`) and removes those named in `clear`, in one
    /// step; every instance applies them within a second.
    pub async fn set_queue_settings(
        &self,
        queue: &str,
        set: QueueSettings,
        clear: &[String],
    ) -> Result<QueueSettingsView> {
        self.overrides.change(queue, set, clear).await
    }

    /// Connected worker streams on every live instance, optionally only those serving `queue`.
    pub async fn list_workers(&self, queue: Option<&str>) -> Result<Vec<WorkerView>> {
        self.leases.list_workers(queue).await
    }

    /// Creates a schedule, or replaces the definition of the one of that name in its queue;
    /// returns whether it was created, and the schedule.
    pub async fn upsert_schedule(&self, definition: ScheduleDefinition) -> Result<(bool, ScheduleView)> {
        self.schedules.upsert(definition).await
    }

    /// One schedule, with its next fire time.
    pub async fn get_schedule(&self, queue: &str, name: &str) -> Result<ScheduleView> {
        self.schedules.get(queue, name).await
    }

    /// A page of a queue's schedules and the token of the next (empty on the last page).
    pub async fn list_schedules(
        &self,
        queue: &str,
        page_size: u32,
        token: &str,
    ) -> Result<(Vec<ScheduleView>, String)> {
        self.schedules.list(queue, page_size, token).await
    }

    /// Deletes a schedule; the jobs it added stay.
    pub async fn delete_schedule(&self, queue: &str, name: &str) -> Result<()> {
        self.schedules.delete(queue, name).await
    }

    /// Pauses a schedule (its due times meanwhile are missed fires) or resumes it.
    pub async fn set_schedule_paused(&self, queue: &str, name: &str, paused: bool) -> Result<()> {
        self.schedules.set_paused(queue, name, paused).await
    }

    /// Adds one job from a schedule's template now; returns its id.
    pub async fn trigger_schedule(&self, queue: &str, name: &str) -> Result<JobId> {
        self.schedules.trigger(queue, name).await
    }

    /// Stops this instance: no new streams or jobs, workers told to drain, acks accepted for
    /// `grace` (or until nothing is held), then every lease still held is handed back (not as a
    /// lost delivery), the instance leaves the registry of live instances (when all of them
    /// could be handed back) and the background tasks end.
    pub async fn shutdown(&self, grace: Duration) {
        info!(?grace, "draining");
        self.leases.drain(grace).await;
        // No lease round may complete after the hand-back: stop the dispatchers and wait.
        self.leases.stop_dispatch().await;
        self.background.stop();
        self.leases.hand_back_all().await;
        self.background.wait().await;
        info!("engine stopped");
    }
}
