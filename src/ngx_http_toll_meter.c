/*
 * toll: the meter.
 *
 * A call opens a record in the shared zone as it passes the gate (the zone
 * outlives a crashed worker and a reload); when it ends, the record goes
 * and what the call turned out to be is counted into a node of the zone,
 * then flushed by whichever worker's timer takes the node next.  Only
 * final counts leave the node, so nothing the meter sends is ever taken
 * back: a count in Redis is never negative, whatever the ledger drained
 * meanwhile.  The records of a worker that died are counted as the gate
 * saw them.  A flush moves the node's pending counts into its
 * "in flight" counts under a new flush id; until Redis confirms that id,
 * every retry sends the same counts under the same id, and the script in
 * Redis applies an id once.  So a timed-out write that Redis did apply,
 * a worker that died waiting, or a lost connection count nothing twice.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/rand.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_meter.h"
#include "ngx_http_toll_metrics.h"
#include "ngx_http_toll_quota.h"
#include "ngx_http_toll_redis.h"
#include "ngx_http_toll_shm.h"
#include "toll_money.h"
#include "toll_names.h"
#include "toll_reply.h"


/* nodes one worker flushes in one round */
#define NGX_HTTP_TOLL_METER_BATCH_MAX    512
/* a flush unanswered this long is sent again, under the same id */
#define NGX_HTTP_TOLL_METER_RETRY_MS     5000
/* while exiting: flush every so often, and give up after a while */
#define NGX_HTTP_TOLL_METER_EXIT_TICK_MS 50
#define NGX_HTTP_TOLL_METER_EXIT_MAX_MS  5000
/*
 * script arguments (lua/meter.lua): EVALSHA, sha, numkeys, 3 keys, 7
 * values, then a field, a count and a bound for each count
 */
#define NGX_HTTP_TOLL_METER_ARGS         (13 + 3 * TOLL_USAGE_COUNTS)
/* how often a worker looks for the open calls of workers that died */
#define NGX_HTTP_TOLL_METER_SWEEP_MS     1000
/* the distinct processes one sweep asks about */
#define NGX_HTTP_TOLL_METER_SWEEP_PIDS   64


/* a call's counts are the usage hash's (lib/toll_names.h) */
typedef char  ngx_http_toll_meter_counts_check[
    (NGX_HTTP_TOLL_METER_COUNTS == TOLL_USAGE_COUNTS) ? 1 : -1];


#if (NGX_HTTP_TOLL_METER_COUNTS != 6)
#error "the request context keeps a meter count per field"
#endif


typedef struct {
    int64_t                    pending[TOLL_USAGE_COUNTS];
    int64_t                    flight[TOLL_USAGE_COUNTS];
    uint64_t                   flush_id[2];   /* {0, 0}: none in flight */
    int64_t                    flush_at_ms;
    ngx_uint_t                 open;          /* calls between the gate
                                                 and their end */
    ngx_uint_t                 refused;       /* Redis refuses the batch
                                                 in flight: said once */
} ngx_http_toll_meter_state_t;


/*
 * A call between the gate and its end, in the zone: its counts as the
 * gate priced it, and the process that serves it.  A worker that dies
 * leaves its records; another worker counts them (the call may have
 * reached the upstream) and frees them.
 */
typedef struct {
    ngx_queue_t                       queue;     /* in the registry */
    ngx_http_toll_shm_limit_node_t   *ln;        /* pinned while open */
    ngx_pid_t                         pid;
    int64_t                           counts[TOLL_USAGE_COUNTS];
} ngx_http_toll_meter_open_t;


/* the registry of open calls: a node of its own, pinned for ever */
typedef struct {
    ngx_queue_t                open;
    ngx_uint_t                 n;
} ngx_http_toll_meter_registry_t;

#define NGX_HTTP_TOLL_METER_REGISTRY     "m:open"


/* a flush on its way: enough to find the node and its id again */
typedef struct {
    ngx_shm_zone_t            *shm_zone;
    uint64_t                   uid;
    uint64_t                   flush_id[2];
    size_t                     subject_len;
    u_char                     subject[NGX_HTTP_TOLL_NODE_SUBJECT_MAX];
} ngx_http_toll_meter_flush_t;


static void ngx_http_toll_meter_counts(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_uint_t reached, int64_t *counts);
static ngx_http_toll_meter_registry_t *ngx_http_toll_meter_registry(
    ngx_shm_zone_t *shm_zone);
static ngx_http_toll_shm_limit_node_t *ngx_http_toll_meter_node(
    ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx);
