/*
 * toll: burst, tier and concurrency limits.
 *
 * A request's limits are decided under the zone's mutex from the state of
 * its subject (the key id, or the client address).  Each worker's timer
 * takes the subjects used since the last round and sends each one's news
 * to Redis in one script call (what this node admitted, per bucket and
 * window slot, and how many it has in flight); the reply is the state of
 * all nodes together, which replaces the global part of the local state.
 * All calls of a round leave in one write.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/evp.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_limit.h"
#include "ngx_http_toll_problem.h"
#include "ngx_http_toll_redis.h"
#include "ngx_http_toll_shm.h"
#include "toll_reply.h"


#define NGX_HTTP_TOLL_LIMITS_MAX         (2 * NGX_HTTP_TOLL_PLAN_RATES_MAX)

/* subjects one worker sends to Redis in one round */
#define NGX_HTTP_TOLL_SYNC_BATCH_MAX     256
/* a sync unanswered this long died with its worker: send it again */
#define NGX_HTTP_TOLL_SYNC_LOST_MS       10000
/* a node's in-flight count in Redis outlives this many rounds only */
#define NGX_HTTP_TOLL_SYNC_CONC_ROUNDS   20
#define NGX_HTTP_TOLL_SYNC_CONC_MIN_MS   2000
/* script arguments: EVAL, script, numkeys, key, 6 fixed, 5 per limit */
#define NGX_HTTP_TOLL_SYNC_ARGS_MAX      (10 + 5 * NGX_HTTP_TOLL_PLAN_RATES_MAX)
/* the text of a call's arguments: numbers, and each window's slots */
#define NGX_HTTP_TOLL_SYNC_TEXT_LEN      (NGX_HTTP_TOLL_SYNC_ARGS_MAX         \
                                          * NGX_INT64_LEN                     \
                                          + NGX_HTTP_TOLL_SUBJECT_MAX + 16)
#define NGX_HTTP_TOLL_SYNC_SLOTS_LEN     (TOLL_WINDOW_RING                    \
                                          * (NGX_INT64_LEN + NGX_INT32_LEN + 2))

#define NGX_HTTP_TOLL_MASK_BUCKET        0x10
#define NGX_HTTP_TOLL_MASK_CONCURRENCY   0x20


/* the state of one subject, after the node header in the zone */
typedef struct {
    toll_bucket_t              bucket;
    int64_t                    interval_ns;   /* the bucket as last used */
    int64_t                    tolerance_ns;
    int64_t                    sync_at_ms;    /* a sync in flight; 0 none */
    int64_t                    remote_inflight;
    uint32_t                   pending;       /* bucket, not yet sent */
    uint32_t                   sent;
    uint32_t                   mask;
    uint32_t                   nwindows;
    uint32_t                   nconc;         /* slots of the proc table */
    uint32_t                   reserved;
    /* toll_window_t, one per window unit in the mask, in unit order;
       then ngx_http_toll_limit_conc_t[nconc], a count per slot of the
       table of worker processes */
} ngx_http_toll_limit_state_t;


/* what one worker process has in flight; void unless gen is current */
typedef struct {
    uint32_t                   gen;
    uint32_t                   count;
} ngx_http_toll_limit_conc_t;


typedef struct {
    ngx_http_toll_rate_t      *rate;          /* the plan's, or overridden */
    unsigned                   ip:1;
    unsigned                   skipped:1;     /* no state for it */
    toll_limit_result_t        res;
} ngx_http_toll_limit_t;


struct ngx_http_toll_limit_ctx_s {
    ngx_http_toll_limit_t         limits[NGX_HTTP_TOLL_LIMITS_MAX];
    ngx_uint_t                    nlimits;
    /* a key's own rate_limit changes its plan's rates: changed copies */
    ngx_http_toll_rate_t          overrides[2];   /* bucket, minute */
    ngx_uint_t                    noverrides;
    ngx_uint_t                    key_first;  /* limits of the key from */
    ngx_int_t                     violated;   /* -1: none */
    ngx_http_toll_limit_status_e  status;
    ngx_http_toll_plan_t         *plan;
    ngx_http_toll_plan_t         *ip_plan;

    u_char                        key_subject[NGX_HTTP_TOLL_SUBJECT_MAX];
    size_t                        key_subject_len;
    u_char                        ip_subject[NGX_HTTP_TOLL_SUBJECT_MAX];
    size_t                        ip_subject_len;

    ngx_shm_zone_t               *shm_zone;
    unsigned                      key_held:1;  /* concurrency slots */
    unsigned                      ip_held:1;
    unsigned                      ip_done:1;
    unsigned                      key_done:1;
    unsigned                      strict_waiting:1;
    uint64_t                      strict_uid;
};


/* a round's call to Redis, until its reply */
typedef struct {
    ngx_shm_zone_t            *shm_zone;
    ngx_http_toll_ctx_t       *ctx;           /* strict: the request */
    uint64_t                   uid;
    size_t                     subject_len;
    u_char                     subject[NGX_HTTP_TOLL_SUBJECT_MAX];
} ngx_http_toll_limit_sync_t;


typedef struct {
    ngx_uint_t                 argc;
    const char                *argv[NGX_HTTP_TOLL_SYNC_ARGS_MAX];
    size_t                     argvlen[NGX_HTTP_TOLL_SYNC_ARGS_MAX];
    ngx_http_toll_limit_sync_t  *sync;
} ngx_http_toll_limit_call_t;


static ngx_int_t ngx_http_toll_limit_parse_rate(ngx_str_t *s,
    ngx_http_toll_rate_t *rate);
static ngx_int_t ngx_http_toll_limit_policy(ngx_pool_t *pool,
    ngx_http_toll_rate_t *rate, ngx_uint_t ip, ngx_str_t *policy);
static u_char *ngx_http_toll_limit_policy_item(u_char *p,
    ngx_http_toll_limit_t *l);
static ngx_http_toll_plan_t *ngx_http_toll_limit_find_plan(
    ngx_http_toll_main_conf_t *mcf, ngx_str_t *name);
static ngx_http_toll_limit_ctx_t *ngx_http_toll_limit_get_ctx(
    ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx);
static ngx_int_t ngx_http_toll_limit_add(ngx_http_toll_limit_ctx_t *lctx,
    ngx_http_toll_rate_t *rate, ngx_uint_t ip);
static ngx_int_t ngx_http_toll_limit_decide(ngx_http_request_t *r,
    ngx_http_toll_limit_ctx_t *lctx, u_char *subject, size_t len,
    ngx_uint_t from, ngx_uint_t to, ngx_uint_t commit,
    ngx_uint_t rates_only);
static ngx_int_t ngx_http_toll_limit_verdict(ngx_http_request_t *r,
    ngx_http_toll_limit_ctx_t *lctx, ngx_uint_t from, ngx_uint_t to,
    ngx_uint_t ip);
static uint32_t ngx_http_toll_limit_mask(ngx_http_toll_limit_ctx_t *lctx,
    ngx_uint_t from, ngx_uint_t to);
static ngx_http_toll_limit_state_t *ngx_http_toll_limit_node(
    ngx_shm_zone_t *shm_zone, u_char *subject, size_t len, uint32_t mask,
    ngx_http_toll_shm_limit_node_t **lnp);
static toll_window_t *ngx_http_toll_limit_window(
    ngx_http_toll_limit_state_t *st, toll_unit_e unit);
static ngx_http_toll_limit_conc_t *ngx_http_toll_limit_conc(
    ngx_http_toll_limit_state_t *st);
static ngx_http_toll_shm_limit_node_t *ngx_http_toll_limit_fit(
    ngx_shm_zone_t *shm_zone, ngx_http_toll_shm_limit_node_t *ln);
static int64_t ngx_http_toll_limit_inflight(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_limit_state_t *st);
static void ngx_http_toll_limit_hold(ngx_shm_zone_t *shm_zone,
    u_char *subject, size_t len, ngx_int_t delta);

static ngx_int_t ngx_http_toll_limit_strict(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_limit_ctx_t *lctx);
static void ngx_http_toll_limit_strict_reply(void *data, redisReply *reply);
static ngx_int_t ngx_http_toll_limit_call(ngx_http_toll_limit_call_t *call,
    ngx_pool_t *pool, ngx_http_toll_shm_limit_node_t *ln,
    ngx_http_toll_limit_ctx_t *lctx, ngx_uint_t from, ngx_uint_t to,
    int64_t now_ms);
static ngx_int_t ngx_http_toll_limit_apply(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_limit_sync_t *sync, redisReply *reply, int64_t now_ms,
    int64_t *verdict);
static void ngx_http_toll_limit_unsend(ngx_http_toll_limit_state_t *st);

static void ngx_http_toll_limit_sync_handler(ngx_event_t *ev);
static void ngx_http_toll_limit_sync_reply(void *data, redisReply *reply);


static ngx_int_t ngx_http_toll_limit_headers(ngx_http_request_t *r,
    ngx_http_toll_limit_ctx_t *lctx, ngx_uint_t families);
#define ngx_http_toll_limit_header_add(r, nm, v, n)                          \
    ngx_http_toll_header_push(r, (u_char *) nm, sizeof(nm) - 1, v, n)
static u_char *ngx_http_toll_limit_policy_name(u_char *p,
    ngx_http_toll_limit_t *l);



