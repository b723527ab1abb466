-- retry: moves dead jobs back with their attempts and lost deliveries reset: a plain job to
-- ready, a job of a session back into its session's line at its place in add order, to be
-- released by the session like any other (so the session keeps to its max_concurrency).
-- Touches (here or in the lib.lua helpers it calls) the queue keys jobs, delayed, dead, events,
-- sessions, session_jobs, session_ttl, outcomes, ready lists; may publish a wake-up on ARGV[1].
-- KEYS: the queue keys (lib.lua).
-- ARGV[8] a ULID to retry that one job, or '' to retry the oldest dead jobs,
-- ARGV[9] at most this many (batch mode; 0 retries nothing).
-- Returns {code, moved}: code 1 done, 0 unknown job, -1 the job is not dead,
-- -2 its session is gone.
local now = now_ms()
local function revive(ulid, rec)
  local name, meta = job_session(rec)
  if name and not meta then
    return false
  end
  redis.call('ZREM', KEYS[K_DEAD], ulid)
  rec[R_ATTEMPTS] = 0
  rec[R_LOST] = 0
  rec[R_FINISHED] = false
  if not name then
    make_ready(ulid, rec, now, false)
    return true
  end
  rec[R_STATE] = S_WAITING
  rec[R_RUN_AT] = false
  save(ulid, rec)
  redis.call('ZADD', KEYS[K_SESSION_JOBS], 0, rec[R_SESSION])
  emit(E_WAITING, ulid, 0)
  session_pump(name, meta, now)
  save_session(name, meta, now)
  return true
end
if ARGV[8] ~= '' then
  local rec = load_any(ARGV[8])
  if not rec then
    return { 0, 0 }
  end
  if rec[R_STATE] ~= S_DEAD then
    return { -1, 0 }
  end
  if not revive(ARGV[8], rec) then
    return { -2, 0 }
  end
  return { 1, 1 }
end
local moved, limit = 0, tonumber(ARGV[9])
if limit < 1 then
  return { 1, 0 }
end
for _, ulid in ipairs(redis.call('ZRANGE', KEYS[K_DEAD], 0, limit - 1)) do
  local rec = load(ulid)
  if rec and revive(ulid, rec) then
    moved = moved + 1
  end
end
return { 1, moved }
