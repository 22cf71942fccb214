/*
 * toll: prepaid balances at the gate.
 *
 * This nginx (all its workers: the zone) keeps, per buyer and currency,
 * a lease of the buyer's balance taken from Redis (lua/prepaid.lua).  A
 * call holds its price from the lease as it passes; when it ends, the
 * meter keeps what it was charged and the rest goes back to the lease.
 * Only a node whose lease cannot cover a call asks Redis, the request
 * parked meanwhile; idle leases go back to Redis from the meter's timer.
 *
 * What Redis counts as this node's hold is always the lease, the holds
 * of calls in flight, what they were charged and no flush has confirmed
 * yet, and what is being given back.  An exchange whose answer is lost
 * may leave Redis holding more than that; once the node holds nothing,
 * it gives back whatever Redis still counts as its own (docs/metering.md
 * "Prepaid balances").
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_prepaid.h"
#include "ngx_http_toll_problem.h"
#include "ngx_http_toll_redis.h"
#include "ngx_http_toll_shm.h"
#include "toll_money.h"
#include "toll_reply.h"


/* a buyer's balance in one currency, as this node holds it */
typedef struct {
    int64_t                    lease;         /* free for calls to hold */
    int64_t                    holding;       /* held by calls in flight */
    int64_t                    unflushed;     /* charged, not yet in
                                                 Redis */
    int64_t                    returning;     /* given back, unanswered */
    int64_t                    available;     /* Redis's, last answer */
    int64_t                    used_ms;       /* the last hold */
    int64_t                    denied_ms;     /* Redis had too little;
                                                 0: not */
    int64_t                    denied_lease;  /* the lease then: a hold
                                                 given back since makes
                                                 asking worth it again */
    int64_t                    confirmed_ms;  /* an answer to what was
                                                 sent then */
    ngx_uint_t                 asking;        /* exchanges in flight */
    int64_t                    asked_ms;      /* the last one sent */
    int64_t                    window_ms;     /* this second's start */
    int64_t                    window_held;   /* held in this second */
    int64_t                    last_held;     /* and in the one before */
    ngx_uint_t                 unsure;        /* one was lost: Redis may
                                                 hold more than the node
                                                 knows */
} ngx_http_toll_prepaid_state_t;


/* an exchange with Redis; it lands in the zone even if the caller left */
struct ngx_http_toll_prepaid_ask_s {
    ngx_http_toll_ctx_t       *ctx;           /* NULL: none, or left */
    ngx_shm_zone_t            *shm_zone;
    int64_t                    sent_ms;
    int64_t                    hold;          /* the call's; 0: none */
    int64_t                    want;          /* the most Redis grants */
    int64_t                    back;          /* given back with it */
    ngx_uint_t                 resync;        /* give back all Redis
                                                 holds for the node */
    size_t                     subject_len;
    u_char                     subject[NGX_HTTP_TOLL_NODE_SUBJECT_MAX];
};


/* lua/prepaid.lua's give-back of "all": capped by what the node holds */
#define NGX_HTTP_TOLL_PREPAID_ALL      INT64_MAX
/* leases looked at per tick and worker */
#define NGX_HTTP_TOLL_PREPAID_TICK_MAX 256


static ngx_int_t ngx_http_toll_prepaid_take(ngx_http_toll_main_conf_t *mcf,
    ngx_http_toll_shm_limit_node_t *ln, ngx_http_toll_ctx_t *ctx,
    int64_t now, ngx_uint_t asked);
static ngx_int_t ngx_http_toll_prepaid_send(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_shm_limit_node_t *ln,
    u_char *subject, size_t len, int64_t now, int64_t rate, int64_t back);
static ngx_int_t ngx_http_toll_prepaid_ask(ngx_http_toll_prepaid_ask_t *ask,
    int64_t hold, int64_t price, int64_t rate,
    ngx_http_toll_main_conf_t *mcf);
