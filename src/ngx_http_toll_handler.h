/*
 * toll: the gate's request path: the access phase and what ends it.
 */

#ifndef _NGX_HTTP_TOLL_HANDLER_H_INCLUDED_
#define _NGX_HTTP_TOLL_HANDLER_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"


/* preconfiguration: the $toll_* variables */
ngx_int_t ngx_http_toll_add_variables(ngx_conf_t *cf);

/* postconfiguration: the phase handlers and the header filter */
ngx_int_t ngx_http_toll_handler_init(ngx_conf_t *cf);

/* the request's context, also after an internal redirect; NULL: none */
ngx_http_toll_ctx_t *ngx_http_toll_get_ctx(ngx_http_request_t *r);


#endif /* _NGX_HTTP_TOLL_HANDLER_H_INCLUDED_ */
