-- idem_claim.lua: claim an idempotency key for a first attempt, or say what holds it
-- (gateway/idempotency.py, RedisKeeper.claim).
--
-- KEYS[1]: the key's record, a hash: f = fingerprint of the request, t = the first
--          attempt's token, s = 'p' (pending) or 'd' (done), l = lease end (ms, Redis
--          clock), a = the stored answer (when done)
-- ARGV[1]: fingerprint; ARGV[2]: token; ARGV[3]: lease in ms; ARGV[4]: TTL in ms
-- Returns {0} claimed (the record is made, pending, with the TTL), {1, answer} done,
-- {2, ms left on the lease} pending, {3} another request's key (fingerprints differ),
-- {4} lapsed (pending past its lease: the first attempt's outcome is unknown).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rec = redis.call('HMGET', KEYS[1], 'f', 's', 'l', 'a')
if not rec[1] then
  redis.call('HSET', KEYS[1], 'f', ARGV[1], 't', ARGV[2], 's', 'p',
             'l', now + tonumber(ARGV[3]))
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {0}
end
if rec[1] ~= ARGV[1] then return {3} end
if rec[2] == 'd' then return {1, rec[4]} end
local left = tonumber(rec[3]) - now
if left > 0 then return {2, left} end
return {4}
