-- lease: one dispatcher round for a queue, in one step:
--   1. attempts past their deadline fail with "timeout" (retry or dead) and are reported,
--   2. delayed and retrying jobs that are due become ready (at the tail of their priority),
--   3. unless the queue is paused, up to #tokens ready jobs are leased, highest priority first,
--      FIFO within a priority; job i gets lease token i,
--   4. when asked (every few seconds, not every round), retention windows are enforced on
--      completed, cancelled and dead jobs (an ack enforces only the completed cap).
-- Touches (here or in the lib.lua helpers it calls) the queue keys jobs, active, deadlines,
-- delayed, completed, dead, meta, events, sessions, session_state, session_jobs, session_ttl,
-- cancelled, outcomes, ready lists; may publish a wake-up on ARGV[1].
-- KEYS: the queue keys (lib.lua).
-- ARGV[8] a random number in [0, 1) for backoff jitter, ARGV[9] trim (1/0), ARGV[10..] lease
-- tokens.
-- Returns {jobs, revoked, next_wake_ms, now, sessions}:
--   jobs    = flat {ULID, record, ...}: the leased jobs, the i-th holding token i; its attempt
--             is the record's attempts + 1 and its deadline now + the record's timeout
--   revoked = flat {ULID, token, ...} of the timed-out leases
--   next_wake_ms = ms until the next delayed job or deadline is due, or -1 when none is
--   sessions = flat {i, state, version, ...} for the leased jobs of a session: the session's
--             state and version as delivered with job i.
local now = now_ms()
local now_text = int_text(now)
local rand = tonumber(ARGV[8])

-- The earliest score of a zset, or nil when it is empty.
local function first_score(key)
  local first = redis.call('ZRANGE', key, '0', '0', 'WITHSCORES')
  return first[2] and tonumber(first[2])
end

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

local first_delayed = first_score(KEYS[K_DELAYED])
if first_delayed and first_delayed <= now then
  local due = redis.call('ZRANGEBYSCORE', KEYS[K_DELAYED], '-inf', now_text, 'LIMIT', '0', BATCH_TEXT)
  redis.call('ZREM', KEYS[K_DELAYED], unpack(due))
  for _, ulid in ipairs(due) do
    local rec = load(ulid)
    if rec then
      make_ready(ulid, rec, now, false)
    end
  end
  first_delayed = first_score(KEYS[K_DELAYED])
end
delayed_changed = false

local jobs, sessions = {}, {}
if #ARGV > 9 and redis.call('HEXISTS', KEYS[K_META], 'paused') == 0 then
  local next_token, leased = 10, 0
  -- The leases and deadlines of this round, written with one call each after the loop.
  local leases, deadlines, active_ids, active_attempts = {}, {}, {}, {}
  -- Deadlines as text by timeout: the jobs of a queue mostly share one timeout.
  local deadline_text = {}
  -- LMPOP 11 ready-lists... LEFT COUNT n: pops from the highest priority list holding jobs.
  local pop = { 'LMPOP', '11' }
  for i = K_READY, K_READY + 10 do
    pop[#pop + 1] = KEYS[i]
  end
  pop[#pop + 1] = 'LEFT'
  pop[#pop + 1] = 'COUNT'
  while next_token <= #ARGV do
    pop[#pop + 1] = int_text(#ARGV - next_token + 1)
    local popped = redis.call(unpack(pop))
    pop[#pop] = nil
    if not popped then
      break
    end
    local ids = popped[2]
    local raws = hmget(KEYS[K_JOBS], ids)
    for i, ulid in ipairs(ids) do
      local raw, _, hot = raws[i], nil, nil
      if raw then
        -- Only the fields a lease reads; the whole record only for a job that will not run.
        _, hot = cmsgpack.unpack_one(raw)
      end
      if hot and hot[R_CANCEL] then
        make_cancelled(ulid, unpack_record(raw), now, 'queued')
      elseif hot and hot[R_SESSION] and not session_moved(hot, now, true, false, false, false) then
        make_cancelled(ulid, unpack_record(raw), now, 'pending')
      elseif hot then
        local token = ARGV[next_token]
        next_token = next_token + 1
        local attempt_text = int_text(hot[R_ATTEMPTS] + 1)
        local timeout = hot[R_TIMEOUT]
        local deadline = deadline_text[timeout]
        if not deadline then
          deadline = int_text(now + timeout)
          deadline_text[timeout] = deadline
          if not first_deadline or now + timeout < first_deadline then
            first_deadline = now + timeout
          end
        end
        local lease = token .. '|' .. now_text .. '|' .. attempt_text
        local name = session_name(hot)
        if name then
          lease = lease .. '|s'
        end
        leases[#leases + 1] = ulid
        leases[#leases + 1] = lease
        deadlines[#deadlines + 1] = deadline
        deadlines[#deadlines + 1] = ulid
        leased = leased + 1
        active_ids[leased] = ulid
        active_attempts[leased] = attempt_text
        jobs[2 * leased - 1] = ulid
        jobs[2 * leased] = raw
        if name then
          sessions[#sessions + 1] = leased
          sessions[#sessions + 1] = redis.call('HGET', KEYS[K_SESSION_STATE], name) or ''
          sessions[#sessions + 1] = load_session(name)[M_VERSION]
        end
      end
    end
  end
  bulk('HSET', KEYS[K_ACTIVE], leases)
  bulk('ZADD', KEYS[K_DEADLINES], deadlines)
  emit_many(E_ACTIVE, active_ids, active_attempts)
end

if ARGV[9] == '1' then
  trim_completed(now, true)
  trim(KEYS[K_CANCELLED], now, COMPLETED_MS, COMPLETED_CAP)
  trim_dead(now)
end

-- Sessions may have released delayed jobs meanwhile.
if delayed_changed then
  first_delayed = first_score(KEYS[K_DELAYED])
end
local next_wake = -1
for _, first in ipairs({ first_delayed or false, first_deadline or false }) do
  if first then
    local wait = math.max(0, first - now)
    if next_wake < 0 or wait < next_wake then
      next_wake = wait
    end
  end
end
return { jobs, revoked, next_wake, now, sessions }
