/*
 * toll: the operator's metrics.
 *
 * Counters live in the shared zone and are bumped with atomic adds, so
 * that every worker's requests count in one place without a lock on the
 * request path; toll_metrics renders them as Prometheus text or JSON when
 * scraped, and toll_dashboard serves a page that draws them.  Labels are
 * bounded by the configuration: a service, a decision, a status class;
 * never a buyer or a key.
 */

#ifndef _NGX_HTTP_TOLL_METRICS_H_INCLUDED_
#define _NGX_HTTP_TOLL_METRICS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"


/* request durations, in ms: 5 ms to 10 s */
#define NGX_HTTP_TOLL_METRICS_DURATION_BUCKETS  11
/* Redis replies, in us: 0.1 ms to 1 s */
#define NGX_HTTP_TOLL_METRICS_REDIS_BUCKETS     13

#define NGX_HTTP_TOLL_METRICS_NAME_MAX          64
#define NGX_HTTP_TOLL_METRICS_CURRENCY_MAX      16


/*
 * The counters of one service (by name and currency), or of gated
 * locations that sell none.  Histogram buckets are kept per bucket, not
 * cumulative: one atomic add per observation.
 */
typedef struct {
    ngx_queue_t          queue;
    ngx_atomic_t         requests[NGX_HTTP_TOLL_DECISIONS];
    ngx_atomic_t         responses[5];          /* 1xx .. 5xx */
    ngx_atomic_t         upstream_errors;
    ngx_atomic_t         free_calls;
    ngx_atomic_t         paid_calls;
    ngx_atomic_t         billed_micros;
    ngx_atomic_t         duration[NGX_HTTP_TOLL_METRICS_DURATION_BUCKETS + 1];
    ngx_atomic_t         duration_ms;           /* the sum */
    u_char               name_len;
    u_char               currency_len;
    u_char               name[NGX_HTTP_TOLL_METRICS_NAME_MAX];
    u_char               currency[NGX_HTTP_TOLL_METRICS_CURRENCY_MAX];
} ngx_http_toll_metrics_service_t;


/* the block in the shared zone */
typedef struct {
    ngx_queue_t                      services;  /* every name ever bound */
    ngx_http_toll_metrics_service_t  none;

    ngx_atomic_t         redis_commands;
    ngx_atomic_t         redis_errors;
    ngx_atomic_t         redis_reconnects;
    ngx_atomic_t         redis_reply[NGX_HTTP_TOLL_METRICS_REDIS_BUCKETS + 1];
    ngx_atomic_t         redis_reply_us;        /* the sum */

    ngx_atomic_t         cache_hits[2];         /* API key, JWT */
    ngx_atomic_t         cache_misses[2];
} ngx_http_toll_metrics_sh_t;


/* the key cache's lookups, by the kind of credential */
#define NGX_HTTP_TOLL_METRICS_API_KEY  0
#define NGX_HTTP_TOLL_METRICS_JWT      1


char *ngx_http_toll_metrics_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_toll_metrics_init(ngx_conf_t *cf);

/*
 * From the zone's init, in the master: a slot for each configured
 * service, kept across reloads by name and currency.  fresh: a new zone.
 */
ngx_int_t ngx_http_toll_metrics_init_zone(ngx_slab_pool_t *shpool,
    ngx_http_toll_metrics_sh_t *msh, ngx_http_toll_main_conf_t *mcf,
    ngx_uint_t fresh);

ngx_int_t ngx_http_toll_metrics_init_process(ngx_cycle_t *cycle);

/* from the log phase, once per request with a context */
void ngx_http_toll_metrics_log(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx);

/* what a metered call counted for, from the meter's log phase */
void ngx_http_toll_metrics_metered(ngx_http_toll_ctx_t *ctx,
    int64_t free_calls, int64_t paid_calls, int64_t amount_micros);

/* Redis: a command asked for, its outcome (reply time in us, or failed) */
void ngx_http_toll_metrics_redis_command(void);
void ngx_http_toll_metrics_redis_reply(ngx_uint_t failed, uint64_t us);
void ngx_http_toll_metrics_redis_reconnect(void);
void ngx_http_toll_metrics_redis_state(ngx_uint_t up);


#endif /* _NGX_HTTP_TOLL_METRICS_H_INCLUDED_ */
