/*
 * toll: a Sentinel's primary for the Redis adapter: the sentinels asked
 * in turn (at start, each second, every 100 ms while the primary does not
 * answer, at once when it is lost or answers READONLY), each question
 * with a deadline; a node named is used once it answers ROLE master.
 * ngx_http_toll_redis_route.c routes the commands to it.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_http_toll_redis_int.h"
#include "toll_store.h"



static void ngx_http_toll_redis_on_sentinel(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_http_toll_redis_on_role(redisAsyncContext *ac, void *r,
    void *privdata);


void
ngx_http_toll_redis_discover(ngx_http_toll_redis_t *rd)
{
    u_char                      *master;
    const char                  *argv[3];
    size_t                       argvlen[3];
    ngx_uint_t                   i;
    ngx_http_toll_redis_node_t  *node;

    if (rd->asking || !rd->active || ngx_exiting || ngx_quit) {
        return;
    }

    node = NULL;

    /* the sentinel asked last, or the next that may answer */

    for (i = 0; i < rd->nsentinels; i++) {
        node = rd->sentinel;

        if (node->ac == NULL && !node->reconnect.timer_set) {
            ngx_http_toll_redis_node_connect(node);
        }

        if (node->ac != NULL && node->state != NGX_HTTP_TOLL_REDIS_DOWN) {
            break;
        }

        ngx_http_toll_redis_next_sentinel(rd);
        node = NULL;
    }

    if (node == NULL) {
        ngx_http_toll_redis_discover_later(rd,
                                       NGX_HTTP_TOLL_REDIS_DISCOVER_RETRY_MS);
        return;
    }

    master = rd->conf->master.data;

    argv[0] = "SENTINEL";
    argvlen[0] = sizeof("SENTINEL") - 1;
    argv[1] = "get-master-addr-by-name";
    argvlen[1] = sizeof("get-master-addr-by-name") - 1;
    argv[2] = (const char *) master;
    argvlen[2] = rd->conf->master.len;

    if (ngx_http_toll_redis_node_ask(node, ngx_http_toll_redis_on_sentinel,
                                     rd, 3, argv, argvlen)
        != NGX_OK)
    {
        ngx_http_toll_redis_next_sentinel(rd);
        ngx_http_toll_redis_discover_later(rd,
                                       NGX_HTTP_TOLL_REDIS_DISCOVER_RETRY_MS);
        return;
    }

    rd->asking = 1;

    /* the question's own deadline: a sentinel that never answers */
    ngx_http_toll_redis_discover_later(rd, rd->conf->timeout);
}


void
ngx_http_toll_redis_discover_later(ngx_http_toll_redis_t *rd, ngx_msec_t ms)
{
    if (rd->discover.timer_set) {
        if (rd->discover.timer.key <= ngx_current_msec + ms) {
            return;
        }

        ngx_del_timer(&rd->discover);
    }

    if (rd->active && !ngx_exiting && !ngx_quit) {
        ngx_add_timer(&rd->discover, ms);
    }
}


void
ngx_http_toll_redis_discover_handler(ngx_event_t *ev)
{
    ngx_http_toll_redis_t       *rd;
    ngx_http_toll_redis_node_t  *node;

    rd = ev->data;

    if (rd->asking) {
        /* the sentinel asked did not answer in time: the next one */
        node = rd->sentinel;
        rd->asking = 0;
        ngx_http_toll_redis_next_sentinel(rd);
        ngx_http_toll_redis_node_close(node, "no answer within the timeout");
    }

    ngx_http_toll_redis_discover(rd);
}


void
ngx_http_toll_redis_next_sentinel(ngx_http_toll_redis_t *rd)
{
    rd->sentinel_next = (rd->sentinel_next + 1) % rd->nsentinels;
    rd->sentinel = rd->nodes[rd->sentinel_next];
}


