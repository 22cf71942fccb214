/*
 * toll: spend caps at the gate.
 *
 * This nginx (all its workers: the zone) keeps, per buyer, key and
 * currency, a lease of the caps that apply to them, taken from Redis
 * (lua/cap.lua): the script counts what it grants as used in the day and
 * the month, against the buyer's caps and the key's at once.  A call
 * holds its price from the lease as it passes; what a charged call held
 * stays used, what an uncharged call held goes back to the lease, and an
 * idle lease goes back to Redis from the meter's timer.  So the sum
 * leased in a period, spent or not, never passes a cap.
 *
 * A lease belongs to the UTC day (and the month) it was granted in, as
 * this node's clock tells: a call of the next day asks Redis, giving the
 * old lease back in the same exchange.  A hold of a period that has
 * ended stays used in it.
 *
 * Buyers without caps: Redis's answer "none" is kept in the node with
 * the caps' generation (toll:cap:gen, bumped by tollctl at every change)
 * it was asked under; the generation is read twice a second per nginx,
 * so a change reaches every node within 750 ms and a round trip, and an
 * uncapped call costs a lookup in the zone and no round trip.
 *
 * The exchanges with Redis and the timer's work are in
 * ngx_http_toll_cap_redis.c.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_cap.h"
#include "ngx_http_toll_cap_int.h"
#include "ngx_http_toll_problem.h"
#include "ngx_http_toll_shm.h"
#include "toll_money.h"


static ngx_int_t ngx_http_toll_cap_local(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_main_conf_t *mcf,
    u_char *subject, size_t *lenp, ngx_http_toll_cap_ask_t **askp);
static void ngx_http_toll_cap_unsent(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_cap_ask_t *ask);
static void ngx_http_toll_cap_give(ngx_http_toll_ctx_t *ctx, int64_t back,
    ngx_log_t *log);
static u_char *ngx_http_toll_cap_today(void);
static size_t ngx_http_toll_cap_subject(u_char *subject,
    ngx_http_toll_ctx_t *ctx);


/* the zone's generation node, found once per process: pinned, it stays */
static ngx_http_toll_cap_gen_t  *ngx_http_toll_cap_gen_node;


