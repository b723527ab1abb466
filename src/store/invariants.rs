//! The structural invariants of one queue, checked by reading whole structures. Meant for tests
//! (every integration test ends with it; no RPC or command exposes it); never on the hot path.
//!
//! - every job is in exactly one place: a ready list, delayed, active, completed, dead,
//!   cancelled, or pending inside its session — and has a record that agrees with that place;
//! - no record is in no place (orphan), and no key outside the layout exists;
//! - a completed job has an outcome, and nothing else has one;
//! - every lease has a deadline and is held by a registered instance, and every deadline has a
//!   lease;
//! - every session's counters match its jobs: `started` = its active jobs, `queued` = its
//!   released jobs not yet started;
//! - every idempotency tombstone bucket is a hash of key digests (`tombstones::is_field`) to ULIDs that expires
//!   exactly when its name says (`tombstones::expiry`); a tombstone may name a job that is gone;
//! - every schedule reads (`StoredSchedule::decode`, its template a valid job record) and names
//!   its last job by a ULID; that job may be gone.
//! - the queue's settings hash holds only the settings of `queue_settings.rs`, each with a value
//!   that reads. (The concurrency cap keeps no counter to check against the leases: the count it
//!   enforces is the active hash itself, so it cannot drift from them.)
//! - keyed jobs (`lua/limits_lib.lua`): every member of `keyed` is a ready job whose record has
//!   the keys of its group; every group with jobs is in exactly one of `key_due` and
//!   `key_parked`, and nothing else is; each concurrency key's count in `key_state` equals the
//!   live leases of jobs with that key, each flagged `k` (so a slot can never leak); TATs read.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use redis::AsyncCommands;

use super::{
    JobRecord, Lease, RecordState, Result, SettingField, StoredSchedule, StoredSettings, backend::Backend,
    sessions::SessionRecord, sessions::Sessions, tombstones,
};

/// One idempotency tombstone bucket as read.
struct Bucket {
    key: String,
    /// Its width and index, from its name.
    width_ms: u64,
    index: u64,
    /// Its expiry (PEXPIRETIME: -1 for none).
    expires_at: i64,
    /// Its entries, field (a key's digest) -> ULID.
    entries: HashMap<Vec<u8>, String>,
}

struct Snapshot {
    jobs: HashMap<String, Vec<u8>>,
    outcomes: HashMap<String, Vec<u8>>,
    active: HashMap<String, String>,
    deadlines: Vec<String>,
    delayed: Vec<String>,
    completed: Vec<String>,
    dead: Vec<String>,
    cancelled: Vec<String>,
    ready: Vec<String>,
    pending: Vec<String>,
    sessions: Vec<String>,
    instances: Vec<String>,
    stray: Vec<String>,
    buckets: Vec<Bucket>,
    schedules: HashMap<String, Vec<u8>>,
    schedule_states: HashMap<String, Vec<u8>>,
    settings: HashMap<String, String>,
    keyed: Vec<String>,
    key_due: Vec<String>,
    key_parked: Vec<String>,
    key_state: HashMap<String, String>,
}

/// The invariant check (see the module doc). It reads sessions through their part.
#[derive(Clone)]
pub struct Invariants {
    backend: Arc<Backend>,
    sessions: Sessions,
}

impl Invariants {
    pub(super) fn new(backend: Arc<Backend>, sessions: Sessions) -> Self {
        Self { backend, sessions }
    }

