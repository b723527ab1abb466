-- Shared prelude, prepended to every state-changing script (see store/scripts.rs).
--
-- Every such script receives the same queue keys, all hash-tagged with the queue:
--   KEYS[1] jobs       hash  ULID -> packed job record (msgpack array, fields R_* below)
--   KEYS[2] active     hash  ULID -> lease "token|started_ms|attempt"
--   KEYS[3] deadlines  zset  ULID by the active attempt's deadline (ms)
--   KEYS[4] delayed    zset  ULID by the time it becomes ready (delay, run_at, retry backoff)
--   KEYS[5] completed  zset  ULID by finish time (retained completed jobs)
--   KEYS[6] dead       zset  ULID by finish time (dead-letter set)
--   KEYS[7] meta       hash  paused flag and counters
--   KEYS[8..18]        lists of ready ULIDs, priority 5 (KEYS[8]) down to -5 (KEYS[18])
-- and the same leading arguments:
--   ARGV[1] wake channel, ARGV[2] queue name,
--   ARGV[3] completed retention ms, ARGV[4] completed cap,
--   ARGV[5] dead retention ms, ARGV[6] dead cap.
-- Time is the Redis server's own clock (TIME), the one clock of every queue.

local R_STATE, R_TYPE, R_PAYLOAD, R_HEADERS, R_PRIORITY, R_MAX_ATTEMPTS = 1, 2, 3, 4, 5, 6
local R_ATTEMPTS, R_LOST, R_CREATED, R_READY_AT, R_BACKOFF, R_TIMEOUT = 7, 8, 9, 10, 11, 12
local R_IDEM, R_STARTED, R_FINISHED, R_ERROR, R_RESULT, R_RUN_AT = 13, 14, 15, 16, 17, 18

local S_WAITING, S_DELAYED, S_RETRYING, S_COMPLETED, S_DEAD = 1, 2, 4, 5, 6

-- Exponential, base 1 s, factor 2, max 1 h, jitter 0.5: used when a record stores no backoff.
local DEFAULT_BACKOFF = { 1, 1000, 2, 3600000, 0.5 }
local BACKOFF_FIXED = 2
-- Upper bound of the entries one script call trims, promotes or expires per structure.
local BATCH = 100

local K_JOBS, K_ACTIVE, K_DEADLINES, K_DELAYED, K_COMPLETED, K_DEAD, K_META = 1, 2, 3, 4, 5, 6, 7
local COMPLETED_MS, COMPLETED_CAP = tonumber(ARGV[3]), tonumber(ARGV[4])
local DEAD_MS, DEAD_CAP = tonumber(ARGV[5]), tonumber(ARGV[6])

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function ready_key(priority)
  return KEYS[13 - priority]
end

local function wake()
  redis.call('PUBLISH', ARGV[1], ARGV[2])
end

local function load(ulid)
  local raw = redis.call('HGET', KEYS[K_JOBS], ulid)
  if not raw then
    return nil
  end
  return cmsgpack.unpack(raw)
end

local function save(ulid, rec)
  redis.call('HSET', KEYS[K_JOBS], ulid, cmsgpack.pack(rec))
end

-- "token|started_ms|attempt" -> token, started_ms, attempt
local function parse_lease(lease)
  local token, started, attempt = string.match(lease, '^(.*)|(%d+)|(%d+)$')
  return token, tonumber(started), tonumber(attempt)
end

-- Removes the lease of an active job; the caller moves the job on.
local function drop_lease(ulid)
  redis.call('HDEL', KEYS[K_ACTIVE], ulid)
  redis.call('ZREM', KEYS[K_DEADLINES], ulid)
end

