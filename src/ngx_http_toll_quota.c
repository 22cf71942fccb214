/*
 * toll: services, prices and what each call costs.
 *
 * Prices are integers from the start: "0.05" becomes 50000 micro-units
 * when nginx reads its configuration (lib/toll_money.c), so that no
 * request ever parses or rounds an amount.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/rand.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_quota.h"
#include "ngx_http_toll_redis.h"
#include "ngx_http_toll_shm.h"
#include "toll_key.h"
#include "toll_money.h"
#include "toll_reply.h"


#define NGX_HTTP_TOLL_CURRENCY_LEN_MAX   16


/*
 * A buyer's free calls of one service, as this node knows them: those it
 * leased from Redis and did not use yet, and those no node had leased
 * when Redis last answered (-1: not asked yet).
 */
typedef struct {
    int64_t                    lease_left;
    int64_t                    unclaimed;
    int64_t                    free_calls;    /* the service's, then */
} ngx_http_toll_quota_state_t;


/* a lease asked of Redis; it lands in the zone even if the caller left */
struct ngx_http_toll_quota_claim_s {
    ngx_http_toll_ctx_t       *ctx;           /* NULL: the caller left */
    ngx_shm_zone_t            *shm_zone;
    int64_t                    free_calls;
    size_t                     subject_len;
    u_char                     subject[NGX_HTTP_TOLL_NODE_SUBJECT_MAX];
};


/* the billing headers after the prefix, indexed as billing_names */
typedef enum {
    NGX_HTTP_TOLL_BILLING_USAGE_ID = 0,
    NGX_HTTP_TOLL_BILLING_AMOUNT,
    NGX_HTTP_TOLL_BILLING_FREE_TIER,
    NGX_HTTP_TOLL_BILLING_FREE_REMAINING,
    NGX_HTTP_TOLL_BILLING_LATENCY_MS,
    NGX_HTTP_TOLL_BILLING_N
} ngx_http_toll_billing_e;


static ngx_str_t  ngx_http_toll_billing_suffixes[] = {
    ngx_string("Usage-Id"),
    ngx_string("Amount"),
    ngx_string("Free-Tier"),
    ngx_string("Free-Remaining"),
    ngx_string("Latency-Ms")
};


static ngx_int_t ngx_http_toll_quota_free(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_service_t *svc);
static size_t ngx_http_toll_quota_subject(ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_service_t *svc, u_char *subject);
static ngx_int_t ngx_http_toll_quota_take(ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_quota_state_t *st);
static void ngx_http_toll_quota_claim_reply(void *data, redisReply *reply);
static void ngx_http_toll_quota_give_back(ngx_http_toll_ctx_t *ctx);
static ngx_int_t ngx_http_toll_quota_parse_price(ngx_conf_t *cf,
    ngx_str_t *value, ngx_str_t *text, int64_t *micros);

#define ngx_http_toll_quota_header_add(r, nm, v, n)                          \
    ngx_http_toll_header_push(r, (nm)->data, (nm)->len, v, n)


/* usage ids: a random prefix per worker, then a count */
static u_char    ngx_http_toll_usage_prefix[16];
static uint64_t  ngx_http_toll_usage_seq;


/*
 * toll_service NAME provider=ID price=DECIMAL [currency=CODE]
 *     [free_calls=N];
 */

