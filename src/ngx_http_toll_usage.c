/*
 * toll: a buyer's usage, answered to the buyer.
 *
 * A location with "toll_usage" (and "toll on") answers the authenticated
 * buyer with its metered usage, totals and per service, from the usage
 * hashes in Redis and the mirrors of what toll-settle drained from them
 * (the last 35 days), with the counts this nginx has not flushed yet
 * (a buyer reads its own calls at once: each counted once, in Redis or
 * in the zone, told apart by the flush ids Redis has applied), and the
 * buyer's prepaid balances, less what this nginx charged them and has
 * not flushed yet, and the spend caps that apply to the buyer and the
 * asking key with what their periods count as used, less what this
 * nginx leased of them and has not spent.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_cap.h"
#include "ngx_http_toll_handler.h"
#include "ngx_http_toll_meter.h"
#include "ngx_http_toll_problem.h"
#include "ngx_http_toll_quota.h"
#include "ngx_http_toll_redis.h"
#include "ngx_http_toll_usage.h"
#include "ngx_http_toll_usage_int.h"
#include "toll_money.h"
#include "toll_names.h"
#include "toll_usage.h"




static ngx_int_t ngx_http_toll_usage_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_toll_usage_ask(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_usage_ctx_t *uctx);
static void ngx_http_toll_usage_reply(void *data, redisReply *reply);
static void ngx_http_toll_usage_cleanup(void *data);
static ngx_http_toll_usage_row_t *ngx_http_toll_usage_row(
    ngx_http_toll_usage_ctx_t *uctx, u_char *name, size_t len);
static ngx_int_t ngx_http_toll_usage_add(ngx_http_toll_usage_ctx_t *uctx,
    redisReply *field, redisReply *value);
static ngx_int_t ngx_http_toll_usage_send(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_usage_ctx_t *uctx);
static ngx_int_t ngx_http_toll_usage_unsent(ngx_http_toll_usage_ctx_t *uctx,
    redisReply *applied);
static ngx_int_t ngx_http_toll_usage_balances(
    ngx_http_toll_usage_ctx_t *uctx, redisReply *hash);
static toll_usage_balance_t *ngx_http_toll_usage_balance(
    ngx_http_toll_usage_ctx_t *uctx, u_char *cur, size_t len);


/* toll_usage; */

