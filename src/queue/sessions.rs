//! Sessions: a caller's isolated state document plus its own ordered line of jobs, inside one
//! queue (so session writes are atomic with job transitions; see `store/lua/lib.lua`).
//!
//! Ids are `<queue>/<name>`, so any instance finds a session's keys without a lookup. State is
//! JSON, validated here; partial updates are JSON merge patches (RFC 7396) applied here and
//! written with a compare-and-set on the version, retried when another writer got in between
//! (unless the caller asked for a specific version).
//!
//! Owns nothing but its limits: sessions live in Redis. Calls `registry` (creating a session
//! registers its queue), `memory` (no new session while Redis is full; a create or a write of
//! the state Redis refuses for memory is answered as an add would be) and `background` (no new
//! sessions once the instance stops). Idle
//! sessions are expired by the heartbeat's sweep (`leases/liveness.rs`), not here.

use std::{sync::Arc, time::Duration};

use serde_json::Value;

use super::{
    background::Background,
    error::{Error, Result},
    job::{JobId, JobView, SessionId, from_ms, validate_queue},
    memory::Memory,
    overrides::Overrides,
    registry::QueueRegistry,
    settings::Limits,
    shards,
};
use crate::store::{SessionRecord, SetOutcome, Store};

const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
const MIN_TTL: Duration = Duration::from_millis(100);
const MAX_CONCURRENCY: u32 = 1_000;
const MAX_PAGE: u64 = 100;

/// How UpdateSession changes the state.
#[derive(Clone, Debug)]
pub enum SessionUpdate {
    /// The new state (JSON).
    Replace(String),
    /// A JSON merge patch (RFC 7396) applied to the current state.
    MergePatch(String),
}

/// A session as it is now.
#[derive(Clone, Debug)]
pub struct SessionView {
    /// Its id.
    pub id: SessionId,
    /// Its state (JSON).
    pub state: String,
    /// Goes up by one on every write of the state.
    pub version: u64,
    /// When it was created.
    pub created_at: std::time::SystemTime,
    /// Its last activity.
    pub updated_at: std::time::SystemTime,
    /// How long it may stay idle before it is expired.
    pub ttl: Duration,
    /// Most of its jobs that run at once.
    pub max_concurrency: u32,
    /// Its jobs running now.
    pub running_jobs: u64,
    /// Its jobs released to the queue and not started yet.
    pub queued_jobs: u64,
    /// Its jobs still waiting inside the session.
    pub pending_jobs: u64,
}

impl SessionView {
    fn new(queue: &str, r: SessionRecord) -> Self {
        Self {
            id: SessionId::new(queue, &r.name),
            state: r.state,
            version: r.version,
            created_at: from_ms(r.created_ms),
            updated_at: from_ms(r.updated_ms),
            ttl: r.ttl,
            max_concurrency: r.max_concurrency,
            running_jobs: r.started,
            queued_jobs: r.queued,
            pending_jobs: r.pending,
        }
    }
}

/// Checks that `state` is JSON within the size cap.
pub(super) fn validate_state(state: &str, limits: &Limits, field: &str) -> Result<Value> {
    if state.len() > limits.max_session_state {
        return Err(Error::TooLarge(format!(
            "{field}: {} bytes is over the limit of {} bytes",
            state.len(),
            limits.max_session_state
        )));
    }
    serde_json::from_str(state).map_err(|e| Error::invalid(field, format!("is not valid JSON: {e}")))
}

/// RFC 7396: objects merge key by key, `null` removes a key, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(changes) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(fields) = target {
        for (key, change) in changes {
            if change.is_null() {
                fields.remove(key);
            } else {
                merge_patch(fields.entry(key.clone()).or_insert(Value::Null), change);
            }
        }
    }
}

/// The sessions room.
pub(super) struct Sessions {
    store: Arc<Store>,
    registry: Arc<QueueRegistry>,
    /// Where a sharded queue's sessions live.
    overrides: Arc<Overrides>,
    memory: Arc<Memory>,
    background: Background,
    limits: Limits,
}

impl Sessions {
    pub(super) fn new(
        store: Arc<Store>,
        registry: Arc<QueueRegistry>,
        overrides: Arc<Overrides>,
        memory: Arc<Memory>,
        background: Background,
        limits: Limits,
    ) -> Self {
        Self { store, registry, overrides, memory, background, limits }
    }

