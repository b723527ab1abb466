-- queue_retire: drops what is left of a queue that holds nothing, the first step of taking it
-- out of the registry of queues (store/instances.rs, `retire_queue`, says why the steps after
-- this one cannot lose a queue that has jobs).
-- Holds something: any job in any state (a record, a lease, a ready, delayed, keyed, session,
-- retained or dead entry), a session, a setting, a schedule, the paused flag, or a live
-- idempotency tombstone bucket. Left over, and dropped with the queue: its meta hash (counters,
-- the session sequence, and the mark an add sets once it is registered), its events, its
-- per-minute activity and its rate and concurrency keys' state (a rate key's spent burst is
-- forgotten with a queue that holds no job).
-- KEYS: the queue keys (lib.lua), then KEYS[32] the queue's schedules hash and KEYS[33] their
-- fire state (schedules_lib.lua), then the tombstone buckets that may still live (any number).
-- Returns 1 when the queue held nothing (its leftovers are gone now), 0 when it holds something
-- (nothing written).
-- Runs when Redis is out of memory (allow-oom): it only deletes.
for i = 1, #KEYS do
  if i ~= K_META and i ~= K_EVENTS and i ~= K_ACTIVITY and i ~= K_KEY_STATE and
      redis.call('EXISTS', KEYS[i]) == 1 then
    return 0
  end
end
if redis.call('HEXISTS', KEYS[K_META], 'paused') == 1 then
  return 0
end
redis.call('DEL', KEYS[K_META], KEYS[K_EVENTS], KEYS[K_ACTIVITY], KEYS[K_KEY_STATE])
return 1
