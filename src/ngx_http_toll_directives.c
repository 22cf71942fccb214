/*
 * toll: the module's directives, one table, and the parsing of those that
 * belong to no room (toll_redis, toll_zone).  Each room parses its own
 * directives; this file names them for nginx.
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
#include "toll_store.h"
#include "ngx_http_toll_shm.h"
#include "ngx_http_toll_credential.h"


#define NGX_HTTP_TOLL_REDIS_TIMEOUT_MS      1000
/* how long a money write waits for its replicas (WAIT's bound) */
#define NGX_HTTP_TOLL_REDIS_REPLICA_WAIT_MS 50
#define NGX_HTTP_TOLL_REDIS_REPLICAS_MAX    16


static char *ngx_http_toll_redis_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_toll_redis_address(ngx_conf_t *cf,
    ngx_http_toll_redis_conf_t *rc, ngx_str_t *addr);
static char *ngx_http_toll_redis_nodes(ngx_conf_t *cf,
    ngx_http_toll_redis_conf_t *rc, ngx_str_t *addr, u_char *master);
static char *ngx_http_toll_redis_resolve(ngx_conf_t *cf, ngx_str_t *addr,
    u_char **host, int *port);
static ngx_int_t ngx_http_toll_redis_replicas(ngx_conf_t *cf,
    ngx_http_toll_redis_conf_t *rc, ngx_str_t *word);
static char *ngx_http_toll_zone_size(ngx_conf_t *cf, void *post, void *data);


static ngx_conf_enum_t  ngx_http_toll_log_levels[] = {
    { ngx_string("info"), NGX_LOG_INFO },
    { ngx_string("notice"), NGX_LOG_NOTICE },
    { ngx_string("warn"), NGX_LOG_WARN },
    { ngx_string("error"), NGX_LOG_ERR },
    { ngx_null_string, 0 }
};


static ngx_conf_enum_t  ngx_http_toll_limit_modes[] = {
    { ngx_string("off"), NGX_HTTP_TOLL_LIMIT_OFF },
    { ngx_string("on"), NGX_HTTP_TOLL_LIMIT_ON },
    { ngx_string("dry_run"), NGX_HTTP_TOLL_LIMIT_DRY_RUN },
    { ngx_null_string, 0 }
};


static ngx_conf_enum_t  ngx_http_toll_free_fallbacks[] = {
    { ngx_string("closed"), 0 },
    { ngx_string("paid"), 1 },
    { ngx_null_string, 0 }
};


static ngx_conf_enum_t  ngx_http_toll_prepaid_fallbacks[] = {
    { ngx_string("closed"), 0 },
    { ngx_string("open"), 1 },
    { ngx_null_string, 0 }
};


static ngx_conf_post_handler_pt  ngx_http_toll_zone_size_p =
    ngx_http_toll_zone_size;

static ngx_conf_post_handler_pt  ngx_http_toll_limit_status_p =
    ngx_http_toll_limit_status_post;


