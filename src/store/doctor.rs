//! The doctor: checks a live Redis against the layout's invariants and mends what it finds, for
//! operators (`jobwire doctor`). It reads beside a busy server: every structure is walked in
//! pages of [`PAGE`] (SCAN, HSCAN, LRANGE and ZRANGE windows), each page checked with one
//! pipelined round trip of HMGET/ZMSCORE lookups, and no Lua call runs longer than one job's
//! repair.
//!
//! What it checks, per queue: every job is in exactly one place and that place fits its
//! record's state (ready, delayed, active, pending in its session, completed, dead, cancelled;
//! a job listed twice counts as two places); every place's job has a record and every record a
//! place; every lease has a job, a deadline and a registered, readable holder, every deadline a
//! lease, every outcome a completed job; each session's counts match its jobs, its state and
//! expiry entries point to it and the queue's session sequence is ahead of every job's; every
//! idempotency tombstone names a ULID and expires. Globally: the schema version, keys under the
//! prefix outside the layout, and queues that have keys but no entry in the queue registry.
//!
//! Memory: pages, plus the ids of the jobs in the ready and completed lists (a list has no
//! O(1) membership test, so the walk of every other structure asks these sets, sized once from
//! the lists' lengths), the active ids, and one entry per session and per queue: under 60 bytes
//! per ready or retained completed job (BENCHMARKS.md, "doctor"), nothing per job elsewhere.
//!
//! A finding seen while the server moves a job can be a job caught between two places, so each
//! is checked once more inside Redis, by its repair function in `check` mode, before it is
//! reported; `repair` runs the same functions in `fix` mode, which change nothing when the
//! condition no longer holds (`lua/doctor_*.lua`). The few global findings are mended with one
//! idempotent command each: the registry and the schema live on other Cluster slots than any
//! queue, so no queue function could touch them.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Arc,
};

use redis::{AsyncCommands, Cmd};
use serde::Serialize;

use super::{
    Instances, Result, SCHEMA_VERSION, Sessions,
    args::QueueFunction,
    backend::Backend,
    keys::QueueKeys,
    record::{JobRecord, Lease, RecordState},
    scripts::{Function, Scripts},
};

/// Entries read per page of any structure.
const PAGE: usize = 1000;
/// Findings kept per run; past it the report says it was cut short (repair, then run again).
const MAX_FINDINGS: usize = 10_000;

/// What kind of damage a finding is (serialized as its [`name`](Kind::name)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// The schema version is missing, unreadable or another release's.
    Schema,
    /// A key under the prefix that the layout does not know.
    StrayKey,
    /// A queue that has keys but no entry in the queue registry.
    UnregisteredQueue,
    /// A lease (active entry) whose job has no record.
    LeaseWithoutJob,
    /// A lease with no deadline: the job would never time out.
    LeaseWithoutDeadline,
    /// A lease held by an instance missing from the instance registry, or unreadable.
    LeaseOfUnknownInstance,
    /// A deadline of a job that holds no lease.
    DeadlineWithoutLease,
    /// A job listed in a place with no record.
    MissingRecord,
    /// A job in a place its record's state does not fit.
    WrongPlace,
    /// A job in two places (or listed twice in one).
    TwoPlaces,
    /// A record in no place.
    OrphanedRecord,
    /// An outcome of a job that is not in the completed list.
    StrayOutcome,
    /// A record that does not decode.
    CorruptRecord,
    /// A session whose started/queued counts differ from its jobs.
    SessionCounts,
    /// The queue's session sequence is behind a sequence number in use.
    SessionSequence,
    /// A session state or expiry entry with no session, or a session with no expiry entry.
    SessionKeys,
    /// An idempotency tombstone with no expiry, or one that names no ULID.
    IdempotencyKey,
}

impl Kind {
    /// The kebab-case name printed in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Schema => "schema",
            Kind::StrayKey => "stray-key",
            Kind::UnregisteredQueue => "unregistered-queue",
            Kind::LeaseWithoutJob => "lease-without-job",
            Kind::LeaseWithoutDeadline => "lease-without-deadline",
            Kind::LeaseOfUnknownInstance => "lease-of-unknown-instance",
            Kind::DeadlineWithoutLease => "deadline-without-lease",
            Kind::MissingRecord => "missing-record",
            Kind::WrongPlace => "wrong-place",
            Kind::TwoPlaces => "two-places",
            Kind::OrphanedRecord => "orphaned-record",
            Kind::StrayOutcome => "stray-outcome",
            Kind::CorruptRecord => "corrupt-record",
            Kind::SessionCounts => "session-counts",
            Kind::SessionSequence => "session-sequence",
            Kind::SessionKeys => "session-keys",
            Kind::IdempotencyKey => "idempotency-key",
        }
    }
}

impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// One piece of damage.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// What kind.
    pub kind: Kind,
    /// The queue it is in; None for a global finding.
    pub queue: Option<String>,
    /// What it is about: a job's ULID, a session's name, a key.
    pub subject: String,
    /// What is wrong, for people.
    pub detail: String,
    #[serde(skip)]
    mend: Option<Mend>,
}

/// How a finding is mended.
#[derive(Clone, Debug)]
enum Mend {
    /// `doctor_unplace.lua`: take the job (or deadline, outcome) out of the place.
    Unplace(&'static str),
    /// `doctor_place.lua`: put the orphaned record where its state says.
    Place,
    /// `doctor_lease.lua`: `deadline` or `return`, with the lease as seen.
    Lease(&'static str, String),
    /// `doctor_session.lua`: `counts` (seen last update, started, queued; found started,
    /// queued), `seq` or `keys`.
    Session(&'static str, Vec<String>),
    /// `doctor_tombstone.lua`.
    Tombstone,
    /// UNLINK: the key's name is the condition, and no race changes a name.
    DeleteKey,
    /// SADD to the queue registry: adding a member twice changes nothing.
    Register,
    /// SET NX of the schema version: only where there is none.
    SetSchema,
}

/// What a doctor run found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Queues checked.
    pub queues: u64,
    /// Job records read.
    pub jobs: u64,
    /// Keys under the prefix.
    pub keys: u64,
    /// The damage found, in the order found.
    pub findings: Vec<Finding>,
    /// Whether the run stopped collecting findings at its limit (repair and run again).
    pub truncated: bool,
}

/// What `repair` did about one finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Mended.
    Repaired,
    /// Right by the time the repair looked again (a live server moved on): nothing changed.
    AlreadyRight,
    /// Not mended automatically (a corrupt record, another release's schema): for a person.
    LeftAlone,
}

/// Where a job can be. The order is precedence: a job in two places that both fit its state
/// belongs to the earlier one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Active,
    Ready,
    Delayed,
    Pending,
    Completed,
    Dead,
    Cancelled,
}

impl Place {
    fn name(self) -> &'static str {
        match self {
            Place::Active => "active",
            Place::Ready => "ready",
            Place::Delayed => "delayed",
            Place::Pending => "pending",
            Place::Completed => "completed",
            Place::Dead => "dead",
            Place::Cancelled => "cancelled",
        }
    }

    /// Whether a job whose record says `state` may be here (as `doctor_unplace.lua` judges).
    fn fits(self, state: RecordState) -> bool {
        use RecordState as S;
        match self {
            Place::Active => matches!(state, S::Waiting | S::Delayed | S::Retrying),
            Place::Ready => state == S::Waiting,
            Place::Delayed => matches!(state, S::Delayed | S::Retrying),
            Place::Pending => matches!(state, S::Waiting | S::Delayed),
            Place::Completed => state == S::Completed,
            Place::Dead => state == S::Dead,
            Place::Cancelled => state == S::Cancelled,
        }
    }
}

/// Where one job of a page is, apart from the place being walked.
struct Row {
    record: Option<Vec<u8>>,
    outcome: Option<Vec<u8>>,
    lease: Option<String>,
    delayed: bool,
    dead: bool,
    cancelled: bool,
    pending: bool,
}

/// The doctor (see the module doc).
#[derive(Clone)]
pub struct Doctor {
    backend: Arc<Backend>,
    sessions: Sessions,
    instances: Instances,
}

impl Doctor {
    pub(super) fn new(backend: Arc<Backend>, sessions: Sessions, instances: Instances) -> Self {
        Self { backend, sessions, instances }
    }

    /// Checks the whole key space under the prefix (or, with `only`, one queue's keys and the
    /// schema version); each queue finding was confirmed inside Redis.
    pub async fn examine(&self, only: Option<&str>) -> Result<Report> {
        let mut report = Report::default();
        self.check_schema(&mut report).await?;
        let queues = self.scan_keys(only, &mut report).await?;
        let registered: HashSet<String> = self.instances.queues().await?.into_iter().collect();
        for queue in &queues {
            if !registered.contains(queue) {
                let detail = "has keys but no entry in the queue registry: the reaper and the sweep skip it".into();
                push(&mut report, Kind::UnregisteredQueue, None, queue, detail, Some(Mend::Register));
            }
        }
        let live = self.live_instances().await?;
        for queue in &queues {
            report.queues += 1;
            let mut walk = QueueWalk::new(self, queue, &live);
            walk.run().await?;
            report.jobs += walk.records;
            for finding in walk.findings {
                if report.findings.len() >= MAX_FINDINGS {
                    report.truncated = true;
                    break;
                }
                if self.still_holds(&finding).await? {
                    report.findings.push(finding);
                }
            }
        }
        Ok(report)
    }

