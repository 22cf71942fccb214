/*
 * toll: what each call costs, and what the caller is told of it.
 *
 * The access phase prices a call that passed the gate (the service's
 * price or its first matching route's, a usage id, a free call if the
 * free tier has one); the header filter sends the billing headers, and
 * the $toll_* variables read the same account.  The configuration lives
 * in ngx_http_toll_quota_conf.c, the free tier's leases in
 * ngx_http_toll_quota_free.c.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/rand.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_quota.h"
#include "ngx_http_toll_quota_int.h"
#include "ngx_http_toll_prepaid.h"
#include "ngx_http_toll_cap.h"
#include "ngx_http_toll_units.h"
#include "toll_money.h"


static ngx_int_t ngx_http_toll_quota_route(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_service_t *svc);
static void ngx_http_toll_quota_hide_upstream(ngx_list_part_t *part,
    ngx_str_t *prefix);
static ngx_int_t ngx_http_toll_quota_billing_headers(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_loc_conf_t *lcf);
static ngx_int_t ngx_http_toll_quota_billing_more(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_loc_conf_t *lcf, u_char *p);

#define ngx_http_toll_quota_header_add(r, nm, v, n)                          \
    ngx_http_toll_header_push(r, (nm)->data, (nm)->len, v, n)


/* usage ids: a random prefix per worker, then a count */
static u_char    ngx_http_toll_usage_prefix[16];
static uint64_t  ngx_http_toll_usage_seq;


ngx_int_t
ngx_http_toll_quota_init_process(ngx_cycle_t *cycle)
{
    u_char  raw[8];

    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "toll: libcrypto could not make a usage id prefix");
        return NGX_ERROR;
    }

    ngx_hex_dump(ngx_http_toll_usage_prefix, raw, sizeof(raw));

    return NGX_OK;
}


ngx_int_t
ngx_http_toll_quota_price(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    u_char                    *p;
    ngx_int_t                  rc;
    ngx_http_toll_service_t   *svc;
    ngx_http_toll_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);
    svc = lcf->service;

    if (svc == NULL) {
        return NGX_OK;
    }

    if (ctx->priced) {
        /* resumed after a free-tier or a balance lease was asked for */

        if (ctx->free_tier_failed) {
            return NGX_HTTP_SERVICE_UNAVAILABLE;
        }

        rc = ngx_http_toll_prepaid_hold(r, ctx);

        return (rc == NGX_OK) ? ngx_http_toll_cap_hold(r, ctx) : rc;
    }

    ctx->priced = 1;
    ctx->service = svc;

    if (ngx_http_toll_quota_route(r, ctx, svc) != NGX_OK) {
        return NGX_ERROR;
    }

    /*
     * A call with units costs at most price + max_units x unit_price
     * (checked for overflow at configuration): that is its price until
     * the units are known, held from the balance and the caps.
     */

    ctx->base_micros = ctx->price_micros;

    if (ctx->units_conf) {
        ctx->price_micros += ctx->units_conf->most_micros;
    }

    ctx->amount_micros = ctx->price_micros;

    /*
     * Unique without asking anyone: a random prefix per worker, a count.
     * A call priced again after an internal redirect is still one call
     * and keeps its id.
     */

    if (ctx->usage_id[0] == '\0') {
        p = ngx_cpymem(ctx->usage_id, ngx_http_toll_usage_prefix,
                       sizeof(ngx_http_toll_usage_prefix));
        ngx_sprintf(p, "%016uxL", ++ngx_http_toll_usage_seq);
    }

    if (svc->free_calls) {
        rc = ngx_http_toll_quota_free(r, ctx, svc);

        if (rc != NGX_OK) {
            return rc;
        }
    }

    /* a call to be paid: its price held from a prepaid balance */
    rc = ngx_http_toll_prepaid_hold(r, ctx);

    /* and from the spend caps, toll_prepaid or not */
    return (rc == NGX_OK) ? ngx_http_toll_cap_hold(r, ctx) : rc;
}


/*
 * The call's price and units: the service's, or those of the first route
 * that matches the method and the normalised path ("//", "/./" and "%2F"
 * spellings reach the same $uri).  A route without units of its own
 * keeps the service's.
 */

