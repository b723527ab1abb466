-- session_sweep: expires sessions idle past their TTL. A session that still holds jobs (pending,
-- released or running) never expires: its expiry moves one TTL on instead. Bounded per call.
-- Touches (here or in the lib.lua helpers it calls) the queue keys sessions, session_state,
-- session_jobs, session_ttl.
-- KEYS: the queue keys (lib.lua). Returns the names of the sessions deleted.
local now = now_ms()
local deleted = {}
for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[K_SESSION_TTL], '-inf', now, 'LIMIT', 0, BATCH)) do
  local meta = load_session(name)
  if not meta then
    redis.call('ZREM', KEYS[K_SESSION_TTL], name)
  elseif meta[M_STARTED] > 0 or meta[M_QUEUED] > 0 or session_head(name, meta) then
    redis.call('ZADD', KEYS[K_SESSION_TTL], now + meta[M_TTL], name)
  else
    redis.call('HDEL', KEYS[K_SESSIONS], name)
    redis.call('HDEL', KEYS[K_SESSION_STATE], name)
    redis.call('ZREM', KEYS[K_SESSION_TTL], name)
    deleted[#deleted + 1] = name
  end
end
return deleted
