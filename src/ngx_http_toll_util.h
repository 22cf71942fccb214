/*
 * toll: small helpers every room of the module uses.
 *
 * Nothing here includes a header of the module's own: the arrows of the
 * include graph point at this file, never away from it.
 */

#ifndef _NGX_HTTP_TOLL_UTIL_H_INCLUDED_
#define _NGX_HTTP_TOLL_UTIL_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/* adds a response header; name and value must outlive the request */
ngx_int_t ngx_http_toll_header_push(ngx_http_request_t *r, u_char *name,
    size_t name_len, u_char *value, size_t len);

/*
 * A header name toll writes or reads by configuration: 1 or more of
 * A-Z a-z 0-9 - _ (a token that needs no quoting anywhere).  1: valid.
 */
ngx_uint_t ngx_http_toll_header_name_valid(const u_char *p, size_t len);

/* the wall clock in unix ms, as limits and the meter count time */
int64_t ngx_http_toll_now_ms(void);

/* a count in decimal: the answers' hot paths have no use for ngx_sprintf() */
u_char *ngx_http_toll_format_int(u_char *p, int64_t n);

/* a monotonic clock in microseconds, for reply times */
uint64_t ngx_http_toll_now_us(void);

/*
 * Counts v in a histogram kept in shared memory: one atomic add to the
 * first of the n buckets whose bound v does not pass (buckets[n]: none),
 * one to the sum.  Buckets are not cumulative: a reader sums them.
 * Inline: it runs in every request's log phase.
 */
static ngx_inline void
ngx_http_toll_observe(ngx_atomic_t *buckets, const ngx_uint_t *bounds,
    ngx_uint_t n, ngx_atomic_t *sum, ngx_uint_t v)
{
    ngx_uint_t  i;

    for (i = 0; i < n && v > bounds[i]; i++) {
        /* void */
    }

    (void) ngx_atomic_fetch_add(&buckets[i], 1);
    (void) ngx_atomic_fetch_add(sum, v);
}


/*
 * What a lease holder spends a second, to size its next lease: v added
 * to this second's window; *last keeps the second before (0 when it was
 * longer ago).  The zone locked.
 */
static ngx_inline void
ngx_http_toll_rate_add(int64_t *window_ms, int64_t *window, int64_t *last,
    int64_t now, int64_t v)
{
    if (now - *window_ms >= 1000) {
        *last = (now - *window_ms < 2000) ? *window : 0;
        *window_ms = now;
        *window = 0;
    }

    *window += v;
}


#endif /* _NGX_HTTP_TOLL_UTIL_H_INCLUDED_ */
