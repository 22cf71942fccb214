/*
 * toll: the blocking client toll-settle and tollctl share (toll_store.h):
 * one Redis, a Redis Cluster (a connection per primary, made when first
 * needed, routed by the slot map, MOVED and ASK followed) or the primary
 * a Sentinel names (asked again when it is lost or turns read-only).
 *
 * Each command is formatted once (redisFormatCommandArgv) and kept until
 * its reply is read, so that a redirection sends the same bytes again to
 * another node.  A command is sent again after a lost connection only
 * to a Cluster or a Sentinel's primary, once, and never after a timeout:
 * a command that timed out may still run.
 */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "toll_names.h"
#include "toll_store.h"
#include "toll_store_int.h"


static redisReply *toll_store_send(toll_store_t *st, redisContext *c,
    const char *cmd, size_t len, int asking, int *timed_out);
static redisReply *toll_store_follow(toll_store_t *st, redisContext *c,
    const char *cmd, size_t len, int slot, redisReply *r);
static void toll_store_discard(toll_store_t *st);


toll_store_t *
toll_store_connect(const toll_store_spec_t *spec, const char *password,
    int db, const struct timeval *timeout, char *err, size_t err_size)
{
    toll_store_t  *st;

    if (spec->kind == TOLL_STORE_CLUSTER && db > 0) {
        snprintf(err, err_size, "db= is not available on a Redis Cluster: "
                 "it has only database 0");
        return NULL;
    }

    st = calloc(1, sizeof(toll_store_t));

    if (st == NULL) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }

    st->spec = *spec;
    st->db = db;
    st->tv = *timeout;

    if (password != NULL && password[0] != '\0') {
        st->password = strdup(password);

        if (st->password == NULL) {
            free(st);
            snprintf(err, err_size, "out of memory");
            return NULL;
        }
    }

    switch (spec->kind) {

    case TOLL_STORE_CLUSTER:
        if (toll_store_refresh(st) == 0) {
            return st;
        }

        break;

    case TOLL_STORE_SENTINEL:
        if (toll_store_sentinel(st) == 0) {
            return st;
        }

        break;

    default:
        st->ctx[0] = toll_store_open(st, spec->addr[0].host,
                                     spec->addr[0].port, 1);

        if (st->ctx[0] != NULL) {
            return st;
        }

        break;
    }

    snprintf(err, err_size, "%s", st->err);
    toll_store_free(st);

    return NULL;
}


void
toll_store_free(toll_store_t *st)
{
    unsigned  i;

    if (st == NULL) {
        return;
    }

    toll_store_discard(st);

    for (i = 0; i < TOLL_CLUSTER_NODES_MAX; i++) {
        if (st->ctx[i] != NULL) {
            redisFree(st->ctx[i]);
        }
    }

    if (st->password != NULL) {
        explicit_bzero(st->password, strlen(st->password));
        free(st->password);
    }

    free(st->pend);
    free(st);
}


const char *
toll_store_error(const toll_store_t *st)
{
    return st->err;
}


toll_store_kind_e
toll_store_kind(const toll_store_t *st)
{
    return st->spec.kind;
}


redisReply *
toll_store_command(toll_store_t *st, int argc, const char **argv,
    const size_t *argvlen)
{
    int            slot, len, timed_out, attempt;
    char          *cmd;
    redisReply    *r;
    redisContext  *c;

    toll_store_discard(st);

    slot = toll_cluster_command_slot(argc, argv, argvlen);

    if (slot == TOLL_CLUSTER_CROSSSLOT) {
        toll_store_fail(st, "%.*s: its keys are in more than one hash slot",
                        (int) argvlen[0], argv[0]);
        return NULL;
    }

    len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);

    if (len < 0) {
        toll_store_fail(st, "out of memory");
        return NULL;
    }

    r = NULL;

    for (attempt = 0; attempt < 2; attempt++) {
        timed_out = 0;
        c = toll_store_route(st, slot);

        if (c != NULL) {
            r = toll_store_send(st, c, cmd, (size_t) len, 0, &timed_out);
        }

        /* a Cluster's or a Sentinel's node lost: the map or the
         * primary asked again, the command sent once more */
        if (r != NULL || timed_out || attempt == 1
            || st->spec.kind == TOLL_STORE_SINGLE
            || (st->spec.kind == TOLL_STORE_CLUSTER
                ? toll_store_refresh(st) : toll_store_sentinel(st)) != 0)
        {
            break;
        }
    }

    if (r != NULL) {
        r = toll_store_follow(st, c, cmd, (size_t) len, slot, r);
    }

    free(cmd);

    return r;
}


