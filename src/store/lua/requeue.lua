-- requeue: takes back leases whose holder is gone, putting the jobs at the head of their
-- priority so they run next. Used when a worker stream ends (the delivery counts as lost), when
-- a worker hands a job back, and when this instance stops (neither counts).
-- A job cancelled meanwhile, or whose session is gone, ends cancelled instead.
-- Touches (here or in the lib.lua helpers it calls) the queue keys jobs, active, deadlines,
-- delayed, dead, meta, events, sessions, session_jobs, session_ttl, cancelled, activity, ready lists; may
-- publish a wake-up on ARGV[1].
-- KEYS: the queue keys (lib.lua).
-- ARGV[8] count as lost (1/0), ARGV[9] lost deliveries that make a job dead,
-- ARGV[10..] pairs {ULID, lease token} in delivery order.
-- Only leases still held by the given token move; returns how many did.
-- Pairs are walked backwards so that, pushed at the head one by one, the jobs keep their order.
local now = now_ms()
local lost, max_lost = ARGV[8] == '1', tonumber(ARGV[9])
local moved = 0
for i = #ARGV - 1, 10, -2 do
  local ulid, token = ARGV[i], ARGV[i + 1]
  if check_lease(ulid, token) == 1 then
    drop_lease(ulid)
    local rec = load(ulid)
    if lost and not rec[R_CANCEL] then
      rec[R_LOST] = rec[R_LOST] + 1
    end
    if lost and rec[R_LOST] >= max_lost and not rec[R_CANCEL] then
      rec[R_ERROR] = 'lost'
      make_dead(ulid, rec, now)
    else
      back_to_queue(ulid, rec, now, true)
    end
    moved = moved + 1
  end
end
return moved
