/*
 * toll: the meter.
 *
 * Every priced call that reached the upstream is counted once, when its
 * answer ends (or its request, if the answer did not), into the shared
 * zone: per buyer, service, provider and UTC day.  A timer in each
 * worker flushes the counts to Redis in batches whose ids make a retried
 * flush count nothing twice.
 */

#ifndef _NGX_HTTP_TOLL_METER_H_INCLUDED_
#define _NGX_HTTP_TOLL_METER_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"


ngx_int_t ngx_http_toll_meter_init_process(ngx_cycle_t *cycle);

/*
 * Opens a priced call's record in the zone as it passes the gate, at its
 * price; NGX_ERROR when the zone cannot hold it (the call must not pass:
 * money fails closed).  The answer's end, or the log phase, ends the
 * record and counts what the call turned out to be; the counts of a
 * worker that died first are counted as the gate recorded them.
 */
ngx_int_t ngx_http_toll_meter_admit(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx);

/*
 * drops the record admit opened, with nothing counted, before the call is
 * priced again (an internal redirect into another priced location)
 */
void ngx_http_toll_meter_unadmit(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx);

/*
 * The answer before nginx sends it: its end counts the call (see
 * ngx_http_toll_meter.c).  The gate's header filter calls
 * ngx_http_toll_meter_header with the headers decided; the body filter is
 * installed with the gate's header filter, before the plugins' filters,
 * so that it runs after them.
 */
void ngx_http_toll_meter_header(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx);
ngx_int_t ngx_http_toll_meter_filter_init(ngx_conf_t *cf);

/*
 * the call's count, once: from the answer's end (above) or, if it did
 * not end, from the log phase
 */
void ngx_http_toll_meter_log(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx);

/*
 * What the zone counted of a buyer and Redis may not have yet, per
 * service: counts waiting for a flush, and those of a flush sent and not
 * confirmed, with its id ("%016xL%016xL"; empty: none).
 */
typedef struct {
    ngx_str_t                  service;
    ngx_str_t                  currency;
    int64_t                    pending[TOLL_USAGE_COUNTS];
    int64_t                    flight[TOLL_USAGE_COUNTS];
    u_char                     flush_id[TOLL_NAME_BATCH_LEN];
    ngx_uint_t                 in_flight;
} ngx_http_toll_meter_unsent_t;

/* the buyer's, into out (ngx_http_toll_meter_unsent_t, from its pool) */
ngx_int_t ngx_http_toll_meter_unsent(ngx_shm_zone_t *shm_zone,
    ngx_str_t *buyer, ngx_array_t *out);

/* the request's pool goes: a record the log phase did not end is counted */
void ngx_http_toll_meter_cleanup(ngx_http_toll_ctx_t *ctx);


#endif /* _NGX_HTTP_TOLL_METER_H_INCLUDED_ */
