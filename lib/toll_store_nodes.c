/*
 * toll: the blocking client's nodes (toll_store.h): a connection opened
 * with AUTH and SELECT, a Cluster's map read and installed, the primary a
 * Sentinel names, the node of a slot, a node given up.  The commands,
 * pipelines and redirections are toll_store.c's.
 */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "toll_store.h"
#include "toll_store_int.h"


/*
 * A connection with its timeout, AUTH and (select) SELECT; NULL with
 * st->err set.
 */
redisContext *
toll_store_open(toll_store_t *st, const char *host, int port, int select)
{
    char           db[16];
    const char    *argv[2];
    size_t         argvlen[2];
    redisReply    *r;
    redisContext  *c;

    c = (port == 0) ? redisConnectUnixWithTimeout(host, st->tv)
                    : redisConnectWithTimeout(host, port, st->tv);

    if (c == NULL) {
        toll_store_fail(st, "out of memory");
        return NULL;
    }

    if (c->err) {
        if (port == 0) {
            toll_store_fail(st, "unix:%s: %s", host, c->errstr);

        } else {
            toll_store_fail(st, strchr(host, ':') ? "[%s]:%d: %s"
                                                  : "%s:%d: %s",
                            host, port, c->errstr);
        }

        redisFree(c);
        return NULL;
    }

    /* without it, a Redis that accepts and then stalls would hang us */
    (void) redisSetTimeout(c, st->tv);

    if (st->password != NULL) {
        argv[0] = "AUTH";
        argvlen[0] = 4;
        argv[1] = st->password;
        argvlen[1] = strlen(st->password);

        r = redisCommandArgv(c, 2, argv, argvlen);

        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            toll_store_fail(st, "%s:%d: AUTH: %s", host, port,
                            r ? r->str : c->errstr);
            goto failed;
        }

        freeReplyObject(r);
    }

    if (select && st->db > 0) {
        argv[0] = "SELECT";
        argvlen[0] = 6;
        argv[1] = db;
        argvlen[1] = (size_t) snprintf(db, sizeof(db), "%d", st->db);

        r = redisCommandArgv(c, 2, argv, argvlen);

        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            toll_store_fail(st, "%s:%d: SELECT %d: %s", host, port, st->db,
                            r ? r->str : c->errstr);
            goto failed;
        }

        freeReplyObject(r);
    }

    return c;

failed:

    if (r != NULL) {
        freeReplyObject(r);
    }

    redisFree(c);

    return NULL;
}


/* a context's failure said; a timeout told apart: hiredis says EAGAIN */
void
toll_store_io_fail(toll_store_t *st, redisContext *c, const char *what,
    int *timed_out)
{
    int  e;

    e = errno;
    *timed_out = 0;

    if (c == NULL) {
        toll_store_fail(st, "%s: no connection", what);
        return;
    }

    if (c->err == REDIS_ERR_IO && (e == EAGAIN || e == EWOULDBLOCK)) {
        *timed_out = 1;
        toll_store_fail(st, "%s: no answer within %ld ms", what,
                        (long) (st->tv.tv_sec * 1000
                                + st->tv.tv_usec / 1000));
    } else {
        toll_store_fail(st, "%s: %s", what, c->errstr);
    }

    toll_store_close(st, c);
}


/*
 * CLUSTER SLOTS from the first node that answers: the primaries of the
 * map known, then the seeds.  0, or -1 with st->err set (the map kept).
 */