ngx_int_t
ngx_http_toll_cap_hold(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    u_char                      subject[NGX_HTTP_TOLL_NODE_SUBJECT_MAX];
    size_t                      len;
    ngx_int_t                   rc;
    ngx_http_toll_cap_ask_t    *ask;
    ngx_http_toll_cap_call_t   *call;
    ngx_http_toll_loc_conf_t   *lcf;
    ngx_http_toll_main_conf_t  *mcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);
    call = ctx->cap;

    if (!lcf->spend_caps || ctx->amount_micros <= 0
        || (call && call->hold))
    {
        return NGX_OK;
    }

    if (call && call->state == NGX_HTTP_TOLL_CAP_DENIED) {
        return NGX_HTTP_TOLL_CAP_EXCEEDED;
    }

    if (call && call->state == NGX_HTTP_TOLL_CAP_FAILED) {
        /* "open": the call goes uncapped, charged as always */
        return lcf->spend_caps_fallback ? NGX_OK
                                        : NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    if (ctx->key.owner.len + ctx->key.key_id.len
        + ctx->service->currency.len + 4 > NGX_HTTP_TOLL_NODE_SUBJECT_MAX)
    {
        return NGX_ERROR;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    rc = ngx_http_toll_cap_local(r, ctx, mcf, subject, &len, &ask);

    if (rc != NGX_AGAIN) {
        return rc;
    }

    if (ctx->cap == NULL) {
        ctx->cap = ngx_pcalloc(r->pool, sizeof(ngx_http_toll_cap_call_t));
    }

    ask->ctx = ctx->cap ? ctx : NULL;

    if (ngx_http_toll_cap_ask(ask, mcf, ctx->price_micros) != NGX_OK) {
        /* Redis is known to be away: nothing was sent */

        ngx_http_toll_shm_lock(mcf->shm_zone);
        ngx_http_toll_cap_unsent(mcf->shm_zone, ask);
        ngx_http_toll_shm_unlock(mcf->shm_zone);

        ngx_free(ask);

        if (ctx->cap) {
            ctx->cap->state = NGX_HTTP_TOLL_CAP_FAILED;
        }

        return lcf->spend_caps_fallback ? NGX_OK
                                        : NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    if (ctx->cap == NULL) {
        /* the exchange lands in the zone; this call cannot wait for it */
        return NGX_ERROR;
    }

    ctx->cap->ask = ask;
    ctx->cap->state = NGX_HTTP_TOLL_CAP_WAITING;
    r->read_event_handler = ngx_http_test_reading;

    return NGX_AGAIN;
}


/*
 * What the zone can tell: NGX_OK (held, or no cap applies), a refusal,
 * or NGX_AGAIN with *ask ready to send: the node's lease goes back with
 * it.  The zone's lock is taken here.  The subject is made only once
 * some cap exists: a gate where none was ever set pays a lock and a
 * comparison per call.
 */

static ngx_int_t
ngx_http_toll_cap_local(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_main_conf_t *mcf, u_char *subject, size_t *lenp,
    ngx_http_toll_cap_ask_t **askp)
{
    u_char                          *day;
    size_t                           len;
    int64_t                          now, gen;
    ngx_int_t                        rc;
    ngx_http_toll_cap_gen_t         *g;
    ngx_http_toll_cap_ask_t         *ask;
    ngx_http_toll_cap_state_t       *st;
    ngx_http_toll_shm_limit_node_t  *ln;

    ngx_http_toll_shm_lock(mcf->shm_zone);

    g = ngx_http_toll_cap_gen(mcf->shm_zone);
    gen = g ? g->gen : -1;

    if (gen == 0) {
        /* no cap was ever set: tollctl bumps the generation with each */
        ngx_http_toll_shm_unlock(mcf->shm_zone);
        return NGX_OK;
    }

    len = ngx_http_toll_cap_subject(subject, ctx);
    *lenp = len;

    now = ngx_http_toll_cap_now();
    day = ngx_http_toll_cap_today();

    ln = ngx_http_toll_cap_node(mcf->shm_zone, subject, len, 1);

    if (ln == NULL) {
        ngx_http_toll_shm_unlock(mcf->shm_zone);

        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "toll: zone full, no room for the spend caps of "
                      "buyer \"%V\"; increase \"toll_zone\"",
                      &ctx->key.owner);
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    st = (ngx_http_toll_cap_state_t *) ln->state;

    rc = ngx_http_toll_cap_take(st, ctx, gen, day, now, 0);

    ask = NULL;

    if (rc == NGX_AGAIN) {
        ask = ngx_alloc(sizeof(ngx_http_toll_cap_ask_t), r->connection->log);
        rc = ask ? NGX_AGAIN : NGX_ERROR;
    }

    if (ask) {
        ask->shm_zone = mcf->shm_zone;
        ask->gen = gen;
        ask->hold = ctx->amount_micros;
        ask->rate = ngx_max(st->last_held, st->window_held);
        ask->back = 0;
        ask->subject_len = len;
        ngx_memcpy(ask->subject, subject, len);
        ngx_memcpy(ask->day, day, NGX_HTTP_TOLL_CAP_DAY_LEN);

        /* what the node holds goes back with the exchange */

        if (st->answered && st->capped && st->lease > 0) {
            ask->back = st->lease;
            ngx_memcpy(ask->bday, st->day, NGX_HTTP_TOLL_CAP_DAY_LEN);
            ngx_memcpy(ask->bmonth, st->month, NGX_HTTP_TOLL_CAP_DAY_LEN);
            st->lease = 0;
        }

        st->asking++;
        st->asked_ms = now;
    }

    ngx_http_toll_cap_keep(mcf->shm_zone, ln);
    ngx_http_toll_shm_unlock(mcf->shm_zone);

    *askp = ask;

    return rc;
}


/*
 * An exchange that was never sent (the zone locked): what it was to give
 * back is the node's lease again, if the node is still in that period.
 */

static void
ngx_http_toll_cap_unsent(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_cap_ask_t *ask)
{
    ngx_http_toll_cap_state_t       *st;
    ngx_http_toll_shm_limit_node_t  *ln;

    ln = ngx_http_toll_cap_node(shm_zone, ask->subject, ask->subject_len, 0);

    if (ln) {
        st = (ngx_http_toll_cap_state_t *) ln->state;

        if (st->asking) {
            st->asking--;
        }

        if (ask->back
            && ngx_memcmp(st->day, ask->bday, NGX_HTTP_TOLL_CAP_DAY_LEN) == 0
            && ngx_memcmp(st->month, ask->bmonth, NGX_HTTP_TOLL_CAP_DAY_LEN)
               == 0)
        {
            st->lease += ask->back;
        }

        ngx_http_toll_cap_keep(shm_zone, ln);
    }
}


/*
 * The call's hold from the lease, the zone locked: NGX_OK (held, or no
 * cap applies), NGX_HTTP_TOLL_CAP_EXCEEDED (Redis said lately, or just
 * now, that a cap has no room), NGX_AGAIN (Redis must be asked: nothing
 * known under the current generation, another day, too small a lease).
 * An answer just received (asked) counts whatever the generation.
 */

ngx_int_t
ngx_http_toll_cap_take(ngx_http_toll_cap_state_t *st,
    ngx_http_toll_ctx_t *ctx, int64_t gen, u_char *day, int64_t now,
    ngx_uint_t asked)
{
    int64_t                     hold, end;
    ngx_http_toll_cap_call_t   *call;
    ngx_http_toll_main_conf_t  *mcf;

    if (!st->answered || (!asked && (gen < 0 || st->gen != gen))) {
        return NGX_AGAIN;
    }

    if (!st->capped) {
        return NGX_OK;
    }

    if (ngx_memcmp(st->day, day, NGX_HTTP_TOLL_CAP_DAY_LEN) != 0) {
        return asked ? NGX_HTTP_SERVICE_UNAVAILABLE : NGX_AGAIN;
    }

    hold = ctx->amount_micros;
    call = ctx->cap;

    if (st->lease >= hold) {
        if (call == NULL) {
            call = ngx_pcalloc(ctx->request->pool,
                               sizeof(ngx_http_toll_cap_call_t));
            if (call == NULL) {
                return NGX_ERROR;
            }

            ctx->cap = call;
        }

        st->lease -= hold;
        st->holding += hold;
        st->used_ms = now;

        ngx_http_toll_rate_add(&st->window_ms, &st->window_held,
                               &st->last_held, now, hold);

        call->hold = hold;
        ngx_memcpy(call->day, st->day, NGX_HTTP_TOLL_CAP_DAY_LEN);
        ngx_memcpy(call->month, st->month, NGX_HTTP_TOLL_CAP_DAY_LEN);

        return NGX_OK;
    }

    mcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                              ngx_http_toll_module);

    if (!asked
        && (st->denied_ms == 0
            || now - st->denied_ms >= (int64_t) mcf->prepaid_recheck))
    {
        return NGX_AGAIN;
    }

    if (st->denied_ms == 0) {
        /* granted, and already held by the node's other calls */
        return NGX_AGAIN;
    }

    if (call == NULL) {
        call = ngx_pcalloc(ctx->request->pool,
                           sizeof(ngx_http_toll_cap_call_t));
        if (call == NULL) {
            return NGX_ERROR;
        }

        ctx->cap = call;
    }

    end = st->monthly ? st->month_end
                      : (ngx_time() / 86400 + 1) * 86400;

    call->state = NGX_HTTP_TOLL_CAP_DENIED;
    call->cap_micros = st->cap_micros;
    call->monthly = st->monthly;
    call->key_scope = st->key_scope;
    call->retry_after = ngx_max(end - (int64_t) ngx_time(), 1);

    return NGX_HTTP_TOLL_CAP_EXCEEDED;
}


void
ngx_http_toll_cap_release(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    if (ctx->cap && ctx->cap->hold) {
        ngx_http_toll_cap_give(ctx, ctx->cap->hold, r->connection->log);
    }
}


void
ngx_http_toll_cap_end(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    int64_t charged)
{
    if (ctx->cap && ctx->cap->hold) {
        ngx_http_toll_cap_give(ctx, ngx_max(ctx->cap->hold - charged, 0),
                               r->connection->log);
    }
}


/*
 * A hold ends: back goes to the lease, the rest stays used.  Only into a
 * lease of the same period: one of a period that has ended stays used.
 */

static void
ngx_http_toll_cap_give(ngx_http_toll_ctx_t *ctx, int64_t back,
    ngx_log_t *log)
{
    ngx_http_toll_cap_call_t        *call;
    ngx_http_toll_main_conf_t       *mcf;
    ngx_http_toll_cap_state_t       *st;
    ngx_http_toll_shm_limit_node_t  *ln;
    u_char                           subject[NGX_HTTP_TOLL_NODE_SUBJECT_MAX];
    size_t                           len;

    call = ctx->cap;
    mcf = ngx_http_get_module_main_conf(ctx->request, ngx_http_toll_module);

    len = ngx_http_toll_cap_subject(subject, ctx);

    ngx_http_toll_shm_lock(mcf->shm_zone);

    ln = ngx_http_toll_cap_node(mcf->shm_zone, subject, len, 0);

    if (ln) {
        st = (ngx_http_toll_cap_state_t *) ln->state;

        if (ngx_memcmp(st->day, call->day, NGX_HTTP_TOLL_CAP_DAY_LEN) == 0
            && ngx_memcmp(st->month, call->month, NGX_HTTP_TOLL_CAP_DAY_LEN)
               == 0)
        {
            st->holding = ngx_max(st->holding - call->hold, 0);
            st->lease += back;
        }

        ngx_http_toll_cap_keep(mcf->shm_zone, ln);
    }

    ngx_http_toll_shm_unlock(mcf->shm_zone);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log, 0,
                   "toll: cap hold %L ends, %L back", call->hold, back);

    call->hold = 0;
}