static void ngx_http_toll_meter_end(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_meter_open_t *op, int64_t *final, ngx_log_t *log);
static void ngx_http_toll_meter_sweep(int64_t now, ngx_log_t *log);
static void ngx_http_toll_meter_timer(ngx_event_t *ev);
static ngx_int_t ngx_http_toll_meter_send(ngx_http_toll_meter_flush_t *fl,
    ngx_http_toll_shm_limit_node_t *ln, ngx_pool_t *pool);
static void ngx_http_toll_meter_reply(void *data, redisReply *reply);
static void ngx_http_toll_meter_index_reply(void *data, redisReply *reply);


static ngx_event_t        ngx_http_toll_meter_ev;
static ngx_connection_t   ngx_http_toll_meter_dumb;
static ngx_shm_zone_t    *ngx_http_toll_meter_zone;
static ngx_msec_t         ngx_http_toll_meter_flush_ms;
static int64_t            ngx_http_toll_meter_exit_at_ms;
static u_char             ngx_http_toll_meter_day[8];     /* YYYYMMDD */
static time_t             ngx_http_toll_meter_day_sec = -1;
/* this process's flushes still waiting for Redis */
static ngx_uint_t         ngx_http_toll_meter_inflight;
static int64_t            ngx_http_toll_meter_swept_ms;
static ngx_http_toll_meter_registry_t  *ngx_http_toll_meter_reg;

/* flush ids: a random number per worker process, then a count */
static uint64_t           ngx_http_toll_meter_id_prefix;
static uint64_t           ngx_http_toll_meter_id_seq;


ngx_int_t
ngx_http_toll_meter_init_process(ngx_cycle_t *cycle)
{
    ngx_http_toll_main_conf_t  *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_toll_module);

    if (mcf == NULL || mcf->shm_zone == NULL) {
        return NGX_OK;
    }

    if (RAND_bytes((u_char *) &ngx_http_toll_meter_id_prefix,
                   sizeof(ngx_http_toll_meter_id_prefix))
        != 1)
    {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "toll: libcrypto failed to start the meter");
        return NGX_ERROR;
    }

    ngx_http_toll_meter_zone = mcf->shm_zone;
    ngx_http_toll_meter_flush_ms = mcf->meter_flush;

    ngx_http_toll_meter_dumb.fd = (ngx_socket_t) -1;

    ngx_http_toll_meter_ev.handler = ngx_http_toll_meter_timer;
    ngx_http_toll_meter_ev.data = &ngx_http_toll_meter_dumb;
    ngx_http_toll_meter_ev.log = cycle->log;

    /*
     * Not cancelable: an exiting worker waits for the next tick, which
     * flushes what the zone holds before the worker may go (the zone dies
     * with the last process of nginx, and its counts with it).
     */

    ngx_http_toll_meter_ev.cancelable = 0;

    ngx_add_timer(&ngx_http_toll_meter_ev, ngx_http_toll_meter_flush_ms);

    return NGX_OK;
}


/*
 * A priced call opens its record as it passes the gate, priced as if it
 * will reach the upstream and be charged: a worker killed while the call
 * is upstream then loses nothing, since the zone has it.  Nothing of it
 * leaves the zone before the call ends: the log phase counts what it
 * turned out to be (not sent upstream, an upstream error not charged, a
 * free call given back, its latency), so no count the meter sends ever
 * has to be taken back.  A zone that cannot hold the record refuses the
 * call: an unmetered call would be a free one.
 */

ngx_int_t
ngx_http_toll_meter_admit(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    ngx_str_t                         service, provider;
    ngx_http_toll_main_conf_t        *mcf;
    ngx_http_toll_meter_open_t       *op;
    ngx_http_toll_meter_state_t      *st;
    ngx_http_toll_meter_registry_t   *reg;
    ngx_http_toll_shm_limit_node_t   *ln;

    if (!ctx->priced || ctx->service == NULL || ctx->meter_admitted) {
        return NGX_OK;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    ngx_http_toll_meter_counts(r, ctx, 1, ctx->meter_counts);

    /* the latency is known only at the end */
    ctx->meter_counts[TOLL_USAGE_LATENCY] = 0;

    ngx_http_toll_shm_lock(mcf->shm_zone);

    op = NULL;
    reg = ngx_http_toll_meter_registry(mcf->shm_zone);
    ln = (reg != NULL) ? ngx_http_toll_meter_node(r, ctx) : NULL;

    if (ln != NULL) {
        /* the node cannot be evicted while the record is made */
        ln->pins = 1;
        op = ngx_http_toll_shm_alloc(mcf->shm_zone,
                                     sizeof(ngx_http_toll_meter_open_t));
    }

    if (op == NULL) {
        if (ln != NULL) {
            /* the timer unpins it if it holds nothing */
            ngx_http_toll_shm_enqueue(mcf->shm_zone, ln,
                                      NGX_HTTP_TOLL_QUEUE_METER);
        }

        ngx_http_toll_shm_unlock(mcf->shm_zone);

        ngx_http_toll_quota_names(ctx, &service, &provider);

        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "toll: zone full, call refused: buyer \"%V\", "
                      "service \"%V\"; increase \"toll_zone\"",
                      &ctx->key.owner, &service);
        return NGX_DECLINED;
    }

    op->ln = ln;
    op->pid = ngx_pid;
    ngx_memcpy(op->counts, ctx->meter_counts, sizeof(op->counts));

    ngx_queue_insert_tail(&reg->open, &op->queue);
    reg->n++;

    st = (ngx_http_toll_meter_state_t *) ln->state;
    st->open++;

    ngx_http_toll_shm_unlock(mcf->shm_zone);

    ctx->meter_open = op;
    ctx->meter_admitted = 1;

    return NGX_OK;
}


