//! The timer of one instance: every schedule of every registered queue, each armed for its next
//! fire, and one task that sleeps until the earliest, fires what is due, and re-arms. No poll:
//! the task wakes for a due time, for a notice that a queue's schedules changed (published by
//! the schedule functions on the schedule channel, heard on the instance's one pub/sub
//! connection through `Leases::follow_schedules`), or for the slow resync below.
//!
//! A fire is claimed in Redis (`store::Schedules::fire`: a compare-and-set of how far the
//! schedule has fired, in the call that adds its jobs). Every instance fires every schedule, so
//! of the instances racing for a due time one adds its job and the others are refused with how
//! far it has now fired, which they adopt and re-arm from: no leader, no lock, and a schedule
//! keeps firing as long as one instance is up. The due schedules of one queue share a call (up
//! to `FIRES_PER_CALL`); queues and calls are fired concurrently.
//!
//! So that Redis is not asked twice for every due time, each schedule has an owner among the
//! live instances (those in the instance registry that heartbeat within `LIVE_WITHIN` of the
//! latest; rendezvous hashing of the instance ids with the schedule, so every instance that
//! reads the same registry picks the same owner, and an instance that joins or leaves moves
//! only its share). The owner fires a due time when it comes; the others `GRACE` later, and
//! only then learn (a refusal of a few bytes) that the owner's claim landed. When the owner is
//! gone, its due times are fired `GRACE` late by the others until the registry, read again
//! every `LIVE_EVERY`, no longer names it: nothing is lost, nothing fires twice. A due time
//! already past when a schedule is armed (a restart, a missed fire) is fired at once by every
//! instance, as before. The registry is only a hint: an instance that reads it differently, or
//! not at all, fires too early or too late, never twice.
//!
//! The owner claims an on-time fire `STAGE_AHEAD_MS` before its due time, so that an instant's
//! fires (a schedule's compare-and-set and its job built from the template: several times the
//! Redis work of a plain add) are done before it comes, and the job waits delayed until the due
//! time; at the due time the owner releases the queue's due delayed jobs
//! (`store::Schedules::release`, a fraction of a fire's work a job), with or without a worker
//! connected. A pause, change or delete of the schedule in between withdraws that job and owes
//! the due time again (`schedules_lib.lua`, `withdraw_staged`). A schedule that skips while its
//! last job is unfinished is not claimed ahead: whether it is finished is for the due time to
//! say. Should the owner be gone before the release, the other instances' fires of its schedules
//! (`GRACE_MS` after the due time) release the job: every fire first makes the queue's due
//! delayed jobs ready, as any worker's lease round does.
//!
//! The resync reloads every registered queue's schedules (the first page of `RESYNC_BATCH`
//! queues per round trip) every `RESYNC_EVERY` (after a failed one, every `RETRY_AFTER`) and
//! whenever the pub/sub connection is made again, since a notice
//! published while it was down is lost. A fire that fails (Redis away) is tried again after
//! `RETRY_AFTER`; due times it could not claim for longer than the on-time window become missed
//! fires, handled by the schedule's policy. So does a due time refused because the queue holds
//! its cap of waiting jobs (its `max_waiting` setting, else `--max-waiting`, checked inside
//! the fire as an add checks it): the schedule is looked at again once that time is past the
//! on-time window, and its policy skips it or runs it then, if there is room.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{sync::mpsc, time::Instant};
use tracing::{debug, warn};

use sha2::{Digest, Sha256};

use super::{
    Compiled, compile, now_ms,
    timing::{ON_TIME_WITHIN_MS, fire_identity},
};
use crate::{
    queue::{background::Background, leases::Leases},
    store::{Fire, FireJob, FireOutcome, Named, RELEASE_BATCH, Store, StoreError, StoredSchedule},
};