static void ngx_http_toll_prepaid_reply(void *data, redisReply *reply);
static void ngx_http_toll_prepaid_resume(ngx_http_toll_ctx_t *ctx);
static ngx_http_toll_shm_limit_node_t *ngx_http_toll_prepaid_node(
    ngx_shm_zone_t *shm_zone, u_char *subject, size_t len,
    ngx_uint_t create);
static size_t ngx_http_toll_prepaid_subject(u_char *subject,
    ngx_str_t *buyer, ngx_str_t *currency);
static size_t ngx_http_toll_prepaid_meter_subject(u_char *subject,
    u_char *meter, size_t len);
static void ngx_http_toll_prepaid_keep(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_shm_limit_node_t *ln);
static int64_t ngx_http_toll_prepaid_now(void);


ngx_int_t
ngx_http_toll_prepaid_hold(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    u_char                           subject[NGX_HTTP_TOLL_NODE_SUBJECT_MAX];
    size_t                           len;
    int64_t                          now, rate, back;
    ngx_int_t                        rc;
    ngx_http_toll_loc_conf_t        *lcf;
    ngx_http_toll_main_conf_t       *mcf;
    ngx_http_toll_prepaid_state_t   *st;
    ngx_http_toll_shm_limit_node_t  *ln;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);

    if (!lcf->prepaid || ctx->amount_micros == 0 || ctx->prepaid_held) {
        return NGX_OK;
    }

    switch (ctx->prepaid_state) {

    case NGX_HTTP_TOLL_PREPAID_DENIED:
        return NGX_HTTP_TOLL_PAYMENT_REQUIRED;

    case NGX_HTTP_TOLL_PREPAID_FAILED:
        /* "open": charged after the fact, as without toll_prepaid */
        return lcf->prepaid_fallback ? NGX_OK : NGX_HTTP_SERVICE_UNAVAILABLE;

    default:
        break;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    len = ngx_http_toll_prepaid_subject(subject, &ctx->key.owner,
                                        &ctx->service->currency);
    now = ngx_http_toll_prepaid_now();

    ngx_http_toll_shm_lock(mcf->shm_zone);

    ln = ngx_http_toll_prepaid_node(mcf->shm_zone, subject, len, 1);

    if (ln == NULL) {
        ngx_http_toll_shm_unlock(mcf->shm_zone);

        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "toll: zone full, no room for the balance of buyer "
                      "\"%V\"; increase \"toll_zone\"", &ctx->key.owner);
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    st = (ngx_http_toll_prepaid_state_t *) ln->state;

    rc = ngx_http_toll_prepaid_take(mcf, ln, ctx, now, 0);

    rate = ngx_max(st->last_held, st->window_held);
    back = 0;

    if (rc == NGX_AGAIN) {
        st->asking++;
        st->asked_ms = now;

        /*
         * What is left of the lease, too little for this call, goes back
         * in the same exchange: Redis then grants from all that is
         * available, so that a lease's remainder and Redis's, each below
         * the call's hold, never refuse a call their sum covers.
         */

        back = st->lease;
        st->returning += back;
        st->lease = 0;
    }

    ngx_http_toll_prepaid_keep(mcf->shm_zone, ln);
    ngx_http_toll_shm_unlock(mcf->shm_zone);

    if (rc == NGX_OK) {
        return NGX_OK;
    }

    if (rc == NGX_DECLINED) {
        ctx->prepaid_state = NGX_HTTP_TOLL_PREPAID_DENIED;
        return NGX_HTTP_TOLL_PAYMENT_REQUIRED;
    }

    /* only a call that must ask Redis pays for an exchange */

    return ngx_http_toll_prepaid_send(r, ctx, ln, subject, len, now, rate,
                                      back);
}


/*
 * Asks Redis for the call's lease, giving back what is left of the old
 * one, the request parked: NGX_AGAIN, or what a call Redis could not be
 * asked for gets (the node cannot tell).
 */