static ngx_int_t
ngx_http_toll_quota_route(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_service_t *svc)
{
    ngx_int_t               rc;
    ngx_uint_t              i;
    ngx_http_toll_route_t  *route;

    ctx->price_micros = svc->price_micros;
    ctx->units_conf = svc->units.unit_nanos ? &svc->units : NULL;

    route = svc->routes ? svc->routes->elts : NULL;

    for (i = 0; route && i < svc->routes->nelts; i++) {

        if (route[i].method.len
            && (route[i].method.len != r->method_name.len
                || ngx_strncmp(route[i].method.data, r->method_name.data,
                               r->method_name.len) != 0))
        {
            continue;
        }

        rc = ngx_regex_exec(route[i].regex, &r->uri, NULL, 0);

        if (rc == NGX_REGEX_NO_MATCHED) {
            continue;
        }

        if (rc < 0) {
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                          ngx_regex_exec_n " failed: %i on \"%V\" using "
                          "\"%V\"", rc, &r->uri, &route[i].pattern);
            return NGX_ERROR;
        }

        ctx->price_micros = route[i].price_micros;

        if (route[i].units.unit_nanos) {
            ctx->units_conf = &route[i].units;
        }

        break;
    }

    return NGX_OK;
}


/*
 * The billing headers of a priced call, with whatever status it ends: a
 * status toll_charge_status does not list is not charged (by default a
 * call the upstream failed: 5xx, or nginx's 502/504 when it could not be
 * reached, unless toll_charge_errors is on).
 */

ngx_int_t
ngx_http_toll_quota_headers_out(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx)
{
    ngx_http_toll_loc_conf_t  *lcf;

    if (!ctx->priced || ctx->service == NULL) {
        return NGX_OK;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);

    ngx_http_toll_quota_decide(r, ctx);

    if (!lcf->billing_headers) {
        return NGX_OK;
    }

    /* the upstream's copies would contradict the gate's account */

    ngx_http_toll_quota_hide_upstream(&r->headers_out.headers.part,
                                      &lcf->billing_prefix);

    return ngx_http_toll_quota_billing_headers(r, ctx, lcf);
}


/*
 * What a call that reached the upstream is charged, once: as its status
 * says (toll_charge_status), and for its units.  The header filter
 * decides it, or the log phase for a call whose answer never had headers
 * (the client went away first: 499).
 */

void
ngx_http_toll_quota_decide(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    ngx_uint_t                 charged;
    ngx_http_toll_loc_conf_t  *lcf;

    if (ctx->billed) {
        return;
    }

    ctx->billed = 1;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);
    charged = ngx_http_toll_quota_charged(lcf, r->headers_out.status);

    if (!charged) {
        /* not charged: a free call it took is the buyer's again */
        ngx_http_toll_quota_give_back(ctx);
        ctx->amount_micros = 0;
    }

    /* the units the upstream reports, and what they cost */
    ngx_http_toll_units_header(r, ctx, charged);
}


/* hides the upstream's headers that start with the billing prefix */

static void
ngx_http_toll_quota_hide_upstream(ngx_list_part_t *part, ngx_str_t *prefix)
{
    ngx_uint_t        i;
    ngx_table_elt_t  *h;

    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash && h[i].key.len >= prefix->len
            && ngx_strncasecmp(h[i].key.data, prefix->data, prefix->len)
               == 0)
        {
            h[i].hash = 0;
        }
    }
}


/* the billing headers themselves, and the call's latency they tell */

