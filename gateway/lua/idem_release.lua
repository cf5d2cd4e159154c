-- idem_release.lua: free a key whose first attempt sent nothing, so a retry may go
-- (gateway/idempotency.py, RedisKeeper.release). Only the attempt that claimed it may.
--
-- KEYS[1]: the key's record (see idem_claim.lua)
-- ARGV[1]: the claiming attempt's token
-- Returns 1 when released, 0 when the record is gone or another attempt's.

if redis.call('HGET', KEYS[1], 't') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