static ngx_int_t
ngx_http_toll_prepaid_send(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_shm_limit_node_t *ln, u_char *subject, size_t len,
    int64_t now, int64_t rate, int64_t back)
{
    ngx_http_toll_loc_conf_t       *lcf;
    ngx_http_toll_main_conf_t      *mcf;
    ngx_http_toll_prepaid_ask_t    *ask;
    ngx_http_toll_prepaid_state_t  *st;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);
    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    ask = ngx_alloc(sizeof(ngx_http_toll_prepaid_ask_t), r->connection->log);

    if (ask) {
        ngx_memcpy(ask->subject, subject, len);
        ask->subject_len = len;
        ask->ctx = ctx;
        ask->shm_zone = mcf->shm_zone;
        ask->sent_ms = now;
        ask->back = back;
        ask->resync = 0;

        if (ngx_http_toll_prepaid_ask(ask, ctx->amount_micros,
                                      ctx->price_micros, rate, mcf)
            != NGX_OK)
        {
            ngx_free(ask);
            ask = NULL;
        }
    }

    if (ask == NULL) {
        /* not asked (Redis away, no memory): the node cannot tell */

        ngx_http_toll_shm_lock(mcf->shm_zone);

        /* pinned while asking: still there */
        st = (ngx_http_toll_prepaid_state_t *) ln->state;

        if (st->asking) {
            st->asking--;
        }

        /* never sent: the lease is still the node's */
        st->lease += back;
        st->returning = ngx_max(st->returning - back, 0);

        ngx_http_toll_prepaid_keep(mcf->shm_zone, ln);

        ngx_http_toll_shm_unlock(mcf->shm_zone);

        ctx->prepaid_state = NGX_HTTP_TOLL_PREPAID_FAILED;
        return lcf->prepaid_fallback ? NGX_OK : NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    ctx->prepaid_ask = ask;
    ctx->prepaid_state = NGX_HTTP_TOLL_PREPAID_WAITING;
    r->read_event_handler = ngx_http_test_reading;

    return NGX_AGAIN;
}


/*
 * The call's hold from the lease, the zone locked: NGX_OK (held),
 * NGX_DECLINED (Redis said lately that the balance cannot pay, or, asked
 * just now, that it cannot), NGX_AGAIN (Redis must be asked).  A lease
 * Redis has not confirmed for half of toll_prepaid_reclaim may have been
 * taken back: it is not spent before Redis confirms it again.
 */

static ngx_int_t
ngx_http_toll_prepaid_take(ngx_http_toll_main_conf_t *mcf,
    ngx_http_toll_shm_limit_node_t *ln, ngx_http_toll_ctx_t *ctx,
    int64_t now, ngx_uint_t asked)
{
    int64_t                         hold;
    ngx_http_toll_prepaid_state_t  *st;

    st = (ngx_http_toll_prepaid_state_t *) ln->state;
    hold = ctx->amount_micros;

    if (st->lease >= hold
        && now - st->confirmed_ms < (int64_t) mcf->prepaid_reclaim / 2)
    {
        st->lease -= hold;
        st->holding += hold;
        st->used_ms = now;

        ngx_http_toll_rate_add(&st->window_ms, &st->window_held,
                               &st->last_held, now, hold);

        ctx->prepaid_held = 1;
        ctx->prepaid_node = ln;
        ctx->hold_micros = hold;
        ctx->balance_micros = st->lease + ngx_max(st->available, 0);

        return NGX_OK;
    }

    ctx->balance_micros = st->lease + ngx_max(st->available, 0);

    /*
     * Refused lately, the node asks again after toll_prepaid_recheck, or
     * as soon as a call in flight gave its hold back (the buyer's last
     * call may end just after its answer reached the buyer, who calls
     * again at once).
     */

    if (asked
        || (st->denied_ms
            && now - st->denied_ms < (int64_t) mcf->prepaid_recheck
            && st->lease <= st->denied_lease))
    {
        return NGX_DECLINED;
    }

    return NGX_AGAIN;
}


