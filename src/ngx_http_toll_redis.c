/*
 * toll: hiredis's async API on nginx's event loop.
 *
 * hiredis 0.14 has no async timeouts: each command here carries its own
 * timer (the events' adapter is ngx_http_toll_redis_event.c).  This file
 * owns the connections (nodes): one to the one Redis, one per primary of
 * a Cluster, the Sentinel's primary and the sentinel asked;
 * ngx_http_toll_redis_route.c says which node a command goes to.
 *
 * Invariants:
 *   - every command's handler is called exactly once, unless cancelled,
 *     however many nodes it was sent to on its way (MOVED, ASK);
 *   - after a hiredis call that may free the context (handling a read or a
 *     write, freeing), the connection is not touched again;
 *   - no call here blocks: addresses are numeric (resolved at config
 *     time, or announced so by the Cluster or the sentinels) and
 *     connect() is non-blocking.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_http_toll_redis_int.h"
#include "toll_store.h"


#define NGX_HTTP_TOLL_REDIS_BACKOFF_MIN_MS   100
#define NGX_HTTP_TOLL_REDIS_BACKOFF_MAX_MS   1000


static ngx_http_toll_redis_cmd_t *ngx_http_toll_redis_queue(
    ngx_http_toll_redis_handler_pt handler, void *data, int argc,
    const char **argv, const size_t *argvlen, ngx_uint_t keep);
static ngx_int_t ngx_http_toll_redis_script_reply(
    ngx_http_toll_redis_cmd_t *cmd, redisReply *r);
static void ngx_http_toll_redis_drop(ngx_http_toll_redis_node_t *node,
    const char *reason);
static void ngx_http_toll_redis_lost(ngx_http_toll_redis_node_t *node,
    const char *reason);
static void ngx_http_toll_redis_reconnect_handler(ngx_event_t *ev);
static void ngx_http_toll_redis_connect_timeout(ngx_event_t *ev);
static void ngx_http_toll_redis_cmd_timeout(ngx_event_t *ev);
static void ngx_http_toll_redis_answered(ngx_http_toll_redis_node_t *node);

static void ngx_http_toll_redis_on_connect(const redisAsyncContext *ac,
    int status);
static void ngx_http_toll_redis_on_disconnect(const redisAsyncContext *ac,
    int status);
static void ngx_http_toll_redis_on_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_http_toll_redis_on_setup_reply(redisAsyncContext *ac,
    void *r, void *privdata);



/* the worker's adapter: its nodes, and where commands go */
ngx_http_toll_redis_t  ngx_http_toll_redis;
/* the scripts Redis has, as far as this worker knows */
static ngx_uint_t  ngx_http_toll_redis_scripts[TOLL_SCRIPT_N];

/* the bounds of the reply time buckets, in us; the metrics print them in s */
static const ngx_uint_t  ngx_http_toll_redis_reply_bounds[] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
    500000, 1000000
};



static ngx_inline void
ngx_http_toll_redis_count_reconnect(ngx_http_toll_redis_t *rd)
{
    if (rd->stats) {
        (void) ngx_atomic_fetch_add(&rd->stats->reconnects, 1);
    }
}


ngx_int_t
ngx_http_toll_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_toll_redis_conf_t *conf, ngx_http_toll_redis_stats_t *stats,
    ngx_http_toll_redis_up_pt up, void *data)
{
    ngx_http_toll_redis_t  *rd;

    rd = &ngx_http_toll_redis;
    ngx_memzero(rd, sizeof(ngx_http_toll_redis_t));

    rd->conf = conf;
    rd->stats = stats;
    rd->up = up;
    rd->up_data = data;
    rd->log = cycle->log;
    rd->active = 1;

    return ngx_http_toll_redis_route_init(rd, cycle);
}


