/*
 * toll: burst, tier and concurrency limits.
 *
 * Plans are parsed here; each request's limits are decided in the shared
 * zone, whose state every worker pushes to Redis and reads back on a timer
 * (toll_limit_sync), so that nodes sharing a Redis keep one count.  A
 * strict plan asks Redis for every request instead.
 */

#ifndef _NGX_HTTP_TOLL_LIMIT_H_INCLUDED_
#define _NGX_HTTP_TOLL_LIMIT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"
#include "toll_limit.h"


/* toll_limit */
#define NGX_HTTP_TOLL_LIMIT_OFF          0
#define NGX_HTTP_TOLL_LIMIT_ON           1
#define NGX_HTTP_TOLL_LIMIT_DRY_RUN      2

/* toll_limit_headers */
#define NGX_HTTP_TOLL_HEADERS_IETF       0x01
#define NGX_HTTP_TOLL_HEADERS_X          0x02

/* toll_limit_key: whose limits a key's requests count in */
#define NGX_HTTP_TOLL_LIMIT_KEY_KEY      0
#define NGX_HTTP_TOLL_LIMIT_KEY_BUYER    1

extern ngx_conf_enum_t  ngx_http_toll_limit_keys[];


typedef enum {
    NGX_HTTP_TOLL_RATE_BUCKET = 0,
    NGX_HTTP_TOLL_RATE_WINDOW,
    NGX_HTTP_TOLL_RATE_CONCURRENCY
} ngx_http_toll_rate_kind_e;


typedef struct {
    ngx_http_toll_rate_kind_e  kind;
    toll_unit_e                unit;
    int64_t                    count;       /* per unit, or in flight */
    int64_t                    burst;       /* a bucket's capacity */

    /* worked out once at configuration, unless a key overrides count */
    toll_bucket_conf_t         bc;
    toll_window_conf_t         wc;
    ngx_str_t                  policy;      /* "name";q=..;w=.. */
    ngx_str_t                  ip_policy;   /* "ip-name";q=..;w=.. */
    unsigned                   ready:1;
} ngx_http_toll_rate_t;


/* a bucket, a window per unit, a concurrency cap */
#define NGX_HTTP_TOLL_PLAN_RATES_MAX     (TOLL_UNIT_N + 2)

typedef struct ngx_http_toll_plan_s {
    ngx_str_t                  name;
    ngx_http_toll_rate_t       rates[NGX_HTTP_TOLL_PLAN_RATES_MAX];
    ngx_uint_t                 nrates;
    unsigned                   strict:1;
    unsigned                   unlimited:1;
} ngx_http_toll_plan_t;


/* $toll_limit_status */
typedef enum {
    NGX_HTTP_TOLL_LIMIT_STATUS_NONE = 0,
    NGX_HTTP_TOLL_LIMIT_STATUS_PASSED,
    NGX_HTTP_TOLL_LIMIT_STATUS_REJECTED,
    NGX_HTTP_TOLL_LIMIT_STATUS_REJECTED_DRY_RUN,
    NGX_HTTP_TOLL_LIMIT_STATUS_UNLIMITED
} ngx_http_toll_limit_status_e;


char *ngx_http_toll_plan_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_toll_limit_ip_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_toll_limit_headers_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
char *ngx_http_toll_limit_status_post(ngx_conf_t *cf, void *post,
    void *data);

/* resolves plan names once the http block is read */
char *ngx_http_toll_limit_init_main_conf(ngx_conf_t *cf,
    ngx_http_toll_main_conf_t *mcf);
char *ngx_http_toll_limit_merge_loc_conf(ngx_conf_t *cf,
    ngx_http_toll_loc_conf_t *prev, ngx_http_toll_loc_conf_t *conf);

/* the rate-limit headers of a gated answer (from the header filter) */
ngx_int_t ngx_http_toll_limit_headers_out(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx);
ngx_int_t ngx_http_toll_limit_init_process(ngx_cycle_t *cycle);
void ngx_http_toll_limit_exit_process(ngx_cycle_t *cycle);

/*
 * The per-address limit of a location, before authentication; with
 * "unauthenticated", only asks whether the address is over its limit
 * (peek) or counts a failed authentication (!peek).  NGX_OK: go on;
 * NGX_DECLINED: refused, ctx says why; NGX_ERROR.
 */
ngx_int_t ngx_http_toll_limit_ip(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_uint_t peek);

/*
 * The key's plan.  NGX_OK: admitted; NGX_AGAIN: parked on Redis (strict);
 * NGX_DECLINED: refused, ctx says why; NGX_ERROR.
 */
ngx_int_t ngx_http_toll_limit_key(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx);

/* sends the refusal of a limit; returns what a content handler would */
ngx_int_t ngx_http_toll_limit_refuse(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx);

/* the request ends: what it holds in flight is given back */
void ngx_http_toll_limit_release(ngx_http_toll_ctx_t *ctx);

ngx_str_t *ngx_http_toll_limit_status_name(ngx_http_toll_ctx_t *ctx);


#endif /* _NGX_HTTP_TOLL_LIMIT_H_INCLUDED_ */
