-- refund.lua: on Redis Cluster, undo the bookings of requests that did not go after all
-- (another slot refused them) (gateway/store/cluster.py).
--
-- KEYS: the bucket keys, each once.
-- ARGV[1]: JSON flat array, in the order to apply (the latest booking first):
--   k_key, TAT the booking wrote, TAT the key held before it (0: none)
-- A key that still holds what the booking wrote gets back what it held before, with the
-- TTL that TAT needs (none, or already past: the key is deleted). A key another booking
-- has moved since is left alone: that refunded slot stays spent, so the bucket can only
-- count more sends than really went, never fewer.
-- Returns how many bookings were undone.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local undo = cjson.decode(ARGV[1])
local done = 0
for i = 1, #undo, 3 do
  local key, wrote, before = KEYS[undo[i]], undo[i + 1], undo[i + 2]
  if tonumber(redis.call('GET', key)) == wrote then
    if before > now then
      redis.call('SET', key, string.format('%.0f', before), 'PX',
                 math.max(1, math.ceil((before - now) / 1000)))
    else
      redis.call('DEL', key)
    end
    done = done + 1
  end
end
return done
