/*
 * toll: what a client reads of its limits.
 *
 * The RateLimit-Policy and RateLimit headers (and the X-RateLimit-*
 * family) of a gated answer, the problem answer of a refusal, and the
 * value of $toll_limit_status.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_limit.h"
#include "ngx_http_toll_limit_int.h"
#include "ngx_http_toll_problem.h"


static ngx_int_t ngx_http_toll_limit_headers(ngx_http_request_t *r,
    ngx_http_toll_limit_ctx_t *lctx, ngx_uint_t families);
static ngx_int_t ngx_http_toll_limit_headers_ietf(ngx_http_request_t *r,
    ngx_http_toll_limit_ctx_t *lctx, u_char *policy, u_char *state);
static ngx_int_t ngx_http_toll_limit_headers_x(ngx_http_request_t *r,
    ngx_http_toll_limit_ctx_t *lctx, u_char *b);
#define ngx_http_toll_limit_header_add(r, nm, v, n)                          \
    ngx_http_toll_header_push(r, (u_char *) nm, sizeof(nm) - 1, v, n)


static ngx_str_t  ngx_http_toll_limit_status_names[] = {
    ngx_null_string,
    ngx_string("PASSED"),
    ngx_string("REJECTED"),
    ngx_string("REJECTED_DRY_RUN"),
    ngx_string("UNLIMITED")
};


ngx_int_t
ngx_http_toll_limit_refuse(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    u_char                      name[32], *p;
    int64_t                     retry_ms;
    ngx_http_toll_limit_t      *l;
    ngx_http_toll_loc_conf_t   *lcf;
    ngx_http_toll_problem_ext_t ext;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);
    l = &ctx->limit->limits[ctx->limit->violated];

    p = ngx_http_toll_limit_policy_name(name, l);

    retry_ms = ngx_max(l->res.retry_ms, 1);

    ngx_memzero(&ext, sizeof(ngx_http_toll_problem_ext_t));

    ext.status = lcf->limit_status;
    ext.policy.data = name;
    ext.policy.len = p - name;
    ext.retry_after = (retry_ms + 999) / 1000;

    return ngx_http_toll_problem_send_ext(r,
               l->rate->kind == NGX_HTTP_TOLL_RATE_CONCURRENCY
               ? NGX_HTTP_TOLL_PROBLEM_CONCURRENCY_LIMITED
               : NGX_HTTP_TOLL_PROBLEM_RATE_LIMITED,
               &ext);
}


ngx_str_t *
ngx_http_toll_limit_status_name(ngx_http_toll_ctx_t *ctx)
{
    if (ctx->limit == NULL) {
        return &ngx_http_toll_limit_status_names[0];
    }

    return &ngx_http_toll_limit_status_names[ctx->limit->status];
}


u_char *
ngx_http_toll_limit_policy_item(u_char *p, ngx_http_toll_limit_t *l)
{
    *p++ = '"';
    p = ngx_http_toll_limit_policy_name(p, l);
    *p++ = '"';

    switch (l->rate->kind) {

    case NGX_HTTP_TOLL_RATE_BUCKET:
        p = ngx_http_toll_format_int(ngx_cpymem(p, ";q=", 3), l->rate->burst);
        return ngx_http_toll_format_int(ngx_cpymem(p, ";w=", 3),
                   (l->rate->bc.tolerance_ns + 999999999) / 1000000000);

    case NGX_HTTP_TOLL_RATE_WINDOW:
        p = ngx_http_toll_format_int(ngx_cpymem(p, ";q=", 3), l->rate->count);
        return ngx_http_toll_format_int(ngx_cpymem(p, ";w=", 3),
                                       toll_unit_ms[l->rate->unit] / 1000);

    default:
        return ngx_http_toll_format_int(ngx_cpymem(p, ";q=", 3),
                                       l->rate->count);
    }
}

/*
 * The rate-limit headers of a gated answer, 2xx or refusal alike; copies
 * from the upstream are dropped, so that a client reads one account.
 */

