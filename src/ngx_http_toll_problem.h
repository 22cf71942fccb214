/*
 * toll: RFC 9457 problem+json answers, one per kind of refusal.
 */

#ifndef _NGX_HTTP_TOLL_PROBLEM_H_INCLUDED_
#define _NGX_HTTP_TOLL_PROBLEM_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


typedef enum {
    NGX_HTTP_TOLL_PROBLEM_UNAUTHORIZED = 0,
    NGX_HTTP_TOLL_PROBLEM_AMBIGUOUS_CREDENTIALS,
    NGX_HTTP_TOLL_PROBLEM_STORE_UNAVAILABLE
} ngx_http_toll_problem_e;


/*
 * Sends the whole answer; returns what a content handler would, for
 * ngx_http_finalize_request().
 */
ngx_int_t ngx_http_toll_problem_send(ngx_http_request_t *r,
    ngx_http_toll_problem_e problem);


#endif /* _NGX_HTTP_TOLL_PROBLEM_H_INCLUDED_ */
