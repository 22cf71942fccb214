/*
 * toll: hiredis's async API on nginx's event loop.
 *
 * One connection per worker.  Commands carry their own timer; a command
 * that times out fails at once, and the connection is dropped and made
 * again with backoff, since every reply queued behind it is late too.
 */

#ifndef _NGX_HTTP_TOLL_REDIS_H_INCLUDED_
#define _NGX_HTTP_TOLL_REDIS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include <hiredis/hiredis.h>

#include "ngx_http_toll_module.h"


/*
 * Called exactly once per command that was not cancelled: with the reply,
 * or with NULL when the store failed (timeout, lost connection, shutdown).
 * The reply belongs to hiredis and is valid only during the call.
 */
typedef void (*ngx_http_toll_redis_handler_pt)(void *data, redisReply *reply);


ngx_int_t ngx_http_toll_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_toll_redis_conf_t *conf);
void ngx_http_toll_redis_exit_process(ngx_cycle_t *cycle);

/*
 * Queues a command; argv entries are sent as they are, never formatted.
 * Returns NULL when the store is known to be unreachable right now, so
 * that the caller can answer at once instead of waiting for a timeout.
 */
ngx_http_toll_redis_cmd_t *ngx_http_toll_redis_send(
    ngx_http_toll_redis_handler_pt handler, void *data, int argc,
    const char **argv, const size_t *argvlen);

/* the caller is gone: its handler will not be called */
void ngx_http_toll_redis_cancel(ngx_http_toll_redis_cmd_t *cmd);


#endif /* _NGX_HTTP_TOLL_REDIS_H_INCLUDED_ */
