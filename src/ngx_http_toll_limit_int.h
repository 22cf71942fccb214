/*
 * toll: what the files of the limits share, and nothing else includes.
 *
 * The state of a subject in the shared zone, a request's limits, a call
 * of the limit script, and the steps that the files of the limits call
 * in one another: ngx_http_toll_limit.c (the decision), _conf.c (plans
 * and directives), _strict.c (a strict plan asks Redis), _sync.c (the
 * rounds and the script), _headers.c (what a client reads).
 * ngx_http_toll_limit.h stays the face of the limits for the rest of the
 * module.
 */

#ifndef _NGX_HTTP_TOLL_LIMIT_INT_H_INCLUDED_
#define _NGX_HTTP_TOLL_LIMIT_INT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <hiredis/hiredis.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_limit.h"
#include "ngx_http_toll_shm.h"


#define NGX_HTTP_TOLL_LIMITS_MAX         (2 * NGX_HTTP_TOLL_PLAN_RATES_MAX)

/* script arguments: EVAL, script, numkeys, key, 6 fixed, 5 per limit */
#define NGX_HTTP_TOLL_SYNC_ARGS_MAX      (11 + 5 * NGX_HTTP_TOLL_PLAN_RATES_MAX)

#define NGX_HTTP_TOLL_MASK_BUCKET        0x10
#define NGX_HTTP_TOLL_MASK_CONCURRENCY   0x20


/*
 * A limit's subject: a key id, "ip:" and an address in hex, or, with
 * toll_limit_key buyer, "b:<plan>:<buyer>" (ngx_http_toll_buyer.c).  Key
 * ids never hold a colon, so the three never collide.
 */
#define NGX_HTTP_TOLL_LIMIT_SUBJECT_MAX                                      \
    (sizeof("b::") - 1 + TOLL_PLAN_LEN_MAX + TOLL_OWNER_LEN_MAX)


/* the state of one subject, after the node header in the zone */
typedef struct {
    toll_bucket_t              bucket;
    int64_t                    interval_ns;   /* the bucket as last used */
    int64_t                    tolerance_ns;
    int64_t                    sync_at_ms;    /* a sync in flight; 0 none */
    int64_t                    remote_inflight;
    uint32_t                   pending;       /* bucket, not yet sent */
    uint32_t                   sent;
    uint32_t                   mask;
    uint32_t                   nwindows;
    uint32_t                   nconc;         /* slots of the proc table */
    uint32_t                   reserved;
    /* toll_window_t, one per window unit in the mask, in unit order;
       then ngx_http_toll_limit_conc_t[nconc], a count per slot of the
       table of worker processes */
} ngx_http_toll_limit_state_t;


/* what one worker process has in flight; void unless gen is current */
typedef struct {
    uint32_t                   gen;
    uint32_t                   count;
} ngx_http_toll_limit_conc_t;


typedef struct {
    ngx_http_toll_rate_t      *rate;          /* the plan's, or overridden */
    unsigned                   ip:1;
    unsigned                   skipped:1;     /* no state for it */
    toll_limit_result_t        res;
} ngx_http_toll_limit_t;


struct ngx_http_toll_limit_ctx_s {
    ngx_http_toll_limit_t         limits[NGX_HTTP_TOLL_LIMITS_MAX];
    ngx_uint_t                    nlimits;
    /* a key's own rate_limit changes its plan's rates: changed copies */
    ngx_http_toll_rate_t          overrides[2];   /* bucket, minute */
    ngx_uint_t                    noverrides;
    ngx_uint_t                    key_first;  /* limits of the key from */
    ngx_int_t                     violated;   /* -1: none */
    ngx_http_toll_limit_status_e  status;
    ngx_http_toll_plan_t         *plan;
    ngx_http_toll_plan_t         *ip_plan;

    u_char                        key_subject[NGX_HTTP_TOLL_LIMIT_SUBJECT_MAX];
    size_t                        key_subject_len;
    u_char                        ip_subject[NGX_HTTP_TOLL_LIMIT_SUBJECT_MAX];
    size_t                        ip_subject_len;

    ngx_shm_zone_t               *shm_zone;
    unsigned                      key_held:1;  /* concurrency slots */
    unsigned                      ip_held:1;
    unsigned                      ip_done:1;
    unsigned                      key_done:1;
    unsigned                      buyer:1;     /* key_subject: a buyer */
    unsigned                      buyer_done:1; /* its record was read */
    ngx_str_t                     buyer_plan;  /* the record's; empty:
                                                  none */
    unsigned                      strict_waiting:1;
    uint64_t                      strict_uid;
};


/* a round's call to Redis, until its reply */
typedef struct {
    ngx_shm_zone_t            *shm_zone;
    ngx_http_toll_ctx_t       *ctx;           /* strict: the request */
    uint64_t                   uid;
    size_t                     subject_len;
    u_char                     subject[NGX_HTTP_TOLL_LIMIT_SUBJECT_MAX];
} ngx_http_toll_limit_sync_t;


typedef struct {
    ngx_uint_t                 argc;
    const char                *argv[NGX_HTTP_TOLL_SYNC_ARGS_MAX];
    size_t                     argvlen[NGX_HTTP_TOLL_SYNC_ARGS_MAX];
    ngx_http_toll_limit_sync_t  *sync;
} ngx_http_toll_limit_call_t;


#define ngx_http_toll_limit_window_size                                       \
    ngx_align(sizeof(toll_window_t), sizeof(int64_t))


