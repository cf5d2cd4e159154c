-- shield.lua: the OTP pumping shield's state per number prefix (gateway/store/shield.py,
-- RedisShield; MemoryShield is its twin). Every key shares the hash tag {otpshield}.
--
-- A prefix's hash: w (window index), s/v (sends/validations this window), ps/pv (the
-- previous window's), until (hold end, ms; -1: until released), lvl (ladder step),
-- forget (when the ladder step is forgotten: the hold's end + the reset). Times are the
-- caller's; TTLs (on Redis's clock) only collect what no judgement needs any more.
-- Sends and validations are counted in a sliding window approximated from two fixed ones:
-- estimate = previous * (1 - elapsed fraction of the current window) + current.
--
-- ARGV[1] = op, ARGV[2] = now (ms since the epoch), ARGV[3] = window (ms).
--
-- op "send": KEYS[1] the quarantine index (sorted set: prefix -> hold end, -1 manual),
--   KEYS[2..n+1] the prefixes' hashes. ARGV[4] min sends, ARGV[5] min conversion,
--   ARGV[6] ladder reset (ms), ARGV[7] keep of a manual hold (ms), ARGV[8] k = ladder
--   length, ARGV[9..8+k] the ladder's holds (ms), then the n prefixes (index members).
--   Per prefix, in order: a held prefix is answered as such and not counted; else it is
--   judged on the counts before this send (at least min sends, validated under min
--   conversion of them: held for the next ladder step, counts cleared, this send
--   refused), else this send is counted. Returns {retry ms, ladder step} per prefix,
--   retry 0 = pass, -1 = held until released.
-- op "verify": KEYS[1] index, KEYS[2] the prefix's hash, KEYS[3] the session's marker;
--   ARGV[4] marker life (ms). Credits one validation unless this session was credited
--   before. Returns 1 when credited, 0 when not.
-- op "release": KEYS[1] index, KEYS[2] the prefix's hash; ARGV[4] the prefix. Forgets
--   the prefix (hold, ladder, counts). Returns 1 when it was held, else 0.

local op = ARGV[1]
local now = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local index = KEYS[1]

local function keep(key, ms)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end

local function roll(key)
  local h = redis.call('HMGET', key, 'w', 's', 'v', 'ps', 'pv')
  local cur = math.floor(now / window)
  local w = tonumber(h[1]) or cur
  local s, v = tonumber(h[2]) or 0, tonumber(h[3]) or 0
  local ps, pv = tonumber(h[4]) or 0, tonumber(h[5]) or 0
  if cur == w + 1 then
    ps, pv, s, v = s, v, 0, 0
  elseif cur ~= w then
    ps, pv, s, v = 0, 0, 0, 0
  end
  return cur, s, v, ps, pv
end

local function held(key)
  local h = redis.call('HMGET', key, 'until', 'lvl', 'forget')
  local level = tonumber(h[2]) or 0
  if now >= (tonumber(h[3]) or now + 1) then level = 0 end
  return tonumber(h[1]) or 0, level
end

if op == 'verify' then
  if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', tonumber(ARGV[4])) then return 0 end
  local cur, s, v, ps, pv = roll(KEYS[2])
  redis.call('HSET', KEYS[2], 'w', cur, 's', s, 'v', v + 1, 'ps', ps, 'pv', pv)
  keep(KEYS[2], 2 * window)
  return 1
end

if op == 'release' then
  local ends = held(KEYS[2])
  redis.call('DEL', KEYS[2])
  redis.call('ZREM', index, ARGV[4])
  if ends == -1 or ends > now then return 1 end
  return 0
end

local min_sends = tonumber(ARGV[4])
local min_conversion = tonumber(ARGV[5])
local reset = tonumber(ARGV[6])
local manual_keep = tonumber(ARGV[7])
local steps = tonumber(ARGV[8])
local ladder = {}
for i = 1, steps do ladder[i] = tonumber(ARGV[8 + i]) end
local frac = (now % window) / window
local out = {}
for i = 2, #KEYS do
  local key = KEYS[i]
  local prefix = ARGV[8 + steps + i - 1]
  local ends, level = held(key)
  if ends == -1 then
    keep(key, manual_keep)
    out[#out + 1], out[#out + 2] = -1, level
  elseif ends > now then
    out[#out + 1], out[#out + 2] = ends - now, level
  else
    local cur, s, v, ps, pv = roll(key)
    local sent = ps * (1 - frac) + s
    local validated = pv * (1 - frac) + v
    if sent >= min_sends and validated < min_conversion * sent then
      level = level + 1
      local hold = ladder[level]
      ends = hold and (now + hold) or -1
      redis.call('DEL', key)
      redis.call('HSET', key, 'until', ends, 'lvl', level, 'w', cur)
      if hold then redis.call('HSET', key, 'forget', ends + reset) end
      redis.call('PEXPIRE', key, hold and (hold + reset) or manual_keep)
      redis.call('ZADD', index, ends, prefix)
      keep(index, math.max(manual_keep, hold and (hold + reset) or 0))
      out[#out + 1], out[#out + 2] = hold or -1, level
    else
      redis.call('HSET', key, 'w', cur, 's', s + 1, 'v', v, 'ps', ps, 'pv', pv)
      keep(key, 2 * window)
      out[#out + 1], out[#out + 2] = 0, level
    end
  end
end
return out