/*
 * Sends the exchange (lua/prepaid.lua): the give-back, and for a call
 * the next lease: toll_prepaid_lease prices' worth, or two seconds of
 * what the node spends (rate: a second's), whichever is more, while
 * Redis has more than two such leases; else the call's hold alone.
 */

static ngx_int_t
ngx_http_toll_prepaid_ask(ngx_http_toll_prepaid_ask_t *ask, int64_t hold,
    int64_t price, int64_t rate, ngx_http_toll_main_conf_t *mcf)
{
    u_char         *p, *nl;
    u_char          buf[8 * (TOLL_MONEY_CURRENCY_LEN_MAX + 32)
                        + 5 * NGX_INT64_LEN];
    u_char          name[TOLL_OWNER_LEN_MAX + 32];
    u_char         *node;
    int64_t         want, bound;
    ngx_str_t       buyer, cur;
    size_t          argvlen[15];
    const char     *argv[15];

    /* "p:buyer\ncurrency" */

    nl = ngx_strlchr(ask->subject + 2, ask->subject + ask->subject_len,
                     '\n');
    if (nl == NULL) {
        return NGX_ERROR;
    }

    buyer.data = ask->subject + 2;
    buyer.len = nl - buyer.data;
    cur.data = nl + 1;
    cur.len = ask->subject + ask->subject_len - cur.data;

    if (hold == 0) {
        want = 0;
        bound = 0;

    } else {
        if (toll_money_mul(price, (int64_t) mcf->prepaid_lease, &want)
            != TOLL_MONEY_OK)
        {
            want = INT64_MAX / 2;
        }

        if (rate < INT64_MAX / 4) {
            want = ngx_max(want, 2 * rate);
        }

        want = ngx_max(want, hold);
        bound = (want > INT64_MAX / 2) ? INT64_MAX
                                                 : 2 * want;
    }

    ask->hold = hold;
    ask->want = want;

    node = ngx_http_toll_shm_node_id(ask->shm_zone);

    argv[2] = "1";
    argvlen[2] = 1;

    argv[3] = (const char *) name;
    argvlen[3] = (u_char *) toll_name_balance((char *) name,
                                              (char *) buyer.data,
                                              buyer.len, "")
                 - name;

    p = buf;

#define ngx_http_toll_prepaid_arg(k, fmt, ...)                                \
    argv[k] = (const char *) p;                                               \
    p = ngx_sprintf(p, fmt, __VA_ARGS__);                                     \
    argvlen[k] = p - (u_char *) argv[k]

    ngx_http_toll_prepaid_arg(4, "%V:" TOLL_BALANCE_AVAILABLE, &cur);
    ngx_http_toll_prepaid_arg(5, "%V:" TOLL_BALANCE_HELD, &cur);
    ngx_http_toll_prepaid_arg(6, "%V:" TOLL_BALANCE_HOLD "%*s", &cur,
                              (size_t) NGX_HTTP_TOLL_NODE_ID_LEN, node);
    ngx_http_toll_prepaid_arg(7, "%V:" TOLL_BALANCE_SEEN "%*s", &cur,
                              (size_t) NGX_HTTP_TOLL_NODE_ID_LEN, node);
    ngx_http_toll_prepaid_arg(8, "%V:" TOLL_BALANCE_SEEN, &cur);
    ngx_http_toll_prepaid_arg(9, "%V:" TOLL_BALANCE_HOLD, &cur);
    ngx_http_toll_prepaid_arg(10, "%L", ask->resync
                                        ? NGX_HTTP_TOLL_PREPAID_ALL
                                        : ask->back);
    ngx_http_toll_prepaid_arg(11, "%L", hold);
    ngx_http_toll_prepaid_arg(12, "%L", want);
    ngx_http_toll_prepaid_arg(13, "%L", bound);
    ngx_http_toll_prepaid_arg(14, "%M",
                              (ngx_msec_t) mcf->prepaid_reclaim / 1000);

#undef ngx_http_toll_prepaid_arg

    if (ngx_http_toll_redis_eval_durable(TOLL_SCRIPT_PREPAID,
            ngx_http_toll_prepaid_reply, ask, 15, argv, argvlen)
        == NULL)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_toll_prepaid_reply(void *data, redisReply *reply)
{
    ngx_http_toll_prepaid_ask_t *ask = data;

    int64_t                          now;
    ngx_int_t                        rc;
    ngx_http_toll_ctx_t             *ctx;
    toll_reply_prepaid_t             pr;
    ngx_http_toll_main_conf_t       *mcf;
    ngx_http_toll_prepaid_state_t   *st;
    ngx_http_toll_shm_limit_node_t  *ln;

    ctx = ask->ctx;
    now = ngx_http_toll_prepaid_now();
    mcf = ngx_http_cycle_get_module_main_conf(ngx_cycle, ngx_http_toll_module);

    toll_reply_prepaid(reply, ask->want, &pr);

    if (pr.rc == TOLL_REPLY_LEASE_ERROR
        && ngx_http_toll_redis_refusal(NGX_HTTP_TOLL_REDIS_PREPAID, reply))
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "toll: redis refused a balance lease: %*s",
                      (size_t) reply->len, reply->str);
    }

    rc = NGX_ERROR;

    ngx_http_toll_shm_lock(ask->shm_zone);

    /* pinned while asking: found, unless the zone was remade */

    ln = ngx_http_toll_prepaid_node(ask->shm_zone, ask->subject,
                                    ask->subject_len, 0);

    if (ln) {
        st = (ngx_http_toll_prepaid_state_t *) ln->state;

        if (st->asking) {
            st->asking--;
        }

        st->returning = ngx_max(st->returning - ask->back, 0);

        if (pr.rc == TOLL_REPLY_LEASE_GRANTED) {
            /* what Redis granted is this node's, the caller there or not */
            st->lease += pr.grant;
            st->available = pr.available;
            st->confirmed_ms = ngx_max(st->confirmed_ms, ask->sent_ms);

            if (ask->resync) {
                st->unsure = 0;
            }

            if (ask->hold) {
                st->denied_ms = (pr.grant == 0) ? now : 0;
                st->denied_lease = st->lease;
            }

            if (ctx && mcf) {
                rc = ngx_http_toll_prepaid_take(mcf, ln, ctx, now, 1);
            }

        } else {
            /* applied or not, nobody knows: settled once idle */
            st->unsure = 1;
        }

        ngx_http_toll_prepaid_keep(ask->shm_zone, ln);

    } else if (pr.grant) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "toll: a lease of %L micro-units of \"%*s\" has no "
                      "node in the zone", pr.grant, ask->subject_len,
                      ask->subject);
    }

    ngx_http_toll_shm_unlock(ask->shm_zone);

    ngx_free(ask);

    if (ctx == NULL) {
        return;
    }

    ctx->prepaid_ask = NULL;

    if (rc == NGX_OK) {
        ctx->prepaid_state = NGX_HTTP_TOLL_PREPAID_NONE;

    } else if (rc == NGX_DECLINED) {
        ctx->prepaid_state = NGX_HTTP_TOLL_PREPAID_DENIED;

    } else {
        ctx->prepaid_state = NGX_HTTP_TOLL_PREPAID_FAILED;
    }

    ngx_http_toll_prepaid_resume(ctx);
}


