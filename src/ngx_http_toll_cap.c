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
 * it was asked under; the generation is read at most once a second per
 * nginx, so a change reaches every node within about a second, and an
 * uncapped call costs a lookup in the zone and no round trip.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_cap.h"
#include "ngx_http_toll_problem.h"
#include "ngx_http_toll_redis.h"
#include "ngx_http_toll_shm.h"
#include "toll_money.h"
#include "toll_scripts.h"


#define NGX_HTTP_TOLL_CAP_DAY_LEN   TOLL_NAME_DAY_LEN

/* call->state: where a call's hold stands */
#define NGX_HTTP_TOLL_CAP_NONE      0
#define NGX_HTTP_TOLL_CAP_WAITING   1
#define NGX_HTTP_TOLL_CAP_DENIED    2
#define NGX_HTTP_TOLL_CAP_FAILED    3

/* the generation is read this often, per nginx */
#define NGX_HTTP_TOLL_CAP_GEN_MS    1000
/* leases looked at per tick and worker */
#define NGX_HTTP_TOLL_CAP_TICK_MAX  256


/* a buyer's caps for one key and currency, as this node holds them */
typedef struct {
    int64_t                    lease;         /* free for calls to hold */
    int64_t                    holding;       /* held by calls in flight */
    int64_t                    gen;           /* the caps' generation of
                                                 the last answer */
    int64_t                    used_ms;       /* the last hold */
    int64_t                    asked_ms;
    int64_t                    denied_ms;     /* Redis had too little;
                                                 0: not */
    int64_t                    cap_micros;    /* the cap that refused */
    int64_t                    month_end;     /* unix seconds */
    int64_t                    window_ms;     /* this second's start */
    int64_t                    window_held;   /* held in this second */
    int64_t                    last_held;     /* and in the one before */
    ngx_uint_t                 asking;        /* exchanges in flight */
    u_char                     day[NGX_HTTP_TOLL_CAP_DAY_LEN];
    u_char                     month[NGX_HTTP_TOLL_CAP_DAY_LEN];
    u_char                     answered;      /* gen and capped hold */
    u_char                     capped;        /* 0: no cap applies */
    u_char                     monthly;       /* the refusal's period */
    u_char                     key_scope;     /* the refusal's cap is the
                                                 key's */
} ngx_http_toll_cap_state_t;


/* the caps' generation as this nginx last read it */
typedef struct {
    int64_t                    gen;           /* -1: not read yet */
    int64_t                    read_ms;
    ngx_uint_t                 reading;
} ngx_http_toll_cap_gen_t;


/* a call's hold, in the request's pool */
struct ngx_http_toll_cap_call_s {
    struct ngx_http_toll_cap_ask_s  *ask;
    int64_t                    hold;          /* held; 0: none */
    int64_t                    cap_micros;    /* a refusal's */
    int64_t                    retry_after;   /* seconds */
    ngx_uint_t                 state;
    ngx_uint_t                 monthly;
    ngx_uint_t                 key_scope;
    u_char                     day[NGX_HTTP_TOLL_CAP_DAY_LEN];
    u_char                     month[NGX_HTTP_TOLL_CAP_DAY_LEN];
};


/* an exchange with Redis; it lands in the zone even if the caller left */
typedef struct ngx_http_toll_cap_ask_s {
    ngx_http_toll_ctx_t       *ctx;           /* NULL: none, or left */
    ngx_shm_zone_t            *shm_zone;
    int64_t                    gen;           /* known when sent */
    int64_t                    hold;          /* the call's; 0: none */
    int64_t                    rate;          /* held a second, lately */
    int64_t                    back;
    u_char                     day[NGX_HTTP_TOLL_CAP_DAY_LEN];
    u_char                     bday[NGX_HTTP_TOLL_CAP_DAY_LEN];
    u_char                     bmonth[NGX_HTTP_TOLL_CAP_DAY_LEN];
    size_t                     subject_len;
    u_char                     subject[NGX_HTTP_TOLL_NODE_SUBJECT_MAX];
} ngx_http_toll_cap_ask_t;


static ngx_int_t ngx_http_toll_cap_local(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_main_conf_t *mcf,
    u_char *subject, size_t *lenp, ngx_http_toll_cap_ask_t **askp);
static void ngx_http_toll_cap_unsent(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_cap_ask_t *ask);
static ngx_int_t ngx_http_toll_cap_take(ngx_http_toll_cap_state_t *st,
    ngx_http_toll_ctx_t *ctx, int64_t gen, u_char *day, int64_t now,
    ngx_uint_t asked);
