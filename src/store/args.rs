//! One typed argument struct per function of the library, each writing its KEYS and ARGV in the
//! order its Lua header states, in one place, so arity cannot drift.
//!
//! Every queue function receives the 31 queue keys first (then any keys of its own: only add
//! has some) and the 7 leading arguments of `lua/lib.lua`; [`Backend::call`] writes those, and
//! a struct here writes what follows: ARGV[8] on. Each struct also names the reply it decodes.
//! Everything is written straight into the command: no per-call copy of the keys. Global
//! functions (heartbeat, worker lists, queue registry) take only keys and arguments of their own
//! ([`GlobalFunction`]); their structs live with the part that calls them (`instances.rs`), as
//! the shedding's does (`memory.rs`) and the doctor's.
//!
//! [`Backend::call`]: super::backend::Backend::call

use std::time::Duration;

use redis::{Cmd, FromRedisValue};

use super::{
    Ack, AddArgs, LeaseToken, Result, Retention,
    keys::QueueKeys,
    millis,
    scripts::{Function, Scripts},
    tombstones::{self, Family},
};

/// The arguments of one queue function, after the queue keys and the leading arguments.
pub(super) trait QueueFunction {
    /// What the function returns, as Redis sends it.
    type Reply: FromRedisValue;
    /// The function these are the arguments of.
    fn function(scripts: &Scripts) -> &Function;
    /// Keys after the queue keys (KEYS[32..]); none but add's.
    fn own_keys(&self, _keys: &QueueKeys) -> Vec<String> {
        Vec::new()
    }
    /// ARGV[8..], in the order of the function's Lua header.
    fn write_args(&self, cmd: &mut Cmd);
}

/// The arguments of one global function (not of a queue: `run_global` in lib.lua): its own keys
/// and arguments only.
pub(super) trait GlobalFunction {
    /// What the function returns, as Redis sends it.
    type Reply: FromRedisValue;
    /// The function these are the arguments of.
    fn function(scripts: &Scripts) -> &Function;
    /// KEYS, in the order of the function's Lua header.
    fn keys(&self) -> Vec<&str>;
    /// ARGV, in the order of the function's Lua header.
    fn write_args(&self, cmd: &mut Cmd);
}

/// ARGV[3..7] of every queue function (lib.lua), formatted once: they change with the config
/// only. ARGV[1] (the queue's wake channel) and ARGV[2] (its name) come with each call.
pub(super) struct LeadingArgs {
    completed_ms: u64,
    completed_max: u64,
    dead_ms: u64,
    dead_max: u64,
    events_max: u64,
}

impl LeadingArgs {
    pub(super) fn new(retention: &Retention) -> Self {
        Self {
            completed_ms: millis(retention.completed_for),
            completed_max: retention.completed_max,
            dead_ms: millis(retention.dead_for),
            dead_max: retention.dead_max,
            events_max: retention.events_max,
        }
    }

    /// ARGV[1] the queue's wake channel (a shard channel on the queue's slot), ARGV[2] queue
    /// name, ARGV[3] completed retention ms, ARGV[4] completed cap, ARGV[5] dead retention ms,
    /// ARGV[6] dead cap, ARGV[7] events kept.
    pub(super) fn write(&self, queue: &str, wake_channel: &str, cmd: &mut Cmd) {
        cmd.arg(wake_channel)
            .arg(queue)
            .arg(self.completed_ms)
            .arg(self.completed_max)
            .arg(self.dead_ms)
            .arg(self.dead_max)
            .arg(self.events_max);
    }
}

/// Lua's 1/0 for a flag.
fn flag(on: bool) -> u8 {
    u8::from(on)
}

/// A millisecond count for a signed argument that takes -1 for "none".
fn signed_ms(d: Option<Duration>) -> i64 {
    d.map_or(-1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `QueueFunction::function` for the function of that name.
macro_rules! function {
    ($function:ident) => {
        fn function(scripts: &Scripts) -> &Function {
            &scripts.$function
        }
    };
}

/// lua/add.lua: a batch of jobs, with their records packed, the tombstone buckets their keys
/// are looked for in (see `tombstones.rs`), and the queue's cap of waiting jobs.
pub(super) struct AddBatchArgs<'a> {
    jobs: &'a [AddArgs<'a>],
    records: Vec<Vec<u8>>,
    /// The buckets named for each window of the jobs that have a key, one family per bucket
    /// width, in the order first met.
    families: Vec<Family>,
    /// Per job: its key's family, from 1 (the function's numbering), or 0 without a key.
    family_of: Vec<usize>,
    /// The most jobs the queue may hold waiting; None: no cap.
    max_waiting: Option<u64>,
}

