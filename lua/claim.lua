-- toll-settle's claim of a usage hash (settle/toll_settle_drain.c,
-- docs/settle.md "The drain protocol").
--
-- KEYS[1]  the usage hash        KEYS[2]  the claim's name
-- KEYS[3]  the day's mirror      ARGV[1]  the mirror's TTL, s
-- ARGV[2]  the provider field's suffix, ":provider"
-- ARGV[3]  the currency field's suffix, ":currency"
--
-- Renames the hash to the claim and adds its counts to the mirror,
-- atomically: both or neither.  A key that is not a hash is renamed,
-- not mirrored, and its type answered: the drain sets the claim aside.
-- A mirror that is not a hash moves nothing (answer 0): the hash waits.
-- Counts move as the strings Redis holds (HINCRBY parses them as int64),
-- never as Lua numbers.  A hash with a count that is not an integer of
-- at most 20 bytes is claimed (out of the meter's way) but not mirrored:
-- the drain leaves such a claim unposted, and a script that failed half
-- way would have mirrored a part of it.  Answers the claim's content,
-- or nil when there was no hash.
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local m = redis.call('TYPE', KEYS[3]).ok
if m ~= 'none' and m ~= 'hash' then return 0 end
local t = redis.call('TYPE', KEYS[1]).ok
redis.call('RENAME', KEYS[1], KEYS[2])
if t ~= 'hash' then return t end
local p, q = ARGV[2], ARGV[3]
local function text(f) return string.sub(f, -#p) == p or string.sub(f, -#q) == q end
local h = redis.call('HGETALL', KEYS[2])
for i = 1, #h, 2 do
  if not text(h[i]) and
     (not string.match(h[i + 1], '^%-?%d+$') or #h[i + 1] > 20) then
    return h
  end
end
for i = 1, #h, 2 do
  if text(h[i]) then
    redis.call('HSET', KEYS[3], h[i], h[i + 1])
  else
    redis.call('HINCRBY', KEYS[3], h[i], h[i + 1])
  end
end
redis.call('EXPIRE', KEYS[3], ARGV[1])
return h
