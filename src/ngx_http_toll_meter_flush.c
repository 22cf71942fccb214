/*
 * toll: the meter's flush to Redis.
 *
 * A timer in each worker takes the zone's queued nodes in batches: a
 * node's pending counts move into its "in flight" counts under a new
 * flush id, and until Redis confirms that id every retry sends the same
 * counts under the same id, which lua/meter.lua applies once.  So a
 * timed-out write that Redis did apply, a worker that died waiting, or a
 * lost connection count nothing twice.  An exiting worker stays, for a
 * while, until what it holds is confirmed.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/rand.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_meter_int.h"
#include "ngx_http_toll_prepaid.h"
#include "ngx_http_toll_cap.h"
#include "ngx_http_toll_redis.h"
#include "ngx_http_toll_shm.h"
#include "toll_names.h"
#include "toll_reply.h"


/* nodes one worker flushes in one round */
#define NGX_HTTP_TOLL_METER_BATCH_MAX    512
/* a flush unanswered this long is sent again, under the same id */
#define NGX_HTTP_TOLL_METER_RETRY_MS     5000
/* while exiting: flush every so often, and give up after a while */
#define NGX_HTTP_TOLL_METER_EXIT_TICK_MS 50
#define NGX_HTTP_TOLL_METER_EXIT_MAX_MS  5000
/*
 * script arguments (lua/meter.lua): EVALSHA, sha, numkeys, 4 keys, 14
 * values, then a field, a count and a bound for each count
 */
#define NGX_HTTP_TOLL_METER_ARGS         (21 + 3 * TOLL_USAGE_COUNTS)


/* a flush on its way: enough to find the node and its id again */
typedef struct {
    ngx_shm_zone_t            *shm_zone;
    uint64_t                   uid;
    uint64_t                   flush_id[2];
    size_t                     subject_len;
    u_char                     subject[NGX_HTTP_TOLL_NODE_SUBJECT_MAX];
} ngx_http_toll_meter_flush_t;


static void ngx_http_toll_meter_timer(ngx_event_t *ev);
static ngx_uint_t ngx_http_toll_meter_handed_over(ngx_event_t *ev,
    int64_t now);
static ngx_uint_t ngx_http_toll_meter_due(ngx_http_toll_shm_limit_node_t *ln,
    ngx_http_toll_meter_state_t *st, int64_t now);
static ngx_int_t ngx_http_toll_meter_flush(ngx_http_toll_shm_limit_node_t *ln,
    ngx_http_toll_meter_state_t *st, ngx_pool_t *pool, int64_t now,
    ngx_log_t *log);
static void ngx_http_toll_meter_rearm(ngx_event_t *ev, int64_t now,
    ngx_uint_t sent, ngx_uint_t waiting);
static ngx_int_t ngx_http_toll_meter_send(ngx_http_toll_meter_flush_t *fl,
    ngx_http_toll_shm_limit_node_t *ln, ngx_pool_t *pool);
static u_char *ngx_http_toll_meter_keys(u_char *p, ngx_str_t *buyer,
    const char *day, const char **argv, size_t *argvlen);
static u_char *ngx_http_toll_meter_balance_args(u_char *p,
    ngx_str_t *currency, int64_t paid, ngx_shm_zone_t *shm_zone,
    const char **argv, size_t *argvlen);
static void ngx_http_toll_meter_count_args(u_char *p, ngx_str_t *service,
    int64_t *flight, const char **argv, size_t *argvlen);
static void ngx_http_toll_meter_index(ngx_http_toll_meter_flush_t *fl,
    const char *key, size_t key_len);
static void ngx_http_toll_meter_reply(void *data, redisReply *reply);
static void ngx_http_toll_meter_settle(ngx_http_toll_meter_flush_t *fl,
    ngx_http_toll_meter_state_t *st, redisReply *reply,
    toll_reply_meter_t *m, ngx_str_t *why, ngx_uint_t done,
    ngx_uint_t overflow);
static void ngx_http_toll_meter_index_reply(void *data, redisReply *reply);


