/*
 * toll: plans and the directives of the limits.
 *
 * Parses "toll_plan" into rates whose arithmetic is worked out once,
 * and "toll_limit_ip" and "toll_limit_headers"; resolves plan names once
 * the configuration is read.  Requests meet the plans in
 * ngx_http_toll_limit.c.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_limit.h"
#include "ngx_http_toll_limit_int.h"


ngx_conf_enum_t  ngx_http_toll_limit_keys[] = {
    { ngx_string("key"), NGX_HTTP_TOLL_LIMIT_KEY_KEY },
    { ngx_string("buyer"), NGX_HTTP_TOLL_LIMIT_KEY_BUYER },
    { ngx_null_string, 0 }
};


static ngx_int_t ngx_http_toll_limit_parse_rate(ngx_str_t *s,
    ngx_http_toll_rate_t *rate);
static ngx_http_toll_plan_t *ngx_http_toll_limit_plan_add(ngx_conf_t *cf,
    ngx_http_toll_main_conf_t *mcf, ngx_str_t *name);
static ngx_int_t ngx_http_toll_limit_plan_rate(ngx_conf_t *cf,
    ngx_http_toll_plan_t *plan, ngx_str_t *value);
static ngx_int_t ngx_http_toll_limit_plan_burst(ngx_conf_t *cf,
    ngx_http_toll_plan_t *plan, ngx_str_t *value, ngx_uint_t last_rate,
    ngx_uint_t *buckets);
static ngx_int_t ngx_http_toll_limit_plan_concurrency(ngx_conf_t *cf,
    ngx_http_toll_plan_t *plan, ngx_str_t *value);
static ngx_int_t ngx_http_toll_limit_plan_ready(ngx_conf_t *cf,
    ngx_http_toll_plan_t *plan);
static ngx_int_t ngx_http_toll_limit_policy(ngx_pool_t *pool,
    ngx_http_toll_rate_t *rate, ngx_uint_t ip, ngx_str_t *policy);


/*
 * toll_plan NAME [rate=N r/s|r/m|r/h|r/d [burst=B]]... [concurrency=N]
 *     [strict];
 * toll_plan NAME unlimited;
 */

