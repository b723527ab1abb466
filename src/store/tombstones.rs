//! Idempotency tombstones: how the key of an add is remembered for its window, compactly.
//!
//! A tombstone is one entry, idempotency key -> ULID of the first add, in a hash that holds the
//! keys added during one span of Redis time: bucket `index` of width `w` ms holds the keys added
//! while Redis's clock was in `[index * w, (index + 1) * w)` (`QueueKeys::tombstones`). For a
//! window, `w` is the window divided by [`LOOKBACK`] (rounded up). An add looks its key up in the
//! current bucket and the `LOOKBACK` before it, which together cover at least the window, and
//! writes it into the current one; a bucket expires whole, with one PEXPIREAT, at
//! `(index + LOOKBACK + 1) * w` ([`expiry`]): the moment the last lookup that could read it has
//! passed. So a key is remembered for at least its window and at most one bucket longer
//! (1.125 windows on average), memory is one hash entry per key (about 82 bytes, against about
//! 200 for a string key with a TTL of its own), and it is given back a bucket at a time, with
//! no sweep. Redis 7.0 has no expiry per hash field, hence whole buckets.
//!
//! The entry's field is not the key but the first 14 bytes of its SHA-256 ([`digest`]
//! is passed, the add function cuts it), so every tombstone is the same small size whatever the
//! key (a client's UUID is 36 bytes, a caller's key up to 256). 14 bytes because Redis keeps a
//! string of up to 14 in a 16-byte allocation and one of 15 to 30 in a 32-byte one: 16 bytes a
//! tombstone less than the whole 16-byte digest (measured: 98.4 bytes per entry, now 82.4). Two
//! keys share a field with a chance of 2^-112 per pair; over the 10^9 keys a busy queue's
//! lookups could hold at once (1.6 million adds a second for a 10-minute window) that is about
//! 10^-16 (n^2 / 2^113). A shared field would answer the second add as a duplicate of the
//! first, so it matters that no one can make one on purpose against another's key: that is a
//! second preimage of 112 bits, out of reach (a pair of one's own keys costs about 2^56 hashes,
//! and harms only oneself). Tombstones written before this release have the whole 16-byte
//! digest as their field; the add function looks for both (`lua/add.lua`), a cost that can go
//! once no such bucket can be left (1.25 times the longest window after the upgrade).
//!
//! Each window has buckets of its own width, a *family*: keys a caller chose are remembered for
//! the idempotency window (24 h by default), keys a client library generated for its own
//! retries for the much shorter retry window (10 min), so the tombstones that come with every
//! add by default weigh throughput times minutes, not times a day. A key is looked for in its
//! own family only. Instances that disagree on a window use different families: a window
//! changed in a rolling restart is not seen across the change for the keys added before it.
//!
//! The clock is Redis's (TIME inside the add function), the one clock of the queue. But a
//! function may only touch the keys its caller names, so the caller names [`SPAN`] buckets per
//! family from its own clock, from `LOOKBACK + MARGIN` before its current bucket to `MARGIN`
//! after; the function picks among them by Redis's clock. Any instance clock within one bucket
//! width of Redis's (2.5 minutes for the retry window) names the right ones; past that the
//! function writes nothing and answers Redis's time, and the caller names them again from that
//! time (`Jobs::add_many`), so no skew makes an add miss its tombstones.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{keys::QueueKeys, millis};

/// Buckets before the current one that a lookup reads: a window is this many bucket widths.
pub(super) const LOOKBACK: u64 = 4;
/// Buckets named beyond those a lookup reads by the caller's clock, on each side: how far
/// (in bucket widths) the caller's clock may be off Redis's without a second call.
const MARGIN: u64 = 1;
/// Buckets named per family: the lookup's `LOOKBACK + 1` and the margins.
pub(super) const SPAN: u64 = LOOKBACK + 1 + 2 * MARGIN;

/// The width of the buckets of `window`, in ms: a window is [`LOOKBACK`] of them (0 for a zero
/// window, which the add function refuses).
pub(super) fn width(window: Duration) -> u64 {
    millis(window).div_ceil(LOOKBACK)
}

/// When bucket `index` of `width_ms`-wide buckets expires, in epoch ms of Redis's clock: when
/// lookups stop reading it.
pub(super) fn expiry(width_ms: u64, index: u64) -> u64 {
    index.saturating_add(LOOKBACK + 1).saturating_mul(width_ms)
}

/// Whether `field` can be a tombstone's: a digest cut to 14 bytes, or whole (16) as earlier
/// releases wrote it.
pub(super) fn is_field(field: &[u8]) -> bool {
    matches!(field.len(), 14 | 16)
}

/// The digest of an idempotency key passed to the add function: the tombstone's field is its
/// first 14 bytes (cut in `lua/add.lua`), an earlier release's field the whole (see the module doc).
pub(super) fn digest(key: &str) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key.as_bytes());
    let mut prefix = [0; 16];
    prefix.copy_from_slice(&digest[..16]);
    prefix
}

/// This machine's clock, in epoch ms: where the caller starts naming buckets.
pub(super) fn local_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, millis)
}

/// The buckets of one window that an add call names: [`SPAN`] consecutive ones from `first`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Family {
    /// The width of its buckets, in ms.
    pub(super) width_ms: u64,
    /// The index of the first bucket named.
    pub(super) first: u64,
}

impl Family {
    /// The buckets of `width_ms`-wide buckets to name when the clock reads `now_ms`.
    pub(super) fn new(width_ms: u64, now_ms: u64) -> Self {
        let current = now_ms.checked_div(width_ms).unwrap_or(0);
        Self { width_ms, first: current.saturating_sub(LOOKBACK + MARGIN) }
    }

    /// The keys of the buckets named, in index order.
    pub(super) fn keys<'k>(&self, keys: &'k QueueKeys) -> impl Iterator<Item = String> + 'k {
        let Self { width_ms, first } = *self;
        (first..first + SPAN).map(move |index| keys.tombstones(width_ms, index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_covered_by_the_lookback_and_a_bucket_lives_until_the_last_lookup_that_reads_it() {
        let window = Duration::from_secs(600);
        let w = width(window);
        assert_eq!(w, 150_000);
        assert!(LOOKBACK * w >= millis(window), "the lookups reach back a whole window");
        // A lookup at time t reads buckets floor(t/w) - LOOKBACK ..= floor(t/w): bucket i is
        // read last at the end of bucket i + LOOKBACK, which is when it expires.
        let index = 11_000_000;
        assert_eq!(expiry(w, index), (index + LOOKBACK + 1) * w);
        assert_eq!(width(Duration::from_millis(10)), 3, "rounded up, never below the window");
        assert_eq!(width(Duration::ZERO), 0);
    }

    #[test]
    fn the_buckets_named_hold_those_of_any_clock_within_a_bucket_width() {
        let window = Duration::from_secs(600);
        let w = width(window);
        let caller = 1_750_000_000_123;
        let family = Family::new(w, caller);
        let named = family.first..family.first + SPAN;
        for redis in [caller - w + 1, caller, caller + w - 1] {
            let current = redis / w;
            assert!(named.contains(&current) && named.contains(&(current - LOOKBACK)), "{redis}");
        }
        assert_eq!(Family::new(0, caller).first, 0, "no division by zero");
        assert_eq!(Family::new(w, 5).first, 0, "no bucket before the epoch");
    }
}