static ngx_event_t        ngx_http_toll_meter_ev;
static ngx_connection_t   ngx_http_toll_meter_dumb;
static ngx_shm_zone_t    *ngx_http_toll_meter_zone;
static ngx_msec_t         ngx_http_toll_meter_flush_ms;
static int64_t            ngx_http_toll_meter_exit_at_ms;
/* this process's flushes still waiting for Redis */
static ngx_uint_t         ngx_http_toll_meter_inflight;

/* flush ids: a random number per worker process, then a count */
static uint64_t           ngx_http_toll_meter_id_prefix;
static uint64_t           ngx_http_toll_meter_id_seq;


ngx_int_t
ngx_http_toll_meter_flush_start(ngx_cycle_t *cycle, ngx_shm_zone_t *shm_zone,
    ngx_msec_t flush_ms)
{
    if (RAND_bytes((u_char *) &ngx_http_toll_meter_id_prefix,
                   sizeof(ngx_http_toll_meter_id_prefix))
        != 1)
    {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "toll: libcrypto failed to start the meter");
        return NGX_ERROR;
    }


    ngx_http_toll_meter_zone = shm_zone;
    ngx_http_toll_meter_flush_ms = flush_ms;

    ngx_http_toll_meter_dumb.fd = (ngx_socket_t) -1;

    ngx_http_toll_meter_ev.handler = ngx_http_toll_meter_timer;
    ngx_http_toll_meter_ev.data = &ngx_http_toll_meter_dumb;
    ngx_http_toll_meter_ev.log = cycle->log;

    /*
     * Not cancelable: an exiting worker waits for the next tick, which
     * flushes what the zone holds before the worker may go (the zone dies
     * with the last process of nginx, and its counts with it).
     */

    ngx_http_toll_meter_ev.cancelable = 0;

    ngx_add_timer(&ngx_http_toll_meter_ev, flush_ms);

    return NGX_OK;
}


static void
ngx_http_toll_meter_timer(ngx_event_t *ev)
{
    int64_t                           now;
    ngx_uint_t                        n, k, sent, waiting;
    ngx_pool_t                       *pool;
    ngx_http_toll_meter_state_t      *st;
    ngx_http_toll_shm_limit_node_t   *ln;

    now = ngx_http_toll_now_ms();
    pool = NULL;
    sent = 0;

    if (ngx_exiting && ngx_http_toll_meter_handed_over(ev, now)) {
        return;
    }

    ngx_http_toll_shm_lock(ngx_http_toll_meter_zone);

    ngx_http_toll_meter_sweep(now, ev->log);

    n = ngx_min(ngx_http_toll_shm_queued(ngx_http_toll_meter_zone,
                                         NGX_HTTP_TOLL_QUEUE_METER),
                NGX_HTTP_TOLL_METER_BATCH_MAX);

    for (k = 0; k < n; k++) {
        ln = ngx_http_toll_shm_dequeue(ngx_http_toll_meter_zone,
                                       NGX_HTTP_TOLL_QUEUE_METER);
        if (ln == NULL) {
            break;
        }

        st = (ngx_http_toll_meter_state_t *) ln->state;

        if (!ngx_http_toll_meter_due(ln, st, now)) {
            continue;
        }

        /* in the queue until Redis confirms, whoever sent it */

        ngx_http_toll_shm_enqueue(ngx_http_toll_meter_zone, ln,
                                  NGX_HTTP_TOLL_QUEUE_METER);

        if (pool == NULL) {
            pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, ev->log);
            if (pool == NULL) {
                break;
            }
        }

        if (ngx_http_toll_meter_flush(ln, st, pool, now, ev->log)
            != NGX_OK)
        {
            break;
        }

        sent++;
    }

    /*
     * Idle leases of balances go back to Redis; an exiting worker stays
     * while one waits for Redis or is unsure, so that nginx stopping
     * leaves no hold of its own behind (within the exit's bound).
     */
    waiting = ngx_http_toll_prepaid_tick(ngx_http_toll_meter_zone, ev->log);
    /* and of spend caps */
    ngx_http_toll_cap_tick(ngx_http_toll_meter_zone, ev->log);

    ngx_http_toll_shm_unlock(ngx_http_toll_meter_zone);

    if (pool) {
        ngx_destroy_pool(pool);
    }

    ngx_http_toll_meter_rearm(ev, now, sent, waiting);
}


