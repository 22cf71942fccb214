/*
 * toll: a payment and metering gate for APIs.
 *
 * Types shared by the rooms of the module: configuration, the per-request
 * context and the decoded key record.
 */

#ifndef _NGX_HTTP_TOLL_MODULE_H_INCLUDED_
#define _NGX_HTTP_TOLL_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_util.h"
#include "toll_key.h"
#include "toll_names.h"


#define NGX_HTTP_TOLL_VERSION          "0.1.0"

/*
 * The rooms' own types that the configuration and the context point at;
 * each is defined in its room's header (or file), and only pointed at
 * here, so that this header includes none of them.
 */
typedef struct ngx_http_toll_plan_s         ngx_http_toll_plan_t;
typedef struct ngx_http_toll_service_s      ngx_http_toll_service_t;
typedef struct ngx_http_toll_counters_s     ngx_http_toll_counters_t;
typedef struct ngx_http_toll_counters_sh_s  ngx_http_toll_counters_sh_t;
typedef struct ngx_http_toll_meter_open_s   ngx_http_toll_meter_open_t;
typedef struct ngx_http_toll_redis_cmd_s    ngx_http_toll_redis_cmd_t;
typedef struct ngx_http_toll_limit_ctx_s    ngx_http_toll_limit_ctx_t;
typedef struct ngx_http_toll_quota_claim_s  ngx_http_toll_quota_claim_t;
typedef struct ngx_http_toll_prepaid_ask_s  ngx_http_toll_prepaid_ask_t;
typedef struct ngx_http_toll_cap_call_s     ngx_http_toll_cap_call_t;


/* cluster= and sentinel= addresses: as TOLL_CLUSTER_SEEDS_MAX */
#define NGX_HTTP_TOLL_REDIS_SEEDS_MAX  16


typedef struct {
    u_char                    *host;          /* numeric, NUL-terminated */
    int                        port;
} ngx_http_toll_redis_seed_t;


typedef struct {
    ngx_str_t                  addr_text;     /* as configured, for logs */
    /* lib/toll_store.h's TOLL_STORE_SINGLE, _CLUSTER, _SENTINEL */
    ngx_uint_t                 kind;
    /* one Redis */
    u_char                    *host;          /* numeric address or path */
    int                        port;
    unsigned                   unix_socket:1;
    /* a Cluster's seeds, or the sentinels */
    ngx_http_toll_redis_seed_t seeds[NGX_HTTP_TOLL_REDIS_SEEDS_MAX];
    ngx_uint_t                 nseeds;
    ngx_str_t                  master;        /* NUL-terminated */
    ngx_msec_t                 timeout;
    ngx_str_t                  password;
    ngx_int_t                  db;
    /* money writes wait for this many replicas, this long at most */
    ngx_uint_t                 replicas;
    ngx_msec_t                 replica_wait;
} ngx_http_toll_redis_conf_t;


/*
 * What a call's units cost (toll_service and toll_route: unit_price=,
 * units_header=, max_units=, keep_units_header=), parsed and used by the
 * units room (ngx_http_toll_units.c).
 */
typedef struct {
    int64_t                    unit_nanos;    /* 1e-9 of the currency;
                                                 0: no units */
    int64_t                    max_units;
    int64_t                    most_micros;   /* max_units x unit price */
    ngx_str_t                  header;        /* empty: a plugin reports */
    ngx_flag_t                 keep_header;   /* for the client too */
} ngx_http_toll_units_conf_t;


/*
 * A toll_service, parsed by the quota room (ngx_http_toll_quota.c) and
 * read by the rooms that price, meter and count its calls.
 */
struct ngx_http_toll_service_s {
    ngx_str_t                  name;
    ngx_str_t                  provider;
    ngx_str_t                  currency;
    int64_t                    price_micros;  /* 1e-6 of the currency */
    int64_t                    free_calls;    /* per buyer; 0: none */
    ngx_http_toll_units_conf_t units;
    ngx_array_t               *routes;        /* ngx_http_toll_route_t */
    ngx_http_toll_counters_t  *counters;      /* its counters in the zone;
                                                 NULL: none */
};


