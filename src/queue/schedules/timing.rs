//! When a schedule is due, and what a fire owes: a schedule's timetable (a cron expression in a
//! time zone, or a fixed interval) bounded by its start and end, and the plan of one fire
//! under its missed-fire policy. Pure functions of the schedule and the clock readings they are
//! given (epoch ms), so they are tested here without Redis or a timer.
//!
//! Cron expressions are parsed and stepped by `croner` (seconds optional, OCPS rules for daylight
//! saving: a time the change skips fires at the first instant after the gap, a time it repeats
//! fires once, at its first occurrence), in a `chrono-tz` zone. Due times of a cron schedule are
//! whole seconds; of an interval, `anchor + k * every` ms.

use std::str::FromStr;

use chrono::{DateTime, TimeZone};
use chrono_tz::Tz;
use croner::{
    Cron,
    parser::{CronParser, Seconds},
};
use sha2::{Digest, Sha256};

/// A due time no instance fired within this long of it is a missed one (every instance down,
/// or the schedule paused), handled by the missed-fire policy; a later fire is only late.
pub(super) const ON_TIME_WITHIN_MS: i64 = 1_000;

/// What missed due times do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MissedFires {
    /// Missed times add nothing.
    Skip,
    /// All missed times together add one job, for the latest of them.
    RunOnce,
    /// Each of the latest `n` missed times adds its job (1 to 100).
    RunAll(u32),
}

/// Why a timetable could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum TimingError {
    /// The cron expression, with croner's reason.
    Cron(String),
    /// The time zone is not an IANA name.
    TimeZone,
}

/// How a schedule's due times are spaced.
#[derive(Clone, Debug)]
enum Clock {
    /// A cron expression, in a zone.
    Cron(Box<Cron>, Tz),
    /// `anchor + k * every`, k >= 0 (ms).
    Every { every: i64, anchor: i64 },
}

/// A schedule's due times: its timetable between its start (inclusive) and end (exclusive).
#[derive(Clone, Debug)]
pub(super) struct Timetable {
    clock: Clock,
    start: Option<i64>,
    end: Option<i64>,
}

/// What one fire does: the due times to add a job for (oldest first), and how far the
/// schedule has fired once it is done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Plan {
    pub(super) dues: Vec<i64>,
    pub(super) through: i64,
}

/// Reads a cron expression (5 fields, or 6 with seconds first) and a time zone (empty: UTC).
fn parse_cron(expression: &str, time_zone: &str) -> Result<(Box<Cron>, Tz), TimingError> {
    let zone =
        if time_zone.is_empty() { Tz::UTC } else { Tz::from_str(time_zone).map_err(|_| TimingError::TimeZone)? };
    let cron = CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(expression)
        .map_err(|e| TimingError::Cron(e.to_string()))?;
    Ok((Box::new(cron), zone))
}

impl Timetable {
    /// A cron timetable; `start` and `end` in epoch ms.
    pub(super) fn cron(
        expression: &str,
        time_zone: &str,
        start: Option<i64>,
        end: Option<i64>,
    ) -> Result<Self, TimingError> {
        let (cron, zone) = parse_cron(expression, time_zone)?;
        Ok(Self { clock: Clock::Cron(cron, zone), start, end })
    }

    /// An interval timetable of `every` ms (> 0), anchored at `start` or else at the epoch.
    pub(super) fn every(every: i64, start: Option<i64>, end: Option<i64>) -> Self {
        Self { clock: Clock::Every { every: every.max(1), anchor: start.unwrap_or(0) }, start, end }
    }

    /// The first due time after `t`, if any is left before the end.
    pub(super) fn next_after(&self, t: i64) -> Option<i64> {
        let t = match self.start {
            Some(start) => t.max(start - 1),
            None => t,
        };
        let due = match &self.clock {
            Clock::Every { every, anchor } => {
                if t < *anchor {
                    *anchor
                } else {
                    anchor + ((t - anchor) / every + 1) * every
                }
            }
            Clock::Cron(cron, zone) => {
                let from = at(zone, t.div_euclid(1000) * 1000)?;
                cron.find_next_occurrence(&from, false).ok()?.timestamp_millis()
            }
        };
        self.before_end(due)
    }

    /// The first `n` due times after `t`, earliest first (fewer when the end comes first).
    pub(super) fn upcoming(&self, t: i64, n: usize) -> Vec<i64> {
        std::iter::successors(self.next_after(t), |&due| self.next_after(due)).take(n).collect()
    }

    /// The last due time at or before `t`, if any (at or after the start, before the end).
    pub(super) fn latest_at_or_before(&self, t: i64) -> Option<i64> {
        let t = match self.end {
            Some(end) => t.min(end - 1),
            None => t,
        };
        let due = match &self.clock {
            Clock::Every { every, anchor } => {
                if t < *anchor {
                    return None;
                }
                anchor + (t - anchor) / every * every
            }
            Clock::Cron(cron, zone) => {
                let from = at(zone, t.div_euclid(1000) * 1000)?;
                cron.find_previous_occurrence(&from, true).ok()?.timestamp_millis()
            }
        };
        match self.start {
            Some(start) if due < start => None,
            _ => Some(due),
        }
    }