/*
 * An exiting worker after a reload: the new cycle's workers flush what
 * is left, and keep adding to it, so this one only waits for its own
 * batches.  When nginx stops, no one else will: it flushes all (0).
 */

static ngx_uint_t
ngx_http_toll_meter_handed_over(ngx_event_t *ev, int64_t now)
{
    if (ngx_http_toll_meter_exit_at_ms == 0) {
        ngx_http_toll_meter_exit_at_ms = now;
    }

    if (!ngx_http_toll_shm_proc_hand_over(ngx_http_toll_meter_zone)) {
        return 0;
    }

    if (ngx_http_toll_meter_inflight == 0
        || now - ngx_http_toll_meter_exit_at_ms
           > NGX_HTTP_TOLL_METER_EXIT_MAX_MS)
    {
        /* unconfirmed batches are sent again by the others */
        return 1;
    }

    ngx_add_timer(ev, NGX_HTTP_TOLL_METER_EXIT_TICK_MS);
    return 1;
}


/*
 * Whether a node taken from the queue is sent now (the zone locked): a
 * new batch of what is pending, under a new id, or a batch in flight that
 * Redis did not confirm in time.  A node not sent is queued again while
 * it waits for Redis, or let go when it holds nothing.
 */

static ngx_uint_t
ngx_http_toll_meter_due(ngx_http_toll_shm_limit_node_t *ln,
    ngx_http_toll_meter_state_t *st, int64_t now)
{
    ngx_uint_t  i;

    if (st->flush_id[0] == 0 && st->flush_id[1] == 0) {

        for (i = 0; i < TOLL_USAGE_COUNTS; i++) {
            if (st->pending[i]) {
                break;
            }
        }

        if (i == TOLL_USAGE_COUNTS) {
            /* all in Redis and no call open: the node may go */
            if (st->open == 0) {
                ln->pins = 0;
            }

            return 0;
        }

        /* a new batch: what is pending now, under a new id */

        for (i = 0; i < TOLL_USAGE_COUNTS; i++) {
            st->flight[i] = st->pending[i];
            st->pending[i] = 0;
        }

        st->flush_id[0] = ngx_http_toll_meter_id_prefix;
        st->flush_id[1] = ++ngx_http_toll_meter_id_seq;

    } else if (now - st->flush_at_ms < NGX_HTTP_TOLL_METER_RETRY_MS
               && st->flush_at_ms != 0)
    {
        /* on its way; stays queued, so that a retry can find it */
        ngx_http_toll_shm_enqueue(ngx_http_toll_meter_zone, ln,
                                  NGX_HTTP_TOLL_QUEUE_METER);
        return 0;
    }

    return 1;
}


/*
 * Sends a node's batch in flight (the zone locked).  NGX_ERROR: no memory
 * for it, the round stops; a batch that cannot be sent now waits in the
 * zone for the next round.
 */

static ngx_int_t
ngx_http_toll_meter_flush(ngx_http_toll_shm_limit_node_t *ln,
    ngx_http_toll_meter_state_t *st, ngx_pool_t *pool, int64_t now,
    ngx_log_t *log)
{
    ngx_http_toll_meter_flush_t  *fl;

    fl = ngx_alloc(sizeof(ngx_http_toll_meter_flush_t), log);
    if (fl == NULL) {
        return NGX_ERROR;
    }

    fl->shm_zone = ngx_http_toll_meter_zone;
    fl->uid = ln->uid;
    fl->flush_id[0] = st->flush_id[0];
    fl->flush_id[1] = st->flush_id[1];
    fl->subject_len = ln->subject_len;
    ngx_memcpy(fl->subject, ln->subject, ln->subject_len);

    st->flush_at_ms = now;

    if (ngx_http_toll_meter_send(fl, ln, pool) != NGX_OK) {
        ngx_free(fl);
        st->flush_at_ms = 0;
        return NGX_OK;
    }

    ngx_http_toll_meter_inflight++;

    return NGX_OK;
}


