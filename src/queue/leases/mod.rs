//! Leases and dispatch on one instance: what a worker stream asks for and is sent
//! (`stream.rs`), the worker streams and the credit and leases each holds (`hub.rs`, its unit
//! tests in `hub/tests.rs`), one dispatcher per queue with a stream here (`dispatch.rs`), the notices that
//! reach a lease's owner on another instance and the reconciliation that makes up for lost ones
//! (`notices.rs`), the refills an ack leases in its own call (`refill.rs`), the leases an add
//! makes in its own call for streams waiting here (`adds.rs`), the heartbeat, which
//! also reaps dead instances' leases and expires idle sessions (`liveness.rs`), and the
//! published list of this instance's workers (`workers.rs`).
//!
//! A lease token names the instance and stream that hold the lease, so whatever happens to a
//! lease anywhere (an ack, a timeout, a cancel, a stopping worker) reaches its owner through one
//! door, `tell_owner`: directly when the owner is this instance, else on its pub/sub channel.
//!
//! Owns: the hub, the instance id, whether Redis answers (as the heartbeat sees it), and the
//! tasks: the dispatchers (on a token and tracker of their own, stopped before leases are handed
//! back on shutdown, so no lease round completes after the hand-back), the heartbeat, the notice
//! listener, the reconciliation, and the short-lived hand-backs (of a closed stream's leases, of
//! a lease round whose answer was lost). Calls `background` only. The other rooms reach this one
//! through `wake` (intake, schedules), `plan_add_leases` and `settle_add_leases` (intake), `follow_schedules` (schedules), `tell_owner` (acks, admin), `trace_of` (acks), and `stream_count`
//! and `redis_is_up` (gauges); the engine through the rest. The hub is reached from this room
//! only; the other files here are its tasks and helpers, reading `Leases` directly.

mod adds;
mod dispatch;
mod hub;
mod liveness;
mod notices;
mod refill;
mod stream;
mod workers;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use tokio::sync::{mpsc, watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

pub(super) use notices::Notice;
pub use stream::{RevokeReason, StreamEvent, WorkerSpec};
pub use workers::WorkerView;

/// Most queues one worker stream names (a sharded queue counts once).
pub(super) const MAX_STREAM_QUEUES: usize = 32;

use crate::{
    queue::{
        background::Background,
        error::{Error, Result},
        job::{JobId, validate_queue},
        settings::Settings,
    },
    store::{LeaseToken, Store},
    telemetry::{self, TraceContext},
};

/// The leases room of one instance.
pub(super) struct Leases {
    store: Arc<Store>,
    instance: String,
    hub: hub::Hub,
    settings: Settings,
    background: Background,
    /// Ends the dispatchers; on shutdown it fires before leases are handed back, so that no
    /// lease round can complete after the hand-back.
    dispatch_stop: CancellationToken,
    dispatchers: TaskTracker,
    redis_up: watch::Sender<bool>,
    /// Where the notices on the schedule channel go (`follow_schedules`): the `queue/name` of a
    /// schedule that changed, or None when the pub/sub connection was made again.
    schedule_notices: std::sync::OnceLock<mpsc::UnboundedSender<Option<String>>>,
    /// The set of queues with a stream here changed: the notice listener subscribes to the
    /// wake-up channels of the new ones and leaves those of the gone ones.
    queues_changed: tokio::sync::Notify,
}

/// Keeps a worker stream registered; dropping it ends the stream and hands its unacknowledged
/// jobs back (as lost deliveries, but for prefetched jobs never reported started).
pub struct StreamGuard {
    leases: Arc<Leases>,
    id: u64,
}

impl StreamGuard {
    /// The stream's worker handed the job delivered with `token` to a handler (see
    /// `WorkerSpec::prefetch`); a token this stream does not hold is ignored.
    pub fn mark_started(&self, token: &str) {
        if let Some(token) = LeaseToken::parse(token).filter(|t| t.instance() == self.leases.instance) {
            self.leases.hub.mark_started(self.id, &token);
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let leases = self.leases.clone();
        let (held, orphaned) = leases.hub.close(self.id);
        // Their dispatchers notice the queue has no stream and stop; their wake-ups are left.
        if !orphaned.is_empty() {
            leases.queues_changed.notify_one();
        }
        telemetry::set_worker_streams(leases.hub.stream_count());
        if held.is_empty() || leases.background.is_stopping() {
            // On shutdown, `Leases::hand_back_all` hands back everything still held.
            return;
        }
        let (started, unstarted): (Vec<_>, Vec<_>) = held.into_iter().partition(|h| h.started);
        leases.background.clone().spawn(async move {
            if !unstarted.is_empty() {
                leases.give_back(unstarted, false).await;
            }
            if !started.is_empty() {
                leases.give_back(started, true).await;
            }
        });
    }
}

impl Leases {
    /// Starts the heartbeat, the notice listener and the reconciliation of a new instance.
    pub(super) fn start(store: Arc<Store>, settings: Settings, background: Background) -> Arc<Self> {
        let instance = ulid::Ulid::new().to_string().to_lowercase()[10..].to_owned();
        let (redis_up, _) = watch::channel(false);
        let leases = Arc::new(Self {
            store,
            hub: hub::Hub::new(&instance),
            instance,
            settings,
            background,
            dispatch_stop: CancellationToken::new(),
            dispatchers: TaskTracker::new(),
            redis_up,
            schedule_notices: std::sync::OnceLock::new(),
            queues_changed: tokio::sync::Notify::new(),
        });
        leases.background.spawn(liveness::run(leases.clone()));
        leases.background.spawn(notices::listen(leases.clone()));
        leases.background.spawn(notices::reconcile(leases.clone()));
        leases
    }

