/*
 * toll: the meter.
 *
 * A call opens a record in the shared zone as it passes the gate (the zone
 * outlives a crashed worker and a reload); when it ends, the record goes
 * and what the call turned out to be is counted into a node of the zone,
 * then flushed by whichever worker's timer takes the node next.  Only
 * final counts leave the node, so nothing the meter sends is ever taken
 * back: a count in Redis is never negative, whatever the ledger drained
 * meanwhile.  The records of a worker that died are counted as the gate
 * saw them.  A flush moves the node's pending counts into its
 * "in flight" counts under a new flush id; until Redis confirms that id,
 * every retry sends the same counts under the same id, and the script in
 * Redis applies an id once.  So a timed-out write that Redis did apply,
 * a worker that died waiting, or a lost connection count nothing twice.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_meter.h"
#include "ngx_http_toll_counters.h"
#include "ngx_http_toll_quota.h"
#include "ngx_http_toll_redis.h"
#include "ngx_http_toll_shm.h"
#include "toll_money.h"
#include "toll_reply.h"


/* nodes one worker flushes in one round */
#define NGX_HTTP_TOLL_METER_BATCH_MAX    512
/* a flush unanswered this long is sent again, under the same id */
#define NGX_HTTP_TOLL_METER_RETRY_MS     5000
/* while exiting: flush every so often, and give up after a while */
#define NGX_HTTP_TOLL_METER_EXIT_TICK_MS 50
#define NGX_HTTP_TOLL_METER_EXIT_MAX_MS  5000
/* script arguments: EVALSHA, sha, numkeys, 3 keys, 17 values */
#define NGX_HTTP_TOLL_METER_ARGS         23
/* how often a worker looks for the open calls of workers that died */
#define NGX_HTTP_TOLL_METER_SWEEP_MS     1000
/* the distinct processes one sweep asks about */
#define NGX_HTTP_TOLL_METER_SWEEP_PIDS   64


typedef enum {
    NGX_HTTP_TOLL_METER_CALLS = 0,   /* NGX_HTTP_TOLL_METER_COUNTS of them */
    NGX_HTTP_TOLL_METER_FREE_CALLS,
    NGX_HTTP_TOLL_METER_PAID_CALLS,
    NGX_HTTP_TOLL_METER_AMOUNT,                /* micro-units */
    NGX_HTTP_TOLL_METER_ERRORS,
    NGX_HTTP_TOLL_METER_LATENCY_MS,
    NGX_HTTP_TOLL_METER_N
} ngx_http_toll_meter_field_e;


#if (NGX_HTTP_TOLL_METER_COUNTS != 6)
#error "the request context keeps a meter count per field"
#endif


typedef struct {
    int64_t                    pending[NGX_HTTP_TOLL_METER_N];
    int64_t                    flight[NGX_HTTP_TOLL_METER_N];
    uint64_t                   flush_id[2];   /* {0, 0}: none in flight */
    int64_t                    flush_at_ms;
    ngx_uint_t                 open;          /* calls between the gate
                                                 and their end */
    ngx_uint_t                 refused;       /* Redis refuses the batch
                                                 in flight: said once */
} ngx_http_toll_meter_state_t;


/*
 * A call between the gate and its end, in the zone: its counts as the
 * gate priced it, and the process that serves it.  A worker that dies
 * leaves its records; another worker counts them (the call may have
 * reached the upstream) and frees them.
 */
struct ngx_http_toll_meter_open_s {
    ngx_queue_t                       queue;     /* in the registry */
    ngx_http_toll_shm_limit_node_t   *ln;        /* pinned while open */
    ngx_pid_t                         pid;
    int64_t                           counts[NGX_HTTP_TOLL_METER_N];
};


/* the registry of open calls: a node of its own, pinned for ever */
typedef struct {
    ngx_queue_t                open;
    ngx_uint_t                 n;
} ngx_http_toll_meter_registry_t;

#define NGX_HTTP_TOLL_METER_REGISTRY     "m:open"


/* a flush on its way: enough to find the node and its id again */
typedef struct {
    ngx_shm_zone_t            *shm_zone;
    uint64_t                   uid;
    uint64_t                   flush_id[2];
    size_t                     subject_len;
    u_char                     subject[NGX_HTTP_TOLL_NODE_SUBJECT_MAX];
} ngx_http_toll_meter_flush_t;