    /// Mends each finding (see the module doc), re-checking it inside Redis first.
    pub async fn repair(&self, findings: &[Finding]) -> Result<Vec<Outcome>> {
        let mut outcomes = Vec::with_capacity(findings.len());
        for finding in findings {
            outcomes.push(self.mend(finding, "fix").await?);
        }
        Ok(outcomes)
    }

    /// Whether the condition of a finding still holds, asked of its repair function in
    /// `check` mode (which changes nothing); a finding with no repair always holds.
    async fn still_holds(&self, finding: &Finding) -> Result<bool> {
        Ok(self.mend(finding, "check").await? != Outcome::AlreadyRight)
    }

    /// Runs a finding's repair in `mode`: `check` reports whether the condition holds
    /// (`Repaired` standing for "it would be"), `fix` mends it if it still does.
    async fn mend(&self, finding: &Finding, mode: &str) -> Result<Outcome> {
        let Some(mend) = &finding.mend else { return Ok(Outcome::LeftAlone) };
        let queue = finding.queue.as_deref().unwrap_or_default();
        let subject = finding.subject.as_str();
        let mut args = vec![mode.to_owned()];
        let changed: i64 = match mend {
            Mend::Unplace(place) => {
                args.extend([(*place).to_owned(), subject.to_owned()]);
                self.backend.call(queue, &Unplace(args)).await?
            }
            Mend::Place => {
                args.push(subject.to_owned());
                self.backend.call(queue, &PlaceRecord(args)).await?
            }
            Mend::Lease("return", seen) if self.holder_is_registered(seen).await? => 0,
            Mend::Lease(what, seen) => {
                args.extend([(*what).to_owned(), subject.to_owned(), seen.clone()]);
                self.backend.call(queue, &MendLease(args)).await?
            }
            Mend::Session(what, counts) => {
                args.extend([(*what).to_owned(), subject.to_owned()]);
                args.extend(counts.iter().cloned());
                self.backend.call(queue, &MendSession(args)).await?
            }
            Mend::Tombstone => self.backend.call(queue, &DropTombstone { key: subject.to_owned(), mode: args }).await?,
            _ if mode == "check" => 1,
            Mend::DeleteKey => self.backend.with_conn(async |c| c.unlink(subject).await).await?,
            Mend::Register => self.instances.register_queue(subject).await.map(|()| 1)?,
            Mend::SetSchema => {
                let key = self.backend.keys().schema();
                let set: bool = self
                    .backend
                    .with_conn(async |c| redis::cmd("SET").arg(&key).arg(SCHEMA_VERSION).arg("NX").query_async(c).await)
                    .await?;
                i64::from(set)
            }
        };
        Ok(if changed > 0 { Outcome::Repaired } else { Outcome::AlreadyRight })
    }

    /// Whether the instance that issued `lease` is in the instance registry now: one that
    /// registered after the doctor read the registry (a fresh start) holds live leases.
    async fn holder_is_registered(&self, lease: &str) -> Result<bool> {
        let Some(lease) = Lease::parse(lease) else { return Ok(false) };
        let key = self.backend.keys().instances();
        let score: Option<f64> = self.backend.with_conn(async |c| c.zscore(&key, lease.token.instance()).await).await?;
        Ok(score.is_some())
    }

    async fn check_schema(&self, report: &mut Report) -> Result<()> {
        let key = self.backend.keys().schema();
        let found: Option<String> = self.backend.with_conn(async |c| c.get(&key).await).await?;
        let ours = SCHEMA_VERSION.to_string();
        let (detail, mend) = match found.as_deref() {
            Some(v) if v == ours => return Ok(()),
            None => (format!("no schema version (this build writes {ours})"), Some(Mend::SetSchema)),
            Some(v) => {
                (format!("schema version {v:?}, this build understands {ours}: set it by hand if you are sure"), None)
            }
        };
        push(report, Kind::Schema, None, &key, detail, mend);
        Ok(())
    }

