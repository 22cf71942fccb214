/*
 * toll: what the meter's two rooms share.
 *
 * The records of calls (ngx_http_toll_meter.c) count into a node's
 * pending counts; the flush (ngx_http_toll_meter_flush.c) sends them to
 * Redis and, on its timer, has the records of dead workers swept.
 * Nothing outside these two files includes this header.
 */

#ifndef _NGX_HTTP_TOLL_METER_INT_H_INCLUDED_
#define _NGX_HTTP_TOLL_METER_INT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"
#include "toll_names.h"


/* a node of the zone: one buyer, service, provider and UTC day */
typedef struct {
    int64_t                    pending[TOLL_USAGE_COUNTS];
    int64_t                    flight[TOLL_USAGE_COUNTS];
    uint64_t                   flush_id[2];   /* {0, 0}: none in flight */
    int64_t                    flush_at_ms;
    ngx_uint_t                 open;          /* calls between the gate
                                                 and their end */
    ngx_uint_t                 refused;       /* Redis refuses the batch
                                                 in flight: said once */
} ngx_http_toll_meter_state_t;


/* starts the flush timer of this worker process */
ngx_int_t ngx_http_toll_meter_flush_start(ngx_cycle_t *cycle,
    ngx_shm_zone_t *shm_zone, ngx_msec_t flush_ms);

/*
 * counts the open calls of workers that died (the zone locked), at most
 * once a second
 */
void ngx_http_toll_meter_sweep(int64_t now, ngx_log_t *log);


#endif /* _NGX_HTTP_TOLL_METER_INT_H_INCLUDED_ */
