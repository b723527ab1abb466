-- schedule_delete: deletes a schedule (both its parts, or its one in the old layout); the jobs it
-- added stay, but for the job of a fire claimed ahead of a due time still to come, which is
-- withdrawn (withdraw_staged).
-- KEYS: the queue keys (lib.lua), then KEYS[32] the queue's schedules hash and KEYS[33] its fire
-- state hash (schedules_lib.lua).
-- ARGV[8] name, ARGV[9] notice channel.
-- Publishes `queue/name` on ARGV[9] when there was one.
-- Returns 1 deleted, 0 no such schedule.
local _, state = load_schedule(ARGV[8])
if state then
  withdraw_staged(state, now_ms())
end
local deleted = redis.call('HDEL', KEYS[K_SCHEDULES], ARGV[8])
redis.call('HDEL', KEYS[K_SCHEDULE_STATE], ARGV[8])
if deleted == 1 then
  redis.call('PUBLISH', ARGV[9], ARGV[2] .. '/' .. ARGV[8])
end
return deleted
