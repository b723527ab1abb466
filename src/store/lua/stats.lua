-- stats: one consistent snapshot of a queue's figures. Read-only (no-writes: it answers when
-- Redis is out of memory).
-- Touches (here or in the lib.lua helpers it calls) the queue keys jobs, active, delayed,
-- completed, dead, meta, sessions, session_jobs, cancelled, settings, keyed, key_due, key_parked,
-- ready lists.
-- KEYS: the queue keys (lib.lua).
-- Returns {waiting, delayed, active, completed, dead, dead_evicted, paused (1/0),
--          oldest ready-since ms or -1, now ms, cancelled, sessions, session-pending jobs,
--          completed_shed, cancelled_shed, dead_shed, events_shed (see shed.lua),
--          the queue's concurrency cap or -1 for none, jobs held by a rate limit (-1: all
--          waiting ones, the queue's rate lets none go now), jobs held by their concurrency
--          key's cap, keys with waiting jobs (LIMITS.held in limits_lib.lua)}.
-- Jobs still pending inside their session count as waiting (or delayed) only once released;
-- they are reported apart.
local waiting, oldest = 0, -1
for priority = 5, -5, -1 do
  local key = ready_key(priority)
  local len = redis.call('LLEN', key)
  if len > 0 then
    waiting = waiting + len
    local rec = load(redis.call('LINDEX', key, 0))
    if rec then
      local since = rec[R_READY_AT] or rec[R_CREATED]
      if oldest < 0 or since < oldest then
        oldest = since
      end
    end
  end
end
-- Ready jobs with a rate or concurrency key wait among the keyed jobs.
waiting = waiting + redis.call('ZCARD', KEYS[K_KEYED])
local held_by_rate, held_by_key_cap, waiting_keys = LIMITS.held(now_ms())
local counters = redis.call('HMGET', KEYS[K_META], 'dead_evicted', 'completed_shed', 'cancelled_shed', 'dead_shed',
  'events_shed')
for i = 1, #counters do
  counters[i] = tonumber(counters[i] or '0')
end
return {
  waiting,
  redis.call('ZCARD', KEYS[K_DELAYED]),
  redis.call('HLEN', KEYS[K_ACTIVE]),
  redis.call('LLEN', KEYS[K_COMPLETED]),
  redis.call('ZCARD', KEYS[K_DEAD]),
  counters[1],
  redis.call('HEXISTS', KEYS[K_META], 'paused'),
  oldest,
  now_ms(),
  redis.call('ZCARD', KEYS[K_CANCELLED]),
  redis.call('HLEN', KEYS[K_SESSIONS]),
  redis.call('ZCARD', KEYS[K_SESSION_JOBS]),
  counters[2],
  counters[3],
  counters[4],
  counters[5],
  tonumber(redis.call('HGET', KEYS[K_SETTINGS], SET_CONCURRENCY) or '-1'),
  held_by_rate,
  held_by_key_cap,
  waiting_keys,
}