ngx_int_t
ngx_http_toll_limit_headers_out(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx)
{
    ngx_uint_t                  i;
    ngx_list_part_t            *part;
    ngx_table_elt_t            *h;
    ngx_http_toll_loc_conf_t   *lcf;

    if (ctx->limit == NULL
        || ctx->limit->status == NGX_HTTP_TOLL_LIMIT_STATUS_NONE
        || ctx->limit->status == NGX_HTTP_TOLL_LIMIT_STATUS_UNLIMITED)
    {
        return NGX_OK;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);

    if (lcf->limit_headers == 0) {
        return NGX_OK;
    }

    part = &r->headers_out.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        /* most headers are told apart by their first letter */

        if (h[i].hash == 0
            || h[i].key.len < sizeof("RateLimit") - 1
            || (ngx_tolower(h[i].key.data[0]) != 'r'
                && ngx_tolower(h[i].key.data[0]) != 'x'))
        {
            continue;
        }

        if ((h[i].key.len >= sizeof("RateLimit") - 1
             && ngx_strncasecmp(h[i].key.data, (u_char *) "RateLimit",
                                sizeof("RateLimit") - 1) == 0)
            || (h[i].key.len >= sizeof("X-RateLimit-") - 1
                && ngx_strncasecmp(h[i].key.data, (u_char *) "X-RateLimit-",
                                   sizeof("X-RateLimit-") - 1) == 0))
        {
            h[i].hash = 0;
        }
    }

    if (ngx_http_toll_limit_headers(r, ctx->limit, lcf->limit_headers)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_toll_limit_headers(ngx_http_request_t *r,
    ngx_http_toll_limit_ctx_t *lctx, ngx_uint_t families)
{
    u_char  *policy, *state, *buf;
    size_t   len;

    if (lctx->nlimits == 0) {
        return NGX_OK;
    }

    /* one allocation for every value; the headers point into it */

    len = lctx->nlimits * (sizeof("\"ip-concurrency\";q=;w=, ") - 1
                           + 2 * NGX_INT64_LEN);

    policy = ngx_pnalloc(r->pool, 2 * len + 5 * NGX_INT64_LEN);
    if (policy == NULL) {
        return NGX_ERROR;
    }

    state = policy + len;
    buf = state + len;

    if ((families & NGX_HTTP_TOLL_HEADERS_IETF)
        && ngx_http_toll_limit_headers_ietf(r, lctx, policy, state)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!(families & NGX_HTTP_TOLL_HEADERS_X)) {
        return NGX_OK;
    }

    return ngx_http_toll_limit_headers_x(r, lctx, buf);
}


/* RateLimit-Policy and RateLimit: an item for each limit */

static ngx_int_t
ngx_http_toll_limit_headers_ietf(ngx_http_request_t *r,
    ngx_http_toll_limit_ctx_t *lctx, u_char *policy, u_char *state)
{
    u_char                 *p, *q;
    ngx_str_t              *pre;
    ngx_uint_t              i;
    ngx_http_toll_limit_t  *l;

    p = policy;
    q = state;

    for (i = 0; i < lctx->nlimits; i++) {
        l = &lctx->limits[i];

        if (i) {
            p = ngx_cpymem(p, ", ", 2);
            q = ngx_cpymem(q, ", ", 2);
        }

        pre = l->ip ? &l->rate->ip_policy : &l->rate->policy;

        if (pre->len) {
            p = ngx_cpymem(p, pre->data, pre->len);

        } else {
            p = ngx_http_toll_limit_policy_item(p, l);
        }

        *q++ = '"';
        q = ngx_http_toll_limit_policy_name(q, l);
        *q++ = '"';

        q = ngx_http_toll_format_int(ngx_cpymem(q, ";r=", 3),
                                    l->res.remaining);

        if (l->rate->kind != NGX_HTTP_TOLL_RATE_CONCURRENCY) {
            q = ngx_http_toll_format_int(ngx_cpymem(q, ";t=", 3),
                                        (l->res.reset_ms + 999) / 1000);
        }
    }

    if (ngx_http_toll_limit_header_add(r, "RateLimit-Policy", policy,
                                       p - policy)
        != NGX_OK
        || ngx_http_toll_limit_header_add(r, "RateLimit", state, q - state)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * X-RateLimit-*: one limit speaks, the window with the fewest left (else
 * the bucket), and the bucket has its Burst pair.  b has room for five
 * numbers.
 */

static ngx_int_t
ngx_http_toll_limit_headers_x(ngx_http_request_t *r,
    ngx_http_toll_limit_ctx_t *lctx, u_char *b)
{
    u_char                 *p;
    ngx_int_t               window, bucket;
    ngx_uint_t              i, from, to;
    ngx_http_toll_limit_t  *l;

    /* the key's limits speak for the request; an address's without */

    from = (lctx->key_first < lctx->nlimits) ? lctx->key_first : 0;
    to = (lctx->key_first < lctx->nlimits) ? lctx->nlimits
                                           : lctx->key_first;

    window = -1;
    bucket = -1;

    for (i = from; i < to; i++) {
        l = &lctx->limits[i];

        if (l->rate->kind == NGX_HTTP_TOLL_RATE_BUCKET) {
            bucket = i;

        } else if (l->rate->kind == NGX_HTTP_TOLL_RATE_WINDOW
                   && (window == -1
                       || l->res.remaining
                          < lctx->limits[window].res.remaining))
        {
            window = i;
        }
    }

    if (window == -1) {
        window = bucket;
    }

    if (window != -1) {
        l = &lctx->limits[window];

        p = ngx_http_toll_format_int(b, l->rate->count);
        if (ngx_http_toll_limit_header_add(r, "X-RateLimit-Limit", b,
                                           p - b)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        b = p;

        p = ngx_http_toll_format_int(b, l->res.remaining);
        if (ngx_http_toll_limit_header_add(r, "X-RateLimit-Remaining", b,
                                           p - b)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        b = p;

        /* epoch seconds, as the platforms the buyers know send it */
        p = ngx_http_toll_format_int(b, ngx_time()
                                         + (l->res.reset_ms + 999) / 1000);
        if (ngx_http_toll_limit_header_add(r, "X-RateLimit-Reset", b,
                                           p - b)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        b = p;
    }

    if (bucket != -1) {
        l = &lctx->limits[bucket];

        p = ngx_http_toll_format_int(b, l->rate->burst);
        if (ngx_http_toll_limit_header_add(r, "X-RateLimit-Burst-Limit", b,
                                           p - b)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        b = p;

        p = ngx_http_toll_format_int(b, l->res.remaining);
        if (ngx_http_toll_limit_header_add(r, "X-RateLimit-Burst-Remaining",
                                           b, p - b)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}
