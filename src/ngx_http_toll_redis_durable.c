/*
 * toll: money writes that count only once a replica has them.
 *
 * Redis replicates asynchronously: a primary can answer a script that
 * moved money and die before its replica has the write, and the replica
 * promoted in its place never saw it.  With toll_redis replicas=N, such a
 * script's answer is kept until WAIT N says N replicas have the write
 * (ngx_http_toll_redis.h tells what the callers make of a NULL instead).
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_http_toll_redis_int.h"


/* a durable write not replicated in time is said once in this long */
#define NGX_HTTP_TOLL_REDIS_UNREPLICATED_MS  10000


static void ngx_http_toll_redis_send_wait(ngx_http_toll_redis_node_t *node);
static void ngx_http_toll_redis_on_wait(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_http_toll_redis_waited(ngx_http_toll_redis_node_t *node,
    ngx_uint_t ok);
static redisReply *ngx_http_toll_redis_reply_dup(redisReply *r,
    ngx_uint_t depth);


ngx_http_toll_redis_cmd_t *
ngx_http_toll_redis_eval_durable(toll_script_e id,
    ngx_http_toll_redis_handler_pt handler, void *data, int argc,
    const char **argv, size_t *argvlen)
{
    ngx_http_toll_redis_cmd_t  *cmd;

    cmd = ngx_http_toll_redis_eval(id, handler, data, argc, argv, argvlen);

    if (cmd != NULL && ngx_http_toll_redis.conf->replicas > 0) {
        cmd->durable = 1;
    }

    return cmd;
}


/*
 * A durable command's answer is kept (hiredis frees its own when the
 * callback returns) while WAIT asks the node whether its replicas have
 * the write.  WAIT goes after the answer, on the same connection, never
 * before a redirection or a NOSCRIPT sent the command elsewhere; its
 * bound (replica_wait) is short, since the commands behind it on this
 * connection wait with it.
 */

ngx_int_t
ngx_http_toll_redis_wait(ngx_http_toll_redis_node_t *node,
    ngx_http_toll_redis_cmd_t *cmd, redisReply *reply)
{
    cmd->answer = ngx_http_toll_redis_reply_dup(reply, 0);
    if (cmd->answer == NULL) {
        return NGX_ERROR;
    }

    /*
     * One WAIT at a time per connection: it covers every write made on
     * the connection before it, so the answers that come while one is on
     * its way wait for the next.  With a replica down, each WAIT takes
     * replica_wait; one at a time, the commands behind never wait longer.
     */

    cmd->waiting = 1;
    ngx_queue_insert_tail(&node->wait_next, &cmd->wait);

    if (!node->wait_sent) {
        ngx_http_toll_redis_send_wait(node);
    }

    return NGX_OK;
}


static void
ngx_http_toll_redis_send_wait(ngx_http_toll_redis_node_t *node)
{
    u_char                      *p;
    u_char                       num[NGX_INT_T_LEN], ms[NGX_INT_T_LEN];
    const char                  *argv[3];
    size_t                       argvlen[3];
    ngx_http_toll_redis_conf_t  *conf;

    conf = node->rd->conf;

    ngx_queue_add(&node->wait_cur, &node->wait_next);
    ngx_queue_init(&node->wait_next);

    argv[0] = "WAIT";
    argvlen[0] = sizeof("WAIT") - 1;

    p = ngx_sprintf(num, "%ui", conf->replicas);
    argv[1] = (const char *) num;
    argvlen[1] = p - num;

    p = ngx_sprintf(ms, "%M", conf->replica_wait);
    argv[2] = (const char *) ms;
    argvlen[2] = p - ms;

    if (ngx_http_toll_redis_node_ask(node, ngx_http_toll_redis_on_wait, node,
                                     3, argv, argvlen)
        != NGX_OK)
    {
        /* not sent: every answer it was to cover counts as unanswered */
        ngx_http_toll_redis_waited(node, 0);
        return;
    }

    node->wait_sent = 1;
}


static void
ngx_http_toll_redis_on_wait(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply                  *reply;
    ngx_uint_t                   ok;
    ngx_http_toll_redis_t       *rd;
    ngx_http_toll_redis_node_t  *node;

    node = privdata;
    reply = r;
    rd = node->rd;

    (void) ac;

    node->wait_sent = 0;

    ok = (reply != NULL && reply->type == REDIS_REPLY_INTEGER
          && reply->integer >= (long long) rd->conf->replicas);

    if (!ok && reply != NULL && rd->active) {
        /* one line per episode: a replica down says so on every write */
        rd->unreplicated++;

        if (ngx_current_msec - rd->unreplicated_said
            >= NGX_HTTP_TOLL_REDIS_UNREPLICATED_MS)
        {
            ngx_log_error(NGX_LOG_WARN, rd->log, 0,
                          "toll: redis \"%V\": money writes not on "
                          "%ui replica(s) within %Mms (%ui times), taken as "
                          "unanswered", &node->name, rd->conf->replicas,
                          rd->conf->replica_wait, rd->unreplicated);
            rd->unreplicated = 0;
            rd->unreplicated_said = ngx_current_msec;
        }
    }

    ngx_http_toll_redis_waited(node, ok);

    /* the answers that came meanwhile: the next WAIT, if it can go */

    if (!ngx_queue_empty(&node->wait_next)) {
        ngx_http_toll_redis_send_wait(node);
    }
}


/* the answers a WAIT covered reach their callers, or none does (!ok) */

static void
ngx_http_toll_redis_waited(ngx_http_toll_redis_node_t *node, ngx_uint_t ok)
{
    redisReply                 *answer;
    ngx_queue_t                *q;
    ngx_http_toll_redis_t      *rd;
    ngx_http_toll_redis_cmd_t  *cmd;

    rd = node->rd;

    while (!ngx_queue_empty(&node->wait_cur)) {
        q = ngx_queue_head(&node->wait_cur);
        ngx_queue_remove(q);

        cmd = ngx_queue_data(q, ngx_http_toll_redis_cmd_t, wait);

        answer = cmd->answer;
        cmd->answer = NULL;

        if (cmd->timer.timer_set) {
            ngx_del_timer(&cmd->timer);
        }

        ngx_http_toll_redis_count_reply(rd, !ok, ngx_http_toll_now_us()
                                                  - cmd->sent_us);

        if (cmd->data && rd->active) {
            cmd->handler(cmd->data, ok ? answer : NULL);
        }

        freeReplyObject(answer);
        ngx_free(cmd);
    }
}


/* a copy of a script's answer, freed by freeReplyObject() */

static redisReply *
ngx_http_toll_redis_reply_dup(redisReply *r, ngx_uint_t depth)
{
    size_t       i;
    redisReply  *c;

    if (depth > 7) {
        return NULL;
    }

    c = calloc(1, sizeof(redisReply));
    if (c == NULL) {
        return NULL;
    }

    c->type = r->type;
    c->integer = r->integer;

    switch (r->type) {

    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        c->str = malloc(r->len + 1);
        if (c->str == NULL) {
            free(c);
            return NULL;
        }

        ngx_memcpy(c->str, r->str, r->len);
        c->str[r->len] = '\0';
        c->len = r->len;
        break;

    case REDIS_REPLY_ARRAY:
        if (r->elements == 0) {
            break;
        }

        c->element = calloc(r->elements, sizeof(redisReply *));
        if (c->element == NULL) {
            free(c);
            return NULL;
        }

        c->elements = r->elements;

        for (i = 0; i < r->elements; i++) {
            c->element[i] = ngx_http_toll_redis_reply_dup(r->element[i],
                                                          depth + 1);
            if (c->element[i] == NULL) {
                freeReplyObject(c);
                return NULL;
            }
        }

        break;

    default:
        break;
    }

    return c;
}
