-- doctor_unplace: takes a job out of one place where it does not belong: its record is gone,
-- its record's state does not fit the place, or it is also in a place that outranks this one
-- and fits it too (active, then ready, then delayed, then pending). A job listed twice in the
-- ready lists or the completed list keeps its first entry. A deadline belongs to an active job,
-- an outcome to a job in the completed list. Everything is checked again here first, so a job
-- that moved on since the doctor saw it is left alone. Bounded: a few lookups, and LPOS/LREM of
-- one job over the lists (O(list length), no more than the list itself).
-- Touches the queue keys jobs and outcomes (read), active, deadlines, delayed, completed, dead,
-- session_jobs, cancelled, outcomes, ready lists.
-- KEYS: the queue keys (lib.lua).
-- ARGV[8] 'check' (change nothing) or 'fix', ARGV[9] the place: ready, delayed, active,
-- completed, dead, cancelled, pending, deadlines or outcomes; ARGV[10] the job's ULID (for
-- pending: its member "name/seq/ULID").
-- Returns 1 when the job did not belong there (with 'fix': it was taken out), else 0.
local fix, place, subject = ARGV[8] == 'fix', ARGV[9], ARGV[10]
local ulid = place == 'pending' and string.match(subject, '/([^/]+)$') or subject
local rec = load_any(ulid)
local state = rec and rec[R_STATE]
local FITS = {
  active = { [S_WAITING] = true, [S_DELAYED] = true, [S_RETRYING] = true },
  ready = { [S_WAITING] = true },
  -- A waiting one too: written in its ready form ahead of its ready time (ready_form_priority).
  delayed = { [S_DELAYED] = true, [S_RETRYING] = true, [S_WAITING] = true },
  pending = { [S_WAITING] = true, [S_DELAYED] = true },
  completed = { [S_COMPLETED] = true },
  dead = { [S_DEAD] = true },
  cancelled = { [S_CANCELLED] = true },
}
local SETS = { delayed = K_DELAYED, dead = K_DEAD, cancelled = K_CANCELLED }
local lists = place == 'completed' and { KEYS[K_COMPLETED] } or {}
if place == 'ready' then
  for i = K_READY, K_READY + 10 do
    lists[#lists + 1] = KEYS[i]
  end
end

local function occurrences(key)
  return #redis.call('LPOS', key, ulid, 'COUNT', '0')
end
local function in_ready()
  for i = K_READY, K_READY + 10 do
    if occurrences(KEYS[i]) > 0 then
      return true
    end
  end
  return false
end
local function present(where)
  if where == 'active' then
    return redis.call('HEXISTS', KEYS[K_ACTIVE], ulid) == 1
  elseif where == 'ready' then
    return in_ready()
  elseif where == 'pending' then
    return redis.call('ZSCORE', KEYS[K_SESSION_JOBS], subject) ~= false
  end
  return redis.call('ZSCORE', KEYS[SETS[where]], ulid) ~= false
end

if place == 'deadlines' then
  local wrong = redis.call('ZSCORE', KEYS[K_DEADLINES], ulid) ~= false and not present('active')
  if wrong and fix then
    redis.call('ZREM', KEYS[K_DEADLINES], ulid)
  end
  return wrong and 1 or 0
end
if place == 'outcomes' then
  local wrong = redis.call('HEXISTS', KEYS[K_OUTCOMES], ulid) == 1 and occurrences(KEYS[K_COMPLETED]) == 0
  if wrong and fix then
    redis.call('HDEL', KEYS[K_OUTCOMES], ulid)
  end
  return wrong and 1 or 0
end

local count = 0
if #lists > 0 then
  for _, key in ipairs(lists) do
    count = count + occurrences(key)
  end
elseif present(place) then
  count = 1
end
if count == 0 then
  return 0
end
local fits = state and FITS[place][state]
local outranked = false
for _, higher in ipairs({ 'active', 'ready', 'delayed' }) do
  if higher == place then
    break
  end
  if FITS[higher][state] and present(higher) then
    outranked = true
  end
end
local keep = fits and not outranked
if keep and count == 1 then
  return 0
end
if not fix then
  return 1
end
if #lists > 0 then
  -- The first entry stays when the job belongs here; every other goes.
  for _, key in ipairs(lists) do
    local n = occurrences(key)
    if keep and n > 0 then
      if n > 1 then
        redis.call('LREM', key, int_text(1 - n), ulid)
      end
      keep = false
    elseif n > 0 then
      redis.call('LREM', key, '0', ulid)
    end
  end
elseif place == 'active' then
  drop_lease(ulid)
elseif place == 'pending' then
  redis.call('ZREM', KEYS[K_SESSION_JOBS], subject)
else
  redis.call('ZREM', KEYS[SETS[place]], ulid)
end
return 1