    /// SCANs the keys under the prefix (or one queue's): counts them, reports stray ones,
    /// checks the idempotency tombstones page by page, and returns the queues that have keys.
    async fn scan_keys(&self, only: Option<&str>, report: &mut Report) -> Result<BTreeSet<String>> {
        let space = self.backend.keys();
        let pattern = match only {
            Some(queue) => space.queue_pattern(queue),
            None => space.prefix_pattern(),
        };
        let globals = [space.queues(), space.instances(), space.schema()];
        let workers = space.workers("");
        let mut queues = BTreeSet::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .backend
                .with_conn(async |c| {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(PAGE)
                        .query_async(c)
                        .await
                })
                .await?;
            report.keys += u64::try_from(batch.len()).unwrap_or(u64::MAX);
            let mut tombstones: HashMap<String, Vec<String>> = HashMap::new();
            for key in batch {
                if globals.contains(&key) || key.starts_with(&workers) {
                    continue;
                }
                let Some(queue) = space.queue_of(&key) else {
                    push(report, Kind::StrayKey, None, &key, "outside the layout".into(), Some(Mend::DeleteKey));
                    continue;
                };
                let queue = queue.to_owned();
                let keys = self.backend.queue_keys(&queue);
                if key.starts_with(&keys.idempotency("")) {
                    tombstones.entry(queue.clone()).or_default().push(key);
                } else if !keys.all().contains(&key) {
                    push(
                        report,
                        Kind::StrayKey,
                        Some(&queue),
                        &key,
                        "outside the layout".into(),
                        Some(Mend::DeleteKey),
                    );
                }
                queues.insert(queue);
            }
            for (queue, keys) in tombstones {
                self.check_tombstones(&queue, &keys, report).await?;
            }
            if next == 0 {
                return Ok(queues);
            }
            cursor = next;
        }
    }

    async fn check_tombstones(&self, queue: &str, keys: &[String], report: &mut Report) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let (values, ttls): (Vec<Option<String>>, Vec<i64>) = self
            .backend
            .with_conn(async |c| {
                let mut pipe = redis::pipe();
                pipe.cmd("MGET").arg(keys);
                for key in keys {
                    pipe.cmd("PTTL").arg(key);
                }
                let mut answers: Vec<redis::Value> = pipe.query_async(c).await?;
                let ttls = answers.split_off(1);
                let values = redis::from_redis_value(answers.pop().unwrap_or(redis::Value::Nil))?;
                Ok((values, ttls.into_iter().map(redis::from_redis_value).collect::<Result<_, _>>()?))
            })
            .await?;
        for ((key, value), ttl) in keys.iter().zip(values).zip(ttls) {
            let Some(value) = value else { continue };
            let detail = if ulid::Ulid::from_string(&value).is_err() {
                format!("names no job ({value:?})")
            } else if ttl == -1 {
                "never expires".to_owned()
            } else {
                continue;
            };
            let finding = Finding {
                kind: Kind::IdempotencyKey,
                queue: Some(queue.to_owned()),
                subject: key.clone(),
                detail,
                mend: Some(Mend::Tombstone),
            };
            if self.still_holds(&finding).await? {
                report.findings.push(finding);
            }
        }
        Ok(())
    }

    async fn live_instances(&self) -> Result<HashSet<String>> {
        let key = self.backend.keys().instances();
        let ids: Vec<String> = self.backend.with_conn(async |c| c.zrange(&key, 0, -1).await).await?;
        Ok(ids.into_iter().collect())
    }
}

fn push(report: &mut Report, kind: Kind, queue: Option<&str>, subject: &str, detail: String, mend: Option<Mend>) {
    report.findings.push(Finding { kind, queue: queue.map(str::to_owned), subject: subject.to_owned(), detail, mend });
}

/// The walk of one queue's structures (see the module doc), collecting candidate findings.
struct QueueWalk<'d> {
    doctor: &'d Doctor,
    queue: &'d str,
    keys: Arc<QueueKeys>,
    live: &'d HashSet<String>,
    /// The jobs of the ready lists, by ULID (sized once from the lists' lengths).
    ready: HashSet<u128>,
    /// The jobs of the completed list, by ULID.
    completed: HashSet<u128>,
    /// The jobs holding a lease.
    active: HashSet<u128>,
    /// Each session's last update as read before the walk: a session updated since moved
    /// during the walk, so the jobs found are no measure of its counts.
    updated_before: HashMap<String, i64>,
    /// Per session name: (active jobs, released jobs not started), as found.
    sessions: HashMap<String, (u64, u64)>,
    /// The greatest session sequence number in use.
    max_seq: u64,
    records: u64,
    findings: Vec<Finding>,
}

impl<'d> QueueWalk<'d> {
    fn new(doctor: &'d Doctor, queue: &'d str, live: &'d HashSet<String>) -> Self {
        Self {
            keys: doctor.backend.queue_keys(queue),
            doctor,
            queue,
            live,
            ready: HashSet::new(),
            completed: HashSet::new(),
            active: HashSet::new(),
            updated_before: HashMap::new(),
            sessions: HashMap::new(),
            max_seq: 0,
            records: 0,
            findings: Vec::new(),
        }
    }

    fn found(&mut self, kind: Kind, subject: &str, detail: String, mend: Option<Mend>) {
        if self.findings.len() < MAX_FINDINGS {
            let queue = Some(self.queue.to_owned());
            self.findings.push(Finding { kind, queue, subject: subject.to_owned(), detail, mend });
        }
    }

