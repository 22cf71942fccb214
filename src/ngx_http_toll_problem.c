/*
 * toll: RFC 9457 problem+json answers.
 *
 * Each kind of refusal has one fixed body apart from the request id, so
 * that a client learns what to do and nothing more: in particular every
 * authentication failure reads the same, whatever its cause.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_problem.h"


typedef struct {
    ngx_uint_t                 status;
    ngx_str_t                  title;
    ngx_str_t                  code;
    ngx_str_t                  detail;
} ngx_http_toll_problem_t;


/* indexed by ngx_http_toll_problem_e; texts are JSON-safe as they are */
static ngx_http_toll_problem_t  ngx_http_toll_problems[] = {

    { NGX_HTTP_UNAUTHORIZED,
      ngx_string("Unauthorized"),
      ngx_string("unauthorized"),
      ngx_string("A valid API key is required: send \\\"Authorization: "
                 "Bearer <key_id>:<secret>\\\" or \\\"X-API-Key: "
                 "<key_id>:<secret>\\\".") },

    { NGX_HTTP_BAD_REQUEST,
      ngx_string("Bad Request"),
      ngx_string("ambiguous_credentials"),
      ngx_string("More than one credential was presented; send exactly "
                 "one.") },

    { NGX_HTTP_SERVICE_UNAVAILABLE,
      ngx_string("Service Unavailable"),
      ngx_string("store_unavailable"),
      ngx_string("The key store cannot be reached; retry later.") },

    { NGX_HTTP_TOO_MANY_REQUESTS,
      ngx_string("Too Many Requests"),
      ngx_string("rate_limited"),
      ngx_string("The rate limit named in \\\"policy\\\" is exhausted; "
                 "retry after the seconds in Retry-After.") },

    { NGX_HTTP_TOO_MANY_REQUESTS,
      ngx_string("Too Many Requests"),
      ngx_string("concurrency_limited"),
      ngx_string("Too many requests of this caller are in flight; retry "
                 "when one has finished.") },

    { NGX_HTTP_TOLL_PAYMENT_REQUIRED,
      ngx_string("Payment Required"),
      ngx_string("payment_required"),
      ngx_string("The prepaid balance does not cover this call's price; "
                 "top it up and retry.") },

    { NGX_HTTP_TOLL_PAYMENT_REQUIRED,
      ngx_string("Payment Required"),
      ngx_string("spend_cap_exceeded"),
      ngx_string("This call would pass the spend cap named in \\\"period\\\"; "
                 "retry after the seconds in Retry-After, or raise the "
                 "cap.") },

    { NGX_HTTP_FORBIDDEN,
      ngx_string("Forbidden"),
      ngx_string("forbidden"),
      ngx_string("The credential is valid but lacks a scope or role this "
                 "resource requires.") },

    /* a plugin's refusal (lua-free-plugins/): its own code and detail */
    { NGX_HTTP_FORBIDDEN,
      ngx_string("Forbidden"),
      ngx_string("refused"),
      ngx_string("The request was refused.") }
};


static ngx_buf_t *ngx_http_toll_problem_body(ngx_http_request_t *r,
    ngx_http_toll_problem_t *p, ngx_str_t *title, ngx_uint_t status,
    ngx_http_toll_problem_ext_t *ext, ngx_str_t *request_id);
static ngx_int_t ngx_http_toll_problem_headers(ngx_http_request_t *r,
    ngx_uint_t status, ngx_http_toll_problem_ext_t *ext,
    ngx_str_t *request_id);
static ngx_int_t ngx_http_toll_problem_header(ngx_http_request_t *r,
    ngx_str_t *key, ngx_str_t *value);


ngx_int_t
ngx_http_toll_problem_send(ngx_http_request_t *r,
    ngx_http_toll_problem_e problem)
{
    return ngx_http_toll_problem_send_ext(r, problem, NULL);
}