int
toll_store_append(toll_store_t *st, int argc, const char **argv,
    const size_t *argvlen)
{
    int                 slot, len;
    char               *cmd;
    redisContext       *c;
    toll_store_pend_t  *p;

    /* the replies of an earlier pipeline all read: start again */
    if (st->pend_next == st->npend && st->npend > 0) {
        toll_store_discard(st);
    }

    slot = toll_cluster_command_slot(argc, argv, argvlen);

    if (slot == TOLL_CLUSTER_CROSSSLOT) {
        toll_store_fail(st, "%.*s: its keys are in more than one hash slot",
                        (int) argvlen[0], argv[0]);
        return -1;
    }

    if (st->npend == st->pend_size) {
        p = realloc(st->pend, (st->pend_size ? st->pend_size * 2
                                             : TOLL_STORE_PEND_INIT)
                              * sizeof(toll_store_pend_t));

        if (p == NULL) {
            toll_store_fail(st, "out of memory");
            return -1;
        }

        st->pend = p;
        st->pend_size = st->pend_size ? st->pend_size * 2
                                      : TOLL_STORE_PEND_INIT;
    }

    c = toll_store_route(st, slot);

    if (c == NULL) {
        return -1;
    }

    len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);

    if (len < 0 || redisAppendFormattedCommand(c, cmd, (size_t) len)
                   != REDIS_OK)
    {
        if (len >= 0) {
            free(cmd);
        }

        toll_store_fail(st, "out of memory");
        return -1;
    }

    p = &st->pend[st->npend++];
    p->c = c;
    p->cmd = cmd;
    p->len = (size_t) len;
    p->slot = slot;
    p->ready = NULL;
    p->read = 0;

    return 0;
}


int
toll_store_get_reply(toll_store_t *st, redisReply **reply)
{
    int                  timed_out;
    void                *r;
    unsigned             s;
    toll_store_pend_t   *p;
    toll_cluster_node_t  to;

    *reply = NULL;

    if (st->pend_next >= st->npend) {
        toll_store_fail(st, "no command waits for its reply");
        return -1;
    }

    p = &st->pend[st->pend_next];

    if (!p->read) {
        if (p->c == NULL || redisGetReply(p->c, &r) != REDIS_OK) {
            toll_store_io_fail(st, p->c, "a pipeline's reply", &timed_out);
            toll_store_discard(st);
            return -1;
        }

        p->read = 1;
        p->ready = r;
    }

    st->pend_next++;

    r = p->ready;
    p->ready = NULL;

    if (st->spec.kind == TOLL_STORE_CLUSTER
        && ((redisReply *) r)->type == REDIS_REPLY_ERROR
        && toll_cluster_redirect(((redisReply *) r)->str,
                                 ((redisReply *) r)->len, &s, &to)
           != 0)
    {
        /* the others' replies first: following it may change the map
         * and the connections they wait on */
        if (toll_store_read_ahead(st) != 0) {
            freeReplyObject(r);
            toll_store_discard(st);
            return -1;
        }

        r = toll_store_follow(st, p->c, p->cmd, p->len, p->slot, r);

        if (r == NULL) {
            toll_store_discard(st);
            return -1;
        }
    }

    *reply = r;

    return 0;
}


redisContext *
toll_store_context_for(toll_store_t *st, const char *key, size_t len)
{
    redisContext  *c;

    toll_store_discard(st);

    c = toll_store_route(st, (int) toll_cluster_slot(key, len));

    if (c != NULL && c->err) {
        /* lost since: the next one, with the map or primary read again */
        toll_store_close(st, c);

        if ((st->spec.kind == TOLL_STORE_CLUSTER ? toll_store_refresh(st)
             : st->spec.kind == TOLL_STORE_SENTINEL ? toll_store_sentinel(st)
             : 0) != 0)
        {
            return NULL;
        }

        c = toll_store_route(st, (int) toll_cluster_slot(key, len));
    }

    return c;
}


