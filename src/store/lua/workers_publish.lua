-- workers_publish (global): replaces one instance's published list of worker streams.
-- KEYS[1] the instance's worker list (string). ARGV[1] the list (JSON), ARGV[2] its TTL ms.
-- Returns 1.
-- Runs when Redis is out of memory (allow-oom), so ListWorkers keeps showing who drains the
-- queues: one key per live instance, replaced each time, gone with its TTL.
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
