-- complete: acknowledges a batch of finished attempts; each entry is checked and applied on its
-- own, so one stale token does not hold back the others.
-- KEYS: the queue keys (lib.lua).
-- ARGV[8] the number of acks n, then n triples {ULID, lease token, result}, then for each ack
-- that writes its session's state a triple {ack number (1-based), new state, expected session
-- version or -1}.
-- Returns one code per entry:
--    1 completed                  0 unknown job             -1 stale token (nothing changed)
--    2 accepted, but the job had been cancelled, so it ends cancelled
--   -2 session version mismatch: nothing written, the job stays leased
--   -3 the job's session was deleted: the job ends cancelled, its state is not written
--   -4 a new session state for a job outside any session: nothing written
-- With a completed cap or window of 0, results are not retained and the record goes at once.
local now = now_ms()
local finished = int_text(now)
local retain = COMPLETED_CAP > 0 and COMPLETED_MS > 0
-- Leases and records of the whole batch, read with one call each; kept current below, so an
-- entry repeated in the batch sees what the earlier one did.
local acks = tonumber(ARGV[8])
local ids = {}
for i = 9, 8 + 3 * acks, 3 do
  ids[#ids + 1] = ARGV[i]
end
local states = {}
for i = 9 + 3 * acks, #ARGV, 3 do
  states[tonumber(ARGV[i])] = i
end
local held, stored = hmget_map(KEYS[K_ACTIVE], ids), hmget_map(KEYS[K_JOBS], ids)
-- Writes of the completed jobs, made with one call each after the loop.
local released, saved, dropped, completed = {}, {}, {}, {}
local function finish(ulid, value, attempt_text)
  released[#released + 1] = ulid
  held[ulid] = nil
  if retain then
    saved[#saved + 1] = ulid
    saved[#saved + 1] = value
    completed[#completed + 1] = finished
    completed[#completed + 1] = ulid
  else
    dropped[#dropped + 1] = ulid
    stored[ulid] = nil
  end
  emit(E_COMPLETED, ulid, attempt_text)
end
local codes = {}
for n = 1, acks do
  local i = 6 + 3 * n
  local ulid, token, result = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local has_state, state, expected = states[n] ~= nil, nil, nil
  if has_state then
    state, expected = ARGV[states[n] + 1], tonumber(ARGV[states[n] + 2])
  end
  local code, started, attempt, attempt_text, flags = 0, nil, nil, nil, nil
  if held[ulid] then
    local holder
    holder, started, attempt, attempt_text, flags = parse_lease(held[ulid])
    code = holder == token and 1 or -1
  elseif stored[ulid] then
    code = -1
  end
  if code == 1 and flags == '' and not has_state then
    -- Outside any session and not cancelled: the outcome is appended to the record as stored,
    -- which is neither unpacked nor repacked (unpack_record and JobRecord::decode apply it).
    finish(ulid, stored[ulid] .. cmsgpack.pack({ S_COMPLETED, now, started, attempt, result }), attempt_text)
  elseif code == 1 then
    local rec = unpack_record(stored[ulid])
    local name = session_name(rec)
    local meta = name and load_session(name)
    rec[R_ATTEMPTS] = attempt
    rec[R_STARTED] = started
    if has_state and not name then
      code = -4
    elseif has_state and meta and expected >= 0 and meta[M_VERSION] ~= expected then
      code = -2
    elseif rec[R_CANCEL] or (name and not meta) then
      code = (name and not meta) and -3 or 2
      drop_lease(ulid)
      held[ulid] = nil
      make_cancelled(ulid, rec, now, 'active')
    else
      if has_state then
        redis.call('HSET', KEYS[K_SESSION_STATE], name, state)
        meta[M_VERSION] = meta[M_VERSION] + 1
        save_session(name, meta, now)
      end
      rec[R_STATE] = S_COMPLETED
      rec[R_FINISHED] = now
      rec[R_RESULT] = result
      finish(ulid, cmsgpack.pack(rec), attempt_text)
      session_moved(rec, now, false, true, false, false)
    end
  end
  codes[#codes + 1] = code
end
bulk('HDEL', KEYS[K_ACTIVE], released)
bulk('ZREM', KEYS[K_DEADLINES], released)
bulk('HSET', KEYS[K_JOBS], saved)
bulk('HDEL', KEYS[K_JOBS], dropped)
bulk('ZADD', KEYS[K_COMPLETED], completed)
trim(KEYS[K_COMPLETED], now, COMPLETED_MS, COMPLETED_CAP)
return codes