    async fn read_everything(&self, queue: &str) -> Result<Snapshot> {
        let keys = self.backend.queue_keys(queue);
        let instances_key = self.backend.keys().instances();
        let pattern = self.backend.keys().queue_pattern(queue);
        // The queue's keys all live on its slot: on a cluster, the SCAN goes to that master.
        let mut scanned = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch) = self.backend.scan_page(cursor, &pattern, 1000, Some(keys.jobs())).await?;
            scanned.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        self.backend
            .with_conn(async |c| {
                let mut ready = Vec::new();
                for key in keys.ready() {
                    let ids: Vec<String> = c.lrange(key, 0, -1).await?;
                    ready.extend(ids);
                }
                let mut stray = Vec::new();
                let mut buckets = Vec::new();
                let schedules = [keys.schedules(), keys.schedule_state()];
                for key in scanned.into_iter().filter(|k| !keys.all().contains(k) && !schedules.contains(k)) {
                    let Some((width_ms, index)) = keys.tombstone_bucket(&key) else {
                        stray.push(key);
                        continue;
                    };
                    let expires_at: i64 = redis::cmd("PEXPIRETIME").arg(&key).query_async(c).await?;
                    // -2: it expired since the SCAN saw it, as short windows' buckets do.
                    if expires_at != -2 {
                        let entries = c.hgetall(&key).await?;
                        buckets.push(Bucket { key, width_ms, index, expires_at, entries });
                    }
                }
                Ok(Snapshot {
                    jobs: c.hgetall(keys.jobs()).await?,
                    outcomes: c.hgetall(keys.outcomes()).await?,
                    active: c.hgetall(keys.active()).await?,
                    deadlines: c.zrange(keys.deadlines(), 0, -1).await?,
                    delayed: c.zrange(keys.delayed(), 0, -1).await?,
                    completed: c.lrange(keys.completed(), 0, -1).await?,
                    dead: c.zrange(keys.dead(), 0, -1).await?,
                    cancelled: c.zrange(keys.cancelled(), 0, -1).await?,
                    ready,
                    pending: c.zrange(keys.session_jobs(), 0, -1).await?,
                    sessions: c.hkeys(keys.sessions()).await?,
                    instances: c.zrange(&instances_key, 0, -1).await?,
                    stray,
                    buckets,
                    schedules: c.hgetall(keys.schedules()).await?,
                    schedule_states: c.hgetall(keys.schedule_state()).await?,
                    settings: c.hgetall(keys.settings()).await?,
                    keyed: c.zrange(keys.keyed(), 0, -1).await?,
                    key_due: c.zrange(keys.key_due(), 0, -1).await?,
                    key_parked: c.zrange(keys.key_parked(), 0, -1).await?,
                    key_state: c.hgetall(keys.key_state()).await?,
                })
            })
            .await
    }

    /// Every violation found, sorted; empty when the queue is consistent.
    pub async fn check_invariants(&self, queue: &str) -> Result<Vec<String>> {
        let snap = self.read_everything(queue).await?;
        let mut problems: Vec<String> = snap.stray.iter().map(|k| format!("key outside the layout: {k}")).collect();
        for bucket in &snap.buckets {
            let due = tombstones::expiry(bucket.width_ms, bucket.index);
            if u64::try_from(bucket.expires_at).ok() != Some(due) {
                problems.push(format!("tombstone bucket {} expires at {}, not {due}", bucket.key, bucket.expires_at));
            }
            for (field, ulid) in &bucket.entries {
                if !tombstones::is_field(field) {
                    problems.push(format!("tombstone {field:02x?} of {} is not a key's digest", bucket.key));
                }
                if ulid::Ulid::from_string(ulid).is_err() {
                    problems.push(format!("tombstone {field:02x?} of {} names no job: {ulid:?}", bucket.key));
                }
            }
        }

        for (name, raw) in &snap.schedules {
            match StoredSchedule::decode(raw, snap.schedule_states.get(name).map(Vec::as_slice)) {
                Err(e) => problems.push(format!("schedule {name}: {e}")),
                Ok(s) => {
                    if s.last_job.as_ref().is_some_and(|u| ulid::Ulid::from_string(u).is_err()) {
                        problems.push(format!("schedule {name} names its last job by no ULID: {:?}", s.last_job));
                    }
                }
            }
        }
        for name in snap.schedule_states.keys().filter(|name| !snap.schedules.contains_key(*name)) {
            problems.push(format!("the fire state of schedule {name}, which has no definition"));
        }

        if let Err(e) = StoredSettings::from_hash(&snap.settings) {
            problems.push(format!("queue settings: {e}"));
        }
        for field in snap.settings.keys() {
            if !SettingField::ALL.iter().any(|known| known.key() == field) {
                problems.push(format!("queue settings: unknown field {field:?}"));
            }
        }

        let pending_ids: Vec<String> =
            snap.pending.iter().map(|m| m.rsplit('/').next().unwrap_or_default().to_owned()).collect();
        let active_ids: Vec<String> = snap.active.keys().cloned().collect();
        // "<group>\0<order>\0<ULID>", the group "<concurrency key>\1<rate key>".
        let keyed: Vec<(&str, &str)> = snap
            .keyed
            .iter()
            .filter_map(|m| {
                let parsed = m.rsplit_once('\0').and_then(|(rest, ulid)| Some((rest.rsplit_once('\0')?.0, ulid)));
                if parsed.is_none() {
                    problems.push(format!("keyed member {m:?} does not read"));
                }
                parsed
            })
            .collect();
        let keyed_ids: Vec<String> = keyed.iter().map(|(_, ulid)| (*ulid).to_owned()).collect();
        let mut place: HashMap<&str, &str> = HashMap::new();
        for (where_, members) in [
            ("ready", &snap.ready),
            ("keyed", &keyed_ids),
            ("delayed", &snap.delayed),
            ("active", &active_ids),
            ("completed", &snap.completed),
            ("dead", &snap.dead),
            ("cancelled", &snap.cancelled),
            ("pending", &pending_ids),
        ] {
            for m in members {
                if let Some(other) = place.insert(m.as_str(), where_) {
                    problems.push(format!("job {m} is both {other} and {where_}"));
                }
            }
        }

        // Per session: (active jobs, released jobs not started) as found in the structures.
        // Jobs of a deleted session may stay active or released until they end.
        let mut found: HashMap<String, (u64, u64)> = HashMap::new();
        for (id, where_) in &place {
            let Some(raw) = snap.jobs.get(*id) else {
                problems.push(format!("job {id} is {where_} but has no record"));
                continue;
            };
            let rec = match JobRecord::decode(raw, snap.outcomes.get(*id).map(Vec::as_slice)) {
                Ok(rec) => rec,
                Err(e) => {
                    problems.push(format!("job {id}: {e}"));
                    continue;
                }
            };
            let ok = match *where_ {
                "ready" => rec.state == RecordState::Waiting && rec.rate_key.is_none() && rec.concurrency_key.is_none(),
                "keyed" => rec.state == RecordState::Waiting,
                // A waiting one in its ready form ahead of its ready time (a schedule's fire
                // claimed ahead) has no session and no key: promote_due only moves its id.
                "delayed" => {
                    matches!(rec.state, RecordState::Delayed | RecordState::Retrying)
                        || (rec.state == RecordState::Waiting
                            && rec.session.is_none()
                            && rec.rate_key.is_none()
                            && rec.concurrency_key.is_none())
                }
                "active" => matches!(rec.state, RecordState::Waiting | RecordState::Retrying | RecordState::Delayed),
                "completed" => rec.state == RecordState::Completed,
                "cancelled" => rec.state == RecordState::Cancelled,
                "pending" => matches!(rec.state, RecordState::Waiting | RecordState::Delayed),
                _ => rec.state == RecordState::Dead,
            };
            if !ok {
                problems.push(format!("job {id} is {where_} but its record says {:?}", rec.state));
            }
            if let Some(name) = rec.session_name() {
                let counts = found.entry(name.to_owned()).or_default();
                match *where_ {
                    "active" => counts.0 += 1,
                    "ready" | "delayed" => counts.1 += 1,
                    _ => {}
                }
            }
        }
        for id in snap.jobs.keys() {
            if !place.contains_key(id.as_str()) {
                problems.push(format!("orphaned record {id}"));
            }
        }
        for id in snap.outcomes.keys() {
            if place.get(id.as_str()) != Some(&"completed") {
                problems.push(format!("outcome of job {id}, which is not completed"));
            }
        }

        problems.extend(keyed_problems(&snap, &keyed));

        for name in &snap.sessions {
            let Some(SessionRecord { started, queued, .. }) = self.sessions.session(queue, name).await? else {
                continue;
            };
            let (active, released) = found.get(name).copied().unwrap_or_default();
            if (started, queued) != (active, released) {
                problems.push(format!(
                    "session {name} counts {started} started and {queued} queued, but has {active} active and {released} released jobs"
                ));
            }
        }
        let deadline_set: HashSet<&String> = snap.deadlines.iter().collect();
        let live: HashSet<&str> = snap.instances.iter().map(String::as_str).collect();
        for (id, lease) in &snap.active {
            if !deadline_set.contains(id) {
                problems.push(format!("active job {id} has no deadline"));
            }
            match Lease::parse(lease) {
                None => problems.push(format!("active job {id} has a malformed lease {lease:?}")),
                Some(l) => {
                    let instance = l.token.instance();
                    if !live.contains(instance) {
                        problems.push(format!("active job {id} is leased by unregistered instance {instance}"));
                    }
                }
            }
        }
        for id in &snap.deadlines {
            if !snap.active.contains_key(id) {
                problems.push(format!("deadline for job {id}, which is not active"));
            }
        }
        problems.sort();
        Ok(problems)
    }
}

