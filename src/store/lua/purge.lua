-- purge: removes up to ARGV[9] jobs of the states listed in ARGV[8] (any of "waiting",
-- "delayed", "completed", "dead", "cancelled"; active jobs are never purged). Waiting and
-- delayed include jobs still pending inside sessions. Call again until it returns 0.
-- Touches (here or in the lib.lua helpers it calls) the queue keys jobs, delayed, completed, dead,
-- events, sessions, session_jobs, session_ttl, cancelled, outcomes, ready lists; may publish a
-- wake-up on ARGV[1].
-- KEYS: the queue keys (lib.lua). Returns how many jobs were removed.
local now = now_ms()
local want, left = {}, tonumber(ARGV[9])
for state in string.gmatch(ARGV[8], '[^,]+') do
  want[state] = true
end
local removed = 0
local function drop(ulid, dropped_from_session)
  local rec = dropped_from_session and load(ulid)
  if rec then
    session_moved(rec, now, false, false, false, true)
  end
  redis.call('HDEL', KEYS[K_JOBS], ulid)
  redis.call('HDEL', KEYS[K_OUTCOMES], ulid)
  removed = removed + 1
  left = left - 1
end
if want.completed and left > 0 then
  for _, ulid in ipairs(redis.call('LPOP', KEYS[K_COMPLETED], left) or {}) do
    drop(ulid, false)
  end
end
local sets = { dead = K_DEAD, cancelled = K_CANCELLED, delayed = K_DELAYED }
for state, k in pairs(sets) do
  if want[state] and left > 0 then
    local ids = redis.call('ZRANGE', KEYS[k], 0, left - 1)
    if #ids > 0 then
      redis.call('ZREM', KEYS[k], unpack(ids))
      for _, ulid in ipairs(ids) do
        drop(ulid, k == K_DELAYED)
      end
    end
  end
end
if want.waiting then
  for priority = 5, -5, -1 do
    if left <= 0 then
      break
    end
    local ids = redis.call('LPOP', ready_key(priority), left)
    for _, ulid in ipairs(ids or {}) do
      drop(ulid, true)
    end
  end
end
if (want.waiting or want.delayed) and left > 0 then
  local members = redis.call('ZRANGE', KEYS[K_SESSION_JOBS], 0, left - 1)
  if #members > 0 then
    redis.call('ZREM', KEYS[K_SESSION_JOBS], unpack(members))
    for _, member in ipairs(members) do
      drop(string.match(member, '/([^/]+)$'), false)
    end
  end
end
return removed
