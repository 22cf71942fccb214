/*
 * toll: the gate's counters of each service, in the shared zone.
 *
 * A slot per service, by name and currency, made when the zone is
 * initialised and kept across reloads; the log phase adds a decision, a
 * status class and a duration bucket, the meter the call's free, paid and
 * billed counts: one atomic add each, no lock.  ngx_http_toll_metrics.c
 * reads them when scraped.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_counters.h"


#if (TOLL_PLAN_LEN_MAX > NGX_HTTP_TOLL_COUNTERS_NAME_MAX                     \
     || TOLL_PLAN_LEN_MAX > 255)
#error "a service name is longer than a counters slot can store"
#endif


static ngx_http_toll_counters_t *ngx_http_toll_counters_slot(
    ngx_slab_pool_t *shpool, ngx_http_toll_counters_sh_t *csh,
    ngx_str_t *name, ngx_str_t *currency);


/* the zone's counters in this worker's cycle; NULL: no zone */
static ngx_http_toll_counters_sh_t  *ngx_http_toll_counters_csh;


/* Prometheus's default buckets, in ms; the metrics print them in s */
static const ngx_uint_t  ngx_http_toll_duration_bounds[] = {
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000
};


ngx_int_t
ngx_http_toll_counters_init_zone(ngx_slab_pool_t *shpool,
    ngx_http_toll_counters_sh_t *csh, ngx_http_toll_main_conf_t *mcf,
    ngx_uint_t fresh)
{
    ngx_uint_t                  i, j;
    ngx_http_toll_service_t   **svc;
    ngx_http_toll_counters_t   *slot, **ref;

    mcf->counters = csh;

    if (fresh) {
        ngx_queue_init(&csh->services);
    }

    if (mcf->services == NULL) {
        return NGX_OK;
    }

    mcf->counters_services = ngx_array_create(mcf->services->pool,
                                              mcf->services->nelts,
                                              sizeof(void *));
    if (mcf->counters_services == NULL) {
        return NGX_ERROR;
    }

    svc = mcf->services->elts;

    /* the old cycle's workers still count while a reload binds */

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < mcf->services->nelts; i++) {
        slot = ngx_http_toll_counters_slot(shpool, csh, &svc[i]->name,
                                           &svc[i]->currency);

        /* a zone too full to count a service in: it goes uncounted */
        svc[i]->counters = slot;

        if (slot == NULL) {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "toll: no room in the zone to count service "
                          "\"%V\" in the metrics", &svc[i]->name);
            continue;
        }

        ref = mcf->counters_services->elts;

        for (j = 0; j < mcf->counters_services->nelts; j++) {
            if (ref[j] == slot) {
                break;
            }
        }

        if (j == mcf->counters_services->nelts) {
            ref = ngx_array_push(mcf->counters_services);
            if (ref == NULL) {
                ngx_shmtx_unlock(&shpool->mutex);
                return NGX_ERROR;
            }

            *ref = slot;
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    return NGX_OK;
}


/* a service's slot by name and currency, made on first use; locked */

static ngx_http_toll_counters_t *
ngx_http_toll_counters_slot(ngx_slab_pool_t *shpool,
    ngx_http_toll_counters_sh_t *csh, ngx_str_t *name, ngx_str_t *currency)
{
    ngx_queue_t               *q;
    ngx_http_toll_counters_t  *slot;

    for (q = ngx_queue_head(&csh->services);
         q != ngx_queue_sentinel(&csh->services);
         q = ngx_queue_next(q))
    {
        slot = ngx_queue_data(q, ngx_http_toll_counters_t, queue);

        if (slot->name_len == name->len
            && ngx_strncmp(slot->name, name->data, name->len) == 0
            && slot->currency_len == currency->len
            && ngx_strncmp(slot->currency, currency->data, currency->len)
               == 0)
        {
            return slot;
        }
    }

    slot = ngx_slab_calloc_locked(shpool, sizeof(ngx_http_toll_counters_t));
    if (slot == NULL) {
        return NULL;
    }

    slot->name_len = (u_char) name->len;
    ngx_memcpy(slot->name, name->data, name->len);
    slot->currency_len = (u_char) currency->len;
    ngx_memcpy(slot->currency, currency->data, currency->len);

    ngx_queue_insert_tail(&csh->services, &slot->queue);

    return slot;
}


