/*
 * toll: hiredis's async API on nginx's event loop.
 *
 * hiredis 0.14 ships no nginx adapter and no async timeouts, so both are
 * here.  The socket hiredis opens is wrapped in an ngx_connection_t whose
 * read and write events call back into hiredis.  The events are level
 * triggered: hiredis reads at most 16 KiB per call, and with edge
 * triggering the rest of a larger reply would wait for more data that
 * never comes.
 *
 * Invariants:
 *   - every command's handler is called exactly once, unless cancelled;
 *   - after a hiredis call that may free the context (handling a read or a
 *     write, freeing), the connection is not touched again;
 *   - no call here blocks: addresses are numeric (resolved at config
 *     time) and connect() is non-blocking.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "ngx_http_toll_redis.h"
#include "ngx_http_toll_metrics.h"
#include "toll_scripts.h"


#define NGX_HTTP_TOLL_REDIS_BACKOFF_MIN_MS   100
#define NGX_HTTP_TOLL_REDIS_BACKOFF_MAX_MS   1000
/* refusals of a class this close together are one episode, logged once */
#define NGX_HTTP_TOLL_REDIS_EPISODE_MS       10000
/* ... and a long episode is said again this often */
#define NGX_HTTP_TOLL_REDIS_REMIND_MS        60000
#define NGX_HTTP_TOLL_REDIS_CLASS_LEN        16


typedef enum {
    NGX_HTTP_TOLL_REDIS_DOWN = 0,        /* waiting to reconnect */
    NGX_HTTP_TOLL_REDIS_CONNECTING,
    NGX_HTTP_TOLL_REDIS_CONNECTED
} ngx_http_toll_redis_state_e;


struct ngx_http_toll_redis_cmd_s {
    ngx_event_t                      timer;
    ngx_http_toll_redis_handler_pt   handler;
    void                            *data;      /* NULL: nobody to tell */
    uint64_t                         sent_us;   /* for the reply time */

    /* a script's: TOLL_SCRIPT_N for any other command */
    toll_script_e                    script;
    /* an EVALSHA's arguments, for NOSCRIPT to send it again in full */
    int                              argc;
    const char                     **argv;
    size_t                          *argvlen;
};


typedef struct {
    ngx_http_toll_redis_conf_t      *conf;
    ngx_log_t                       *log;
    redisAsyncContext               *ac;
    ngx_http_toll_redis_state_e      state;
    ngx_event_t                      reconnect;
    ngx_event_t                      connect_timer;
    ngx_msec_t                       backoff_ms;
    ngx_uint_t                       failures;  /* in a row, for logs */
    unsigned                         active:1;  /* configured, this worker */
    unsigned                         answered:1; /* this connection has */
} ngx_http_toll_redis_t;


/* the refusals of one path: the episode under way */
typedef struct {
    u_char                           class[NGX_HTTP_TOLL_REDIS_CLASS_LEN];
    size_t                           class_len;
    ngx_msec_t                       last;      /* the latest refusal */
    ngx_msec_t                       said;      /* when it was logged */
} ngx_http_toll_redis_episode_t;


static ngx_http_toll_redis_cmd_t *ngx_http_toll_redis_queue(
    ngx_http_toll_redis_handler_pt handler, void *data, int argc,
    const char **argv, const size_t *argvlen, size_t extra);
static ngx_int_t ngx_http_toll_redis_script_reply(ngx_http_toll_redis_t *rd,
    ngx_http_toll_redis_cmd_t *cmd, redisReply *r);
static void ngx_http_toll_redis_connect(ngx_http_toll_redis_t *rd);
static void ngx_http_toll_redis_drop(ngx_http_toll_redis_t *rd,
    const char *reason);
static void ngx_http_toll_redis_lost(ngx_http_toll_redis_t *rd,
    const char *reason);
static void ngx_http_toll_redis_reconnect_handler(ngx_event_t *ev);
static void ngx_http_toll_redis_connect_timeout(ngx_event_t *ev);
static void ngx_http_toll_redis_cmd_timeout(ngx_event_t *ev);

static void ngx_http_toll_redis_on_connect(const redisAsyncContext *ac,
    int status);
static void ngx_http_toll_redis_on_disconnect(const redisAsyncContext *ac,
    int status);
static void ngx_http_toll_redis_on_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_http_toll_redis_on_setup_reply(redisAsyncContext *ac,
    void *r, void *privdata);

