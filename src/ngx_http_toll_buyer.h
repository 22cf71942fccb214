/*
 * toll: limits per buyer (toll_limit_key buyer).
 *
 * With toll_limit_key buyer, a key's requests count in the limits of its
 * buyer (the key record's owner, or a JWT's buyer claim) rather than of
 * the key, so that all keys of one buyer share one plan's buckets,
 * windows and concurrency, in the zone and in Redis.
 */

#ifndef _NGX_HTTP_TOLL_BUYER_H_INCLUDED_
#define _NGX_HTTP_TOLL_BUYER_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"


/*
 * With toll_buyer_plan on, a caller whose credential names no plan takes
 * its buyer record's ("toll:buyer:{<buyer>}" plan), cached in the zone
 * like a key record.  NGX_OK: ctx->key.plan is the buyer's, if it has
 * one; NGX_AGAIN: parked on the lookup, which resumes the request once;
 * NGX_ERROR.
 */
ngx_int_t ngx_http_toll_buyer_plan(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_limit_ctx_t *lctx);

/* 1: the request's limits are its buyer's, 0: its key's */
ngx_uint_t ngx_http_toll_buyer_limited(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx);

/*
 * Writes "b:<plan>:<buyer>" into buf, which has room for
 * NGX_HTTP_TOLL_LIMIT_SUBJECT_MAX bytes; returns its length.
 */
size_t ngx_http_toll_buyer_subject(u_char *buf, ngx_str_t *plan,
    ngx_str_t *buyer);


#endif /* _NGX_HTTP_TOLL_BUYER_H_INCLUDED_ */
