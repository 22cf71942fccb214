/*
 * toll: the shared memory zone and the key record cache in it.
 *
 * The zone itself (declared, laid out, its mutex, its allocator that
 * makes room by evicting) and the cache of key records.  The limit
 * subjects live in ngx_http_toll_shm_limit.c, the table of worker
 * processes in ngx_http_toll_shm_proc.c; the zone's layout, shared by
 * the three, in ngx_http_toll_shm_int.h.
 */

#include <ngx_config.h>
#include <ngx_core.h>

#include <openssl/rand.h>

#include "ngx_http_toll_shm.h"
#include "ngx_http_toll_shm_int.h"
#include "toll_key_record.h"


/* entries reclaimed by each insert, so that stale ones do not pile up */
#define NGX_HTTP_TOLL_SHM_EXPIRE_PER_PUT   2
/* LRU entries evicted at most to make room for one insert */
#define NGX_HTTP_TOLL_SHM_EVICT_MAX        64


/* the node stores these lengths in a u_char each */
#if (TOLL_KEY_ID_LEN_MAX > 255 || TOLL_OWNER_LEN_MAX > 255                   \
     || TOLL_PLAN_LEN_MAX > 255)
#error "a key record field is longer than a cache node can store"
#endif

#if (TOLL_SCOPES_LEN_MAX > 65535 || TOLL_ROLES_LEN_MAX > 255)
#error "a key's scopes or roles are longer than a cache node can store"
#endif


/*
 * Records of keys that exist and "no such key" answers age in separate
 * queues, and only the latter make room for more of their kind: a flood
 * of made-up key ids cannot push the keys of paying callers out.
 */

typedef struct {
    ngx_rbtree_node_t          node;          /* key: crc32 of the key id */
    ngx_queue_t                queue;
    ngx_msec_t                 stale_at;      /* ngx_current_msec */
    time_t                     expires_at;
    int64_t                    rate_limit;
    u_char                     secret_hash[TOLL_SECRET_HASH_LEN];
    u_char                     found;
    u_char                     revoked;
    u_char                     role;
    u_char                     key_id_len;
    u_char                     owner_len;
    u_char                     plan_len;
    u_char                     roles_len;
    uint16_t                   scopes_len;
    u_char                     data[1];       /* key id, owner, plan,
                                                 scopes, roles */
} ngx_http_toll_shm_key_node_t;


static ngx_int_t ngx_http_toll_shm_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_http_toll_shm_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_http_toll_shm_key_node_t *ngx_http_toll_shm_key_lookup(
    ngx_http_toll_sh_t *sh, ngx_str_t *key_id, uint32_t hash);
static void ngx_http_toll_shm_key_free(ngx_http_toll_shctx_t *ctx,
    ngx_http_toll_shm_key_node_t *kn);
static void ngx_http_toll_shm_expire(ngx_http_toll_shctx_t *ctx,
    ngx_queue_t *lru, ngx_uint_t n, ngx_uint_t force);


ngx_shm_zone_t *
ngx_http_toll_shm_add(ngx_conf_t *cf, size_t size)
{
    ngx_shm_zone_t         *shm_zone;
    ngx_http_toll_shctx_t  *ctx;

    static ngx_str_t  name = ngx_string(NGX_HTTP_TOLL_ZONE_NAME);

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_http_toll_shctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    ctx->mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_toll_module);

    shm_zone = ngx_shared_memory_add(cf, &name, size, &ngx_http_toll_module);
    if (shm_zone == NULL) {
        return NULL;
    }

    if (shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "shared memory zone \"%V\" is already used",
                           &name);
        return NULL;
    }

    shm_zone->init = ngx_http_toll_shm_init_zone;
    shm_zone->data = ctx;

    return shm_zone;
}


