-- hold.lua: make a bucket count as booked for at least the next N µs (after an outage the
-- gateway hands back what its processes booked locally, so the shared bucket does not
-- start full and let a second window overflow). Never lowers a later TAT.
-- (gateway/store/redis.py, hold_buckets)
--
-- KEYS[1]: the bucket key (one call per key, so each lands on its own Cluster slot)
-- ARGV[1]: busy_for_us, µs from Redis' now until the bucket may admit again at full burst
-- Returns 1 when the TAT was raised, 0 when it was already at least that late.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local target = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current >= target then return 0 end
redis.call('SET', KEYS[1], string.format('%.0f', target), 'PX', math.max(1, math.ceil((target - now) / 1000)))
return 1
