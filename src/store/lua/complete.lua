-- complete: acknowledges a batch of finished attempts; each entry is checked and applied on its
-- own, so one stale token does not hold back the others.
-- KEYS: the queue keys (lib.lua).
-- ARGV[7..] triples {ULID, lease token, result}.
-- Returns one code per triple: 1 completed, 0 unknown job, -1 stale token (nothing changed).
-- With a completed cap or window of 0, results are not retained and the record goes at once.
local now = now_ms()
local codes = {}
for i = 7, #ARGV, 3 do
  local ulid, token, result = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local code, started, attempt = check_lease(ulid, token)
  if code == 1 then
    drop_lease(ulid)
    if COMPLETED_CAP <= 0 or COMPLETED_MS <= 0 then
      redis.call('HDEL', KEYS[K_JOBS], ulid)
    else
      local rec = load(ulid)
      rec[R_STATE] = S_COMPLETED
      rec[R_ATTEMPTS] = attempt
      rec[R_STARTED] = started
      rec[R_FINISHED] = now
      rec[R_RESULT] = result
      save(ulid, rec)
      redis.call('ZADD', KEYS[K_COMPLETED], now, ulid)
    end
  end
  codes[#codes + 1] = code
end
trim(KEYS[K_COMPLETED], now, COMPLETED_MS, COMPLETED_CAP)
return codes
