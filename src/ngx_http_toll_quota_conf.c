/*
 * toll: the configuration of what calls cost.
 *
 * toll_service, toll_route and toll_billing_header_prefix, and their
 * merge.  Prices are integers from the start: "0.05" becomes 50000
 * micro-units when nginx reads its configuration (lib/toll_money.c), so
 * that no request ever parses or rounds an amount.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_quota.h"
#include "ngx_http_toll_quota_int.h"
#include "ngx_http_toll_units.h"
#include "toll_key.h"
#include "toll_money.h"




static ngx_str_t  ngx_http_toll_billing_suffixes[] = {
    ngx_string("Usage-Id"),
    ngx_string("Amount"),
    ngx_string("Free-Tier"),
    ngx_string("Free-Remaining"),
    ngx_string("Latency-Ms"),
    ngx_string("Balance"),
    ngx_string("Units")
};


static char *ngx_http_toll_service_param(ngx_conf_t *cf,
    ngx_http_toll_service_t *svc, ngx_str_t *value, ngx_uint_t *price_set);
static char *ngx_http_toll_service_same(ngx_conf_t *cf,
    ngx_http_toll_main_conf_t *mcf, ngx_http_toll_service_t *svc);
static char *ngx_http_toll_route_units(ngx_conf_t *cf,
    ngx_http_toll_service_t *svc, ngx_http_toll_route_t *route);
static ngx_int_t ngx_http_toll_quota_parse_price(ngx_conf_t *cf,
    ngx_str_t *value, ngx_str_t *text, int64_t *micros);


/*
 * toll_service NAME provider=ID price=DECIMAL [currency=CODE]
 *     [free_calls=N];
 */

char *
ngx_http_toll_service_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_toll_loc_conf_t *lcf = conf;

    ngx_str_t                  *value;
    ngx_uint_t                  i, price_set;
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
        if (ngx_http_toll_service_param(cf, svc, &value[i], &price_set)
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
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

    if (ngx_http_toll_units_check(cf, &svc->units, svc->price_micros)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_toll_module);

    if (ngx_http_toll_service_same(cf, mcf, svc) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
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


/* one NAME=VALUE parameter of toll_service */

static char *
ngx_http_toll_service_param(ngx_conf_t *cf, ngx_http_toll_service_t *svc,
    ngx_str_t *value, ngx_uint_t *price_set)
{
    ngx_int_t   n;
    ngx_str_t   s;

    n = ngx_http_toll_units_param(cf, &svc->units, value);

    if (n != NGX_DECLINED) {
        return (n == NGX_OK) ? NGX_CONF_OK : NGX_CONF_ERROR;
    }

    if (ngx_strncmp(value->data, "provider=", 9) == 0) {
        s.data = value->data + 9;
        s.len = value->len - 9;

        if (s.len == 0 || !toll_owner_valid(s.data, s.len)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid provider \"%V\"", &s);
            return NGX_CONF_ERROR;
        }

        svc->provider = s;
        return NGX_CONF_OK;
    }

    if (ngx_strncmp(value->data, "price=", 6) == 0) {
        s.data = value->data + 6;
        s.len = value->len - 6;

        if (ngx_http_toll_quota_parse_price(cf, value, &s,
                                            &svc->price_micros)
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }

        *price_set = 1;
        return NGX_CONF_OK;
    }

    if (ngx_strncmp(value->data, "currency=", 9) == 0) {
        s.data = value->data + 9;
        s.len = value->len - 9;

        if (!toll_money_currency_valid((char *) s.data, s.len))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid currency \"%V\"", &s);
            return NGX_CONF_ERROR;
        }

        svc->currency = s;
        return NGX_CONF_OK;
    }

    if (ngx_strncmp(value->data, "free_calls=", 11) == 0) {
        n = ngx_atoi(value->data + 11, value->len - 11);

        if (n == NGX_ERROR) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid free_calls \"%V\"", value);
            return NGX_CONF_ERROR;
        }

        svc->free_calls = n;
        return NGX_CONF_OK;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\"",
                       value);
    return NGX_CONF_ERROR;
}


/*
 * A service may be sold in several locations (at different prices),
 * but by one provider, in one currency and with one free tier: its
 * usage, its free tier and its billed amount are kept and summed by
 * name (the usage hash's "<service>:provider" field has room for one
 * provider, the last one written), and a sum over two currencies
 * means nothing.
 */

static char *
ngx_http_toll_service_same(ngx_conf_t *cf, ngx_http_toll_main_conf_t *mcf,
    ngx_http_toll_service_t *svc)
{
    ngx_uint_t                 i;
    ngx_http_toll_service_t  **ref;

    if (mcf->services == NULL) {
        return NGX_CONF_OK;
    }

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

    return NGX_CONF_OK;
}


/*
 * toll_route METHOD|* REGEX price=DECIMAL [unit_price=DECIMAL
 *     max_units=N [units_header=NAME] [keep_units_header=on|off]];
 */

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

    if (cf->args->nelts < 4
        || ngx_strncmp(value[3].data, "price=", 6) != 0)
    {
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

    return ngx_http_toll_route_units(cf, svc, route);
}


/* a route's units parameters, after its price: its own, or the service's */

