//! Sessions: a state document plus an ordered line of jobs, kept in the queue's own keys so
//! session updates are atomic with job transitions (see lua/lib.lua). This part creates, reads,
//! compare-and-sets, lists, deletes and expires them, and pages through the jobs still pending
//! inside one.

use std::{sync::Arc, time::Duration};

use rmpv::Value;

use super::{
    JobRecord, Result, StoreError,
    args::{SessionCreateArgs, SessionDeleteArgs, SessionGetArgs, SessionJobsArgs, SessionSetArgs, SessionSweepArgs},
    backend::Backend,
    decoded, record,
};

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Its name within the queue.
    pub name: String,
    /// The state document (JSON text).
    pub state: String,
    /// The state's version: 1 at creation, one more per write.
    pub version: u64,
    /// When it was created (epoch ms, Redis's clock).
    pub created_ms: i64,
    /// When it last changed: its state, or its jobs' progress through it (epoch ms, Redis's
    /// clock).
    pub updated_ms: i64,
    /// How long it may stay idle (no jobs, no change) before it expires.
    pub ttl: Duration,
    /// Most of its jobs running at once.
    pub max_concurrency: u32,
    /// Jobs running now.
    pub started: u64,
    /// Jobs released to the queue, not started yet.
    pub queued: u64,
    /// Jobs still waiting inside the session.
    pub pending: u64,
}

/// One job still pending inside its session, as [`Sessions::pending_jobs`] lists it.
#[derive(Debug)]
pub struct PendingJob {
    /// Its place in the session's line, `seq/ULID`: the session releases its jobs in this
    /// (lexical) order, and a page after this place starts with the next job.
    pub place: String,
    /// Its ULID.
    pub ulid: String,
    /// Its record (None when it is missing, which the doctor reports).
    pub record: Option<JobRecord>,
}

/// A page of a session's pending jobs, and whether more follow it.
#[derive(Debug)]
pub struct PendingPage {
    /// The jobs, in release order.
    pub jobs: Vec<PendingJob>,
    /// Whether jobs follow the last one.
    pub more: bool,
}

/// The outcome of a compare-and-set on a session's state.
#[derive(Debug, PartialEq, Eq)]
pub enum SetOutcome {
    /// Written; the new version.
    Written(u64),
    /// No such session: nothing written.
    UnknownSession,
    /// The session is at another version (this one): nothing written.
    VersionMismatch(u64),
}

/// The packed session meta (lua/lib.lua's M_* order): version, created, updated, ttl ms, max
/// concurrency, started jobs, queued jobs.
fn meta(raw: &[u8]) -> Result<[i64; 7]> {
    let value = rmpv::decode::read_value(&mut &raw[..]).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let Value::Array(items) = value else { return Err(StoreError::Corrupt("session meta is not an array".into())) };
    if items.len() != 7 {
        return Err(StoreError::Corrupt("session meta with another number of fields".into()));
    }
    let mut out = [0i64; 7];
    for (slot, item) in out.iter_mut().zip(&items) {
        *slot = record::int(item)?;
    }
    Ok(out)
}

/// Sessions of every queue (see the module doc).
#[derive(Clone)]
pub struct Sessions {
    backend: Arc<Backend>,
}

impl Sessions {
    pub(super) fn new(backend: Arc<Backend>) -> Self {
        Self { backend }
    }

    /// Creates a session; false when the name is taken.
    pub async fn create_session(
        &self,
        queue: &str,
        name: &str,
        state: &str,
        ttl: Duration,
        max_concurrency: u32,
    ) -> Result<bool> {
        let args = SessionCreateArgs { name, state, ttl, max_concurrency };
        let (created, _) = self.backend.call(queue, &args).await?;
        Ok(created == 1)
    }

