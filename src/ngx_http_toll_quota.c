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
#include "toll_key.h"
#include "toll_money.h"


#define NGX_HTTP_TOLL_CURRENCY_LEN_MAX   16


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


static ngx_int_t ngx_http_toll_quota_parse_price(ngx_conf_t *cf,
    ngx_str_t *value, ngx_str_t *text, int64_t *micros);
static ngx_int_t ngx_http_toll_quota_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_toll_quota_header_add(ngx_http_request_t *r,
    ngx_str_t *name, u_char *value, size_t len);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;

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
    ngx_http_toll_service_t  *svc;

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
    ngx_conf_merge_value(conf->billing_headers, prev->billing_headers, 1);
    ngx_conf_merge_str_value(conf->billing_prefix, prev->billing_prefix,
                             "X-Toll-");

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
ngx_http_toll_quota_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_toll_quota_header_filter;

    return NGX_OK;
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

    if (svc == NULL || ctx->priced) {
        return NGX_OK;
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

    /* unique without asking anyone: a random prefix per worker, a count */

    p = ngx_cpymem(ctx->usage_id, ngx_http_toll_usage_prefix,
                   sizeof(ngx_http_toll_usage_prefix));
    ngx_sprintf(p, "%016uxL", ++ngx_http_toll_usage_seq);

    return NGX_OK;
}


/*
 * The billing headers of a priced call, with whatever status it ends: a
 * call the upstream failed (5xx, or nginx's 502/504 when it could not be
 * reached) is not charged unless toll_charge_errors is on.
 */

static ngx_int_t
ngx_http_toll_quota_header_filter(ngx_http_request_t *r)
{
    u_char                     *buf, *p;
    size_t                      prefix_len;
    ngx_msec_int_t              ms;
    ngx_uint_t                  i;
    ngx_time_t                 *tp;
    ngx_list_part_t            *part;
    ngx_table_elt_t            *h;
    ngx_http_toll_ctx_t        *ctx;
    ngx_http_toll_loc_conf_t   *lcf;
    char                        amount[TOLL_MONEY_STR_MAX];

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_toll_get_ctx(r);

    if (ctx == NULL || !ctx->priced || ctx->service == NULL) {
        return ngx_http_next_header_filter(r);
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);

    if (r->headers_out.status >= NGX_HTTP_INTERNAL_SERVER_ERROR
        && !lcf->charge_errors)
    {
        ctx->amount_micros = 0;
    }

    if (!lcf->billing_headers) {
        return ngx_http_next_header_filter(r);
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
                               + sizeof("false") + 2 * NGX_INT64_LEN);
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

    /* from the request's start to the answer's headers */

    tp = ngx_timeofday();
    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));

    buf = p;
    p = ngx_sprintf(p, "%M", (ngx_msec_t) ngx_max(ms, 0));

    if (ngx_http_toll_quota_header_add(r,
            &lcf->billing_names[NGX_HTTP_TOLL_BILLING_LATENCY_MS], buf,
            p - buf)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_next_header_filter(r);
}


static ngx_int_t
ngx_http_toll_quota_header_add(ngx_http_request_t *r, ngx_str_t *name,
    u_char *value, size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key = *name;
    h->value.data = value;
    h->value.len = len;
    h->lowcase_key = NULL;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif

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