static ngx_int_t ngx_http_toll_cap_ask(ngx_http_toll_cap_ask_t *ask,
    ngx_http_toll_main_conf_t *mcf, int64_t price);
static void ngx_http_toll_cap_reply(void *data, redisReply *reply);
static ngx_int_t ngx_http_toll_cap_answer(ngx_http_toll_cap_state_t *st,
    ngx_http_toll_cap_ask_t *ask, redisReply *reply, int64_t now);
static void ngx_http_toll_cap_gen_reply(void *data, redisReply *reply);
static ngx_http_toll_cap_gen_t *ngx_http_toll_cap_gen(
    ngx_shm_zone_t *shm_zone);
static ngx_http_toll_shm_limit_node_t *ngx_http_toll_cap_node(
    ngx_shm_zone_t *shm_zone, u_char *subject, size_t len,
    ngx_uint_t create);
static void ngx_http_toll_cap_keep(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_shm_limit_node_t *ln);
static void ngx_http_toll_cap_give(ngx_http_toll_ctx_t *ctx, int64_t back,
    ngx_log_t *log);
static u_char *ngx_http_toll_cap_today(void);
static size_t ngx_http_toll_cap_subject(u_char *subject,
    ngx_http_toll_ctx_t *ctx);
static time_t ngx_http_toll_cap_time(u_char *day);
static int64_t ngx_http_toll_cap_now(void);


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

static ngx_int_t
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

        /* what the node spends a second, to size its next lease */

        if (now - st->window_ms >= 1000) {
            st->last_held = (now - st->window_ms < 2000) ? st->window_held
                                                         : 0;
            st->window_ms = now;
            st->window_held = 0;
        }

        st->window_held += hold;

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


/*
 * Sends the exchange (lua/cap.lua): the give-back, and for a call the
 * next lease: toll_prepaid_lease prices' worth, or two seconds of what
 * the node held lately if that is more (a busy buyer costs about one
 * exchange per node every two seconds), while the caps have room for two
 * such leases; else the call's hold alone, so that the last of a cap is
 * not leased away to one node.
 */

