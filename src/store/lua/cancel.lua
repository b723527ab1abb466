-- cancel: cancels one job. Waiting, delayed or still pending in its session: it ends cancelled
-- at once. Active: it is marked; its holder is told (by the caller, with the returned token),
-- and whatever happens next (ack, failure, timeout, lost stream) ends it cancelled.
-- Touches (here or in the lib.lua helpers it calls) the queue keys jobs, active, delayed, events,
-- sessions, session_jobs, session_ttl, cancelled, outcomes, keyed, key_due, key_parked, ready
-- lists; may publish a wake-up on ARGV[1].
-- KEYS: the queue keys (lib.lua). ARGV[8] ULID.
-- Returns {code, token}: 1 cancelled, 2 marked while active (token = its lease), 0 unknown,
-- -1 already finished (completed, dead or cancelled).
local ulid = ARGV[8]
local rec = load_any(ulid)
if not rec then
  return { 0, '' }
end
local now = now_ms()
local lease = redis.call('HGET', KEYS[K_ACTIVE], ulid)
if lease then
  local token, _, _, _, flags = parse_lease(lease)
  if not rec[R_CANCEL] then
    rec[R_CANCEL] = true
    save(ulid, rec)
    -- Flag the lease too: an ack reads the lease, not the record, to pick its path.
    redis.call('HSET', KEYS[K_ACTIVE], ulid, lease .. (flags == '' and '|c' or 'c'))
  end
  return { 2, token }
end
local state = rec[R_STATE]
if state == S_COMPLETED or state == S_DEAD or state == S_CANCELLED then
  return { -1, '' }
end
if rec[R_SESSION] and redis.call('ZREM', KEYS[K_SESSION_JOBS], rec[R_SESSION]) == 1 then
  make_cancelled(ulid, rec, now, 'pending')
  return { 1, '' }
end
if redis.call('ZREM', KEYS[K_DELAYED], ulid) == 0 and not LIMITS.remove(ulid, rec) then
  redis.call('LREM', ready_key(rec[R_PRIORITY]), -1, ulid)
end
make_cancelled(ulid, rec, now, 'queued')
return { 1, '' }
