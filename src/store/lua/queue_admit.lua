-- queue_admit (global): lets a queue into the registry of queues (what the reaper, the session
-- sweep and ListQueues walk) unless that would make more than the cap: the one check of
-- --max-queues, atomic over every instance because the registry is one key (and the set of its
-- shards, in the same slot).
-- KEYS[1] the queue registry (set), KEYS[2] the shards the registry took in (set).
-- ARGV[1] the cap (distinct queues, at least 1), ARGV[2] the queue, ARGV[3] '1' when it is a
-- shard of a sharded queue (`Q~n`), else '0'.
-- The cap counts queues, not shards: the registry's members less those that are shards
-- (SINTERCARD, so a shard left in KEYS[2] after it left the registry counts for nothing). A
-- shard gets in without the check: its queue (shard 0) was admitted first by the caller.
-- Returns 1 when the queue is in the registry (it was, or it is now), 0 when the registry is at
-- the cap without it (nothing written).
-- Runs when Redis is out of memory (allow-oom): a queue already in costs no write, and a new one
-- adds one member, within the cap.
if redis.call('SISMEMBER', KEYS[1], ARGV[2]) == 1 then
  return 1
end
if ARGV[3] == '1' then
  redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('SADD', KEYS[1], ARGV[2])
  return 1
end
local queues = redis.call('SCARD', KEYS[1]) - redis.call('SINTERCARD', 2, KEYS[1], KEYS[2])
if queues >= tonumber(ARGV[1]) then
  return 0
end
redis.call('SADD', KEYS[1], ARGV[2])
return 1