void
ngx_http_toll_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                   i;
    redisAsyncContext           *ac;
    ngx_http_toll_redis_t       *rd;
    ngx_http_toll_redis_node_t  *node;

    rd = &ngx_http_toll_redis;

    if (!rd->active) {
        return;
    }

    rd->active = 0;

    ngx_http_toll_redis_route_exit(rd);

    for (i = 0; i < rd->nnodes; i++) {
        node = rd->nodes[i];

        if (node->reconnect.timer_set) {
            ngx_del_timer(&node->reconnect);
        }

        if (node->connect_timer.timer_set) {
            ngx_del_timer(&node->connect_timer);
        }

        if (node->ac) {
            ac = node->ac;
            node->ac = NULL;
            node->state = NGX_HTTP_TOLL_REDIS_DOWN;
            redisAsyncFree(ac);
        }
    }
}


/* a node's timers and backoff, before its first connect */

void
ngx_http_toll_redis_node_init(ngx_http_toll_redis_node_t *node)
{
    ngx_log_t  *log;

    log = node->rd->log;
    node->backoff_ms = NGX_HTTP_TOLL_REDIS_BACKOFF_MIN_MS;
    ngx_queue_init(&node->wait_next);
    ngx_queue_init(&node->wait_cur);

    /* neither timer may keep a gracefully exiting worker alive */

    node->reconnect.handler = ngx_http_toll_redis_reconnect_handler;
    node->reconnect.data = node;
    node->reconnect.log = log;
    node->reconnect.cancelable = 1;

    node->connect_timer.handler = ngx_http_toll_redis_connect_timeout;
    node->connect_timer.data = node;
    node->connect_timer.log = log;
    node->connect_timer.cancelable = 1;

}


ngx_http_toll_redis_cmd_t *
ngx_http_toll_redis_send(ngx_http_toll_redis_handler_pt handler, void *data,
    int argc, const char **argv, const size_t *argvlen)
{
    return ngx_http_toll_redis_queue(handler, data, argc, argv, argvlen, 0);
}


/*
 * A script is sent whole (EVAL) until Redis has answered it once on this
 * worker's connection, then by its SHA1 (EVALSHA) with a copy of the
 * arguments: a NOSCRIPT answer (a restart, a failover, SCRIPT FLUSH)
 * sends it again in full, within the command's time, and the caller sees
 * only the script's own answer.  On a Cluster every node learns the
 * script from its own NOSCRIPT.
 */

ngx_http_toll_redis_cmd_t *
ngx_http_toll_redis_eval(toll_script_e id,
    ngx_http_toll_redis_handler_pt handler, void *data, int argc,
    const char **argv, size_t *argvlen)
{
    ngx_uint_t                  keep;
    const toll_script_t        *s;
    ngx_http_toll_redis_cmd_t  *cmd;

    s = &toll_scripts[id];
    keep = 0;

    if (ngx_http_toll_redis_scripts[id]) {
        argv[0] = "EVALSHA";
        argvlen[0] = sizeof("EVALSHA") - 1;
        argv[1] = s->sha1;
        argvlen[1] = 40;
        keep = 1;

    } else {
        argv[0] = "EVAL";
        argvlen[0] = sizeof("EVAL") - 1;
        argv[1] = s->text;
        argvlen[1] = s->len;
    }

    cmd = ngx_http_toll_redis_queue(handler, data, argc, argv, argvlen, keep);
    if (cmd == NULL) {
        return NULL;
    }

    cmd->script = id;

    return cmd;
}


