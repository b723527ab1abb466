-- The head of the jobwire function library (see store/scripts.rs): the queue layout and the
-- helpers of the state machine. Each file of lua/ follows as the body of one function.
--
-- Every queue function receives the same queue keys, all hash-tagged with the queue:
--   KEYS[1]  jobs          hash  ULID -> packed job record (two msgpack arrays, fields R_* below)
--   KEYS[2]  active        hash  ULID -> lease "token|started_ms|attempt", then "|" and flags
--                                when any: s (the job is in a session), c (cancel requested)
--   KEYS[3]  deadlines     zset  ULID by the active attempt's deadline (ms)
--   KEYS[4]  delayed       zset  ULID by the time it becomes ready (delay, run_at, retry backoff)
--   KEYS[5]  completed     list  ULIDs of retained completed jobs, in finish order (oldest first)
--   KEYS[6]  dead          zset  ULID by finish time (dead-letter set)
--   KEYS[7]  meta          hash  paused flag, capped flag (concurrency_room), counters, session
--                                sequence
--   KEYS[8]  events        stream of job transitions (capped)
--   KEYS[9]  sessions      hash  session name -> packed session meta (M_* below)
--   KEYS[10] session_state hash  session name -> state JSON
--   KEYS[11] session_jobs  zset  "name/seq/ULID" (score 0, lexical order = add order): jobs of a
--                                session not yet released to the ready lists
--   KEYS[12] session_ttl   zset  session name by expiry time
--   KEYS[13] cancelled     zset  ULID by cancel time (retained like completed jobs)
--   KEYS[14] outcomes      hash  ULID -> outcome of a completed job: msgpack finish time (ms),
--                                its last lease (as in active) and result, one after the other
--   KEYS[15] activity      hash  '<kind><minute>' -> jobs added (a), completed (c) or failed (f)
--                                in that minute of the Redis clock (see count_activity)
--   KEYS[16] settings      hash  the queue's settings set at run time (SET_* below); a field
--                                absent falls back to the server's flag, passed in ARGV. Only
--                                settings_set writes it; whatever retains a finished job reads
--                                its retention (load_settings), an add its max_waiting, a
--                                lease its concurrency (concurrency_room) and rate limits
--   KEYS[17] keyed         zset  ready jobs that carry a rate or concurrency key (score 0):
--                                "<group>\0<order>\0<ULID>", see limits_lib.lua
--   KEYS[18] key_due       zset  group -> the time (ms) its next job may be leased
--   KEYS[19] key_parked    zset  groups whose concurrency key is at its cap (score 0)
--   KEYS[20] key_state     hash  't<rate key>' -> GCRA TAT (ms), 'a<concurrency key>' -> leases
--   KEYS[21..31]           lists of ready ULIDs, priority 5 (KEYS[21]) down to -5 (KEYS[31])
-- and the same leading arguments:
--   ARGV[1] the queue's wake channel (a shard channel of the queue's hash tag, so on its slot:
--           SPUBLISH from a script must stay there), ARGV[2] queue name,
--   ARGV[3] completed retention ms, ARGV[4] completed cap,
--   ARGV[5] dead retention ms, ARGV[6] dead cap, ARGV[7] events kept.
-- Time is the Redis server's own clock (TIME), the one clock of every queue.

-- A record is two msgpack arrays one after the other: the fields a lease reads (R_ATTEMPTS to
-- R_CANCEL, decoded alone with cmsgpack.unpack_one), then the rest. A completed job's record is
-- not rewritten: its outcome is kept apart (KEYS[14]) and applied when the record is loaded.
local R_ATTEMPTS, R_TIMEOUT, R_SESSION, R_CANCEL = 1, 2, 3, 4
local R_STATE, R_TYPE, R_PAYLOAD, R_HEADERS, R_PRIORITY, R_MAX_ATTEMPTS = 5, 6, 7, 8, 9, 10
local R_LOST, R_CREATED, R_READY_AT, R_BACKOFF, R_IDEM, R_STARTED = 11, 12, 13, 14, 15, 16
local R_FINISHED, R_ERROR, R_RESULT, R_RUN_AT, R_PROGRESS = 17, 18, 19, 20, 21
-- The job's rate key and concurrency key (absent: false or nil), and while it waits among the
-- keyed jobs its place there (limits_lib.lua): written only for jobs that have a key.
local R_RATE_KEY, R_CONC_KEY, R_KEY_ORDER = 22, 23, 24
local HOT_FIELDS, FIELDS = 4, 24

local S_WAITING, S_DELAYED, S_RETRYING, S_COMPLETED, S_DEAD, S_CANCELLED = 1, 2, 4, 5, 6, 7

-- Session meta: version, created, updated, ttl ms, max concurrency, started (active) jobs,
-- queued jobs (released to the queue, not yet started). Packed as one msgpack array, followed by
-- the queue's session sequence when the session was created (M_SINCE once loaded; 0 when absent,
-- as in sessions written before it was). A name can be deleted and created again: the jobs of
-- this session have greater sequence numbers, those of an earlier session of the name do not.
local M_VERSION, M_CREATED, M_UPDATED, M_TTL, M_MAXC, M_STARTED, M_QUEUED = 1, 2, 3, 4, 5, 6, 7
local M_SINCE = 8

-- Exponential, base 1 s, factor 2, max 1 h, jitter 0.5: used when a record stores no backoff.
local DEFAULT_BACKOFF = { 1, 1000, 2, 3600000, 0.5 }
local BACKOFF_FIXED = 2
-- Upper bound of the entries one script call trims, promotes or expires per structure.
local BATCH, BATCH_TEXT = 100, '100'

