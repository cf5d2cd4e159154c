-- decide.lua: decide a micro-batch of sends at once, atomically (gateway/store/redis.py).
-- Each request is decided as if alone, seeing the bookings of the ones before it. A refused
-- request consumes nothing; an allowed one books every bucket it touches at one instant.
--
-- KEYS: every key the requests may touch, each once; ARGV[1] names them by 1-based index.
-- ARGV[1]: JSON array, one entry per request, in order:
--   [batch, opt_in, unknown_ok, max_wait_us, k_optouts, k_consents, k_templates,
--    k_cooldown, otp_interval_us, otp_burst, buckets, messages, k_changes,
--    reserve_pm, lane, deadline_us, priority_deadline_us, shadow, dry, whatsapp, queues,
--    claim, fair]
--   (reserve_pm .. dry, queues, claim: docs/lanes.md; reserve_pm: per mille of a laned
--   bucket's horizon bulk may not book; lane 0 from the messages, 1 priority, 2 bulk;
--   deadlines 0: none; shadow: rule codes that only count, WhatsApp's too; dry 1: decide,
--   write nothing; queues: per bucket, k of its bulk queue (a second TAT), 0: not laned;
--   claim 1: a bulk send's claim of its real slot at its ticket's instant; fair: 0, or
--   [k_clients, client]: the subaccount's ZSET of its clients' fair-share TATs and the
--   caller's name, for fairness between them)
--   batch, unknown_ok: 0|1; opt_in: 0 off, 1 warn, 2 enforce; a k_* of 0: not needed
--   buckets: flat, 5 per bucket, in rule order: rule, k_key, interval_us, burst, shapeable
--   messages: flat, 4 per message: msisdn, "name:language" or "", otp (0|1), k_otp_bucket
--   ("\1CATEGORY" instead of a template: one 8x8 makes, e.g. WhatsApp Direct Send)
--   k_changes: the account's change stream; a request that books OTP buckets appends one
--   entry (k = "p", v = JSON [msisdn, TAT, ...]) so every worker's compliance copy knows
--   Redis's recent OTPs (gateway/store/tail.py)
--   whatsapp: 0 (not a WhatsApp send: nothing below is read), or WhatsApp's own limits
--   (the WHATSAPP block below; docs/whatsapp.md): [k_sender, sender_interval_us,
--   sender_burst, pair_interval_us, pair_burst, k_tier, tier, k_tier_set, window_us,
--   us_refuse, quality_refuse, sender_n, per_message] with per_message flat, 4 per message:
--   k_pair, k_window, k_hold, k_suppressed. k_sender 0: no sender bucket (a chunk of a
--   large batch); sender_n 0: the sender books one token per message forwarded.
-- ARGV[2]: Redis Cluster only (below); "" or absent elsewhere.
-- ARGV[3], ARGV[4] (optional): the 1-based KEYS index of this decision's journal, its TTL
--   in ms. Before booking, the script appends to that list (JSON [key, TAT before, TAT
--   after, ...]) what it is about to book, so lua/cancel.lua can undo a decision whose
--   answer came too late. A journal cancelled before the script ran holds "x": then the
--   script books nothing and returns {-1}.
-- Returns a flat array, per request:
--   allowed:     0, wait_us, remaining tokens of each bucket..., TAIL
--   refused:     1, rule, retry_after_us, template status or nil, ref, TAIL
--   all dropped: 2, TAIL
--   TAIL: n_dropped, (message index, rule) * n_dropped, n_unconsented, message index * n,
--         n_shadowed, rule * n_shadowed, lane flags (1: priority, + 2: a bulk queue's
--         ticket: the laned buckets' real TATs were not booked, claim at the slot)
-- and after the last request: now (µs of server time; an allowed request's slot is now +
-- its wait_us)
--   rule: 1 opted_out, 2 no_consent, 3 template, 4 otp, 5 end_user_ip, 6 subaccount,
--   7 egress_ip, 8 deadline, 9 sender, 10 pair, 11 messaging_tier, 12 marketing_region,
--   13 suppressed, 14 template_quality. ref: a message rule's 0-based message index, a
--   bucket rule's 0-based bucket index (-1: a cool-down without a subaccount bucket; -2:
--   the WhatsApp sender bucket).
-- Bucket keys hold the theoretical arrival time (TAT, µs of server time) with a TTL until
-- the bucket is full again; TATs are written with %.0f since tostring drops digits.
--
-- Redis Cluster only (gateway/store/cluster.py; absent on standalone and Sentinel):
-- ARGV[2]: JSON array, the values of keys of OTHER slots, which ARGV[1] names by negative
--   index -j: a bucket's TAT (0: none) or a cool-down's PTTL in ms, as read just before.
--   They are decided on exactly like keys of this slot, booked in memory only, never read
--   or written here (cluster.py books them on their own slot at the same instant).
--   The reply then goes on after now: per request: the instant it
--   booked (0: none), n, then (key index, TAT before, TAT after) * n for the keys of this
--   slot it booked, in booking order (what lua/refund.lua needs to undo them).

if redis.replicate_commands then redis.replicate_commands() end -- Redis < 5: TIME, then writes
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local jk = tonumber(ARGV[3] or '0')
if jk > 0 and redis.call('LINDEX', KEYS[jk], 0) == 'x' then return {-1} end
local checks = cjson.decode(ARGV[1])
local foreign = ARGV[2] and ARGV[2] ~= '' and cjson.decode(ARGV[2])
local journal, booked_at = nil, 0 -- the current request's bookings, with ARGV[2]

local out, n = {}, 0
local function push(v)
  n = n + 1
  out[n] = v
end

local tats, dirty, orig = {}, {}, {}
local function tat_of(k)
  local v = tats[k]
  if v == nil then
    if k < 0 then v = foreign[-k] else v = tonumber(redis.call('GET', KEYS[k])) or 0 end
    tats[k] = v
    orig[k] = v
  end
  return v
end

local undo -- a dry run's keys: k -> {TAT, dirty} before it (restored after it)
local function book(k, s, interval)
  local before = tat_of(k)
  if undo and undo[k] == nil then undo[k] = {before, dirty[k] or false} end
  local v = math.max(before, s) + interval
  tats[k] = v
  dirty[k] = true
  if journal and k > 0 then
    local j = #journal
    journal[j + 1], journal[j + 2], journal[j + 3] = k, before, v
  end
  return v
end

local templates = {}
local function template_of(k, name)
  local ck = k .. ' ' .. name
  local rec = templates[ck]
  if rec == nil then
    rec = false
    local raw = redis.call('HGET', KEYS[k], name)
    if raw then
      local d = cjson.decode(raw)
      local cat = d.category
      if type(cat) == 'string' then cat = string.upper(cat) else cat = false end
      local status = d.status
      if type(status) ~= 'string' then status = '' end
      local quality = d.quality
      if type(quality) == 'string' then quality = string.upper(quality) else quality = false end
      rec = {status, cat, quality}
    end
    templates[ck] = rec
  end
  return rec
end

local function consented(k, msisdn, cat)
  local raw = redis.call('HGET', KEYS[k], msisdn)
  if not raw then return false end
  if not cat then return true end
  local cats = cjson.decode(raw).categories
  if type(cats) ~= 'table' then return false end
  for _, c in ipairs(cats) do
    if type(c) == 'string' and string.upper(c) == cat then return true end
  end
  return false
end

local cools = {}
local function cooldown_end(k)
  local v = cools[k]
  if v == nil then
    local ms
    if k < 0 then ms = foreign[-k] else ms = redis.call('PTTL', KEYS[k]) end
    if ms > 0 then v = now + ms * 1000 else v = 0 end
    cools[k] = v
  end
  return v
end

local shadowed, shadow, prio, tick, fair -- the current request's (docs/lanes.md)
local function tail(dropped, uncons)
  push(#dropped / 2)
  for i = 1, #dropped do push(dropped[i]) end
  push(#uncons)
  for i = 1, #uncons do push(uncons[i]) end
  push(#shadowed)
  for i = 1, #shadowed do push(shadowed[i]) end
  local flags = 0
  if prio then flags = 1 end
  if tick then flags = flags + 2 end
  push(flags)
end

-- ===== lanes, deadlines, shadow rules (docs/lanes.md) =====
-- Whether rule r refuses: false when it is shadowed (then it is only counted).
local function enforced(r)
  if shadow[r] then
    shadowed[#shadowed + 1] = r
    return false
  end
  return true
end

local PRIORITY_CATS = {AUTHENTICATION = true, UTILITY = true}

-- A laned bucket (docs/lanes.md; twin: gateway/store/lanes.py) keeps a second TAT, its
-- bulk queue: bulk sends book the real TAT only within the lead (they go at once or
-- nearly), else take a ticket in the queue and claim the real slot at the ticket's instant.
local function queue_of(c, j) -- the KEYS index of bucket j's queue (0: not laned)
  local q = c[21]
  if q and q ~= 0 then return q[j + 1] end
  return 0
end

-- The least lead of the laned buckets that may delay the send: a burst, never more than
-- the reserved share of the horizon (burst * interval + max_wait); nil: none.
local function lead_of(c, bks, skip)
  local lead = nil
  for j = 0, #bks / 5 - 1 do
    local o = j * 5
    local rule, k, interval, burst = bks[o + 1], bks[o + 2], bks[o + 3], bks[o + 4]
    if queue_of(c, j) ~= 0 and not skip[k] and not shadow[rule] then
      local full = burst * interval
      local l = math.min(full, math.floor(c[14] * (full + c[4]) / 1000))
      if lead == nil or l < lead then lead = l end
    end
  end
  return lead
end

-- Fairness between the clients of a subaccount (twin: lanes.fair_of): the caller's fair TAT
-- after one more bulk send, booked at now with k intervals (k: the clients whose fair TAT
-- is less than a horizon behind now, the caller included), no further than the horizon;
-- and the furthest its queue may go: bulk's reach alone, with others the horizon within
-- its share (its fair TAT within bulk's reach), 1/k of bulk's reach past it.
local function fair_of(f, interval, horizon, reach)
  local key = KEYS[f[1]]
  local since = now - horizon
  local own = tonumber(redis.call('ZSCORE', key, f[2]) or '0') or 0
  if own <= since then own = 0 end
  local k = redis.call('ZCOUNT', key, '(' .. string.format('%.0f', since), '+inf')
  if own == 0 then k = k + 1 end
  local after = math.max(own, now) + k * interval
  local limit = reach
  if k > 1 and after <= reach then
    limit = now + horizon
  elseif k > 1 then
    limit = now + math.floor((reach - now) / k)
  end
  return {f = f, score = math.min(after, now + horizon), since = since, limit = limit}
end

-- A bulk send's place (s: the real TATs' common slot): the instant it books (a ticket: half
-- the lead before its queue's slot), whether that is a ticket, the slot it is expected at,
-- and the rule, retry_after, bucket index of a refusal by a queue it would move past
-- bulk's reach (the horizon less the reserved share) (99: none).
local function bulk_slot(c, bks, s, skip, floor)
  local lead = lead_of(c, bks, skip)
  local expect = s
  local nb = #bks / 5
  if lead then
    for j = 0, nb - 1 do
      local o = j * 5
      local rule, k, interval, burst = bks[o + 1], bks[o + 2], bks[o + 3], bks[o + 4]
      local q = queue_of(c, j)
      if q ~= 0 and not skip[k] and not shadow[rule] then
        expect = math.max(expect, now, tat_of(q) + interval - burst * interval)
      end
    end
  end
  local ticket = lead ~= nil and expect - now > lead
  local at = s
  -- half the lead: the claim's slack; never before `floor`, the slot of a bucket the claim
  -- does not see again (the WhatsApp sender's)
  if ticket then at = math.max(expect - math.floor(lead / 2), floor) end
  local best, retry, ref = 99, 0, 0
  for j = 0, nb - 1 do
    local o = j * 5
    local rule, k, interval, burst = bks[o + 1], bks[o + 2], bks[o + 3], bks[o + 4]
    local q = queue_of(c, j)
    if q ~= 0 and not skip[k] then
      local after = math.max(tat_of(q), at) + interval
      local horizon = burst * interval + c[4]
      local reach = now + horizon - math.floor(c[14] * horizon / 1000)
      local f = c[23]
      if rule == 6 and f and f ~= 0 and f[1] > 0 then
        fair = fair_of(f, interval, horizon, reach)
        fair.sub = k
        reach = fair.limit
      end
      if after > reach then
        if shadow[rule] then
          shadowed[#shadowed + 1] = rule
          skip[k] = true
        elseif rule < best then
          best, retry, ref = rule, after - reach, j
        end
      end
    end
  end
  return at, ticket, expect, best, retry, ref
end

-- A claim's refusal: its real slot s is further than the lead (priority sends took the
-- slots its ticket counted on). Returns rule, retry_after, bucket index (99: none).
local function claim_refusal(c, bks, s, sref, skip)
  local lead = lead_of(c, bks, skip)
  if lead == nil or s - now <= lead then return 99, 0, 0 end
  local first = nil
  for j = 0, #bks / 5 - 1 do
    local rule, k = bks[j * 5 + 1], bks[j * 5 + 2]
    if queue_of(c, j) ~= 0 and not skip[k] and not shadow[rule] then
      if j == sref then return rule, s - now - lead, j end
      if first == nil then first = j end
    end
  end
  return bks[first * 5 + 1], s - now - lead, first
end
-- ===== end lanes =====

-- ===== WHATSAPP: WhatsApp's own limits (docs/whatsapp.md); twin: gateway/store/wacheck.py
local wa_tiers = {} -- tier key -> {eff = tier in force (0: unlimited), n = ZCARD}
local function wa_tier_of(w)
  local k = w[6]
  local st = wa_tiers[k]
  if st == nil then
    local eff = w[7]
    if w[8] > 0 then
      local set = tonumber(redis.call('GET', KEYS[w[8]]) or '')
      if set then eff = set end
    end
    st = {eff = eff, n = 0}
    if eff > 0 then
      redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', string.format('%.0f', now - w[9]))
      st.n = redis.call('ZCARD', KEYS[k])
    end
    wa_tiers[k] = st
  end
  return st
end

local function wa_tier_retry(w)
  local oldest = redis.call('ZRANGE', KEYS[w[6]], 0, 0, 'WITHSCORES')
  if oldest[2] then return tonumber(oldest[2]) + w[9] - now end
  return w[9]
end

-- The message's WhatsApp rules; returns rule (0: passes), retry_after, and what it would
-- book: {pair key or false, pair TAT, tier member or false, new member}. A shadowed rule
-- (docs/lanes.md) does not refuse; a shadowed pair or tier books nothing for it.
local function wa_message(w, m, msisdn, rec, tent)
  local wm = w[13]
  local o = m * 4
  local kpair, kwin, khold, ksupp = wm[o + 1], wm[o + 2], wm[o + 3], wm[o + 4]
  local till = cooldown_end(ksupp)
  if till > now and enforced(13) then return 13, till - now, nil end
  if rec and rec[2] == 'MARKETING' then
    if w[10] == 1 and string.sub(msisdn, 1, 2) == '+1' and enforced(12) then
      return 12, 0, nil
    end
    till = cooldown_end(khold)
    if till > now and enforced(13) then return 13, till - now, nil end
    if w[11] == 1 and rec[3] == 'RED' and enforced(14) then return 14, 0, nil end
  end
  local cur = tent.pair[kpair] or tat_of(kpair)
  local sb = cur + w[4] - w[5] * w[4]
  local kbook = kpair -- false: a shadowed pair refusal, nothing to book for it
  if sb > now then
    if enforced(10) then return 10, sb - now, nil end
    kbook = false
  end
  local member, new = false, false
  if cooldown_end(kwin) == 0 then -- outside the customer-service window: business-initiated
    local st = wa_tier_of(w)
    if st.eff > 0 then
      member = msisdn
      if not tent.tier[msisdn] and not redis.call('ZSCORE', KEYS[w[6]], msisdn) then
        if st.n + tent.n_new < st.eff then
          new = true
        elseif enforced(11) then
          return 11, wa_tier_retry(w), nil
        else
          member = false -- shadowed: not counted
        end
      end
    end
  end
  return 0, 0, {kbook, math.max(cur, now) + w[4], member, new}
end

local function wa_keep(tent, p)
  if p[1] then tent.pair[p[1]] = p[2] end
  tent.booked[#tent.booked + 1] = p
  if p[3] then tent.tier[p[3]] = true end
  if p[4] then tent.n_new = tent.n_new + 1 end
end

-- The sender bucket: the earliest instant it takes the request's n messages at once (a GCRA
-- of n cells; over the burst: once the bucket is idle), or nil with nothing to book.
local function wa_sender_slot(w, forwarded)
  if w[1] == 0 then return nil, 0 end
  local cost = w[12]
  if cost == 0 then cost = forwarded end
  if cost == 0 then return nil, 0 end
  return math.max(now, tat_of(w[1]) + (math.min(cost, w[3]) - w[3]) * w[2]), cost
end

-- A dry run (undo set): the TATs are put back after it; no tier member is added or counted.
local function wa_book(w, tent, s, cost)
  if cost > 0 then book(w[1], s, cost * w[2]) end
  local score, added = string.format('%.0f', s), 0
  for i = 1, #tent.booked do
    local p = tent.booked[i]
    if p[1] then book(p[1], s, w[4]) end
    if p[3] and not undo then
      redis.call('ZADD', KEYS[w[6]], score, p[3])
      if p[4] then added = added + 1 end
    end
  end
  if not undo and (added > 0 or #tent.booked > 0) then
    local st = wa_tiers[w[6]]
    if st then
      st.n = st.n + added
      redis.call('PEXPIRE', KEYS[w[6]], math.ceil(w[9] / 1000) + 60000) -- max_wait's margin
    end
  end
end
-- ===== end WHATSAPP

local wa_tent -- the current request's WhatsApp bookings to be (wa_message, wa_keep)

-- Message-level rules of message m; returns rule (0: passes), retry_after, status, warned,
-- priority (a message of the priority lane).
local function check_message(c, msg, m, otp_tent, otp_keys, otp_msg)
  local o = m * 4
  local msisdn, tpl, otp, kotp = msg[o + 1], msg[o + 2], msg[o + 3], msg[o + 4]
  if redis.call('SISMEMBER', KEYS[c[5]], msisdn) == 1 and enforced(1) then
    return 1, 0, false, false
  end
  local cat, warned, rec = false, false, false
  if tpl ~= '' then
    if string.byte(tpl, 1) == 1 then rec = {'APPROVED', string.sub(tpl, 2)}  -- Direct Send
    else rec = template_of(c[7], tpl) end
    if rec then cat = rec[2] end
    if c[2] > 0 and not consented(c[6], msisdn, cat) then
      if c[2] == 2 then
        if enforced(2) then return 2, 0, false, false end
      else
        warned = true
      end
    end
    if rec then
      if rec[1] ~= 'APPROVED' and enforced(3) then return 3, 0, rec[1], false end
    elseif c[3] == 0 and enforced(3) then
      return 3, 0, false, false
    end
  end
  local wa = nil
  local w = c[20]
  if w and w ~= 0 then
    local rule, retry
    rule, retry, wa = wa_message(w, m, msisdn, rec, wa_tent)
    if rule ~= 0 then return rule, retry, false, false end
  end
  if otp == 1 or cat == 'AUTHENTICATION' then
    local interval = c[9]
    local cur = otp_tent[kotp] or tat_of(kotp)
    local sb = cur + interval - c[10] * interval
    if sb > now then
      if enforced(4) then return 4, sb - now, false, false end
    else
      otp_tent[kotp] = math.max(cur, now) + interval
      otp_keys[#otp_keys + 1] = kotp
      otp_msg[#otp_msg + 1] = m
    end
  end
  if wa then wa_keep(wa_tent, wa) end
  return 0, 0, false, warned, otp == 1 or (cat and PRIORITY_CATS[cat]) or false
end

local otp_msg -- the current request's OTP messages (0-based), in otp_keys order

local function decide(c)
  local bks, msg = c[11], c[12]
  local dropped, uncons, otp_tent, otp_keys = {}, {}, {}, {}
  otp_msg = {}
  wa_tent = {pair = {}, tier = {}, n_new = 0, booked = {}}
  local nmsg = #msg / 4
  local all_prio = true
  shadowed, prio, tick, fair = {}, false, false, nil
  for m = 0, nmsg - 1 do
    local rule, retry, status, warned, p = check_message(c, msg, m, otp_tent, otp_keys, otp_msg)
    if rule == 0 and not p then all_prio = false end
    if rule ~= 0 then
      if c[1] == 0 then
        push(1) push(rule) push(retry) push(status) push(m)
        return tail(dropped, uncons)
      end
      dropped[#dropped + 1] = m
      dropped[#dropped + 1] = rule
    elseif warned then
      uncons[#uncons + 1] = m
    end
  end
  if nmsg > 0 and #dropped == 2 * nmsg then
    push(2)
    return tail(dropped, uncons)
  end

  if c[15] > 0 then prio = c[15] == 1 else prio = nmsg > 0 and all_prio end
  local max_wait, cool = c[4], 0
  if c[8] ~= 0 then cool = cooldown_end(c[8]) end
  local s, best, retry, ref, has_sub, sref = now, 99, 0, 0, false, -1
  local skip = {}
  local nb = #bks / 5
  for j = 0, nb - 1 do
    local o = j * 5
    local rule, k, interval = bks[o + 1], bks[o + 2], bks[o + 3]
    local sb = math.max(now, tat_of(k) + interval - bks[o + 4] * interval)
    if rule == 6 then
      has_sub = true
      if cool > sb then sb = cool end
    end
    local over, r_retry = false, 0
    if bks[o + 5] == 0 then
      if sb > now then over, r_retry = true, sb - now end
    elseif sb - now > max_wait then
      over, r_retry = true, math.max(1, sb - now - max_wait)
    end
    if shadow[rule] then
      if over then
        shadowed[#shadowed + 1] = rule
        skip[k] = true
      end
    else
      if sb > s then s, sref = sb, j end
      if over and rule < best then best, retry, ref = rule, r_retry, j end
    end
  end
  local w, wa_cost, sfloor = c[20], 0, 0
  if w and w ~= 0 then -- WHATSAPP: the sender number's bucket, shapeable like capacity
    local sb
    sb, wa_cost = wa_sender_slot(w, nmsg - #dropped / 2)
    if sb then
      local late = sb - now > max_wait
      if shadow[9] then
        if late then -- shadowed: goes, books nothing for the rule it broke
          shadowed[#shadowed + 1] = 9
          wa_cost = 0
        end
      else
        if sb > s then s, sref = sb, -2 end
        sfloor = sb
        if best == 99 and late then best, retry, ref = 9, math.max(1, sb - now - max_wait), -2 end
      end
    end
  end
  if not has_sub and cool > now then
    if shadow[6] then
      if cool - now > max_wait then shadowed[#shadowed + 1] = 6 end
    else
      if cool > s then s = cool end
      if cool - now > max_wait and best > 6 then
        best, retry, ref = 6, math.max(1, cool - now - max_wait), -1
      end
    end
  end
  -- lanes (laned buckets 6, 7 only); a late sender bucket is its own refusal
  local at, expect = s, s
  if c[14] > 0 and best ~= 9 then
    local r, rr, rf = 99, 0, 0
    if c[22] == 1 then
      r, rr, rf = claim_refusal(c, bks, s, sref, skip)
    elseif not prio then
      at, tick, expect, r, rr, rf = bulk_slot(c, bks, s, skip, sfloor)
    end
    if r < best then best, retry, ref = r, rr, rf end
  end
  local deadline = c[16]
  if prio then deadline = c[17] end
  if deadline > 0 and expect - now > deadline and best >= 6 and enforced(8) then
    best, retry, ref = 8, expect - now, sref
  end
  if best < 99 then
    tick = false
    push(1) push(best) push(retry) push(false) push(ref)
    return tail(dropped, uncons)
  end

  push(0)
  push(at - now)
  booked_at = at
  for j = 0, nb - 1 do
    local o = j * 5
    local k, interval, burst = bks[o + 2], bks[o + 3], bks[o + 4]
    local v = tat_of(k)
    if not skip[k] then
      local q = queue_of(c, j) -- a laned bucket: its real TAT unless a ticket, its queue
      if q == 0 or not tick then v = book(k, at, interval) end -- unless a claim
      if q ~= 0 and c[22] ~= 1 then book(q, at, interval) end
    end
    v = math.max(v, now) -- a ticket's or a shadowed bucket may be empty: full
    push(math.max(0, math.floor((burst * interval - (v - now)) / interval)))
  end
  if w and w ~= 0 then wa_book(w, wa_tent, at, wa_cost) end
  if fair and c[19] == 0 and not skip[fair.sub] then -- the caller's fair TAT; past ones go
    local key = KEYS[fair.f[1]]
    redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.0f', fair.since))
    redis.call('ZADD', key, string.format('%.0f', fair.score), fair.f[2])
    local ms = math.ceil((fair.score - fair.since) / 1000) -- a horizon after its fair TAT
    if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
  end
  if #otp_keys > 0 then
    local seen = {}
    for i = 1, #otp_keys do
      local k = otp_keys[i]
      local v = book(k, at, c[9])
      if c[13] and c[13] > 0 then
        seen[#seen + 1] = msg[otp_msg[i] * 4 + 1]
        seen[#seen + 1] = string.format('%.0f', v)
      end
    end
    if #seen > 0 and c[19] == 0 then
      redis.call('XADD', KEYS[c[13]], 'MAXLEN', '~', 100000, '*', 'k', 'p', 'm', '',
                 'v', cjson.encode(seen))
      redis.call('PEXPIRE', KEYS[c[13]], 3600000) -- an idle account's stream goes in an hour
    end
  end
  return tail(dropped, uncons)
end

local booked = {}
for i = 1, #checks do
  local c = checks[i]
  if foreign then journal, booked_at = {}, 0 end
  shadow = {}
  for _, r in ipairs(c[18]) do shadow[r] = true end
  if c[19] == 1 then undo, journal = {}, nil end
  decide(c)
  if undo then -- a dry run: what it booked in memory is put back, nothing is written
    for k, u in pairs(undo) do
      tats[k] = u[1]
      if u[2] then dirty[k] = true else dirty[k] = nil end
    end
    undo, booked_at = nil, 0
    if foreign then journal = {} end
  end
  if foreign then booked[i] = {booked_at, journal} end
end

if jk > 0 then
  local entry = {}
  for k in pairs(dirty) do
    if k > 0 then
      entry[#entry + 1] = KEYS[k]
      entry[#entry + 1] = string.format('%.0f', orig[k])
      entry[#entry + 1] = string.format('%.0f', tats[k])
    end
  end
  if #entry > 0 then
    redis.call('RPUSH', KEYS[jk], cjson.encode(entry))
    redis.call('PEXPIRE', KEYS[jk], tonumber(ARGV[4]))
  end
end
for k in pairs(dirty) do
  if k > 0 then
    local v = tats[k]
    local ms = math.max(1, math.ceil((v - now) / 1000))
    redis.call('SET', KEYS[k], string.format('%.0f', v), 'PX', ms)
  end
end
push(now)
if foreign then
  for i = 1, #booked do
    local b = booked[i]
    push(b[1])
    push(#b[2] / 3)
    for j = 1, #b[2] do push(b[2][j]) end
  end
end
return out