    /// Creates a session (see `Engine::create_session` for the defaults).
    pub(super) async fn create(
        &self,
        queue: &str,
        name: Option<&str>,
        state: Option<&str>,
        ttl: Option<Duration>,
        max_concurrency: Option<u32>,
    ) -> Result<SessionView> {
        self.background.check_open()?;
        validate_queue(queue, "queue")?;
        let generated = ulid::Ulid::new().to_string();
        let name = name.filter(|n| !n.is_empty()).unwrap_or(&generated);
        validate_queue(name, "session_id")?;
        let state = state.filter(|s| !s.is_empty()).unwrap_or("{}");
        validate_state(state, &self.limits, "state")?;
        let ttl = ttl.unwrap_or(DEFAULT_TTL);
        if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
            return Err(Error::invalid("ttl", "must be from 100 ms to 30 days"));
        }
        let max_concurrency = max_concurrency.unwrap_or(1);
        if max_concurrency == 0 || max_concurrency > MAX_CONCURRENCY {
            return Err(Error::invalid("max_concurrency", "must be from 1 to 1000"));
        }
        self.memory.check_room()?;
        // In a sharded queue, the session lives in the shard its name picks, which its id names.
        let names = self.overrides.shards_of(queue).await?;
        let queue = shards::for_session(&names, name).unwrap_or(queue);
        self.registry.register(queue).await?;
        let id = SessionId::new(queue, name);
        let created = self.store.sessions().create_session(queue, name, state, ttl, max_concurrency).await;
        if !created.map_err(|e| self.memory.refusal(e))? {
            return Err(Error::AlreadyExists(format!("session_id: session {id} already exists")));
        }
        // The queue may have left the registry between the registration and the write.
        self.registry.register_again(queue).await;
        self.get(&id).await
    }

    pub(super) async fn get(&self, id: &SessionId) -> Result<SessionView> {
        let record = self.store.sessions().session(&id.queue, &id.name).await?;
        let record = record.ok_or_else(|| Error::NotFound(format!("session_id: session {id} does not exist")))?;
        Ok(SessionView::new(&id.queue, record))
    }

    /// Writes the state (replaced or merge-patched); returns the new version.
    pub(super) async fn update(&self, id: &SessionId, update: SessionUpdate, expected: Option<u64>) -> Result<u64> {
        let limits = &self.limits;
        let (text, field) = match &update {
            SessionUpdate::Replace(s) => (s, "state"),
            SessionUpdate::MergePatch(s) => (s, "merge_patch"),
        };
        let given = validate_state(text, limits, field)?;
        for _ in 0..16 {
            let current = self.get(id).await?;
            let version = expected.unwrap_or(current.version);
            let next = match &update {
                SessionUpdate::Replace(s) => s.clone(),
                SessionUpdate::MergePatch(_) => {
                    let mut doc: Value = serde_json::from_str(&current.state).unwrap_or(Value::Null);
                    merge_patch(&mut doc, &given);
                    doc.to_string()
                }
            };
            validate_state(&next, limits, field)?;
            let set = self.store.sessions().set_session_state(&id.queue, &id.name, &next, version).await;
            match set.map_err(|e| self.memory.refusal(e))? {
                SetOutcome::Written(v) => return Ok(v),
                SetOutcome::UnknownSession => {
                    return Err(Error::NotFound(format!("session_id: session {id} does not exist")));
                }
                SetOutcome::VersionMismatch(now) if expected.is_some() => {
                    return Err(Error::Precondition(format!(
                        "expected_version: session {id} is at version {now}, not {version}; nothing was written"
                    )));
                }
                SetOutcome::VersionMismatch(_) => continue,
            }
        }
        Err(Error::Aborted(format!("session_id: session {id} kept changing; nothing was written, retry")))
    }

    pub(super) async fn delete(&self, id: &SessionId) -> Result<()> {
        if !self.store.sessions().delete_session(&id.queue, &id.name).await? {
            return Err(Error::NotFound(format!("session_id: session {id} does not exist")));
        }
        Ok(())
    }

    /// A page of the jobs still pending inside a session, in the order it will release them;
    /// the token is opaque (empty: first page) and the returned one is empty on the last page.
    /// One Redis call per page. Jobs the session has released already are not among them:
    /// nothing indexes them by session (the session counts them, `running_jobs` and
    /// `queued_jobs`).
    pub(super) async fn pending_jobs(
        &self,
        id: &SessionId,
        page_size: u64,
        token: &str,
    ) -> Result<(Vec<JobView>, String)> {
        if !token.is_empty() && !is_place(token) {
            return Err(Error::invalid("page_token", "is not a token this server issued"));
        }
        let count = page_size.clamp(1, MAX_PAGE);
        let page = self.store.sessions().pending_jobs(&id.queue, &id.name, token, count).await?;
        let page = page.ok_or_else(|| Error::NotFound(format!("session_id: session {id} does not exist")))?;
        let next =
            if page.more { page.jobs.last().map(|j| j.place.clone()).unwrap_or_default() } else { String::new() };
        let views = page
            .jobs
            .into_iter()
            .filter_map(|job| job.record.map(|record| JobView::new(JobId::new(&id.queue, &job.ulid), record, None)))
            .collect();
        Ok((views, next))
    }

    /// A page of a queue's sessions (shard after shard in a sharded queue); the token is opaque
    /// (empty: first page) and the returned one is empty on the last page. Pages may be
    /// shorter than asked, never longer.
    ///
    /// The store's cursor is HSCAN's, and one HSCAN step may return more names than asked (a
    /// small hash comes back whole). So a page sorts its step's names and, when it must stop
    /// inside the step, its token is the step's place (shard and cursor) and the last name
    /// sent, `place/name`: the next page rescans that step and sends the names after it. A
    /// name is never sent twice in a walk, and one present throughout is never skipped.
    pub(super) async fn list(&self, queue: &str, page_size: u64, token: &str) -> Result<(Vec<SessionView>, String)> {
        validate_queue(queue, "queue")?;
        let bad_token = || Error::invalid("page_token", "is not a token this server issued");
        let (place, after) = match token.split_once('/') {
            Some((place, after)) => (place, Some(after)),
            None => (token, None),
        };
        if after.is_some_and(|name| validate_queue(name, "page_token").is_err()) {
            return Err(bad_token());
        }
        let (index, cursor) = shards::parse_page(place).ok_or_else(bad_token)?;
        let cursor = if cursor.is_empty() { "0" } else { cursor };
        if cursor.parse::<u64>().is_err() {
            return Err(bad_token());
        }
        // A sharded queue's sessions are listed shard after shard.
        let physical = self.overrides.shards_of(queue).await?;
        let queue = physical.get(index).ok_or_else(bad_token)?.as_str();
        let scan_count = page_size.clamp(1, MAX_PAGE);
        let count = usize::try_from(scan_count).unwrap_or(usize::MAX);
        let (next, mut names) = self.store.sessions().session_names(queue, cursor, scan_count).await?;
        names.sort_unstable();
        names.retain(|name| after.is_none_or(|after| name.as_str() > after));
        let next_token = if names.len() > count {
            names.truncate(count);
            let here = shards::next_page(index, physical.len(), Some(cursor.to_owned()));
            names.last().map(|last| format!("{here}/{last}")).unwrap_or_default()
        } else {
            shards::next_page(index, physical.len(), (next != "0").then_some(next))
        };
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some(record) = self.store.sessions().session(queue, &name).await? {
                out.push(SessionView::new(queue, record));
            }
        }
        Ok((out, next_token))
    }
}

