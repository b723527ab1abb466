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
--
-- Batches: while a rate holds jobs back, the next round for it comes not when one more job may
-- go but when a batch may (the rate's `batch`: what it lets through in BATCH_MS, or half its
-- burst when that is more; at least 1), and leases the batch in one call. Every call costs
-- Redis a fixed part (waking up, its keys and arguments, the reads every round makes, the
-- events it writes, and the ack that follows) that a job leased alone pays in full: at 150
-- jobs/s, one call per job cost 35 times the Redis CPU per job of a queue without limits; and
-- every visit of a group costs a read of its jobs, shared by the batch. A job a rate holds back
-- waits at most BATCH_MS or half the burst's time longer than the rate itself makes it wait;
-- the rate over time is the same, and no more than the burst ever goes at once. At least
-- SLACK_MS of the burst (and with a batch of half the burst, the other half) is left out of the
-- batch, so that a round that comes that much late finds the time it is late in the budget
-- rather than losing it (GCRA forgets the budget of a spell longer than the burst). A rate that
-- lets at most one job through in BATCH_MS and has a burst under 4, or whose burst holds no
-- more than SLACK_MS and one job, is not batched: one job per interval.

-- One block: its locals do not count against the 200 of the library's chunk.
do
-- The longest a rate's batch gathers for, and the part of its burst kept for a round that comes
-- late (see "Batches" above).
local BATCH_MS, SLACK_MS = 100, 25
-- The order countdown of jobs given back to the head (15 digits: exact in a double).
local HEAD_BASE = 999999999999999
-- Most parked groups released at once (per key when a lease ends, or all on a settings change).
local UNPARK_BATCH = 1000
-- The limits, by their text in the settings (parsed once): {t = ms per job, burst = jobs}.
local RATES = {}

-- The limits of the running call (configure) and what it has seen and reserved.
local L = {}

-- A time in ms as text with three decimals, as '%.3f' writes it but without floating-point
-- formatting (printf's slowest path; a round writes a score per group it serves and a TAT per
-- rate key): the thousandths of a ms are a whole number, exact in a double for any epoch time.
-- The texts of the thousandths (at most 1,000) and of the last whole ms written are kept, so a
-- round formats little: its times fall in few milliseconds.
local THOUSANDTHS = {}
local last_whole, last_whole_text
local function ms_text(at)
  local thousandths = math.floor(at * 1000 + 0.5)
  local whole = math.floor(thousandths / 1000)
  local part = thousandths - whole * 1000
  local part_text = THOUSANDTHS[part]
  if not part_text then
    part_text = string.format('.%03d', part)
    THOUSANDTHS[part] = part_text
  end
  if whole ~= last_whole then
    last_whole, last_whole_text = whole, int_text(whole)
  end
  return last_whole_text .. part_text
end

-- "count period_ms burst" -> {t, burst, batch}; nil for nil or text that does not read.
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
      local t = period / count
      local gather = math.max(math.floor(BATCH_MS / t + 1e-9), math.floor(burst / 2))
      local batch = math.min(gather, burst - math.ceil(SLACK_MS / t - 1e-9))
      rate = { t = t, burst = burst, batch = math.max(1, batch) }
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
  L.turn_changed, L.first_due = true, nil
  return L.turn
end

-- Writes what the call changed of the turns; run (lib.lua) calls it as the call ends.
function LIMITS.finish()
  if L.turn_changed then
    redis.call('HSET', KEYS[K_META], 'key_turn', ms_text(L.turn))
  end
end

-- The queue's limits as load_settings reads them: its rate, the rate per rate key, the cap per
-- concurrency key (each nil when unset).
function LIMITS.configure(rate, key_rate, key_concurrency)
  L.queue_rate = parse_rate(rate)
  L.key_rate = parse_rate(key_rate)
  L.key_cap = key_concurrency and tonumber(key_concurrency)
end

-- The earliest time `at` (ms) a job a rate holds back may go, for the dispatcher's timer.
local function wake_no_later(at)
  L.rate_held = true
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

-- When `n` more jobs may go once the TAT is `tat`.
local function allowed_at(rate, tat, n)
  return tat + n * rate.t - rate.burst * rate.t
end

