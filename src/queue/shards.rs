//! Sharded queues: one queue spread over N physical queues, each under a hash tag of its own, so
//! on a Redis Cluster each is its own slot and, as placed here, most likely its own master.
//!
//! Shard 0 is the queue `Q` itself; shard i is the physical queue `Q~c`, where `~` is outside
//! the queue-name alphabet (no caller can name it) and `c` a small number picked as below. Every
//! per-queue function runs unchanged on a shard; a job's id names its shard (`Q~c/ULID`), so an
//! ack reaches the shard's keys with no lookup. The count is the queue's `shards` setting, set
//! once (`overrides.rs` refuses a change: the key -> shard map below depends on it).
//!
//! Placement: the names depend on (Q, N) only, so every instance computes the same ones, with no
//! lookup and no state. Cut the 16,384 slots into N equal ranges; shard 0's slot is in range b;
//! shard i takes the first candidate `c = 1, 2, ...` not taken by an earlier shard whose slot
//! falls in the middle three quarters of range (b + i) mod N. A cluster made by
//! `redis-cli --cluster create` over N masters gives each master one such range, so the shards
//! land one per master; over another number of masters, or once slots move, the shards are
//! still distinct slots and correct, only less evenly placed.
//!
//! Routing: a job with a key goes to the shard its key picks (its session's shard; else its
//! `concurrency_key`, its `rate_key`, its idempotency key, the first one it has), by a hash
//! that is the same on every instance, so one key's jobs stay in one shard and keep their
//! order, a per-key limit is counted in one place and a retried add meets its tombstone. A job
//! with no key goes round robin. A schedule lives in the shard its job's key picks, else its
//! name's (`for_schedule`).
//!
//! Owns: the names computed so far, and the round-robin counter. Calls no room.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

/// The most shards a queue may have.
pub(super) const MAX_SHARDS: u32 = 16;
/// What separates a queue's name from its shard's number in a physical queue's name (the
/// store's, whose registry counts the shards apart for `--max-queues`).
const SEPARATOR: char = crate::store::SHARD_SEPARATOR;
/// Redis Cluster's slot count.
const SLOTS: u32 = 16_384;
/// Candidates tried per shard before taking the first free one wherever its slot is (never
/// reached in practice: about one candidate in N fits).
const MAX_CANDIDATES: u32 = 10_000;

/// The queue a physical queue belongs to: `Q` for `Q` and for each of its shards `Q~c`.
pub(super) fn logical(queue: &str) -> &str {
    queue.split_once(SEPARATOR).map_or(queue, |(name, _)| name)
}

/// Whether `queue` names a shard (not shard 0), and the shard's number is well formed: 1 to 5
/// digits, no leading zero.
pub(super) fn shard_suffix_ok(queue: &str) -> bool {
    match queue.split_once(SEPARATOR) {
        None => true,
        Some((_, n)) => !n.is_empty() && n.len() <= 5 && !n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// The Redis Cluster slot of a physical queue's keys (their hash tag is the queue's name).
pub(super) fn slot(queue: &str) -> u32 {
    u32::from(crc16::State::<crc16::XMODEM>::calculate(queue.as_bytes())) % SLOTS
}

/// The physical queues of `queue` with `count` shards, shard 0 first (computed as the module
/// docs say).
fn place(queue: &str, count: u32) -> Vec<String> {
    let count = count.clamp(1, MAX_SHARDS);
    let range = |slot: u32| slot * count / SLOTS;
    let first = range(slot(queue));
    let mut names = vec![queue.to_owned()];
    let mut taken: Vec<u32> = Vec::new();
    for i in 1..count {
        let want = (first + i) % count;
        let (low, high) = (want * SLOTS / count, (want + 1) * SLOTS / count);
        let margin = (high - low) / 8;
        let fits = |c: u32| {
            let s = slot(&format!("{queue}{SEPARATOR}{c}"));
            (low + margin..high - margin).contains(&s)
        };
        let free = |c: &u32| !taken.contains(c);
        let pick = (1..=MAX_CANDIDATES)
            .filter(free)
            .find(|c| fits(*c))
            .or_else(|| (1..=MAX_CANDIDATES).find(free))
            .unwrap_or(i);
        taken.push(pick);
        names.push(format!("{queue}{SEPARATOR}{pick}"));
    }
    names
}

/// A stable 64-bit hash of a routing key (FNV-1a): the same on every instance and build.
fn key_hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The physical queues of each sharded queue computed so far, by (queue, shard count).
type Placed = HashMap<(String, u32), Arc<[String]>>;

/// The shards room: the physical names of sharded queues, and where each add goes.
#[derive(Default)]
pub(super) struct Shards {
    names: Mutex<Placed>,
    rotation: AtomicUsize,
}

impl Shards {
    /// The physical queues of `queue` with `count` shards, shard 0 (`queue` itself) first.
    pub(super) fn names(&self, queue: &str, count: u32) -> Arc<[String]> {
        if count <= 1 {
            return Arc::from(vec![queue.to_owned()]);
        }
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        names.entry((queue.to_owned(), count)).or_insert_with(|| Arc::from(place(queue, count))).clone()
    }

    /// The shard a job goes to among `names`, by its index (as the module docs say): its
    /// session's queue (`session`) when it has one, else the first of its `keys` that it has
    /// (its `concurrency_key`, `rate_key` and idempotency key, in that order), else round robin.
    pub(super) fn route(&self, names: &[String], session: Option<&str>, keys: &[Option<&str>]) -> usize {
        if let Some(session) = session {
            // A session lives in one shard, which its id names.
            if let Some(index) = names.iter().position(|n| n == session) {
                return index;
            }
        }
        match keys.iter().find_map(|k| k.filter(|k| !k.is_empty())) {
            Some(key) => pick(key_hash(key), names.len()),
            None => self.rotation.fetch_add(1, Ordering::Relaxed) % names.len().max(1),
        }
    }
}

/// The shard a session named `name` lives in, among its queue's physical queues `names`.
pub(super) fn for_session<'a>(names: &'a [String], name: &str) -> Option<&'a str> {
    names.get(pick(key_hash(name), names.len())).map(String::as_str)
}

