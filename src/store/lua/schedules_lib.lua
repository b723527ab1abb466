-- The schedules' part of the library head (see store/scripts.rs), after lib.lua: the layout of a
-- schedule and the helpers the schedule_* functions share. Every schedule function is a queue
-- function whose own first key, KEYS[26], is the queue's schedules hash:
--   name -> one msgpack array, fields SC_* below (store/schedules.rs writes and reads the same):
--   revision (upserts, from 1), paused (0/1), fired through (ms: every due time up to it was
--   fired or given up; fires compare-and-set it), last due (ms of the last fire that added a
--   job, 0 before), last job (its ULID, '' before), fires (jobs added), skipped (fires skipped
--   for overlap), spec (the timetable and policies, JSON text opaque to Lua), template (a packed
--   job record, state WAITING), created ms, updated ms.
-- A change of a schedule's definition or pause publishes the queue's name on the notice channel
-- the function is given, so that every instance's timer reloads the queue's schedules.
local SC_REVISION, SC_PAUSED, SC_THROUGH, SC_LAST_DUE, SC_LAST_JOB, SC_FIRES, SC_SKIPPED = 1, 2, 3, 4, 5, 6, 7
local SC_SPEC, SC_TEMPLATE, SC_CREATED, SC_UPDATED = 8, 9, 10, 11
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

-- Adds one job from schedule s's template: created at `created` (ms, the time its ULID holds),
-- ready at `at` (delayed while that is later than `now`). The schedule then names it as its last.
local function add_from_template(s, ulid, created, at, now)
  local rec = unpack_record(s[SC_TEMPLATE])
  rec[R_CREATED] = created
  if at > now then
    make_delayed(ulid, rec, at, S_DELAYED)
  else
    make_ready(ulid, rec, now, false)
  end
  s[SC_LAST_JOB] = ulid
  s[SC_FIRES] = s[SC_FIRES] + 1
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