static ngx_int_t
ngx_http_toll_cap_ask(ngx_http_toll_cap_ask_t *ask,
    ngx_http_toll_main_conf_t *mcf, int64_t price)
{
    u_char     *p, *nl, *nl2;
    u_char      buf[5 * NGX_INT64_LEN + 3 * NGX_HTTP_TOLL_CAP_DAY_LEN];
    u_char      name[TOLL_OWNER_LEN_MAX + 32];
    int64_t     want, bound;
    time_t      now;
    ngx_str_t   buyer, key, cur;
    size_t      argvlen[22];
    const char *argv[22];

    /* "c:buyer\nkey\ncurrency" */

    nl = ngx_strlchr(ask->subject + 2, ask->subject + ask->subject_len,
                     '\n');
    nl2 = nl ? ngx_strlchr(nl + 1, ask->subject + ask->subject_len, '\n')
             : NULL;

    if (nl2 == NULL || (size_t) (nl - ask->subject) > TOLL_OWNER_LEN_MAX + 2)
    {
        return NGX_ERROR;
    }

    buyer.data = ask->subject + 2;
    buyer.len = nl - buyer.data;
    key.data = nl + 1;
    key.len = nl2 - key.data;
    cur.data = nl2 + 1;
    cur.len = ask->subject + ask->subject_len - cur.data;

    want = 0;
    bound = 0;

    if (ask->hold) {
        if (toll_money_mul(price, (int64_t) mcf->prepaid_lease, &want)
            != TOLL_MONEY_OK)
        {
            want = INT64_MAX / 2;
        }

        if (ask->rate < INT64_MAX / 4) {
            want = ngx_max(want, 2 * ask->rate);
        }

        want = ngx_max(want, ask->hold);
        bound = (want > INT64_MAX / 2) ? INT64_MAX : 2 * want;
    }

    now = ngx_time();

    argv[2] = "1";
    argvlen[2] = 1;

    p = ngx_cpymem(name, TOLL_NAME_CAP_PREFIX,
                   toll_name_len(TOLL_NAME_CAP_PREFIX));
    p = ngx_cpymem(p, buyer.data, buyer.len);
    p = ngx_cpymem(p, TOLL_NAME_TAG_END, toll_name_len(TOLL_NAME_TAG_END));
    argv[3] = (const char *) name;
    argvlen[3] = p - name;

#define ngx_http_toll_cap_str(k, s, n)                                        \
    argv[k] = (const char *) (s);                                             \
    argvlen[k] = (n)

    ngx_http_toll_cap_str(4, cur.data, cur.len);
    ngx_http_toll_cap_str(5, key.data, key.len);
    ngx_http_toll_cap_str(6, ask->day, NGX_HTTP_TOLL_CAP_DAY_LEN);

    p = buf;

#define ngx_http_toll_cap_arg(k, fmt, ...)                                    \
    argv[k] = (const char *) p;                                               \
    p = ngx_sprintf(p, fmt, __VA_ARGS__);                                     \
    argvlen[k] = p - (u_char *) argv[k]

    ngx_http_toll_cap_arg(7, "%L", ask->back);

    if (ask->back) {
        ngx_http_toll_cap_str(8, ask->bday, NGX_HTTP_TOLL_CAP_DAY_LEN);
        ngx_http_toll_cap_str(9, ask->bmonth, NGX_HTTP_TOLL_CAP_DAY_LEN);

    } else {
        ngx_http_toll_cap_str(8, "", 0);
        ngx_http_toll_cap_str(9, "", 0);
    }

    ngx_http_toll_cap_arg(10, "%L", ask->hold);
    ngx_http_toll_cap_arg(11, "%L", want);
    ngx_http_toll_cap_arg(12, "%L", bound);
    /* a day's hash outlives the day by one more */
    ngx_http_toll_cap_arg(13, "%T", (now / 86400 + 2) * 86400 - now);
    ngx_http_toll_cap_arg(14, "%d", TOLL_TTL_CAP_MONTH);

#undef ngx_http_toll_cap_arg

    ngx_http_toll_cap_str(15, TOLL_CAP_USED, toll_name_len(TOLL_CAP_USED));
    ngx_http_toll_cap_str(16, TOLL_CAP_DAILY, toll_name_len(TOLL_CAP_DAILY));
    ngx_http_toll_cap_str(17, TOLL_CAP_MONTHLY,
                          toll_name_len(TOLL_CAP_MONTHLY));
    ngx_http_toll_cap_str(18, TOLL_CAP_ANCHOR,
                          toll_name_len(TOLL_CAP_ANCHOR));
    ngx_http_toll_cap_str(19, TOLL_CAP_KEY, toll_name_len(TOLL_CAP_KEY));
    ngx_http_toll_cap_str(20, TOLL_NAME_CAP_DAY,
                          toll_name_len(TOLL_NAME_CAP_DAY));
    ngx_http_toll_cap_str(21, TOLL_NAME_CAP_MONTH,
                          toll_name_len(TOLL_NAME_CAP_MONTH));

#undef ngx_http_toll_cap_str

    if (ngx_http_toll_redis_eval(TOLL_SCRIPT_CAP, ngx_http_toll_cap_reply,
                                 ask, 22, argv, argvlen)
        == NULL)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_toll_cap_reply(void *data, redisReply *reply)
{
    ngx_http_toll_cap_ask_t *ask = data;

    int64_t                          now;
    ngx_int_t                        rc;
    ngx_http_toll_ctx_t             *ctx;
    ngx_http_request_t              *r;
    ngx_http_toll_cap_state_t       *st;
    ngx_http_toll_shm_limit_node_t  *ln;

    ctx = ask->ctx;
    now = ngx_http_toll_cap_now();
    rc = NGX_HTTP_SERVICE_UNAVAILABLE;

    if (reply && reply->type == REDIS_REPLY_ERROR
        && ngx_http_toll_redis_refusal(NGX_HTTP_TOLL_REDIS_PREPAID, reply))
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "toll: redis refused a spend cap lease: %*s",
                      (size_t) reply->len, reply->str);
    }

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        reply = NULL;
    }

    ngx_http_toll_shm_lock(ask->shm_zone);

    /* pinned while asking: found, unless the zone was remade */

    ln = ngx_http_toll_cap_node(ask->shm_zone, ask->subject,
                                ask->subject_len, 0);

    if (ln) {
        st = (ngx_http_toll_cap_state_t *) ln->state;

        if (st->asking) {
            st->asking--;
        }

        if (reply && ngx_http_toll_cap_answer(st, ask, reply, now) == NGX_OK)
        {
            if (ctx) {
                rc = ngx_http_toll_cap_take(st, ctx, ask->gen, ask->day, now,
                                            1);
            }
        }

        ngx_http_toll_cap_keep(ask->shm_zone, ln);
    }

    ngx_http_toll_shm_unlock(ask->shm_zone);

    ngx_free(ask);

    if (ctx == NULL) {
        return;
    }

    ctx->cap->ask = NULL;

    if (rc == NGX_OK) {
        ctx->cap->state = NGX_HTTP_TOLL_CAP_NONE;

    } else if (rc == NGX_HTTP_TOLL_CAP_EXCEEDED) {
        ctx->cap->state = NGX_HTTP_TOLL_CAP_DENIED;

    } else {
        ctx->cap->state = NGX_HTTP_TOLL_CAP_FAILED;
    }

    r = ctx->request;

    ctx->state = NGX_HTTP_TOLL_STATE_RESUMED;

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;
    ngx_post_event(r->connection->write, &ngx_posted_events);
}


