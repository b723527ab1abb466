//! Job events: every transition is appended to the queue's capped Redis stream by the same
//! script that makes it, so events are exactly as ordered and as durable as the transitions.
//!
//! Per queue with followers here, one tailer task reads the stream with a blocking read on a
//! connection of its own (on a Redis Cluster, to the master of the queue's slot alone, made
//! afresh after a failed read, which finds a moved slot's new master) and fans events out to local followers (WatchJob, Subscribe) through
//! a broadcast channel: followers cost memory, not Redis connections. A follower first joins the
//! broadcast, then reads what it needs from the stream (a job snapshot, or a resume range), and
//! skips broadcast events it has already seen: nothing falls between the two.
//!
//! Owns: the tailers (one task per queue with followers here, ended when its last follower
//! leaves) and one task per follower, all on the background tracker (`background`, the one room
//! it calls).

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use tokio::sync::{Mutex, broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{
    background::Background,
    error::{Error, Result},
    job::{JobId, JobState, JobView, from_ms},
};
use crate::store::{Store, StoredEvent, event_order, is_event_cursor};

const BLOCK: Duration = Duration::from_millis(1_000);
/// What separates the shards' positions in a sharded queue's event cursor (outside the
/// alphabet of a position, `ms-seq` or `ms-seq.index`).
const SHARD_CURSOR_SEPARATOR: &str = ",";
const BROADCAST_CAPACITY: usize = 4_096;

/// What happened to a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Ready to run (added, promoted, retried or handed back).
    Waiting,
    /// Added with a delay or a run time.
    Delayed,
    /// Delivered to a worker.
    Active,
    /// The worker reported progress.
    Progress,
    /// An attempt failed; it runs again at `run_at`.
    Retrying,
    /// Completed.
    Completed,
    /// Dead; `error` says why.
    Dead,
    /// Cancelled.
    Cancelled,
}

impl EventKind {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => EventKind::Waiting,
            2 => EventKind::Delayed,
            3 => EventKind::Active,
            4 => EventKind::Progress,
            5 => EventKind::Retrying,
            6 => EventKind::Completed,
            7 => EventKind::Dead,
            8 => EventKind::Cancelled,
            _ => return None,
        })
    }

    /// Whether the job is done for good (completed, dead or cancelled).
    fn is_final(self) -> bool {
        matches!(self, EventKind::Completed | EventKind::Dead | EventKind::Cancelled)
    }
}

/// One event as callers see it.
#[derive(Clone, Debug)]
pub struct EventView {
    /// Resume point: pass it back to Subscribe to continue after this event.
    pub cursor: String,
    /// The job.
    pub job_id: JobId,
    /// What happened.
    pub kind: EventKind,
    /// The attempt it concerns.
    pub attempt: u32,
    /// The error, for retrying and dead; empty otherwise.
    pub error: String,
    /// When a delayed or retrying job becomes ready.
    pub run_at: Option<SystemTime>,
    /// The progress reported, for progress; empty otherwise.
    pub progress: Vec<u8>,
    /// When it happened, on the Redis server's clock (for the first event of a watch: when the
    /// job was added, last started or finished).
    pub time: SystemTime,
    /// The result, for a completed job followed by WatchJob.
    pub result: Option<Vec<u8>>,
}

impl EventView {
    fn from_stored(queue: &str, e: &StoredEvent) -> Option<Self> {
        Some(Self {
            cursor: e.id.clone(),
            job_id: JobId::new(queue, &e.ulid),
            kind: EventKind::from_code(e.kind)?,
            attempt: e.attempt,
            error: e.error.clone(),
            run_at: (e.run_at_ms > 0).then(|| from_ms(e.run_at_ms)),
            progress: e.progress.clone(),
            // The stream entry's id starts with Redis's own clock, in milliseconds.
            time: UNIX_EPOCH + Duration::from_millis(event_order(&e.id).0),
            result: None,
        })
    }

