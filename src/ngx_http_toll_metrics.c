/*
 * toll: the operator's metrics, and the page that draws them.
 *
 * Nothing here counts.  The counters belong to the rooms that produce
 * them, as nginx's stub_status reads counters the core keeps: the gate's
 * per service (ngx_http_toll_counters.c), the Redis adapter's and the key
 * cache's, all in the shared zone.  A scrape reads them all (the zone's
 * gauges under its mutex, once) and writes Prometheus text format 0.0.4,
 * or the same families as JSON.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <nginx.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_metrics.h"
#include "ngx_http_toll_counters.h"
#include "ngx_http_toll_redis.h"
#include "ngx_http_toll_shm.h"
#include "ngx_http_toll_dashboard_html.h"


#define NGX_HTTP_TOLL_METRICS_CHUNK  4096


typedef struct {
    ngx_http_request_t        *r;
    ngx_chain_t               *out;
    ngx_chain_t              **last;
    ngx_buf_t                 *b;
    size_t                     size;
    ngx_uint_t                 json;
    ngx_uint_t                 families;      /* written so far */
    ngx_uint_t                 samples;       /* in this family */
    ngx_str_t                  family;
    ngx_uint_t                 failed;
} ngx_http_toll_metrics_out_t;


/* a histogram as a scrape reads it */
typedef struct {
    ngx_uint_t                 n;             /* finite buckets */
    ngx_str_t                 *bounds;        /* their "le", in seconds */
    ngx_atomic_t              *buckets;       /* n + 1, not cumulative */
    ngx_atomic_uint_t          sum;
    ngx_uint_t                 sum_scale;     /* 1000: ms, 1000000: us */
} ngx_http_toll_metrics_hist_t;


static ngx_int_t ngx_http_toll_metrics_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_toll_dashboard_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_toll_metrics_answer(ngx_http_request_t *r,
    ngx_uint_t page);
static ngx_int_t ngx_http_toll_metrics_render(ngx_http_request_t *r,
    ngx_http_toll_metrics_out_t *o);
static void ngx_http_toll_metrics_requests(ngx_http_toll_metrics_out_t *o,
    ngx_http_toll_counters_t **slots, ngx_uint_t n);
static void ngx_http_toll_metrics_sales(ngx_http_toll_metrics_out_t *o,
    ngx_http_toll_counters_t **slots, ngx_uint_t n);
static void ngx_http_toll_metrics_durations(ngx_http_toll_metrics_out_t *o,
    ngx_http_toll_counters_t **slots, ngx_uint_t n);
static void ngx_http_toll_metrics_redis(ngx_http_toll_metrics_out_t *o,
    ngx_http_toll_redis_stats_t *rst, ngx_http_toll_shm_stats_t *st);
static void ngx_http_toll_metrics_zone(ngx_http_toll_metrics_out_t *o,
    ngx_http_toll_shm_stats_t *st);
static ngx_int_t ngx_http_toll_metrics_send(ngx_http_request_t *r,
    ngx_str_t *type, ngx_chain_t *out, size_t size);

static void ngx_http_toll_metrics_write(ngx_http_toll_metrics_out_t *o,
    u_char *data, size_t len);
static void ngx_http_toll_metrics_escaped(ngx_http_toll_metrics_out_t *o,
    ngx_str_t *s);
static void ngx_http_toll_metrics_family(ngx_http_toll_metrics_out_t *o,
    char *name, char *type, char *help);
static void ngx_http_toll_metrics_family_end(
    ngx_http_toll_metrics_out_t *o);
static void ngx_http_toll_metrics_labels(ngx_http_toll_metrics_out_t *o,
    ngx_str_t *labels, ngx_uint_t n, ngx_str_t *le);
static void ngx_http_toll_metrics_sample(ngx_http_toll_metrics_out_t *o,
    ngx_str_t *labels, ngx_uint_t n, ngx_atomic_uint_t value);
static void ngx_http_toll_metrics_histogram(ngx_http_toll_metrics_out_t *o,
    ngx_str_t *labels, ngx_uint_t n, ngx_http_toll_metrics_hist_t *h);


#define ngx_http_toll_metrics_literal(o, s)                                  \
    ngx_http_toll_metrics_write(o, (u_char *) s, sizeof(s) - 1)


