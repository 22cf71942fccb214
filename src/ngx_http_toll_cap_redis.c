/*
 * toll: spend caps, the exchanges with Redis (lua/cap.lua), the caps'
 * generation read twice a second on a timer of its own, and the meter
 * timer's work: idle leases given back (docs/metering.md, "Spend caps").
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_cap.h"
#include "ngx_http_toll_cap_int.h"
#include "ngx_http_toll_redis.h"
#include "ngx_http_toll_shm.h"
#include "toll_money.h"
#include "toll_scripts.h"


/*
 * The generation is read this often per nginx, by whichever worker's
 * timer comes first; each worker's fires every NGX_HTTP_TOLL_CAP_POLL_MS.
 * A change is seen within GEN_MS + POLL_MS and one round trip: 750 ms,
 * under the second promised, whatever toll_meter_flush is.
 */
#define NGX_HTTP_TOLL_CAP_GEN_MS    500
#define NGX_HTTP_TOLL_CAP_POLL_MS   250
/* EVALSHA, its sha, 5 keys, then lua/cap.lua's 19 ARGV */
#define NGX_HTTP_TOLL_CAP_KEYS      5
#define NGX_HTTP_TOLL_CAP_ARGS      (3 + NGX_HTTP_TOLL_CAP_KEYS + 19)
/* lua/cap.lua's ARGV[i], after its keys */
#define ngx_http_toll_cap_argv(i)   (2 + NGX_HTTP_TOLL_CAP_KEYS + (i))

#define ngx_http_toll_cap_str(i, s, n)                                        \
    argv[ngx_http_toll_cap_argv(i)] = (const char *) (s);                     \
    argvlen[ngx_http_toll_cap_argv(i)] = (n)

/* leases looked at per tick and worker */
#define NGX_HTTP_TOLL_CAP_TICK_MAX  256


static void ngx_http_toll_cap_keys(ngx_http_toll_cap_ask_t *ask,
    ngx_str_t *buyer, u_char *buf, const char **argv, size_t *argvlen);
static void ngx_http_toll_cap_names(const char **argv, size_t *argvlen);
static void ngx_http_toll_cap_reply(void *data, redisReply *reply);
static ngx_int_t ngx_http_toll_cap_answer(ngx_http_toll_cap_state_t *st,
    ngx_http_toll_cap_ask_t *ask, redisReply *reply, int64_t now);
static void ngx_http_toll_cap_poll(ngx_event_t *ev);
static void ngx_http_toll_cap_gen_reply(void *data, redisReply *reply);


static ngx_event_t        ngx_http_toll_cap_poll_ev;
static ngx_connection_t   ngx_http_toll_cap_poll_dumb;


/*
 * Sends the exchange (lua/cap.lua): the give-back, and for a call the
 * next lease: toll_prepaid_lease prices' worth, or two seconds of what
 * the node held lately if that is more (a busy buyer costs about one
 * exchange per node every two seconds), while the caps have room for two
 * such leases; else the call's hold alone, so that the last of a cap is
 * not leased away to one node.
 */

