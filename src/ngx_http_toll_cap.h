/*
 * toll: spend caps at the gate.
 *
 * A call that would be charged holds its price from a lease of the caps
 * that apply to its buyer and key (daily and monthly, per currency),
 * which this nginx keeps in the zone, so that Redis is asked only when
 * the lease runs out; a buyer and key with no caps cost no Redis round
 * trip at all (docs/metering.md, "Spend caps").
 */

#ifndef _NGX_HTTP_TOLL_CAP_H_INCLUDED_
#define _NGX_HTTP_TOLL_CAP_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_problem.h"


/* ngx_http_toll_cap_hold()'s refusal: not an HTTP status, a verdict */
#define NGX_HTTP_TOLL_CAP_EXCEEDED  4021


/*
 * Holds the call's price (ctx->amount_micros) from the caps' lease:
 * NGX_OK (held, or no cap applies), NGX_AGAIN (parked until Redis
 * answers), NGX_HTTP_TOLL_CAP_EXCEEDED, NGX_HTTP_SERVICE_UNAVAILABLE or
 * NGX_ERROR.
 */
ngx_int_t ngx_http_toll_cap_hold(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx);

/* the call was not charged: its whole hold goes back to the lease */
void ngx_http_toll_cap_release(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx);

/* the log phase: of the hold, what was charged stays used */
void ngx_http_toll_cap_end(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    int64_t charged);

/* a worker starts: the timer that reads the caps' generation */
ngx_int_t ngx_http_toll_cap_start(ngx_cycle_t *cycle);

/*
 * From the meter's timer (the zone locked): gives back leases idle for
 * toll_prepaid_idle (all of them when the worker exits).
 */
void ngx_http_toll_cap_tick(ngx_shm_zone_t *shm_zone, ngx_log_t *log);

/* the request ends: a lease it waits for still lands in the zone */
void ngx_http_toll_cap_cleanup(ngx_http_toll_ctx_t *ctx);

/* whether the call's hold failed for want of Redis (for the log) */
ngx_uint_t ngx_http_toll_cap_failed(ngx_http_toll_ctx_t *ctx);

/* the 402's members (cap, period, scope, currency) and Retry-After */
ngx_int_t ngx_http_toll_cap_problem(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_problem_ext_t *ext);


/*
 * What this nginx holds of caps in one currency, for the metrics: leases
 * and exchanges in flight are pinned and queued (ngx_http_toll_cap_keep),
 * so a walk of the cap queue finds them all; "no caps" entries are not.
 */
typedef struct {
    ngx_str_t                  currency;      /* set by the caller */
    int64_t                    lease;
    ngx_uint_t                 leases;        /* entries holding one */
    ngx_uint_t                 asking;        /* entries waiting for Redis */
} ngx_http_toll_cap_gauge_t;

/* sums the queue into g[0..n-1] by currency; *gen: as read, -1: not yet */
void ngx_http_toll_cap_gauges(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_cap_gauge_t *g, ngx_uint_t n, int64_t *gen);

/* a lease of a buyer's caps as this nginx holds it, for toll_usage */
typedef struct {
    uint64_t                   uid;           /* the zone node's */
    int64_t                    lease;         /* unspent */
    int64_t                    asked_ms;      /* the last exchange sent */
    ngx_uint_t                 asking;
    ngx_uint_t                 this_key;      /* the asking key's */
    ngx_str_t                  currency;      /* in the pool */
    u_char                     day[TOLL_NAME_DAY_LEN];
    u_char                     month[TOLL_NAME_DAY_LEN];
} ngx_http_toll_cap_lease_t;

/* the buyer's leases, and exchanges in flight, into out; takes the lock */
ngx_int_t ngx_http_toll_cap_leases(ngx_shm_zone_t *shm_zone,
    ngx_str_t *buyer, ngx_str_t *key_id, ngx_array_t *out);

/* the unix time of a "YYYYMMDD" day's start, UTC; 0: not a day */
time_t ngx_http_toll_cap_time(u_char *day);


#endif /* _NGX_HTTP_TOLL_CAP_H_INCLUDED_ */