typedef struct {
    ngx_http_toll_redis_conf_t   redis;
    ngx_flag_t                   redis_set;

    ngx_shm_zone_t              *shm_zone;
    size_t                       zone_size;

    ngx_msec_t                   cache_ttl;
    ngx_msec_t                   cache_negative_ttl;

    ngx_int_t                    request_id_index;

    /* indexes of $http_ variables of headers the gate rewrites */
    ngx_array_t                 *stripped_variables;

    ngx_array_t                 *plans;       /* ngx_http_toll_plan_t */
    ngx_str_t                    default_plan_name;
    ngx_http_toll_plan_t        *default_plan;
    ngx_msec_t                   limit_sync;
    ngx_msec_t                   meter_flush;
    ngx_uint_t                   free_lease;
    ngx_uint_t                   prepaid_lease;  /* in calls' prices */
    ngx_msec_t                   prepaid_idle;
    ngx_msec_t                   prepaid_recheck;
    ngx_msec_t                   prepaid_reclaim;
    ngx_array_t                 *services;    /* every toll_service */
    ngx_array_t                 *jwt_keys;    /* toll_jwt_key, each key */
    ngx_array_t                 *jwks;        /* toll_jwt_jwks, each set
                                                 (ngx_http_toll_jwks.c) */
    ngx_shm_zone_t              *jwks_zone;   /* their gauges; with the
                                                 cycle's configuration, so
                                                 a failed reload leaves no
                                                 pointer into its memory */

    ngx_http_toll_counters_sh_t *counters;    /* the counters in the
                                                 zone */
    ngx_array_t                 *counters_services; /* their slots
                                                       (ngx_http_toll_
                                                       counters_t *), each
                                                       once, in order */
    ngx_uint_t                   metrics_locations; /* toll_metrics and
                                                       toll_dashboard */
    ngx_array_t                 *plugins;     /* toll_plugin_load: ngx_http_
                                                 toll_plugin_t */
    ngx_uint_t                   plugins_used; /* a toll_plugin somewhere */
    ngx_array_t                 *key_header_names; /* every toll_key_header
                                                      name (ngx_str_t, lower
                                                      case); NULL: none */
    ngx_uint_t                   query_tokens; /* a toll_query_token on
                                                  somewhere */
} ngx_http_toll_main_conf_t;


typedef struct {
    ngx_flag_t                   enable;
    ngx_flag_t                   pass_credentials;
    ngx_uint_t                   log_level;

    ngx_uint_t                   limit;         /* off, on, dry_run */
    ngx_uint_t                   limit_status;
    ngx_uint_t                   limit_log_level;
    ngx_uint_t                   limit_headers; /* IETF | X, or 0 */
    ngx_str_t                    limit_ip_name;
    ngx_http_toll_plan_t        *limit_ip_plan;
    ngx_flag_t                   limit_ip_unauthenticated;
    ngx_uint_t                   limit_key;     /* toll_limit_key: key,
                                                   buyer */
    ngx_flag_t                   buyer_plan;    /* toll_buyer_plan */

    ngx_http_toll_service_t     *service;       /* toll_service, or NULL */
    ngx_flag_t                   usage;         /* toll_usage here */
    ngx_flag_t                   charge_errors;
    uint64_t                    *charge_status; /* toll_charge_status: a
                                                   bit per status 0..639;
                                                   NULL: not set here */
    ngx_uint_t                   free_tier_fallback; /* 0 closed, 1 paid */
    ngx_flag_t                   prepaid;       /* toll_prepaid */
    ngx_uint_t                   prepaid_fallback; /* 0 closed, 1 open */
    ngx_flag_t                   spend_caps;    /* toll_spend_caps */
    ngx_uint_t                   spend_caps_fallback; /* 0 closed,
                                                        1 open */
    ngx_flag_t                   billing_headers;
    ngx_str_t                    billing_prefix;
    ngx_str_t                    billing_prefix_lc; /* lower case, '-' for
                                                      '_'; empty: X-Toll- */
    ngx_str_t                   *billing_names; /* prefix + each name */

    ngx_flag_t                   jwt;           /* toll_jwt */
    ngx_str_t                    jwt_issuer;    /* empty: not checked */
    ngx_str_t                    jwt_audience;  /* empty: not checked */
    time_t                       jwt_leeway;    /* seconds */
    ngx_flag_t                   jwt_require_exp;
    ngx_str_t                    jwt_buyer_claim;
    ngx_str_t                    jwt_plan_claim; /* empty: none */
    ngx_str_t                    jwt_plan_prefix;
    ngx_str_t                    jwt_default_plan;
    ngx_msec_t                   jwt_cache_ttl;
    u_char                       jwt_policy[32]; /* SHA-256 of the keys
                                                    and the rules above */
    ngx_array_t                 *plugins;       /* toll_plugin: ngx_http_
                                                   toll_plugin_use_t;
                                                   NULL: none */
    ngx_uint_t                   error_format;  /* NGX_HTTP_TOLL_ERROR_* */
    ngx_str_t                    error_type_base; /* empty: about:blank */
    ngx_str_t                    error_trace_header; /* empty: none */
    ngx_array_t                 *error_codes;   /* toll_error_code: toll's
                                                   code and the platform's
                                                   name; NULL: none */

    /* the authz room (ngx_http_toll_authz.c); NULL: not set here */
    ngx_array_t                 *require_scopes; /* ngx_str_t, all */
    ngx_array_t                 *require_roles;  /* ngx_str_t, any one */
    ngx_array_t                 *jwt_scope_claims; /* ngx_str_t */
    ngx_array_t                 *jwt_role_claims;  /* ngx_str_t */
    ngx_array_t                 *key_headers;   /* toll_key_header:
                                                   ngx_str_t, lower case;
                                                   NULL: X-API-Key */
    uint64_t                     credential_lens; /* a bit per length of
                                                     Authorization's and
                                                     the key headers'
                                                     names: most headers
                                                     are told apart by it */
    ngx_array_t                 *import_prefixes; /* toll_key_import_
                                                     prefix: ngx_str_t;
                                                     NULL: none */
    ngx_flag_t                   jwt_with_key;  /* toll_jwt_with_key */
    ngx_flag_t                   query_token;   /* toll_query_token */
    ngx_str_t                    query_token_name;
} ngx_http_toll_loc_conf_t;


