/*
 * toll: what the Redis adapter's two files share (the private header).
 *
 * ngx_http_toll_redis.c owns a connection to one Redis (a node): hiredis
 * on nginx's event loop, its commands, timers and backoff.
 * ngx_http_toll_redis_route.c owns which node a command goes to: one
 * Redis, a Cluster's primaries by hash slot (the slot map, MOVED, ASK),
 * or the primary a Sentinel names.
 */

#ifndef _NGX_HTTP_TOLL_REDIS_INT_H_INCLUDED_
#define _NGX_HTTP_TOLL_REDIS_INT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "ngx_http_toll_redis.h"
#include "toll_cluster.h"
#include "toll_scripts.h"


/*
 * A Cluster's primaries and seeds, each with a connection for commands
 * and one for reading the map, twice: the map in use and one being
 * installed may name none of the same addresses (a StatefulSet made
 * again); or the sentinels and their primary
 */
#define NGX_HTTP_TOLL_REDIS_NODES_MAX                                      \
    (2 * (2 * TOLL_CLUSTER_NODES_MAX + TOLL_CLUSTER_SEEDS_MAX) + 1)

/* ngx_http_toll_redis_node()'s kinds of connection */
#define NGX_HTTP_TOLL_REDIS_DATA      0
#define NGX_HTTP_TOLL_REDIS_SENTINEL  1
/* a Cluster node's second connection: CLUSTER SLOTS, never behind a
 * command, and a huge map never in front of one */
#define NGX_HTTP_TOLL_REDIS_CONTROL   2
/* "[" host "]:" port */
#define NGX_HTTP_TOLL_REDIS_NAME_LEN  (TOLL_ADDR_HOST_SIZE + 8)


typedef enum {
    NGX_HTTP_TOLL_REDIS_DOWN = 0,        /* waiting to reconnect */
    NGX_HTTP_TOLL_REDIS_CONNECTING,
    NGX_HTTP_TOLL_REDIS_CONNECTED
} ngx_http_toll_redis_state_e;


typedef struct ngx_http_toll_redis_s       ngx_http_toll_redis_t;
typedef struct ngx_http_toll_redis_node_s  ngx_http_toll_redis_node_t;


/* one connection: to the one Redis, a Cluster's node, or a sentinel */
struct ngx_http_toll_redis_node_s {
    ngx_http_toll_redis_t           *rd;
    redisAsyncContext               *ac;
    ngx_http_toll_redis_state_e      state;
    ngx_event_t                      reconnect;
    ngx_event_t                      connect_timer;
    ngx_msec_t                       backoff_ms;
    ngx_uint_t                       failures;  /* in a row, for logs */
    /* the last reconnect made at once, without a backoff */
    ngx_msec_t                       reconnected_at;
    /* this connection's first answer, 0 before: a lasting one resets
     * the backoff */
    ngx_msec_t                       answered_at;
    /* hiredis contexts not yet freed: callbacks may still name the node */
    ngx_uint_t                       contexts;

    /* a numeric address, or a socket path */
    u_char                           host[TOLL_ADDR_HOST_SIZE];
    int                              port;
    ngx_str_t                        name;      /* for logs */
    u_char                           name_buf[NGX_HTTP_TOLL_REDIS_NAME_LEN];

    unsigned                         unix_socket:1;
    /* durable commands answered: waiting for the next WAIT, and the ones
     * the WAIT on its way covers */
    ngx_queue_t                      wait_next;
    ngx_queue_t                      wait_cur;

    unsigned                         wait_sent:1;
    unsigned                         sentinel:1; /* no AUTH, no SELECT */
    unsigned                         control:1;  /* the map, no SELECT */
    unsigned                         answered:1; /* this connection has */
    unsigned                         retired:1;  /* not to reconnect */
    unsigned                         seed:1;     /* configured: kept */
    unsigned                         held:1;     /* a map being applied */
};


struct ngx_http_toll_redis_cmd_s {
    ngx_event_t                      timer;
    ngx_http_toll_redis_handler_pt   handler;
    void                            *data;      /* NULL: nobody to tell */
    uint64_t                         sent_us;   /* for the reply time */
    ngx_http_toll_redis_node_t      *node;      /* where it waits */
    ngx_uint_t                       redirects;
    /* a durable command's answer, kept until WAIT says replicas have it */
    redisReply                      *answer;
    ngx_queue_t                      wait;      /* in its node's lists */

    /* a script's: TOLL_SCRIPT_N for any other command */
    toll_script_e                    script;
    /*
     * The arguments, kept for sending it again: an EVALSHA's, for
     * NOSCRIPT, and every command's on a Cluster, for MOVED and ASK
     */
    int                              argc;
    const char                     **argv;
    size_t                          *argvlen;

    unsigned                         durable:1;
    unsigned                         waiting:1; /* for WAIT's answer */
};


struct ngx_http_toll_redis_s {
    ngx_http_toll_redis_conf_t      *conf;
    ngx_log_t                       *log;
    ngx_http_toll_redis_stats_t     *stats;     /* in the zone */
    ngx_http_toll_redis_up_pt        up;
    void                            *up_data;

    ngx_http_toll_redis_node_t      *nodes[NGX_HTTP_TOLL_REDIS_NODES_MAX];
    ngx_uint_t                       nnodes;
    /* the sentinels: nodes[0 .. nsentinels), the seeds' distinct ones */
    ngx_uint_t                       nsentinels;
    /* one Redis, or the Sentinel's primary: the node commands go to */
    ngx_http_toll_redis_node_t      *primary;

