/*
 * toll: the gate's request path.
 *
 * The access-phase handler that runs the gate on each request (credential,
 * limits, price, then pass or refuse), the subrequest check, the log
 * phase and the header filter that end what it started, the per-request
 * context that survives internal redirects, and the variables it offers
 * to logs.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_handler.h"
#include "ngx_http_toll_auth.h"
#include "ngx_http_toll_authz.h"
#include "ngx_http_toll_counters.h"
#include "ngx_http_toll_credential.h"
#include "ngx_http_toll_limit.h"
#include "ngx_http_toll_meter.h"
#include "ngx_http_toll_prepaid.h"
#include "ngx_http_toll_cap.h"
#include "ngx_http_toll_problem.h"
#include "ngx_http_toll_quota.h"


typedef enum {
    NGX_HTTP_TOLL_VAR_KEY_ID = 0,
    NGX_HTTP_TOLL_VAR_BUYER,
    NGX_HTTP_TOLL_VAR_PLAN,
    NGX_HTTP_TOLL_VAR_AUTH_STATUS,
    NGX_HTTP_TOLL_VAR_LIMIT_STATUS,
    NGX_HTTP_TOLL_VAR_SERVICE,
    NGX_HTTP_TOLL_VAR_PROVIDER,
    NGX_HTTP_TOLL_VAR_USAGE_ID,
    NGX_HTTP_TOLL_VAR_AMOUNT,
    NGX_HTTP_TOLL_VAR_PRICE,
    NGX_HTTP_TOLL_VAR_FREE_TIER,
    NGX_HTTP_TOLL_VAR_UNITS
} ngx_http_toll_var_e;


static ngx_int_t ngx_http_toll_access_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_toll_access_reenter(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_loc_conf_t *lcf);
static ngx_int_t ngx_http_toll_access_limit(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx);
static ngx_int_t ngx_http_toll_authenticate(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_loc_conf_t *lcf);
static ngx_int_t ngx_http_toll_authorize(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_loc_conf_t *lcf);
static ngx_int_t ngx_http_toll_charge(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_loc_conf_t *lcf);
static ngx_int_t ngx_http_toll_refuse_cap(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_loc_conf_t *lcf);
static ngx_int_t ngx_http_toll_refuse_payment(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_loc_conf_t *lcf);
static ngx_int_t ngx_http_toll_refuse_unpriced(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_uint_t decision,
    ngx_http_toll_problem_e problem, ngx_http_toll_problem_ext_t *ext);
static ngx_int_t ngx_http_toll_failed(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx);
static ngx_int_t ngx_http_toll_subrequest_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_toll_log_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_toll_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_toll_refuse(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_int_t status);
static void ngx_http_toll_reprice(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_loc_conf_t *lcf);
static ngx_int_t ngx_http_toll_refuse_limit(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx);
static ngx_http_toll_ctx_t *ngx_http_toll_create_ctx(ngx_http_request_t *r);
static void ngx_http_toll_cleanup(void *data);

static ngx_int_t ngx_http_toll_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;


static ngx_http_variable_t  ngx_http_toll_vars[] = {

    { ngx_string("toll_key_id"), NULL, ngx_http_toll_variable,
      NGX_HTTP_TOLL_VAR_KEY_ID, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("toll_buyer"), NULL, ngx_http_toll_variable,
      NGX_HTTP_TOLL_VAR_BUYER, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("toll_plan"), NULL, ngx_http_toll_variable,
      NGX_HTTP_TOLL_VAR_PLAN, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("toll_auth_status"), NULL, ngx_http_toll_variable,
      NGX_HTTP_TOLL_VAR_AUTH_STATUS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("toll_limit_status"), NULL, ngx_http_toll_variable,
      NGX_HTTP_TOLL_VAR_LIMIT_STATUS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("toll_service"), NULL, ngx_http_toll_variable,
      NGX_HTTP_TOLL_VAR_SERVICE, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("toll_provider"), NULL, ngx_http_toll_variable,
      NGX_HTTP_TOLL_VAR_PROVIDER, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("toll_usage_id"), NULL, ngx_http_toll_variable,
      NGX_HTTP_TOLL_VAR_USAGE_ID, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("toll_amount"), NULL, ngx_http_toll_variable,
      NGX_HTTP_TOLL_VAR_AMOUNT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("toll_price"), NULL, ngx_http_toll_variable,
      NGX_HTTP_TOLL_VAR_PRICE, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("toll_free_tier"), NULL, ngx_http_toll_variable,
      NGX_HTTP_TOLL_VAR_FREE_TIER, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("toll_units"), NULL, ngx_http_toll_variable,
      NGX_HTTP_TOLL_VAR_UNITS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


/* indexed by ngx_http_toll_auth_status_e */
static ngx_str_t  ngx_http_toll_auth_status_names[] = {
    ngx_null_string,
    ngx_string("OK"),
    ngx_string("MISSING"),
    ngx_string("MALFORMED"),
    ngx_string("AMBIGUOUS"),
    ngx_string("UNKNOWN"),
    ngx_string("WRONG_SECRET"),
    ngx_string("REVOKED"),
    ngx_string("EXPIRED"),
    ngx_string("STORE_UNAVAILABLE"),
    ngx_string("CLAIMS")
};