    async fn run(&mut self) -> Result<()> {
        let keys = self.keys.clone();
        self.updated_before = self.session_updates().await?;
        let lengths: Vec<usize> = self
            .doctor
            .backend
            .with_conn(async |c| {
                let mut pipe = redis::pipe();
                for key in keys.ready() {
                    pipe.llen(key);
                }
                pipe.llen(keys.completed()).query_async(c).await
            })
            .await?;
        let (ready, completed) = lengths.split_at(lengths.len().saturating_sub(1));
        self.ready.reserve(ready.iter().sum());
        self.completed.reserve(completed.iter().sum());
        let mut lists: Vec<(Place, &str)> = keys.ready().iter().map(|k| (Place::Ready, k.as_str())).collect();
        lists.push((Place::Completed, keys.completed()));
        for (place, key) in lists {
            self.walk_list(place, key).await?;
        }
        self.walk_active().await?;
        for (place, key) in
            [(Place::Delayed, keys.delayed()), (Place::Dead, keys.dead()), (Place::Cancelled, keys.cancelled())]
        {
            self.walk_set(place, key).await?;
        }
        self.walk_set(Place::Pending, keys.session_jobs()).await?;
        self.walk_deadlines().await?;
        self.walk_records().await?;
        self.walk_outcomes().await?;
        self.check_sessions().await
    }