-- When the rate's next batch may go once the TAT is `tat`: its batch, or `most` when fewer
-- may be leased then (the credit left).
local function batch_at(rate, tat, most)
  return allowed_at(rate, tat, math.max(1, math.min(rate.batch, most or rate.batch)))
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
    wake_no_later(batch_at(rate, base, asked))
  end
  return n
end

-- Charges the queue's rate with the `leased` jobs of the call; when the rate held some back,
-- the dispatcher wakes when the next batch may go (at most the credit the call had left).
function LIMITS.queue_charge(leased)
  local rate = L.queue_rate
  if not rate or not L.queue_base then
    return
  end
  if leased > 0 then
    local tat = L.queue_base + leased * rate.t
    redis.call('HSET', KEYS[K_META], 'rate_tat', ms_text(tat))
    if leased >= L.queue_budget and L.queue_budget < L.queue_asked then
      wake_no_later(batch_at(rate, tat, L.queue_asked - leased))
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

-- What a lease round needs of a group's name, made once, not once per round: {concurrency key,
-- rate key, the bounds of its members among the keyed jobs (group_range)}. Derived from the name
-- alone, so any queue's groups share the table; it holds at most GROUP_CACHE names, and starts
-- afresh when full.
local GROUP_CACHE = 4096
local GROUPS, group_names = {}, 0
local function group_parts(group)
  local parts = GROUPS[group]
  if not parts then
    if group_names >= GROUP_CACHE then
      GROUPS, group_names = {}, 0
    end
    local conc, rate = split_group(group)
    local lo, hi = group_range(group)
    parts = { conc, rate, lo, hi }
    GROUPS[group] = parts
    group_names = group_names + 1
  end
  return parts
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
    due[#due + 1] = ms_text(next_turn(now))
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

-- A rate key's TAT as this call last read or charged it (nil: no debt).
local function key_tat(rate)
  local tat = L.tat[rate]
  if tat == nil then
    tat = tonumber(redis.call('HGET', KEYS[K_KEY_STATE], 't' .. rate) or '') or false
    L.tat[rate] = tat
  end
  return tat or nil
end

-- Reads, with one HMGET, the state of the keys of `groups` (each {conc, rate}) that the limits
-- set count and this call has not read yet: the leases of each concurrency key under a cap, the
-- TAT of each rate key under a key_rate.
local function read_key_state(groups)
  local fields, seen = {}, {}
  local function ask(field)
    if not seen[field] then
      seen[field] = true
      fields[#fields + 1] = field
    end
  end
  for _, g in ipairs(groups) do
    if L.key_cap and g.conc ~= '' and not L.active[g.conc] then
      ask('a' .. g.conc)
    end
    if L.key_rate and g.rate ~= '' and L.tat[g.rate] == nil then
      ask('t' .. g.rate)
    end
  end
  local values = hmget(KEYS[K_KEY_STATE], fields)
  for i, field in ipairs(fields) do
    local key = string.sub(field, 2)
    if string.byte(field, 1) == 97 then
      L.active[key] = tonumber(values[i] or '0')
    else
      L.tat[key] = tonumber(values[i] or '') or false
    end
  end
end

-- How many more jobs of group `g`'s keys may go now: nil for no limit; and when the rate key
-- holds the group back, the time its next batch may go. `taken_a` and `taken_t` count the
-- candidates already taken of each concurrency key and rate key in this call. The keys' state
-- is read (read_key_state).
local function group_room(g, now, taken_a, taken_t)
  local room
  if L.key_cap and g.conc ~= '' then
    room = L.key_cap - L.active[g.conc] - (taken_a[g.conc] or 0)
  end
  if L.key_rate and g.rate ~= '' then
    local k = L.key_rate
    local base = math.max(L.tat[g.rate] or now, now) + (taken_t[g.rate] or 0) * k.t
    local n = allowance(k, base, now, math.huge)
    if n <= 0 then
      return 0, batch_at(k, base)
    end
    room = room and math.min(room, n) or n
  end
  return room
end

-- The group texts and scores of a ZADD, one pair per group moved, written with one command.
local function zadd_groups(key, pairs_)
  if #pairs_ > 0 then
    bulk('ZADD', key, pairs_)
  end
end

-- The keyed jobs that may run now, at most `want`, sorted by priority (then as read): the next
-- jobs of the groups due, the longest-waiting group first, each group at most its share of
-- `want` and what its keys' limits let through. A group at its concurrency cap is parked, one
-- over its rate moved to the time its next batch may go. Each entry: {ulid, raw, hot, priority,
-- g (its group: {name, conc, rate, read, more})}, flags, member, seq}; a group's `read` counts
-- its members read, `more` whether it has jobs beyond them. Nothing is charged until
-- LIMITS.charge.
function LIMITS.candidates(now, want)
  local out = {}
  L.first_due = nil
  -- Due: scored within the current millisecond or before (turns are fractions of a ms). The
  -- first group's score says whether any is; only then are the due ones read, without their
  -- scores (a score costs Redis a double's formatting and Lua its parsing, and most calls, an
  -- ack's refill just after a round, find none due).
  local first = redis.call('ZRANGE', KEYS[K_KEY_DUE], '0', '0', 'WITHSCORES')
  if #first == 0 then
    return out
  end
  L.keyed_seen = true
  local first_at = tonumber(first[2])
  if first_at >= now + 1 then
    L.first_due = first_at
    return out
  end
  local due = first
  if want > 1 then
    due = redis.call('ZRANGE', KEYS[K_KEY_DUE], '-inf', '(' .. int_text(now + 1), 'BYSCORE', 'LIMIT', '0',
      int_text(want))
  else
    due[2] = nil
  end
  local groups = {}
  for i, name in ipairs(due) do
    local parts = group_parts(name)
    groups[i] = { name = name, conc = parts[1], rate = parts[2], parts = parts }
  end
  load_settings()
  read_key_state(groups)
  local quota = math.max(1, math.ceil(want / #groups))
  local taken_a, taken_t = {}, {}
  local later, parked, gone = {}, {}, {}
  for _, g in ipairs(groups) do
    local left = want - #out
    if left <= 0 then
      break
    end
    local room, next_at = group_room(g, now, taken_a, taken_t)
    if room and room <= 0 then
      if next_at then
        later[#later + 1] = ms_text(next_at)
        later[#later + 1] = g.name
        wake_no_later(next_at)
      else
        parked[#parked + 1] = g.name
      end
    else
      local n = math.min(quota, left, room or left)
      -- One member more than taken says whether the group has jobs left (LIMITS.charge).
      local members = redis.call('ZRANGEBYLEX', KEYS[K_KEYED], g.parts[3], g.parts[4], 'LIMIT', '0', int_text(n + 1))
      if #members == 0 then
        gone[#gone + 1] = g.name
      end
      g.more = #members > n
      g.read = math.min(#members, n)
      local flags = g.conc ~= '' and 'k' or nil
      for i = 1, g.read do
        local member = members[i]
        out[#out + 1] = {
          ulid = string.sub(member, -26),
          priority = 102 - string.byte(member, -44),
          g = g,
          member = member,
          flags = flags,
          seq = #out + 1,
        }
      end
      taken_a[g.conc] = (taken_a[g.conc] or 0) + g.read
      taken_t[g.rate] = (taken_t[g.rate] or 0) + g.read
    end
  end
  zadd_groups(KEYS[K_KEY_DUE], later)
  if #parked > 0 then
    bulk('ZREM', KEYS[K_KEY_DUE], parked)
    local scored = {}
    for _, name in ipairs(parked) do
      scored[#scored + 1] = '0'
      scored[#scored + 1] = name
    end
    zadd_groups(KEYS[K_KEY_PARKED], scored)
  end
  if #gone > 0 then
    bulk('ZREM', KEYS[K_KEY_DUE], gone)
  end
  -- Their records: a member whose record is gone is dropped (nothing runs it).
  local ids = {}
  for i, c in ipairs(out) do
    ids[i] = c.ulid
  end
  local raws = hmget(KEYS[K_JOBS], ids)
  local kept, dropped = {}, {}
  for i, c in ipairs(out) do
    if raws[i] then
      local _, hot = cmsgpack.unpack_one(raws[i])
      c.raw, c.hot = raws[i], hot
      kept[#kept + 1] = c
    else
      dropped[#dropped + 1] = c.member
      c.g.read = c.g.read - 1
    end
  end
  if #dropped > 0 then
    bulk('ZREM', KEYS[K_KEYED], dropped)
  end
  -- Most rounds' candidates share one priority, or come in its order already: then no sort
  -- (its comparator is a Lua call per comparison).
  for i = 2, #kept do
    if kept[i].priority > kept[i - 1].priority then
      table.sort(kept, function(a, b)
        if a.priority ~= b.priority then
          return a.priority > b.priority
        end
        return a.seq < b.seq
      end)
      break
    end
  end
  return kept
end

-- The first `n` candidates were leased: their members leave the keyed jobs, their rate keys'
-- TATs move on, their concurrency keys count the leases, and each group served goes to the back
-- of key_due (at the time its rate lets its next batch go), is parked (its key at the cap), or
-- goes (no job left). One command per structure, but for the concurrency keys' counts.
function LIMITS.charge(candidates, n, now)
  if n <= 0 then
    return
  end
  local members, served, by_rate, by_conc = {}, {}, {}, {}
  for i = 1, n do
    local c = candidates[i]
    local g = c.g
    members[i] = c.member
    if not g.leased then
      g.leased = 0
      served[#served + 1] = g
    end
    g.leased = g.leased + 1
    by_rate[g.rate] = (by_rate[g.rate] or 0) + 1
    by_conc[g.conc] = (by_conc[g.conc] or 0) + 1
  end
  bulk('ZREM', KEYS[K_KEYED], members)
  local k = L.key_rate
  local tats = {}
  for rate, count in pairs(by_rate) do
    if k and rate ~= '' then
      local tat = math.max(key_tat(rate) or now, now) + count * k.t
      L.tat[rate] = tat
      tats[#tats + 1] = 't' .. rate
      tats[#tats + 1] = ms_text(tat)
    end
  end
  if #tats > 0 then
    bulk('HSET', KEYS[K_KEY_STATE], tats)
  end
  for conc, count in pairs(by_conc) do
    if conc ~= '' then
      L.active[conc] = redis.call('HINCRBY', KEYS[K_KEY_STATE], 'a' .. conc, count)
    end
  end
  local due, parked, gone = {}, {}, {}
  for _, g in ipairs(served) do
    if not g.more and g.leased >= g.read then
      gone[#gone + 1] = g.name
    elseif L.key_cap and g.conc ~= '' and L.active[g.conc] >= L.key_cap then
      parked[#parked + 1] = '0'
      parked[#parked + 1] = g.name
      gone[#gone + 1] = g.name
    else
      local at = k and g.rate ~= '' and batch_at(k, L.tat[g.rate])
      if not at or at <= now then
        at = next_turn(now)
      end
      due[#due + 1] = ms_text(at)
      due[#due + 1] = g.name
    end
  end
  if #gone > 0 then
    bulk('ZREM', KEYS[K_KEY_DUE], gone)
  end
  zadd_groups(KEYS[K_KEY_PARKED], parked)
  zadd_groups(KEYS[K_KEY_DUE], due)
end

-- After a lease round or refill that read the keyed jobs: the dispatcher wakes when the next
-- group is due, or at once when groups are due still and the call leased less than it could
-- (`short`: it read only so many groups).
function LIMITS.settle(now, short)
  if not L.keyed_seen then
    return
  end
  -- The first group's score as LIMITS.candidates read it when none was due (nothing moved
  -- since), else read again.
  local at = L.first_due
  if not at then
    local first = redis.call('ZRANGE', KEYS[K_KEY_DUE], '0', '0', 'WITHSCORES')
    at = first[2] and tonumber(first[2])
  end
  if at and at >= now + 1 then
    wake_no_later(at)
  elseif at and short then
    -- Not held by a rate: due groups the call did not read, for a round at once.
    local held = L.rate_held
    wake_no_later(math.max(at, now))
    L.rate_held = held
  end
end

-- Whether a rate held jobs back in this call (the queue's, or a rate key's: their next batch
-- is in LIMITS.wake_at).
function LIMITS.rate_held()
  return L.rate_held == true
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
  redis.call('HSET', KEYS[K_KEY_STATE], 't' .. rate, ms_text(tat))
  local group = group_of(rec)
  local score = redis.call('ZSCORE', KEYS[K_KEY_DUE], group)
  if score and tonumber(score) < held_until then
    L.first_due = nil
    redis.call('ZADD', KEYS[K_KEY_DUE], ms_text(held_until), group)
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
