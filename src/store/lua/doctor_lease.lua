-- doctor_lease: mends one lease as the doctor saw it. 'deadline': an active job with no
-- deadline gets one (its attempt's start plus its timeout). 'return': a lease held by an
-- instance no longer in the instance registry (so the reaper will never look for it), or one
-- that does not parse, is dropped and the job goes back to the head of its queue, as the
-- reaper does. Either only while the lease is still exactly the one the doctor saw: a job acked
-- or leased again meanwhile is left alone.
-- Touches (here or in the lib.lua helpers it calls) the queue keys jobs, active, deadlines,
-- delayed, events, sessions, session_jobs, session_ttl, cancelled, ready lists; may publish a
-- wake-up on ARGV[1].
-- KEYS: the queue keys (lib.lua).
-- ARGV[8] 'check' (change nothing) or 'fix', ARGV[9] 'deadline' or 'return', ARGV[10] the
-- job's ULID, ARGV[11] its lease as the doctor saw it.
-- Returns 1 when the lease still needed mending (with 'fix': it was mended), else 0.
local fix, what, ulid, seen = ARGV[8] == 'fix', ARGV[9], ARGV[10], ARGV[11]
if redis.call('HGET', KEYS[K_ACTIVE], ulid) ~= seen then
  return 0
end
local rec = load(ulid)
if what == 'deadline' then
  local _, started = parse_lease(seen)
  if not rec or not started or redis.call('ZSCORE', KEYS[K_DEADLINES], ulid) then
    return 0
  end
  if fix then
    redis.call('ZADD', KEYS[K_DEADLINES], started + rec[R_TIMEOUT], ulid)
  end
  return 1
end
if not rec then
  return 0
end
if fix then
  drop_lease(ulid)
  back_to_queue(ulid, rec, now_ms(), true)
end
return 1