ngx_command_t  ngx_http_toll_commands[] = {

    { ngx_string("toll"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, enable),
      NULL },

    { ngx_string("toll_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_toll_redis_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("toll_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_toll_main_conf_t, zone_size),
      &ngx_http_toll_zone_size_p },

    { ngx_string("toll_cache_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_toll_main_conf_t, cache_ttl),
      NULL },

    { ngx_string("toll_cache_negative_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_toll_main_conf_t, cache_negative_ttl),
      NULL },

    { ngx_string("toll_pass_credentials"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, pass_credentials),
      NULL },

    { ngx_string("toll_log_level"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, log_level),
      &ngx_http_toll_log_levels },

    { ngx_string("toll_plan"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_toll_plan_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("toll_default_plan"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_toll_main_conf_t, default_plan_name),
      NULL },

    { ngx_string("toll_limit_sync"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_toll_main_conf_t, limit_sync),
      NULL },

    { ngx_string("toll_meter_flush"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_toll_main_conf_t, meter_flush),
      NULL },

    { ngx_string("toll_free_lease"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_toll_main_conf_t, free_lease),
      NULL },

    { ngx_string("toll_free_tier_fallback"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, free_tier_fallback),
      &ngx_http_toll_free_fallbacks },

    { ngx_string("toll_prepaid"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, prepaid),
      NULL },

    { ngx_string("toll_spend_caps"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, spend_caps),
      NULL },

    { ngx_string("toll_spend_caps_fallback"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, spend_caps_fallback),
      &ngx_http_toll_prepaid_fallbacks },

    { ngx_string("toll_prepaid_fallback"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, prepaid_fallback),
      &ngx_http_toll_prepaid_fallbacks },

    { ngx_string("toll_prepaid_lease"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_toll_main_conf_t, prepaid_lease),
      NULL },

    { ngx_string("toll_prepaid_idle"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_toll_main_conf_t, prepaid_idle),
      NULL },

    { ngx_string("toll_prepaid_recheck"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_toll_main_conf_t, prepaid_recheck),
      NULL },

    { ngx_string("toll_prepaid_reclaim"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_toll_main_conf_t, prepaid_reclaim),
      NULL },

    { ngx_string("toll_limit"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, limit),
      &ngx_http_toll_limit_modes },

    { ngx_string("toll_limit_ip"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_toll_limit_ip_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("toll_limit_status"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, limit_status),
      &ngx_http_toll_limit_status_p },

    { ngx_string("toll_limit_log_level"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, limit_log_level),
      &ngx_http_toll_log_levels },

    { ngx_string("toll_limit_headers"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_toll_limit_headers_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("toll_limit_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, limit_key),
      ngx_http_toll_limit_keys },

    { ngx_string("toll_buyer_plan"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, buyer_plan),
      NULL },

    { ngx_string("toll_service"),
      NGX_HTTP_LOC_CONF|NGX_CONF_2MORE,
      ngx_http_toll_service_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("toll_usage"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_toll_usage_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    /* the offset tells the page from the metrics */

    { ngx_string("toll_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_toll_metrics_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("toll_dashboard"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_toll_metrics_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      1,
      NULL },

    { ngx_string("toll_route"),
      NGX_HTTP_LOC_CONF|NGX_CONF_2MORE,
      ngx_http_toll_route_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("toll_charge_errors"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, charge_errors),
      NULL },

    { ngx_string("toll_charge_status"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_toll_charge_status_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("toll_billing_headers"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, billing_headers),
      NULL },

    { ngx_string("toll_billing_header_prefix"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_toll_billing_prefix_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("toll_jwt"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, jwt),
      NULL },

    { ngx_string("toll_jwt_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE123,
      ngx_http_toll_jwt_key_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("toll_jwt_jwks"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_toll_jwks_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("toll_jwt_issuer"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, jwt_issuer),
      NULL },

    { ngx_string("toll_jwt_audience"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, jwt_audience),
      NULL },

    { ngx_string("toll_jwt_leeway"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, jwt_leeway),
      NULL },

    { ngx_string("toll_jwt_require_exp"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, jwt_require_exp),
      NULL },

    { ngx_string("toll_jwt_buyer_claim"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, jwt_buyer_claim),
      NULL },

    { ngx_string("toll_jwt_plan_claim"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_toll_jwt_plan_claim_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("toll_jwt_default_plan"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, jwt_default_plan),
      NULL },

    { ngx_string("toll_jwt_cache_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, jwt_cache_ttl),
      NULL },

    { ngx_string("toll_plugin_load"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_toll_plugin_load,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("toll_plugin"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_toll_plugin_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("toll_error_format"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, error_format),
      &ngx_http_toll_error_formats },

    { ngx_string("toll_error_type_base"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, error_type_base),
      &ngx_http_toll_error_type_base_p },

    { ngx_string("toll_error_trace_header"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, error_trace_header),
      &ngx_http_toll_error_trace_header_p },

    { ngx_string("toll_error_code"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_toll_error_code_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("toll_require"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_toll_require_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("toll_jwt_scope_claim"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_toll_authz_claim_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, jwt_scope_claims),
      NULL },

    { ngx_string("toll_jwt_role_claim"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_toll_authz_claim_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, jwt_role_claims),
      NULL },

    { ngx_string("toll_key_header"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_toll_key_header_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("toll_key_import_prefix"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_toll_key_import_prefix_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("toll_jwt_with_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_toll_loc_conf_t, jwt_with_key),
      NULL },

    { ngx_string("toll_query_token"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_toll_query_token_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


/*
 * toll_redis ADDRESS [timeout=TIME] [password=SECRET] [db=N];
 * toll_redis cluster=HOST:PORT,... [timeout=TIME] [password=SECRET];
 * toll_redis sentinel=HOST:PORT,... master=NAME [timeout=] [password=]
 *     [db=N];
 * and on any of them [replicas=N] [replica_wait=TIME]: money writes count
 * once N replicas have them (1 by default on a Cluster or a Sentinel, 0
 * on one Redis, which has none to wait for).
 *
 * ADDRESS is host[:port] or unix:/path.  The words are lib/toll_store.h's,
 * as tollctl and toll-settle take them.  A host name is resolved here, at
 * configuration time, so that a worker never waits on DNS; the nodes a
 * Cluster or the sentinels name later are numeric already.
 */

static char *
ngx_http_toll_redis_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_toll_main_conf_t *mcf = conf;

    u_char                      *p, *master;
    ngx_str_t                   *value, s;
    ngx_int_t                    n, rv;
    ngx_uint_t                   i;
    ngx_http_toll_redis_conf_t  *rc;

    if (mcf->redis_set) {
        return "is duplicate";
    }

    value = cf->args->elts;
    rc = &mcf->redis;

    rc->addr_text = value[1];
    rc->timeout = NGX_HTTP_TOLL_REDIS_TIMEOUT_MS;
    rc->db = 0;

    master = NULL;

    for (i = 2; i < cf->args->nelts; i++) {
        if (ngx_strncmp(value[i].data, "master=", 7) == 0) {
            master = value[i].data + 7;
        }
    }

    if (ngx_strncmp(value[1].data, "cluster=", 8) == 0
        || ngx_strncmp(value[1].data, "sentinel=", 9) == 0)
    {
        if (ngx_http_toll_redis_nodes(cf, rc, &value[1], master)
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }

    } else if (master != NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"master=\" goes with \"sentinel=\" only");
        return NGX_CONF_ERROR;

    } else if (ngx_http_toll_redis_address(cf, rc, &value[1])
               != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    rc->replicas = (rc->kind == TOLL_STORE_SINGLE) ? 0 : 1;
    rc->replica_wait = NGX_HTTP_TOLL_REDIS_REPLICA_WAIT_MS;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "master=", 7) == 0) {
            continue;
        }

        rv = ngx_http_toll_redis_replicas(cf, rc, &value[i]);

        if (rv == NGX_ERROR) {
            return NGX_CONF_ERROR;
        }

        if (rv == NGX_OK) {
            continue;
        }

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            s.data = value[i].data + 8;
            s.len = value[i].len - 8;

            rc->timeout = ngx_parse_time(&s, 0);
            if (rc->timeout == (ngx_msec_t) NGX_ERROR || rc->timeout == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid timeout \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "password=", 9) == 0) {
            rc->password.data = value[i].data + 9;
            rc->password.len = value[i].len - 9;

            if (rc->password.len == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "empty redis password");
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "db=", 3) == 0) {
            n = ngx_atoi(value[i].data + 3, value[i].len - 3);
            if (n == NGX_ERROR) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid redis db \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            if (rc->kind == TOLL_STORE_CLUSTER && n != 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"db=\" is not available on a Redis "
                                   "Cluster, which has only database 0");
                return NGX_CONF_ERROR;
            }

            rc->db = n;
            continue;
        }

        /* never echo what may be a mistyped password */
        p = ngx_strlchr(value[i].data, value[i].data + value[i].len, '=');
        s.data = value[i].data;
        s.len = p ? (size_t) (p - value[i].data) : value[i].len;

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &s);
        return NGX_CONF_ERROR;
    }

    /* WAIT's bound lies within the command's, or every durable write
     * would time out first */

    if (rc->replicas && rc->replica_wait >= rc->timeout) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"replica_wait=\" must be shorter than "
                           "\"timeout=\"");
        return NGX_CONF_ERROR;
    }

    mcf->redis_set = 1;

    return NGX_CONF_OK;
}


/*
 * replicas=N and replica_wait=TIME: NGX_OK when the word was one of them,
 * NGX_ERROR when it was one and is wrong, NGX_DECLINED when neither.
 */

static ngx_int_t
ngx_http_toll_redis_replicas(ngx_conf_t *cf, ngx_http_toll_redis_conf_t *rc,
    ngx_str_t *word)
{
    ngx_int_t   n;
    ngx_str_t   s;

    if (ngx_strncmp(word->data, "replicas=", 9) == 0) {
        n = ngx_atoi(word->data + 9, word->len - 9);
        if (n == NGX_ERROR || n > NGX_HTTP_TOLL_REDIS_REPLICAS_MAX) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid \"%V\", a number of replicas "
                               "from 0 to %d", word,
                               NGX_HTTP_TOLL_REDIS_REPLICAS_MAX);
            return NGX_ERROR;
        }

        rc->replicas = n;
        return NGX_OK;
    }

    if (ngx_strncmp(word->data, "replica_wait=", 13) == 0) {
        s.data = word->data + 13;
        s.len = word->len - 13;

        rc->replica_wait = ngx_parse_time(&s, 0);
        if (rc->replica_wait == (ngx_msec_t) NGX_ERROR
            || rc->replica_wait == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid \"%V\"", word);
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    return NGX_DECLINED;
}


/*
 * The address of toll_redis: unix:/path, or host[:port] resolved now to
 * a numeric one (the first of its addresses).
 */

static char *
ngx_http_toll_redis_address(ngx_conf_t *cf, ngx_http_toll_redis_conf_t *rc,
    ngx_str_t *addr)
{
    size_t  len;

    if (addr->len > sizeof("unix:") - 1
        && ngx_strncmp(addr->data, "unix:", sizeof("unix:") - 1) == 0)
    {
        len = addr->len - (sizeof("unix:") - 1);

        if (len >= sizeof(((struct sockaddr_un *) 0)->sun_path)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "redis socket path \"%V\" is too long",
                               addr);
            return NGX_CONF_ERROR;
        }

        rc->host = ngx_pnalloc(cf->pool, len + 1);
        if (rc->host == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_cpystrn(rc->host, addr->data + sizeof("unix:") - 1, len + 1);
        rc->unix_socket = 1;

    } else if (ngx_http_toll_redis_resolve(cf, addr, &rc->host, &rc->port)
               != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    rc->kind = TOLL_STORE_SINGLE;

    return NGX_CONF_OK;
}


/* cluster=... and sentinel=...: checked by the parser all three use */

static char *
ngx_http_toll_redis_nodes(ngx_conf_t *cf, ngx_http_toll_redis_conf_t *rc,
    ngx_str_t *addr, u_char *master)
{
    u_char              *p, text[TOLL_ADDR_TEXT_LEN_MAX + 1];
    char                 err[256];
    ngx_str_t            s;
    ngx_uint_t           i;
    toll_addr_t         *a;
    toll_store_spec_t   *spec;

    spec = ngx_palloc(cf->temp_pool, sizeof(toll_store_spec_t));
    if (spec == NULL) {
        return NGX_CONF_ERROR;
    }

    if (toll_store_spec_parse(spec, (char *) addr->data, (char *) master, 0,
                              err, sizeof(err))
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", err);
        return NGX_CONF_ERROR;
    }

    if (spec->n > NGX_HTTP_TOLL_REDIS_SEEDS_MAX) {
        return "has too many addresses";
    }

    rc->kind = spec->kind;
    rc->nseeds = spec->n;

    for (i = 0; i < spec->n; i++) {
        a = &spec->addr[i];

        p = ngx_snprintf(text, sizeof(text), a->ipv6 ? "[%s]:%d" : "%s:%d",
                         a->host, a->port);
        s.data = text;
        s.len = p - text;

        if (ngx_http_toll_redis_resolve(cf, &s, &rc->seeds[i].host,
                                        &rc->seeds[i].port)
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    if (master != NULL) {
        rc->master.len = ngx_strlen(master);
        rc->master.data = master;
    }

    return NGX_CONF_OK;
}


/* host:port resolved now to a numeric address (the first of them) */

static char *
ngx_http_toll_redis_resolve(ngx_conf_t *cf, ngx_str_t *addr, u_char **host,
    int *port)
{
    size_t     len;
    ngx_url_t  u;

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = *addr;
    u.default_port = 6379;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%s in redis address \"%V\"",
                           u.err ? u.err : "no address", &u.url);
        return NGX_CONF_ERROR;
    }

    if (u.uri.len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid redis address \"%V\"", &u.url);
        return NGX_CONF_ERROR;
    }

    *host = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
    if (*host == NULL) {
        return NGX_CONF_ERROR;
    }

    len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen,
                        *host, NGX_SOCKADDR_STRLEN, 0);
    (*host)[len] = '\0';
    *port = ngx_inet_get_port(u.addrs[0].sockaddr);

    return NGX_CONF_OK;
}


static char *
ngx_http_toll_zone_size(ngx_conf_t *cf, void *post, void *data)
{
    size_t  *size = data;

    if (*size < NGX_HTTP_TOLL_ZONE_SIZE_MIN) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"toll_zone\" of %uz bytes is too small, "
                           "the minimum is %uz",
                           *size, (size_t) NGX_HTTP_TOLL_ZONE_SIZE_MIN);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}
