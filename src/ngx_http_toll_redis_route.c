/*
 * toll: which Redis a command goes to.
 *
 *   - one Redis: its node;
 *   - a Cluster: the primary that serves the command's hash slot, from a
 *     slot map read with CLUSTER SLOTS (lib/toll_cluster.c reads it);
 *     MOVED patches the map, sends the command on and reads the map
 *     again; ASK sends ASKING and the command to the node named, once; a
 *     lost primary has the map read again every REFRESH_RETRY_MS until
 *     every slot is served by a node that answers (a failover);
 *   - a Sentinel: the primary the sentinels name, asked at start, once a
 *     second (every 100 ms while the primary does not answer), and at
 *     once when the primary is lost or answers READONLY (a failover the
 *     sentinels made); a node named is used once it answers ROLE master,
 *     and then closes the old one's connection, whose pending commands
 *     fail.
 *
 * A command is never sent twice to a node that may have run it: MOVED
 * and ASK mean the node did not, READONLY likewise; a command whose
 * connection is lost fails (its caller's retry, where money is involved,
 * carries an id that makes it idempotent).
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_http_toll_redis_int.h"
#include "toll_store.h"


/* the map read again no more often than this */
#define NGX_HTTP_TOLL_REDIS_REFRESH_MIN_MS     100
/* ... and this often while a slot's primary does not answer */
#define NGX_HTTP_TOLL_REDIS_REFRESH_RETRY_MS   250
/* a map refused or not given: asked again after 250 ms, doubling to this */
#define NGX_HTTP_TOLL_REDIS_REFRESH_MAX_MS     5000


static void ngx_http_toll_redis_refresh(ngx_http_toll_redis_t *rd);
static void ngx_http_toll_redis_refresh_later(ngx_http_toll_redis_t *rd,
    ngx_msec_t ms);
static void ngx_http_toll_redis_refresh_handler(ngx_event_t *ev);
static void ngx_http_toll_redis_on_slots(redisAsyncContext *ac, void *r,
    void *privdata);
static ngx_http_toll_redis_node_t *ngx_http_toll_redis_node_free(
    ngx_http_toll_redis_t *rd);
static ngx_uint_t ngx_http_toll_redis_in_map(ngx_http_toll_redis_t *rd,
    ngx_http_toll_redis_node_t *node);
static ngx_int_t ngx_http_toll_redis_map_apply(ngx_http_toll_redis_t *rd);
static ngx_http_toll_redis_node_t *ngx_http_toll_redis_any(
    ngx_http_toll_redis_t *rd);
static ngx_int_t ngx_http_toll_redis_redirect(ngx_http_toll_redis_t *rd,
    ngx_http_toll_redis_cmd_t *cmd, redisReply *r);
static void ngx_http_toll_redis_on_asking(redisAsyncContext *ac, void *r,
    void *privdata);
static ngx_http_toll_redis_node_t *ngx_http_toll_redis_map_patch(
    ngx_http_toll_redis_t *rd, unsigned slot, toll_cluster_node_t *to);




/*
 * The node at host:port, made (not connected) when there is none yet.
 * The table is bounded: when it is full, the entry of a node that left
 * the map (retired) is given to the new address, once nothing can name
 * it any more; the seeds keep theirs.
 */

