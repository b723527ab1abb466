-- session_create: creates a session of this queue.
-- Touches (here or in the lib.lua helpers it calls) the queue keys meta, sessions,
-- session_state, session_ttl.
-- KEYS: the queue keys (lib.lua). ARGV[8] name, ARGV[9] state JSON, ARGV[10] ttl ms,
-- ARGV[11] max concurrency.
-- Returns {1, now} when created, {0, 0} when the name is taken (nothing written).
local name = ARGV[8]
if redis.call('HEXISTS', KEYS[K_SESSIONS], name) == 1 then
  return { 0, 0 }
end
local now = now_ms()
redis.call('HSET', KEYS[K_SESSION_STATE], name, ARGV[9])
-- Jobs added from now on have greater sequence numbers: those of an earlier session of this
-- name (deleted, but maybe still running) are told apart by it (see M_SINCE).
local since = tonumber(redis.call('HGET', KEYS[K_META], 'session_seq') or '0')
save_session(name, { 1, now, now, tonumber(ARGV[10]), tonumber(ARGV[11]), 0, 0, since }, now)
return { 1, now }