/*
 * The call moves to another location's price: its record goes with
 * nothing counted (nothing of it left the zone), so that only the new
 * price is ever counted.
 */

void
ngx_http_toll_meter_unadmit(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    int64_t                      none[TOLL_USAGE_COUNTS];
    ngx_http_toll_main_conf_t   *mcf;

    if (!ctx->meter_admitted) {
        return;
    }

    if (ctx->meter_open != NULL) {
        mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

        ngx_memzero(none, sizeof(none));

        ngx_http_toll_shm_lock(mcf->shm_zone);
        ngx_http_toll_meter_end(mcf->shm_zone, ctx->meter_open, none,
                                r->connection->log);
        ngx_http_toll_shm_unlock(mcf->shm_zone);

        ctx->meter_open = NULL;
    }

    ngx_memzero(ctx->meter_counts, sizeof(ctx->meter_counts));
    ctx->meter_admitted = 0;
}


/* the log phase: what the call turned out to be */

void
ngx_http_toll_meter_log(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    int64_t                      final[TOLL_USAGE_COUNTS];
    ngx_uint_t                   reached;
    ngx_http_toll_main_conf_t   *mcf;

    if (!ctx->meter_admitted || ctx->metered) {
        return;
    }

    ctx->metered = 1;

    /* a call nginx never sent upstream is no call */

    reached = (r->upstream_states && r->upstream_states->nelts);

    if (!reached) {
        ngx_http_toll_quota_unused(r, ctx);
    }

    ngx_http_toll_meter_counts(r, ctx, reached, final);

    ngx_http_toll_metrics_metered(ctx, final[TOLL_USAGE_FREE_CALLS],
                                  final[TOLL_USAGE_PAID_CALLS],
                                  final[TOLL_USAGE_AMOUNT]);

    if (ctx->meter_open == NULL) {
        return;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    ngx_http_toll_shm_lock(mcf->shm_zone);
    ngx_http_toll_meter_end(mcf->shm_zone, ctx->meter_open, final,
                            r->connection->log);
    ngx_http_toll_shm_unlock(mcf->shm_zone);

    ctx->meter_open = NULL;
}


/*
 * The request's pool goes with a record the log phase did not end (it
 * always does; this is the last guard): counted as the gate priced it,
 * as for a worker that died.
 */

void
ngx_http_toll_meter_cleanup(ngx_http_toll_ctx_t *ctx)
{
    ngx_http_toll_meter_open_t  *op;

    op = ctx->meter_open;

    if (op == NULL || ngx_http_toll_meter_zone == NULL) {
        return;
    }

    ctx->meter_open = NULL;

    ngx_http_toll_shm_lock(ngx_http_toll_meter_zone);
    ngx_http_toll_meter_end(ngx_http_toll_meter_zone, op, op->counts,
                            ngx_cycle->log);
    ngx_http_toll_shm_unlock(ngx_http_toll_meter_zone);
}


/* what a call counts for, as it stands */

static void
ngx_http_toll_meter_counts(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_uint_t reached, int64_t *counts)
{
    if (!reached) {
        ngx_memzero(counts, TOLL_USAGE_COUNTS * sizeof(int64_t));
        return;
    }

    counts[TOLL_USAGE_CALLS] = 1;
    counts[TOLL_USAGE_ERRORS] =
        (r->headers_out.status >= NGX_HTTP_INTERNAL_SERVER_ERROR);
    counts[TOLL_USAGE_AMOUNT] = ctx->amount_micros;
    counts[TOLL_USAGE_PAID_CALLS] = (ctx->amount_micros > 0);
    counts[TOLL_USAGE_FREE_CALLS] = (ctx->free_call
                                              && ctx->amount_micros == 0);
    counts[TOLL_USAGE_LATENCY] = ctx->latency_ms;
}


/* the open calls' registry, made on first use (the zone locked) */

static ngx_http_toll_meter_registry_t *
ngx_http_toll_meter_registry(ngx_shm_zone_t *shm_zone)
{
    ngx_http_toll_meter_registry_t  *reg;
    ngx_http_toll_shm_limit_node_t  *ln;

    /* pinned, the node never moves nor goes: found once per process */

    if (ngx_http_toll_meter_reg != NULL) {
        return ngx_http_toll_meter_reg;
    }

    ln = ngx_http_toll_shm_limit_find(shm_zone,
             (u_char *) NGX_HTTP_TOLL_METER_REGISTRY,
             sizeof(NGX_HTTP_TOLL_METER_REGISTRY) - 1);

    if (ln == NULL) {
        ln = ngx_http_toll_shm_limit_create(shm_zone,
                 (u_char *) NGX_HTTP_TOLL_METER_REGISTRY,
                 sizeof(NGX_HTTP_TOLL_METER_REGISTRY) - 1,
                 sizeof(ngx_http_toll_meter_registry_t));
        if (ln == NULL) {
            return NULL;
        }

        reg = (ngx_http_toll_meter_registry_t *) ln->state;
        ngx_queue_init(&reg->open);

        /* never evicted: the records of calls hang from it */
        ln->pins = 1;
    }

    ngx_http_toll_meter_reg = (ngx_http_toll_meter_registry_t *) ln->state;

    return ngx_http_toll_meter_reg;
}


/* the node of a call's buyer, service, provider and day (zone locked) */

static ngx_http_toll_shm_limit_node_t *
ngx_http_toll_meter_node(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    u_char                           *p;
    u_char                            subject[NGX_HTTP_TOLL_NODE_SUBJECT_MAX];
    size_t                            len;
    ngx_tm_t                          tm;
    ngx_str_t                         service, provider;
    ngx_http_toll_main_conf_t        *mcf;
    ngx_http_toll_shm_limit_node_t   *ln;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    ngx_http_toll_quota_names(ctx, &service, &provider);

    len = sizeof("m:YYYYMMDD:\n\n") - 1 + ctx->key.owner.len + service.len
          + provider.len;

    if (len > sizeof(subject)) {
        /* the names are bounded: cannot happen */
        return NULL;
    }

    /* the call's day, in UTC, from when it arrived; worked out once a
       second rather than per call */

    if (r->start_sec != ngx_http_toll_meter_day_sec) {
        ngx_gmtime(r->start_sec, &tm);
        ngx_sprintf(ngx_http_toll_meter_day, "%04d%02d%02d",
                    tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday);
        ngx_http_toll_meter_day_sec = r->start_sec;
    }

    p = ngx_cpymem(subject, "m:", 2);
    p = ngx_cpymem(p, ngx_http_toll_meter_day, 8);
    *p++ = ':';
    p = ngx_cpymem(p, ctx->key.owner.data, ctx->key.owner.len);
    *p++ = '\n';
    p = ngx_cpymem(p, service.data, service.len);
    *p++ = '\n';
    p = ngx_cpymem(p, provider.data, provider.len);

    ln = ngx_http_toll_shm_limit_find(mcf->shm_zone, subject, p - subject);

    if (ln == NULL) {
        ln = ngx_http_toll_shm_limit_create(mcf->shm_zone, subject,
                   p - subject, sizeof(ngx_http_toll_meter_state_t));
    }

    return ln;
}


/*
 * Ends an open call (the zone locked): its record goes, and its final
 * counts join the node's pending ones.  The node stays queued, so that
 * the timer flushes it or, with nothing left, lets it be evicted.
 */

static void
ngx_http_toll_meter_end(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_meter_open_t *op, int64_t *final, ngx_log_t *log)
{
    ngx_uint_t                        i;
    int64_t                           sum[TOLL_USAGE_COUNTS];
    ngx_http_toll_meter_state_t      *st;
    ngx_http_toll_meter_registry_t   *reg;
    ngx_http_toll_shm_limit_node_t   *ln;

    ln = op->ln;
    st = (ngx_http_toll_meter_state_t *) ln->state;

    reg = ngx_http_toll_meter_registry(shm_zone);
    if (reg != NULL && reg->n) {
        reg->n--;
    }

    ngx_queue_remove(&op->queue);

    if (st->open) {
        st->open--;
    }

    /*
     * Never a wrapped sum: a batch that cannot hold the call leaves it
     * out, loudly (a day's amount above 9.2e12 units of one buyer and
     * service would be refused by Redis as well).
     */

    for (i = 0; i < TOLL_USAGE_COUNTS; i++) {
        if (toll_money_add(st->pending[i], final[i], &sum[i]) != 0) {
            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          "toll: meter overflow, call not metered: "
                          "\"%*s\", amount_micros %L",
                          (size_t) ln->subject_len, ln->subject,
                          final[TOLL_USAGE_AMOUNT]);
            break;
        }
    }

    if (i == TOLL_USAGE_COUNTS) {
        ngx_memcpy(st->pending, sum, sizeof(sum));
    }

    ngx_http_toll_shm_free(shm_zone, op);

    ngx_http_toll_shm_enqueue(shm_zone, ln, NGX_HTTP_TOLL_QUEUE_METER);
}


