-- session_get: one session's meta, state and the count of its jobs still pending. Read-only.
-- Touches (here or in the lib.lua helpers it calls) the queue keys sessions, session_state,
-- session_jobs.
-- KEYS: the queue keys (lib.lua). ARGV[8] name.
-- Returns {packed meta (followed by the session's M_SINCE) or false, state or false, pending
-- jobs, now}.
local name = ARGV[8]
local meta = load_session(name)
local pending = 0
if meta then
  local lo, hi = session_range(name, meta[M_SINCE])
  pending = redis.call('ZLEXCOUNT', KEYS[K_SESSION_JOBS], lo, hi)
end
return { redis.call('HGET', KEYS[K_SESSIONS], name) or false,
  redis.call('HGET', KEYS[K_SESSION_STATE], name) or false, pending, now_ms() }
