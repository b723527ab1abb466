//! Reading a queue's event stream (the scripts write it): ranges for catching up, the trim point
//! for detecting gaps, and a dedicated connection for blocking reads (a blocking read would
//! stall every request multiplexed on a pooled connection).

use std::{sync::Arc, time::Duration};

use redis::{AsyncCommands, Value};

use super::{Result, StoreError, backend::Backend, connection::Connection, millis};

/// One transition, as stored in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The event's cursor: its stream entry's id, followed by `.index` when the entry carries
    /// the same transition of several jobs.
    pub id: String,
    /// The stream entry's id.
    pub entry: String,
    /// What happened: the proto's `JobEventType` number (`E_*` of `lua/lib.lua`).
    pub kind: u8,
    /// The job it happened to.
    pub ulid: String,
    /// The job's attempt at the time (0 when the entry does not say).
    pub attempt: u32,
    /// The error of a failure ("" when none).
    pub error: String,
    /// When a delayed or retrying job becomes ready (epoch ms, Redis's clock); 0 when none.
    pub run_at_ms: i64,
    /// The progress reported (empty when none).
    pub progress: Vec<u8>,
}

/// Event cursors ("ms-seq" or "ms-seq.index") compared as numbers. A bare entry id stands for
/// the end of that entry, after all of its jobs.
pub fn event_order(id: &str) -> (u64, u64, u64) {
    let (entry, index) = match id.split_once('.') {
        Some((entry, index)) => (entry, index.parse().unwrap_or(0)),
        None => (id, u64::MAX),
    };
    let (ms, seq) = entry.split_once('-').unwrap_or((entry, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0), index)
}

/// Whether `cursor` has the form of an event cursor.
pub fn is_event_cursor(cursor: &str) -> bool {
    let (entry, index) = cursor.split_once('.').unwrap_or((cursor, "0"));
    entry.split_once('-').is_some_and(|(ms, seq)| ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok())
        && index.parse::<u64>().is_ok()
}

/// A stream entry as Redis returns it: its id and its field/value pairs.
type Entry = (String, Vec<(String, Vec<u8>)>);

/// A number field of a stream entry; a field the script left out reads as its default, 0.
fn field<T: std::str::FromStr>(value: &[u8], what: &str) -> Result<T> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("an event's {what} is not a number")))
}

/// One transition of several jobs within a stream entry: its kind, the jobs' ULIDs and their
/// attempts (both space-separated; no attempts when all are 0).
struct Group {
    kind: u8,
    jobs: String,
    attempts: String,
}

/// The events of stream entries: one per job an entry names. An entry holds one group of jobs
/// or several, each opened by its kind (`flush_events` in lua/lib.lua); its other fields (error,
/// run time, progress) are those of an entry's one transition.
fn parse_entries(value: Value) -> Result<Vec<StoredEvent>> {
    let entries: Vec<Entry> = redis::from_redis_value(value)?;
    let mut out = Vec::with_capacity(entries.len());
    for (entry, fields) in entries {
        let mut groups: Vec<Group> = Vec::with_capacity(1);
        let (mut error, mut run_at_ms, mut progress) = (String::new(), 0, Vec::new());
        for (name, value) in fields {
            let text = || String::from_utf8_lossy(&value).into_owned();
            match (name.as_str(), groups.last_mut()) {
                ("k", _) => {
                    groups.push(Group { kind: field(&value, "kind")?, jobs: String::new(), attempts: String::new() })
                }
                ("j", Some(group)) => group.jobs = text(),
                ("a", Some(group)) => group.attempts = text(),
                ("e", _) => error = text(),
                ("r", _) => run_at_ms = field(&value, "run_at")?,
                ("p", _) => progress = value,
                _ => {}
            }
        }
        let total: usize = groups.iter().map(|g| g.jobs.split(' ').count()).sum();
        let mut index = 0;
        for group in groups {
            let mut attempts = group.attempts.split(' ').filter(|a| !a.is_empty());
            for ulid in group.jobs.split(' ') {
                out.push(StoredEvent {
                    id: if total > 1 { format!("{entry}.{index}") } else { entry.clone() },
                    entry: entry.clone(),
                    kind: group.kind,
                    ulid: ulid.to_owned(),
                    attempt: attempts.next().map_or(Ok(0), |a| field(a.as_bytes(), "attempt"))?,
                    error: error.clone(),
                    run_at_ms,
                    progress: progress.clone(),
                });
                index += 1;
            }
        }
    }
    Ok(out)
}

/// The event streams of every queue (see the module doc).
#[derive(Clone)]
pub struct Events {
    backend: Arc<Backend>,
}

impl Events {
    pub(super) fn new(backend: Arc<Backend>) -> Self {
        Self { backend }
    }

