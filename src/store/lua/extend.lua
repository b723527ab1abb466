-- extend: moves the deadline of a held attempt to now + ARGV[9] ms.
-- KEYS: the queue keys (lib.lua). ARGV[7] ULID, ARGV[8] lease token, ARGV[9] extension ms.
-- Returns {code, deadline_ms}: code as check_lease.
local ulid, token = ARGV[7], ARGV[8]
local code = check_lease(ulid, token)
if code ~= 1 then
  return { code, 0 }
end
local deadline = now_ms() + tonumber(ARGV[9])
redis.call('ZADD', KEYS[K_DEADLINES], deadline, ulid)
return { 1, deadline }