ngx_http_toll_redis_node_t *
ngx_http_toll_redis_node(ngx_http_toll_redis_t *rd, const char *host,
    int port, ngx_uint_t unix_socket, ngx_uint_t kind)
{
    size_t                       len;
    ngx_uint_t                   i;
    ngx_http_toll_redis_node_t  *node;

    len = ngx_strlen(host);

    if (len == 0 || len >= TOLL_ADDR_HOST_SIZE) {
        return NULL;
    }

    for (i = 0; i < rd->nnodes; i++) {
        node = rd->nodes[i];

        if (node->port == port
            && node->sentinel == (kind == NGX_HTTP_TOLL_REDIS_SENTINEL)
            && node->control == (kind == NGX_HTTP_TOLL_REDIS_CONTROL)
            && ngx_strcmp(node->host, host) == 0)
        {
            return node;
        }
    }

    if (rd->nnodes < NGX_HTTP_TOLL_REDIS_NODES_MAX) {
        node = ngx_calloc(sizeof(ngx_http_toll_redis_node_t), rd->log);
        if (node == NULL) {
            return NULL;
        }

        rd->nodes[rd->nnodes++] = node;

    } else {
        node = ngx_http_toll_redis_node_free(rd);

        if (node == NULL) {
            ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                          "toll: redis: more than %d nodes, \"%s:%d\" not "
                          "used", NGX_HTTP_TOLL_REDIS_NODES_MAX, host, port);
            return NULL;
        }

        ngx_memzero(node, sizeof(ngx_http_toll_redis_node_t));
    }

    node->rd = rd;
    node->port = port;
    node->unix_socket = unix_socket;
    node->sentinel = (kind == NGX_HTTP_TOLL_REDIS_SENTINEL);
    node->control = (kind == NGX_HTTP_TOLL_REDIS_CONTROL);
    ngx_memcpy(node->host, host, len + 1);

    node->name.data = node->name_buf;

    if (unix_socket) {
        node->name.len = ngx_snprintf(node->name_buf, sizeof(node->name_buf),
                                      "unix:%s", host)
                         - node->name_buf;

    } else {
        node->name.len = ngx_snprintf(node->name_buf, sizeof(node->name_buf),
                                      ngx_strlchr((u_char *) host,
                                                  (u_char *) host + len, ':')
                                      ? "[%s]:%d" : "%s:%d", host, port)
                         - node->name_buf;
    }

    ngx_http_toll_redis_node_init(node);

    return node;
}


/*
 * A retired node nothing can reach any more: no connection nor hiredis
 * context whose callbacks name it, no timer, no command waiting for its
 * WAIT, and not held by the router (the map in use, the map being read,
 * the Sentinel's primary, sentinel or candidate).
 */

static ngx_http_toll_redis_node_t *
ngx_http_toll_redis_node_free(ngx_http_toll_redis_t *rd)
{
    ngx_uint_t                   i;
    ngx_http_toll_redis_node_t  *node;

    for (i = 0; i < rd->nnodes; i++) {
        node = rd->nodes[i];

        if (!node->retired || node->seed || node->held || node->ac != NULL
            || node->contexts || node->reconnect.timer_set
            || node->connect_timer.timer_set || node->wait_sent
            || !ngx_queue_empty(&node->wait_next)
            || !ngx_queue_empty(&node->wait_cur)
            || node == rd->primary || node == rd->sentinel
            || node == rd->candidate || node == rd->refresh_node)
        {
            continue;
        }

        if (!ngx_http_toll_redis_in_map(rd, node)) {
            return node;
        }
    }

    return NULL;
}


/* a primary of the map in use */

static ngx_uint_t
ngx_http_toll_redis_in_map(ngx_http_toll_redis_t *rd,
    ngx_http_toll_redis_node_t *node)
{
    ngx_uint_t  i;

    for (i = 0; rd->mapped && i < rd->map->n; i++) {
        if (rd->slot_node[i] == node) {
            return 1;
        }
    }

    return 0;
}


