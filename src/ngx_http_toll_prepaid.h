/*
 * toll: prepaid balances at the gate.
 *
 * A call that would be charged in a location with toll_prepaid on holds
 * its price from the buyer's balance before it passes; the hold comes
 * from a lease of the balance this nginx keeps in the zone, so that
 * Redis is asked only when the lease runs out (docs/metering.md,
 * "Prepaid balances").
 */

#ifndef _NGX_HTTP_TOLL_PREPAID_H_INCLUDED_
#define _NGX_HTTP_TOLL_PREPAID_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"


/* ctx->prepaid_state: where a call's hold stands */
#define NGX_HTTP_TOLL_PREPAID_NONE     0   /* not decided yet */
#define NGX_HTTP_TOLL_PREPAID_WAITING  1   /* parked on Redis */
#define NGX_HTTP_TOLL_PREPAID_DENIED   2   /* the balance cannot pay */
#define NGX_HTTP_TOLL_PREPAID_FAILED   3   /* Redis could not say */


/*
 * Holds the call's price (ctx->amount_micros) from the buyer's balance:
 * NGX_OK (held, or nothing to hold), NGX_AGAIN (parked until Redis
 * answers), NGX_HTTP_TOLL_PAYMENT_REQUIRED, NGX_HTTP_SERVICE_UNAVAILABLE,
 * or NGX_ERROR.
 */
ngx_int_t ngx_http_toll_prepaid_hold(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx);

/* a hold the meter never took over goes back to the lease, whole */
void ngx_http_toll_prepaid_release(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx);

/*
 * A call's record ends in the meter (the zone locked): of its hold,
 * charged stays spent until a flush confirms it, the rest goes back to
 * the lease.  node: ctx->prepaid_node when the call held (NULL: none).
 */
void ngx_http_toll_prepaid_end(ngx_shm_zone_t *shm_zone, void *node,
    int64_t held, int64_t charged);

/*
 * A meter flush is done with what the balance paid (the zone locked):
 * applied, or left out whole (an overflow), when Redis still counts it
 * in the node's hold, to be given back once idle.
 */
void ngx_http_toll_prepaid_flushed(ngx_shm_zone_t *shm_zone,
    u_char *subject, size_t len, int64_t paid, ngx_uint_t applied);

/*
 * From the meter's timer (the zone locked): gives back leases idle for
 * toll_prepaid_idle (all of them when the worker exits), and what Redis
 * may hold that no call will use.  Returns how many of the leases looked
 * at still wait for Redis (an exchange on its way, or one whose answer
 * was lost and is to be settled): an exiting worker waits for them.
 */
ngx_uint_t ngx_http_toll_prepaid_tick(ngx_shm_zone_t *shm_zone,
    ngx_log_t *log);

/* the request ends: a lease it waits for still lands in the zone */
void ngx_http_toll_prepaid_cleanup(ngx_http_toll_ctx_t *ctx);

/* what this nginx holds of buyers' balances in one currency */
typedef struct {
    ngx_str_t                  currency;      /* set by the caller */
    int64_t                    lease;
    int64_t                    holding;
    int64_t                    unflushed;
    ngx_uint_t                 balances;      /* buyers holding any */
    ngx_uint_t                 unsure;
} ngx_http_toll_prepaid_gauge_t;

/* sums the zone's balances into g[0..n-1], by currency */
void ngx_http_toll_prepaid_gauges(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_prepaid_gauge_t *g, ngx_uint_t n);

/* the 402's members: price, currency, balance */
ngx_int_t ngx_http_toll_prepaid_members(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_str_t *members);


#endif /* _NGX_HTTP_TOLL_PREPAID_H_INCLUDED_ */