static void ngx_http_toll_meter_counts(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_uint_t reached, int64_t *counts);
static ngx_http_toll_meter_registry_t *ngx_http_toll_meter_registry(
    ngx_shm_zone_t *shm_zone);
static ngx_http_toll_shm_limit_node_t *ngx_http_toll_meter_node(
    ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx);
static void ngx_http_toll_meter_end(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_meter_open_t *op, int64_t *final, ngx_log_t *log);
static void ngx_http_toll_meter_sweep(int64_t now, ngx_log_t *log);
static void ngx_http_toll_meter_timer(ngx_event_t *ev);
static ngx_int_t ngx_http_toll_meter_send(ngx_http_toll_meter_flush_t *fl,
    ngx_http_toll_shm_limit_node_t *ln, ngx_pool_t *pool);
static void ngx_http_toll_meter_reply(void *data, redisReply *reply);
static void ngx_http_toll_meter_index_reply(void *data, redisReply *reply);


static ngx_event_t        ngx_http_toll_meter_ev;
static ngx_connection_t   ngx_http_toll_meter_dumb;
static ngx_shm_zone_t    *ngx_http_toll_meter_zone;
static ngx_msec_t         ngx_http_toll_meter_flush_ms;
static int64_t            ngx_http_toll_meter_exit_at_ms;
static u_char             ngx_http_toll_meter_day[8];     /* YYYYMMDD */
static time_t             ngx_http_toll_meter_day_sec = -1;
/* this process's flushes still waiting for Redis */
static ngx_uint_t         ngx_http_toll_meter_inflight;
static int64_t            ngx_http_toll_meter_swept_ms;
static ngx_http_toll_meter_registry_t  *ngx_http_toll_meter_reg;

/* flush ids: a random number per worker process, then a count */
static uint64_t           ngx_http_toll_meter_id_prefix;
static uint64_t           ngx_http_toll_meter_id_seq;

static u_char             ngx_http_toll_meter_script_sha[40];
static ngx_uint_t         ngx_http_toll_meter_script_cached;


/*
 * KEYS: the buyer's usage hash of the day, the ids of the flushes it has
 * taken, and the days it has usage of.  ARGV: flush id, now (unix s),
 * service, provider, the six counts, the day, then for each count the
 * most the hash may hold before it (2^63 - 1 - count).
 *
 * All or nothing: every check comes before the first write, since Redis
 * does not undo the writes a failing script made.  A count the hash
 * cannot take is answered {1, field} (not an integer: the batch waits)
 * or {2, field} (the sum would overflow).  Amounts go to HINCRBY as the
 * strings they came as, and the bound is compared as a decimal string:
 * no Lua number ever holds one.  The counts the meter sends are never
 * negative.
 */

static ngx_str_t  ngx_http_toll_meter_script = ngx_string(
"if redis.call('ZSCORE',KEYS[2],ARGV[1]) then return 0 end "
"local s=ARGV[3] "
"local f={':calls',':free_calls',':paid_calls',':amount_micros',"
         "':errors',':latency_ms'} "
"for i=1,6 do "
  "local v=redis.call('HGET',KEYS[1],s..f[i]) "
  "if v then "
    "if #v>20 or (v~='0' and not string.match(v,'^%-?[1-9]%d*$')) then "
      "return {1,s..f[i]} end "
    "local m=ARGV[11+i] "
    "if string.sub(v,1,1)~='-' and (#v>#m or (#v==#m and v>m)) then "
      "return {2,s..f[i]} end "
  "end "
"end "
"redis.call('SADD',KEYS[3],ARGV[11]) "
"for i=1,6 do redis.call('HINCRBY',KEYS[1],s..f[i],ARGV[4+i]) end "
"redis.call('HSET',KEYS[1],s..':provider',ARGV[4]) "
"redis.call('ZADD',KEYS[2],ARGV[2],ARGV[1]) "
"redis.call('ZREMRANGEBYSCORE',KEYS[2],'-inf',tonumber(ARGV[2])-604800) "
"redis.call('EXPIRE',KEYS[2],691200) "
"return 1");