ngx_int_t
ngx_http_toll_redis_route_init(ngx_http_toll_redis_t *rd, ngx_cycle_t *cycle)
{
    ngx_uint_t                   i;
    ngx_http_toll_redis_conf_t  *conf;
    ngx_http_toll_redis_node_t  *node;

    conf = rd->conf;

    switch (conf->kind) {

    case TOLL_STORE_CLUSTER:
        rd->map = ngx_alloc(2 * sizeof(toll_cluster_map_t), cycle->log);
        if (rd->map == NULL) {
            return NGX_ERROR;
        }

        /*
         * The seeds' command connections are made now: until the map is
         * read, commands go to a seed, whose MOVED says where they go
         */

        for (i = 0; i < conf->nseeds; i++) {
            node = ngx_http_toll_redis_node(rd, (char *) conf->seeds[i].host,
                                            conf->seeds[i].port, 0,
                                            NGX_HTTP_TOLL_REDIS_DATA);
            if (node == NULL) {
                return NGX_ERROR;
            }

            node->seed = 1;
            ngx_http_toll_redis_node_connect(node);
        }

        /* neither timer may keep a gracefully exiting worker alive */
        rd->refresh.handler = ngx_http_toll_redis_refresh_handler;
        rd->refresh.data = rd;
        rd->refresh.log = cycle->log;
        rd->refresh.cancelable = 1;

        ngx_http_toll_redis_refresh(rd);

        return NGX_OK;

    case TOLL_STORE_SENTINEL:
        /* two seeds may be one address (a name and its number): one node */

        for (i = 0; i < conf->nseeds; i++) {
            node = ngx_http_toll_redis_node(rd, (char *) conf->seeds[i].host,
                                            conf->seeds[i].port, 0,
                                            NGX_HTTP_TOLL_REDIS_SENTINEL);
            if (node == NULL) {
                return NGX_ERROR;
            }

            node->seed = 1;
        }

        rd->nsentinels = rd->nnodes;

        rd->discover.handler = ngx_http_toll_redis_discover_handler;
        rd->discover.data = rd;
        rd->discover.log = cycle->log;
        rd->discover.cancelable = 1;

        rd->sentinel = rd->nodes[0];
        ngx_http_toll_redis_discover(rd);

        return NGX_OK;

    default: /* TOLL_STORE_SINGLE */
        node = ngx_http_toll_redis_node(rd, (char *) conf->host, conf->port,
                                        conf->unix_socket, 0);
        if (node == NULL) {
            return NGX_ERROR;
        }

        rd->primary = node;
        ngx_http_toll_redis_node_connect(node);

        return NGX_OK;
    }
}


void
ngx_http_toll_redis_route_exit(ngx_http_toll_redis_t *rd)
{
    if (rd->refresh.timer_set) {
        ngx_del_timer(&rd->refresh);
    }

    if (rd->discover.timer_set) {
        ngx_del_timer(&rd->discover);
    }
}


ngx_http_toll_redis_node_t *
ngx_http_toll_redis_route(ngx_http_toll_redis_t *rd, int argc,
    const char **argv, const size_t *argvlen)
{
    int                          slot;
    uint16_t                     i;
    ngx_http_toll_redis_node_t  *node;

    if (rd->conf->kind != TOLL_STORE_CLUSTER) {
        return rd->primary;
    }

    slot = toll_cluster_command_slot(argc, argv, argvlen);

    if (slot == TOLL_CLUSTER_CROSSSLOT) {
        ngx_log_error(NGX_LOG_ALERT, rd->log, 0,
                      "toll: redis: \"%*s\" names keys of more than one "
                      "slot", argvlen[0], argv[0]);
        return NULL;
    }

    /* before the map is read: any node, whose MOVED tells the right one */

    if (slot == TOLL_CLUSTER_ANY || !rd->mapped) {
        return ngx_http_toll_redis_any(rd);
    }

    i = rd->map->slot[slot];

    if (i == TOLL_CLUSTER_NO_NODE) {
        ngx_http_toll_redis_refresh(rd);
        return NULL;
    }

    node = rd->slot_node[i];

    if (node->ac == NULL && !node->reconnect.timer_set) {
        ngx_http_toll_redis_node_connect(node);
    }

    return node;
}


/* a node that answers, or one that may: the map's first, else a seed */

static ngx_http_toll_redis_node_t *
ngx_http_toll_redis_any(ngx_http_toll_redis_t *rd)
{
    ngx_uint_t                   i;
    ngx_http_toll_redis_node_t  *node, *maybe;

    maybe = NULL;

    for (i = 0; i < rd->nnodes; i++) {
        node = rd->nodes[i];

        if (node->control || node->ac == NULL
            || node->state == NGX_HTTP_TOLL_REDIS_DOWN)
        {
            continue;
        }

        if (node->answered) {
            return node;
        }

        if (maybe == NULL) {
            maybe = node;
        }
    }

    return maybe;
}


