-- A node's lease of a buyer's spend caps for one key and currency: what
-- it gives back, and what it holds next (src/ngx_http_toll_cap.c,
-- docs/metering.md "Spend caps").
--
-- KEYS[1]  the buyer's caps (hash): "<CUR>:daily", "<CUR>:monthly",
--          "key:<key>:<CUR>:daily", "key:<key>:<CUR>:monthly", "anchor"
-- KEYS[2]  today's hash, KEYS[1] .. ":d" .. ARGV[3]
-- KEYS[3]  the give-back's day hash, KEYS[1] .. ":d" .. ARGV[5]
-- KEYS[4]  the give-back's month hash, KEYS[1] .. ":m" .. ARGV[6]
--          (KEYS[3], KEYS[4]: KEYS[2] and KEYS[5] when nothing is given
--          back)
-- KEYS[5]  the month hash the node expects: KEYS[1] .. ":m" .. the start
--          it last learned, or the 1st of today's month
-- ARGV[1]  the currency             ARGV[2]  the key id
-- ARGV[3]  today, UTC, YYYYMMDD (the node's clock)
-- ARGV[4]  what the node gives back, micro-units (>= 0)
-- ARGV[5]  the day it was leased in   ARGV[6]  the month's start (YYYYMMDD)
-- ARGV[7]  the call's hold ("0": a give-back only)
-- ARGV[8]  the lease wanted (>= ARGV[7])
-- ARGV[9]  the room below which only ARGV[7] is granted
-- ARGV[10] the day hash's TTL, seconds   ARGV[11] the month hash's
-- ARGV[12..19] the names of lib/toll_names.h: "used", "daily",
--          "monthly", "anchor", "key:", ":d", ":m", "full"
--
-- Slots (docs/redis.md "Slots"): every key is declared, all of them
-- KEYS[1] and a suffix, one hash tag, one slot.  One name alone is made
-- here: the month's hash when the buyer's anchor (read in KEYS[1]) puts
-- the month's start elsewhere than KEYS[5] says, as for a node's first
-- lease of a buyer whose month does not start on the 1st; it is
-- KEYS[1] .. ":m" .. the start, so in KEYS[1]'s slot, and the answer
-- tells the node the start, which it names in KEYS[5] next time.
--
-- A period's hash is KEYS[1] .. ":d<YYYYMMDD>" or ":m<YYYYMMDD>" (the
-- month's start, on the buyer's anchor day).  Its fields "<CUR>:used"
-- and "key:<key>:<CUR>:used" count what nodes leased; a grant adds to
-- all four (day and month, buyer and key) whatever caps are set, so that
-- a give-back always takes from the same four.  The grant: nothing
-- when the smallest room left is below the hold; the hold alone below
-- ARGV[9]; else ARGV[8].  A cap whose room,
-- after the grant, is below the hold that asked (the call refused, or
-- the next one like it would be) is marked full: "<CUR>:full" or
-- "key:<key>:<CUR>:full" = "1" in its period's hash, which toll-settle
-- reads as the cap's 100 % (docs/settle.md "Spend cap alerts"); a
-- give-back does not clear it.  Answers {"none"}
-- when no cap applies, else {"caps", grant, room after it, scope
-- ("buyer"|"key"), period ("daily"|"monthly"), the binding cap, the
-- month's start, the month's end} as strings.  Amounts stay decimal
-- strings: HINCRBY adds them and lt() compares them.
local function lt(a, b)
  local na, nb = string.sub(a, 1, 1) == '-', string.sub(b, 1, 1) == '-'
  if na ~= nb then return na end
  if na then return #a > #b or (#a == #b and a > b) end
  return #a < #b or (#a == #b and a < b)
end
local function neg(n)
  if string.sub(n, 1, 1) == '-' then return string.sub(n, 2) end
  return '-' .. n
end
local function sub(a, b)
  redis.call('HSET', KEYS[1], '~', a)
  if b ~= '0' then redis.call('HINCRBY', KEYS[1], '~', neg(b)) end
  local r = redis.call('HGET', KEYS[1], '~')
  redis.call('HDEL', KEYS[1], '~')
  return r
end
local cur, kid = ARGV[1], ARGV[2]
local U, D, M, A, K, PD, PM = ARGV[12], ARGV[13], ARGV[14], ARGV[15],
  ARGV[16], ARGV[17], ARGV[18]
local F = ARGV[19]
local kc = K .. kid .. ':' .. cur .. ':'
local fb, fk = cur .. ':' .. U, kc .. U
if ARGV[4] ~= '0' and ARGV[5] ~= '' then
  for _, h in ipairs({KEYS[3], KEYS[4]}) do
    for _, f in ipairs({fb, fk}) do
      local v = redis.call('HGET', h, f) or '0'
      local b = ARGV[4]
      if lt(v, b) then b = v end
      if b ~= '0' and string.sub(b, 1, 1) ~= '-' then
        redis.call('HINCRBY', h, f, neg(b))
      end
    end
  end
end
if ARGV[7] == '0' then return {'back'} end
local c = redis.call('HMGET', KEYS[1], cur .. ':' .. D, cur .. ':' .. M,
  kc .. D, kc .. M, A)
if not c[1] and not c[2] and not c[3] and not c[4] then return {'none'} end
local a = tonumber(c[5] or '1') or 1
if a < 1 or a > 28 then a = 1 end
local y = tonumber(string.sub(ARGV[3], 1, 4))
local m = tonumber(string.sub(ARGV[3], 5, 6))
if tonumber(string.sub(ARGV[3], 7, 8)) < a then
  m = m - 1
  if m == 0 then m, y = 12, y - 1 end
end
local ms = string.format('%04d%02d%02d', y, m, a)
m = m + 1
if m == 13 then m, y = 1, y + 1 end
local me = string.format('%04d%02d%02d', y, m, a)
-- KEYS[5] when the node expected this month; else named here (above)
local dh, mh = KEYS[2], KEYS[1] .. PM .. ms
local xb, xk = cur .. ':' .. F, kc .. F
local caps = {{c[1], 'buyer', D, dh, fb, xb}, {c[2], 'buyer', M, mh, fb, xb},
  {c[3], 'key', D, dh, fk, xk}, {c[4], 'key', M, mh, fk, xk}}
local room, bind
for _, e in ipairs(caps) do
  if e[1] then
    e[7] = sub(e[1], redis.call('HGET', e[4], e[5]) or '0')
    if not room or lt(e[7], room) then room, bind = e[7], e end
  end
end
local g = '0'
if not lt(room, ARGV[7]) then
  g = ARGV[7]
  if not lt(room, ARGV[9]) then g = ARGV[8] end
  for _, h in ipairs({dh, mh}) do
    redis.call('HINCRBY', h, fb, g)
    redis.call('HINCRBY', h, fk, g)
  end
  redis.call('EXPIRE', dh, ARGV[10])
  redis.call('EXPIRE', mh, ARGV[11])
end
for _, e in ipairs(caps) do
  if e[1] then
    local r = e[7]
    if g ~= '0' then r = sub(r, g) end
    if lt(r, ARGV[7]) then
      redis.call('HSET', e[4], e[6], '1')
      redis.call('EXPIRE', e[4], (e[4] == dh) and ARGV[10] or ARGV[11])
    end
  end
end
return {'caps', g, sub(room, g), bind[2], bind[3], bind[1], ms, me}
