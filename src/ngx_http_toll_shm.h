/*
 * toll: the shared memory zone.
 *
 * One zone for all workers, kept across reloads.  It holds the key record
 * cache: an rbtree by key id with an LRU queue, so that a full zone evicts
 * the records used least recently instead of failing
 * (ngx_http_toll_shm.c, with the zone itself); the nodes of the subjects
 * the limits, the meter and the free tiers keep (ngx_http_toll_shm_limit.c);
 * the table of live worker processes (ngx_http_toll_shm_proc.c).
 */

#ifndef _NGX_HTTP_TOLL_SHM_H_INCLUDED_
#define _NGX_HTTP_TOLL_SHM_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_counters.h"
#include "ngx_http_toll_redis.h"
#include "toll_limit.h"


#define NGX_HTTP_TOLL_ZONE_NAME      "toll"
#define NGX_HTTP_TOLL_ZONE_SIZE      (10 * 1024 * 1024)
#define NGX_HTTP_TOLL_ZONE_SIZE_MIN  (8 * ngx_pagesize)

/*
 * The table of worker processes starts with room for twice
 * worker_processes (a reload's old workers finish while the new ones
 * run), at least this many, and grows when a worker finds it full.
 */
#define NGX_HTTP_TOLL_PROCS_MIN      32
/* a key id, or "ip:" and up to 16 bytes of address in hex */
#define NGX_HTTP_TOLL_SUBJECT_MAX    TOLL_KEY_ID_LEN_MAX


typedef struct {
    ngx_pid_t                  pid;           /* 0: free */
    uint32_t                   gen;           /* bumped at each claim */
    ngx_uint_t                 exiting;       /* shutting down */
    ngx_uint_t                 redis_up;      /* its connection answers */
} ngx_http_toll_shm_proc_t;


/*
 * A node's estimate of Redis's clock minus its limit clock, shared by its
 * workers: the limit sync moves times between the two (under the mutex).
 */
typedef struct {
    int64_t                    base_ms;       /* limit clock - monotonic */
    toll_clock_t               redis;         /* Redis's - limit clock */
} ngx_http_toll_shm_clock_t;


/* the key cache's lookups, by the kind of credential */
#define NGX_HTTP_TOLL_SHM_API_KEY    0
#define NGX_HTTP_TOLL_SHM_JWT        1
#define NGX_HTTP_TOLL_SHM_CREDENTIALS  2


/* what a scrape reads of the zone, under its mutex */
typedef struct {
    size_t                     size;
    size_t                     free;          /* in whole free pages */
    ngx_uint_t                 meter_backlog; /* subjects waiting */
    ngx_uint_t                 limit_backlog;
    ngx_uint_t                 workers;       /* live, not exiting */
    ngx_uint_t                 redis_up;      /* of those, connected */
    ngx_atomic_uint_t          cache_hits[NGX_HTTP_TOLL_SHM_CREDENTIALS];
    ngx_atomic_uint_t          cache_misses[NGX_HTTP_TOLL_SHM_CREDENTIALS];
} ngx_http_toll_shm_stats_t;


/* the queues a node can wait in, for the timer of the room it belongs to */
#define NGX_HTTP_TOLL_QUEUE_LIMIT    0
#define NGX_HTTP_TOLL_QUEUE_METER    1
#define NGX_HTTP_TOLL_QUEUE_PREPAID  2
#define NGX_HTTP_TOLL_QUEUE_CAP      3
#define NGX_HTTP_TOLL_QUEUES         4

/* the longest subject a node can hold: a day, a buyer, a service, a
   provider */
#define NGX_HTTP_TOLL_NODE_SUBJECT_MAX  512


/*
 * A node of one subject: a limit's (a key id, an address), a meter's (a
 * buyer's service on a day), a free tier's.  The zone owns the tree, the
 * LRU and the queues; the state after the header belongs to the room that
 * made the node, which says how long it is, and the subject follows it.
 * All of it is read and written under the zone's mutex.
 */
typedef struct {
    ngx_rbtree_node_t          node;          /* key: crc32 of subject */
    ngx_queue_t                lru;
    ngx_queue_t                sync;
    uint64_t                   uid;           /* never reused */
    ngx_uint_t                 pins;          /* requests in flight: a
                                                 pinned node is not evicted */
    size_t                     state_size;
    u_char                     queued;        /* queue + 1; 0: none */
    uint16_t                   subject_len;
    u_char                    *subject;       /* after the state */
    uint64_t                   state[1];      /* aligned for int64_t */
} ngx_http_toll_shm_limit_node_t;


/* the zone's node id: 16 hex digits, made with the zone, kept by reloads */
#define NGX_HTTP_TOLL_NODE_ID_LEN    16

u_char *ngx_http_toll_shm_node_id(ngx_shm_zone_t *shm_zone);

/* declares the zone during configuration; NULL on error */
ngx_shm_zone_t *ngx_http_toll_shm_add(ngx_conf_t *cf, size_t size);

/*
 * Copies a fresh cached record into rec (strings from pool).  Returns
 * NGX_OK on a hit, NGX_DECLINED on a miss or a stale entry, NGX_ERROR
 * when the pool is exhausted.  credential (NGX_HTTP_TOLL_SHM_API_KEY
 * or _JWT) says which hit or miss counter the lookup adds to.
 */
ngx_int_t ngx_http_toll_shm_key_get(ngx_shm_zone_t *shm_zone,
    ngx_str_t *key_id, ngx_uint_t credential, ngx_http_toll_key_t *rec,
    ngx_pool_t *pool);

