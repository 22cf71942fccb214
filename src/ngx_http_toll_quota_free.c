/*
 * toll: the free tier.
 *
 * A buyer's free calls of a service are leased from Redis (lua/free.lua)
 * a few at a time into the shared zone, so that most free calls are
 * decided without asking anyone; a lease granted while its caller left
 * still lands in the zone, and a free call not charged after all goes
 * back to it.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_quota.h"
#include "ngx_http_toll_quota_int.h"
#include "ngx_http_toll_redis.h"
#include "ngx_http_toll_shm.h"
#include "toll_key.h"
#include "toll_reply.h"


/*
 * A buyer's free calls of one service, as this node knows them: those it
 * leased from Redis and did not use yet, and those no node had leased
 * when Redis last answered (-1: not asked yet).
 */
typedef struct {
    int64_t                    lease_left;
    int64_t                    unclaimed;
    int64_t                    free_calls;    /* the service's, then */
} ngx_http_toll_quota_state_t;


/* a lease asked of Redis; it lands in the zone even if the caller left */
struct ngx_http_toll_quota_claim_s {
    ngx_http_toll_ctx_t       *ctx;           /* NULL: the caller left */
    ngx_shm_zone_t            *shm_zone;
    int64_t                    free_calls;
    size_t                     subject_len;
    u_char                     subject[NGX_HTTP_TOLL_NODE_SUBJECT_MAX];
};


static ngx_int_t ngx_http_toll_quota_lease(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_service_t *svc, u_char *subject,
    size_t len, int64_t *known);
static ngx_int_t ngx_http_toll_quota_claim(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_service_t *svc, u_char *subject,
    size_t len, int64_t known);
static size_t ngx_http_toll_quota_subject(ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_service_t *svc, u_char *subject);
static ngx_int_t ngx_http_toll_quota_take(ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_quota_state_t *st);
static void ngx_http_toll_quota_claim_reply(void *data, redisReply *reply);


/*
 * The free tier: a call is free while this node holds a lease of the
 * buyer's free calls; without one it asks Redis for the next lease, the
 * request parked meanwhile.  NGX_OK (ctx says free or paid), NGX_AGAIN,
 * NGX_HTTP_SERVICE_UNAVAILABLE (Redis away, nothing to decide from, and
 * toll_free_tier_fallback closed), or NGX_ERROR.
 */

ngx_int_t
ngx_http_toll_quota_free(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_service_t *svc)
{
    u_char                      subject[NGX_HTTP_TOLL_NODE_SUBJECT_MAX];
    size_t                      len;
    int64_t                     known;
    ngx_int_t                   rc;
    ngx_http_toll_loc_conf_t   *lcf;

    len = ngx_http_toll_quota_subject(ctx, svc, subject);

    rc = ngx_http_toll_quota_lease(r, ctx, svc, subject, len, &known);

    if (rc == NGX_OK) {
        return NGX_OK;
    }

    rc = ngx_http_toll_quota_claim(r, ctx, svc, subject, len, known);

    if (rc != NGX_DECLINED) {
        return rc;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);

    if (lcf->free_tier_fallback) {
        /* "paid": the call costs its price, never more free calls */
        ctx->free_call = 0;
        ctx->amount_micros = ctx->price_micros;
        return NGX_OK;
    }

    return NGX_HTTP_SERVICE_UNAVAILABLE;
}


/*
 * The free call from the node's lease, the zone locked: NGX_OK when the
 * node can decide, NGX_DECLINED when Redis must be asked, with the free
 * calls the node knows to be taken already.
 */

