-- schedule_fire: fires due schedules of one queue, each claimed by a compare-and-set of how far
-- it has fired, in the same step that adds its jobs: of any number of instances firing the
-- same due time, exactly one adds its job; the others are told what the schedule now is.
-- KEYS: the queue keys (lib.lua), then KEYS[32] the queue's schedules hash and KEYS[33] its fire
-- state hash (schedules_lib.lua).
-- ARGV[8] the most jobs the queue may hold waiting unless its settings say otherwise (0: no
-- cap; as add.lua's, the delayed, session and ready jobs are counted once per call, only when
-- there is a cap). ARGV[9..]: per schedule, name, revision, fired through (as the caller read
-- it), fired through after this fire (ms), 1 to skip while its last job is unfinished (else 0),
-- job count k, then k times: ULID, due time (ms), ready time (ms: the due time plus its
-- jitter). At most 100 jobs per schedule (the caller's cap).
-- Each schedule is fired only while its revision and fired-through are the ones given and it is
-- not paused; its fired-through then becomes the one given, and each job is added from its
-- template (ready, or delayed until its ready time), unless skipping for overlap (the skipped
-- due time is counted) or a job of that ULID exists already (a ULID is derived from the
-- schedule and the due time).
-- What it reads is the fire states of all the call's schedules (one HMGET), the definitions of
-- those it adds jobs to or answers with (one HMGET) and whether their jobs exist (one HMGET);
-- what it writes is the jobs (one HSET, one RPUSH per priority, one event entry per 16 jobs:
-- write_scheduled), the fire states of those it fired (one HSET), and the definition of one still
-- in the old layout (which it moves to the current one). A claim refused because another
-- instance fired it first reads a few bytes and writes nothing.
-- Before any of that, the queue's due delayed jobs are made ready (see below).
-- Returns, flat, two values per schedule in order: 1 and the jobs added (as text) when it
-- fired; 3 and how far it has fired (ms, as text) when a job would have passed the queue's cap
-- of waiting jobs: that due time and the fire's later ones are not added (the earlier ones
-- are), the schedule has fired through the one before, and its count of refused fires goes up
-- (the caller's missed-fire policy decides what runs once there is room); 2 and how far it has
-- fired (ms, as text) when another instance fired it first (same revision, not paused: all the
-- caller lacks, a few bytes rather than the schedule); 0 and the schedule as stored when it did
-- not for another reason (changed or paused): its definition and fire state as two msgpack
-- strings, one after the other (the state '' for a schedule still in the old layout, whose
-- definition holds it); -1 and '' when there is no such schedule.
start_scheduled()
-- First the queue's due delayed jobs are made ready (at most BATCH, as schedule_release does):
-- those of fires claimed ahead whose owner is gone before releasing them are made ready by the
-- other instances' fires of the same schedules, a grace after the due time
-- (queue/schedules/timer.rs).
promote_due(now_ms())
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
-- ARGV's numbers, each text parsed once: the schedules of one instant share their due time,
-- fired-through and revision, and tonumber (strtod) is slow enough to show per fire.
local numbers = {}
local function number(text)
  local n = numbers[text]
  if not n then
    n = tonumber(text)
    numbers[text] = n
  end
  return n
end
-- The call's schedules: where each starts in ARGV, its name and its count of jobs.
local starts, names, counts = {}, {}, {}
local i = 9
while i <= #ARGV do
  local count = number(ARGV[i + 5])
  starts[#starts + 1], names[#names + 1], counts[#counts + 1] = i, ARGV[i], count
  i = i + 6 + 3 * count
end
-- The verdict on the claim of the schedule whose fire starts at ARGV[at], by its revision, pause
-- and fired-through: 'fire', 'elsewhere' (another instance fired it), or nil (changed or paused).
local function claim(revision, paused, through, at)
  if revision == number(ARGV[at + 1]) and paused ~= 1 then
    return through == number(ARGV[at + 2]) and 'fire' or 'elsewhere'
  end
end
-- Each schedule's fire state as stored, and the verdict on its claim: 'fire', 'elsewhere', or nil
-- (its definition decides: changed, paused, old layout or gone). Only the three values a claim
-- compares are read here; the whole state, of the schedules fired, below.
local packed = hmget(KEYS[K_SCHEDULE_STATE], names)
local verdicts, throughs, wanted, wanted_at = {}, {}, {}, {}
for n, at in ipairs(starts) do
  local verdict
  if packed[n] then
    local _, revision, paused, through = cmsgpack.unpack_limit(packed[n], 3)
    verdict = claim(revision, paused, through, at)
    throughs[n] = through
  end
  verdicts[n] = verdict
  if not verdict or (verdict == 'fire' and counts[n] > 0) then
    wanted[#wanted + 1] = names[n]
    wanted_at[#wanted_at + 1] = n
  end
end
local defs = {}
for w, raw in ipairs(hmget(KEYS[K_SCHEDULES], wanted)) do
  defs[wanted_at[w]] = raw
end
-- The jobs of the fires that may add some which exist already (a ULID names a schedule's due
-- time), found with one HMGET: this call writes its ready jobs when it ends, so none of them is
-- among those.
local ulids = {}
for n, at in ipairs(starts) do
  if verdicts[n] ~= 'elsewhere' then
    for j = 0, counts[n] - 1 do
      ulids[#ulids + 1] = ARGV[at + 6 + 3 * j]
    end
  end
end
local exists = {}
for u, record in ipairs(hmget(KEYS[K_JOBS], ulids)) do
  if record then
    exists[ulids[u]] = true
  end
end
-- Each due time's creation time and the call's clock, packed between a job form's head and tail.
local times = {}
-- How far schedules have fired, as text, made once per value (they share it in an instant).
local texts = {}
local function through_text(through)
  local text = texts[through]
  if not text then
    text = int_text(through)
    texts[through] = text
  end
  return text
end
-- The fire states written (name, packed, ...), the definitions moved to the current layout, and
-- the state of each schedule this call has answered for (a name given twice is answered the
-- second time as fired elsewhere).
local fired, moved, seen = {}, {}, {}
for n, at in ipairs(starts) do
  local name, verdict, raw, count = names[n], verdicts[n], defs[n], counts[n]
  local state, head, tail, ready
  if seen[name] then
    state, verdict = seen[name], 'elsewhere'
  elseif verdict == 'elsewhere' then
    state = { [SC_THROUGH] = throughs[n] }
  elseif raw and string.byte(raw) ~= SC_LAYOUT then
    -- Still in the old layout: its fire state is the one the definition holds (any in the fire
    -- state hash was left by a schedule of that name deleted by an older release).
    local def
    def, state = read_definition(raw)
    head, tail, ready = def[DF_HEAD], def[DF_TAIL], def[DF_READY]
    verdict = claim(state[SC_REVISION], state[SC_PAUSED], state[SC_THROUGH], at)
    if verdict == 'fire' then
      moved[#moved + 1] = name
      moved[#moved + 1] = pack_definition(def)
    end
  else
    state = packed[n] and { cmsgpack.unpack(packed[n]) }
    if raw then
      local _
      _, _, _, head, tail, ready = cmsgpack.unpack_limit(raw, 5)
    end
  end
  if verdict == 'elsewhere' then
    out[#out + 1] = 2
    out[#out + 1] = through_text(state[SC_THROUGH])
  elseif verdict == 'fire' and (head or count == 0) then
    now = now or now_ms()
    local skip_overlap = ARGV[at + 4] == '1'
    local added, refused_at = 0, nil
    for j = 0, count - 1 do
      local job = at + 6 + 3 * j
      local ulid, due, ready_at = ARGV[job], number(ARGV[job + 1]), number(ARGV[job + 2])
      -- A job this call added is unfinished, though not yet written.
      if skip_overlap and (added > 0 or job_unfinished(state[SC_LAST_JOB])) then
        state[SC_SKIPPED] = state[SC_SKIPPED] + 1
      elseif not exists[ulid] then
        if full() then
          refused_at = due
          break
        end
        local packed_times = times[due]
        if not packed_times then
          packed_times = cmsgpack.pack(due, now)
          times[due] = packed_times
        end
        add_from_template(state, head, tail, ready, ulid, due, ready_at, now, packed_times)
        state[SC_LAST_DUE] = due
        -- Claimed ahead of its due time: the job a pause, change or delete before then withdraws.
        state[SC_STAGED] = due > now and ulid or nil
        added = added + 1
        held = held and held + 1
      end
    end
    if refused_at then
      state[SC_THROUGH] = refused_at - 1
      state[SC_REFUSED] = state[SC_REFUSED] + 1
      out[#out + 1] = 3
      out[#out + 1] = through_text(state[SC_THROUGH])
    else
      state[SC_THROUGH] = number(ARGV[at + 3])
      out[#out + 1] = 1
      out[#out + 1] = int_text(added)
    end
    fired[#fired + 1] = name
    fired[#fired + 1] = pack_state(state)
  elseif raw and state then
    out[#out + 1] = 0
    out[#out + 1] = cmsgpack.pack(raw, packed[n] or '')
  else
    out[#out + 1] = -1
    out[#out + 1] = ''
  end
  seen[name] = state
end
write_scheduled()
bulk('HSET', KEYS[K_SCHEDULE_STATE], fired)
bulk('HSET', KEYS[K_SCHEDULES], moved)
return out
