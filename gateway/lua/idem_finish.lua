-- idem_finish.lua: store the first attempt's answer under its key (gateway/idempotency.py,
-- RedisKeeper.finish). Only the attempt that claimed the key may, even after its lease.
--
-- KEYS[1]: the key's record (see idem_claim.lua)
-- ARGV[1]: the claiming attempt's token; ARGV[2]: the answer; ARGV[3]: TTL in ms
-- Returns 1 when stored, 0 when the record is gone or another attempt's.

if redis.call('HGET', KEYS[1], 't') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 's', 'd', 'a', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
