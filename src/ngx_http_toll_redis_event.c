/*
 * toll: hiredis's events on nginx's event loop.
 *
 * hiredis 0.14 ships no nginx adapter, so it is here: the socket hiredis
 * opens is wrapped in an ngx_connection_t whose read and write events
 * call back into hiredis.  The events are level triggered: hiredis reads
 * at most 16 KiB per call, and with edge triggering the rest of a larger
 * reply would wait for more data that never comes.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_http_toll_redis_int.h"


static void ngx_http_toll_redis_read_handler(ngx_event_t *ev);
static void ngx_http_toll_redis_write_handler(ngx_event_t *ev);
static void ngx_http_toll_redis_add_read(void *privdata);
static void ngx_http_toll_redis_del_read(void *privdata);
static void ngx_http_toll_redis_add_write(void *privdata);
static void ngx_http_toll_redis_del_write(void *privdata);
static void ngx_http_toll_redis_cleanup(void *privdata);


/* ac's socket onto nginx's events: NGX_ERROR when no connection is free */

ngx_int_t
ngx_http_toll_redis_attach(redisAsyncContext *ac, ngx_log_t *log)
{
    ngx_connection_t  *c;

    c = ngx_get_connection(ac->c.fd, log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = ac;
    c->log = log;
    c->read->log = log;
    c->write->log = log;
    c->read->handler = ngx_http_toll_redis_read_handler;
    c->write->handler = ngx_http_toll_redis_write_handler;

    ac->ev.data = c;
    ac->ev.addRead = ngx_http_toll_redis_add_read;
    ac->ev.delRead = ngx_http_toll_redis_del_read;
    ac->ev.addWrite = ngx_http_toll_redis_add_write;
    ac->ev.delWrite = ngx_http_toll_redis_del_write;
    ac->ev.cleanup = ngx_http_toll_redis_cleanup;

    return NGX_OK;
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
    ngx_connection_t            *c;
    redisAsyncContext           *ac;
    ngx_http_toll_redis_node_t  *node;

    c = privdata;
    ac = c->data;
    node = ac->data;

    /* every callback of ac has run: the node may be given to another */
    if (node != NULL) {
        node->contexts--;
    }

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
