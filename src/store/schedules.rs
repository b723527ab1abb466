//! A queue's schedules in Redis: two hashes per queue, `{queue}:schedules` (name -> its packed
//! definition: timetable, template) and `{queue}:schedule_state` (name -> its packed fire state:
//! revision, pause, how far it fired, counts), under the queue's hash tag like everything else of
//! the queue, so the function that fires a schedule also adds its job on the same Cluster slot,
//! atomically. The set of schedules to look at is found per queue (HSCAN of the definitions),
//! never by a global SCAN.
//!
//! Why two parts: a fire reads and writes only the fire state, a few small values, and builds
//! its job from the template kept in the form a job's record is made of (two byte strings either
//! side of the job's creation and ready times), rather than unpack and repack the whole schedule
//! and its template per fire: that was most of a fire's cost to Redis (BENCHMARKS.md, "Schedule
//! lateness").
//!
//! The layout is `lua/schedules_lib.lua`'s: the Lua functions write it and this file only reads
//! it ([`StoredSchedule::decode`]), the older layout too (one packed array per schedule in the
//! schedules hash), which the first function that writes such a schedule replaces. A reader
//! takes a definition first and its fire state after it; the revision it reports is the
//! definition's, so a fire computed from a definition that an upsert replaced between the two
//! reads names the older revision and is refused. What a schedule's timetable and policies mean
//! is the queue layer's business: here they are `spec`, a text the store keeps as given, and
//! the job template a [`JobRecord`].
//!
//! Every change goes through one function: `schedule_set` (create or replace),
//! `schedule_fire` (claim due times and add their jobs, a compare-and-set of how far each
//! schedule has fired), `schedule_trigger`, `schedule_pause`, `schedule_delete`. Those that
//! change a definition or a pause publish `queue/name` on the schedule channel
//! (`KeySpace::schedule_channel`), which every instance's timer listens to.

use std::sync::Arc;

use redis::Cmd;
use rmpv::Value;

use super::{
    JobRecord, Result, StoreError,
    args::QueueFunction,
    backend::Backend,
    keys::QueueKeys,
    record::{bytes, int, number, read, text},
    scripts::{Function, Scripts},
};

/// The first value of a definition in the current layout (`SC_LAYOUT` of schedules_lib.lua).
const LAYOUT: i64 = 2;

/// Most jobs one schedule's fire may add in one call (the catch-up of missed times is capped
/// below it).
pub const MAX_FIRE_JOBS: usize = 100;

/// The most delayed jobs one release makes ready (lib.lua's BATCH).
pub const RELEASE_BATCH: u64 = 100;

/// A schedule as stored: its definition and fire state merged (`lua/schedules_lib.lua`).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredSchedule {
    /// Upserts so far: 1 once created. A fire names the revision it was computed from.
    pub revision: u64,
    /// Paused: never fired until resumed.
    pub paused: bool,
    /// Every due time up to this one (epoch ms) was fired or given up; the next fire claims
    /// the times after it.
    pub fired_through_ms: i64,
    /// The due time of the last fire that added a job.
    pub last_due_ms: Option<i64>,
    /// The ULID of the last job the schedule added (a fire or a trigger).
    pub last_job: Option<String>,
    /// Jobs added, by fires and triggers.
    pub fires: u64,
    /// Due times that added nothing because the last job had not finished (overlap skip).
    pub skipped: u64,
    /// The timetable and policies, as the queue layer wrote them.
    pub spec: String,
    /// The job each fire adds.
    pub template: JobRecord,
    /// When it was created (epoch ms, the creating instance's clock).
    pub created_ms: i64,
    /// When its definition was last written (epoch ms).
    pub updated_ms: i64,
    /// Fires refused because the queue held its cap of waiting jobs.
    pub refused: u64,
}

impl StoredSchedule {
    /// Reads a schedule as the functions store it: its definition, and its fire state if the
    /// state hash holds one. A definition in the old layout holds its fire state (any state
    /// apart was left by a schedule of that name that an older release deleted, and is not
    /// read); one in the current layout needs its state.
    pub fn decode(definition: &[u8], state: Option<&[u8]>) -> Result<Self> {
        let mut rest = definition;
        match read(&mut rest)? {
            Value::Array(fields) if rest.is_empty() => Self::decode_old(fields),
            layout if int(&layout).ok() == Some(LAYOUT) => {
                let state = state.ok_or_else(|| StoreError::Corrupt("a schedule without its fire state".into()))?;
                Self::decode_current(rest, state)
            }
            _ => Err(StoreError::Corrupt("a schedule in no layout this build reads".into())),
        }
    }