    /// One session with its counts; None when it does not exist.
    pub async fn session(&self, queue: &str, name: &str) -> Result<Option<SessionRecord>> {
        let (raw, state, pending, _now) = self.backend.call(queue, &SessionGetArgs { name }).await?;
        let Some(raw) = raw else { return Ok(None) };
        let [version, created, updated, ttl, maxc, started, queued] = meta(&raw)?;
        Ok(Some(SessionRecord {
            name: name.to_owned(),
            state: state.unwrap_or_default(),
            version: decoded(version, "a session version")?,
            created_ms: created,
            updated_ms: updated,
            ttl: Duration::from_millis(decoded(ttl, "a session ttl")?),
            max_concurrency: decoded(maxc, "a session's max concurrency")?,
            started: decoded(started, "a session's started jobs")?,
            queued: decoded(queued, "a session's queued jobs")?,
            pending: decoded(pending, "a session's pending jobs")?,
        }))
    }

    /// Up to `count` jobs pending inside a session, in release order, after the place `after`
    /// (`seq/ULID` of the last job of the previous page; empty from the start), in one call;
    /// None when the session does not exist.
    pub async fn pending_jobs(&self, queue: &str, name: &str, after: &str, count: u64) -> Result<Option<PendingPage>> {
        let (exists, flat, more) = self.backend.call(queue, &SessionJobsArgs { name, after, count }).await?;
        if exists != 1 {
            return Ok(None);
        }
        let mut jobs = Vec::with_capacity(flat.len() / 2);
        let mut pairs = flat.into_iter();
        while let (Some(place), Some(raw)) = (pairs.next(), pairs.next()) {
            let place = String::from_utf8(place.unwrap_or_default())
                .map_err(|_| StoreError::Corrupt("a session job's place is not text".into()))?;
            let Some((_, ulid)) = place.split_once('/') else {
                return Err(StoreError::Corrupt(format!("session job place {place:?} has no ULID")));
            };
            let ulid = ulid.to_owned();
            let record = raw.map(|raw| JobRecord::decode(&raw, None)).transpose()?;
            jobs.push(PendingJob { place, ulid, record });
        }
        Ok(Some(PendingPage { jobs, more: more == 1 }))
    }

    /// Replaces the state if the version is still `expected`.
    pub async fn set_session_state(&self, queue: &str, name: &str, state: &str, expected: u64) -> Result<SetOutcome> {
        let (code, version) = self.backend.call(queue, &SessionSetArgs { name, state, expected }).await?;
        Ok(match code {
            1 => SetOutcome::Written(decoded(version, "a session version")?),
            0 => SetOutcome::UnknownSession,
            _ => SetOutcome::VersionMismatch(decoded(version, "a session version")?),
        })
    }

    /// Deletes a session and every job still pending inside it; false when it did not exist.
    pub async fn delete_session(&self, queue: &str, name: &str) -> Result<bool> {
        let mut existed = false;
        loop {
            let (was, _removed, left) = self.backend.call(queue, &SessionDeleteArgs { name, batch: 1_000 }).await?;
            existed |= was == 1;
            if left == 0 {
                return Ok(existed);
            }
        }
    }

    /// A page of session names (HSCAN order) and the cursor of the next page ("0": no more).
    pub async fn session_names(&self, queue: &str, cursor: &str, count: u64) -> Result<(String, Vec<String>)> {
        let keys = self.backend.queue_keys(queue);
        let (next, flat): (String, Vec<Vec<u8>>) = self
            .backend
            .with_conn(async |c| {
                redis::cmd("HSCAN").arg(keys.sessions()).arg(cursor).arg("COUNT").arg(count).query_async(c).await
            })
            .await?;
        // Fields are names (text); values are packed meta (binary) and skipped.
        Ok((next, flat.into_iter().step_by(2).map(|name| String::from_utf8_lossy(&name).into_owned()).collect()))
    }

    /// Expires idle sessions of one queue; returns the names deleted.
    pub async fn sweep_sessions(&self, queue: &str) -> Result<Vec<String>> {
        self.backend.call(queue, &SessionSweepArgs).await
    }
}