/// How often every registered queue's schedules are read again, in case a notice was lost.
const RESYNC_EVERY: Duration = Duration::from_secs(30);
/// How soon a failed resync or fire is tried again.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// Schedules fired in one call.
const FIRES_PER_CALL: usize = 100;
/// Schedules read per HSCAN page.
const PAGE: u32 = 200;
/// Queues whose first page of schedules the resync reads in one round trip.
const RESYNC_BATCH: usize = 100;
/// How long after a due time an instance that does not own the schedule fires it (in case the
/// owner is gone): well within the on-time window (`timing::ON_TIME_WITHIN_MS`), and longer
/// than the owner takes to add an instant's jobs under load.
const GRACE_MS: i64 = 250;
/// An instance whose heartbeat is this much older than the latest one owns no schedule (they
/// heartbeat at least once a second).
const LIVE_WITHIN: Duration = Duration::from_secs(3);
/// How often the live instances are read again while schedules are known.
const LIVE_EVERY: Duration = Duration::from_secs(2);
/// How long before its due time the owner claims an on-time fire (see the module doc): longer
/// than the fires of an instant take to be claimed under load, short beside any interval.
const STAGE_AHEAD_MS: i64 = 200;

/// `(queue, name)`: a schedule's identity.
type Key = (String, String);

/// What this instance knows of one schedule.
struct Known {
    revision: u64,
    fired_through: i64,
    paused: bool,
    compiled: Arc<Compiled>,
    /// Whether this instance owns it (fires its due times when they come, not `GRACE_MS` later).
    owned: bool,
    /// When it is armed for (epoch ms), if it is.
    armed: Option<i64>,
}

impl Known {
    /// Whether this instance claims the schedule's on-time fires ahead of their due time: it owns
    /// the schedule, and the schedule does not skip while its last job is unfinished.
    fn claims_ahead(&self) -> bool {
        self.owned && !self.compiled.skip_overlap
    }
}

/// Which live instance owns which schedule (see the module doc).
struct Owners {
    /// This instance's id.
    me: String,
    /// The live instances as last read, sorted; empty before the first read (then this
    /// instance owns everything).
    live: Vec<String>,
    /// When they were read.
    read_at: Option<Instant>,
}

impl Owners {
    /// Whether this instance owns the schedule: the live instance whose id hashed with the
    /// schedule's identity is highest (this one, when it is not among those read).
    fn owns(&self, (queue, name): &Key) -> bool {
        if !self.live.contains(&self.me) {
            return true;
        }
        let weight = |id: &String| {
            let digest = Sha256::new()
                .chain_update(id)
                .chain_update([0])
                .chain_update(queue)
                .chain_update([0])
                .chain_update(name)
                .finalize();
            let mut first = [0u8; 8];
            first.copy_from_slice(&digest[..8]);
            (u64::from_be_bytes(first), id.clone())
        };
        self.live.iter().max_by_key(|id| weight(id)).is_some_and(|owner| *owner == self.me)
    }
}

/// The schedules this instance knows, and the order they are due in.
struct Schedules {
    known: HashMap<Key, Known>,
    /// `(armed at, queue, name)` of every armed schedule.
    armed: BTreeSet<(i64, String, String)>,
    /// `(ready at, queue)` -> the jobs of the fires claimed ahead here that become ready then.
    releases: BTreeMap<(i64, String), u64>,
    owners: Owners,
}

impl Schedules {
    fn new(me: &str) -> Self {
        let owners = Owners { me: me.to_owned(), live: Vec::new(), read_at: None };
        Self { known: HashMap::new(), armed: BTreeSet::new(), releases: BTreeMap::new(), owners }
    }

    /// Takes in the live instances as read: each schedule whose owner changed is armed again.
    fn set_live(&mut self, live: Vec<String>, now: i64) {
        self.owners.read_at = Some(Instant::now());
        if live == self.owners.live {
            return;
        }
        debug!(live = ?live, "the live instances that own schedules");
        self.owners.live = live;
        let keys: Vec<Key> = self.known.keys().cloned().collect();
        for key in keys {
            let owned = self.owners.owns(&key);
            let Some(known) = self.known.get_mut(&key) else { continue };
            if known.owned != owned {
                known.owned = owned;
                if known.armed.is_some() {
                    self.arm(&key, now);
                }
            }
        }
    }

