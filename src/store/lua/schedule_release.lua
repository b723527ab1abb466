-- schedule_release: makes the queue's due delayed jobs ready, as a lease round does first
-- (promote_due in lib.lua), without a worker stream: the timer (queue/schedules/timer.rs) calls
-- it at the due time of the fires it claimed ahead of time, whose jobs wait delayed until then,
-- so they are ready on time whether or not a worker is connected.
-- KEYS: the queue keys (lib.lua), then KEYS[32] and KEYS[33] as every schedule function's
-- (schedules_lib.lua; not touched).
-- ARGV[8] the caller's clock (ms): due times are reckoned by the firing instance's clock, so
-- what is due by it is made ready even while Redis's clock is a little behind.
-- Returns how many jobs it made ready: at most 100 (BATCH); when it made 100, more may be due.
local _, promoted = promote_due(math.max(now_ms(), tonumber(ARGV[8]) or 0))
return promoted