/* ---- a Cluster's map ---- */

static void
ngx_http_toll_redis_refresh(ngx_http_toll_redis_t *rd)
{
    ngx_uint_t                   i, n, pass;
    const char                  *argv[2];
    size_t                       argvlen[2];
    ngx_msec_t                   since, wait;
    ngx_http_toll_redis_node_t  *node, *data;

    if (rd->refreshing || !rd->active || ngx_exiting || ngx_quit) {
        return;
    }

    since = ngx_current_msec - rd->refreshed;

    /*
     * A node that answers garbage (or nothing) is not asked again at
     * once: reading a huge lying map costs the worker, and every command
     * behind the question on that connection waits for it.
     */

    wait = rd->refresh_failures
           ? ngx_min((ngx_msec_t) NGX_HTTP_TOLL_REDIS_REFRESH_RETRY_MS
                     << ngx_min(rd->refresh_failures - 1, 5),
                     NGX_HTTP_TOLL_REDIS_REFRESH_MAX_MS)
           : (rd->mapped ? NGX_HTTP_TOLL_REDIS_REFRESH_MIN_MS : 0);

    if (since < wait) {
        ngx_http_toll_redis_refresh_later(rd, wait - since);
        return;
    }

    /*
     * Asked in turn, so that a node that answers with an old map (or
     * not at all) does not hold the refresh: the address of a node that
     * answers commands first, then any.  The map is read on a second
     * connection to that address, so that no command waits behind the
     * map, and a huge lying one holds no command.
     */

    node = NULL;
    n = rd->nnodes;

    if (n == 0) {
        return;
    }

    for (pass = 0; pass < 2 && node == NULL; pass++) {
        for (i = 0; i < n; i++) {
            data = rd->nodes[(rd->seed + i) % n];

            /* a node gone from the map is not asked, a seed always may be */

            if (data->control || (data->retired && !data->seed)
                || (pass == 0 && !data->answered))
            {
                continue;
            }

            node = ngx_http_toll_redis_node(rd, (char *) data->host,
                                            data->port, 0,
                                            NGX_HTTP_TOLL_REDIS_CONTROL);
            if (node == NULL) {
                continue;
            }

            if (node->ac == NULL && !node->reconnect.timer_set) {
                ngx_http_toll_redis_node_connect(node);
            }

            if (node->ac != NULL
                && node->state != NGX_HTTP_TOLL_REDIS_DOWN)
            {
                break;
            }

            node = NULL;
        }
    }

    rd->seed = (rd->seed + 1) % n;

    if (node == NULL) {
        ngx_http_toll_redis_refresh_later(rd,
                                          NGX_HTTP_TOLL_REDIS_REFRESH_RETRY_MS);
        return;
    }

    argv[0] = "CLUSTER";
    argvlen[0] = sizeof("CLUSTER") - 1;
    argv[1] = "SLOTS";
    argvlen[1] = sizeof("SLOTS") - 1;

    if (ngx_http_toll_redis_node_ask(node, ngx_http_toll_redis_on_slots, rd,
                                     2, argv, argvlen)
        != NGX_OK)
    {
        ngx_http_toll_redis_refresh_later(rd,
                                          NGX_HTTP_TOLL_REDIS_REFRESH_RETRY_MS);
        return;
    }

    rd->refreshing = 1;
    rd->refreshed = ngx_current_msec;
    rd->refresh_node = node;

    /* the question's own deadline: a node that never answers is dropped */
    if (rd->refresh.timer_set) {
        ngx_del_timer(&rd->refresh);
    }

    ngx_add_timer(&rd->refresh, rd->conf->timeout);
}


static void
ngx_http_toll_redis_refresh_later(ngx_http_toll_redis_t *rd, ngx_msec_t ms)
{
    if (!rd->refresh.timer_set && rd->active && !ngx_exiting && !ngx_quit) {
        ngx_add_timer(&rd->refresh, ms);
    }
}


