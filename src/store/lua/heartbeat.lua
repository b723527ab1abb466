-- heartbeat: proves this instance alive and names the instances that stopped proving it.
-- Global, not per queue (the instance registry is not part of any queue's slot).
-- KEYS[1] the instance registry (zset, member = instance id, score = last heartbeat ms).
-- ARGV[1] this instance's id, ARGV[2] lease TTL ms.
-- Returns {now ms, up to 100 ids whose last heartbeat is older than the TTL}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
return { now, redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]), 'LIMIT', 0, 100) }