impl<'a> AddBatchArgs<'a> {
    /// The arguments with the tombstone buckets named from `now_ms`.
    pub(super) fn new(jobs: &'a [AddArgs<'a>], now_ms: u64, max_waiting: Option<u64>) -> Result<Self> {
        let records = jobs.iter().map(|job| job.record.encode()).collect::<Result<_>>()?;
        let mut families: Vec<Family> = Vec::new();
        let mut family_of = Vec::with_capacity(jobs.len());
        for job in jobs {
            let number = if job.record.idempotency_key.is_none() {
                0
            } else {
                let width_ms = tombstones::width(job.idempotency_window);
                match families.iter().position(|f| f.width_ms == width_ms) {
                    Some(i) => i + 1,
                    None => {
                        families.push(Family::new(width_ms, now_ms));
                        families.len()
                    }
                }
            };
            family_of.push(number);
        }
        Ok(Self { jobs, records, families, family_of, max_waiting })
    }

    /// Names the buckets again from `now_ms`: Redis's clock, when the caller's was too far off
    /// it for the buckets first named.
    pub(super) fn rename_buckets(&mut self, now_ms: u64) {
        for family in &mut self.families {
            *family = Family::new(family.width_ms, now_ms);
        }
    }
}

/// (job number from 1, code, first ULID) per job not added; or the one triple (0, -2, Redis
/// time in ms) when the buckets named did not hold Redis's clock.
pub(super) type AddReply = Vec<(i64, i64, String)>;

impl AddBatchArgs<'_> {
    /// Each family's buckets, family after family.
    fn bucket_keys(&self, keys: &QueueKeys) -> Vec<String> {
        self.families.iter().flat_map(|family| family.keys(keys)).collect()
    }

    /// ARGV[8..] with `tokens` closing them (none: a plain add).
    fn write(&self, cmd: &mut Cmd, tokens: &[LeaseToken]) {
        cmd.arg(tombstones::LOOKBACK)
            .arg(tombstones::SPAN)
            .arg(self.families.len())
            .arg(self.max_waiting.unwrap_or(0))
            .arg(tokens.len());
        for family in &self.families {
            cmd.arg(family.width_ms).arg(family.first);
        }
        for ((job, record), &family) in self.jobs.iter().zip(&self.records).zip(&self.family_of) {
            cmd.arg(job.ulid).arg(record.as_slice()).arg(job.record.priority);
            let keyed = job.record.rate_key.is_some() || job.record.concurrency_key.is_some();
            let plain =
                !keyed && job.delay_ms.is_none() && job.run_at_ms.is_none() && job.session.is_none() && family == 0;
            if plain {
                cmd.arg("");
            } else {
                cmd.arg(if keyed { "*" } else { "+" })
                    .arg(job.delay_ms.map_or(-1, |d| i64::try_from(d).unwrap_or(i64::MAX)))
                    .arg(job.run_at_ms.unwrap_or(-1))
                    .arg(job.session.unwrap_or_default())
                    .arg(family)
                    .arg(
                        job.record
                            .idempotency_key
                            .as_deref()
                            .map(tombstones::digest)
                            .as_ref()
                            .map_or(&[][..], |f| &f[..]),
                    );
            }
        }
        for token in tokens {
            cmd.arg(token.as_str());
        }
    }
}

impl QueueFunction for AddBatchArgs<'_> {
    type Reply = AddReply;
    function!(add);

    fn own_keys(&self, keys: &QueueKeys) -> Vec<String> {
        self.bucket_keys(keys)
    }

    fn write_args(&self, cmd: &mut Cmd) {
        self.write(cmd, &[]);
    }
}

/// lua/add.lua with lease tokens: the add, then up to one ready job leased per token, for the
/// worker streams of this instance the tokens name.
pub(super) struct AddLeaseArgs<'a> {
    pub add: &'a AddBatchArgs<'a>,
    /// At least one.
    pub tokens: &'a [LeaseToken],
}

/// (the add's reply, jobs {ULID, record}, sessions {job number, state, version}, now ms, ms
/// until the earliest delayed job is due or -1).
type AddLeaseReply = (AddReply, Vec<(String, Vec<u8>)>, Vec<(i64, String, i64)>, i64, i64);

impl QueueFunction for AddLeaseArgs<'_> {
    type Reply = AddLeaseReply;
    function!(add);

    fn own_keys(&self, keys: &QueueKeys) -> Vec<String> {
        self.add.bucket_keys(keys)
    }

    fn write_args(&self, cmd: &mut Cmd) {
        self.add.write(cmd, self.tokens);
    }
}

