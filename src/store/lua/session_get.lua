-- session_get: one session's meta, state and the count of its jobs still pending. Read-only.
-- Touches (here or in the lib.lua helpers it calls) the queue keys sessions, session_state,
-- session_jobs.
-- KEYS: the queue keys (lib.lua). ARGV[8] name.
-- Returns {packed meta or false, state or false, pending jobs, now}.
local name = ARGV[8]
local pending = redis.call('ZLEXCOUNT', KEYS[K_SESSION_JOBS], '[' .. name .. '/', '[' .. name .. '/\255')
return { redis.call('HGET', KEYS[K_SESSIONS], name) or false,
  redis.call('HGET', KEYS[K_SESSION_STATE], name) or false, pending, now_ms() }
