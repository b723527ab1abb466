-- session_delete: deletes a session: its state at once, then (this call and the next ones) up to
-- ARGV[9] of its jobs still pending inside it. Released jobs that have not started end cancelled
-- when they would start; its active jobs can no longer change anything (see complete.lua), not
-- even in a session created later under the same name (see M_SINCE in lib.lua).
-- Touches (here or in the lib.lua helpers it calls) the queue keys jobs, sessions, session_state,
-- session_jobs, session_ttl.
-- KEYS: the queue keys (lib.lua). ARGV[8] name, ARGV[9] batch.
-- Returns {existed (1/0), pending jobs removed, pending jobs left}.
local name = ARGV[8]
local existed = redis.call('HDEL', KEYS[K_SESSIONS], name)
redis.call('HDEL', KEYS[K_SESSION_STATE], name)
redis.call('ZREM', KEYS[K_SESSION_TTL], name)
local lo, hi = '[' .. name .. '/', '[' .. name .. '/\255'
local members = redis.call('ZRANGEBYLEX', KEYS[K_SESSION_JOBS], lo, hi, 'LIMIT', 0, tonumber(ARGV[9]))
if #members > 0 then
  redis.call('ZREM', KEYS[K_SESSION_JOBS], unpack(members))
  for _, member in ipairs(members) do
    redis.call('HDEL', KEYS[K_JOBS], (string.match(member, '/([^/]+)$')))
  end
end
return { existed, #members, redis.call('ZLEXCOUNT', KEYS[K_SESSION_JOBS], lo, hi) }
