-- progress: stores a held attempt's progress report and emits it as an event.
-- Touches (here or in the lib.lua helpers it calls) the queue keys jobs, active, events.
-- KEYS: the queue keys (lib.lua). ARGV[8] ULID, ARGV[9] lease token, ARGV[10] progress bytes.
-- Returns code as check_lease.
local ulid, token, progress = ARGV[8], ARGV[9], ARGV[10]
local code, _, attempt = check_lease(ulid, token)
if code ~= 1 then
  return code
end
local rec = load(ulid)
rec[R_PROGRESS] = progress
save(ulid, rec)
emit(E_PROGRESS, ulid, attempt, '', 0, progress)
return 1
