/*
 * toll: a payment and metering gate for APIs.
 *
 * The module: configuration, and the worker's start and exit.  Its
 * directives are in ngx_http_toll_directives.c; the gate's request path
 * is in ngx_http_toll_handler.c.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_authz.h"
#include "ngx_http_toll_counters.h"
#include "ngx_http_toll_directives.h"
#include "ngx_http_toll_error_code.h"
#include "ngx_http_toll_handler.h"
#include "ngx_http_toll_jwt.h"
#include "ngx_http_toll_jwks.h"
#include "ngx_http_toll_limit.h"
#include "ngx_http_toll_meter.h"
#include "ngx_http_toll_metrics.h"
#include "ngx_http_toll_plugin.h"
#include "ngx_http_toll_problem.h"
#include "ngx_http_toll_quota.h"
#include "ngx_http_toll_usage.h"
#include "ngx_http_toll_redis.h"
#include "ngx_http_toll_shm.h"
#include "ngx_http_toll_credential.h"


#define NGX_HTTP_TOLL_CACHE_TTL_MS          30000
#define NGX_HTTP_TOLL_CACHE_NEGATIVE_TTL_MS 5000
#define NGX_HTTP_TOLL_LIMIT_SYNC_MS         100
#define NGX_HTTP_TOLL_METER_FLUSH_MS        1000
#define NGX_HTTP_TOLL_FREE_LEASE            10
/* a balance's lease, in calls' prices; its clocks (docs/metering.md) */
#define NGX_HTTP_TOLL_PREPAID_LEASE         10
#define NGX_HTTP_TOLL_PREPAID_IDLE_MS       2000
#define NGX_HTTP_TOLL_PREPAID_RECHECK_MS    500
#define NGX_HTTP_TOLL_PREPAID_RECLAIM_MS    600000


static ngx_int_t ngx_http_toll_find_stripped_variables(ngx_conf_t *cf,
    ngx_http_toll_main_conf_t *mcf);
static ngx_int_t ngx_http_toll_init(ngx_conf_t *cf);
static void *ngx_http_toll_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_toll_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_toll_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_toll_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_toll_init_process(ngx_cycle_t *cycle);
static void ngx_http_toll_exit_process(ngx_cycle_t *cycle);
static void ngx_http_toll_redis_up(void *data, ngx_uint_t up);


static ngx_http_module_t  ngx_http_toll_module_ctx = {
    ngx_http_toll_add_variables,           /* preconfiguration */
    ngx_http_toll_init,                    /* postconfiguration */

    ngx_http_toll_create_main_conf,        /* create main configuration */
    ngx_http_toll_init_main_conf,          /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_toll_create_loc_conf,         /* create location configuration */
    ngx_http_toll_merge_loc_conf           /* merge location configuration */
};


