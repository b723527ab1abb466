-- queue_admit (global): lets a queue into the registry of queues (what the reaper, the session
-- sweep and ListQueues walk) unless that would make more than the cap: the one check of
-- --max-queues, atomic over every instance because the registry is one key.
-- KEYS[1] the queue registry (set). ARGV[1] the cap (distinct queues, at least 1), ARGV[2] the
-- queue.
-- Returns 1 when the queue is in the registry (it was, or it is now), 0 when the registry is at
-- the cap without it (nothing written).
-- Runs when Redis is out of memory (allow-oom): a queue already in costs no write, and a new one
-- adds one member, within the cap.
if redis.call('SISMEMBER', KEYS[1], ARGV[2]) == 1 then
  return 1
end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('SADD', KEYS[1], ARGV[2])
return 1
