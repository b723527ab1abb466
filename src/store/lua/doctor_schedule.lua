-- doctor_schedule: re-arms a schedule whose timing the doctor found wrong (store/doctor.rs):
-- its next fire long past while it is active, or how far it has fired ahead of the clock. It
-- writes how far the schedule has fired as the doctor re-derived it (the same value, when only
-- the instances' timers need to look again) and announces the schedule on the notice channel,
-- so that every instance's timer reloads it and fires what is owed under its missed-fire policy.
-- Checks first that the schedule is still as the doctor read it (its revision and how far it
-- had fired, and not paused): a fire or an upsert since then is left alone.
-- KEYS: the queue keys (lib.lua), then the queue's schedules hash (schedules_lib.lua).
-- ARGV[8] 'check' (change nothing) or 'fix', ARGV[9] the schedule's name, ARGV[10] its revision
-- as read, ARGV[11] how far it had fired as read (ms), ARGV[12] how far it has fired once
-- mended (ms), ARGV[13] the notice channel.
-- Returns 1 when the schedule was still as read (with 'fix': it was mended), else 0.
local name = ARGV[9]
local s = load_schedule(name)
if not s or s[SC_PAUSED] == 1 or s[SC_REVISION] ~= tonumber(ARGV[10]) or s[SC_THROUGH] ~= tonumber(ARGV[11]) then
  return 0
end
if ARGV[8] == 'fix' then
  s[SC_THROUGH] = tonumber(ARGV[12])
  save_schedule(name, s)
  redis.call('PUBLISH', ARGV[13], ARGV[2] .. '/' .. name)
end
return 1