/// The shard a schedule lives in among its queue's physical queues `names`: the one its
/// template's key picks (its `concurrency_key`, else its `rate_key`, not empty; `key`), where an add of
/// its job would go, so a fire claims its due time and adds its job in one call on the shard
/// that counts the key's limits; else the one its name picks, so many schedules spread.
pub(super) fn for_schedule<'a>(names: &'a [String], key: Option<&str>, name: &str) -> Option<&'a str> {
    names.get(pick(key_hash(key.unwrap_or(name)), names.len())).map(String::as_str)
}

/// Where a listing of a sharded queue is: the shard's index and the cursor within it, from a
/// page token (`<shard>.<cursor>`; a bare cursor is in shard 0, as an unsharded queue's tokens
/// are). None: not a token of this form.
pub(super) fn parse_page(token: &str) -> Option<(usize, &str)> {
    match token.split_once('.') {
        Some((index, cursor)) => Some((index.parse().ok()?, cursor)),
        None => Some((0, token)),
    }
}

/// The token of the next page after one from shard `index` of `count`: its cursor there
/// (`next`, None at the shard's end), else the start of the next shard, else "" (the end).
pub(super) fn next_page(index: usize, count: usize, next: Option<String>) -> String {
    match next {
        Some(cursor) if count > 1 => format!("{index}.{cursor}"),
        Some(cursor) => cursor,
        None if index + 1 < count => format!("{}.", index + 1),
        None => String::new(),
    }
}

/// The index `hash` picks among `len` shards.
fn pick(hash: u64, len: usize) -> usize {
    let len64 = u64::try_from(len).unwrap_or(u64::MAX).max(1);
    usize::try_from(hash % len64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_are_stable_distinct_and_spread_over_the_ranges() {
        for count in [2, 3, 5, 16] {
            let names = place("emails", count);
            assert_eq!(names, place("emails", count), "the same on every call");
            assert_eq!(names[0], "emails");
            let ranges: std::collections::HashSet<u32> = names.iter().map(|n| slot(n) * count / SLOTS).collect();
            assert_eq!(ranges.len(), names.len(), "one shard per range of slots: {names:?}");
            assert!(names.iter().all(|n| logical(n) == "emails" && shard_suffix_ok(n)));
        }
    }

    #[test]
    fn shard_suffixes_are_checked() {
        assert!(shard_suffix_ok("q") && shard_suffix_ok("q~12"));
        assert!(!shard_suffix_ok("q~") && !shard_suffix_ok("q~012") && !shard_suffix_ok("q~1a"));
        assert!(!shard_suffix_ok("q~123456"));
    }
}
