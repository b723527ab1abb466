//! The walk of one queue's structures in bounded pages, collecting the candidate findings
//! that the doctor then confirms (see the parent module's doc for what is checked and why).

use super::*;

/// The walk of one queue's structures (see the module doc), collecting candidate findings.
pub(super) struct QueueWalk<'d> {
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
    /// Per concurrency key: the leases flagged `k` of its jobs, as found.
    key_leases: HashMap<String, u64>,
    /// Job records read.
    pub(super) records: u64,
    /// What the walk found, still to be confirmed.
    pub(super) findings: Vec<Finding>,
}

impl<'d> QueueWalk<'d> {
    pub(super) fn new(doctor: &'d Doctor, queue: &'d str, live: &'d HashSet<String>) -> Self {
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
            key_leases: HashMap::new(),
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

    pub(super) async fn run(&mut self) -> Result<()> {
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
        self.walk_keyed().await?;
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
        self.check_key_counts().await?;
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

    /// The ready jobs with a rate or concurrency key (`lua/limits_lib.lua`): ready like those of
    /// the lists, so their records are placed; their structures are checked by the invariants.
    async fn walk_keyed(&mut self) -> Result<()> {
        let key = self.keys.keyed().to_owned();
        let mut start = 0usize;
        loop {
            let stop = start + PAGE - 1;
            let members: Vec<String> =
                self.doctor.backend.with_conn(async |c| c.zrange(&key, isize_of(start), isize_of(stop)).await).await?;
            for member in &members {
                if let Some(ulid) = member.rsplit_once('\0').and_then(|(_, id)| ulid_of(id)) {
                    self.ready.insert(ulid);
                }
            }
            if members.len() < PAGE {
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
            let (next, flat): (u64, Vec<String>) = self.doctor.hash_page(&key, cursor).await?;
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
                let flagged = lease
                    .rsplit_once('|')
                    .is_some_and(|(_, f)| f.contains('k') && !f.contains(|c: char| c.is_ascii_digit()));
                if let Some(key) = decode(row).and_then(Result::ok).and_then(|r| r.concurrency_key).filter(|_| flagged)
                {
                    *self.key_leases.entry(key).or_default() += 1;
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
    async fn hash_fields(&self, key: &str, cursor: u64) -> Result<(u64, Vec<String>)> {
        let (next, flat): (u64, Vec<redis::Value>) = self.doctor.hash_page(key, cursor).await?;
        let fields = flat.into_iter().step_by(2).map(redis::from_redis_value).collect::<Result<_, _>>()?;
        Ok((next, fields))
    }

    async fn walk_records(&mut self) -> Result<()> {
        let key = self.keys.jobs().to_owned();
        let mut cursor = 0u64;
        loop {
            let (next, ids) = self.hash_fields(&key, cursor).await?;
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
            let (next, ids) = self.hash_fields(&key, cursor).await?;
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

    /// Each concurrency key's count of leases (`lua/limits_lib.lua`) against the leases found;
    /// a difference is confirmed by recounting inside Redis (`doctor_key_count.lua`), as the
    /// walk is not one step.
    async fn check_key_counts(&mut self) -> Result<()> {
        let key = self.keys.key_state().to_owned();
        let mut counted: HashMap<String, u64> = HashMap::new();
        let mut cursor = 0u64;
        loop {
            let (next, flat): (u64, Vec<String>) = self.doctor.hash_page(&key, cursor).await?;
            for pair in flat.chunks_exact(2) {
                if let Some(name) = pair[0].strip_prefix('a') {
                    counted.insert(name.to_owned(), pair[1].parse().unwrap_or(u64::MAX));
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut names: Vec<String> = counted.keys().chain(self.key_leases.keys()).cloned().collect();
        names.sort();
        names.dedup();
        for name in names {
            let (count, live) =
                (counted.get(&name).copied().unwrap_or(0), self.key_leases.get(&name).copied().unwrap_or(0));
            if count != live {
                let detail = format!("concurrency key counts {count} leases, but {live} are live");
                self.found(Kind::KeyCount, &name, detail, Some(Mend::KeyCount));
            }
        }
        Ok(())
    }

    /// When each session of the queue was last updated.
    async fn session_updates(&self) -> Result<HashMap<String, i64>> {
        let mut updates = HashMap::new();
        let mut cursor = 0u64;
        loop {
            let (next, page) = self.hash_fields(self.keys.sessions(), cursor).await?;
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
            let (next, page) = self.hash_fields(keys.sessions(), cursor).await?;
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
            let (next, page) = self.hash_fields(keys.session_state(), cursor).await?;
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
