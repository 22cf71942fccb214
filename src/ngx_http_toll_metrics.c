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
#include "ngx_http_toll_jwks.h"
#include "ngx_http_toll_metrics_int.h"
#include "ngx_http_toll_cap.h"
#include "ngx_http_toll_counters.h"
#include "ngx_http_toll_prepaid.h"
#include "ngx_http_toll_redis.h"
#include "ngx_http_toll_shm.h"
#include "ngx_http_toll_dashboard_html.h"


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

static void ngx_http_toll_metrics_prepaid(ngx_http_toll_metrics_out_t *o,
    ngx_http_toll_main_conf_t *mcf);
static void ngx_http_toll_metrics_caps(ngx_http_toll_metrics_out_t *o,
    ngx_http_toll_main_conf_t *mcf);
static ngx_uint_t ngx_http_toll_metrics_currencies(
    ngx_http_toll_main_conf_t *mcf, ngx_str_t *cur);



static ngx_str_t  ngx_http_toll_decision_names[] = {
    ngx_string("passed"),
    ngx_string("unauthorized"),
    ngx_string("bad_request"),
    ngx_string("rate_limited"),
    ngx_string("quota_exceeded"),
    ngx_string("payment_required"),
    ngx_string("spend_cap_exceeded"),
    ngx_string("store_unavailable"),
    ngx_string("error"),
    ngx_string("client_closed"),
    ngx_string("plugin_refused"),
    ngx_string("forbidden")
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
    ngx_http_toll_metrics_prepaid(o, mcf);
    ngx_http_toll_metrics_caps(o, mcf);
    ngx_http_toll_jwks_metrics(o, mcf);

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



/* what this nginx holds of buyers' balances, per currency it sells in */

#define NGX_HTTP_TOLL_METRICS_CURRENCIES  16

static void
ngx_http_toll_metrics_prepaid(ngx_http_toll_metrics_out_t *o,
    ngx_http_toll_main_conf_t *mcf)
{
    ngx_str_t                       labels[2];
    ngx_str_t                       cur[NGX_HTTP_TOLL_METRICS_CURRENCIES];
    ngx_uint_t                      j, n, f;
    ngx_http_toll_prepaid_gauge_t   g[NGX_HTTP_TOLL_METRICS_CURRENCIES];

    static char  *names[][2] = {
        { "toll_prepaid_lease_micros",
          "Micro-units of buyers' balances leased to this nginx and not "
          "held by a call." },
        { "toll_prepaid_holding_micros",
          "Micro-units held by calls in flight, the most they can cost." },
        { "toll_prepaid_unflushed_micros",
          "Micro-units charged to balances that no meter flush has "
          "confirmed yet." },
        { "toll_prepaid_balances",
          "Buyers' balances this nginx holds anything of." },
        { "toll_prepaid_unsure",
          "Balances whose exchange with Redis was lost; settled once idle." }
    };

    n = ngx_http_toll_metrics_currencies(mcf, cur);

    for (j = 0; j < n; j++) {
        ngx_memzero(&g[j], sizeof(ngx_http_toll_prepaid_gauge_t));
        g[j].currency = cur[j];
    }

    ngx_http_toll_prepaid_gauges(mcf->shm_zone, g, n);

    ngx_str_set(&labels[0], "currency");

    for (f = 0; f < 5; f++) {
        ngx_http_toll_metrics_family(o, names[f][0], "gauge", names[f][1]);

        for (j = 0; j < n; j++) {
            labels[1] = g[j].currency;
            ngx_http_toll_metrics_sample(o, labels, 1,
                f == 0 ? (ngx_atomic_uint_t) g[j].lease
                : f == 1 ? (ngx_atomic_uint_t) g[j].holding
                : f == 2 ? (ngx_atomic_uint_t) g[j].unflushed
                : f == 3 ? g[j].balances : g[j].unsure);
        }

        ngx_http_toll_metrics_family_end(o);
    }
}


/*
 * What this nginx holds of spend caps, per currency it sells in, and the
 * caps' generation it last read: 0 until a cap is ever set (the gate
 * then skips caps), no sample until the first read.
 */

static void
ngx_http_toll_metrics_caps(ngx_http_toll_metrics_out_t *o,
    ngx_http_toll_main_conf_t *mcf)
{
    int64_t                     gen;
    ngx_str_t                   labels[2];
    ngx_str_t                   cur[NGX_HTTP_TOLL_METRICS_CURRENCIES];
    ngx_uint_t                  j, n, f;
    ngx_http_toll_cap_gauge_t   g[NGX_HTTP_TOLL_METRICS_CURRENCIES];

    static char  *names[][2] = {
        { "toll_cap_lease_micros",
          "Micro-units of buyers' and keys' spend caps leased to this "
          "nginx and not held by a call." },
        { "toll_cap_leases",
          "Buyers' keys whose spend caps this nginx holds a lease of." },
        { "toll_cap_asking",
          "Buyers' keys whose spend caps wait for an answer from Redis." }
    };

    n = ngx_http_toll_metrics_currencies(mcf, cur);

    for (j = 0; j < n; j++) {
        ngx_memzero(&g[j], sizeof(ngx_http_toll_cap_gauge_t));
        g[j].currency = cur[j];
    }

    ngx_http_toll_cap_gauges(mcf->shm_zone, g, n, &gen);

    ngx_str_set(&labels[0], "currency");

    for (f = 0; f < 3; f++) {
        ngx_http_toll_metrics_family(o, names[f][0], "gauge", names[f][1]);

        for (j = 0; j < n; j++) {
            labels[1] = g[j].currency;
            ngx_http_toll_metrics_sample(o, labels, 1,
                f == 0 ? (ngx_atomic_uint_t) g[j].lease
                : f == 1 ? g[j].leases : g[j].asking);
        }

        ngx_http_toll_metrics_family_end(o);
    }

    ngx_http_toll_metrics_family(o, "toll_cap_generation", "gauge",
        "The spend caps' generation (toll:cap:gen) as this nginx last read "
        "it; 0: no cap was ever set.");

    if (gen >= 0) {
        ngx_http_toll_metrics_sample(o, NULL, 0, (ngx_atomic_uint_t) gen);
    }

    ngx_http_toll_metrics_family_end(o);
}


/* the currencies the services sell in, once each, in their order */

static ngx_uint_t
ngx_http_toll_metrics_currencies(ngx_http_toll_main_conf_t *mcf,
    ngx_str_t *cur)
{
    ngx_uint_t                 i, j, n;
    ngx_http_toll_service_t  **svc;

    n = 0;
    svc = mcf->services ? mcf->services->elts : NULL;

    for (i = 0; svc && i < mcf->services->nelts; i++) {
        for (j = 0; j < n; j++) {
            if (cur[j].len == svc[i]->currency.len
                && ngx_strncmp(cur[j].data, svc[i]->currency.data,
                               cur[j].len) == 0)
            {
                break;
            }
        }

        if (j == n && n < NGX_HTTP_TOLL_METRICS_CURRENCIES) {
            cur[n++] = svc[i]->currency;
        }
    }

    return n;
}
