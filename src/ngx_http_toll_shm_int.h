/*
 * toll: the shared zone's layout, private to the three files that keep
 * it (ngx_http_toll_shm.c: the zone and the key cache;
 * ngx_http_toll_shm_limit.c: the subjects; ngx_http_toll_shm_proc.c: the
 * table of worker processes).  Other rooms go through
 * ngx_http_toll_shm.h.
 */

#ifndef _NGX_HTTP_TOLL_SHM_INT_H_INCLUDED_
#define _NGX_HTTP_TOLL_SHM_INT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_toll_shm.h"


/*
 * The zone outlives a reload, and a reload may bring a new build of the
 * module: one that lays the zone out otherwise must not read it.  Bump
 * the number with any change to a structure kept in the zone (here, or a
 * room's node state); the size of this one is folded in as a guard.
 */
#define NGX_HTTP_TOLL_SHM_LAYOUT                                              \
    (((uint64_t) 6 << 32) | sizeof(ngx_http_toll_sh_t))


typedef struct {
    uint64_t                   layout;        /* first, in every build */
    u_char                     node_id[NGX_HTTP_TOLL_NODE_ID_LEN];
                                              /* random, made with the
                                                 zone: this nginx's name
                                                 in Redis (its holds) */
    ngx_rbtree_t               rbtree;
    ngx_rbtree_node_t          sentinel;
    ngx_queue_t                lru;           /* found; recent at the head */
    ngx_queue_t                lru_negative;  /* not found */

    /* rate-limit state, one node per subject (a key id, an address) */
    ngx_rbtree_t               limit_rbtree;
    ngx_rbtree_node_t          limit_sentinel;
    ngx_queue_t                limit_lru;     /* recent at the head */
    ngx_queue_t                queues[NGX_HTTP_TOLL_QUEUES];
    ngx_uint_t                 queued[NGX_HTTP_TOLL_QUEUES];
    uint64_t                   limit_uid;

    /* live worker processes, for in-flight counts that die with one */
    ngx_http_toll_shm_proc_t  *procs;         /* in the slab; NULL: none */
    ngx_uint_t                 nprocs;
    ngx_msec_t                 procs_reaped;  /* ngx_current_msec */

    ngx_http_toll_shm_clock_t  limit_clock;

    /*
     * Counters, added to without the mutex: the key cache's own, and the
     * blocks the Redis adapter and the gate keep here for all workers
     */
    ngx_atomic_t               cache_hits[NGX_HTTP_TOLL_SHM_CREDENTIALS];
    ngx_atomic_t               cache_misses[NGX_HTTP_TOLL_SHM_CREDENTIALS];
    ngx_http_toll_redis_stats_t  redis;
    ngx_http_toll_counters_sh_t  counters;
} ngx_http_toll_sh_t;


typedef struct {
    ngx_http_toll_sh_t        *sh;
    ngx_slab_pool_t           *shpool;
    ngx_http_toll_main_conf_t *mcf;           /* of the cycle that made it */
} ngx_http_toll_shctx_t;


/* the subjects' tree order, for the zone's init */
void ngx_http_toll_shm_limit_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);

/* evicts up to n unpinned subjects, for the allocator (zone locked) */
void ngx_http_toll_shm_limit_evict(ngx_http_toll_shctx_t *ctx,
    ngx_uint_t n);


#endif /* _NGX_HTTP_TOLL_SHM_INT_H_INCLUDED_ */
