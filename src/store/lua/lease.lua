-- lease: one dispatcher round for a queue, in one step:
--   1. attempts past their deadline fail with "timeout" (retry or dead) and are reported,
--   2. delayed and retrying jobs that are due become ready (promote_due in lib.lua),
--   3. up to #tokens ready jobs are leased (lease_ready in lib.lua: not when the queue is
--      paused; highest priority first, FIFO within a priority); job i gets lease token i,
--   4. when asked (every few seconds, not every round), retention windows are enforced on
--      completed, cancelled and dead jobs (an ack enforces only the completed cap), and a page
--      of stale rate-key TATs is dropped (LIMITS.sweep).
-- Touches (here or in the lib.lua helpers it calls) the queue keys jobs, active, deadlines,
-- delayed, completed, dead, meta, events, sessions, session_state, session_jobs, session_ttl,
-- cancelled, outcomes, activity, settings, ready lists; may publish a wake-up on ARGV[1].
-- KEYS: the queue keys (lib.lua).
-- ARGV[8] a random number in [0, 1) for backoff jitter, ARGV[9] trim (1/0), ARGV[10..] lease
-- tokens.
-- Returns {jobs, revoked, next_wake_ms, now, sessions, rate_held}:
--   jobs    = flat {ULID, record, ...}: the leased jobs, the i-th holding token i; its attempt
--             is the record's attempts + 1 and its deadline now + the record's timeout
--   revoked = flat {ULID, token, ...} of the timed-out leases
--   next_wake_ms = ms until the next delayed job or deadline is due, or a batch a rate or
--             concurrency key holds back may go (limits_lib.lua), or -1 when none is
--   sessions = flat {i, state, version, ...} for the leased jobs of a session: the session's
--             state and version as delivered with job i.
--   rate_held = 1 when a rate limit held jobs back (the queue's or a rate key's; next_wake_ms
--             then counts when their next batch may go), else 0: the dispatcher then gives the
--             next round about as many tokens as this one leased, not all its streams' credit
--             (queue/leases/dispatch.rs).
local now = now_ms()
local now_text = int_text(now)
local rand = tonumber(ARGV[8])

-- Only when the earliest deadline or delayed job is due are the due ones read.
local revoked = {}
local first_deadline = first_score(KEYS[K_DEADLINES])
if first_deadline and first_deadline <= now then
  local expired = redis.call('ZRANGEBYSCORE', KEYS[K_DEADLINES], '-inf', now_text, 'LIMIT', '0', BATCH_TEXT)
  for _, ulid in ipairs(expired) do
    local lease = redis.call('HGET', KEYS[K_ACTIVE], ulid)
    drop_lease(ulid)
    local rec = load(ulid)
    if lease and rec then
      local token, started, attempt = parse_lease(lease)
      attempt_failed(ulid, rec, started, attempt, 'timeout', true, -1, rand, now)
      revoked[#revoked + 1] = ulid
      revoked[#revoked + 1] = token
    end
  end
  first_deadline = first_score(KEYS[K_DEADLINES])
end

local first_delayed = promote_due(now)
delayed_changed = false

local jobs, sessions, leased_deadline = lease_ready(ARGV, 10, now)
if leased_deadline and (not first_deadline or leased_deadline < first_deadline) then
  first_deadline = leased_deadline
end

if ARGV[9] == '1' then
  load_settings()
  trim_completed(now, true)
  trim(KEYS[K_CANCELLED], now, COMPLETED_MS, COMPLETED_CAP)
  trim_dead(now)
  LIMITS.sweep(now)
end

-- Sessions may have released delayed jobs meanwhile.
if delayed_changed then
  first_delayed = first_score(KEYS[K_DELAYED])
end
local next_wake = -1
for _, first in ipairs({ first_delayed or false, first_deadline or false, LIMITS.wake_at or false }) do
  if first then
    local wait = math.max(0, first - now)
    if next_wake < 0 or wait < next_wake then
      next_wake = wait
    end
  end
end
return { jobs, revoked, next_wake, now, sessions, LIMITS.rate_held() and 1 or 0 }
