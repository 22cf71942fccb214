/*
 * toll: the Lua scripts every program sends to Redis.
 *
 * The scripts are files in lua/, each with the keys and arguments it
 * takes in its comment; tools/embed_lua.py compiles them into
 * lib/toll_scripts.c (committed, as the dashboard page is, so that
 * building with nginx's own configure needs no extra step), with the
 * SHA1 that EVALSHA names each by.  Constants the scripts need (field
 * names, TTLs, the window's slot count) are arguments, passed from the
 * C that defines them.
 *
 * The module sends them with ngx_http_toll_redis_eval(), toll-settle and
 * tollctl with toll_script_run(): EVALSHA, and the whole script again
 * when Redis answers NOSCRIPT (a restart, a failover, SCRIPT FLUSH).
 */

#ifndef _TOLL_SCRIPTS_H_INCLUDED_
#define _TOLL_SCRIPTS_H_INCLUDED_


#include <stddef.h>


/* one per file of lua/, in the order of their names */
typedef enum {
    TOLL_SCRIPT_BALANCE = 0,      /* tollctl credits or takes, once */
    TOLL_SCRIPT_CAP,              /* a node leases spend caps, gives back */
    TOLL_SCRIPT_CLAIM,            /* toll-settle claims a usage hash */
    TOLL_SCRIPT_FREE,             /* a node leases free calls */
    TOLL_SCRIPT_LIMIT,            /* a node's limits meet the others' */
    TOLL_SCRIPT_METER,            /* the meter flushes a batch */
    TOLL_SCRIPT_PREPAID,          /* a node leases a balance, gives back */
    TOLL_SCRIPT_QUARANTINE_READ,  /* tollctl reads a claim set aside */
    TOLL_SCRIPT_USAGE,            /* toll_usage reads a buyer's days */
    TOLL_SCRIPT_N
} toll_script_e;


typedef struct {
    const char  *name;            /* the file's, without ".lua" */
    const char  *text;
    size_t       len;
    const char  *sha1;            /* 40 lowercase hex digits */
} toll_script_t;


extern const toll_script_t  toll_scripts[TOLL_SCRIPT_N];


#endif /* _TOLL_SCRIPTS_H_INCLUDED_ */