int
toll_store_refresh(toll_store_t *st)
{
    unsigned             i, n;
    redisReply          *r;
    redisContext        *c;
    char                 err[256];
    const char          *host;
    int                  port, own;
    static const char   *argv[2] = { "CLUSTER", "SLOTS" };
    static const size_t  argvlen[2] = { 7, 5 };

    /* a pipeline's replies first: CLUSTER SLOTS goes on their
     * connections, and a connection may close */
    if (toll_store_read_ahead(st) != 0) {
        return -1;
    }

    n = st->map.n + st->spec.n;
    toll_store_fail(st, "no cluster node answered");

    for (i = 0; i < n; i++) {
        if (i < st->map.n) {
            host = st->map.nodes[i].host;
            port = st->map.nodes[i].port;
            c = st->ctx[i];
            own = 1;

        } else {
            host = st->spec.addr[i - st->map.n].host;
            port = st->spec.addr[i - st->map.n].port;
            c = NULL;
            own = 0;
        }

        if (c != NULL && c->err) {
            toll_store_close(st, c);
            c = NULL;
        }

        if (c == NULL) {
            c = toll_store_open(st, host, port, 0);

            if (c == NULL) {
                continue;
            }

            if (own) {
                st->ctx[i] = c;
            }
        }

        r = redisCommandArgv(c, 2, argv, argvlen);

        if (r == NULL) {
            toll_store_fail(st, "%s:%d: CLUSTER SLOTS: %s", host, port,
                            c->errstr);

        } else if (toll_cluster_map_parse(&st->next, r, host, err,
                                          sizeof(err))
                   != 0)
        {
            toll_store_fail(st, "%s:%d: %s%s%s", host, port, err,
                            (r->type == REDIS_REPLY_ERROR) ? ": " : "",
                            (r->type == REDIS_REPLY_ERROR) ? r->str : "");
            freeReplyObject(r);
            r = NULL;
        }

        if (!own || r == NULL) {
            if (own) {
                toll_store_close(st, c);
            } else {
                redisFree(c);
            }
        }

        if (r != NULL) {
            freeReplyObject(r);
            toll_store_install(st);
            return 0;
        }
    }

    return -1;
}


/* st->next becomes the map; a connection follows its node */
void
toll_store_install(toll_store_t *st)
{
    int            k;
    unsigned       i, j, ngone;
    redisContext  *ctx[TOLL_CLUSTER_NODES_MAX], *gone[TOLL_CLUSTER_NODES_MAX];

    memset(ctx, 0, sizeof(ctx));
    ngone = 0;

    for (i = 0; i < st->map.n; i++) {
        if (st->ctx[i] == NULL) {
            continue;
        }

        k = -1;

        for (j = 0; j < st->next.n; j++) {
            if (st->next.nodes[j].port == st->map.nodes[i].port
                && strcmp(st->next.nodes[j].host, st->map.nodes[i].host)
                   == 0)
            {
                k = (int) j;
                break;
            }
        }

        if (k >= 0) {
            ctx[k] = st->ctx[i];

        } else {
            /* no pipeline waits on it: its replies were read ahead */
            gone[ngone++] = st->ctx[i];
        }
    }

    memcpy(st->ctx, ctx, sizeof(ctx));
    memcpy(&st->map, &st->next, sizeof(toll_cluster_map_t));

    for (i = 0; i < ngone; i++) {
        toll_store_close(st, gone[i]);
    }
}


/*
 * The primary from the first sentinel that names it, and a connection
 * to it that ROLE says is a master.  0, or -1 with st->err set.
 */
int
toll_store_sentinel(toll_store_t *st)
{
    unsigned             i;
    redisReply          *r;
    redisContext        *c;
    toll_cluster_node_t  p;
    const char          *argv[3];
    size_t               argvlen[3];
    static const char   *role[1] = { "ROLE" };
    static const size_t  rolelen[1] = { 4 };

    if (st->ctx[0] != NULL) {
        toll_store_close(st, st->ctx[0]);
    }

    argv[0] = "SENTINEL";
    argvlen[0] = 8;
    argv[1] = "get-master-addr-by-name";
    argvlen[1] = 23;
    argv[2] = st->spec.master;
    argvlen[2] = strlen(st->spec.master);

    toll_store_fail(st, "no sentinel answered");

    for (i = 0; i < st->spec.n; i++) {
        /* a sentinel has no password of the data nodes, nor databases */
        c = (st->spec.addr[i].port == 0)
            ? NULL
            : redisConnectWithTimeout(st->spec.addr[i].host,
                                      st->spec.addr[i].port, st->tv);

        if (c == NULL || c->err) {
            toll_store_fail(st, "sentinel %s:%d: %s", st->spec.addr[i].host,
                            st->spec.addr[i].port,
                            c ? c->errstr : "out of memory");
            if (c != NULL) {
                redisFree(c);
            }

            continue;
        }

        (void) redisSetTimeout(c, st->tv);
        r = redisCommandArgv(c, 3, argv, argvlen);

        if (r == NULL || toll_sentinel_primary(r, &p) != 0) {
            toll_store_fail(st, "sentinel %s:%d knows no primary named "
                            "\"%s\"%s%s", st->spec.addr[i].host,
                            st->spec.addr[i].port, st->spec.master,
                            (r && r->type == REDIS_REPLY_ERROR) ? ": " : "",
                            (r && r->type == REDIS_REPLY_ERROR) ? r->str
                                                                : "");
            if (r != NULL) {
                freeReplyObject(r);
            }

            redisFree(c);
            continue;
        }

        freeReplyObject(r);
        redisFree(c);

        c = toll_store_open(st, p.host, p.port, 1);

        if (c == NULL) {
            continue;
        }

        /* a sentinel that has not seen the failover yet names the old
         * primary, now a replica */
        r = redisCommandArgv(c, 1, role, rolelen);

        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1
            || r->element[0]->type != REDIS_REPLY_STRING
            || strcmp(r->element[0]->str, "master") != 0)
        {
            toll_store_fail(st, "%s:%d, which sentinel %s:%d names \"%s\", "
                            "is not a master", p.host, p.port,
                            st->spec.addr[i].host, st->spec.addr[i].port,
                            st->spec.master);
            if (r != NULL) {
                freeReplyObject(r);
            }

            redisFree(c);
            continue;
        }

        freeReplyObject(r);
        st->ctx[0] = c;
        st->primary = p;

        return 0;
    }

    return -1;
}