static ngx_int_t
ngx_http_toll_access_handler(ngx_http_request_t *r)
{
    ngx_int_t                  rc;
    ngx_http_toll_ctx_t       *ctx;
    ngx_http_toll_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);

    if (!lcf->enable) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_toll_get_ctx(r);

    if (ctx == NULL) {
        ctx = ngx_http_toll_create_ctx(r);
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        /* the counters the request's decision goes to */
        ctx->counters_service = lcf->service;
    }

    rc = ngx_http_toll_access_reenter(r, ctx, lcf);

    if (rc != NGX_OK) {
        return rc;
    }

    if (!ctx->authenticated) {
        rc = ngx_http_toll_authenticate(r, ctx, lcf);

        if (rc != NGX_OK) {
            return rc;
        }
    }

    /* on every pass: a redirect's location decides who may call it */

    rc = ngx_http_toll_authorize(r, ctx, lcf);

    if (rc != NGX_OK) {
        return rc;
    }

    if (lcf->limit != NGX_HTTP_TOLL_LIMIT_OFF) {
        rc = ngx_http_toll_access_limit(r, ctx);

        if (rc != NGX_OK) {
            return rc;
        }
    }

    rc = ngx_http_toll_charge(r, ctx, lcf);

    if (rc != NGX_OK) {
        return rc;
    }

    /* the headers of the request are rewritten once, whatever redirects */

    if (!ctx->forwarded) {
        if (ngx_http_toll_auth_forward(r, ctx, lcf) != NGX_OK) {
            return ngx_http_toll_failed(r, ctx);
        }

        ctx->forwarded = 1;
    }

    ctx->state = NGX_HTTP_TOLL_STATE_PASSED;

    /*
     * NGX_OK lets "satisfy any" pass a valid key; a refusal above does not
     * depend on "satisfy": an allow rule never opens a payment gate.
     */

    return NGX_OK;
}


/*
 * The request comes back to the access phase: after an internal redirect,
 * a write event, or the store's answer.  NGX_OK: go through the gate;
 * anything else is what the access phase returns.
 */

static ngx_int_t
ngx_http_toll_access_reenter(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_loc_conf_t *lcf)
{
    switch (ctx->state) {

    case NGX_HTTP_TOLL_STATE_PASSED:

        /*
         * An internal redirect (try_files, index, error_page, a named
         * location, X-Accel-Redirect): the request stays authenticated
         * and its limits stay counted, but the call is sold by the
         * location that sends it upstream, so a priced location prices
         * it again; an unpriced one leaves its price as it is.
         */

        if (lcf->service) {
            ngx_http_toll_reprice(r, ctx, lcf);
        }

        ctx->state = NGX_HTTP_TOLL_STATE_NEW;
        break;

    case NGX_HTTP_TOLL_STATE_WAITING:
        /* a write event before the store answered */
        return NGX_AGAIN;

    case NGX_HTTP_TOLL_STATE_REJECTED:
        /* answered already; never let a second pass through */
        return NGX_HTTP_INTERNAL_SERVER_ERROR;

    default: /* NEW, RESUMED */
        break;
    }

    return NGX_OK;
}


