-- schedule_trigger: adds one job from a schedule's template now, whatever its timetable, pause
-- or overlap policy; how far it has fired is unchanged.
-- KEYS: the queue keys (lib.lua), then KEYS[32] the queue's schedules hash and KEYS[33] its fire
-- state hash (schedules_lib.lua).
-- ARGV[8] name, ARGV[9] the job's ULID.
-- Returns 1 when the job was added, 0 when there is no such schedule.
start_scheduled()
local name = ARGV[8]
local def, state, old = load_schedule(name)
if not def then
  return 0
end
local now = now_ms()
add_from_template(state, def[DF_HEAD], def[DF_TAIL], def[DF_READY], ARGV[9], now, now, now)
write_scheduled()
if old then
  save_definition(name, def)
end
save_state(name, state)
return 1