    /// Takes in a schedule as read from Redis (its spec compiled again only when its revision
    /// changed), and arms it for its next fire.
    fn adopt(&mut self, key: Key, stored: &StoredSchedule, now: i64) {
        let compiled = match self.known.get(&key) {
            Some(k) if k.revision == stored.revision => k.compiled.clone(),
            _ => match compile(&stored.spec) {
                Ok(c) => Arc::new(c),
                Err(detail) => {
                    warn!(queue = %key.0, name = %key.1, %detail, "a stored schedule does not read; not firing it");
                    self.forget(&key);
                    return;
                }
            },
        };
        self.disarm(&key);
        let known = Known {
            revision: stored.revision,
            fired_through: stored.fired_through_ms,
            paused: stored.paused,
            compiled,
            owned: self.owners.owns(&key),
            armed: None,
        };
        self.known.insert(key.clone(), known);
        self.arm(&key, now);
    }

    /// Arms a known schedule for its next fire (none while paused or when no due time is left):
    /// `STAGE_AHEAD_MS` before its next due time when this instance owns it and may claim it
    /// ahead, the due time itself when it may not, `GRACE_MS` after it when another instance
    /// owns it, or now when a due time is owed already.
    fn arm(&mut self, key: &Key, now: i64) {
        let Some(known) = self.known.get_mut(key) else { return };
        if let Some(at) = known.armed.take() {
            self.armed.remove(&(at, key.0.clone(), key.1.clone()));
        }
        if known.paused {
            return;
        }
        if let Some(at) = known.compiled.timetable.next_fire(known.fired_through, now) {
            let at = if at <= now {
                at
            } else if !known.owned {
                at + GRACE_MS
            } else if known.claims_ahead() {
                (at - STAGE_AHEAD_MS).max(now)
            } else {
                at
            };
            known.armed = Some(at);
            self.armed.insert((at, key.0.clone(), key.1.clone()));
        }
    }

    /// Arms a known schedule for `at`, whatever its timetable says (a retry).
    fn arm_at(&mut self, key: &Key, at: i64) {
        self.disarm(key);
        if let Some(known) = self.known.get_mut(key) {
            known.armed = Some(at);
            self.armed.insert((at, key.0.clone(), key.1.clone()));
        }
    }

    fn disarm(&mut self, key: &Key) {
        if let Some(at) = self.known.get_mut(key).and_then(|k| k.armed.take()) {
            self.armed.remove(&(at, key.0.clone(), key.1.clone()));
        }
    }

    fn forget(&mut self, key: &Key) {
        self.disarm(key);
        self.known.remove(key);
    }

    /// The schedules armed for `now` or earlier, disarmed.
    fn take_due(&mut self, now: i64) -> Vec<Key> {
        let mut due = Vec::new();
        while let Some((at, _, _)) = self.armed.first() {
            if *at > now {
                break;
            }
            let Some((_, queue, name)) = self.armed.pop_first() else { break };
            let key = (queue, name);
            if let Some(known) = self.known.get_mut(&key) {
                known.armed = None;
            }
            due.push(key);
        }
        due
    }

    /// Takes in all of one queue's schedules as read: adopts each, forgets those gone.
    fn take_queue(&mut self, queue: &str, read: Vec<Named>) {
        let now = now_ms();
        let gone: Vec<Key> =
            self.known.keys().filter(|(q, name)| q == queue && !read.iter().any(|(n, _)| n == name)).cloned().collect();
        for key in &gone {
            self.forget(key);
        }
        for (name, stored) in read {
            match stored {
                Ok(stored) => self.adopt((queue.to_owned(), name), &stored, now),
                Err(e) => {
                    warn!(%queue, %name, error = %e, "a stored schedule does not read; not firing it");
                    self.forget(&(queue.to_owned(), name));
                }
            }
        }
    }

    /// The queues of the known schedules.
    fn queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = self.known.keys().map(|(q, _)| q.clone()).collect();
        queues.sort_unstable();
        queues.dedup();
        queues
    }
}

