-- confirm.lua: on Redis Cluster, book the buckets of this slot that requests decided on
-- their account's slot (lua/decide.lua with ARGV[2]) at the instant that decision chose,
-- or book nothing and say when they could go (gateway/store/cluster.py).
--
-- KEYS: the bucket keys of this slot, each once.
-- ARGV[1]: JSON flat array, per request in the order they were decided:
--   s (the request's booking instant, µs), n, then n times (k_key, interval_us, burst)
-- A request books only if EVERY one of its buckets here admits a send at s (its earliest
-- slot tat + T - burst*T is not after s; burst 0: a shadowed bucket, docs/lanes.md, that
-- decide.lua let through without delaying the send, admitted whatever its earliest slot);
-- then each TAT becomes max(tat, s) + T. s may be a
-- little in the past for this server: GCRA's bound holds for bookings in any order.
-- Returns a flat array, per request:
--   booked:     0, then (TAT before, TAT after) per bucket
--   not booked: 1, the 0-based index of the bucket that admits latest, its earliest slot
-- ARGV[2], ARGV[3] (optional): the KEYS index of the decision's journal on this slot, its
--   TTL in ms; as in lua/decide.lua (bookings journaled for lua/cancel.lua; a journal
--   cancelled before this ran: nothing booked, returns {-1}).
-- TATs are written with %.0f and a TTL until the bucket is full again, as in decide.lua.

local jk = tonumber(ARGV[2] or '0')
if jk > 0 and redis.call('LINDEX', KEYS[jk], 0) == 'x' then return {-1} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local req = cjson.decode(ARGV[1])

local tats, dirty, orig, out, n = {}, {}, {}, {}, 0
local function push(v)
  n = n + 1
  out[n] = v
end
local function tat_of(k)
  local v = tats[k]
  if v == nil then
    v = tonumber(redis.call('GET', KEYS[k])) or 0
    tats[k] = v
    orig[k] = v
  end
  return v
end

local i = 1
while i <= #req do
  local s, nb = req[i], req[i + 1]
  local late, late_at = -1, s
  for j = 0, nb - 1 do
    local o = i + 2 + j * 3
    local interval = req[o + 1]
    local e = tat_of(req[o]) + interval - req[o + 2] * interval
    if req[o + 2] > 0 and e > late_at then late, late_at = j, e end
  end
  if late >= 0 then
    push(1) push(late) push(late_at)
  else
    push(0)
    for j = 0, nb - 1 do
      local o = i + 2 + j * 3
      local k = req[o]
      local before = tat_of(k)
      local v = math.max(before, s) + req[o + 1]
      tats[k] = v
      dirty[k] = true
      push(before) push(v)
    end
  end
  i = i + 2 + nb * 3
end

if jk > 0 then
  local entry = {}
  for k in pairs(dirty) do
    entry[#entry + 1] = KEYS[k]
    entry[#entry + 1] = string.format('%.0f', orig[k])
    entry[#entry + 1] = string.format('%.0f', tats[k])
  end
  if #entry > 0 then
    redis.call('RPUSH', KEYS[jk], cjson.encode(entry))
    redis.call('PEXPIRE', KEYS[jk], tonumber(ARGV[3]))
  end
end
for k in pairs(dirty) do
  local v = tats[k]
  local ms = math.max(1, math.ceil((v - now) / 1000))
  redis.call('SET', KEYS[k], string.format('%.0f', v), 'PX', ms)
end
return out
