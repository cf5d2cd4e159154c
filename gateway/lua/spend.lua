-- spend.lua: book N sends a gateway process already let through on its own (local
-- fallback while this store answered too late) into the shared bucket, unconditionally:
-- TAT = max(TAT, now) + N * interval, so the processes still deciding here see them and
-- the fleet stays within the limit. (gateway/store/redis.py, spend_buckets)
--
-- KEYS[1]: the bucket key (one call per key, so each lands on its own Cluster slot)
-- ARGV[1]: interval_us of the shared bucket; ARGV[2]: N
-- Returns the new TAT minus now, in µs.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local target = math.max(current, now) + tonumber(ARGV[1]) * tonumber(ARGV[2])
redis.call('SET', KEYS[1], string.format('%.0f', target), 'PX', math.max(1, math.ceil((target - now) / 1000)))
return target - now
