-- schedule_trigger: adds one job from a schedule's template now, whatever its timetable, pause
-- or overlap policy; how far it has fired is unchanged.
-- KEYS: the queue keys (lib.lua), then KEYS[28] the queue's schedules hash (schedules_lib.lua).
-- ARGV[8] name, ARGV[9] the job's ULID.
-- Returns 1 when the job was added, 0 when there is no such schedule.
start_scheduled()
local name = ARGV[8]
local s = load_schedule(name)
if not s then
  return 0
end
local now = now_ms()
add_from_template(s, unpack_record(s[SC_TEMPLATE]), ARGV[9], now, now, now)
write_scheduled()
save_schedule(name, s)
return 1
