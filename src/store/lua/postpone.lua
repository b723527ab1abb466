-- postpone: a held job handed back because what it calls is rate limited ("retry after X"): it
-- runs again after ARGV[10] ms, without spending an attempt or counting a lost delivery. With
-- ARGV[11] = 1 its rate key waits as long (LIMITS.hold_key: no job of the key starts before
-- then, under the queue's key_rate). A job cancelled meanwhile ends cancelled.
-- Touches (here or in the lib.lua helpers it calls) the queue keys jobs, active, deadlines,
-- delayed, events, cancelled, settings, keyed, key_due, key_parked, key_state, ready lists; may
-- publish a wake-up on ARGV[1].
-- KEYS: the queue keys (lib.lua). ARGV[8] ULID, ARGV[9] lease token, ARGV[10] delay ms (0 to
-- 7 days, checked by the caller), ARGV[11] hold the job's rate key too (1/0).
-- Returns {code, state, run_at_ms}: code as check_lease; the state it went to (S_DELAYED, or
-- S_WAITING for a delay of 0, S_CANCELLED) and when it runs.
local ulid, token = ARGV[8], ARGV[9]
local code = check_lease(ulid, token)
if code ~= 1 then
  return { code, 0, 0 }
end
local now = now_ms()
local at = now + tonumber(ARGV[10])
drop_lease(ulid)
local rec = load(ulid)
if rec[R_CANCEL] then
  make_cancelled(ulid, rec, now, 'active')
  return { 1, S_CANCELLED, now }
end
if ARGV[11] == '1' then
  LIMITS.hold_key(rec, at)
end
if at > now then
  make_delayed(ulid, rec, at, S_DELAYED)
  return { 1, S_DELAYED, at }
end
make_ready(ulid, rec, now, true)
return { 1, S_WAITING, now }
