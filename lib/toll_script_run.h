/*
 * toll: the Lua scripts of lib/toll_scripts.h, run by the blocking client
 * of lib/toll_store.h: toll-settle and tollctl (the module has its own, on its event
 * loop: ngx_http_toll_redis_eval()).
 */

#ifndef _TOLL_SCRIPT_RUN_H_INCLUDED_
#define _TOLL_SCRIPT_RUN_H_INCLUDED_


#include <stddef.h>

#include <hiredis/hiredis.h>

#include "toll_scripts.h"
#include "toll_store.h"


/*
 * Runs script id with argv: the number of keys, the keys, the arguments
 * (at most 32 in all).  EVALSHA first; on NOSCRIPT the whole script, once.
 * Returns hiredis's reply (the caller frees it), or NULL as
 * toll_store_command() does (toll_store_error() says why).
 */
redisReply *toll_script_run(toll_store_t *st, toll_script_e id, int argc,
    const char **argv, const size_t *argvlen);


#endif /* _TOLL_SCRIPT_RUN_H_INCLUDED_ */