local K_JOBS, K_ACTIVE, K_DEADLINES, K_DELAYED, K_COMPLETED, K_DEAD, K_META = 1, 2, 3, 4, 5, 6, 7
local K_EVENTS, K_SESSIONS, K_SESSION_STATE, K_SESSION_JOBS, K_SESSION_TTL, K_CANCELLED = 8, 9, 10, 11, 12, 13
local K_OUTCOMES, K_ACTIVITY, K_SETTINGS, K_KEYED, K_KEY_DUE, K_KEY_PARKED, K_KEY_STATE = 14, 15, 16, 17, 18, 19, 20
local K_READY = 21
-- Rate limits and per-key concurrency (limits_lib.lua, loaded after this file): a table, so
-- the helpers here can call what is defined there.
local LIMITS = {}
-- The keys and arguments of the running call, and its retention settings (set by run from the
-- flags, ARGV[3..6], and by load_settings from the queue's settings).
local KEYS, ARGV
local COMPLETED_MS, COMPLETED_CAP, DEAD_MS, DEAD_CAP

-- Event kinds, as in the proto's JobEventType; strings, the form they are written in.
local E_WAITING, E_DELAYED, E_ACTIVE, E_PROGRESS, E_RETRYING = '1', '2', '3', '4', '5'
local E_COMPLETED, E_DEAD, E_CANCELLED = '6', '7', '8'
-- Jobs one stream entry may carry (see emit).
local EVENT_GROUP = 16
-- Arguments per Redis call when a script writes many entries at once (Lua's unpack is bounded).
local CHUNK = 1000

-- Integers as decimal text. Redis turns a number argument into text with "%.17g" and Lua
-- concatenates with "%.14g", both slow floating-point formatting; "%d" is not, and small counts
-- are made once (on first use: the standard libraries are out of reach while the library loads).
local SMALL_INTS
local function int_text(n)
  if not SMALL_INTS then
    SMALL_INTS = {}
    for i = 0, 255 do
      SMALL_INTS[i] = string.format('%d', i)
    end
  end
  return SMALL_INTS[n] or string.format('%d', n)
end

-- The settings every call passes (retention, events kept) as numbers. They seldom change, and
-- tonumber parses with strtod, slow enough to show in every call; so each text is read once.
local SETTINGS = {}
local function setting(text)
  local n = SETTINGS[text]
  if not n then
    n = tonumber(text)
    SETTINGS[text] = n
  end
  return n
end

-- The fields of the settings hash (KEYS[K_SETTINGS]) the functions read, each a whole number as
-- decimal text (store/queue_settings.rs writes them; absent: the flag in ARGV applies).
local SET_COMPLETED_MS, SET_COMPLETED_MAX = 'completed_ms', 'completed_max'
local SET_DEAD_MS, SET_DEAD_MAX, SET_MAX_WAITING = 'dead_ms', 'dead_max', 'max_waiting'
local SET_CONCURRENCY = 'concurrency'
-- Rate limits as "count period_ms burst", and the per-key concurrency cap (limits_lib.lua).
local SET_RATE, SET_KEY_RATE, SET_KEY_CONCURRENCY = 'rate', 'key_rate', 'key_concurrency'

-- Whether this call has read the queue's settings yet (see load_settings), and the queue's
-- concurrency cap as read (nil: none); its rate limits and per-key cap are in LIMITS.
local settings_loaded = false
local CONCURRENCY

-- Reads the settings the functions enforce, once per call, by the first thing of the call that
-- retains a finished job, leases or ends a lease: COMPLETED_MS, COMPLETED_CAP, DEAD_MS and
-- DEAD_CAP become the queue's own where it sets them, and CONCURRENCY its cap. One HMGET.
local function load_settings()
  if settings_loaded then
    return
  end
  settings_loaded = true
  local set = redis.call('HMGET', KEYS[K_SETTINGS], SET_COMPLETED_MS, SET_COMPLETED_MAX, SET_DEAD_MS, SET_DEAD_MAX,
    SET_CONCURRENCY, SET_RATE, SET_KEY_RATE, SET_KEY_CONCURRENCY)
  COMPLETED_MS = set[1] and setting(set[1]) or COMPLETED_MS
  COMPLETED_CAP = set[2] and setting(set[2]) or COMPLETED_CAP
  DEAD_MS = set[3] and setting(set[3]) or DEAD_MS
  DEAD_CAP = set[4] and setting(set[4]) or DEAD_CAP
  CONCURRENCY = set[5] and setting(set[5])
  LIMITS.configure(set[6], set[7], set[8])
end

-- The most jobs the queue may hold waiting: its own setting, else `flag` (0: no cap).
local function max_waiting(flag)
  local set = redis.call('HGET', KEYS[K_SETTINGS], SET_MAX_WAITING)
  return set and tonumber(set) or flag
end

-- The clock as this call last read it (nil before it has): write_activity reuses it rather than
-- read TIME again.
local clock_read

local function now_ms()
  local t = redis.call('TIME')
  clock_read = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  return clock_read
end

local function ready_key(priority)
  return KEYS[K_READY + 5 - priority]
end

-- The jobs the queue holds waiting, as its max-waiting cap counts them: ready (in the ready
-- lists or among the keyed jobs), delayed or retrying, and pending in a session.
local function waiting_count()
  local held = redis.call('ZCARD', KEYS[K_DELAYED]) + redis.call('ZCARD', KEYS[K_SESSION_JOBS]) +
    redis.call('ZCARD', KEYS[K_KEYED])
  for priority = -5, 5 do
    held = held + redis.call('LLEN', ready_key(priority))
  end
  return held
end

-- Transitions made by this call, written to the queue's event stream by flush_events when the
-- function ends. The stream keeps about ARGV[7] events: each entry trims it to ARGV[7] divided by
-- the jobs the entry carries (in whole entries, approximately), so a busy queue whose entries
-- are full does not keep 16 times the history of a quiet one. Consecutive transitions that carry
-- nothing but the job and its attempt share one entry, up to EVENT_GROUP jobs, in groups by
-- kind: fields 'k' kind, 'j' space-separated ULIDs, 'a' their attempts (left out when all are
-- 0), then the next group's 'k', 'j', 'a'. Others get an entry each, fields with their default
-- value (0 or empty) left out (store/events.rs reads both).
local pending_events = {}
-- The last entry while it may take more jobs: plain, and not yet full.
local open_entry

-- Each pending entry: kind, ids, their attempts (text), counted (any attempt not 0), and for a
-- transition that carries more, its extra fields. flush_events writes EVENT_GROUP ids per entry.

-- A transition that carries nothing but the job and its attempt (as text).
local function emit_plain(kind, ulid, attempt_text)
  local e = open_entry
  if e and e.kind == kind then
    local n = e.n + 1
    e.n = n
    e.ids[n] = ulid
    e.attempts[n] = attempt_text
    if attempt_text ~= '0' then
      e.counted = true
    end
    if n == EVENT_GROUP then
      open_entry = nil
    end
    return
  end
  e = { kind = kind, n = 1, ids = { ulid }, attempts = { attempt_text }, counted = attempt_text ~= '0' }
  pending_events[#pending_events + 1] = e
  open_entry = e
end

-- The same plain transition of many jobs: `ids` and their `attempts` (as text; nil when all are
-- 0), written after everything emitted before. Cheaper than emit_plain per job.
local function emit_many(kind, ids, attempts)
  if #ids > 0 then
    open_entry = nil
    pending_events[#pending_events + 1] = { kind = kind, ids = ids, attempts = attempts, counted = attempts ~= nil }
  end
end

-- Any transition; `attempt` is a number.
local function emit(kind, ulid, attempt, err, run_at, progress)
  local attempt_text = int_text(attempt or 0)
  if (not err or err == '') and (not run_at or run_at <= 0) and (not progress or progress == '') then
    emit_plain(kind, ulid, attempt_text)
    return
  end
  local extra = {}
  if err and err ~= '' then
    extra[#extra + 1] = 'e'
    extra[#extra + 1] = err
  end
  if run_at and run_at > 0 then
    extra[#extra + 1] = 'r'
    extra[#extra + 1] = run_at
  end
  if progress and progress ~= '' then
    extra[#extra + 1] = 'p'
    extra[#extra + 1] = progress
  end
  open_entry = nil
  pending_events[#pending_events + 1] =
    { kind = kind, ids = { ulid }, attempts = { attempt_text }, counted = attempt_text ~= '0', extra = extra }
end

-- MAXLEN values as text, by value: a few per --events-max setting (one per entry size).
local KEEP_TEXT = {}
local function xadd_event(jobs, fields)
  local keep = math.ceil(setting(ARGV[7]) / jobs)
  local keep_text = KEEP_TEXT[keep]
  if not keep_text then
    keep_text = int_text(keep)
    KEEP_TEXT[keep] = keep_text
  end
  redis.call('XADD', KEYS[K_EVENTS], 'MAXLEN', '~', keep_text, '*', unpack(fields))
end

-- Writes the pending transitions: consecutive plain ones share stream entries of up to
-- EVENT_GROUP jobs whatever their kinds (each kind a group of its own: 'k', 'j' and 'a' again, in
-- order), so a call that acks a job and leases the next one appends one entry, not two; a
-- transition with more fields gets an entry of its own. Returns how many jobs they say completed.
local function flush_events()
  local completed = 0
  local fields, jobs = {}, 0
  local function append()
    if jobs > 0 then
      xadd_event(jobs, fields)
      fields, jobs = {}, 0
    end
  end
  for _, e in ipairs(pending_events) do
    if e.kind == E_COMPLETED then
      completed = completed + #e.ids
    end
    if e.extra then
      append()
    end
    local i = 1
    while i <= #e.ids do
      local last = math.min(i + EVENT_GROUP - jobs - 1, #e.ids)
      fields[#fields + 1] = 'k'
      fields[#fields + 1] = e.kind
      fields[#fields + 1] = 'j'
      fields[#fields + 1] = table.concat(e.ids, ' ', i, last)
      if e.counted then
        fields[#fields + 1] = 'a'
        fields[#fields + 1] = table.concat(e.attempts, ' ', i, last)
      end
      jobs = jobs + last - i + 1
      if e.extra then
        for _, v in ipairs(e.extra) do
          fields[#fields + 1] = v
        end
        append()
      elseif jobs == EVENT_GROUP then
        append()
      end
      i = last + 1
    end
  end
  append()
  pending_events, open_entry = {}, nil
  return completed
end

-- Activity: jobs added, completed and failed per minute of the Redis clock, for
-- GetQueueActivity. A call counts as it goes (count_added, count_failed; completions are
-- counted from its events) and write_activity adds its counts when it ends, one HINCRBY per
-- kind it counted, to the field '<kind><minute>' (kind 'a', 'c' or 'f'). The increment that
-- creates a field also drops every field older than ACTIVITY_MINUTES: the hash never holds more
-- than three kinds of ACTIVITY_MINUTES + 2 minutes.
local ACTIVITY_MINUTES = 60
local added_count, failed_count = 0, 0
-- The minute of the last write and its text, made once per minute.
local activity_minute, activity_minute_text

-- Jobs added by this call.
local function count_added(n)
  added_count = added_count + n
end

-- An attempt failed for good or will be retried (counted once per attempt).
local function count_failed()
  failed_count = failed_count + 1
end

local function prune_activity(minute)
  local old = {}
  for _, field in ipairs(redis.call('HKEYS', KEYS[K_ACTIVITY])) do
    local of = tonumber(string.sub(field, 2))
    if not of or of < minute - ACTIVITY_MINUTES then
      old[#old + 1] = field
    end
  end
  if #old > 0 then
    redis.call('HDEL', KEYS[K_ACTIVITY], unpack(old))
  end
end

local function write_activity(completed)
  if added_count == 0 and completed == 0 and failed_count == 0 then
    return
  end
  local minute = math.floor((clock_read or now_ms()) / 60000)
  if minute ~= activity_minute then
    activity_minute, activity_minute_text = minute, int_text(minute)
  end
  local fresh = false
  for kind, n in pairs({ a = added_count, c = completed, f = failed_count }) do
    if n > 0 and redis.call('HINCRBY', KEYS[K_ACTIVITY], kind .. activity_minute_text, n) == n then
      fresh = true
    end
  end
  if fresh then
    prune_activity(minute)
  end
  added_count, failed_count = 0, 0
end

-- `cmd key args...` over a list of any length, CHUNK arguments per call (pairs stay together).
-- Returns the last call's answer.
local function bulk(cmd, key, args)
  local answer
  for i = 1, #args, CHUNK do
    answer = redis.call(cmd, key, unpack(args, i, math.min(i + CHUNK - 1, #args)))
  end
  return answer
end

-- HMGET over a list of fields of any length: the values in the same order, false when absent.
local function hmget(key, fields)
  if #fields == 0 then
    return {}
  end
  if #fields <= CHUNK then
    return redis.call('HMGET', key, unpack(fields))
  end
  local out = {}
  for i = 1, #fields, CHUNK do
    local values = redis.call('HMGET', key, unpack(fields, i, math.min(i + CHUNK - 1, #fields)))
    for j = 1, #values do
      out[i + j - 1] = values[j]
    end
  end
  return out
end

local function wake()
  redis.call('SPUBLISH', ARGV[1], ARGV[2])
end

-- An add that leases with tokens of its own (add.lua) holds back the wake-up of a ready list it
-- filled: the jobs it made ready may all be leased in the same call, and a wake-up for nothing
-- would cost every instance serving the queue (this one too: it hears its own) a lease round.
-- Set by that add; `ready_wake_held` then says whether a ready list was filled.
local hold_ready_wake, ready_wake_held = false, false

-- A ready list went from empty to one job or more: wakes the dispatchers, unless the call holds
-- that wake-up back (see above).
local function ready_wake()
  if hold_ready_wake then
    ready_wake_held = true
  else
    wake()
  end
end

-- Concurrency cap: the queue's `concurrency` setting is the most leases it may hold (HLEN of
-- active), whoever holds them; a lease round or refill leases no more than the room left. The
-- count is the active hash itself, so every way a lease ends frees its slot and none can leak.
-- A round that stopped at the cap sets the meta field 'capped'; the first call after it that
-- ends a lease without filling the cap again clears it and publishes a wake-up, so the
-- dispatchers that found the queue full lease again at once rather than at their safety poll.
-- Whether the running call ended a lease (drop_lease, complete), or stopped leasing at the cap.
local slot_freed, capped_now = false, false

-- How many more jobs the queue may have active, nil when it has no cap.
local function concurrency_room()
  load_settings()
  return CONCURRENCY and CONCURRENCY - redis.call('HLEN', KEYS[K_ACTIVE])
end

-- The leases of the running call may have fallen below the cap: wakes the dispatchers that
-- found the queue full (see above).
local function wake_capped()
  if not slot_freed or capped_now then
    return
  end
  load_settings()
  if CONCURRENCY and redis.call('HDEL', KEYS[K_META], 'capped') == 1 then
    wake()
  end
end

-- "token|started_ms|attempt[|flags]" -> token, started_ms, attempt, the attempt as written,
-- flags ('' when none). Tokens hold no '|'.
local function parse_lease(lease)
  local token, started, attempt, flags = string.match(lease, '^([^|]*)|(%d+)|(%d+)|?(%a*)$')
  return token, tonumber(started), tonumber(attempt), attempt, flags
end

-- A record as one table indexed by R_*, with the outcome of a completion (if any) applied.
local function unpack_record(raw, outcome)
  local rec, rest = cmsgpack.unpack(raw)
  for i = 1, FIELDS - HOT_FIELDS do
    rec[HOT_FIELDS + i] = rest[i]
  end
  if outcome then
    local finished, lease, result = cmsgpack.unpack(outcome)
    local _, started, attempt = parse_lease(lease)
    rec[R_STATE], rec[R_FINISHED], rec[R_STARTED] = S_COMPLETED, finished, started
    rec[R_ATTEMPTS], rec[R_RESULT] = attempt, result
  end
  return rec
end

local function pack_record(rec)
  return cmsgpack.pack({ rec[1], rec[2], rec[3], rec[4] }, { unpack(rec, HOT_FIELDS + 1, FIELDS) })
end

-- The record of a job that is not completed (waiting, delayed, active, pending, dead, ...).
local function load(ulid)
  local raw = redis.call('HGET', KEYS[K_JOBS], ulid)
  return raw and unpack_record(raw)
end

-- The record of a job in any state: completed jobs have their outcome applied.
local function load_any(ulid)
  local raw = redis.call('HGET', KEYS[K_JOBS], ulid)
  return raw and unpack_record(raw, redis.call('HGET', KEYS[K_OUTCOMES], ulid))
end

local function save(ulid, rec)
  redis.call('HSET', KEYS[K_JOBS], ulid, pack_record(rec))
end

-- Removes the lease of an active job; the caller moves the job on. A lease flagged 'k' holds
-- a slot of its concurrency key, given back here.
local function drop_lease(ulid)
  slot_freed = true
  local lease = redis.call('HGET', KEYS[K_ACTIVE], ulid)
  if lease and string.find(lease, '|%a*k%a*$') then
    LIMITS.release(ulid)
  end
  redis.call('HDEL', KEYS[K_ACTIVE], ulid)
  redis.call('ZREM', KEYS[K_DEADLINES], ulid)
end

-- Drops the oldest members of a retention set past its age window or count cap, with their
-- records. Returns how many were dropped. Bounded by BATCH per call.
local function trim(set_key, now, window_ms, cap)
  local dropped = redis.call('ZRANGEBYSCORE', set_key, '-inf', int_text(now - window_ms), 'LIMIT', '0', BATCH_TEXT)
  local over = redis.call('ZCARD', set_key) - #dropped - cap
  if over > 0 then
    local extra = redis.call('ZRANGE', set_key, int_text(#dropped), int_text(#dropped + math.min(over, BATCH) - 1))
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

-- Drops the oldest retained completed jobs past the count cap and, with `by_age`, past the age
-- window, with their records and outcomes; bounded by `most` (BATCH when not given) per call.
-- The list is in finish order, so only the age of its head is ever read. `length` is the
-- list's, when known.
local function trim_completed(now, by_age, length, most)
  load_settings()
  most = most or BATCH
  local key = KEYS[K_COMPLETED]
  local over = (length or redis.call('LLEN', key)) - COMPLETED_CAP
  local dropped = over > 0 and redis.call('LPOP', key, int_text(math.min(over, most))) or {}
  while by_age and #dropped < most do
    local head = redis.call('LINDEX', key, 0)
    if not head then
      break
    end
    local outcome = redis.call('HGET', KEYS[K_OUTCOMES], head)
    if outcome then
      local _, finished = cmsgpack.unpack_one(outcome)
      if finished > now - COMPLETED_MS then
        break
      end
    end
    redis.call('LPOP', key)
    dropped[#dropped + 1] = head
  end
  if #dropped > 0 then
    bulk('HDEL', KEYS[K_JOBS], dropped)
    bulk('HDEL', KEYS[K_OUTCOMES], dropped)
  end
end

local function trim_dead(now)
  load_settings()
  local evicted = trim(KEYS[K_DEAD], now, DEAD_MS, DEAD_CAP)
  if evicted > 0 then
    redis.call('HINCRBY', KEYS[K_META], 'dead_evicted', evicted)
  end
end

-- Puts a job in its ready list: at the head for a delivery taken back, at the tail otherwise.
-- Publishes a wake-up when the list was empty: a dispatcher with credit only sleeps after it has
-- seen every list empty, so this is the one moment a sleeping dispatcher can miss work.
-- A job with a rate or concurrency key waits among the keyed jobs instead (LIMITS.push).
local function make_ready(ulid, rec, now, at_head)
  rec[R_STATE] = S_WAITING
  rec[R_READY_AT] = now
  rec[R_RUN_AT] = false
  if rec[R_RATE_KEY] or rec[R_CONC_KEY] then
    LIMITS.push(ulid, rec, now, at_head)
    save(ulid, rec)
  else
    save(ulid, rec)
    local len = redis.call(at_head and 'LPUSH' or 'RPUSH', ready_key(rec[R_PRIORITY]), ulid)
    if len == 1 then
      ready_wake()
    end
  end
  emit(E_WAITING, ulid, rec[R_ATTEMPTS])
end

-- Whether the running call scheduled a delayed job (see make_delayed; lease.lua reads it).
local delayed_changed = false

-- Schedules a job for `at`; wakes dispatchers when it is now the earliest, so their timers move.
local function make_delayed(ulid, rec, at, state)
  delayed_changed = true
  rec[R_STATE] = state
  rec[R_RUN_AT] = at
  save(ulid, rec)
  redis.call('ZADD', KEYS[K_DELAYED], at, ulid)
  if redis.call('ZRANK', KEYS[K_DELAYED], ulid) == 0 then
    wake()
  end
  emit(state == S_RETRYING and E_RETRYING or E_DELAYED, ulid, rec[R_ATTEMPTS], rec[R_ERROR] or '', at)
end

------------------------------------------------------------------------------------------------
-- Sessions. A session's jobs wait in session_jobs in add order and are released to the queue
-- one at a time: a job is released only while no earlier released job of the session is still
-- waiting to start, and fewer than max_concurrency are running. So jobs start in add order, and
-- a session with a huge backlog holds at most one ready job, which keeps dispatch fair across
-- sessions. A released job that is delayed or retrying keeps its place, holding back the rest.

local function session_name(rec)
  local member = rec[R_SESSION]
  return member and string.match(member, '^([^/]+)/')
end

local function load_session(name)
  local raw = redis.call('HGET', KEYS[K_SESSIONS], name)
  if not raw then
    return nil
  end
  local meta, since = cmsgpack.unpack(raw)
  meta[M_SINCE] = since or 0
  return meta
end

local function save_session(name, meta, now)
  meta[M_UPDATED] = now
  -- The array holds the fields before M_SINCE; M_SINCE follows it.
  local since = meta[M_SINCE]
  meta[M_SINCE] = nil
  redis.call('HSET', KEYS[K_SESSIONS], name, cmsgpack.pack(meta, since))
  meta[M_SINCE] = since
  redis.call('ZADD', KEYS[K_SESSION_TTL], now + meta[M_TTL], name)
end

-- The session a job was added to: its name, and its meta while that session is alive (nil when
-- it was deleted, even if a session of the same name was created since).
local function job_session(rec)
  local member = rec[R_SESSION]
  if not member then
    return nil, nil
  end
  local name, seq = string.match(member, '^([^/]+)/(%d+)/')
  local meta = load_session(name)
  if meta and tonumber(seq) > meta[M_SINCE] then
    return name, meta
  end
  return name, nil
end

-- The lexical range of the members of a session's jobs (after `since`, as in M_SINCE: jobs
-- left over from an earlier session of the name are not its own).
local function session_range(name, since)
  return '[' .. name .. '/' .. string.format('%016d', since + 1), '[' .. name .. '/\255'
end

local function session_head(name, meta)
  local lo, hi = session_range(name, meta[M_SINCE])
  local head = redis.call('ZRANGEBYLEX', KEYS[K_SESSION_JOBS], lo, hi, 'LIMIT', 0, 1)
  return head[1]
end

-- Releases the session's next job when the session has room for it. Returns nothing.
local function session_pump(name, meta, now)
  if meta[M_QUEUED] > 0 or meta[M_STARTED] >= meta[M_MAXC] then
    return
  end
  local member = session_head(name, meta)
  if not member then
    return
  end
  redis.call('ZREM', KEYS[K_SESSION_JOBS], member)
  local ulid = string.match(member, '/([^/]+)$')
  local rec = load(ulid)
  if not rec then
    return
  end
  meta[M_QUEUED] = meta[M_QUEUED] + 1
  if rec[R_RUN_AT] and rec[R_RUN_AT] > now then
    make_delayed(ulid, rec, rec[R_RUN_AT], S_DELAYED)
  else
    make_ready(ulid, rec, now, false)
  end
end

-- Moves a session's counters when one of its jobs changes phase:
-- started (+1 started, -1 queued), stopped (-1 started; requeued: +1 queued) or
-- dropped (a queued job left: -1 queued). Returns false when the job's session is gone.
local function session_moved(rec, now, started, stopped, requeued, dropped)
  local name, meta = job_session(rec)
  if not name then
    return true
  end
  if not meta then
    return false
  end
  if started then
    meta[M_QUEUED] = math.max(0, meta[M_QUEUED] - 1)
    meta[M_STARTED] = meta[M_STARTED] + 1
  end
  if stopped then
    meta[M_STARTED] = math.max(0, meta[M_STARTED] - 1)
  end
  if requeued then
    meta[M_QUEUED] = meta[M_QUEUED] + 1
  end
  if dropped then
    meta[M_QUEUED] = math.max(0, meta[M_QUEUED] - 1)
  end
  session_pump(name, meta, now)
  save_session(name, meta, now)
  return true
end

-- A job ends cancelled: kept like a completed job, and its session (if any) moves on.
-- `phase` says where it was: 'active', 'queued' (released by its session, not started) or
-- 'pending' (still waiting inside its session, which counts nothing for it).
local function make_cancelled(ulid, rec, now, phase)
  rec[R_STATE] = S_CANCELLED
  rec[R_FINISHED] = now
  rec[R_CANCEL] = true
  save(ulid, rec)
  redis.call('ZADD', KEYS[K_CANCELLED], now, ulid)
  load_settings()
  trim(KEYS[K_CANCELLED], now, COMPLETED_MS, COMPLETED_CAP)
  emit(E_CANCELLED, ulid, rec[R_ATTEMPTS])
  if phase ~= 'pending' then
    session_moved(rec, now, false, phase == 'active', false, phase == 'queued')
  end
end

-- A job goes dead: its last attempt failed (or it was lost too often), counted as a failure.
local function make_dead(ulid, rec, now)
  count_failed()
  rec[R_STATE] = S_DEAD
  rec[R_FINISHED] = now
  save(ulid, rec)
  redis.call('ZADD', KEYS[K_DEAD], now, ulid)
  trim_dead(now)
  emit(E_DEAD, ulid, rec[R_ATTEMPTS], rec[R_ERROR] or '')
  session_moved(rec, now, false, true, false, false)
end

-- A job goes back to its queue without having finished: ready (or retrying), unless it was
-- cancelled meanwhile or its session is gone, in which case it ends cancelled.
local function back_to_queue(ulid, rec, now, at_head, retry_at)
  local name, meta = job_session(rec)
  if rec[R_CANCEL] or (name and not meta) then
    make_cancelled(ulid, rec, now, 'active')
    return S_CANCELLED
  end
  session_moved(rec, now, false, true, true, false)
  if retry_at and retry_at > now then
    make_delayed(ulid, rec, retry_at, S_RETRYING)
    return S_RETRYING
  end
  make_ready(ulid, rec, now, at_head)
  return S_WAITING
end

-- A lease taken back from a holder that is gone or forgot it (reap, reclaim, doctor): the job
-- returns to the head of its queue, not counted as failed or lost (the worker was not at fault).
-- A lease whose record is missing is dropped alone.
local function take_back(ulid, now)
  drop_lease(ulid)
  local rec = load(ulid)
  if rec then
    back_to_queue(ulid, rec, now, true)
  end
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
  if rec[R_CANCEL] then
    make_cancelled(ulid, rec, now, 'active')
    return S_CANCELLED, 0
  end
  if not retryable or attempt >= rec[R_MAX_ATTEMPTS] then
    make_dead(ulid, rec, now)
    return S_DEAD, 0
  end
  count_failed()
  local wait = retry_after
  if wait < 0 then
    wait = backoff_ms(rec, attempt, rand)
  end
  local state = back_to_queue(ulid, rec, now, false, now + wait)
  return state, state == S_RETRYING and now + wait or now
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

-- The earliest score of a zset, or nil when it is empty.
local function first_score(key)
  local first = redis.call('ZRANGE', key, '0', '0', 'WITHSCORES')
  return first[2] and tonumber(first[2])
end

-- Makes the delayed and retrying jobs that are due ready, at the tail of their priority, in
-- the order of their scores (at most BATCH; only when the earliest is due are the due ones
-- read). A record in its ready form already (ready_form_priority, below) is not rewritten:
-- the ids of a run of them go to their lists with one RPUSH each and one event entry. Returns
-- the earliest score left in the delayed set (nil when it is empty) and how many were made
-- ready.
local function promote_due(now)
  local first = first_score(KEYS[K_DELAYED])
  local promoted = 0
  if first and first <= now then
    -- The priority of a job whose packed record is in its ready form already (state WAITING, no
    -- session), read without unpacking the whole record; nil for any other. In the delayed set
    -- such a record is one a schedule's fire claimed ahead of its due time (schedules_lib.lua,
    -- add_from_template: never one with a session, a rate key or a concurrency key), written as it
    -- will be once ready, its ready time its score: making it ready only moves its id.
    local function ready_form_priority(raw)
      local at, hot = cmsgpack.unpack_one(raw, 0)
      if hot[R_SESSION] then
        return nil
      end
      -- The cold values' array header (fixarray, else array16), then R_STATE as a positive fixint.
      at = at + (string.byte(raw, at + 1) == 0xdc and 3 or 1)
      if string.byte(raw, at + 1) ~= S_WAITING then
        return nil
      end
      at = at + 1
      for _ = R_STATE + 1, R_PRIORITY - 1 do
        at = cmsgpack.unpack_one(raw, at)
      end
      local _, priority = cmsgpack.unpack_one(raw, at)
      return priority
    end
    local due = redis.call('ZRANGEBYSCORE', KEYS[K_DELAYED], '-inf', int_text(now), 'LIMIT', '0', BATCH_TEXT)
    redis.call('ZREM', KEYS[K_DELAYED], unpack(due))
    local raws = hmget(KEYS[K_JOBS], due)
    -- The run of ready-form jobs since the last rewritten one: ids by priority, and in order.
    local lists, run = {}, {}
    local function flush()
      for priority, ids in pairs(lists) do
        if bulk('RPUSH', ready_key(priority), ids) == #ids then
          ready_wake()
        end
      end
      emit_many(E_WAITING, run)
      lists, run = {}, {}
    end
    for i, ulid in ipairs(due) do
      local raw = raws[i]
      local priority = raw and ready_form_priority(raw)
      if priority then
        local ids = lists[priority]
        if not ids then
          ids = {}
          lists[priority] = ids
        end
        ids[#ids + 1] = ulid
        run[#run + 1] = ulid
      elseif raw then
        flush()
        make_ready(ulid, unpack_record(raw), now, false)
      end
    end
    flush()
    promoted = #due
    first = first_score(KEYS[K_DELAYED])
  end
  return first, promoted
end

-- Leases one ready job (never a delayed one) per token of tokens[first..], unless the queue is
-- paused, and no more than its concurrency cap and rate limit leave room for. Among the jobs
-- that may run, highest priority first: the ready lists (FIFO within a priority) and the heads
-- of the keyed jobs' groups that are within their limits (LIMITS.candidates: a group at its
-- rate or concurrency limit is skipped, whatever the priority of its jobs), ties going to the
-- older job. The i-th job leased gets the i-th of those tokens, its attempt is the record's
-- attempts + 1 and its deadline now + the record's timeout. A job popped that was cancelled
-- meanwhile, or whose session is gone, ends cancelled instead and takes no token.
-- The lease round (lease.lua) and the ack that leases its worker's next job (complete.lua)
-- both lease through here.
-- Returns the jobs, flat {ULID, record, ...}; the sessions of those in one, flat {i, state,
-- version, ...} (the session's state and version as delivered with job i); and the earliest
-- deadline set, nil when none. LIMITS.wake_at then says when a job held by a limit may go.
local function lease_ready(tokens, first, now)
  local jobs, sessions, first_deadline = {}, {}, nil
  if #tokens < first or redis.call('HEXISTS', KEYS[K_META], 'paused') == 1 then
    return jobs, sessions, first_deadline
  end
  -- The last token that may be used: fewer than given when the concurrency cap leaves less room.
  local last = #tokens
  local room = concurrency_room()
  if room and room < last - first + 1 then
    last = first + room - 1
    if room <= 0 then
      capped_now = true
      redis.call('HSET', KEYS[K_META], 'capped', '1')
      return jobs, sessions, first_deadline
    end
  end
  -- And fewer when the queue's rate limit does.
  local asked = last - first + 1
  local budget = LIMITS.queue_budget(now, asked)
  if budget <= 0 then
    return jobs, sessions, first_deadline
  end
  last = first + budget - 1
  local now_text = int_text(now)
  local next_token, leased = first, 0
  -- The leases and deadlines of this call, written with one call each after the loop.
  local leases, deadlines, active_ids, active_attempts = {}, {}, {}, {}
  -- Deadlines as text by timeout: the jobs of a queue mostly share one timeout.
  local deadline_text = {}
  local function take(ulid, raw, hot, flags)
    local token = tokens[next_token]
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
    elseif flags then
      lease = lease .. '|' .. flags
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
  -- The keyed jobs that may run, by priority; none for a queue without keyed jobs.
  local keyed = LIMITS.candidates(now, budget)
  -- The jobs popped from the ready lists while keyed ones compete with them, each {ULID,
  -- record, hot fields, list, priority}: those that lose to keyed jobs go back to the head.
  local plain = {}
  -- LMPOP 11 ready-lists... LEFT COUNT n: pops from the highest priority list holding jobs.
  local pop = { 'LMPOP', '11' }
  for i = K_READY, K_READY + 10 do
    pop[#pop + 1] = KEYS[i]
  end
  pop[#pop + 1] = 'LEFT'
  pop[#pop + 1] = 'COUNT'
  local wanted = last - next_token + 1
  while wanted > 0 do
    pop[#pop + 1] = int_text(wanted)
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
      elseif hot and #keyed == 0 then
        take(ulid, raw, hot)
        wanted = wanted - 1
      elseif hot then
        plain[#plain + 1] = { ulid, raw, hot, popped[1] }
        wanted = wanted - 1
      end
    end
  end
  if #keyed > 0 then
    -- Merged by priority (a list's name gives its jobs' priority), up to the budget.
    local u, k = 1, 1
    while next_token <= last and (u <= #plain or k <= #keyed) do
      local p, c = plain[u], keyed[k]
      local p_priority = p and LIMITS.list_priority(p[4])
      if c and (not p or c.priority > p_priority or (c.priority == p_priority and c.ulid < p[1])) then
        take(c.ulid, c.raw, c.hot, c.flags)
        k = k + 1
      else
        take(p[1], p[2], p[3])
        u = u + 1
      end
    end
    for i = #plain, u, -1 do
      redis.call('LPUSH', plain[i][4], plain[i][1])
    end
    LIMITS.charge(keyed, k - 1, now)
  end
  LIMITS.queue_charge(leased)
  LIMITS.settle(now, leased < budget)
  if room and leased >= room then
    -- The cap is full (with jobs perhaps left): the dispatchers wait for a slot.
    capped_now = true
    redis.call('HSET', KEYS[K_META], 'capped', '1')
  end
  bulk('HSET', KEYS[K_ACTIVE], leases)
  bulk('ZADD', KEYS[K_DEADLINES], deadlines)
  emit_many(E_ACTIVE, active_ids, active_attempts)
  return jobs, sessions, first_deadline
end

-- The refill of the acks of one call (or the leases an add makes for waiting streams): due
-- delayed jobs are made ready first, then one ready job
-- is leased per token of tokens[first..] (lease_ready). Returns the jobs and sessions as
-- lease_ready does, and the ms until the earliest delayed job left is due or a job a limit
-- holds back may go (-1 when none).
local function lease_refills(tokens, first, now)
  local first_delayed = promote_due(now)
  delayed_changed = false
  local jobs, sessions = lease_ready(tokens, first, now)
  if delayed_changed then
    first_delayed = first_score(KEYS[K_DELAYED])
  end
  -- A job a limit holds back wakes the dispatcher as a delayed one would.
  local held = LIMITS.wake_at
  if held and (not first_delayed or held < first_delayed) then
    first_delayed = held
  end
  return jobs, sessions, first_delayed and math.max(0, first_delayed - now) or -1
end

-- Runs one function of the library: sets the call's keys and arguments, runs its body, then
-- writes the events it emitted and the activity it counted.
local function run(body, keys, args)
  KEYS, ARGV = keys, args
  COMPLETED_MS, COMPLETED_CAP = setting(args[3]), setting(args[4])
  DEAD_MS, DEAD_CAP = setting(args[5]), setting(args[6])
  pending_events, open_entry, delayed_changed = {}, nil, false
  added_count, failed_count, clock_read = 0, 0, nil
  settings_loaded, CONCURRENCY, slot_freed, capped_now = false, nil, false, false
  hold_ready_wake, ready_wake_held = false, false
  LIMITS.reset()
  local out = body()
  LIMITS.finish()
  wake_capped()
  write_activity(flush_events())
  return out
end

-- Runs a global function (the instance and queue registries, the worker lists): not of a queue,
-- so its keys and arguments are its own, with no queue keys, leading arguments or events.
local function run_global(body, keys, args)
  KEYS, ARGV = keys, args
  return body()
end
