/*
 * toll: the limits' rounds with Redis, and the limit script.
 *
 * Each worker's timer takes the subjects used since the last round and
 * sends each one's news to Redis in one script call (what this node
 * admitted, per bucket and window slot, and how many it has in flight);
 * the reply is the state of all nodes together, which replaces the
 * global part of the local state.  All calls of a round leave in one
 * write.  A strict request's call (ngx_http_toll_limit_strict.c) is built
 * and merged here too.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_limit.h"
#include "ngx_http_toll_limit_int.h"
#include "ngx_http_toll_redis.h"
#include "ngx_http_toll_shm.h"
#include "toll_names.h"
#include "toll_reply.h"


/* subjects one worker sends to Redis in one round */
#define NGX_HTTP_TOLL_SYNC_BATCH_MAX     256
/* a sync unanswered this long died with its worker: send it again */
#define NGX_HTTP_TOLL_SYNC_LOST_MS       10000
/* a node's in-flight count in Redis outlives this many rounds only */
#define NGX_HTTP_TOLL_SYNC_CONC_ROUNDS   20
#define NGX_HTTP_TOLL_SYNC_CONC_MIN_MS   2000
/* the text of a call's arguments: numbers, and each window's slots */
#define NGX_HTTP_TOLL_SYNC_TEXT_LEN      (NGX_HTTP_TOLL_SYNC_ARGS_MAX         \
                                          * NGX_INT64_LEN                     \
                                          + NGX_HTTP_TOLL_LIMIT_SUBJECT_MAX + 16)
#define NGX_HTTP_TOLL_SYNC_SLOTS_LEN     (TOLL_WINDOW_RING                    \
                                          * (NGX_INT64_LEN + NGX_INT32_LEN + 2))


static u_char *ngx_http_toll_limit_call_head(
    ngx_http_toll_limit_call_t *call, u_char *p,
    ngx_http_toll_shm_limit_node_t *ln, ngx_http_toll_limit_ctx_t *lctx,
    int64_t now_ms, ngx_uint_t *k, ngx_uint_t *n);
static u_char *ngx_http_toll_limit_call_bucket(
    ngx_http_toll_limit_call_t *call, u_char *p,
    ngx_http_toll_limit_state_t *st, int64_t *ttl_ms);
static u_char *ngx_http_toll_limit_call_window(
    ngx_http_toll_limit_call_t *call, u_char *p, u_char *last,
    toll_window_t *w, ngx_uint_t u, int64_t count, int64_t now_ms,
    int64_t *ttl_ms);
static u_char *ngx_http_toll_limit_call_conc(
    ngx_http_toll_limit_call_t *call, u_char *p,
    ngx_http_toll_limit_state_t *st, ngx_http_toll_limit_ctx_t *lctx,
    int64_t *ttl_ms);

static void ngx_http_toll_limit_layout(ngx_http_toll_limit_state_t *st,
    toll_reply_limit_layout_t *layout);
static ngx_int_t ngx_http_toll_limit_apply_gone(redisReply *reply,
    int64_t *verdict);
static void ngx_http_toll_limit_merge_bucket(ngx_http_toll_limit_state_t *st,
    int64_t tat_us);
static void ngx_http_toll_limit_merge_window(toll_window_t *w,
    toll_reply_limit_window_t *aw, ngx_uint_t u, int64_t now_ms);

static void ngx_http_toll_limit_sync_handler(ngx_event_t *ev);
static ngx_uint_t ngx_http_toll_limit_round(ngx_log_t *log, int64_t now,
    ngx_pool_t **pool, ngx_http_toll_limit_call_t ***calls);
static void ngx_http_toll_limit_sync_reply(void *data, redisReply *reply);


static ngx_event_t        ngx_http_toll_limit_sync_ev;
static ngx_connection_t   ngx_http_toll_limit_dumb;
static ngx_shm_zone_t    *ngx_http_toll_limit_zone;
static ngx_msec_t         ngx_http_toll_limit_sync_ms;
static ngx_uint_t         ngx_http_toll_limit_workers;
static u_char             ngx_http_toll_limit_node_id[NGX_MAXHOSTNAMELEN
                                                      + NGX_INT64_LEN + 2];
