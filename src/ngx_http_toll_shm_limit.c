/*
 * toll: the subjects in the shared zone: one node per limit subject (a
 * key id, an address), meter day or free tier, found by an rbtree on
 * the subject, aged by an LRU that evicts unpinned nodes when the zone
 * is full, and waiting in the queues of the timers that sync them.
 */

#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_toll_shm.h"
#include "ngx_http_toll_shm_int.h"


ngx_http_toll_shm_limit_node_t *
ngx_http_toll_shm_limit_find(ngx_shm_zone_t *shm_zone, u_char *subject,
    size_t len)
{
    uint32_t                         hash;
    ngx_int_t                        rc;
    ngx_rbtree_node_t               *node, *sentinel;
    ngx_http_toll_shctx_t           *ctx;
    ngx_http_toll_shm_limit_node_t  *ln;

    ctx = shm_zone->data;
    hash = ngx_crc32_long(subject, len);

    node = ctx->sh->limit_rbtree.root;
    sentinel = ctx->sh->limit_rbtree.sentinel;

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        ln = (ngx_http_toll_shm_limit_node_t *) node;

        rc = ngx_memn2cmp(subject, ln->subject, len, ln->subject_len);

        if (rc == 0) {
            return ln;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


ngx_http_toll_shm_limit_node_t *
ngx_http_toll_shm_limit_create(ngx_shm_zone_t *shm_zone, u_char *subject,
    size_t len, size_t state_size)
{
    size_t                           size;
    ngx_http_toll_shctx_t           *ctx;
    ngx_http_toll_shm_limit_node_t  *ln;

    ctx = shm_zone->data;

    if (len > NGX_HTTP_TOLL_NODE_SUBJECT_MAX) {
        return NULL;
    }

    state_size = ngx_align(state_size, sizeof(uint64_t));
    size = offsetof(ngx_http_toll_shm_limit_node_t, state) + state_size
           + len;

    ln = ngx_http_toll_shm_alloc(shm_zone, size);
    if (ln == NULL) {
        return NULL;
    }

    ln->node.key = ngx_crc32_long(subject, len);
    ln->uid = ++ctx->sh->limit_uid;
    ln->state_size = state_size;
    ln->subject_len = (uint16_t) len;
    ln->subject = (u_char *) ln->state + state_size;
    ngx_memcpy(ln->subject, subject, len);

    ngx_rbtree_insert(&ctx->sh->limit_rbtree, &ln->node);
    ngx_queue_insert_head(&ctx->sh->limit_lru, &ln->lru);

    return ln;
}


void
ngx_http_toll_shm_limit_free(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_shm_limit_node_t *ln)
{
    ngx_http_toll_shctx_t  *ctx = shm_zone->data;

    ngx_http_toll_shm_unqueue(shm_zone, ln);

    ngx_queue_remove(&ln->lru);
    ngx_rbtree_delete(&ctx->sh->limit_rbtree, &ln->node);
    ngx_slab_free_locked(ctx->shpool, ln);
}


void
ngx_http_toll_shm_limit_touch(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_shm_limit_node_t *ln)
{
    ngx_http_toll_shctx_t  *ctx = shm_zone->data;

    ngx_queue_remove(&ln->lru);
    ngx_queue_insert_head(&ctx->sh->limit_lru, &ln->lru);

    ngx_http_toll_shm_enqueue(shm_zone, ln, NGX_HTTP_TOLL_QUEUE_LIMIT);
}


ngx_http_toll_shm_limit_node_t *
ngx_http_toll_shm_limit_next_sync(ngx_shm_zone_t *shm_zone)
{
    return ngx_http_toll_shm_dequeue(shm_zone, NGX_HTTP_TOLL_QUEUE_LIMIT);
}


void
ngx_http_toll_shm_enqueue(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_shm_limit_node_t *ln, ngx_uint_t queue)
{
    ngx_http_toll_shctx_t  *ctx = shm_zone->data;

    if (ln->queued) {
        return;
    }

    ngx_queue_insert_tail(&ctx->sh->queues[queue], &ln->sync);
    ln->queued = (u_char) (queue + 1);
    ctx->sh->queued[queue]++;
}


ngx_http_toll_shm_limit_node_t *
ngx_http_toll_shm_dequeue(ngx_shm_zone_t *shm_zone, ngx_uint_t queue)
{
    ngx_queue_t                     *q;
    ngx_http_toll_shctx_t           *ctx;
    ngx_http_toll_shm_limit_node_t  *ln;

    ctx = shm_zone->data;

    if (ngx_queue_empty(&ctx->sh->queues[queue])) {
        return NULL;
    }

    q = ngx_queue_head(&ctx->sh->queues[queue]);
    ln = ngx_queue_data(q, ngx_http_toll_shm_limit_node_t, sync);

    ngx_http_toll_shm_unqueue(shm_zone, ln);

    return ln;
}


void
ngx_http_toll_shm_unqueue(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_shm_limit_node_t *ln)
{
    ngx_http_toll_shctx_t  *ctx = shm_zone->data;

    if (!ln->queued) {
        return;
    }

    ngx_queue_remove(&ln->sync);
    ctx->sh->queued[ln->queued - 1]--;
    ln->queued = 0;
}


void
ngx_http_toll_shm_queue_walk(ngx_shm_zone_t *shm_zone, ngx_uint_t queue,
    void (*fn)(ngx_http_toll_shm_limit_node_t *ln, void *data), void *data)
{
    ngx_queue_t            *q, *head;
    ngx_http_toll_shctx_t  *ctx = shm_zone->data;

    head = &ctx->sh->queues[queue];

    for (q = ngx_queue_head(head);
         q != ngx_queue_sentinel(head);
         q = ngx_queue_next(q))
    {
        fn(ngx_queue_data(q, ngx_http_toll_shm_limit_node_t, sync), data);
    }
}


ngx_uint_t
ngx_http_toll_shm_queued(ngx_shm_zone_t *shm_zone, ngx_uint_t queue)
{
    ngx_http_toll_shctx_t  *ctx = shm_zone->data;

    return ctx->sh->queued[queue];
}


/*
 * Evicts up to n unpinned subjects from the LRU tail.  What they had not
 * sent to Redis is lost; a limit is a safety control, and a zone this
 * full is reported by the caller.
 */

void
ngx_http_toll_shm_limit_evict(ngx_http_toll_shctx_t *ctx, ngx_uint_t n)
{
    ngx_queue_t                     *q, *prev;
    ngx_http_toll_shm_limit_node_t  *ln;

    for (q = ngx_queue_last(&ctx->sh->limit_lru);
         n && q != ngx_queue_sentinel(&ctx->sh->limit_lru);
         q = prev)
    {
        prev = ngx_queue_prev(q);
        ln = ngx_queue_data(q, ngx_http_toll_shm_limit_node_t, lru);

        if (ln->pins) {
            continue;
        }

        if (ln->queued) {
            ngx_queue_remove(&ln->sync);
            ctx->sh->queued[ln->queued - 1]--;
        }

        ngx_queue_remove(&ln->lru);
        ngx_rbtree_delete(&ctx->sh->limit_rbtree, &ln->node);
        ngx_slab_free_locked(ctx->shpool, ln);
        n--;
    }
}


void
ngx_http_toll_shm_limit_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t               **p;
    ngx_http_toll_shm_limit_node_t   *ln, *lnt;

    for ( ;; ) {

        if (node->key != temp->key) {
            p = (node->key < temp->key) ? &temp->left : &temp->right;

        } else {
            ln = (ngx_http_toll_shm_limit_node_t *) node;
            lnt = (ngx_http_toll_shm_limit_node_t *) temp;

            p = (ngx_memn2cmp(ln->subject, lnt->subject, ln->subject_len,
                              lnt->subject_len) < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


ngx_http_toll_shm_limit_node_t *
ngx_http_toll_shm_limit_grow(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_shm_limit_node_t *ln, size_t state_size)
{
    size_t                           size;
    ngx_http_toll_shctx_t           *ctx;
    ngx_http_toll_shm_limit_node_t  *nn;

    ctx = shm_zone->data;

    state_size = ngx_align(state_size, sizeof(uint64_t));

    if (state_size <= ln->state_size) {
        return ln;
    }

    size = offsetof(ngx_http_toll_shm_limit_node_t, state) + state_size
           + ln->subject_len;

    /* no eviction here: it could free the very node being grown */
    nn = ngx_slab_alloc_locked(ctx->shpool, size);
    if (nn == NULL) {
        return NULL;
    }

    ngx_memzero(nn, size);

    nn->node.key = ln->node.key;
    nn->uid = ln->uid;
    nn->pins = ln->pins;
    nn->state_size = state_size;
    nn->queued = ln->queued;
    nn->subject_len = ln->subject_len;
    nn->subject = (u_char *) nn->state + state_size;
    ngx_memcpy(nn->state, ln->state, ln->state_size);
    ngx_memcpy(nn->subject, ln->subject, ln->subject_len);

    ngx_queue_insert_after(&ln->lru, &nn->lru);
    ngx_queue_remove(&ln->lru);

    if (ln->queued) {
        ngx_queue_insert_after(&ln->sync, &nn->sync);
        ngx_queue_remove(&ln->sync);
    }

    ngx_rbtree_delete(&ctx->sh->limit_rbtree, &ln->node);
    ngx_rbtree_insert(&ctx->sh->limit_rbtree, &nn->node);

    ngx_slab_free_locked(ctx->shpool, ln);

    return nn;
}


ngx_http_toll_shm_clock_t *
ngx_http_toll_shm_limit_clock(ngx_shm_zone_t *shm_zone)
{
    ngx_http_toll_shctx_t  *ctx = shm_zone->data;

    return &ctx->sh->limit_clock;
}