    /// Events strictly after the cursor `after`, from at most `count` stream entries.
    pub async fn events_after(&self, queue: &str, after: &str, count: usize) -> Result<Vec<StoredEvent>> {
        let keys = self.backend.queue_keys(queue);
        // A cursor inside an entry reads that entry again, for the jobs after it.
        let start = match after.split_once('.') {
            Some((entry, _)) => entry.to_owned(),
            None => format!("({after}"),
        };
        let value: Value = self
            .backend
            .with_conn(async |c| {
                redis::cmd("XRANGE")
                    .arg(keys.events())
                    .arg(&start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(count)
                    .query_async(c)
                    .await
            })
            .await?;
        let after = event_order(after);
        Ok(parse_entries(value)?.into_iter().filter(|e| event_order(&e.id) > after).collect())
    }

    /// The id of the latest event ("0-0" when there is none) and, once any event has been
    /// trimmed away, the oldest id still kept: a cursor older than that may have missed events.
    pub async fn events_bounds(&self, queue: &str) -> Result<(String, Option<String>)> {
        let keys = self.backend.queue_keys(queue);
        let key = keys.events();
        self.backend
            .with_conn(async |c| {
                let exists: bool = c.exists(key).await?;
                if !exists {
                    return Ok(("0-0".to_owned(), None));
                }
                let info: std::collections::HashMap<String, Value> =
                    redis::cmd("XINFO").arg("STREAM").arg(key).query_async(c).await?;
                let text = |name: &str| {
                    info.get(name)
                        .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
                        .unwrap_or_else(|| "0-0".into())
                };
                let number =
                    |name: &str| info.get(name).and_then(|v| redis::from_redis_value_ref::<i64>(v).ok()).unwrap_or(0);
                let first = info
                    .get("first-entry")
                    .and_then(|v| redis::from_redis_value_ref::<(String, Value)>(v).ok())
                    .map(|(id, _)| id);
                let trimmed = number("entries-added") > number("length");
                Ok((text("last-generated-id"), first.filter(|_| trimmed)))
            })
            .await
    }

    /// A connection of its own for blocking reads of `queue`'s events: on a cluster, to the
    /// master of the queue's slot alone. After a read fails (the slot moved, the node went),
    /// make a new one: it finds the queue's master afresh.
    pub async fn blocking_connection(&self, queue: &str, block: Duration) -> Result<BlockingConnection> {
        let keys = self.backend.queue_keys(queue);
        Ok(BlockingConnection(self.backend.blocking_connection(keys.events(), block).await?))
    }

    /// Blocks up to `block` for events after `after` on `conn`.
    pub async fn read_events(
        &self,
        conn: &mut BlockingConnection,
        queue: &str,
        after: &str,
        block: Duration,
    ) -> Result<Vec<StoredEvent>> {
        let keys = self.backend.queue_keys(queue);
        let value: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1_000)
            .arg("BLOCK")
            .arg(millis(block))
            .arg("STREAMS")
            .arg(keys.events())
            .arg(after)
            .query_async(&mut conn.0)
            .await
            .map_err(StoreError::from)?;
        if value == Value::Nil {
            return Ok(Vec::new());
        }
        let streams: Vec<(String, Value)> = redis::from_redis_value(value)?;
        match streams.into_iter().next() {
            Some((_, entries)) => parse_entries(entries),
            None => Ok(Vec::new()),
        }
    }
}

/// A connection of its own for a blocking read of one queue's events (`read_events`), to the
/// node of the queue's slot.
pub struct BlockingConnection(Connection);

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, fields: &[(&str, &str)]) -> Value {
        let mut flat = Vec::new();
        for (name, value) in fields {
            flat.push(Value::BulkString(name.as_bytes().to_vec()));
            flat.push(Value::BulkString(value.as_bytes().to_vec()));
        }
        Value::Array(vec![Value::BulkString(id.as_bytes().to_vec()), Value::Array(flat)])
    }

    #[test]
    fn an_entry_of_several_groups_reads_as_their_events_in_order() {
        let value = Value::Array(vec![
            entry("1-0", &[("k", "6"), ("j", "A B"), ("a", "1 2"), ("k", "3"), ("j", "C")]),
            entry("2-0", &[("k", "5"), ("j", "D"), ("a", "1"), ("e", "boom"), ("r", "99")]),
        ]);
        let events = parse_entries(value).expect("parses");
        let seen: Vec<(&str, u8, &str, u32)> =
            events.iter().map(|e| (e.id.as_str(), e.kind, e.ulid.as_str(), e.attempt)).collect();
        assert_eq!(seen, [("1-0.0", 6, "A", 1), ("1-0.1", 6, "B", 2), ("1-0.2", 3, "C", 0), ("2-0", 5, "D", 1)]);
        assert_eq!((events[3].error.as_str(), events[3].run_at_ms), ("boom", 99));
        assert_eq!(events[2].error, "");
    }
}
