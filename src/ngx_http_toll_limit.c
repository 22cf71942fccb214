/*
 * toll: burst, tier and concurrency limits: the decision.
 *
 * A request's limits are decided under the zone's mutex from the state of
 * its subject (the key id or its buyer, or the client address): the
 * limits of the address and of the key's plan, the state each subject
 * keeps in the zone, and what a request holds in flight until it ends.
 * Plans are read in ngx_http_toll_limit_conf.c, the state goes to Redis
 * and back in ngx_http_toll_limit_sync.c, a strict plan asks Redis in
 * ngx_http_toll_limit_strict.c, ngx_http_toll_limit_headers.c tells the
 * client, and ngx_http_toll_buyer.c names a buyer's subject and plan.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_limit.h"
#include "ngx_http_toll_limit_int.h"
#include "ngx_http_toll_shm.h"
#include "ngx_http_toll_buyer.h"


static ngx_http_toll_limit_ctx_t *ngx_http_toll_limit_get_ctx(
    ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx);
static ngx_int_t ngx_http_toll_limit_add(ngx_http_toll_limit_ctx_t *lctx,
    ngx_http_toll_rate_t *rate, ngx_uint_t ip);
static ngx_http_toll_plan_t *ngx_http_toll_limit_key_plan(
    ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx);
static ngx_int_t ngx_http_toll_limit_key_limits(
    ngx_http_toll_limit_ctx_t *lctx, int64_t rate_limit,
    ngx_http_toll_plan_t *plan);
static void ngx_http_toll_limit_check(ngx_http_toll_limit_ctx_t *lctx,
    ngx_http_toll_limit_t *l, ngx_http_toll_limit_state_t *st, int64_t now,
    ngx_uint_t rates_only);
static void ngx_http_toll_limit_count(ngx_http_toll_limit_t *l,
    ngx_http_toll_limit_state_t *st, ngx_http_toll_shm_limit_node_t *ln,
    int64_t now, ngx_uint_t rates_only);
static ngx_http_toll_shm_limit_node_t *ngx_http_toll_limit_fit(
    ngx_shm_zone_t *shm_zone, ngx_http_toll_shm_limit_node_t *ln);


ngx_int_t          ngx_http_toll_limit_proc = -1;
uint32_t           ngx_http_toll_limit_gen;
int64_t            ngx_http_toll_limit_base;


static ngx_http_toll_limit_ctx_t *
ngx_http_toll_limit_get_ctx(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    ngx_http_toll_limit_ctx_t  *lctx;
    ngx_http_toll_main_conf_t  *mcf;

    if (ctx->limit) {
        return ctx->limit;
    }

    lctx = ngx_pcalloc(r->pool, sizeof(ngx_http_toll_limit_ctx_t));
    if (lctx == NULL) {
        return NULL;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    lctx->violated = -1;
    lctx->shm_zone = mcf->shm_zone;
    ctx->limit = lctx;

    return lctx;
}


static ngx_int_t
ngx_http_toll_limit_add(ngx_http_toll_limit_ctx_t *lctx,
    ngx_http_toll_rate_t *rate, ngx_uint_t ip)
{
    ngx_http_toll_limit_t  *l;

    if (lctx->nlimits == NGX_HTTP_TOLL_LIMITS_MAX) {
        return NGX_ERROR;
    }

    if (!rate->ready) {
        /* an overridden copy: its arithmetic is worked out now */

        switch (rate->kind) {

        case NGX_HTTP_TOLL_RATE_BUCKET:
            if (toll_bucket_conf(&rate->bc, rate->count,
                                 toll_unit_ms[rate->unit], rate->burst)
                != 0)
            {
                return NGX_ERROR;
            }
            break;

        case NGX_HTTP_TOLL_RATE_WINDOW:
            if (toll_window_conf(&rate->wc, rate->count,
                                 toll_unit_ms[rate->unit])
                != 0)
            {
                return NGX_ERROR;
            }
            break;

        default:
            break;
        }

        rate->ready = 1;
    }

    l = &lctx->limits[lctx->nlimits++];

    l->rate = rate;
    l->ip = ip;
    l->skipped = 0;

    return NGX_OK;
}


