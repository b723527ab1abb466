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
//! idempotency tombstone bucket is a hash that expires no later than its name says, and each of
//! its tombstones names a ULID (of a job that may be gone: a tombstone outlives its job); every
//! schedule decodes and names its last job by a ULID, and (when the caller gives the doctor a
//! [`ScheduleJudge`]: the store cannot read a timetable) its next fire is not long past while
//! it is active, nor has it fired ahead of the clock; every queue setting's value reads.
//! Globally:
//! the schema version, keys under the prefix outside the layout (tombstones of the layout before
//! buckets, `{queue}:idem:KEY`, among them), and queues that have keys but no entry in the queue
//! registry.
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
    Instances, Result, SCHEMA_VERSION, Schedules, Sessions, SettingField, StoredSchedule, StoredSettings,
    args::QueueFunction,
    backend::Backend,
    keys::QueueKeys,
    record::{JobRecord, Lease, RecordState},
    scripts::{Function, Scripts},
};

mod tombstones;
mod walk;

use tombstones::{Bucket, MendTombstone};
use walk::QueueWalk;

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
    /// A tombstone bucket with no expiry or a later one than its name says, or a tombstone that
    /// names no ULID.
    IdempotencyKey,
    /// A schedule that does not decode (or whose template does not), or that names its last
    /// job by no ULID; left for a person, as a corrupt record is.
    CorruptSchedule,
    /// An active schedule whose next fire is long past (no instance fired it), or that has fired
    /// ahead of the clock (its due times until then would not fire), or whose timetable does
    /// not read. Mended by writing how far it has fired as re-derived and announcing it, so
    /// that every instance's timer looks again (`doctor_schedule.lua`); an unreadable
    /// timetable is left for a person.
    ScheduleTiming,
    /// A concurrency key whose count of leases differs from its live leases.
    KeyCount,
    /// A queue setting whose value does not read (not a whole number from 0, or a backoff
    /// not of its five parts): the functions fall back to the flag, the settings RPCs fail.
    /// Mended by removing it, so that the flag holds, as the functions already took it.
    BadSetting,
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
            Kind::KeyCount => "key-count",
            Kind::SessionSequence => "session-sequence",
            Kind::SessionKeys => "session-keys",
            Kind::IdempotencyKey => "idempotency-key",
            Kind::CorruptSchedule => "corrupt-schedule",
            Kind::ScheduleTiming => "schedule-timing",
            Kind::BadSetting => "bad-setting",
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
    /// `doctor_tombstone.lua`: `expiry` (the expiry the bucket's name says, as text) or `entry`
    /// (the tombstone's field, the digest of its key: bytes).
    Tombstone(&'static str, Vec<u8>),
    /// `doctor_key_count.lua`: the concurrency key (the finding's subject) recounted.
    KeyCount,
    /// `doctor_setting.lua`: the field and the value it held when read.
    Setting(String, String),
    /// `doctor_schedule.lua`: the schedule's name, its revision and how far it had fired as
    /// read, and how far it has fired once mended.
    Schedule { name: String, revision: u64, seen_ms: i64, through_ms: i64 },
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
            // A waiting one too: a job written in its ready form ahead of its ready time (a
            // schedule's fire claimed ahead, lib.lua's ready_form_priority).
            Place::Delayed => matches!(state, S::Delayed | S::Retrying | S::Waiting),
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

/// What is wrong with a stored schedule's timing, as its judge found it.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleTiming {
    /// What is wrong, for people.
    pub detail: String,
    /// How far the schedule has fired once mended (epoch ms): its fired-through time itself
    /// when only the timers need to look again; None when no repair is safe.
    pub through_ms: Option<i64>,
}

/// Judges a stored schedule's timing now, by the clock due times are reckoned by: None when it
/// is right. The queue layer's, which reads timetables (`jobwire::queue::schedule_timing`).
pub type ScheduleJudge = Arc<dyn Fn(&StoredSchedule) -> Option<ScheduleTiming> + Send + Sync>;

/// The doctor (see the module doc).
#[derive(Clone)]
pub struct Doctor {
    backend: Arc<Backend>,
    sessions: Sessions,
    instances: Instances,
    /// Judges the schedules' timing; without one, only their encoding is checked.
    schedule_judge: Option<ScheduleJudge>,
}

impl Doctor {
    pub(super) fn new(backend: Arc<Backend>, sessions: Sessions, instances: Instances) -> Self {
        Self { backend, sessions, instances, schedule_judge: None }
    }

