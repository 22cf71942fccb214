/*
 * toll: the Lua scripts of lua/, as Redis receives them.
 * Made by tools/embed_lua.py from the files of lua/: do not edit.
 */

#include "toll_scripts.h"


const toll_script_t  toll_scripts[TOLL_SCRIPT_N] = {
    [TOLL_SCRIPT_CLAIM] = {
        "claim",
        "if redis.call('EXISTS', KEYS[1]) == 0 then return false end\n"
        "local m = redis.call('TYPE', KEYS[3]).ok\n"
        "if m ~= 'none' and m ~= 'hash' then return 0 end\n"
        "local t = redis.call('TYPE', KEYS[1]).ok\n"
        "redis.call('RENAME', KEYS[1], KEYS[2])\n"
        "if t ~= 'hash' then return t end\n"
        "local p = ARGV[2]\n"
        "local h = redis.call('HGETALL', KEYS[2])\n"
        "for i = 1, #h, 2 do\n"
        "if string.sub(h[i], -#p) ~= p and\n"
        "(not string.match(h[i + 1], '^%-?%d+$') or #h[i + 1] > 20) then\n"
        "return h\n"
        "end\n"
        "end\n"
        "for i = 1, #h, 2 do\n"
        "if string.sub(h[i], -#p) == p then\n"
        "redis.call('HSET', KEYS[3], h[i], h[i + 1])\n"
        "else\n"
        "redis.call('HINCRBY', KEYS[3], h[i], h[i + 1])\n"
        "end\n"
        "end\n"
        "redis.call('EXPIRE', KEYS[3], ARGV[1])\n"
        "return h\n",
        664,
        "d2002acefc1a84f6384e0b5fcf211671150774c1"
    },
    [TOLL_SCRIPT_FREE] = {
        "free",
        "local c = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')\n"
        "local f = tonumber(ARGV[4])\n"
        "if c < f then redis.call('HSET', KEYS[1], ARGV[1], ARGV[4]) c = f end\n"
        "local n = tonumber(ARGV[2]) - c\n"
        "if n < 0 then n = 0 end\n"
        "local g = tonumber(ARGV[3])\n"
        "if g > n then g = n end\n"
        "if g > 0 then redis.call('HINCRBY', KEYS[1], ARGV[1], g) end\n"
        "return {g, n - g}\n",
        349,
        "77bc72dc4ba07575eb6e55fff953a19327f5cbd2"
    },
    [TOLL_SCRIPT_LIMIT] = {
        "limit",
        "local now=tonumber(ARGV[2]) local key=KEYS[1]\n"
        "local node='c:'..ARGV[4] local K=tonumber(ARGV[7]) local h={}\n"
        "if redis.replicate_commands then redis.replicate_commands() end\n"
        "local tm=redis.call('TIME')\n"
        "local rnow=tonumber(tm[1])*1000+math.floor(tonumber(tm[2])/1000)\n"
        "local rnow_us=tonumber(tm[1])*1000000+tonumber(tm[2])\n"
        "local m=rnow-now local d=m local off=tonumber(ARGV[6])\n"
        "if off and m>=off and m-off<=1000 then d=off end\n"
        "local d_us=d*1000\n"
        "local raw=redis.call('HGETALL',key)\n"
        "for i=1,#raw,2 do h[raw[i]]=raw[i+1] end\n"
        "local lim={} local p=8\n"
        "for i=1,tonumber(ARGV[5]) do\n"
        "lim[i]={ARGV[p],ARGV[p+1],tonumber(ARGV[p+2]),tonumber(ARGV[p+3]),\n"
        "ARGV[p+4]} p=p+5 end\n"
        "local function gb(l) local t=tonumber(h['b'] or '0')\n"
        "local c=rnow_us+2*l[4] if t>c then t=c end return t end\n"
        "local function tat(l) local t=gb(l)\n"
        "if t<rnow_us then t=rnow_us end return t end\n"
        "local function sh(l) return math.floor(d/l[3]+0.5) end\n"
        "local function field(l,slot) return l[2]..':'..slot end\n"
        "local function count(l,slot) return tonumber(h[field(l,slot)] or '0') end\n"
        "local function bump(l,slot,n) local f=field(l,slot)\n"
        "h[f]=count(l,slot)+n redis.call('HINCRBY',key,f,n) end\n"
        "for _,l in ipairs(lim) do\n"
        "if l[1]=='b' then local n=tonumber(l[2]) if n>0 then\n"
        "local t=gb(l)+n*l[3] local own=tonumber(l[5])\n"
        "if own>0 and own+d_us>t then t=own+d_us end\n"
        "if t>rnow_us+2*l[4] then t=rnow_us+2*l[4] end\n"
        "h['b']=t end\n"
        "elseif l[1]=='w' then local head=math.floor(rnow/l[3]) local k=sh(l)\n"
        "for s,n in string.gmatch(l[5],'(%d+):(%d+)') do s=tonumber(s)+k\n"
        "if s>head then s=head end\n"
        "if s>=head-K then bump(l,s,tonumber(n)) end end\n"
        "elseif l[1]=='c' then\n"
        "redis.call('HSET',key,node,l[2]..':'..(rnow+l[3])) end end\n"
        "local ok,bad=1,0\n"
        "if ARGV[1]=='a' then\n"
        "for i,l in ipairs(lim) do\n"
        "if l[1]=='b' and tat(l)+l[3]-rnow_us>l[4] then ok,bad=0,i break end\n"
        "if l[1]=='w' and l[4]>0 then local head=math.floor(rnow/l[3])\n"
        "local s=0\n"
        "for slot=head-K,head do s=s+count(l,slot) end\n"
        "if s+1>l[4] then ok,bad=0,i break end end end\n"
        "if ok==1 then for _,l in ipairs(lim) do\n"
        "if l[1]=='b' then h['b']=tat(l)+l[3] end\n"
        "if l[1]=='w' then bump(l,math.floor(rnow/l[3]),1) end end end end\n"
        "local out={ok,bad,m} local heads={}\n"
        "for _,l in ipairs(lim) do\n"
        "if l[1]=='b' then local t=0 if h['b'] then t=math.floor(gb(l))\n"
        "redis.call('HSET',key,'b',string.format('%d',t))\n"
        "t=t-d_us if t<0 then t=0 end end\n"
        "out[#out+1]=t\n"
        "elseif l[1]=='w' then local head=math.floor(rnow/l[3])\n"
        "local a={head-sh(l)}\n"
        "for slot=head-K,head do a[#a+1]=count(l,slot) end\n"
        "out[#out+1]=a heads[l[2]]=head\n"
        "elseif l[1]=='c' then local s=0\n"
        "for f,v in pairs(h) do if string.sub(f,1,2)=='c:' and f~=node then\n"
        "local c,e=string.match(v,'^(%d+):(%d+)$')\n"
        "if c and tonumber(e)>rnow then s=s+tonumber(c)\n"
        "else redis.call('HDEL',key,f) end end end\n"
        "out[#out+1]=s end end\n"
        "for f,_ in pairs(h) do local u,s=string.match(f,'^(%a):(%d+)$')\n"
        "if u and heads[u] and tonumber(s)<heads[u]-K then\n"
        "redis.call('HDEL',key,f) end end\n"
        "redis.call('PEXPIRE',key,ARGV[3])\n"
        "return out\n",
        2921,
        "caeb37c131622dd15ea372d1cd90d7e1c6e555a8"
    },
    [TOLL_SCRIPT_METER] = {
        "meter",
        "if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end\n"
        "for i = 8, #ARGV, 3 do\n"
        "local v = redis.call('HGET', KEYS[1], ARGV[i])\n"
        "if v then\n"
        "if #v > 20 or (v ~= '0' and not string.match(v, '^%-?[1-9]%d*$')) then\n"
        "return {1, ARGV[i]}\n"
        "end\n"
        "local m = ARGV[i + 2]\n"
        "if string.sub(v, 1, 1) ~= '-' and (#v > #m or (#v == #m and v > m)) then\n"
        "return {2, ARGV[i]}\n"
        "end\n"
        "end\n"
        "end\n"
        "redis.call('SADD', KEYS[3], ARGV[3])\n"
        "for i = 8, #ARGV, 3 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end\n"
        "redis.call('HSET', KEYS[1], ARGV[6], ARGV[7])\n"
        "redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])\n"
        "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[4]))\n"
        "redis.call('EXPIRE', KEYS[2], ARGV[5])\n"
        "return 1\n",
        706,
        "d6966f21acab6ce46d57e3196651aa7bc043d7c5"
    },
    [TOLL_SCRIPT_QUARANTINE_READ] = {
        "quarantine_read",
        "if redis.call('TYPE', KEYS[1]).ok == 'hash' then\n"
        "return redis.call('HGETALL', KEYS[1])\n"
        "end\n"
        "return {}\n",
        101,
        "628b4a691ac3c06ef240639e77497b2159c8668a"
    },
    [TOLL_SCRIPT_USAGE] = {
        "usage",
        "local out = {}\n"
        "for _, d in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
        "local h = redis.call('HGETALL', ARGV[1] .. d)\n"
        "local m = redis.call('HGETALL', ARGV[1] .. d .. ARGV[2])\n"
        "if #h == 0 and #m == 0 then redis.call('SREM', KEYS[1], d) end\n"
        "for i = 1, #h do out[#out + 1] = h[i] end\n"
        "for i = 1, #m do out[#out + 1] = m[i] end\n"
        "end\n"
        "return out\n",
        335,
        "4fad466b9ad8dbd781a40cb65ef6982ea3d3b572"
    }
};