static void ngx_http_toll_redis_read_handler(ngx_event_t *ev);
static void ngx_http_toll_redis_write_handler(ngx_event_t *ev);
static void ngx_http_toll_redis_add_read(void *privdata);
static void ngx_http_toll_redis_del_read(void *privdata);
static void ngx_http_toll_redis_add_write(void *privdata);
static void ngx_http_toll_redis_del_write(void *privdata);
static void ngx_http_toll_redis_cleanup(void *privdata);


/* one connection per worker process */
static ngx_http_toll_redis_t  ngx_http_toll_redis;
/* the scripts Redis has, as far as this worker knows */
static ngx_uint_t  ngx_http_toll_redis_scripts[TOLL_SCRIPT_N];

static ngx_http_toll_redis_episode_t
    ngx_http_toll_redis_episodes[NGX_HTTP_TOLL_REDIS_PATH_N];


ngx_int_t
ngx_http_toll_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_toll_redis_conf_t *conf)
{
    ngx_http_toll_redis_t  *rd;

    rd = &ngx_http_toll_redis;
    ngx_memzero(rd, sizeof(ngx_http_toll_redis_t));

    rd->conf = conf;
    rd->log = cycle->log;
    rd->backoff_ms = NGX_HTTP_TOLL_REDIS_BACKOFF_MIN_MS;
    rd->active = 1;

    /* neither timer may keep a gracefully exiting worker alive */

    rd->reconnect.handler = ngx_http_toll_redis_reconnect_handler;
    rd->reconnect.data = rd;
    rd->reconnect.log = cycle->log;
    rd->reconnect.cancelable = 1;

    rd->connect_timer.handler = ngx_http_toll_redis_connect_timeout;
    rd->connect_timer.data = rd;
    rd->connect_timer.log = cycle->log;
    rd->connect_timer.cancelable = 1;

    ngx_http_toll_redis_connect(rd);

    return NGX_OK;
}


void
ngx_http_toll_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_toll_redis_t  *rd;

    rd = &ngx_http_toll_redis;

    if (!rd->active) {
        return;
    }

    rd->active = 0;

    if (rd->reconnect.timer_set) {
        ngx_del_timer(&rd->reconnect);
    }

    if (rd->connect_timer.timer_set) {
        ngx_del_timer(&rd->connect_timer);
    }

    if (rd->ac) {
        redisAsyncContext  *ac = rd->ac;

        rd->ac = NULL;
        rd->state = NGX_HTTP_TOLL_REDIS_DOWN;
        redisAsyncFree(ac);
    }
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
 * only the script's own answer.
 */

ngx_http_toll_redis_cmd_t *
ngx_http_toll_redis_eval(toll_script_e id,
    ngx_http_toll_redis_handler_pt handler, void *data, int argc,
    const char **argv, size_t *argvlen)
{
    u_char                     *p;
    size_t                      extra;
    ngx_int_t                   i;
    const toll_script_t        *s;
    ngx_http_toll_redis_cmd_t  *cmd;

    s = &toll_scripts[id];
    extra = 0;

    if (ngx_http_toll_redis_scripts[id]) {
        argv[0] = "EVALSHA";
        argvlen[0] = sizeof("EVALSHA") - 1;
        argv[1] = s->sha1;
        argvlen[1] = 40;

        extra = argc * (sizeof(char *) + sizeof(size_t));

        for (i = 2; i < argc; i++) {
            extra += argvlen[i];
        }

    } else {
        argv[0] = "EVAL";
        argvlen[0] = sizeof("EVAL") - 1;
        argv[1] = s->text;
        argvlen[1] = s->len;
    }

    cmd = ngx_http_toll_redis_queue(handler, data, argc, argv, argvlen,
                                    extra);
    if (cmd == NULL) {
        return NULL;
    }

    cmd->script = id;

    if (extra == 0) {
        return cmd;
    }

    cmd->argc = argc;
    cmd->argv = (const char **) (cmd + 1);
    cmd->argvlen = (size_t *) (cmd->argv + argc);
    p = (u_char *) (cmd->argvlen + argc);

    for (i = 2; i < argc; i++) {
        cmd->argv[i] = (const char *) p;
        cmd->argvlen[i] = argvlen[i];
        p = ngx_cpymem(p, argv[i], argvlen[i]);
    }

    return cmd;
}