static ngx_http_toll_redis_cmd_t *
ngx_http_toll_redis_queue(ngx_http_toll_redis_handler_pt handler,
    void *data, int argc, const char **argv, const size_t *argvlen,
    ngx_uint_t keep)
{
    u_char                      *p;
    size_t                       extra;
    ngx_int_t                    i;
    ngx_http_toll_redis_t       *rd;
    ngx_http_toll_redis_cmd_t   *cmd;
    ngx_http_toll_redis_node_t  *node;

    rd = &ngx_http_toll_redis;

    if (rd->stats) {
        (void) ngx_atomic_fetch_add(&rd->stats->commands, 1);
    }

    /*
     * While connecting, hiredis buffers commands and sends them once the
     * socket is up; while down, waiting for a timeout would only delay
     * an answer that is already known.
     */

    node = rd->active ? ngx_http_toll_redis_route(rd, argc, argv, argvlen)
                      : NULL;

    if (node == NULL || node->ac == NULL
        || node->state == NGX_HTTP_TOLL_REDIS_DOWN)
    {
        ngx_http_toll_redis_count_reply(rd, 1, 0);
        return NULL;
    }

    /*
     * The arguments are kept when the command may have to go again: an
     * EVALSHA (NOSCRIPT), and anything a Cluster may redirect or a
     * Sentinel's demoted primary refuse.  The EVAL of a whole script is
     * kept as it is: its text is static.
     */

    if (rd->conf->kind != TOLL_STORE_SINGLE) {
        keep = 1;
    }

    extra = 0;

    if (keep) {
        extra = argc * (sizeof(char *) + sizeof(size_t));

        for (i = 0; i < argc; i++) {
            extra += argvlen[i];
        }
    }

    cmd = ngx_calloc(sizeof(ngx_http_toll_redis_cmd_t) + extra, rd->log);
    if (cmd == NULL) {
        ngx_http_toll_redis_count_reply(rd, 1, 0);
        return NULL;
    }

    cmd->handler = handler;
    cmd->data = data;
    cmd->script = TOLL_SCRIPT_N;
    cmd->sent_us = ngx_http_toll_now_us();
    cmd->argc = argc;

    if (keep) {
        cmd->argv = (const char **) (cmd + 1);
        cmd->argvlen = (size_t *) (cmd->argv + argc);
        p = (u_char *) (cmd->argvlen + argc);

        for (i = 0; i < argc; i++) {
            cmd->argv[i] = (const char *) p;
            cmd->argvlen[i] = argvlen[i];
            p = ngx_cpymem(p, argv[i], argvlen[i]);
        }

    } else {
        /* only for this call: not kept */
        cmd->argv = (const char **) argv;
        cmd->argvlen = (size_t *) argvlen;
    }

    if (ngx_http_toll_redis_node_send(node, cmd) != NGX_OK) {
        ngx_free(cmd);
        ngx_http_toll_redis_count_reply(rd, 1, 0);
        return NULL;
    }

    if (!keep) {
        cmd->argv = NULL;
        cmd->argvlen = NULL;
    }

    /*
     * Not cancelable: a request parked on this command must be answered
     * before a gracefully exiting worker goes away.  One timer for the
     * command's whole way, redirections included.
     */

    cmd->timer.handler = ngx_http_toll_redis_cmd_timeout;
    cmd->timer.data = cmd;
    cmd->timer.log = rd->log;

    ngx_add_timer(&cmd->timer, rd->conf->timeout);

    return cmd;
}


/* cmd (its argv) onto node's connection */

ngx_int_t
ngx_http_toll_redis_node_send(ngx_http_toll_redis_node_t *node,
    ngx_http_toll_redis_cmd_t *cmd)
{
    if (node->ac == NULL || node->state == NGX_HTTP_TOLL_REDIS_DOWN) {
        return NGX_ERROR;
    }

    if (redisAsyncCommandArgv(node->ac, ngx_http_toll_redis_on_reply, cmd,
                              cmd->argc, cmd->argv, cmd->argvlen)
        != REDIS_OK)
    {
        return NGX_ERROR;
    }

    cmd->node = node;

    return NGX_OK;
}


