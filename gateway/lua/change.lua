-- change.lua: one compliance write (opt-out, consent) and its entry in the account's change
-- stream, atomically, so every worker's compliance copy can follow it (gateway/store/redis.py
-- writes, gateway/store/tail.py reads).
--
-- KEYS[1]: the record's set or hash; KEYS[2]: the account's change stream (same slot)
-- ARGV[1]: SADD | SREM | HSET | HDEL; ARGV[2]: the member or field; ARGV[3]: HSET's value
-- ARGV[4]: the entry's kind ("o" opt-out, "c" consent); ARGV[5]: its value ("1"/"0" for an
--   opt-out, the upper-cased categories as JSON for a consent, "" for a deleted one)
-- ARGV[6]: entries the stream keeps, roughly
-- Returns what the write returned.

local r
if ARGV[1] == 'HSET' then
  r = redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
else
  r = redis.call(ARGV[1], KEYS[1], ARGV[2])
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', tonumber(ARGV[6]), '*', 'k', ARGV[4], 'm', ARGV[2],
           'v', ARGV[5])
redis.call('PEXPIRE', KEYS[2], 3600000) -- an idle account's stream goes after an hour
return r
