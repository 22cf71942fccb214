/*
 * toll: the operator's metrics.
 *
 * toll_metrics renders the counters of the shared zone as Prometheus text
 * or JSON when scraped, and toll_dashboard serves a page that draws them.
 * The counters are kept by the rooms that produce them; this room only
 * reads.
 */

#ifndef _NGX_HTTP_TOLL_METRICS_H_INCLUDED_
#define _NGX_HTTP_TOLL_METRICS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/* toll_metrics; toll_dashboard; */
char *ngx_http_toll_metrics_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* postconfiguration: the locations need the zone */
ngx_int_t ngx_http_toll_metrics_init(ngx_conf_t *cf);


#endif /* _NGX_HTTP_TOLL_METRICS_H_INCLUDED_ */
