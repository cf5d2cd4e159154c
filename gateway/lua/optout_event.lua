-- optout_event.lua: opt identities out (or back in) in the order the changes happened,
-- whatever order they arrive in (8x8 retries reorder STOP/START) (gateway/store/redis.py).
--
-- KEYS[1]: the account's opt-out set
-- KEYS[2]: the account's hash identity -> time of its last change (µs since the epoch)
-- KEYS[3]: the account's change stream (every worker's compliance copy follows it:
--          gateway/store/tail.py; entries as lua/change.lua writes them, kind "o")
-- ARGV[1]: "1" opt out, "0" opt back in
-- ARGV[2]: the change's time in µs since the epoch; "" for now (an admin's change: always
--          applied, stored as the later of now and the stored time)
-- ARGV[3]: entries the stream keeps, roughly
-- ARGV[4..]: the identities (an E.164 number, "cu:<channel>:<channelUserId>")
-- Returns one integer per identity: 1 applied, 0 ignored (a later change is stored).

if redis.replicate_commands then redis.replicate_commands() end -- Redis < 5: TIME, then writes
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local at = tonumber(ARGV[2])
local out = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local raw = redis.call('HGET', KEYS[2], id)
  local stored = raw and tonumber(raw) or nil
  local when = nil
  if at == nil then
    when = math.max(now, stored or 0)
  elseif stored == nil or at >= stored then
    when = at
  end
  if when then
    if ARGV[1] == '1' then
      redis.call('SADD', KEYS[1], id)
    else
      redis.call('SREM', KEYS[1], id)
    end
    redis.call('HSET', KEYS[2], id, string.format('%.0f', when))
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', tonumber(ARGV[3]), '*', 'k', 'o', 'm', id,
               'v', ARGV[1])
    redis.call('PEXPIRE', KEYS[3], 3600000) -- an idle account's stream goes after an hour
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