/*
 * The open calls of workers that died (the zone locked): counted as the
 * gate priced them, since they may have reached the upstream.
 */

static void
ngx_http_toll_meter_sweep(int64_t now, ngx_log_t *log)
{
    ngx_uint_t                        i, n, dead, counted;
    ngx_pid_t                         pids[NGX_HTTP_TOLL_METER_SWEEP_PIDS];
    ngx_uint_t                        alive[NGX_HTTP_TOLL_METER_SWEEP_PIDS];
    ngx_queue_t                      *q, *next;
    ngx_http_toll_meter_open_t       *op;
    ngx_http_toll_meter_registry_t   *reg;

    if (now - ngx_http_toll_meter_swept_ms < NGX_HTTP_TOLL_METER_SWEEP_MS) {
        return;
    }

    ngx_http_toll_meter_swept_ms = now;

    reg = ngx_http_toll_meter_registry(ngx_http_toll_meter_zone);
    if (reg == NULL) {
        return;
    }

    n = 0;
    counted = 0;

    for (q = ngx_queue_head(&reg->open);
         q != ngx_queue_sentinel(&reg->open);
         q = next)
    {
        next = ngx_queue_next(q);
        op = ngx_queue_data(q, ngx_http_toll_meter_open_t, queue);

        if (op->pid == ngx_pid) {
            continue;
        }

        for (i = 0; i < n; i++) {
            if (pids[i] == op->pid) {
                break;
            }
        }

        if (i == n) {
            if (n == NGX_HTTP_TOLL_METER_SWEEP_PIDS) {
                /* the next sweep asks about the others */
                continue;
            }

            pids[n] = op->pid;
            alive[n] = !ngx_http_toll_shm_pid_dead(op->pid);
            n++;
        }

        if (alive[i]) {
            continue;
        }

        ngx_http_toll_meter_end(ngx_http_toll_meter_zone, op, op->counts,
                                log);
        counted++;
    }

    if (counted) {
        dead = 0;

        for (i = 0; i < n; i++) {
            dead += !alive[i];
        }

        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "toll: %ui calls open in %ui worker processes that "
                      "exited without ending them counted at their price",
                      counted, dead);
    }
}