    /// The event that describes where a job is now (the first message of WatchJob).
    fn from_view(view: &JobView, cursor: &str) -> Self {
        let kind = match view.state {
            JobState::Waiting => EventKind::Waiting,
            JobState::Delayed => EventKind::Delayed,
            JobState::Active => EventKind::Active,
            JobState::Retrying => EventKind::Retrying,
            JobState::Completed => EventKind::Completed,
            JobState::Dead => EventKind::Dead,
            JobState::Cancelled => EventKind::Cancelled,
        };
        Self {
            cursor: cursor.to_owned(),
            job_id: view.id.clone(),
            kind,
            attempt: view.attempts,
            error: view.last_error.clone().unwrap_or_default(),
            run_at: view.run_at,
            progress: view.progress.clone().unwrap_or_default(),
            time: view.finished_at.or(view.started_at).unwrap_or(view.created_at),
            result: view.result.clone().filter(|_| kind == EventKind::Completed),
        }
    }
}

#[derive(Clone, Debug)]
enum FeedItem {
    Event(Arc<StoredEvent>),
    /// The tailer lost its place (Redis was away and events were trimmed meanwhile).
    Gap,
}

struct Tailer {
    tx: broadcast::Sender<FeedItem>,
    stop: CancellationToken,
}

impl Drop for Tailer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A follower's view of one queue's events; the tailer runs while any feed lives.
struct Feed {
    rx: broadcast::Receiver<FeedItem>,
    _tailer: Arc<Tailer>,
}

/// The events room: the tailers and the followers of this instance.
pub(super) struct Events {
    store: Arc<Store>,
    background: Background,
    tailers: Mutex<HashMap<String, Weak<Tailer>>>,
}

impl Events {
    pub(super) fn new(store: Arc<Store>, background: Background) -> Self {
        Self { store, background, tailers: Mutex::default() }
    }

    /// The queues a WatchJob or Subscribe here follows; forgets the tailers that ended (the
    /// idle sweep). Skips a round (answers None) while a follower is being set up.
    pub(super) fn followed_queues(&self) -> Option<Vec<String>> {
        let mut tailers = self.tailers.try_lock().ok()?;
        tailers.retain(|_, t| t.strong_count() > 0);
        Some(tailers.keys().cloned().collect())
    }

    async fn feed(self: &Arc<Self>, queue: &str) -> Result<Feed> {
        let mut tailers = self.tailers.lock().await;
        if let Some(tailer) = tailers.get(queue).and_then(Weak::upgrade) {
            return Ok(Feed { rx: tailer.tx.subscribe(), _tailer: tailer });
        }
        let (start, _) = self.store.events().events_bounds(queue).await?;
        let (tx, rx) = broadcast::channel(BROADCAST_CAPACITY);
        let tailer = Arc::new(Tailer { tx: tx.clone(), stop: self.background.child_token() });
        tailers.retain(|_, t| t.strong_count() > 0);
        tailers.insert(queue.to_owned(), Arc::downgrade(&tailer));
        self.background.spawn(tail(self.clone(), queue.to_owned(), start, tx, tailer.stop.clone()));
        Ok(Feed { rx, _tailer: tailer })
    }

