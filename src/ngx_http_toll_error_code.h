/*
 * toll: the refusals' codes as a platform spells them (toll_error_code).
 *
 * A provider whose clients read "RATE_LIMIT_EXCEEDED" where toll says
 * "rate_limited" renames the code, in both error formats; the status,
 * the headers and the rest of the body stay toll's.
 */

#ifndef _NGX_HTTP_TOLL_ERROR_CODE_H_INCLUDED_
#define _NGX_HTTP_TOLL_ERROR_CODE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


#define NGX_HTTP_TOLL_ERROR_CODE_LEN_MAX  64


/* toll_error_code CODE NAME; */
char *ngx_http_toll_error_code_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/*
 * The code a refusal says: the location's name for toll's code, else
 * code itself.  codes is the location's list (NULL: none).
 */
void ngx_http_toll_error_code_map(ngx_array_t *codes, ngx_str_t *code);


#endif /* _NGX_HTTP_TOLL_ERROR_CODE_H_INCLUDED_ */
