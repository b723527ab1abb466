-- add: stores one new job and makes it ready, delayed, or pending in its session, in one step.
-- KEYS: the queue keys (lib.lua), then KEYS[25] = the idempotency tombstone when a key was given.
-- ARGV[8] ULID, ARGV[9] packed record (state WAITING), ARGV[10] priority,
-- ARGV[11] delay ms or -1, ARGV[12] run_at epoch ms or -1, ARGV[13] idempotency window ms,
-- ARGV[14] session name or ''.
-- Returns {1, ULID} when added, {0, first ULID} when the idempotency key was already seen,
-- {-1, ''} when the session does not exist (nothing written).
-- The tombstone outlives the job's retention on purpose: a repeat inside the window is a
-- duplicate even after the first job is gone.
local ulid, raw, priority = ARGV[8], ARGV[9], tonumber(ARGV[10])
local delay, run_at, session = tonumber(ARGV[11]), tonumber(ARGV[12]), ARGV[14]
if KEYS[25] then
  local first = redis.call('GET', KEYS[25])
  if first then
    return { 0, first }
  end
end
local meta = session ~= '' and load_session(session)
if session ~= '' and not meta then
  return { -1, '' }
end
if KEYS[25] then
  redis.call('SET', KEYS[25], ulid, 'PX', ARGV[13])
end
local now = now_ms()
local due = run_at
if delay >= 0 then
  due = now + delay
end
if meta then
  local seq = redis.call('HINCRBY', KEYS[K_META], 'session_seq', 1)
  local rec = cmsgpack.unpack(raw)
  rec[R_SESSION] = session .. '/' .. string.format('%016d', seq) .. '/' .. ulid
  if due > now then
    rec[R_STATE] = S_DELAYED
    rec[R_RUN_AT] = due
  end
  save(ulid, rec)
  redis.call('ZADD', KEYS[K_SESSION_JOBS], 0, rec[R_SESSION])
  emit(due > now and E_DELAYED or E_WAITING, ulid, 0, '', due > now and due or 0)
  session_pump(session, meta, now)
  save_session(session, meta, now)
  return { 1, ulid }
end
if due > now then
  make_delayed(ulid, cmsgpack.unpack(raw), due, S_DELAYED)
  return { 1, ulid }
end
redis.call('HSET', KEYS[K_JOBS], ulid, raw)
if redis.call('RPUSH', ready_key(priority), ulid) == 1 then
  wake()
end
emit(E_WAITING, ulid, 0)
return { 1, ulid }
