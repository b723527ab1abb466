-- schedule_set: creates a schedule, or replaces the definition of the one of that name.
-- KEYS: the queue keys (lib.lua), then KEYS[32] the queue's schedules hash and KEYS[33] its fire
-- state hash (schedules_lib.lua).
-- ARGV[8] name, ARGV[9] spec (JSON text), ARGV[10] template (packed job record), ARGV[11] now
-- (ms, the caller's clock: the one its due times are reckoned by), ARGV[12] notice channel.
-- A new schedule starts at revision 1, not paused, fired through ARGV[11]: no due time before
-- its creation is owed. A replaced one keeps its pause, its counts, its last job and how far it
-- fired, moved up to ARGV[11] (a changed timetable owes nothing from before the change); its
-- revision goes up by one, so a fire computed from the old definition is refused, and the job of
-- a fire claimed ahead of a due time after ARGV[11] is withdrawn (withdraw_staged): the new
-- definition decides that time. Either is written in the current layout (schedules_lib.lua).
-- Publishes `queue/name` on ARGV[12].
-- Returns {1 created or 0 replaced, the definition as stored, the fire state as stored}.
local name, now = ARGV[8], tonumber(ARGV[11])
local def, state = load_schedule(name)
local created = 0
if not def then
  created = 1
  def = { 0, '', '', false, '', now, now }
  state = { 0, 0, now, 0, '', 0, 0, 0 }
else
  withdraw_staged(state, now)
end
state[SC_REVISION] = state[SC_REVISION] + 1
state[SC_THROUGH] = math.max(state[SC_THROUGH], now)
def[DF_REVISION] = state[SC_REVISION]
def[DF_HEAD], def[DF_TAIL], def[DF_READY] = job_form(ARGV[10])
def[DF_SPEC] = ARGV[9]
def[DF_UPDATED] = now
local raw = save_definition(name, def)
local packed = save_state(name, state)
redis.call('PUBLISH', ARGV[12], ARGV[2] .. '/' .. ARGV[8])
return { created, raw, packed }
