-- doctor_tombstone: drops an idempotency tombstone that would never go by itself or that
-- names no job: one with no expiry, or whose value is not a ULID. Checks it again first, so a
-- tombstone written afresh since the doctor saw it is left alone.
-- Touches only the tombstone.
-- KEYS: the queue keys (lib.lua), then KEYS[27] the tombstone.
-- ARGV[8] 'check' (change nothing) or 'fix'.
-- Returns 1 when the tombstone was bad (with 'fix': it was dropped), else 0.
local key = KEYS[K_READY + 11]
local value = redis.call('GET', key)
if not value then
  return 0
end
local ulid = string.match(value, '^[0-7][0-9A-HJKMNP-TV-Z]+$') and #value == 26
if ulid and redis.call('PTTL', key) >= 0 then
  return 0
end
if ARGV[8] == 'fix' then
  redis.call('DEL', key)
end
return 1
