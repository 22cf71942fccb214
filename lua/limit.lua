-- The rate limits' script (src/ngx_http_toll_limit_sync.c,
-- docs/limits.md): one script for sync rounds ("s") and for strict
-- requests ("a").
--
-- KEYS[1]  the subject's hash, toll:rl:{<subject>}
-- ARGV[1]  the mode, "s" or "a"
-- ARGV[2]  the node's now (its limit clock, ms)
-- ARGV[3]  the key's TTL (ms)
-- ARGV[4]  this node's id
-- ARGV[5]  the number of limits
-- ARGV[6]  the node's estimate of Redis's clock minus its own (ms, or "-")
-- ARGV[7]  the slots a window keeps before its head (TOLL_WINDOW_SLOTS)
-- then five per limit, from ARGV[8]:
--   "b" n interval_us tolerance_us tat_us  a bucket, n admitted here, and
--                                          this node's tat (us) after them
--   "w" unit slot_ms count "slot:n ..."    a window and its slots' news
--   "c" in_flight expire_ms - -            this node's requests in flight
--
-- Times in Redis are on Redis's clock (TIME), the one clock all nodes
-- share: a node's times are moved onto it by the node's offset d, and
-- the answer is moved back onto the node's clock.  d is the node's
-- estimate when this call agrees with it (a call arrives after it was
-- built, never before), else this call's own measure.  A window's slots
-- move by d rounded to whole slots.  A bucket's tat is never read as
-- further ahead than twice its tolerance: whatever clock put it there,
-- it cannot refuse a key for longer than that.  (Redis before 5 writes
-- after TIME only once told to replicate the script's effects.)
--
-- It adds this node's news, in strict mode decides one more request
-- (all limits or none), drops expired slots and nodes, and answers
-- {admitted, violated limit (1-based) or 0, this call's measure of d,
-- then per limit: the bucket's tat (us), a window's {head slot, counts
-- of its K + 1 slots}, or the in-flight count of the other nodes}.  Only
-- integers: a tat in us stays below 2^53.
local now=tonumber(ARGV[2]) local key=KEYS[1]
local node='c:'..ARGV[4] local K=tonumber(ARGV[7]) local h={}
if redis.replicate_commands then redis.replicate_commands() end
local tm=redis.call('TIME')
local rnow=tonumber(tm[1])*1000+math.floor(tonumber(tm[2])/1000)
local rnow_us=tonumber(tm[1])*1000000+tonumber(tm[2])
local m=rnow-now local d=m local off=tonumber(ARGV[6])
if off and m>=off and m-off<=1000 then d=off end
local d_us=d*1000
local raw=redis.call('HGETALL',key)
for i=1,#raw,2 do h[raw[i]]=raw[i+1] end
local lim={} local p=8
for i=1,tonumber(ARGV[5]) do
  lim[i]={ARGV[p],ARGV[p+1],tonumber(ARGV[p+2]),tonumber(ARGV[p+3]),
  ARGV[p+4]} p=p+5 end
local function gb(l) local t=tonumber(h['b'] or '0')
  local c=rnow_us+2*l[4] if t>c then t=c end return t end
local function tat(l) local t=gb(l)
  if t<rnow_us then t=rnow_us end return t end
local function sh(l) return math.floor(d/l[3]+0.5) end
local function field(l,slot) return l[2]..':'..slot end
local function count(l,slot) return tonumber(h[field(l,slot)] or '0') end
local function bump(l,slot,n) local f=field(l,slot)
  h[f]=count(l,slot)+n redis.call('HINCRBY',key,f,n) end
for _,l in ipairs(lim) do
  if l[1]=='b' then local n=tonumber(l[2]) if n>0 then
    local t=gb(l)+n*l[3] local own=tonumber(l[5])
    if own>0 and own+d_us>t then t=own+d_us end
    if t>rnow_us+2*l[4] then t=rnow_us+2*l[4] end
    h['b']=t end
  elseif l[1]=='w' then local head=math.floor(rnow/l[3]) local k=sh(l)
    for s,n in string.gmatch(l[5],'(%d+):(%d+)') do s=tonumber(s)+k
      if s>head then s=head end
      if s>=head-K then bump(l,s,tonumber(n)) end end
  elseif l[1]=='c' then
    redis.call('HSET',key,node,l[2]..':'..(rnow+l[3])) end end
local ok,bad=1,0
if ARGV[1]=='a' then
  for i,l in ipairs(lim) do
    if l[1]=='b' and tat(l)+l[3]-rnow_us>l[4] then ok,bad=0,i break end
    if l[1]=='w' and l[4]>0 then local head=math.floor(rnow/l[3])
      local s=0
      for slot=head-K,head do s=s+count(l,slot) end
      if s+1>l[4] then ok,bad=0,i break end end end
  if ok==1 then for _,l in ipairs(lim) do
    if l[1]=='b' then h['b']=tat(l)+l[3] end
    if l[1]=='w' then bump(l,math.floor(rnow/l[3]),1) end end end end
local out={ok,bad,m} local heads={}
for _,l in ipairs(lim) do
  if l[1]=='b' then local t=0 if h['b'] then t=math.floor(gb(l))
    redis.call('HSET',key,'b',string.format('%d',t))
    t=t-d_us if t<0 then t=0 end end
    out[#out+1]=t
  elseif l[1]=='w' then local head=math.floor(rnow/l[3])
    local a={head-sh(l)}
    for slot=head-K,head do a[#a+1]=count(l,slot) end
    out[#out+1]=a heads[l[2]]=head
  elseif l[1]=='c' then local s=0
    for f,v in pairs(h) do if string.sub(f,1,2)=='c:' and f~=node then
      local c,e=string.match(v,'^(%d+):(%d+)$')
      if c and tonumber(e)>rnow then s=s+tonumber(c)
      else redis.call('HDEL',key,f) end end end
    out[#out+1]=s end end
for f,_ in pairs(h) do local u,s=string.match(f,'^(%a):(%d+)$')
  if u and heads[u] and tonumber(s)<heads[u]-K then
    redis.call('HDEL',key,f) end end
redis.call('PEXPIRE',key,ARGV[3])
return out
