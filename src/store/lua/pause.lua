-- pause: pauses (ARGV[8] = 1) or resumes (0) a queue. A paused queue delivers nothing; adds
-- still succeed. Resuming wakes every dispatcher of the queue.
-- Touches (here or in the lib.lua helpers it calls) the queue keys meta; may publish a wake-up on
-- ARGV[1].
-- KEYS: the queue keys (lib.lua). Returns 1.
if ARGV[8] == '1' then
  redis.call('HSET', KEYS[K_META], 'paused', 1)
else
  redis.call('HDEL', KEYS[K_META], 'paused')
  wake()
end
return 1