static void
ngx_http_toll_prepaid_resume(ngx_http_toll_ctx_t *ctx)
{
    ngx_http_request_t  *r;

    r = ctx->request;

    ctx->state = NGX_HTTP_TOLL_STATE_RESUMED;

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;
    ngx_post_event(r->connection->write, &ngx_posted_events);
}


/* a held call the meter never took over (not admitted, repriced) */

void
ngx_http_toll_prepaid_release(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    ngx_http_toll_main_conf_t       *mcf;
    ngx_http_toll_prepaid_state_t   *st;
    ngx_http_toll_shm_limit_node_t  *ln;

    if (!ctx->prepaid_held) {
        return;
    }

    ctx->prepaid_held = 0;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    /* pinned while the call holds: still there */
    ln = ctx->prepaid_node;
    st = (ngx_http_toll_prepaid_state_t *) ln->state;

    ngx_http_toll_shm_lock(mcf->shm_zone);

    st->holding = ngx_max(st->holding - ctx->hold_micros, 0);
    st->lease += ctx->hold_micros;
    ngx_http_toll_prepaid_keep(mcf->shm_zone, ln);

    ngx_http_toll_shm_unlock(mcf->shm_zone);

    ctx->hold_micros = 0;
    ctx->prepaid_node = NULL;
}