ngx_int_t
ngx_http_toll_meter_init_process(ngx_cycle_t *cycle)
{
    u_char                      sha[20];
    ngx_http_toll_main_conf_t  *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_toll_module);

    if (mcf == NULL || mcf->shm_zone == NULL) {
        return NGX_OK;
    }

    if (RAND_bytes((u_char *) &ngx_http_toll_meter_id_prefix,
                   sizeof(ngx_http_toll_meter_id_prefix))
        != 1
        || EVP_Digest(ngx_http_toll_meter_script.data,
                      ngx_http_toll_meter_script.len, sha, NULL, EVP_sha1(),
                      NULL)
           != 1)
    {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "toll: libcrypto failed to start the meter");
        return NGX_ERROR;
    }

    ngx_hex_dump(ngx_http_toll_meter_script_sha, sha, sizeof(sha));

    ngx_http_toll_meter_zone = mcf->shm_zone;
    ngx_http_toll_meter_flush_ms = mcf->meter_flush;

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

    ngx_add_timer(&ngx_http_toll_meter_ev, ngx_http_toll_meter_flush_ms);

    return NGX_OK;
}


/*
 * A priced call opens its record as it passes the gate, priced as if it
 * will reach the upstream and be charged: a worker killed while the call
 * is upstream then loses nothing, since the zone has it.  Nothing of it
 * leaves the zone before the call ends: the log phase counts what it
 * turned out to be (not sent upstream, an upstream error not charged, a
 * free call given back, its latency), so no count the meter sends ever
 * has to be taken back.  A zone that cannot hold the record refuses the
 * call: an unmetered call would be a free one.
 */

ngx_int_t
ngx_http_toll_meter_admit(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    ngx_str_t                         service, provider;
    ngx_http_toll_main_conf_t        *mcf;
    ngx_http_toll_meter_open_t       *op;
    ngx_http_toll_meter_state_t      *st;
    ngx_http_toll_meter_registry_t   *reg;
    ngx_http_toll_shm_limit_node_t   *ln;

    if (!ctx->priced || ctx->service == NULL || ctx->meter_admitted) {
        return NGX_OK;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    ngx_http_toll_meter_counts(r, ctx, 1, ctx->meter_counts);

    /* the latency is known only at the end */
    ctx->meter_counts[NGX_HTTP_TOLL_METER_LATENCY_MS] = 0;

    ngx_http_toll_shm_lock(mcf->shm_zone);

    op = NULL;
    reg = ngx_http_toll_meter_registry(mcf->shm_zone);
    ln = (reg != NULL) ? ngx_http_toll_meter_node(r, ctx) : NULL;

    if (ln != NULL) {
        /* the node cannot be evicted while the record is made */
        ln->pins = 1;
        op = ngx_http_toll_shm_alloc(mcf->shm_zone,
                                     sizeof(ngx_http_toll_meter_open_t));
    }

    if (op == NULL) {
        if (ln != NULL) {
            /* the timer unpins it if it holds nothing */
            ngx_http_toll_shm_enqueue(mcf->shm_zone, ln,
                                      NGX_HTTP_TOLL_QUEUE_METER);
        }

        ngx_http_toll_shm_unlock(mcf->shm_zone);

        ngx_http_toll_quota_names(ctx, &service, &provider);

        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "toll: zone full, call refused: buyer \"%V\", "
                      "service \"%V\"; increase \"toll_zone\"",
                      &ctx->key.owner, &service);
        return NGX_DECLINED;
    }

    op->ln = ln;
    op->pid = ngx_pid;
    ngx_memcpy(op->counts, ctx->meter_counts, sizeof(op->counts));

    ngx_queue_insert_tail(&reg->open, &op->queue);
    reg->n++;

    st = (ngx_http_toll_meter_state_t *) ln->state;
    st->open++;

    ngx_http_toll_shm_unlock(mcf->shm_zone);

    ctx->meter_open = op;
    ctx->meter_admitted = 1;

    return NGX_OK;
}


/*
 * The call moves to another location's price: its record goes with
 * nothing counted (nothing of it left the zone), so that only the new
 * price is ever counted.
 */