ngx_int_t
ngx_http_toll_cap_ask(ngx_http_toll_cap_ask_t *ask,
    ngx_http_toll_main_conf_t *mcf, int64_t price)
{
    u_char     *p, *q, *nl, *nl2;
    u_char      buf[5 * NGX_INT64_LEN + 3 * NGX_HTTP_TOLL_CAP_DAY_LEN];
    u_char      names[NGX_HTTP_TOLL_CAP_KEYS
                      * TOLL_NAME_CAP_LEN(TOLL_OWNER_LEN_MAX)];
    int64_t     want, bound;
    time_t      now;
    ngx_str_t   buyer, key, cur;
    size_t      argvlen[NGX_HTTP_TOLL_CAP_ARGS];
    const char *argv[NGX_HTTP_TOLL_CAP_ARGS];

    /* "c:buyer\nkey\ncurrency" */

    nl = ngx_strlchr(ask->subject + 2, ask->subject + ask->subject_len,
                     '\n');
    nl2 = nl ? ngx_strlchr(nl + 1, ask->subject + ask->subject_len, '\n')
             : NULL;

    if (nl2 == NULL || (size_t) (nl - ask->subject) > TOLL_OWNER_LEN_MAX + 2)
    {
        return NGX_ERROR;
    }

    buyer.data = ask->subject + 2;
    buyer.len = nl - buyer.data;
    key.data = nl + 1;
    key.len = nl2 - key.data;
    cur.data = nl2 + 1;
    cur.len = ask->subject + ask->subject_len - cur.data;

    want = 0;
    bound = 0;

    if (ask->hold) {
        if (toll_money_mul(price, (int64_t) mcf->prepaid_lease, &want)
            != TOLL_MONEY_OK)
        {
            want = INT64_MAX / 2;
        }

        if (ask->rate < INT64_MAX / 4) {
            want = ngx_max(want, 2 * ask->rate);
        }

        want = ngx_max(want, ask->hold);
        bound = (want > INT64_MAX / 2) ? INT64_MAX : 2 * want;
    }

    now = ngx_time();

    argv[2] = TOLL_STR(NGX_HTTP_TOLL_CAP_KEYS);
    argvlen[2] = 1;

    ngx_http_toll_cap_keys(ask, &buyer, names, argv, argvlen);

    ngx_http_toll_cap_str(1, cur.data, cur.len);
    ngx_http_toll_cap_str(2, key.data, key.len);
    ngx_http_toll_cap_str(3, ask->day, NGX_HTTP_TOLL_CAP_DAY_LEN);

    p = buf;

#define ngx_http_toll_cap_arg(i, fmt, ...)                                    \
    q = p;                                                                    \
    p = ngx_sprintf(p, fmt, __VA_ARGS__);                                     \
    ngx_http_toll_cap_str(i, q, p - q)

    ngx_http_toll_cap_arg(4, "%L", ask->back);

    if (ask->back) {
        ngx_http_toll_cap_str(5, ask->bday, NGX_HTTP_TOLL_CAP_DAY_LEN);
        ngx_http_toll_cap_str(6, ask->bmonth, NGX_HTTP_TOLL_CAP_DAY_LEN);

    } else {
        ngx_http_toll_cap_str(5, "", 0);
        ngx_http_toll_cap_str(6, "", 0);
    }

    ngx_http_toll_cap_arg(7, "%L", ask->hold);
    ngx_http_toll_cap_arg(8, "%L", want);
    ngx_http_toll_cap_arg(9, "%L", bound);
    /* a day's hash outlives the day by one more */
    ngx_http_toll_cap_arg(10, "%T", (now / 86400 + 2) * 86400 - now);
    ngx_http_toll_cap_arg(11, "%d", TOLL_TTL_CAP_MONTH);

#undef ngx_http_toll_cap_arg

    ngx_http_toll_cap_names(argv, argvlen);

    if (ngx_http_toll_redis_eval_durable(TOLL_SCRIPT_CAP,
            ngx_http_toll_cap_reply, ask, NGX_HTTP_TOLL_CAP_ARGS, argv,
            argvlen)
        == NULL)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * lua/cap.lua's KEYS, all of the buyer's hash tag (docs/redis.md
 * "Slots"): its caps, today's hash, the give-back's day and month (today's
 * and the expected month when nothing goes back), and the month the node
 * expects: the one it last learned, else the one starting on the 1st (the
 * anchor's default); the script names the month itself when the anchor
 * says otherwise, and its answer tells the start for next time.
 */

static void
ngx_http_toll_cap_keys(ngx_http_toll_cap_ask_t *ask, ngx_str_t *buyer,
    u_char *buf, const char **argv, size_t *argvlen)
{
    u_char      *p;
    u_char       month[NGX_HTTP_TOLL_CAP_DAY_LEN];
    ngx_uint_t   i;
    const char  *b;
    const char  *day[NGX_HTTP_TOLL_CAP_KEYS];
    int          m[NGX_HTTP_TOLL_CAP_KEYS] = { -1, 0, 0, 1, 1 };

    if (ask->back) {
        ngx_memcpy(month, ask->bmonth, NGX_HTTP_TOLL_CAP_DAY_LEN);

    } else {
        ngx_memcpy(month, ask->day, 6);
        month[6] = '0';
        month[7] = '1';
    }

    day[0] = NULL;
    day[1] = (const char *) ask->day;
    day[2] = (const char *) (ask->back ? ask->bday : ask->day);
    day[3] = (const char *) (ask->back ? ask->bmonth : month);
    day[4] = (const char *) month;

    b = (const char *) buyer->data;
    p = buf;

    for (i = 0; i < NGX_HTTP_TOLL_CAP_KEYS; i++) {
        argv[3 + i] = (const char *) p;

        if (m[i] < 0) {
            p = (u_char *) toll_name_cap((char *) p, b, buyer->len, "");

        } else {
            p = (u_char *) toll_name_cap_period((char *) p, b, buyer->len,
                                                m[i], day[i]);
        }

        argvlen[3 + i] = p - (u_char *) argv[3 + i];
    }
}


/* lua/cap.lua's ARGV[12..19]: the names of lib/toll_names.h */

static void
ngx_http_toll_cap_names(const char **argv, size_t *argvlen)
{
    ngx_http_toll_cap_str(12, TOLL_CAP_USED, toll_name_len(TOLL_CAP_USED));
    ngx_http_toll_cap_str(13, TOLL_CAP_DAILY, toll_name_len(TOLL_CAP_DAILY));
    ngx_http_toll_cap_str(14, TOLL_CAP_MONTHLY,
                          toll_name_len(TOLL_CAP_MONTHLY));
    ngx_http_toll_cap_str(15, TOLL_CAP_ANCHOR,
                          toll_name_len(TOLL_CAP_ANCHOR));
    ngx_http_toll_cap_str(16, TOLL_CAP_KEY, toll_name_len(TOLL_CAP_KEY));
    ngx_http_toll_cap_str(17, TOLL_NAME_CAP_DAY,
                          toll_name_len(TOLL_NAME_CAP_DAY));
    ngx_http_toll_cap_str(18, TOLL_NAME_CAP_MONTH,
                          toll_name_len(TOLL_NAME_CAP_MONTH));
    ngx_http_toll_cap_str(19, TOLL_CAP_FULL, toll_name_len(TOLL_CAP_FULL));
}


static void
ngx_http_toll_cap_reply(void *data, redisReply *reply)
{
    ngx_http_toll_cap_ask_t *ask = data;

    int64_t                          now;
    ngx_int_t                        rc;
    ngx_http_toll_ctx_t             *ctx;
    ngx_http_request_t              *r;
    ngx_http_toll_cap_state_t       *st;
    ngx_http_toll_shm_limit_node_t  *ln;

    ctx = ask->ctx;
    now = ngx_http_toll_cap_now();
    rc = NGX_HTTP_SERVICE_UNAVAILABLE;

    if (reply && reply->type == REDIS_REPLY_ERROR
        && ngx_http_toll_redis_refusal(NGX_HTTP_TOLL_REDIS_PREPAID, reply))
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "toll: redis refused a spend cap lease: %*s",
                      (size_t) reply->len, reply->str);
    }

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        reply = NULL;
    }

    ngx_http_toll_shm_lock(ask->shm_zone);

    /* pinned while asking: found, unless the zone was remade */

    ln = ngx_http_toll_cap_node(ask->shm_zone, ask->subject,
                                ask->subject_len, 0);

    if (ln) {
        st = (ngx_http_toll_cap_state_t *) ln->state;

        if (st->asking) {
            st->asking--;
        }

        if (reply && ngx_http_toll_cap_answer(st, ask, reply, now) == NGX_OK)
        {
            if (ctx) {
                rc = ngx_http_toll_cap_take(st, ctx, ask->gen, ask->day, now,
                                            1);
            }
        }

        ngx_http_toll_cap_keep(ask->shm_zone, ln);
    }

    ngx_http_toll_shm_unlock(ask->shm_zone);

    ngx_free(ask);

    if (ctx == NULL) {
        return;
    }

    ctx->cap->ask = NULL;

    if (rc == NGX_OK) {
        ctx->cap->state = NGX_HTTP_TOLL_CAP_NONE;

    } else if (rc == NGX_HTTP_TOLL_CAP_EXCEEDED) {
        ctx->cap->state = NGX_HTTP_TOLL_CAP_DENIED;

    } else {
        ctx->cap->state = NGX_HTTP_TOLL_CAP_FAILED;
    }

    r = ctx->request;

    ctx->state = NGX_HTTP_TOLL_STATE_RESUMED;

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;
    ngx_post_event(r->connection->write, &ngx_posted_events);
}