static void
ngx_http_toll_meter_timer(ngx_event_t *ev)
{
    int64_t                           now;
    ngx_uint_t                        i, n, k, sent;
    ngx_pool_t                       *pool;
    ngx_http_toll_meter_flush_t      *fl;
    ngx_http_toll_meter_state_t      *st;
    ngx_http_toll_shm_limit_node_t   *ln;

    now = ngx_http_toll_now_ms();
    pool = NULL;
    sent = 0;

    if (ngx_exiting) {
        if (ngx_http_toll_meter_exit_at_ms == 0) {
            ngx_http_toll_meter_exit_at_ms = now;
        }

        /*
         * After a reload the new cycle's workers flush what is left, and
         * keep adding to it: this one only waits for its own batches.
         * When nginx stops, no one else will: it flushes all.
         */

        if (ngx_http_toll_shm_proc_hand_over(ngx_http_toll_meter_zone)) {
            if (ngx_http_toll_meter_inflight == 0
                || now - ngx_http_toll_meter_exit_at_ms
                   > NGX_HTTP_TOLL_METER_EXIT_MAX_MS)
            {
                /* unconfirmed batches are sent again by the others */
                return;
            }

            ngx_add_timer(ev, NGX_HTTP_TOLL_METER_EXIT_TICK_MS);
            return;
        }
    }

    ngx_http_toll_shm_lock(ngx_http_toll_meter_zone);

    ngx_http_toll_meter_sweep(now, ev->log);

    n = ngx_min(ngx_http_toll_shm_queued(ngx_http_toll_meter_zone,
                                         NGX_HTTP_TOLL_QUEUE_METER),
                NGX_HTTP_TOLL_METER_BATCH_MAX);

    for (k = 0; k < n; k++) {
        ln = ngx_http_toll_shm_dequeue(ngx_http_toll_meter_zone,
                                       NGX_HTTP_TOLL_QUEUE_METER);
        if (ln == NULL) {
            break;
        }

        st = (ngx_http_toll_meter_state_t *) ln->state;

        if (st->flush_id[0] == 0 && st->flush_id[1] == 0) {

            for (i = 0; i < TOLL_USAGE_COUNTS; i++) {
                if (st->pending[i]) {
                    break;
                }
            }

            if (i == TOLL_USAGE_COUNTS) {
                /* all in Redis and no call open: the node may go */
                if (st->open == 0) {
                    ln->pins = 0;
                }

                continue;
            }

            /* a new batch: what is pending now, under a new id */

            for (i = 0; i < TOLL_USAGE_COUNTS; i++) {
                st->flight[i] = st->pending[i];
                st->pending[i] = 0;
            }

            st->flush_id[0] = ngx_http_toll_meter_id_prefix;
            st->flush_id[1] = ++ngx_http_toll_meter_id_seq;

        } else if (now - st->flush_at_ms < NGX_HTTP_TOLL_METER_RETRY_MS
                   && st->flush_at_ms != 0)
        {
            /* on its way; stays queued, so that a retry can find it */
            ngx_http_toll_shm_enqueue(ngx_http_toll_meter_zone, ln,
                                      NGX_HTTP_TOLL_QUEUE_METER);
            continue;
        }

        /* in the queue until Redis confirms, whoever sent it */

        ngx_http_toll_shm_enqueue(ngx_http_toll_meter_zone, ln,
                                  NGX_HTTP_TOLL_QUEUE_METER);

        if (pool == NULL) {
            pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, ev->log);
            if (pool == NULL) {
                break;
            }
        }

        fl = ngx_alloc(sizeof(ngx_http_toll_meter_flush_t), ev->log);
        if (fl == NULL) {
            break;
        }

        fl->shm_zone = ngx_http_toll_meter_zone;
        fl->uid = ln->uid;
        fl->flush_id[0] = st->flush_id[0];
        fl->flush_id[1] = st->flush_id[1];
        fl->subject_len = ln->subject_len;
        ngx_memcpy(fl->subject, ln->subject, ln->subject_len);

        st->flush_at_ms = now;

        if (ngx_http_toll_meter_send(fl, ln, pool) != NGX_OK) {
            ngx_free(fl);
            st->flush_at_ms = 0;
            sent++;
            continue;
        }

        ngx_http_toll_meter_inflight++;
        sent++;
    }

    ngx_http_toll_shm_unlock(ngx_http_toll_meter_zone);

    if (pool) {
        ngx_destroy_pool(pool);
    }

    /*
     * A worker that exits stays while it has counts to flush or flushes
     * to see confirmed, for a while: the zone dies with nginx, and its
     * counts with it.  Flushes of other workers, still running after a
     * reload, are theirs to finish.
     */

    if (ngx_exiting) {
        if (sent == 0 && ngx_http_toll_meter_inflight == 0) {
            return;
        }

        if (now - ngx_http_toll_meter_exit_at_ms
            > NGX_HTTP_TOLL_METER_EXIT_MAX_MS)
        {
            ngx_log_error(NGX_LOG_ALERT, ev->log, 0,
                          "toll: exiting with meter counts not confirmed "
                          "by redis (%ui flushes waiting)",
                          ngx_http_toll_meter_inflight);
            return;
        }

        ngx_add_timer(ev, NGX_HTTP_TOLL_METER_EXIT_TICK_MS);
        return;
    }

    ngx_add_timer(ev, ngx_http_toll_meter_flush_ms);
}


