-- add: stores one new job and makes it ready or delayed, in one step.
-- KEYS: the queue keys (lib.lua), then KEYS[19] = the idempotency tombstone when a key was given.
-- ARGV[7] ULID, ARGV[8] packed record (state WAITING), ARGV[9] priority,
-- ARGV[10] delay ms or -1, ARGV[11] run_at epoch ms or -1, ARGV[12] idempotency window ms.
-- Returns {1, ULID} when added, {0, first ULID} when the idempotency key was already seen.
-- The tombstone outlives the job's retention on purpose: a repeat inside the window is a
-- duplicate even after the first job is gone.
local ulid, raw, priority = ARGV[7], ARGV[8], tonumber(ARGV[9])
local delay, run_at = tonumber(ARGV[10]), tonumber(ARGV[11])
if KEYS[19] then
  local first = redis.call('GET', KEYS[19])
  if first then
    return { 0, first }
  end
  redis.call('SET', KEYS[19], ulid, 'PX', ARGV[12])
end
local now = now_ms()
local due = run_at
if delay >= 0 then
  due = now + delay
end
if due > now then
  make_delayed(ulid, cmsgpack.unpack(raw), due, S_DELAYED)
  return { 1, ulid }
end
redis.call('HSET', KEYS[K_JOBS], ulid, raw)
if redis.call('RPUSH', ready_key(priority), ulid) == 1 then
  wake()
end
return { 1, ulid }