/// lua/lease.lua: ARGV[8] random for jitter, ARGV[9] trim, ARGV[10..] lease tokens.
pub(super) struct LeaseArgs<'a> {
    pub rand: f64,
    pub trim: bool,
    pub tokens: &'a [LeaseToken],
}

/// (jobs {ULID, record}, revoked flat {ULID, token}, next wake ms, now ms, sessions
/// {job number, state, version}, 1 when a rate limit held jobs back).
type LeaseReply = (Vec<(String, Vec<u8>)>, Vec<String>, i64, i64, Vec<(i64, String, i64)>, i64);

impl QueueFunction for LeaseArgs<'_> {
    type Reply = LeaseReply;
    function!(lease);

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.rand).arg(flag(self.trim));
        for token in self.tokens {
            cmd.arg(token.as_str());
        }
    }
}

/// lua/complete.lua without refills: ARGV[8] n, n triples {ULID, token, result}, 0, then a
/// triple {ack number, state, expected version or -1} per ack that writes its session's state.
pub(super) struct CompleteArgs<'a> {
    pub acks: &'a [&'a Ack<'a>],
}

impl QueueFunction for CompleteArgs<'_> {
    /// One code per ack.
    type Reply = Vec<i64>;
    function!(complete);

    fn write_args(&self, cmd: &mut Cmd) {
        write_acks(cmd, self.acks, &[]);
    }
}

/// lua/complete.lua with refills: as `CompleteArgs`, with r pairs {ack number, refill token}
/// after the count r.
pub(crate) struct CompleteLeaseArgs<'a> {
    pub acks: &'a [&'a Ack<'a>],
    /// The refill token of each ack (by position), if it has one; at least one has.
    pub refills: &'a [Option<&'a str>],
}

/// (codes, refill tokens offered, jobs {ULID, record}, sessions {job number, state, version},
/// now ms, ms until the earliest delayed job is due or -1).
type CompleteLeaseReply = (Vec<i64>, Vec<String>, Vec<(String, Vec<u8>)>, Vec<(i64, String, i64)>, i64, i64);

impl QueueFunction for CompleteLeaseArgs<'_> {
    type Reply = CompleteLeaseReply;
    function!(complete);

    fn write_args(&self, cmd: &mut Cmd) {
        write_acks(cmd, self.acks, self.refills);
    }
}

/// The arguments of lua/complete.lua: the acks, the refills, the session states.
fn write_acks(cmd: &mut Cmd, acks: &[&Ack<'_>], refills: &[Option<&str>]) {
    cmd.arg(acks.len());
    for ack in acks {
        // The function finds a token at the head of the lease, before a '|': a token holding
        // one can hold nothing, and is sent as the empty token, which holds nothing either.
        let token = if ack.token.contains('|') { "" } else { ack.token };
        cmd.arg(ack.ulid).arg(token).arg(ack.result);
    }
    cmd.arg(refills.iter().flatten().count());
    for (n, refill) in refills.iter().enumerate() {
        if let Some(token) = refill {
            cmd.arg(n + 1).arg(*token);
        }
    }
    for (n, ack) in acks.iter().enumerate() {
        if let Some((state, expected)) = &ack.session_state {
            cmd.arg(n + 1).arg(*state).arg(expected.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX)));
        }
    }
}

/// What a failed attempt reports, for [`Jobs::fail`](super::Jobs::fail): lua/fail.lua's
/// `ARGV[8..13]`, in field order (`retry_after` as ms, or -1 for none).
#[derive(Clone, Copy, Debug)]
pub struct FailArgs<'a> {
    /// The job, within the queue passed alongside.
    pub ulid: &'a str,
    /// The lease token the failing holder presents (fencing: a stale one changes nothing).
    pub token: &'a str,
    /// The worker's error message, stored as the job's last error.
    pub error: &'a str,
    /// False ends the job dead at once, whatever attempts are left.
    pub retryable: bool,
    /// The wait before the retry, instead of the job's backoff; None: the backoff decides.
    pub retry_after: Option<Duration>,
    /// A uniform draw in [0, 1) that jitters the backoff (tests pass a fixed one).
    pub rand: f64,
}

impl QueueFunction for FailArgs<'_> {
    /// (lease check code, state, run_at ms).
    type Reply = (i64, i64, i64);
    function!(fail);

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.ulid)
            .arg(self.token)
            .arg(self.error)
            .arg(flag(self.retryable))
            .arg(signed_ms(self.retry_after))
            .arg(self.rand);
    }
}