char *
ngx_http_toll_service_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_toll_loc_conf_t *lcf = conf;

    ngx_int_t                 n;
    ngx_str_t                *value, s;
    ngx_uint_t                i, price_set;
    ngx_http_toll_service_t    *svc, **ref;
    ngx_http_toll_main_conf_t  *mcf;

    if (lcf->service) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 0 || !toll_plan_valid(value[1].data, value[1].len)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid service name \"%V\": use 1 to %d of "
                           "A-Z a-z 0-9 _ . -", &value[1], TOLL_PLAN_LEN_MAX);
        return NGX_CONF_ERROR;
    }

    svc = ngx_pcalloc(cf->pool, sizeof(ngx_http_toll_service_t));
    if (svc == NULL) {
        return NGX_CONF_ERROR;
    }

    svc->name = value[1];
    ngx_str_set(&svc->currency, "USD");
    price_set = 0;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "provider=", 9) == 0) {
            s.data = value[i].data + 9;
            s.len = value[i].len - 9;

            if (s.len == 0 || !toll_owner_valid(s.data, s.len)) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid provider \"%V\"", &s);
                return NGX_CONF_ERROR;
            }

            svc->provider = s;
            continue;
        }

        if (ngx_strncmp(value[i].data, "price=", 6) == 0) {
            s.data = value[i].data + 6;
            s.len = value[i].len - 6;

            if (ngx_http_toll_quota_parse_price(cf, &value[i], &s,
                                                &svc->price_micros)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            price_set = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "currency=", 9) == 0) {
            s.data = value[i].data + 9;
            s.len = value[i].len - 9;

            if (s.len == 0 || s.len > NGX_HTTP_TOLL_CURRENCY_LEN_MAX
                || !toll_plan_valid(s.data, s.len))
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid currency \"%V\"", &s);
                return NGX_CONF_ERROR;
            }

            svc->currency = s;
            continue;
        }

        if (ngx_strncmp(value[i].data, "free_calls=", 11) == 0) {
            n = ngx_atoi(value[i].data + 11, value[i].len - 11);

            if (n == NGX_ERROR) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid free_calls \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            svc->free_calls = n;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (svc->provider.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"toll_service\" must have \"provider\" "
                           "parameter");
        return NGX_CONF_ERROR;
    }

    if (!price_set) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"toll_service\" must have \"price\" parameter");
        return NGX_CONF_ERROR;
    }

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_toll_module);

    /*
     * A service may be sold in several locations (at different prices),
     * but by one provider, in one currency and with one free tier: its
     * usage, its free tier and its billed amount are kept and summed by
     * name (the usage hash's "<service>:provider" field has room for one
     * provider, the last one written), and a sum over two currencies
     * means nothing.
     */

    if (mcf->services) {
        ref = mcf->services->elts;

        for (i = 0; i < mcf->services->nelts; i++) {
            if (ref[i]->name.len != svc->name.len
                || ngx_strncmp(ref[i]->name.data, svc->name.data,
                               svc->name.len) != 0)
            {
                continue;
            }

            if (ref[i]->provider.len != svc->provider.len
                || ngx_strncmp(ref[i]->provider.data, svc->provider.data,
                               svc->provider.len) != 0)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "service \"%V\" is sold by provider "
                                   "\"%V\" elsewhere: a service has one "
                                   "provider", &svc->name,
                                   &ref[i]->provider);
                return NGX_CONF_ERROR;
            }

            if (ref[i]->currency.len != svc->currency.len
                || ngx_strncmp(ref[i]->currency.data, svc->currency.data,
                               svc->currency.len) != 0)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "service \"%V\" is sold in %V elsewhere: "
                                   "a service has one currency",
                                   &svc->name, &ref[i]->currency);
                return NGX_CONF_ERROR;
            }

            /* one grant per buyer and service name, leased from Redis */

            if (ref[i]->free_calls != svc->free_calls) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "service \"%V\" has free_calls=%L "
                                   "elsewhere: a service has one free tier",
                                   &svc->name, ref[i]->free_calls);
                return NGX_CONF_ERROR;
            }
        }
    }

    if (mcf->services == NULL) {
        mcf->services = ngx_array_create(cf->pool, 4, sizeof(void *));
        if (mcf->services == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    ref = ngx_array_push(mcf->services);
    if (ref == NULL) {
        return NGX_CONF_ERROR;
    }

    *ref = svc;
    lcf->service = svc;

    return NGX_CONF_OK;
}


/* toll_route METHOD|* REGEX price=DECIMAL; */

char *
ngx_http_toll_route_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_toll_loc_conf_t *lcf = conf;

    u_char                    errstr[NGX_MAX_CONF_ERRSTR];
    ngx_str_t                *value, s;
    ngx_uint_t                i;
    ngx_regex_compile_t       rc;
    ngx_http_toll_route_t    *route;
    ngx_http_toll_service_t  *svc;

    svc = lcf->service;

    if (svc == NULL) {
        return "must follow \"toll_service\" in the same location";
    }

    value = cf->args->elts;

    if (svc->routes == NULL) {
        svc->routes = ngx_array_create(cf->pool, 4,
                                       sizeof(ngx_http_toll_route_t));
        if (svc->routes == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    route = ngx_array_push(svc->routes);
    if (route == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(route, sizeof(ngx_http_toll_route_t));

    /* a method as nginx spells it: upper case letters */

    if (!(value[1].len == 1 && value[1].data[0] == '*')) {
        for (i = 0; i < value[1].len; i++) {
            if (value[1].data[i] < 'A' || value[1].data[i] > 'Z') {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid method \"%V\"", &value[1]);
                return NGX_CONF_ERROR;
            }
        }

        route->method = value[1];
    }

    ngx_memzero(&rc, sizeof(ngx_regex_compile_t));

    rc.pattern = value[2];
    rc.pool = cf->pool;
    rc.err.len = NGX_MAX_CONF_ERRSTR;
    rc.err.data = errstr;

    if (ngx_regex_compile(&rc) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%V", &rc.err);
        return NGX_CONF_ERROR;
    }

    route->regex = rc.regex;
    route->pattern = value[2];

    if (ngx_strncmp(value[3].data, "price=", 6) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"toll_route\" must have \"price\" parameter");
        return NGX_CONF_ERROR;
    }

    s.data = value[3].data + 6;
    s.len = value[3].len - 6;

    if (ngx_http_toll_quota_parse_price(cf, &value[3], &s,
                                        &route->price_micros)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_toll_quota_parse_price(ngx_conf_t *cf, ngx_str_t *value,
    ngx_str_t *text, int64_t *micros)
{
    int  rc;

    rc = toll_money_parse((const char *) text->data, text->len, micros);

    if (rc != TOLL_MONEY_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid price \"%V\": %s",
                           text, toll_money_strerror(rc));
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* toll_billing_header_prefix PREFIX; */

char *
ngx_http_toll_billing_prefix_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_toll_loc_conf_t *lcf = conf;

    u_char       c;
    ngx_str_t   *value;
    ngx_uint_t   i;

    if (lcf->billing_prefix.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    /* a header name's characters, and room for the longest suffix */

    for (i = 0; i < value[1].len; i++) {
        c = value[1].data[i];

        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
              || (c >= '0' && c <= '9') || c == '-' || c == '_'))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid header prefix \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    if (value[1].len == 0 || value[1].len > 64) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid header prefix \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    lcf->billing_prefix = value[1];

    return NGX_CONF_OK;
}


char *
ngx_http_toll_quota_merge_loc_conf(ngx_conf_t *cf,
    ngx_http_toll_loc_conf_t *prev, ngx_http_toll_loc_conf_t *conf)
{
    u_char      *p;
    ngx_uint_t   i;

    if (conf->service == NULL) {
        conf->service = prev->service;
    }

    ngx_conf_merge_value(conf->charge_errors, prev->charge_errors, 0);
    ngx_conf_merge_uint_value(conf->free_tier_fallback,
                              prev->free_tier_fallback, 0);
    ngx_conf_merge_value(conf->billing_headers, prev->billing_headers, 1);
    ngx_conf_merge_str_value(conf->billing_prefix, prev->billing_prefix,
                             "X-Toll-");

    /* the request's copies of another prefix are removed as X-Toll-* are */

    if (conf->billing_prefix.len != sizeof("X-Toll-") - 1
        || ngx_strncasecmp(conf->billing_prefix.data, (u_char *) "X-Toll-",
                           sizeof("X-Toll-") - 1) != 0)
    {
        conf->billing_prefix_lc.data = ngx_pnalloc(cf->pool,
                                                   conf->billing_prefix.len);
        if (conf->billing_prefix_lc.data == NULL) {
            return NGX_CONF_ERROR;
        }

        for (i = 0; i < conf->billing_prefix.len; i++) {
            conf->billing_prefix_lc.data[i] =
                (conf->billing_prefix.data[i] == '_')
                ? '-' : ngx_tolower(conf->billing_prefix.data[i]);
        }

        conf->billing_prefix_lc.len = conf->billing_prefix.len;
    }

    if (prev->billing_names
        && prev->billing_prefix.len == conf->billing_prefix.len
        && ngx_strncmp(prev->billing_prefix.data, conf->billing_prefix.data,
                       conf->billing_prefix.len) == 0)
    {
        conf->billing_names = prev->billing_names;
        return NGX_CONF_OK;
    }

    conf->billing_names = ngx_palloc(cf->pool,
                                     NGX_HTTP_TOLL_BILLING_N
                                     * sizeof(ngx_str_t));
    if (conf->billing_names == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < NGX_HTTP_TOLL_BILLING_N; i++) {
        p = ngx_pnalloc(cf->pool, conf->billing_prefix.len
                                  + ngx_http_toll_billing_suffixes[i].len);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        conf->billing_names[i].data = p;
        p = ngx_cpymem(p, conf->billing_prefix.data,
                       conf->billing_prefix.len);
        p = ngx_cpymem(p, ngx_http_toll_billing_suffixes[i].data,
                       ngx_http_toll_billing_suffixes[i].len);
        conf->billing_names[i].len = p - conf->billing_names[i].data;
    }

    return NGX_CONF_OK;
}


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
    ngx_uint_t                 i;
    ngx_http_toll_route_t     *route;
    ngx_http_toll_service_t   *svc;
    ngx_http_toll_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);
    svc = lcf->service;

    if (svc == NULL) {
        return NGX_OK;
    }

    if (ctx->priced) {
        /* resumed after a free-tier lease was asked for */
        return ctx->free_tier_failed ? NGX_HTTP_SERVICE_UNAVAILABLE : NGX_OK;
    }

    ctx->priced = 1;
    ctx->service = svc;
    ctx->price_micros = svc->price_micros;

    /*
     * The first route that matches the method and the normalised path
     * wins ("//", "/./" and "%2F" spellings reach the same $uri).
     */

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
        break;
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

    if (svc->free_calls == 0) {
        return NGX_OK;
    }

    return ngx_http_toll_quota_free(r, ctx, svc);
}


/*
 * The free tier: a call is free while this node holds a lease of the
 * buyer's free calls; without one it asks Redis for the next lease, the
 * request parked meanwhile.  NGX_OK (ctx says free or paid), NGX_AGAIN,
 * NGX_HTTP_SERVICE_UNAVAILABLE (Redis away, nothing to decide from, and
 * toll_free_tier_fallback closed), or NGX_ERROR.
 */

static ngx_int_t
ngx_http_toll_quota_free(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_service_t *svc)
{
    u_char                          *p;
    u_char                           subject[NGX_HTTP_TOLL_NODE_SUBJECT_MAX];
    u_char                           name[TOLL_OWNER_LEN_MAX + 16];
    u_char                           nums[3 * NGX_INT64_LEN];
    size_t                           len, argvlen[8];
    int64_t                          known;
    ngx_int_t                        rc;
    const char                      *argv[8];
    ngx_http_toll_main_conf_t       *mcf;
    ngx_http_toll_loc_conf_t        *lcf;
    ngx_http_toll_quota_claim_t     *claim;
    ngx_http_toll_quota_state_t     *st;
    ngx_http_toll_shm_limit_node_t  *ln;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);
    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);

    len = ngx_http_toll_quota_subject(ctx, svc, subject);

    ngx_http_toll_shm_lock(mcf->shm_zone);

    ln = ngx_http_toll_shm_limit_find(mcf->shm_zone, subject, len);
    known = 0;

    if (ln == NULL) {
        ln = ngx_http_toll_shm_limit_create(mcf->shm_zone, subject, len,
                 sizeof(ngx_http_toll_quota_state_t));

        if (ln) {
            st = (ngx_http_toll_quota_state_t *) ln->state;
            st->unclaimed = -1;
            st->free_calls = svc->free_calls;
        }
    }

    if (ln) {
        st = (ngx_http_toll_quota_state_t *) ln->state;

        if (st->free_calls != svc->free_calls) {
            /* the operator changed free_calls: ask Redis again */
            st->free_calls = svc->free_calls;
            st->unclaimed = -1;
        }

        rc = ngx_http_toll_quota_take(ctx, st);
        ln->pins = (st->lease_left > 0);
        known = (st->unclaimed >= 0) ? st->free_calls - st->unclaimed : 0;

        ngx_http_toll_shm_unlock(mcf->shm_zone);

        if (rc == NGX_OK) {
            return NGX_OK;
        }

    } else {
        /* no room to remember a lease: ask Redis for this call alone */
        ngx_http_toll_shm_unlock(mcf->shm_zone);
    }

    claim = ngx_alloc(sizeof(ngx_http_toll_quota_claim_t),
                      r->connection->log);
    if (claim == NULL) {
        return NGX_ERROR;
    }

    claim->ctx = ctx;
    claim->shm_zone = mcf->shm_zone;
    claim->free_calls = svc->free_calls;
    claim->subject_len = len;
    ngx_memcpy(claim->subject, subject, len);

    /* lua/free.lua */

    argv[2] = "1";
    argvlen[2] = 1;

    argv[3] = (const char *) name;
    argvlen[3] = (u_char *) toll_name_tagged((char *) name,
                                             TOLL_NAME_FREE_PREFIX,
                                             (char *) ctx->key.owner.data,
                                             ctx->key.owner.len)
                 - name;

    argv[4] = (const char *) svc->name.data;
    argvlen[4] = svc->name.len;

    p = nums;
    argv[5] = (const char *) p;
    p = ngx_sprintf(p, "%L", svc->free_calls);
    argvlen[5] = p - (u_char *) argv[5];

    argv[6] = (const char *) p;
    p = ngx_sprintf(p, "%ui", mcf->free_lease);
    argvlen[6] = p - (u_char *) argv[6];

    argv[7] = (const char *) p;
    p = ngx_sprintf(p, "%L", known);
    argvlen[7] = p - (u_char *) argv[7];

    if (ngx_http_toll_redis_eval(TOLL_SCRIPT_FREE,
                                 ngx_http_toll_quota_claim_reply, claim, 8,
                                 argv, argvlen)
        == NULL)
    {
        ngx_free(claim);
        goto unavailable;
    }

    ctx->claim = claim;
    r->read_event_handler = ngx_http_test_reading;

    return NGX_AGAIN;