/*
 * lua/cap.lua's answer into the node (the zone locked): {"none"}, or
 * {"caps", grant, room, scope, period, cap, month start, month end}.  A
 * grant for a period the node has left is dropped: it stays used there.
 */

static ngx_int_t
ngx_http_toll_cap_answer(ngx_http_toll_cap_state_t *st,
    ngx_http_toll_cap_ask_t *ask, redisReply *reply, int64_t now)
{
    size_t        i;
    int64_t       grant, cap;
    ngx_int_t     newer;
    redisReply  **e;

    e = reply->element;

    if (e[0]->len == 4 && ngx_strncmp(e[0]->str, "back", 4) == 0) {
        return NGX_OK;
    }

    if (e[0]->len == 4 && ngx_strncmp(e[0]->str, "none", 4) == 0) {
        st->answered = 1;
        st->capped = 0;
        st->gen = ask->gen;
        st->denied_ms = 0;
        return NGX_OK;
    }

    if (reply->elements != 8) {
        return NGX_ERROR;
    }

    for (i = 1; i < 8; i++) {
        if (e[i]->type != REDIS_REPLY_STRING) {
            return NGX_ERROR;
        }
    }

    grant = ngx_atoof((u_char *) e[1]->str, e[1]->len);
    cap = ngx_atoof((u_char *) e[5]->str, e[5]->len);

    if (grant < 0 || cap < 0
        || e[6]->len != NGX_HTTP_TOLL_CAP_DAY_LEN
        || e[7]->len != NGX_HTTP_TOLL_CAP_DAY_LEN)
    {
        return NGX_ERROR;
    }

    newer = st->answered && st->capped
            ? ngx_memcmp(ask->day, st->day, NGX_HTTP_TOLL_CAP_DAY_LEN)
            : 1;

    if (newer == 0
        && ngx_memcmp(e[6]->str, st->month, NGX_HTTP_TOLL_CAP_DAY_LEN) != 0)
    {
        /* the anchor moved: the old month's lease stays used there */
        newer = 1;
    }

    if (newer < 0) {
        return NGX_ERROR;
    }

    if (newer > 0) {
        st->lease = 0;
        st->holding = 0;
        ngx_memcpy(st->day, ask->day, NGX_HTTP_TOLL_CAP_DAY_LEN);
        ngx_memcpy(st->month, e[6]->str, NGX_HTTP_TOLL_CAP_DAY_LEN);
    }

    st->lease += grant;
    st->answered = 1;
    st->capped = 1;
    st->gen = ask->gen;
    st->month_end = ngx_http_toll_cap_time((u_char *) e[7]->str);

    if (ask->hold && grant == 0) {
        st->denied_ms = now;
        st->cap_micros = cap;
        st->monthly = (e[4]->len == 7);              /* "monthly" */
        st->key_scope = (e[3]->len == 3);            /* "key" */

    } else {
        st->denied_ms = 0;
    }

    return NGX_OK;
}


