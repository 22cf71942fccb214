-- A node's lease of a buyer's prepaid balance in one currency: what it
-- gives back, and what it holds next (src/ngx_http_toll_prepaid.c,
-- docs/metering.md "Prepaid balances").
--
-- KEYS[1]  the buyer's balances (hash)
-- ARGV[1]  "<CUR>:available"     ARGV[2]  "<CUR>:held"
-- ARGV[3]  "<CUR>:hold:<node>"   ARGV[4]  "<CUR>:seen:<node>"
-- ARGV[5]  "<CUR>:seen:"         ARGV[6]  "<CUR>:hold:"
-- ARGV[7]  what the node gives back, micro-units (>= 0)
-- ARGV[8]  the least worth granting: the call's hold ("0": none wanted)
-- ARGV[9]  the lease wanted (>= ARGV[8])
-- ARGV[10] the balance below which only ARGV[8] is granted (a small
--          balance is not leased away to one node)
-- ARGV[11] seconds after which a silent node's hold comes back
--
-- The holds of nodes not heard of for ARGV[11] seconds (on Redis's
-- clock) go back to available; then the node's give-back (never more
-- than it holds); then the grant: nothing when available is below
-- ARGV[8], ARGV[8] alone below ARGV[10], else ARGV[9].  Answers {grant,
-- available after it, the node's hold after it} as decimal strings.
-- Always: credits - debits = available + held + spent.  Amounts stay
-- decimal strings: HINCRBY adds them and lt() compares them.
local function lt(a, b)
  local na, nb = string.sub(a, 1, 1) == '-', string.sub(b, 1, 1) == '-'
  if na ~= nb then return na end
  if na then return #a > #b or (#a == #b and a > b) end
  return #a < #b or (#a == #b and a < b)
end
local function move(n, from, to)
  if n ~= '0' then
    redis.call('HINCRBY', KEYS[1], from, '-' .. n)
    redis.call('HINCRBY', KEYS[1], to, n)
  end
end
local now = tonumber(redis.call('TIME')[1])
local all = redis.call('HGETALL', KEYS[1])
local sp, hp = ARGV[5], ARGV[6]
for i = 1, #all, 2 do
  local f = all[i]
  if f ~= ARGV[4] and string.sub(f, 1, #sp) == sp
     and now - tonumber(all[i + 1]) > tonumber(ARGV[11]) then
    local h = hp .. string.sub(f, #sp + 1)
    local v = redis.call('HGET', KEYS[1], h) or '0'
    if string.sub(v, 1, 1) ~= '-' then
      move(v, ARGV[2], ARGV[1])
    end
    redis.call('HDEL', KEYS[1], f, h)
  end
end
local hold = redis.call('HGET', KEYS[1], ARGV[3]) or '0'
local back = ARGV[7]
if lt(hold, back) then back = hold end
if string.sub(back, 1, 1) ~= '-' and back ~= '0' then
  move(back, ARGV[3], ARGV[1])
  redis.call('HINCRBY', KEYS[1], ARGV[2], '-' .. back)
end
local a = redis.call('HGET', KEYS[1], ARGV[1]) or '0'
local g = '0'
if ARGV[8] ~= '0' and not lt(a, ARGV[8]) then
  g = ARGV[8]
  if not lt(a, ARGV[10]) then g = ARGV[9] end
  move(g, ARGV[1], ARGV[3])
  redis.call('HINCRBY', KEYS[1], ARGV[2], g)
end
redis.call('HSET', KEYS[1], ARGV[4], now)
return {g, redis.call('HGET', KEYS[1], ARGV[1]) or '0',
        redis.call('HGET', KEYS[1], ARGV[3]) or '0'}