void
ngx_http_toll_prepaid_end(ngx_shm_zone_t *shm_zone, void *node, int64_t held,
    int64_t charged)
{
    ngx_http_toll_prepaid_state_t   *st;
    ngx_http_toll_shm_limit_node_t  *ln = node;

    if (ln == NULL || (held == 0 && charged == 0)) {
        return;
    }

    /* pinned while the call held: still there */

    st = (ngx_http_toll_prepaid_state_t *) ln->state;

    st->holding = ngx_max(st->holding - held, 0);
    st->lease += ngx_max(held - charged, 0);
    st->unflushed += charged;

    ngx_http_toll_prepaid_keep(shm_zone, ln);
}


void
ngx_http_toll_prepaid_flushed(ngx_shm_zone_t *shm_zone, u_char *meter,
    size_t mlen, int64_t paid, ngx_uint_t applied)
{
    u_char                           subject[NGX_HTTP_TOLL_NODE_SUBJECT_MAX];
    size_t                           len;
    ngx_http_toll_prepaid_state_t   *st;
    ngx_http_toll_shm_limit_node_t  *ln;

    if (paid == 0) {
        return;
    }

    len = ngx_http_toll_prepaid_meter_subject(subject, meter, mlen);
    ln = len ? ngx_http_toll_prepaid_node(shm_zone, subject, len, 0) : NULL;

    if (ln == NULL) {
        return;
    }

    st = (ngx_http_toll_prepaid_state_t *) ln->state;
    st->unflushed = ngx_max(st->unflushed - paid, 0);

    if (!applied) {
        st->unsure = 1;
    }

    ngx_http_toll_prepaid_keep(shm_zone, ln);
}


