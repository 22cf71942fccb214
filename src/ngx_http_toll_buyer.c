/*
 * toll: limits per buyer.
 *
 * The subject of a buyer's limits names its plan as well as the buyer:
 * two keys of one buyer with different plans then count in two sets of
 * buckets, each of its plan's size, instead of one bucket read with two
 * capacities (a bucket's tat and a window's slots mean nothing under
 * another plan's rate).  The prefix "b:" keeps a buyer from ever being
 * read as a key id, which cannot hold a colon, or as an address ("ip:").
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_limit.h"
#include "ngx_http_toll_limit_int.h"
#include "ngx_http_toll_buyer.h"
#include "ngx_http_toll_redis.h"
#include "ngx_http_toll_shm.h"
#include "toll_key.h"
#include "toll_names.h"


#define NGX_HTTP_TOLL_BUYER_SUBJECT_PREFIX  "b:"


ngx_uint_t
ngx_http_toll_buyer_limited(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    ngx_http_toll_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);

    /* a record without an owner (written by hand) keeps its own limits */
    return lcf->limit_key == NGX_HTTP_TOLL_LIMIT_KEY_BUYER
           && ctx->key.owner.len > 0;
}


size_t
ngx_http_toll_buyer_subject(u_char *buf, ngx_str_t *plan, ngx_str_t *buyer)
{
    size_t   plan_len, buyer_len;
    u_char  *p;

    /* both were checked when read (toll_plan_valid, toll_owner_valid);
       the bounds keep the buffer safe whatever a record held */
    plan_len = ngx_min(plan->len, TOLL_PLAN_LEN_MAX);
    buyer_len = ngx_min(buyer->len, TOLL_OWNER_LEN_MAX);

    p = ngx_cpymem(buf, NGX_HTTP_TOLL_BUYER_SUBJECT_PREFIX,
                   sizeof(NGX_HTTP_TOLL_BUYER_SUBJECT_PREFIX) - 1);
    p = ngx_cpymem(p, plan->data, plan_len);
    *p++ = ':';
    p = ngx_cpymem(p, buyer->data, buyer_len);

    return p - buf;
}


/*
 * A buyer record's plan, cached in the zone as a node of its own
 * ("bp:<buyer>", a subject no limit, meter or tier uses), with no queue:
 * it leaves by the LRU or by its TTL, found or not, like a key record.
 */

#define NGX_HTTP_TOLL_BUYER_CACHE_PREFIX  "bp:"

typedef struct {
    ngx_msec_t                 expires;       /* ngx_current_msec */
    uint32_t                   found;
    uint32_t                   plan_len;
    u_char                     plan[TOLL_PLAN_LEN_MAX];
} ngx_http_toll_buyer_cached_t;


static size_t ngx_http_toll_buyer_cache_name(u_char *buf, ngx_str_t *buyer);
static ngx_int_t ngx_http_toll_buyer_cache_get(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_limit_ctx_t *lctx);
static void ngx_http_toll_buyer_cache_put(ngx_shm_zone_t *shm_zone,
    ngx_str_t *buyer, ngx_str_t *plan, ngx_msec_t ttl, ngx_log_t *log);
static void ngx_http_toll_buyer_on_reply(void *data, redisReply *reply);
static ngx_int_t ngx_http_toll_buyer_copy(ngx_http_request_t *r,
    ngx_http_toll_limit_ctx_t *lctx, u_char *plan, size_t len);