ngx_int_t
ngx_http_toll_limit_ip(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_uint_t peek)
{
    u_char                     *p;
    size_t                      len;
    ngx_int_t                   rc;
    ngx_uint_t                  i, from;
    struct sockaddr_in         *sin;
#if (NGX_HAVE_INET6)
    struct sockaddr_in6        *sin6;
#endif
    ngx_http_toll_plan_t       *plan;
    ngx_http_toll_loc_conf_t   *lcf;
    ngx_http_toll_limit_ctx_t  *lctx;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);
    plan = lcf->limit_ip_plan;

    if (plan == NULL || plan->unlimited) {
        return NGX_OK;
    }

    lctx = ngx_http_toll_limit_get_ctx(r, ctx);
    if (lctx == NULL) {
        return NGX_ERROR;
    }

    /* the connection's address, as realip may have set it: never a
       header that the client writes */

    switch (r->connection->sockaddr->sa_family) {

#if (NGX_HAVE_INET6)
    case AF_INET6:
        sin6 = (struct sockaddr_in6 *) r->connection->sockaddr;
        p = sin6->sin6_addr.s6_addr;
        len = 16;
        break;
#endif

    case AF_INET:
        sin = (struct sockaddr_in *) r->connection->sockaddr;
        p = (u_char *) &sin->sin_addr;
        len = 4;
        break;

    default:
        /* a unix socket: one subject for all */
        p = (u_char *) "";
        len = 0;
        break;
    }

    lctx->ip_subject_len = ngx_hex_dump(ngx_cpymem(lctx->ip_subject, "ip:", 3),
                                        p, len)
                           - lctx->ip_subject;
    lctx->ip_plan = plan;

    if (!lctx->ip_done) {
        /* a peek and then a count add the limits once */
        lctx->ip_done = 1;

        for (i = 0; i < plan->nrates; i++) {
            if (ngx_http_toll_limit_add(lctx, &plan->rates[i], 1)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    lctx->key_first = lctx->nlimits;
    from = lctx->nlimits - plan->nrates;

    rc = ngx_http_toll_limit_decide(r, lctx, lctx->ip_subject,
                                    lctx->ip_subject_len, from,
                                    lctx->nlimits, !peek, 0);
    if (rc != NGX_OK) {
        return rc;
    }

    if (!peek && lctx->violated == -1 && ngx_http_toll_limit_proc >= 0) {
        lctx->ip_held = lctx->ip_held
                        || (ngx_http_toll_limit_mask(lctx, from,
                                                     lctx->nlimits)
                            & NGX_HTTP_TOLL_MASK_CONCURRENCY);
    }

    return ngx_http_toll_limit_verdict(r, lctx, from, lctx->nlimits, 1);
}


ngx_int_t
ngx_http_toll_limit_key(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    int64_t                     rate_limit;
    ngx_int_t                   rc;
    ngx_uint_t                  from;
    ngx_http_toll_plan_t       *plan;
    ngx_http_toll_limit_ctx_t  *lctx;

    lctx = ngx_http_toll_limit_get_ctx(r, ctx);
    if (lctx == NULL) {
        return NGX_ERROR;
    }

    if (lctx->key_done) {
        /* a strict request resumed with Redis's verdict */
        return ngx_http_toll_limit_verdict(r, lctx, lctx->key_first,
                                           lctx->nlimits, 0);
    }

    /* a credential without a plan may take its buyer's (parks once) */
    rc = ngx_http_toll_buyer_plan(r, ctx, lctx);
    if (rc != NGX_OK) {
        return rc;
    }

    plan = ngx_http_toll_limit_key_plan(r, ctx);

    lctx->plan = plan;
    lctx->key_first = lctx->nlimits;
    from = lctx->nlimits;

    lctx->buyer = ngx_http_toll_buyer_limited(r, ctx);
    rate_limit = lctx->buyer ? -1 : ctx->key.rate_limit;

    if (rate_limit <= 0 && (plan == NULL || plan->unlimited)) {
        if (lctx->status == NGX_HTTP_TOLL_LIMIT_STATUS_NONE) {
            lctx->status = NGX_HTTP_TOLL_LIMIT_STATUS_UNLIMITED;
        }

        return NGX_OK;
    }

    if (ngx_http_toll_limit_key_limits(lctx, rate_limit, plan) != NGX_OK) {
        return NGX_ERROR;
    }

    if (lctx->buyer) {
        lctx->key_subject_len = ngx_http_toll_buyer_subject(lctx->key_subject,
                                                            &plan->name,
                                                            &ctx->key.owner);

    } else {
        lctx->key_subject_len = ngx_min(ctx->key_id.len,
                                        NGX_HTTP_TOLL_SUBJECT_MAX);
        ngx_memcpy(lctx->key_subject, ctx->key_id.data,
                   lctx->key_subject_len);
    }

    if (plan && plan->strict) {
        rc = ngx_http_toll_limit_strict(r, ctx, lctx);

        if (rc != NGX_DECLINED) {
            return rc;
        }

        /* Redis cannot be reached: this node decides alone */
    }

    rc = ngx_http_toll_limit_decide(r, lctx, lctx->key_subject,
                                    lctx->key_subject_len, from,
                                    lctx->nlimits, 1, 0);
    if (rc != NGX_OK) {
        return rc;
    }

    lctx->key_done = 1;

    if (lctx->violated == -1 && ngx_http_toll_limit_proc >= 0) {
        lctx->key_held = (ngx_http_toll_limit_mask(lctx, from, lctx->nlimits)
                          & NGX_HTTP_TOLL_MASK_CONCURRENCY) != 0;
    }

    return ngx_http_toll_limit_verdict(r, lctx, from, lctx->nlimits, 0);
}


/* the key's plan, else the default plan; NULL: none */

static ngx_http_toll_plan_t *
ngx_http_toll_limit_key_plan(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    ngx_http_toll_plan_t       *plan;
    ngx_http_toll_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    plan = NULL;

    if (ctx->key.plan.len) {
        plan = ngx_http_toll_limit_find_plan(mcf, &ctx->key.plan);

        if (plan == NULL && mcf->plans) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "toll: key id \"%V\" names plan \"%V\", which is "
                          "not configured: the default plan applies",
                          &ctx->key_id, &ctx->key.plan);
        }
    }

    if (plan == NULL) {
        plan = mcf->default_plan;
    }

    return plan;
}