    /* Cluster */
    toll_cluster_map_t              *map;
    ngx_http_toll_redis_node_t      *slot_node[TOLL_CLUSTER_NODES_MAX];
    ngx_event_t                      refresh;
    ngx_msec_t                       refreshed; /* last asked */
    ngx_uint_t                       refresh_failures; /* in a row */
    ngx_http_toll_redis_node_t      *refresh_node; /* asked for the map */
    ngx_uint_t                       seed;      /* next one to ask */

    /* Sentinel */
    ngx_http_toll_redis_node_t      *sentinel;  /* asked now */
    /* named by a sentinel, used once it answers ROLE master */
    ngx_http_toll_redis_node_t      *candidate;
    ngx_msec_t                       candidate_at;
    ngx_uint_t                       sentinel_next;
    ngx_event_t                      discover;

    ngx_uint_t                       unreplicated; /* since last said */
    ngx_msec_t                       unreplicated_said;

    unsigned                         active:1;  /* configured, this worker */
    unsigned                         mapped:1;  /* a map was read */
    unsigned                         refreshing:1;
    unsigned                         asking:1;  /* a sentinel */
    unsigned                         is_up:1;   /* as told to up() */
};


extern ngx_http_toll_redis_t  ngx_http_toll_redis;


/* ngx_http_toll_redis.c: a node's connection */

void ngx_http_toll_redis_node_init(ngx_http_toll_redis_node_t *node);
void ngx_http_toll_redis_node_connect(ngx_http_toll_redis_node_t *node);
void ngx_http_toll_redis_node_close(ngx_http_toll_redis_node_t *node,
    const char *reason);
/* sends cmd (its argv) on node; NGX_ERROR when it cannot go now */
ngx_int_t ngx_http_toll_redis_node_send(ngx_http_toll_redis_node_t *node,
    ngx_http_toll_redis_cmd_t *cmd);
/* a command's outcome in the counters: failed, or its reply time */
void ngx_http_toll_redis_count_reply(ngx_http_toll_redis_t *rd,
    ngx_uint_t failed, uint64_t us);
/* a command the adapter sends for itself: CLUSTER SLOTS, SENTINEL ... */
ngx_int_t ngx_http_toll_redis_node_ask(ngx_http_toll_redis_node_t *node,
    redisCallbackFn *fn, void *privdata, int argc, const char **argv,
    const size_t *argvlen);


/* ngx_http_toll_redis_durable.c: WAIT after a durable command's answer */

ngx_int_t ngx_http_toll_redis_wait(ngx_http_toll_redis_node_t *node,
    ngx_http_toll_redis_cmd_t *cmd, redisReply *reply);


/* ngx_http_toll_redis_event.c: ac's socket on nginx's events */

ngx_int_t ngx_http_toll_redis_attach(redisAsyncContext *ac, ngx_log_t *log);


/* ngx_http_toll_redis_route.c: which node */

/* the node of a kind at host:port, made (not connected) when new */
ngx_http_toll_redis_node_t *ngx_http_toll_redis_node(ngx_http_toll_redis_t *rd,
    const char *host, int port, ngx_uint_t unix_socket, ngx_uint_t kind);
ngx_int_t ngx_http_toll_redis_route_init(ngx_http_toll_redis_t *rd,
    ngx_cycle_t *cycle);
void ngx_http_toll_redis_route_exit(ngx_http_toll_redis_t *rd);
/* the node cmd goes to, or NULL when none can take it now */
ngx_http_toll_redis_node_t *ngx_http_toll_redis_route(
    ngx_http_toll_redis_t *rd, int argc, const char **argv,
    const size_t *argvlen);
/*
 * An error reply to cmd: NGX_OK when it was sent again (MOVED, ASK, or a
 * Sentinel's former primary answering READONLY), NGX_DECLINED when the
 * reply is the command's answer.
 */
ngx_int_t ngx_http_toll_redis_route_reply(ngx_http_toll_redis_t *rd,
    ngx_http_toll_redis_cmd_t *cmd, redisReply *r);
/* whether the store is up for this worker, told to up() on a change */
void ngx_http_toll_redis_set_up(ngx_http_toll_redis_t *rd);


/* ngx_http_toll_redis_sentinel.c: a Sentinel's primary */

void ngx_http_toll_redis_discover(ngx_http_toll_redis_t *rd);
void ngx_http_toll_redis_discover_later(ngx_http_toll_redis_t *rd,
    ngx_msec_t ms);
void ngx_http_toll_redis_discover_handler(ngx_event_t *ev);
void ngx_http_toll_redis_next_sentinel(ngx_http_toll_redis_t *rd);
/* the sentinels asked this often */
#define NGX_HTTP_TOLL_REDIS_DISCOVER_MS        1000
/* ... and this soon again after a sentinel failed */
#define NGX_HTTP_TOLL_REDIS_DISCOVER_RETRY_MS  100


/* a node answered (1) or was lost (0) */
void ngx_http_toll_redis_route_node(ngx_http_toll_redis_t *rd,
    ngx_http_toll_redis_node_t *node, ngx_uint_t up);


#endif /* _NGX_HTTP_TOLL_REDIS_INT_H_INCLUDED_ */
