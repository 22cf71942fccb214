/*
 * toll: a buyer's usage, answered to the buyer: what its two files
 * share (ngx_http_toll_usage.c, the answer; ngx_http_toll_usage_caps.c,
 * the spend caps in it).
 */

#ifndef _NGX_HTTP_TOLL_USAGE_INT_H_INCLUDED_
#define _NGX_HTTP_TOLL_USAGE_INT_H_INCLUDED_

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <hiredis/hiredis.h>

#include "ngx_http_toll_module.h"
#include "toll_names.h"


typedef struct {
    ngx_str_t                  service;
    ngx_str_t                  provider;
    int64_t                    counts[TOLL_USAGE_COUNTS];
} ngx_http_toll_usage_row_t;


/* a spend cap that applies to the caller, as the answer shows it */
typedef struct {
    ngx_str_t                  currency;
    ngx_uint_t                 key_scope;     /* 0: the buyer's */
    ngx_uint_t                 monthly;       /* 0: daily */
    int64_t                    cap;           /* micro-units */
    int64_t                    used;
} ngx_http_toll_usage_cap_t;


#define NGX_HTTP_TOLL_USAGE_DAY_LEN  TOLL_NAME_DAY_LEN


typedef struct {
    ngx_http_request_t        *request;
    ngx_http_toll_redis_cmd_t *cmd;
    ngx_int_t                  status;        /* 0: waiting */
    ngx_array_t                rows;          /* ngx_http_toll_usage_row_t */
    ngx_array_t                unsent;        /* ngx_http_toll_meter_
                                                 unsent_t */
    ngx_array_t                balances;      /* toll_usage_balance_t */
    ngx_array_t                caps;          /* ngx_http_toll_usage_cap_t */
    ngx_array_t                leases;        /* ngx_http_toll_cap_lease_t,
                                                 before the ask */
    u_char                     today[NGX_HTTP_TOLL_USAGE_DAY_LEN];
    u_char                     tomorrow[NGX_HTTP_TOLL_USAGE_DAY_LEN];
    u_char                     month[NGX_HTTP_TOLL_USAGE_DAY_LEN];
    u_char                     month_end[NGX_HTTP_TOLL_USAGE_DAY_LEN];
} ngx_http_toll_usage_ctx_t;


/* today, tomorrow, the month's start and end (UTC, the node's clock) */
void ngx_http_toll_usage_days(ngx_http_toll_usage_ctx_t *uctx);

/* the caps of the script's answer, less what this nginx leased unspent */
ngx_int_t ngx_http_toll_usage_caps(ngx_http_toll_usage_ctx_t *uctx,
    ngx_http_toll_ctx_t *ctx, redisReply *caps);

/* the "caps" member: its length, then written at p */
size_t ngx_http_toll_usage_caps_len(ngx_http_toll_usage_ctx_t *uctx,
    ngx_http_toll_ctx_t *ctx);
u_char *ngx_http_toll_usage_caps_json(u_char *p,
    ngx_http_toll_usage_ctx_t *uctx, ngx_http_toll_ctx_t *ctx);


#endif /* _NGX_HTTP_TOLL_USAGE_INT_H_INCLUDED_ */