static void
ngx_http_toll_redis_refresh_handler(ngx_event_t *ev)
{
    ngx_http_toll_redis_t  *rd;

    rd = ev->data;

    if (rd->refreshing && rd->refresh_node != NULL) {
        /* its callback, with no answer, asks again after the backoff */
        ngx_http_toll_redis_node_close(rd->refresh_node,
                                       "no slot map within the timeout");
        return;
    }

    ngx_http_toll_redis_refresh(rd);
}


static void
ngx_http_toll_redis_on_slots(redisAsyncContext *ac, void *r, void *privdata)
{
    u_char                       err[128];
    redisReply                  *reply;
    toll_cluster_map_t          *next;
    ngx_http_toll_redis_t       *rd;
    ngx_http_toll_redis_node_t  *node;

    rd = privdata;
    reply = r;
    node = ac->data;

    if (node != rd->refresh_node) {
        return;
    }

    rd->refreshing = 0;
    rd->refresh_node = NULL;

    if (rd->refresh.timer_set) {
        ngx_del_timer(&rd->refresh);
    }

    if (!rd->active) {
        return;
    }

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_INFO, rd->log, 0,
                      "toll: redis \"%V\" did not give its slot map: %*s",
                      &node->name, reply ? reply->len : (size_t) 9,
                      reply ? reply->str : "no answer");
        rd->refresh_failures++;
        ngx_http_toll_redis_refresh(rd);
        return;
    }

    next = rd->map + 1;

    if (toll_cluster_map_parse(next, reply, (char *) node->host,
                               (char *) err, sizeof(err))
        != 0)
    {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "toll: redis \"%V\" gave a slot map that is not one: "
                      "%s", &node->name, err);
        rd->refresh_failures++;
        ngx_http_toll_redis_refresh(rd);
        return;
    }

    rd->refresh_failures = 0;

    if (ngx_http_toll_redis_map_apply(rd) != NGX_OK) {
        ngx_http_toll_redis_refresh_later(rd,
                                          NGX_HTTP_TOLL_REDIS_REFRESH_RETRY_MS);
    }
}


/*
 * The map just read (rd->map[1]) becomes the one used (rd->map[0]): each
 * primary's node is found or made and connected; nodes the map no longer
 * names are closed.  NGX_DECLINED when some slot has no primary that
 * answers yet, to be read again soon.
 */

