-- schedule_pause: pauses a schedule (ARGV[9] '1') or resumes it ('0'). A paused schedule is
-- never fired (schedule_fire); the due times that pass meanwhile stay owed, and on resume the
-- firing instance applies the schedule's missed-fire policy to them. A pause withdraws the job
-- of a fire claimed ahead of a due time still to come (withdraw_staged), so no job of the paused
-- schedule runs after the pause.
-- KEYS: the queue keys (lib.lua), then KEYS[32] the queue's schedules hash and KEYS[33] its fire
-- state hash (schedules_lib.lua).
-- ARGV[8] name, ARGV[9] '1' pause or '0' resume, ARGV[10] notice channel.
-- Publishes `queue/name` on ARGV[10] when the schedule changed.
-- Returns 1 changed, 0 already so, -1 no such schedule.
local name, paused = ARGV[8], tonumber(ARGV[9])
local def, state, old = load_schedule(name)
if not def then
  return -1
end
if state[SC_PAUSED] == paused then
  return 0
end
state[SC_PAUSED] = paused
if paused == 1 then
  withdraw_staged(state, now_ms())
end
if old then
  save_definition(name, def)
end
save_state(name, state)
redis.call('PUBLISH', ARGV[10], ARGV[2] .. '/' .. ARGV[8])
return 1