    /// This doctor, also judging each schedule's timing with `judge` (by this process's clock:
    /// the instances' and the doctor's clocks agree within the judge's tolerance).
    pub fn judging_schedules(&self, judge: ScheduleJudge) -> Self {
        Self { schedule_judge: Some(judge), ..self.clone() }
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
            Mend::Tombstone(what, arg) => {
                let args = [mode.as_bytes(), what.as_bytes(), arg].map(<[u8]>::to_vec).to_vec();
                self.backend.call(queue, &MendTombstone { bucket: subject.to_owned(), args }).await?
            }
            Mend::KeyCount => {
                args.push(subject.to_owned());
                self.backend.call(queue, &MendKeyCount(args)).await?
            }
            Mend::Setting(field, seen) => {
                args.extend([field.clone(), seen.clone()]);
                self.backend.call(queue, &MendSetting(args)).await?
            }
            Mend::Schedule { name, revision, seen_ms, through_ms } => {
                args.extend([name.clone(), revision.to_string(), seen_ms.to_string(), through_ms.to_string()]);
                args.push(self.backend.keys().schedule_channel());
                self.backend.call(queue, &MendSchedule(args)).await?
            }
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
    /// checks the idempotency tombstone buckets page by page (`doctor/tombstones.rs`), and
    /// returns the queues that have keys.
    async fn scan_keys(&self, only: Option<&str>, report: &mut Report) -> Result<BTreeSet<String>> {
        let space = self.backend.keys();
        let pattern = match only {
            Some(queue) => space.queue_pattern(queue),
            None => space.prefix_pattern(),
        };
        let globals = [space.queues(), space.queue_shards(), space.instances(), space.schema()];
        let workers = space.workers("");
        let mut queues = BTreeSet::new();
        let mut cursor = 0u64;
        loop {
            let slot_of = only.map(|queue| self.backend.queue_keys(queue).jobs().to_owned());
            let (next, batch) = self.backend.scan_page(cursor, &pattern, PAGE, slot_of.as_deref()).await?;
            report.keys += u64::try_from(batch.len()).unwrap_or(u64::MAX);
            let mut tombstones: HashMap<String, Vec<Bucket>> = HashMap::new();
            let mut schedules = Vec::new();
            let mut settings = Vec::new();
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
                if let Some((width_ms, index)) = keys.tombstone_bucket(&key) {
                    tombstones.entry(queue.clone()).or_default().push(Bucket { key, width_ms, index });
                } else if key == keys.schedules() {
                    schedules.push(queue.clone());
                } else if key == keys.schedule_state() {
                    // Read with the schedules hash, beside each definition.
                } else if key == keys.settings() {
                    settings.push(queue.clone());
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
            for queue in schedules {
                self.check_schedules(&queue, report).await?;
            }
            for queue in settings {
                self.check_settings(&queue, report).await?;
            }
            if next == 0 {
                return Ok(queues);
            }
            cursor = next;
        }
    }

    /// One HSCAN page of the hash `key` from `cursor`: the next cursor ("0": done) and its
    /// fields and values, flat. Every walk of a hash here pages through this.
    async fn hash_page<T: redis::FromRedisValue>(&self, key: &str, cursor: u64) -> Result<(u64, Vec<T>)> {
        self.backend
            .with_conn(async |c| redis::cmd("HSCAN").arg(key).arg(cursor).arg("COUNT").arg(PAGE).query_async(c).await)
            .await
    }

    /// Reads a queue's schedules in HSCAN pages and reports each that does not decode or names
    /// its last job by no ULID (`Kind::CorruptSchedule`, no mend), and each whose timing its
    /// judge finds wrong (`Kind::ScheduleTiming`, confirmed inside Redis before it is reported).
    async fn check_schedules(&self, queue: &str, report: &mut Report) -> Result<()> {
        let schedules = Schedules::new(self.backend.clone());
        let mut cursor = 0u64;
        loop {
            let (next, page) = schedules.page(queue, cursor, u32::try_from(PAGE).unwrap_or(u32::MAX)).await?;
            for (name, stored) in page {
                let subject = format!("schedule {name}");
                let stored = match stored {
                    Err(e) => Err(e.to_string()),
                    Ok(s) if s.last_job.as_ref().is_some_and(|u| ulid::Ulid::from_string(u).is_err()) => {
                        Err("its last job is named by no ULID".to_owned())
                    }
                    Ok(s) => Ok(s),
                };
                let stored = match stored {
                    Ok(stored) => stored,
                    Err(detail) => {
                        push(report, Kind::CorruptSchedule, Some(queue), &subject, detail, None);
                        continue;
                    }
                };
                let Some(judge) = &self.schedule_judge else { continue };
                let Some(timing) = judge(&stored) else { continue };
                let mend = timing.through_ms.map(|through_ms| Mend::Schedule {
                    name: name.clone(),
                    revision: stored.revision,
                    seen_ms: stored.fired_through_ms,
                    through_ms,
                });
                let finding = Finding {
                    kind: Kind::ScheduleTiming,
                    queue: Some(queue.to_owned()),
                    subject,
                    detail: timing.detail,
                    mend,
                };
                if self.still_holds(&finding).await? {
                    report.findings.push(finding);
                }
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Reads a queue's settings hash (a few fields: one HGETALL) and reports each setting this
    /// build knows whose value does not read (`Kind::BadSetting`, mended by removing it).
    async fn check_settings(&self, queue: &str, report: &mut Report) -> Result<()> {
        let key = self.backend.queue_keys(queue).settings().to_owned();
        let hash: HashMap<String, String> = self.backend.with_conn(async |c| c.hgetall(&key).await).await?;
        for field in SettingField::ALL {
            let Some(value) = hash.get(field.key()) else { continue };
            let alone = HashMap::from([(field.key().to_owned(), value.clone())]);
            if StoredSettings::from_hash(&alone).is_err() {
                let detail = format!("{value:?} does not read");
                let mend = Mend::Setting(field.key().to_owned(), value.clone());
                push(report, Kind::BadSetting, Some(queue), &format!("setting {}", field.key()), detail, Some(mend));
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
mend_function!(MendSetting, doctor_setting);
mend_function!(PlaceRecord, doctor_place);
mend_function!(MendLease, doctor_lease);
mend_function!(MendSession, doctor_session);
mend_function!(MendKeyCount, doctor_key_count);

/// `doctor_schedule.lua`'s arguments after the leading ones; its own keys are the queue's
/// schedules hash and their fire state.
struct MendSchedule(Vec<String>);

impl QueueFunction for MendSchedule {
    type Reply = i64;
    fn function(scripts: &Scripts) -> &Function {
        &scripts.doctor_schedule
    }
    fn own_keys(&self, keys: &QueueKeys) -> Vec<String> {
        vec![keys.schedules(), keys.schedule_state()]
    }
    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(&self.0);
    }
}