/// The keyed jobs' structures against each other, the records and the leases (module doc).
fn keyed_problems(snap: &Snapshot, keyed: &[(&str, &str)]) -> Vec<String> {
    let mut problems = Vec::new();
    let record = |id: &str| snap.jobs.get(id).and_then(|raw| JobRecord::decode(raw, None).ok());
    let mut groups: HashSet<&str> = HashSet::new();
    for (group, ulid) in keyed {
        groups.insert(group);
        if let Some(rec) = record(ulid) {
            let want = format!(
                "{}\u{1}{}",
                rec.concurrency_key.as_deref().unwrap_or_default(),
                rec.rate_key.as_deref().unwrap_or_default()
            );
            if want != *group {
                problems.push(format!("keyed job {ulid} is in group {group:?}, but its keys make {want:?}"));
            }
        }
    }
    let due: HashSet<&str> = snap.key_due.iter().map(String::as_str).collect();
    let parked: HashSet<&str> = snap.key_parked.iter().map(String::as_str).collect();
    for group in &groups {
        match (due.contains(group), parked.contains(group)) {
            (true, true) => problems.push(format!("key group {group:?} is both due and parked")),
            (false, false) => problems.push(format!("key group {group:?} has jobs but is neither due nor parked")),
            _ => {}
        }
    }
    for group in due.iter().chain(&parked) {
        if !groups.contains(group) {
            problems.push(format!("key group {group:?} is due or parked but has no job"));
        }
    }
    let mut leases_by_key: HashMap<String, u64> = HashMap::new();
    for (id, lease) in &snap.active {
        let Some(key) = record(id).and_then(|r| r.concurrency_key) else { continue };
        let flagged = lease
            .rsplit_once('|')
            .is_some_and(|(_, flags)| flags.contains('k') && !flags.contains(|c: char| c.is_ascii_digit()));
        if !flagged {
            problems
                .push(format!("active job {id} has concurrency key {key:?} but its lease {lease:?} is not flagged k"));
        }
        *leases_by_key.entry(key).or_default() += 1;
    }
    for (field, value) in &snap.key_state {
        if let Some(key) = field.strip_prefix('a') {
            let live = leases_by_key.remove(key).unwrap_or_default();
            if value.parse::<u64>().ok() != Some(live) || live == 0 {
                problems.push(format!("concurrency key {key:?} counts {value} leases, but {live} are live"));
            }
        } else if field.strip_prefix('t').is_none_or(|_| value.parse::<f64>().is_err()) {
            problems.push(format!("key_state field {field:?} = {value:?} does not read"));
        }
    }
    for (key, live) in leases_by_key {
        problems.push(format!("concurrency key {key:?} counts no lease, but {live} are live"));
    }
    problems
}