    /// The notices of the schedule channel, for the schedules' timer (the one caller): the
    /// `queue/name` of each schedule that changed, and None each time the pub/sub connection is made again
    /// (what was published meanwhile is lost). A second call gets a receiver that hears nothing.
    pub(super) fn follow_schedules(&self) -> mpsc::UnboundedReceiver<Option<String>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = self.schedule_notices.set(tx);
        rx
    }

    /// Passes a schedule notice on to the timer (dropped when none follows them).
    fn schedule_notice(&self, queue: Option<String>) {
        if let Some(tx) = self.schedule_notices.get() {
            let _ = tx.send(queue);
        }
    }

    /// This instance's id (see `Engine::instance`).
    pub(super) fn instance(&self) -> &str {
        &self.instance
    }

    /// Follows whether Redis answers (true) or not, as seen by the heartbeat.
    pub(super) fn redis_up(&self) -> watch::Receiver<bool> {
        self.redis_up.subscribe()
    }

    /// Whether Redis answered the last heartbeat.
    pub(super) fn redis_is_up(&self) -> bool {
        *self.redis_up.borrow()
    }

    /// Open worker streams.
    pub(super) fn stream_count(&self) -> usize {
        self.hub.stream_count()
    }

    /// The queues served by worker streams here, each with its dispatcher.
    pub(super) fn served_queues(&self) -> Vec<String> {
        self.hub.queues()
    }

    /// A queue got work: its dispatcher here should run.
    pub(super) fn wake(&self, queue: &str) {
        self.hub.wake(queue);
    }

    /// Opens a worker stream. Jobs and control messages arrive on the receiver; the stream
    /// lasts as long as the guard.
    /// `shards` holds, for each queue of `spec` in order, its physical queues (itself, or
    /// every shard of a sharded queue, shard 0 first): the stream serves them all.
    pub(super) fn open_stream(
        self: &Arc<Self>,
        mut spec: WorkerSpec,
        shards: &[Arc<[String]>],
    ) -> Result<(StreamGuard, mpsc::Receiver<StreamEvent>)> {
        self.background.check_open()?;
        if spec.queues.is_empty() || spec.queues.len() > MAX_STREAM_QUEUES {
            return Err(Error::invalid("queues", "must name 1 to 32 queues"));
        }
        for (i, q) in spec.queues.iter().enumerate() {
            validate_queue(q, &format!("queues[{i}]"))?;
        }
        if spec.queues.iter().collect::<HashSet<_>>().len() != spec.queues.len() {
            return Err(Error::invalid("queues", "must not repeat a queue"));
        }
        let max_in_flight = self.settings.limits.max_in_flight;
        if spec.max_in_flight == 0 || spec.max_in_flight > max_in_flight {
            return Err(Error::invalid("max_in_flight", format!("must be from 1 to {max_in_flight}")));
        }
        if spec.prefetch > max_in_flight {
            return Err(Error::invalid("prefetch", format!("must be from 0 to {max_in_flight}")));
        }
        if spec.worker_id.len() > 128 {
            return Err(Error::invalid("worker_id", "at most 128 bytes"));
        }
        if spec.labels.len() > 32 {
            return Err(Error::invalid("labels", "at most 32 entries"));
        }
        if shards.len() == spec.queues.len() {
            spec.queues = shards.iter().flat_map(|names| names.iter().cloned()).collect();
        }
        // Room for every job the credit allows plus the control messages about them.
        let credit = usize::try_from(spec.max_in_flight.saturating_add(spec.prefetch)).unwrap_or(usize::MAX);
        let (tx, rx) = mpsc::channel(credit.saturating_mul(2).saturating_add(8));
        let (id, fresh) = self.hub.open(spec, tx).ok_or(Error::ShuttingDown)?;
        telemetry::set_worker_streams(self.hub.stream_count());
        if !fresh.is_empty() {
            self.queues_changed.notify_one();
        }
        for (queue, wake) in fresh {
            self.dispatchers.spawn(dispatch::run(self.clone(), queue, wake));
        }
        Ok((StreamGuard { leases: self.clone(), id }, rx))
    }