static size_t             ngx_http_toll_limit_node_id_len;



/* the letters of units in Redis fields */
static const char  ngx_http_toll_limit_units[TOLL_UNIT_N] = {
    's', 'm', 'h', 'd'
};


/* lua/limit.lua is the script, its keys and arguments in its comment */


ngx_int_t
ngx_http_toll_limit_init_process(ngx_cycle_t *cycle)
{
    u_char                      *p;
    ngx_pid_t                   master;
    ngx_core_conf_t            *ccf;
    ngx_http_toll_main_conf_t  *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_toll_module);

    if (mcf == NULL || mcf->shm_zone == NULL) {
        return NGX_OK;
    }

    ngx_http_toll_limit_zone = mcf->shm_zone;
    ngx_http_toll_limit_sync_ms = mcf->limit_sync;
    ngx_http_toll_limit_base = ngx_http_toll_shm_limit_clock(mcf->shm_zone)
                                   ->base_ms;

    ccf = (ngx_core_conf_t *) ngx_get_conf(cycle->conf_ctx, ngx_core_module);
    ngx_http_toll_limit_workers = (ngx_uint_t) ccf->worker_processes;

    ngx_http_toll_limit_proc = ngx_http_toll_shm_proc_claim(
                                   mcf->shm_zone, ngx_http_toll_limit_workers,
                                   &ngx_http_toll_limit_gen);

    if (ngx_http_toll_limit_proc == -1) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "toll: no room in zone \"%V\" for the table of worker "
                      "processes: this one does not count its requests in "
                      "flight until there is, increase \"toll_zone\"",
                      &mcf->shm_zone->shm.name);
    }

    /* a node is its master: workers of one nginx count as one node */

    master = (ngx_process == NGX_PROCESS_WORKER) ? getppid() : ngx_pid;

    p = ngx_snprintf(ngx_http_toll_limit_node_id,
                     sizeof(ngx_http_toll_limit_node_id), "%V-%P",
                     &cycle->hostname, master);
    ngx_http_toll_limit_node_id_len = p - ngx_http_toll_limit_node_id;

    ngx_http_toll_limit_dumb.fd = (ngx_socket_t) -1;

    ngx_http_toll_limit_sync_ev.handler = ngx_http_toll_limit_sync_handler;
    ngx_http_toll_limit_sync_ev.data = &ngx_http_toll_limit_dumb;
    ngx_http_toll_limit_sync_ev.log = cycle->log;
    ngx_http_toll_limit_sync_ev.cancelable = 1;

    ngx_add_timer(&ngx_http_toll_limit_sync_ev, ngx_http_toll_limit_sync_ms);

    return NGX_OK;
}


void
ngx_http_toll_limit_exit_process(ngx_cycle_t *cycle)
{
    if (ngx_http_toll_limit_zone == NULL) {
        return;
    }

    /*
     * What this worker admitted since the last round reaches Redis with
     * the next round of another worker: the counts are in the zone.
     */

    ngx_http_toll_shm_proc_release(ngx_http_toll_limit_zone,
                                   ngx_http_toll_limit_proc);
}



/*
 * Builds one script call for a subject (the zone locked): what the node
 * admitted since its last round moves from "pending" to "sent".  For a
 * strict request lctx gives the limits and their counts ("a" mode);
 * a round builds from the node alone ("s" mode).
 */

