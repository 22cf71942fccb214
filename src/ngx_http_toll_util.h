/*
 * toll: small helpers every room of the module uses.
 *
 * Nothing here includes a header of the module's own: the arrows of the
 * include graph point at this file, never away from it.
 */

#ifndef _NGX_HTTP_TOLL_UTIL_H_INCLUDED_
#define _NGX_HTTP_TOLL_UTIL_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/* adds a response header; name and value must outlive the request */
ngx_int_t ngx_http_toll_header_push(ngx_http_request_t *r, u_char *name,
    size_t name_len, u_char *value, size_t len);

/* the wall clock in unix ms, as limits and the meter count time */
int64_t ngx_http_toll_now_ms(void);

/* a count in decimal: the answers' hot paths have no use for ngx_sprintf() */
u_char *ngx_http_toll_format_int(u_char *p, int64_t n);


#endif /* _NGX_HTTP_TOLL_UTIL_H_INCLUDED_ */
