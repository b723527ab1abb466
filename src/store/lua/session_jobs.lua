-- session_jobs: a page of the jobs still pending inside a session, in the order it will release
-- them (add order). Read-only. Bounded: at most ARGV[10] + 1 members are read.
-- Touches (here or in the lib.lua helpers it calls) the queue keys jobs, sessions, session_jobs.
-- KEYS: the queue keys (lib.lua). ARGV[8] name, ARGV[9] the page's cursor: the "seq/ULID" of
-- the last job of the previous page ('' from the start), ARGV[10] jobs per page (1 to 1000).
-- Returns {exists (1/0), flat {"seq/ULID", record or false, ...}, more (1/0)}: a member whose
-- record is missing is listed with false.
local name = ARGV[8]
local meta = load_session(name)
if not meta then
  return { 0, {}, 0 }
end
local count = math.min(math.max(tonumber(ARGV[10]) or 1, 1), 1000)
local lo, hi = session_range(name, meta[M_SINCE])
local after = ARGV[9]
local after_seq = tonumber(string.match(after, '^(%d+)/'))
-- A cursor before the session's own jobs (a session of the name deleted since) starts afresh.
if after_seq and after_seq > meta[M_SINCE] then
  lo = '(' .. name .. '/' .. after
end
local members = redis.call('ZRANGEBYLEX', KEYS[K_SESSION_JOBS], lo, hi, 'LIMIT', 0, count + 1)
local out = {}
local prefix = #name + 2
for i = 1, math.min(#members, count) do
  local member = members[i]
  out[#out + 1] = string.sub(member, prefix)
  out[#out + 1] = redis.call('HGET', KEYS[K_JOBS], (string.match(member, '/([^/]+)$'))) or false
end
return { 1, out, #members > count and 1 or 0 }