void
ngx_http_toll_meter_unadmit(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    int64_t                      none[NGX_HTTP_TOLL_METER_N];
    ngx_http_toll_main_conf_t   *mcf;

    if (!ctx->meter_admitted) {
        return;
    }

    if (ctx->meter_open != NULL) {
        mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

        ngx_memzero(none, sizeof(none));

        ngx_http_toll_shm_lock(mcf->shm_zone);
        ngx_http_toll_meter_end(mcf->shm_zone, ctx->meter_open, none,
                                r->connection->log);
        ngx_http_toll_shm_unlock(mcf->shm_zone);

        ctx->meter_open = NULL;
    }

    ngx_memzero(ctx->meter_counts, sizeof(ctx->meter_counts));
    ctx->meter_admitted = 0;
}


/* the log phase: what the call turned out to be */

void
ngx_http_toll_meter_log(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    int64_t                      final[NGX_HTTP_TOLL_METER_N];
    ngx_uint_t                   reached;
    ngx_http_toll_main_conf_t   *mcf;

    if (!ctx->meter_admitted || ctx->metered) {
        return;
    }

    ctx->metered = 1;

    /* a call nginx never sent upstream is no call */

    reached = (r->upstream_states && r->upstream_states->nelts);

    if (!reached) {
        ngx_http_toll_quota_unused(r, ctx);
    }

    ngx_http_toll_meter_counts(r, ctx, reached, final);

    ngx_http_toll_counters_metered(ctx, final[NGX_HTTP_TOLL_METER_FREE_CALLS],
                                   final[NGX_HTTP_TOLL_METER_PAID_CALLS],
                                   final[NGX_HTTP_TOLL_METER_AMOUNT]);

    if (ctx->meter_open == NULL) {
        return;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    ngx_http_toll_shm_lock(mcf->shm_zone);
    ngx_http_toll_meter_end(mcf->shm_zone, ctx->meter_open, final,
                            r->connection->log);
    ngx_http_toll_shm_unlock(mcf->shm_zone);

    ctx->meter_open = NULL;
}


/*
 * The request's pool goes with a record the log phase did not end (it
 * always does; this is the last guard): counted as the gate priced it,
 * as for a worker that died.
 */

void
ngx_http_toll_meter_cleanup(ngx_http_toll_ctx_t *ctx)
{
    ngx_http_toll_meter_open_t  *op;

    op = ctx->meter_open;

    if (op == NULL || ngx_http_toll_meter_zone == NULL) {
        return;
    }

    ctx->meter_open = NULL;

    ngx_http_toll_shm_lock(ngx_http_toll_meter_zone);
    ngx_http_toll_meter_end(ngx_http_toll_meter_zone, op, op->counts,
                            ngx_cycle->log);
    ngx_http_toll_shm_unlock(ngx_http_toll_meter_zone);
}


/* what a call counts for, as it stands */

static void
ngx_http_toll_meter_counts(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_uint_t reached, int64_t *counts)
{
    if (!reached) {
        ngx_memzero(counts, NGX_HTTP_TOLL_METER_N * sizeof(int64_t));
        return;
    }

    counts[NGX_HTTP_TOLL_METER_CALLS] = 1;
    counts[NGX_HTTP_TOLL_METER_ERRORS] =
        (r->headers_out.status >= NGX_HTTP_INTERNAL_SERVER_ERROR);
    counts[NGX_HTTP_TOLL_METER_AMOUNT] = ctx->amount_micros;
    counts[NGX_HTTP_TOLL_METER_PAID_CALLS] = (ctx->amount_micros > 0);
    counts[NGX_HTTP_TOLL_METER_FREE_CALLS] = (ctx->free_call
                                              && ctx->amount_micros == 0);
    counts[NGX_HTTP_TOLL_METER_LATENCY_MS] = ctx->latency_ms;
}


/* the open calls' registry, made on first use (the zone locked) */

static ngx_http_toll_meter_registry_t *
ngx_http_toll_meter_registry(ngx_shm_zone_t *shm_zone)
{
    ngx_http_toll_meter_registry_t  *reg;
    ngx_http_toll_shm_limit_node_t  *ln;

    /* pinned, the node never moves nor goes: found once per process */

    if (ngx_http_toll_meter_reg != NULL) {
        return ngx_http_toll_meter_reg;
    }

    ln = ngx_http_toll_shm_limit_find(shm_zone,
             (u_char *) NGX_HTTP_TOLL_METER_REGISTRY,
             sizeof(NGX_HTTP_TOLL_METER_REGISTRY) - 1);

    if (ln == NULL) {
        ln = ngx_http_toll_shm_limit_create(shm_zone,
                 (u_char *) NGX_HTTP_TOLL_METER_REGISTRY,
                 sizeof(NGX_HTTP_TOLL_METER_REGISTRY) - 1,
                 sizeof(ngx_http_toll_meter_registry_t));
        if (ln == NULL) {
            return NULL;
        }

        reg = (ngx_http_toll_meter_registry_t *) ln->state;
        ngx_queue_init(&reg->open);

        /* never evicted: the records of calls hang from it */
        ln->pins = 1;
    }

    ngx_http_toll_meter_reg = (ngx_http_toll_meter_registry_t *) ln->state;

    return ngx_http_toll_meter_reg;
}


/* the node of a call's buyer, service, provider and day (zone locked) */

static ngx_http_toll_shm_limit_node_t *
ngx_http_toll_meter_node(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    u_char                           *p;
    u_char                            subject[NGX_HTTP_TOLL_NODE_SUBJECT_MAX];
    size_t                            len;
    ngx_tm_t                          tm;
    ngx_str_t                         service, provider;
    ngx_http_toll_main_conf_t        *mcf;
    ngx_http_toll_shm_limit_node_t   *ln;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    ngx_http_toll_quota_names(ctx, &service, &provider);

    len = sizeof("m:YYYYMMDD:\n\n") - 1 + ctx->key.owner.len + service.len
          + provider.len;

    if (len > sizeof(subject)) {
        /* the names are bounded: cannot happen */
        return NULL;
    }

    /* the call's day, in UTC, from when it arrived; worked out once a
       second rather than per call */

    if (r->start_sec != ngx_http_toll_meter_day_sec) {
        ngx_gmtime(r->start_sec, &tm);
        ngx_sprintf(ngx_http_toll_meter_day, "%04d%02d%02d",
                    tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday);
        ngx_http_toll_meter_day_sec = r->start_sec;
    }

    p = ngx_cpymem(subject, "m:", 2);
    p = ngx_cpymem(p, ngx_http_toll_meter_day, 8);
    *p++ = ':';
    p = ngx_cpymem(p, ctx->key.owner.data, ctx->key.owner.len);
    *p++ = '\n';
    p = ngx_cpymem(p, service.data, service.len);
    *p++ = '\n';
    p = ngx_cpymem(p, provider.data, provider.len);

    ln = ngx_http_toll_shm_limit_find(mcf->shm_zone, subject, p - subject);

    if (ln == NULL) {
        ln = ngx_http_toll_shm_limit_create(mcf->shm_zone, subject,
                   p - subject, sizeof(ngx_http_toll_meter_state_t));
    }

    return ln;
}


/*
 * Ends an open call (the zone locked): its record goes, and its final
 * counts join the node's pending ones.  The node stays queued, so that
 * the timer flushes it or, with nothing left, lets it be evicted.
 */

static void
ngx_http_toll_meter_end(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_meter_open_t *op, int64_t *final, ngx_log_t *log)
{
    ngx_uint_t                        i;
    int64_t                           sum[NGX_HTTP_TOLL_METER_N];
    ngx_http_toll_meter_state_t      *st;
    ngx_http_toll_meter_registry_t   *reg;
    ngx_http_toll_shm_limit_node_t   *ln;

    ln = op->ln;
    st = (ngx_http_toll_meter_state_t *) ln->state;

    reg = ngx_http_toll_meter_registry(shm_zone);
    if (reg != NULL && reg->n) {
        reg->n--;
    }

    ngx_queue_remove(&op->queue);

    if (st->open) {
        st->open--;
    }

    /*
     * Never a wrapped sum: a batch that cannot hold the call leaves it
     * out, loudly (a day's amount above 9.2e12 units of one buyer and
     * service would be refused by Redis as well).
     */

    for (i = 0; i < NGX_HTTP_TOLL_METER_N; i++) {
        if (toll_money_add(st->pending[i], final[i], &sum[i]) != 0) {
            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          "toll: meter overflow, call not metered: "
                          "\"%*s\", amount_micros %L",
                          (size_t) ln->subject_len, ln->subject,
                          final[NGX_HTTP_TOLL_METER_AMOUNT]);
            break;
        }
    }

    if (i == NGX_HTTP_TOLL_METER_N) {
        ngx_memcpy(st->pending, sum, sizeof(sum));
    }

    ngx_http_toll_shm_free(shm_zone, op);

    ngx_http_toll_shm_enqueue(shm_zone, ln, NGX_HTTP_TOLL_QUEUE_METER);
}


