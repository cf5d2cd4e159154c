-- template_put.lua: store a template record, optionally only when it is not older than
-- the stored one (8x8 retries can reorder status webhooks) (gateway/store/redis.py).
--
-- KEYS[1]: the account's templates hash
-- ARGV[1]: field "name:language"
-- ARGV[2]: the record as JSON; its numeric field "ts" is updatedAt in µs since the epoch
-- ARGV[3]: that same updatedAt in µs since the epoch
-- ARGV[4]: "1": store only if ARGV[3] >= the stored record's ts; "0": always store
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
return 1