ngx_int_t
ngx_http_toll_buyer_plan(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_limit_ctx_t *lctx)
{
    ngx_int_t                   rc;
    const char                 *argv[3];
    size_t                      argvlen[3];
    u_char                     *p;
    ngx_http_toll_loc_conf_t   *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);

    if (!lctx->buyer_done) {
        if (!lcf->buyer_plan || ctx->key.plan.len || ctx->key.owner.len == 0
            || ctx->key.owner.len > TOLL_OWNER_LEN_MAX)
        {
            lctx->buyer_done = 1;
            return NGX_OK;
        }

        rc = ngx_http_toll_buyer_cache_get(r, ctx, lctx);

        if (rc == NGX_DECLINED) {
            /* a miss: HGET toll:buyer:{<buyer>} plan */

            p = ngx_pnalloc(r->pool, sizeof(TOLL_NAME_BUYER_PREFIX) - 1
                                     + ctx->key.owner.len
                                     + sizeof(TOLL_NAME_TAG_END) - 1);
            if (p == NULL) {
                return NGX_ERROR;
            }

            argv[0] = "HGET";
            argvlen[0] = 4;
            argv[1] = (const char *) p;
            argvlen[1] = (u_char *) toll_name_tagged((char *) p,
                                              TOLL_NAME_BUYER_PREFIX,
                                              (char *) ctx->key.owner.data,
                                              ctx->key.owner.len)
                         - p;
            argv[2] = TOLL_BUYER_PLAN;
            argvlen[2] = sizeof(TOLL_BUYER_PLAN) - 1;

            ctx->cmd = ngx_http_toll_redis_send(ngx_http_toll_buyer_on_reply,
                                                ctx, 3, argv, argvlen);

            if (ctx->cmd != NULL) {
                /* as for a key lookup: a client that leaves ends the wait
                   (its pool cleanup cancels the command) */
                r->read_event_handler = ngx_http_test_reading;
                return NGX_AGAIN;
            }

            /* Redis away: the plan the credential would have without a
               buyer record, and nothing cached */
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "toll: buyer \"%V\": redis cannot be reached for "
                          "its plan, the default plan applies",
                          &ctx->key.owner);
            lctx->buyer_done = 1;

        } else if (rc != NGX_OK) {
            return rc;
        }
    }

    if (lctx->buyer_plan.len) {
        ctx->key.plan = lctx->buyer_plan;
    }

    return NGX_OK;
}


static size_t
ngx_http_toll_buyer_cache_name(u_char *buf, ngx_str_t *buyer)
{
    u_char  *p;

    p = ngx_cpymem(buf, NGX_HTTP_TOLL_BUYER_CACHE_PREFIX,
                   sizeof(NGX_HTTP_TOLL_BUYER_CACHE_PREFIX) - 1);
    p = ngx_cpymem(p, buyer->data, ngx_min(buyer->len, TOLL_OWNER_LEN_MAX));

    return p - buf;
}


/* NGX_OK: a fresh entry (lctx set); NGX_DECLINED: none; NGX_ERROR */

static ngx_int_t
ngx_http_toll_buyer_cache_get(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_limit_ctx_t *lctx)
{
    size_t                           len, plan_len;
    u_char                           name[NGX_HTTP_TOLL_LIMIT_SUBJECT_MAX];
    u_char                           plan[TOLL_PLAN_LEN_MAX];
    ngx_uint_t                       hit;
    ngx_http_toll_main_conf_t       *mcf;
    ngx_http_toll_buyer_cached_t    *bc;
    ngx_http_toll_shm_limit_node_t  *ln;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    len = ngx_http_toll_buyer_cache_name(name, &ctx->key.owner);
    hit = 0;
    plan_len = 0;

    ngx_http_toll_shm_lock(mcf->shm_zone);

    ln = ngx_http_toll_shm_limit_find(mcf->shm_zone, name, len);

    if (ln && ln->state_size >= sizeof(ngx_http_toll_buyer_cached_t)) {
        bc = (ngx_http_toll_buyer_cached_t *) ln->state;

        if ((ngx_msec_int_t) (bc->expires - ngx_current_msec) > 0) {
            hit = 1;
            plan_len = bc->found ? ngx_min(bc->plan_len, TOLL_PLAN_LEN_MAX)
                                 : 0;
            ngx_memcpy(plan, bc->plan, plan_len);
        }
    }

    ngx_http_toll_shm_unlock(mcf->shm_zone);

    if (!hit) {
        return NGX_DECLINED;
    }

    lctx->buyer_done = 1;

    return ngx_http_toll_buyer_copy(r, lctx, plan, plan_len);
}