/* the outcome of authentication, as $toll_auth_status spells it */
typedef enum {
    NGX_HTTP_TOLL_AUTH_NONE = 0,
    NGX_HTTP_TOLL_AUTH_OK,
    NGX_HTTP_TOLL_AUTH_MISSING,
    NGX_HTTP_TOLL_AUTH_MALFORMED,
    NGX_HTTP_TOLL_AUTH_AMBIGUOUS,
    NGX_HTTP_TOLL_AUTH_UNKNOWN,
    NGX_HTTP_TOLL_AUTH_WRONG_SECRET,
    NGX_HTTP_TOLL_AUTH_REVOKED,
    NGX_HTTP_TOLL_AUTH_EXPIRED,
    NGX_HTTP_TOLL_AUTH_STORE_UNAVAILABLE,
    NGX_HTTP_TOLL_AUTH_CLAIMS           /* a JWT whose claims are refused */
} ngx_http_toll_auth_status_e;


/* what the gate decided about a request, as the "decision" label says */
typedef enum {
    NGX_HTTP_TOLL_DECISION_PASSED = 0,
    NGX_HTTP_TOLL_DECISION_UNAUTHORIZED,
    NGX_HTTP_TOLL_DECISION_BAD_REQUEST,
    NGX_HTTP_TOLL_DECISION_RATE_LIMITED,
    NGX_HTTP_TOLL_DECISION_QUOTA_EXCEEDED,
    NGX_HTTP_TOLL_DECISION_PAYMENT_REQUIRED,
    NGX_HTTP_TOLL_DECISION_SPEND_CAP_EXCEEDED,
    NGX_HTTP_TOLL_DECISION_STORE_UNAVAILABLE,
    NGX_HTTP_TOLL_DECISION_ERROR,
    NGX_HTTP_TOLL_DECISION_CLIENT_CLOSED,
    NGX_HTTP_TOLL_DECISION_PLUGIN_REFUSED,
    NGX_HTTP_TOLL_DECISION_FORBIDDEN,     /* toll_require */
    NGX_HTTP_TOLL_DECISIONS
} ngx_http_toll_decision_e;


/* a key record, as cached in the zone or read from Redis */
typedef struct {
    ngx_str_t                    key_id;
    ngx_str_t                    owner;
    ngx_str_t                    plan;          /* empty: none */
    int64_t                      rate_limit;    /* requests/minute; -1 none */
    time_t                       expires_at;    /* unix seconds; 0 never */
    ngx_uint_t                   role;          /* toll_role_e */
    ngx_str_t                    scopes;        /* valid tokens, space-
                                                   separated; empty: none */
    ngx_str_t                    roles;         /* the same: the key's
                                                   role, a JWT's roles */
    unsigned                     found:1;
    unsigned                     revoked:1;
    u_char                       secret_hash[TOLL_SECRET_HASH_LEN];
} ngx_http_toll_key_t;