/*
 * A worker that exits stays while it has counts to flush or flushes to
 * see confirmed, for a while: the zone dies with nginx, and its counts
 * with it.  Flushes of other workers, still running after a reload, are
 * theirs to finish.
 */

static void
ngx_http_toll_meter_rearm(ngx_event_t *ev, int64_t now, ngx_uint_t sent,
    ngx_uint_t waiting)
{
    if (ngx_exiting) {
        if (sent == 0 && ngx_http_toll_meter_inflight == 0 && waiting == 0) {
            return;
        }

        if (now - ngx_http_toll_meter_exit_at_ms
            > NGX_HTTP_TOLL_METER_EXIT_MAX_MS)
        {
            if (ngx_http_toll_meter_inflight) {
                ngx_log_error(NGX_LOG_ALERT, ev->log, 0,
                              "toll: exiting with meter counts not "
                              "confirmed by redis (%ui flushes waiting)",
                              ngx_http_toll_meter_inflight);

            } else {
                /* Redis takes back a silent node's holds by itself */
                ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                              "toll: exiting with %ui balance lease(s) "
                              "not settled with redis", waiting);
            }

            return;
        }

        ngx_add_timer(ev, NGX_HTTP_TOLL_METER_EXIT_TICK_MS);
        return;
    }

    ngx_add_timer(ev, ngx_http_toll_meter_flush_ms);
}


/*
 * Sends one node's batch (the zone locked: the node's counts are read
 * here): the script, then the index of usage keys that toll-settle reads.
 * The argument texts live in pool; hiredis copies them at once.
 */