/*
 * The limit clock: monotonic milliseconds, the same for every process of
 * the host, and never stepped, so that a wall clock set back (or forward)
 * neither locks a key out nor frees it.  It starts from the wall clock
 * when the zone was made (slot numbers stay positive, and read as
 * dates).  Nodes do not share it: the sync script moves times between it
 * and Redis's clock.
 */
#define ngx_http_toll_limit_now()                                             \
    ((int64_t) ngx_current_msec + ngx_http_toll_limit_base)


/* this worker's slot in the table of worker processes, -1 none */
extern ngx_int_t   ngx_http_toll_limit_proc;
extern uint32_t    ngx_http_toll_limit_gen;
/* the limit clock's start (see ngx_http_toll_limit_now) */
extern int64_t     ngx_http_toll_limit_base;


/* ngx_http_toll_limit_conf.c */
ngx_http_toll_plan_t *ngx_http_toll_limit_find_plan(
    ngx_http_toll_main_conf_t *mcf, ngx_str_t *name);

/* ngx_http_toll_limit.c */
ngx_int_t ngx_http_toll_limit_decide(ngx_http_request_t *r,
    ngx_http_toll_limit_ctx_t *lctx, u_char *subject, size_t len,
    ngx_uint_t from, ngx_uint_t to, ngx_uint_t commit,
    ngx_uint_t rates_only);
ngx_int_t ngx_http_toll_limit_verdict(ngx_http_request_t *r,
    ngx_http_toll_limit_ctx_t *lctx, ngx_uint_t from, ngx_uint_t to,
    ngx_uint_t ip);
ngx_http_toll_limit_state_t *ngx_http_toll_limit_node(
    ngx_shm_zone_t *shm_zone, u_char *subject, size_t len, uint32_t mask,
    ngx_http_toll_shm_limit_node_t **lnp);
int64_t ngx_http_toll_limit_inflight(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_limit_state_t *st);
void ngx_http_toll_limit_hold(ngx_shm_zone_t *shm_zone,
    u_char *subject, size_t len, ngx_int_t delta);
void ngx_http_toll_limit_unsend(ngx_http_toll_limit_state_t *st);

/* ngx_http_toll_limit_strict.c */
ngx_int_t ngx_http_toll_limit_strict(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_limit_ctx_t *lctx);

/* ngx_http_toll_limit_sync.c */
ngx_int_t ngx_http_toll_limit_call(ngx_http_toll_limit_call_t *call,
    ngx_pool_t *pool, ngx_http_toll_shm_limit_node_t *ln,
    ngx_http_toll_limit_ctx_t *lctx, ngx_uint_t from, ngx_uint_t to,
    int64_t now_ms);
ngx_int_t ngx_http_toll_limit_apply(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_limit_sync_t *sync, redisReply *reply, int64_t now_ms,
    int64_t *verdict);

/* ngx_http_toll_limit_headers.c */
u_char *ngx_http_toll_limit_policy_item(u_char *p,
    ngx_http_toll_limit_t *l);


/* small enough to be inlined where a request is decided */

static ngx_inline uint32_t
ngx_http_toll_limit_mask(ngx_http_toll_limit_ctx_t *lctx, ngx_uint_t from,
    ngx_uint_t to)
{
    uint32_t                mask;
    ngx_uint_t              i;
    ngx_http_toll_limit_t  *l;

    mask = 0;

    for (i = from; i < to; i++) {
        l = &lctx->limits[i];

        switch (l->rate->kind) {
        case NGX_HTTP_TOLL_RATE_BUCKET:
            mask |= NGX_HTTP_TOLL_MASK_BUCKET;
            break;
        case NGX_HTTP_TOLL_RATE_WINDOW:
            mask |= 1 << l->rate->unit;
            break;
        default:
            mask |= NGX_HTTP_TOLL_MASK_CONCURRENCY;
            break;
        }
    }

    return mask;
}


static ngx_inline toll_window_t *
ngx_http_toll_limit_window(ngx_http_toll_limit_state_t *st, toll_unit_e unit)
{
    ngx_uint_t  u, n;

    if (!(st->mask & (1 << unit))) {
        return NULL;
    }

    n = 0;

    for (u = 0; u < (ngx_uint_t) unit; u++) {
        n += (st->mask >> u) & 1;
    }

    return (toll_window_t *) ((u_char *) (st + 1)
                              + n * ngx_http_toll_limit_window_size);
}


static ngx_inline ngx_http_toll_limit_conc_t *
ngx_http_toll_limit_conc(ngx_http_toll_limit_state_t *st)
{
    if (!(st->mask & NGX_HTTP_TOLL_MASK_CONCURRENCY)) {
        return NULL;
    }

    return (ngx_http_toll_limit_conc_t *) ((u_char *) (st + 1)
               + st->nwindows * ngx_http_toll_limit_window_size);
}


/* a limit's name in the headers and the logs: "ip-minute", "burst" */

static ngx_inline u_char *
ngx_http_toll_limit_policy_name(u_char *p, ngx_http_toll_limit_t *l)
{
    if (l->ip) {
        p = ngx_cpymem(p, "ip-", 3);
    }

    switch (l->rate->kind) {

    case NGX_HTTP_TOLL_RATE_BUCKET:
        return ngx_cpymem(p, "burst", 5);

    case NGX_HTTP_TOLL_RATE_WINDOW:
        return ngx_cpymem(p, toll_unit_names[l->rate->unit],
                          ngx_strlen(toll_unit_names[l->rate->unit]));

    default:
        return ngx_cpymem(p, "concurrency", 11);
    }
}


#endif /* _NGX_HTTP_TOLL_LIMIT_INT_H_INCLUDED_ */
