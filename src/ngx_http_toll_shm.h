/*
 * toll: the shared memory zone.
 *
 * One zone for all workers, kept across reloads.  It holds the key record
 * cache: an rbtree by key id with an LRU queue, so that a full zone evicts
 * the records used least recently instead of failing.
 */

#ifndef _NGX_HTTP_TOLL_SHM_H_INCLUDED_
#define _NGX_HTTP_TOLL_SHM_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_toll_module.h"


#define NGX_HTTP_TOLL_ZONE_NAME      "toll"
#define NGX_HTTP_TOLL_ZONE_SIZE      (10 * 1024 * 1024)
#define NGX_HTTP_TOLL_ZONE_SIZE_MIN  (8 * ngx_pagesize)


/* declares the zone during configuration; NULL on error */
ngx_shm_zone_t *ngx_http_toll_shm_add(ngx_conf_t *cf, size_t size);

/*
 * Copies a fresh cached record into rec (strings from pool).  Returns
 * NGX_OK on a hit, NGX_DECLINED on a miss or a stale entry, NGX_ERROR
 * when the pool is exhausted.
 */
ngx_int_t ngx_http_toll_shm_key_get(ngx_shm_zone_t *shm_zone,
    ngx_str_t *key_id, ngx_http_toll_key_t *rec, ngx_pool_t *pool);

/* caches rec (found or not) for ttl; failure to cache is logged only */
void ngx_http_toll_shm_key_put(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_key_t *rec, ngx_msec_t ttl, ngx_log_t *log);


#endif /* _NGX_HTTP_TOLL_SHM_H_INCLUDED_ */
