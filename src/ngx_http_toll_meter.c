/*
 * toll: the meter's records of calls.
 *
 * A call opens a record in the shared zone as it passes the gate (the zone
 * outlives a crashed worker and a reload); when it ends, the record goes
 * and what the call turned out to be is counted into a node of the zone,
 * then flushed by whichever worker's timer takes the node next.  Only
 * final counts leave the node, so nothing the meter sends is ever taken
 * back: a count in Redis is never negative, whatever the ledger drained
 * meanwhile.  The records of a worker that died are counted as the gate
 * saw them.  The flush to Redis is in ngx_http_toll_meter_flush.c.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_meter.h"
#include "ngx_http_toll_meter_int.h"
#include "ngx_http_toll_handler.h"
#include "ngx_http_toll_prepaid.h"
#include "ngx_http_toll_cap.h"
#include "ngx_http_toll_units.h"
#include "ngx_http_toll_plugin.h"
#include "ngx_http_toll_counters.h"
#include "ngx_http_toll_quota.h"
#include "ngx_http_toll_shm.h"
#include "toll_money.h"
#include "toll_names.h"


/* how often a worker looks for the open calls of workers that died */
#define NGX_HTTP_TOLL_METER_SWEEP_MS     1000
/* the distinct processes one sweep asks about */
#define NGX_HTTP_TOLL_METER_SWEEP_PIDS   64


/*
 * A call between the gate and its end, in the zone: its counts as the
 * gate priced it, and the process that serves it.  A worker that dies
 * leaves its records; another worker counts them (the call may have
 * reached the upstream) and frees them.
 */
struct ngx_http_toll_meter_open_s {
    ngx_queue_t                       queue;     /* in the registry */
    ngx_http_toll_shm_limit_node_t   *ln;        /* pinned while open */
    ngx_pid_t                         pid;
    void                             *prepaid;   /* the balance's node,
                                                    pinned while held */
    int64_t                           counts[TOLL_USAGE_COUNTS];
};


/* the registry of open calls: a node of its own, pinned for ever */
typedef struct {
    ngx_queue_t                open;
    ngx_uint_t                 n;
} ngx_http_toll_meter_registry_t;

#define NGX_HTTP_TOLL_METER_REGISTRY     "m:open"


static void ngx_http_toll_meter_counts(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_uint_t reached, int64_t *counts);
static ngx_http_toll_meter_registry_t *ngx_http_toll_meter_registry(
    ngx_shm_zone_t *shm_zone);
static ngx_http_toll_shm_limit_node_t *ngx_http_toll_meter_node(
    ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx);
static void ngx_http_toll_meter_answer(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_chain_t *in);
static ngx_int_t ngx_http_toll_meter_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static void ngx_http_toll_meter_end(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_meter_open_t *op, int64_t *final, ngx_log_t *log);


static ngx_shm_zone_t    *ngx_http_toll_meter_zone;
static u_char             ngx_http_toll_meter_day[8];     /* YYYYMMDD */
static time_t             ngx_http_toll_meter_day_sec = -1;
static int64_t            ngx_http_toll_meter_swept_ms;
static ngx_http_toll_meter_registry_t  *ngx_http_toll_meter_reg;
static ngx_http_output_body_filter_pt   ngx_http_next_body_filter;


ngx_int_t
ngx_http_toll_meter_init_process(ngx_cycle_t *cycle)
{
    ngx_http_toll_main_conf_t  *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_toll_module);

    if (mcf == NULL || mcf->shm_zone == NULL) {
        return NGX_OK;
    }

    ngx_http_toll_meter_zone = mcf->shm_zone;

    if (ngx_http_toll_cap_start(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_toll_meter_flush_start(cycle, mcf->shm_zone,
                                           mcf->meter_flush);
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
    op->prepaid = ctx->prepaid_held ? ctx->prepaid_node : NULL;
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
    ctx->meter_sent = 0;

    /* its hold went back to the lease with the record */
    ctx->prepaid_held = 0;
}


/*
 * The answer's last byte is counted before it leaves: the gate's filters
 * run before nginx's own, so a buyer that read the whole answer finds the
 * call in its usage (toll_usage) at once.  The log phase comes after the
 * answer has left, later still behind a mirror or on a busy machine; it
 * then counts nothing.  A body's end is its last buffer, or its length
 * reached (nginx may send it all before the last buffer, an empty one,
 * comes); a filter that changes the body after the gate's (gzip, ssi)
 * drops the length.  A call a plugin may still report units for waits
 * for the plugin.
 */

static void
ngx_http_toll_meter_answer(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_chain_t *in)
{
    ngx_uint_t    last;
    ngx_chain_t  *cl;

    if (!ctx->meter_admitted || ctx->metered) {
        return;
    }

    last = (in == NULL);

    for (cl = in; cl; cl = cl->next) {
        ctx->meter_sent += ngx_buf_size(cl->buf);
        last |= cl->buf->last_buf;
    }

    if (!last
        && (r->headers_out.content_length_n < 0
            || ctx->meter_sent < r->headers_out.content_length_n))
    {
        return;
    }

    if (ngx_http_toll_plugin_may_report(r)) {
        return;
    }

    ngx_http_toll_meter_log(r, ctx);
}


/* nginx's header filter makes these answers end with their header */

void
ngx_http_toll_meter_header(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    if (r->header_only
        || r->method == NGX_HTTP_HEAD
        || r->headers_out.status == NGX_HTTP_NO_CONTENT
        || r->headers_out.status == NGX_HTTP_NOT_MODIFIED)
    {
        ngx_http_toll_meter_answer(r, ctx, NULL);
    }
}


static ngx_int_t
ngx_http_toll_meter_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_http_toll_ctx_t  *ctx;

    if (r == r->main && in != NULL) {
        ctx = ngx_http_toll_get_ctx(r);

        if (ctx) {
            ngx_http_toll_meter_answer(r, ctx, in);
        }
    }

    return ngx_http_next_body_filter(r, in);
}