/// lua/fail.lua with a refill: `FailArgs`, then [14] the refill token.
pub(crate) struct FailLeaseArgs<'a> {
    pub fail: FailArgs<'a>,
    pub refill: &'a str,
}

impl QueueFunction for FailLeaseArgs<'_> {
    /// (lease check code, state, run_at ms, jobs {ULID, record}, sessions {job number, state,
    /// version}, now ms, ms until the earliest delayed job is due or -1).
    type Reply = (i64, i64, i64, Vec<(String, Vec<u8>)>, Vec<(i64, String, i64)>, i64, i64);
    function!(fail);

    fn write_args(&self, cmd: &mut Cmd) {
        self.fail.write_args(cmd);
        cmd.arg(self.refill);
    }
}

/// lua/extend.lua: ARGV[8] ULID, [9] token, [10] extension ms.
pub(super) struct ExtendArgs<'a> {
    pub ulid: &'a str,
    pub token: &'a str,
    pub by: Duration,
}

impl QueueFunction for ExtendArgs<'_> {
    /// (lease check code, deadline ms).
    type Reply = (i64, i64);
    function!(extend);

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.ulid).arg(self.token).arg(millis(self.by));
    }
}

/// lua/postpone.lua: ARGV[8] ULID, [9] token, [10] delay ms, [11] hold the rate key (1/0).
pub(super) struct PostponeArgs<'a> {
    pub ulid: &'a str,
    pub token: &'a str,
    pub delay: Duration,
    pub hold_key: bool,
}

impl QueueFunction for PostponeArgs<'_> {
    /// (lease check code, state, run at ms).
    type Reply = (i64, i64, i64);
    function!(postpone);

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.ulid).arg(self.token).arg(millis(self.delay)).arg(flag(self.hold_key));
    }
}

/// lua/requeue.lua: ARGV[8] lost, [9] max lost, [10..] pairs {ULID, token}.
pub(super) struct RequeueArgs<'a> {
    pub lost: bool,
    pub max_lost: u32,
    pub leases: &'a [(String, String)],
}

impl QueueFunction for RequeueArgs<'_> {
    /// How many moved.
    type Reply = i64;
    function!(requeue);

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(flag(self.lost)).arg(self.max_lost);
        for (ulid, token) in self.leases {
            cmd.arg(ulid).arg(token);
        }
    }
}

/// lua/reclaim.lua: ARGV[8] minimum lease age (ms), [9..] pairs {ULID, token}.
pub(super) struct ReclaimArgs<'a> {
    pub min_age: Duration,
    pub leases: &'a [(String, String)],
}

impl QueueFunction for ReclaimArgs<'_> {
    /// How many moved.
    type Reply = i64;
    function!(reclaim);

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(millis(self.min_age));
        for (ulid, token) in self.leases {
            cmd.arg(ulid).arg(token);
        }
    }
}

/// lua/reap.lua: ARGV[8] HSCAN cursor, [9] HSCAN COUNT, [10..] dead instances and tokens.
pub(super) struct ReapArgs<'a> {
    pub cursor: &'a str,
    pub count: u32,
    pub dead: &'a [String],
}

impl QueueFunction for ReapArgs<'_> {
    /// (next cursor, leases returned).
    type Reply = (String, i64);
    function!(reap);

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.cursor).arg(self.count);
        for id in self.dead {
            cmd.arg(id);
        }
    }
}

/// lua/progress.lua: ARGV[8] ULID, [9] token, [10] progress bytes.
pub(super) struct ProgressArgs<'a> {
    pub ulid: &'a str,
    pub token: &'a str,
    pub progress: &'a [u8],
}

impl QueueFunction for ProgressArgs<'_> {
    /// The lease check code.
    type Reply = i64;
    function!(progress);

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.ulid).arg(self.token).arg(self.progress);
    }
}

/// lua/stats.lua: nothing beyond the leading arguments.
pub(super) struct StatsArgs;

impl QueueFunction for StatsArgs {
    /// The sixteen figures, in the order of the Lua header.
    type Reply = Vec<i64>;
    function!(stats);

    fn write_args(&self, _cmd: &mut Cmd) {}
}

/// lua/info.lua: ARGV[8] ULID.
pub(super) struct InfoArgs<'a> {
    pub ulid: &'a str,
}

impl QueueFunction for InfoArgs<'_> {
    /// (record, lease, last event id, outcome).
    type Reply = (Option<Vec<u8>>, Option<String>, String, Option<Vec<u8>>);
    function!(info);

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.ulid);
    }
}

