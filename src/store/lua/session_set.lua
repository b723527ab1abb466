-- session_set: replaces a session's state if its version is still the one the caller read
-- (compare-and-set); the version goes up by one.
-- Touches (here or in the lib.lua helpers it calls) the queue keys sessions, session_state,
-- session_ttl.
-- KEYS: the queue keys (lib.lua). ARGV[8] name, ARGV[9] state JSON, ARGV[10] expected version.
-- Returns {1, new version}, {0, 0} when the session is unknown, {-1, current version} on a
-- version mismatch (nothing written).
local name = ARGV[8]
local meta = load_session(name)
if not meta then
  return { 0, 0 }
end
if meta[M_VERSION] ~= tonumber(ARGV[10]) then
  return { -1, meta[M_VERSION] }
end
meta[M_VERSION] = meta[M_VERSION] + 1
redis.call('HSET', KEYS[K_SESSION_STATE], name, ARGV[9])
save_session(name, meta, now_ms())
return { 1, meta[M_VERSION] }