ngx_int_t
ngx_http_toll_limit_call(ngx_http_toll_limit_call_t *call, ngx_pool_t *pool,
    ngx_http_toll_shm_limit_node_t *ln, ngx_http_toll_limit_ctx_t *lctx,
    ngx_uint_t from, ngx_uint_t to, int64_t now_ms)
{
    u_char                       *p, *key, *buf, *last;
    size_t                        len;
    int64_t                       ttl_ms, count;
    ngx_uint_t                    u, nlimits, k, n, j;
    toll_window_t                *w;
    ngx_http_toll_limit_state_t  *st;

    st = (ngx_http_toll_limit_state_t *) ln->state;

    for (j = from; lctx && j < to; j++) {
        if (lctx->limits[j].rate->kind == NGX_HTTP_TOLL_RATE_BUCKET) {
            st->interval_ns = lctx->limits[j].rate->bc.interval_ns;
            st->tolerance_ns = lctx->limits[j].rate->bc.tolerance_ns;
        }
    }

    len = NGX_HTTP_TOLL_SYNC_TEXT_LEN
          + st->nwindows * NGX_HTTP_TOLL_SYNC_SLOTS_LEN;

    buf = ngx_pnalloc(pool, len);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    last = buf + len;

    p = ngx_http_toll_limit_call_head(call, buf, ln, lctx, now_ms, &k, &n);

    /* the TTL is filled in below, once the longest limit is known */
    ttl_ms = 1000;
    nlimits = 0;

    if (st->mask & NGX_HTTP_TOLL_MASK_BUCKET && st->interval_ns) {
        nlimits++;
        p = ngx_http_toll_limit_call_bucket(call, p, st, &ttl_ms);
    }

    for (u = 0; u < TOLL_UNIT_N; u++) {
        w = ngx_http_toll_limit_window(st, u);

        if (w == NULL) {
            continue;
        }

        count = 0;

        for (j = from; lctx && j < to; j++) {
            if (lctx->limits[j].rate->kind == NGX_HTTP_TOLL_RATE_WINDOW
                && lctx->limits[j].rate->unit == u)
            {
                count = lctx->limits[j].rate->count;
            }
        }

        nlimits++;
        p = ngx_http_toll_limit_call_window(call, p, last, w, u, count,
                                            now_ms, &ttl_ms);
    }

    if (st->mask & NGX_HTTP_TOLL_MASK_CONCURRENCY) {
        nlimits++;
        p = ngx_http_toll_limit_call_conc(call, p, st, lctx, &ttl_ms);
    }

    /* a margin for the nodes' clocks */
    ttl_ms += 1000;

    call->argv[k] = (const char *) p;
    key = p;
    p = ngx_sprintf(p, "%L", ttl_ms);
    call->argvlen[k] = p - key;

    call->argv[n] = (const char *) p;
    key = p;
    p = ngx_sprintf(p, "%ui", nlimits);
    call->argvlen[n] = p - key;

    st->sync_at_ms = now_ms;

    call->sync->uid = ln->uid;
    call->sync->ctx = NULL;
    call->sync->subject_len = ln->subject_len;
    ngx_memcpy(call->sync->subject, ln->subject, ln->subject_len);

    return NGX_OK;
}


#define ngx_http_toll_arg(start)                                              \
    call->argv[call->argc] = (const char *) (start);                          \
    call->argvlen[call->argc] = p - (start);                                  \
    call->argc++


/*
 * The script, its key and the fixed arguments; *k and *n are the places
 * of the TTL and of the number of limits, known only at the end.
 */

static u_char *
ngx_http_toll_limit_call_head(ngx_http_toll_limit_call_t *call, u_char *p,
    ngx_http_toll_shm_limit_node_t *ln, ngx_http_toll_limit_ctx_t *lctx,
    int64_t now_ms, ngx_uint_t *k, ngx_uint_t *n)
{
    u_char                     *key;
    ngx_http_toll_shm_clock_t  *clock;

    /* argv[0] and argv[1] are ngx_http_toll_redis_eval()'s */

    call->argv[2] = "1";
    call->argvlen[2] = 1;
    call->argc = 3;

    key = p;
    p = (u_char *) toll_name_tagged((char *) p, TOLL_NAME_LIMIT_PREFIX,
                                    (char *) ln->subject, ln->subject_len);
    ngx_http_toll_arg(key);

    key = p;
    *p++ = lctx ? 'a' : 's';
    ngx_http_toll_arg(key);

    key = p;
    p = ngx_sprintf(p, "%L", now_ms);
    ngx_http_toll_arg(key);

    *k = call->argc++;

    key = p;
    p = ngx_cpymem(p, ngx_http_toll_limit_node_id,
                   ngx_http_toll_limit_node_id_len);
    ngx_http_toll_arg(key);

    *n = call->argc++;

    clock = ngx_http_toll_shm_limit_clock(ngx_http_toll_limit_zone
                                          ? ngx_http_toll_limit_zone
                                          : lctx->shm_zone);
    key = p;

    if (clock->redis.known) {
        /* rounded down: a call may arrive late, never early */
        p = ngx_sprintf(p, "%L", clock->redis.offset_us >= 0
                                 ? clock->redis.offset_us / 1000
                                 : (clock->redis.offset_us - 999) / 1000);

    } else {
        *p++ = '-';
    }

    ngx_http_toll_arg(key);

    /* the reply's windows have as many slots as the zone's */

    call->argv[call->argc] = TOLL_STR(TOLL_WINDOW_SLOTS);
    call->argvlen[call->argc++] = sizeof(TOLL_STR(TOLL_WINDOW_SLOTS)) - 1;

    return p;
}