/*
 * lua/cap.lua's answer into the node (the zone locked): {"none"}, or
 * {"caps", grant, room, scope, period, cap, month start, month end}.  A
 * grant for a period the node has left is dropped: it stays used there.
 */

static ngx_int_t
ngx_http_toll_cap_answer(ngx_http_toll_cap_state_t *st,
    ngx_http_toll_cap_ask_t *ask, redisReply *reply, int64_t now)
{
    size_t        i;
    int64_t       grant, cap;
    ngx_int_t     newer;
    redisReply  **e;

    e = reply->element;

    if (e[0]->len == 4 && ngx_strncmp(e[0]->str, "back", 4) == 0) {
        return NGX_OK;
    }

    if (e[0]->len == 4 && ngx_strncmp(e[0]->str, "none", 4) == 0) {
        st->answered = 1;
        st->capped = 0;
        st->gen = ask->gen;
        st->denied_ms = 0;
        return NGX_OK;
    }

    if (reply->elements != 8) {
        return NGX_ERROR;
    }

    for (i = 1; i < 8; i++) {
        if (e[i]->type != REDIS_REPLY_STRING) {
            return NGX_ERROR;
        }
    }

    grant = ngx_atoof((u_char *) e[1]->str, e[1]->len);
    cap = ngx_atoof((u_char *) e[5]->str, e[5]->len);

    if (grant < 0 || cap < 0
        || e[6]->len != NGX_HTTP_TOLL_CAP_DAY_LEN
        || e[7]->len != NGX_HTTP_TOLL_CAP_DAY_LEN)
    {
        return NGX_ERROR;
    }

    newer = st->answered && st->capped
            ? ngx_memcmp(ask->day, st->day, NGX_HTTP_TOLL_CAP_DAY_LEN)
            : 1;

    if (newer == 0
        && ngx_memcmp(e[6]->str, st->month, NGX_HTTP_TOLL_CAP_DAY_LEN) != 0)
    {
        /* the anchor moved: the old month's lease stays used there */
        newer = 1;
    }

    if (newer < 0) {
        return NGX_ERROR;
    }

    if (newer > 0) {
        st->lease = 0;
        st->holding = 0;
        ngx_memcpy(st->day, ask->day, NGX_HTTP_TOLL_CAP_DAY_LEN);
        ngx_memcpy(st->month, e[6]->str, NGX_HTTP_TOLL_CAP_DAY_LEN);
    }

    st->lease += grant;
    st->answered = 1;
    st->capped = 1;
    st->gen = ask->gen;
    st->month_end = ngx_http_toll_cap_time((u_char *) e[7]->str);

    if (ask->hold && grant == 0) {
        st->denied_ms = now;
        st->cap_micros = cap;
        st->monthly = (e[4]->len == 7);              /* "monthly" */
        st->key_scope = (e[3]->len == 3);            /* "key" */

    } else {
        st->denied_ms = 0;
    }

    return NGX_OK;
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
ngx_http_toll_cap_tick(ngx_shm_zone_t *shm_zone, ngx_log_t *log)
{
    int64_t                          now;
    ngx_uint_t                       n, k;
    const char                      *argv[2];
    size_t                           argvlen[2];
    ngx_http_toll_cap_gen_t         *g;
    ngx_http_toll_cap_ask_t         *ask;
    ngx_http_toll_main_conf_t       *mcf;
    ngx_http_toll_cap_state_t       *st;
    ngx_http_toll_shm_limit_node_t  *ln;

    mcf = ngx_http_cycle_get_module_main_conf(ngx_cycle, ngx_http_toll_module);
    if (mcf == NULL) {
        return;
    }

    now = ngx_http_toll_cap_now();
    g = ngx_http_toll_cap_gen(shm_zone);

    /*
     * One read a second per nginx, where anything is priced (an nginx
     * that sells nothing leaves its Redis connection idle); one lost
     * with its worker is redone.
     */

    if (g && !ngx_exiting && mcf->services != NULL
        && now - g->read_ms >= NGX_HTTP_TOLL_CAP_GEN_MS
        && (!g->reading
            || now - g->read_ms > 2 * (int64_t) mcf->redis.timeout + 1000))
    {
        argv[0] = "GET";
        argvlen[0] = 3;
        argv[1] = TOLL_NAME_CAP_GEN;
        argvlen[1] = toll_name_len(TOLL_NAME_CAP_GEN);

        g->read_ms = now;
        g->reading = (ngx_http_toll_redis_send(ngx_http_toll_cap_gen_reply,
                                               shm_zone, 2, argv, argvlen)
                      != NULL);
    }

    n = ngx_min(ngx_http_toll_shm_queued(shm_zone, NGX_HTTP_TOLL_QUEUE_CAP),
                NGX_HTTP_TOLL_CAP_TICK_MAX);

    for (k = 0; k < n; k++) {
        ln = ngx_http_toll_shm_dequeue(shm_zone, NGX_HTTP_TOLL_QUEUE_CAP);
        if (ln == NULL) {
            break;
        }

        st = (ngx_http_toll_cap_state_t *) ln->state;

        /* an exchange counted long after was sent by a worker that died */

        if (st->asking
            && now - st->asked_ms > 2 * (int64_t) mcf->redis.timeout + 1000)
        {
            st->asking = 0;
        }

        if (st->lease > 0
            && (ngx_exiting || now - st->used_ms >= (int64_t) mcf->prepaid_idle))
        {
            ask = ngx_alloc(sizeof(ngx_http_toll_cap_ask_t), log);

            if (ask) {
                ask->ctx = NULL;
                ask->shm_zone = shm_zone;
                ask->gen = st->gen;
                ask->hold = 0;
                ask->rate = 0;
                ask->back = st->lease;
                ngx_memcpy(ask->day, st->day, NGX_HTTP_TOLL_CAP_DAY_LEN);
                ngx_memcpy(ask->bday, st->day, NGX_HTTP_TOLL_CAP_DAY_LEN);
                ngx_memcpy(ask->bmonth, st->month,
                           NGX_HTTP_TOLL_CAP_DAY_LEN);
                ask->subject_len = ln->subject_len;
                ngx_memcpy(ask->subject, ln->subject, ln->subject_len);

                if (ngx_http_toll_cap_ask(ask, mcf, 0) == NGX_OK) {
                    /* answered or not, it is Redis's again: conservative */
                    st->lease = 0;
                    st->asking++;
                    st->asked_ms = now;

                } else {
                    ngx_free(ask);
                }
            }
        }

        ngx_http_toll_cap_keep(shm_zone, ln);
    }
}


static void
ngx_http_toll_cap_gen_reply(void *data, redisReply *reply)
{
    ngx_shm_zone_t *shm_zone = data;

    int64_t                   gen;
    ngx_http_toll_cap_gen_t  *g;

    gen = -1;

    if (reply && reply->type == REDIS_REPLY_NIL) {
        gen = 0;

    } else if (reply && reply->type == REDIS_REPLY_STRING) {
        gen = ngx_atoof((u_char *) reply->str, reply->len);
    }

    ngx_http_toll_shm_lock(shm_zone);

    g = ngx_http_toll_cap_gen(shm_zone);

    if (g) {
        g->reading = 0;

        /* unread: the last known stays, as no change can be made */
        if (gen >= 0) {
            g->gen = gen;
        }
    }

    ngx_http_toll_shm_unlock(shm_zone);
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

static ngx_http_toll_cap_gen_t *
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

static ngx_http_toll_shm_limit_node_t *
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

static void
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


/* the unix time of a "YYYYMMDD" day's start, UTC (days from civil) */

static time_t
ngx_http_toll_cap_time(u_char *day)
{
    ngx_int_t  y, m, d, era, yoe, doy, doe;

    y = ngx_atoi(day, 4);
    m = ngx_atoi(day + 4, 2);
    d = ngx_atoi(day + 6, 2);

    if (y < 1970 || m < 1 || m > 12 || d < 1 || d > 31) {
        return 0;
    }

    y -= (m <= 2);
    era = y / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return (time_t) (era * 146097 + doe - 719468) * 86400;
}


/* a monotonic clock in ms, shared by the workers */

static int64_t
ngx_http_toll_cap_now(void)
{
    return (int64_t) (ngx_http_toll_now_us() / 1000);
}