ngx_int_t
ngx_http_toll_redis_node_ask(ngx_http_toll_redis_node_t *node,
    redisCallbackFn *fn, void *privdata, int argc, const char **argv,
    const size_t *argvlen)
{
    if (node->ac == NULL || node->state == NGX_HTTP_TOLL_REDIS_DOWN) {
        return NGX_ERROR;
    }

    if (redisAsyncCommandArgv(node->ac, fn, privdata, argc, argv, argvlen)
        != REDIS_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


void
ngx_http_toll_redis_cancel(ngx_http_toll_redis_cmd_t *cmd)
{
    /* hiredis still owns the callback; it frees cmd when it fires */
    cmd->data = NULL;
}


/* a command's outcome: failed, or its reply time in us */

void
ngx_http_toll_redis_count_reply(ngx_http_toll_redis_t *rd, ngx_uint_t failed,
    uint64_t us)
{
    ngx_http_toll_redis_stats_t  *st;

    st = rd->stats;

    if (st == NULL) {
        return;
    }

    if (failed) {
        (void) ngx_atomic_fetch_add(&st->errors, 1);
        return;
    }

    ngx_http_toll_observe(st->reply, ngx_http_toll_redis_reply_bounds,
                          NGX_HTTP_TOLL_REDIS_REPLY_BUCKETS, &st->reply_us,
                          (ngx_uint_t) us);
}


void
ngx_http_toll_redis_node_connect(ngx_http_toll_redis_node_t *node)
{
    int                          n;
    const char                  *argv[2];
    size_t                       argvlen[2];
    u_char                       db[NGX_INT_T_LEN];
    redisAsyncContext           *ac;
    ngx_http_toll_redis_t       *rd;
    ngx_http_toll_redis_conf_t  *conf;

    rd = node->rd;
    conf = rd->conf;

    if (node->ac != NULL || !rd->active) {
        return;
    }

    if (node->reconnect.timer_set) {
        ngx_del_timer(&node->reconnect);
    }

    node->retired = 0;

    if (node->unix_socket) {
        ac = redisAsyncConnectUnix((const char *) node->host);

    } else {
        ac = redisAsyncConnect((const char *) node->host, node->port);
    }

    if (ac == NULL) {
        ngx_http_toll_redis_lost(node, "cannot allocate a context");
        return;
    }

    if (ac->err) {
        ngx_http_toll_redis_lost(node, ac->errstr);
        redisAsyncFree(ac);
        return;
    }

    if (ngx_http_toll_redis_attach(ac, rd->log) != NGX_OK) {
        redisAsyncFree(ac);
        ngx_http_toll_redis_lost(node, "no free connection");
        return;
    }

    ac->data = node;

    node->ac = ac;
    node->contexts++;
    node->state = NGX_HTTP_TOLL_REDIS_CONNECTING;
    node->answered = 0;
    node->answered_at = 0;

    /* the connect callback arms the write event that completes connect() */
    redisAsyncSetConnectCallback(ac, ngx_http_toll_redis_on_connect);
    redisAsyncSetDisconnectCallback(ac, ngx_http_toll_redis_on_disconnect);

    ngx_add_timer(&node->connect_timer, conf->timeout);

    /* queued now, these leave first once the socket is up */

    if (conf->password.len && !node->sentinel) {
        argv[0] = "AUTH";
        argvlen[0] = sizeof("AUTH") - 1;
        argv[1] = (const char *) conf->password.data;
        argvlen[1] = conf->password.len;

        redisAsyncCommandArgv(ac, ngx_http_toll_redis_on_setup_reply,
                              (void *) "AUTH", 2, argv, argvlen);
    }

    if (conf->db > 0 && !node->sentinel && !node->control) {
        n = ngx_sprintf(db, "%i", conf->db) - db;

        argv[0] = "SELECT";
        argvlen[0] = sizeof("SELECT") - 1;
        argv[1] = (const char *) db;
        argvlen[1] = n;

        redisAsyncCommandArgv(ac, ngx_http_toll_redis_on_setup_reply,
                              (void *) "SELECT", 2, argv, argvlen);
    }

    /* its answer tells that the store is up, even with no traffic */

    argv[0] = "PING";
    argvlen[0] = sizeof("PING") - 1;

    redisAsyncCommandArgv(ac, ngx_http_toll_redis_on_setup_reply,
                          (void *) "PING", 1, argv, argvlen);
}


/*
 * Closes a node's connection for good (a Sentinel's primary that is one
 * no more, a node gone from a Cluster's map): its pending commands fail
 * at once, and it is not made again until the router asks for it.
 */

void
ngx_http_toll_redis_node_close(ngx_http_toll_redis_node_t *node,
    const char *reason)
{
    node->retired = 1;

    if (node->reconnect.timer_set) {
        ngx_del_timer(&node->reconnect);
    }

    if (node->ac == NULL) {
        node->state = NGX_HTTP_TOLL_REDIS_DOWN;
        return;
    }

    ngx_log_error(NGX_LOG_NOTICE, node->rd->log, 0,
                  "toll: redis \"%V\": %s", &node->name, reason);

    ngx_http_toll_redis_drop(node, reason);
}


/*
 * Gives up on the current connection: pending commands fail at once
 * (hiredis calls each of their callbacks with no reply) and a reconnect
 * is scheduled.
 */

static void
ngx_http_toll_redis_drop(ngx_http_toll_redis_node_t *node,
    const char *reason)
{
    redisAsyncContext  *ac;

    ac = node->ac;

    /* first forget it, so that handlers run below see the store down */
    ngx_http_toll_redis_lost(node, reason);

    if (ac) {
        /* deferred by hiredis when called from one of its callbacks */
        redisAsyncFree(ac);
    }
}


/* the connection is gone or going: note it, and try again later */

static void
ngx_http_toll_redis_lost(ngx_http_toll_redis_node_t *node,
    const char *reason)
{
    ngx_uint_t              level;
    ngx_http_toll_redis_t  *rd;

    rd = node->rd;

    if (node->connect_timer.timer_set) {
        ngx_del_timer(&node->connect_timer);
    }

    if (node->state == NGX_HTTP_TOLL_REDIS_DOWN && node->ac == NULL
        && (node->reconnect.timer_set || node->retired))
    {
        return;
    }

    node->ac = NULL;
    node->state = NGX_HTTP_TOLL_REDIS_DOWN;

    if (!rd->active) {
        return;
    }

    ngx_http_toll_redis_route_node(rd, node, 0);

    if (node->retired) {
        return;
    }

    /*
     * A connection that answered for a while resets the backoff; one that
     * answered and was gone at once (a server that hangs up after PING)
     * keeps doubling it
     */

    if (node->answered_at
        && ngx_current_msec - node->answered_at
           >= NGX_HTTP_TOLL_REDIS_BACKOFF_MAX_MS)
    {
        node->backoff_ms = NGX_HTTP_TOLL_REDIS_BACKOFF_MIN_MS;
    }

    node->answered_at = 0;

    /* one error per outage; the retries that follow are information */
    level = node->failures++ ? NGX_LOG_INFO : NGX_LOG_ERR;

    ngx_log_error(level, rd->log, 0,
                  "toll: redis \"%V\" unavailable: %s, retrying in %Mms",
                  &node->name, reason, node->backoff_ms);

    if (!node->reconnect.timer_set) {
        ngx_add_timer(&node->reconnect, node->backoff_ms);
    }

    node->backoff_ms = ngx_min(node->backoff_ms * 2,
                               NGX_HTTP_TOLL_REDIS_BACKOFF_MAX_MS);
}


static void
ngx_http_toll_redis_reconnect_handler(ngx_event_t *ev)
{
    ngx_http_toll_redis_node_t  *node;

    node = ev->data;

    if (!node->rd->active || node->ac != NULL || node->retired
        || ngx_exiting || ngx_quit)
    {
        return;
    }

    ngx_http_toll_redis_count_reconnect(node->rd);
    ngx_http_toll_redis_node_connect(node);
}


static void
ngx_http_toll_redis_connect_timeout(ngx_event_t *ev)
{
    ngx_http_toll_redis_node_t  *node;

    node = ev->data;

    if (node->state == NGX_HTTP_TOLL_REDIS_CONNECTING) {
        ngx_http_toll_redis_drop(node, "connect timed out");
    }
}


static void
ngx_http_toll_redis_cmd_timeout(ngx_event_t *ev)
{
    void                            *data;
    ngx_http_toll_redis_cmd_t       *cmd;
    ngx_http_toll_redis_handler_pt   handler;

    cmd = ev->data;

    handler = cmd->handler;
    data = cmd->data;

    /*
     * Replies come in order, so every command behind this one on its
     * node is late as well: drop that connection, which fails them all
     * now.  The callback of this command runs during the drop and frees
     * cmd; its handler is called here, once, with no reply.
     */

    cmd->data = NULL;

    ngx_http_toll_redis_drop(cmd->node, "command timed out");

    if (data) {
        handler(data, NULL);
    }
}


static void
ngx_http_toll_redis_on_connect(const redisAsyncContext *ac, int status)
{
    ngx_http_toll_redis_node_t  *node;

    node = ac->data;

    if (node->ac != ac) {
        return;
    }

    if (status != REDIS_OK) {
        /* hiredis frees the context when this returns */
        ngx_http_toll_redis_lost(node, ac->errstr);
        return;
    }

    if (node->connect_timer.timer_set) {
        ngx_del_timer(&node->connect_timer);
    }

    /*
     * The kernel completes a connect() even for a stopped server: the
     * store counts as back only once it answers (see on_reply).
     */

    node->state = NGX_HTTP_TOLL_REDIS_CONNECTED;
}


static void
ngx_http_toll_redis_on_disconnect(const redisAsyncContext *ac, int status)
{
    ngx_http_toll_redis_t       *rd;
    ngx_http_toll_redis_node_t  *node;

    node = ac->data;
    rd = node->rd;

    if (node->ac != ac) {
        /* dropped by us already */
        return;
    }

    /*
     * A connection that had been answering was closed: an idle timeout,
     * CLIENT KILL, a failover.  Nothing says the store is down, so a new
     * connection is made at once and commands queue on it while it
     * connects; waiting out a backoff would answer 503 meanwhile.  A
     * connection that never answered backs off, and so does one closed
     * within a second of the last reconnect made at once, so that a
     * server which closes every new connection (after a PING or not)
     * cannot spin this.  The router hears of it first: a Cluster reads
     * its map again, a Sentinel is asked again.
     */

    if (node->answered && rd->active && !node->retired && !ngx_exiting
        && !ngx_quit
        && ngx_current_msec - node->reconnected_at
           >= NGX_HTTP_TOLL_REDIS_BACKOFF_MAX_MS)
    {
        node->reconnected_at = ngx_current_msec;

        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      "toll: redis \"%V\" closed the connection (%s), "
                      "reconnecting", &node->name,
                      ac->err ? ac->errstr : "no error");

        node->ac = NULL;
        node->state = NGX_HTTP_TOLL_REDIS_DOWN;
        ngx_http_toll_redis_count_reconnect(rd);
        ngx_http_toll_redis_route_node(rd, node, 0);

        /* hiredis frees the old context when this returns */
        if (!node->retired && node->ac == NULL) {
            ngx_http_toll_redis_node_connect(node);
        }

        return;
    }

    ngx_http_toll_redis_lost(node, ac->err ? ac->errstr : "connection closed");
}


static void
ngx_http_toll_redis_answered(ngx_http_toll_redis_node_t *node)
{
    ngx_http_toll_redis_t  *rd;

    rd = node->rd;

    if (!node->answered) {
        node->answered = 1;
        ngx_http_toll_redis_route_node(rd, node, 1);
    }

    if (node->answered_at == 0) {
        node->answered_at = ngx_current_msec;
    }

    /* the backoff starts again once the connection has lasted (lost()) */

    if (node->failures) {
        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      "toll: redis \"%V\" is back after %ui failed attempts",
                      &node->name, node->failures);
        node->failures = 0;
    }
}