static ngx_int_t
ngx_http_toll_redis_map_apply(ngx_http_toll_redis_t *rd)
{
    ngx_int_t                    rc;
    ngx_uint_t                   i, j, used;
    toll_cluster_map_t          *map;
    ngx_http_toll_redis_node_t  *node, *nodes[TOLL_CLUSTER_NODES_MAX];

    map = &rd->map[1];
    rc = NGX_OK;

    /* every node found or made first: the map in use stays whole if not */

    for (i = 0; i < map->n; i++) {
        nodes[i] = ngx_http_toll_redis_node(rd, map->nodes[i].host,
                                            map->nodes[i].port, 0, 0);
        if (nodes[i] == NULL) {
            break;
        }

        /*
         * A retired node found is not given away for the next address,
         * nor for a map connection a refresh makes while the new map is
         * connected below
         */
        nodes[i]->held = 1;
    }

    if (i < map->n) {
        for (j = 0; j < i; j++) {
            nodes[j]->held = 0;

            /* made for nothing: retired, its entry free again */
            if (nodes[j]->ac == NULL && !nodes[j]->reconnect.timer_set
                && !ngx_http_toll_redis_in_map(rd, nodes[j]))
            {
                ngx_http_toll_redis_node_close(nodes[j], "not used");
            }
        }

        return NGX_ERROR;
    }

    for (i = 0; i < map->n; i++) {
        node = nodes[i];
        rd->slot_node[i] = node;

        if (node->ac == NULL && !node->reconnect.timer_set) {
            ngx_http_toll_redis_node_connect(node);
        }

        if (node->ac == NULL || !node->answered) {
            rc = NGX_DECLINED;
        }
    }

    for (i = 0; i < TOLL_CLUSTER_SLOTS; i++) {
        if (map->slot[i] == TOLL_CLUSTER_NO_NODE) {
            rc = NGX_DECLINED;
            break;
        }
    }

    ngx_memcpy(&rd->map[0], map, sizeof(toll_cluster_map_t));
    rd->mapped = 1;

    for (i = 0; i < map->n; i++) {
        nodes[i]->held = 0;
    }

    /*
     * A node the map does not name (a former primary, a MOVED's or ASK's
     * target, a seed that is a replica) and its map connection are
     * closed, connected or waiting to reconnect: retired, their entries
     * can be given to other addresses (a seed's stays its own).  The map
     * connection that gave this map may be one: it is made again if a
     * refresh needs that address.
     */

    for (i = 0; i < rd->nnodes; i++) {
        node = rd->nodes[i];
        used = 0;

        for (j = 0; j < map->n; j++) {
            if (rd->slot_node[j]->port == node->port
                && ngx_strcmp(rd->slot_node[j]->host, node->host) == 0)
            {
                used = 1;
                break;
            }
        }

        if (used || node->retired) {
            continue;
        }

        ngx_http_toll_redis_node_close(node, node->control
                                       ? "its map connection not needed"
                                       : "not a primary any more");
    }

    ngx_http_toll_redis_set_up(rd);

    return rc;
}


/* MOVED and ASK: the command goes on to the node named */

static ngx_int_t
ngx_http_toll_redis_redirect(ngx_http_toll_redis_t *rd,
    ngx_http_toll_redis_cmd_t *cmd, redisReply *r)
{
    int                          kind;
    size_t                       argvlen[1];
    unsigned                     slot;
    const char                  *argv[1];
    toll_cluster_node_t          to;
    ngx_http_toll_redis_node_t  *node;

    kind = toll_cluster_redirect(r->str, r->len, &slot, &to);

    if (kind == 0) {
        return NGX_DECLINED;
    }

    if (kind < 0 || cmd->argv == NULL) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "toll: redis \"%V\" answered a redirection that is "
                      "not one: \"%*s\"", &cmd->node->name,
                      ngx_min(r->len, 128), r->str);
        return NGX_DECLINED;
    }

    if (++cmd->redirects > TOLL_CLUSTER_REDIRECTS_MAX) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "toll: redis: a command was redirected more than %d "
                      "times, the last time by \"%V\" to %s:%d",
                      TOLL_CLUSTER_REDIRECTS_MAX, &cmd->node->name,
                      to.host, to.port);
        ngx_http_toll_redis_refresh(rd);
        return NGX_DECLINED;
    }

    if (kind == TOLL_CLUSTER_MOVED) {
        node = ngx_http_toll_redis_map_patch(rd, slot, &to);
        ngx_http_toll_redis_refresh(rd);

    } else {
        node = ngx_http_toll_redis_node(rd, to.host, to.port, 0, 0);
    }

    if (node == NULL) {
        return NGX_DECLINED;
    }

    if (node->ac == NULL && !node->reconnect.timer_set) {
        ngx_http_toll_redis_node_connect(node);
    }

    if (kind == TOLL_CLUSTER_ASK) {
        argv[0] = "ASKING";
        argvlen[0] = sizeof("ASKING") - 1;

        /* pipelined: the command behind it tells what came of it */
        if (ngx_http_toll_redis_node_ask(node, ngx_http_toll_redis_on_asking,
                                         NULL, 1, argv, argvlen)
            != NGX_OK)
        {
            return NGX_DECLINED;
        }
    }

    if (ngx_http_toll_redis_node_send(node, cmd) != NGX_OK) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static void
ngx_http_toll_redis_on_asking(redisAsyncContext *ac, void *r, void *privdata)
{
    (void) ac;
    (void) r;
    (void) privdata;
}


