-- Rate limits and per-key concurrency: the rest of the head of the library, after lib.lua (it
-- fills the LIMITS table lib.lua declares; schedules_lib.lua follows).
--
-- A job may carry a rate key and a concurrency key (R_RATE_KEY, R_CONC_KEY). Ready, such a job
-- waits not in a ready list but among the keyed jobs, grouped by its pair of keys, its group
-- "<concurrency key>\1<rate key>" (either may be empty; keys hold no control characters):
--   keyed       zset, score 0, member "<group>\0<order>\0<ULID>": ZRANGEBYLEX on the group's
--               prefix gives its next jobs in order, in O(log N). <order> is 17 characters: the
--               priority as a letter ('a' for 5 down to 'k' for -5), then 'h' and a countdown
--               for a job given back to the head, or 't' and a count for one at the tail (the
--               record keeps it, R_KEY_ORDER, so the member can be named again).
--   key_due     zset, group -> when it may next lease: now, or the time its rate key's budget
--               allows the next job. Every group with jobs is here or parked, never both.
--   key_parked  zset, score 0, member the group: its concurrency key is at the cap. When a lease
--               of that key ends, the key's groups (found by the lexical prefix "<key>\1") go
--               back to key_due at once.
--   key_state   hash, 't<rate key>' -> the key's GCRA theoretical arrival time (ms, absent when
--               not in the future: the sweep drops those), 'a<concurrency key>' -> its leases
--               (absent at 0). Active leases of a job with a concurrency key carry the flag 'k'.
-- The queue's own rate limit keeps its TAT in meta ('rate_tat').
--
-- GCRA: a limit of `count` per `period` ms with `burst` spaces jobs by t = period / count; a job
-- may go at `now` when its key's TAT (at least now) is no more than (burst - 1) * t ahead, and
-- then moves it on by t. So at most `burst` go at once, then one per t: never 2x at a window's
-- edge. A lease round takes from the groups due by their time, so the group that waited
-- longest goes first and a group just served goes to the back (round robin); a group over its
-- rate is moved to the time it may go and not read again before, a group at its concurrency cap
-- is parked: a round reads only the groups that are due, so what a round skips is bounded by the
-- keys it skips, never by the jobs waiting.

-- One block: its locals do not count against the 200 of the library's chunk.
do
-- The order countdown of jobs given back to the head (15 digits: exact in a double).
local HEAD_BASE = 999999999999999
-- Most parked groups released at once (per key when a lease ends, or all on a settings change).
local UNPARK_BATCH = 1000
-- The limits, by their text in the settings (parsed once): {t = ms per job, burst = jobs}.
local RATES = {}

-- The limits of the running call (configure) and what it has seen and reserved.
local L = {}

-- "count period_ms burst" -> {t, burst}; nil for nil or text that does not read.
local function parse_rate(text)
  if not text then
    return nil
  end
  local rate = RATES[text]
  if rate == nil then
    local count, period, burst = string.match(text, '^(%d+) (%d+) (%d+)$')
    count, period, burst = tonumber(count), tonumber(period), tonumber(burst)
    rate = false
    if count and count > 0 and period and period > 0 and burst and burst > 0 then
      rate = { t = period / count, burst = burst }
    end
    RATES[text] = rate
  end
  return rate or nil
end

function LIMITS.reset()
  L = { tat = {}, active = {}, wake_at = nil }
  LIMITS.wake_at = nil
end

-- Turns: a group that becomes due (new, served, released from parking) is scored after every
-- group that became due before it, even within one millisecond, so groups take turns in the
-- order they came (round robin). The last turn given is kept in meta ('key_turn'); each is
-- 1/1000 ms after the one before, or now when that is later.
local function next_turn(now)
  if not L.turn then
    L.turn = tonumber(redis.call('HGET', KEYS[K_META], 'key_turn') or '0')
  end
  L.turn = math.max(now, L.turn + 0.001)
  L.turn_changed = true
  return L.turn
end

-- Writes what the call changed of the turns; run (lib.lua) calls it as the call ends.
function LIMITS.finish()
  if L.turn_changed then
    redis.call('HSET', KEYS[K_META], 'key_turn', string.format('%.3f', L.turn))
  end
end