static ngx_str_t  ngx_http_toll_decision_names[] = {
    ngx_string("passed"),
    ngx_string("unauthorized"),
    ngx_string("bad_request"),
    ngx_string("rate_limited"),
    ngx_string("quota_exceeded"),
    ngx_string("payment_required"),
    ngx_string("store_unavailable"),
    ngx_string("error"),
    ngx_string("client_closed")
};


static ngx_str_t  ngx_http_toll_status_classes[] = {
    ngx_string("1xx"),
    ngx_string("2xx"),
    ngx_string("3xx"),
    ngx_string("4xx"),
    ngx_string("5xx")
};


/* the bounds of the counters' duration buckets, in seconds */
static ngx_str_t  ngx_http_toll_duration_le[] = {
    ngx_string("0.005"), ngx_string("0.01"), ngx_string("0.025"),
    ngx_string("0.05"), ngx_string("0.1"), ngx_string("0.25"),
    ngx_string("0.5"), ngx_string("1"), ngx_string("2.5"), ngx_string("5"),
    ngx_string("10")
};


/* the bounds of the Redis adapter's reply buckets, in seconds */
static ngx_str_t  ngx_http_toll_redis_le[] = {
    ngx_string("0.0001"), ngx_string("0.00025"), ngx_string("0.0005"),
    ngx_string("0.001"), ngx_string("0.0025"), ngx_string("0.005"),
    ngx_string("0.01"), ngx_string("0.025"), ngx_string("0.05"),
    ngx_string("0.1"), ngx_string("0.25"), ngx_string("0.5"),
    ngx_string("1")
};


static ngx_str_t  ngx_http_toll_metrics_text_type =
    ngx_string("text/plain; version=0.0.4; charset=utf-8");
static ngx_str_t  ngx_http_toll_metrics_json_type =
    ngx_string("application/json");


/* toll_metrics; toll_dashboard; */

char *
ngx_http_toll_metrics_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_core_loc_conf_t   *clcf;
    ngx_http_toll_main_conf_t  *mcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "is duplicate, or the location has another handler";
    }

    clcf->handler = cmd->offset ? ngx_http_toll_dashboard_handler
                                : ngx_http_toll_metrics_handler;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_toll_module);
    mcf->metrics_locations++;

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_toll_metrics_init(ngx_conf_t *cf)
{
    ngx_http_toll_main_conf_t  *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_toll_module);

    if (mcf->metrics_locations && mcf->shm_zone == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"toll_metrics\" and \"toll_dashboard\" need "
                      "\"toll_redis\" in the http block: the counters "
                      "live in its zone");
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_toll_metrics_handler(ngx_http_request_t *r)
{
    return ngx_http_toll_metrics_answer(r, 0);
}


static ngx_int_t
ngx_http_toll_dashboard_handler(ngx_http_request_t *r)
{
    return ngx_http_toll_metrics_answer(r, 1);
}


/*
 * The page, or the metrics: as text, or as JSON with ?format=json; the
 * dashboard polls its own location with ?format=json, so that one
 * allow/deny covers both.
 */

