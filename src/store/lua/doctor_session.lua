-- doctor_session: mends one session's bookkeeping as the doctor saw it. 'counts': the session
-- counts started and queued jobs that differ from the jobs the doctor found; set to the found
-- ones only while the session is still as the doctor saw it, last updated at the same time
-- (every move of one of its jobs updates it: a session that moved on meanwhile is left alone),
-- then the session releases its next job if it has room. 'seq': the
-- queue's session sequence is behind a sequence number in use; raised to it (never lowered).
-- 'keys': a state or expiry entry of a name with no session is dropped, and a session with no
-- expiry entry gets one (one TTL from now).
-- Touches (here or in the lib.lua helpers it calls) the queue keys jobs, meta, events,
-- sessions, session_state, session_jobs, session_ttl, delayed, ready lists; may publish a
-- wake-up on ARGV[1].
-- KEYS: the queue keys (lib.lua).
-- ARGV[8] 'check' (change nothing) or 'fix', ARGV[9] 'counts', 'seq' or 'keys', ARGV[10] the
-- session's name (for 'seq': the sequence number in use); for 'counts' ARGV[11..15]: last
-- update (ms), started and queued as seen, started and queued as found.
-- Returns 1 when there was something to mend (with 'fix': it was mended), else 0.
local fix, what, name = ARGV[8] == 'fix', ARGV[9], ARGV[10]
if what == 'seq' then
  local at_least = tonumber(name)
  if tonumber(redis.call('HGET', KEYS[K_META], 'session_seq') or '0') >= at_least then
    return 0
  end
  if fix then
    redis.call('HSET', KEYS[K_META], 'session_seq', name)
  end
  return 1
end
local meta = load_session(name)
if what == 'counts' then
  local seen = meta and meta[M_UPDATED] == tonumber(ARGV[11])
  if not seen or meta[M_STARTED] ~= tonumber(ARGV[12]) or meta[M_QUEUED] ~= tonumber(ARGV[13]) then
    return 0
  end
  if fix then
    local now = now_ms()
    meta[M_STARTED], meta[M_QUEUED] = tonumber(ARGV[14]), tonumber(ARGV[15])
    session_pump(name, meta, now)
    save_session(name, meta, now)
  end
  return 1
end
local has_state = redis.call('HEXISTS', KEYS[K_SESSION_STATE], name) == 1
local expiry = redis.call('ZSCORE', KEYS[K_SESSION_TTL], name)
if meta and expiry then
  return 0
end
if not meta and not has_state and not expiry then
  return 0
end
if fix then
  if meta then
    redis.call('ZADD', KEYS[K_SESSION_TTL], now_ms() + meta[M_TTL], name)
  else
    redis.call('HDEL', KEYS[K_SESSION_STATE], name)
    redis.call('ZREM', KEYS[K_SESSION_TTL], name)
  end
end
return 1
