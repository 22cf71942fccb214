/*
 * toll: the gate's counters of each service.
 *
 * They live in the shared zone and are added to with atomic adds, so that
 * every worker's requests count in one place without a lock on the
 * request path: the log phase adds what the gate decided and how the
 * answer went, the meter what the call was billed.  The metrics only read
 * them.  Labels are bounded by the configuration: a service, a decision, a
 * status class; never a buyer or a key.
 */

#ifndef _NGX_HTTP_TOLL_COUNTERS_H_INCLUDED_
#define _NGX_HTTP_TOLL_COUNTERS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"


/* request durations, in ms: 5 ms to 10 s */
#define NGX_HTTP_TOLL_COUNTERS_DURATION_BUCKETS  11

#define NGX_HTTP_TOLL_COUNTERS_NAME_MAX          64
#define NGX_HTTP_TOLL_COUNTERS_CURRENCY_MAX      16


/*
 * The counters of one service (by name and currency), or of gated
 * locations that sell none.  Histogram buckets are kept per bucket, not
 * cumulative: one atomic add per observation.
 */
struct ngx_http_toll_counters_s {
    ngx_queue_t          queue;
    ngx_atomic_t         requests[NGX_HTTP_TOLL_DECISIONS];
    ngx_atomic_t         responses[5];          /* 1xx .. 5xx */
    ngx_atomic_t         upstream_errors;
    ngx_atomic_t         free_calls;
    ngx_atomic_t         paid_calls;
    ngx_atomic_t         billed_micros;
    ngx_atomic_t         duration[NGX_HTTP_TOLL_COUNTERS_DURATION_BUCKETS + 1];
    ngx_atomic_t         duration_ms;           /* the sum */
    u_char               name_len;
    u_char               currency_len;
    u_char               name[NGX_HTTP_TOLL_COUNTERS_NAME_MAX];
    u_char               currency[NGX_HTTP_TOLL_COUNTERS_CURRENCY_MAX];
};


/* the block in the shared zone */
struct ngx_http_toll_counters_sh_s {
    ngx_queue_t                  services;      /* every name ever bound */
    ngx_http_toll_counters_t     none;
};


/*
 * From the zone's init, in the master: a slot for each configured
 * service, kept across reloads by name and currency.  fresh: a new zone.
 */
ngx_int_t ngx_http_toll_counters_init_zone(ngx_slab_pool_t *shpool,
    ngx_http_toll_counters_sh_t *csh, ngx_http_toll_main_conf_t *mcf,
    ngx_uint_t fresh);

ngx_int_t ngx_http_toll_counters_init_process(ngx_cycle_t *cycle);

/* from the log phase, once per request with a context */
void ngx_http_toll_counters_log(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx);

/* what a metered call counted for, from the meter's log phase */
void ngx_http_toll_counters_metered(ngx_http_toll_ctx_t *ctx,
    int64_t free_calls, int64_t paid_calls, int64_t amount_micros);


#endif /* _NGX_HTTP_TOLL_COUNTERS_H_INCLUDED_ */