char *
ngx_http_toll_plan_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_toll_main_conf_t *mcf = conf;

    ngx_str_t             *value;
    ngx_uint_t             i, last_rate, buckets;
    ngx_http_toll_plan_t  *plan;

    value = cf->args->elts;

    plan = ngx_http_toll_limit_plan_add(cf, mcf, &value[1]);
    if (plan == NULL) {
        return NGX_CONF_ERROR;
    }

    last_rate = 0;
    buckets = 0;

    for (i = 2; i < cf->args->nelts; i++) {

        if (value[i].len == 9
            && ngx_strncmp(value[i].data, "unlimited", 9) == 0)
        {
            if (cf->args->nelts != 3) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"unlimited\" takes no other "
                                   "parameters");
                return NGX_CONF_ERROR;
            }

            plan->unlimited = 1;
            continue;
        }

        if (value[i].len == 6
            && ngx_strncmp(value[i].data, "strict", 6) == 0)
        {
            plan->strict = 1;
            last_rate = 0;
            continue;
        }

        if (plan->nrates == NGX_HTTP_TOLL_PLAN_RATES_MAX) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "too many limits in plan \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }

        if (ngx_strncmp(value[i].data, "rate=", 5) == 0) {
            if (ngx_http_toll_limit_plan_rate(cf, plan, &value[i]) != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            last_rate = plan->nrates;
            continue;
        }

        if (ngx_strncmp(value[i].data, "burst=", 6) == 0) {
            if (ngx_http_toll_limit_plan_burst(cf, plan, &value[i],
                                               last_rate, &buckets)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            last_rate = 0;
            continue;
        }

        if (ngx_strncmp(value[i].data, "concurrency=", 12) == 0) {
            if (ngx_http_toll_limit_plan_concurrency(cf, plan, &value[i])
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            last_rate = 0;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (plan->nrates == 0 && !plan->unlimited) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "plan \"%V\" must have \"rate\", \"concurrency\" "
                           "or \"unlimited\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_toll_limit_plan_ready(cf, plan) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* a new plan of a valid name, not taken yet; NULL: an error */

static ngx_http_toll_plan_t *
ngx_http_toll_limit_plan_add(ngx_conf_t *cf, ngx_http_toll_main_conf_t *mcf,
    ngx_str_t *name)
{
    ngx_http_toll_plan_t  *plan;

    if (!toll_plan_valid(name->data, name->len) || name->len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid plan name \"%V\"", name);
        return NULL;
    }

    if (mcf->plans == NULL) {
        mcf->plans = ngx_array_create(cf->pool, 4,
                                      sizeof(ngx_http_toll_plan_t));
        if (mcf->plans == NULL) {
            return NULL;
        }
    }

    if (ngx_http_toll_limit_find_plan(mcf, name)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate plan \"%V\"", name);
        return NULL;
    }

    plan = ngx_array_push(mcf->plans);
    if (plan == NULL) {
        return NULL;
    }

    ngx_memzero(plan, sizeof(ngx_http_toll_plan_t));
    plan->name = *name;

    return plan;
}


/* "rate=N r/s": a window, unless a "burst" follows */

static ngx_int_t
ngx_http_toll_limit_plan_rate(ngx_conf_t *cf, ngx_http_toll_plan_t *plan,
    ngx_str_t *value)
{
    ngx_str_t  s;

    s.data = value->data + 5;
    s.len = value->len - 5;

    if (ngx_http_toll_limit_parse_rate(&s, &plan->rates[plan->nrates])
        != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid rate \"%V\"", value);
        return NGX_ERROR;
    }

    plan->nrates++;

    return NGX_OK;
}


/* "burst=B" makes the rate it follows a token bucket */

static ngx_int_t
ngx_http_toll_limit_plan_burst(ngx_conf_t *cf, ngx_http_toll_plan_t *plan,
    ngx_str_t *value, ngx_uint_t last_rate, ngx_uint_t *buckets)
{
    ngx_int_t              n;
    toll_bucket_conf_t     bc;
    ngx_http_toll_rate_t  *rate;

    if (last_rate == 0 || last_rate != plan->nrates) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"burst\" must follow a \"rate\"");
        return NGX_ERROR;
    }

    n = ngx_atoi(value->data + 6, value->len - 6);
    rate = &plan->rates[last_rate - 1];

    if (n == NGX_ERROR || n < 1
        || toll_bucket_conf(&bc, rate->count,
                            toll_unit_ms[rate->unit], n) != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid burst \"%V\"", value);
        return NGX_ERROR;
    }

    if (++*buckets > 1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "plan \"%V\" has more than one "
                           "\"burst\"", &plan->name);
        return NGX_ERROR;
    }

    rate->kind = NGX_HTTP_TOLL_RATE_BUCKET;
    rate->burst = n;

    return NGX_OK;
}


/* "concurrency=N": one cap of requests in flight a plan */

static ngx_int_t
ngx_http_toll_limit_plan_concurrency(ngx_conf_t *cf,
    ngx_http_toll_plan_t *plan, ngx_str_t *value)
{
    ngx_int_t              n;
    ngx_uint_t             j;
    ngx_http_toll_rate_t  *rate;

    n = ngx_atoi(value->data + 12, value->len - 12);

    if (n == NGX_ERROR || n < 1 || n > TOLL_LIMIT_COUNT_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid concurrency \"%V\"", value);
        return NGX_ERROR;
    }

    for (j = 0; j < plan->nrates; j++) {
        if (plan->rates[j].kind == NGX_HTTP_TOLL_RATE_CONCURRENCY) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate \"concurrency\" in plan "
                               "\"%V\"", &plan->name);
            return NGX_ERROR;
        }
    }

    rate = &plan->rates[plan->nrates];

    rate->kind = NGX_HTTP_TOLL_RATE_CONCURRENCY;
    rate->count = n;
    plan->nrates++;

    return NGX_OK;
}