/// The timer task (see the module doc). `notices` carries the `queue/name` of a schedule that
/// changed (a queue alone: all of its schedules), or None when every queue must be read again
/// (the pub/sub connection was made again).
pub(super) async fn run(
    store: Arc<Store>,
    leases: Arc<Leases>,
    background: Background,
    mut notices: mpsc::UnboundedReceiver<Option<String>>,
    max_waiting: Option<u64>,
) {
    let mut schedules = Schedules::new(leases.instance());
    let mut resync_at = Instant::now();
    loop {
        let armed = schedules.armed.first().map(|(at, _, _)| *at);
        let release = schedules.releases.first_key_value().map(|((at, _), _)| *at);
        let next = armed.into_iter().chain(release).min().map(instant_of);
        tokio::select! {
            _ = background.stopped() => return,
            _ = tokio::time::sleep_until(resync_at) => {
                resync_at = Instant::now() + match resync(&store, &mut schedules).await {
                    Ok(()) => RESYNC_EVERY,
                    Err(()) => RETRY_AFTER,
                };
            }
            notice = notices.recv() => match notice {
                Some(Some(notice)) => {
                    let reloaded = match notice.split_once('/') {
                        Some((queue, name)) => reload_one(&store, &mut schedules, queue, name).await,
                        None => reload(&store, &mut schedules, &notice).await,
                    };
                    if reloaded.is_err() {
                        resync_at = resync_at.min(Instant::now() + RETRY_AFTER);
                    }
                }
                Some(None) => resync_at = Instant::now(),
                None => return,
            },
            () = sleep_until_ms(next) => {
                release_due(&store, &leases, &mut schedules).await;
                fire_due(&store, &leases, &mut schedules, max_waiting).await;
            }
        }
    }
}