-- The queue's limits as load_settings reads them: its rate, the rate per rate key, the cap per
-- concurrency key (each nil when unset).
function LIMITS.configure(rate, key_rate, key_concurrency)
  L.queue_rate = parse_rate(rate)
  L.key_rate = parse_rate(key_rate)
  L.key_cap = key_concurrency and tonumber(key_concurrency)
end

-- The earliest time `at` (ms) a held job may go, for the dispatcher's timer.
local function wake_no_later(at)
  at = math.ceil(at)
  if not LIMITS.wake_at or at < LIMITS.wake_at then
    LIMITS.wake_at = at
  end
end

-- How many of `want` jobs a rate lets go at `now` from TAT `tat` (nil: no debt), and the TAT
-- they then start from.
local function allowance(rate, tat, now, want)
  local base = math.max(tat or now, now)
  local n = math.floor((now + rate.burst * rate.t - base) / rate.t + 1e-9)
  return math.max(0, math.min(n, want)), base
end

-- When the next job may go once the TAT is `tat`.
local function next_allowed(rate, tat)
  return tat + rate.t - rate.burst * rate.t
end

local function tat_text(tat)
  return string.format('%.3f', tat)
end

-- The most jobs the queue's rate lets this call lease of `asked`; all of them without a rate.
function LIMITS.queue_budget(now, asked)
  load_settings()
  local rate = L.queue_rate
  if not rate then
    return asked
  end
  local tat = tonumber(redis.call('HGET', KEYS[K_META], 'rate_tat') or '')
  local n, base = allowance(rate, tat, now, asked)
  L.queue_base, L.queue_asked, L.queue_budget = base, asked, n
  if n == 0 then
    wake_no_later(next_allowed(rate, base))
  end
  return n
end

-- Charges the queue's rate with the `leased` jobs of the call; when the rate held some back,
-- the dispatcher wakes when the next may go.
function LIMITS.queue_charge(leased)
  local rate = L.queue_rate
  if not rate or not L.queue_base then
    return
  end
  if leased > 0 then
    local tat = L.queue_base + leased * rate.t
    redis.call('HSET', KEYS[K_META], 'rate_tat', tat_text(tat))
    if leased >= L.queue_budget and L.queue_budget < L.queue_asked then
      wake_no_later(next_allowed(rate, tat))
    end
  end
end

-- Ready lists' names -> their priority, made once per call when keyed jobs compete with them.
function LIMITS.list_priority(list)
  if not L.priorities then
    L.priorities = {}
    for i = 0, 10 do
      L.priorities[KEYS[K_READY + i]] = 5 - i
    end
  end
  return L.priorities[list]
end

local function group_of(rec)
  return (rec[R_CONC_KEY] or '') .. '\1' .. (rec[R_RATE_KEY] or '')
end

-- A group's concurrency key and rate key ('' for none).
local function split_group(group)
  local at = string.find(group, '\1', 1, true)
  return string.sub(group, 1, at - 1), string.sub(group, at + 1)
end

local function group_range(group)
  return '[' .. group .. '\0', '[' .. group .. '\0\255'
end

local function has_jobs(group)
  local lo, hi = group_range(group)
  return #redis.call('ZRANGEBYLEX', KEYS[K_KEYED], lo, hi, 'LIMIT', '0', '1') > 0
end

local function member_of(ulid, rec)
  return group_of(rec) .. '\0' .. rec[R_KEY_ORDER] .. '\0' .. ulid
end

-- Makes a keyed job ready: its member among the keyed jobs (its order written into `rec`,
-- which the caller saves), and its group due now unless it already is due or parked. Publishes
-- a wake-up when the group becomes due.
function LIMITS.push(ulid, rec, now, at_head)
  local n = redis.call('HINCRBY', KEYS[K_META], 'key_seq', 1)
  local place
  if at_head then
    place = 'h' .. string.format('%015d', HEAD_BASE - n)
  else
    place = 't' .. string.format('%015d', n)
  end
  rec[R_KEY_ORDER] = string.char(102 - rec[R_PRIORITY]) .. place
  local group = group_of(rec)
  redis.call('ZADD', KEYS[K_KEYED], 0, group .. '\0' .. rec[R_KEY_ORDER] .. '\0' .. ulid)
  if redis.call('ZSCORE', KEYS[K_KEY_PARKED], group) then
    return
  end
  if not redis.call('ZSCORE', KEYS[K_KEY_DUE], group) then
    redis.call('ZADD', KEYS[K_KEY_DUE], next_turn(now), group)
    wake()
  end