    /// The definition after its layout value, and the fire state.
    fn decode_current(mut definition: &[u8], state: &[u8]) -> Result<Self> {
        let mut next = || read(&mut definition);
        let revision = number(&next()?, "a schedule's revision")?;
        let head = bytes(next()?)?;
        let tail = bytes(next()?)?;
        // The ready list its jobs go to: the template says it again.
        next()?;
        let spec = text(next()?)?;
        let created_ms = int(&next()?)?;
        let updated_ms = int(&next()?)?;
        if !definition.is_empty() {
            return Err(StoreError::Corrupt("bytes after a schedule's definition".into()));
        }
        // The template as upserted: created 0, not ready (the values a job's fill in).
        let mut template = head;
        let _ = rmp::encode::write_sint(&mut template, 0);
        let _ = rmp::encode::write_bool(&mut template, false);
        template.extend_from_slice(&tail);
        // Eight or nine values one after the other.
        let mut rest = state;
        let mut next = || read(&mut rest);
        // The state's own revision is the one fires compare; it was written with the definition.
        next()?;
        let paused = int(&next()?)? == 1;
        let fired_through_ms = int(&next()?)?;
        let last_due_ms = Some(int(&next()?)?).filter(|&ms| ms > 0);
        let last_job = Some(text(next()?)?).filter(|u| !u.is_empty());
        let fires = number(&next()?, "a schedule's fires")?;
        let skipped = number(&next()?, "a schedule's skipped fires")?;
        let refused = number(&next()?, "a schedule's refused fires")?;
        // Then, while its last fire's job was claimed ahead of its due time, that job's ULID:
        // the functions' own (a pause, change or delete before the due time withdraws it).
        if !rest.is_empty() {
            text(read(&mut rest)?)?;
        }
        if !rest.is_empty() {
            return Err(StoreError::Corrupt("bytes after a schedule's fire state".into()));
        }
        Ok(Self {
            revision,
            paused,
            fired_through_ms,
            last_due_ms,
            last_job,
            fires,
            skipped,
            spec,
            template: JobRecord::decode(&template, None)?,
            created_ms,
            updated_ms,
            refused,
        })
    }

    /// A schedule in the old layout: one array of 11 fields, or 12 once a fire was refused.
    fn decode_old(fields: Vec<Value>) -> Result<Self> {
        if !(11..=12).contains(&fields.len()) {
            return Err(StoreError::Corrupt("a schedule with another number of fields".into()));
        }
        let mut f = fields.into_iter();
        let mut next = || f.next().unwrap_or(Value::Nil);
        let revision = number(&next(), "a schedule's revision")?;
        let paused = int(&next())? == 1;
        let fired_through_ms = int(&next())?;
        let last_due_ms = Some(int(&next())?).filter(|&ms| ms > 0);
        let last_job = Some(text(next())?).filter(|u| !u.is_empty());
        let fires = number(&next(), "a schedule's fires")?;
        let skipped = number(&next(), "a schedule's skipped fires")?;
        let spec = text(next())?;
        let template = JobRecord::decode(&bytes(next())?, None)?;
        let created_ms = int(&next())?;
        let updated_ms = int(&next())?;
        let refused = match next() {
            Value::Nil => 0,
            count => number(&count, "a schedule's refused fires")?,
        };
        Ok(Self {
            revision,
            paused,
            fired_through_ms,
            last_due_ms,
            last_job,
            fires,
            skipped,
            spec,
            template,
            created_ms,
            updated_ms,
            refused,
        })
    }
}

/// One schedule's fire, as computed by an instance from the schedule it read.
#[derive(Clone, Debug)]
pub struct Fire {
    /// The schedule's name.
    pub name: String,
    /// The revision the fire was computed from: a schedule upserted since is not fired.
    pub revision: u64,
    /// How far the schedule had fired when read: the compare of the compare-and-set.
    pub fired_through_ms: i64,
    /// How far it has fired once this fire is done.
    pub next_through_ms: i64,
    /// Add nothing while the schedule's last job has not finished (overlap skip).
    pub skip_overlap: bool,
    /// The jobs to add, at most [`MAX_FIRE_JOBS`].
    pub jobs: Vec<FireJob>,
}

