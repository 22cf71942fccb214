/*
 * toll: the spend caps in a buyer's usage answer (docs/metering.md,
 * "Spend caps"): each cap that applies to the buyer and the asking key,
 * what its period counts as used less what this nginx leased of it and
 * has not spent, what remains and when it resets.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_cap.h"
#include "ngx_http_toll_usage_int.h"
#include "toll_money.h"
#include "toll_names.h"
#include "toll_usage.h"


static int64_t ngx_http_toll_usage_unspent(ngx_http_toll_usage_ctx_t *uctx,
    ngx_array_t *now, ngx_http_toll_usage_cap_t *cap);
static ngx_int_t ngx_http_toll_usage_cap_cmp(const void *one,
    const void *two);
static u_char *ngx_http_toll_usage_time(u_char *p, u_char *day);


/* today and tomorrow (the day cap's end), UTC, by this node's clock */

void
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

ngx_int_t
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

size_t
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

u_char *
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
