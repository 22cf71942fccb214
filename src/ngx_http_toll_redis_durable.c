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


static void ngx_http_toll_redis_on_wait(redisAsyncContext *ac, void *r,
    void *privdata);
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
    u_char                      *p;
    u_char                       num[NGX_INT_T_LEN], ms[NGX_INT_T_LEN];
    const char                  *argv[3];
    size_t                       argvlen[3];
    ngx_http_toll_redis_conf_t  *conf;

    conf = node->rd->conf;

    cmd->answer = ngx_http_toll_redis_reply_dup(reply, 0);
    if (cmd->answer == NULL) {
        return NGX_ERROR;
    }

    argv[0] = "WAIT";
    argvlen[0] = sizeof("WAIT") - 1;

    p = ngx_sprintf(num, "%ui", conf->replicas);
    argv[1] = (const char *) num;
    argvlen[1] = p - num;

    p = ngx_sprintf(ms, "%M", conf->replica_wait);
    argv[2] = (const char *) ms;
    argvlen[2] = p - ms;

    if (ngx_http_toll_redis_node_ask(node, ngx_http_toll_redis_on_wait, cmd,
                                     3, argv, argvlen)
        != NGX_OK)
    {
        freeReplyObject(cmd->answer);
        cmd->answer = NULL;
        return NGX_ERROR;
    }

    cmd->waiting = 1;

    return NGX_OK;
}


static void
ngx_http_toll_redis_on_wait(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply                  *reply, *answer;
    ngx_uint_t                   ok;
    ngx_http_toll_redis_t       *rd;
    ngx_http_toll_redis_cmd_t   *cmd;
    ngx_http_toll_redis_node_t  *node;

    cmd = privdata;
    reply = r;
    node = ac->data;
    rd = node->rd;

    ok = (reply != NULL && reply->type == REDIS_REPLY_INTEGER
          && reply->integer >= (long long) rd->conf->replicas);

    answer = cmd->answer;
    cmd->answer = NULL;

    if (cmd->timer.timer_set) {
        ngx_del_timer(&cmd->timer);
    }

    if (!ok && reply != NULL && rd->active) {
        /* one line per episode: a replica down says so on every write */
        rd->unreplicated++;

        if (ngx_current_msec - rd->unreplicated_said
            >= NGX_HTTP_TOLL_REDIS_UNREPLICATED_MS)
        {
            ngx_log_error(NGX_LOG_WARN, rd->log, 0,
                          "toll: redis \"%V\": %ui money write(s) not on "
                          "%ui replica(s) within %Mms, taken as unanswered",
                          &node->name, rd->unreplicated, rd->conf->replicas,
                          rd->conf->replica_wait);
            rd->unreplicated = 0;
            rd->unreplicated_said = ngx_current_msec;
        }
    }

    ngx_http_toll_redis_count_reply(rd, !ok, ngx_http_toll_now_us()
                                              - cmd->sent_us);

    if (cmd->data && rd->active) {
        cmd->handler(cmd->data, ok ? answer : NULL);
    }

    freeReplyObject(answer);
    ngx_free(cmd);
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