static char *
ngx_http_toll_route_units(ngx_conf_t *cf, ngx_http_toll_service_t *svc,
    ngx_http_toll_route_t *route)
{
    int64_t     most;
    ngx_int_t   n;
    ngx_str_t  *value;
    ngx_uint_t  i;

    value = cf->args->elts;

    for (i = 4; i < cf->args->nelts; i++) {
        n = ngx_http_toll_units_param(cf, &route->units, &value[i]);

        if (n == NGX_DECLINED) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        if (n != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_http_toll_units_check(cf, &route->units, route->price_micros)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (route->units.unit_nanos == 0 && svc->units.unit_nanos
        && toll_money_add(route->price_micros, svc->units.most_micros,
                          &most)
           != TOLL_MONEY_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "price + max_units x unit_price overflows");
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


/*
 * toll_charge_status ITEM ...;  an ITEM is a status (404), a class (4xx)
 * or a range (400-428), or one of those after "!" to leave it out of
 * what the others list ("2xx 3xx 4xx !402 !409 !429").  The statuses
 * listed are charged; all others are not.
 */

char *
ngx_http_toll_charge_status_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_toll_loc_conf_t *lcf = conf;

    u_char      *p, *dash;
    uint64_t     out[NGX_HTTP_TOLL_STATUS_WORDS];
    ngx_int_t    lo, hi, st;
    ngx_str_t   *value, v;
    ngx_uint_t   i, not;

    if (lcf->charge_status) {
        return "is duplicate";
    }

    lcf->charge_status = ngx_pcalloc(cf->pool,
                                     sizeof(uint64_t)
                                     * NGX_HTTP_TOLL_STATUS_WORDS);
    if (lcf->charge_status == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(out, sizeof(out));
    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        v = value[i];
        not = (v.len && v.data[0] == '!');

        if (not) {
            v.data++;
            v.len--;
        }

        dash = ngx_strlchr(v.data, v.data + v.len, '-');

        if (v.len == 3 && v.data[1] == 'x' && v.data[2] == 'x'
            && v.data[0] >= '1' && v.data[0] <= '5')
        {
            lo = (v.data[0] - '0') * 100;
            hi = lo + 99;

        } else if (dash) {
            lo = ngx_atoi(v.data, dash - v.data);
            p = dash + 1;
            hi = ngx_atoi(p, v.data + v.len - p);

        } else {
            lo = ngx_atoi(v.data, v.len);
            hi = lo;
        }

        if (lo < 100 || hi > 599 || lo > hi) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid status \"%V\": a status 100 to 599, "
                               "a class such as 4xx or a range such as "
                               "400-428, with \"!\" to leave it out",
                               &value[i]);
            return NGX_CONF_ERROR;
        }

        for (st = lo; st <= hi; st++) {
            if (not) {
                out[st / 64] |= (uint64_t) 1 << (st % 64);

            } else {
                lcf->charge_status[st / 64] |= (uint64_t) 1 << (st % 64);
            }
        }
    }

    for (i = 0; i < NGX_HTTP_TOLL_STATUS_WORDS; i++) {
        lcf->charge_status[i] &= ~out[i];
    }

    return NGX_CONF_OK;
}


ngx_uint_t
ngx_http_toll_quota_charged(ngx_http_toll_loc_conf_t *lcf, ngx_uint_t status)
{
    if (lcf->charge_status == NULL) {
        return status < NGX_HTTP_INTERNAL_SERVER_ERROR || lcf->charge_errors;
    }

    if (status >= NGX_HTTP_TOLL_STATUS_MAX) {
        return 0;
    }

    return (lcf->charge_status[status / 64] >> (status % 64)) & 1;
}


/* toll_billing_header_prefix PREFIX; */

char *
ngx_http_toll_billing_prefix_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_toll_loc_conf_t *lcf = conf;

    ngx_str_t  *value;

    if (lcf->billing_prefix.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    /* a header name's characters, and room for the longest suffix */

    if (!ngx_http_toll_header_name_valid(value[1].data, value[1].len)
        || value[1].len > 64)
    {
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

    /* one rule per block: toll_charge_errors is the default's shorthand */

    if (conf->charge_status && conf->charge_errors != NGX_CONF_UNSET) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"toll_charge_errors\" and \"toll_charge_status\" "
                           "in one block: list 5xx in \"toll_charge_status\" "
                           "instead");
        return NGX_CONF_ERROR;
    }

    if (conf->charge_status == NULL && conf->charge_errors == NGX_CONF_UNSET)
    {
        conf->charge_status = prev->charge_status;
    }

    ngx_conf_merge_value(conf->charge_errors, prev->charge_errors, 0);
    ngx_conf_merge_uint_value(conf->free_tier_fallback,
                              prev->free_tier_fallback, 0);
    ngx_conf_merge_value(conf->prepaid, prev->prepaid, 0);
    ngx_conf_merge_value(conf->spend_caps, prev->spend_caps, 1);
    ngx_conf_merge_uint_value(conf->spend_caps_fallback,
                              prev->spend_caps_fallback, 0);
    ngx_conf_merge_uint_value(conf->prepaid_fallback, prev->prepaid_fallback,
                              0);
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
