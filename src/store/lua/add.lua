-- add: stores new jobs, each made ready, delayed, or pending in its session. Jobs are handled
-- one after the other in the order given (so a batch keeps its FIFO order), each checked before
-- anything of it is written; the idempotency tombstones of the jobs added are written last, so a
-- job that fails to go in leaves no tombstone behind.
-- Touches (here or in the lib.lua helpers it calls) the queue keys jobs, delayed, meta, events,
-- sessions, session_jobs, session_ttl, activity, settings (read), keyed, key_due, key_parked
-- (read), ready lists, and with lease tokens those a lease round touches (lease.lua); may publish
-- a wake-up on ARGV[1].
-- KEYS: the queue keys (lib.lua), then ARGV[9] tombstone buckets per family (store/tombstones.rs):
-- family f's are KEYS[31 + (f - 1) * ARGV[9] + 1 ..], buckets first, first + 1, ... of its width.
-- ARGV[8] lookback L, ARGV[9] buckets named per family, ARGV[10] families F, ARGV[11] the most
-- jobs the queue may hold waiting (ready, delayed or retrying, or pending in a session) or 0 for
-- no cap, unless the queue's settings say otherwise (max_waiting in lib.lua), ARGV[12] the number
-- T of lease tokens that close the arguments, then per family its bucket width ms and the index
-- of its first bucket named; then per job: ULID, packed record
-- (state WAITING), priority, and '' for a job with nothing more to say, or '+' ('*' for a job
-- with a rate or concurrency key, which waits among the keyed jobs once ready) followed by five
-- more values: delay ms or -1, run_at epoch ms or -1, session name or '', its key's family (1 to
-- F) or 0, the digest of its idempotency key (16 bytes, store/tombstones.rs) or ''.
-- A tombstone's field is the digest's first 14 bytes (a 16-byte allocation in Redis, 32 for the
-- whole digest); tombstones written by earlier releases have the whole digest as their field,
-- so a lookup asks for both until the last of those buckets has expired.
-- By Redis's clock, a family's current bucket is number floor(now / width): a key is looked for
-- in it and the L before it, and a job added writes its key into it, which then expires whole at
-- (number + L + 1) * width ms. A repeat within the batch is a duplicate of the first.
-- Refused before anything is written: a width that is not a whole number of 1 to 15 digits (an
-- error); buckets named that do not hold those of Redis's clock (the caller's clock is off
-- by more than the margin it named): the answer is then {0, -2, Redis time in ms}, to name them
-- again from.
-- Returns, flat, the jobs not added as {job number (1-based), code, ULID}: code 0 duplicate,
-- with the ULID of the first add; -1 unknown session (nothing written, ULID ''); -3 the queue
-- holds the cap of waiting jobs (nothing written; the cap as text in place of the ULID). Every
-- job not named was added. The cap is checked per job, in order, after its duplicate check (a
-- repeat of a job that went in is still answered as a duplicate): the jobs of a batch that fit
-- go in, the rest are refused. When jobs went in and the queue's meta hash had no `registered`
-- mark (its first add, or its first since queue_retire dropped what was left of it), the mark is
-- set and the answer ends with the triple {0, -4, ''}: the caller must register the queue again.
-- A tombstone outlives the job's retention on purpose: a repeat inside the window is a
-- duplicate even after the first job is gone.
-- The T lease tokens (the last T arguments, after the jobs) are those of worker streams of the
-- calling instance waiting with free credit: once every job is in, due delayed jobs are made
-- ready and up to T ready jobs are leased with them as a lease round would (lease_refills in
-- lib.lua; deadlines and trims stay with the lease round). The wake-up of a ready list the call
-- filled is then published only when jobs may be left for other streams: every token was used,
-- or a limit holds a job back (ready_wake in lib.lua). With T > 0 the answer is {refused,
-- jobs, sessions, now, delayed}: refused the flat triples above (the bucket triple too), jobs
-- and sessions as in lease.lua, the i-th job holding the i-th token, now the Redis time of the
-- call (ms) and delayed the ms until the earliest delayed job left is due or a job a limit holds
-- back may go, -1 when none is.
-- Parsed once per text (setting, lib.lua): they are the same in every call.
local lookback, span, families = setting(ARGV[8]), setting(ARGV[9]), setting(ARGV[10])
local jobs_from = 13 + 2 * families
local tokens = tonumber(ARGV[12])
local jobs_to = #ARGV - tokens
hold_ready_wake = tokens > 0
-- The answer, in the shape the tokens ask for (see above); `leased` the lease's answer.
local function answer(out, leased)
  if tokens == 0 then
    return out
  end
  return { out, leased[1], leased[2], clock_read or 0, leased[3] }
end
-- The jobs waiting, counted once per call and only when there is a cap.
local cap = max_waiting(tonumber(ARGV[11]))
local cap_text = int_text(cap)
local held = 0
if cap > 0 then
  held = waiting_count()
end
-- The tombstone field of a key from its digest.
local function field(digest)
  return string.sub(digest, 1, 14)
end
-- Read once a family or a job needs it: a plain job needs no clock.
local now
-- Per family: the KEYS index of its current bucket, that bucket's expiry, the keys known
-- (key -> ULID: found in the buckets read, or added by this call) and the entries to write.
local tombs = {}
for f = 1, families do
  local width = ARGV[11 + 2 * f]
  if not string.find(width, '^[1-9]%d*$') or #width > 15 then
    return redis.error_reply('ERR add: a tombstone bucket width must be from 1 to 15 digits of ms')
  end
  now = now or now_ms()
  local w = tonumber(width)
  local current = math.floor(now / w)
  local first = tonumber(ARGV[12 + 2 * f])
  if math.max(0, current - lookback) < first or current >= first + span then
    return answer({ 0, -2, int_text(now) }, { {}, {}, -1 })
  end
  tombs[f] = {
    at = K_READY + 10 + (f - 1) * span + 1 + current - first,
    reach = math.min(lookback, current),
    expiry = int_text((current + lookback + 1) * w),
    known = {},
    new = {},
  }
