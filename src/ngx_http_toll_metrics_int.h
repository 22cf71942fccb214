/*
 * toll: the metrics' writer: Prometheus text format 0.0.4 or the same
 * families as JSON, into a chain of buffers from the request's pool
 * (ngx_http_toll_metrics_out.c).  Private to the two metrics files.
 */

#ifndef _NGX_HTTP_TOLL_METRICS_INT_H_INCLUDED_
#define _NGX_HTTP_TOLL_METRICS_INT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


#define NGX_HTTP_TOLL_METRICS_CHUNK  4096


typedef struct {
    ngx_http_request_t        *r;
    ngx_chain_t               *out;
    ngx_chain_t              **last;
    ngx_buf_t                 *b;
    size_t                     size;
    ngx_uint_t                 json;
    ngx_uint_t                 families;      /* written so far */
    ngx_uint_t                 samples;       /* in this family */
    ngx_str_t                  family;
    ngx_uint_t                 failed;
} ngx_http_toll_metrics_out_t;


/* a histogram as a scrape reads it */
typedef struct {
    ngx_uint_t                 n;             /* finite buckets */
    ngx_str_t                 *bounds;        /* their "le", in seconds */
    ngx_atomic_t              *buckets;       /* n + 1, not cumulative */
    ngx_atomic_uint_t          sum;
    ngx_uint_t                 sum_scale;     /* 1000: ms, 1000000: us */
} ngx_http_toll_metrics_hist_t;


void ngx_http_toll_metrics_write(ngx_http_toll_metrics_out_t *o,
    u_char *data, size_t len);
void ngx_http_toll_metrics_escaped(ngx_http_toll_metrics_out_t *o,
    ngx_str_t *s);
void ngx_http_toll_metrics_family(ngx_http_toll_metrics_out_t *o,
    char *name, char *type, char *help);
void ngx_http_toll_metrics_family_end(
    ngx_http_toll_metrics_out_t *o);
void ngx_http_toll_metrics_labels(ngx_http_toll_metrics_out_t *o,
    ngx_str_t *labels, ngx_uint_t n, ngx_str_t *le);
void ngx_http_toll_metrics_sample(ngx_http_toll_metrics_out_t *o,
    ngx_str_t *labels, ngx_uint_t n, ngx_atomic_uint_t value);
void ngx_http_toll_metrics_histogram(ngx_http_toll_metrics_out_t *o,
    ngx_str_t *labels, ngx_uint_t n, ngx_http_toll_metrics_hist_t *h);


#define ngx_http_toll_metrics_literal(o, s)                                  \
    ngx_http_toll_metrics_write(o, (u_char *) s, sizeof(s) - 1)


#endif /* _NGX_HTTP_TOLL_METRICS_INT_H_INCLUDED_ */
