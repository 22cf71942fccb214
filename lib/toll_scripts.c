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