static ngx_int_t
ngx_http_toll_quota_lease(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_service_t *svc, u_char *subject, size_t len,
    int64_t *known)
{
    ngx_int_t                        rc;
    ngx_http_toll_main_conf_t       *mcf;
    ngx_http_toll_quota_state_t     *st;
    ngx_http_toll_shm_limit_node_t  *ln;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    ngx_http_toll_shm_lock(mcf->shm_zone);

    ln = ngx_http_toll_shm_limit_find(mcf->shm_zone, subject, len);
    *known = 0;

    if (ln == NULL) {
        ln = ngx_http_toll_shm_limit_create(mcf->shm_zone, subject, len,
                 sizeof(ngx_http_toll_quota_state_t));

        if (ln) {
            st = (ngx_http_toll_quota_state_t *) ln->state;
            st->unclaimed = -1;
            st->free_calls = svc->free_calls;
        }
    }

    if (ln == NULL) {
        /* no room to remember a lease: ask Redis for this call alone */
        ngx_http_toll_shm_unlock(mcf->shm_zone);
        return NGX_DECLINED;
    }

    st = (ngx_http_toll_quota_state_t *) ln->state;

    if (st->free_calls != svc->free_calls) {
        /* the operator changed free_calls: ask Redis again */
        st->free_calls = svc->free_calls;
        st->unclaimed = -1;
    }

    rc = ngx_http_toll_quota_take(ctx, st);
    ln->pins = (st->lease_left > 0);
    *known = (st->unclaimed >= 0) ? st->free_calls - st->unclaimed : 0;

    ngx_http_toll_shm_unlock(mcf->shm_zone);

    return rc;
}


/*
 * Asks Redis for the next lease (lua/free.lua), the request parked until
 * it answers: NGX_AGAIN, NGX_DECLINED (Redis away) or NGX_ERROR.
 */

static ngx_int_t
ngx_http_toll_quota_claim(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_service_t *svc, u_char *subject, size_t len,
    int64_t known)
{
    u_char                       *p;
    u_char                        name[TOLL_OWNER_LEN_MAX + 16];
    u_char                        nums[3 * NGX_INT64_LEN];
    size_t                        argvlen[8];
    const char                   *argv[8];
    ngx_http_toll_main_conf_t    *mcf;
    ngx_http_toll_quota_claim_t  *claim;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    claim = ngx_alloc(sizeof(ngx_http_toll_quota_claim_t),
                      r->connection->log);
    if (claim == NULL) {
        return NGX_ERROR;
    }

    claim->ctx = ctx;
    claim->shm_zone = mcf->shm_zone;
    claim->free_calls = svc->free_calls;
    claim->subject_len = len;
    ngx_memcpy(claim->subject, subject, len);

    /* lua/free.lua */

    argv[2] = "1";
    argvlen[2] = 1;

    argv[3] = (const char *) name;
    argvlen[3] = (u_char *) toll_name_tagged((char *) name,
                                             TOLL_NAME_FREE_PREFIX,
                                             (char *) ctx->key.owner.data,
                                             ctx->key.owner.len)
                 - name;

    argv[4] = (const char *) svc->name.data;
    argvlen[4] = svc->name.len;

    p = nums;
    argv[5] = (const char *) p;
    p = ngx_sprintf(p, "%L", svc->free_calls);
    argvlen[5] = p - (u_char *) argv[5];

    argv[6] = (const char *) p;
    p = ngx_sprintf(p, "%ui", mcf->free_lease);
    argvlen[6] = p - (u_char *) argv[6];

    argv[7] = (const char *) p;
    p = ngx_sprintf(p, "%L", known);
    argvlen[7] = p - (u_char *) argv[7];

    if (ngx_http_toll_redis_eval_durable(TOLL_SCRIPT_FREE,
            ngx_http_toll_quota_claim_reply, claim, 8, argv, argvlen)
        == NULL)
    {
        ngx_free(claim);
        return NGX_DECLINED;
    }

    ctx->claim = claim;
    r->read_event_handler = ngx_http_test_reading;

    return NGX_AGAIN;
}


/* "q:buyer\nservice" */

static size_t
ngx_http_toll_quota_subject(ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_service_t *svc, u_char *subject)
{
    return ngx_sprintf(subject, "q:%V\n%V", &ctx->key.owner, &svc->name)
           - subject;
}


/*
 * Decides from what the node knows, the zone locked: NGX_OK when it can
 * (a free call from the lease, or a paid one when no free call is left
 * anywhere), NGX_DECLINED when only Redis can say.
 */

static ngx_int_t
ngx_http_toll_quota_take(ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_quota_state_t *st)
{
    if (st->lease_left > 0) {
        st->lease_left--;
        ctx->free_call = 1;
        ctx->amount_micros = 0;
        ctx->free_remaining = st->lease_left + ngx_max(st->unclaimed, 0);
        return NGX_OK;
    }

    if (st->unclaimed == 0) {
        ctx->free_call = 0;
        ctx->amount_micros = ctx->price_micros;
        ctx->free_remaining = 0;
        return NGX_OK;
    }

    return NGX_DECLINED;
}


