-- add: stores new jobs, each made ready, delayed, or pending in its session. Jobs are handled
-- one after the other in the order given (so a batch keeps its FIFO order), each checked before
-- anything of it is written; the idempotency tombstone is written last, so a job that fails to
-- go in leaves no tombstone behind.
-- KEYS: the queue keys (lib.lua), then the idempotency tombstones of the jobs that have a key.
-- ARGV[8] idempotency window ms, then per job: ULID, packed record (state WAITING), priority,
-- and '' for a job with nothing more to say, or '+' followed by four more values: delay ms or
-- -1, run_at epoch ms or -1, session name or '', index in KEYS of its tombstone or 0.
-- Returns, flat, per job a code and a ULID: 1 added (ULID ''); 0 duplicate, with the ULID of
-- the first add; -1 unknown session (nothing written, ULID '').
-- The tombstone outlives the job's retention on purpose: a repeat inside the window is a
-- duplicate even after the first job is gone.
local window = ARGV[8]
local now = now_ms()
local out = {}
-- Plain ready jobs are written with one call per structure: records, then each priority's
-- list (in add order). Written before any other kind of job, which may touch the same lists.
local records, ready, waiting = {}, {}, {}
local function write_ready()
  bulk('HSET', KEYS[K_JOBS], records)
  for priority, ids in pairs(ready) do
    if bulk('RPUSH', ready_key(priority), ids) == #ids then
      wake()
    end
  end
  emit_many(E_WAITING, waiting)
  records, ready, waiting = {}, {}, {}
end
local i = 9
while i <= #ARGV do
  local ulid, raw, priority = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local delay, run_at, session, idem = -1, -1, '', 0
  if ARGV[i + 3] == '' then
    i = i + 4
  else
    delay, run_at, session, idem = tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5]), ARGV[i + 6], tonumber(ARGV[i + 7])
    i = i + 8
  end
  local tombstone = idem > 0 and KEYS[idem]
  local first = tombstone and redis.call('GET', tombstone)
  local meta = session ~= '' and load_session(session)
  if first then
    out[#out + 1] = 0
    out[#out + 1] = first
  elseif session ~= '' and not meta then
    out[#out + 1] = -1
    out[#out + 1] = ''
  else
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
      records[#records + 1] = ulid
      records[#records + 1] = raw
      ready[priority] = ready[priority] or {}
      table.insert(ready[priority], ulid)
      waiting[#waiting + 1] = ulid
    end
    if tombstone then
      redis.call('SET', tombstone, ulid, 'PX', window)
    end
    out[#out + 1] = 1
    out[#out + 1] = ''
  end
end
write_ready()
return out