static ngx_int_t
ngx_http_toll_meter_send(ngx_http_toll_meter_flush_t *fl,
    ngx_http_toll_shm_limit_node_t *ln, ngx_pool_t *pool)
{
    u_char                       *buf, *p, *nl1, *nl2, *nl3, *end, *start;
    size_t                        argvlen[NGX_HTTP_TOLL_METER_ARGS];
    ngx_str_t                     buyer, service, currency;
    const char                   *argv[NGX_HTTP_TOLL_METER_ARGS], *day;
    ngx_http_toll_meter_state_t  *st;

    st = (ngx_http_toll_meter_state_t *) ln->state;

    /* "m:YYYYMMDD:buyer\nservice\nprovider\ncurrency" */

    end = ln->subject + ln->subject_len;
    nl1 = ngx_strlchr(ln->subject + 11, end, '\n');
    nl2 = nl1 ? ngx_strlchr(nl1 + 1, end, '\n') : NULL;
    nl3 = nl2 ? ngx_strlchr(nl2 + 1, end, '\n') : NULL;

    if (nl3 == NULL) {
        return NGX_ERROR;
    }

    day = (const char *) ln->subject + 2;
    buyer.data = ln->subject + 11;
    buyer.len = nl1 - buyer.data;
    service.data = nl1 + 1;
    service.len = nl2 - service.data;
    currency.data = nl3 + 1;
    currency.len = end - currency.data;

    buf = ngx_pnalloc(pool, 4 * TOLL_NAME_USAGE_LEN(buyer.len) + 32
                            + NGX_TIME_T_LEN + NGX_INT64_LEN
                            + 4 * (currency.len + 32)
                            + (TOLL_USAGE_COUNTS + 2) * (service.len + 16)
                            + 2 * TOLL_USAGE_COUNTS * NGX_INT64_LEN);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    p = buf;

#define ngx_http_toll_meter_arg(k, start)                                     \
    argv[k] = (const char *) (start);                                         \
    argvlen[k] = p - (start)

    argv[2] = "4";
    argvlen[2] = 1;

    /* the keys, all in the buyer's hash slot */

    p = ngx_http_toll_meter_keys(p, &buyer, day, &argv[3], &argvlen[3]);

    start = p;
    p = ngx_sprintf(p, "%016uxL%016uxL", fl->flush_id[0], fl->flush_id[1]);
    ngx_http_toll_meter_arg(7, start);

    start = p;
    p = ngx_sprintf(p, "%T", ngx_time());
    ngx_http_toll_meter_arg(8, start);

    argv[9] = day;
    argvlen[9] = TOLL_NAME_DAY_LEN;
    argv[10] = TOLL_STR(TOLL_TTL_FLUSH_IDS);
    argvlen[10] = sizeof(TOLL_STR(TOLL_TTL_FLUSH_IDS)) - 1;
    argv[11] = TOLL_STR(TOLL_TTL_FLUSHES);
    argvlen[11] = sizeof(TOLL_STR(TOLL_TTL_FLUSHES)) - 1;

    start = p;
    p = ngx_sprintf(p, "%V:%s", &service,
                    toll_usage_fields[TOLL_USAGE_PROVIDER]);
    ngx_http_toll_meter_arg(12, start);

    argv[13] = (const char *) nl2 + 1;
    argvlen[13] = nl3 - nl2 - 1;

    start = p;
    p = ngx_sprintf(p, "%V:%s", &service,
                    toll_usage_fields[TOLL_USAGE_CURRENCY]);
    ngx_http_toll_meter_arg(14, start);

    argv[15] = (const char *) currency.data;
    argvlen[15] = currency.len;

    /* what the balance paid: from this node's hold to spent */

    p = ngx_http_toll_meter_balance_args(p, &currency,
                                         st->flight[TOLL_USAGE_PREPAID],
                                         fl->shm_zone, &argv[16],
                                         &argvlen[16]);

#undef ngx_http_toll_meter_arg

    ngx_http_toll_meter_count_args(p, &service, st->flight, &argv[21],
                                   &argvlen[21]);

    if (ngx_http_toll_redis_eval_durable(TOLL_SCRIPT_METER,
            ngx_http_toll_meter_reply, fl, NGX_HTTP_TOLL_METER_ARGS, argv,
            argvlen)
        == NULL)
    {
        /* Redis is away: the batch waits in the zone, id and all */
        return NGX_ERROR;
    }

    ngx_http_toll_meter_index(fl, argv[3], argvlen[3]);

    return NGX_OK;
}


/* the script's keys, all in the buyer's slot: four, written at p */

static u_char *
ngx_http_toll_meter_keys(u_char *p, ngx_str_t *buyer, const char *day,
    const char **argv, size_t *argvlen)
{
    char    *b, *q;
    size_t   n;

    b = (char *) buyer->data;
    n = buyer->len;
    q = (char *) p;

    argv[0] = q;
    q = toll_name_usage(q, b, n, day);
    argvlen[0] = q - argv[0];

    argv[1] = q;
    q = toll_name_buyer(q, b, n, TOLL_NAME_USAGE_FLUSHES);
    argvlen[1] = q - argv[1];

    argv[2] = q;
    q = toll_name_buyer(q, b, n, TOLL_NAME_USAGE_DAYS);
    argvlen[2] = q - argv[2];

    argv[3] = q;
    q = toll_name_balance(q, b, n, "");
    argvlen[3] = q - argv[3];

    return (u_char *) q;
}


/*
 * What the balance paid of the batch and the balance's fields it moves
 * (lua/meter.lua ARGV[10..14]): five arguments, their texts written at p
 */

