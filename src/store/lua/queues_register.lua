-- queues_register (global): puts queues in the registry of queues (what the reaper, the session
-- sweep and ListQueues walk); a queue already in it stays as it is.
-- KEYS[1] the queue registry (set), KEYS[2] the shards the registry took in (set, for the count
-- of queue_admit.lua). ARGV[1] how many of the names that follow are shards of sharded queues
-- (`Q~n`, put last), ARGV[2..] the queue names (at least one), any number of them.
-- Returns how many were new.
-- Runs when Redis is out of memory (allow-oom): the heartbeat's discovery registers the queues
-- it finds every round, and a queue left out would not be reaped. It only ever holds the names
-- of queues that have keys.
local shards = tonumber(ARGV[1])
local added = 0
for i = 2, #ARGV, CHUNK do
  added = added + redis.call('SADD', KEYS[1], unpack(ARGV, i, math.min(i + CHUNK - 1, #ARGV)))
end
for i = #ARGV - shards + 1, #ARGV, CHUNK do
  redis.call('SADD', KEYS[2], unpack(ARGV, i, math.min(i + CHUNK - 1, #ARGV)))
end
return added