/// One job of a fire.
#[derive(Clone, Debug)]
pub struct FireJob {
    /// Derived from the schedule and the due time: every instance names the same one.
    pub ulid: String,
    /// The due time it is for (epoch ms); the job's creation time.
    pub due_ms: i64,
    /// When it may run: the due time plus the schedule's jitter for it.
    pub ready_ms: i64,
}

/// What one fire did.
#[derive(Clone, Debug, PartialEq)]
pub enum FireOutcome {
    /// Claimed: the jobs added (fewer than asked when skipped for overlap).
    Fired(u64),
    /// Claimed in part: a job would have passed the queue's cap of waiting jobs, so that due
    /// time and the later ones of the fire added nothing (the earlier ones did); here is how
    /// far it has fired now: up to the refused due time.
    QueueFull(i64),
    /// Not claimed: another instance fired it first; here is how far it has fired now (its
    /// definition is the one the fire named).
    FiredElsewhere(i64),
    /// Not claimed: the schedule changed or is paused; here is what it is now.
    Refused(Box<StoredSchedule>),
    /// There is no such schedule (any more).
    Gone,
}

/// lua/schedule_set.lua.
struct SetArgs<'a> {
    name: &'a str,
    spec: &'a str,
    template: Vec<u8>,
    now_ms: i64,
    channel: String,
}

/// lua/schedule_fire.lua.
struct FireArgs<'a> {
    fires: &'a [Fire],
    /// The server's cap of waiting jobs (`--max-waiting`), unless the queue's settings say
    /// otherwise.
    max_waiting: Option<u64>,
}

/// lua/schedule_release.lua.
struct ReleaseArgs {
    /// The caller's clock (epoch ms), which due times are reckoned by.
    now_ms: i64,
}

/// lua/schedule_trigger.lua.
struct TriggerArgs<'a> {
    name: &'a str,
    ulid: &'a str,
}

/// lua/schedule_pause.lua.
struct PauseArgs<'a> {
    name: &'a str,
    paused: bool,
    channel: String,
}

/// lua/schedule_delete.lua.
struct DeleteArgs<'a> {
    name: &'a str,
    channel: String,
}

/// The schedules hash and their fire state, KEYS[32] and KEYS[33] of every schedule function.
fn schedules_key(keys: &QueueKeys) -> Vec<String> {
    vec![keys.schedules(), keys.schedule_state()]
}

impl QueueFunction for SetArgs<'_> {
    /// (1 created or 0 replaced, the definition and the fire state as stored).
    type Reply = (i64, Vec<u8>, Vec<u8>);

    fn function(scripts: &Scripts) -> &Function {
        &scripts.schedule_set
    }

    fn own_keys(&self, keys: &QueueKeys) -> Vec<String> {
        schedules_key(keys)
    }

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.name).arg(self.spec).arg(self.template.as_slice()).arg(self.now_ms).arg(&self.channel);
    }
}

impl QueueFunction for FireArgs<'_> {
    /// Two values per fire: (code, jobs added or how far it fired as text, or the stored
    /// definition and fire state).
    type Reply = Vec<(i64, Vec<u8>)>;

    fn function(scripts: &Scripts) -> &Function {
        &scripts.schedule_fire
    }

    fn own_keys(&self, keys: &QueueKeys) -> Vec<String> {
        schedules_key(keys)
    }

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.max_waiting.unwrap_or(0));
        for fire in self.fires {
            cmd.arg(&fire.name)
                .arg(fire.revision)
                .arg(fire.fired_through_ms)
                .arg(fire.next_through_ms)
                .arg(u8::from(fire.skip_overlap))
                .arg(fire.jobs.len());
            for job in &fire.jobs {
                cmd.arg(&job.ulid).arg(job.due_ms).arg(job.ready_ms);
            }
        }
    }
}

impl QueueFunction for ReleaseArgs {
    /// The jobs made ready.
    type Reply = u64;

    fn function(scripts: &Scripts) -> &Function {
        &scripts.schedule_release
    }

    fn own_keys(&self, keys: &QueueKeys) -> Vec<String> {
        schedules_key(keys)
    }

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.now_ms);
    }
}