/*
 * The open calls of workers that died (the zone locked): counted as the
 * gate priced them, since they may have reached the upstream.
 */

static void
ngx_http_toll_meter_sweep(int64_t now, ngx_log_t *log)
{
    ngx_uint_t                        i, n, dead, counted;
    ngx_pid_t                         pids[NGX_HTTP_TOLL_METER_SWEEP_PIDS];
    ngx_uint_t                        alive[NGX_HTTP_TOLL_METER_SWEEP_PIDS];
    ngx_queue_t                      *q, *next;
    ngx_http_toll_meter_open_t       *op;
    ngx_http_toll_meter_registry_t   *reg;

    if (now - ngx_http_toll_meter_swept_ms < NGX_HTTP_TOLL_METER_SWEEP_MS) {
        return;
    }

    ngx_http_toll_meter_swept_ms = now;

    reg = ngx_http_toll_meter_registry(ngx_http_toll_meter_zone);
    if (reg == NULL) {
        return;
    }

    n = 0;
    counted = 0;

    for (q = ngx_queue_head(&reg->open);
         q != ngx_queue_sentinel(&reg->open);
         q = next)
    {
        next = ngx_queue_next(q);
        op = ngx_queue_data(q, ngx_http_toll_meter_open_t, queue);

        if (op->pid == ngx_pid) {
            continue;
        }

        for (i = 0; i < n; i++) {
            if (pids[i] == op->pid) {
                break;
            }
        }

        if (i == n) {
            if (n == NGX_HTTP_TOLL_METER_SWEEP_PIDS) {
                /* the next sweep asks about the others */
                continue;
            }

            pids[n] = op->pid;
            alive[n] = !ngx_http_toll_shm_pid_dead(op->pid);
            n++;
        }

        if (alive[i]) {
            continue;
        }

        ngx_http_toll_meter_end(ngx_http_toll_meter_zone, op, op->counts,
                                log);
        counted++;
    }

    if (counted) {
        dead = 0;

        for (i = 0; i < n; i++) {
            dead += !alive[i];
        }

        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "toll: %ui calls open in %ui worker processes that "
                      "exited without ending them counted at their price",
                      counted, dead);
    }
}