/// Sleeps until `at` (an Instant), or forever when nothing is armed.
async fn sleep_until_ms(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The Instant at which the instance's clock reads `ms` (epoch), to the microsecond.
fn instant_of(ms: i64) -> Instant {
    let target = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    match target.duration_since(SystemTime::now()) {
        Ok(ahead) => Instant::now() + ahead,
        Err(_) => Instant::now(),
    }
}

/// `RETRY_AFTER` in ms.
fn retry_ms() -> i64 {
    i64::try_from(RETRY_AFTER.as_millis()).unwrap_or(500)
}

/// Reads the live instances again, if they were read longer than `LIVE_EVERY` ago (or
/// `always`); a failure keeps the last.
async fn refresh_owners(store: &Store, schedules: &mut Schedules, always: bool) {
    if !always && schedules.owners.read_at.is_some_and(|at| at.elapsed() < LIVE_EVERY) {
        return;
    }
    match store.instances().live(LIVE_WITHIN).await {
        Ok(live) => schedules.set_live(live, now_ms()),
        Err(e) => debug!(error = %e, "could not read the live instances for the schedules"),
    }
}

/// Reads every registered queue's schedules (and those of the queues known here) again: the
/// first page of `RESYNC_BATCH` queues at a time in one round trip (most queues have no
/// schedule, and most that have fit one page), then the rest of any queue with more.
async fn resync(store: &Store, schedules: &mut Schedules) -> Result<(), ()> {
    refresh_owners(store, schedules, true).await;
    let mut queues = match store.instances().queues().await {
        Ok(q) => q,
        Err(e) => {
            debug!(error = %e, "could not list the queues for the schedules");
            return Err(());
        }
    };
    queues.extend(schedules.queues());
    queues.sort_unstable();
    queues.dedup();
    let mut result = Ok(());
    for batch in queues.chunks(RESYNC_BATCH) {
        let pages = match store.schedules().first_pages(batch, PAGE).await {
            Ok(pages) => pages,
            Err(e) => {
                debug!(error = %e, "could not read the queues' schedules");
                result = Err(());
                continue;
            }
        };
        for (queue, (next, mut read)) in batch.iter().zip(pages) {
            if next != 0 {
                match read_from(store, queue, next).await {
                    Ok(rest) => read.extend(rest),
                    Err(()) => {
                        result = Err(());
                        continue;
                    }
                }
            }
            schedules.take_queue(queue, read);
        }
    }
    result
}

/// Reads one queue's schedules again.
async fn reload(store: &Store, schedules: &mut Schedules, queue: &str) -> Result<(), ()> {
    let read = read_from(store, queue, 0).await?;
    schedules.take_queue(queue, read);
    Ok(())
}

/// The schedules of `queue`'s hash from HSCAN cursor `cursor` to the end.
async fn read_from(store: &Store, queue: &str, mut cursor: u64) -> Result<Vec<Named>, ()> {
    let mut read = Vec::new();
    loop {
        match store.schedules().page(queue, cursor, PAGE).await {
            Ok((next, page)) => {
                read.extend(page);
                if next == 0 {
                    return Ok(read);
                }
                cursor = next;
            }
            Err(e) => {
                debug!(%queue, error = %e, "could not read the queue's schedules");
                return Err(());
            }
        }
    }
}

/// Reads one schedule again (it changed): adopts it, or forgets it when it is gone.
async fn reload_one(store: &Store, schedules: &mut Schedules, queue: &str, name: &str) -> Result<(), ()> {
    let key = (queue.to_owned(), name.to_owned());
    match store.schedules().get(queue, name).await {
        Ok(Some(stored)) => schedules.adopt(key, &stored, now_ms()),
        Ok(None) => schedules.forget(&key),
        Err(e) => {
            debug!(%queue, %name, error = %e, "could not read the schedule");
            return Err(());
        }
    }
    Ok(())
}

/// Releases the jobs of the fires claimed here whose ready time has come: per queue, as many
/// release calls at once as their number needs, then one after the other while a call made a
/// whole batch ready (other delayed jobs of the queue may be due too). A queue whose release
/// fails is tried again after `RETRY_AFTER`.
async fn release_due(store: &Store, leases: &Leases, schedules: &mut Schedules) {
    let now = now_ms();
    let mut by_queue: HashMap<String, u64> = HashMap::new();
    while let Some(entry) = schedules.releases.first_entry() {
        if entry.key().0 > now {
            break;
        }
        let ((_, queue), jobs) = entry.remove_entry();
        *by_queue.entry(queue).or_default() += jobs;
    }
    let calls = by_queue.into_iter().map(|(queue, jobs)| async move {
        let released = release_queue(store, &queue, jobs, now).await;
        (queue, jobs, released)
    });
    for (queue, jobs, released) in futures::future::join_all(calls).await {
        match released {
            Ok(0) => {}
            Ok(released) => {
                debug!(%queue, released, "jobs of fires claimed ahead made ready");
                leases.wake(&queue);
            }
            Err(e) => {
                warn!(%queue, error = %e, "could not release the jobs of the queue's schedules; trying again");
                *schedules.releases.entry((now + retry_ms(), queue)).or_default() += jobs;
            }
        }
    }
}

/// Releases `queue`'s delayed jobs due at `now` (epoch ms), `jobs` of them expected (see
/// `release_due`).
async fn release_queue(store: &Store, queue: &str, jobs: u64, now: i64) -> Result<u64, StoreError> {
    let calls = (0..jobs.div_ceil(RELEASE_BATCH).max(1)).map(|_| store.schedules().release(queue, now));
    let mut released = 0;
    let mut more = false;
    for answer in futures::future::join_all(calls).await {
        let batch = answer?;
        released += batch;
        more |= batch == RELEASE_BATCH;
    }
    while more {
        let batch = store.schedules().release(queue, now).await?;
        released += batch;
        more = batch == RELEASE_BATCH;
    }
    Ok(released)
}

/// Fires every schedule that is due: the plan of each (`timing.rs`), one call per queue and
/// `FIRES_PER_CALL` schedules, the queues concurrently; then re-arms each from the outcome.
async fn fire_due(store: &Store, leases: &Leases, schedules: &mut Schedules, max_waiting: Option<u64>) {
    let now = now_ms();
    let mut by_queue: HashMap<String, Vec<Fire>> = HashMap::new();
    for key in schedules.take_due(now) {
        let Some(known) = schedules.known.get(&key) else { continue };
        let timetable = &known.compiled.timetable;
        let plan = timetable.plan(known.fired_through, now, known.compiled.missed).or_else(|| {
            known.claims_ahead().then(|| timetable.ahead(known.fired_through, now, STAGE_AHEAD_MS)).flatten()
        });
        let Some(plan) = plan else {
            schedules.arm(&key, now);
            continue;
        };
        let (queue, name) = &key;
        let jobs = plan
            .dues
            .iter()
            .map(|&due| {
                let (ulid, delay) = fire_identity(queue, name, due, known.compiled.jitter_ms);
                FireJob { ulid: ulid.to_string(), due_ms: due, ready_ms: due + i64::try_from(delay).unwrap_or(0) }
            })
            .collect();
        by_queue.entry(queue.clone()).or_default().push(Fire {
            name: name.clone(),
            revision: known.revision,
            fired_through_ms: known.fired_through,
            next_through_ms: plan.through,
            skip_overlap: known.compiled.skip_overlap,
            jobs,
        });
    }
    let calls = by_queue.iter().flat_map(|(queue, fires)| {
        fires
            .chunks(FIRES_PER_CALL)
            .map(move |chunk| async move { (queue, chunk, store.schedules().fire(queue, chunk, max_waiting).await) })
    });
    let answers = futures::future::join_all(calls).await;
    let fired_at = now;
    let now = now_ms();
    for (queue, chunk, answer) in answers {
        match answer {
            Ok(outcomes) => {
                let (mut added, mut full) = (0, 0);
                for (fire, outcome) in chunk.iter().zip(outcomes) {
                    let key = (queue.clone(), fire.name.clone());
                    match outcome {
                        FireOutcome::Fired(n) => {
                            added += n;
                            // Jobs that wait delayed (claimed ahead, or a jitter) are released here when ready.
                            for job in fire.jobs.iter().filter(|job| job.ready_ms > fired_at) {
                                *schedules.releases.entry((job.ready_ms, queue.clone())).or_default() += 1;
                            }
                            if let Some(known) = schedules.known.get_mut(&key) {
                                known.fired_through = fire.next_through_ms;
                            }
                            schedules.arm(&key, now);
                        }
                        FireOutcome::FiredElsewhere(through) => {
                            if let Some(known) = schedules.known.get_mut(&key) {
                                known.fired_through = through;
                            }
                            schedules.arm(&key, now);
                        }
                        FireOutcome::QueueFull(through) => {
                            full += 1;
                            if let Some(known) = schedules.known.get_mut(&key) {
                                known.fired_through = through;
                            }
                            // Looked at again once the refused due time is past the on-time
                            // window: a missed fire, which the policy runs or skips.
                            let missed_at = through + 1 + ON_TIME_WITHIN_MS + 1;
                            schedules.arm_at(&key, missed_at.max(now + retry_ms()));
                        }
                        FireOutcome::Refused(stored) => schedules.adopt(key, &stored, now),
                        FireOutcome::Gone => schedules.forget(&key),
                    }
                }
                if full > 0 {
                    warn!(%queue, schedules = full, "the queue holds its cap of waiting jobs: fires refused, missed-fire policy applies");
                }
                if added > 0 || full > 0 {
                    debug!(%queue, added, "schedules fired");
                    leases.wake(queue);
                }
            }
            Err(e) => {
                warn!(%queue, error = %e, "could not fire the queue's schedules; trying again");
                let retry = now + retry_ms();
                for fire in chunk {
                    schedules.arm_at(&(queue.clone(), fire.name.clone()), retry);
                }
            }
        }
    }
    refresh_owners(store, schedules, false).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(me: &str, live: &[&str]) -> Owners {
        Owners { me: me.into(), live: live.iter().map(|id| (*id).to_owned()).collect(), read_at: None }
    }

    #[test]
    fn each_schedule_has_one_owner_among_the_live_instances_and_they_share_them() {
        let live = ["a", "b", "c"];
        let views: Vec<Owners> = live.iter().map(|me| owners(me, &live)).collect();
        let mut owned_by = [0; 3];
        for n in 0..300 {
            let key = ("q".to_owned(), format!("s{n}"));
            let claims: Vec<usize> = (0..3).filter(|&i| views[i].owns(&key)).collect();
            assert_eq!(claims.len(), 1, "{key:?} has one owner");
            owned_by[claims[0]] += 1;
        }
        assert!(owned_by.iter().all(|&n| n > 60), "each owns a share: {owned_by:?}");
    }

    #[test]
    fn an_instance_that_leaves_moves_only_its_own_schedules_and_one_not_listed_owns_all() {
        let before = owners("a", &["a", "b", "c"]);
        let after = owners("a", &["a", "b"]);
        let gone = owners("c", &["a", "b", "c"]);
        for n in 0..200 {
            let key = ("q".to_owned(), format!("s{n}"));
            if before.owns(&key) {
                assert!(after.owns(&key), "{key:?} stays with a");
            } else if !gone.owns(&key) {
                assert!(!after.owns(&key), "{key:?} stays with b");
            }
        }
        let unlisted = owners("d", &["a", "b"]);
        assert!((0..50).all(|n| unlisted.owns(&("q".to_owned(), format!("s{n}")))));
    }
}