impl QueueFunction for TriggerArgs<'_> {
    /// 1 added, 0 no such schedule.
    type Reply = i64;

    fn function(scripts: &Scripts) -> &Function {
        &scripts.schedule_trigger
    }

    fn own_keys(&self, keys: &QueueKeys) -> Vec<String> {
        schedules_key(keys)
    }

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.name).arg(self.ulid);
    }
}

impl QueueFunction for PauseArgs<'_> {
    /// 1 changed, 0 already so, -1 no such schedule.
    type Reply = i64;

    fn function(scripts: &Scripts) -> &Function {
        &scripts.schedule_pause
    }

    fn own_keys(&self, keys: &QueueKeys) -> Vec<String> {
        schedules_key(keys)
    }

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.name).arg(u8::from(self.paused)).arg(&self.channel);
    }
}

impl QueueFunction for DeleteArgs<'_> {
    /// 1 deleted, 0 no such schedule.
    type Reply = i64;

    fn function(scripts: &Scripts) -> &Function {
        &scripts.schedule_delete
    }

    fn own_keys(&self, keys: &QueueKeys) -> Vec<String> {
        schedules_key(keys)
    }

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.name).arg(&self.channel);
    }
}

/// A queue's schedules (see the module doc).
#[derive(Clone)]
pub struct Schedules {
    backend: Arc<Backend>,
}

impl Schedules {
    pub(super) fn new(backend: Arc<Backend>) -> Self {
        Self { backend }
    }

    /// Creates the schedule `name` of `queue`, or replaces its definition (see
    /// lua/schedule_set.lua); `now_ms` is the caller's clock, from which due times are owed.
    /// Returns whether it was created, and the schedule as stored.
    pub async fn set(
        &self,
        queue: &str,
        name: &str,
        spec: &str,
        template: &JobRecord,
        now_ms: i64,
    ) -> Result<(bool, StoredSchedule)> {
        let channel = self.backend.keys().schedule_channel();
        let args = SetArgs { name, spec, template: template.encode()?, now_ms, channel };
        let (created, definition, state) = self.backend.call(queue, &args).await?;
        Ok((created == 1, StoredSchedule::decode(&definition, Some(&state))?))
    }

    /// The schedule `name` of `queue`, if there is one: its definition, then its fire state
    /// (one pipeline, in that order: see the module doc).
    pub async fn get(&self, queue: &str, name: &str) -> Result<Option<StoredSchedule>> {
        let keys = self.backend.queue_keys(queue);
        let mut pipe = redis::pipe();
        pipe.cmd("HGET").arg(keys.schedules()).arg(name).cmd("HGET").arg(keys.schedule_state()).arg(name);
        let (definition, state): (Option<Vec<u8>>, Option<Vec<u8>>) =
            self.backend.with_conn(async |c| pipe.query_async(c).await).await?;
        definition.map(|raw| StoredSchedule::decode(&raw, state.as_deref())).transpose()
    }

    /// One HSCAN page (about `count` entries) of the queue's schedules from `cursor` (0 to
    /// start): the cursor of the next page (0 after the last) and the schedules, each with its
    /// name; one that does not decode is its error, so the others are still read. Their fire
    /// states are read after the page, in a second round trip.
    pub async fn page(&self, queue: &str, cursor: u64, count: u32) -> Result<(u64, Vec<Named>)> {
        let key = self.backend.queue_keys(queue).schedules();
        let (next, flat): (u64, Vec<Vec<u8>>) = self
            .backend
            .with_conn(async |c| redis::cmd("HSCAN").arg(&key).arg(cursor).arg("COUNT").arg(count).query_async(c).await)
            .await?;
        let mut pages = self.with_states(&[(queue, flat)]).await?;
        Ok((next, pages.pop().unwrap_or_default()))
    }