static ngx_http_toll_redis_cmd_t *
ngx_http_toll_redis_queue(ngx_http_toll_redis_handler_pt handler,
    void *data, int argc, const char **argv, const size_t *argvlen,
    size_t extra)
{
    ngx_http_toll_redis_t      *rd;
    ngx_http_toll_redis_cmd_t  *cmd;

    rd = &ngx_http_toll_redis;

    ngx_http_toll_metrics_redis_command();

    /*
     * While connecting, hiredis buffers commands and sends them once the
     * socket is up; while down, waiting for a timeout would only delay
     * an answer that is already known.
     */

    if (!rd->active || rd->ac == NULL
        || rd->state == NGX_HTTP_TOLL_REDIS_DOWN)
    {
        ngx_http_toll_metrics_redis_reply(1, 0);
        return NULL;
    }

    cmd = ngx_calloc(sizeof(ngx_http_toll_redis_cmd_t) + extra, rd->log);
    if (cmd == NULL) {
        ngx_http_toll_metrics_redis_reply(1, 0);
        return NULL;
    }

    cmd->handler = handler;
    cmd->data = data;
    cmd->script = TOLL_SCRIPT_N;
    cmd->sent_us = ngx_http_toll_metrics_now_us();

    if (redisAsyncCommandArgv(rd->ac, ngx_http_toll_redis_on_reply, cmd,
                              argc, argv, argvlen)
        != REDIS_OK)
    {
        ngx_free(cmd);
        ngx_http_toll_metrics_redis_reply(1, 0);
        return NULL;
    }

    /*
     * Not cancelable: a request parked on this command must be answered
     * before a gracefully exiting worker goes away.
     */

    cmd->timer.handler = ngx_http_toll_redis_cmd_timeout;
    cmd->timer.data = cmd;
    cmd->timer.log = rd->log;

    ngx_add_timer(&cmd->timer, rd->conf->timeout);

    return cmd;
}


void
ngx_http_toll_redis_cancel(ngx_http_toll_redis_cmd_t *cmd)
{
    /* hiredis still owns the callback; it frees cmd when it fires */
    cmd->data = NULL;
}


/*
 * A store that refuses (out of memory, a replica, loading) refuses every
 * command of a path alike: one line says so, not one per request, per
 * buyer or per retry.
 */

ngx_uint_t
ngx_http_toll_redis_refusal(ngx_http_toll_redis_path_e path,
    redisReply *reply)
{
    size_t                          len, n;
    char                           *str;
    ngx_msec_t                      now;
    ngx_http_toll_redis_episode_t  *ep;

    if (path >= NGX_HTTP_TOLL_REDIS_PATH_N) {
        return 1;
    }

    if (reply == NULL) {
        /* no answer at all: the connection's own line tells why */
        str = "(no answer)";
        n = sizeof("(no answer)") - 1;

    } else if (reply->type == REDIS_REPLY_ERROR) {
        str = reply->str;
        n = reply->len;

    } else {
        return 1;
    }

    for (len = 0; len < n && len < NGX_HTTP_TOLL_REDIS_CLASS_LEN
                  && str[len] != ' ';
         len++)
    {
        /* void */
    }

    ep = &ngx_http_toll_redis_episodes[path];
    now = ngx_current_msec;

    if (ep->class_len == len
        && ngx_strncmp(ep->class, str, len) == 0
        && now - ep->last < NGX_HTTP_TOLL_REDIS_EPISODE_MS)
    {
        ep->last = now;

        if (now - ep->said < NGX_HTTP_TOLL_REDIS_REMIND_MS) {
            return 0;
        }

        ep->said = now;

        return 1;
    }

    ngx_memcpy(ep->class, str, len);
    ep->class_len = len;
    ep->last = now;
    ep->said = now;

    return 1;
}


