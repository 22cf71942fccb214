-- A buyer's usage, balances and spend caps, for toll_usage
-- (src/ngx_http_toll_usage.c).
--
-- KEYS[1]  the days the buyer has usage of (a set)
-- KEYS[2]  the buyer's flush ids (a zset)
-- KEYS[3]  the buyer's prepaid balances (a hash)
-- KEYS[4]  the buyer's spend caps (a hash, lua/cap.lua's KEYS[1])
-- KEYS[5]  today's caps hash, KEYS[4] .. ":d" .. ARGV[4]
-- KEYS[6]  the month's caps hash when the month starts on the 1st,
--          KEYS[4] .. ":m" .. the 1st of ARGV[4]'s month
-- ARGV[1]  the buyer's usage hashes' name but the day: "toll:usage:{B}:"
-- ARGV[2]  the mirror's suffix, ":drained"
-- ARGV[3]  the asking key's id
-- ARGV[4]  today, UTC, YYYYMMDD (the node's clock, as lua/cap.lua's)
-- ARGV[5..11] the names of lib/toll_names.h: "used", "daily",
--          "monthly", "anchor", "key:", ":d", ":m"
-- ARGV[12]... flush ids the asking node has in flight
--
-- Slots (docs/redis.md "Slots"): every key is in the buyer's hash tag.
-- Two kinds of names are made here, where the caller cannot know them:
-- each day's usage hash and its mirror, ARGV[1] .. day (.. ARGV[2]), for
-- the days read from KEYS[1]; and the month's caps hash when the
-- buyer's anchor starts the month on another day than the 1st, KEYS[4]
-- .. ":m" .. start.  ARGV[1] and KEYS[4] carry the buyer's tag, so do
-- they: one slot.
--
-- Answers {usage, applied, balances, caps}: every field and value of
-- each day's usage hash and of its mirror, where toll-settle adds what
-- it claims, in the same script as the claim (docs/settle.md): a call is
-- in one or the other, never both, never neither; which of the flush
-- ids Redis has applied, so that the node adds the counts of the others
-- only (a call is counted once: in Redis or in the node); the balances
-- hash; and the caps that apply to the buyer and the asking key: {} when
-- none, else {month start, month end (YYYYMMDD, as lua/cap.lua makes
-- them from the anchor), then per cap scope ("buyer"|"key"), period
-- ("daily"|"monthly"), currency, cap, what the current period counts as
-- used}.  The sums are made in C, on int64, never in Lua numbers; the
-- amounts go back as Redis holds them.  A day with neither hash nor
-- mirror (the mirror expires) is forgotten.
local out = {}
for _, d in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local h = redis.call('HGETALL', ARGV[1] .. d)
  local m = redis.call('HGETALL', ARGV[1] .. d .. ARGV[2])
  if #h == 0 and #m == 0 then redis.call('SREM', KEYS[1], d) end
  for i = 1, #h do out[#out + 1] = h[i] end
  for i = 1, #m do out[#out + 1] = m[i] end
end
local applied = {}
for i = 12, #ARGV do
  if redis.call('ZSCORE', KEYS[2], ARGV[i]) then
    applied[#applied + 1] = ARGV[i]
  end
end
local caps = {}
local c = redis.call('HGETALL', KEYS[4])
if #c > 0 then
  local U, D, M, A, K, PD, PM = ARGV[5], ARGV[6], ARGV[7], ARGV[8],
    ARGV[9], ARGV[10], ARGV[11]
  local today, kp = ARGV[4], K .. ARGV[3] .. ':'
  -- the month, as lua/cap.lua counts it (dates, not amounts)
  local a = tonumber(redis.call('HGET', KEYS[4], A) or '1') or 1
  if a < 1 or a > 28 then a = 1 end
  local y = tonumber(string.sub(today, 1, 4))
  local m = tonumber(string.sub(today, 5, 6))
  if tonumber(string.sub(today, 7, 8)) < a then
    m = m - 1
    if m == 0 then m, y = 12, y - 1 end
  end
  local ms = string.format('%04d%02d%02d', y, m, a)
  m = m + 1
  if m == 13 then m, y = 1, y + 1 end
  caps = {ms, string.format('%04d%02d%02d', y, m, a)}
  for i = 1, #c, 2 do
    local f, scope, pre = c[i], 'buyer', ''
    if string.sub(f, 1, #K) == K then
      scope, pre = nil, nil
      if string.sub(f, 1, #kp) == kp then
        scope, pre = 'key', kp
        f = string.sub(f, #kp + 1)
      end
    end
    local cur, p
    if scope then cur, p = string.match(f, '^([^:]+):([^:]+)$') end
    if cur and (p == D or p == M) then
      local h = KEYS[5]
      if p == M then h = KEYS[4] .. PM .. ms end
      caps[#caps + 1] = scope
      caps[#caps + 1] = p
      caps[#caps + 1] = cur
      caps[#caps + 1] = c[i + 1]
      caps[#caps + 1] = redis.call('HGET', h, pre .. cur .. ':' .. U) or '0'
    end
  end
end
return {out, applied, redis.call('HGETALL', KEYS[3]), caps}