static ngx_int_t
ngx_http_toll_shm_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    size_t                  len;
    u_char                  raw[NGX_HTTP_TOLL_NODE_ID_LEN / 2];
    ngx_http_toll_shctx_t  *octx = data;
    ngx_http_toll_shctx_t  *ctx;

    ctx = shm_zone->data;

    if (octx) {
        /* a reload: keep what the workers of the old cycle cached */
        ctx->sh = octx->sh;
        ctx->shpool = octx->shpool;

        if (ctx->sh->layout != NGX_HTTP_TOLL_SHM_LAYOUT) {
            ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                          "toll zone \"%V\" was laid out by another build "
                          "of the module; restart nginx to use this one "
                          "(a reload cannot carry the zone over)",
                          &shm_zone->shm.name);
            return NGX_ERROR;
        }

        /* and the counters of services that keep their names */
        return ngx_http_toll_counters_init_zone(ctx->shpool,
                                                &ctx->sh->counters, ctx->mcf,
                                                0);
    }

    ctx->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        ctx->sh = ctx->shpool->data;
        return ngx_http_toll_counters_init_zone(ctx->shpool,
                                                &ctx->sh->counters, ctx->mcf,
                                                0);
    }

    ctx->sh = ngx_slab_calloc(ctx->shpool, sizeof(ngx_http_toll_sh_t));
    if (ctx->sh == NULL) {
        return NGX_ERROR;
    }

    ctx->shpool->data = ctx->sh;
    ctx->sh->layout = NGX_HTTP_TOLL_SHM_LAYOUT;

    /* this nginx's name where Redis keeps what it holds (balances) */

    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "toll: libcrypto could not make a node id");
        return NGX_ERROR;
    }

    ngx_hex_dump(ctx->sh->node_id, raw, sizeof(raw));

    ngx_rbtree_init(&ctx->sh->rbtree, &ctx->sh->sentinel,
                    ngx_http_toll_shm_rbtree_insert_value);
    ngx_queue_init(&ctx->sh->lru);
    ngx_queue_init(&ctx->sh->lru_negative);

    /* fixed for the zone's life: reloads keep the limit clock */
    ctx->sh->limit_clock.base_ms = ngx_http_toll_now_ms()
                                   - (int64_t) ngx_current_msec;

    ngx_rbtree_init(&ctx->sh->limit_rbtree, &ctx->sh->limit_sentinel,
                    ngx_http_toll_shm_limit_insert_value);
    ngx_queue_init(&ctx->sh->limit_lru);
    ngx_queue_init(&ctx->sh->queues[NGX_HTTP_TOLL_QUEUE_LIMIT]);
    ngx_queue_init(&ctx->sh->queues[NGX_HTTP_TOLL_QUEUE_METER]);
    ngx_queue_init(&ctx->sh->queues[NGX_HTTP_TOLL_QUEUE_PREPAID]);
    ngx_queue_init(&ctx->sh->queues[NGX_HTTP_TOLL_QUEUE_CAP]);

    len = sizeof(" in toll zone \"\"") + shm_zone->shm.name.len;

    ctx->shpool->log_ctx = ngx_slab_alloc(ctx->shpool, len);
    if (ctx->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(ctx->shpool->log_ctx, " in toll zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* a full zone is handled by evicting; the slab need not cry */
    ctx->shpool->log_nomem = 0;

    return ngx_http_toll_counters_init_zone(ctx->shpool, &ctx->sh->counters,
                                            ctx->mcf, 1);
}


u_char *
ngx_http_toll_shm_node_id(ngx_shm_zone_t *shm_zone)
{
    ngx_http_toll_shctx_t  *ctx = shm_zone->data;

    return ctx->sh->node_id;
}


ngx_int_t
ngx_http_toll_shm_key_get(ngx_shm_zone_t *shm_zone, ngx_str_t *key_id,
    ngx_uint_t credential, ngx_http_toll_key_t *rec, ngx_pool_t *pool)
{
    u_char                        *p, *q;
    size_t                         len;
    uint32_t                       hash;
    ngx_int_t                      rc;
    ngx_http_toll_shctx_t         *ctx;
    ngx_http_toll_shm_key_node_t  *kn;

    /* scopes and roles, copied out under the lock: most keys have none */
    u_char                         authz[TOLL_SCOPES_LEN_MAX
                                         + TOLL_ROLES_LEN_MAX];

    ctx = shm_zone->data;

    /*
     * The same CRC as ngx_crc32_short() gives, so nodes made by either
     * match, in half the instructions: this runs on every request.
     */
    hash = ngx_crc32_long(key_id->data, key_id->len);

    /* before the lock: a pool may call malloc() */
    p = ngx_pnalloc(pool, TOLL_OWNER_LEN_MAX + TOLL_PLAN_LEN_MAX);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    kn = ngx_http_toll_shm_key_lookup(ctx->sh, key_id, hash);

    if (kn == NULL
        || (ngx_msec_int_t) (kn->stale_at - ngx_current_msec) <= 0)
    {
        (void) ngx_atomic_fetch_add(&ctx->sh->cache_misses[credential], 1);
        rc = NGX_DECLINED;
        goto done;
    }

    (void) ngx_atomic_fetch_add(&ctx->sh->cache_hits[credential], 1);

    ngx_queue_remove(&kn->queue);
    ngx_queue_insert_head(kn->found ? &ctx->sh->lru : &ctx->sh->lru_negative,
                          &kn->queue);

    rec->key_id = *key_id;

    rec->owner.data = p;
    rec->owner.len = kn->owner_len;
    p = ngx_cpymem(p, kn->data + kn->key_id_len, kn->owner_len);

    rec->plan.data = p;
    rec->plan.len = kn->plan_len;
    ngx_memcpy(p, kn->data + kn->key_id_len + kn->owner_len, kn->plan_len);

    rec->scopes.len = kn->scopes_len;
    rec->roles.len = kn->roles_len;
    ngx_memcpy(authz, kn->data + kn->key_id_len + kn->owner_len
                      + kn->plan_len, kn->scopes_len + kn->roles_len);

    rec->found = kn->found;
    rec->revoked = kn->revoked;
    rec->role = kn->role;
    rec->rate_limit = kn->rate_limit;
    rec->expires_at = kn->expires_at;
    ngx_memcpy(rec->secret_hash, kn->secret_hash, TOLL_SECRET_HASH_LEN);

    rc = NGX_OK;

done:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    if (rc != NGX_OK) {
        return rc;
    }

    len = rec->scopes.len + rec->roles.len;

    q = (len == 0) ? NULL : ngx_pnalloc(pool, len);
    if (len && q == NULL) {
        return NGX_ERROR;
    }

    rec->scopes.data = q;
    rec->roles.data = q ? q + rec->scopes.len : NULL;

    if (len) {
        ngx_memcpy(q, authz, len);
    }

    return NGX_OK;
}


void
ngx_http_toll_shm_key_put(ngx_shm_zone_t *shm_zone, ngx_http_toll_key_t *rec,
    ngx_msec_t ttl, ngx_log_t *log)
{
    u_char                        *p;
    size_t                         size;
    uint32_t                       hash;
    ngx_uint_t                     tries;
    ngx_http_toll_shctx_t         *ctx;
    ngx_http_toll_shm_key_node_t  *kn;

    if (ttl == 0) {
        return;
    }

    ctx = shm_zone->data;
    hash = ngx_crc32_long(rec->key_id.data, rec->key_id.len);

    /* lengths are bounded by the record decoder: each fits in a u_char */

    size = offsetof(ngx_http_toll_shm_key_node_t, data)
           + rec->key_id.len + rec->owner.len + rec->plan.len
           + rec->scopes.len + rec->roles.len;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    kn = ngx_http_toll_shm_key_lookup(ctx->sh, &rec->key_id, hash);
    if (kn) {
        /* another worker raced us here: the newer answer wins */
        ngx_http_toll_shm_key_free(ctx, kn);
    }

    ngx_http_toll_shm_expire(ctx, &ctx->sh->lru,
                             NGX_HTTP_TOLL_SHM_EXPIRE_PER_PUT, 0);
    ngx_http_toll_shm_expire(ctx, &ctx->sh->lru_negative,
                             NGX_HTTP_TOLL_SHM_EXPIRE_PER_PUT, 0);

    for (tries = 0; /* void */; tries++) {
        kn = ngx_slab_alloc_locked(ctx->shpool, size);
        if (kn != NULL) {
            break;
        }

        /* full: "no such key" answers go first, and only they for more */

        if (!ngx_queue_empty(&ctx->sh->lru_negative) && tries < 2) {
            ngx_http_toll_shm_expire(ctx, &ctx->sh->lru_negative,
                                     NGX_HTTP_TOLL_SHM_EVICT_MAX, 1);
            continue;
        }

        if (!rec->found) {
            ngx_shmtx_unlock(&ctx->shpool->mutex);
            return;
        }

        if (ngx_queue_empty(&ctx->sh->lru) || tries >= 3) {
            ngx_shmtx_unlock(&ctx->shpool->mutex);

            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          "toll: could not cache key \"%V\": zone \"%V\" "
                          "is full, increase \"toll_zone\"",
                          &rec->key_id, &shm_zone->shm.name);
            return;
        }

        ngx_http_toll_shm_expire(ctx, &ctx->sh->lru,
                                 NGX_HTTP_TOLL_SHM_EVICT_MAX, 1);
    }

    kn->node.key = hash;
    kn->stale_at = ngx_current_msec + ttl;
    kn->expires_at = rec->expires_at;
    kn->rate_limit = rec->rate_limit;
    ngx_memcpy(kn->secret_hash, rec->secret_hash, TOLL_SECRET_HASH_LEN);
    kn->found = rec->found;
    kn->revoked = rec->revoked;
    kn->role = (u_char) rec->role;
    kn->key_id_len = (u_char) rec->key_id.len;
    kn->owner_len = (u_char) rec->owner.len;
    kn->plan_len = (u_char) rec->plan.len;
    kn->scopes_len = (uint16_t) rec->scopes.len;
    kn->roles_len = (u_char) rec->roles.len;

    /* a negative entry has no owner and no plan: no NULL into memcpy */

    p = ngx_cpymem(kn->data, rec->key_id.data, rec->key_id.len);

    if (rec->owner.len) {
        p = ngx_cpymem(p, rec->owner.data, rec->owner.len);
    }

    if (rec->plan.len) {
        p = ngx_cpymem(p, rec->plan.data, rec->plan.len);
    }

    if (rec->scopes.len) {
        p = ngx_cpymem(p, rec->scopes.data, rec->scopes.len);
    }

    if (rec->roles.len) {
        ngx_memcpy(p, rec->roles.data, rec->roles.len);
    }

    ngx_rbtree_insert(&ctx->sh->rbtree, &kn->node);
    ngx_queue_insert_head(rec->found ? &ctx->sh->lru : &ctx->sh->lru_negative,
                          &kn->queue);

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


static ngx_http_toll_shm_key_node_t *
ngx_http_toll_shm_key_lookup(ngx_http_toll_sh_t *sh, ngx_str_t *key_id,
    uint32_t hash)
{
    ngx_int_t                      rc;
    ngx_rbtree_node_t             *node, *sentinel;
    ngx_http_toll_shm_key_node_t  *kn;

    node = sh->rbtree.root;
    sentinel = sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        /* hash == node->key */

        kn = (ngx_http_toll_shm_key_node_t *) node;

        rc = ngx_memn2cmp(key_id->data, kn->data, key_id->len,
                          kn->key_id_len);

        if (rc == 0) {
            return kn;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static void
ngx_http_toll_shm_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t             **p;
    ngx_http_toll_shm_key_node_t   *kn, *knt;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else { /* node->key == temp->key */

            kn = (ngx_http_toll_shm_key_node_t *) node;
            knt = (ngx_http_toll_shm_key_node_t *) temp;

            p = (ngx_memn2cmp(kn->data, knt->data, kn->key_id_len,
                              knt->key_id_len) < 0)
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


static void
ngx_http_toll_shm_key_free(ngx_http_toll_shctx_t *ctx,
    ngx_http_toll_shm_key_node_t *kn)
{
    ngx_queue_remove(&kn->queue);
    ngx_rbtree_delete(&ctx->sh->rbtree, &kn->node);
    ngx_slab_free_locked(ctx->shpool, kn);
}


/*
 * Frees up to n entries from the tail of an LRU queue: only stale ones,
 * or any when force is set (the zone is full).
 */

static void
ngx_http_toll_shm_expire(ngx_http_toll_shctx_t *ctx, ngx_queue_t *lru,
    ngx_uint_t n, ngx_uint_t force)
{
    ngx_queue_t                   *q;
    ngx_http_toll_shm_key_node_t  *kn;

    while (n-- && !ngx_queue_empty(lru)) {

        q = ngx_queue_last(lru);
        kn = ngx_queue_data(q, ngx_http_toll_shm_key_node_t, queue);

        if (!force
            && (ngx_msec_int_t) (kn->stale_at - ngx_current_msec) > 0)
        {
            return;
        }

        ngx_http_toll_shm_key_free(ctx, kn);
    }
}


void
ngx_http_toll_shm_lock(ngx_shm_zone_t *shm_zone)
{
    ngx_http_toll_shctx_t  *ctx = shm_zone->data;

    ngx_shmtx_lock(&ctx->shpool->mutex);
}


void
ngx_http_toll_shm_unlock(ngx_shm_zone_t *shm_zone)
{
    ngx_http_toll_shctx_t  *ctx = shm_zone->data;

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


void *
ngx_http_toll_shm_alloc(ngx_shm_zone_t *shm_zone, size_t size)
{
    void                   *p;
    ngx_uint_t              tries;
    ngx_http_toll_shctx_t  *ctx;

    ctx = shm_zone->data;

    for (tries = 0; /* void */; tries++) {
        p = ngx_slab_alloc_locked(ctx->shpool, size);
        if (p != NULL) {
            break;
        }

        if (tries >= 3) {
            return NULL;
        }

        /* unknown key ids make room first, then the oldest subjects */

        if (!ngx_queue_empty(&ctx->sh->lru_negative) && tries == 0) {
            ngx_http_toll_shm_expire(ctx, &ctx->sh->lru_negative,
                                     NGX_HTTP_TOLL_SHM_EVICT_MAX, 1);
            continue;
        }

        ngx_http_toll_shm_limit_evict(ctx, NGX_HTTP_TOLL_SHM_EVICT_MAX);
    }

    ngx_memzero(p, size);

    return p;
}


void
ngx_http_toll_shm_free(ngx_shm_zone_t *shm_zone, void *p)
{
    ngx_http_toll_shctx_t  *ctx = shm_zone->data;

    ngx_slab_free_locked(ctx->shpool, p);
}


ngx_http_toll_redis_stats_t *
ngx_http_toll_shm_redis_stats(ngx_shm_zone_t *shm_zone)
{
    ngx_http_toll_shctx_t  *ctx = shm_zone->data;

    return &ctx->sh->redis;
}


void
ngx_http_toll_shm_stats(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_shm_stats_t *st)
{
    ngx_uint_t                 i;
    ngx_http_toll_shctx_t     *ctx;
    ngx_http_toll_shm_proc_t  *p;

    ctx = shm_zone->data;

    ngx_memzero(st, sizeof(ngx_http_toll_shm_stats_t));

    ngx_shmtx_lock(&ctx->shpool->mutex);

    /* pages not handed out; a page of small slots counts as used */
    st->free = ctx->shpool->pfree << ngx_pagesize_shift;
    st->size = shm_zone->shm.size;

    st->meter_backlog = ctx->sh->queued[NGX_HTTP_TOLL_QUEUE_METER];
    st->limit_backlog = ctx->sh->queued[NGX_HTTP_TOLL_QUEUE_LIMIT];

    for (i = 0; i < NGX_HTTP_TOLL_SHM_CREDENTIALS; i++) {
        st->cache_hits[i] = ctx->sh->cache_hits[i];
        st->cache_misses[i] = ctx->sh->cache_misses[i];
    }

    for (i = 0; i < ctx->sh->nprocs; i++) {
        p = &ctx->sh->procs[i];

        if (p->pid == 0 || p->exiting || ngx_http_toll_shm_pid_dead(p->pid)) {
            continue;
        }

        st->workers++;
        st->redis_up += (p->redis_up != 0);
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}

