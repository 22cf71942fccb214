/*
 * toll: what the rooms of the price share among themselves.
 *
 * The configuration (ngx_http_toll_quota_conf.c) names the billing
 * headers that the pricing (ngx_http_toll_quota.c) sends; the pricing
 * asks the free tier (ngx_http_toll_quota_free.c) for a free call and
 * gives one back when the call is not charged after all.  Nothing outside
 * these three files includes this header.
 */

#ifndef _NGX_HTTP_TOLL_QUOTA_INT_H_INCLUDED_
#define _NGX_HTTP_TOLL_QUOTA_INT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"


/* the billing headers after the prefix, indexed as billing_names */
typedef enum {
    NGX_HTTP_TOLL_BILLING_USAGE_ID = 0,
    NGX_HTTP_TOLL_BILLING_AMOUNT,
    NGX_HTTP_TOLL_BILLING_FREE_TIER,
    NGX_HTTP_TOLL_BILLING_FREE_REMAINING,
    NGX_HTTP_TOLL_BILLING_LATENCY_MS,
    NGX_HTTP_TOLL_BILLING_BALANCE,
    NGX_HTTP_TOLL_BILLING_UNITS,
    NGX_HTTP_TOLL_BILLING_N
} ngx_http_toll_billing_e;


/*
 * a free call from the node's lease, or from Redis: NGX_OK, NGX_AGAIN,
 * NGX_HTTP_SERVICE_UNAVAILABLE or NGX_ERROR (ngx_http_toll_quota_free.c)
 */
ngx_int_t ngx_http_toll_quota_free(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_service_t *svc);

/* a free call that was not charged after all goes back to the lease */
void ngx_http_toll_quota_give_back(ngx_http_toll_ctx_t *ctx);

/* toll_charge_status's bits: one per status 0..639 */
#define NGX_HTTP_TOLL_STATUS_MAX     640
#define NGX_HTTP_TOLL_STATUS_WORDS   (NGX_HTTP_TOLL_STATUS_MAX / 64)

/*
 * Whether an answer with this status is charged: as toll_charge_status
 * lists, or where none applies, any status below 500, and 5xx too with
 * toll_charge_errors on.
 */
ngx_uint_t ngx_http_toll_quota_charged(ngx_http_toll_loc_conf_t *lcf,
    ngx_uint_t status);


#endif /* _NGX_HTTP_TOLL_QUOTA_INT_H_INCLUDED_ */