/* caches rec (found or not) for ttl; failure to cache is logged only */
void ngx_http_toll_shm_key_put(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_key_t *rec, ngx_msec_t ttl, ngx_log_t *log);


void ngx_http_toll_shm_lock(ngx_shm_zone_t *shm_zone);
void ngx_http_toll_shm_unlock(ngx_shm_zone_t *shm_zone);

/* the functions below are called with the zone locked */

/*
 * Zeroed memory from the zone, making room as a new node would (unknown
 * key ids, then unpinned subjects); NULL when even that leaves none.
 */
void *ngx_http_toll_shm_alloc(ngx_shm_zone_t *shm_zone, size_t size);
void ngx_http_toll_shm_free(ngx_shm_zone_t *shm_zone, void *p);

ngx_http_toll_shm_limit_node_t *ngx_http_toll_shm_limit_find(
    ngx_shm_zone_t *shm_zone, u_char *subject, size_t len);

/*
 * A new node with zeroed state, evicting the least recently used unpinned
 * nodes when the zone is full; NULL when even that leaves no room.
 */
ngx_http_toll_shm_limit_node_t *ngx_http_toll_shm_limit_create(
    ngx_shm_zone_t *shm_zone, u_char *subject, size_t len,
    size_t state_size);

void ngx_http_toll_shm_limit_free(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_shm_limit_node_t *ln);

/* marks the node used: recent in the LRU, queued for the next sync */
void ngx_http_toll_shm_limit_touch(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_shm_limit_node_t *ln);

/* the next node to sync, out of the queue; NULL when none */
ngx_http_toll_shm_limit_node_t *ngx_http_toll_shm_limit_next_sync(
    ngx_shm_zone_t *shm_zone);

/* the same for any queue, and the number of nodes waiting in it */
void ngx_http_toll_shm_enqueue(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_shm_limit_node_t *ln, ngx_uint_t queue);
ngx_http_toll_shm_limit_node_t *ngx_http_toll_shm_dequeue(
    ngx_shm_zone_t *shm_zone, ngx_uint_t queue);
void ngx_http_toll_shm_unqueue(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_shm_limit_node_t *ln);
/* calls fn for each node waiting in a queue, in order (zone locked) */
void ngx_http_toll_shm_queue_walk(ngx_shm_zone_t *shm_zone,
    ngx_uint_t queue, void (*fn)(ngx_http_toll_shm_limit_node_t *ln,
    void *data), void *data);
ngx_uint_t ngx_http_toll_shm_queued(ngx_shm_zone_t *shm_zone,
    ngx_uint_t queue);

/*
 * A slot in the table of live worker processes for this process, and the
 * slot's generation.  Slots of processes that died are freed first, each
 * with a new generation, which voids what it had in flight; a full table
 * grows.  -1: no room in the zone for a bigger table.
 */
ngx_int_t ngx_http_toll_shm_proc_claim(ngx_shm_zone_t *shm_zone,
    ngx_uint_t workers, uint32_t *gen);
void ngx_http_toll_shm_proc_release(ngx_shm_zone_t *shm_zone,
    ngx_int_t slot);

/*
 * Marks this process as exiting, and says whether another live worker
 * that is not exiting shares the zone (after a reload: the new cycle's),
 * to take over what this one leaves.
 */
ngx_uint_t ngx_http_toll_shm_proc_hand_over(ngx_shm_zone_t *shm_zone);

/*
 * Whether a worker process has died (signal 0; EPERM still means alive):
 * one rule for the process table and the meter's open calls.
 */
ngx_uint_t ngx_http_toll_shm_pid_dead(ngx_pid_t pid);

/* this worker's Redis connection is up or down, for toll_redis_up */
void ngx_http_toll_shm_proc_redis(ngx_shm_zone_t *shm_zone, ngx_uint_t up);


/* the functions below are called with the zone locked */

/* the slots in the table: they only ever grow */
ngx_uint_t ngx_http_toll_shm_proc_slots(ngx_shm_zone_t *shm_zone);

/* a slot's generation; a dead process's slot has moved past its own */
uint32_t ngx_http_toll_shm_proc_gen(ngx_shm_zone_t *shm_zone,
    ngx_uint_t slot);

/*
 * Frees the slots of processes that died without releasing them (killed),
 * at most once a second for the whole zone: the places they held in
 * flight stop counting.
 */
void ngx_http_toll_shm_proc_reap(ngx_shm_zone_t *shm_zone);

/*
 * The node again with a bigger state (the new part zeroed), in the same
 * places of the tree, the LRU and the queues, with the same uid; NULL
 * when the zone has no room (the old node is kept).
 */
ngx_http_toll_shm_limit_node_t *ngx_http_toll_shm_limit_grow(
    ngx_shm_zone_t *shm_zone, ngx_http_toll_shm_limit_node_t *ln,
    size_t state_size);

/* the limit sync's estimate of Redis's clock */
ngx_http_toll_shm_clock_t *ngx_http_toll_shm_limit_clock(
    ngx_shm_zone_t *shm_zone);

/*
 * The Redis adapter's counters, kept in the zone for it: every worker's
 * connection adds to them.
 */
ngx_http_toll_redis_stats_t *ngx_http_toll_shm_redis_stats(
    ngx_shm_zone_t *shm_zone);

/* the gauges and the key cache's counters, read when scraped */
void ngx_http_toll_shm_stats(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_shm_stats_t *st);


#endif /* _NGX_HTTP_TOLL_SHM_H_INCLUDED_ */
