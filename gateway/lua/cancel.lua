-- cancel.lua: undo a decision whose answer failed or came too late (gateway/store/redis.py).
-- lua/decide.lua journals what each of its calls booked under the decision's id; this
-- undoes those bookings, the latest first, and leaves "x" behind so that a decide call of
-- the same decision that reaches Redis only now books nothing.
--
-- KEYS[1]: the decision's journal (a list of JSON [key, TAT before, TAT after, ...]);
--   KEYS[2..]: the keys the decision's calls named (declared, as Redis asks of scripts).
-- ARGV[1]: how long the "x" stays, in ms.
-- A key that still holds the TAT the decision wrote gets back the TAT it held before (with
-- the TTL that needs; none left: deleted). A key another booking has moved since is left
-- alone, so a cancel can leave a bucket stricter than needed, never laxer.
-- Returns how many bookings were undone.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local entries = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
redis.call('RPUSH', KEYS[1], 'x')
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
local done = 0
for e = #entries, 1, -1 do
  if entries[e] ~= 'x' then
    local undo = cjson.decode(entries[e])
    for i = #undo - 2, 1, -3 do
      local key, before, wrote = undo[i], tonumber(undo[i + 1]), tonumber(undo[i + 2])
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
  end
end
return done