/// Whether `token` is a job's place in a session's line as the store writes it, `seq/ULID`
/// (16 digits, a slash, 26 letters and digits), so that a forged token cannot reach past it.
fn is_place(token: &str) -> bool {
    token.split_once('/').is_some_and(|(seq, ulid)| {
        seq.len() == 16
            && seq.bytes().all(|b| b.is_ascii_digit())
            && ulid.len() == 26
            && ulid.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2]});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}, "list": [], "new": {"x": 1}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}, "list": [], "new": {"x": 1}}));
        let mut scalar = json!(1);
        merge_patch(&mut scalar, &json!({"k": null}));
        assert_eq!(scalar, json!({}));
    }

    #[test]
    fn page_tokens_are_places_in_a_session_line() {
        assert!(is_place("0000000000000042/01ARZ3NDEKTSV4RRFFQ69G5FAV"));
        assert!(!is_place("42/01ARZ3NDEKTSV4RRFFQ69G5FAV"));
        assert!(!is_place("0000000000000042/01ARZ3NDEKTSV4RRFFQ69G5FA-"));
        assert!(!is_place("0000000000000042/../x"));
        assert!(!is_place(""));
    }

    #[test]
    fn session_ids_name_their_queue() {
        let id = SessionId::parse("chat/user-7", "session_id").expect("valid");
        assert_eq!((id.queue.as_str(), id.name.as_str()), ("chat", "user-7"));
        assert!(SessionId::parse("chat", "session_id").is_err());
        assert!(SessionId::parse("chat/a/b", "session_id").is_err());
    }
}
