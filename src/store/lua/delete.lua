-- delete: removes one job that is not active, with its record.
-- Touches (here or in the lib.lua helpers it calls) the queue keys jobs, active, delayed,
-- completed, dead, events, sessions, session_jobs, session_ttl, cancelled, outcomes, keyed,
-- key_due, key_parked, ready lists; may publish a wake-up on ARGV[1].
-- KEYS: the queue keys (lib.lua). ARGV[8] ULID.
-- Returns 1 deleted, 0 unknown, -1 active (cancel it first).
local ulid = ARGV[8]
local rec = load_any(ulid)
if not rec then
  return 0
end
if redis.call('HEXISTS', KEYS[K_ACTIVE], ulid) == 1 then
  return -1
end
local now = now_ms()
local state = rec[R_STATE]
if state == S_COMPLETED then
  redis.call('LREM', KEYS[K_COMPLETED], 1, ulid)
  redis.call('HDEL', KEYS[K_OUTCOMES], ulid)
elseif state == S_DEAD then
  redis.call('ZREM', KEYS[K_DEAD], ulid)
elseif state == S_CANCELLED then
  redis.call('ZREM', KEYS[K_CANCELLED], ulid)
elseif rec[R_SESSION] and redis.call('ZREM', KEYS[K_SESSION_JOBS], rec[R_SESSION]) == 1 then
  -- pending inside its session: nothing counted it
else
  if redis.call('ZREM', KEYS[K_DELAYED], ulid) == 0 and not LIMITS.remove(ulid, rec) then
    redis.call('LREM', ready_key(rec[R_PRIORITY]), -1, ulid)
  end
  session_moved(rec, now, false, false, false, true)
end
redis.call('HDEL', KEYS[K_JOBS], ulid)
return 1