char *
ngx_http_toll_usage_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_toll_loc_conf_t *lcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    lcf->usage = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "is duplicate, or the location has another handler";
    }

    clcf->handler = ngx_http_toll_usage_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_toll_usage_handler(ngx_http_request_t *r)
{
    ngx_int_t                   rc;
    ngx_pool_cleanup_t         *cln;
    ngx_http_toll_ctx_t        *ctx;
    ngx_http_toll_usage_ctx_t  *uctx;
    ngx_http_toll_main_conf_t  *mcf;

    if (!(r->method & (NGX_HTTP_GET | NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    /* the gate ran in the access phase: only a buyer it passed is here */

    ctx = ngx_http_toll_get_ctx(r);

    if (ctx == NULL || !ctx->authenticated) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "toll: \"toll_usage\" needs \"toll on\" in its "
                      "location");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_toll_usage_ctx_t));
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    uctx = cln->data;
    ngx_memzero(uctx, sizeof(ngx_http_toll_usage_ctx_t));
    uctx->request = r;

    if (ngx_array_init(&uctx->rows, r->pool, 4,
                       sizeof(ngx_http_toll_usage_row_t))
        != NGX_OK
        || ngx_array_init(&uctx->unsent, r->pool, 4,
                          sizeof(ngx_http_toll_meter_unsent_t))
           != NGX_OK
        || ngx_array_init(&uctx->balances, r->pool, 1,
                          sizeof(toll_usage_balance_t))
           != NGX_OK
        || ngx_array_init(&uctx->caps, r->pool, 4,
                          sizeof(ngx_http_toll_usage_cap_t))
           != NGX_OK
        || ngx_array_init(&uctx->leases, r->pool, 4,
                          sizeof(ngx_http_toll_cap_lease_t))
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* what this nginx counted of the buyer that Redis may not have */

    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    ngx_http_toll_usage_days(uctx);

    if (ngx_http_toll_meter_unsent(mcf->shm_zone, &ctx->key.owner,
                                   &uctx->unsent)
        != NGX_OK
        || ngx_http_toll_cap_leases(mcf->shm_zone, &ctx->key.owner,
                                    &ctx->key.key_id, &uctx->leases)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_toll_usage_cleanup;

    rc = ngx_http_toll_usage_ask(r, ctx, uctx);

    if (rc != NGX_OK) {
        return rc;
    }

    if (uctx->cmd == NULL) {
        return ngx_http_toll_problem_send(r,
                   NGX_HTTP_TOLL_PROBLEM_STORE_UNAVAILABLE);
    }

    r->main->count++;
    r->read_event_handler = ngx_http_test_reading;

    return NGX_DONE;
}


/*
 * lua/usage.lua: the buyer's days, flush ids, balances and caps, its
 * usage hashes' names, the asking key and today, and the flush ids this
 * nginx waits for.  NGX_OK (asked, or uctx->cmd NULL: Redis away), or an
 * HTTP status.
 */

static ngx_int_t
ngx_http_toll_usage_ask(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_usage_ctx_t *uctx)
{
    u_char                        *p;
    u_char                         month[TOLL_NAME_DAY_LEN];
    size_t                        *argvlen;
    ngx_uint_t                     i, n;
    const char                   **argv;
    ngx_http_toll_meter_unsent_t  *u;

    u = uctx->unsent.elts;

    for (n = 0, i = 0; i < uctx->unsent.nelts; i++) {
        n += u[i].in_flight;
    }

    argv = ngx_palloc(r->pool, (20 + n) * sizeof(char *));
    argvlen = ngx_palloc(r->pool, (20 + n) * sizeof(size_t));
    p = ngx_pnalloc(r->pool, 4 * TOLL_NAME_USAGE_LEN(ctx->key.owner.len)
                             + toll_name_len(TOLL_NAME_CAP_PREFIX)
                             + ctx->key.owner.len
                             + toll_name_len(TOLL_NAME_TAG_END)
                             + 2 * TOLL_NAME_CAP_LEN(ctx->key.owner.len));

    if (argv == NULL || argvlen == NULL || p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[2] = "6";
    argvlen[2] = 1;

    argv[3] = (const char *) p;
    p = (u_char *) toll_name_buyer((char *) p, (char *) ctx->key.owner.data,
                                   ctx->key.owner.len, TOLL_NAME_USAGE_DAYS);
    argvlen[3] = p - (u_char *) argv[3];

    argv[4] = (const char *) p;
    p = (u_char *) toll_name_buyer((char *) p, (char *) ctx->key.owner.data,
                                   ctx->key.owner.len,
                                   TOLL_NAME_USAGE_FLUSHES);
    argvlen[4] = p - (u_char *) argv[4];

    argv[5] = (const char *) p;
    p = (u_char *) toll_name_balance((char *) p, (char *) ctx->key.owner.data,
                                     ctx->key.owner.len, "");
    argvlen[5] = p - (u_char *) argv[5];

    /* the caps' hash, in the buyer's slot as lua/cap.lua names it */

    argv[6] = (const char *) p;
    p = ngx_cpymem(p, TOLL_NAME_CAP_PREFIX,
                   toll_name_len(TOLL_NAME_CAP_PREFIX));
    p = ngx_cpymem(p, ctx->key.owner.data, ctx->key.owner.len);
    p = ngx_cpymem(p, TOLL_NAME_TAG_END, toll_name_len(TOLL_NAME_TAG_END));
    argvlen[6] = p - (u_char *) argv[6];

    /*
     * today's caps hash, and the month's when it starts on the 1st (the
     * anchor's default): declared, as lua/usage.lua reads them; a month
     * that starts on another day is named by the script, in the same
     * hash tag (docs/redis.md "Slots")
     */

    argv[7] = (const char *) p;
    p = (u_char *) toll_name_cap_period((char *) p,
                                        (char *) ctx->key.owner.data,
                                        ctx->key.owner.len, 0,
                                        (char *) uctx->today);
    argvlen[7] = p - (u_char *) argv[7];

    ngx_memcpy(month, uctx->today, 6);
    month[6] = '0';
    month[7] = '1';

    argv[8] = (const char *) p;
    p = (u_char *) toll_name_cap_period((char *) p,
                                        (char *) ctx->key.owner.data,
                                        ctx->key.owner.len, 1,
                                        (char *) month);
    argvlen[8] = p - (u_char *) argv[8];

    argv[9] = (const char *) p;
    p = (u_char *) toll_name_buyer((char *) p, (char *) ctx->key.owner.data,
                                   ctx->key.owner.len, ":");
    argvlen[9] = p - (u_char *) argv[9];

#define ngx_http_toll_usage_arg(k, s, n)                                      \
    argv[k] = (const char *) (s);                                             \
    argvlen[k] = (n)

    ngx_http_toll_usage_arg(10, TOLL_NAME_USAGE_MIRROR,
                            toll_name_len(TOLL_NAME_USAGE_MIRROR));
    ngx_http_toll_usage_arg(11, ctx->key.key_id.data, ctx->key.key_id.len);
    ngx_http_toll_usage_arg(12, uctx->today, NGX_HTTP_TOLL_USAGE_DAY_LEN);
    ngx_http_toll_usage_arg(13, TOLL_CAP_USED, toll_name_len(TOLL_CAP_USED));
    ngx_http_toll_usage_arg(14, TOLL_CAP_DAILY,
                            toll_name_len(TOLL_CAP_DAILY));
    ngx_http_toll_usage_arg(15, TOLL_CAP_MONTHLY,
                            toll_name_len(TOLL_CAP_MONTHLY));
    ngx_http_toll_usage_arg(16, TOLL_CAP_ANCHOR,
                            toll_name_len(TOLL_CAP_ANCHOR));
    ngx_http_toll_usage_arg(17, TOLL_CAP_KEY, toll_name_len(TOLL_CAP_KEY));
    ngx_http_toll_usage_arg(18, TOLL_NAME_CAP_DAY,
                            toll_name_len(TOLL_NAME_CAP_DAY));
    ngx_http_toll_usage_arg(19, TOLL_NAME_CAP_MONTH,
                            toll_name_len(TOLL_NAME_CAP_MONTH));

#undef ngx_http_toll_usage_arg

    for (n = 20, i = 0; i < uctx->unsent.nelts; i++) {
        if (u[i].in_flight) {
            argv[n] = (const char *) u[i].flush_id;
            argvlen[n++] = TOLL_NAME_BATCH_LEN;
        }
    }

    uctx->cmd = ngx_http_toll_redis_eval(TOLL_SCRIPT_USAGE,
                                         ngx_http_toll_usage_reply, uctx, n,
                                         argv, argvlen);

    return NGX_OK;
}


static void
ngx_http_toll_usage_cleanup(void *data)
{
    ngx_http_toll_usage_ctx_t  *uctx = data;

    if (uctx->cmd) {
        ngx_http_toll_redis_cancel(uctx->cmd);
        uctx->cmd = NULL;
    }
}


static void
ngx_http_toll_usage_reply(void *data, redisReply *reply)
{
    ngx_http_toll_usage_ctx_t *uctx = data;

    ngx_int_t             rc;
    ngx_uint_t            i;
    redisReply           *usage;
    ngx_connection_t     *c;
    ngx_http_request_t   *r;
    ngx_http_toll_ctx_t  *ctx;

    r = uctx->request;
    c = r->connection;
    uctx->cmd = NULL;

    ctx = ngx_http_toll_get_ctx(r);

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 4
        || reply->element[0]->type != REDIS_REPLY_ARRAY
        || reply->element[0]->elements % 2
        || reply->element[1]->type != REDIS_REPLY_ARRAY
        || reply->element[2]->type != REDIS_REPLY_ARRAY
        || reply->element[2]->elements % 2
        || reply->element[3]->type != REDIS_REPLY_ARRAY)
    {
        if (reply && reply->type == REDIS_REPLY_ERROR) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "toll: redis refused a usage read: %*s",
                          (size_t) reply->len, reply->str);
        }

        rc = ngx_http_toll_problem_send(r,
                 NGX_HTTP_TOLL_PROBLEM_STORE_UNAVAILABLE);
        goto done;
    }

    usage = reply->element[0];

    for (i = 0; i < usage->elements; i += 2) {
        if (ngx_http_toll_usage_add(uctx, usage->element[i],
                                    usage->element[i + 1])
            != NGX_OK)
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "toll: a usage counter of \"%V\" does not read "
                          "as one", &ctx->key.owner);
            rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
            goto done;
        }
    }

    if (ngx_http_toll_usage_unsent(uctx, reply->element[1]) != NGX_OK
        || ngx_http_toll_usage_balances(uctx, reply->element[2]) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "toll: the usage or balance of \"%V\" does not sum "
                      "in 64 bits", &ctx->key.owner);
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }

    if (ngx_http_toll_usage_caps(uctx, ctx, reply->element[3]) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "toll: a spend cap of \"%V\" does not read as one",
                      &ctx->key.owner);
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }

    rc = ngx_http_toll_usage_send(r, ctx, uctx);

