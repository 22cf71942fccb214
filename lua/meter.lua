-- The meter's flush of one batch: a buyer's final counts of one service
-- on one day (src/ngx_http_toll_meter.c, docs/metering.md).
--
-- KEYS[1]  the buyer's usage hash of the day
-- KEYS[2]  the buyer's flush ids (a zset scored by time)
-- KEYS[3]  the days the buyer has usage of (a set)
-- KEYS[4]  the buyer's prepaid balances (a hash)
-- ARGV[1]  the flush id          ARGV[2]  now, unix seconds
-- ARGV[3]  the day, YYYYMMDD     ARGV[4]  how long flush ids are kept, s
-- ARGV[5]  the TTL of KEYS[2], s
-- ARGV[6]  the provider's field  ARGV[7]  the provider
-- ARGV[8]  the currency's field  ARGV[9]  the currency
-- ARGV[10] what the balance paid of the batch, micro-units ("0": none)
-- ARGV[11] "<CUR>:spent"  ARGV[12] "<CUR>:held"
-- ARGV[13] "<CUR>:hold:<node>" (the node that flushes)
-- ARGV[14] "<CUR>:available"
-- then from ARGV[15], for each count: its field, the count, and the most
-- the hash may hold before it (2^63 - 1 - count).
--
-- What the balance paid moves from the node's hold to spent.  A node
-- whose hold went back to available while it was away from Redis
-- (lua/prepaid.lua) pays the rest from available: the one way a balance
-- goes below 0 (docs/metering.md).  Always: credits - debits =
-- available + held + spent.
--
-- All or nothing: every check comes before the first write, since Redis
-- does not undo the writes of a script that fails.  A count the hash
-- cannot take is answered {1, field} (not an integer: the batch waits)
-- or {2, field} (the sum would overflow).  Counts go to HINCRBY as the
-- strings they came as, and the bound is compared as a decimal string:
-- no Lua number ever holds one.  The counts the meter sends are never
-- negative.  Answers 1 (applied) or 0 (this flush id was applied before).
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
local function lt(a, b)
  local na, nb = string.sub(a, 1, 1) == '-', string.sub(b, 1, 1) == '-'
  if na ~= nb then return na end
  if na then return #a > #b or (#a == #b and a > b) end
  return #a < #b or (#a == #b and a < b)
end
for i = 15, #ARGV, 3 do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v then
    if #v > 20 or (v ~= '0' and not string.match(v, '^%-?[1-9]%d*$')) then
      return {1, ARGV[i]}
    end
    local m = ARGV[i + 2]
    if string.sub(v, 1, 1) ~= '-' and (#v > #m or (#v == #m and v > m)) then
      return {2, ARGV[i]}
    end
  end
end
redis.call('SADD', KEYS[3], ARGV[3])
for i = 15, #ARGV, 3 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
local x = ARGV[10]
if x ~= '0' then
  local h = redis.call('HGET', KEYS[4], ARGV[13]) or '0'
  if lt(h, x) then
    -- held no more: h from the hold, the rest from available
    if h ~= '0' and string.sub(h, 1, 1) ~= '-' then
      redis.call('HINCRBY', KEYS[4], ARGV[12], '-' .. h)
      redis.call('HINCRBY', KEYS[4], ARGV[14], h)
    end
    redis.call('HSET', KEYS[4], ARGV[13], '0')
    redis.call('HINCRBY', KEYS[4], ARGV[14], '-' .. x)
  else
    redis.call('HINCRBY', KEYS[4], ARGV[13], '-' .. x)
    redis.call('HINCRBY', KEYS[4], ARGV[12], '-' .. x)
  end
  redis.call('HINCRBY', KEYS[4], ARGV[11], x)
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[4]))
redis.call('EXPIRE', KEYS[2], ARGV[5])
return 1