/// lua/cancel.lua: ARGV[8] ULID.
pub(super) struct CancelArgs<'a> {
    pub ulid: &'a str,
}

impl QueueFunction for CancelArgs<'_> {
    /// (code, lease token when marked).
    type Reply = (i64, String);
    function!(cancel);

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.ulid);
    }
}

/// lua/pause.lua: ARGV[8] paused.
pub(super) struct PauseArgs {
    pub paused: bool,
}

impl QueueFunction for PauseArgs {
    type Reply = i64;
    function!(pause);

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(flag(self.paused));
    }
}

/// lua/retry.lua: ARGV[8] ULID or '' for the oldest, [9] at most this many.
pub(super) struct RetryArgs<'a> {
    pub ulid: Option<&'a str>,
    pub limit: u64,
}

impl QueueFunction for RetryArgs<'_> {
    /// (code, moved).
    type Reply = (i64, i64);
    function!(retry);

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.ulid.unwrap_or_default()).arg(self.limit);
    }
}

/// lua/delete.lua: ARGV[8] ULID.
pub(super) struct DeleteArgs<'a> {
    pub ulid: &'a str,
}

impl QueueFunction for DeleteArgs<'_> {
    type Reply = i64;
    function!(delete);

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.ulid);
    }
}

/// lua/purge.lua: ARGV[8] states, comma-separated, [9] batch, [10] cursor among the jobs pending
/// inside sessions ('' from the start).
pub(super) struct PurgeArgs<'a> {
    pub states: &'a str,
    pub batch: u32,
    pub cursor: &'a str,
}

impl QueueFunction for PurgeArgs<'_> {
    /// (how many jobs were removed, the cursor to go on from; '' when read through).
    type Reply = (i64, String);
    function!(purge);

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.states).arg(self.batch).arg(self.cursor);
    }
}

/// lua/session_create.lua: ARGV[8] name, [9] state, [10] ttl ms, [11] max concurrency.
pub(super) struct SessionCreateArgs<'a> {
    pub name: &'a str,
    pub state: &'a str,
    pub ttl: Duration,
    pub max_concurrency: u32,
}

impl QueueFunction for SessionCreateArgs<'_> {
    /// (1 created or 0 taken, now).
    type Reply = (i64, i64);
    function!(session_create);

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.name).arg(self.state).arg(millis(self.ttl)).arg(self.max_concurrency);
    }
}

/// lua/session_get.lua: ARGV[8] name.
pub(super) struct SessionGetArgs<'a> {
    pub name: &'a str,
}

impl QueueFunction for SessionGetArgs<'_> {
    /// (packed meta, state, pending jobs, now).
    type Reply = (Option<Vec<u8>>, Option<String>, i64, i64);
    function!(session_get);

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.name);
    }
}

/// lua/session_jobs.lua: ARGV[8] name, [9] cursor ("seq/ULID" or ''), [10] jobs per page.
pub(super) struct SessionJobsArgs<'a> {
    pub name: &'a str,
    pub after: &'a str,
    pub count: u64,
}

impl QueueFunction for SessionJobsArgs<'_> {
    /// (exists, flat {"seq/ULID", record or nil}, more).
    type Reply = (i64, Vec<Option<Vec<u8>>>, i64);
    function!(session_jobs);

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.name).arg(self.after).arg(self.count);
    }
}

/// lua/session_set.lua: ARGV[8] name, [9] state, [10] expected version.
pub(super) struct SessionSetArgs<'a> {
    pub name: &'a str,
    pub state: &'a str,
    pub expected: u64,
}

impl QueueFunction for SessionSetArgs<'_> {
    /// (code, version).
    type Reply = (i64, i64);
    function!(session_set);

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.name).arg(self.state).arg(self.expected);
    }
}

/// lua/session_delete.lua: ARGV[8] name, [9] batch.
pub(super) struct SessionDeleteArgs<'a> {
    pub name: &'a str,
    pub batch: u32,
}

impl QueueFunction for SessionDeleteArgs<'_> {
    /// (existed, pending jobs removed, pending jobs left).
    type Reply = (i64, i64, i64);
    function!(session_delete);

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.name).arg(self.batch);
    }
}

/// lua/session_sweep.lua: nothing beyond the leading arguments.
pub(super) struct SessionSweepArgs;

impl QueueFunction for SessionSweepArgs {
    /// The names of the sessions deleted.
    type Reply = Vec<String>;
    function!(session_sweep);

    fn write_args(&self, _cmd: &mut Cmd) {}
}