/*
 * The key's limits: its plan's, where a key's own rate_limit (requests a
 * minute) overrides the plan: the bucket's rate and a per-minute window
 * take it; a plan with neither gets a per-minute window of it.
 */

static ngx_int_t
ngx_http_toll_limit_key_limits(ngx_http_toll_limit_ctx_t *lctx,
    int64_t rate_limit, ngx_http_toll_plan_t *plan)
{
    ngx_uint_t             i, overridden;
    ngx_http_toll_rate_t  *rate, *own;

    overridden = 0;

    for (i = 0; plan && !plan->unlimited && i < plan->nrates; i++) {
        rate = &plan->rates[i];

        if (rate_limit > 0
            && (rate->kind == NGX_HTTP_TOLL_RATE_BUCKET
                || (rate->kind == NGX_HTTP_TOLL_RATE_WINDOW
                    && rate->unit == TOLL_UNIT_MINUTE)))
        {
            own = &lctx->overrides[lctx->noverrides++];
            *own = *rate;
            own->count = ngx_min(rate_limit, TOLL_LIMIT_COUNT_MAX);
            own->unit = TOLL_UNIT_MINUTE;
            own->ready = 0;
            ngx_str_null(&own->policy);
            ngx_str_null(&own->ip_policy);

            if (ngx_http_toll_limit_add(lctx, own, 0) == NGX_OK) {
                overridden = 1;
                continue;
            }

            /* an override too large for the bucket: keep the plan's */
        }

        if (ngx_http_toll_limit_add(lctx, rate, 0) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (rate_limit > 0 && !overridden) {
        own = &lctx->overrides[lctx->noverrides++];
        ngx_memzero(own, sizeof(ngx_http_toll_rate_t));

        own->kind = NGX_HTTP_TOLL_RATE_WINDOW;
        own->unit = TOLL_UNIT_MINUTE;
        own->count = ngx_min(rate_limit, TOLL_LIMIT_COUNT_MAX);

        if (ngx_http_toll_limit_add(lctx, own, 0) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * Logs a refusal and tells the caller; in a dry run the request goes on.
 */

ngx_int_t
ngx_http_toll_limit_verdict(ngx_http_request_t *r,
    ngx_http_toll_limit_ctx_t *lctx, ngx_uint_t from, ngx_uint_t to,
    ngx_uint_t ip)
{
    u_char                    name[32], *p;
    ngx_str_t                 policy, *plan;

    static ngx_str_t  no_plan = ngx_string("(the key's rate_limit)");
    ngx_http_toll_ctx_t      *ctx;
    ngx_http_toll_loc_conf_t *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);

    if (lctx->violated < (ngx_int_t) from
        || lctx->violated >= (ngx_int_t) to)
    {
        if (lctx->status != NGX_HTTP_TOLL_LIMIT_STATUS_REJECTED_DRY_RUN) {
            lctx->status = NGX_HTTP_TOLL_LIMIT_STATUS_PASSED;
        }

        return NGX_OK;
    }

    p = ngx_http_toll_limit_policy_name(name, &lctx->limits[lctx->violated]);
    policy.data = name;
    policy.len = p - name;

    plan = ip ? &lctx->ip_plan->name
              : lctx->plan ? &lctx->plan->name : &no_plan;

    if (ip) {
        ngx_log_error(lcf->limit_log_level, r->connection->log, 0,
                      "toll: limited%s, policy \"%V\" of plan \"%V\", "
                      "address \"%V\"",
                      lcf->limit == NGX_HTTP_TOLL_LIMIT_DRY_RUN
                      ? " (dry run)" : "",
                      &policy, plan, &r->connection->addr_text);

    } else {
        ctx = ngx_http_get_module_ctx(r, ngx_http_toll_module);

        ngx_log_error(lcf->limit_log_level, r->connection->log, 0,
                      "toll: limited%s, policy \"%V\" of plan \"%V\", "
                      "%s \"%V\"",
                      lcf->limit == NGX_HTTP_TOLL_LIMIT_DRY_RUN
                      ? " (dry run)" : "",
                      &policy, plan, lctx->buyer ? "buyer" : "key id",
                      ctx == NULL ? &policy
                      : lctx->buyer ? &ctx->key.owner : &ctx->key_id);
    }

    if (lcf->limit == NGX_HTTP_TOLL_LIMIT_DRY_RUN) {
        lctx->status = NGX_HTTP_TOLL_LIMIT_STATUS_REJECTED_DRY_RUN;
        lctx->violated = -1;
        return NGX_OK;
    }

    lctx->status = NGX_HTTP_TOLL_LIMIT_STATUS_REJECTED;

    return NGX_DECLINED;
}


/*
 * Checks the limits [from, to) of one subject; when all admit and commit
 * is set, counts the request in each.  Sets lctx->violated to the first
 * limit that refused.  A zone too full for the subject lets the request
 * through: limits are a safety control, and the alert says why.
 */

ngx_int_t
ngx_http_toll_limit_decide(ngx_http_request_t *r,
    ngx_http_toll_limit_ctx_t *lctx, u_char *subject, size_t len,
    ngx_uint_t from, ngx_uint_t to, ngx_uint_t commit,
    ngx_uint_t rates_only)
{
    int64_t                           now;
    uint32_t                          mask;
    ngx_uint_t                        i, ok;
    ngx_http_toll_limit_t            *l;
    ngx_http_toll_limit_state_t      *st;
    ngx_http_toll_shm_limit_node_t   *ln;

    now = ngx_http_toll_limit_now();
    mask = ngx_http_toll_limit_mask(lctx, from, to);

    ngx_http_toll_shm_lock(lctx->shm_zone);

    st = ngx_http_toll_limit_node(lctx->shm_zone, subject, len, mask, &ln);

    if (st == NULL) {
        ngx_http_toll_shm_unlock(lctx->shm_zone);

        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "toll: no room for the limits of \"%*s\": the zone "
                      "is full, increase \"toll_zone\"", len, subject);
        return NGX_OK;
    }

    ok = 1;

    /* every limit decides; only when all admit is the request counted */

    for (i = from; i < to; i++) {
        l = &lctx->limits[i];

        ngx_http_toll_limit_check(lctx, l, st, now, rates_only);

        if (!l->res.admitted && ok) {
            ok = 0;
            lctx->violated = i;
        }
    }

    for (i = from; !ok && i < to; i++) {
        l = &lctx->limits[i];

        /* the others admitted it, but it is not counted: one more left */

        if (l->res.admitted && !l->skipped) {
            l->res.remaining++;
        }
    }

    for (i = from; ok && commit && i < to; i++) {
        l = &lctx->limits[i];

        if (!l->skipped) {
            ngx_http_toll_limit_count(l, st, ln, now, rates_only);
        }
    }

    ngx_http_toll_shm_limit_touch(lctx->shm_zone, ln);

    ngx_http_toll_shm_unlock(lctx->shm_zone);

    return NGX_OK;
}


/* whether one limit admits one more request; the zone is locked */

static void
ngx_http_toll_limit_check(ngx_http_toll_limit_ctx_t *lctx,
    ngx_http_toll_limit_t *l, ngx_http_toll_limit_state_t *st, int64_t now,
    ngx_uint_t rates_only)
{
    int64_t                       inflight;
    toll_window_t                *w;
    ngx_http_toll_limit_conc_t   *conc;

    switch (l->rate->kind) {

    case NGX_HTTP_TOLL_RATE_BUCKET:
        st->interval_ns = l->rate->bc.interval_ns;
        st->tolerance_ns = l->rate->bc.tolerance_ns;

        /*
         * As the script reads it: whatever put a tat further ahead
         * (an overshoot of other nodes, a state from another clock)
         * refuses the key for a refill's time at most.
         */

        if (st->bucket.tat_ns - now * 1000000
            > 2 * l->rate->bc.tolerance_ns)
        {
            st->bucket.tat_ns = now * 1000000
                                + 2 * l->rate->bc.tolerance_ns;
        }

        toll_bucket_check(&l->rate->bc, &st->bucket, now, 0, &l->res);
        break;

    case NGX_HTTP_TOLL_RATE_WINDOW:
        w = ngx_http_toll_limit_window(st, l->rate->unit);

        if (w == NULL) {
            /* another plan's node, held by requests in flight */
            l->skipped = 1;
            l->res.admitted = 1;
            break;
        }

        toll_window_check(&l->rate->wc, w, now, 0, &l->res);
        break;

    default: /* NGX_HTTP_TOLL_RATE_CONCURRENCY */
        conc = ngx_http_toll_limit_conc(st);

        if (rates_only || conc == NULL) {
            l->skipped = (conc == NULL);
            l->res.admitted = 1;
            break;
        }

        inflight = ngx_http_toll_limit_inflight(lctx->shm_zone, st)
                   + st->remote_inflight;

        l->res.admitted = (inflight + 1 <= l->rate->count);
        l->res.remaining = ngx_max(l->rate->count - inflight - 1, 0);
        l->res.retry_ms = 1000;
        l->res.reset_ms = 0;
        break;
    }
}


/* counts the request in one limit that admitted it; the zone is locked */

static void
ngx_http_toll_limit_count(ngx_http_toll_limit_t *l,
    ngx_http_toll_limit_state_t *st, ngx_http_toll_shm_limit_node_t *ln,
    int64_t now, ngx_uint_t rates_only)
{
    ngx_http_toll_limit_conc_t  *conc;

    switch (l->rate->kind) {

    case NGX_HTTP_TOLL_RATE_BUCKET:
        toll_bucket_commit(&l->rate->bc, &st->bucket, now);
        st->pending++;
        break;

    case NGX_HTTP_TOLL_RATE_WINDOW:
        toll_window_commit(ngx_http_toll_limit_window(st, l->rate->unit));
        break;

    default: /* NGX_HTTP_TOLL_RATE_CONCURRENCY */
        if (rates_only || ngx_http_toll_limit_proc < 0) {
            break;
        }

        conc = &ngx_http_toll_limit_conc(st)[ngx_http_toll_limit_proc];

        if (conc->gen != ngx_http_toll_limit_gen) {
            conc->gen = ngx_http_toll_limit_gen;
            conc->count = 0;
        }

        conc->count++;
        ln->pins++;
        break;
    }
}



/*
 * The subject's state, made for the limits in mask.  A subject whose node
 * was made for other limits (its key changed plans) starts afresh, unless
 * requests hold it; the next round brings back what Redis knows.
 */

ngx_http_toll_limit_state_t *
ngx_http_toll_limit_node(ngx_shm_zone_t *shm_zone, u_char *subject,
    size_t len, uint32_t mask, ngx_http_toll_shm_limit_node_t **lnp)
{
    size_t                           size;
    uint32_t                         nwindows;
    ngx_uint_t                       u, nconc;
    ngx_http_toll_limit_state_t     *st;
    ngx_http_toll_shm_limit_node_t  *ln;

    ln = ngx_http_toll_shm_limit_find(shm_zone, subject, len);

    if (ln) {
        st = (ngx_http_toll_limit_state_t *) ln->state;

        if ((st->mask & mask) == mask || ln->pins) {
            ln = ngx_http_toll_limit_fit(shm_zone, ln);
            if (ln == NULL) {
                return NULL;
            }

            *lnp = ln;
            return (ngx_http_toll_limit_state_t *) ln->state;
        }

        mask |= st->mask;
        ngx_http_toll_shm_limit_free(shm_zone, ln);
    }

    nwindows = 0;

    for (u = 0; u < TOLL_UNIT_N; u++) {
        nwindows += (mask >> u) & 1;
    }

    size = sizeof(ngx_http_toll_limit_state_t)
           + nwindows * ngx_http_toll_limit_window_size;
    nconc = 0;

    if (mask & NGX_HTTP_TOLL_MASK_CONCURRENCY) {
        nconc = ngx_http_toll_shm_proc_slots(shm_zone);
        size += nconc * sizeof(ngx_http_toll_limit_conc_t);
    }

    ln = ngx_http_toll_shm_limit_create(shm_zone, subject, len, size);
    if (ln == NULL) {
        return NULL;
    }

    st = (ngx_http_toll_limit_state_t *) ln->state;
    st->mask = mask;
    st->nwindows = nwindows;
    st->nconc = (uint32_t) nconc;

    *lnp = ln;

    return st;
}


/*
 * A node made before the table of worker processes grew has no count for
 * this worker's slot: it grows too.  NULL: no room in the zone.
 */

static ngx_http_toll_shm_limit_node_t *
ngx_http_toll_limit_fit(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_shm_limit_node_t *ln)
{
    size_t                        size;
    ngx_uint_t                    nconc;
    ngx_http_toll_limit_conc_t   *conc;
    ngx_http_toll_limit_state_t  *st;

    st = (ngx_http_toll_limit_state_t *) ln->state;

    if (!(st->mask & NGX_HTTP_TOLL_MASK_CONCURRENCY)
        || ngx_http_toll_limit_proc < (ngx_int_t) st->nconc)
    {
        return ln;
    }

    nconc = ngx_http_toll_shm_proc_slots(shm_zone);
    size = sizeof(ngx_http_toll_limit_state_t)
           + st->nwindows * ngx_http_toll_limit_window_size
           + nconc * sizeof(ngx_http_toll_limit_conc_t);

    ln = ngx_http_toll_shm_limit_grow(shm_zone, ln, size);
    if (ln == NULL) {
        return NULL;
    }

    st = (ngx_http_toll_limit_state_t *) ln->state;
    conc = ngx_http_toll_limit_conc(st);

    /* the new counts are zero: of no generation any slot has yet */
    ngx_memzero(&conc[st->nconc],
                (nconc - st->nconc) * sizeof(ngx_http_toll_limit_conc_t));
    st->nconc = (uint32_t) nconc;

    return ln;
}



/* this node's requests in flight: those of live worker processes */

int64_t
ngx_http_toll_limit_inflight(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_limit_state_t *st)
{
    int64_t                      n;
    ngx_uint_t                   i;
    ngx_http_toll_limit_conc_t  *conc;

    conc = ngx_http_toll_limit_conc(st);

    if (conc == NULL) {
        return 0;
    }

    n = 0;

    for (i = 0; i < st->nconc; i++) {
        if (conc[i].count
            && conc[i].gen == ngx_http_toll_shm_proc_gen(shm_zone, i))
        {
            n += conc[i].count;
        }
    }

    return n;
}


void
ngx_http_toll_limit_release(ngx_http_toll_ctx_t *ctx)
{
    ngx_http_toll_limit_ctx_t       *lctx;
    ngx_http_toll_limit_state_t     *st;
    ngx_http_toll_shm_limit_node_t  *ln;

    lctx = ctx->limit;

    if (lctx == NULL) {
        return;
    }

    if (lctx->strict_waiting) {
        /* the client left before Redis answered: the call was cancelled,
           and what it carried goes with the next round */

        lctx->strict_waiting = 0;

        ngx_http_toll_shm_lock(lctx->shm_zone);

        ln = ngx_http_toll_shm_limit_find(lctx->shm_zone, lctx->key_subject,
                                          lctx->key_subject_len);

        if (ln && ln->uid == lctx->strict_uid) {
            st = (ngx_http_toll_limit_state_t *) ln->state;
            ngx_http_toll_limit_unsend(st);
            ngx_http_toll_shm_limit_touch(lctx->shm_zone, ln);
        }

        ngx_http_toll_shm_unlock(lctx->shm_zone);
    }

    if (lctx->key_held) {
        lctx->key_held = 0;
        ngx_http_toll_limit_hold(lctx->shm_zone, lctx->key_subject,
                                 lctx->key_subject_len, -1);
    }

    if (lctx->ip_held) {
        lctx->ip_held = 0;
        ngx_http_toll_limit_hold(lctx->shm_zone, lctx->ip_subject,
                                 lctx->ip_subject_len, -1);
    }
}


void
ngx_http_toll_limit_hold(ngx_shm_zone_t *shm_zone, u_char *subject,
    size_t len, ngx_int_t delta)
{
    ngx_http_toll_limit_conc_t      *conc;
    ngx_http_toll_limit_state_t     *st;
    ngx_http_toll_shm_limit_node_t  *ln, *fit;

    ngx_http_toll_shm_lock(shm_zone);

    ln = ngx_http_toll_shm_limit_find(shm_zone, subject, len);

    if (ln) {
        fit = ngx_http_toll_limit_fit(shm_zone, ln);

        /* a node the zone has no room to grow: uncounted by this worker */
        if (fit) {
            ln = fit;
        }

        st = (ngx_http_toll_limit_state_t *) ln->state;
        conc = ngx_http_toll_limit_conc(st);

        if (conc && ngx_http_toll_limit_proc >= 0
            && ngx_http_toll_limit_proc < (ngx_int_t) st->nconc)
        {
            conc = &conc[ngx_http_toll_limit_proc];

            if (conc->gen != ngx_http_toll_limit_gen) {
                /* a count of an earlier generation was voided already */
                conc->gen = ngx_http_toll_limit_gen;
                conc->count = 0;
            }

            if (delta > 0) {
                conc->count++;

            } else if (conc->count) {
                conc->count--;
            }
        }

        if (delta > 0) {
            ln->pins++;

        } else if (ln->pins) {
            ln->pins--;
        }

        /* other nodes learn of it with the next round */
        ngx_http_toll_shm_limit_touch(shm_zone, ln);
    }

    ngx_http_toll_shm_unlock(shm_zone);
}


/* what was sent is pending again: the next round sends it */

void
ngx_http_toll_limit_unsend(ngx_http_toll_limit_state_t *st)
{
    ngx_uint_t      u, i;
    toll_window_t  *w;

    st->pending += st->sent;
    st->sent = 0;
    st->sync_at_ms = 0;

    for (u = 0; u < TOLL_UNIT_N; u++) {
        w = ngx_http_toll_limit_window(st, u);

        if (w == NULL) {
            continue;
        }

        for (i = 0; i < TOLL_WINDOW_RING; i++) {
            w->pending[i] += w->sent[i];
            w->sent[i] = 0;
        }
    }
}