int
toll_store_node_index(toll_store_t *st, const char *host, int port)
{
    unsigned  i;

    for (i = 0; i < st->map.n; i++) {
        if (st->map.nodes[i].port == port
            && strcmp(st->map.nodes[i].host, host) == 0)
        {
            return (int) i;
        }
    }

    return -1;
}


redisContext *
toll_store_node_ctx(toll_store_t *st, unsigned i)
{
    if (st->ctx[i] != NULL && st->ctx[i]->err) {
        toll_store_close(st, st->ctx[i]);
    }

    if (st->ctx[i] == NULL) {
        st->ctx[i] = toll_store_open(st, st->map.nodes[i].host,
                                     st->map.nodes[i].port, 0);
    }

    return st->ctx[i];
}


/* the connection of a slot's node (any for TOLL_CLUSTER_ANY) */
redisContext *
toll_store_route(toll_store_t *st, int slot)
{
    unsigned  i;

    if (st->spec.kind != TOLL_STORE_CLUSTER) {
        if (st->ctx[0] != NULL && !st->ctx[0]->err) {
            return st->ctx[0];
        }

        if (st->spec.kind == TOLL_STORE_SENTINEL) {
            return (toll_store_sentinel(st) == 0) ? st->ctx[0] : NULL;
        }

        if (st->ctx[0] != NULL) {
            toll_store_close(st, st->ctx[0]);
        }

        st->ctx[0] = toll_store_open(st, st->spec.addr[0].host,
                                     st->spec.addr[0].port, 1);

        return st->ctx[0];
    }

    if (slot == TOLL_CLUSTER_ANY) {
        for (i = 0; i < st->map.n; i++) {
            if (st->ctx[i] != NULL && !st->ctx[i]->err) {
                return st->ctx[i];
            }
        }

        return (st->map.n > 0) ? toll_store_node_ctx(st, 0) : NULL;
    }

    if (st->map.slot[slot] >= st->map.n) {
        /* a slot no range named: perhaps one being moved, ask again */
        if (toll_store_refresh(st) != 0) {
            return NULL;
        }

        if (st->map.slot[slot] >= st->map.n) {
            toll_store_fail(st, "no cluster node serves hash slot %d", slot);
            return NULL;
        }
    }

    return toll_store_node_ctx(st, st->map.slot[slot]);
}


/* a context gone: freed, forgotten where the store and the pipeline
 * keep it */
void
toll_store_close(toll_store_t *st, redisContext *c)
{
    size_t  i;

    if (c == NULL) {
        return;
    }

    for (i = 0; i < TOLL_CLUSTER_NODES_MAX; i++) {
        if (st->ctx[i] == c) {
            st->ctx[i] = NULL;
        }
    }

    for (i = 0; i < st->npend; i++) {
        if (st->pend[i].c == c) {
            st->pend[i].c = NULL;
        }
    }

    redisFree(c);
}