static void
ngx_http_toll_redis_on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply                  *reply;
    ngx_http_toll_redis_t       *rd;
    ngx_http_toll_redis_cmd_t   *cmd;
    ngx_http_toll_redis_node_t  *node;

    cmd = privdata;
    reply = r;
    node = ac->data;
    rd = node->rd;

    if (reply != NULL && node->ac == ac) {
        ngx_http_toll_redis_answered(node);
    }

    if (reply != NULL && reply->type == REDIS_REPLY_ERROR
        && cmd->data != NULL && rd->active)
    {
        /* sent again (MOVED, ASK, NOSCRIPT ...): its answer comes here */

        if (rd->conf->kind != TOLL_STORE_SINGLE
            && ngx_http_toll_redis_route_reply(rd, cmd, reply) == NGX_OK)
        {
            return;
        }

        if (cmd->script != TOLL_SCRIPT_N
            && ngx_http_toll_redis_script_reply(cmd, reply) == NGX_OK)
        {
            return;
        }
    }

    if (cmd->script != TOLL_SCRIPT_N && reply != NULL
        && reply->type != REDIS_REPLY_ERROR)
    {
        ngx_http_toll_redis_scripts[cmd->script] = 1;
    }

    if (cmd->durable && cmd->data != NULL && rd->active && reply != NULL
        && reply->type != REDIS_REPLY_ERROR)
    {
        if (node->ac == ac
            && ngx_http_toll_redis_wait(node, cmd, reply) == NGX_OK)
        {
            /* WAIT's answer decides: ngx_http_toll_redis_on_wait() */
            return;
        }

        /* applied, maybe, but not known to be replicated: no answer */
        reply = NULL;
    }

    /* an error reply is an answer, but the command failed all the same */

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        ngx_http_toll_redis_count_reply(rd, 1, 0);

    } else {
        ngx_http_toll_redis_count_reply(rd, 0, ngx_http_toll_now_us()
                                               - cmd->sent_us);
    }

    if (cmd->timer.timer_set) {
        ngx_del_timer(&cmd->timer);
    }

    /* an exiting worker frees the context with requests still parked */

    if (cmd->data && rd->active) {
        cmd->handler(cmd->data, reply);
    }

    ngx_free(cmd);
}


