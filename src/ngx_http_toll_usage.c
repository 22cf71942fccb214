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
#include "ngx_http_toll_cap_int.h"
#include "ngx_http_toll_handler.h"
#include "ngx_http_toll_meter.h"
#include "ngx_http_toll_problem.h"
#include "ngx_http_toll_quota.h"
#include "ngx_http_toll_redis.h"
#include "ngx_http_toll_usage.h"
#include "toll_money.h"
#include "toll_names.h"
#include "toll_usage.h"


typedef struct {
    ngx_str_t                  service;
    ngx_str_t                  provider;
    int64_t                    counts[TOLL_USAGE_COUNTS];
} ngx_http_toll_usage_row_t;


/* a spend cap that applies to the caller, as the answer shows it */
typedef struct {
    ngx_str_t                  currency;
    ngx_uint_t                 key_scope;     /* 0: the buyer's */
    ngx_uint_t                 monthly;       /* 0: daily */
    int64_t                    cap;           /* micro-units */
    int64_t                    used;
} ngx_http_toll_usage_cap_t;


#define NGX_HTTP_TOLL_USAGE_DAY_LEN  TOLL_NAME_DAY_LEN


typedef struct {
    ngx_http_request_t        *request;
    ngx_http_toll_redis_cmd_t *cmd;
    ngx_int_t                  status;        /* 0: waiting */
    ngx_array_t                rows;          /* ngx_http_toll_usage_row_t */
    ngx_array_t                unsent;        /* ngx_http_toll_meter_
                                                 unsent_t */
    ngx_array_t                balances;      /* toll_usage_balance_t */
    ngx_array_t                caps;          /* ngx_http_toll_usage_cap_t */
    ngx_array_t                leases;        /* ngx_http_toll_cap_lease_t,
                                                 before the ask */
    u_char                     today[NGX_HTTP_TOLL_USAGE_DAY_LEN];
    u_char                     tomorrow[NGX_HTTP_TOLL_USAGE_DAY_LEN];
    u_char                     month[NGX_HTTP_TOLL_USAGE_DAY_LEN];
    u_char                     month_end[NGX_HTTP_TOLL_USAGE_DAY_LEN];
} ngx_http_toll_usage_ctx_t;


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
static void ngx_http_toll_usage_days(ngx_http_toll_usage_ctx_t *uctx);
static ngx_int_t ngx_http_toll_usage_caps(ngx_http_toll_usage_ctx_t *uctx,
    ngx_http_toll_ctx_t *ctx, redisReply *caps);
static int64_t ngx_http_toll_usage_unspent(ngx_http_toll_usage_ctx_t *uctx,
    ngx_array_t *now, ngx_http_toll_usage_cap_t *cap);
static ngx_int_t ngx_http_toll_usage_cap_cmp(const void *one,
    const void *two);
static size_t ngx_http_toll_usage_caps_len(ngx_http_toll_usage_ctx_t *uctx,
    ngx_http_toll_ctx_t *ctx);
static u_char *ngx_http_toll_usage_caps_json(u_char *p,
    ngx_http_toll_usage_ctx_t *uctx, ngx_http_toll_ctx_t *ctx);
