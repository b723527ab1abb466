-- The schedules' part of the library head (see store/scripts.rs), after lib.lua: the layout of a
-- schedule and the helpers the schedule_* functions share. Every schedule function is a queue
-- function whose own first key, KEYS[28], is the queue's schedules hash:
--   name -> one msgpack array, fields SC_* below (store/schedules.rs reads the same):
--   revision (upserts, from 1), paused (0/1), fired through (ms: every due time up to it was
--   fired or given up; fires compare-and-set it), last due (ms of the last fire that added a
--   job, 0 before), last job (its ULID, '' before), fires (jobs added), skipped (fires skipped
--   for overlap), spec (the timetable and policies, JSON text opaque to Lua), template (a packed
--   job record, state WAITING), created ms, updated ms, and, once a fire was refused at the
--   queue's cap of waiting jobs, refused (those fires; absent before the first).
-- A change of a schedule's definition or pause publishes `queue/name` on the notice channel the
-- function is given (neither name holds a '/'), so that every instance's timer reloads it.
local SC_REVISION, SC_PAUSED, SC_THROUGH, SC_LAST_DUE, SC_LAST_JOB, SC_FIRES, SC_SKIPPED = 1, 2, 3, 4, 5, 6, 7
local SC_SPEC, SC_TEMPLATE, SC_CREATED, SC_UPDATED, SC_REFUSED = 8, 9, 10, 11, 12
local K_SCHEDULES = K_READY + 11

-- The schedule of that name as a table (nil when there is none), and its packed text.
local function load_schedule(name)
  local raw = redis.call('HGET', KEYS[K_SCHEDULES], name)
  return raw and cmsgpack.unpack(raw), raw
end

local function save_schedule(name, s)
  local raw = cmsgpack.pack(s)
  redis.call('HSET', KEYS[K_SCHEDULES], name, raw)
  return raw
end

-- The jobs made ready by the running call, written together by write_scheduled: one HSET of
-- their records, one RPUSH per priority, one event entry, as add.lua writes its plain jobs.
local scheduled_records, scheduled_ready, scheduled_waiting = {}, {}, {}

-- Adds one job from schedule s's template, `rec` (the template unpacked, reused from job to job):
-- created at `created` (ms, the time its ULID holds), ready at `at` (delayed while that is later
-- than `now`, at once; else with the call's other ready jobs, by write_scheduled; a keyed one
-- among the keyed jobs at once, its record with the others). The schedule then names it as its
-- last.
local function add_from_template(s, rec, ulid, created, at, now)
  count_added(1)
  rec[R_CREATED] = created
  rec[R_READY_AT] = false
  if at > now then
    make_delayed(ulid, rec, at, S_DELAYED)
  else
    rec[R_STATE], rec[R_READY_AT], rec[R_RUN_AT] = S_WAITING, now, false
    local keyed = rec[R_RATE_KEY] or rec[R_CONC_KEY]
    if keyed then
      -- A template with a rate or concurrency key: each job waits among the keyed jobs, held
      -- by its key's limits, as an added one does (LIMITS.push writes its order into rec).
      LIMITS.push(ulid, rec, now, false)
    end
    scheduled_records[#scheduled_records + 1] = ulid
    scheduled_records[#scheduled_records + 1] = pack_record(rec)
    if not keyed then
      local list = scheduled_ready[rec[R_PRIORITY]]
      if not list then
        list = {}
        scheduled_ready[rec[R_PRIORITY]] = list
      end
      list[#list + 1] = ulid
    end
    scheduled_waiting[#scheduled_waiting + 1] = ulid
  end
  s[SC_LAST_JOB] = ulid
  s[SC_FIRES] = s[SC_FIRES] + 1
end

-- Forgets what an earlier call collected and did not write (it failed midway): every function
-- that calls add_from_template starts with this.
local function start_scheduled()
  scheduled_records, scheduled_ready, scheduled_waiting = {}, {}, {}
end

-- Writes the ready jobs add_from_template collected; wakes dispatchers for a list that was
-- empty (as make_ready does).
local function write_scheduled()
  bulk('HSET', KEYS[K_JOBS], scheduled_records)
  for priority, ids in pairs(scheduled_ready) do
    if bulk('RPUSH', ready_key(priority), ids) == #ids then
      wake()
    end
  end
  emit_many(E_WAITING, scheduled_waiting)
  scheduled_records, scheduled_ready, scheduled_waiting = {}, {}, {}
end

-- Whether the job `ulid` (a schedule's last) has yet to finish: waiting, delayed, retrying or
-- active. A job no longer retained, or finished, has not.
local function job_unfinished(ulid)
  if ulid == '' then
    return false
  end
  if redis.call('HEXISTS', KEYS[K_ACTIVE], ulid) == 1 then
    return true
  end
  if redis.call('HEXISTS', KEYS[K_OUTCOMES], ulid) == 1 then
    return false
  end
  local rec = load(ulid)
  if not rec then
    return false
  end
  local state = rec[R_STATE]
  return state == S_WAITING or state == S_DELAYED or state == S_RETRYING
end