unavailable:

    if (lcf->free_tier_fallback) {
        /* "paid": the call costs its price, never more free calls */
        ctx->free_call = 0;
        ctx->amount_micros = ctx->price_micros;
        return NGX_OK;
    }

    return NGX_HTTP_SERVICE_UNAVAILABLE;
}


/*
 * The billing headers of a priced call, with whatever status it ends: a
 * call the upstream failed (5xx, or nginx's 502/504 when it could not be
 * reached) is not charged unless toll_charge_errors is on.
 */

ngx_int_t
ngx_http_toll_quota_headers_out(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx)
{
    u_char                     *buf, *p;
    size_t                      prefix_len;
    ngx_msec_int_t              ms;
    ngx_uint_t                  i;
    ngx_time_t                 *tp;
    ngx_list_part_t            *part;
    ngx_table_elt_t            *h;
    ngx_http_toll_loc_conf_t   *lcf;
    char                        amount[TOLL_MONEY_STR_MAX];

    if (!ctx->priced || ctx->service == NULL) {
        return NGX_OK;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);

    if (r->headers_out.status >= NGX_HTTP_INTERNAL_SERVER_ERROR
        && !lcf->charge_errors && !ctx->billed)
    {
        /* not charged: a free call it took is the buyer's again */
        ngx_http_toll_quota_give_back(ctx);
        ctx->amount_micros = 0;
    }

    ctx->billed = 1;

    if (!lcf->billing_headers) {
        return NGX_OK;
    }

    /* the upstream's copies would contradict the gate's account */

    prefix_len = lcf->billing_prefix.len;
    part = &r->headers_out.headers.part;
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

        if (h[i].hash && h[i].key.len >= prefix_len
            && ngx_strncasecmp(h[i].key.data, lcf->billing_prefix.data,
                               prefix_len) == 0)
        {
            h[i].hash = 0;
        }
    }

    buf = ngx_pnalloc(r->pool, sizeof(ctx->usage_id) + TOLL_MONEY_STR_MAX
                               + sizeof("false") + 3 * NGX_INT64_LEN);
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

    ctx->priced = 0;
    ctx->service = NULL;
    ctx->price_micros = 0;
    ctx->amount_micros = 0;
    ctx->free_remaining = 0;
    ctx->free_call = 0;
    ctx->free_tier_failed = 0;
    ctx->billed = 0;
}


