-- settings_set: changes a queue's settings (KEYS[K_SETTINGS]) in one step: each field given a
-- value is set, each field given '' is removed (the server's flag applies again). Then wakes the
-- queue's dispatchers, so that a setting that lets more jobs run takes effect at once: the groups
-- of keyed jobs parked at their key's concurrency cap go back to key_due (up to 1,000; the rest
-- when a lease of their key ends), to be checked against the new cap.
-- Touches the queue keys settings, key_due, key_parked; publishes a wake-up on ARGV[1].
-- KEYS: the queue keys (lib.lua).
-- ARGV[8..] pairs {field, value or ''}: the fields of store/queue_settings.rs, at most one pair
-- each (the caller checks the values), so the hash never holds more than those few fields.
-- `shards` is set once: a pair that would change or remove a count already stored is skipped
-- (the server refuses such a change before the call; this keeps it so when two race).
-- Returns the settings now stored, flat {field, value, ...}.
local set, unset = {}, {}
local shards = redis.call('HGET', KEYS[K_SETTINGS], 'shards')
for i = 8, #ARGV - 1, 2 do
  if ARGV[i] == 'shards' and shards and ARGV[i + 1] ~= shards then
    -- set once: left as it is
  elseif ARGV[i + 1] == '' then
    unset[#unset + 1] = ARGV[i]
  else
    set[#set + 1] = ARGV[i]
    set[#set + 1] = ARGV[i + 1]
  end
end
if #set > 0 then
  redis.call('HSET', KEYS[K_SETTINGS], unpack(set))
end
if #unset > 0 then
  redis.call('HDEL', KEYS[K_SETTINGS], unpack(unset))
end
LIMITS.unpark(nil, now_ms())
wake()
return redis.call('HGETALL', KEYS[K_SETTINGS])