/*
 * Sends one node's batch (the zone locked: the node's counts are read
 * here): the script, then the index of usage keys that toll-settle reads.
 * The argument texts live in pool; hiredis copies them at once.
 */

static ngx_int_t
ngx_http_toll_meter_send(ngx_http_toll_meter_flush_t *fl,
    ngx_http_toll_shm_limit_node_t *ln, ngx_pool_t *pool)
{
    u_char                       *buf, *p, *nl1, *nl2, *end;
    size_t                        argvlen[NGX_HTTP_TOLL_METER_ARGS];
    ngx_uint_t                    i, n;
    ngx_str_t                     buyer, service;
    const char                   *argv[NGX_HTTP_TOLL_METER_ARGS], *day;
    ngx_http_toll_meter_state_t  *st;

    st = (ngx_http_toll_meter_state_t *) ln->state;

    /* "m:YYYYMMDD:buyer\nservice\nprovider" */

    end = ln->subject + ln->subject_len;
    nl1 = ngx_strlchr(ln->subject + 11, end, '\n');
    nl2 = nl1 ? ngx_strlchr(nl1 + 1, end, '\n') : NULL;

    if (nl2 == NULL) {
        return NGX_ERROR;
    }

    day = (const char *) ln->subject + 2;
    buyer.data = ln->subject + 11;
    buyer.len = nl1 - buyer.data;
    service.data = nl1 + 1;
    service.len = nl2 - service.data;

    buf = ngx_pnalloc(pool, 3 * TOLL_NAME_USAGE_LEN(buyer.len) + 32
                            + NGX_TIME_T_LEN
                            + (TOLL_USAGE_COUNTS + 1) * (service.len + 16)
                            + 2 * TOLL_USAGE_COUNTS * NGX_INT64_LEN);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    p = buf;

#define ngx_http_toll_meter_arg(k, start)                                     \
    argv[k] = (const char *) (start);                                         \
    argvlen[k] = p - (start)

    argv[2] = "3";
    argvlen[2] = 1;

    /* the keys, all in the buyer's hash slot */

    p = (u_char *) toll_name_usage((char *) p, (char *) buyer.data,
                                   buyer.len, day);
    ngx_http_toll_meter_arg(3, buf);

    nl1 = p;
    p = (u_char *) toll_name_buyer((char *) p, (char *) buyer.data,
                                   buyer.len, TOLL_NAME_USAGE_FLUSHES);
    ngx_http_toll_meter_arg(4, nl1);

    nl1 = p;
    p = (u_char *) toll_name_buyer((char *) p, (char *) buyer.data,
                                   buyer.len, TOLL_NAME_USAGE_DAYS);
    ngx_http_toll_meter_arg(5, nl1);

    nl1 = p;
    p = ngx_sprintf(p, "%016uxL%016uxL", fl->flush_id[0], fl->flush_id[1]);
    ngx_http_toll_meter_arg(6, nl1);

    nl1 = p;
    p = ngx_sprintf(p, "%T", ngx_time());
    ngx_http_toll_meter_arg(7, nl1);

    argv[8] = day;
    argvlen[8] = TOLL_NAME_DAY_LEN;
    argv[9] = TOLL_STR(TOLL_TTL_FLUSH_IDS);
    argvlen[9] = sizeof(TOLL_STR(TOLL_TTL_FLUSH_IDS)) - 1;
    argv[10] = TOLL_STR(TOLL_TTL_FLUSHES);
    argvlen[10] = sizeof(TOLL_STR(TOLL_TTL_FLUSHES)) - 1;

    nl1 = p;
    p = ngx_sprintf(p, "%V:%s", &service,
                    toll_usage_fields[TOLL_USAGE_PROVIDER]);
    ngx_http_toll_meter_arg(11, nl1);

    argv[12] = (const char *) nl2 + 1;
    argvlen[12] = end - nl2 - 1;

    /*
     * Each count with its field and how much the field may hold before
     * it: counts are >= 0
     */

    for (i = 0; i < TOLL_USAGE_COUNTS; i++) {
        n = 13 + 3 * i;

        nl1 = p;
        p = ngx_sprintf(p, "%V:%s", &service, toll_usage_fields[i]);
        ngx_http_toll_meter_arg(n, nl1);

        nl1 = p;
        p = ngx_sprintf(p, "%L", st->flight[i]);
        ngx_http_toll_meter_arg(n + 1, nl1);

        nl1 = p;
        p = ngx_sprintf(p, "%L", INT64_MAX - st->flight[i]);
        ngx_http_toll_meter_arg(n + 2, nl1);
    }

#undef ngx_http_toll_meter_arg

    if (ngx_http_toll_redis_eval(TOLL_SCRIPT_METER, ngx_http_toll_meter_reply,
                                 fl, NGX_HTTP_TOLL_METER_ARGS, argv, argvlen)
        == NULL)
    {
        /* Redis is away: the batch waits in the zone, id and all */
        return NGX_ERROR;
    }

    /* the settlement worker finds the day's usage keys here */

    argv[0] = "SADD";
    argvlen[0] = 4;
    argv[1] = TOLL_NAME_USAGE_INDEX;
    argvlen[1] = sizeof(TOLL_NAME_USAGE_INDEX) - 1;
    argv[2] = argv[3];
    argvlen[2] = argvlen[3];

    /* not NULL: its reply is read, for a refusal to be said */
    (void) ngx_http_toll_redis_send(ngx_http_toll_meter_index_reply,
                                    fl->shm_zone, 3, argv, argvlen);

    return NGX_OK;
}