/*
 * The key's limits, for a location that has them.  NGX_OK: within them;
 * anything else is what the access phase returns.
 */

static ngx_int_t
ngx_http_toll_access_limit(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    ngx_int_t  rc;

    rc = ngx_http_toll_limit_key(r, ctx);

    if (rc == NGX_AGAIN) {
        ctx->state = NGX_HTTP_TOLL_STATE_WAITING;
        return NGX_AGAIN;
    }

    if (rc == NGX_ERROR) {
        return ngx_http_toll_failed(r, ctx);
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_toll_refuse_limit(r, ctx);
    }

    return NGX_OK;
}


/*
 * Who the caller is, once per request: an address over its limit is
 * refused first, then the key or token decides.  NGX_OK: authenticated;
 * anything else is what the access phase returns.
 */

static ngx_int_t
ngx_http_toll_authenticate(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_loc_conf_t *lcf)
{
    ngx_int_t  rc;

    if (ctx->state == NGX_HTTP_TOLL_STATE_NEW
        && lcf->limit != NGX_HTTP_TOLL_LIMIT_OFF && lcf->limit_ip_plan)
    {
        /*
         * An address over its limit is refused before its credential
         * costs anything; with "unauthenticated" it only loses the
         * key lookups, and a key the cache knows still passes.
         */

        rc = ngx_http_toll_limit_ip(r, ctx, lcf->limit_ip_unauthenticated);

        if (rc == NGX_ERROR) {
            return ngx_http_toll_failed(r, ctx);
        }

        if (rc == NGX_DECLINED) {
            if (!lcf->limit_ip_unauthenticated) {
                return ngx_http_toll_refuse_limit(r, ctx);
            }

            ctx->lookup_refused = 1;
        }
    }

    rc = ngx_http_toll_auth(r, ctx);

    if (rc == NGX_AGAIN) {
        ctx->state = NGX_HTTP_TOLL_STATE_WAITING;
        return NGX_AGAIN;
    }

    if (rc == NGX_ERROR) {
        return ngx_http_toll_failed(r, ctx);
    }

    if (rc == NGX_DECLINED) {
        /* the address is over its limit for failed credentials */
        return ngx_http_toll_refuse_limit(r, ctx);
    }

    if (rc != NGX_OK) {
        if (lcf->limit != NGX_HTTP_TOLL_LIMIT_OFF
            && lcf->limit_ip_plan && lcf->limit_ip_unauthenticated
            && rc != NGX_HTTP_SERVICE_UNAVAILABLE)
        {
            rc = ngx_http_toll_limit_ip(r, ctx, 0) == NGX_DECLINED
                 ? NGX_DECLINED : rc;

            if (rc == NGX_DECLINED) {
                return ngx_http_toll_refuse_limit(r, ctx);
            }
        }

        return ngx_http_toll_refuse(r, ctx, rc);
    }

    ctx->authenticated = 1;
    ctx->state = NGX_HTTP_TOLL_STATE_NEW;

    return NGX_OK;
}


/*
 * toll_require, before limits and price: a 403 costs and consumes
 * nothing.  After an internal redirect the call may have been priced by
 * the first location; a refusal takes that price back, as a redirect
 * into a priced location does (the limits it counted stay counted).
 */

static ngx_int_t
ngx_http_toll_authorize(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_loc_conf_t *lcf)
{
    ngx_int_t                    rc;
    ngx_http_toll_problem_ext_t  ext;

    ngx_memzero(&ext, sizeof(ngx_http_toll_problem_ext_t));

    rc = ngx_http_toll_authz_check(r, ctx, lcf, &ext);

    if (rc == NGX_OK) {
        return NGX_OK;
    }

    if (rc == NGX_ERROR) {
        return ngx_http_toll_failed(r, ctx);
    }

    if (ctx->priced) {
        ngx_http_toll_meter_unadmit(r, ctx);
        ngx_http_toll_quota_unprice(r, ctx);
    }

    return ngx_http_toll_refuse_unpriced(r, ctx,
                                         NGX_HTTP_TOLL_DECISION_FORBIDDEN,
                                         NGX_HTTP_TOLL_PROBLEM_FORBIDDEN,
                                         &ext);
}


