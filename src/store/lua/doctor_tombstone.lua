-- doctor_tombstone: mends one idempotency tombstone bucket (store/tombstones.rs), checking the
-- condition again first, so that what a live server wrote since the doctor read it is left
-- alone. 'expiry': a bucket with no expiry, or a later one than its name says, is given the one
-- its name says (a time already past drops it). 'entry': a tombstone whose value is not a ULID
-- is dropped.
-- Touches only the bucket.
-- KEYS: the queue keys (lib.lua), then KEYS[28] the bucket.
-- ARGV[8] 'check' (change nothing) or 'fix', ARGV[9] 'expiry' or 'entry', ARGV[10] the expiry
-- its name says (epoch ms) or the tombstone's field (the digest of its key).
-- Returns 1 when the condition held (with 'fix': it was mended), else 0.
local bucket, what, arg = KEYS[K_READY + 11], ARGV[9], ARGV[10]
local held, mend
if what == 'expiry' then
  -- -1: no expiry; -2: the bucket is gone.
  local at = redis.call('PEXPIRETIME', bucket)
  held = at == -1 or at > tonumber(arg)
  mend = { 'PEXPIREAT', bucket, arg }
else
  local value = redis.call('HGET', bucket, arg)
  held = value and not (string.match(value, '^[0-7][0-9A-HJKMNP-TV-Z]+$') and #value == 26)
  mend = { 'HDEL', bucket, arg }
end
if held and ARGV[8] == 'fix' then
  redis.call(unpack(mend))
end
return held and 1 or 0
