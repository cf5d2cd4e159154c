-- template_put.lua: store a template record, optionally only when it is not older than
-- the stored one (8x8 retries can reorder status webhooks) (gateway/store/redis.py).
--
-- KEYS[1]: the account's templates hash; KEYS[2] (optional): the account's change stream
-- ARGV[1]: field "name:language"
-- ARGV[2]: the record as JSON; its numeric field "ts" is updatedAt in µs since the epoch
-- ARGV[3]: that same updatedAt in µs since the epoch
-- ARGV[4]: "1": store only if ARGV[3] >= the stored record's ts; "0": always store
-- ARGV[5], ARGV[6] (with KEYS[2]): the stream entry's value (JSON [status, CATEGORY]), and
--   the entries the stream keeps, roughly: a stored record is appended (k = "t")
-- Returns 1 when stored, 0 when the stored record is newer.

if ARGV[4] == '1' then
  local raw = redis.call('HGET', KEYS[1], ARGV[1])
  if raw then
    local ok, cur = pcall(cjson.decode, raw)
    local ts = ok and type(cur) == 'table' and tonumber(cur.ts)
    if ts and ts > tonumber(ARGV[3]) then return 0 end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if KEYS[2] then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', tonumber(ARGV[6]), '*', 'k', 't', 'm', ARGV[1],
             'v', ARGV[5])
  redis.call('PEXPIRE', KEYS[2], 3600000) -- an idle account's stream goes after an hour
end
return 1