    /// Looks up where each of `ids` is, in one round trip (two when some are in a session).
    async fn rows(&self, ids: &[String]) -> Result<Vec<Row>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys = &self.keys;
        type Page = (
            Vec<Option<Vec<u8>>>,
            Vec<Option<Vec<u8>>>,
            Vec<Option<String>>,
            Vec<Option<f64>>,
            Vec<Option<f64>>,
            Vec<Option<f64>>,
        );
        let (records, outcomes, leases, delayed, dead, cancelled): Page = self
            .doctor
            .backend
            .with_conn(async |c| {
                redis::pipe()
                    .cmd("HMGET")
                    .arg(keys.jobs())
                    .arg(ids)
                    .cmd("HMGET")
                    .arg(keys.outcomes())
                    .arg(ids)
                    .cmd("HMGET")
                    .arg(keys.active())
                    .arg(ids)
                    .cmd("ZMSCORE")
                    .arg(keys.delayed())
                    .arg(ids)
                    .cmd("ZMSCORE")
                    .arg(keys.dead())
                    .arg(ids)
                    .cmd("ZMSCORE")
                    .arg(keys.cancelled())
                    .arg(ids)
                    .query_async(c)
                    .await
            })
            .await?;
        let mut rows: Vec<Row> = (0..ids.len())
            .map(|i| Row {
                record: records.get(i).cloned().flatten(),
                outcome: outcomes.get(i).cloned().flatten(),
                lease: leases.get(i).cloned().flatten(),
                delayed: delayed.get(i).is_some_and(Option::is_some),
                dead: dead.get(i).is_some_and(Option::is_some),
                cancelled: cancelled.get(i).is_some_and(Option::is_some),
                pending: false,
            })
            .collect();
        let members: Vec<(usize, String)> =
            rows.iter().enumerate().filter_map(|(i, row)| Some((i, decode(row)?.ok()?.session?))).collect();
        if !members.is_empty() {
            let names: Vec<&String> = members.iter().map(|(_, m)| m).collect();
            let scores: Vec<Option<f64>> = self
                .doctor
                .backend
                .with_conn(async |c| redis::cmd("ZMSCORE").arg(keys.session_jobs()).arg(&names).query_async(c).await)
                .await?;
            for ((i, _), score) in members.iter().zip(scores) {
                if let Some(row) = rows.get_mut(*i) {
                    row.pending = score.is_some();
                }
            }
        }
        Ok(rows)
    }

    /// Judges a job found in `place` (see `doctor_unplace.lua`, which judges the same way) and
    /// counts it for its session when it belongs there.
    fn judge(&mut self, place: Place, subject: &str, ulid: Option<u128>, row: &Row) {
        let record = match decode(row) {
            None => {
                let kind = if place == Place::Active { Kind::LeaseWithoutJob } else { Kind::MissingRecord };
                let detail = format!("{} but has no record", place.name());
                return self.found(kind, subject, detail, Some(Mend::Unplace(place.name())));
            }
            // Reported once, by the walk of the records.
            Some(Err(_)) => return,
            Some(Ok(record)) => record,
        };
        if !place.fits(record.state) {
            let detail = format!("{} but its record says {:?}", place.name(), record.state);
            return self.found(Kind::WrongPlace, subject, detail, Some(Mend::Unplace(place.name())));
        }
        let in_ready = ulid.is_some_and(|u| self.ready.contains(&u));
        let present = |p: Place| match p {
            Place::Active => row.lease.is_some(),
            Place::Ready => in_ready,
            Place::Delayed => row.delayed,
            _ => false,
        };
        let higher = [Place::Active, Place::Ready, Place::Delayed].into_iter().take_while(|p| *p != place);
        if let Some(other) = higher.filter(|p| p.fits(record.state)).find(|p| present(*p)) {
            let detail = format!("both {} and {}", other.name(), place.name());
            return self.found(Kind::TwoPlaces, subject, detail, Some(Mend::Unplace(place.name())));
        }
        if let Some(member) = &record.session {
            self.max_seq = self.max_seq.max(sequence(member));
            let counts = self.sessions.entry(record.session_name().unwrap_or_default().to_owned()).or_default();
            match place {
                Place::Active => counts.0 += 1,
                Place::Ready | Place::Delayed => counts.1 += 1,
                _ => {}
            }
        }
    }

    async fn walk_list(&mut self, place: Place, key: &str) -> Result<()> {
        let mut start = 0usize;
        loop {
            let stop = start + PAGE - 1;
            let ids: Vec<String> =
                self.doctor.backend.with_conn(async |c| c.lrange(key, isize_of(start), isize_of(stop)).await).await?;
            let rows = self.rows(&ids).await?;
            for (id, row) in ids.iter().zip(&rows) {
                let ulid = ulid_of(id);
                let seen = if place == Place::Ready { &mut self.ready } else { &mut self.completed };
                if ulid.is_some_and(|u| !seen.insert(u)) {
                    let detail = format!("listed twice in the {} list(s)", place.name());
                    self.found(Kind::TwoPlaces, id, detail, Some(Mend::Unplace(place.name())));
                    continue;
                }
                self.judge(place, id, ulid, row);
            }
            if ids.len() < PAGE {
                return Ok(());
            }
            start += PAGE;
        }
    }

    async fn walk_set(&mut self, place: Place, key: &str) -> Result<()> {
        let mut start = 0usize;
        loop {
            let stop = start + PAGE - 1;
            let members: Vec<String> =
                self.doctor.backend.with_conn(async |c| c.zrange(key, isize_of(start), isize_of(stop)).await).await?;
            let ids: Vec<String> = if place == Place::Pending {
                members.iter().map(|m| m.rsplit('/').next().unwrap_or_default().to_owned()).collect()
            } else {
                members.clone()
            };
            let rows = self.rows(&ids).await?;
            for ((member, id), row) in members.iter().zip(&ids).zip(&rows) {
                let ulid = ulid_of(id);
                if place == Place::Pending {
                    self.max_seq = self.max_seq.max(sequence(member));
                }
                self.judge(place, member, ulid, row);
            }
            if members.len() < PAGE {
                return Ok(());
            }
            start += PAGE;
        }
    }

    async fn walk_active(&mut self) -> Result<()> {
        let key = self.keys.active().to_owned();
        let deadlines = self.keys.deadlines().to_owned();
        let mut cursor = 0u64;
        loop {
            let (next, flat): (u64, Vec<String>) = self
                .doctor
                .backend
                .with_conn(async |c| {
                    redis::cmd("HSCAN").arg(&key).arg(cursor).arg("COUNT").arg(PAGE).query_async(c).await
                })
                .await?;
            let pairs: Vec<(String, String)> = flat
                .chunks_exact(2)
                .map(|p| (p[0].clone(), p[1].clone()))
                .filter(|(id, _)| self.first_sight(id))
                .collect();
            let ids: Vec<String> = pairs.iter().map(|(id, _)| id.clone()).collect();
            let rows = self.rows(&ids).await?;
            let scores: Vec<Option<f64>> = if ids.is_empty() {
                Vec::new()
            } else {
                self.doctor
                    .backend
                    .with_conn(async |c| redis::cmd("ZMSCORE").arg(&deadlines).arg(&ids).query_async(c).await)
                    .await?
            };
            for (((id, lease), row), deadline) in pairs.iter().zip(&rows).zip(scores) {
                let known = row.record.is_some();
                match Lease::parse(lease) {
                    Some(l) if self.live.contains(l.token.instance()) => {}
                    _ if !known => {}
                    Some(l) => {
                        let detail = format!("leased by {}, which is not in the instance registry", l.token.instance());
                        self.found(
                            Kind::LeaseOfUnknownInstance,
                            id,
                            detail,
                            Some(Mend::Lease("return", lease.clone())),
                        );
                    }
                    None => {
                        let detail = format!("holds an unreadable lease {lease:?}");
                        self.found(
                            Kind::LeaseOfUnknownInstance,
                            id,
                            detail,
                            Some(Mend::Lease("return", lease.clone())),
                        );
                    }
                }
                if known && deadline.is_none() {
                    let detail = "active with no deadline: it would never time out".to_owned();
                    self.found(Kind::LeaseWithoutDeadline, id, detail, Some(Mend::Lease("deadline", lease.clone())));
                }
                self.judge(Place::Active, id, ulid_of(id), row);
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Whether this is the first time the walk of the active hash meets `id` (HSCAN may return
    /// an entry twice).
    fn first_sight(&mut self, id: &str) -> bool {
        ulid_of(id).is_none_or(|u| self.active.insert(u))
    }

    async fn walk_deadlines(&mut self) -> Result<()> {
        let (key, active) = (self.keys.deadlines().to_owned(), self.keys.active().to_owned());
        let mut start = 0usize;
        loop {
            let stop = start + PAGE - 1;
            let (ids, leases): (Vec<String>, Vec<Option<String>>) = self
                .doctor
                .backend
                .with_conn(async |c| {
                    let ids: Vec<String> = c.zrange(&key, isize_of(start), isize_of(stop)).await?;
                    if ids.is_empty() {
                        return Ok((ids, Vec::new()));
                    }
                    let leases = redis::cmd("HMGET").arg(&active).arg(&ids).query_async(c).await?;
                    Ok((ids, leases))
                })
                .await?;
            for (id, lease) in ids.iter().zip(&leases) {
                if lease.is_none() {
                    let detail = "a deadline, but the job holds no lease".to_owned();
                    self.found(Kind::DeadlineWithoutLease, id, detail, Some(Mend::Unplace("deadlines")));
                }
            }
            if ids.len() < PAGE {
                return Ok(());
            }
            start += PAGE;
        }
    }

    /// One HSCAN page of a hash's fields (its values are left aside).
    async fn hash_page(&self, key: &str, cursor: u64) -> Result<(u64, Vec<String>)> {
        let (next, flat): (u64, Vec<redis::Value>) = self
            .doctor
            .backend
            .with_conn(async |c| redis::cmd("HSCAN").arg(key).arg(cursor).arg("COUNT").arg(PAGE).query_async(c).await)
            .await?;
        let fields = flat.into_iter().step_by(2).map(redis::from_redis_value).collect::<Result<_, _>>()?;
        Ok((next, fields))
    }

    async fn walk_records(&mut self) -> Result<()> {
        let key = self.keys.jobs().to_owned();
        let mut cursor = 0u64;
        loop {
            let (next, ids) = self.hash_page(&key, cursor).await?;
            let rows = self.rows(&ids).await?;
            self.records += u64::try_from(ids.len()).unwrap_or(u64::MAX);
            for (id, row) in ids.iter().zip(&rows) {
                if let Some(Err(e)) = decode(row) {
                    self.found(Kind::CorruptRecord, id, e.to_string(), None);
                    continue;
                }
                let listed = ulid_of(id).is_some_and(|u| self.ready.contains(&u) || self.completed.contains(&u));
                let placed = listed || row.lease.is_some() || row.delayed || row.dead || row.cancelled || row.pending;
                if row.record.is_some() && !placed {
                    self.found(Kind::OrphanedRecord, id, "a record in no place".into(), Some(Mend::Place));
                }
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    async fn walk_outcomes(&mut self) -> Result<()> {
        let key = self.keys.outcomes().to_owned();
        let mut cursor = 0u64;
        loop {
            let (next, ids) = self.hash_page(&key, cursor).await?;
            for id in &ids {
                if ulid_of(id).is_none_or(|u| !self.completed.contains(&u)) {
                    let detail = "an outcome, but the job is not in the completed list".to_owned();
                    self.found(Kind::StrayOutcome, id, detail, Some(Mend::Unplace("outcomes")));
                }
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// When each session of the queue was last updated.
    async fn session_updates(&self) -> Result<HashMap<String, i64>> {
        let mut updates = HashMap::new();
        let mut cursor = 0u64;
        loop {
            let (next, page) = self.hash_page(self.keys.sessions(), cursor).await?;
            for name in page {
                if let Some(record) = self.doctor.sessions.session(self.queue, &name).await? {
                    updates.insert(name, record.updated_ms);
                }
            }
            if next == 0 {
                return Ok(updates);
            }
            cursor = next;
        }
    }

    /// Each session's counts against the jobs found, its state and expiry entries, and the
    /// queue's session sequence.
    async fn check_sessions(&mut self) -> Result<()> {
        let keys = self.keys.clone();
        let mut names = HashSet::new();
        let mut cursor = 0u64;
        loop {
            let (next, page) = self.hash_page(keys.sessions(), cursor).await?;
            let expiries: Vec<Option<f64>> = if page.is_empty() {
                Vec::new()
            } else {
                let ttl_key = keys.session_ttl();
                self.doctor
                    .backend
                    .with_conn(async |c| redis::cmd("ZMSCORE").arg(ttl_key).arg(&page).query_async(c).await)
                    .await?
            };
            for (name, expiry) in page.iter().zip(expiries) {
                if expiry.is_none() {
                    let detail = "a session with no expiry entry: it would never expire".to_owned();
                    self.found(Kind::SessionKeys, name, detail, Some(Mend::Session("keys", Vec::new())));
                }
                let Some(record) = self.doctor.sessions.session(self.queue, name).await? else { continue };
                let (active, released) = self.sessions.get(name).copied().unwrap_or_default();
                let still = self.updated_before.get(name) == Some(&record.updated_ms);
                if still && (record.started, record.queued) != (active, released) {
                    let detail = format!(
                        "counts {} started and {} queued, but has {active} active and {released} released jobs",
                        record.started, record.queued
                    );
                    let counts = [record.updated_ms.to_string(), record.started.to_string(), record.queued.to_string()]
                        .into_iter()
                        .chain([active.to_string(), released.to_string()])
                        .collect();
                    self.found(Kind::SessionCounts, name, detail, Some(Mend::Session("counts", counts)));
                }
            }
            names.extend(page);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        cursor = 0;
        loop {
            let (next, page) = self.hash_page(keys.session_state(), cursor).await?;
            for name in page.iter().filter(|n| !names.contains(*n)) {
                let detail = "a session state with no session".to_owned();
                self.found(Kind::SessionKeys, name, detail, Some(Mend::Session("keys", Vec::new())));
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut start = 0usize;
        loop {
            let ttl_key = keys.session_ttl();
            let stop = start + PAGE - 1;
            let page: Vec<String> = self
                .doctor
                .backend
                .with_conn(async |c| c.zrange(ttl_key, isize_of(start), isize_of(stop)).await)
                .await?;
            for name in page.iter().filter(|n| !names.contains(*n)) {
                let detail = "an expiry entry with no session".to_owned();
                self.found(Kind::SessionKeys, name, detail, Some(Mend::Session("keys", Vec::new())));
            }
            if page.len() < PAGE {
                break;
            }
            start += PAGE;
        }
        let seq: Option<u64> =
            self.doctor.backend.with_conn(async |c| c.hget(keys.meta(), "session_seq").await).await?;
        let seq = seq.unwrap_or(0);
        if seq < self.max_seq {
            let detail = format!("session sequence {seq} is behind {} in use", self.max_seq);
            self.found(
                Kind::SessionSequence,
                &self.max_seq.to_string(),
                detail,
                Some(Mend::Session("seq", Vec::new())),
            );
        }
        Ok(())
    }
}

/// A job's record as a page read it: None when it has none.
fn decode(row: &Row) -> Option<Result<JobRecord>> {
    row.record.as_deref().map(|raw| JobRecord::decode(raw, row.outcome.as_deref()))
}

fn ulid_of(id: &str) -> Option<u128> {
    ulid::Ulid::from_string(id).ok().map(u128::from)
}

/// The sequence number of a session member "name/seq/ULID" (0 when unreadable).
fn sequence(member: &str) -> u64 {
    member.split('/').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A list or zset index for LRANGE/ZRANGE (saturating: no structure is near isize::MAX).
fn isize_of(n: usize) -> isize {
    isize::try_from(n).unwrap_or(isize::MAX)
}

/// The arguments of one `doctor_*` function, after the leading ones: the mode, then its own.
macro_rules! mend_function {
    ($name:ident, $function:ident) => {
        struct $name(Vec<String>);

        impl QueueFunction for $name {
            type Reply = i64;
            fn function(scripts: &Scripts) -> &Function {
                &scripts.$function
            }
            fn write_args(&self, cmd: &mut Cmd) {
                cmd.arg(&self.0);
            }
        }
    };
}

mend_function!(Unplace, doctor_unplace);
mend_function!(PlaceRecord, doctor_place);
mend_function!(MendLease, doctor_lease);
mend_function!(MendSession, doctor_session);

/// `doctor_tombstone.lua`: the tombstone is its own key (KEYS[26]).
struct DropTombstone {
    key: String,
    mode: Vec<String>,
}

impl QueueFunction for DropTombstone {
    type Reply = i64;
    fn function(scripts: &Scripts) -> &Function {
        &scripts.doctor_tombstone
    }
    fn own_keys(&self, _keys: &QueueKeys) -> Vec<String> {
        vec![self.key.clone()]
    }
    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(&self.mode);
    }
}
