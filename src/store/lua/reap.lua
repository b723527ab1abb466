-- reap: returns to the head of their priority the leases held by dead jobwire instances, or
-- taken with given lease tokens (a lease round whose answer never reached its instance).
-- Not a lost delivery: the worker may well be fine; its instance is not.
-- Touches (here or in the lib.lua helpers it calls) the queue keys jobs, active, deadlines,
-- delayed, events, sessions, session_jobs, session_ttl, cancelled, ready lists; may publish a
-- wake-up on ARGV[1].
-- KEYS: the queue keys (lib.lua).
-- ARGV[8] HSCAN cursor over the active hash, ARGV[9] HSCAN COUNT, ARGV[10..] dead instance ids
-- and lease tokens (tokens contain dots, instance ids do not).
-- Returns {next cursor ("0" when the scan is complete), leases returned}.
local now = now_ms()
local dead = {}
for i = 10, #ARGV do
  dead[ARGV[i]] = true
end
local scan = redis.call('HSCAN', KEYS[K_ACTIVE], ARGV[8], 'COUNT', ARGV[9])
local entries, moved = scan[2], 0
for i = 1, #entries, 2 do
  local ulid, token = entries[i], parse_lease(entries[i + 1])
  local instance = string.match(token, '^([^.]+)%.')
  if (instance and dead[instance]) or dead[token] then
    take_back(ulid, now)
    moved = moved + 1
  end
end
return { scan[1], moved }