/* "b" n interval_us tolerance_us tat_us: the bucket's news */

static u_char *
ngx_http_toll_limit_call_bucket(ngx_http_toll_limit_call_t *call, u_char *p,
    ngx_http_toll_limit_state_t *st, int64_t *ttl_ms)
{
    u_char  *key;

    call->argv[call->argc] = "b";
    call->argvlen[call->argc++] = 1;

    key = p;
    p = ngx_sprintf(p, "%uD", st->pending);
    ngx_http_toll_arg(key);

    /* us, as the script counts, with the ns as decimals */
    key = p;
    p = ngx_sprintf(p, "%L.%03L", st->interval_ns / 1000,
                    st->interval_ns % 1000);
    ngx_http_toll_arg(key);

    key = p;
    p = ngx_sprintf(p, "%L", st->tolerance_ns / 1000);
    ngx_http_toll_arg(key);

    /*
     * With this node's tat, the script's sum is exact for a node that
     * is alone, however its requests were spread over the round, and
     * a Redis that restarted empty does not reopen the bucket.
     */

    key = p;
    p = ngx_sprintf(p, "%L", st->bucket.tat_ns / 1000);
    ngx_http_toll_arg(key);

    *ttl_ms = ngx_max(*ttl_ms, (st->tolerance_ns + st->interval_ns)
                               / 1000000);

    st->sent += st->pending;
    st->pending = 0;

    return p;
}


/* "w" unit slot_ms count "slot:n ...": a window's news, slot by slot */

static u_char *
ngx_http_toll_limit_call_window(ngx_http_toll_limit_call_t *call, u_char *p,
    u_char *last, toll_window_t *w, ngx_uint_t u, int64_t count,
    int64_t now_ms, int64_t *ttl_ms)
{
    u_char              *key;
    int64_t              slot;
    uint32_t             i;
    toll_window_conf_t   wc;

    (void) toll_window_conf(&wc, 1, toll_unit_ms[u]);

    /* a new window's ring starts at slot 0: bring it to now */
    toll_window_advance(&wc, w, now_ms);

    call->argv[call->argc] = "w";
    call->argvlen[call->argc++] = 1;
    call->argv[call->argc] = &ngx_http_toll_limit_units[u];
    call->argvlen[call->argc++] = 1;

    key = p;
    p = ngx_sprintf(p, "%L", wc.slot_ms);
    ngx_http_toll_arg(key);

    key = p;
    p = ngx_sprintf(p, "%L", count);
    ngx_http_toll_arg(key);

    key = p;

    for (slot = w->head - TOLL_WINDOW_SLOTS; slot <= w->head; slot++) {
        i = (uint32_t) (slot % TOLL_WINDOW_RING);

        if (w->pending[i] == 0) {
            continue;
        }

        if (p + NGX_INT64_LEN + NGX_INT32_LEN + 2 > last) {
            break;
        }

        p = ngx_sprintf(p, "%L:%uD ", slot, w->pending[i]);
        w->sent[i] += w->pending[i];
        w->pending[i] = 0;
    }

    if (p == key) {
        *p++ = '-';
    }

    ngx_http_toll_arg(key);

    *ttl_ms = ngx_max(*ttl_ms, toll_unit_ms[u] + wc.slot_ms);

    return p;
}


/* "c" in_flight expire_ms - -: this node's requests in flight */

