//! Store calls for sessions: a state document plus an ordered line of jobs, kept in the queue's
//! own keys so session updates are atomic with job transitions (see lua/lib.lua).

use std::time::Duration;

use rmpv::Value;

use super::{Result, Store, StoreError};

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub name: String,
    pub state: String,
    pub version: u64,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub ttl: Duration,
    pub max_concurrency: u32,
    /// Jobs running now.
    pub started: u64,
    /// Jobs released to the queue, not started yet.
    pub queued: u64,
    /// Jobs still waiting inside the session.
    pub pending: u64,
}

/// The outcome of a compare-and-set on a session's state.
#[derive(Debug, PartialEq, Eq)]
pub enum SetOutcome {
    Written(u64),
    UnknownSession,
    VersionMismatch(u64),
}

fn meta(raw: &[u8]) -> Result<[i64; 7]> {
    let value = rmpv::decode::read_value(&mut &raw[..]).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let Value::Array(items) = value else { return Err(StoreError::Corrupt("session meta is not an array".into())) };
    let mut out = [0i64; 7];
    for (slot, item) in out.iter_mut().zip(items) {
        *slot = match item {
            Value::Integer(i) => i.as_i64().unwrap_or_default(),
            Value::F64(f) => f as i64,
            _ => return Err(StoreError::Corrupt("session meta holds a non-number".into())),
        };
    }
    Ok(out)
}

impl Store {
    /// Creates a session; false when the name is taken.
    pub async fn create_session(
        &self,
        queue: &str,
        name: &str,
        state: &str,
        ttl: Duration,
        max_concurrency: u32,
    ) -> Result<bool> {
        let keys = self.queue_keys(queue);
        let mut inv = self.invocation(&self.scripts.session_create, queue, &keys);
        inv.arg(name).arg(state).arg(ttl.as_millis() as u64).arg(max_concurrency);
        let (created, _): (i64, i64) = self.run(&inv).await?;
        Ok(created == 1)
    }

    pub async fn session(&self, queue: &str, name: &str) -> Result<Option<SessionRecord>> {
        let keys = self.queue_keys(queue);
        let mut inv = self.invocation(&self.scripts.session_get, queue, &keys);
        inv.arg(name);
        let (raw, state, pending, _now): (Option<Vec<u8>>, Option<String>, u64, i64) = self.run(&inv).await?;
        let Some(raw) = raw else { return Ok(None) };
        let [version, created, updated, ttl, maxc, started, queued] = meta(&raw)?;
        Ok(Some(SessionRecord {
            name: name.to_owned(),
            state: state.unwrap_or_default(),
            version: version.max(0) as u64,
            created_ms: created,
            updated_ms: updated,
            ttl: Duration::from_millis(ttl.max(0) as u64),
            max_concurrency: maxc.max(0) as u32,
            started: started.max(0) as u64,
            queued: queued.max(0) as u64,
            pending,
        }))
    }

    /// Replaces the state if the version is still `expected`.
    pub async fn set_session_state(&self, queue: &str, name: &str, state: &str, expected: u64) -> Result<SetOutcome> {
        let keys = self.queue_keys(queue);
        let mut inv = self.invocation(&self.scripts.session_set, queue, &keys);
        inv.arg(name).arg(state).arg(expected);
        let (code, version): (i64, u64) = self.run(&inv).await?;
        Ok(match code {
            1 => SetOutcome::Written(version),
            0 => SetOutcome::UnknownSession,
            _ => SetOutcome::VersionMismatch(version),
        })
    }

    /// Deletes a session and every job still pending inside it; false when it did not exist.
    pub async fn delete_session(&self, queue: &str, name: &str) -> Result<bool> {
        let keys = self.queue_keys(queue);
        let mut existed = false;
        loop {
            let mut inv = self.invocation(&self.scripts.session_delete, queue, &keys);
            inv.arg(name).arg(1_000);
            let (was, _removed, left): (i64, u64, u64) = self.run(&inv).await?;
            existed |= was == 1;
            if left == 0 {
                return Ok(existed);
            }
        }
    }

    /// A page of session names (HSCAN order) and the cursor of the next page ("0": no more).
    pub async fn session_names(&self, queue: &str, cursor: &str, count: u64) -> Result<(String, Vec<String>)> {
        let key = self.queue_keys(queue).sessions().to_owned();
        let (next, flat): (String, Vec<Vec<u8>>) = self
            .with_conn(async |c| redis::cmd("HSCAN").arg(&key).arg(cursor).arg("COUNT").arg(count).query_async(c).await)
            .await?;
        // Fields are names (text); values are packed meta (binary) and skipped.
        Ok((next, flat.into_iter().step_by(2).map(|name| String::from_utf8_lossy(&name).into_owned()).collect()))
    }

    /// Expires idle sessions of one queue; returns the names deleted.
    pub async fn sweep_sessions(&self, queue: &str) -> Result<Vec<String>> {
        let keys = self.queue_keys(queue);
        let inv = self.invocation(&self.scripts.session_sweep, queue, &keys);
        self.run(&inv).await
    }
}