void
ngx_http_toll_cap_tick(ngx_shm_zone_t *shm_zone, ngx_log_t *log)
{
    int64_t                          now;
    ngx_uint_t                       n, k;
    ngx_http_toll_cap_ask_t         *ask;
    ngx_http_toll_main_conf_t       *mcf;
    ngx_http_toll_cap_state_t       *st;
    ngx_http_toll_shm_limit_node_t  *ln;

    mcf = ngx_http_cycle_get_module_main_conf(ngx_cycle, ngx_http_toll_module);
    if (mcf == NULL) {
        return;
    }

    now = ngx_http_toll_cap_now();

    n = ngx_min(ngx_http_toll_shm_queued(shm_zone, NGX_HTTP_TOLL_QUEUE_CAP),
                NGX_HTTP_TOLL_CAP_TICK_MAX);

    for (k = 0; k < n; k++) {
        ln = ngx_http_toll_shm_dequeue(shm_zone, NGX_HTTP_TOLL_QUEUE_CAP);
        if (ln == NULL) {
            break;
        }

        st = (ngx_http_toll_cap_state_t *) ln->state;

        /* an exchange counted long after was sent by a worker that died */

        if (st->asking
            && now - st->asked_ms > 2 * (int64_t) mcf->redis.timeout + 1000)
        {
            st->asking = 0;
        }

        if (st->lease > 0
            && (ngx_exiting
                || now - st->used_ms >= (int64_t) mcf->prepaid_idle))
        {
            ask = ngx_alloc(sizeof(ngx_http_toll_cap_ask_t), log);

            if (ask) {
                ask->ctx = NULL;
                ask->shm_zone = shm_zone;
                ask->gen = st->gen;
                ask->hold = 0;
                ask->rate = 0;
                ask->back = st->lease;
                ngx_memcpy(ask->day, st->day, NGX_HTTP_TOLL_CAP_DAY_LEN);
                ngx_memcpy(ask->bday, st->day, NGX_HTTP_TOLL_CAP_DAY_LEN);
                ngx_memcpy(ask->bmonth, st->month,
                           NGX_HTTP_TOLL_CAP_DAY_LEN);
                ask->subject_len = ln->subject_len;
                ngx_memcpy(ask->subject, ln->subject, ln->subject_len);

                if (ngx_http_toll_cap_ask(ask, mcf, 0) == NGX_OK) {
                    /* answered or not, it is Redis's again: conservative */
                    st->lease = 0;
                    st->asking++;
                    st->asked_ms = now;

                } else {
                    ngx_free(ask);
                }
            }
        }

        ngx_http_toll_cap_keep(shm_zone, ln);
    }
}


