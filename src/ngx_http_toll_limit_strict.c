/*
 * toll: a strict plan, whose every request Redis decides.
 *
 * The request waits for one call of the limit script ("a" mode), which
 * decides it with what every node admitted; the reply is merged into the
 * zone as a round's is.  Redis away or failing, the node decides alone.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_limit.h"
#include "ngx_http_toll_limit_int.h"
#include "ngx_http_toll_redis.h"
#include "ngx_http_toll_shm.h"


static ngx_int_t ngx_http_toll_limit_strict_send(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_limit_ctx_t *lctx);
static void ngx_http_toll_limit_strict_reply(void *data, redisReply *reply);
static void ngx_http_toll_limit_strict_counts(ngx_http_request_t *r,
    ngx_http_toll_limit_ctx_t *lctx, int64_t bad);


/*
 * A strict plan: Redis decides this request with everything every node
 * admitted.  The concurrency cap stays with this node, counted first.
 * NGX_DECLINED: Redis cannot be reached now.
 */

ngx_int_t
ngx_http_toll_limit_strict(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_limit_ctx_t *lctx)
{
    ngx_int_t   rc;
    ngx_uint_t  from;

    from = lctx->key_first;

    if (!lctx->key_held
        && (ngx_http_toll_limit_mask(lctx, from, lctx->nlimits)
            & NGX_HTTP_TOLL_MASK_CONCURRENCY))
    {
        /* a dry check of the rates and a count of the cap */

        rc = ngx_http_toll_limit_decide(r, lctx, lctx->key_subject,
                                        lctx->key_subject_len, from,
                                        lctx->nlimits, 0, 0);
        if (rc != NGX_OK) {
            return rc;
        }

        if (lctx->violated >= (ngx_int_t) from
            && lctx->limits[lctx->violated].rate->kind
               == NGX_HTTP_TOLL_RATE_CONCURRENCY)
        {
            lctx->key_done = 1;
            return ngx_http_toll_limit_verdict(r, lctx, from, lctx->nlimits,
                                               0);
        }

        lctx->violated = -1;

        if (ngx_http_toll_limit_proc >= 0) {
            ngx_http_toll_limit_hold(lctx->shm_zone, lctx->key_subject,
                                     lctx->key_subject_len, 1);
            lctx->key_held = 1;
        }
    }

    return ngx_http_toll_limit_strict_send(r, ctx, lctx);
}


/*
 * The request's call of the script, and its wait for the reply.
 * NGX_AGAIN: sent; NGX_DECLINED: Redis cannot be reached now.
 */

static ngx_int_t
ngx_http_toll_limit_strict_send(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_limit_ctx_t *lctx)
{
    int64_t                          now;
    ngx_int_t                        rc;
    ngx_uint_t                       from;
    ngx_http_toll_limit_call_t      *call;
    ngx_http_toll_limit_state_t     *st;
    ngx_http_toll_shm_limit_node_t  *ln;

    from = lctx->key_first;

    call = ngx_pcalloc(r->pool, sizeof(ngx_http_toll_limit_call_t));
    if (call == NULL) {
        return NGX_ERROR;
    }

    /* the request's pool: a request that leaves cancels the call */
    call->sync = ngx_palloc(r->pool, sizeof(ngx_http_toll_limit_sync_t));
    if (call->sync == NULL) {
        return NGX_ERROR;
    }

    now = ngx_http_toll_limit_now();

    ngx_http_toll_shm_lock(lctx->shm_zone);

    st = ngx_http_toll_limit_node(lctx->shm_zone, lctx->key_subject,
                                  lctx->key_subject_len,
                                  ngx_http_toll_limit_mask(lctx, from,
                                                           lctx->nlimits),
                                  &ln);
    if (st == NULL) {
        ngx_http_toll_shm_unlock(lctx->shm_zone);
        return NGX_DECLINED;
    }

    rc = ngx_http_toll_limit_call(call, r->pool, ln, lctx, from,
                                  lctx->nlimits, now);

    ngx_http_toll_shm_unlock(lctx->shm_zone);

    if (rc != NGX_OK) {
        return rc;
    }

    call->sync->shm_zone = lctx->shm_zone;
    call->sync->ctx = ctx;

    ctx->cmd = ngx_http_toll_redis_eval(TOLL_SCRIPT_LIMIT,
                                        ngx_http_toll_limit_strict_reply,
                                        call->sync, (int) call->argc,
                                        call->argv, call->argvlen);

    if (ctx->cmd == NULL) {
        ngx_http_toll_shm_lock(lctx->shm_zone);

        ln = ngx_http_toll_shm_limit_find(lctx->shm_zone, lctx->key_subject,
                                          lctx->key_subject_len);
        if (ln && ln->uid == call->sync->uid) {
            ngx_http_toll_limit_unsend((ngx_http_toll_limit_state_t *)
                                       ln->state);
        }

        ngx_http_toll_shm_unlock(lctx->shm_zone);

        return NGX_DECLINED;
    }

    lctx->strict_waiting = 1;
    lctx->strict_uid = call->sync->uid;

    /* as for a key lookup: a client that leaves ends the wait */
    r->read_event_handler = ngx_http_test_reading;

    return NGX_AGAIN;
}