    /// The schedules of HSCAN pages of definitions (name, definition, name, ...), one page per
    /// queue (all on one slot), merged with their fire states: one HMGET per queue that has any,
    /// in one pipeline.
    async fn with_states(&self, pages: &[DefinitionPage<'_>]) -> Result<Vec<Vec<Named>>> {
        let mut pipe = redis::pipe();
        let mut asked = 0;
        for (queue, flat) in pages.iter().filter(|(_, flat)| !flat.is_empty()) {
            asked += 1;
            pipe.cmd("HMGET").arg(self.backend.queue_keys(queue).schedule_state());
            for name in flat.iter().step_by(2) {
                pipe.arg(name.as_slice());
            }
        }
        let states: Vec<Vec<Option<Vec<u8>>>> =
            if asked == 0 { Vec::new() } else { self.backend.with_conn(async |c| pipe.query_async(c).await).await? };
        if states.len() != asked {
            return Err(StoreError::Corrupt("a pipeline of HMGETs answered another number of replies".into()));
        }
        let mut states = states.into_iter();
        pages
            .iter()
            .map(|(queue, flat)| {
                let page = if flat.is_empty() { Vec::new() } else { states.next().unwrap_or_default() };
                if page.len() != flat.len() / 2 {
                    return Err(StoreError::Corrupt("an HMGET of fire states answered another number".into()));
                }
                named(queue, flat, &page)
            })
            .collect()
    }

    /// The first HSCAN page (about `count` entries) of each queue's schedules, in one round
    /// trip: a pipeline of one HSCAN per queue, and on a cluster one such pipeline per slot
    /// (a pipeline goes to one node, and the cluster client refuses one that spans slots), the
    /// pipelines sent at once. Per queue, in order, the cursor of its next page (0 when that was
    /// all) and its schedules, as [`Self::page`] reads them.
    pub async fn first_pages(&self, queues: &[String], count: u32) -> Result<Vec<(u64, Vec<Named>)>> {
        let groups = self.by_slot(queues);
        let pages =
            futures::future::try_join_all(groups.iter().map(|group| self.pipelined_pages(group, count))).await?;
        let mut ordered: Vec<Option<(u64, Vec<Named>)>> = queues.iter().map(|_| None).collect();
        for (group, pages) in groups.into_iter().zip(pages) {
            for ((index, _), page) in group.into_iter().zip(pages) {
                if let Some(place) = ordered.get_mut(index) {
                    *place = Some(page);
                }
            }
        }
        ordered
            .into_iter()
            .map(|page| page.ok_or_else(|| StoreError::Corrupt("a queue's first schedules page went missing".into())))
            .collect()
    }

    /// `queues` (each with its index) in groups that one pipeline may carry: all of them on
    /// one Redis; on a cluster, one group per slot of their hash tags.
    fn by_slot<'q>(&self, queues: &'q [String]) -> Vec<Vec<(usize, &'q str)>> {
        if !self.backend.is_cluster() {
            return vec![queues.iter().map(String::as_str).enumerate().collect()];
        }
        let mut groups: std::collections::HashMap<redis::cluster_routing::Slot, Vec<(usize, &str)>> =
            std::collections::HashMap::new();
        for (index, queue) in queues.iter().enumerate() {
            let slot = redis::cluster_routing::Slot::for_key(self.backend.queue_keys(queue).schedules());
            groups.entry(slot).or_default().push((index, queue));
        }
        groups.into_values().collect()
    }