/*
 * A plan read whole: one window of a unit at most, and what each request
 * would otherwise divide out again is worked out now.
 */

static ngx_int_t
ngx_http_toll_limit_plan_ready(ngx_conf_t *cf, ngx_http_toll_plan_t *plan)
{
    ngx_uint_t             i, windows;
    ngx_http_toll_rate_t  *rate;

    windows = 0;

    for (i = 0; i < plan->nrates; i++) {
        if (plan->rates[i].kind != NGX_HTTP_TOLL_RATE_WINDOW) {
            continue;
        }

        if (windows & (1 << plan->rates[i].unit)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "plan \"%V\" has two windows of one %s",
                               &plan->name,
                               toll_unit_names[plan->rates[i].unit]);
            return NGX_ERROR;
        }

        windows |= 1 << plan->rates[i].unit;
    }

    /* what each request would otherwise divide out again */

    for (i = 0; i < plan->nrates; i++) {
        rate = &plan->rates[i];

        switch (rate->kind) {

        case NGX_HTTP_TOLL_RATE_BUCKET:
            rate->ready = (toll_bucket_conf(&rate->bc, rate->count,
                                            toll_unit_ms[rate->unit],
                                            rate->burst) == 0);
            break;

        case NGX_HTTP_TOLL_RATE_WINDOW:
            rate->ready = (toll_window_conf(&rate->wc, rate->count,
                                            toll_unit_ms[rate->unit]) == 0);
            break;

        default:
            rate->ready = 1;
            break;
        }

        if (ngx_http_toll_limit_policy(cf->pool, rate, 0, &rate->policy)
            != NGX_OK
            || ngx_http_toll_limit_policy(cf->pool, rate, 1,
                                          &rate->ip_policy)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * A limit's item of RateLimit-Policy depends on its plan alone, unless a
 * key overrides the rate: it is written once, here.
 */

static ngx_int_t
ngx_http_toll_limit_policy(ngx_pool_t *pool, ngx_http_toll_rate_t *rate,
    ngx_uint_t ip, ngx_str_t *policy)
{
    u_char                 *p;
    ngx_http_toll_limit_t   l;

    if (!rate->ready) {
        ngx_str_null(policy);
        return NGX_OK;
    }

    p = ngx_pnalloc(pool, sizeof("\"ip-concurrency\";q=;w=") - 1
                          + 2 * NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(&l, sizeof(ngx_http_toll_limit_t));
    l.rate = rate;
    l.ip = ip;

    policy->data = p;
    policy->len = ngx_http_toll_limit_policy_item(p, &l) - p;

    return NGX_OK;
}


/* "60r/m": as limit_req writes a rate, with hours and days as well */

static ngx_int_t
ngx_http_toll_limit_parse_rate(ngx_str_t *s, ngx_http_toll_rate_t *rate)
{
    size_t      len;
    ngx_int_t   n;
    ngx_uint_t  unit;

    len = s->len;

    if (len < 4 || s->data[len - 3] != 'r' || s->data[len - 2] != '/') {
        return NGX_ERROR;
    }

    switch (s->data[len - 1]) {
    case 's': unit = TOLL_UNIT_SECOND; break;
    case 'm': unit = TOLL_UNIT_MINUTE; break;
    case 'h': unit = TOLL_UNIT_HOUR; break;
    case 'd': unit = TOLL_UNIT_DAY; break;
    default: return NGX_ERROR;
    }

    n = ngx_atoi(s->data, len - 3);

    if (n == NGX_ERROR || n < 1 || n > TOLL_LIMIT_COUNT_MAX) {
        return NGX_ERROR;
    }

    rate->kind = NGX_HTTP_TOLL_RATE_WINDOW;
    rate->unit = unit;
    rate->count = n;
    rate->burst = 0;

    return NGX_OK;
}


/* toll_limit_ip PLAN [unauthenticated] | off; */

char *
ngx_http_toll_limit_ip_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_toll_loc_conf_t *lcf = conf;

    ngx_str_t  *value;

    if (lcf->limit_ip_name.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    lcf->limit_ip_name = value[1];
    lcf->limit_ip_unauthenticated = 0;

    if (cf->args->nelts == 3) {
        if (value[2].len != sizeof("unauthenticated") - 1
            || ngx_strncmp(value[2].data, "unauthenticated",
                           value[2].len) != 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[2]);
            return NGX_CONF_ERROR;
        }

        lcf->limit_ip_unauthenticated = 1;
    }

    return NGX_CONF_OK;
}


/* toll_limit_headers [ietf] [x-ratelimit] | off; */

char *
ngx_http_toll_limit_headers_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_toll_loc_conf_t *lcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i;

    if (lcf->limit_headers != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;
    lcf->limit_headers = 0;

    for (i = 1; i < cf->args->nelts; i++) {

        if (value[i].len == 3 && ngx_strncmp(value[i].data, "off", 3) == 0
            && cf->args->nelts == 2)
        {
            continue;
        }

        if (value[i].len == 4 && ngx_strncmp(value[i].data, "ietf", 4) == 0)
        {
            lcf->limit_headers |= NGX_HTTP_TOLL_HEADERS_IETF;
            continue;
        }

        if (value[i].len == 11
            && ngx_strncmp(value[i].data, "x-ratelimit", 11) == 0)
        {
            lcf->limit_headers |= NGX_HTTP_TOLL_HEADERS_X;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


char *
ngx_http_toll_limit_status_post(ngx_conf_t *cf, void *post, void *data)
{
    ngx_uint_t  *status = data;

    if (*status < 400 || *status > 599) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "value must be between 400 and 599");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


char *
ngx_http_toll_limit_init_main_conf(ngx_conf_t *cf,
    ngx_http_toll_main_conf_t *mcf)
{
    if (mcf->default_plan_name.data == NULL) {
        return NGX_CONF_OK;
    }

    mcf->default_plan = ngx_http_toll_limit_find_plan(mcf,
                                                      &mcf->default_plan_name);

    if (mcf->default_plan == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown plan \"%V\" in \"toll_default_plan\"",
                           &mcf->default_plan_name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


char *
ngx_http_toll_limit_merge_loc_conf(ngx_conf_t *cf,
    ngx_http_toll_loc_conf_t *prev, ngx_http_toll_loc_conf_t *conf)
{
    ngx_http_toll_main_conf_t  *mcf;

    ngx_conf_merge_uint_value(conf->limit_key, prev->limit_key,
                              NGX_HTTP_TOLL_LIMIT_KEY_KEY);
    ngx_conf_merge_value(conf->buyer_plan, prev->buyer_plan, 0);

    if (conf->limit_ip_name.data == NULL) {
        conf->limit_ip_name = prev->limit_ip_name;
        conf->limit_ip_unauthenticated = prev->limit_ip_unauthenticated;
    }

    if (conf->limit_ip_name.data == NULL
        || (conf->limit_ip_name.len == 3
            && ngx_strncmp(conf->limit_ip_name.data, "off", 3) == 0))
    {
        conf->limit_ip_plan = NULL;
        return NGX_CONF_OK;
    }

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_toll_module);

    conf->limit_ip_plan = ngx_http_toll_limit_find_plan(mcf,
                                                        &conf->limit_ip_name);

    if (conf->limit_ip_plan == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown plan \"%V\" in \"toll_limit_ip\"",
                           &conf->limit_ip_name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


ngx_http_toll_plan_t *
ngx_http_toll_limit_find_plan(ngx_http_toll_main_conf_t *mcf, ngx_str_t *name)
{
    ngx_uint_t             i;
    ngx_http_toll_plan_t  *plans;

    if (mcf->plans == NULL) {
        return NULL;
    }

    plans = mcf->plans->elts;

    for (i = 0; i < mcf->plans->nelts; i++) {
        if (plans[i].name.len == name->len
            && ngx_strncmp(plans[i].name.data, name->data, name->len) == 0)
        {
            return &plans[i];
        }
    }

    return NULL;
}