ngx_uint_t
ngx_http_toll_prepaid_tick(ngx_shm_zone_t *shm_zone, ngx_log_t *log)
{
    int64_t                          now;
    ngx_uint_t                       n, k, waiting;
    ngx_http_toll_main_conf_t       *mcf;
    ngx_http_toll_prepaid_ask_t     *ask;
    ngx_http_toll_prepaid_state_t   *st;
    ngx_http_toll_shm_limit_node_t  *ln;

    mcf = ngx_http_cycle_get_module_main_conf(ngx_cycle, ngx_http_toll_module);
    if (mcf == NULL) {
        return 0;
    }

    waiting = 0;

    now = ngx_http_toll_prepaid_now();

    n = ngx_min(ngx_http_toll_shm_queued(shm_zone,
                                         NGX_HTTP_TOLL_QUEUE_PREPAID),
                NGX_HTTP_TOLL_PREPAID_TICK_MAX);

    for (k = 0; k < n; k++) {
        ln = ngx_http_toll_shm_dequeue(shm_zone, NGX_HTTP_TOLL_QUEUE_PREPAID);
        if (ln == NULL) {
            break;
        }

        st = (ngx_http_toll_prepaid_state_t *) ln->state;
        ask = NULL;

        /*
         * A live worker hears of every exchange within its Redis
         * timeout, answered or timed out; one still counted long after
         * was sent by a worker that died.  Redis may have applied it.
         */

        if (st->asking
            && now - st->asked_ms > 2 * (int64_t) mcf->redis.timeout + 1000)
        {
            st->asking = 0;
            st->returning = 0;
            st->unsure = 1;
        }

        if (st->asking == 0 && st->returning == 0
            && ((st->lease > 0
                 && (ngx_exiting
                     || now - st->used_ms >= (int64_t) mcf->prepaid_idle))
                || (st->unsure && st->lease == 0 && st->holding == 0
                    && st->unflushed == 0)))
        {
            ask = ngx_alloc(sizeof(ngx_http_toll_prepaid_ask_t), log);
        }

        if (ask) {
            ask->ctx = NULL;
            ask->shm_zone = shm_zone;
            ask->sent_ms = now;
            ask->resync = (st->lease == 0);
            ask->back = st->lease;
            ask->subject_len = ln->subject_len;
            ngx_memcpy(ask->subject, ln->subject, ln->subject_len);

            if (ngx_http_toll_prepaid_ask(ask, 0, 0, 0, mcf) == NGX_OK) {
                st->returning = st->lease;
                st->lease = 0;
                st->asking++;
                st->asked_ms = now;

            } else {
                ngx_free(ask);
            }
        }

        /* back in the queue while it holds anything or waits */
        ngx_http_toll_prepaid_keep(shm_zone, ln);

        waiting += (st->asking || st->returning || st->unsure);
    }

    return waiting;
}


void
ngx_http_toll_prepaid_cleanup(ngx_http_toll_ctx_t *ctx)
{
    if (ctx->prepaid_ask) {
        /* the lease still lands in the zone; only the caller is gone */
        ctx->prepaid_ask->ctx = NULL;
        ctx->prepaid_ask = NULL;
    }
}