static ngx_event_t        ngx_http_toll_limit_sync_ev;
static ngx_connection_t   ngx_http_toll_limit_dumb;
static ngx_shm_zone_t    *ngx_http_toll_limit_zone;
static ngx_msec_t         ngx_http_toll_limit_sync_ms;
static ngx_int_t          ngx_http_toll_limit_proc = -1;
static uint32_t           ngx_http_toll_limit_gen;
static ngx_uint_t         ngx_http_toll_limit_workers;
static int64_t            ngx_http_toll_limit_base;
static u_char             ngx_http_toll_limit_node_id[NGX_MAXHOSTNAMELEN
                                                      + NGX_INT64_LEN + 2];
static size_t             ngx_http_toll_limit_node_id_len;

/* the script's SHA-1, and whether Redis is known to have it cached */
static u_char             ngx_http_toll_limit_script_sha[40];
static ngx_uint_t         ngx_http_toll_limit_script_cached;


/*
 * The limit clock: monotonic milliseconds, the same for every process of
 * the host, and never stepped, so that a wall clock set back (or forward)
 * neither locks a key out nor frees it.  It starts from the wall clock
 * when the zone was made (slot numbers stay positive, and read as
 * dates).  Nodes do not share it: the sync script moves times between it
 * and Redis's clock.
 */
#define ngx_http_toll_limit_now()                                             \
    ((int64_t) ngx_current_msec + ngx_http_toll_limit_base)


static ngx_str_t  ngx_http_toll_limit_status_names[] = {
    ngx_null_string,
    ngx_string("PASSED"),
    ngx_string("REJECTED"),
    ngx_string("REJECTED_DRY_RUN"),
    ngx_string("UNLIMITED")
};


/* the letters of units in Redis fields */
static const char  ngx_http_toll_limit_units[TOLL_UNIT_N] = {
    's', 'm', 'h', 'd'
};


/*
 * One script for rounds ("s") and for strict requests ("a").  ARGV: mode,
 * the node's now (its limit clock, ms), the key's TTL (ms), this node's
 * id, the number of limits, the node's estimate of Redis's clock minus
 * its own (ms, or "-"), then five per limit:
 *
 *   "b" n interval_us tolerance_us tat_us  a bucket, n admitted here, and
 *                                          this node's tat (us) after them
 *   "w" unit slot_ms count "slot:n ..."    a window and its slots' news
 *   "c" in_flight expire_ms - -            this node's requests in flight
 *
 * Times in Redis are on Redis's clock (TIME), the one clock all nodes
 * share: a node's times are moved onto it by the node's offset d, and
 * the answer is moved back onto the node's clock.  d is the node's
 * estimate when this call agrees with it (a call arrives after it was
 * built, never before), else this call's own measure.  A window's slots
 * move by d rounded to whole slots.  A bucket's tat is never read as
 * further ahead than twice its tolerance: whatever clock put it there,
 * it cannot refuse a key for longer than that.  (Redis before 5 writes
 * after TIME only once told to replicate the script's effects.)
 *
 * It adds this node's news, in strict mode decides one more request
 * (all limits or none), drops expired slots and nodes, and answers
 * {admitted, violated limit (1-based) or 0, this call's measure of d,
 * then per limit: the bucket's tat (us), a window's {head slot, counts of
 * its 41 slots}, or the in-flight count of the other nodes}.  Only
 * integers: a tat in us stays below 2^53.
 */

static ngx_str_t  ngx_http_toll_limit_script = ngx_string(
"local now=tonumber(ARGV[2]) local key=KEYS[1] "
"local node='c:'..ARGV[4] local K=40 local h={} "
"if redis.replicate_commands then redis.replicate_commands() end "
"local tm=redis.call('TIME') "
"local rnow=tonumber(tm[1])*1000+math.floor(tonumber(tm[2])/1000) "
"local rnow_us=tonumber(tm[1])*1000000+tonumber(tm[2]) "
"local m=rnow-now local d=m local off=tonumber(ARGV[6]) "
"if off and m>=off and m-off<=1000 then d=off end "
"local d_us=d*1000 "
"local raw=redis.call('HGETALL',key) "
"for i=1,#raw,2 do h[raw[i]]=raw[i+1] end "
"local lim={} local p=7 "
"for i=1,tonumber(ARGV[5]) do "
  "lim[i]={ARGV[p],ARGV[p+1],tonumber(ARGV[p+2]),tonumber(ARGV[p+3]),"
  "ARGV[p+4]} p=p+5 end "
"local function gb(l) local t=tonumber(h['b'] or '0') "
  "local c=rnow_us+2*l[4] if t>c then t=c end return t end "
"local function tat(l) local t=gb(l) "
  "if t<rnow_us then t=rnow_us end return t end "
"local function sh(l) return math.floor(d/l[3]+0.5) end "
"local function field(l,slot) return l[2]..':'..slot end "
"local function count(l,slot) return tonumber(h[field(l,slot)] or '0') end "
"local function bump(l,slot,n) local f=field(l,slot) "
  "h[f]=count(l,slot)+n redis.call('HINCRBY',key,f,n) end "
"for _,l in ipairs(lim) do "
  "if l[1]=='b' then local n=tonumber(l[2]) if n>0 then "
    "local t=gb(l)+n*l[3] local own=tonumber(l[5]) "
    "if own>0 and own+d_us>t then t=own+d_us end "
    "if t>rnow_us+2*l[4] then t=rnow_us+2*l[4] end "
    "h['b']=t end "
  "elseif l[1]=='w' then local head=math.floor(rnow/l[3]) local k=sh(l) "
    "for s,n in string.gmatch(l[5],'(%d+):(%d+)') do s=tonumber(s)+k "
      "if s>head then s=head end "
      "if s>=head-K then bump(l,s,tonumber(n)) end end "
  "elseif l[1]=='c' then "
    "redis.call('HSET',key,node,l[2]..':'..(rnow+l[3])) end end "
"local ok,bad=1,0 "
"if ARGV[1]=='a' then "
  "for i,l in ipairs(lim) do "
    "if l[1]=='b' and tat(l)+l[3]-rnow_us>l[4] then ok,bad=0,i break end "
    "if l[1]=='w' and l[4]>0 then local head=math.floor(rnow/l[3]) "
      "local s=0 "
      "for slot=head-K,head do s=s+count(l,slot) end "
      "if s+1>l[4] then ok,bad=0,i break end end end "
  "if ok==1 then for _,l in ipairs(lim) do "
    "if l[1]=='b' then h['b']=tat(l)+l[3] end "
    "if l[1]=='w' then bump(l,math.floor(rnow/l[3]),1) end end end end "
"local out={ok,bad,m} local heads={} "
"for _,l in ipairs(lim) do "
  "if l[1]=='b' then local t=0 if h['b'] then t=math.floor(gb(l)) "
    "redis.call('HSET',key,'b',string.format('%d',t)) "
    "t=t-d_us if t<0 then t=0 end end "
    "out[#out+1]=t "
  "elseif l[1]=='w' then local head=math.floor(rnow/l[3]) "
    "local a={head-sh(l)} "
    "for slot=head-K,head do a[#a+1]=count(l,slot) end "
    "out[#out+1]=a heads[l[2]]=head "
  "elseif l[1]=='c' then local s=0 "
    "for f,v in pairs(h) do if string.sub(f,1,2)=='c:' and f~=node then "
      "local c,e=string.match(v,'^(%d+):(%d+)$') "
      "if c and tonumber(e)>rnow then s=s+tonumber(c) "
      "else redis.call('HDEL',key,f) end end end "
    "out[#out+1]=s end end "
"for f,_ in pairs(h) do local u,s=string.match(f,'^(%a):(%d+)$') "
  "if u and heads[u] and tonumber(s)<heads[u]-K then "
    "redis.call('HDEL',key,f) end end "
"redis.call('PEXPIRE',key,ARGV[3]) "
"return out");


/*
 * toll_plan NAME [rate=N r/s|r/m|r/h|r/d [burst=B]]... [concurrency=N]
 *     [strict];
 * toll_plan NAME unlimited;
 */

