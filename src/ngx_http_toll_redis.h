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
#include "toll_scripts.h"


/*
 * Called exactly once per command that was not cancelled: with the reply,
 * or with NULL when the store failed (timeout, lost connection, shutdown).
 * The reply belongs to hiredis and is valid only during the call.
 */
typedef void (*ngx_http_toll_redis_handler_pt)(void *data, redisReply *reply);

/* told when this worker's connection starts answering (1) or is lost (0) */
typedef void (*ngx_http_toll_redis_up_pt)(void *data, ngx_uint_t up);


/* reply times, in us: 0.1 ms to 1 s */
#define NGX_HTTP_TOLL_REDIS_REPLY_BUCKETS  13

/*
 * The adapter's counters.  They live in the shared zone, so that every
 * worker adds to one set, with an atomic add each and no lock; the
 * metrics only read them.  Histogram buckets are kept per bucket, not
 * cumulative.
 */
typedef struct {
    ngx_atomic_t               commands;      /* asked for, sent or not */
    ngx_atomic_t               errors;        /* failed, or error reply */
    ngx_atomic_t               reconnects;
    ngx_atomic_t               reply[NGX_HTTP_TOLL_REDIS_REPLY_BUCKETS + 1];
    ngx_atomic_t               reply_us;      /* the sum */
} ngx_http_toll_redis_stats_t;


/*
 * The worker's connection: its commands and replies are counted in stats,
 * and up(data, ...) is told when the connection comes up or goes down.
 */
ngx_int_t ngx_http_toll_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_toll_redis_conf_t *conf, ngx_http_toll_redis_stats_t *stats,
    ngx_http_toll_redis_up_pt up, void *data);
void ngx_http_toll_redis_exit_process(ngx_cycle_t *cycle);

/*
 * Queues a command; argv entries are sent as they are, never formatted.
 * Returns NULL when the store is known to be unreachable right now, so
 * that the caller can answer at once instead of waiting for a timeout.
 */
ngx_http_toll_redis_cmd_t *ngx_http_toll_redis_send(
    ngx_http_toll_redis_handler_pt handler, void *data, int argc,
    const char **argv, const size_t *argvlen);

/*
 * Runs script id (lib/toll_scripts.h): argv[2] is the number of keys,
 * then the keys and the arguments; argv[0] and argv[1] are this
 * function's to fill.  EVALSHA once Redis has the script, and on
 * NOSCRIPT the whole script again: the handler sees the script's answer.
 */
ngx_http_toll_redis_cmd_t *ngx_http_toll_redis_eval(toll_script_e id,
    ngx_http_toll_redis_handler_pt handler, void *data, int argc,
    const char **argv, size_t *argvlen);

/*
 * The same for a script that moves money (a meter flush, a lease of free
 * calls, of a balance, of a spend cap): with toll_redis replicas=N, its
 * answer reaches the handler only once N replicas have the write (WAIT
 * N, bounded by replica_wait); otherwise the handler gets NULL, as for a
 * lost answer, which every such caller already takes as "maybe applied":
 * the meter sends the batch again under its flush id, a lease counts
 * what it asked for as used.  So a failover that promotes a replica
 * cannot lose an acknowledged write.
 */
ngx_http_toll_redis_cmd_t *ngx_http_toll_redis_eval_durable(toll_script_e id,
    ngx_http_toll_redis_handler_pt handler, void *data, int argc,
    const char **argv, size_t *argvlen);

/* the caller is gone: its handler will not be called */
void ngx_http_toll_redis_cancel(ngx_http_toll_redis_cmd_t *cmd);


/* the paths whose refusals are told apart, for the log */
typedef enum {
    NGX_HTTP_TOLL_REDIS_LOOKUP = 0,
    NGX_HTTP_TOLL_REDIS_LIMIT,
    NGX_HTTP_TOLL_REDIS_FREE,
    NGX_HTTP_TOLL_REDIS_METER,
    NGX_HTTP_TOLL_REDIS_PREPAID,
    NGX_HTTP_TOLL_REDIS_PATH_N
} ngx_http_toll_redis_path_e;

/*
 * An error reply (or none, NULL) to a command of a path: returns 1 when
 * the caller should log it, 0 when it belongs to an episode already
 * logged.  An episode is a run of refusals of one class (the reply's
 * first word: OOM, READONLY, LOADING, WRONGTYPE ...) on one path, none
 * more than NGX_HTTP_TOLL_REDIS_EPISODE_MS after the one before; a long
 * one is logged again once every NGX_HTTP_TOLL_REDIS_REMIND_MS.  Per
 * worker.
 */
ngx_uint_t ngx_http_toll_redis_refusal(ngx_http_toll_redis_path_e path,
    redisReply *reply);


#endif /* _NGX_HTTP_TOLL_REDIS_H_INCLUDED_ */