done:

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


/* "service:field" and its count from a usage hash (lib/toll_names.h) */

static ngx_int_t
ngx_http_toll_usage_add(ngx_http_toll_usage_ctx_t *uctx, redisReply *field,
    redisReply *value)
{
    int                         f;
    size_t                      len;
    int64_t                     n;
    ngx_http_toll_usage_row_t  *row;

    if (field->type != REDIS_REPLY_STRING
        || value->type != REDIS_REPLY_STRING)
    {
        return NGX_ERROR;
    }

    f = toll_usage_field_parse(field->str, field->len, &len);

    if (f < 0) {
        /* a field of a later version: not for buyers */
        return NGX_OK;
    }

    row = ngx_http_toll_usage_row(uctx, (u_char *) field->str, len);
    if (row == NULL) {
        return NGX_ERROR;
    }

    if (f == TOLL_USAGE_PROVIDER) {
        row->provider.data = (u_char *) value->str;
        row->provider.len = value->len;

        /* the reply lives until the answer is written: a copy */
        row->provider.data = ngx_pstrdup(uctx->request->pool,
                                         &row->provider);
        return row->provider.data ? NGX_OK : NGX_ERROR;
    }

    if (f == TOLL_USAGE_LATENCY || f == TOLL_USAGE_CURRENCY) {
        /* not for buyers; the currency is the service's */
        return NGX_OK;
    }

    /* negative after a correction that came in after a drain */

    if (toll_usage_count_parse(value->str, value->len, &n) != 0
        || toll_money_add(row->counts[f], n, &row->counts[f]) != 0)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * The zone's counts of the buyer: waiting ones, and those of a flush
 * Redis has not applied (those it has are in what it answered).
 */

static ngx_int_t
ngx_http_toll_usage_unsent(ngx_http_toll_usage_ctx_t *uctx,
    redisReply *applied)
{
    ngx_uint_t                     i, j, k, sent;
    ngx_http_toll_usage_row_t     *row;
    ngx_http_toll_meter_unsent_t  *u;

    u = uctx->unsent.elts;

    for (i = 0; i < uctx->unsent.nelts; i++) {

        sent = !u[i].in_flight;

        for (j = 0; !sent && j < applied->elements; j++) {
            sent = (applied->element[j]->type == REDIS_REPLY_STRING
                    && applied->element[j]->len == TOLL_NAME_BATCH_LEN
                    && ngx_strncmp(applied->element[j]->str, u[i].flush_id,
                                   TOLL_NAME_BATCH_LEN) == 0);
        }

        if (sent) {
            /* in what Redis answered, or nothing in flight */
            ngx_memzero(u[i].flight, sizeof(u[i].flight));
        }

        row = ngx_http_toll_usage_row(uctx, u[i].service.data,
                                      u[i].service.len);
        if (row == NULL) {
            return NGX_ERROR;
        }

        for (k = 0; k < TOLL_USAGE_COUNTS; k++) {
            if (toll_money_add(row->counts[k], u[i].pending[k],
                               &row->counts[k]) != 0
                || toll_money_add(row->counts[k], u[i].flight[k],
                                  &row->counts[k]) != 0)
            {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


/*
 * The buyer's balance per currency: what is neither spent nor debited as
 * Redis counts it (available + held), less what this nginx charged to it
 * and Redis has not counted yet.  Other nginx's charges show within
 * their flush.
 */

static ngx_int_t
ngx_http_toll_usage_balances(ngx_http_toll_usage_ctx_t *uctx,
    redisReply *hash)
{
    int64_t                        v, *sum;
    size_t                         len;
    ngx_str_t                      field;
    ngx_uint_t                     i, j;
    redisReply                    *f, *val;
    toll_usage_balance_t          *b;
    ngx_http_toll_meter_unsent_t  *u;

    for (i = 0; i + 1 < hash->elements; i += 2) {
        f = hash->element[i];
        val = hash->element[i + 1];

        if (f->type != REDIS_REPLY_STRING || val->type != REDIS_REPLY_STRING)
        {
            return NGX_ERROR;
        }

        field.data = (u_char *) ngx_strlchr((u_char *) f->str,
                                            (u_char *) f->str + f->len, ':');
        if (field.data == NULL) {
            continue;
        }

        len = field.data - (u_char *) f->str;
        field.data++;
        field.len = (u_char *) f->str + f->len - field.data;

        if (field.len == sizeof(TOLL_BALANCE_AVAILABLE) - 1
            && ngx_strncmp(field.data, TOLL_BALANCE_AVAILABLE, field.len)
               == 0)
        {
            j = 0;

        } else if (field.len == sizeof(TOLL_BALANCE_HELD) - 1
                   && ngx_strncmp(field.data, TOLL_BALANCE_HELD, field.len)
                      == 0)
        {
            j = 1;

        } else {
            continue;
        }

        if (toll_usage_count_parse(val->str, val->len, &v) != 0) {
            return NGX_ERROR;
        }

        b = ngx_http_toll_usage_balance(uctx, (u_char *) f->str, len);
        if (b == NULL) {
            return NGX_ERROR;
        }

        sum = j ? &b->held : &b->available;
        *sum = v;

        if (toll_money_add(b->available, b->held, &b->balance) != 0) {
            return NGX_ERROR;
        }
    }

    /* what this nginx charged and Redis does not count yet */

    u = uctx->unsent.elts;

    for (i = 0; i < uctx->unsent.nelts; i++) {
        v = u[i].pending[TOLL_USAGE_PREPAID] + u[i].flight[TOLL_USAGE_PREPAID];

        if (v == 0) {
            continue;
        }

        b = ngx_http_toll_usage_balance(uctx, u[i].currency.data,
                                        u[i].currency.len);
        if (b == NULL || toll_money_add(b->balance, -v, &b->balance) != 0) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static toll_usage_balance_t *
ngx_http_toll_usage_balance(ngx_http_toll_usage_ctx_t *uctx, u_char *cur,
    size_t len)
{
    ngx_uint_t             i;
    toll_usage_balance_t  *b;

    b = uctx->balances.elts;

    for (i = 0; i < uctx->balances.nelts; i++) {
        if (b[i].currency_len == len
            && ngx_strncmp(b[i].currency, cur, len) == 0)
        {
            return &b[i];
        }
    }

    b = ngx_array_push(&uctx->balances);
    if (b == NULL) {
        return NULL;
    }

    ngx_memzero(b, sizeof(toll_usage_balance_t));

    b->currency = ngx_pnalloc(uctx->request->pool, len);
    if (b->currency == NULL) {
        return NULL;
    }

    ngx_memcpy((u_char *) b->currency, cur, len);
    b->currency_len = len;

    return b;
}


static ngx_http_toll_usage_row_t *
ngx_http_toll_usage_row(ngx_http_toll_usage_ctx_t *uctx, u_char *name,
    size_t len)
{
    ngx_uint_t                  i;
    ngx_http_toll_usage_row_t  *row;

    row = uctx->rows.elts;

    for (i = 0; i < uctx->rows.nelts; i++) {
        if (row[i].service.len == len
            && ngx_strncmp(row[i].service.data, name, len) == 0)
        {
            return &row[i];
        }
    }

    row = ngx_array_push(&uctx->rows);
    if (row == NULL) {
        return NULL;
    }

    ngx_memzero(row, sizeof(ngx_http_toll_usage_row_t));

    row->service.data = ngx_pnalloc(uctx->request->pool, len);
    if (row->service.data == NULL) {
        return NULL;
    }

    ngx_memcpy(row->service.data, name, len);
    row->service.len = len;

    return row;
}


static ngx_int_t
ngx_http_toll_usage_send(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_usage_ctx_t *uctx)
{
    size_t                      len;
    int64_t                     free_calls, used;
    ngx_int_t                   rc;
    ngx_buf_t                  *b;
    ngx_uint_t                  i;
    ngx_chain_t                 out;
    toll_usage_row_t           *rows;
    toll_usage_counts_t         totals;
    ngx_http_toll_usage_row_t  *row;

    row = uctx->rows.elts;

    rows = ngx_pcalloc(r->pool, (uctx->rows.nelts + 1)
                                * sizeof(toll_usage_row_t));
    if (rows == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < uctx->rows.nelts; i++) {
        rows[i].service = row[i].service.data;
        rows[i].service_len = row[i].service.len;
        rows[i].provider = row[i].provider.data;
        rows[i].provider_len = row[i].provider.len;

        rows[i].counts.calls = row[i].counts[TOLL_USAGE_CALLS];
        rows[i].counts.free_calls =
                             row[i].counts[TOLL_USAGE_FREE_CALLS];
        rows[i].counts.paid_calls =
                             row[i].counts[TOLL_USAGE_PAID_CALLS];
        rows[i].counts.errors = row[i].counts[TOLL_USAGE_ERRORS];
        rows[i].counts.amount_micros =
                             row[i].counts[TOLL_USAGE_AMOUNT];
        rows[i].counts.units = row[i].counts[TOLL_USAGE_UNITS];

        /*
         * What the buyer can still get free: the service's free calls
         * less those used; leases a node holds unused are still the
         * buyer's.
         */

        free_calls = ngx_http_toll_quota_free_calls(r, &row[i].service);
        used = ngx_max(rows[i].counts.free_calls, 0);

        /* a sum below 0 only from a hash the meter did not write */
        rows[i].free_remaining = (used >= free_calls) ? 0
                                                      : free_calls - used;
    }

    if (toll_usage_totals(rows, uctx->rows.nelts, &totals) != 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "toll: the usage of \"%V\" does not sum in 64 bits",
                      &ctx->key.owner);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * The names come from Redis, of any length: the buffer is measured
     * by the writer that fills it.
     */

    len = toll_usage_json(NULL, ctx->key.owner.data, ctx->key.owner.len,
                          &totals, rows, uctx->rows.nelts,
                          uctx->balances.elts, uctx->balances.nelts);

    b = ngx_create_temp_buf(r->pool,
                            len + ngx_http_toll_usage_caps_len(uctx, ctx));
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last += toll_usage_json((char *) b->last, ctx->key.owner.data,
                               ctx->key.owner.len, &totals, rows,
                               uctx->rows.nelts, uctx->balances.elts,
                               uctx->balances.nelts);

    /* the caps go last, before the end "}\n" the writer made */

    if (b->last - b->pos < 2 || b->last[-2] != '}' || b->last[-1] != '\n') {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_http_toll_usage_caps_json(b->last - 2, uctx, ctx);

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}