-- Drops the oldest members of a retention set past its age window or count cap, with their
-- records. Returns how many were dropped. Bounded by BATCH per call.
local function trim(set_key, now, window_ms, cap)
  local dropped = redis.call('ZRANGEBYSCORE', set_key, '-inf', now - window_ms, 'LIMIT', 0, BATCH)
  local over = redis.call('ZCARD', set_key) - #dropped - cap
  if over > 0 then
    local extra = redis.call('ZRANGE', set_key, #dropped, #dropped + math.min(over, BATCH) - 1)
    for _, id in ipairs(extra) do
      dropped[#dropped + 1] = id
    end
  end
  if #dropped > 0 then
    redis.call('ZREM', set_key, unpack(dropped))
    redis.call('HDEL', KEYS[K_JOBS], unpack(dropped))
  end
  return #dropped
end

local function trim_dead(now)
  local evicted = trim(KEYS[K_DEAD], now, DEAD_MS, DEAD_CAP)
  if evicted > 0 then
    redis.call('HINCRBY', KEYS[K_META], 'dead_evicted', evicted)
  end
end

-- Puts a job in its ready list: at the head for a delivery taken back, at the tail otherwise.
-- Publishes a wake-up when the list was empty: a dispatcher with credit only sleeps after it has
-- seen every list empty, so this is the one moment a sleeping dispatcher can miss work.
local function make_ready(ulid, rec, now, at_head)
  rec[R_STATE] = S_WAITING
  rec[R_READY_AT] = now
  rec[R_RUN_AT] = false
  save(ulid, rec)
  local len = redis.call(at_head and 'LPUSH' or 'RPUSH', ready_key(rec[R_PRIORITY]), ulid)
  if len == 1 then
    wake()
  end
end

-- Schedules a job for `at`; wakes dispatchers when it is now the earliest, so their timers move.
local function make_delayed(ulid, rec, at, state)
  rec[R_STATE] = state
  rec[R_RUN_AT] = at
  save(ulid, rec)
  redis.call('ZADD', KEYS[K_DELAYED], at, ulid)
  if redis.call('ZRANK', KEYS[K_DELAYED], ulid) == 0 then
    wake()
  end
end

local function make_dead(ulid, rec, now)
  rec[R_STATE] = S_DEAD
  rec[R_FINISHED] = now
  save(ulid, rec)
  redis.call('ZADD', KEYS[K_DEAD], now, ulid)
  trim_dead(now)
end

local function backoff_ms(rec, attempt, rand)
  local b = rec[R_BACKOFF] or DEFAULT_BACKOFF
  local kind, base, factor, max, jitter = b[1], b[2], b[3], b[4], b[5]
  local wait = base
  if kind ~= BACKOFF_FIXED then
    wait = math.min(max, base * math.pow(factor, attempt - 1))
  end
  return math.floor(wait * (1 - jitter * rand))
end

-- Records a failed attempt whose lease is already dropped, then retries or buries the job.
-- Returns the new state and, for a retry, when it runs.
local function attempt_failed(ulid, rec, started, attempt, err, retryable, retry_after, rand, now)
  rec[R_ATTEMPTS] = attempt
  rec[R_STARTED] = started
  rec[R_ERROR] = err
  if not retryable or attempt >= rec[R_MAX_ATTEMPTS] then
    make_dead(ulid, rec, now)
    return S_DEAD, 0
  end
  local wait = retry_after
  if wait < 0 then
    wait = backoff_ms(rec, attempt, rand)
  end
  if wait <= 0 then
    make_ready(ulid, rec, now, false)
    return S_WAITING, now
  end
  make_delayed(ulid, rec, now + wait, S_RETRYING)
  return S_RETRYING, now + wait
end

-- Checks a caller's lease. Returns 1 and the lease fields when `token` holds the job; otherwise
-- 0 when the job is unknown or -1 when the token is stale (another holder, or not active).
local function check_lease(ulid, token)
  local lease = redis.call('HGET', KEYS[K_ACTIVE], ulid)
  if not lease then
    if redis.call('HEXISTS', KEYS[K_JOBS], ulid) == 1 then
      return -1
    end
    return 0
  end
  local held, started, attempt = parse_lease(lease)
  if held ~= token then
    return -1
  end
  return 1, started, attempt
end