    /// The first page of each queue of `group` (of one slot, on a cluster), in one pipeline.
    async fn pipelined_pages(&self, group: &[(usize, &str)], count: u32) -> Result<Vec<(u64, Vec<Named>)>> {
        let mut pipe = redis::pipe();
        for (_, queue) in group {
            pipe.cmd("HSCAN").arg(self.backend.queue_keys(queue).schedules()).arg(0).arg("COUNT").arg(count);
        }
        let pages: Vec<(u64, Vec<Vec<u8>>)> = self.backend.with_conn(async |c| pipe.query_async(c).await).await?;
        if pages.len() != group.len() {
            return Err(StoreError::Corrupt("a pipeline of HSCANs answered another number of pages".into()));
        }
        let (nexts, flats): (Vec<u64>, Vec<DefinitionPage<'_>>) =
            group.iter().zip(pages).map(|((_, queue), (next, flat))| (next, (*queue, flat))).unzip();
        let named = self.with_states(&flats).await?;
        Ok(nexts.into_iter().zip(named).collect())
    }

    /// Fires due schedules of `queue` in one call (see lua/schedule_fire.lua), within the
    /// queue's cap of waiting jobs (its setting, else `max_waiting`): one outcome per fire, in
    /// order.
    pub async fn fire(&self, queue: &str, fires: &[Fire], max_waiting: Option<u64>) -> Result<Vec<FireOutcome>> {
        if fires.iter().any(|f| f.jobs.len() > MAX_FIRE_JOBS) {
            return Err(StoreError::Redis(format!("a fire of more than {MAX_FIRE_JOBS} jobs")));
        }
        let replies = self.backend.call(queue, &FireArgs { fires, max_waiting }).await?;
        if replies.len() != fires.len() {
            return Err(StoreError::Corrupt("the fire function answered another number of schedules".into()));
        }
        replies
            .into_iter()
            .map(|(code, detail)| match code {
                1 => {
                    let added = String::from_utf8_lossy(&detail)
                        .parse()
                        .map_err(|_| StoreError::Corrupt("the fire function answered an unreadable count".into()))?;
                    Ok(FireOutcome::Fired(added))
                }
                2 => Ok(FireOutcome::FiredElsewhere(fired_through(&detail)?)),
                3 => Ok(FireOutcome::QueueFull(fired_through(&detail)?)),
                0 => {
                    let mut rest = detail.as_slice();
                    let definition = bytes(read(&mut rest)?)?;
                    let state = Some(bytes(read(&mut rest)?)?).filter(|s| !s.is_empty());
                    Ok(FireOutcome::Refused(Box::new(StoredSchedule::decode(&definition, state.as_deref())?)))
                }
                -1 => Ok(FireOutcome::Gone),
                other => Err(StoreError::Corrupt(format!("the fire function answered code {other}"))),
            })
            .collect()
    }

    /// Makes up to [`RELEASE_BATCH`] of the queue's due delayed jobs ready (see
    /// lua/schedule_release.lua): the jobs of fires claimed ahead of their due time, when that
    /// time comes by the caller's clock (`now_ms`, epoch ms) or Redis's. Returns how many; when
    /// it is `RELEASE_BATCH`, more may be due.
    pub async fn release(&self, queue: &str, now_ms: i64) -> Result<u64> {
        self.backend.call(queue, &ReleaseArgs { now_ms }).await
    }

    /// Adds one job from the schedule's template now, as `ulid`; false when there is no such
    /// schedule.
    pub async fn trigger(&self, queue: &str, name: &str, ulid: &str) -> Result<bool> {
        Ok(self.backend.call(queue, &TriggerArgs { name, ulid }).await? == 1)
    }

    /// Pauses or resumes a schedule: None when there is no such schedule, else whether it
    /// changed.
    pub async fn set_paused(&self, queue: &str, name: &str, paused: bool) -> Result<Option<bool>> {
        let channel = self.backend.keys().schedule_channel();
        match self.backend.call(queue, &PauseArgs { name, paused, channel }).await? {
            -1 => Ok(None),
            code => Ok(Some(code == 1)),
        }
    }

    /// Deletes a schedule; false when there was none.
    pub async fn delete(&self, queue: &str, name: &str) -> Result<bool> {
        let channel = self.backend.keys().schedule_channel();
        Ok(self.backend.call(queue, &DeleteArgs { name, channel }).await? == 1)
    }
}

/// A queue and an HSCAN page of its definitions: name, definition, name, ...
type DefinitionPage<'q> = (&'q str, Vec<Vec<u8>>);

/// A schedule read from its hash, with its name: one that does not decode is its error.
pub type Named = (String, Result<StoredSchedule>);

/// The schedules of an HSCAN page (name, packed definition, name, ...) of `queue`'s hash, with
/// their fire states in the same order.
fn named(queue: &str, flat: &[Vec<u8>], states: &[Option<Vec<u8>>]) -> Result<Vec<Named>> {
    let mut schedules = Vec::with_capacity(flat.len() / 2);
    for (pair, state) in flat.chunks_exact(2).zip(states) {
        let name = String::from_utf8(pair[0].clone()).map_err(|_| StoredSchedule::corrupt_name(queue))?;
        schedules.push((name, StoredSchedule::decode(&pair[1], state.as_deref())));
    }
    Ok(schedules)
}

/// How far a schedule has fired, as the fire function answers it.
fn fired_through(detail: &[u8]) -> Result<i64> {
    String::from_utf8_lossy(detail)
        .parse()
        .map_err(|_| StoreError::Corrupt("the fire function answered an unreadable fired-through".into()))
}

impl StoredSchedule {
    fn corrupt_name(queue: &str) -> StoreError {
        StoreError::Corrupt(format!("a schedule of queue {queue} with a name that is not UTF-8"))
    }
}