static u_char *
ngx_http_toll_limit_call_conc(ngx_http_toll_limit_call_t *call, u_char *p,
    ngx_http_toll_limit_state_t *st, ngx_http_toll_limit_ctx_t *lctx,
    int64_t *ttl_ms)
{
    u_char   *key;
    int64_t   conc_ms;

    conc_ms = ngx_max(NGX_HTTP_TOLL_SYNC_CONC_MIN_MS,
                      (int64_t) ngx_http_toll_limit_sync_ms
                      * NGX_HTTP_TOLL_SYNC_CONC_ROUNDS);

    call->argv[call->argc] = "c";
    call->argvlen[call->argc++] = 1;

    key = p;
    p = ngx_sprintf(p, "%L", ngx_http_toll_limit_inflight(
                                 ngx_http_toll_limit_zone
                                 ? ngx_http_toll_limit_zone
                                 : lctx->shm_zone, st));
    ngx_http_toll_arg(key);

    key = p;
    p = ngx_sprintf(p, "%L", conc_ms);
    ngx_http_toll_arg(key);

    call->argv[call->argc] = "-";
    call->argvlen[call->argc++] = 1;
    call->argv[call->argc] = "-";
    call->argvlen[call->argc++] = 1;

    *ttl_ms = ngx_max(*ttl_ms, conc_ms);

    return p;
}


#undef ngx_http_toll_arg


/*
 * Takes Redis's answer for a subject into its state: the global part of
 * each bucket and window is replaced, what was sent is now in it.
 * NGX_DECLINED: no usable answer (what was sent is pending again).  The
 * answer is read by toll_reply_limit() (lib/toll_reply.c), which the
 * fuzzer runs; *verdict (if not NULL) is its verdict, -1 if it has none.
 */

ngx_int_t
ngx_http_toll_limit_apply(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_limit_sync_t *sync, redisReply *reply, int64_t now_ms,
    int64_t *verdict)
{
    ngx_uint_t                       u;
    toll_window_t                   *w;
    toll_reply_limit_t               a;
    toll_reply_limit_layout_t        layout;
    ngx_http_toll_limit_state_t     *st;
    ngx_http_toll_shm_limit_node_t  *ln;

    if (verdict) {
        *verdict = -1;
    }

    ngx_http_toll_shm_lock(shm_zone);

    ln = ngx_http_toll_shm_limit_find(shm_zone, sync->subject,
                                      sync->subject_len);

    if (ln == NULL || ln->uid != sync->uid) {
        /* evicted or made again since: nothing to update */
        ngx_http_toll_shm_unlock(shm_zone);

        return ngx_http_toll_limit_apply_gone(reply, verdict);
    }

    st = (ngx_http_toll_limit_state_t *) ln->state;
    st->sync_at_ms = 0;

    ngx_http_toll_limit_layout(st, &layout);

    toll_reply_limit(reply, &layout, &a);

    if (a.rc != TOLL_REPLY_LIMIT_OK) {

        if (a.rc == TOLL_REPLY_LIMIT_ERROR
                   && ngx_http_toll_redis_refusal(NGX_HTTP_TOLL_REDIS_LIMIT,
                                                  reply))
        {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "toll: redis refused a limit sync: %*s",
                          (size_t) reply->len, reply->str);
        }

        ngx_http_toll_limit_unsend(st);
        ngx_http_toll_shm_limit_touch(shm_zone, ln);

        ngx_http_toll_shm_unlock(shm_zone);

        return NGX_DECLINED;
    }

    if (verdict) {
        *verdict = a.verdict;
    }

    /*
     * What Redis read minus when the call was built: a steady estimate
     * matters, as each change of it moves this node's times in Redis's
     * eyes, and a bucket keeps the latest of two times.
     */

    toll_clock_sample(&ngx_http_toll_shm_limit_clock(shm_zone)->redis,
                      a.offset_ms);

    if (layout.bucket) {
        ngx_http_toll_limit_merge_bucket(st, a.tat_us);
    }

    for (u = 0; u < TOLL_UNIT_N; u++) {
        w = ngx_http_toll_limit_window(st, u);

        if (w != NULL) {
            ngx_http_toll_limit_merge_window(w, &a.window[u], u, now_ms);
        }
    }

    if (a.has_inflight) {
        st->remote_inflight = a.inflight;
    }

    if (st->pending) {
        ngx_http_toll_shm_limit_touch(shm_zone, ln);
    }

    ngx_http_toll_shm_unlock(shm_zone);

    return NGX_OK;
}