    fn before_end(&self, due: i64) -> Option<i64> {
        match self.end {
            Some(end) if due >= end => None,
            _ => Some(due),
        }
    }

    /// When a schedule that has fired through `through` should next be looked at, at `now`:
    /// now when a due time is owed, else its next due time (None: none is left).
    pub(super) fn next_fire(&self, through: i64, now: i64) -> Option<i64> {
        self.next_after(through).map(|due| due.max(now))
    }

    /// The fire of the next due time after `through` claimed ahead of it, when that time comes
    /// within `lead` ms after `now` (and nothing is owed before it): a plan of that time alone.
    pub(super) fn ahead(&self, through: i64, now: i64, lead: i64) -> Option<Plan> {
        let due = self.next_after(through).filter(|&due| due > now && due - now <= lead)?;
        Some(Plan { dues: vec![due], through: due })
    }

    /// The fire owed at `now` by a schedule that has fired through `through`: the due times in
    /// (through, now], of which the latest is on time when it is at most
    /// [`ON_TIME_WITHIN_MS`] old and the others are missed. An on-time one always fires; the
    /// missed ones as `missed` says. None when nothing is owed.
    pub(super) fn plan(&self, through: i64, now: i64, missed: MissedFires) -> Option<Plan> {
        let latest = self.latest_at_or_before(now).filter(|&d| d > through)?;
        let on_time = now - latest <= ON_TIME_WITHIN_MS;
        let earlier = |d: i64| self.latest_at_or_before(d - 1).filter(|&e| e > through);
        let last_missed = if on_time { earlier(latest) } else { Some(latest) };
        let mut dues = Vec::new();
        match missed {
            MissedFires::Skip => {}
            MissedFires::RunOnce => dues.extend(last_missed),
            MissedFires::RunAll(cap) => {
                let mut next = last_missed;
                while let Some(due) = next {
                    if dues.len() >= usize::try_from(cap).unwrap_or(usize::MAX) {
                        break;
                    }
                    dues.push(due);
                    next = earlier(due);
                }
                dues.reverse();
            }
        }
        if on_time {
            dues.push(latest);
        }
        Some(Plan { dues, through: latest })
    }
}

/// The instant `ms` in `zone`.
fn at(zone: &Tz, ms: i64) -> Option<DateTime<Tz>> {
    zone.timestamp_millis_opt(ms).single()
}