    /// Tells the owner of a lease what happened to it: at once when it is this instance, else
    /// on the owner's pub/sub channel. A notice that gets lost is made up for by the owner's
    /// reconciliation within a few seconds.
    pub(super) async fn tell_owner(&self, notice: Notice, job_id: &JobId, token: &LeaseToken) {
        if token.instance() == self.instance {
            return self.apply(notice, job_id, token);
        }
        let channel = self.store.keys().instance_channel(token.instance());
        if let Err(e) = self.store.instances().publish(&channel, &notices::encode(notice, job_id, token)).await {
            warn!(error = %e, %job_id, ?notice, "could not tell the lease owner");
        }
    }

    /// Applies a notice about a lease held through a stream of this instance.
    fn apply(&self, notice: Notice, job_id: &JobId, token: &LeaseToken) {
        match notice {
            Notice::Release => self.answered(job_id, self.hub.release(job_id, token)),
            Notice::Revoke(reason) => self.hub.revoke(job_id, token, reason),
            Notice::StopStream => self.hub.stop_stream(token),
        }
    }

    /// A worker answered for a delivery of this instance (here or through another instance):
    /// the time it held the job goes to the run-time histogram. A revoked delivery's answer
    /// is not a run (it timed out or was cancelled under the worker).
    fn answered(&self, job_id: &JobId, released: Option<hub::Released>) {
        if let Some(released) = released.filter(|r| !r.revoked)
            && let Some(m) = telemetry::queue(crate::queue::shards::logical(&job_id.queue))
        {
            m.run.record(released.held_for);
        }
    }

    /// The trace context of a delivery this instance made and still holds.
    pub(super) fn trace_of(&self, job_id: &JobId, token: &LeaseToken) -> Option<TraceContext> {
        if token.instance() != self.instance {
            return None;
        }
        self.hub.trace_of(job_id, token)
    }

    /// Connected worker streams on every live instance, optionally only those serving `queue`.
    pub(super) async fn list_workers(&self, queue: Option<&str>) -> Result<Vec<WorkerView>> {
        workers::list(&self.store, queue).await
    }

    /// Hands leases back to the head of their queues, retrying while Redis is away: a lease
    /// that is never handed back would only return after this instance is declared dead.
    /// Returns false when some could not be handed back (they return through the reaper).
    async fn give_back(&self, held: Vec<hub::HeldLease>, lost: bool) -> bool {
        let mut all = true;
        let mut by_queue: HashMap<String, Vec<(String, String)>> = Default::default();
        for h in held {
            by_queue.entry(h.job_id.queue).or_default().push((h.job_id.ulid, h.token.into()));
        }
        for (queue, leases) in by_queue {
            let mut wait = Duration::from_millis(100);
            for tries in 1.. {
                match self.store.jobs().requeue(&queue, &leases, lost, self.settings.max_lost).await {
                    Ok(n) => {
                        info!(%queue, returned = n, lost, "leases handed back");
                        if let Some(m) = telemetry::queue(crate::queue::shards::logical(&queue)).filter(|_| lost) {
                            m.lost.increment(n);
                        }
                        break;
                    }
                    Err(e) if self.background.is_stopping() && tries >= 5 => {
                        warn!(%queue, error = %e, "giving up handing leases back; the reaper returns them after the lease TTL");
                        all = false;
                        break;
                    }
                    Err(e) => {
                        warn!(%queue, error = %e, "handing leases back failed; retrying");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(2));
                    }
                }
            }
        }
        all
    }

    /// Shutdown, first step: no new streams or credit, workers told to drain; returns after
    /// `grace` or once nothing is held.
    pub(super) async fn drain(&self, grace: Duration) {
        self.hub.drain_all(grace);
        let deadline = tokio::time::Instant::now() + grace;
        while self.hub.in_flight_total() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Shutdown: stops the dispatchers and waits for them (no lease round may complete after
    /// the hand-back).
    pub(super) async fn stop_dispatch(&self) {
        self.dispatch_stop.cancel();
        self.dispatchers.close();
        self.dispatchers.wait().await;
    }

    /// Shutdown, after the background was told to stop: hands back every lease still held (not
    /// as a lost delivery), leaves the instance registry and ends every stream.
    pub(super) async fn hand_back_all(&self) {
        let held = self.hub.held();
        self.hub.forget_all();
        // Only an instance that handed everything back may leave the registry: otherwise the
        // reaper of another instance must still see it die and return its jobs.
        if self.give_back(held, false).await
            && let Err(e) = self.store.instances().forget_instances(std::slice::from_ref(&self.instance)).await
        {
            warn!(error = %e, "could not leave the instance registry");
        }
        self.hub.disconnect_all();
        telemetry::set_worker_streams(0);
    }
}
