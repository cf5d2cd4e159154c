-- cooldown.lua: hold a bucket for a while after an upstream 429, never shortening a
-- longer hold (gateway/store/redis.py, set_cooldown).
--
-- KEYS[1]: the cool-down key
-- ARGV[1]: duration in milliseconds (at least 1)
-- Returns 1 when the hold was set or extended, 0 when a longer one already runs.

local ms = tonumber(ARGV[1])
local left = redis.call('PTTL', KEYS[1])
if left == -1 or left >= ms then return 0 end
redis.call('SET', KEYS[1], '1', 'PX', ms)
return 1
