/*
 * toll: a buyer's usage, answered to the buyer (toll_usage).
 */

#ifndef _NGX_HTTP_TOLL_USAGE_H_INCLUDED_
#define _NGX_HTTP_TOLL_USAGE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


char *ngx_http_toll_usage_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


#endif /* _NGX_HTTP_TOLL_USAGE_H_INCLUDED_ */
