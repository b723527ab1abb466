-- fail: records a failed attempt reported by its worker, then retries or buries the job.
-- KEYS: the queue keys (lib.lua).
-- ARGV[7] ULID, ARGV[8] lease token, ARGV[9] error, ARGV[10] retryable (1/0),
-- ARGV[11] retry_after ms or -1 for the job's backoff, ARGV[12] random in [0, 1) for jitter.
-- Returns {code, state, run_at_ms}: code as check_lease; state and run_at as attempt_failed.
local ulid, token, err = ARGV[7], ARGV[8], ARGV[9]
local code, started, attempt = check_lease(ulid, token)
if code ~= 1 then
  return { code, 0, 0 }
end
local now = now_ms()
drop_lease(ulid)
local state, run_at = attempt_failed(ulid, load(ulid), started, attempt, err, ARGV[10] == '1',
  tonumber(ARGV[11]), tonumber(ARGV[12]), now)
return { 1, state, run_at }
