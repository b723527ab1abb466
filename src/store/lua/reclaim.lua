-- reclaim: returns to the head of their priority leases that name a live instance which does
-- not hold them (its reconciliation found them in Redis but not in its view: a Redis that came
-- back from a crash with a stale AOF, say, restored leases whose completions it lost).
-- Not a lost delivery: the worker did not lose the job, Redis forgot what became of it.
-- A lease moves only while it is still held by the token given, and only once it is at least
-- ARGV[8] ms old by Redis's clock, so a lease round's answer still on its way to the instance
-- that asked for it is never taken (the caller passes its reconciliation period).
-- Touches (here or in the lib.lua helpers it calls) the queue keys jobs, active, deadlines,
-- delayed, events, sessions, session_jobs, session_ttl, cancelled, ready lists; may publish a
-- wake-up on ARGV[1].
-- KEYS: the queue keys (lib.lua).
-- ARGV[8] minimum lease age (ms), ARGV[9..] pairs {ULID, lease token} in delivery order.
-- Returns how many leases moved.
-- Pairs are walked backwards so that, pushed at the head one by one, the jobs keep their order.
local now = now_ms()
local oldest = now - tonumber(ARGV[8])
local moved = 0
for i = #ARGV - 1, 9, -2 do
  local ulid = ARGV[i]
  local held, started = check_lease(ulid, ARGV[i + 1])
  if held == 1 and started <= oldest then
    take_back(ulid, now)
    moved = moved + 1
  end
end
return moved
