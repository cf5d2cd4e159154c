-- pii_move.lua: finish a claimed entry of the PII removal queue, or replace it by its retry,
-- only while it is still queued (an entry another worker finished stays finished)
-- (gateway/pii.py, gateway/store/redis.py).
--
-- KEYS[1]: the queue, a sorted set entry -> due time (µs since the epoch)
-- ARGV[1]: the claimed entry
-- ARGV[2]: its retry ("" to finish it)
-- ARGV[3]: the retry's due time (µs since the epoch)
-- Returns 1 when the entry was still queued, else 0.

if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
end
return 1