ngx_int_t
ngx_http_toll_problem_send_ext(ngx_http_request_t *r,
    ngx_http_toll_problem_e problem, ngx_http_toll_problem_ext_t *ext)
{
    ngx_uint_t                  status;
    ngx_str_t                   title;
    ngx_int_t                   rc;
    ngx_buf_t                  *b;
    ngx_str_t                   request_id;
    ngx_chain_t                 out;
    ngx_http_variable_value_t  *vv;
    ngx_http_toll_problem_t    *p, own;
    ngx_http_toll_main_conf_t  *mcf;

    p = &ngx_http_toll_problems[problem];

    if (ext && ext->code.len) {
        /* a plugin names its refusal; the rest of the answer is toll's */
        own = *p;
        own.code = ext->code;
        own.detail = ext->detail;
        p = &own;
    }
    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    status = p->status;
    title = p->title;

    if (ext && ext->status && ext->status != status) {
        /* as limit_req_status: the operator's status, a generic title */
        status = ext->status;
        ngx_str_set(&title, "Request Refused");

        if (status == NGX_HTTP_SERVICE_UNAVAILABLE) {
            ngx_str_set(&title, "Service Unavailable");
        }
    }

    /*
     * A refused client must not be invited to send its body first; one
     * that waits for the invitation will not send the body nginx would
     * then wait to discard, so its connection cannot be kept.
     */

    r->expect_tested = 1;

    if (r->headers_in.expect
        && (r->headers_in.content_length_n > 0 || r->headers_in.chunked))
    {
        r->keepalive = 0;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    ngx_str_null(&request_id);

    vv = ngx_http_get_indexed_variable(r, mcf->request_id_index);
    if (vv != NULL && !vv->not_found) {
        request_id.data = vv->data;
        request_id.len = vv->len;
    }

    b = ngx_http_toll_problem_body(r, p, &title, status, ext, &request_id);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/problem+json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    if (ngx_http_toll_problem_headers(r, status, ext, &request_id)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* the JSON body: the kind's fixed texts, the refusal's, the request id */

static ngx_buf_t *
ngx_http_toll_problem_body(ngx_http_request_t *r, ngx_http_toll_problem_t *p,
    ngx_str_t *title, ngx_uint_t status, ngx_http_toll_problem_ext_t *ext,
    ngx_str_t *request_id)
{
    size_t      len;
    ngx_buf_t  *b;

    len = sizeof("{\"type\":\"about:blank\",\"title\":\"\",\"status\":"
                 ",\"code\":\"\",\"detail\":\"\",\"request_id\":\"\"}\n") - 1
          + title->len + NGX_INT_T_LEN + p->code.len + p->detail.len
          + request_id->len;

    if (ext) {
        /* a policy name is made of letters and "-" only: JSON-safe */
        len += sizeof(",\"policy\":\"\",\"retry_after\":") - 1
               + ext->policy.len + NGX_INT64_LEN + ext->members.len;
    }

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NULL;
    }

    b->last = ngx_sprintf(b->last,
                          "{\"type\":\"about:blank\",\"title\":\"%V\","
                          "\"status\":%ui,\"code\":\"%V\",\"detail\":\"%V\",",
                          title, status, &p->code, &p->detail);

    if (ext && ext->policy.len) {
        b->last = ngx_sprintf(b->last, "\"policy\":\"%V\",\"retry_after\":%L,",
                              &ext->policy, ext->retry_after);
    }

    if (ext && ext->members.len) {
        b->last = ngx_cpymem(b->last, ext->members.data, ext->members.len);
    }

    b->last = ngx_sprintf(b->last, "\"request_id\":\"%V\"}\n", request_id);
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    return b;
}


/*
 * The answer's headers: the challenge of a 401, when to retry, that it
 * is not to be cached, and the request id.
 */

static ngx_int_t
ngx_http_toll_problem_headers(ngx_http_request_t *r, ngx_uint_t status,
    ngx_http_toll_problem_ext_t *ext, ngx_str_t *request_id)
{
    u_char     *retry;
    ngx_str_t   retry_value;

    static ngx_str_t  www_authenticate = ngx_string("WWW-Authenticate");
    static ngx_str_t  bearer = ngx_string("Bearer realm=\"toll\"");
    static ngx_str_t  retry_after = ngx_string("Retry-After");
    static ngx_str_t  one = ngx_string("1");
    static ngx_str_t  request_id_name = ngx_string("X-Request-Id");
    static ngx_str_t  cache_control = ngx_string("Cache-Control");
    static ngx_str_t  no_store = ngx_string("no-store");

    if (status == NGX_HTTP_UNAUTHORIZED) {
        if (ngx_http_toll_problem_header(r, &www_authenticate, &bearer)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (ext && ext->retry_after > 0) {
        retry = ngx_pnalloc(r->pool, NGX_INT64_LEN);
        if (retry == NULL) {
            return NGX_ERROR;
        }

        retry_value.data = retry;
        retry_value.len = ngx_sprintf(retry, "%L", ext->retry_after) - retry;

        if (ngx_http_toll_problem_header(r, &retry_after, &retry_value)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else if (status == NGX_HTTP_SERVICE_UNAVAILABLE) {
        if (ngx_http_toll_problem_header(r, &retry_after, &one) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (ngx_http_toll_problem_header(r, &cache_control, &no_store) != NGX_OK
        || (request_id->len
            && ngx_http_toll_problem_header(r, &request_id_name, request_id)
               != NGX_OK))
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_toll_problem_header(ngx_http_request_t *r, ngx_str_t *key,
    ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key = *key;
    h->value = *value;
    h->lowcase_key = NULL;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif

    if (key->len == sizeof("WWW-Authenticate") - 1
        && ngx_strncasecmp(key->data, (u_char *) "WWW-Authenticate",
                           key->len) == 0)
    {
        r->headers_out.www_authenticate = h;
    }

    return NGX_OK;
}
