-- doctor_place: puts an orphaned job (a record in no place) where its record's state says:
-- completed, dead or cancelled jobs in their retention structure, a job of a session back in
-- its session's line (released again when the session has room), a delayed or retrying job in
-- the delayed set, a waiting one at the tail of its ready list. Checks first that the job is
-- still in no place, so a job that moved on since the doctor saw it is left alone.
-- Touches (here or in the lib.lua helpers it calls) the queue keys jobs, active, delayed,
-- completed, dead, events, sessions, session_jobs, session_ttl, cancelled, outcomes, ready
-- lists; may publish a wake-up on ARGV[1].
-- KEYS: the queue keys (lib.lua).
-- ARGV[8] 'check' (change nothing) or 'fix', ARGV[9] the job's ULID.
-- Returns 1 when the job was in no place (with 'fix': it was placed), else 0.
local fix, ulid = ARGV[8] == 'fix', ARGV[9]
local rec = load_any(ulid)
if not rec then
  return 0
end
local member = rec[R_SESSION]
if redis.call('HEXISTS', KEYS[K_ACTIVE], ulid) == 1 or (member and redis.call('ZSCORE', KEYS[K_SESSION_JOBS], member)) then
  return 0
end
for _, k in ipairs({ K_DELAYED, K_DEAD, K_CANCELLED }) do
  if redis.call('ZSCORE', KEYS[k], ulid) then
    return 0
  end
end
if LIMITS.is_keyed(ulid, rec) then
  return 0
end
for i = K_COMPLETED, K_READY + 10 do
  if (i == K_COMPLETED or i >= K_READY) and redis.call('LPOS', KEYS[i], ulid) then
    return 0
  end
end
if not fix then
  return 1
end
local state, now = rec[R_STATE], now_ms()
if state == S_COMPLETED then
  redis.call('RPUSH', KEYS[K_COMPLETED], ulid)
elseif state == S_DEAD or state == S_CANCELLED then
  redis.call('ZADD', KEYS[state == S_DEAD and K_DEAD or K_CANCELLED], rec[R_FINISHED] or now, ulid)
elseif member then
  redis.call('ZADD', KEYS[K_SESSION_JOBS], 0, member)
  local name, meta = job_session(rec)
  if meta then
    session_pump(name, meta, now)
    save_session(name, meta, now)
  end
elseif state == S_DELAYED or state == S_RETRYING then
  make_delayed(ulid, rec, rec[R_RUN_AT] or now, state)
else
  make_ready(ulid, rec, now, false)
end
return 1
