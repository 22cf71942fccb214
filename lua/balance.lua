-- A credit, debit or refund of a buyer's prepaid balance in one
-- currency, once per ref (tollctl balance; docs/metering.md
-- "Prepaid balances").
--
-- KEYS[1]  the buyer's balances (hash)    KEYS[2]  its refs (hash)
-- KEYS[3]  its journal: refs not yet in the ledger (set)
-- ARGV[1]  the ref                        ARGV[2]  its record,
--          "<kind> <currency> <micros> <unix>", as the ledger posts it
-- ARGV[3]  the field the amount adds to: "<CUR>:credits" or ":debits"
-- ARGV[4]  the amount, micro-units, > 0   ARGV[5]  "<CUR>:available"
-- ARGV[6]  the most ARGV[3] may hold before it (2^63 - 1 - amount)
-- ARGV[7]  "credit" (adds to available) or "take" (takes from it)
--
-- Answers {0, record} when the ref was used before (nothing written),
-- {1, record} when written, {2, total} when the total of ARGV[3] would
-- overflow, {3, available} when a take is more than is available (what
-- nodes hold and what was spent cannot be taken).  Every check comes
-- before the first write.  Amounts stay decimal strings: HINCRBY adds
-- them and lt() compares them; no Lua number ever holds one.
local function lt(a, b)
  local na, nb = string.sub(a, 1, 1) == '-', string.sub(b, 1, 1) == '-'
  if na ~= nb then return na end
  if na then return #a > #b or (#a == #b and a > b) end
  return #a < #b or (#a == #b and a < b)
end
local prev = redis.call('HGET', KEYS[2], ARGV[1])
if prev then return {0, prev} end
local t = redis.call('HGET', KEYS[1], ARGV[3]) or '0'
if lt(ARGV[6], t) then return {2, t} end
if ARGV[7] == 'credit' then
  redis.call('HINCRBY', KEYS[1], ARGV[5], ARGV[4])
else
  local a = redis.call('HGET', KEYS[1], ARGV[5]) or '0'
  if lt(a, ARGV[4]) then return {3, a} end
  redis.call('HINCRBY', KEYS[1], ARGV[5], '-' .. ARGV[4])
end
redis.call('HINCRBY', KEYS[1], ARGV[3], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[1])
return {1, ARGV[2]}