/* MOVED: the slot is the node's from now on, until the map says more */

static ngx_http_toll_redis_node_t *
ngx_http_toll_redis_map_patch(ngx_http_toll_redis_t *rd, unsigned slot,
    toll_cluster_node_t *to)
{
    ngx_uint_t                   i;
    toll_cluster_map_t          *map;
    ngx_http_toll_redis_node_t  *node;

    node = ngx_http_toll_redis_node(rd, to->host, to->port, 0, 0);

    if (node == NULL || !rd->mapped || slot >= TOLL_CLUSTER_SLOTS) {
        return node;
    }

    map = &rd->map[0];

    for (i = 0; i < map->n; i++) {
        if (rd->slot_node[i] == node) {
            map->slot[slot] = (uint16_t) i;
            return node;
        }
    }

    if (map->n < TOLL_CLUSTER_NODES_MAX) {
        map->nodes[map->n] = *to;
        rd->slot_node[map->n] = node;
        map->slot[slot] = (uint16_t) map->n++;
    }

    return node;
}


ngx_int_t
ngx_http_toll_redis_route_reply(ngx_http_toll_redis_t *rd,
    ngx_http_toll_redis_cmd_t *cmd, redisReply *r)
{
    if (rd->conf->kind == TOLL_STORE_CLUSTER) {
        return ngx_http_toll_redis_redirect(rd, cmd, r);
    }

    /*
     * A Sentinel's primary that answers READONLY is one no more: the
     * sentinels are asked now.  The command did not run; it fails, as
     * any command does while the primary is being found.
     */

    if (rd->conf->kind == TOLL_STORE_SENTINEL && r->len >= 8
        && ngx_strncmp(r->str, "READONLY", 8) == 0)
    {
        ngx_http_toll_redis_discover(rd);
    }

    return NGX_DECLINED;
}


void
ngx_http_toll_redis_route_node(ngx_http_toll_redis_t *rd,
    ngx_http_toll_redis_node_t *node, ngx_uint_t up)
{
    ngx_uint_t  i;

    if (!up) {
        if (rd->conf->kind == TOLL_STORE_CLUSTER && rd->mapped) {
            for (i = 0; i < rd->map[0].n; i++) {
                if (rd->slot_node[i] == node) {
                    ngx_http_toll_redis_refresh(rd);
                    break;
                }
            }

        } else if (rd->conf->kind == TOLL_STORE_SENTINEL) {
            if (node == rd->sentinel) {
                rd->asking = 0;
                ngx_http_toll_redis_next_sentinel(rd);
                ngx_http_toll_redis_discover_later(rd,
                                       NGX_HTTP_TOLL_REDIS_DISCOVER_RETRY_MS);

            } else if (node == rd->primary) {
                ngx_http_toll_redis_discover(rd);
            }
        }
    }

    ngx_http_toll_redis_set_up(rd);
}


/*
 * The store is up for this worker when every command has a node that
 * answers: the one Redis, the Sentinel's primary, or every primary of a
 * Cluster's map.
 */

void
ngx_http_toll_redis_set_up(ngx_http_toll_redis_t *rd)
{
    ngx_uint_t                   i, up;
    ngx_http_toll_redis_node_t  *node;

    if (rd->conf->kind == TOLL_STORE_CLUSTER) {
        up = rd->mapped;

        for (i = 0; up && i < rd->map[0].n; i++) {
            node = rd->slot_node[i];
            up = (node->ac != NULL && node->answered);
        }

    } else {
        node = rd->primary;
        up = (node != NULL && node->ac != NULL && node->answered);
    }

    if (up == rd->is_up) {
        return;
    }

    rd->is_up = up;

    if (rd->up) {
        rd->up(rd->up_data, up);
    }

    if (!up && rd->conf->kind == TOLL_STORE_CLUSTER) {
        ngx_http_toll_redis_refresh_later(rd,
                                          NGX_HTTP_TOLL_REDIS_REFRESH_RETRY_MS);
    }
}