static void
ngx_http_toll_buyer_cache_put(ngx_shm_zone_t *shm_zone, ngx_str_t *buyer,
    ngx_str_t *plan, ngx_msec_t ttl, ngx_log_t *log)
{
    size_t                           len;
    u_char                           name[NGX_HTTP_TOLL_LIMIT_SUBJECT_MAX];
    ngx_http_toll_buyer_cached_t    *bc;
    ngx_http_toll_shm_limit_node_t  *ln;

    len = ngx_http_toll_buyer_cache_name(name, buyer);

    ngx_http_toll_shm_lock(shm_zone);

    ln = ngx_http_toll_shm_limit_find(shm_zone, name, len);

    if (ln == NULL) {
        ln = ngx_http_toll_shm_limit_create(shm_zone, name, len,
                                       sizeof(ngx_http_toll_buyer_cached_t));

    } else if (ln->state_size < sizeof(ngx_http_toll_buyer_cached_t)) {
        /* never made here: left alone, not cached */
        ln = NULL;
    }

    if (ln) {
        bc = (ngx_http_toll_buyer_cached_t *) ln->state;
        bc->expires = ngx_current_msec + ttl;
        bc->found = plan->len > 0;
        bc->plan_len = ngx_min(plan->len, TOLL_PLAN_LEN_MAX);

        if (bc->plan_len) {
            /* "no plan" is a NULL string: memcpy() of it is undefined */
            ngx_memcpy(bc->plan, plan->data, bc->plan_len);
        }
    }

    ngx_http_toll_shm_unlock(shm_zone);

    if (ln == NULL) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "toll: no room in the zone to cache buyer \"%V\"",
                      buyer);
    }
}


static void
ngx_http_toll_buyer_on_reply(void *data, redisReply *reply)
{
    ngx_http_toll_ctx_t *ctx = data;

    ngx_str_t                   plan;
    ngx_http_request_t         *r;
    ngx_http_toll_limit_ctx_t  *lctx;
    ngx_http_toll_main_conf_t  *mcf;

    r = ctx->request;
    lctx = ctx->limit;
    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    ctx->cmd = NULL;
    ctx->state = NGX_HTTP_TOLL_STATE_RESUMED;
    lctx->buyer_done = 1;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        if (ngx_http_toll_redis_refusal(NGX_HTTP_TOLL_REDIS_LOOKUP, reply)) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "toll: buyer \"%V\": redis did not answer for "
                          "its plan, the default plan applies",
                          &ctx->key.owner);
        }

    } else {
        ngx_str_null(&plan);

        if (reply->type == REDIS_REPLY_STRING) {
            plan.data = (u_char *) reply->str;
            plan.len = reply->len;

            if (plan.len == 0
                || !toll_plan_valid(plan.data, plan.len))
            {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "toll: buyer \"%V\" has an invalid plan, "
                              "ignored", &ctx->key.owner);
                ngx_str_null(&plan);
            }
        }

        /* found or not, for as long as a key record would be */
        ngx_http_toll_buyer_cache_put(mcf->shm_zone, &ctx->key.owner, &plan,
                                      plan.len ? mcf->cache_ttl
                                               : mcf->cache_negative_ttl,
                                      r->connection->log);

        if (ngx_http_toll_buyer_copy(r, lctx, plan.data, plan.len)
            != NGX_OK)
        {
            /* the access phase runs again and finds no plan: default */
            lctx->buyer_plan.len = 0;
        }
    }

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;
    ngx_post_event(r->connection->write, &ngx_posted_events);
}


static ngx_int_t
ngx_http_toll_buyer_copy(ngx_http_request_t *r,
    ngx_http_toll_limit_ctx_t *lctx, u_char *plan, size_t len)
{
    if (len == 0) {
        ngx_str_null(&lctx->buyer_plan);
        return NGX_OK;
    }

    lctx->buyer_plan.data = ngx_pnalloc(r->pool, len);
    if (lctx->buyer_plan.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(lctx->buyer_plan.data, plan, len);
    lctx->buyer_plan.len = len;

    return NGX_OK;
}