/* what the node sent, in the order of the script's answer */

static void
ngx_http_toll_limit_layout(ngx_http_toll_limit_state_t *st,
    toll_reply_limit_layout_t *layout)
{
    ngx_uint_t  u;

    layout->bucket = (st->mask & NGX_HTTP_TOLL_MASK_BUCKET && st->interval_ns)
                     ? 1 : 0;
    layout->concurrency = (st->mask & NGX_HTTP_TOLL_MASK_CONCURRENCY) ? 1 : 0;
    layout->windows = 0;

    for (u = 0; u < TOLL_UNIT_N; u++) {
        if (ngx_http_toll_limit_window(st, u)) {
            layout->windows |= 1u << u;
        }
    }
}


/* an answer for a subject no longer in the zone: only its verdict counts */

static ngx_int_t
ngx_http_toll_limit_apply_gone(redisReply *reply, int64_t *verdict)
{
    toll_reply_limit_t  a;

    toll_reply_limit(reply, NULL, &a);

    if (verdict && a.has_verdict) {
        *verdict = a.verdict;
    }

    return (a.rc == TOLL_REPLY_LIMIT_OK) ? NGX_OK : NGX_DECLINED;
}


/*
 * All nodes' tat, plus what this node admitted since it sent; but never
 * less than this node's own: its requests are all counted there, and
 * Redis may have lost some (a restart).
 */

static void
ngx_http_toll_limit_merge_bucket(ngx_http_toll_limit_state_t *st,
    int64_t tat_us)
{
    int64_t  tat;

    tat = tat_us * 1000 + (int64_t) st->pending * st->interval_ns;

    if (tat > st->bucket.tat_ns) {
        st->bucket.tat_ns = tat;
    }

    st->sent = 0;
}


/* the answer's slots of one window replace its global counts */

static void
ngx_http_toll_limit_merge_window(toll_window_t *w,
    toll_reply_limit_window_t *aw, ngx_uint_t u, int64_t now_ms)
{
    int64_t             slot;
    ngx_uint_t          i, j;
    toll_window_conf_t  wc;

    (void) toll_window_conf(&wc, 1, toll_unit_ms[u]);

    /*
     * The answer's slots are on this node's clock, give or take one
     * (Redis's clock is moved by whole slots): the ring goes to now,
     * never past it, and a slot newer than now waits for the next
     * round.
     */

    toll_window_advance(&wc, w, now_ms);

    /*
     * Redis's count of a slot includes what was sent; it is never taken
     * below what this node knew, so a Redis that restarted empty does
     * not reopen the window.
     */

    for (j = 0; j < TOLL_WINDOW_RING; j++) {
        slot = aw->head - TOLL_WINDOW_SLOTS + (int64_t) j;

        if (slot < w->head - TOLL_WINDOW_SLOTS || slot > w->head
            || !aw->known[j])
        {
            continue;
        }

        i = (ngx_uint_t) (slot % TOLL_WINDOW_RING);

        w->global[i] = (uint32_t) ngx_max((int64_t) aw->count[j],
                                          (int64_t) w->global[i]
                                          + w->sent[i]);
        w->sent[i] = 0;
    }

    /* slots the answer did not cover keep what was sent as known */

    for (j = 0; j < TOLL_WINDOW_RING; j++) {
        w->global[j] += w->sent[j];
        w->sent[j] = 0;
    }
}