static ngx_int_t
ngx_http_toll_metrics_answer(ngx_http_request_t *r, ngx_uint_t page)
{
    ngx_int_t                     rc;
    ngx_str_t                     format, type;
    ngx_buf_t                    *b;
    ngx_chain_t                   out;
    ngx_http_toll_metrics_out_t   o;

    static ngx_str_t  csp_name = ngx_string("Content-Security-Policy");
    static ngx_str_t  csp = ngx_string(
        "default-src 'none'; script-src 'unsafe-inline'; "
        "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:");

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    ngx_memzero(&o, sizeof(ngx_http_toll_metrics_out_t));

    if (ngx_http_arg(r, (u_char *) "format", 6, &format) != NGX_OK) {
        format.len = 0;

        if (page) {
            b = ngx_calloc_buf(r->pool);
            if (b == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            b->pos = ngx_http_toll_dashboard_html;
            b->last = b->pos + NGX_HTTP_TOLL_DASHBOARD_HTML_LEN;
            b->memory = 1;
            b->last_buf = (r == r->main) ? 1 : 0;
            b->last_in_chain = 1;

            out.buf = b;
            out.next = NULL;

            /* the page needs nothing but itself and its own location */

            if (ngx_http_toll_header_push(r, csp_name.data, csp_name.len,
                                          csp.data, csp.len)
                != NGX_OK)
            {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            ngx_str_set(&type, "text/html; charset=utf-8");

            return ngx_http_toll_metrics_send(r, &type, &out,
                                              b->last - b->pos);
        }
    }

    if (format.len == 4 && ngx_strncmp(format.data, "json", 4) == 0) {
        o.json = 1;

    } else if (format.len != 0
               && !(format.len == 10
                    && ngx_strncmp(format.data, "prometheus", 10) == 0))
    {
        return NGX_HTTP_BAD_REQUEST;
    }

    o.r = r;
    o.last = &o.out;

    if (ngx_http_toll_metrics_render(r, &o) != NGX_OK || o.failed) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (o.b) {
        o.b->last_buf = (r == r->main) ? 1 : 0;
        o.b->last_in_chain = 1;
    }

    return ngx_http_toll_metrics_send(r, o.json
                                         ? &ngx_http_toll_metrics_json_type
                                         : &ngx_http_toll_metrics_text_type,
                                      o.out, o.size);
}


static ngx_int_t
ngx_http_toll_metrics_send(ngx_http_request_t *r, ngx_str_t *type,
    ngx_chain_t *out, size_t size)
{
    ngx_int_t  rc;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = size;
    r->headers_out.content_type = *type;
    r->headers_out.content_type_len = type->len;
    r->headers_out.content_type_lowcase = NULL;

    /* a live figure: never from a cache */

    if (ngx_http_toll_header_push(r, (u_char *) "Cache-Control",
                                  sizeof("Cache-Control") - 1,
                                  (u_char *) "no-store",
                                  sizeof("no-store") - 1)
        != NGX_OK
        || ngx_http_toll_header_push(r, (u_char *) "X-Content-Type-Options",
                                     sizeof("X-Content-Type-Options") - 1,
                                     (u_char *) "nosniff",
                                     sizeof("nosniff") - 1)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (size == 0 || r->method == NGX_HTTP_HEAD) {
        r->header_only = 1;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, out);
}


static ngx_int_t
ngx_http_toll_metrics_render(ngx_http_request_t *r,
    ngx_http_toll_metrics_out_t *o)
{
    u_char                        buf[NGX_TIME_T_LEN + 8], *p;
    ngx_str_t                     labels[4];
    ngx_uint_t                    n;
    ngx_time_t                   *tp;
    ngx_http_toll_shm_stats_t     st;
    ngx_http_toll_counters_t    **slots;
    ngx_http_toll_main_conf_t    *mcf;
    ngx_http_toll_counters_sh_t  *csh;
    ngx_http_toll_redis_stats_t  *rst;

    static ngx_str_t  version = ngx_string(NGX_HTTP_TOLL_VERSION);
    static ngx_str_t  nginx_ver = ngx_string(NGINX_VERSION);

    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);
    csh = mcf->counters;

    if (csh == NULL) {
        return NGX_ERROR;
    }

    ngx_http_toll_shm_stats(mcf->shm_zone, &st);
    rst = ngx_http_toll_shm_redis_stats(mcf->shm_zone);

    /* the gate's services, then the gated locations that sell none */

    n = mcf->counters_services ? mcf->counters_services->nelts : 0;

    slots = ngx_palloc(r->pool, (n + 1) * sizeof(void *));
    if (slots == NULL) {
        return NGX_ERROR;
    }

    if (n) {
        ngx_memcpy(slots, mcf->counters_services->elts, n * sizeof(void *));
    }

    slots[n++] = &csh->none;

    if (o->json) {
        tp = ngx_timeofday();

        ngx_http_toll_metrics_literal(o, "{\"version\":\"");
        ngx_http_toll_metrics_escaped(o, &version);
        ngx_http_toll_metrics_literal(o, "\",\"nginx_version\":\"");
        ngx_http_toll_metrics_escaped(o, &nginx_ver);
        ngx_http_toll_metrics_literal(o, "\",\"time\":");
        p = ngx_sprintf(buf, "%T.%03M", tp->sec, tp->msec);
        ngx_http_toll_metrics_write(o, buf, p - buf);
        ngx_http_toll_metrics_literal(o, ",\"metrics\":{");
    }

    ngx_str_set(&labels[0], "version");
    labels[1] = version;
    ngx_str_set(&labels[2], "nginx_version");
    labels[3] = nginx_ver;

    ngx_http_toll_metrics_family(o, "toll_build_info", "gauge",
        "The toll module's version and the nginx it runs in; always 1.");
    ngx_http_toll_metrics_sample(o, labels, 2, 1);
    ngx_http_toll_metrics_family_end(o);

    ngx_http_toll_metrics_requests(o, slots, n);
    ngx_http_toll_metrics_sales(o, slots, n - 1);
    ngx_http_toll_metrics_durations(o, slots, n);
    ngx_http_toll_metrics_redis(o, rst, &st);
    ngx_http_toll_metrics_zone(o, &st);

    if (o->json) {
        ngx_http_toll_metrics_literal(o, "}}\n");
    }

    return NGX_OK;
}


/*
 * Per service, and the gated locations that sell none last: what the gate
 * decided, and how the passed requests were answered.
 */

static void
ngx_http_toll_metrics_requests(ngx_http_toll_metrics_out_t *o,
    ngx_http_toll_counters_t **slots, ngx_uint_t n)
{
    ngx_str_t                  labels[4];
    ngx_uint_t                 i, k;
    ngx_http_toll_counters_t  *m;

    ngx_str_set(&labels[0], "service");
    ngx_str_set(&labels[2], "decision");

    ngx_http_toll_metrics_family(o, "toll_requests_total", "counter",
        "Gated requests by what the gate decided.");

    for (i = 0; i < n; i++) {
        m = slots[i];
        labels[1].data = m->name;
        labels[1].len = m->name_len;

        for (k = 0; k < NGX_HTTP_TOLL_DECISIONS; k++) {
            labels[3] = ngx_http_toll_decision_names[k];
            ngx_http_toll_metrics_sample(o, labels, 2, m->requests[k]);
        }
    }

    ngx_http_toll_metrics_family_end(o);

    ngx_str_set(&labels[2], "status_class");

    ngx_http_toll_metrics_family(o, "toll_responses_total", "counter",
        "Answers to requests that passed the gate, by status class.");

    for (i = 0; i < n; i++) {
        m = slots[i];
        labels[1].data = m->name;
        labels[1].len = m->name_len;

        for (k = 0; k < 5; k++) {
            labels[3] = ngx_http_toll_status_classes[k];
            ngx_http_toll_metrics_sample(o, labels, 2, m->responses[k]);
        }
    }

    ngx_http_toll_metrics_family_end(o);

    ngx_http_toll_metrics_family(o, "toll_upstream_errors_total", "counter",
        "Passed requests that reached the upstream and were answered 5xx.");

    for (i = 0; i < n; i++) {
        m = slots[i];
        labels[1].data = m->name;
        labels[1].len = m->name_len;
        ngx_http_toll_metrics_sample(o, labels, 1, m->upstream_errors);
    }

    ngx_http_toll_metrics_family_end(o);
}


/* what was sold: the n services only */

static void
ngx_http_toll_metrics_sales(ngx_http_toll_metrics_out_t *o,
    ngx_http_toll_counters_t **slots, ngx_uint_t n)
{
    ngx_str_t                  labels[4], service, currency;
    ngx_uint_t                 i;
    ngx_http_toll_counters_t  *m;

    ngx_str_set(&labels[0], "service");
    ngx_str_set(&labels[2], "tier");

    ngx_http_toll_metrics_family(o, "toll_metered_calls_total", "counter",
        "Metered calls by price tier: free (the free tier) or paid.");

    for (i = 0; i < n; i++) {
        m = slots[i];
        labels[1].data = m->name;
        labels[1].len = m->name_len;

        ngx_str_set(&labels[3], "free");
        ngx_http_toll_metrics_sample(o, labels, 2, m->free_calls);
        ngx_str_set(&labels[3], "paid");
        ngx_http_toll_metrics_sample(o, labels, 2, m->paid_calls);
    }

    ngx_http_toll_metrics_family_end(o);

    ngx_str_set(&labels[2], "currency");

    ngx_http_toll_metrics_family(o, "toll_billed_micros_total", "counter",
        "Amount billed for metered calls, in micro-units (1e-6) of the "
        "currency.");

    for (i = 0; i < n; i++) {
        m = slots[i];
        service.data = m->name;
        service.len = m->name_len;
        currency.data = m->currency;
        currency.len = m->currency_len;
        labels[1] = service;
        labels[3] = currency;
        ngx_http_toll_metrics_sample(o, labels, 2, m->billed_micros);
    }

    ngx_http_toll_metrics_family_end(o);
}


/* per service, and the gated locations that sell none: how long */

static void
ngx_http_toll_metrics_durations(ngx_http_toll_metrics_out_t *o,
    ngx_http_toll_counters_t **slots, ngx_uint_t n)
{
    ngx_str_t                      labels[2];
    ngx_uint_t                     i;
    ngx_http_toll_counters_t      *m;
    ngx_http_toll_metrics_hist_t   h;

    ngx_str_set(&labels[0], "service");

    ngx_http_toll_metrics_family(o, "toll_request_duration_seconds",
        "histogram",
        "Time from the first byte of a passed request to its log phase.");

    h.n = NGX_HTTP_TOLL_COUNTERS_DURATION_BUCKETS;
    h.bounds = ngx_http_toll_duration_le;
    h.sum_scale = 1000;

    for (i = 0; i < n; i++) {
        m = slots[i];
        labels[1].data = m->name;
        labels[1].len = m->name_len;

        h.buckets = m->duration;
        h.sum = m->duration_ms;
        ngx_http_toll_metrics_histogram(o, labels, 1, &h);
    }

    ngx_http_toll_metrics_family_end(o);
}


/* the Redis adapter's counters, and its connections' state */

static void
ngx_http_toll_metrics_redis(ngx_http_toll_metrics_out_t *o,
    ngx_http_toll_redis_stats_t *rst, ngx_http_toll_shm_stats_t *st)
{
    ngx_http_toll_metrics_hist_t  h;

    ngx_http_toll_metrics_family(o, "toll_redis_commands_total", "counter",
        "Redis commands the gate asked for, sent or not.");
    ngx_http_toll_metrics_sample(o, NULL, 0, rst->commands);
    ngx_http_toll_metrics_family_end(o);

    ngx_http_toll_metrics_family(o, "toll_redis_errors_total", "counter",
        "Redis commands that failed: not sent while the store was down, "
        "timed out, connection lost, or an error reply.");
    ngx_http_toll_metrics_sample(o, NULL, 0, rst->errors);
    ngx_http_toll_metrics_family_end(o);

    ngx_http_toll_metrics_family(o, "toll_redis_reconnects_total", "counter",
        "Connections to Redis made again after one was lost or refused.");
    ngx_http_toll_metrics_sample(o, NULL, 0, rst->reconnects);
    ngx_http_toll_metrics_family_end(o);

    ngx_http_toll_metrics_family(o, "toll_redis_up", "gauge",
        "1 when every live worker's Redis connection is up, else 0.");
    ngx_http_toll_metrics_sample(o, NULL, 0,
                                 st->workers && st->redis_up == st->workers);
    ngx_http_toll_metrics_family_end(o);

    ngx_http_toll_metrics_family(o, "toll_redis_reply_duration_seconds",
        "histogram", "Time from sending a Redis command to its reply.");

    h.n = NGX_HTTP_TOLL_REDIS_REPLY_BUCKETS;
    h.bounds = ngx_http_toll_redis_le;
    h.buckets = rst->reply;
    h.sum = rst->reply_us;
    h.sum_scale = 1000000;
    ngx_http_toll_metrics_histogram(o, NULL, 0, &h);
    ngx_http_toll_metrics_family_end(o);
}


/* the zone: backlogs, the key cache, room, workers */

static void
ngx_http_toll_metrics_zone(ngx_http_toll_metrics_out_t *o,
    ngx_http_toll_shm_stats_t *st)
{
    ngx_str_t          labels[2];
    ngx_uint_t         i, k;
    ngx_atomic_uint_t  v;

    ngx_http_toll_metrics_family(o, "toll_meter_backlog", "gauge",
        "Metered subjects in the zone whose counts wait for their flush "
        "to Redis.");
    ngx_http_toll_metrics_sample(o, NULL, 0, st->meter_backlog);
    ngx_http_toll_metrics_family_end(o);

    ngx_http_toll_metrics_family(o, "toll_limit_sync_backlog", "gauge",
        "Rate-limit subjects in the zone waiting for their sync with "
        "Redis.");
    ngx_http_toll_metrics_sample(o, NULL, 0, st->limit_backlog);
    ngx_http_toll_metrics_family_end(o);

    ngx_str_set(&labels[0], "credential");

    for (k = 0; k < 2; k++) {
        if (k == 0) {
            ngx_http_toll_metrics_family(o, "toll_key_cache_hits_total",
                "counter",
                "Credential lookups answered by the zone's cache.");
        } else {
            ngx_http_toll_metrics_family(o, "toll_key_cache_misses_total",
                "counter",
                "Credential lookups the cache could not answer (absent or "
                "stale).");
        }

        for (i = 0; i < 2; i++) {
            if (i == NGX_HTTP_TOLL_SHM_API_KEY) {
                ngx_str_set(&labels[1], "api_key");
            } else {
                ngx_str_set(&labels[1], "jwt");
            }

            v = k ? st->cache_misses[i] : st->cache_hits[i];
            ngx_http_toll_metrics_sample(o, labels, 1, v);
        }

        ngx_http_toll_metrics_family_end(o);
    }

    ngx_http_toll_metrics_family(o, "toll_zone_used_bytes", "gauge",
        "Bytes of the shared zone in use (whole pages).");
    ngx_http_toll_metrics_sample(o, NULL, 0, st->size - st->free);
    ngx_http_toll_metrics_family_end(o);

    ngx_http_toll_metrics_family(o, "toll_zone_free_bytes", "gauge",
        "Bytes of the shared zone in free pages.");
    ngx_http_toll_metrics_sample(o, NULL, 0, st->free);
    ngx_http_toll_metrics_family_end(o);

    ngx_http_toll_metrics_family(o, "toll_workers", "gauge",
        "Live worker processes sharing the zone, not counting those of an "
        "old cycle that are exiting.");
    ngx_http_toll_metrics_sample(o, NULL, 0, st->workers);
    ngx_http_toll_metrics_family_end(o);
}



/* output: a chain of buffers from the request's pool */

static void
ngx_http_toll_metrics_write(ngx_http_toll_metrics_out_t *o, u_char *data,
    size_t len)
{
    size_t        n;
    ngx_chain_t  *cl;

    while (len && !o->failed) {

        if (o->b == NULL || o->b->last == o->b->end) {
            cl = ngx_alloc_chain_link(o->r->pool);
            if (cl == NULL) {
                o->failed = 1;
                return;
            }

            cl->buf = ngx_create_temp_buf(o->r->pool,
                                          NGX_HTTP_TOLL_METRICS_CHUNK);
            if (cl->buf == NULL) {
                o->failed = 1;
                return;
            }

            cl->next = NULL;
            *o->last = cl;
            o->last = &cl->next;
            o->b = cl->buf;
        }

        n = ngx_min(len, (size_t) (o->b->end - o->b->last));
        o->b->last = ngx_cpymem(o->b->last, data, n);
        o->size += n;
        data += n;
        len -= n;
    }
}


/*
 * A label value or a JSON string: names are configured tokens, but the
 * writer escapes what either format needs anyway.
 */

static void
ngx_http_toll_metrics_escaped(ngx_http_toll_metrics_out_t *o, ngx_str_t *s)
{
    u_char  *p, *end, *start, esc[8];

    p = s->data;
    end = p + s->len;
    start = p;

    for ( /* void */ ; p < end; p++) {

        if (*p != '\\' && *p != '"' && *p >= 0x20) {
            continue;
        }

        ngx_http_toll_metrics_write(o, start, p - start);
        start = p + 1;

        if (*p == '\\' || *p == '"') {
            esc[0] = '\\';
            esc[1] = *p;
            ngx_http_toll_metrics_write(o, esc, 2);

        } else if (*p == '\n') {
            ngx_http_toll_metrics_literal(o, "\\n");

        } else if (o->json) {
            ngx_http_toll_metrics_write(o, esc,
                                        ngx_sprintf(esc, "\\u%04xd", *p)
                                        - esc);
        }
    }

    ngx_http_toll_metrics_write(o, start, p - start);
}


static void
ngx_http_toll_metrics_family(ngx_http_toll_metrics_out_t *o, char *name,
    char *type, char *help)
{
    o->family.data = (u_char *) name;
    o->family.len = ngx_strlen(name);
    o->samples = 0;

    if (o->json) {
        if (o->families++) {
            ngx_http_toll_metrics_literal(o, ",");
        }

        ngx_http_toll_metrics_literal(o, "\"");
        ngx_http_toll_metrics_write(o, o->family.data, o->family.len);
        ngx_http_toll_metrics_literal(o, "\":{\"type\":\"");
        ngx_http_toll_metrics_write(o, (u_char *) type, ngx_strlen(type));
        ngx_http_toll_metrics_literal(o, "\",\"help\":\"");
        ngx_http_toll_metrics_write(o, (u_char *) help, ngx_strlen(help));
        ngx_http_toll_metrics_literal(o, "\",\"samples\":[");
        return;
    }

    ngx_http_toll_metrics_literal(o, "# HELP ");
    ngx_http_toll_metrics_write(o, o->family.data, o->family.len);
    ngx_http_toll_metrics_literal(o, " ");
    ngx_http_toll_metrics_write(o, (u_char *) help, ngx_strlen(help));
    ngx_http_toll_metrics_literal(o, "\n# TYPE ");
    ngx_http_toll_metrics_write(o, o->family.data, o->family.len);
    ngx_http_toll_metrics_literal(o, " ");
    ngx_http_toll_metrics_write(o, (u_char *) type, ngx_strlen(type));
    ngx_http_toll_metrics_literal(o, "\n");
}


static void
ngx_http_toll_metrics_family_end(ngx_http_toll_metrics_out_t *o)
{
    if (o->json) {
        ngx_http_toll_metrics_literal(o, "]}");
    }
}


/* {name="value",...}, with "le" last when given; JSON: {"name":"value"} */

static void
ngx_http_toll_metrics_labels(ngx_http_toll_metrics_out_t *o,
    ngx_str_t *labels, ngx_uint_t n, ngx_str_t *le)
{
    ngx_uint_t  i;

    if (o->json) {
        ngx_http_toll_metrics_literal(o, "{");

        for (i = 0; i < n; i++) {
            if (i) {
                ngx_http_toll_metrics_literal(o, ",");
            }

            ngx_http_toll_metrics_literal(o, "\"");
            ngx_http_toll_metrics_write(o, labels[2 * i].data,
                                        labels[2 * i].len);
            ngx_http_toll_metrics_literal(o, "\":\"");
            ngx_http_toll_metrics_escaped(o, &labels[2 * i + 1]);
            ngx_http_toll_metrics_literal(o, "\"");
        }

        ngx_http_toll_metrics_literal(o, "}");
        return;
    }

    if (n == 0 && le == NULL) {
        return;
    }

    ngx_http_toll_metrics_literal(o, "{");

    for (i = 0; i < n; i++) {
        if (i) {
            ngx_http_toll_metrics_literal(o, ",");
        }

        ngx_http_toll_metrics_write(o, labels[2 * i].data, labels[2 * i].len);
        ngx_http_toll_metrics_literal(o, "=\"");
        ngx_http_toll_metrics_escaped(o, &labels[2 * i + 1]);
        ngx_http_toll_metrics_literal(o, "\"");
    }

    if (le) {
        if (n) {
            ngx_http_toll_metrics_literal(o, ",");
        }

        ngx_http_toll_metrics_literal(o, "le=\"");
        ngx_http_toll_metrics_write(o, le->data, le->len);
        ngx_http_toll_metrics_literal(o, "\"");
    }

    ngx_http_toll_metrics_literal(o, "}");
}


static void
ngx_http_toll_metrics_sample(ngx_http_toll_metrics_out_t *o,
    ngx_str_t *labels, ngx_uint_t n, ngx_atomic_uint_t value)
{
    u_char  buf[NGX_ATOMIC_T_LEN], *p;

    p = ngx_sprintf(buf, "%uA", value);

    if (o->json) {
        if (o->samples++) {
            ngx_http_toll_metrics_literal(o, ",");
        }

        ngx_http_toll_metrics_literal(o, "{\"labels\":");
        ngx_http_toll_metrics_labels(o, labels, n, NULL);
        ngx_http_toll_metrics_literal(o, ",\"value\":");
        ngx_http_toll_metrics_write(o, buf, p - buf);
        ngx_http_toll_metrics_literal(o, "}");
        return;
    }

    ngx_http_toll_metrics_write(o, o->family.data, o->family.len);
    ngx_http_toll_metrics_labels(o, labels, n, NULL);
    ngx_http_toll_metrics_literal(o, " ");
    ngx_http_toll_metrics_write(o, buf, p - buf);
    ngx_http_toll_metrics_literal(o, "\n");
}


/*
 * Cumulative buckets, the sum in seconds and the count.  The count is
 * the +Inf bucket, summed from the same reads, so that the two agree
 * even while workers add to them.
 */

static void
ngx_http_toll_metrics_histogram(ngx_http_toll_metrics_out_t *o,
    ngx_str_t *labels, ngx_uint_t n, ngx_http_toll_metrics_hist_t *h)
{
    u_char             cbuf[NGX_ATOMIC_T_LEN], sbuf[NGX_ATOMIC_T_LEN + 8];
    u_char            *cp, *sp;
    ngx_str_t          inf;
    ngx_uint_t         i;
    ngx_atomic_uint_t  count;

    ngx_str_set(&inf, "+Inf");

    sp = (h->sum_scale == 1000)
         ? ngx_sprintf(sbuf, "%uA.%03uA", h->sum / 1000, h->sum % 1000)
         : ngx_sprintf(sbuf, "%uA.%06uA", h->sum / 1000000,
                       h->sum % 1000000);

    count = 0;

    if (o->json) {
        if (o->samples++) {
            ngx_http_toll_metrics_literal(o, ",");
        }

        ngx_http_toll_metrics_literal(o, "{\"labels\":");
        ngx_http_toll_metrics_labels(o, labels, n, NULL);
        ngx_http_toll_metrics_literal(o, ",\"buckets\":[");

        for (i = 0; i <= h->n; i++) {
            count += h->buckets[i];
            cp = ngx_sprintf(cbuf, "%uA", count);

            ngx_http_toll_metrics_literal(o, "{\"le\":\"");

            if (i < h->n) {
                ngx_http_toll_metrics_write(o, h->bounds[i].data,
                                            h->bounds[i].len);
            } else {
                ngx_http_toll_metrics_write(o, inf.data, inf.len);
            }

            ngx_http_toll_metrics_literal(o, "\",\"count\":");
            ngx_http_toll_metrics_write(o, cbuf, cp - cbuf);
            ngx_http_toll_metrics_literal(o, "}");

            if (i < h->n) {
                ngx_http_toll_metrics_literal(o, ",");
            }
        }

        ngx_http_toll_metrics_literal(o, "],\"sum\":");
        ngx_http_toll_metrics_write(o, sbuf, sp - sbuf);
        ngx_http_toll_metrics_literal(o, ",\"count\":");
        ngx_http_toll_metrics_write(o, cbuf, cp - cbuf);
        ngx_http_toll_metrics_literal(o, "}");
        return;
    }

    for (i = 0; i <= h->n; i++) {
        count += h->buckets[i];
        cp = ngx_sprintf(cbuf, "%uA", count);

        ngx_http_toll_metrics_write(o, o->family.data, o->family.len);
        ngx_http_toll_metrics_literal(o, "_bucket");
        ngx_http_toll_metrics_labels(o, labels, n,
                                     (i < h->n) ? &h->bounds[i] : &inf);
        ngx_http_toll_metrics_literal(o, " ");
        ngx_http_toll_metrics_write(o, cbuf, cp - cbuf);
        ngx_http_toll_metrics_literal(o, "\n");
    }

    ngx_http_toll_metrics_write(o, o->family.data, o->family.len);
    ngx_http_toll_metrics_literal(o, "_sum");
    ngx_http_toll_metrics_labels(o, labels, n, NULL);
    ngx_http_toll_metrics_literal(o, " ");
    ngx_http_toll_metrics_write(o, sbuf, sp - sbuf);
    ngx_http_toll_metrics_literal(o, "\n");

    ngx_http_toll_metrics_write(o, o->family.data, o->family.len);
    ngx_http_toll_metrics_literal(o, "_count");
    ngx_http_toll_metrics_labels(o, labels, n, NULL);
    ngx_http_toll_metrics_literal(o, " ");
    ngx_http_toll_metrics_write(o, cbuf, cp - cbuf);
    ngx_http_toll_metrics_literal(o, "\n");
}
