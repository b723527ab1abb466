-- extend: moves the deadline of a held attempt to now + ARGV[10] ms.
-- Touches (here or in the lib.lua helpers it calls) the queue keys jobs, active, deadlines.
-- KEYS: the queue keys (lib.lua). ARGV[8] ULID, ARGV[9] lease token, ARGV[10] extension ms.
-- Returns {code, deadline_ms}: code as check_lease.
local ulid, token = ARGV[8], ARGV[9]
local code = check_lease(ulid, token)
if code ~= 1 then
  return { code, 0 }
end
local deadline = now_ms() + tonumber(ARGV[10])
redis.call('ZADD', KEYS[K_DEADLINES], deadline, ulid)
return { 1, deadline }
