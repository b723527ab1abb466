-- doctor_setting: removes one queue setting whose value does not read (store/doctor.rs), checking
-- first that it still holds the value the doctor read, so that a setting changed since (by
-- SetQueueSettings) is left alone. Without the field the functions fall back to the server's
-- flag, as they do for a value they cannot read.
-- Touches only the queue's settings hash.
-- KEYS: the queue keys (lib.lua).
-- ARGV[8] 'check' (change nothing) or 'fix', ARGV[9] the setting's field, ARGV[10] its value as
-- read.
-- Returns 1 when the value was still the one read (with 'fix': it was removed), else 0.
local field, seen = ARGV[9], ARGV[10]
if redis.call('HGET', KEYS[K_SETTINGS], field) ~= seen then
  return 0
end
if ARGV[8] == 'fix' then
  redis.call('HDEL', KEYS[K_SETTINGS], field)
end
return 1
