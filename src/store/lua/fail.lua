-- fail: records a failed attempt reported by its worker, then retries or buries the job (or
-- ends it cancelled, when it was cancelled meanwhile or its session is gone).
-- Touches (here or in the lib.lua helpers it calls) the queue keys jobs, active, deadlines,
-- delayed, dead, meta, events, sessions, session_jobs, session_ttl, cancelled, activity, ready lists; may
-- publish a wake-up on ARGV[1].
-- KEYS: the queue keys (lib.lua).
-- ARGV[8] ULID, ARGV[9] lease token, ARGV[10] error, ARGV[11] retryable (1/0),
-- ARGV[12] retry_after ms or -1 for the job's backoff, ARGV[13] random in [0, 1) for jitter,
-- ARGV[14] (optional) a refill token: when the fail ends the lease, the worker's next ready job
-- is leased with it in the same call (lease_refills in lib.lua, as complete.lua does).
-- Returns {code, state, run_at_ms}: code as check_lease; state and run_at as attempt_failed;
-- with a refill token, then jobs, sessions (as in lease.lua: at most the one job), now and the
-- ms until the earliest delayed job is due (-1 when none), as complete.lua does.
local ulid, token, err = ARGV[8], ARGV[9], ARGV[10]
local refill = #ARGV >= 14
local code, started, attempt = check_lease(ulid, token)
if code ~= 1 then
  if refill then
    return { code, 0, 0, {}, {}, 0, -1 }
  end
  return { code, 0, 0 }
end
local now = now_ms()
drop_lease(ulid)
local state, run_at = attempt_failed(ulid, load(ulid), started, attempt, err, ARGV[11] == '1',
  tonumber(ARGV[12]), tonumber(ARGV[13]), now)
if not refill then
  return { 1, state, run_at }
end
local jobs, sessions, next_delayed = lease_refills(ARGV, 14, now)
return { 1, state, run_at, jobs, sessions, now, next_delayed }