static void
ngx_http_toll_redis_on_sentinel(redisAsyncContext *ac, void *r,
    void *privdata)
{
    size_t                       argvlen[1];
    const char                  *argv[1];
    redisReply                  *reply;
    toll_cluster_node_t          to;
    ngx_http_toll_redis_t       *rd;
    ngx_http_toll_redis_node_t  *node, *old;

    rd = privdata;
    reply = r;
    node = ac->data;

    if (node == rd->sentinel && rd->asking) {
        rd->asking = 0;

        if (rd->discover.timer_set) {
            ngx_del_timer(&rd->discover);
        }
    }

    if (!rd->active) {
        return;
    }

    if (reply == NULL || toll_sentinel_primary(reply, &to) != 0) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "toll: redis sentinel \"%V\" names no primary "
                      "\"%V\"%s", &node->name, &rd->conf->master,
                      reply ? "" : " (no answer)");

        if (node == rd->sentinel) {
            ngx_http_toll_redis_next_sentinel(rd);
        }

        ngx_http_toll_redis_discover_later(rd,
                                       NGX_HTTP_TOLL_REDIS_DISCOVER_RETRY_MS);
        return;
    }

    old = rd->primary;

    if (old != NULL && old->port == to.port
        && ngx_strcmp(old->host, to.host) == 0)
    {
        /*
         * A primary that does not answer is being replaced, or will be:
         * the sentinels are asked again soon rather than in a second, so
         * that the new one is used as soon as they name it.
         */

        ngx_http_toll_redis_discover_later(rd, old->answered && old->ac
                                      ? NGX_HTTP_TOLL_REDIS_DISCOVER_MS
                                      : NGX_HTTP_TOLL_REDIS_DISCOVER_RETRY_MS);

        if (old->ac == NULL && !old->reconnect.timer_set) {
            ngx_http_toll_redis_node_connect(old);
        }

        return;
    }

    ngx_http_toll_redis_discover_later(rd, NGX_HTTP_TOLL_REDIS_DISCOVER_MS);

    node = ngx_http_toll_redis_node(rd, to.host, to.port, 0, 0);
    if (node == NULL) {
        return;
    }

    if (node == rd->candidate) {
        if (ngx_current_msec - rd->candidate_at < rd->conf->timeout) {
            return;
        }

        /* it did not say its role in time: asked again, on a new one */
        rd->candidate = NULL;
        ngx_http_toll_redis_node_close(node, "no role within the timeout");
    }

    /*
     * Sentinels do not agree at once after a failover, and a former
     * primary that comes back is a primary until they convert it: the
     * named node is used only once it says ROLE master itself.
     */

    argv[0] = "ROLE";
    argvlen[0] = sizeof("ROLE") - 1;

    if (node->ac == NULL) {
        ngx_http_toll_redis_node_connect(node);
    }

    if (ngx_http_toll_redis_node_ask(node, ngx_http_toll_redis_on_role, rd,
                                     1, argv, argvlen)
        != NGX_OK)
    {
        return;
    }

    rd->candidate = node;
    rd->candidate_at = ngx_current_msec;
}


static void
ngx_http_toll_redis_on_role(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply                  *reply;
    ngx_http_toll_redis_t       *rd;
    ngx_http_toll_redis_node_t  *node, *old;

    rd = privdata;
    reply = r;
    node = ac->data;

    if (node != rd->candidate || !rd->active) {
        return;
    }

    rd->candidate = NULL;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements == 0
        || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[0]->len != sizeof("master") - 1
        || ngx_strncmp(reply->element[0]->str, "master",
                       sizeof("master") - 1) != 0)
    {
        ngx_log_error(NGX_LOG_INFO, rd->log, 0,
                      "toll: redis sentinel named \"%V\" the primary of "
                      "\"%V\", but it is not one yet", &node->name,
                      &rd->conf->master);

        if (node != rd->primary) {
            ngx_http_toll_redis_node_close(node, "not the primary");
        }

        ngx_http_toll_redis_discover_later(rd,
                                       NGX_HTTP_TOLL_REDIS_DISCOVER_RETRY_MS);
        return;
    }

    old = rd->primary;

    if (old == node) {
        return;
    }

    ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                  "toll: redis sentinel names \"%V\" the primary of \"%V\"",
                  &node->name, &rd->conf->master);

    rd->primary = node;

    if (old != NULL) {
        ngx_http_toll_redis_node_close(old, "not the primary any more");
    }

    ngx_http_toll_redis_set_up(rd);
}
