/*
 * toll: the meter.
 *
 * Every priced call that reached the upstream is counted once, in the log
 * phase, into the shared zone: per buyer, service, provider and UTC day.
 * A timer in each worker flushes the counts to Redis in batches whose ids
 * make a retried flush count nothing twice.
 */

#ifndef _NGX_HTTP_TOLL_METER_H_INCLUDED_
#define _NGX_HTTP_TOLL_METER_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"


ngx_int_t ngx_http_toll_meter_init_process(ngx_cycle_t *cycle);

/* counts a priced call as it passes the gate; the log phase corrects it */
ngx_int_t ngx_http_toll_meter_admit(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx);

/*
 * takes back what admit counted, before the call is priced again (an
 * internal redirect into another priced location); NGX_ERROR: the zone
 * could not take it, the call keeps its count and its price
 */
ngx_int_t ngx_http_toll_meter_unadmit(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx);

/* from the log phase, once per request with a context */
void ngx_http_toll_meter_log(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx);


#endif /* _NGX_HTTP_TOLL_METER_H_INCLUDED_ */