static ngx_int_t
ngx_http_toll_quota_billing_headers(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_loc_conf_t *lcf)
{
    u_char          *buf, *p;
    ngx_msec_int_t   ms;
    ngx_time_t      *tp;
    char             amount[TOLL_MONEY_STR_MAX];

    buf = ngx_pnalloc(r->pool, sizeof(ctx->usage_id) + 2 * TOLL_MONEY_STR_MAX
                               + sizeof("false") + 4 * NGX_INT64_LEN);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(buf, ctx->usage_id, sizeof(ctx->usage_id));

    if (ngx_http_toll_quota_header_add(r,
            &lcf->billing_names[NGX_HTTP_TOLL_BILLING_USAGE_ID], buf,
            p - buf)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    buf = p;
    p = ngx_cpymem(p, amount, toll_money_format(ctx->amount_micros, amount));

    if (ngx_http_toll_quota_header_add(r,
            &lcf->billing_names[NGX_HTTP_TOLL_BILLING_AMOUNT], buf, p - buf)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    buf = p;
    p = ctx->free_call && ctx->amount_micros == 0
        ? ngx_cpymem(p, "true", 4) : ngx_cpymem(p, "false", 5);

    if (ngx_http_toll_quota_header_add(r,
            &lcf->billing_names[NGX_HTTP_TOLL_BILLING_FREE_TIER], buf,
            p - buf)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_toll_quota_billing_more(r, ctx, lcf, p) != NGX_OK) {
        return NGX_ERROR;
    }

    p += 2 * NGX_INT64_LEN + TOLL_MONEY_STR_MAX;

    /* from the request's start to the answer's headers */

    tp = ngx_timeofday();
    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));

    ctx->latency_ms = ngx_max(ms, 0);

    buf = p;
    p = ngx_http_toll_format_int(p, ctx->latency_ms);

    if (ngx_http_toll_quota_header_add(r,
            &lcf->billing_names[NGX_HTTP_TOLL_BILLING_LATENCY_MS], buf,
            p - buf)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the billing headers only some calls have, written from p on */

static ngx_int_t
ngx_http_toll_quota_billing_more(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_loc_conf_t *lcf, u_char *p)
{
    u_char  *buf;

    if (((ngx_http_toll_service_t *) ctx->service)->free_calls) {
        buf = p;
        p = ngx_http_toll_format_int(p, ctx->free_remaining);

        if (ngx_http_toll_quota_header_add(r,
                &lcf->billing_names[NGX_HTTP_TOLL_BILLING_FREE_REMAINING],
                buf, p - buf)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (ctx->units_conf && ctx->units_reported) {
        buf = p;
        p = ngx_sprintf(p, "%uL", ctx->units);

        if (ngx_http_toll_quota_header_add(r,
                &lcf->billing_names[NGX_HTTP_TOLL_BILLING_UNITS], buf,
                p - buf)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (ctx->prepaid_held) {
        /*
         * What the buyer has left as this node knows it: its lease and
         * what Redis had when it last answered, with what this call does
         * not take of its hold
         */

        buf = p;
        p += toll_money_format(ctx->balance_micros + ctx->hold_micros
                               - ngx_min(ctx->amount_micros,
                                         ctx->hold_micros),
                               (char *) p);

        if (ngx_http_toll_quota_header_add(r,
                &lcf->billing_names[NGX_HTTP_TOLL_BILLING_BALANCE],
                buf, p - buf)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_toll_quota_variable(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_variable_value_t *v, uintptr_t which)
{
    u_char                   *p;
    int64_t                   micros;
    ngx_http_toll_service_t  *svc;

    svc = ctx->service;

    if (!ctx->priced || svc == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    switch (which) {

    case 0: /* $toll_service */
        v->data = svc->name.data;
        v->len = svc->name.len;
        return NGX_OK;

    case 1: /* $toll_provider */
        v->data = svc->provider.data;
        v->len = svc->provider.len;
        return NGX_OK;

    case 2: /* $toll_usage_id */
        v->data = ctx->usage_id;
        v->len = sizeof(ctx->usage_id);
        return NGX_OK;

    case 6: /* $toll_units: what the call was charged units for */
        if (ctx->units_conf == NULL || !ctx->units_reported) {
            v->not_found = 1;
            return NGX_OK;
        }

        p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->data = p;
        v->len = ngx_sprintf(p, "%uL", ctx->units) - p;
        return NGX_OK;

    case 5: /* $toll_free_tier */
        if (ctx->free_call && ctx->amount_micros == 0) {
            ngx_str_set(v, "true");
        } else {
            ngx_str_set(v, "false");
        }
        return NGX_OK;

    default: /* 3 $toll_amount, 4 $toll_price */
        micros = (which == 3) ? ctx->amount_micros : ctx->price_micros;

        p = ngx_pnalloc(r->pool, TOLL_MONEY_STR_MAX);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->data = p;
        v->len = toll_money_format(micros, (char *) p);
        return NGX_OK;
    }
}


void
ngx_http_toll_quota_names(ngx_http_toll_ctx_t *ctx, ngx_str_t *service,
    ngx_str_t *provider)
{
    ngx_http_toll_service_t  *svc = ctx->service;

    *service = svc->name;
    *provider = svc->provider;
}


/*
 * An internal redirect took the call to another priced location, which
 * sells it instead: a free call taken here goes back to the lease, and
 * nothing of this price is left for the headers, variables or meter.
 */

void
ngx_http_toll_quota_unprice(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    ngx_http_toll_quota_give_back(ctx);
    ngx_http_toll_prepaid_release(r, ctx);
    ngx_http_toll_cap_release(r, ctx);

    /* the next location's caps are asked afresh */
    ctx->cap = NULL;

    ctx->priced = 0;
    ctx->service = NULL;
    ctx->price_micros = 0;
    ctx->amount_micros = 0;
    ctx->free_remaining = 0;
    ctx->free_call = 0;
    ctx->free_tier_failed = 0;
    ctx->prepaid_state = NGX_HTTP_TOLL_PREPAID_NONE;
    ctx->billed = 0;

    /* the next location prices its own units, if any */
    ctx->units_conf = NULL;
    ctx->units = 0;
    ctx->units_reported = 0;
    ctx->units_charged = 0;
    ctx->base_micros = 0;
}


void
ngx_http_toll_quota_unused(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    ngx_http_toll_quota_give_back(ctx);

    if (!ctx->meter_admitted) {
        /* admitted, the hold ends with the meter's record */
        ngx_http_toll_prepaid_release(r, ctx);
    }

    /* the meter never takes a cap hold over: it goes back here */
    ngx_http_toll_cap_release(r, ctx);

    ctx->amount_micros = 0;
}