ngx_module_t  ngx_http_toll_module = {
    NGX_MODULE_V1,
    &ngx_http_toll_module_ctx,             /* module context */
    ngx_http_toll_commands,                /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_toll_init_process,            /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_toll_exit_process,            /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_toll_init(ngx_conf_t *cf)
{
    ngx_http_toll_main_conf_t  *mcf;

    static ngx_str_t  request_id = ngx_string("request_id");

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_toll_module);

    mcf->request_id_index = ngx_http_get_variable_index(cf, &request_id);
    if (mcf->request_id_index == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (ngx_http_toll_find_stripped_variables(cf, mcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_toll_handler_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    /* after the gate's handlers: the plugins' log hooks run before them */
    if (ngx_http_toll_plugin_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_toll_metrics_init(cf);
}


/*
 * $http_authorization, $http_x_api_key and $http_x_toll_* are cached once
 * evaluated: a map or a "set" in the rewrite phase would keep the client's
 * values (a secret, a forged identity) past the gate's rewrite of the
 * headers.  Their indexes are collected here so that the gate can make
 * them read the headers again.
 */

static ngx_int_t
ngx_http_toll_find_stripped_variables(ngx_conf_t *cf,
    ngx_http_toll_main_conf_t *mcf)
{
    ngx_str_t                  *name;
    ngx_uint_t                  i, *index;
    ngx_http_variable_t        *v;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    v = cmcf->variables.elts;

    for (i = 0; i < cmcf->variables.nelts; i++) {
        name = &v[i].name;

        if (!((name->len == sizeof("http_authorization") - 1
               && ngx_strncasecmp(name->data, (u_char *) "http_authorization",
                                  name->len) == 0)
              || (name->len == sizeof("http_x_api_key") - 1
                  && ngx_strncasecmp(name->data, (u_char *) "http_x_api_key",
                                     name->len) == 0)
              || (name->len > sizeof("http_x_toll_") - 1
                  && ngx_strncasecmp(name->data, (u_char *) "http_x_toll_",
                                     sizeof("http_x_toll_") - 1) == 0)
              || ngx_http_toll_credential_variable(mcf, name)))
        {
            continue;
        }

        if (mcf->stripped_variables == NULL) {
            mcf->stripped_variables = ngx_array_create(cf->pool, 4,
                                                       sizeof(ngx_uint_t));
            if (mcf->stripped_variables == NULL) {
                return NGX_ERROR;
            }
        }

        index = ngx_array_push(mcf->stripped_variables);
        if (index == NULL) {
            return NGX_ERROR;
        }

        *index = v[i].index;
    }

    return NGX_OK;
}


static void *
ngx_http_toll_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_toll_main_conf_t  *mcf;

    mcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_toll_main_conf_t));
    if (mcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mcf->redis = { 0 };
     *     mcf->redis_set = 0;
     *     mcf->shm_zone = NULL;
     */

    mcf->zone_size = NGX_CONF_UNSET_SIZE;
    mcf->cache_ttl = NGX_CONF_UNSET_MSEC;
    mcf->cache_negative_ttl = NGX_CONF_UNSET_MSEC;
    mcf->request_id_index = NGX_CONF_UNSET;
    mcf->limit_sync = NGX_CONF_UNSET_MSEC;
    mcf->meter_flush = NGX_CONF_UNSET_MSEC;
    mcf->free_lease = NGX_CONF_UNSET_UINT;
    mcf->prepaid_lease = NGX_CONF_UNSET_UINT;
    mcf->prepaid_idle = NGX_CONF_UNSET_MSEC;
    mcf->prepaid_recheck = NGX_CONF_UNSET_MSEC;
    mcf->prepaid_reclaim = NGX_CONF_UNSET_MSEC;

    return mcf;
}


static char *
ngx_http_toll_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_toll_main_conf_t *mcf = conf;

    ngx_conf_init_size_value(mcf->zone_size, NGX_HTTP_TOLL_ZONE_SIZE);
    ngx_conf_init_msec_value(mcf->cache_ttl, NGX_HTTP_TOLL_CACHE_TTL_MS);
    ngx_conf_init_msec_value(mcf->cache_negative_ttl,
                             NGX_HTTP_TOLL_CACHE_NEGATIVE_TTL_MS);
    ngx_conf_init_msec_value(mcf->limit_sync, NGX_HTTP_TOLL_LIMIT_SYNC_MS);
    ngx_conf_init_msec_value(mcf->meter_flush, NGX_HTTP_TOLL_METER_FLUSH_MS);
    ngx_conf_init_uint_value(mcf->free_lease, NGX_HTTP_TOLL_FREE_LEASE);

    if (mcf->free_lease == 0 || mcf->free_lease > 100000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"toll_free_lease\" must be 1 to 100000");
        return NGX_CONF_ERROR;
    }

    ngx_conf_init_uint_value(mcf->prepaid_lease, NGX_HTTP_TOLL_PREPAID_LEASE);
    ngx_conf_init_msec_value(mcf->prepaid_idle, NGX_HTTP_TOLL_PREPAID_IDLE_MS);
    ngx_conf_init_msec_value(mcf->prepaid_recheck,
                             NGX_HTTP_TOLL_PREPAID_RECHECK_MS);
    ngx_conf_init_msec_value(mcf->prepaid_reclaim,
                             NGX_HTTP_TOLL_PREPAID_RECLAIM_MS);

    if (mcf->prepaid_lease == 0 || mcf->prepaid_lease > 100000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"toll_prepaid_lease\" must be 1 to 100000");
        return NGX_CONF_ERROR;
    }

    /*
     * A lease must be given back, and confirmed, well before Redis takes
     * it for a dead node's: the node stops spending it at half the time.
     */

    if (mcf->prepaid_reclaim < 60000
        || mcf->prepaid_reclaim < 4 * (mcf->prepaid_idle + mcf->meter_flush))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"toll_prepaid_reclaim\" must be at least 60s "
                           "and 4 times \"toll_prepaid_idle\" and "
                           "\"toll_meter_flush\" together");
        return NGX_CONF_ERROR;
    }

    if (mcf->meter_flush == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"toll_meter_flush\" must be more than 0");
        return NGX_CONF_ERROR;
    }

    if (mcf->limit_sync == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"toll_limit_sync\" must be more than 0");
        return NGX_CONF_ERROR;
    }

    if (ngx_http_toll_limit_init_main_conf(cf, mcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (!mcf->redis_set) {
        return NGX_CONF_OK;
    }

    mcf->shm_zone = ngx_http_toll_shm_add(cf, mcf->zone_size);
    if (mcf->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_toll_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_toll_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_toll_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->enable = NGX_CONF_UNSET;
    conf->pass_credentials = NGX_CONF_UNSET;
    conf->log_level = NGX_CONF_UNSET_UINT;
    conf->limit = NGX_CONF_UNSET_UINT;
    conf->limit_status = NGX_CONF_UNSET_UINT;
    conf->limit_log_level = NGX_CONF_UNSET_UINT;
    conf->limit_headers = NGX_CONF_UNSET_UINT;
    conf->limit_ip_unauthenticated = NGX_CONF_UNSET;
    conf->limit_key = NGX_CONF_UNSET_UINT;
    conf->buyer_plan = NGX_CONF_UNSET;
    conf->charge_errors = NGX_CONF_UNSET;
    conf->free_tier_fallback = NGX_CONF_UNSET_UINT;
    conf->prepaid = NGX_CONF_UNSET;
    conf->prepaid_fallback = NGX_CONF_UNSET_UINT;
    conf->spend_caps = NGX_CONF_UNSET;
    conf->spend_caps_fallback = NGX_CONF_UNSET_UINT;
    conf->billing_headers = NGX_CONF_UNSET;

    /*
     * set by ngx_pcalloc():
     *
     *     conf->jwt_issuer = { 0, NULL };
     *     conf->jwt_audience = { 0, NULL };
     *     conf->jwt_buyer_claim = { 0, NULL };
     *     conf->jwt_plan_claim = { 0, NULL };
     *     conf->jwt_plan_prefix = { 0, NULL };
     *     conf->jwt_default_plan = { 0, NULL };
     */

    conf->jwt = NGX_CONF_UNSET;
    conf->jwt_leeway = NGX_CONF_UNSET;
    conf->jwt_require_exp = NGX_CONF_UNSET;
    conf->jwt_cache_ttl = NGX_CONF_UNSET_MSEC;
    conf->plugins = NGX_CONF_UNSET_PTR;
    conf->error_format = NGX_CONF_UNSET_UINT;
    conf->error_codes = NGX_CONF_UNSET_PTR;
    conf->jwt_with_key = NGX_CONF_UNSET;
    conf->query_token = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_toll_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_toll_loc_conf_t *prev = parent;
    ngx_http_toll_loc_conf_t *conf = child;

    ngx_http_toll_main_conf_t  *mcf;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_value(conf->pass_credentials, prev->pass_credentials, 0);
    ngx_conf_merge_uint_value(conf->log_level, prev->log_level,
                              NGX_LOG_INFO);
    ngx_conf_merge_uint_value(conf->limit, prev->limit,
                              NGX_HTTP_TOLL_LIMIT_ON);
    ngx_conf_merge_uint_value(conf->limit_status, prev->limit_status,
                              NGX_HTTP_TOO_MANY_REQUESTS);
    ngx_conf_merge_uint_value(conf->limit_log_level, prev->limit_log_level,
                              NGX_LOG_ERR);
    ngx_conf_merge_uint_value(conf->limit_headers, prev->limit_headers,
                              NGX_HTTP_TOLL_HEADERS_IETF
                              | NGX_HTTP_TOLL_HEADERS_X);

    if (ngx_http_toll_limit_merge_loc_conf(cf, prev, conf) != NGX_CONF_OK
        || ngx_http_toll_quota_merge_loc_conf(cf, prev, conf) != NGX_CONF_OK
        /* before the JWT's: its claim names are in the policy's hash */
        || ngx_http_toll_authz_merge_loc_conf(cf, prev, conf) != NGX_CONF_OK
        || ngx_http_toll_jwt_merge_loc_conf(cf, prev, conf) != NGX_CONF_OK
        || ngx_http_toll_plugin_merge_loc_conf(cf, prev, conf)
           != NGX_CONF_OK
        || ngx_http_toll_problem_merge_loc_conf(cf, prev, conf)
           != NGX_CONF_OK
        || ngx_http_toll_credential_merge_loc_conf(cf, prev, conf)
           != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_toll_module);

    if (conf->usage && !conf->enable) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"toll_usage\" needs \"toll on\" in its "
                           "location: it answers the authenticated buyer");
        return NGX_CONF_ERROR;
    }

    if (conf->enable && !mcf->redis_set) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"toll\" is on but no \"toll_redis\" is "
                           "configured in the http block");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_toll_init_process(ngx_cycle_t *cycle)
{
    ngx_http_toll_main_conf_t  *mcf;

    /* cache manager and loader processes have no requests to gate */

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    mcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_toll_module);

    if (mcf == NULL || !mcf->redis_set) {
        return NGX_OK;
    }

    /* the Redis connection counts from its first command */

    if (ngx_http_toll_counters_init_process(cycle) != NGX_OK
        || ngx_http_toll_redis_init_process(cycle, &mcf->redis,
                                            ngx_http_toll_shm_redis_stats(
                                                mcf->shm_zone),
                                            ngx_http_toll_redis_up,
                                            mcf->shm_zone)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_toll_quota_init_process(cycle) != NGX_OK
        || ngx_http_toll_meter_init_process(cycle) != NGX_OK
        || ngx_http_toll_jwks_init_process(cycle) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_toll_limit_init_process(cycle);
}


static void
ngx_http_toll_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_toll_limit_exit_process(cycle);
    ngx_http_toll_redis_exit_process(cycle);
    ngx_http_toll_jwks_exit_process(cycle);
}


/* the worker's connection is up or down: the zone's table says so */

static void
ngx_http_toll_redis_up(void *data, ngx_uint_t up)
{
    ngx_shm_zone_t  *shm_zone = data;

    ngx_http_toll_shm_proc_redis(shm_zone, up);
}