typedef enum {
    NGX_HTTP_TOLL_STATE_NEW = 0,
    NGX_HTTP_TOLL_STATE_WAITING,      /* parked on a Redis lookup */
    NGX_HTTP_TOLL_STATE_RESUMED,      /* the lookup has answered */
    NGX_HTTP_TOLL_STATE_PASSED,       /* gate passed; internal redirects
                                         must not run it again */
    NGX_HTTP_TOLL_STATE_REJECTED
} ngx_http_toll_state_e;


typedef struct {
    ngx_http_request_t          *request;
    ngx_http_toll_state_e        state;
    ngx_http_toll_auth_status_e  auth_status;
    const char                  *auth_detail;  /* why, for the log */

    /* the presented credential; key_id points into the request header */
    ngx_str_t                    key_id;
    u_char                       presented_hash[TOLL_SECRET_HASH_LEN];

    ngx_http_toll_key_t          key;
    ngx_http_toll_redis_cmd_t   *cmd;         /* pending lookup, if any */
    ngx_http_toll_limit_ctx_t   *limit;       /* limits decided, if any */

    /* what the call costs, decided when it passes */
    ngx_http_toll_service_t     *service;
    int64_t                      price_micros;  /* 1e-6 of the currency */
    int64_t                      amount_micros; /* charged: 0 when free */
    u_char                       usage_id[32];  /* hex */
    int64_t                      latency_ms;    /* to the answer's headers */
    int64_t                      free_remaining;
    int64_t                      meter_counts[TOLL_USAGE_COUNTS];
    ngx_http_toll_meter_open_t  *meter_open;  /* the call's record of
                                                 counts in the zone, until
                                                 the answer's last byte or
                                                 the log phase ends it */
    off_t                        meter_sent;  /* of the answer's body,
                                                 past the gate's filter */
    ngx_http_toll_quota_claim_t *claim;       /* a lease asked for */
    int64_t                      hold_micros;   /* held from the buyer's
                                                   balance: the most the
                                                   call can cost */
    int64_t                      balance_micros; /* what the buyer has
                                                    left, as the node
                                                    knows; -1: unknown */
    ngx_http_toll_prepaid_ask_t *prepaid_ask; /* a lease asked for */
    void                        *prepaid_node; /* the balance's node in
                                                  the zone, pinned while
                                                  the call holds */
    ngx_http_toll_cap_call_t    *cap;         /* its spend caps' hold;
                                                 NULL: none asked */
    uint64_t                     units;       /* reported by the upstream
                                                 or a plugin */
    ngx_http_toll_units_conf_t  *units_conf;  /* the call's units' price;
                                                 NULL: none */
    int64_t                      base_micros; /* a units call's price
                                                 before its units */
    ngx_http_toll_service_t     *counters_service; /* the location's
                                                      service, for the
                                                      counters; NULL:
                                                      none */
    unsigned                     decision:4;  /* of a refusal */
    unsigned                     counted:1;   /* in the metrics */
    unsigned                     store_failed:1;
    unsigned                     authenticated:1;
    unsigned                     lookup_refused:1; /* no key lookups: the
                                                      address is over its
                                                      limit */
    unsigned                     priced:1;
    unsigned                     free_call:1;
    unsigned                     metered:1;
    unsigned                     meter_admitted:1;
    unsigned                     billed:1;
    unsigned                     forwarded:1; /* identity headers set */
    unsigned                     free_tier_failed:1;
    unsigned                     prepaid_held:1;   /* hold_micros taken */
    unsigned                     prepaid_state:2;  /* ..._PREPAID_* */
    unsigned                     units_reported:1;
    unsigned                     units_charged:1; /* its units decide its
                                                     amount */
    ngx_str_t                    jwt_buyer;   /* a JWT's buyer, when it came
                                                 with an API key
                                                 (toll_jwt_with_key) */
} ngx_http_toll_ctx_t;


extern ngx_module_t  ngx_http_toll_module;



#endif /* _NGX_HTTP_TOLL_MODULE_H_INCLUDED_ */