static void
ngx_http_toll_redis_connect(ngx_http_toll_redis_t *rd)
{
    int                          n;
    const char                  *argv[2];
    size_t                       argvlen[2];
    u_char                       db[NGX_INT_T_LEN];
    ngx_connection_t            *c;
    redisAsyncContext           *ac;
    ngx_http_toll_redis_conf_t  *conf;

    conf = rd->conf;

    if (conf->unix_socket) {
        ac = redisAsyncConnectUnix((const char *) conf->host);

    } else {
        ac = redisAsyncConnect((const char *) conf->host, conf->port);
    }

    if (ac == NULL) {
        ngx_http_toll_redis_lost(rd, "cannot allocate a context");
        return;
    }

    if (ac->err) {
        ngx_http_toll_redis_lost(rd, ac->errstr);
        redisAsyncFree(ac);
        return;
    }

    c = ngx_get_connection(ac->c.fd, rd->log);
    if (c == NULL) {
        redisAsyncFree(ac);
        ngx_http_toll_redis_lost(rd, "no free connection");
        return;
    }

    c->data = ac;
    c->log = rd->log;
    c->read->log = rd->log;
    c->write->log = rd->log;
    c->read->handler = ngx_http_toll_redis_read_handler;
    c->write->handler = ngx_http_toll_redis_write_handler;

    ac->data = rd;
    ac->ev.data = c;
    ac->ev.addRead = ngx_http_toll_redis_add_read;
    ac->ev.delRead = ngx_http_toll_redis_del_read;
    ac->ev.addWrite = ngx_http_toll_redis_add_write;
    ac->ev.delWrite = ngx_http_toll_redis_del_write;
    ac->ev.cleanup = ngx_http_toll_redis_cleanup;

    rd->ac = ac;
    rd->state = NGX_HTTP_TOLL_REDIS_CONNECTING;
    rd->answered = 0;

    /* the connect callback arms the write event that completes connect() */
    redisAsyncSetConnectCallback(ac, ngx_http_toll_redis_on_connect);
    redisAsyncSetDisconnectCallback(ac, ngx_http_toll_redis_on_disconnect);

    ngx_add_timer(&rd->connect_timer, conf->timeout);

    /* queued now, these leave first once the socket is up */

    if (conf->password.len) {
        argv[0] = "AUTH";
        argvlen[0] = sizeof("AUTH") - 1;
        argv[1] = (const char *) conf->password.data;
        argvlen[1] = conf->password.len;

        redisAsyncCommandArgv(ac, ngx_http_toll_redis_on_setup_reply,
                              (void *) "AUTH", 2, argv, argvlen);
    }

    if (conf->db > 0) {
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
 * Gives up on the current connection: pending commands fail at once
 * (hiredis calls each of their callbacks with no reply) and a reconnect
 * is scheduled.
 */

static void
ngx_http_toll_redis_drop(ngx_http_toll_redis_t *rd, const char *reason)
{
    redisAsyncContext  *ac;

    ac = rd->ac;

    /* first forget it, so that handlers run below see the store down */
    ngx_http_toll_redis_lost(rd, reason);

    if (ac) {
        /* deferred by hiredis when called from one of its callbacks */
        redisAsyncFree(ac);
    }
}


/* the connection is gone or going: note it, and try again later */

static void
ngx_http_toll_redis_lost(ngx_http_toll_redis_t *rd, const char *reason)
{
    ngx_uint_t  level;

    if (rd->connect_timer.timer_set) {
        ngx_del_timer(&rd->connect_timer);
    }

    if (rd->state == NGX_HTTP_TOLL_REDIS_DOWN && rd->ac == NULL
        && rd->reconnect.timer_set)
    {
        return;
    }

    rd->ac = NULL;
    rd->state = NGX_HTTP_TOLL_REDIS_DOWN;
    ngx_http_toll_metrics_redis_state(0);

    if (!rd->active) {
        return;
    }

    /* one error per outage; the retries that follow are information */
    level = rd->failures++ ? NGX_LOG_INFO : NGX_LOG_ERR;

    ngx_log_error(level, rd->log, 0,
                  "toll: redis \"%V\" unavailable: %s, retrying in %Mms",
                  &rd->conf->addr_text, reason, rd->backoff_ms);

    if (!rd->reconnect.timer_set) {
        ngx_add_timer(&rd->reconnect, rd->backoff_ms);
    }

    rd->backoff_ms = ngx_min(rd->backoff_ms * 2,
                             NGX_HTTP_TOLL_REDIS_BACKOFF_MAX_MS);
}


static void
ngx_http_toll_redis_reconnect_handler(ngx_event_t *ev)
{
    ngx_http_toll_redis_t  *rd;

    rd = ev->data;

    if (!rd->active || rd->ac != NULL || ngx_exiting || ngx_quit) {
        return;
    }

    ngx_http_toll_metrics_redis_reconnect();
    ngx_http_toll_redis_connect(rd);
}


static void
ngx_http_toll_redis_connect_timeout(ngx_event_t *ev)
{
    ngx_http_toll_redis_t  *rd;

    rd = ev->data;

    if (rd->state == NGX_HTTP_TOLL_REDIS_CONNECTING) {
        ngx_http_toll_redis_drop(rd, "connect timed out");
    }
}


static void
ngx_http_toll_redis_cmd_timeout(ngx_event_t *ev)
{
    void                            *data;
    ngx_http_toll_redis_t           *rd;
    ngx_http_toll_redis_cmd_t       *cmd;
    ngx_http_toll_redis_handler_pt   handler;

    cmd = ev->data;
    rd = &ngx_http_toll_redis;

    handler = cmd->handler;
    data = cmd->data;

    /*
     * Replies come in order, so every command behind this one is late
     * as well: drop the connection, which fails them all now.  The
     * callback of this command runs during the drop and frees cmd; its
     * handler is called here, once, with no reply.
     */

    cmd->data = NULL;

    ngx_http_toll_redis_drop(rd, "command timed out");

    if (data) {
        handler(data, NULL);
    }
}


static void
ngx_http_toll_redis_on_connect(const redisAsyncContext *ac, int status)
{
    ngx_http_toll_redis_t  *rd;

    rd = ac->data;

    if (rd->ac != ac) {
        return;
    }

    if (status != REDIS_OK) {
        /* hiredis frees the context when this returns */
        ngx_http_toll_redis_lost(rd, ac->errstr);
        return;
    }

    if (rd->connect_timer.timer_set) {
        ngx_del_timer(&rd->connect_timer);
    }

    /*
     * The kernel completes a connect() even for a stopped server: the
     * store counts as back only once it answers (see on_reply).
     */

    rd->state = NGX_HTTP_TOLL_REDIS_CONNECTED;
}


static void
ngx_http_toll_redis_on_disconnect(const redisAsyncContext *ac, int status)
{
    ngx_http_toll_redis_t  *rd;

    rd = ac->data;

    if (rd->ac != ac) {
        /* dropped by us already */
        return;
    }

    /*
     * A connection that had been answering was closed: an idle timeout,
     * CLIENT KILL, a failover.  Nothing says the store is down, so a new
     * connection is made at once and commands queue on it while it
     * connects; waiting out a backoff would answer 503 meanwhile.  Only a
     * connection that never answered backs off, so that a server which
     * closes every new connection cannot spin this.
     */

    if (rd->answered && rd->active && !ngx_exiting && !ngx_quit) {
        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      "toll: redis \"%V\" closed the connection (%s), "
                      "reconnecting", &rd->conf->addr_text,
                      ac->err ? ac->errstr : "no error");

        rd->ac = NULL;
        rd->state = NGX_HTTP_TOLL_REDIS_DOWN;
        ngx_http_toll_metrics_redis_state(0);
        ngx_http_toll_metrics_redis_reconnect();

        /* hiredis frees the old context when this returns */
        ngx_http_toll_redis_connect(rd);
        return;
    }

    ngx_http_toll_redis_lost(rd, ac->err ? ac->errstr : "connection closed");
}


static void
ngx_http_toll_redis_on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    ngx_http_toll_redis_t      *rd;
    ngx_http_toll_redis_cmd_t  *cmd;

    cmd = privdata;
    rd = &ngx_http_toll_redis;

    if (cmd->script != TOLL_SCRIPT_N && r != NULL
        && ngx_http_toll_redis_script_reply(rd, cmd, r) == NGX_OK)
    {
        /* sent again in full: its answer comes to this callback */
        return;
    }

    /* an error reply is an answer, but the command failed all the same */

    if (r == NULL || ((redisReply *) r)->type == REDIS_REPLY_ERROR) {
        ngx_http_toll_metrics_redis_reply(1, 0);

    } else {
        ngx_http_toll_metrics_redis_reply(0, ngx_http_toll_metrics_now_us()
                                             - cmd->sent_us);
    }

    if (r != NULL && rd->ac == ac && !rd->answered) {
        rd->answered = 1;
        ngx_http_toll_metrics_redis_state(1);
    }

    if (r != NULL && rd->failures && rd->ac == ac) {
        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      "toll: redis \"%V\" is back after %ui failed attempts",
                      &rd->conf->addr_text, rd->failures);
        rd->failures = 0;
        rd->backoff_ms = NGX_HTTP_TOLL_REDIS_BACKOFF_MIN_MS;
    }

    if (cmd->timer.timer_set) {
        ngx_del_timer(&cmd->timer);
    }

    /* an exiting worker frees the context with requests still parked */

    if (cmd->data && rd->active) {
        cmd->handler(cmd->data, r);
    }

    ngx_free(cmd);
}