/*
 * What the call costs: its price, then its record in the meter, which
 * must hold it or the call would go free.  NGX_OK: priced (free calls
 * too); anything else is what the access phase returns.
 */

static ngx_int_t
ngx_http_toll_charge(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_loc_conf_t *lcf)
{
    ngx_int_t  rc;

    rc = ngx_http_toll_quota_price(r, ctx);

    if (rc == NGX_AGAIN) {
        ctx->state = NGX_HTTP_TOLL_STATE_WAITING;
        return NGX_AGAIN;
    }

    if (rc == NGX_OK) {
        rc = ngx_http_toll_meter_admit(r, ctx);

        if (rc == NGX_DECLINED) {
            /* the zone cannot meter the call: it would go free */
            ngx_http_toll_quota_unused(r, ctx);
            rc = NGX_HTTP_SERVICE_UNAVAILABLE;
        }

    } else if (rc == NGX_HTTP_SERVICE_UNAVAILABLE) {
        /* free calls or a balance left, maybe, and no way to know */

        ngx_log_error(lcf->log_level, r->connection->log, 0,
                      "toll: refused, %s store unavailable, key id \"%V\"",
                      ctx->free_tier_failed ? "free tier"
                      : ngx_http_toll_cap_failed(ctx) ? "spend caps"
                      : "balance",
                      &ctx->key_id);

    } else if (rc == NGX_HTTP_TOLL_PAYMENT_REQUIRED) {
        return ngx_http_toll_refuse_payment(r, ctx, lcf);

    } else if (rc == NGX_HTTP_TOLL_CAP_EXCEEDED) {
        return ngx_http_toll_refuse_cap(r, ctx, lcf);
    }

    if (rc == NGX_HTTP_SERVICE_UNAVAILABLE) {
        /* a balance held before the caps refused goes back */
        ngx_http_toll_prepaid_release(r, ctx);


        return ngx_http_toll_refuse_unpriced(r, ctx,
                   NGX_HTTP_TOLL_DECISION_STORE_UNAVAILABLE,
                   NGX_HTTP_TOLL_PROBLEM_STORE_UNAVAILABLE, NULL);
    }

    if (rc != NGX_OK) {
        return ngx_http_toll_failed(r, ctx);
    }

    return NGX_OK;
}


/*
 * The buyer's balance cannot pay the call: 402, with the price, the
 * currency and what the node knows is left.  Nothing was held.
 */

static ngx_int_t
ngx_http_toll_refuse_payment(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_loc_conf_t *lcf)
{
    ngx_http_toll_problem_ext_t  ext;

    ngx_log_error(lcf->log_level, r->connection->log, 0,
                  "toll: refused, payment required, key id \"%V\", "
                  "price %L, balance %L", &ctx->key_id, ctx->price_micros,
                  ctx->balance_micros);

    ngx_memzero(&ext, sizeof(ngx_http_toll_problem_ext_t));

    if (ngx_http_toll_prepaid_members(r, ctx, &ext.members) != NGX_OK) {
        return ngx_http_toll_failed(r, ctx);
    }

    return ngx_http_toll_refuse_unpriced(r, ctx,
               NGX_HTTP_TOLL_DECISION_PAYMENT_REQUIRED,
               NGX_HTTP_TOLL_PROBLEM_PAYMENT_REQUIRED, &ext);
}


/*
 * A spend cap has no room for the call: 402, with the cap, its period
 * and Retry-After at the period's end.  What the balance held for it
 * goes back.
 */

