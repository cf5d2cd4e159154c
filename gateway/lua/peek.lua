-- peek.lua: on Redis Cluster, read what a decision on another slot needs from this one,
-- and a bucket's fill (gateway/store/cluster.py).
--
-- KEYS: keys of this slot.
-- ARGV[1]: one letter per key: 't' a bucket key, 'c' a cool-down key
-- Returns: now (µs, this server's clock), then per key: 't' its TAT (0: none), 'c' its PTTL
-- in ms (as PTTL answers: -2 none).

local t = redis.call('TIME')
local out = {tonumber(t[1]) * 1000000 + tonumber(t[2])}
local kinds = ARGV[1]
for i = 1, #KEYS do
  if string.sub(kinds, i, i) == 'c' then
    out[i + 1] = redis.call('PTTL', KEYS[i])
  else
    out[i + 1] = tonumber(redis.call('GET', KEYS[i])) or 0
  end
end
return out