static void
ngx_http_toll_meter_timer(ngx_event_t *ev)
{
    int64_t                           now;
    ngx_uint_t                        i, n, k, sent;
    ngx_pool_t                       *pool;
    ngx_http_toll_meter_flush_t      *fl;
    ngx_http_toll_meter_state_t      *st;
    ngx_http_toll_shm_limit_node_t   *ln;

    now = ngx_http_toll_now_ms();
    pool = NULL;
    sent = 0;

    if (ngx_exiting) {
        if (ngx_http_toll_meter_exit_at_ms == 0) {
            ngx_http_toll_meter_exit_at_ms = now;
        }

        /*
         * After a reload the new cycle's workers flush what is left, and
         * keep adding to it: this one only waits for its own batches.
         * When nginx stops, no one else will: it flushes all.
         */

        if (ngx_http_toll_shm_proc_hand_over(ngx_http_toll_meter_zone)) {
            if (ngx_http_toll_meter_inflight == 0
                || now - ngx_http_toll_meter_exit_at_ms
                   > NGX_HTTP_TOLL_METER_EXIT_MAX_MS)
            {
                /* unconfirmed batches are sent again by the others */
                return;
            }

            ngx_add_timer(ev, NGX_HTTP_TOLL_METER_EXIT_TICK_MS);
            return;
        }
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

        if (st->flush_id[0] == 0 && st->flush_id[1] == 0) {

            for (i = 0; i < NGX_HTTP_TOLL_METER_N; i++) {
                if (st->pending[i]) {
                    break;
                }
            }

            if (i == NGX_HTTP_TOLL_METER_N) {
                /* all in Redis and no call open: the node may go */
                if (st->open == 0) {
                    ln->pins = 0;
                }

                continue;
            }

            /* a new batch: what is pending now, under a new id */

            for (i = 0; i < NGX_HTTP_TOLL_METER_N; i++) {
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

        fl = ngx_alloc(sizeof(ngx_http_toll_meter_flush_t), ev->log);
        if (fl == NULL) {
            break;
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
            sent++;
            continue;
        }

        ngx_http_toll_meter_inflight++;
        sent++;
    }

    ngx_http_toll_shm_unlock(ngx_http_toll_meter_zone);

    if (pool) {
        ngx_destroy_pool(pool);
    }

    /*
     * A worker that exits stays while it has counts to flush or flushes
     * to see confirmed, for a while: the zone dies with nginx, and its
     * counts with it.  Flushes of other workers, still running after a
     * reload, are theirs to finish.
     */

    if (ngx_exiting) {
        if (sent == 0 && ngx_http_toll_meter_inflight == 0) {
            return;
        }

        if (now - ngx_http_toll_meter_exit_at_ms
            > NGX_HTTP_TOLL_METER_EXIT_MAX_MS)
        {
            ngx_log_error(NGX_LOG_ALERT, ev->log, 0,
                          "toll: exiting with meter counts not confirmed "
                          "by redis (%ui flushes waiting)",
                          ngx_http_toll_meter_inflight);
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
    u_char                       *buf, *p, *key, *nl1, *nl2, *end;
    size_t                        argvlen[NGX_HTTP_TOLL_METER_ARGS];
    ngx_uint_t                    i;
    ngx_str_t                     buyer;
    const char                   *argv[NGX_HTTP_TOLL_METER_ARGS];
    ngx_http_toll_meter_state_t  *st;

    st = (ngx_http_toll_meter_state_t *) ln->state;

    /* "m:YYYYMMDD:buyer\nservice\nprovider" */

    end = ln->subject + ln->subject_len;
    nl1 = ngx_strlchr(ln->subject + 11, end, '\n');
    nl2 = nl1 ? ngx_strlchr(nl1 + 1, end, '\n') : NULL;

    if (nl2 == NULL) {
        return NGX_ERROR;
    }

    buyer.data = ln->subject + 11;
    buyer.len = nl1 - buyer.data;

    buf = ngx_pnalloc(pool, 3 * (sizeof("toll:usage:{}:flushes") + 8)
                            + 3 * buyer.len + 40 + NGX_INT64_LEN
                            + 2 * NGX_HTTP_TOLL_METER_N * NGX_INT64_LEN);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    p = buf;

    if (ngx_http_toll_meter_script_cached) {
        argv[0] = "EVALSHA";
        argvlen[0] = 7;
        argv[1] = (const char *) ngx_http_toll_meter_script_sha;
        argvlen[1] = sizeof(ngx_http_toll_meter_script_sha);

    } else {
        argv[0] = "EVAL";
        argvlen[0] = 4;
        argv[1] = (const char *) ngx_http_toll_meter_script.data;
        argvlen[1] = ngx_http_toll_meter_script.len;
    }

    argv[2] = "3";
    argvlen[2] = 1;

    /* both keys in the buyer's hash slot */

    key = p;
    p = ngx_sprintf(p, "toll:usage:{%V}:%*s", &buyer, (size_t) 8,
                    ln->subject + 2);
    argv[3] = (const char *) key;
    argvlen[3] = p - key;

    key = p;
    p = ngx_sprintf(p, "toll:usage:{%V}:flushes", &buyer);
    argv[4] = (const char *) key;
    argvlen[4] = p - key;

    key = p;
    p = ngx_sprintf(p, "toll:usage:{%V}:days", &buyer);
    argv[5] = (const char *) key;
    argvlen[5] = p - key;

    key = p;
    p = ngx_sprintf(p, "%016uxL%016uxL", fl->flush_id[0], fl->flush_id[1]);
    argv[6] = (const char *) key;
    argvlen[6] = p - key;

    key = p;
    p = ngx_sprintf(p, "%T", ngx_time());
    argv[7] = (const char *) key;
    argvlen[7] = p - key;

    argv[8] = (const char *) nl1 + 1;
    argvlen[8] = nl2 - nl1 - 1;
    argv[9] = (const char *) nl2 + 1;
    argvlen[9] = end - nl2 - 1;

    for (i = 0; i < NGX_HTTP_TOLL_METER_N; i++) {
        key = p;
        p = ngx_sprintf(p, "%L", st->flight[i]);
        argv[10 + i] = (const char *) key;
        argvlen[10 + i] = p - key;
    }

    argv[16] = (const char *) ln->subject + 2;
    argvlen[16] = 8;

    /* how much each count of the hash may be before it: counts are >= 0 */

    for (i = 0; i < NGX_HTTP_TOLL_METER_N; i++) {
        key = p;
        p = ngx_sprintf(p, "%L", INT64_MAX - st->flight[i]);
        argv[17 + i] = (const char *) key;
        argvlen[17 + i] = p - key;
    }

    if (ngx_http_toll_redis_send(ngx_http_toll_meter_reply, fl,
                                 NGX_HTTP_TOLL_METER_ARGS, argv, argvlen)
        == NULL)
    {
        /* Redis is away: the batch waits in the zone, id and all */
        return NGX_ERROR;
    }

    /* the settlement worker finds the day's usage keys here */

    argv[0] = "SADD";
    argvlen[0] = 4;
    argv[1] = "toll:usage:index";
    argvlen[1] = sizeof("toll:usage:index") - 1;
    argv[2] = argv[3];
    argvlen[2] = argvlen[3];

    /* not NULL: its reply is read, for a refusal to be said */
    (void) ngx_http_toll_redis_send(ngx_http_toll_meter_index_reply,
                                    fl->shm_zone, 3, argv, argvlen);

    return NGX_OK;
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
        ngx_http_toll_meter_script_cached = 1;
        done = 1;
        break;

    case TOLL_REPLY_METER_OVERFLOW:
        ngx_http_toll_meter_script_cached = 1;
        overflow = 1;
        done = 1;
        break;

    case TOLL_REPLY_METER_NOT_INTEGER:
        ngx_http_toll_meter_script_cached = 1;
        break;

    case TOLL_REPLY_METER_NOSCRIPT:
        ngx_http_toll_meter_script_cached = 0;
        break;

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
            if (overflow) {
                /*
                 * Redis cannot hold the sum: the batch would fail for
                 * ever and hold back the node's later counts.  It is
                 * left out, every count of it in the log; Redis holds
                 * nothing of it.
                 */

                ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                              "toll: meter overflow in redis at \"%V\", "
                              "batch of \"%*s\" left out: calls %L, "
                              "free_calls %L, paid_calls %L, "
                              "amount_micros %L, errors %L", &why,
                              fl->subject_len, fl->subject,
                              st->flight[NGX_HTTP_TOLL_METER_CALLS],
                              st->flight[NGX_HTTP_TOLL_METER_FREE_CALLS],
                              st->flight[NGX_HTTP_TOLL_METER_PAID_CALLS],
                              st->flight[NGX_HTTP_TOLL_METER_AMOUNT],
                              st->flight[NGX_HTTP_TOLL_METER_ERRORS]);

            } else if (!done && why.len && !st->refused
                       && ngx_http_toll_redis_refusal(
                              NGX_HTTP_TOLL_REDIS_METER, reply))
            {
                ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                              "toll: redis refused the meter's batch of "
                              "\"%*s\", kept and sent again: %V%s",
                              fl->subject_len, fl->subject, &why,
                              (m.rc == TOLL_REPLY_METER_NOT_INTEGER)
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

                for (i = 0; i < NGX_HTTP_TOLL_METER_N; i++) {
                    st->flight[i] = 0;
                }

                st->flush_id[0] = 0;
                st->flush_id[1] = 0;

            } else {
                /* sent again, same id, next round */
                st->flush_at_ms = 0;
            }
        }
    }

    ngx_http_toll_shm_unlock(fl->shm_zone);

    ngx_free(fl);
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
