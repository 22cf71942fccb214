/*
 * toll: credentials to key record.
 */

#ifndef _NGX_HTTP_TOLL_AUTH_H_INCLUDED_
#define _NGX_HTTP_TOLL_AUTH_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"


/*
 * Decides who the caller is.  Returns NGX_OK when authenticated, NGX_AGAIN
 * when parked on a Redis lookup (the request is resumed through its write
 * event), NGX_ERROR, or the refusal's status with ctx->auth_status set:
 * NGX_HTTP_BAD_REQUEST, NGX_HTTP_UNAUTHORIZED or
 * NGX_HTTP_SERVICE_UNAVAILABLE.
 */
ngx_int_t ngx_http_toll_auth(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx);

/*
 * Rewrites the request headers for the upstream: removes every X-Toll-*
 * header the client sent (and those with the billing headers' prefix),
 * and its credential unless toll_pass_credentials is on; adds
 * X-Toll-Buyer, X-Toll-Key-Id and X-Toll-Plan.
 */
ngx_int_t ngx_http_toll_auth_forward(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_loc_conf_t *lcf);

/* a refused request: its credential must not reach the log line */
void ngx_http_toll_auth_forget(ngx_http_request_t *r);

/* what the request waits on is no longer wanted: the request is gone */
void ngx_http_toll_auth_cleanup(ngx_http_toll_ctx_t *ctx);


#endif /* _NGX_HTTP_TOLL_AUTH_H_INCLUDED_ */