static ngx_int_t
ngx_http_toll_refuse_cap(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_loc_conf_t *lcf)
{
    ngx_http_toll_problem_ext_t  ext;

    ngx_memzero(&ext, sizeof(ngx_http_toll_problem_ext_t));

    if (ngx_http_toll_cap_problem(r, ctx, &ext) != NGX_OK) {
        return ngx_http_toll_failed(r, ctx);
    }

    ngx_log_error(lcf->log_level, r->connection->log, 0,
                  "toll: refused, spend cap exceeded, key id \"%V\", "
                  "price %L", &ctx->key_id, ctx->price_micros);

    ngx_http_toll_prepaid_release(r, ctx);

    return ngx_http_toll_refuse_unpriced(r, ctx,
               NGX_HTTP_TOLL_DECISION_SPEND_CAP_EXCEEDED,
               NGX_HTTP_TOLL_PROBLEM_SPEND_CAP_EXCEEDED, &ext);
}


/*
 * A priced call refused after all (the store, the balance, a cap): no
 * price is left for the billing headers or the meter, and the answer is
 * sent as a content handler's would be.
 */

static ngx_int_t
ngx_http_toll_refuse_unpriced(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_uint_t decision, ngx_http_toll_problem_e problem,
    ngx_http_toll_problem_ext_t *ext)
{
    ctx->priced = 0;
    ctx->service = NULL;

    ctx->state = NGX_HTTP_TOLL_STATE_REJECTED;
    ctx->decision = decision;
    ngx_http_toll_auth_forget(r);
    ngx_http_finalize_request(r, ngx_http_toll_problem_send_ext(r, problem,
                                                                ext));
    return NGX_DONE;
}


/* an internal error: a 500, logged like a refusal, without the credential */

static ngx_int_t
ngx_http_toll_failed(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    ctx->state = NGX_HTTP_TOLL_STATE_REJECTED;
    ctx->decision = NGX_HTTP_TOLL_DECISION_ERROR;
    ngx_http_toll_auth_forget(r);

    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}


/*
 * A passed request redirected into a priced location: the earlier price
 * is taken back (its meter record and any free call) so that the new
 * location's price is the one counted, once.
 */

static void
ngx_http_toll_reprice(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_loc_conf_t *lcf)
{
    if (ctx->priced) {
        ngx_http_toll_meter_unadmit(r, ctx);
        ngx_http_toll_quota_unprice(r, ctx);
    }

    /* the decision and the call are counted for the service that sells */
    ctx->counters_service = lcf->service;
}


/*
 * The access phase does not run for subrequests (SSI includes,
 * auth_request, ...), so a subrequest into a gated location is let
 * through here only when its main request passed the gate, whose
 * identity headers it shares.
 */

