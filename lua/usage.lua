-- A buyer's usage and balances, for toll_usage (src/ngx_http_toll_usage.c).
--
-- KEYS[1]  the days the buyer has usage of (a set)
-- KEYS[2]  the buyer's flush ids (a zset)
-- KEYS[3]  the buyer's prepaid balances (a hash)
-- ARGV[1]  the buyer's usage hashes' name but the day: "toll:usage:{B}:"
-- ARGV[2]  the mirror's suffix, ":drained"
-- ARGV[3]... flush ids the asking node has in flight
--
-- Answers {usage, applied, balances}: every field and value of each
-- day's usage hash and of its mirror, where toll-settle adds what it
-- claims, in the same script as the claim (docs/settle.md): a call is in
-- one or the other, never both, never neither; which of the flush ids
-- Redis has applied, so that the node adds the counts of the others
-- only (a call is counted once: in Redis or in the node); and the
-- balances hash.  The sums are made in C, on int64, never in Lua
-- numbers.  A day with neither hash nor mirror (the mirror expires) is
-- forgotten.
local out = {}
for _, d in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local h = redis.call('HGETALL', ARGV[1] .. d)
  local m = redis.call('HGETALL', ARGV[1] .. d .. ARGV[2])
  if #h == 0 and #m == 0 then redis.call('SREM', KEYS[1], d) end
  for i = 1, #h do out[#out + 1] = h[i] end
  for i = 1, #m do out[#out + 1] = m[i] end
end
local applied = {}
for i = 3, #ARGV do
  if redis.call('ZSCORE', KEYS[2], ARGV[i]) then
    applied[#applied + 1] = ARGV[i]
  end
end
return {out, applied, redis.call('HGETALL', KEYS[3])}
