/*
 * toll: limits per buyer.
 *
 * The subject of a buyer's limits names its plan as well as the buyer:
 * two keys of one buyer with different plans then count in two sets of
 * buckets, each of its plan's size, instead of one bucket read with two
 * capacities (a bucket's tat and a window's slots mean nothing under
 * another plan's rate).  The prefix "b:" keeps a buyer from ever being
 * read as a key id, which cannot hold a colon, or as an address ("ip:").
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_limit.h"
#include "ngx_http_toll_limit_int.h"
#include "ngx_http_toll_buyer.h"


#define NGX_HTTP_TOLL_BUYER_SUBJECT_PREFIX  "b:"


ngx_uint_t
ngx_http_toll_buyer_limited(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    ngx_http_toll_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);

    /* a record without an owner (written by hand) keeps its own limits */
    return lcf->limit_key == NGX_HTTP_TOLL_LIMIT_KEY_BUYER
           && ctx->key.owner.len > 0;
}


size_t
ngx_http_toll_buyer_subject(u_char *buf, ngx_str_t *plan, ngx_str_t *buyer)
{
    size_t   plan_len, buyer_len;
    u_char  *p;

    /* both were checked when read (toll_plan_valid, toll_owner_valid);
       the bounds keep the buffer safe whatever a record held */
    plan_len = ngx_min(plan->len, TOLL_PLAN_LEN_MAX);
    buyer_len = ngx_min(buyer->len, TOLL_OWNER_LEN_MAX);

    p = ngx_cpymem(buf, NGX_HTTP_TOLL_BUYER_SUBJECT_PREFIX,
                   sizeof(NGX_HTTP_TOLL_BUYER_SUBJECT_PREFIX) - 1);
    p = ngx_cpymem(p, plan->data, plan_len);
    *p++ = ':';
    p = ngx_cpymem(p, buyer->data, buyer_len);

    return p - buf;
}
