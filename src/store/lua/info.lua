-- info: one job's record and, while it is active, its lease. Read-only.
-- KEYS: the queue keys (lib.lua). ARGV[7] ULID.
-- Returns {record or false, lease or false}.
local ulid = ARGV[7]
return { redis.call('HGET', KEYS[K_JOBS], ulid) or false,
  redis.call('HGET', KEYS[K_ACTIVE], ulid) or false }