end
-- The keys of each family's jobs, looked up with one HMGET per bucket read.
if families > 0 then
  local wanted = {}
  local i = jobs_from
  while i <= jobs_to do
    if ARGV[i + 3] == '' then
      i = i + 4
    else
      local f = tonumber(ARGV[i + 7])
      if f > 0 then
        if not tombs[f] then
          return redis.error_reply('ERR add: a job names a tombstone family that was not given')
        end
        local keys = wanted[f] or {}
        wanted[f] = keys
        keys[#keys + 1] = ARGV[i + 8]
      end
      i = i + 9
    end
  end
  -- Per family: the fields asked for, the new ones (each key's `field`) then the whole
  -- digests (the fields of earlier releases); one HMGET per bucket read.
  for f, digests in pairs(wanted) do
    local t = tombs[f]
    local asked = {}
    for j = 1, #digests do
      asked[j] = field(digests[j])
      asked[#digests + j] = digests[j]
    end
    for b = t.at - t.reach, t.at do
      local first = hmget(KEYS[b], asked)
      for j = 1, #digests do
        local found = first[j] or first[#digests + j]
        if found then
          t.known[asked[j]] = found
        end
      end
    end
  end
end
local out = {}
-- Whether job n would take the queue past its cap; if so it is answered as refused.
local function over_cap(n)
  if cap > 0 and held >= cap then
    out[#out + 1] = n
    out[#out + 1] = -3
    out[#out + 1] = cap_text
    return true
  end
  held = held + 1
  return false
end
-- Plain ready jobs are written with one call per structure: records, then each priority's
-- list (in add order). Written before any other kind of job, which may touch the same lists.
-- Ready lists by priority as written (text).
local records, ready, waiting = {}, {}, {}
local function write_ready()
  bulk('HSET', KEYS[K_JOBS], records)
  for priority, ids in pairs(ready) do
    if bulk('RPUSH', ready_key(tonumber(priority)), ids) == #ids then
      ready_wake()
    end
  end
  emit_many(E_WAITING, waiting)
  records, ready, waiting = {}, {}, {}
end
local function add_ready(ulid, raw, priority)
  records[#records + 1] = ulid
  records[#records + 1] = raw
  local list = ready[priority]
  if not list then
    list = {}
    ready[priority] = list
  end
  list[#list + 1] = ulid
  waiting[#waiting + 1] = ulid
end
-- A job that is delayed, in a session, has an idempotency key (of family t) or is `keyed` (has
-- a rate or concurrency key: made ready among the keyed jobs, limits_lib.lua).
local function add_special(n, ulid, raw, priority, delay, run_at, session, t, key, keyed)
  local first = t and t.known[key]
  local meta = session ~= '' and load_session(session)
  if first or (session ~= '' and not meta) then
    out[#out + 1] = n
    out[#out + 1] = first and 0 or -1
    out[#out + 1] = first or ''
    return
  end
  if over_cap(n) then
    return
  end
  now = now or now_ms()
  local due = run_at
  if delay >= 0 then
    due = now + delay
  end
  if meta or due > now then
    write_ready()
  end
  if meta then
    local seq = redis.call('HINCRBY', KEYS[K_META], 'session_seq', 1)
    local rec = unpack_record(raw)
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
  elseif due > now then
    make_delayed(ulid, unpack_record(raw), due, S_DELAYED)
  elseif keyed then
    make_ready(ulid, unpack_record(raw), now, false)
  else
    add_ready(ulid, raw, priority)
  end
  if t then
    t.known[key] = ulid
    t.new[#t.new + 1] = key
    t.new[#t.new + 1] = ulid
  end
end

local i, n = jobs_from, 0
while i <= jobs_to do
  local ulid, raw, priority = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  n = n + 1
  if ARGV[i + 3] == '' then
    if not over_cap(n) then
      add_ready(ulid, raw, priority)
    end
    i = i + 4
  else
    local delay, run_at, session = tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5]), ARGV[i + 6]
    local t = tombs[tonumber(ARGV[i + 7])]
    local key = t and field(ARGV[i + 8])
    add_special(n, ulid, raw, priority, delay, run_at, session, t, key, ARGV[i + 3] == '*')
    i = i + 9
  end
end
write_ready()
for f = 1, families do
  local t = tombs[f]
  if #t.new > 0 then
    bulk('HSET', KEYS[t.at], t.new)
    redis.call('PEXPIREAT', KEYS[t.at], t.expiry)
  end
end
local added = n - #out / 3
count_added(added)
-- The mark of a queue in the registry (queue_retire.lua deletes it with the queue's leftovers):
-- an add that finds it missing says so, and its caller registers the queue again.
if added > 0 and redis.call('HSETNX', KEYS[K_META], 'registered', 1) == 1 then
  out[#out + 1], out[#out + 2], out[#out + 3] = 0, -4, ''
end
if tokens == 0 then
  return out
end
now = now or now_ms()
local jobs, sessions, next_delayed = lease_refills(ARGV, jobs_to + 1, now)
if ready_wake_held and (#jobs == 2 * tokens or LIMITS.wake_at) then
  wake()
end
return answer(out, { jobs, sessions, next_delayed })