ngx_int_t
ngx_http_toll_counters_init_process(ngx_cycle_t *cycle)
{
    ngx_http_toll_main_conf_t  *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_toll_module);

    if (mcf == NULL || mcf->shm_zone == NULL) {
        return NGX_OK;
    }

    ngx_http_toll_counters_csh = mcf->counters;

    return NGX_OK;
}


/* the counters of the service of the location whose gate ran */

static ngx_inline ngx_http_toll_counters_t *
ngx_http_toll_counters_of(ngx_http_toll_ctx_t *ctx)
{
    ngx_http_toll_service_t  *svc;

    svc = ctx->counters_service;

    if (svc) {
        return svc->counters;
    }

    return ngx_http_toll_counters_csh ? &ngx_http_toll_counters_csh->none
                                      : NULL;
}


/*
 * Once per gated request, at its end: what the gate decided, and for a
 * passed one how the answer went.
 */

void
ngx_http_toll_counters_log(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    ngx_uint_t                 status, decision;
    ngx_msec_int_t             ms;
    ngx_time_t                *tp;
    ngx_http_toll_counters_t  *m;

    /* only the access phase makes a context: the request was gated */

    if (ctx->counted) {
        return;
    }

    ctx->counted = 1;

    m = ngx_http_toll_counters_of(ctx);

    if (m == NULL) {
        return;
    }

    switch (ctx->state) {

    case NGX_HTTP_TOLL_STATE_PASSED:
        decision = NGX_HTTP_TOLL_DECISION_PASSED;
        break;

    case NGX_HTTP_TOLL_STATE_REJECTED:
        decision = ctx->decision;
        break;

    default:
        /* it ended while parked on the store: the client went away */
        decision = NGX_HTTP_TOLL_DECISION_CLIENT_CLOSED;
        break;
    }

    (void) ngx_atomic_fetch_add(&m->requests[decision], 1);

    if (decision != NGX_HTTP_TOLL_DECISION_PASSED) {
        return;
    }

    status = r->headers_out.status;

    if (status >= 100 && status < 600) {
        (void) ngx_atomic_fetch_add(&m->responses[status / 100 - 1], 1);
    }

    /* as the meter counts an error: the upstream was tried, and 5xx */

    if (status >= NGX_HTTP_INTERNAL_SERVER_ERROR
        && r->upstream_states && r->upstream_states->nelts)
    {
        (void) ngx_atomic_fetch_add(&m->upstream_errors, 1);
    }

    /* as $request_time counts it */

    tp = ngx_timeofday();
    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));
    ms = ngx_max(ms, 0);

    ngx_http_toll_observe(m->duration, ngx_http_toll_duration_bounds,
                          NGX_HTTP_TOLL_COUNTERS_DURATION_BUCKETS,
                          &m->duration_ms, (ngx_uint_t) ms);
}


void
ngx_http_toll_counters_metered(ngx_http_toll_ctx_t *ctx, int64_t free_calls,
    int64_t paid_calls, int64_t amount_micros)
{
    ngx_http_toll_counters_t  *m;

    m = ngx_http_toll_counters_of(ctx);

    if (m == NULL) {
        return;
    }

    if (free_calls > 0) {
        (void) ngx_atomic_fetch_add(&m->free_calls, free_calls);
    }

    if (paid_calls > 0) {
        (void) ngx_atomic_fetch_add(&m->paid_calls, paid_calls);
    }

    if (amount_micros > 0) {
        (void) ngx_atomic_fetch_add(&m->billed_micros, amount_micros);
    }
}
