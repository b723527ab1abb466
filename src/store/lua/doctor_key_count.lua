-- doctor_key_count: mends one concurrency key's count of leases (key_state 'a<key>',
-- limits_lib.lua) when it differs from the live leases of jobs with that key, counted here in
-- one step: the active hash read whole (HSCAN pages of 1,000), each lease flagged 'k' decoded to
-- its record's key. A count that drifted would leak a slot (too high) or let the key past its
-- cap (too low); the fix sets it to the leases counted, and the key's parked groups lease again.
-- Touches (here or in the lib.lua helpers it calls) the queue keys jobs, active, key_due,
-- key_parked, key_state; may publish a wake-up on ARGV[1].
-- KEYS: the queue keys (lib.lua).
-- ARGV[8] 'check' (change nothing) or 'fix', ARGV[9] the concurrency key.
-- Returns 1 when the count was wrong (with 'fix': it was mended), else 0.
local fix, key = ARGV[8] == 'fix', ARGV[9]
local live, cursor = 0, '0'
repeat
  local page = redis.call('HSCAN', KEYS[K_ACTIVE], cursor, 'COUNT', '1000')
  cursor = page[1]
  local entries = page[2]
  for i = 1, #entries, 2 do
    if string.find(entries[i + 1], '|%a*k%a*$') then
      local rec = load(entries[i])
      if rec and rec[R_CONC_KEY] == key then
        live = live + 1
      end
    end
  end
until cursor == '0'
local field = 'a' .. key
local counted = tonumber(redis.call('HGET', KEYS[K_KEY_STATE], field) or '0')
if counted == live then
  return 0
end
if fix then
  if live > 0 then
    redis.call('HSET', KEYS[K_KEY_STATE], field, live)
  else
    redis.call('HDEL', KEYS[K_KEY_STATE], field)
  end
  LIMITS.unpark(key, now_ms())
end
return 1
