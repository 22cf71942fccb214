/*
 * toll: small helpers every room of the module uses: answer headers,
 * clocks, decimal counts.  It depends on nothing of the module's own, so
 * that any file may include it without an arrow back.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <time.h>

#include "ngx_http_toll_util.h"


ngx_uint_t
ngx_http_toll_header_name_valid(const u_char *p, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (!((p[i] >= 'A' && p[i] <= 'Z') || (p[i] >= 'a' && p[i] <= 'z')
              || (p[i] >= '0' && p[i] <= '9') || p[i] == '-' || p[i] == '_'))
        {
            return 0;
        }
    }

    return len > 0;
}


u_char *
ngx_http_toll_format_int(u_char *p, int64_t n)
{
    u_char    tmp[NGX_INT64_LEN], *t;
    uint64_t  u;

    u = (n > 0) ? (uint64_t) n : 0;
    t = tmp + NGX_INT64_LEN;

    do {
        *--t = (u_char) ('0' + u % 10);
        u /= 10;
    } while (u);

    return ngx_cpymem(p, t, tmp + NGX_INT64_LEN - t);
}


ngx_int_t
ngx_http_toll_header_push(ngx_http_request_t *r, u_char *name,
    size_t name_len, u_char *value, size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = name;
    h->key.len = name_len;
    h->value.data = value;
    h->value.len = len;
    h->lowcase_key = NULL;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif

    return NGX_OK;
}


int64_t
ngx_http_toll_now_ms(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (int64_t) tp->sec * 1000 + tp->msec;
}


uint64_t
ngx_http_toll_now_us(void)
{
    struct timespec  ts;

    /* a vDSO call: no system call on Linux */
    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}