void
ngx_http_toll_quota_unused(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    ngx_http_toll_quota_give_back(ctx);
    ctx->amount_micros = 0;
}


/* "q:buyer\nservice" */

static size_t
ngx_http_toll_quota_subject(ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_service_t *svc, u_char *subject)
{
    return ngx_sprintf(subject, "q:%V\n%V", &ctx->key.owner, &svc->name)
           - subject;
}


/*
 * Decides from what the node knows, the zone locked: NGX_OK when it can
 * (a free call from the lease, or a paid one when no free call is left
 * anywhere), NGX_DECLINED when only Redis can say.
 */

static ngx_int_t
ngx_http_toll_quota_take(ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_quota_state_t *st)
{
    if (st->lease_left > 0) {
        st->lease_left--;
        ctx->free_call = 1;
        ctx->amount_micros = 0;
        ctx->free_remaining = st->lease_left + ngx_max(st->unclaimed, 0);
        return NGX_OK;
    }

    if (st->unclaimed == 0) {
        ctx->free_call = 0;
        ctx->amount_micros = ctx->price_micros;
        ctx->free_remaining = 0;
        return NGX_OK;
    }

    return NGX_DECLINED;
}


static void
ngx_http_toll_quota_claim_reply(void *data, redisReply *reply)
{
    ngx_http_toll_quota_claim_t *claim = data;

    ngx_int_t                         rc;
    toll_reply_lease_t                lease;
    ngx_http_request_t               *r;
    ngx_http_toll_ctx_t              *ctx;
    ngx_http_toll_loc_conf_t         *lcf;
    ngx_http_toll_quota_state_t      *st, one;
    ngx_http_toll_shm_limit_node_t   *ln;

    ctx = claim->ctx;
    rc = NGX_ERROR;

    toll_reply_lease(reply, claim->free_calls, &lease);

    if (lease.rc == TOLL_REPLY_LEASE_GRANTED) {

        /*
         * What Redis granted is this node's now, whether or not the
         * caller is still there: a lease lost here would be free calls
         * the buyer never gets.
         */

        ngx_http_toll_shm_lock(claim->shm_zone);

        ln = ngx_http_toll_shm_limit_find(claim->shm_zone, claim->subject,
                                          claim->subject_len);

        if (ln) {
            st = (ngx_http_toll_quota_state_t *) ln->state;

        } else {
            /* no node (a full zone): the lease serves this call only */
            ngx_memzero(&one, sizeof(ngx_http_toll_quota_state_t));
            st = &one;
        }

        st->lease_left += lease.grant;
        st->unclaimed = lease.rest;
        st->free_calls = claim->free_calls;

        rc = ctx ? ngx_http_toll_quota_take(ctx, st) : NGX_OK;

        if (ln) {
            ln->pins = (st->lease_left > 0);
        }

        ngx_http_toll_shm_unlock(claim->shm_zone);

        if (ln == NULL && st->lease_left > 0) {
            ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                          "toll: zone full, %L leased free calls of "
                          "\"%*s\" dropped; increase \"toll_zone\"",
                          st->lease_left, claim->subject_len,
                          claim->subject);
        }

    } else if (lease.rc == TOLL_REPLY_LEASE_ERROR
               && ngx_http_toll_redis_refusal(NGX_HTTP_TOLL_REDIS_FREE, reply))
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "toll: redis refused a free-tier lease: %*s",
                      (size_t) reply->len, reply->str);
    }

    ngx_free(claim);

    if (ctx == NULL) {
        return;
    }

    ctx->claim = NULL;
    r = ctx->request;

    if (rc != NGX_OK) {
        lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);

        if (lcf->free_tier_fallback) {
            ctx->free_call = 0;
            ctx->amount_micros = ctx->price_micros;

        } else {
            ctx->free_tier_failed = 1;
        }
    }

    ctx->state = NGX_HTTP_TOLL_STATE_RESUMED;

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;
    ngx_post_event(r->connection->write, &ngx_posted_events);
}