void
ngx_http_toll_cap_cleanup(ngx_http_toll_ctx_t *ctx)
{
    if (ctx->cap && ctx->cap->ask) {
        /* the lease still lands in the zone; only the caller is gone */
        ctx->cap->ask->ctx = NULL;
        ctx->cap->ask = NULL;
    }
}


ngx_uint_t
ngx_http_toll_cap_failed(ngx_http_toll_ctx_t *ctx)
{
    return ctx->cap && ctx->cap->state == NGX_HTTP_TOLL_CAP_FAILED;
}


ngx_int_t
ngx_http_toll_cap_problem(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_problem_ext_t *ext)
{
    u_char                    *p;
    ngx_http_toll_cap_call_t  *call;

    call = ctx->cap;

    p = ngx_pnalloc(r->pool, sizeof("\"cap\":\"\",\"period\":\"monthly\","
                                    "\"scope\":\"buyer\",\"currency\":\"\",")
                             - 1 + TOLL_MONEY_STR_MAX
                             + ctx->service->currency.len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ext->members.data = p;

    p = ngx_cpymem(p, "\"cap\":\"", sizeof("\"cap\":\"") - 1);
    p += toll_money_format(call->cap_micros, (char *) p);
    p = ngx_sprintf(p, "\",\"period\":\"%s\",\"scope\":\"%s\","
                    "\"currency\":\"%V\",",
                    call->monthly ? "monthly" : "daily",
                    call->key_scope ? "key" : "buyer",
                    &ctx->service->currency);

    ext->members.len = p - ext->members.data;
    ext->retry_after = call->retry_after;

    return NGX_OK;
}


/* the zone's generation node (the zone locked); NULL: no room */

ngx_http_toll_cap_gen_t *
ngx_http_toll_cap_gen(ngx_shm_zone_t *shm_zone)
{
    ngx_http_toll_cap_gen_t         *g;
    ngx_http_toll_shm_limit_node_t  *ln;

    if (ngx_http_toll_cap_gen_node) {
        return ngx_http_toll_cap_gen_node;
    }

    ln = ngx_http_toll_shm_limit_find(shm_zone, (u_char *) "c:", 2);

    if (ln == NULL) {
        ln = ngx_http_toll_shm_limit_create(shm_zone, (u_char *) "c:", 2,
                                            sizeof(ngx_http_toll_cap_gen_t));
        if (ln == NULL) {
            return NULL;
        }

        g = (ngx_http_toll_cap_gen_t *) ln->state;
        g->gen = -1;
        g->read_ms = 0;
        g->reading = 0;
    }

    ln->pins = 1;
    ngx_http_toll_cap_gen_node = (ngx_http_toll_cap_gen_t *) ln->state;

    return ngx_http_toll_cap_gen_node;
}


/* the node of a buyer's key's caps (the zone locked); NULL: none, full */

ngx_http_toll_shm_limit_node_t *
ngx_http_toll_cap_node(ngx_shm_zone_t *shm_zone, u_char *subject, size_t len,
    ngx_uint_t create)
{
    ngx_http_toll_shm_limit_node_t  *ln;

    ln = ngx_http_toll_shm_limit_find(shm_zone, subject, len);

    if (ln || !create) {
        return ln;
    }

    /* zeroed: not answered yet */
    return ngx_http_toll_shm_limit_create(shm_zone, subject, len,
                                          sizeof(ngx_http_toll_cap_state_t));
}


/*
 * A node that holds a lease, or waits for Redis, is pinned and queued for
 * the tick; one that only remembers "no caps" may be evicted (the next
 * call asks again).
 */

void
ngx_http_toll_cap_keep(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_shm_limit_node_t *ln)
{
    ngx_http_toll_cap_state_t  *st;

    st = (ngx_http_toll_cap_state_t *) ln->state;

    ln->pins = (st->lease || st->asking);

    if (ln->pins) {
        ngx_http_toll_shm_enqueue(shm_zone, ln, NGX_HTTP_TOLL_QUEUE_CAP);
    }
}


/*
 * The metrics' and toll_usage's reads of the cap queue (the zone locked
 * by the walk's caller).  A cap node's subject is "c:buyer\nkey\ncur".
 */

typedef struct {
    ngx_http_toll_cap_gauge_t  *g;
    ngx_uint_t                  n;
} ngx_http_toll_cap_sum_t;


typedef struct {
    ngx_str_t                  *buyer;
    ngx_str_t                  *key_id;
    ngx_array_t                *out;
    ngx_uint_t                  failed;
} ngx_http_toll_cap_find_t;


static void
ngx_http_toll_cap_gauge(ngx_http_toll_shm_limit_node_t *ln, void *data)
{
    ngx_http_toll_cap_sum_t *sum = data;

    u_char                     *cur, *end;
    ngx_uint_t                  i;
    ngx_http_toll_cap_gauge_t  *g;
    ngx_http_toll_cap_state_t  *st;

    end = ln->subject + ln->subject_len;

    if (ln->subject_len < 3 || ln->subject[0] != 'c' || ln->subject[1] != ':')
    {
        return;
    }

    for (cur = end; cur > ln->subject && cur[-1] != '\n'; cur--) {
        /* void */
    }

    st = (ngx_http_toll_cap_state_t *) ln->state;

    for (i = 0; i < sum->n; i++) {
        g = &sum->g[i];

        if ((size_t) (end - cur) == g->currency.len
            && ngx_strncmp(cur, g->currency.data, g->currency.len) == 0)
        {
            g->lease += st->lease;
            g->leases += (st->lease > 0);
            g->asking += (st->asking != 0);
            return;
        }
    }
}


void
ngx_http_toll_cap_gauges(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_cap_gauge_t *g, ngx_uint_t n, int64_t *gen)
{
    ngx_http_toll_cap_sum_t   sum;
    ngx_http_toll_cap_gen_t  *cg;

    sum.g = g;
    sum.n = n;

    ngx_http_toll_shm_lock(shm_zone);

    cg = ngx_http_toll_cap_gen(shm_zone);
    *gen = cg ? cg->gen : -1;

    ngx_http_toll_shm_queue_walk(shm_zone, NGX_HTTP_TOLL_QUEUE_CAP,
                                 ngx_http_toll_cap_gauge, &sum);
    ngx_http_toll_shm_unlock(shm_zone);
}


static void
ngx_http_toll_cap_find(ngx_http_toll_shm_limit_node_t *ln, void *data)
{
    ngx_http_toll_cap_find_t *f = data;

    u_char                     *p, *end, *cur;
    ngx_http_toll_cap_lease_t  *l;
    ngx_http_toll_cap_state_t  *st;

    p = ln->subject + 2;
    end = ln->subject + ln->subject_len;
    st = (ngx_http_toll_cap_state_t *) ln->state;

    if (f->failed
        || ln->subject_len < f->buyer->len + 4
        || ln->subject[0] != 'c' || ln->subject[1] != ':'
        || ngx_strncmp(p, f->buyer->data, f->buyer->len) != 0
        || p[f->buyer->len] != '\n')
    {
        return;
    }

    p += f->buyer->len + 1;

    for (cur = end; cur > p && cur[-1] != '\n'; cur--) {
        /* void */
    }

    if (cur == p) {
        return;
    }

    l = ngx_array_push(f->out);
    if (l == NULL) {
        f->failed = 1;
        return;
    }

    l->uid = ln->uid;
    l->lease = st->lease;
    l->asked_ms = st->asked_ms;
    l->asking = st->asking;
    l->this_key = ((size_t) (cur - 1 - p) == f->key_id->len
                   && ngx_strncmp(p, f->key_id->data, f->key_id->len) == 0);
    l->currency.len = end - cur;
    l->currency.data = ngx_pnalloc(f->out->pool, l->currency.len);

    if (l->currency.data == NULL) {
        f->failed = 1;
        return;
    }

    ngx_memcpy(l->currency.data, cur, l->currency.len);
    ngx_memcpy(l->day, st->day, NGX_HTTP_TOLL_CAP_DAY_LEN);
    ngx_memcpy(l->month, st->month, NGX_HTTP_TOLL_CAP_DAY_LEN);
}


/*
 * The buyer's caps' leases this nginx holds or asks Redis about, all its
 * keys' (a buyer's cap counts them all): a node with either is in the
 * cap queue.  A "no caps" entry holds nothing and is not read.
 */

ngx_int_t
ngx_http_toll_cap_leases(ngx_shm_zone_t *shm_zone, ngx_str_t *buyer,
    ngx_str_t *key_id, ngx_array_t *out)
{
    ngx_http_toll_cap_find_t  f;

    f.buyer = buyer;
    f.key_id = key_id;
    f.out = out;
    f.failed = 0;

    ngx_http_toll_shm_lock(shm_zone);
    ngx_http_toll_shm_queue_walk(shm_zone, NGX_HTTP_TOLL_QUEUE_CAP,
                                 ngx_http_toll_cap_find, &f);
    ngx_http_toll_shm_unlock(shm_zone);

    return f.failed ? NGX_ERROR : NGX_OK;
}


/* "c:buyer\nkey_id\ncurrency" (the caller checked the room) */

static size_t
ngx_http_toll_cap_subject(u_char *subject, ngx_http_toll_ctx_t *ctx)
{
    u_char  *p;

    p = ngx_cpymem(subject, "c:", 2);
    p = ngx_cpymem(p, ctx->key.owner.data, ctx->key.owner.len);
    *p++ = '\n';
    p = ngx_cpymem(p, ctx->key.key_id.data, ctx->key.key_id.len);
    *p++ = '\n';
    p = ngx_cpymem(p, ctx->service->currency.data,
                   ctx->service->currency.len);

    return p - subject;
}


/* today, "YYYYMMDD" (UTC), made again only when the day changes */

static u_char *
ngx_http_toll_cap_today(void)
{
    time_t       now;
    ngx_tm_t     tm;
    static u_char  day[NGX_HTTP_TOLL_CAP_DAY_LEN + 1];
    static time_t  made = -1;              /* days since the epoch */

    now = ngx_time();

    if (now / 86400 != made) {
        made = now / 86400;
        ngx_gmtime(now, &tm);
        ngx_sprintf(day, "%04d%02d%02d", tm.ngx_tm_year, tm.ngx_tm_mon,
                    tm.ngx_tm_mday);
    }

    return day;
}


/* a monotonic clock in ms, shared by the workers */

int64_t
ngx_http_toll_cap_now(void)
{
    return (int64_t) (ngx_http_toll_now_us() / 1000);
}
