-- add: stores new jobs, each made ready, delayed, or pending in its session. Jobs are handled
-- one after the other in the order given (so a batch keeps its FIFO order), each checked before
-- anything of it is written; the idempotency tombstone is written last, so a job that fails to
-- go in leaves no tombstone behind.
-- Touches (here or in the lib.lua helpers it calls) the queue keys jobs, delayed, meta, events,
-- sessions, session_jobs, session_ttl, activity, ready lists; may publish a wake-up on ARGV[1].
-- KEYS: the queue keys (lib.lua), then the idempotency tombstones of the jobs that have a key.
-- ARGV[8] idempotency window ms, then per job: ULID, packed record (state WAITING), priority,
-- and '' for a job with nothing more to say, or '+' followed by four more values: delay ms or
-- -1, run_at epoch ms or -1, session name or '', index in KEYS of its tombstone or 0.
-- A window that is not a whole number of 1 to 15 digits fails the call before anything is
-- written (Redis would refuse it as the tombstone's PX, after the job is in).
-- Returns, flat, the jobs not added as {job number (1-based), code, ULID}: code 0 duplicate,
-- with the ULID of the first add; -1 unknown session (nothing written, ULID ''). Every job not
-- named was added.
-- The tombstone outlives the job's retention on purpose: a repeat inside the window is a
-- duplicate even after the first job is gone.
local window = ARGV[8]
if not string.find(window, '^[1-9]%d*$') or #window > 15 then
  return redis.error_reply('ERR add: the idempotency window must be from 1 to 15 digits of ms')
end
-- Read only for a job that is delayed or in a session: a plain job needs no clock.
local now
local out = {}
-- Plain ready jobs are written with one call per structure: records, then each priority's
-- list (in add order). Written before any other kind of job, which may touch the same lists.
-- Ready lists by priority as written (text).
local records, ready, waiting = {}, {}, {}
local function write_ready()
  bulk('HSET', KEYS[K_JOBS], records)
  for priority, ids in pairs(ready) do
    if bulk('RPUSH', ready_key(tonumber(priority)), ids) == #ids then
      wake()
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
-- A job that is delayed, in a session, or has an idempotency key.
local function add_special(n, ulid, raw, priority, delay, run_at, session, idem)
  local tombstone = idem > 0 and KEYS[idem]
  local first = tombstone and redis.call('GET', tombstone)
  local meta = session ~= '' and load_session(session)
  if first or (session ~= '' and not meta) then
    out[#out + 1] = n
    out[#out + 1] = first and 0 or -1
    out[#out + 1] = first or ''
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
  else
    add_ready(ulid, raw, priority)
  end
  if tombstone then
    redis.call('SET', tombstone, ulid, 'PX', window)
  end
end

local i, n = 9, 0
while i <= #ARGV do
  local ulid, raw, priority = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  n = n + 1
  if ARGV[i + 3] == '' then
    add_ready(ulid, raw, priority)
    i = i + 4
  else
    local delay, run_at, session, idem = tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5]), ARGV[i + 6], tonumber(ARGV[i + 7])
    i = i + 8
    add_special(n, ulid, raw, priority, delay, run_at, session, idem)
  end
end
write_ready()
count_added(n - #out / 3)
return out
