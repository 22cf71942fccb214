/*
 * toll: the refusals' answers, one per kind of refusal, in RFC 9457
 * problem+json or in the {"error":{...}} envelope (toll_error_format).
 */

#ifndef _NGX_HTTP_TOLL_PROBLEM_H_INCLUDED_
#define _NGX_HTTP_TOLL_PROBLEM_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"


typedef enum {
    NGX_HTTP_TOLL_PROBLEM_UNAUTHORIZED = 0,
    NGX_HTTP_TOLL_PROBLEM_AMBIGUOUS_CREDENTIALS,
    NGX_HTTP_TOLL_PROBLEM_STORE_UNAVAILABLE,
    NGX_HTTP_TOLL_PROBLEM_RATE_LIMITED,
    NGX_HTTP_TOLL_PROBLEM_CONCURRENCY_LIMITED,
    NGX_HTTP_TOLL_PROBLEM_PAYMENT_REQUIRED,
    NGX_HTTP_TOLL_PROBLEM_SPEND_CAP_EXCEEDED,
    NGX_HTTP_TOLL_PROBLEM_FORBIDDEN,      /* toll_require: what is missing
                                             in the ext's detail */
    NGX_HTTP_TOLL_PROBLEM_PLUGIN          /* a plugin's refusal: its code
                                             and detail in the ext */
} ngx_http_toll_problem_e;


#define NGX_HTTP_TOLL_PAYMENT_REQUIRED  402


/* toll_error_format */
#define NGX_HTTP_TOLL_ERROR_PROBLEM     0
#define NGX_HTTP_TOLL_ERROR_ENVELOPE    1


/* what a refusal adds to its kind's fixed answer */
typedef struct {
    ngx_uint_t                 status;        /* 0: the kind's own */
    ngx_str_t                  policy;        /* the limit violated;
                                                 empty: none */
    int64_t                    retry_after;   /* seconds; 0: none */
    ngx_str_t                  members;       /* more members, JSON-safe,
                                                 each with its ',' after */
    ngx_str_t                  code;          /* a plugin's, JSON-safe;
                                                 empty: the kind's own
                                                 (toll_error_code renames
                                                 only that) */
    ngx_str_t                  detail;        /* JSON-safe; empty: the
                                                 kind's own */
} ngx_http_toll_problem_ext_t;


/*
 * Sends the whole answer; returns what a content handler would, for
 * ngx_http_finalize_request().
 */
ngx_int_t ngx_http_toll_problem_send(ngx_http_request_t *r,
    ngx_http_toll_problem_e problem);
ngx_int_t ngx_http_toll_problem_send_ext(ngx_http_request_t *r,
    ngx_http_toll_problem_e problem, ngx_http_toll_problem_ext_t *ext);


/* toll_error_format, toll_error_type_base, toll_error_trace_header */
extern ngx_conf_enum_t            ngx_http_toll_error_formats[];
extern ngx_conf_post_handler_pt   ngx_http_toll_error_type_base_p;
extern ngx_conf_post_handler_pt   ngx_http_toll_error_trace_header_p;

char *ngx_http_toll_problem_merge_loc_conf(ngx_conf_t *cf,
    ngx_http_toll_loc_conf_t *prev, ngx_http_toll_loc_conf_t *conf);


#endif /* _NGX_HTTP_TOLL_PROBLEM_H_INCLUDED_ */