ngx_int_t
ngx_http_toll_prepaid_members(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_str_t *members)
{
    u_char  *p;

    p = ngx_pnalloc(r->pool, sizeof("\"price\":\"\",\"currency\":\"\","
                                    "\"balance\":\"\",") - 1
                             + 2 * TOLL_MONEY_STR_MAX
                             + ctx->service->currency.len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    members->data = p;

    p = ngx_cpymem(p, "\"price\":\"", sizeof("\"price\":\"") - 1);
    p += toll_money_format(ctx->price_micros, (char *) p);
    p = ngx_sprintf(p, "\",\"currency\":\"%V\",\"balance\":\"",
                    &ctx->service->currency);
    p += toll_money_format(ngx_max(ctx->balance_micros, 0), (char *) p);
    p = ngx_cpymem(p, "\",", 2);

    members->len = p - members->data;

    return NGX_OK;
}


typedef struct {
    ngx_http_toll_prepaid_gauge_t  *g;
    ngx_uint_t                      n;
} ngx_http_toll_prepaid_sum_t;


static void
ngx_http_toll_prepaid_gauge(ngx_http_toll_shm_limit_node_t *ln, void *data)
{
    ngx_http_toll_prepaid_sum_t *sum = data;

    u_char                         *cur, *end;
    ngx_uint_t                      i;
    ngx_http_toll_prepaid_gauge_t  *g;
    ngx_http_toll_prepaid_state_t  *st;

    end = ln->subject + ln->subject_len;

    if (ln->subject_len < 2 || ln->subject[0] != 'p' || ln->subject[1] != ':')
    {
        return;
    }

    for (cur = end; cur > ln->subject && cur[-1] != '\n'; cur--) {
        /* void */
    }

    st = (ngx_http_toll_prepaid_state_t *) ln->state;

    for (i = 0; i < sum->n; i++) {
        g = &sum->g[i];

        if ((size_t) (end - cur) == g->currency.len
            && ngx_strncmp(cur, g->currency.data, g->currency.len) == 0)
        {
            g->lease += st->lease;
            g->holding += st->holding;
            g->unflushed += st->unflushed;
            g->balances++;
            g->unsure += (st->unsure != 0);
            return;
        }
    }
}


void
ngx_http_toll_prepaid_gauges(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_prepaid_gauge_t *g, ngx_uint_t n)
{
    ngx_http_toll_prepaid_sum_t  sum;

    sum.g = g;
    sum.n = n;

    ngx_http_toll_shm_lock(shm_zone);
    ngx_http_toll_shm_queue_walk(shm_zone, NGX_HTTP_TOLL_QUEUE_PREPAID,
                                 ngx_http_toll_prepaid_gauge, &sum);
    ngx_http_toll_shm_unlock(shm_zone);
}


/* the node of a buyer's balance (the zone locked); NULL: none, or full */

static ngx_http_toll_shm_limit_node_t *
ngx_http_toll_prepaid_node(ngx_shm_zone_t *shm_zone, u_char *subject,
    size_t len, ngx_uint_t create)
{
    ngx_http_toll_prepaid_state_t   *st;
    ngx_http_toll_shm_limit_node_t  *ln;

    ln = ngx_http_toll_shm_limit_find(shm_zone, subject, len);

    if (ln || !create) {
        return ln;
    }

    ln = ngx_http_toll_shm_limit_create(shm_zone, subject, len,
                                        sizeof(ngx_http_toll_prepaid_state_t));
    if (ln == NULL) {
        return NULL;
    }

    st = (ngx_http_toll_prepaid_state_t *) ln->state;
    ngx_memzero(st, sizeof(ngx_http_toll_prepaid_state_t));
    st->available = -1;

    return ln;
}


/*
 * A node that holds money, or waits for Redis, is pinned (never evicted)
 * and queued for the tick; one that holds nothing may go.
 */

static void
ngx_http_toll_prepaid_keep(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_shm_limit_node_t *ln)
{
    ngx_http_toll_prepaid_state_t  *st;

    st = (ngx_http_toll_prepaid_state_t *) ln->state;

    ln->pins = (st->lease || st->holding || st->unflushed || st->returning
                || st->asking || st->unsure);

    if (ln->pins) {
        ngx_http_toll_shm_enqueue(shm_zone, ln, NGX_HTTP_TOLL_QUEUE_PREPAID);
    }
}


/* "p:buyer\ncurrency" */

static size_t
ngx_http_toll_prepaid_subject(u_char *subject, ngx_str_t *buyer,
    ngx_str_t *currency)
{
    u_char  *p;

    p = ngx_cpymem(subject, "p:", 2);
    p = ngx_cpymem(p, buyer->data, buyer->len);
    *p++ = '\n';

    return ngx_cpymem(p, currency->data, currency->len) - subject;
}


/* the same, from the meter's "m:YYYYMMDD:buyer\nservice\nprovider\ncur" */

static size_t
ngx_http_toll_prepaid_meter_subject(u_char *subject, u_char *meter,
    size_t len)
{
    u_char     *end, *nl, *last;
    ngx_str_t   buyer, currency;

    end = meter + len;

    if (len < 11) {
        return 0;
    }

    nl = ngx_strlchr(meter + 11, end, '\n');

    for (last = end; last > meter + 11 && last[-1] != '\n'; last--) {
        /* void */
    }

    if (nl == NULL || last == meter + 11) {
        return 0;
    }

    buyer.data = meter + 11;
    buyer.len = nl - buyer.data;
    currency.data = last;
    currency.len = end - last;

    return ngx_http_toll_prepaid_subject(subject, &buyer, &currency);
}


/* a monotonic clock in ms, shared by the workers: leases count time */

static int64_t
ngx_http_toll_prepaid_now(void)
{
    return (int64_t) (ngx_http_toll_now_us() / 1000);
}
