-- schedule_delete: deletes a schedule; the jobs it added stay.
-- KEYS: the queue keys (lib.lua), then KEYS[28] the queue's schedules hash (schedules_lib.lua).
-- ARGV[8] name, ARGV[9] notice channel.
-- Publishes `queue/name` on ARGV[9] when there was one.
-- Returns 1 deleted, 0 no such schedule.
local deleted = redis.call('HDEL', KEYS[K_SCHEDULES], ARGV[8])
if deleted == 1 then
  redis.call('PUBLISH', ARGV[9], ARGV[2] .. '/' .. ARGV[8])
end
return deleted