/*
 * A script's NOSCRIPT: Redis (this node) lost the script; an EVALSHA
 * still wanted is sent again in full, on the same connection (NGX_OK),
 * once.
 */

static ngx_int_t
ngx_http_toll_redis_script_reply(ngx_http_toll_redis_cmd_t *cmd,
    redisReply *r)
{
    const toll_script_t  *s;

    if (ngx_strncmp(r->str, "NOSCRIPT", 8) != 0) {
        return NGX_DECLINED;
    }

    ngx_http_toll_redis_scripts[cmd->script] = 0;

    if (cmd->argv == NULL || cmd->argvlen[0] != sizeof("EVALSHA") - 1) {
        return NGX_DECLINED;
    }

    s = &toll_scripts[cmd->script];

    cmd->argv[0] = "EVAL";
    cmd->argvlen[0] = sizeof("EVAL") - 1;
    cmd->argv[1] = s->text;
    cmd->argvlen[1] = s->len;

    if (ngx_http_toll_redis_node_send(cmd->node, cmd) != NGX_OK) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static void
ngx_http_toll_redis_on_setup_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    u_char                       buf[128];
    redisReply                  *reply;
    ngx_http_toll_redis_node_t  *node;

    reply = r;
    node = ac->data;

    if (reply == NULL || node->ac != ac) {
        return;
    }

    if (reply->type != REDIS_REPLY_ERROR) {
        ngx_http_toll_redis_answered(node);
        return;
    }

    /* the store refuses us: requests would fail one by one otherwise */

    ngx_snprintf(buf, sizeof(buf) - 1, "%s failed: %*s%Z",
                 (const char *) privdata,
                 ngx_min(reply->len, sizeof(buf) - 40), reply->str);

    ngx_http_toll_redis_drop(node, (const char *) buf);
}