/// The job ULID and the jitter of one due time of one schedule: derived from the queue, the
/// name and the due time alone, so every instance firing it names the same job and the same
/// delay. The ULID's timestamp is the due time; the delay is from 0 to `jitter_ms`.
pub(super) fn fire_identity(queue: &str, name: &str, due: i64, jitter_ms: u64) -> (ulid::Ulid, u64) {
    let digest = Sha256::new()
        .chain_update(queue)
        .chain_update([0])
        .chain_update(name)
        .chain_update(due.to_be_bytes())
        .finalize();
    let mut random = [0u8; 16];
    random[6..].copy_from_slice(&digest[..10]);
    let mut spread = [0u8; 8];
    spread.copy_from_slice(&digest[10..18]);
    let delay = if jitter_ms == 0 { 0 } else { u64::from_be_bytes(spread) % (jitter_ms + 1) };
    (ulid::Ulid::from_parts(u64::try_from(due).unwrap_or(0), u128::from_be_bytes(random)), delay)
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    fn berlin(y: i32, m: u32, d: u32, h: u32, min: u32) -> i64 {
        let naive = NaiveDate::from_ymd_opt(y, m, d).and_then(|d| d.and_hms_opt(h, min, 0)).expect("a date");
        chrono_tz::Europe::Berlin.from_local_datetime(&naive).earliest().expect("a local time").timestamp_millis()
    }

    #[test]
    fn a_daily_0230_in_berlin_runs_once_at_0300_on_the_spring_change_and_once_on_the_autumn_one() {
        let daily = Timetable::cron("30 2 * * *", "Europe/Berlin", None, None).expect("valid");
        // 2025-03-30: clocks jump from 02:00 to 03:00; 02:30 does not exist.
        let spring_day = berlin(2025, 3, 30, 0, 0);
        let first = daily.next_after(spring_day).expect("a due time");
        assert_eq!(first, berlin(2025, 3, 30, 3, 0), "the skipped 02:30 fires at 03:00");
        assert_eq!(daily.next_after(first), Some(berlin(2025, 3, 31, 2, 30)), "once that day");
        // 2025-10-26: clocks fall back from 03:00 to 02:00; 02:30 happens twice, an hour apart.
        let autumn_day = berlin(2025, 10, 26, 0, 0);
        let first = daily.next_after(autumn_day).expect("a due time");
        assert_eq!(first, berlin(2025, 10, 26, 2, 30), "the first 02:30 (CEST)");
        assert_eq!(first, autumn_day + 3_600_000 * 2 + 1_800_000, "02:30 CEST is 2.5 h after midnight");
        assert_eq!(daily.next_after(first), Some(berlin(2025, 10, 27, 2, 30)), "not again at the second 02:30");
    }

    #[test]
    fn seconds_fields_and_time_zones_are_read() {
        let every_ten = Timetable::cron("*/10 * * * * *", "", None, None).expect("valid");
        assert_eq!(every_ten.next_after(1_000), Some(10_000));
        assert_eq!(every_ten.next_after(10_500), Some(20_000));
        assert_eq!(every_ten.latest_at_or_before(19_999), Some(10_000));
        assert!(matches!(parse_cron("* * *", ""), Err(TimingError::Cron(_))));
        assert!(matches!(parse_cron("* * * * *", "Mars/Olympus"), Err(TimingError::TimeZone)));
    }

    #[test]
    fn intervals_are_anchored_at_the_start_and_end_before_the_end() {
        let t = Timetable::every(1_000, Some(10_500), Some(13_500));
        assert_eq!(t.next_after(0), Some(10_500), "the start itself is due");
        assert_eq!(t.next_after(10_500), Some(11_500));
        assert_eq!(t.next_after(12_500), None, "13_500 is the end, excluded");
        assert_eq!(t.latest_at_or_before(99_000), Some(12_500));
        assert_eq!(t.latest_at_or_before(10_000), None);
        let epoch = Timetable::every(30_000, None, None);
        assert_eq!(epoch.next_after(31_000), Some(60_000));
    }

    #[test]
    fn plans_follow_the_missed_fire_policy() {
        let t = Timetable::every(1_000, None, None);
        // Fired through 10 s; now is 15.2 s: 11..14 s are missed, 15 s is on time.
        let (through, now) = (10_000, 15_200);
        let plan = |missed| t.plan(through, now, missed).expect("owed");
        assert_eq!(plan(MissedFires::Skip).dues, vec![15_000]);
        assert_eq!(plan(MissedFires::RunOnce).dues, vec![14_000, 15_000]);
        assert_eq!(plan(MissedFires::RunAll(3)).dues, vec![12_000, 13_000, 14_000, 15_000]);
        assert_eq!(plan(MissedFires::RunAll(10)).dues, vec![11_000, 12_000, 13_000, 14_000, 15_000]);
        assert_eq!(plan(MissedFires::Skip).through, 15_000);
        // Late but within the second: on time, nothing missed.
        assert_eq!(t.plan(14_000, 15_900, MissedFires::Skip).expect("owed").dues, vec![15_000]);
        // Nothing owed.
        assert_eq!(t.plan(15_000, 15_900, MissedFires::RunOnce), None);
        // The latest itself missed (an interval longer than the grace).
        let slow = Timetable::every(10_000, None, None);
        assert_eq!(slow.plan(0, 25_000, MissedFires::Skip).expect("owed").dues, Vec::<i64>::new());
        assert_eq!(slow.plan(0, 25_000, MissedFires::RunOnce).expect("owed").dues, vec![20_000]);
        assert_eq!(slow.next_fire(0, 25_000), Some(25_000), "owed: look now");
        assert_eq!(slow.next_fire(20_000, 25_000), Some(30_000));
    }

    #[test]
    fn a_fire_ahead_is_of_the_next_due_time_only_within_the_lead() {
        let t = Timetable::every(1_000, None, Some(20_000));
        assert_eq!(t.ahead(14_000, 14_800, 200).map(|p| (p.dues, p.through)), Some((vec![15_000], 15_000)));
        assert_eq!(t.ahead(14_000, 14_700, 200), None, "not yet within the lead");
        assert_eq!(t.ahead(14_000, 15_000, 200), None, "due now: owed, not ahead");
        assert_eq!(t.ahead(19_000, 19_900, 200), None, "no due time left before the end");
    }

    #[test]
    fn fire_identities_are_the_same_everywhere_and_carry_the_due_time() {
        let (a, delay_a) = fire_identity("q", "nightly", 1_700_000_000_000, 5_000);
        let (b, delay_b) = fire_identity("q", "nightly", 1_700_000_000_000, 5_000);
        assert_eq!((a, delay_a), (b, delay_b));
        assert_eq!(a.timestamp_ms(), 1_700_000_000_000);
        assert!(delay_a <= 5_000);
        assert_ne!(fire_identity("q", "nightly", 1_700_000_001_000, 5_000).0, a);
        assert_eq!(fire_identity("q", "n", 5, 0).1, 0);
    }
}