    /// Follows one job: its current state at once, then each transition, ending after a final
    /// state (completed, dead, cancelled).
    pub(super) async fn watch(self: &Arc<Self>, job_id: &JobId) -> Result<mpsc::Receiver<Result<EventView>>> {
        let feed = self.feed(&job_id.queue).await?;
        let snapshot =
            self.store.admin().snapshot(&job_id.queue, &job_id.ulid).await?.ok_or_else(|| job_id.not_found())?;
        let (tx, rx) = mpsc::channel(64);
        let room = self.clone();
        let job_id = job_id.clone();
        self.background.spawn(async move {
            // Own the whole feed (its tailer too), not just the receiver the loop reads.
            let mut feed = feed;
            let mut last = snapshot.last_event.clone();
            let view = JobView::new(job_id.clone(), snapshot.record, snapshot.lease);
            let first = EventView::from_view(&view, &last);
            let done = first.kind.is_final();
            if tx.send(Ok(first)).await.is_err() || done {
                return;
            }
            loop {
                let item = tokio::select! {
                    _ = room.background.stopped() => return,
                    _ = tx.closed() => return,
                    item = feed.rx.recv() => item,
                };
                let events: Vec<Arc<StoredEvent>> = match item {
                    Ok(FeedItem::Event(e)) => vec![e],
                    Ok(FeedItem::Gap) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        match room.store.events().events_after(&job_id.queue, &last, 10_000).await {
                            Ok(events) => events.into_iter().map(Arc::new).collect(),
                            Err(e) => {
                                let _ = tx.send(Err(e.into())).await;
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                for event in events {
                    if event.ulid != job_id.ulid || event_order(&event.id) <= event_order(&last) {
                        continue;
                    }
                    last = event.id.clone();
                    let Some(mut view) = EventView::from_stored(&job_id.queue, &event) else { continue };
                    if view.kind == EventKind::Completed {
                        view.result = room
                            .store
                            .admin()
                            .info(&job_id.queue, &job_id.ulid)
                            .await
                            .ok()
                            .flatten()
                            .and_then(|(r, _)| r.result);
                    }
                    let done = view.kind.is_final();
                    if tx.send(Ok(view)).await.is_err() || done {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    /// Every event of a queue after `cursor` (or from now), live, until the caller leaves; the
    /// queue's physical queues (checked names) are `shards`, shard 0 first (one for an
    /// unsharded queue). A cursor older than the oldest kept event is refused: the caller would
    /// miss events.
    ///
    /// A sharded queue's events are those of every shard, each shard's in the order of its
    /// transitions, the shards interleaved as their events are read (no order across shards).
    /// Its cursor is one position per shard, in shard order, joined by
    /// [`SHARD_CURSOR_SEPARATOR`]: each event's cursor holds its own position in its shard and
    /// the last position delivered in every other, so resuming from it misses and repeats
    /// nothing in any shard. One position given for a sharded queue stands for that position
    /// (a stream entry id begins with the Redis clock, in ms) in every shard. An unsharded
    /// queue's cursor is its one position, as it always was.
    pub(super) async fn subscribe(
        self: &Arc<Self>,
        shards: &[String],
        cursor: Option<&str>,
    ) -> Result<mpsc::Receiver<Result<EventView>>> {
        if let [queue] = shards {
            return Ok(self.follow(queue, cursor).await?.1);
        }
        let positions: Vec<Option<&str>> = match cursor {
            None => vec![None; shards.len()],
            // One position (`ms-seq`, a point in time): that point in every shard.
            Some(cursor) if !cursor.contains(SHARD_CURSOR_SEPARATOR) => vec![Some(cursor); shards.len()],
            Some(cursor) => {
                let positions: Vec<&str> = cursor.split(SHARD_CURSOR_SEPARATOR).collect();
                if positions.len() != shards.len() {
                    return Err(Error::invalid(
                        "cursor",
                        format!("is not a cursor of this queue, which has {} shards", shards.len()),
                    ));
                }
                positions.into_iter().map(Some).collect()
            }
        };
        let mut last = Vec::with_capacity(shards.len());
        let mut feeds = Vec::with_capacity(shards.len());
        for (index, (shard, position)) in shards.iter().zip(positions).enumerate() {
            let (start, rx) = self.follow(shard, position).await?;
            last.push(start);
            feeds.push(ReceiverStream::new(rx).map(move |item| (index, item)));
        }
        let (tx, rx) = mpsc::channel(256);
        let room = self.clone();
        self.background.spawn(async move {
            // Dropping the shards' receivers (on return) ends their followers.
            let mut merged = futures::stream::select_all(feeds);
            loop {
                let next = tokio::select! {
                    _ = room.background.stopped() => return,
                    _ = tx.closed() => return,
                    next = merged.next() => next,
                };
                let Some((index, item)) = next else { return };
                let item = item.map(|mut view| {
                    if let Some(position) = last.get_mut(index) {
                        position.clone_from(&view.cursor);
                    }
                    view.cursor = last.join(SHARD_CURSOR_SEPARATOR);
                    view
                });
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    /// Every event of one physical queue (a queue, or a shard of a sharded one) after `cursor`
    /// (or from now), live; and the position it starts after.
    async fn follow(
        self: &Arc<Self>,
        queue: &str,
        cursor: Option<&str>,
    ) -> Result<(String, mpsc::Receiver<Result<EventView>>)> {
        if cursor.is_some_and(|c| !is_event_cursor(c)) {
            return Err(Error::invalid("cursor", "is not a cursor this server issued"));
        }
        let feed = self.feed(queue).await?;
        let (latest, trimmed) = self.store.events().events_bounds(queue).await?;
        let start = cursor.map_or(latest, str::to_owned);
        check_not_trimmed(&start, trimmed.as_deref())?;
        let (tx, rx) = mpsc::channel(256);
        let room = self.clone();
        let queue = queue.to_owned();
        let from = start.clone();
        self.background.spawn(async move {
            // Own the whole feed (its tailer too), not just the receiver the loop reads.
            let mut feed = feed;
            let mut last = from;
            if catch_up(&room, &queue, &mut last, &tx).await.is_err() {
                return;
            }
            loop {
                let item = tokio::select! {
                    _ = room.background.stopped() => return,
                    _ = tx.closed() => return,
                    item = feed.rx.recv() => item,
                };
                match item {
                    Ok(FeedItem::Event(event)) => {
                        if event_order(&event.id) <= event_order(&last) {
                            continue;
                        }
                        last = event.id.clone();
                        if let Some(view) = EventView::from_stored(&queue, &event)
                            && tx.send(Ok(view)).await.is_err()
                        {
                            return;
                        }
                    }
                    Ok(FeedItem::Gap) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        if catch_up(&room, &queue, &mut last, &tx).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok((start, rx))
    }
}

/// Refuses a cursor older than the oldest event kept, once events have been trimmed.
fn check_not_trimmed(cursor: &str, oldest_kept: Option<&str>) -> Result<()> {
    if let Some(oldest) = oldest_kept
        && event_order(cursor) < event_order(oldest)
    {
        return Err(Error::OutOfRange(format!(
            "cursor: events after {cursor} were trimmed (the oldest kept is {oldest}); \
             resubscribe without a cursor and reconcile with GetJobInfo/ListJobs"
        )));
    }
    Ok(())
}

/// Sends every stored event after `last`; an error has been sent (or the caller left) on Err.
async fn catch_up(
    room: &Events,
    queue: &str,
    last: &mut String,
    tx: &mpsc::Sender<Result<EventView>>,
) -> std::result::Result<(), ()> {
    loop {
        let read = async {
            let (_, trimmed) = room.store.events().events_bounds(queue).await?;
            check_not_trimmed(last, trimmed.as_deref())?;
            Ok::<_, Error>(room.store.events().events_after(queue, last, 1_000).await?)
        };
        let events = match read.await {
            Ok(events) => events,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return Err(());
            }
        };
        if events.is_empty() {
            return Ok(());
        }
        for event in events {
            *last = event.id.clone();
            if let Some(view) = EventView::from_stored(queue, &event) {
                tx.send(Ok(view)).await.map_err(|_| ())?;
            }
        }
    }
}

/// Reads one queue's stream from `start` and broadcasts each event until stopped.
async fn tail(
    room: Arc<Events>,
    queue: String,
    start: String,
    tx: broadcast::Sender<FeedItem>,
    stop: CancellationToken,
) {
    let mut last = start;
    let mut wait = Duration::from_millis(100);
    while !stop.is_cancelled() {
        let mut conn = tokio::select! {
            _ = stop.cancelled() => return,
            c = room.store.events().blocking_connection(&queue, BLOCK) => match c {
                Ok(c) => c,
                Err(e) => {
                    debug!(%queue, error = %e, "event tailer cannot connect");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                    continue;
                }
            },
        };
        wait = Duration::from_millis(100);
        if let Ok((_, Some(oldest))) = room.store.events().events_bounds(&queue).await
            && event_order(&last) < event_order(&oldest)
        {
            // Reading on from `last` yields everything still kept; followers re-check for loss.
            let _ = tx.send(FeedItem::Gap);
        }
        loop {
            let read = tokio::select! {
                _ = stop.cancelled() => return,
                r = room.store.events().read_events(&mut conn, &queue, &last, BLOCK) => r,
            };
            match read {
                Ok(events) => {
                    for event in events {
                        last = event.entry.clone();
                        let _ = tx.send(FeedItem::Event(Arc::new(event)));
                    }
                }
                Err(e) => {
                    warn!(%queue, error = %e, "event tailer lost redis; reconnecting");
                    break;
                }
            }
        }
    }
}
