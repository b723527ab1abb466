-- info: one job's record, its lease while active, and the id of the queue's latest event, read
-- together so a watcher can follow events strictly after this snapshot. Read-only.
-- Touches (here or in the lib.lua helpers it calls) the queue keys jobs, active, events, outcomes.
-- KEYS: the queue keys (lib.lua). ARGV[8] ULID.
-- Returns {record or false, lease or false, last event id or "0-0", outcome or false}.
local ulid = ARGV[8]
local last = redis.call('XREVRANGE', KEYS[K_EVENTS], '+', '-', 'COUNT', 1)
return { redis.call('HGET', KEYS[K_JOBS], ulid) or false,
  redis.call('HGET', KEYS[K_ACTIVE], ulid) or false,
  last[1] and last[1][1] or '0-0',
  redis.call('HGET', KEYS[K_OUTCOMES], ulid) or false }
