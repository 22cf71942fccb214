-- A buyer's usage, for toll_usage (src/ngx_http_toll_usage.c).
--
-- KEYS[1]  the days the buyer has usage of (a set)
-- ARGV[1]  the buyer's usage hashes' name but the day: "toll:usage:{B}:"
-- ARGV[2]  the mirror's suffix, ":drained"
--
-- Answers every field and value of each day's usage hash and of its
-- mirror, where toll-settle adds what it claims, in the same script as
-- the claim (docs/settle.md): a call is in one or the other, never
-- both, never neither.  The sums are made in C, on int64, never in Lua
-- numbers.  A day with neither (the mirror expires) is forgotten.
local out = {}
for _, d in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local h = redis.call('HGETALL', ARGV[1] .. d)
  local m = redis.call('HGETALL', ARGV[1] .. d .. ARGV[2])
  if #h == 0 and #m == 0 then redis.call('SREM', KEYS[1], d) end
  for i = 1, #h do out[#out + 1] = h[i] end
  for i = 1, #m do out[#out + 1] = m[i] end
end
return out