/*
 * A script's answer: Redis has the script now, unless it says NOSCRIPT;
 * then an EVALSHA still wanted is sent again in full, on the same
 * connection (NGX_OK), once.
 */

static ngx_int_t
ngx_http_toll_redis_script_reply(ngx_http_toll_redis_t *rd,
    ngx_http_toll_redis_cmd_t *cmd, redisReply *r)
{
    const toll_script_t  *s;

    if (r->type != REDIS_REPLY_ERROR
        || ngx_strncmp(r->str, "NOSCRIPT", 8) != 0)
    {
        ngx_http_toll_redis_scripts[cmd->script] = 1;
        return NGX_DECLINED;
    }

    ngx_http_toll_redis_scripts[cmd->script] = 0;

    if (cmd->argv == NULL || cmd->data == NULL || !rd->active
        || rd->ac == NULL)
    {
        return NGX_DECLINED;
    }

    s = &toll_scripts[cmd->script];

    cmd->argv[0] = "EVAL";
    cmd->argvlen[0] = sizeof("EVAL") - 1;
    cmd->argv[1] = s->text;
    cmd->argvlen[1] = s->len;

    if (redisAsyncCommandArgv(rd->ac, ngx_http_toll_redis_on_reply, cmd,
                              cmd->argc, cmd->argv, cmd->argvlen)
        != REDIS_OK)
    {
        return NGX_DECLINED;
    }

    cmd->argv = NULL;

    return NGX_OK;
}