char *
ngx_http_toll_plan_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_toll_main_conf_t *mcf = conf;

    ngx_int_t              n;
    ngx_str_t             *value, s;
    ngx_uint_t             i, j, last_rate, buckets, windows;
    toll_bucket_conf_t     bc;
    ngx_http_toll_rate_t  *rate;
    ngx_http_toll_plan_t  *plan;

    value = cf->args->elts;

    if (!toll_plan_valid(value[1].data, value[1].len)
        || value[1].len == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid plan name \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (mcf->plans == NULL) {
        mcf->plans = ngx_array_create(cf->pool, 4,
                                      sizeof(ngx_http_toll_plan_t));
        if (mcf->plans == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_http_toll_limit_find_plan(mcf, &value[1])) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate plan \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    plan = ngx_array_push(mcf->plans);
    if (plan == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(plan, sizeof(ngx_http_toll_plan_t));
    plan->name = value[1];

    last_rate = 0;
    buckets = 0;
    windows = 0;

    for (i = 2; i < cf->args->nelts; i++) {

        if (value[i].len == 9
            && ngx_strncmp(value[i].data, "unlimited", 9) == 0)
        {
            if (cf->args->nelts != 3) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"unlimited\" takes no other "
                                   "parameters");
                return NGX_CONF_ERROR;
            }

            plan->unlimited = 1;
            continue;
        }

        if (value[i].len == 6
            && ngx_strncmp(value[i].data, "strict", 6) == 0)
        {
            plan->strict = 1;
            last_rate = 0;
            continue;
        }

        if (plan->nrates == NGX_HTTP_TOLL_PLAN_RATES_MAX) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "too many limits in plan \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }

        rate = &plan->rates[plan->nrates];

        if (ngx_strncmp(value[i].data, "rate=", 5) == 0) {
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;

            if (ngx_http_toll_limit_parse_rate(&s, rate) != NGX_OK) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid rate \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            plan->nrates++;
            last_rate = plan->nrates;
            continue;
        }

        if (ngx_strncmp(value[i].data, "burst=", 6) == 0) {
            if (last_rate == 0 || last_rate != plan->nrates) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"burst\" must follow a \"rate\"");
                return NGX_CONF_ERROR;
            }

            n = ngx_atoi(value[i].data + 6, value[i].len - 6);
            rate = &plan->rates[last_rate - 1];

            if (n == NGX_ERROR || n < 1
                || toll_bucket_conf(&bc, rate->count,
                                    toll_unit_ms[rate->unit], n) != 0)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid burst \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            if (++buckets > 1) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "plan \"%V\" has more than one "
                                   "\"burst\"", &value[1]);
                return NGX_CONF_ERROR;
            }

            rate->kind = NGX_HTTP_TOLL_RATE_BUCKET;
            rate->burst = n;
            last_rate = 0;
            continue;
        }

        if (ngx_strncmp(value[i].data, "concurrency=", 12) == 0) {
            n = ngx_atoi(value[i].data + 12, value[i].len - 12);

            if (n == NGX_ERROR || n < 1 || n > TOLL_LIMIT_COUNT_MAX) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid concurrency \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            for (j = 0; j < plan->nrates; j++) {
                if (plan->rates[j].kind == NGX_HTTP_TOLL_RATE_CONCURRENCY) {
                    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                       "duplicate \"concurrency\" in plan "
                                       "\"%V\"", &value[1]);
                    return NGX_CONF_ERROR;
                }
            }

            rate->kind = NGX_HTTP_TOLL_RATE_CONCURRENCY;
            rate->count = n;
            plan->nrates++;
            last_rate = 0;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (plan->nrates == 0 && !plan->unlimited) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "plan \"%V\" must have \"rate\", \"concurrency\" "
                           "or \"unlimited\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < plan->nrates; i++) {
        if (plan->rates[i].kind != NGX_HTTP_TOLL_RATE_WINDOW) {
            continue;
        }

        if (windows & (1 << plan->rates[i].unit)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "plan \"%V\" has two windows of one %s",
                               &value[1],
                               toll_unit_names[plan->rates[i].unit]);
            return NGX_CONF_ERROR;
        }

        windows |= 1 << plan->rates[i].unit;
    }

    /* what each request would otherwise divide out again */

    for (i = 0; i < plan->nrates; i++) {
        rate = &plan->rates[i];

        switch (rate->kind) {

        case NGX_HTTP_TOLL_RATE_BUCKET:
            rate->ready = (toll_bucket_conf(&rate->bc, rate->count,
                                            toll_unit_ms[rate->unit],
                                            rate->burst) == 0);
            break;

        case NGX_HTTP_TOLL_RATE_WINDOW:
            rate->ready = (toll_window_conf(&rate->wc, rate->count,
                                            toll_unit_ms[rate->unit]) == 0);
            break;

        default:
            rate->ready = 1;
            break;
        }

        if (ngx_http_toll_limit_policy(cf->pool, rate, 0, &rate->policy)
            != NGX_OK
            || ngx_http_toll_limit_policy(cf->pool, rate, 1,
                                          &rate->ip_policy)
               != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


/*
 * A limit's item of RateLimit-Policy depends on its plan alone, unless a
 * key overrides the rate: it is written once, here.
 */

static ngx_int_t
ngx_http_toll_limit_policy(ngx_pool_t *pool, ngx_http_toll_rate_t *rate,
    ngx_uint_t ip, ngx_str_t *policy)
{
    u_char                 *p;
    ngx_http_toll_limit_t   l;

    if (!rate->ready) {
        ngx_str_null(policy);
        return NGX_OK;
    }

    p = ngx_pnalloc(pool, sizeof("\"ip-concurrency\";q=;w=") - 1
                          + 2 * NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(&l, sizeof(ngx_http_toll_limit_t));
    l.rate = rate;
    l.ip = ip;

    policy->data = p;
    policy->len = ngx_http_toll_limit_policy_item(p, &l) - p;

    return NGX_OK;
}


static u_char *
ngx_http_toll_limit_policy_item(u_char *p, ngx_http_toll_limit_t *l)
{
    *p++ = '"';
    p = ngx_http_toll_limit_policy_name(p, l);
    *p++ = '"';

    switch (l->rate->kind) {

    case NGX_HTTP_TOLL_RATE_BUCKET:
        p = ngx_http_toll_format_int(ngx_cpymem(p, ";q=", 3), l->rate->burst);
        return ngx_http_toll_format_int(ngx_cpymem(p, ";w=", 3),
                   (l->rate->bc.tolerance_ns + 999999999) / 1000000000);

    case NGX_HTTP_TOLL_RATE_WINDOW:
        p = ngx_http_toll_format_int(ngx_cpymem(p, ";q=", 3), l->rate->count);
        return ngx_http_toll_format_int(ngx_cpymem(p, ";w=", 3),
                                       toll_unit_ms[l->rate->unit] / 1000);

    default:
        return ngx_http_toll_format_int(ngx_cpymem(p, ";q=", 3),
                                       l->rate->count);
    }
}


/* "60r/m": as limit_req writes a rate, with hours and days as well */

static ngx_int_t
ngx_http_toll_limit_parse_rate(ngx_str_t *s, ngx_http_toll_rate_t *rate)
{
    size_t      len;
    ngx_int_t   n;
    ngx_uint_t  unit;

    len = s->len;

    if (len < 4 || s->data[len - 3] != 'r' || s->data[len - 2] != '/') {
        return NGX_ERROR;
    }

    switch (s->data[len - 1]) {
    case 's': unit = TOLL_UNIT_SECOND; break;
    case 'm': unit = TOLL_UNIT_MINUTE; break;
    case 'h': unit = TOLL_UNIT_HOUR; break;
    case 'd': unit = TOLL_UNIT_DAY; break;
    default: return NGX_ERROR;
    }

    n = ngx_atoi(s->data, len - 3);

    if (n == NGX_ERROR || n < 1 || n > TOLL_LIMIT_COUNT_MAX) {
        return NGX_ERROR;
    }

    rate->kind = NGX_HTTP_TOLL_RATE_WINDOW;
    rate->unit = unit;
    rate->count = n;
    rate->burst = 0;

    return NGX_OK;
}


/* toll_limit_ip PLAN [unauthenticated] | off; */

char *
ngx_http_toll_limit_ip_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_toll_loc_conf_t *lcf = conf;

    ngx_str_t  *value;

    if (lcf->limit_ip_name.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    lcf->limit_ip_name = value[1];
    lcf->limit_ip_unauthenticated = 0;

    if (cf->args->nelts == 3) {
        if (value[2].len != sizeof("unauthenticated") - 1
            || ngx_strncmp(value[2].data, "unauthenticated",
                           value[2].len) != 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[2]);
            return NGX_CONF_ERROR;
        }

        lcf->limit_ip_unauthenticated = 1;
    }

    return NGX_CONF_OK;
}


/* toll_limit_headers [ietf] [x-ratelimit] | off; */

char *
ngx_http_toll_limit_headers_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_toll_loc_conf_t *lcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i;

    if (lcf->limit_headers != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;
    lcf->limit_headers = 0;

    for (i = 1; i < cf->args->nelts; i++) {

        if (value[i].len == 3 && ngx_strncmp(value[i].data, "off", 3) == 0
            && cf->args->nelts == 2)
        {
            continue;
        }

        if (value[i].len == 4 && ngx_strncmp(value[i].data, "ietf", 4) == 0)
        {
            lcf->limit_headers |= NGX_HTTP_TOLL_HEADERS_IETF;
            continue;
        }

        if (value[i].len == 11
            && ngx_strncmp(value[i].data, "x-ratelimit", 11) == 0)
        {
            lcf->limit_headers |= NGX_HTTP_TOLL_HEADERS_X;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


char *
ngx_http_toll_limit_status_post(ngx_conf_t *cf, void *post, void *data)
{
    ngx_uint_t  *status = data;

    if (*status < 400 || *status > 599) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "value must be between 400 and 599");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


char *
ngx_http_toll_limit_init_main_conf(ngx_conf_t *cf,
    ngx_http_toll_main_conf_t *mcf)
{
    if (mcf->default_plan_name.data == NULL) {
        return NGX_CONF_OK;
    }

    mcf->default_plan = ngx_http_toll_limit_find_plan(mcf,
                                                      &mcf->default_plan_name);

    if (mcf->default_plan == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown plan \"%V\" in \"toll_default_plan\"",
                           &mcf->default_plan_name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


char *
ngx_http_toll_limit_merge_loc_conf(ngx_conf_t *cf,
    ngx_http_toll_loc_conf_t *prev, ngx_http_toll_loc_conf_t *conf)
{
    ngx_http_toll_main_conf_t  *mcf;

    if (conf->limit_ip_name.data == NULL) {
        conf->limit_ip_name = prev->limit_ip_name;
        conf->limit_ip_unauthenticated = prev->limit_ip_unauthenticated;
    }

    if (conf->limit_ip_name.data == NULL
        || (conf->limit_ip_name.len == 3
            && ngx_strncmp(conf->limit_ip_name.data, "off", 3) == 0))
    {
        conf->limit_ip_plan = NULL;
        return NGX_CONF_OK;
    }

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_toll_module);

    conf->limit_ip_plan = ngx_http_toll_limit_find_plan(mcf,
                                                        &conf->limit_ip_name);

    if (conf->limit_ip_plan == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown plan \"%V\" in \"toll_limit_ip\"",
                           &conf->limit_ip_name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_http_toll_plan_t *
ngx_http_toll_limit_find_plan(ngx_http_toll_main_conf_t *mcf, ngx_str_t *name)
{
    ngx_uint_t             i;
    ngx_http_toll_plan_t  *plans;

    if (mcf->plans == NULL) {
        return NULL;
    }

    plans = mcf->plans->elts;

    for (i = 0; i < mcf->plans->nelts; i++) {
        if (plans[i].name.len == name->len
            && ngx_strncmp(plans[i].name.data, name->data, name->len) == 0)
        {
            return &plans[i];
        }
    }

    return NULL;
}


ngx_int_t
ngx_http_toll_limit_init_process(ngx_cycle_t *cycle)
{
    u_char                      *p, sha[20];
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

    if (EVP_Digest(ngx_http_toll_limit_script.data,
                   ngx_http_toll_limit_script.len, sha, NULL, EVP_sha1(),
                   NULL)
        != 1)
    {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "toll: libcrypto failed to hash the limit script");
        return NGX_ERROR;
    }

    ngx_hex_dump(ngx_http_toll_limit_script_sha, sha, sizeof(sha));

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


static ngx_http_toll_limit_ctx_t *
ngx_http_toll_limit_get_ctx(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    ngx_http_toll_limit_ctx_t  *lctx;
    ngx_http_toll_main_conf_t  *mcf;

    if (ctx->limit) {
        return ctx->limit;
    }

    lctx = ngx_pcalloc(r->pool, sizeof(ngx_http_toll_limit_ctx_t));
    if (lctx == NULL) {
        return NULL;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    lctx->violated = -1;
    lctx->shm_zone = mcf->shm_zone;
    ctx->limit = lctx;

    return lctx;
}


static ngx_int_t
ngx_http_toll_limit_add(ngx_http_toll_limit_ctx_t *lctx,
    ngx_http_toll_rate_t *rate, ngx_uint_t ip)
{
    ngx_http_toll_limit_t  *l;

    if (lctx->nlimits == NGX_HTTP_TOLL_LIMITS_MAX) {
        return NGX_ERROR;
    }

    if (!rate->ready) {
        /* an overridden copy: its arithmetic is worked out now */

        switch (rate->kind) {

        case NGX_HTTP_TOLL_RATE_BUCKET:
            if (toll_bucket_conf(&rate->bc, rate->count,
                                 toll_unit_ms[rate->unit], rate->burst)
                != 0)
            {
                return NGX_ERROR;
            }
            break;

        case NGX_HTTP_TOLL_RATE_WINDOW:
            if (toll_window_conf(&rate->wc, rate->count,
                                 toll_unit_ms[rate->unit])
                != 0)
            {
                return NGX_ERROR;
            }
            break;

        default:
            break;
        }

        rate->ready = 1;
    }

    l = &lctx->limits[lctx->nlimits++];

    l->rate = rate;
    l->ip = ip;
    l->skipped = 0;

    return NGX_OK;
}


ngx_int_t
ngx_http_toll_limit_ip(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_uint_t peek)
{
    u_char                     *p;
    size_t                      len;
    ngx_int_t                   rc;
    ngx_uint_t                  i, from;
    struct sockaddr_in         *sin;
#if (NGX_HAVE_INET6)
    struct sockaddr_in6        *sin6;
#endif
    ngx_http_toll_plan_t       *plan;
    ngx_http_toll_loc_conf_t   *lcf;
    ngx_http_toll_limit_ctx_t  *lctx;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);
    plan = lcf->limit_ip_plan;

    if (plan == NULL || plan->unlimited) {
        return NGX_OK;
    }

    lctx = ngx_http_toll_limit_get_ctx(r, ctx);
    if (lctx == NULL) {
        return NGX_ERROR;
    }

    /* the connection's address, as realip may have set it: never a
       header that the client writes */

    switch (r->connection->sockaddr->sa_family) {

#if (NGX_HAVE_INET6)
    case AF_INET6:
        sin6 = (struct sockaddr_in6 *) r->connection->sockaddr;
        p = sin6->sin6_addr.s6_addr;
        len = 16;
        break;
#endif

    case AF_INET:
        sin = (struct sockaddr_in *) r->connection->sockaddr;
        p = (u_char *) &sin->sin_addr;
        len = 4;
        break;

    default:
        /* a unix socket: one subject for all */
        p = (u_char *) "";
        len = 0;
        break;
    }

    lctx->ip_subject_len = ngx_hex_dump(ngx_cpymem(lctx->ip_subject, "ip:", 3),
                                        p, len)
                           - lctx->ip_subject;
    lctx->ip_plan = plan;

    if (!lctx->ip_done) {
        /* a peek and then a count add the limits once */
        lctx->ip_done = 1;

        for (i = 0; i < plan->nrates; i++) {
            if (ngx_http_toll_limit_add(lctx, &plan->rates[i], 1)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    lctx->key_first = lctx->nlimits;
    from = lctx->nlimits - plan->nrates;

    rc = ngx_http_toll_limit_decide(r, lctx, lctx->ip_subject,
                                    lctx->ip_subject_len, from,
                                    lctx->nlimits, !peek, 0);
    if (rc != NGX_OK) {
        return rc;
    }

    if (!peek && lctx->violated == -1 && ngx_http_toll_limit_proc >= 0) {
        lctx->ip_held = lctx->ip_held
                        || (ngx_http_toll_limit_mask(lctx, from,
                                                     lctx->nlimits)
                            & NGX_HTTP_TOLL_MASK_CONCURRENCY);
    }

    return ngx_http_toll_limit_verdict(r, lctx, from, lctx->nlimits, 1);
}


ngx_int_t
ngx_http_toll_limit_key(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    ngx_int_t                   rc;
    ngx_uint_t                  i, from, overridden;
    ngx_http_toll_rate_t       *rate, *own;
    ngx_http_toll_plan_t       *plan;
    ngx_http_toll_main_conf_t  *mcf;
    ngx_http_toll_limit_ctx_t  *lctx;

    lctx = ngx_http_toll_limit_get_ctx(r, ctx);
    if (lctx == NULL) {
        return NGX_ERROR;
    }

    if (lctx->key_done) {
        /* a strict request resumed with Redis's verdict */
        return ngx_http_toll_limit_verdict(r, lctx, lctx->key_first,
                                           lctx->nlimits, 0);
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    plan = NULL;

    if (ctx->key.plan.len) {
        plan = ngx_http_toll_limit_find_plan(mcf, &ctx->key.plan);

        if (plan == NULL && mcf->plans) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "toll: key id \"%V\" names plan \"%V\", which is "
                          "not configured: the default plan applies",
                          &ctx->key_id, &ctx->key.plan);
        }
    }

    if (plan == NULL) {
        plan = mcf->default_plan;
    }

    lctx->plan = plan;
    lctx->key_first = lctx->nlimits;
    from = lctx->nlimits;

    if (ctx->key.rate_limit <= 0 && (plan == NULL || plan->unlimited)) {
        if (lctx->status == NGX_HTTP_TOLL_LIMIT_STATUS_NONE) {
            lctx->status = NGX_HTTP_TOLL_LIMIT_STATUS_UNLIMITED;
        }

        return NGX_OK;
    }

    /*
     * A key's own rate_limit (requests a minute) overrides its plan: the
     * bucket's rate and a per-minute window take it; a plan with neither
     * gets a per-minute window of it.
     */

    overridden = 0;

    for (i = 0; plan && !plan->unlimited && i < plan->nrates; i++) {
        rate = &plan->rates[i];

        if (ctx->key.rate_limit > 0
            && (rate->kind == NGX_HTTP_TOLL_RATE_BUCKET
                || (rate->kind == NGX_HTTP_TOLL_RATE_WINDOW
                    && rate->unit == TOLL_UNIT_MINUTE)))
        {
            own = &lctx->overrides[lctx->noverrides++];
            *own = *rate;
            own->count = ngx_min(ctx->key.rate_limit, TOLL_LIMIT_COUNT_MAX);
            own->unit = TOLL_UNIT_MINUTE;
            own->ready = 0;
            ngx_str_null(&own->policy);
            ngx_str_null(&own->ip_policy);

            if (ngx_http_toll_limit_add(lctx, own, 0) == NGX_OK) {
                overridden = 1;
                continue;
            }

            /* an override too large for the bucket: keep the plan's */
        }

        if (ngx_http_toll_limit_add(lctx, rate, 0) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (ctx->key.rate_limit > 0 && !overridden) {
        own = &lctx->overrides[lctx->noverrides++];
        ngx_memzero(own, sizeof(ngx_http_toll_rate_t));

        own->kind = NGX_HTTP_TOLL_RATE_WINDOW;
        own->unit = TOLL_UNIT_MINUTE;
        own->count = ngx_min(ctx->key.rate_limit, TOLL_LIMIT_COUNT_MAX);

        if (ngx_http_toll_limit_add(lctx, own, 0) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    lctx->key_subject_len = ngx_min(ctx->key_id.len,
                                    NGX_HTTP_TOLL_SUBJECT_MAX);
    ngx_memcpy(lctx->key_subject, ctx->key_id.data, lctx->key_subject_len);

    if (plan && plan->strict) {
        rc = ngx_http_toll_limit_strict(r, ctx, lctx);

        if (rc != NGX_DECLINED) {
            return rc;
        }

        /* Redis cannot be reached: this node decides alone */
    }

    rc = ngx_http_toll_limit_decide(r, lctx, lctx->key_subject,
                                    lctx->key_subject_len, from,
                                    lctx->nlimits, 1, 0);
    if (rc != NGX_OK) {
        return rc;
    }

    lctx->key_done = 1;

    if (lctx->violated == -1 && ngx_http_toll_limit_proc >= 0) {
        lctx->key_held = (ngx_http_toll_limit_mask(lctx, from, lctx->nlimits)
                          & NGX_HTTP_TOLL_MASK_CONCURRENCY) != 0;
    }

    return ngx_http_toll_limit_verdict(r, lctx, from, lctx->nlimits, 0);
}


/*
 * Logs a refusal and tells the caller; in a dry run the request goes on.
 */

static ngx_int_t
ngx_http_toll_limit_verdict(ngx_http_request_t *r,
    ngx_http_toll_limit_ctx_t *lctx, ngx_uint_t from, ngx_uint_t to,
    ngx_uint_t ip)
{
    u_char                    name[32], *p;
    ngx_str_t                 policy, *plan;

    static ngx_str_t  no_plan = ngx_string("(the key's rate_limit)");
    ngx_http_toll_ctx_t      *ctx;
    ngx_http_toll_loc_conf_t *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);

    if (lctx->violated < (ngx_int_t) from
        || lctx->violated >= (ngx_int_t) to)
    {
        if (lctx->status != NGX_HTTP_TOLL_LIMIT_STATUS_REJECTED_DRY_RUN) {
            lctx->status = NGX_HTTP_TOLL_LIMIT_STATUS_PASSED;
        }

        return NGX_OK;
    }

    p = ngx_http_toll_limit_policy_name(name, &lctx->limits[lctx->violated]);
    policy.data = name;
    policy.len = p - name;

    plan = ip ? &lctx->ip_plan->name
              : lctx->plan ? &lctx->plan->name : &no_plan;

    if (ip) {
        ngx_log_error(lcf->limit_log_level, r->connection->log, 0,
                      "toll: limited%s, policy \"%V\" of plan \"%V\", "
                      "address \"%V\"",
                      lcf->limit == NGX_HTTP_TOLL_LIMIT_DRY_RUN
                      ? " (dry run)" : "",
                      &policy, plan, &r->connection->addr_text);

    } else {
        ctx = ngx_http_get_module_ctx(r, ngx_http_toll_module);

        ngx_log_error(lcf->limit_log_level, r->connection->log, 0,
                      "toll: limited%s, policy \"%V\" of plan \"%V\", "
                      "key id \"%V\"",
                      lcf->limit == NGX_HTTP_TOLL_LIMIT_DRY_RUN
                      ? " (dry run)" : "",
                      &policy, plan, ctx ? &ctx->key_id : &policy);
    }

    if (lcf->limit == NGX_HTTP_TOLL_LIMIT_DRY_RUN) {
        lctx->status = NGX_HTTP_TOLL_LIMIT_STATUS_REJECTED_DRY_RUN;
        lctx->violated = -1;
        return NGX_OK;
    }

    lctx->status = NGX_HTTP_TOLL_LIMIT_STATUS_REJECTED;

    return NGX_DECLINED;
}


/*
 * Checks the limits [from, to) of one subject; when all admit and commit
 * is set, counts the request in each.  Sets lctx->violated to the first
 * limit that refused.  A zone too full for the subject lets the request
 * through: limits are a safety control, and the alert says why.
 */

static ngx_int_t
ngx_http_toll_limit_decide(ngx_http_request_t *r,
    ngx_http_toll_limit_ctx_t *lctx, u_char *subject, size_t len,
    ngx_uint_t from, ngx_uint_t to, ngx_uint_t commit,
    ngx_uint_t rates_only)
{
    int64_t                           now, inflight;
    uint32_t                          mask;
    ngx_uint_t                        i, ok;
    toll_window_t                    *w;
    ngx_http_toll_limit_t            *l;
    ngx_http_toll_limit_conc_t       *conc;
    ngx_http_toll_limit_state_t      *st;
    ngx_http_toll_shm_limit_node_t   *ln;

    now = ngx_http_toll_limit_now();
    mask = ngx_http_toll_limit_mask(lctx, from, to);

    ngx_http_toll_shm_lock(lctx->shm_zone);

    st = ngx_http_toll_limit_node(lctx->shm_zone, subject, len, mask, &ln);

    if (st == NULL) {
        ngx_http_toll_shm_unlock(lctx->shm_zone);

        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "toll: no room for the limits of \"%*s\": the zone "
                      "is full, increase \"toll_zone\"", len, subject);
        return NGX_OK;
    }

    ok = 1;

    /* every limit decides; only when all admit is the request counted */

    for (i = from; i < to; i++) {
        l = &lctx->limits[i];

        switch (l->rate->kind) {

        case NGX_HTTP_TOLL_RATE_BUCKET:
            st->interval_ns = l->rate->bc.interval_ns;
            st->tolerance_ns = l->rate->bc.tolerance_ns;

            /*
             * As the script reads it: whatever put a tat further ahead
             * (an overshoot of other nodes, a state from another clock)
             * refuses the key for a refill's time at most.
             */

            if (st->bucket.tat_ns - now * 1000000
                > 2 * l->rate->bc.tolerance_ns)
            {
                st->bucket.tat_ns = now * 1000000
                                    + 2 * l->rate->bc.tolerance_ns;
            }

            toll_bucket_check(&l->rate->bc, &st->bucket, now, 0, &l->res);
            break;

        case NGX_HTTP_TOLL_RATE_WINDOW:
            w = ngx_http_toll_limit_window(st, l->rate->unit);

            if (w == NULL) {
                /* another plan's node, held by requests in flight */
                l->skipped = 1;
                l->res.admitted = 1;
                break;
            }

            toll_window_check(&l->rate->wc, w, now, 0, &l->res);
            break;

        default: /* NGX_HTTP_TOLL_RATE_CONCURRENCY */
            conc = ngx_http_toll_limit_conc(st);

            if (rates_only || conc == NULL) {
                l->skipped = (conc == NULL);
                l->res.admitted = 1;
                break;
            }

            inflight = ngx_http_toll_limit_inflight(lctx->shm_zone, st)
                       + st->remote_inflight;

            l->res.admitted = (inflight + 1 <= l->rate->count);
            l->res.remaining = ngx_max(l->rate->count - inflight - 1, 0);
            l->res.retry_ms = 1000;
            l->res.reset_ms = 0;
            break;
        }

        if (!l->res.admitted && ok) {
            ok = 0;
            lctx->violated = i;
        }
    }

    for (i = from; !ok && i < to; i++) {
        l = &lctx->limits[i];

        /* the others admitted it, but it is not counted: one more left */

        if (l->res.admitted && !l->skipped) {
            l->res.remaining++;
        }
    }

    for (i = from; ok && commit && i < to; i++) {
        l = &lctx->limits[i];

        if (l->skipped) {
            continue;
        }

        switch (l->rate->kind) {

        case NGX_HTTP_TOLL_RATE_BUCKET:
            toll_bucket_commit(&l->rate->bc, &st->bucket, now);
            st->pending++;
            break;

        case NGX_HTTP_TOLL_RATE_WINDOW:
            toll_window_commit(ngx_http_toll_limit_window(st,
                                                          l->rate->unit));
            break;

        default: /* NGX_HTTP_TOLL_RATE_CONCURRENCY */
            if (rates_only || ngx_http_toll_limit_proc < 0) {
                break;
            }

            conc = &ngx_http_toll_limit_conc(st)[ngx_http_toll_limit_proc];

            if (conc->gen != ngx_http_toll_limit_gen) {
                conc->gen = ngx_http_toll_limit_gen;
                conc->count = 0;
            }

            conc->count++;
            ln->pins++;
            break;
        }
    }

    ngx_http_toll_shm_limit_touch(lctx->shm_zone, ln);

    ngx_http_toll_shm_unlock(lctx->shm_zone);

    return NGX_OK;
}


static uint32_t
ngx_http_toll_limit_mask(ngx_http_toll_limit_ctx_t *lctx, ngx_uint_t from,
    ngx_uint_t to)
{
    uint32_t                mask;
    ngx_uint_t              i;
    ngx_http_toll_limit_t  *l;

    mask = 0;

    for (i = from; i < to; i++) {
        l = &lctx->limits[i];

        switch (l->rate->kind) {
        case NGX_HTTP_TOLL_RATE_BUCKET:
            mask |= NGX_HTTP_TOLL_MASK_BUCKET;
            break;
        case NGX_HTTP_TOLL_RATE_WINDOW:
            mask |= 1 << l->rate->unit;
            break;
        default:
            mask |= NGX_HTTP_TOLL_MASK_CONCURRENCY;
            break;
        }
    }

    return mask;
}


#define ngx_http_toll_limit_window_size                                       \
    ngx_align(sizeof(toll_window_t), sizeof(int64_t))


/*
 * The subject's state, made for the limits in mask.  A subject whose node
 * was made for other limits (its key changed plans) starts afresh, unless
 * requests hold it; the next round brings back what Redis knows.
 */

static ngx_http_toll_limit_state_t *
ngx_http_toll_limit_node(ngx_shm_zone_t *shm_zone, u_char *subject,
    size_t len, uint32_t mask, ngx_http_toll_shm_limit_node_t **lnp)
{
    size_t                           size;
    uint32_t                         nwindows;
    ngx_uint_t                       u, nconc;
    ngx_http_toll_limit_state_t     *st;
    ngx_http_toll_shm_limit_node_t  *ln;

    ln = ngx_http_toll_shm_limit_find(shm_zone, subject, len);

    if (ln) {
        st = (ngx_http_toll_limit_state_t *) ln->state;

        if ((st->mask & mask) == mask || ln->pins) {
            ln = ngx_http_toll_limit_fit(shm_zone, ln);
            if (ln == NULL) {
                return NULL;
            }

            *lnp = ln;
            return (ngx_http_toll_limit_state_t *) ln->state;
        }

        mask |= st->mask;
        ngx_http_toll_shm_limit_free(shm_zone, ln);
    }

    nwindows = 0;

    for (u = 0; u < TOLL_UNIT_N; u++) {
        nwindows += (mask >> u) & 1;
    }

    size = sizeof(ngx_http_toll_limit_state_t)
           + nwindows * ngx_http_toll_limit_window_size;
    nconc = 0;

    if (mask & NGX_HTTP_TOLL_MASK_CONCURRENCY) {
        nconc = ngx_http_toll_shm_proc_slots(shm_zone);
        size += nconc * sizeof(ngx_http_toll_limit_conc_t);
    }

    ln = ngx_http_toll_shm_limit_create(shm_zone, subject, len, size);
    if (ln == NULL) {
        return NULL;
    }

    st = (ngx_http_toll_limit_state_t *) ln->state;
    st->mask = mask;
    st->nwindows = nwindows;
    st->nconc = (uint32_t) nconc;

    *lnp = ln;

    return st;
}


/*
 * A node made before the table of worker processes grew has no count for
 * this worker's slot: it grows too.  NULL: no room in the zone.
 */

static ngx_http_toll_shm_limit_node_t *
ngx_http_toll_limit_fit(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_shm_limit_node_t *ln)
{
    size_t                        size;
    ngx_uint_t                    nconc;
    ngx_http_toll_limit_conc_t   *conc;
    ngx_http_toll_limit_state_t  *st;

    st = (ngx_http_toll_limit_state_t *) ln->state;

    if (!(st->mask & NGX_HTTP_TOLL_MASK_CONCURRENCY)
        || ngx_http_toll_limit_proc < (ngx_int_t) st->nconc)
    {
        return ln;
    }

    nconc = ngx_http_toll_shm_proc_slots(shm_zone);
    size = sizeof(ngx_http_toll_limit_state_t)
           + st->nwindows * ngx_http_toll_limit_window_size
           + nconc * sizeof(ngx_http_toll_limit_conc_t);

    ln = ngx_http_toll_shm_limit_grow(shm_zone, ln, size);
    if (ln == NULL) {
        return NULL;
    }

    st = (ngx_http_toll_limit_state_t *) ln->state;
    conc = ngx_http_toll_limit_conc(st);

    /* the new counts are zero: of no generation any slot has yet */
    ngx_memzero(&conc[st->nconc],
                (nconc - st->nconc) * sizeof(ngx_http_toll_limit_conc_t));
    st->nconc = (uint32_t) nconc;

    return ln;
}


static toll_window_t *
ngx_http_toll_limit_window(ngx_http_toll_limit_state_t *st, toll_unit_e unit)
{
    ngx_uint_t  u, n;

    if (!(st->mask & (1 << unit))) {
        return NULL;
    }

    n = 0;

    for (u = 0; u < (ngx_uint_t) unit; u++) {
        n += (st->mask >> u) & 1;
    }

    return (toll_window_t *) ((u_char *) (st + 1)
                              + n * ngx_http_toll_limit_window_size);
}


static ngx_http_toll_limit_conc_t *
ngx_http_toll_limit_conc(ngx_http_toll_limit_state_t *st)
{
    if (!(st->mask & NGX_HTTP_TOLL_MASK_CONCURRENCY)) {
        return NULL;
    }

    return (ngx_http_toll_limit_conc_t *) ((u_char *) (st + 1)
               + st->nwindows * ngx_http_toll_limit_window_size);
}


/* this node's requests in flight: those of live worker processes */

static int64_t
ngx_http_toll_limit_inflight(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_limit_state_t *st)
{
    int64_t                      n;
    ngx_uint_t                   i;
    ngx_http_toll_limit_conc_t  *conc;

    conc = ngx_http_toll_limit_conc(st);

    if (conc == NULL) {
        return 0;
    }

    n = 0;

    for (i = 0; i < st->nconc; i++) {
        if (conc[i].count
            && conc[i].gen == ngx_http_toll_shm_proc_gen(shm_zone, i))
        {
            n += conc[i].count;
        }
    }

    return n;
}


void
ngx_http_toll_limit_release(ngx_http_toll_ctx_t *ctx)
{
    ngx_http_toll_limit_ctx_t       *lctx;
    ngx_http_toll_limit_state_t     *st;
    ngx_http_toll_shm_limit_node_t  *ln;

    lctx = ctx->limit;

    if (lctx == NULL) {
        return;
    }

    if (lctx->strict_waiting) {
        /* the client left before Redis answered: the call was cancelled,
           and what it carried goes with the next round */

        lctx->strict_waiting = 0;

        ngx_http_toll_shm_lock(lctx->shm_zone);

        ln = ngx_http_toll_shm_limit_find(lctx->shm_zone, lctx->key_subject,
                                          lctx->key_subject_len);

        if (ln && ln->uid == lctx->strict_uid) {
            st = (ngx_http_toll_limit_state_t *) ln->state;
            ngx_http_toll_limit_unsend(st);
            ngx_http_toll_shm_limit_touch(lctx->shm_zone, ln);
        }

        ngx_http_toll_shm_unlock(lctx->shm_zone);
    }

    if (lctx->key_held) {
        lctx->key_held = 0;
        ngx_http_toll_limit_hold(lctx->shm_zone, lctx->key_subject,
                                 lctx->key_subject_len, -1);
    }

    if (lctx->ip_held) {
        lctx->ip_held = 0;
        ngx_http_toll_limit_hold(lctx->shm_zone, lctx->ip_subject,
                                 lctx->ip_subject_len, -1);
    }
}


static void
ngx_http_toll_limit_hold(ngx_shm_zone_t *shm_zone, u_char *subject,
    size_t len, ngx_int_t delta)
{
    ngx_http_toll_limit_conc_t      *conc;
    ngx_http_toll_limit_state_t     *st;
    ngx_http_toll_shm_limit_node_t  *ln, *fit;

    ngx_http_toll_shm_lock(shm_zone);

    ln = ngx_http_toll_shm_limit_find(shm_zone, subject, len);

    if (ln) {
        fit = ngx_http_toll_limit_fit(shm_zone, ln);

        /* a node the zone has no room to grow: uncounted by this worker */
        if (fit) {
            ln = fit;
        }

        st = (ngx_http_toll_limit_state_t *) ln->state;
        conc = ngx_http_toll_limit_conc(st);

        if (conc && ngx_http_toll_limit_proc >= 0
            && ngx_http_toll_limit_proc < (ngx_int_t) st->nconc)
        {
            conc = &conc[ngx_http_toll_limit_proc];

            if (conc->gen != ngx_http_toll_limit_gen) {
                /* a count of an earlier generation was voided already */
                conc->gen = ngx_http_toll_limit_gen;
                conc->count = 0;
            }

            if (delta > 0) {
                conc->count++;

            } else if (conc->count) {
                conc->count--;
            }
        }

        if (delta > 0) {
            ln->pins++;

        } else if (ln->pins) {
            ln->pins--;
        }

        /* other nodes learn of it with the next round */
        ngx_http_toll_shm_limit_touch(shm_zone, ln);
    }

    ngx_http_toll_shm_unlock(shm_zone);
}


/*
 * A strict plan: Redis decides this request with everything every node
 * admitted.  The concurrency cap stays with this node, counted first.
 * NGX_DECLINED: Redis cannot be reached now.
 */

static ngx_int_t
ngx_http_toll_limit_strict(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_limit_ctx_t *lctx)
{
    int64_t                          now;
    ngx_int_t                        rc;
    ngx_uint_t                       from;
    ngx_http_toll_limit_call_t      *call;
    ngx_http_toll_limit_state_t     *st;
    ngx_http_toll_shm_limit_node_t  *ln;

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

    ctx->cmd = ngx_http_toll_redis_send(ngx_http_toll_limit_strict_reply,
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
    ngx_int_t                    rc, violated;
    ngx_uint_t                   i, dry_ok;
    ngx_http_request_t          *r;
    ngx_http_toll_ctx_t         *ctx;
    ngx_http_toll_limit_t       *l;
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
        /*
         * Redis counted the request when it admitted it; the remaining
         * counts for the headers come from the state it sent back.
         */

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
 * Builds one script call for a subject (the zone locked): what the node
 * admitted since its last round moves from "pending" to "sent".  For a
 * strict request lctx gives the limits and their counts ("a" mode);
 * a round builds from the node alone ("s" mode).
 */

static ngx_int_t
ngx_http_toll_limit_call(ngx_http_toll_limit_call_t *call, ngx_pool_t *pool,
    ngx_http_toll_shm_limit_node_t *ln, ngx_http_toll_limit_ctx_t *lctx,
    ngx_uint_t from, ngx_uint_t to, int64_t now_ms)
{
    u_char                       *p, *key, *buf, *last;
    size_t                        len;
    int64_t                       ttl_ms, conc_ms, slot, count;
    uint32_t                      i;
    ngx_uint_t                    u, nlimits, k, n, j;
    toll_window_t                *w;
    toll_window_conf_t            wc;
    ngx_http_toll_shm_clock_t    *clock;
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

    p = buf;
    last = buf + len;

#define ngx_http_toll_arg(start)                                              \
    call->argv[call->argc] = (const char *) (start);                          \
    call->argvlen[call->argc] = p - (start);                                  \
    call->argc++

    call->argc = 0;

    /* the whole script only until Redis has it cached */

    if (ngx_http_toll_limit_script_cached) {
        call->argv[0] = "EVALSHA";
        call->argvlen[0] = 7;
        call->argv[1] = (const char *) ngx_http_toll_limit_script_sha;
        call->argvlen[1] = sizeof(ngx_http_toll_limit_script_sha);

    } else {
        call->argv[0] = "EVAL";
        call->argvlen[0] = 4;
        call->argv[1] = (const char *) ngx_http_toll_limit_script.data;
        call->argvlen[1] = ngx_http_toll_limit_script.len;
    }
    call->argv[2] = "1";
    call->argvlen[2] = 1;
    call->argc = 3;

    key = p;
    p = ngx_sprintf(p, "toll:rl:{%*s}", (size_t) ln->subject_len,
                    ln->subject);
    ngx_http_toll_arg(key);

    key = p;
    *p++ = lctx ? 'a' : 's';
    ngx_http_toll_arg(key);

    key = p;
    p = ngx_sprintf(p, "%L", now_ms);
    ngx_http_toll_arg(key);

    /* the TTL is filled in below, once the longest limit is known */
    ttl_ms = 1000;
    k = call->argc++;

    key = p;
    p = ngx_cpymem(p, ngx_http_toll_limit_node_id,
                   ngx_http_toll_limit_node_id_len);
    ngx_http_toll_arg(key);

    nlimits = 0;
    n = call->argc++;

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

    if (st->mask & NGX_HTTP_TOLL_MASK_BUCKET && st->interval_ns) {
        nlimits++;

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

        ttl_ms = ngx_max(ttl_ms, (st->tolerance_ns + st->interval_ns)
                                 / 1000000);

        st->sent += st->pending;
        st->pending = 0;
    }

    for (u = 0; u < TOLL_UNIT_N; u++) {
        w = ngx_http_toll_limit_window(st, u);

        if (w == NULL) {
            continue;
        }

        (void) toll_window_conf(&wc, 1, toll_unit_ms[u]);

        /* a new window's ring starts at slot 0: bring it to now */
        toll_window_advance(&wc, w, now_ms);

        count = 0;

        for (j = from; lctx && j < to; j++) {
            if (lctx->limits[j].rate->kind == NGX_HTTP_TOLL_RATE_WINDOW
                && lctx->limits[j].rate->unit == u)
            {
                count = lctx->limits[j].rate->count;
            }
        }

        nlimits++;

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

        ttl_ms = ngx_max(ttl_ms, toll_unit_ms[u] + wc.slot_ms);
    }

    if (st->mask & NGX_HTTP_TOLL_MASK_CONCURRENCY) {
        nlimits++;

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

        ttl_ms = ngx_max(ttl_ms, conc_ms);
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

#undef ngx_http_toll_arg

    st->sync_at_ms = now_ms;

    call->sync->uid = ln->uid;
    call->sync->ctx = NULL;
    call->sync->subject_len = ln->subject_len;
    ngx_memcpy(call->sync->subject, ln->subject, ln->subject_len);

    return NGX_OK;
}


/*
 * Takes Redis's answer for a subject into its state: the global part of
 * each bucket and window is replaced, what was sent is now in it.
 * NGX_DECLINED: no usable answer (what was sent is pending again).  The
 * answer is read by toll_reply_limit() (lib/toll_reply.c), which the
 * fuzzer runs; *verdict (if not NULL) is its verdict, -1 if it has none.
 */

static ngx_int_t
ngx_http_toll_limit_apply(ngx_shm_zone_t *shm_zone,
    ngx_http_toll_limit_sync_t *sync, redisReply *reply, int64_t now_ms,
    int64_t *verdict)
{
    int64_t                          slot, tat;
    ngx_int_t                        rc;
    ngx_uint_t                       u, j, i;
    toll_window_t                   *w;
    toll_window_conf_t               wc;
    toll_reply_limit_t               a;
    toll_reply_limit_window_t       *aw;
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

        toll_reply_limit(reply, NULL, &a);

        if (a.array) {
            ngx_http_toll_limit_script_cached = 1;
        }

        if (verdict && a.has_verdict) {
            *verdict = a.verdict;
        }

        return (a.rc == TOLL_REPLY_LIMIT_OK) ? NGX_OK : NGX_DECLINED;
    }

    st = (ngx_http_toll_limit_state_t *) ln->state;
    st->sync_at_ms = 0;

    /* what the node sent, in the order of the script's answer */

    layout.bucket = (st->mask & NGX_HTTP_TOLL_MASK_BUCKET && st->interval_ns)
                    ? 1 : 0;
    layout.concurrency = (st->mask & NGX_HTTP_TOLL_MASK_CONCURRENCY) ? 1 : 0;
    layout.windows = 0;

    for (u = 0; u < TOLL_UNIT_N; u++) {
        if (ngx_http_toll_limit_window(st, u)) {
            layout.windows |= 1u << u;
        }
    }

    toll_reply_limit(reply, &layout, &a);

    if (a.array) {
        ngx_http_toll_limit_script_cached = 1;
    }

    rc = NGX_DECLINED;

    if (a.rc != TOLL_REPLY_LIMIT_OK) {

        if (a.rc == TOLL_REPLY_LIMIT_NOSCRIPT) {
            /* a restarted or flushed Redis: send the script again */
            ngx_http_toll_limit_script_cached = 0;

        } else if (a.rc == TOLL_REPLY_LIMIT_ERROR
                   && ngx_http_toll_redis_refusal(NGX_HTTP_TOLL_REDIS_LIMIT,
                                                  reply))
        {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "toll: redis refused a limit sync: %*s",
                          (size_t) reply->len, reply->str);
        }

        goto failed;
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

        /*
         * All nodes' tat, plus what this node admitted since it sent; but
         * never less than this node's own: its requests are all counted
         * there, and Redis may have lost some (a restart).
         */

        tat = a.tat_us * 1000 + (int64_t) st->pending * st->interval_ns;

        if (tat > st->bucket.tat_ns) {
            st->bucket.tat_ns = tat;
        }

        st->sent = 0;
    }

    for (u = 0; u < TOLL_UNIT_N; u++) {
        w = ngx_http_toll_limit_window(st, u);

        if (w == NULL) {
            continue;
        }

        aw = &a.window[u];

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

    if (a.has_inflight) {
        st->remote_inflight = a.inflight;
    }

    rc = NGX_OK;

    if (st->pending) {
        ngx_http_toll_shm_limit_touch(shm_zone, ln);
    }

    ngx_http_toll_shm_unlock(shm_zone);

    return rc;

failed:

    ngx_http_toll_limit_unsend(st);
    ngx_http_toll_shm_limit_touch(shm_zone, ln);

    ngx_http_toll_shm_unlock(shm_zone);

    return NGX_DECLINED;
}


/* what was sent is pending again: the next round sends it */

static void
ngx_http_toll_limit_unsend(ngx_http_toll_limit_state_t *st)
{
    ngx_uint_t      u, i;
    toll_window_t  *w;

    st->pending += st->sent;
    st->sent = 0;
    st->sync_at_ms = 0;

    for (u = 0; u < TOLL_UNIT_N; u++) {
        w = ngx_http_toll_limit_window(st, u);

        if (w == NULL) {
            continue;
        }

        for (i = 0; i < TOLL_WINDOW_RING; i++) {
            w->pending[i] += w->sent[i];
            w->sent[i] = 0;
        }
    }
}


static void
ngx_http_toll_limit_sync_handler(ngx_event_t *ev)
{
    int64_t                           now;
    ngx_uint_t                        i, n;
    ngx_pool_t                       *pool;
    ngx_http_toll_limit_call_t       *call, **calls;
    ngx_http_toll_limit_state_t      *st;
    ngx_http_toll_shm_limit_node_t   *ln;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        /* what is left in the zone goes with another worker's round */
        return;
    }

    pool = NULL;
    calls = NULL;
    n = 0;
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

        if (pool == NULL) {
            /* the pool may call malloc(): rare, and only with work */
            pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, ev->log);

            calls = pool ? ngx_palloc(pool, NGX_HTTP_TOLL_SYNC_BATCH_MAX
                                            * sizeof(void *))
                         : NULL;
        }

        call = calls ? ngx_pcalloc(pool, sizeof(ngx_http_toll_limit_call_t))
                     : NULL;

        if (call) {
            /* outlives the round: freed by the reply */
            call->sync = ngx_alloc(sizeof(ngx_http_toll_limit_sync_t),
                                   ev->log);
        }

        if (call == NULL || call->sync == NULL
            || ngx_http_toll_limit_call(call, pool, ln, NULL, 0, 0, now)
               != NGX_OK)
        {
            if (call && call->sync) {
                ngx_free(call->sync);
            }

            ngx_http_toll_shm_limit_touch(ngx_http_toll_limit_zone, ln);
            break;
        }

        call->sync->shm_zone = ngx_http_toll_limit_zone;
        calls[n++] = call;
    }

    ngx_http_toll_shm_unlock(ngx_http_toll_limit_zone);

    /* issued in one tick, these leave in one write */

    for (i = 0; i < n; i++) {
        call = calls[i];

        if (ngx_http_toll_redis_send(ngx_http_toll_limit_sync_reply,
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


static void
ngx_http_toll_limit_sync_reply(void *data, redisReply *reply)
{
    ngx_http_toll_limit_sync_t *sync = data;

    (void) ngx_http_toll_limit_apply(sync->shm_zone, sync, reply,
                                     ngx_http_toll_limit_now(), NULL);
    ngx_free(sync);
}


ngx_int_t
ngx_http_toll_limit_refuse(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    u_char                      name[32], *p;
    int64_t                     retry_ms;
    ngx_http_toll_limit_t      *l;
    ngx_http_toll_loc_conf_t   *lcf;
    ngx_http_toll_problem_ext_t ext;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);
    l = &ctx->limit->limits[ctx->limit->violated];

    p = ngx_http_toll_limit_policy_name(name, l);

    retry_ms = ngx_max(l->res.retry_ms, 1);

    ngx_memzero(&ext, sizeof(ngx_http_toll_problem_ext_t));

    ext.status = lcf->limit_status;
    ext.policy.data = name;
    ext.policy.len = p - name;
    ext.retry_after = (retry_ms + 999) / 1000;

    return ngx_http_toll_problem_send_ext(r,
               l->rate->kind == NGX_HTTP_TOLL_RATE_CONCURRENCY
               ? NGX_HTTP_TOLL_PROBLEM_CONCURRENCY_LIMITED
               : NGX_HTTP_TOLL_PROBLEM_RATE_LIMITED,
               &ext);
}


ngx_str_t *
ngx_http_toll_limit_status_name(ngx_http_toll_ctx_t *ctx)
{
    if (ctx->limit == NULL) {
        return &ngx_http_toll_limit_status_names[0];
    }

    return &ngx_http_toll_limit_status_names[ctx->limit->status];
}


static u_char *
ngx_http_toll_limit_policy_name(u_char *p, ngx_http_toll_limit_t *l)
{
    if (l->ip) {
        p = ngx_cpymem(p, "ip-", 3);
    }

    switch (l->rate->kind) {

    case NGX_HTTP_TOLL_RATE_BUCKET:
        return ngx_cpymem(p, "burst", 5);

    case NGX_HTTP_TOLL_RATE_WINDOW:
        return ngx_cpymem(p, toll_unit_names[l->rate->unit],
                          ngx_strlen(toll_unit_names[l->rate->unit]));

    default:
        return ngx_cpymem(p, "concurrency", 11);
    }
}


/*
 * The rate-limit headers of a gated answer, 2xx or refusal alike; copies
 * from the upstream are dropped, so that a client reads one account.
 */

ngx_int_t
ngx_http_toll_limit_headers_out(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx)
{
    ngx_uint_t                  i;
    ngx_list_part_t            *part;
    ngx_table_elt_t            *h;
    ngx_http_toll_loc_conf_t   *lcf;

    if (ctx->limit == NULL
        || ctx->limit->status == NGX_HTTP_TOLL_LIMIT_STATUS_NONE
        || ctx->limit->status == NGX_HTTP_TOLL_LIMIT_STATUS_UNLIMITED)
    {
        return NGX_OK;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);

    if (lcf->limit_headers == 0) {
        return NGX_OK;
    }

    part = &r->headers_out.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        /* most headers are told apart by their first letter */

        if (h[i].hash == 0
            || h[i].key.len < sizeof("RateLimit") - 1
            || (ngx_tolower(h[i].key.data[0]) != 'r'
                && ngx_tolower(h[i].key.data[0]) != 'x'))
        {
            continue;
        }

        if ((h[i].key.len >= sizeof("RateLimit") - 1
             && ngx_strncasecmp(h[i].key.data, (u_char *) "RateLimit",
                                sizeof("RateLimit") - 1) == 0)
            || (h[i].key.len >= sizeof("X-RateLimit-") - 1
                && ngx_strncasecmp(h[i].key.data, (u_char *) "X-RateLimit-",
                                   sizeof("X-RateLimit-") - 1) == 0))
        {
            h[i].hash = 0;
        }
    }

    if (ngx_http_toll_limit_headers(r, ctx->limit, lcf->limit_headers)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_toll_limit_headers(ngx_http_request_t *r,
    ngx_http_toll_limit_ctx_t *lctx, ngx_uint_t families)
{
    u_char                 *policy, *state, *p, *q, *buf, *b;
    size_t                  len;
    ngx_str_t              *pre;
    ngx_int_t               window, bucket;
    ngx_uint_t              i, from, to;
    ngx_http_toll_limit_t  *l;

    if (lctx->nlimits == 0) {
        return NGX_OK;
    }

    /* one allocation for every value; the headers point into it */

    len = lctx->nlimits * (sizeof("\"ip-concurrency\";q=;w=, ") - 1
                           + 2 * NGX_INT64_LEN);

    policy = ngx_pnalloc(r->pool, 2 * len + 5 * NGX_INT64_LEN);
    if (policy == NULL) {
        return NGX_ERROR;
    }

    state = policy + len;
    buf = state + len;
    p = policy;
    q = state;

    for (i = 0; i < lctx->nlimits; i++) {
        l = &lctx->limits[i];

        if (i) {
            p = ngx_cpymem(p, ", ", 2);
            q = ngx_cpymem(q, ", ", 2);
        }

        pre = l->ip ? &l->rate->ip_policy : &l->rate->policy;

        if (pre->len) {
            p = ngx_cpymem(p, pre->data, pre->len);

        } else {
            p = ngx_http_toll_limit_policy_item(p, l);
        }

        *q++ = '"';
        q = ngx_http_toll_limit_policy_name(q, l);
        *q++ = '"';

        q = ngx_http_toll_format_int(ngx_cpymem(q, ";r=", 3),
                                    l->res.remaining);

        if (l->rate->kind != NGX_HTTP_TOLL_RATE_CONCURRENCY) {
            q = ngx_http_toll_format_int(ngx_cpymem(q, ";t=", 3),
                                        (l->res.reset_ms + 999) / 1000);
        }
    }

    if (families & NGX_HTTP_TOLL_HEADERS_IETF) {
        if (ngx_http_toll_limit_header_add(r, "RateLimit-Policy", policy,
                                           p - policy)
            != NGX_OK
            || ngx_http_toll_limit_header_add(r, "RateLimit", state,
                                              q - state)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (!(families & NGX_HTTP_TOLL_HEADERS_X)) {
        return NGX_OK;
    }

    /* the key's limits speak for the request; an address's without */

    from = (lctx->key_first < lctx->nlimits) ? lctx->key_first : 0;
    to = (lctx->key_first < lctx->nlimits) ? lctx->nlimits
                                           : lctx->key_first;

    window = -1;
    bucket = -1;
    b = buf;

    for (i = from; i < to; i++) {
        l = &lctx->limits[i];

        if (l->rate->kind == NGX_HTTP_TOLL_RATE_BUCKET) {
            bucket = i;

        } else if (l->rate->kind == NGX_HTTP_TOLL_RATE_WINDOW
                   && (window == -1
                       || l->res.remaining
                          < lctx->limits[window].res.remaining))
        {
            window = i;
        }
    }

    if (window == -1) {
        window = bucket;
    }

    if (window != -1) {
        l = &lctx->limits[window];

        p = ngx_http_toll_format_int(b, l->rate->count);
        if (ngx_http_toll_limit_header_add(r, "X-RateLimit-Limit", b,
                                           p - b)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        b = p;

        p = ngx_http_toll_format_int(b, l->res.remaining);
        if (ngx_http_toll_limit_header_add(r, "X-RateLimit-Remaining", b,
                                           p - b)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        b = p;

        /* epoch seconds, as the platforms the buyers know send it */
        p = ngx_http_toll_format_int(b, ngx_time()
                                         + (l->res.reset_ms + 999) / 1000);
        if (ngx_http_toll_limit_header_add(r, "X-RateLimit-Reset", b,
                                           p - b)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        b = p;
    }

    if (bucket != -1) {
        l = &lctx->limits[bucket];

        p = ngx_http_toll_format_int(b, l->rate->burst);
        if (ngx_http_toll_limit_header_add(r, "X-RateLimit-Burst-Limit", b,
                                           p - b)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        b = p;

        p = ngx_http_toll_format_int(b, l->res.remaining);
        if (ngx_http_toll_limit_header_add(r, "X-RateLimit-Burst-Remaining",
                                           b, p - b)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        b = p;
    }

    return NGX_OK;
}