static void
ngx_http_toll_limit_sync_handler(ngx_event_t *ev)
{
    int64_t                       now;
    ngx_uint_t                    i, n;
    ngx_pool_t                   *pool;
    ngx_http_toll_limit_call_t   *call, **calls;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        /* what is left in the zone goes with another worker's round */
        return;
    }

    pool = NULL;
    calls = NULL;
    now = ngx_http_toll_limit_now();

    if (ngx_http_toll_limit_proc == -1) {
        /* the zone had no room for the table: it may have now */
        ngx_http_toll_limit_proc = ngx_http_toll_shm_proc_claim(
                                       ngx_http_toll_limit_zone,
                                       ngx_http_toll_limit_workers,
                                       &ngx_http_toll_limit_gen);
    }

    ngx_http_toll_shm_lock(ngx_http_toll_limit_zone);

    /* places held by killed workers stop counting within a second */
    ngx_http_toll_shm_proc_reap(ngx_http_toll_limit_zone);

    n = ngx_http_toll_limit_round(ev->log, now, &pool, &calls);

    ngx_http_toll_shm_unlock(ngx_http_toll_limit_zone);

    /* issued in one tick, these leave in one write */

    for (i = 0; i < n; i++) {
        call = calls[i];

        if (ngx_http_toll_redis_eval(TOLL_SCRIPT_LIMIT,
                                     ngx_http_toll_limit_sync_reply,
                                     call->sync, (int) call->argc,
                                     call->argv, call->argvlen)
            == NULL)
        {
            /* Redis is away: the counts wait in the zone */
            (void) ngx_http_toll_limit_apply(ngx_http_toll_limit_zone,
                                             call->sync, NULL, now, NULL);
            ngx_free(call->sync);
        }
    }

    if (pool) {
        ngx_destroy_pool(pool);
    }

    ngx_add_timer(ev, ngx_http_toll_limit_sync_ms);
}


/*
 * A round's calls, one per subject with news, up to a batch (the zone
 * locked); the pool and the table of calls are made with the first.
 * Returns how many.
 */

static ngx_uint_t
ngx_http_toll_limit_round(ngx_log_t *log, int64_t now, ngx_pool_t **pool,
    ngx_http_toll_limit_call_t ***calls)
{
    ngx_uint_t                        n;
    ngx_http_toll_limit_call_t       *call;
    ngx_http_toll_limit_state_t      *st;
    ngx_http_toll_shm_limit_node_t   *ln;

    n = 0;

    while (n < NGX_HTTP_TOLL_SYNC_BATCH_MAX) {
        ln = ngx_http_toll_shm_limit_next_sync(ngx_http_toll_limit_zone);

        if (ln == NULL) {
            break;
        }

        st = (ngx_http_toll_limit_state_t *) ln->state;

        if (st->sync_at_ms) {
            if (now - st->sync_at_ms < NGX_HTTP_TOLL_SYNC_LOST_MS) {
                /* its reply re-queues it if it has more to say */
                continue;
            }

            /* its worker died waiting: a count may arrive twice */
            ngx_http_toll_limit_unsend(st);
        }

        if (*pool == NULL) {
            /* the pool may call malloc(): rare, and only with work */
            *pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, log);

            *calls = *pool ? ngx_palloc(*pool, NGX_HTTP_TOLL_SYNC_BATCH_MAX
                                               * sizeof(void *))
                           : NULL;
        }

        call = *calls ? ngx_pcalloc(*pool,
                                    sizeof(ngx_http_toll_limit_call_t))
                      : NULL;

        if (call) {
            /* outlives the round: freed by the reply */
            call->sync = ngx_alloc(sizeof(ngx_http_toll_limit_sync_t), log);
        }

        if (call == NULL || call->sync == NULL
            || ngx_http_toll_limit_call(call, *pool, ln, NULL, 0, 0, now)
               != NGX_OK)
        {
            if (call && call->sync) {
                ngx_free(call->sync);
            }

            ngx_http_toll_shm_limit_touch(ngx_http_toll_limit_zone, ln);
            break;
        }

        call->sync->shm_zone = ngx_http_toll_limit_zone;
        (*calls)[n++] = call;
    }

    return n;
}


static void
ngx_http_toll_limit_sync_reply(void *data, redisReply *reply)
{
    ngx_http_toll_limit_sync_t *sync = data;

    (void) ngx_http_toll_limit_apply(sync->shm_zone, sync, reply,
                                     ngx_http_toll_limit_now(), NULL);
    ngx_free(sync);
}