static u_char *
ngx_http_toll_meter_balance_args(u_char *p, ngx_str_t *currency,
    int64_t paid, ngx_shm_zone_t *shm_zone, const char **argv,
    size_t *argvlen)
{
    u_char  *start;

#define ngx_http_toll_meter_balance_arg(k, fmt, ...)                          \
    start = p;                                                                \
    p = ngx_sprintf(p, fmt, __VA_ARGS__);                                     \
    argv[k] = (const char *) start;                                           \
    argvlen[k] = p - start

    ngx_http_toll_meter_balance_arg(0, "%L", paid);
    ngx_http_toll_meter_balance_arg(1, "%V:" TOLL_BALANCE_SPENT, currency);
    ngx_http_toll_meter_balance_arg(2, "%V:" TOLL_BALANCE_HELD, currency);
    ngx_http_toll_meter_balance_arg(3, "%V:" TOLL_BALANCE_HOLD "%*s",
                                    currency,
                                    (size_t) NGX_HTTP_TOLL_NODE_ID_LEN,
                                    ngx_http_toll_shm_node_id(shm_zone));
    ngx_http_toll_meter_balance_arg(4, "%V:" TOLL_BALANCE_AVAILABLE,
                                    currency);

#undef ngx_http_toll_meter_balance_arg

    return p;
}


/*
 * Each count with its field and how much the field may hold before it
 * (counts are >= 0): three arguments a count, their texts written at p.
 */

static void
ngx_http_toll_meter_count_args(u_char *p, ngx_str_t *service,
    int64_t *flight, const char **argv, size_t *argvlen)
{
    u_char      *start;
    ngx_uint_t   i, n;

    for (i = 0; i < TOLL_USAGE_COUNTS; i++) {
        n = 3 * i;

        start = p;
        p = ngx_sprintf(p, "%V:%s", service, toll_usage_fields[i]);
        argv[n] = (const char *) start;
        argvlen[n] = p - start;

        start = p;
        p = ngx_sprintf(p, "%L", flight[i]);
        argv[n + 1] = (const char *) start;
        argvlen[n + 1] = p - start;

        start = p;
        p = ngx_sprintf(p, "%L", INT64_MAX - flight[i]);
        argv[n + 2] = (const char *) start;
        argvlen[n + 2] = p - start;
    }
}


/* the settlement worker finds the day's usage keys in the index */

static void
ngx_http_toll_meter_index(ngx_http_toll_meter_flush_t *fl, const char *key,
    size_t key_len)
{
    size_t       argvlen[3];
    const char  *argv[3];

    argv[0] = "SADD";
    argvlen[0] = 4;
    argv[1] = TOLL_NAME_USAGE_INDEX;
    argvlen[1] = sizeof(TOLL_NAME_USAGE_INDEX) - 1;
    argv[2] = key;
    argvlen[2] = key_len;

    /* not NULL: its reply is read, for a refusal to be said */
    (void) ngx_http_toll_redis_send(ngx_http_toll_meter_index_reply,
                                    fl->shm_zone, 3, argv, argvlen);
}


/*
 * Redis's word on a batch: 1 applied now, 0 applied before (the id is
 * known), {2, field} a sum that would overflow (the batch can never be
 * applied), {1, field} a count in the hash that is not an integer, or an
 * error (the batch waits and is sent again, same id: the script wrote
 * nothing).  A batch refused is said once, not at every retry.  The
 * reply is read by toll_reply_meter() (lib/toll_reply.c), which the
 * fuzzer runs.
 */

