-- schedule_fire: fires due schedules of one queue, each claimed by a compare-and-set of how far
-- it has fired, in the same step that adds its jobs: of any number of instances firing the
-- same due time, exactly one adds its job; the others are told what the schedule now is.
-- KEYS: the queue keys (lib.lua), then KEYS[28] the queue's schedules hash (schedules_lib.lua).
-- ARGV[8] the most jobs the queue may hold waiting unless its settings say otherwise (0: no
-- cap; as add.lua's, the delayed, session and ready jobs are counted once per call, only when
-- there is a cap). ARGV[9..]: per schedule, name, revision, fired through (as the caller read it), fired through
-- after this fire (ms), 1 to skip while its last job is unfinished (else 0), job count k, then
-- k times: ULID, due time (ms), ready time (ms: the due time plus its jitter). At most 100
-- jobs per schedule (the caller's cap).
-- Each schedule is fired only while its revision and fired-through are the ones given and it is
-- not paused; its fired-through then becomes the one given, and each job is added from its
-- template (ready, or delayed until its ready time), unless skipping for overlap (the skipped
-- due time is counted) or a job of that ULID exists already (a ULID is derived from the
-- schedule and the due time).
-- Returns, flat, two values per schedule in order: 1 and the jobs added (as text) when it
-- fired; 3 and how far it has fired (ms, as text) when a job would have passed the queue's cap
-- of waiting jobs: that due time and the fire's later ones are not added (the earlier ones
-- are), the schedule has fired through the one before, and its count of refused fires goes up
-- (the caller's missed-fire policy decides what runs once there is room); 2 and how far it has fired (ms, as text) when another instance fired it first (same
-- revision, not paused: all the caller lacks, a few bytes rather than the schedule); 0 and the
-- schedule as stored (packed) when it did not for another reason (changed or paused); -1 and
-- '' when there is no such schedule.
start_scheduled()
local out = {}
local now
local cap = max_waiting(tonumber(ARGV[8]))
local held
-- Whether one more job would pass the queue's cap of waiting jobs (counted at the first ask).
local function full()
  if cap <= 0 then
    return false
  end
  held = held or waiting_count()
  return held >= cap
end
local i = 9
while i <= #ARGV do
  local name, revision, through, next_through = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local skip_overlap, count = ARGV[i + 4] == '1', tonumber(ARGV[i + 5])
  local s, raw = load_schedule(name)
  if not s then
    out[#out + 1] = -1
    out[#out + 1] = ''
  elseif s[SC_REVISION] ~= revision or s[SC_PAUSED] == 1 then
    out[#out + 1] = 0
    out[#out + 1] = raw
  elseif s[SC_THROUGH] ~= through then
    out[#out + 1] = 2
    out[#out + 1] = int_text(s[SC_THROUGH])
  else
    now = now or now_ms()
    local added, refused_at = 0, nil
    local rec = count > 0 and unpack_record(s[SC_TEMPLATE])
    for j = 0, count - 1 do
      local at = i + 6 + 3 * j
      local ulid, due, ready = ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
      -- A job this call added is unfinished, though not yet written.
      if skip_overlap and (added > 0 or job_unfinished(s[SC_LAST_JOB])) then
        s[SC_SKIPPED] = s[SC_SKIPPED] + 1
      elseif redis.call('HEXISTS', KEYS[K_JOBS], ulid) == 0 then
        if full() then
          refused_at = due
          break
        end
        add_from_template(s, rec, ulid, due, ready, now)
        s[SC_LAST_DUE] = due
        added = added + 1
        held = held and held + 1
      end
    end
    if refused_at then
      s[SC_THROUGH] = refused_at - 1
      s[SC_REFUSED] = (s[SC_REFUSED] or 0) + 1
      out[#out + 1] = 3
      out[#out + 1] = int_text(s[SC_THROUGH])
    else
      s[SC_THROUGH] = next_through
      out[#out + 1] = 1
      out[#out + 1] = int_text(added)
    end
    save_schedule(name, s)
  end
  i = i + 6 + 3 * count
end
write_scheduled()
return out
