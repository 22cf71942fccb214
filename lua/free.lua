-- A lease of free calls for one node (src/ngx_http_toll_quota.c).
--
-- KEYS[1]  the buyer's free-tier hash: calls granted, per service
-- ARGV[1]  the service           ARGV[2]  its free_calls
-- ARGV[3]  the lease wanted
-- ARGV[4]  how many this node knows were granted (a Redis that lost the
--          hash does not grant them again)
--
-- Grants what is left, at most the lease, and answers {granted, left
-- after it}: no node can ever lease more than free_calls in all.
local c = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local f = tonumber(ARGV[4])
if c < f then redis.call('HSET', KEYS[1], ARGV[1], ARGV[4]) c = f end
local n = tonumber(ARGV[2]) - c
if n < 0 then n = 0 end
local g = tonumber(ARGV[3])
if g > n then g = n end
if g > 0 then redis.call('HINCRBY', KEYS[1], ARGV[1], g) end
return {g, n - g}
