-- The meter's flush of one batch: a buyer's final counts of one service
-- on one day (src/ngx_http_toll_meter.c, docs/metering.md).
--
-- KEYS[1]  the buyer's usage hash of the day
-- KEYS[2]  the buyer's flush ids (a zset scored by time)
-- KEYS[3]  the days the buyer has usage of (a set)
-- ARGV[1]  the flush id          ARGV[2]  now, unix seconds
-- ARGV[3]  the day, YYYYMMDD     ARGV[4]  how long flush ids are kept, s
-- ARGV[5]  the TTL of KEYS[2], s
-- ARGV[6]  the provider's field  ARGV[7]  the provider
-- then from ARGV[8], for each count: its field, the count, and the most
-- the hash may hold before it (2^63 - 1 - count).
--
-- All or nothing: every check comes before the first write, since Redis
-- does not undo the writes of a script that fails.  A count the hash
-- cannot take is answered {1, field} (not an integer: the batch waits)
-- or {2, field} (the sum would overflow).  Counts go to HINCRBY as the
-- strings they came as, and the bound is compared as a decimal string:
-- no Lua number ever holds one.  The counts the meter sends are never
-- negative.  Answers 1 (applied) or 0 (this flush id was applied before).
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
for i = 8, #ARGV, 3 do
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
for i = 8, #ARGV, 3 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], ARGV[6], ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[4]))
redis.call('EXPIRE', KEYS[2], ARGV[5])
return 1
