-- The schedules' part of the library head (see store/scripts.rs), after lib.lua: the layout of a
-- schedule and the helpers the schedule_* functions share. Every schedule function is a queue
-- function whose own first keys are KEYS[32], the queue's schedules hash, and KEYS[33], its
-- schedules' fire state hash. A schedule is kept in two parts, so that a fire reads and writes
-- a few small values rather than the whole schedule (store/schedules.rs reads the same):
--   KEYS[32] name -> its definition, msgpack values one after the other: the layout (2), the
--            revision (upserts, from 1: the one the definition was written at), the job head and
--            job tail, the ready list (the template's priority; false when the template has a
--            rate or concurrency key, whose jobs wait among the keyed jobs), spec (the timetable
--            and policies, JSON text opaque to Lua), created ms, updated ms. Head and tail are
--            the template (a packed job record, state WAITING, created 0, not ready) cut around
--            its creation and ready times (R_CREATED, R_READY_AT, one after the other): head ..
--            cmsgpack.pack(created, ready_at) .. tail is a job's record, built without unpacking
--            the template (job_form).
--   KEYS[33] name -> its fire state, msgpack values one after the other, SC_* below (read
--            without a msgpack array's cost per field, and the three a claim compares alone):
--            revision (as in the definition; fires compare it), paused (0/1), fired through (ms: every due time up to
--            it was fired or given up; fires compare-and-set it), last due (ms of the last fire
--            that added a job, 0 before), last job (its ULID, '' before), fires (jobs added),
--            skipped (fires skipped for overlap), refused (fires refused at the queue's cap of
--            waiting jobs), and while the last fire's job was claimed ahead of its due time (the
--            last due), that job's ULID (withdraw_staged; absent otherwise, so a state without
--            one is what releases before it wrote, and one with it reads as corrupt to them).
-- Older releases kept a schedule as one msgpack array in KEYS[32] (revision, paused, fired
-- through, last due, last job, fires, skipped, spec, template, created, updated, and refused once
-- there were any) and no fire state. Every function reads that layout too (read_definition), and
-- the first that writes such a schedule writes it in this one. The definition opens with a number
-- where that array was, so an older release reads a schedule in this layout as corrupt and
-- leaves it alone (its functions fail on it before they write), rather than fire it from stale
-- counts.
-- A change of a schedule's definition or pause publishes `queue/name` on the notice channel the
-- function is given (neither name holds a '/'), so that every instance's timer reloads it.
local SC_REVISION, SC_PAUSED, SC_THROUGH, SC_LAST_DUE, SC_LAST_JOB, SC_FIRES, SC_SKIPPED, SC_REFUSED =
  1, 2, 3, 4, 5, 6, 7, 8
local SC_STAGED = 9
-- A definition as a table (read_definition): its values after the layout, in order.
local DF_REVISION, DF_HEAD, DF_TAIL, DF_READY, DF_SPEC, DF_CREATED, DF_UPDATED = 1, 2, 3, 4, 5, 6, 7
local SC_LAYOUT = 2
local K_SCHEDULES, K_SCHEDULE_STATE = K_READY + 11, K_READY + 12

-- The job form of a template (a packed job record): its head and tail (see above), and the ready
-- list of its jobs (DF_READY). Its jobs are WAITING with no run_at, whatever the template says.
local function job_form(template)
  local hot, cold = cmsgpack.unpack(template)
  local created, ready_at = R_CREATED - HOT_FIELDS, R_READY_AT - HOT_FIELDS
  local n = #cold
  for i = n + 1, ready_at do
    cold[i] = false
  end
  n = math.max(n, ready_at)
  cold[R_STATE - HOT_FIELDS] = S_WAITING
  if n >= R_RUN_AT - HOT_FIELDS then
    cold[R_RUN_AT - HOT_FIELDS] = false
  end
  -- The msgpack header of an array of n values (array16 past 15; a record has fewer than 2^16).
  local header = n < 16 and string.char(0x90 + n) or string.char(0xdc, math.floor(n / 256), n % 256)
  local head = cmsgpack.pack(hot) .. header .. cmsgpack.pack(unpack(cold, 1, created - 1))
  local tail = n > ready_at and cmsgpack.pack(unpack(cold, ready_at + 1, n)) or ''
  local keyed = cold[R_RATE_KEY - HOT_FIELDS] or cold[R_CONC_KEY - HOT_FIELDS]
  return head, tail, not keyed and cold[R_PRIORITY - HOT_FIELDS]