/* a free call that was not charged after all goes back to the lease */

static void
ngx_http_toll_quota_give_back(ngx_http_toll_ctx_t *ctx)
{
    u_char                           subject[NGX_HTTP_TOLL_NODE_SUBJECT_MAX];
    size_t                           len;
    ngx_http_toll_quota_state_t     *st;
    ngx_http_toll_shm_limit_node_t  *ln;
    ngx_http_toll_main_conf_t       *mcf;

    if (!ctx->free_call) {
        return;
    }

    ctx->free_call = 0;

    mcf = ngx_http_get_module_main_conf(ctx->request, ngx_http_toll_module);
    len = ngx_http_toll_quota_subject(ctx, ctx->service, subject);

    ngx_http_toll_shm_lock(mcf->shm_zone);

    ln = ngx_http_toll_shm_limit_find(mcf->shm_zone, subject, len);

    if (ln) {
        st = (ngx_http_toll_quota_state_t *) ln->state;
        st->lease_left++;
        ln->pins = 1;
    }

    ngx_http_toll_shm_unlock(mcf->shm_zone);
}


void
ngx_http_toll_quota_cleanup(ngx_http_toll_ctx_t *ctx)
{
    if (ctx->claim) {
        /* the lease still lands in the zone; only the caller is gone */
        ctx->claim->ctx = NULL;
        ctx->claim = NULL;
    }
}


int64_t
ngx_http_toll_quota_free_calls(ngx_http_request_t *r, ngx_str_t *name)
{
    ngx_uint_t                   i;
    ngx_http_toll_service_t    **svc;
    ngx_http_toll_main_conf_t   *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    if (mcf->services == NULL) {
        return -1;
    }

    svc = mcf->services->elts;

    for (i = 0; i < mcf->services->nelts; i++) {
        if (svc[i]->name.len == name->len
            && ngx_strncmp(svc[i]->name.data, name->data, name->len) == 0)
        {
            return svc[i]->free_calls;
        }
    }

    return -1;
}
