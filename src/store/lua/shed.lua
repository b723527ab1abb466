-- shed: under memory pressure, drops one bounded batch of the queue's retained history: of the
-- first kind, in this order, that has any to drop,
--   1. events beyond the ARGV[9] most recent (whole stream nodes, at most ARGV[8] entries),
--   2. the oldest retained completed jobs, with their results (at most ARGV[8]),
--   3. the oldest retained cancelled jobs (at most ARGV[8]),
--   4. only when ARGV[10] is 1, the oldest dead jobs (at most ARGV[8]).
-- Nothing waiting, delayed, active or pending in a session is ever touched, and idempotency
-- tombstones stay. Each drop is counted in meta, as the retention counts dead_evicted:
-- completed_shed, cancelled_shed, dead_shed (jobs), events_shed (stream entries).
-- Touches (here or in the lib.lua helpers it calls) the queue keys jobs, completed, dead, meta,
-- events, cancelled, outcomes.
-- KEYS: the queue keys (lib.lua). ARGV[8] the batch, from 100 to 1000 (a stream node holds up
-- to 100 entries and is trimmed whole or not at all), ARGV[9] events kept, ARGV[10] dead jobs
-- too (1/0).
-- Returns {kind, count}: kind 0 nothing left to shed (count 0), 1 events, 2 completed,
-- 3 cancelled, 4 dead.
-- Runs when Redis is out of memory (allow-oom): it only frees.
local batch = ARGV[8]
local trimmed = redis.call('XTRIM', KEYS[K_EVENTS], 'MAXLEN', '~', ARGV[9], 'LIMIT', batch)
if trimmed > 0 then
  redis.call('HINCRBY', KEYS[K_META], 'events_shed', trimmed)
  return { 1, trimmed }
end
local completed = redis.call('LPOP', KEYS[K_COMPLETED], batch)
if completed then
  redis.call('HDEL', KEYS[K_JOBS], unpack(completed))
  redis.call('HDEL', KEYS[K_OUTCOMES], unpack(completed))
  redis.call('HINCRBY', KEYS[K_META], 'completed_shed', #completed)
  return { 2, #completed }
end
-- The oldest members of a finished set, dropped with their records; nil when it is empty.
local function drop_oldest(set_key, counter, kind)
  local ids = redis.call('ZRANGE', set_key, '0', int_text(tonumber(batch) - 1))
  if #ids == 0 then
    return nil
  end
  redis.call('ZREM', set_key, unpack(ids))
  redis.call('HDEL', KEYS[K_JOBS], unpack(ids))
  redis.call('HINCRBY', KEYS[K_META], counter, #ids)
  return { kind, #ids }
end
return drop_oldest(KEYS[K_CANCELLED], 'cancelled_shed', 3)
  or (ARGV[10] == '1' and drop_oldest(KEYS[K_DEAD], 'dead_shed', 4))
  or { 0, 0 }