static ngx_int_t
ngx_http_toll_subrequest_handler(ngx_http_request_t *r)
{
    ngx_http_toll_ctx_t          *ctx;
    ngx_http_toll_loc_conf_t     *lcf;
    ngx_http_toll_problem_ext_t   ext;

    if (r == r->main) {
        return NGX_DECLINED;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);

    if (!lcf->enable) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_toll_get_ctx(r->main);

    if (ctx && ctx->state == NGX_HTTP_TOLL_STATE_PASSED) {
        /* the caller passed, but this location may ask for more */
        ngx_memzero(&ext, sizeof(ngx_http_toll_problem_ext_t));

        switch (ngx_http_toll_authz_check(r, ctx, lcf, &ext)) {
        case NGX_OK:
            return NGX_DECLINED;
        case NGX_DECLINED:
            return NGX_HTTP_FORBIDDEN;
        default:
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    ngx_log_error(lcf->log_level, r->connection->log, 0,
                  "toll: refused, a subrequest to \"%V\" from a request "
                  "that did not pass the gate", &r->uri);

    return NGX_HTTP_UNAUTHORIZED;
}


/*
 * The end of a gated request: the meter corrects what the call counts
 * for, then the counters count the decision and, through the meter, the
 * call.  A subrequest is part of its main request.
 */

static ngx_int_t
ngx_http_toll_log_handler(ngx_http_request_t *r)
{
    ngx_http_toll_ctx_t  *ctx;

    /*
     * A query token is cut where the gate reads it; a request ended
     * before that (limit_req, a rewrite's return) still has it: it must
     * not reach the access log, which runs after this handler.
     */

    ngx_http_toll_credential_query_forget(r,
                       ngx_http_get_module_loc_conf(r, ngx_http_toll_module));

    ctx = ngx_http_toll_get_ctx(r);

    if (ctx == NULL) {
        return NGX_OK;
    }

    ngx_http_toll_meter_log(r, ctx);

    if (r == r->main) {
        ngx_http_toll_counters_log(r, ctx);
    }

    return NGX_OK;
}


/*
 * The gate's headers on the answer of a gated request, 2xx or refusal:
 * rate limits, then billing.  Upstream copies are replaced by each room.
 */

static ngx_int_t
ngx_http_toll_header_filter(ngx_http_request_t *r)
{
    ngx_http_toll_ctx_t  *ctx;

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_toll_get_ctx(r);

    if (ctx == NULL) {
        return ngx_http_next_header_filter(r);
    }

    if (ngx_http_toll_limit_headers_out(r, ctx) != NGX_OK
        || ngx_http_toll_quota_headers_out(r, ctx) != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_toll_meter_header(r, ctx);

    return ngx_http_next_header_filter(r);
}


static ngx_int_t
ngx_http_toll_refuse(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_int_t status)
{
    ngx_str_t                 *name;
    ngx_http_toll_problem_e    problem;
    ngx_http_toll_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);
    name = &ngx_http_toll_auth_status_names[ctx->auth_status];

    /* the key id is no secret; what was sent in a malformed one may be */

    if (ctx->auth_detail) {
        /* a JWT: why it was refused; the token itself is never logged */
        ngx_log_error(lcf->log_level, r->connection->log, 0,
                      "toll: refused, %V, jwt: %s", name, ctx->auth_detail);

    } else if (ctx->key_id.len) {
        ngx_log_error(lcf->log_level, r->connection->log, 0,
                      "toll: refused, %V, key id \"%V\"", name, &ctx->key_id);

    } else {
        ngx_log_error(lcf->log_level, r->connection->log, 0,
                      "toll: refused, %V", name);
    }

    switch (status) {

    case NGX_HTTP_BAD_REQUEST:
        problem = NGX_HTTP_TOLL_PROBLEM_AMBIGUOUS_CREDENTIALS;
        ctx->decision = NGX_HTTP_TOLL_DECISION_BAD_REQUEST;
        break;

    case NGX_HTTP_SERVICE_UNAVAILABLE:
        problem = NGX_HTTP_TOLL_PROBLEM_STORE_UNAVAILABLE;
        ctx->decision = NGX_HTTP_TOLL_DECISION_STORE_UNAVAILABLE;
        break;

    default: /* NGX_HTTP_UNAUTHORIZED */
        problem = NGX_HTTP_TOLL_PROBLEM_UNAUTHORIZED;
        ctx->decision = NGX_HTTP_TOLL_DECISION_UNAUTHORIZED;
        break;
    }

    ctx->state = NGX_HTTP_TOLL_STATE_REJECTED;

    ngx_http_toll_auth_forget(r);

    /* as the content phase would: the answer is complete, finalize it */
    ngx_http_finalize_request(r, ngx_http_toll_problem_send(r, problem));

    return NGX_DONE;
}


static ngx_int_t
ngx_http_toll_refuse_limit(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    ctx->state = NGX_HTTP_TOLL_STATE_REJECTED;
    ctx->decision = NGX_HTTP_TOLL_DECISION_RATE_LIMITED;

    ngx_http_toll_auth_forget(r);

    ngx_http_finalize_request(r, ngx_http_toll_limit_refuse(r, ctx));

    return NGX_DONE;
}


/*
 * An internal redirect clears r->ctx; the pool cleanup that owns the
 * context survives it, so that is where the context is found again (the
 * way nginx's realip module does it).
 */

ngx_http_toll_ctx_t *
ngx_http_toll_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t   *cln;
    ngx_http_toll_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_toll_module);

    if (ctx || !(r->internal || r->filter_finalize)) {
        return ctx;
    }

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_toll_cleanup) {
            ctx = cln->data;
            ngx_http_set_ctx(r, ctx, ngx_http_toll_module);
            return ctx;
        }
    }

    return NULL;
}