long long
toll_store_wait(toll_store_t *st, const char *key, size_t len, int replicas,
    int timeout_ms)
{
    char           mark[sizeof(TOLL_NAME_WAIT_PREFIX) + TOLL_NAME_LEN_MAX];
    size_t         mlen;
    long long      n;
    redisReply    *r;
    redisContext  *c;

    /* a write of this connection in the key's slot first: toll_names.h */

    mlen = sizeof(TOLL_NAME_WAIT_PREFIX) - 1 + len;

    if (len <= TOLL_NAME_LEN_MAX) {
        memcpy(mark, TOLL_NAME_WAIT_PREFIX, sizeof(TOLL_NAME_WAIT_PREFIX) - 1);
        memcpy(mark + sizeof(TOLL_NAME_WAIT_PREFIX) - 1, key, len);
    }

    if (len > TOLL_NAME_LEN_MAX
        || toll_cluster_slot(mark, mlen) != toll_cluster_slot(key, len))
    {
        toll_store_fail(st, "WAIT for \"%.*s\": its mark would be in "
                        "another slot (no hash tag)",
                        (int) (len > 64 ? 64 : len), key);
        return -1;
    }

    c = toll_store_context_for(st, key, len);
    if (c == NULL) {
        return -1;
    }

    r = redisCommand(c, "SET %b 1 PX " TOLL_WAIT_MARK_TTL_MS, mark, mlen);

    if (r == NULL || r->type != REDIS_REPLY_STATUS) {
        if (r != NULL && r->type == REDIS_REPLY_ERROR) {
            toll_store_fail(st, "WAIT's mark: %.*s", (int) r->len, r->str);

            /* MOVED: the map is read again for the next pass */
            if (st->spec.kind == TOLL_STORE_CLUSTER
                && strncmp(r->str, "MOVED ", 6) == 0)
            {
                (void) toll_store_refresh(st);
            }
        }

        if (r != NULL) {
            freeReplyObject(r);
        }

        return -1;
    }

    freeReplyObject(r);

    r = redisCommand(c, "WAIT %d %d", replicas, timeout_ms);

    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        if (r != NULL) {
            freeReplyObject(r);
        }

        return -1;
    }

    n = r->integer;
    freeReplyObject(r);

    return n;
}


unsigned
toll_store_nodes(const toll_store_t *st)
{
    return (st->spec.kind == TOLL_STORE_CLUSTER) ? st->map.n : 1;
}


redisReply *
toll_store_command_node(toll_store_t *st, unsigned node, int argc,
    const char **argv, const size_t *argvlen)
{
    int            len, timed_out;
    char          *cmd;
    redisReply    *r;
    redisContext  *c;

    toll_store_discard(st);

    if (node >= toll_store_nodes(st)) {
        toll_store_fail(st, "no node %u: the cluster has %u", node,
                        toll_store_nodes(st));
        return NULL;
    }

    c = (st->spec.kind == TOLL_STORE_CLUSTER)
        ? toll_store_node_ctx(st, node)
        : toll_store_route(st, TOLL_CLUSTER_ANY);

    if (c == NULL) {
        return NULL;
    }

    len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);

    if (len < 0) {
        toll_store_fail(st, "out of memory");
        return NULL;
    }

    r = toll_store_send(st, c, cmd, (size_t) len, 0, &timed_out);
    free(cmd);

    return r;
}


void
toll_store_fail(toll_store_t *st, const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    vsnprintf(st->err, sizeof(st->err), fmt, ap);
    va_end(ap);
}


/* one command on c, ASKING before it when asking; NULL with st->err */
static redisReply *
toll_store_send(toll_store_t *st, redisContext *c, const char *cmd,
    size_t len, int asking, int *timed_out)
{
    void  *r;

    *timed_out = 0;

    if ((asking && redisAppendFormattedCommand(c, "*1\r\n$6\r\nASKING\r\n",
                                               16) != REDIS_OK)
        || redisAppendFormattedCommand(c, cmd, len) != REDIS_OK)
    {
        toll_store_fail(st, "out of memory");
        return NULL;
    }

    if (asking) {
        /* ASKING's OK, read and dropped */
        if (redisGetReply(c, &r) != REDIS_OK) {
            toll_store_io_fail(st, c, "ASKING", timed_out);
            return NULL;
        }

        freeReplyObject(r);
    }

    if (redisGetReply(c, &r) != REDIS_OK) {
        toll_store_io_fail(st, c, "redis", timed_out);
        return NULL;
    }

    return r;
}


