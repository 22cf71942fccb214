-- A claim set aside, for tollctl quarantine list (ctl/tollctl_quarantine.c).
--
-- KEYS[1]  the claim
--
-- Its fields and values; a claim set aside because it is not a hash
-- reads as empty, where HGETALL would refuse the whole pipeline.
if redis.call('TYPE', KEYS[1]).ok == 'hash' then
  return redis.call('HGETALL', KEYS[1])
end
return {}