static u_char *ngx_http_toll_usage_time(u_char *p, u_char *day);


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
    size_t                        *argvlen;
    ngx_uint_t                     i, n;
    const char                   **argv;
    ngx_http_toll_meter_unsent_t  *u;

    u = uctx->unsent.elts;

    for (n = 0, i = 0; i < uctx->unsent.nelts; i++) {
        n += u[i].in_flight;
    }

    argv = ngx_palloc(r->pool, (18 + n) * sizeof(char *));
    argvlen = ngx_palloc(r->pool, (18 + n) * sizeof(size_t));
    p = ngx_pnalloc(r->pool, 4 * TOLL_NAME_USAGE_LEN(ctx->key.owner.len)
                             + toll_name_len(TOLL_NAME_CAP_PREFIX)
                             + ctx->key.owner.len
                             + toll_name_len(TOLL_NAME_TAG_END));

    if (argv == NULL || argvlen == NULL || p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[2] = "4";
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

    argv[7] = (const char *) p;
    p = (u_char *) toll_name_buyer((char *) p, (char *) ctx->key.owner.data,
                                   ctx->key.owner.len, ":");
    argvlen[7] = p - (u_char *) argv[7];

#define ngx_http_toll_usage_arg(k, s, n)                                      \
    argv[k] = (const char *) (s);                                             \
    argvlen[k] = (n)

    ngx_http_toll_usage_arg(8, TOLL_NAME_USAGE_MIRROR,
                            toll_name_len(TOLL_NAME_USAGE_MIRROR));
    ngx_http_toll_usage_arg(9, ctx->key.key_id.data, ctx->key.key_id.len);
    ngx_http_toll_usage_arg(10, uctx->today, NGX_HTTP_TOLL_USAGE_DAY_LEN);
    ngx_http_toll_usage_arg(11, TOLL_CAP_USED, toll_name_len(TOLL_CAP_USED));
    ngx_http_toll_usage_arg(12, TOLL_CAP_DAILY,
                            toll_name_len(TOLL_CAP_DAILY));
    ngx_http_toll_usage_arg(13, TOLL_CAP_MONTHLY,
                            toll_name_len(TOLL_CAP_MONTHLY));
    ngx_http_toll_usage_arg(14, TOLL_CAP_ANCHOR,
                            toll_name_len(TOLL_CAP_ANCHOR));
    ngx_http_toll_usage_arg(15, TOLL_CAP_KEY, toll_name_len(TOLL_CAP_KEY));
    ngx_http_toll_usage_arg(16, TOLL_NAME_CAP_DAY,
                            toll_name_len(TOLL_NAME_CAP_DAY));
    ngx_http_toll_usage_arg(17, TOLL_NAME_CAP_MONTH,
                            toll_name_len(TOLL_NAME_CAP_MONTH));

#undef ngx_http_toll_usage_arg

    for (n = 18, i = 0; i < uctx->unsent.nelts; i++) {
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


/* today and tomorrow (the day cap's end), UTC, by this node's clock */

static void
ngx_http_toll_usage_days(ngx_http_toll_usage_ctx_t *uctx)
{
    time_t    now;
    ngx_tm_t  tm;

    now = ngx_time();

    ngx_gmtime(now, &tm);
    ngx_sprintf(uctx->today, "%04d%02d%02d", tm.ngx_tm_year, tm.ngx_tm_mon,
                tm.ngx_tm_mday);

    ngx_gmtime(now - now % 86400 + 86400, &tm);
    ngx_sprintf(uctx->tomorrow, "%04d%02d%02d", tm.ngx_tm_year,
                tm.ngx_tm_mon, tm.ngx_tm_mday);
}


/*
 * The caps that apply to the buyer and the asking key (lua/usage.lua's
 * fourth answer): {}, or the month's start and end, then per cap its
 * scope, period, currency, cap and what its period counts as used: what
 * the nodes leased, less what this nginx leased and has not spent (its
 * calls count at once; other nginx's unspent leases show as used until
 * they go back).  The amounts are checked int64s, never below 0.
 */

static ngx_int_t
ngx_http_toll_usage_caps(ngx_http_toll_usage_ctx_t *uctx,
    ngx_http_toll_ctx_t *ctx, redisReply *caps)
{
    size_t                      i;
    int64_t                     used, unspent;
    ngx_str_t                   s;
    redisReply                **e;
    ngx_array_t                 now;
    ngx_http_toll_usage_cap_t  *cap;
    ngx_http_toll_main_conf_t  *mcf;

    e = caps->element;

    if (caps->elements == 0) {
        return NGX_OK;
    }

    if (caps->elements < 2 || (caps->elements - 2) % 5) {
        return NGX_ERROR;
    }

    for (i = 0; i < caps->elements; i++) {
        if (e[i]->type != REDIS_REPLY_STRING) {
            return NGX_ERROR;
        }
    }

    if (e[0]->len != NGX_HTTP_TOLL_USAGE_DAY_LEN
        || e[1]->len != NGX_HTTP_TOLL_USAGE_DAY_LEN
        || ngx_http_toll_cap_time((u_char *) e[0]->str) == 0
        || ngx_http_toll_cap_time((u_char *) e[1]->str) == 0)
    {
        return NGX_ERROR;
    }

    ngx_memcpy(uctx->month, e[0]->str, NGX_HTTP_TOLL_USAGE_DAY_LEN);
    ngx_memcpy(uctx->month_end, e[1]->str, NGX_HTTP_TOLL_USAGE_DAY_LEN);

    /* the node's leases now, to compare with those before the ask */

    mcf = ngx_http_get_module_main_conf(uctx->request, ngx_http_toll_module);

    if (ngx_array_init(&now, uctx->request->pool, 4,
                       sizeof(ngx_http_toll_cap_lease_t))
        != NGX_OK
        || ngx_http_toll_cap_leases(mcf->shm_zone, &ctx->key.owner,
                                    &ctx->key.key_id, &now)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (i = 2; i < caps->elements; i += 5) {
        cap = ngx_array_push(&uctx->caps);
        if (cap == NULL) {
            return NGX_ERROR;
        }

        cap->key_scope = (e[i]->len == 3
                          && ngx_strncmp(e[i]->str, "key", 3) == 0);
        cap->monthly = (e[i + 1]->len == toll_name_len(TOLL_CAP_MONTHLY)
                        && ngx_strncmp(e[i + 1]->str, TOLL_CAP_MONTHLY,
                                       e[i + 1]->len)
                           == 0);

        s.data = (u_char *) e[i + 2]->str;
        s.len = e[i + 2]->len;

        cap->currency.len = s.len;
        cap->currency.data = ngx_pstrdup(uctx->request->pool, &s);

        if (cap->currency.data == NULL
            || toll_usage_count_parse(e[i + 3]->str, e[i + 3]->len,
                                      &cap->cap)
               != 0
            || cap->cap < 0
            || toll_usage_count_parse(e[i + 4]->str, e[i + 4]->len, &used)
               != 0)
        {
            return NGX_ERROR;
        }

        unspent = ngx_http_toll_usage_unspent(uctx, &now, cap);

        cap->used = (used > unspent) ? used - unspent : 0;
    }

    ngx_sort(uctx->caps.elts, uctx->caps.nelts,
             sizeof(ngx_http_toll_usage_cap_t), ngx_http_toll_usage_cap_cmp);

    return NGX_OK;
}


/*
 * What this nginx leased of the cap's period and has not spent, which
 * Redis counts as used: a buyer's cap counts the leases of all its keys.
 * A lease counts only if it is the same before the ask and after the
 * answer, with no exchange sent in between or in flight at either (the
 * last exchange sent, asked_ms, unchanged): every grant of it was then
 * in Redis before the script ran, and none of it was given back.  The
 * smaller of the two is what is left unspent; calls in flight count as
 * used.  Anything less certain counts as used: a figure that errs, errs
 * high, for at most an exchange's round trip.
 */

static int64_t
ngx_http_toll_usage_unspent(ngx_http_toll_usage_ctx_t *uctx,
    ngx_array_t *now, ngx_http_toll_usage_cap_t *cap)
{
    u_char                     *period, *day;
    int64_t                     sum;
    ngx_uint_t                  i, j;
    ngx_http_toll_cap_lease_t  *a, *b;

    a = uctx->leases.elts;
    b = now->elts;
    sum = 0;
    period = cap->monthly ? uctx->month : uctx->today;

    for (i = 0; i < now->nelts; i++) {
        day = cap->monthly ? b[i].month : b[i].day;

        if (b[i].asking || b[i].lease <= 0
            || (cap->key_scope && !b[i].this_key)
            || b[i].currency.len != cap->currency.len
            || ngx_strncmp(b[i].currency.data, cap->currency.data,
                           cap->currency.len)
               != 0
            || ngx_memcmp(day, period, NGX_HTTP_TOLL_USAGE_DAY_LEN) != 0)
        {
            continue;
        }

        for (j = 0; j < uctx->leases.nelts; j++) {
            if (a[j].uid == b[i].uid) {
                break;
            }
        }

        if (j == uctx->leases.nelts || a[j].asking
            || a[j].asked_ms != b[i].asked_ms
            || ngx_memcmp(a[j].day, b[i].day, NGX_HTTP_TOLL_USAGE_DAY_LEN)
               != 0
            || ngx_memcmp(a[j].month, b[i].month,
                          NGX_HTTP_TOLL_USAGE_DAY_LEN)
               != 0)
        {
            continue;
        }

        /* a lease is at most what a cap allows: no sum overflows */
        if (toll_money_add(sum, ngx_min(a[j].lease, b[i].lease), &sum) != 0)
        {
            return 0;
        }
    }

    return sum;
}


/* the buyer's caps first, by currency, the day's before the month's */

static ngx_int_t
ngx_http_toll_usage_cap_cmp(const void *one, const void *two)
{
    const ngx_http_toll_usage_cap_t  *a = one, *b = two;

    ngx_int_t  rc;

    if (a->key_scope != b->key_scope) {
        return (ngx_int_t) a->key_scope - (ngx_int_t) b->key_scope;
    }

    rc = ngx_memn2cmp(a->currency.data, b->currency.data, a->currency.len,
                      b->currency.len);

    if (rc != 0) {
        return rc;
    }

    return (ngx_int_t) a->monthly - (ngx_int_t) b->monthly;
}


/*
 * The "caps" member the writer adds: its length at most, measured from
 * what it prints (the currency comes from Redis, of any length).
 */

#define NGX_HTTP_TOLL_USAGE_CAP_LEN                                           \
    (sizeof(",{\"scope\":\"buyer\",\"currency\":\"\",\"period\":\"monthly\"," \
            "\"cap\":\"\",\"used\":\"\",\"remaining\":\"\","                   \
            "\"start\":\"YYYY-MM-DDT00:00:00Z\","                             \
            "\"end\":\"YYYY-MM-DDT00:00:00Z\",\"key_id\":\"\"}")               \
     + 3 * TOLL_MONEY_STR_MAX)

static size_t
ngx_http_toll_usage_caps_len(ngx_http_toll_usage_ctx_t *uctx,
    ngx_http_toll_ctx_t *ctx)
{
    size_t                      len;
    ngx_uint_t                  i;
    ngx_http_toll_usage_cap_t  *cap;

    cap = uctx->caps.elts;
    len = sizeof(",\"caps\":[]}\n");

    for (i = 0; i < uctx->caps.nelts; i++) {
        len += NGX_HTTP_TOLL_USAGE_CAP_LEN
               + toll_json_escape(NULL, cap[i].currency.data,
                                  cap[i].currency.len)
               + toll_json_escape(NULL, ctx->key.key_id.data,
                                  ctx->key.key_id.len);
    }

    return len;
}


/*
 *  ,"caps":[{"scope":"buyer","currency":"USD","period":"daily","cap":"1",
 *  "used":"0.25","remaining":"0.75","start":"2026-12-02T00:00:00Z",
 *  "end":"2026-12-03T00:00:00Z"},{"scope":"key",...,"key_id":"tk_..."}]}
 *  and a newline: the end of the answer.
 */

static u_char *
ngx_http_toll_usage_caps_json(u_char *p, ngx_http_toll_usage_ctx_t *uctx,
    ngx_http_toll_ctx_t *ctx)
{
    u_char                     *start, *end;
    ngx_uint_t                  i;
    ngx_http_toll_usage_cap_t  *cap;

    cap = uctx->caps.elts;

    p = ngx_cpymem(p, ",\"caps\":[", sizeof(",\"caps\":[") - 1);

    for (i = 0; i < uctx->caps.nelts; i++) {
        p = ngx_sprintf(p, "%s{\"scope\":\"%s\",\"currency\":\"",
                        i ? "," : "", cap[i].key_scope ? "key" : "buyer");
        p += toll_json_escape((char *) p, cap[i].currency.data,
                              cap[i].currency.len);

        p = ngx_sprintf(p, "\",\"period\":\"%s\",\"cap\":\"",
                        cap[i].monthly ? TOLL_CAP_MONTHLY : TOLL_CAP_DAILY);
        p += toll_money_format(cap[i].cap, (char *) p);
        p = ngx_cpymem(p, "\",\"used\":\"", sizeof("\",\"used\":\"") - 1);
        p += toll_money_format(cap[i].used, (char *) p);
        p = ngx_cpymem(p, "\",\"remaining\":\"",
                       sizeof("\",\"remaining\":\"") - 1);
        p += toll_money_format(cap[i].cap > cap[i].used
                               ? cap[i].cap - cap[i].used : 0, (char *) p);

        start = cap[i].monthly ? uctx->month : uctx->today;
        end = cap[i].monthly ? uctx->month_end : uctx->tomorrow;

        p = ngx_cpymem(p, "\",\"start\":\"", sizeof("\",\"start\":\"") - 1);
        p = ngx_http_toll_usage_time(p, start);
        p = ngx_cpymem(p, "\",\"end\":\"", sizeof("\",\"end\":\"") - 1);
        p = ngx_http_toll_usage_time(p, end);

        if (cap[i].key_scope) {
            p = ngx_cpymem(p, "\",\"key_id\":\"",
                           sizeof("\",\"key_id\":\"") - 1);
            p += toll_json_escape((char *) p, ctx->key.key_id.data,
                                  ctx->key.key_id.len);
        }

        p = ngx_cpymem(p, "\"}", 2);
    }

    return ngx_cpymem(p, "]}\n", 3);
}


/* "YYYYMMDD" as the instant its day starts, "YYYY-MM-DDT00:00:00Z" */

static u_char *
ngx_http_toll_usage_time(u_char *p, u_char *day)
{
    p = ngx_cpymem(p, day, 4);
    *p++ = '-';
    p = ngx_cpymem(p, day + 4, 2);
    *p++ = '-';
    p = ngx_cpymem(p, day + 6, 2);

    return ngx_cpymem(p, "T00:00:00Z", sizeof("T00:00:00Z") - 1);
}