/*
 * Each worker of an nginx that prices anything (one that sells nothing
 * leaves its Redis connection idle) polls; the zone's stamp keeps it to
 * one GET per NGX_HTTP_TOLL_CAP_GEN_MS for the whole nginx, and a read
 * lost with its worker is redone.  Cancelable: it holds nothing.
 */

ngx_int_t
ngx_http_toll_cap_start(ngx_cycle_t *cycle)
{
    ngx_http_toll_main_conf_t  *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_toll_module);

    if (mcf == NULL || mcf->services == NULL) {
        return NGX_OK;
    }

    ngx_http_toll_cap_poll_dumb.fd = (ngx_socket_t) -1;

    ngx_http_toll_cap_poll_ev.handler = ngx_http_toll_cap_poll;
    ngx_http_toll_cap_poll_ev.data = &ngx_http_toll_cap_poll_dumb;
    ngx_http_toll_cap_poll_ev.log = cycle->log;
    ngx_http_toll_cap_poll_ev.cancelable = 1;

    /* the first read at once: calls skip caps only once it is known */
    ngx_add_timer(&ngx_http_toll_cap_poll_ev, 1);

    return NGX_OK;
}


static void
ngx_http_toll_cap_poll(ngx_event_t *ev)
{
    int64_t                     now;
    const char                 *argv[2];
    size_t                      argvlen[2];
    ngx_shm_zone_t             *shm_zone;
    ngx_http_toll_cap_gen_t    *g;
    ngx_http_toll_main_conf_t  *mcf;

    if (ngx_exiting) {
        return;
    }

    mcf = ngx_http_cycle_get_module_main_conf(ngx_cycle, ngx_http_toll_module);
    shm_zone = mcf->shm_zone;
    now = ngx_http_toll_cap_now();

    ngx_http_toll_shm_lock(shm_zone);

    g = ngx_http_toll_cap_gen(shm_zone);

    if (g && now - g->read_ms >= NGX_HTTP_TOLL_CAP_GEN_MS
        && (!g->reading
            || now - g->read_ms > 2 * (int64_t) mcf->redis.timeout + 1000))
    {
        argv[0] = "GET";
        argvlen[0] = 3;
        argv[1] = TOLL_NAME_CAP_GEN;
        argvlen[1] = toll_name_len(TOLL_NAME_CAP_GEN);

        g->read_ms = now;
        g->reading = (ngx_http_toll_redis_send(ngx_http_toll_cap_gen_reply,
                                               shm_zone, 2, argv, argvlen)
                      != NULL);
    }

    ngx_http_toll_shm_unlock(shm_zone);

    ngx_add_timer(ev, NGX_HTTP_TOLL_CAP_POLL_MS);
}


static void
ngx_http_toll_cap_gen_reply(void *data, redisReply *reply)
{
    ngx_shm_zone_t *shm_zone = data;

    int64_t                   gen;
    ngx_http_toll_cap_gen_t  *g;

    gen = -1;

    if (reply && reply->type == REDIS_REPLY_NIL) {
        gen = 0;

    } else if (reply && reply->type == REDIS_REPLY_STRING) {
        gen = ngx_atoof((u_char *) reply->str, reply->len);
    }

    ngx_http_toll_shm_lock(shm_zone);

    g = ngx_http_toll_cap_gen(shm_zone);

    if (g) {
        g->reading = 0;

        /* unread: the last known stays, as no change can be made */
        if (gen >= 0) {
            g->gen = gen;
        }
    }

    ngx_http_toll_shm_unlock(shm_zone);
}


/* the unix time of a "YYYYMMDD" day's start, UTC (days from civil) */

time_t
ngx_http_toll_cap_time(u_char *day)
{
    ngx_int_t  y, m, d, era, yoe, doy, doe;

    y = ngx_atoi(day, 4);
    m = ngx_atoi(day + 4, 2);
    d = ngx_atoi(day + 6, 2);

    if (y < 1970 || m < 1 || m > 12 || d < 1 || d > 31) {
        return 0;
    }

    y -= (m <= 2);
    era = y / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return (time_t) (era * 146097 + doe - 719468) * 86400;
}
