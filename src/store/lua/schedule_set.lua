-- schedule_set: creates a schedule, or replaces the definition of the one of that name.
-- KEYS: the queue keys (lib.lua), then KEYS[28] the queue's schedules hash (schedules_lib.lua).
-- ARGV[8] name, ARGV[9] spec (JSON text), ARGV[10] template (packed job record), ARGV[11] now
-- (ms, the caller's clock: the one its due times are reckoned by), ARGV[12] notice channel.
-- A new schedule starts at revision 1, not paused, fired through ARGV[11]: no due time before
-- its creation is owed. A replaced one keeps its pause, its counts, its last job and how far it
-- fired, moved up to ARGV[11] (a changed timetable owes nothing from before the change); its
-- revision goes up by one, so a fire computed from the old definition is refused.
-- Publishes `queue/name` on ARGV[12].
-- Returns {1 created or 0 replaced, the schedule as stored (packed)}.
local name, now = ARGV[8], tonumber(ARGV[11])
local s = load_schedule(name)
local created = 0
if not s then
  created = 1
  s = { 0, 0, now, 0, '', 0, 0, '', '', now, now }
end
s[SC_REVISION] = s[SC_REVISION] + 1
s[SC_THROUGH] = math.max(s[SC_THROUGH], now)
s[SC_SPEC] = ARGV[9]
s[SC_TEMPLATE] = ARGV[10]
s[SC_UPDATED] = now
local raw = save_schedule(name, s)
redis.call('PUBLISH', ARGV[12], ARGV[2] .. '/' .. ARGV[8])
return { created, raw }