static void
ngx_http_toll_redis_on_setup_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    u_char                  buf[128];
    redisReply             *reply;
    ngx_http_toll_redis_t  *rd;

    reply = r;
    rd = ac->data;

    if (reply == NULL || rd->ac != ac) {
        return;
    }

    if (reply->type != REDIS_REPLY_ERROR) {
        if (!rd->answered) {
            rd->answered = 1;
            ngx_http_toll_metrics_redis_state(1);
        }

        return;
    }

    /* the store refuses us: requests would fail one by one otherwise */

    ngx_snprintf(buf, sizeof(buf) - 1, "%s failed: %*s%Z",
                 (const char *) privdata,
                 ngx_min(reply->len, sizeof(buf) - 40), reply->str);

    ngx_http_toll_redis_drop(rd, (const char *) buf);
}


static void
ngx_http_toll_redis_read_handler(ngx_event_t *ev)
{
    ngx_connection_t  *c;

    c = ev->data;

    /* may free c */
    redisAsyncHandleRead(c->data);
}


static void
ngx_http_toll_redis_write_handler(ngx_event_t *ev)
{
    ngx_connection_t  *c;

    c = ev->data;

    /* may free c */
    redisAsyncHandleWrite(c->data);
}


static void
ngx_http_toll_redis_add_read(void *privdata)
{
    ngx_connection_t  *c;

    c = privdata;

    if (!c->read->active) {
        if (ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT)
            != NGX_OK)
        {
            ngx_log_error(NGX_LOG_ERR, c->log, 0,
                          "toll: redis read event not added");
        }
    }
}


static void
ngx_http_toll_redis_del_read(void *privdata)
{
    ngx_connection_t  *c;

    c = privdata;

    if (c->read->active) {
        ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }
}


static void
ngx_http_toll_redis_add_write(void *privdata)
{
    ngx_connection_t  *c;

    c = privdata;

    if (!c->write->active) {
        if (ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT)
            != NGX_OK)
        {
            ngx_log_error(NGX_LOG_ERR, c->log, 0,
                          "toll: redis write event not added");
        }
    }
}


static void
ngx_http_toll_redis_del_write(void *privdata)
{
    ngx_connection_t  *c;

    c = privdata;

    if (c->write->active) {
        ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }
}


/* hiredis closes the socket itself right after this */

static void
ngx_http_toll_redis_cleanup(void *privdata)
{
    ngx_connection_t  *c;

    c = privdata;

    ngx_http_toll_redis_del_read(c);
    ngx_http_toll_redis_del_write(c);

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    ngx_free_connection(c);

    c->fd = (ngx_socket_t) -1;
}