end

-- Takes a ready keyed job out of the keyed jobs (cancel, delete, purge); its group goes when it
-- has no job left. Returns whether it was there.
function LIMITS.remove(ulid, rec)
  if not rec[R_KEY_ORDER] or redis.call('ZREM', KEYS[K_KEYED], member_of(ulid, rec)) == 0 then
    return false
  end
  local group = group_of(rec)
  if not has_jobs(group) then
    redis.call('ZREM', KEYS[K_KEY_DUE], group)
    redis.call('ZREM', KEYS[K_KEY_PARKED], group)
  end
  return true
end

-- Whether a job is ready among the keyed jobs (the doctor's check that a record is placed).
function LIMITS.is_keyed(ulid, rec)
  return rec[R_KEY_ORDER] and redis.call('ZSCORE', KEYS[K_KEYED], member_of(ulid, rec)) ~= false or false
end

-- Sends the parked groups of concurrency key `conc` back to key_due (all of them when nil, up
-- to UNPARK_BATCH), waking the dispatchers when any went.
function LIMITS.unpark(conc, now)
  local groups
  if conc then
    groups = redis.call('ZRANGEBYLEX', KEYS[K_KEY_PARKED], '[' .. conc .. '\1', '[' .. conc .. '\1\255', 'LIMIT', '0',
      UNPARK_BATCH)
  else
    groups = redis.call('ZRANGE', KEYS[K_KEY_PARKED], '0', UNPARK_BATCH - 1)
  end
  if #groups == 0 then
    return
  end
  redis.call('ZREM', KEYS[K_KEY_PARKED], unpack(groups))
  local due = {}
  for _, group in ipairs(groups) do
    due[#due + 1] = string.format('%.3f', next_turn(now))
    due[#due + 1] = group
  end
  bulk('ZADD', KEYS[K_KEY_DUE], due)
  wake()
end

-- A lease flagged 'k' ended: its concurrency key's slot is free, and the key's parked groups
-- may lease again. `rec` is the job's record when the caller has it.
function LIMITS.release(ulid, rec)
  rec = rec or load(ulid)
  local conc = rec and rec[R_CONC_KEY]
  if not conc then
    return
  end
  local field = 'a' .. conc
  if redis.call('HINCRBY', KEYS[K_KEY_STATE], field, -1) <= 0 then
    redis.call('HDEL', KEYS[K_KEY_STATE], field)
  end
  L.active[conc] = nil
  LIMITS.unpark(conc, clock_read or now_ms())
end

-- The leases a concurrency key holds, as this call last read or charged them.
local function key_active(conc)
  local n = L.active[conc]
  if not n then
    n = tonumber(redis.call('HGET', KEYS[K_KEY_STATE], 'a' .. conc) or '0')
    L.active[conc] = n
  end
  return n
end

-- A rate key's TAT as this call last read or charged it (nil: no debt).
local function key_tat(rate)
  local tat = L.tat[rate]
  if tat == nil then
    tat = tonumber(redis.call('HGET', KEYS[K_KEY_STATE], 't' .. rate) or '') or false
    L.tat[rate] = tat
  end
  return tat or nil
end

-- How many more jobs of group's keys may go now: nil for no limit; and when the rate key holds
-- the group back, the time it may go. `reserved` counts the candidates already taken of each
-- key in this call.
local function group_room(conc, rate, now, reserved)
  local room
  if L.key_cap and conc ~= '' then
    room = L.key_cap - key_active(conc) - (reserved['a' .. conc] or 0)
  end
  if L.key_rate and rate ~= '' then
    local k = L.key_rate
    local tat = key_tat(rate)
    local taken = reserved['t' .. rate] or 0
    local base = math.max(tat or now, now) + taken * k.t
    local n = allowance(k, base, now, math.huge)
    if n <= 0 then
      return 0, next_allowed(k, base)
    end
    room = room and math.min(room, n) or n
  end
  return room
end

local function park(group)
  redis.call('ZREM', KEYS[K_KEY_DUE], group)
  redis.call('ZADD', KEYS[K_KEY_PARKED], 0, group)
end

-- The keyed jobs that may run now, at most `want`, sorted by priority (then as read): the next
-- jobs of the groups due, the longest-waiting group first, each group at most its share of
-- `want` and what its keys' limits let through. A group at its concurrency cap is parked, one
-- over its rate moved to the time it may go. Each entry: {ulid, raw, hot, priority, group,
-- conc, rate, member, flags}. Nothing is charged until LIMITS.charge.
function LIMITS.candidates(now, want)
  local out = {}
  local due = redis.call('ZRANGE', KEYS[K_KEY_DUE], '0', int_text(want - 1), 'WITHSCORES')
  if #due == 0 then
    return out
  end
  L.keyed_seen = true
  local groups = {}
  -- Due: scored within the current millisecond or before (turns are fractions of a ms).
  for i = 1, #due, 2 do
    if tonumber(due[i + 1]) >= now + 1 then
      break
    end
    groups[#groups + 1] = due[i]
  end
  if #groups == 0 then
    return out
  end
  load_settings()
  local quota = math.max(1, math.ceil(want / #groups))
  local reserved = {}
  for _, group in ipairs(groups) do
    local left = want - #out
    if left <= 0 then
      break
    end
    local conc, rate = split_group(group)
    local room, next_at = group_room(conc, rate, now, reserved)
    if room and room <= 0 then
      if next_at then
        redis.call('ZADD', KEYS[K_KEY_DUE], string.format('%.3f', next_at), group)
        wake_no_later(next_at)
      else
        park(group)
      end
    else
      local lo, hi = group_range(group)
      local n = math.min(quota, left, room or left)
      local members = redis.call('ZRANGEBYLEX', KEYS[K_KEYED], lo, hi, 'LIMIT', '0', int_text(n))
      if #members == 0 then
        redis.call('ZREM', KEYS[K_KEY_DUE], group)
      end
      for _, member in ipairs(members) do
        out[#out + 1] = {
          ulid = string.sub(member, -26),
          priority = 102 - string.byte(member, -44),
          group = group,
          conc = conc,
          rate = rate,
          member = member,
          flags = conc ~= '' and 'k' or nil,
          seq = #out + 1,
        }
      end
      reserved['a' .. conc] = (reserved['a' .. conc] or 0) + #members
      reserved['t' .. rate] = (reserved['t' .. rate] or 0) + #members
    end
  end
  -- Their records: a member whose record is gone is dropped (nothing runs it).
  local ids = {}
  for i, c in ipairs(out) do
    ids[i] = c.ulid
  end
  local raws = hmget(KEYS[K_JOBS], ids)
  local kept = {}
  for i, c in ipairs(out) do
    if raws[i] then
      local _, hot = cmsgpack.unpack_one(raws[i])
      c.raw, c.hot = raws[i], hot
      kept[#kept + 1] = c
    else
      redis.call('ZREM', KEYS[K_KEYED], c.member)
    end
  end
  table.sort(kept, function(a, b)
    if a.priority ~= b.priority then
      return a.priority > b.priority
    end
    return a.seq < b.seq
  end)
  return kept
end

-- The first `n` candidates were leased: their members leave the keyed jobs, their rate keys'
-- TATs move on, their concurrency keys count the leases, and each group served goes to the back
-- of key_due (at the time its rate lets its next job go), is parked (its key at the cap), or
-- goes (no job left).
function LIMITS.charge(candidates, n, now)
  if n <= 0 then
    return
  end
  local members, served, by_rate, by_conc = {}, {}, {}, {}
  for i = 1, n do
    local c = candidates[i]
    members[i] = c.member
    if not served[c.group] then
      served[c.group] = c
      served[#served + 1] = c.group
    end
    by_rate[c.rate] = (by_rate[c.rate] or 0) + 1
    by_conc[c.conc] = (by_conc[c.conc] or 0) + 1
  end
  bulk('ZREM', KEYS[K_KEYED], members)
  local k = L.key_rate
  for rate, count in pairs(by_rate) do
    if k and rate ~= '' then
      local tat = math.max(key_tat(rate) or now, now) + count * k.t
      L.tat[rate] = tat
      redis.call('HSET', KEYS[K_KEY_STATE], 't' .. rate, tat_text(tat))
    end
  end
  for conc, count in pairs(by_conc) do
    if conc ~= '' then
      L.active[conc] = redis.call('HINCRBY', KEYS[K_KEY_STATE], 'a' .. conc, count)
    end
  end
  for _, group in ipairs(served) do
    local c = served[group]
    if not has_jobs(group) then
      redis.call('ZREM', KEYS[K_KEY_DUE], group)
    elseif L.key_cap and c.conc ~= '' and L.active[c.conc] >= L.key_cap then
      park(group)
    else
      local at = k and c.rate ~= '' and next_allowed(k, L.tat[c.rate])
      if not at or at <= now then
        at = next_turn(now)
      end
      redis.call('ZADD', KEYS[K_KEY_DUE], string.format('%.3f', at), group)
    end
  end
end

-- After a lease round or refill that read the keyed jobs: the dispatcher wakes when the next
-- group is due, or at once when groups are due still and the call leased less than it could
-- (`short`: it read only so many groups).
function LIMITS.settle(now, short)
  if not L.keyed_seen then
    return
  end
  local first = redis.call('ZRANGE', KEYS[K_KEY_DUE], '0', '0', 'WITHSCORES')
  local at = first[2] and tonumber(first[2])
  if at and (at >= now + 1 or short) then
    wake_no_later(math.max(at, now))
  end
end

-- A worker heard "rate limited, retry after ...": no job of `rec`'s rate key starts before
-- `held_until` (its TAT moved so the key's budget opens then, and its group, if waiting, is not read
-- before). Nothing without a rate key, or without a key_rate setting to hold it by.
function LIMITS.hold_key(rec, held_until)
  load_settings()
  local rate, k = rec[R_RATE_KEY], L.key_rate
  if not rate or not k then
    return
  end
  local tat = math.max(key_tat(rate) or 0, held_until + (k.burst - 1) * k.t)
  L.tat[rate] = tat
  redis.call('HSET', KEYS[K_KEY_STATE], 't' .. rate, tat_text(tat))
  local group = group_of(rec)
  local score = redis.call('ZSCORE', KEYS[K_KEY_DUE], group)
  if score and tonumber(score) < held_until then
    redis.call('ZADD', KEYS[K_KEY_DUE], string.format('%.3f', held_until), group)
  end
end

-- Read-only, for stats: {jobs held by a rate, jobs held by their concurrency key's cap, keys
-- with waiting jobs}. All waiting jobs are held by the queue's rate while it lets none go (given
-- as -1: the caller knows the waiting count); otherwise the jobs of the groups a key's rate
-- holds (scored after now) and of the parked groups, each read for at most UNPARK_BATCH groups.
function LIMITS.held(now)
  load_settings()
  local rate = L.queue_rate
  local by_rate = 0
  if rate then
    local tat = tonumber(redis.call('HGET', KEYS[K_META], 'rate_tat') or '')
    if allowance(rate, tat, now, 1) == 0 then
      by_rate = -1
    end
  end
  local function jobs_of(groups)
    local n = 0
    for _, group in ipairs(groups) do
      local lo, hi = group_range(group)
      n = n + redis.call('ZLEXCOUNT', KEYS[K_KEYED], lo, hi)
    end
    return n
  end
  if by_rate == 0 then
    by_rate = jobs_of(redis.call('ZRANGEBYSCORE', KEYS[K_KEY_DUE], now + 1, '+inf', 'LIMIT', '0', UNPARK_BATCH))
  end
  local by_cap = jobs_of(redis.call('ZRANGE', KEYS[K_KEY_PARKED], '0', UNPARK_BATCH - 1))
  return by_rate, by_cap, redis.call('ZCARD', KEYS[K_KEY_DUE]) + redis.call('ZCARD', KEYS[K_KEY_PARKED])
end

-- One page of key_state swept (with the dispatcher's upkeep): TATs no longer ahead of now are
-- dropped, as if absent. The cursor stays in meta ('key_sweep').
function LIMITS.sweep(now)
  local cursor = redis.call('HGET', KEYS[K_META], 'key_sweep') or '0'
  local page = redis.call('HSCAN', KEYS[K_KEY_STATE], cursor, 'COUNT', BATCH_TEXT)
  local stale = {}
  for i = 1, #page[2], 2 do
    local field, value = page[2][i], page[2][i + 1]
    if string.byte(field, 1) == 116 and (tonumber(value) or 0) <= now then
      stale[#stale + 1] = field
    end
  end
  if #stale > 0 then
    redis.call('HDEL', KEYS[K_KEY_STATE], unpack(stale))
  end
  if page[1] == '0' then
    redis.call('HDEL', KEYS[K_META], 'key_sweep')
  else
    redis.call('HSET', KEYS[K_META], 'key_sweep', page[1])
  end
end
end