end

-- A stored definition as a table (DF_*). One in the old layout also yields its fire state (a
-- table, SC_*), which in this layout is kept apart.
local function read_definition(raw)
  if string.byte(raw) == SC_LAYOUT then
    local _, revision, head, tail, ready, spec, created, updated = cmsgpack.unpack(raw)
    return { revision, head, tail, ready, spec, created, updated }
  end
  local s = cmsgpack.unpack(raw)
  local head, tail, ready = job_form(s[9])
  return { s[1], head, tail, ready, s[8], s[10], s[11] }, { s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[12] or 0 }
end

-- The schedule of that name: its definition and fire state as tables (nil when there is none,
-- or when its fire state is missing: written anew by schedule_set), and true when it is still in
-- the old layout (whoever writes it then writes both parts, save_definition and save_state).
local function load_schedule(name)
  local raw = redis.call('HGET', KEYS[K_SCHEDULES], name)
  if not raw then
    return nil
  end
  local def, state = read_definition(raw)
  if state then
    return def, state, true
  end
  local packed = redis.call('HGET', KEYS[K_SCHEDULE_STATE], name)
  if not packed then
    return nil
  end
  return def, { cmsgpack.unpack(packed) }, false
end

-- Packs a definition (DF_*) as stored.
local function pack_definition(def)
  return cmsgpack.pack(SC_LAYOUT, def[1], def[2], def[3], def[4], def[5], def[6], def[7])
end

local function save_definition(name, def)
  local raw = pack_definition(def)
  redis.call('HSET', KEYS[K_SCHEDULES], name, raw)
  return raw
end

-- Packs a fire state (SC_*) as stored.
local function pack_state(state)
  if state[SC_STAGED] then
    return cmsgpack.pack(unpack(state, 1, SC_STAGED))
  end
  return cmsgpack.pack(unpack(state, 1, SC_REFUSED))
end

local function save_state(name, state)
  local raw = pack_state(state)
  redis.call('HSET', KEYS[K_SCHEDULE_STATE], name, raw)
  return raw
end

-- The jobs made ready by the running call, written together by write_scheduled: one HSET of
-- their records, one RPUSH per priority, one event entry, as add.lua writes its plain jobs; and
-- those of its plain jobs that wait delayed (score, id, ... for one ZADD), their records among
-- the others.
local scheduled_records, scheduled_ready, scheduled_waiting, scheduled_delayed = {}, {}, {}, {}

