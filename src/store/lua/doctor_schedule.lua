-- doctor_schedule: re-arms a schedule whose timing the doctor found wrong (store/doctor.rs):
-- its next fire long past while it is active, or how far it has fired ahead of the clock. It
-- writes how far the schedule has fired as the doctor re-derived it (the same value, when only
-- the instances' timers need to look again) and announces the schedule on the notice channel,
-- so that every instance's timer reloads it and fires what is owed under its missed-fire policy.
-- Checks first that the schedule is still as the doctor read it (its revision and how far it
-- had fired, and not paused): a fire or an upsert since then is left alone.
-- KEYS: the queue keys (lib.lua), then KEYS[32] the queue's schedules hash and KEYS[33] its fire
-- state hash (schedules_lib.lua).
-- ARGV[8] 'check' (change nothing) or 'fix', ARGV[9] the schedule's name, ARGV[10] its revision
-- as read, ARGV[11] how far it had fired as read (ms), ARGV[12] how far it has fired once
-- mended (ms), ARGV[13] the notice channel.
-- Returns 1 when the schedule was still as read (with 'fix': it was mended), else 0.
local name = ARGV[9]
local def, state, old = load_schedule(name)
if not def or state[SC_PAUSED] == 1 or state[SC_REVISION] ~= tonumber(ARGV[10]) or
    state[SC_THROUGH] ~= tonumber(ARGV[11]) then
  return 0
end
if ARGV[8] == 'fix' then
  state[SC_THROUGH] = tonumber(ARGV[12])
  if old then
    save_definition(name, def)
  end
  save_state(name, state)
  redis.call('PUBLISH', ARGV[13], ARGV[2] .. '/' .. name)
end
return 1
