-- purge: removes up to ARGV[9] jobs of the states listed in ARGV[8] (any of "waiting",
-- "delayed", "completed", "dead", "cancelled"; active jobs are never purged). Waiting and
-- delayed include jobs still pending inside sessions, each by its own record's state. Those are
-- read from the cursor ARGV[10] on ('' from the start, else the last one the previous call
-- read), at most as many as jobs are still to be removed. Call again with the returned cursor
-- until a call removes nothing and returns the cursor ''.
-- Touches (here or in the lib.lua helpers it calls) the queue keys jobs, delayed, completed, dead,
-- events, sessions, session_jobs, session_ttl, cancelled, outcomes, keyed, key_due, key_parked,
-- ready lists; may publish a wake-up on ARGV[1].
-- KEYS: the queue keys (lib.lua). Returns {jobs removed, cursor}: the cursor is '' once the
-- jobs pending inside sessions are read through (or none were asked for).
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
  -- The keyed jobs, group after group; a group left without jobs leaves key_due and key_parked.
  if left > 0 then
    local members = redis.call('ZRANGE', KEYS[K_KEYED], 0, left - 1)
    if #members > 0 then
      bulk('ZREM', KEYS[K_KEYED], members)
      local groups = {}
      for _, member in ipairs(members) do
        groups[string.sub(member, 1, -46)] = true
        drop(string.sub(member, -26), false)
      end
      for group in pairs(groups) do
        local lo, hi = '[' .. group .. '\0', '[' .. group .. '\0\255'
        if #redis.call('ZRANGEBYLEX', KEYS[K_KEYED], lo, hi, 'LIMIT', '0', '1') == 0 then
          redis.call('ZREM', KEYS[K_KEY_DUE], group)
          redis.call('ZREM', KEYS[K_KEY_PARKED], group)
        end
      end
    end
  end
end
local cursor = ''
if (want.waiting or want.delayed) and left <= 0 then
  cursor = ARGV[10]
elseif want.waiting or want.delayed then
  local limit = left
  local from = ARGV[10] == '' and '-' or '(' .. ARGV[10]
  local members = redis.call('ZRANGEBYLEX', KEYS[K_SESSION_JOBS], from, '+', 'LIMIT', 0, limit)
  local ids = {}
  for i, member in ipairs(members) do
    ids[i] = string.match(member, '/([^/]+)$')
  end
  -- With one of the two states asked for, only the jobs whose record is in it (a member without
  -- a record goes too).
  local raws = not (want.waiting and want.delayed) and hmget(KEYS[K_JOBS], ids)
  local purged, purged_ids = {}, {}
  for i, member in ipairs(members) do
    local state = raws and raws[i] and unpack_record(raws[i])[R_STATE]
    if not state or (want.waiting and state == S_WAITING) or (want.delayed and state == S_DELAYED) then
      purged[#purged + 1] = member
      purged_ids[#purged_ids + 1] = ids[i]
    end
  end
  bulk('ZREM', KEYS[K_SESSION_JOBS], purged)
  for _, ulid in ipairs(purged_ids) do
    drop(ulid, false)
  end
  if #members == limit then
    cursor = members[limit]
  end
end
return { removed, cursor }
