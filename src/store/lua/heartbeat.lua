-- heartbeat (global): proves this instance alive and names the instances that stopped proving it.
-- Not of a queue: the instance registry is not part of any queue's slot.
-- KEYS[1] the instance registry (zset, member = instance id, score = last heartbeat ms).
-- ARGV[1] this instance's id, ARGV[2] lease TTL ms.
-- Returns {now ms, up to 100 ids whose last heartbeat is older than the TTL}.
-- Runs when Redis is out of memory (allow-oom): an instance that could not heartbeat would take
-- itself for cut off from Redis. It adds one member per instance, dropped when the instance is
-- forgotten.
local now = now_ms()
redis.call('ZADD', KEYS[1], now, ARGV[1])
return { now, redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]), 'LIMIT', 0, 100) }