/*
 * Redis's word on a batch: 1 applied now, 0 applied before (the id is
 * known), {2, field} a sum that would overflow (the batch can never be
 * applied), {1, field} a count in the hash that is not an integer, or an
 * error (the batch waits and is sent again, same id: the script wrote
 * nothing).  A batch refused is said once, not at every retry.  The
 * reply is read by toll_reply_meter() (lib/toll_reply.c), which the
 * fuzzer runs.
 */

static void
ngx_http_toll_meter_reply(void *data, redisReply *reply)
{
    ngx_http_toll_meter_flush_t *fl = data;

    ngx_str_t                         why;
    ngx_uint_t                        i, done, overflow;
    toll_reply_meter_t                m;
    ngx_http_toll_meter_state_t      *st;
    ngx_http_toll_shm_limit_node_t   *ln;

    done = 0;
    overflow = 0;
    ngx_str_null(&why);

    if (ngx_http_toll_meter_inflight) {
        ngx_http_toll_meter_inflight--;
    }

    toll_reply_meter(reply, &m);

    why.data = (u_char *) m.why;
    why.len = m.why_len;

    switch (m.rc) {

    case TOLL_REPLY_METER_NONE:
        ngx_str_set(&why, "no answer");
        break;

    case TOLL_REPLY_METER_APPLIED:
        done = 1;
        break;

    case TOLL_REPLY_METER_OVERFLOW:
        overflow = 1;
        done = 1;
        break;

    case TOLL_REPLY_METER_NOT_INTEGER:
    case TOLL_REPLY_METER_NOSCRIPT:
    case TOLL_REPLY_METER_ERROR:
        break;

    default: /* TOLL_REPLY_METER_UNEXPECTED */
        ngx_str_set(&why, "an unexpected reply");
        break;
    }

    ngx_http_toll_shm_lock(fl->shm_zone);

    ln = ngx_http_toll_shm_limit_find(fl->shm_zone, fl->subject,
                                      fl->subject_len);

    /* found: its newlines would cut the log lines below in three */
    for (i = 0; i < fl->subject_len; i++) {
        fl->subject[i] = (fl->subject[i] == '\n') ? '/' : fl->subject[i];
    }

    if (ln && ln->uid == fl->uid) {
        st = (ngx_http_toll_meter_state_t *) ln->state;

        if (st->flush_id[0] == fl->flush_id[0]
            && st->flush_id[1] == fl->flush_id[1])
        {
            if (overflow) {
                /*
                 * Redis cannot hold the sum: the batch would fail for
                 * ever and hold back the node's later counts.  It is
                 * left out, every count of it in the log; Redis holds
                 * nothing of it.
                 */

                ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                              "toll: meter overflow in redis at \"%V\", "
                              "batch of \"%*s\" left out: calls %L, "
                              "free_calls %L, paid_calls %L, "
                              "amount_micros %L, errors %L", &why,
                              fl->subject_len, fl->subject,
                              st->flight[TOLL_USAGE_CALLS],
                              st->flight[TOLL_USAGE_FREE_CALLS],
                              st->flight[TOLL_USAGE_PAID_CALLS],
                              st->flight[TOLL_USAGE_AMOUNT],
                              st->flight[TOLL_USAGE_ERRORS]);

            } else if (!done && why.len && !st->refused
                       && ngx_http_toll_redis_refusal(
                              NGX_HTTP_TOLL_REDIS_METER, reply))
            {
                ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                              "toll: redis refused the meter's batch of "
                              "\"%*s\", kept and sent again: %V%s",
                              fl->subject_len, fl->subject, &why,
                              (m.rc == TOLL_REPLY_METER_NOT_INTEGER)
                              ? " is not an integer" : "");
                st->refused = 1;
            }

            if (done) {
                if (st->refused) {
                    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                                  "toll: redis took the meter's batch of "
                                  "\"%*s\"", fl->subject_len, fl->subject);
                    st->refused = 0;
                }

                for (i = 0; i < TOLL_USAGE_COUNTS; i++) {
                    st->flight[i] = 0;
                }

                st->flush_id[0] = 0;
                st->flush_id[1] = 0;

            } else {
                /* sent again, same id, next round */
                st->flush_at_ms = 0;
            }
        }
    }

    ngx_http_toll_shm_unlock(fl->shm_zone);

    ngx_free(fl);
}


static void
ngx_http_toll_meter_index_reply(void *data, redisReply *reply)
{
    /* an index entry lost now is written again with the next flush */

    if (reply && reply->type == REDIS_REPLY_ERROR
        && ngx_http_toll_redis_refusal(NGX_HTTP_TOLL_REDIS_METER, reply))
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "toll: redis refused the usage index: %*s",
                      (size_t) reply->len, reply->str);
    }
}