ngx_int_t
ngx_http_toll_meter_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_toll_meter_body_filter;

    return NGX_OK;
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

    } else {
        /* an answer without headers was never decided: here, likewise */
        ngx_http_toll_quota_decide(r, ctx);
        /* units a plugin reported with the body */
        ngx_http_toll_units_charge(r, ctx, 1);
    }

    ngx_http_toll_meter_counts(r, ctx, reached, final);

    ngx_http_toll_counters_metered(ctx, final[TOLL_USAGE_FREE_CALLS],
                                   final[TOLL_USAGE_PAID_CALLS],
                                   final[TOLL_USAGE_AMOUNT]);

    /* of the caps' hold, what was charged stays used */
    ngx_http_toll_cap_end(r, ctx, final[TOLL_USAGE_AMOUNT]);

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


typedef struct {
    ngx_str_t                  *buyer;
    ngx_array_t                *out;
    ngx_int_t                   rc;
} ngx_http_toll_meter_walk_t;


static void
ngx_http_toll_meter_unsent_node(ngx_http_toll_shm_limit_node_t *ln,
    void *data)
{
    ngx_http_toll_meter_walk_t *w = data;

    u_char                        *p, *end, *nl;
    ngx_http_toll_meter_state_t   *st;
    ngx_http_toll_meter_unsent_t  *u;

    /* "m:YYYYMMDD:buyer\nservice\nprovider\ncurrency" */

    p = ln->subject + 11;
    end = ln->subject + ln->subject_len;

    if (ln->subject_len < 11 || ln->subject[0] != 'm'
        || (size_t) (end - p) <= w->buyer->len
        || p[w->buyer->len] != '\n'
        || ngx_strncmp(p, w->buyer->data, w->buyer->len) != 0
        || w->rc != NGX_OK)
    {
        return;
    }

    p += w->buyer->len + 1;
    nl = ngx_strlchr(p, end, '\n');

    if (nl == NULL) {
        return;
    }

    st = (ngx_http_toll_meter_state_t *) ln->state;

    u = ngx_array_push(w->out);
    if (u == NULL) {
        w->rc = NGX_ERROR;
        return;
    }

    u->service.len = nl - p;
    u->service.data = ngx_pnalloc(w->out->pool, u->service.len);

    if (u->service.data == NULL) {
        w->rc = NGX_ERROR;
        return;
    }

    ngx_memcpy(u->service.data, p, u->service.len);

    /* the currency after the last '\n' */

    for (p = end; p[-1] != '\n'; p--) {
        /* void */
    }

    u->currency.len = end - p;
    u->currency.data = ngx_pnalloc(w->out->pool, u->currency.len);

    if (u->currency.data == NULL) {
        w->rc = NGX_ERROR;
        return;
    }

    ngx_memcpy(u->currency.data, p, u->currency.len);
    ngx_memcpy(u->pending, st->pending, sizeof(u->pending));
    ngx_memcpy(u->flight, st->flight, sizeof(u->flight));

    u->in_flight = (st->flush_id[0] || st->flush_id[1]);
    ngx_sprintf(u->flush_id, "%016uxL%016uxL", st->flush_id[0],
                st->flush_id[1]);
}


ngx_int_t
ngx_http_toll_meter_unsent(ngx_shm_zone_t *shm_zone, ngx_str_t *buyer,
    ngx_array_t *out)
{
    ngx_http_toll_meter_walk_t  w;

    w.buyer = buyer;
    w.out = out;
    w.rc = NGX_OK;

    /* a node with counts Redis may not have waits in the meter's queue */

    ngx_http_toll_shm_lock(shm_zone);
    ngx_http_toll_shm_queue_walk(shm_zone, NGX_HTTP_TOLL_QUEUE_METER,
                                 ngx_http_toll_meter_unsent_node, &w);
    ngx_http_toll_shm_unlock(shm_zone);

    return w.rc;
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

    /* the units its amount was charged for */
    counts[TOLL_USAGE_UNITS] = ctx->units_charged && ctx->units_reported
                               ? (int64_t) ctx->units : 0;

    /* what the balance pays: the charge, never more than was held */
    counts[TOLL_USAGE_PREPAID] = ctx->prepaid_held
                                 ? ngx_min(ctx->amount_micros,
                                           ctx->hold_micros)
                                 : 0;
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
    ngx_str_t                         service, provider, *currency;
    ngx_http_toll_main_conf_t        *mcf;
    ngx_http_toll_shm_limit_node_t   *ln;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    ngx_http_toll_quota_names(ctx, &service, &provider);

    currency = &ctx->service->currency;

    len = sizeof("m:YYYYMMDD:\n\n\n") - 1 + ctx->key.owner.len + service.len
          + provider.len + currency->len;

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
    *p++ = '\n';
    p = ngx_cpymem(p, currency->data, currency->len);

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

    /* the call's hold on the balance: charged or back to the lease */
    ngx_http_toll_prepaid_end(shm_zone, op->prepaid,
                              op->counts[TOLL_USAGE_PREPAID],
                              (i == TOLL_USAGE_COUNTS)
                              ? final[TOLL_USAGE_PREPAID] : 0);

    ngx_http_toll_shm_free(shm_zone, op);

    ngx_http_toll_shm_enqueue(shm_zone, ln, NGX_HTTP_TOLL_QUEUE_METER);
}


/*
 * The open calls of workers that died (the zone locked): counted as the
 * gate priced them, since they may have reached the upstream.
 */

void
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
