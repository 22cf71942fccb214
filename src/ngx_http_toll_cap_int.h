/*
 * toll: spend caps at the gate, what its two files share: the node's
 * state in the zone, a call's hold, an exchange with Redis
 * (ngx_http_toll_cap.c holds and ends calls' holds,
 * ngx_http_toll_cap_redis.c talks to Redis and runs the timer's work).
 */

#ifndef _NGX_HTTP_TOLL_CAP_INT_H_INCLUDED_
#define _NGX_HTTP_TOLL_CAP_INT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <hiredis/hiredis.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_shm.h"


#define NGX_HTTP_TOLL_CAP_DAY_LEN   TOLL_NAME_DAY_LEN

/* call->state: where a call's hold stands */
#define NGX_HTTP_TOLL_CAP_NONE      0
#define NGX_HTTP_TOLL_CAP_WAITING   1
#define NGX_HTTP_TOLL_CAP_DENIED    2
#define NGX_HTTP_TOLL_CAP_FAILED    3



/* a buyer's caps for one key and currency, as this node holds them */
typedef struct {
    int64_t                    lease;         /* free for calls to hold */
    int64_t                    holding;       /* held by calls in flight */
    int64_t                    gen;           /* the caps' generation of
                                                 the last answer */
    int64_t                    used_ms;       /* the last hold */
    int64_t                    asked_ms;
    int64_t                    denied_ms;     /* Redis had too little;
                                                 0: not */
    int64_t                    cap_micros;    /* the cap that refused */
    int64_t                    month_end;     /* unix seconds */
    int64_t                    window_ms;     /* this second's start */
    int64_t                    window_held;   /* held in this second */
    int64_t                    last_held;     /* and in the one before */
    ngx_uint_t                 asking;        /* exchanges in flight */
    u_char                     day[NGX_HTTP_TOLL_CAP_DAY_LEN];
    u_char                     month[NGX_HTTP_TOLL_CAP_DAY_LEN];
    u_char                     answered;      /* gen and capped hold */
    u_char                     capped;        /* 0: no cap applies */
    u_char                     monthly;       /* the refusal's period */
    u_char                     key_scope;     /* the refusal's cap is the
                                                 key's */
} ngx_http_toll_cap_state_t;


/* the caps' generation as this nginx last read it */
typedef struct {
    int64_t                    gen;           /* -1: not read yet */
    int64_t                    read_ms;
    ngx_uint_t                 reading;
} ngx_http_toll_cap_gen_t;


/* a call's hold, in the request's pool */
struct ngx_http_toll_cap_call_s {
    struct ngx_http_toll_cap_ask_s  *ask;
    int64_t                    hold;          /* held; 0: none */
    int64_t                    cap_micros;    /* a refusal's */
    int64_t                    retry_after;   /* seconds */
    ngx_uint_t                 state;
    ngx_uint_t                 monthly;
    ngx_uint_t                 key_scope;
    u_char                     day[NGX_HTTP_TOLL_CAP_DAY_LEN];
    u_char                     month[NGX_HTTP_TOLL_CAP_DAY_LEN];
};


/* an exchange with Redis; it lands in the zone even if the caller left */
typedef struct ngx_http_toll_cap_ask_s {
    ngx_http_toll_ctx_t       *ctx;           /* NULL: none, or left */
    ngx_shm_zone_t            *shm_zone;
    int64_t                    gen;           /* known when sent */
    int64_t                    hold;          /* the call's; 0: none */
    int64_t                    rate;          /* held a second, lately */
    int64_t                    back;
    u_char                     day[NGX_HTTP_TOLL_CAP_DAY_LEN];
    u_char                     bday[NGX_HTTP_TOLL_CAP_DAY_LEN];
    u_char                     bmonth[NGX_HTTP_TOLL_CAP_DAY_LEN];
    size_t                     subject_len;
    u_char                     subject[NGX_HTTP_TOLL_NODE_SUBJECT_MAX];
} ngx_http_toll_cap_ask_t;


/* the functions below that take a node are called with the zone locked */

/* the call's hold from the node's lease (ngx_http_toll_cap.c) */
ngx_int_t ngx_http_toll_cap_take(ngx_http_toll_cap_state_t *st,
    ngx_http_toll_ctx_t *ctx, int64_t gen, u_char *day, int64_t now,
    ngx_uint_t asked);
/* the zone's generation; NULL: no room */
ngx_http_toll_cap_gen_t *ngx_http_toll_cap_gen(ngx_shm_zone_t *shm_zone);
ngx_http_toll_shm_limit_node_t *ngx_http_toll_cap_node(
    ngx_shm_zone_t *shm_zone, u_char *subject, size_t len,
    ngx_uint_t create);
/* pinned and queued for the tick while it holds a lease or waits */
void ngx_http_toll_cap_keep(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_shm_limit_node_t *ln);
int64_t ngx_http_toll_cap_now(void);

/* sends an exchange (ngx_http_toll_cap_redis.c); NGX_ERROR: not sent */
ngx_int_t ngx_http_toll_cap_ask(ngx_http_toll_cap_ask_t *ask,
    ngx_http_toll_main_conf_t *mcf, int64_t price);


#endif /* _NGX_HTTP_TOLL_CAP_INT_H_INCLUDED_ */
