-- pii_claim.lua: take due entries of the PII removal queue, each under a lease, so that two
-- workers never call 8x8 for the same umid and a worker that dies mid-call loses it to
-- another once the lease passes (gateway/pii.py, gateway/store/redis.py).
--
-- KEYS[1]: the queue, a sorted set entry -> due time (µs since the epoch)
-- ARGV[1]: how many entries to take at most
-- ARGV[2]: the lease in µs (a taken entry is due again at now + lease)
-- Returns {µs until the next entry is due after the claim, or -1 when the queue is empty,
--          entry, entry, ...}

if redis.replicate_commands then redis.replicate_commands() end -- Redis < 5: TIME, then writes
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now),
                       'LIMIT', 0, tonumber(ARGV[1]))
local until_ = string.format('%.0f', now + tonumber(ARGV[2]))
for _, entry in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', until_, entry)
end
local out = {-1}
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then
  out[1] = math.max(0, tonumber(first[2]) - now)
end
for _, entry in ipairs(due) do
  out[#out + 1] = entry
end
return out