static ngx_http_toll_ctx_t *
ngx_http_toll_create_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t   *cln;
    ngx_http_toll_ctx_t  *ctx;

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_toll_ctx_t));
    if (cln == NULL) {
        return NULL;
    }

    ctx = cln->data;
    ngx_memzero(ctx, sizeof(ngx_http_toll_ctx_t));

    ctx->request = r;
    ctx->key.rate_limit = -1;

    cln->handler = ngx_http_toll_cleanup;

    ngx_http_set_ctx(r, ctx, ngx_http_toll_module);

    return ctx;
}


static void
ngx_http_toll_cleanup(void *data)
{
    ngx_http_toll_ctx_t  *ctx = data;

    ngx_http_toll_auth_cleanup(ctx);
    ngx_http_toll_limit_release(ctx);
    ngx_http_toll_quota_cleanup(ctx);
    ngx_http_toll_prepaid_cleanup(ctx);
    ngx_http_toll_cap_cleanup(ctx);
    ngx_http_toll_meter_cleanup(ctx);
}


static ngx_int_t
ngx_http_toll_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    ngx_str_t            *s;
    ngx_http_toll_ctx_t  *ctx;

    ctx = ngx_http_toll_get_ctx(r->main);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    switch (data) {

    case NGX_HTTP_TOLL_VAR_KEY_ID:
        s = &ctx->key_id;
        break;

    case NGX_HTTP_TOLL_VAR_BUYER:
        s = (ctx->auth_status == NGX_HTTP_TOLL_AUTH_OK)
            ? &ctx->key.owner : NULL;
        break;

    case NGX_HTTP_TOLL_VAR_PLAN:
        s = (ctx->auth_status == NGX_HTTP_TOLL_AUTH_OK)
            ? &ctx->key.plan : NULL;
        break;

    case NGX_HTTP_TOLL_VAR_LIMIT_STATUS:
        s = ngx_http_toll_limit_status_name(ctx);
        break;

    case NGX_HTTP_TOLL_VAR_SERVICE:
    case NGX_HTTP_TOLL_VAR_PROVIDER:
    case NGX_HTTP_TOLL_VAR_USAGE_ID:
    case NGX_HTTP_TOLL_VAR_AMOUNT:
    case NGX_HTTP_TOLL_VAR_PRICE:
    case NGX_HTTP_TOLL_VAR_FREE_TIER:
    case NGX_HTTP_TOLL_VAR_UNITS:
        return ngx_http_toll_quota_variable(r, ctx, v, data
                                            - NGX_HTTP_TOLL_VAR_SERVICE);

    default: /* NGX_HTTP_TOLL_VAR_AUTH_STATUS */
        s = &ngx_http_toll_auth_status_names[ctx->auth_status];
        break;
    }

    if (s == NULL || s->len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = s->len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->data = s->data;

    return NGX_OK;
}


ngx_int_t
ngx_http_toll_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_toll_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


/*
 * The gate's place in nginx: the access phase, the precontent phase for
 * subrequests, first in the log phase, and a header filter.
 */

ngx_int_t
ngx_http_toll_handler_init(ngx_conf_t *cf)
{
    ngx_array_t                *handlers;
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_toll_access_handler;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_toll_subrequest_handler;

    /*
     * First in the log phase: the meter settles what the call cost (a
     * call never sent upstream costs nothing) before an access_log writes
     * $toll_amount; the log module registered its handler before ours.
     */

    handlers = &cmcf->phases[NGX_HTTP_LOG_PHASE].handlers;

    h = ngx_array_push(handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h = handlers->elts;
    ngx_memmove(&h[1], &h[0], (handlers->nelts - 1) * sizeof(*h));
    h[0] = ngx_http_toll_log_handler;

    /*
     * Before nginx's filters (a dynamic module's come last, so first in
     * the chain) and after the plugins' (installed later): the meter sees
     * the answer before it is sent, and after a plugin read it.
     */

    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_toll_header_filter;

    return ngx_http_toll_meter_filter_init(cf);
}
