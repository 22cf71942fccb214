/*
 * toll: what the blocking client's two files share (the private header):
 * the client itself, and its nodes' functions (toll_store_nodes.c).
 */

#ifndef _TOLL_STORE_INT_H_INCLUDED_
#define _TOLL_STORE_INT_H_INCLUDED_


#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "toll_store.h"


/* a pipeline's commands between two reads, at first */
#define TOLL_STORE_PEND_INIT  16


typedef struct {
    redisContext        *c;
    char                *cmd;               /* formatted */
    size_t               len;
    int                  slot;              /* or TOLL_CLUSTER_ANY */
    redisReply          *ready;             /* read ahead of its turn */
    unsigned             read:1;            /* its reply left c */
} toll_store_pend_t;


struct toll_store_s {
    toll_store_spec_t    spec;
    char                *password;
    int                  db;
    struct timeval       tv;

    /* SINGLE and SENTINEL: ctx[0]; CLUSTER: ctx[i] of map.nodes[i] */
    redisContext        *ctx[TOLL_CLUSTER_NODES_MAX];
    toll_cluster_map_t   map;
    toll_cluster_map_t   next;              /* a map being read */
    toll_cluster_node_t  primary;           /* SENTINEL */

    toll_store_pend_t   *pend;
    size_t               npend, pend_size, pend_next;

    char                 err[512];
};


/* a failure's text into st->err */
void toll_store_fail(toll_store_t *st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* the replies of a pipeline's commands sent before, read ahead: 0 or -1 */
int toll_store_read_ahead(toll_store_t *st);

/* toll_store_nodes.c */
redisContext *toll_store_open(toll_store_t *st, const char *host, int port,
    int select);
void toll_store_io_fail(toll_store_t *st, redisContext *c, const char *what,
    int *timed_out);
int toll_store_refresh(toll_store_t *st);
void toll_store_install(toll_store_t *st);
int toll_store_sentinel(toll_store_t *st);
int toll_store_node_index(toll_store_t *st, const char *host, int port);
redisContext *toll_store_node_ctx(toll_store_t *st, unsigned i);
redisContext *toll_store_route(toll_store_t *st, int slot);
void toll_store_close(toll_store_t *st, redisContext *c);


#endif /* _TOLL_STORE_INT_H_INCLUDED_ */