static void
ngx_http_toll_limit_strict_reply(void *data, redisReply *reply)
{
    ngx_http_toll_limit_sync_t *sync = data;

    int64_t                      now, bad;
    ngx_int_t                    rc;
    ngx_http_request_t          *r;
    ngx_http_toll_ctx_t         *ctx;
    ngx_http_toll_limit_ctx_t   *lctx;

    ctx = sync->ctx;
    r = ctx->request;
    lctx = ctx->limit;

    ctx->cmd = NULL;
    ctx->state = NGX_HTTP_TOLL_STATE_RESUMED;
    lctx->strict_waiting = 0;

    now = ngx_http_toll_limit_now();

    rc = ngx_http_toll_limit_apply(sync->shm_zone, sync, reply, now, &bad);

    if (rc == NGX_OK && bad < 0) {
        rc = NGX_DECLINED;
    }

    if (rc == NGX_OK) {
        ngx_http_toll_limit_strict_counts(r, lctx, bad);
        lctx->key_done = 1;

    } else {
        /* Redis failed this one: this node decides alone */

        if (ngx_http_toll_redis_refusal(NGX_HTTP_TOLL_REDIS_LIMIT, reply)) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "toll: redis did not decide a strict limit, "
                          "deciding locally");
        }

        lctx->violated = -1;

        if (ngx_http_toll_limit_decide(r, lctx, lctx->key_subject,
                                       lctx->key_subject_len,
                                       lctx->key_first, lctx->nlimits, 1, 1)
            == NGX_OK)
        {
            lctx->key_done = 1;
        }
    }

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;
    ngx_post_event(r->connection->write, &ngx_posted_events);
}


/*
 * Redis decided: bad is the violated limit, 1-based, or 0.  Redis counted
 * the request when it admitted it; the remaining counts for the headers
 * come from the state it sent back.
 */

static void
ngx_http_toll_limit_strict_counts(ngx_http_request_t *r,
    ngx_http_toll_limit_ctx_t *lctx, int64_t bad)
{
    ngx_int_t               violated;
    ngx_uint_t              i, dry_ok;
    ngx_http_toll_limit_t  *l;

    violated = (ngx_int_t) bad - 1;

    if (violated >= 0) {
        violated += lctx->key_first;

        if (violated >= (ngx_int_t) lctx->nlimits) {
            violated = -1;
        }
    }

    /*
     * A dry look at the state Redis sent back gives the counts for
     * the headers: it asks about one more request, so where it
     * admits, one more is left than it says (a refusal of the dry
     * look has added that one already).
     */

    lctx->violated = -1;

    (void) ngx_http_toll_limit_decide(r, lctx, lctx->key_subject,
                                      lctx->key_subject_len,
                                      lctx->key_first, lctx->nlimits,
                                      0, 1);

    dry_ok = (lctx->violated == -1);
    lctx->violated = violated;

    for (i = lctx->key_first; i < lctx->nlimits; i++) {
        l = &lctx->limits[i];

        if (l->rate->kind == NGX_HTTP_TOLL_RATE_CONCURRENCY) {
            continue;
        }

        if (dry_ok && l->res.admitted) {
            l->res.remaining++;
        }

        if (violated == -1) {
            l->res.admitted = 1;

        } else if ((ngx_int_t) i == violated) {
            l->res.admitted = 0;
            l->res.remaining = 0;
        }
    }
}
