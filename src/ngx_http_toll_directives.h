/*
 * toll: the module's directives (ngx_http_toll_directives.c).
 */

#ifndef _NGX_HTTP_TOLL_DIRECTIVES_H_INCLUDED_
#define _NGX_HTTP_TOLL_DIRECTIVES_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


extern ngx_command_t  ngx_http_toll_commands[];


#endif /* _NGX_HTTP_TOLL_DIRECTIVES_H_INCLUDED_ */