static void
ngx_http_toll_quota_claim_reply(void *data, redisReply *reply)
{
    ngx_http_toll_quota_claim_t *claim = data;

    ngx_int_t                         rc;
    toll_reply_lease_t                lease;
    ngx_http_request_t               *r;
    ngx_http_toll_ctx_t              *ctx;
    ngx_http_toll_loc_conf_t         *lcf;
    ngx_http_toll_quota_state_t      *st, one;
    ngx_http_toll_shm_limit_node_t   *ln;

    ctx = claim->ctx;
    rc = NGX_ERROR;

    toll_reply_lease(reply, claim->free_calls, &lease);

    if (lease.rc == TOLL_REPLY_LEASE_GRANTED) {

        /*
         * What Redis granted is this node's now, whether or not the
         * caller is still there: a lease lost here would be free calls
         * the buyer never gets.
         */

        ngx_http_toll_shm_lock(claim->shm_zone);

        ln = ngx_http_toll_shm_limit_find(claim->shm_zone, claim->subject,
                                          claim->subject_len);

        if (ln) {
            st = (ngx_http_toll_quota_state_t *) ln->state;

        } else {
            /* no node (a full zone): the lease serves this call only */
            ngx_memzero(&one, sizeof(ngx_http_toll_quota_state_t));
            st = &one;
        }

        st->lease_left += lease.grant;
        st->unclaimed = lease.rest;
        st->free_calls = claim->free_calls;

        rc = ctx ? ngx_http_toll_quota_take(ctx, st) : NGX_OK;

        if (ln) {
            ln->pins = (st->lease_left > 0);
        }

        ngx_http_toll_shm_unlock(claim->shm_zone);

        if (ln == NULL && st->lease_left > 0) {
            ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                          "toll: zone full, %L leased free calls of "
                          "\"%*s\" dropped; increase \"toll_zone\"",
                          st->lease_left, claim->subject_len,
                          claim->subject);
        }

    } else if (lease.rc == TOLL_REPLY_LEASE_ERROR
               && ngx_http_toll_redis_refusal(NGX_HTTP_TOLL_REDIS_FREE, reply))
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "toll: redis refused a free-tier lease: %*s",
                      (size_t) reply->len, reply->str);
    }

    ngx_free(claim);

    if (ctx == NULL) {
        return;
    }

    ctx->claim = NULL;
    r = ctx->request;

    if (rc != NGX_OK) {
        lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);

        if (lcf->free_tier_fallback) {
            ctx->free_call = 0;
            ctx->amount_micros = ctx->price_micros;

        } else {
            ctx->free_tier_failed = 1;
        }
    }

    ctx->state = NGX_HTTP_TOLL_STATE_RESUMED;

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;
    ngx_post_event(r->connection->write, &ngx_posted_events);
}


/* a free call that was not charged after all goes back to the lease */

void
ngx_http_toll_quota_give_back(ngx_http_toll_ctx_t *ctx)
{
    u_char                           subject[NGX_HTTP_TOLL_NODE_SUBJECT_MAX];
    size_t                           len;
    ngx_http_toll_quota_state_t     *st;
    ngx_http_toll_shm_limit_node_t  *ln;
    ngx_http_toll_main_conf_t       *mcf;

    if (!ctx->free_call) {
        return;
    }

    ctx->free_call = 0;

    mcf = ngx_http_get_module_main_conf(ctx->request, ngx_http_toll_module);
    len = ngx_http_toll_quota_subject(ctx, ctx->service, subject);

    ngx_http_toll_shm_lock(mcf->shm_zone);

    ln = ngx_http_toll_shm_limit_find(mcf->shm_zone, subject, len);

    if (ln) {
        st = (ngx_http_toll_quota_state_t *) ln->state;
        st->lease_left++;
        ln->pins = 1;
    }

    ngx_http_toll_shm_unlock(mcf->shm_zone);
}


void
ngx_http_toll_quota_cleanup(ngx_http_toll_ctx_t *ctx)
{
    if (ctx->claim) {
        /* the lease still lands in the zone; only the caller is gone */
        ctx->claim->ctx = NULL;
        ctx->claim = NULL;
    }
}
