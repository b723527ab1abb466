-- complete: acknowledges a batch of finished attempts; each entry is checked and applied on its
-- own, so one stale token does not hold back the others. The ULIDs of a batch are distinct.
-- Touches (here or in the lib.lua helpers it calls) the queue keys jobs, active, deadlines,
-- delayed, completed, events, sessions, session_state, session_jobs, session_ttl, cancelled,
-- outcomes, activity, settings, keyed, key_due, key_parked, key_state, ready lists; may publish
-- a wake-up on ARGV[1]. A lease flagged 'k' gives its concurrency key's slot back.
-- KEYS: the queue keys (lib.lua).
-- ARGV[8] the number of acks n, then n triples {ULID, lease token, result}, then the number of
-- refills r and r pairs {ack number (1-based), lease token}, in ack order, then for each ack
-- that writes its session's state a triple {ack number, new state, expected session version or
-- -1}.
-- A refill is the next job of the worker that acked: once every ack is applied, each ack that
-- ended its lease (codes 1, 2 and -3) offers its refill token, due delayed jobs are made ready,
-- and up to that many ready jobs are leased with them as a lease round would (lease_refills in
-- lib.lua; deadlines and trims stay with the lease round).
-- Returns codes when no refill was given, else {codes, offered, jobs, sessions, now, delayed}:
--   offered  = the refill tokens offered, in ack order; jobs and sessions as in lease.lua, the
--              i-th job holding the i-th token offered (fewer jobs when the queue ran short)
--   now      = the Redis time of the call (ms)
--   delayed  = ms until the earliest delayed job is due, or -1 when none is
-- and codes, one per entry:
--    1 completed                  0 unknown job             -1 stale token (nothing changed)
--    2 accepted, but the job had been cancelled, so it ends cancelled
--   -2 session version mismatch: nothing written, the job stays leased
--   -3 the job's session was deleted (a session created since under its name is another one):
--      the job ends cancelled, its state is not written
--   -4 a new session state for a job outside any session: nothing written
-- A completed job's record is left as it is: its outcome (finish time, lease, result) goes to
-- the outcomes hash and its ULID to the tail of the completed list, trimmed to the completed
-- cap. With a completed cap or window of 0, results are not retained and the record goes at
-- once.
local now = now_ms()
load_settings()
local retain = COMPLETED_CAP > 0 and COMPLETED_MS > 0
local acks = tonumber(ARGV[8])
local ids = {}
for n = 1, acks do
  ids[n] = ARGV[6 + 3 * n]
end
local refills_at = 9 + 3 * acks
local refills = tonumber(ARGV[refills_at])
local states = {}
for i = refills_at + 1 + 2 * refills, #ARGV, 3 do
  states[tonumber(ARGV[i])] = i
end
local leases = hmget(KEYS[K_ACTIVE], ids)
-- Writes of the completed jobs, made with one call each after the loop; the events of those
-- acked the plain way, emitted together at the end.
local released, outcomes, completed, dropped = {}, {}, {}, {}
local plain_ids, plain_attempts = {}, {}
local function finish(ulid, lease, result)
  released[#released + 1] = ulid
  if retain then
    outcomes[#outcomes + 1] = ulid
    outcomes[#outcomes + 1] = cmsgpack.pack(now, lease, result)
    completed[#completed + 1] = ulid
  else
    dropped[#dropped + 1] = ulid
  end
end

-- An ack whose lease has flags, or that writes its session's state: the record is read.
local function finish_flagged(ulid, lease, result, n)
  local _, started, attempt, attempt_text = parse_lease(lease)
  local rec = load(ulid)
  local name, meta = job_session(rec)
  local state_at = states[n]
  local expected = state_at and tonumber(ARGV[state_at + 2])
  if state_at and not name then
    return -4
  end
  if expected and meta and expected >= 0 and meta[M_VERSION] ~= expected then
    return -2
  end
  if rec[R_CANCEL] or (name and not meta) then
    drop_lease(ulid)
    rec[R_ATTEMPTS] = attempt
    rec[R_STARTED] = started
    make_cancelled(ulid, rec, now, 'active')
    return (name and not meta) and -3 or 2
  end
  if state_at then
    redis.call('HSET', KEYS[K_SESSION_STATE], name, ARGV[state_at + 1])
    meta[M_VERSION] = meta[M_VERSION] + 1
    save_session(name, meta, now)
  end
  finish(ulid, lease, result)
  emit_plain(E_COMPLETED, ulid, attempt_text)
  session_moved(rec, now, false, true, false, false)
  if string.find(lease, '|%a*k%a*$') then
    LIMITS.release(ulid, rec)
  end
  return 1
end

local codes = {}
for n = 1, acks do
  local i = 6 + 3 * n
  local ulid, token, result = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local lease = leases[n]
  if not lease then
    codes[n] = redis.call('HEXISTS', KEYS[K_JOBS], ulid) == 1 and -1 or 0
  elseif string.find(lease, token .. '|', 1, true) ~= 1 then
    codes[n] = -1
  elseif states[n] or string.byte(lease, -1) > 57 then
    -- The lease ends in flags (letters), not in the attempt (digits).
    codes[n] = finish_flagged(ulid, lease, result, n)
  else
    finish(ulid, lease, result)
    plain_ids[#plain_ids + 1] = ulid
    -- "token|started|attempt": the attempt follows the second '|'.
    plain_attempts[#plain_ids] = string.sub(lease, string.find(lease, '|', #token + 2, true) + 1)
    codes[n] = 1
  end
end
bulk('HDEL', KEYS[K_ACTIVE], released)
slot_freed = slot_freed or #released > 0
bulk('ZREM', KEYS[K_DEADLINES], released)
bulk('HSET', KEYS[K_OUTCOMES], outcomes)
local length = bulk('RPUSH', KEYS[K_COMPLETED], completed)
bulk('HDEL', KEYS[K_JOBS], dropped)
emit_many(E_COMPLETED, plain_ids, plain_attempts)
if length then
  -- The cap here, all of it: a batch of up to 256 acks may pass it by more than BATCH, and the
  -- list must not keep growing past it under load. The age window with the dispatcher's upkeep
  -- (lease.lua).
  trim_completed(now, false, length, #completed + BATCH)
end
if refills == 0 then
  return codes
end
local offered = {}
for i = refills_at + 1, refills_at + 2 * refills, 2 do
  local code = codes[tonumber(ARGV[i])]
  if code == 1 or code == 2 or code == -3 then
    offered[#offered + 1] = ARGV[i + 1]
  end
end
local jobs, sessions, next_delayed = lease_refills(offered, 1, now)
return { codes, offered, jobs, sessions, now, next_delayed }