/*
 * r, the reply c gave to cmd, or the reply at the end of the MOVED and
 * ASK it leads to; NULL with st->err when the redirections go wrong.
 */
static redisReply *
toll_store_follow(toll_store_t *st, redisContext *c, const char *cmd,
    size_t len, int slot, redisReply *r)
{
    int                  k, rc, n, timed_out, sentinel_retry;
    unsigned             s;
    toll_cluster_node_t  to;

    sentinel_retry = (st->spec.kind == TOLL_STORE_SENTINEL);

    for (n = 0; ; n++) {
        if (r->type != REDIS_REPLY_ERROR) {
            return r;
        }

        /* a primary turned replica: the sentinels asked again, once */
        if (sentinel_retry && strncmp(r->str, "READONLY", 8) == 0) {
            sentinel_retry = 0;
            freeReplyObject(r);

            if (toll_store_sentinel(st) != 0) {
                return NULL;
            }

            r = toll_store_send(st, st->ctx[0], cmd, len, 0, &timed_out);

            if (r == NULL) {
                return NULL;
            }

            continue;
        }

        if (st->spec.kind != TOLL_STORE_CLUSTER) {
            return r;
        }

        rc = toll_cluster_redirect(r->str, r->len, &s, &to);

        if (rc == 0) {
            return r;
        }

        if (rc < 0) {
            toll_store_fail(st, "a malformed redirection: %.*s",
                            (int) (r->len > 200 ? 200 : r->len), r->str);
            freeReplyObject(r);
            return NULL;
        }

        freeReplyObject(r);

        if (n == TOLL_CLUSTER_REDIRECTS_MAX) {
            toll_store_fail(st, "more than %d redirections for one command "
                            "(a loop?), the last to %s:%d for slot %u",
                            TOLL_CLUSTER_REDIRECTS_MAX, to.host, to.port, s);
            return NULL;
        }

        if (slot >= 0 && s != (unsigned) slot) {
            toll_store_fail(st, "redirected for slot %u, the command's is "
                            "%d", s, slot);
            return NULL;
        }

        /* MOVED: the map is old; ASK: one command elsewhere, the map
         * stays, unless it does not know the node */
        k = toll_store_node_index(st, to.host, to.port);

        if (rc == TOLL_CLUSTER_MOVED || k < 0) {
            if (toll_store_refresh(st) != 0) {
                return NULL;
            }

            k = toll_store_node_index(st, to.host, to.port);
        }

        if (k < 0) {
            toll_store_fail(st, "%s to %s:%d, a node the cluster's map does "
                            "not name", (rc == TOLL_CLUSTER_MOVED) ? "MOVED"
                                                                   : "ASK",
                            to.host, to.port);
            return NULL;
        }

        c = toll_store_node_ctx(st, (unsigned) k);

        if (c == NULL) {
            return NULL;
        }

        r = toll_store_send(st, c, cmd, len, rc == TOLL_CLUSTER_ASK,
                            &timed_out);

        if (r == NULL) {
            return NULL;
        }
    }
}


/* every reply not read yet, read and freed; the pipeline emptied */
static void
toll_store_discard(toll_store_t *st)
{
    size_t              i;
    void               *r;
    toll_store_pend_t  *p;

    for (i = 0; i < st->npend; i++) {
        p = &st->pend[i];

        if (!p->read && p->c != NULL && !p->c->err
            && redisGetReply(p->c, &r) == REDIS_OK)
        {
            freeReplyObject(r);
        }

        if (p->ready != NULL) {
            freeReplyObject(p->ready);
        }

        free(p->cmd);
    }

    st->npend = 0;
    st->pend_next = 0;
}


/* the replies of the commands after the current one, read now */
int
toll_store_read_ahead(toll_store_t *st)
{
    int                 timed_out;
    size_t              i;
    void               *r;
    toll_store_pend_t  *p;

    for (i = st->pend_next; i < st->npend; i++) {
        p = &st->pend[i];

        if (p->read) {
            continue;
        }

        if (p->c == NULL || redisGetReply(p->c, &r) != REDIS_OK) {
            toll_store_io_fail(st, p->c, "a pipeline's reply", &timed_out);
            return -1;
        }

        p->read = 1;
        p->ready = r;
    }

    return 0;
}