-- Adds one job from a schedule's job form (`head`, `tail` and `ready` of its definition), whose
-- fire state `state` (SC_*) then names it as its last: created at `created` (ms, the time its
-- ULID holds), ready at `at`. A plain job ready now (the common case) is its record built from
-- the job form, the two times between head and tail (`times`: cmsgpack.pack(created, now), when
-- the caller has it), written with the call's other ready jobs by write_scheduled. One of them
-- ready only at a later `at` (a fire claimed ahead of its due time, or a jitter) is written the
-- same way, in its ready form with `at` as its ready time, and waits in the delayed set until
-- then, whence promote_due moves only its id (lib.lua, ready_form_priority). One with a rate or
-- concurrency key is built from the template unpacked: delayed while `at` is later than `now`,
-- else among the keyed jobs at once, its record with the others.
local function add_from_template(state, head, tail, ready, ulid, created, at, now, times)
  count_added(1)
  if ready and at > now then
    scheduled_records[#scheduled_records + 1] = ulid
    scheduled_records[#scheduled_records + 1] = head .. cmsgpack.pack(created, at) .. tail
    scheduled_delayed[#scheduled_delayed + 1] = at
    scheduled_delayed[#scheduled_delayed + 1] = ulid
    emit(E_DELAYED, ulid, 0, '', at)
  elseif not ready then
    local rec = unpack_record(head .. cmsgpack.pack(created, false) .. tail)
    if at > now then
      make_delayed(ulid, rec, at, S_DELAYED)
    else
      rec[R_READY_AT] = now
      -- Each job waits among the keyed jobs, held by its key's limits, as an added one does
      -- (LIMITS.push writes its order into rec).
      LIMITS.push(ulid, rec, now, false)
      scheduled_records[#scheduled_records + 1] = ulid
      scheduled_records[#scheduled_records + 1] = pack_record(rec)
      scheduled_waiting[#scheduled_waiting + 1] = ulid
    end
  else
    scheduled_records[#scheduled_records + 1] = ulid
    scheduled_records[#scheduled_records + 1] = head .. (times or cmsgpack.pack(created, now)) .. tail
    local list = scheduled_ready[ready]
    if not list then
      list = {}
      scheduled_ready[ready] = list
    end
    list[#list + 1] = ulid
    scheduled_waiting[#scheduled_waiting + 1] = ulid
  end
  state[SC_LAST_JOB] = ulid
  state[SC_FIRES] = state[SC_FIRES] + 1
end

-- Forgets what an earlier call collected and did not write (it failed midway): every function
-- that calls add_from_template starts with this.
local function start_scheduled()
  scheduled_records, scheduled_ready, scheduled_waiting, scheduled_delayed = {}, {}, {}, {}
end

-- Writes the jobs add_from_template collected; wakes dispatchers for a list that was empty (as
-- make_ready does) and for a delayed job that is now the earliest (as make_delayed does).
local function write_scheduled()
  bulk('HSET', KEYS[K_JOBS], scheduled_records)
  for priority, ids in pairs(scheduled_ready) do
    if bulk('RPUSH', ready_key(priority), ids) == #ids then
      wake()
    end
  end
  if #scheduled_delayed > 0 then
    delayed_changed = true
    bulk('ZADD', KEYS[K_DELAYED], scheduled_delayed)
    local earliest = redis.call('ZRANGE', KEYS[K_DELAYED], '0', '0')[1]
    for i = 2, #scheduled_delayed, 2 do
      if scheduled_delayed[i] == earliest then
        wake()
        break
      end
    end
  end
  emit_many(E_WAITING, scheduled_waiting)
  scheduled_records, scheduled_ready, scheduled_waiting, scheduled_delayed = {}, {}, {}, {}
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

-- Withdraws the job of a fire claimed ahead of its due time (the timer, queue/schedules/timer.rs,
-- claims an on-time fire a little early and its job waits delayed until the due time) while that
-- time is still to come at `now` (ms) and the job still waits delayed: deletes the job, as
-- delete.lua does, and sets how far the schedule has fired back to just before the due time, so
-- that time is owed again and the change being made (a pause, a new definition) decides it. The
-- fire state (SC_*) keeps naming the withdrawn job as its last (unless a trigger came since).
-- Returns whether it withdrew one.
local function withdraw_staged(state, now)
  local ulid = state[SC_STAGED]
  if not ulid or state[SC_LAST_DUE] <= now then
    return false
  end
  state[SC_STAGED] = nil
  if redis.call('ZREM', KEYS[K_DELAYED], ulid) == 0 then
    return false
  end
  redis.call('HDEL', KEYS[K_JOBS], ulid)
  state[SC_THROUGH] = math.min(state[SC_THROUGH], state[SC_LAST_DUE] - 1)
  state[SC_FIRES] = state[SC_FIRES] - 1
  return true
end