static void
ngx_http_toll_meter_reply(void *data, redisReply *reply)
{
    ngx_http_toll_meter_flush_t *fl = data;

    ngx_str_t                         why;
    ngx_uint_t                        i, done, overflow;
    toll_reply_meter_t                m;
    ngx_http_toll_meter_state_t      *st;
    ngx_http_toll_shm_limit_node_t   *ln;

    done = 0;
    overflow = 0;
    ngx_str_null(&why);

    if (ngx_http_toll_meter_inflight) {
        ngx_http_toll_meter_inflight--;
    }

    toll_reply_meter(reply, &m);

    why.data = (u_char *) m.why;
    why.len = m.why_len;

    switch (m.rc) {

    case TOLL_REPLY_METER_NONE:
        ngx_str_set(&why, "no answer");
        break;

    case TOLL_REPLY_METER_APPLIED:
        done = 1;
        break;

    case TOLL_REPLY_METER_OVERFLOW:
        overflow = 1;
        done = 1;
        break;

    case TOLL_REPLY_METER_NOT_INTEGER:
    case TOLL_REPLY_METER_NOSCRIPT:
    case TOLL_REPLY_METER_ERROR:
        break;

    default: /* TOLL_REPLY_METER_UNEXPECTED */
        ngx_str_set(&why, "an unexpected reply");
        break;
    }

    ngx_http_toll_shm_lock(fl->shm_zone);

    ln = ngx_http_toll_shm_limit_find(fl->shm_zone, fl->subject,
                                      fl->subject_len);

    /* found: its newlines would cut the log lines below in three */
    for (i = 0; i < fl->subject_len; i++) {
        fl->subject[i] = (fl->subject[i] == '\n') ? '/' : fl->subject[i];
    }

    if (ln && ln->uid == fl->uid) {
        st = (ngx_http_toll_meter_state_t *) ln->state;

        if (st->flush_id[0] == fl->flush_id[0]
            && st->flush_id[1] == fl->flush_id[1])
        {
            if (done) {
                /* in Redis, or never: the node no longer waits for it */
                ngx_http_toll_prepaid_flushed(fl->shm_zone, ln->subject,
                                              ln->subject_len,
                                              st->flight[TOLL_USAGE_PREPAID],
                                              !overflow);
            }

            ngx_http_toll_meter_settle(fl, st, reply, &m, &why, done,
                                       overflow);
        }
    }

    ngx_http_toll_shm_unlock(fl->shm_zone);

    ngx_free(fl);
}


/*
 * What Redis said of the batch in flight, said to the node (the zone
 * locked): confirmed, its counts are done with; refused or unanswered, it
 * is sent again, same id, next round.
 */

static void
ngx_http_toll_meter_settle(ngx_http_toll_meter_flush_t *fl,
    ngx_http_toll_meter_state_t *st, redisReply *reply,
    toll_reply_meter_t *m, ngx_str_t *why, ngx_uint_t done,
    ngx_uint_t overflow)
{
    ngx_uint_t  i;

    if (overflow) {
        /*
         * Redis cannot hold the sum: the batch would fail for ever and
         * hold back the node's later counts.  It is left out, every count
         * of it in the log; Redis holds nothing of it.
         */

        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "toll: meter overflow in redis at \"%V\", "
                      "batch of \"%*s\" left out: calls %L, "
                      "free_calls %L, paid_calls %L, "
                      "amount_micros %L, errors %L", why,
                      fl->subject_len, fl->subject,
                      st->flight[TOLL_USAGE_CALLS],
                      st->flight[TOLL_USAGE_FREE_CALLS],
                      st->flight[TOLL_USAGE_PAID_CALLS],
                      st->flight[TOLL_USAGE_AMOUNT],
                      st->flight[TOLL_USAGE_ERRORS]);

    } else if (!done && why->len && !st->refused
               && ngx_http_toll_redis_refusal(NGX_HTTP_TOLL_REDIS_METER,
                                              reply))
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "toll: redis refused the meter's batch of "
                      "\"%*s\", kept and sent again: %V%s",
                      fl->subject_len, fl->subject, why,
                      (m->rc == TOLL_REPLY_METER_NOT_INTEGER)
                      ? " is not an integer" : "");
        st->refused = 1;
    }

    if (done) {
        if (st->refused) {
            ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                          "toll: redis took the meter's batch of "
                          "\"%*s\"", fl->subject_len, fl->subject);
            st->refused = 0;
        }

        for (i = 0; i < TOLL_USAGE_COUNTS; i++) {
            st->flight[i] = 0;
        }

        st->flush_id[0] = 0;
        st->flush_id[1] = 0;

    } else {
        /* sent again, same id, next round */
        st->flush_at_ms = 0;
    }
}


static void
ngx_http_toll_meter_index_reply(void *data, redisReply *reply)
{
    /* an index entry lost now is written again with the next flush */

    if (reply && reply->type == REDIS_REPLY_ERROR
        && ngx_http_toll_redis_refusal(NGX_HTTP_TOLL_REDIS_METER, reply))
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "toll: redis refused the usage index: %*s",
                      (size_t) reply->len, reply->str);
    }
}
