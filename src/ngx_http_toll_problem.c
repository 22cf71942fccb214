/*
 * toll: the refusals' answers, in RFC 9457 problem+json or in the
 * {"error":{...}} envelope the platforms toll fronts use
 * (toll_error_format).
 *
 * Each kind of refusal has one fixed body apart from the request id (and
 * the envelope's timestamp), so that a client learns what to do and
 * nothing more: in particular every authentication failure reads the
 * same, whatever its cause.  Both formats carry the same code, status
 * and headers; only the body's shape differs.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_problem.h"
#include "ngx_http_toll_error_code.h"


/*
 * A caller's trace id (toll_error_trace_header) is echoed only when it
 * is a token: at most this long, visible ASCII without '"' or '\\', so
 * that it needs no escaping in the body and cannot forge a member.
 */
#define NGX_HTTP_TOLL_TRACE_ID_MAX      128

/* a type base URI is short; a longer one is a mistake */
#define NGX_HTTP_TOLL_TYPE_BASE_MAX     512

/* "2026-12-02T14:56:30Z", as the platforms' envelopes write it */
#define NGX_HTTP_TOLL_TIMESTAMP_LEN     (sizeof("1970-01-01T00:00:00Z") - 1)


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


/* what one answer is made of, gathered once for either format */
typedef struct {
    ngx_http_toll_problem_t   *kind;          /* code and detail */
    ngx_str_t                  title;
    ngx_uint_t                 status;
    int64_t                    retry_after;   /* seconds, as Retry-After
                                                 says; 0: none */
    ngx_http_toll_problem_ext_t *ext;         /* NULL: none */
    ngx_str_t                  request_id;    /* toll's, for X-Request-Id */
    ngx_str_t                  id;            /* the body's: the caller's
                                                 trace id or request_id */
    ngx_http_toll_loc_conf_t  *lcf;
} ngx_http_toll_answer_t;


static void ngx_http_toll_problem_ids(ngx_http_request_t *r,
    ngx_http_toll_answer_t *a);
static ngx_uint_t ngx_http_toll_trace_id_valid(ngx_str_t *v);
static ngx_buf_t *ngx_http_toll_problem_body(ngx_http_request_t *r,
    ngx_http_toll_answer_t *a);
static ngx_buf_t *ngx_http_toll_problem_envelope(ngx_http_request_t *r,
    ngx_http_toll_answer_t *a);
static size_t ngx_http_toll_problem_details_len(ngx_http_toll_answer_t *a);
static u_char *ngx_http_toll_problem_details(u_char *p,
    ngx_http_toll_answer_t *a);
static ngx_int_t ngx_http_toll_problem_headers(ngx_http_request_t *r,
    ngx_http_toll_answer_t *a);
static ngx_int_t ngx_http_toll_problem_header(ngx_http_request_t *r,
    ngx_str_t *key, ngx_str_t *value);
static char *ngx_http_toll_error_type_base_post(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_toll_error_trace_header_post(ngx_conf_t *cf,
    void *post, void *data);


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
    ngx_int_t                rc;
    ngx_buf_t               *b;
    ngx_chain_t              out;
    ngx_http_toll_problem_t  own;
    ngx_http_toll_answer_t   a;

    a.kind = &ngx_http_toll_problems[problem];
    a.ext = ext;
    a.lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);

    own = *a.kind;
    a.kind = &own;

    if (ext && ext->code.len) {
        /* a plugin names its refusal; the rest of the answer is toll's */
        own.code = ext->code;
        own.detail = ext->detail;

    } else {
        /* toll's code as the platform's clients spell it */
        ngx_http_toll_error_code_map(a.lcf->error_codes, &own.code);

        if (ext && ext->detail.len) {
            /* what toll_require found missing */
            own.detail = ext->detail;
        }
    }

    a.status = a.kind->status;
    a.title = a.kind->title;

    if (ext && ext->status && ext->status != a.status) {
        /* as limit_req_status: the operator's status, a generic title */
        a.status = ext->status;
        ngx_str_set(&a.title, "Request Refused");

        if (a.status == NGX_HTTP_SERVICE_UNAVAILABLE) {
            ngx_str_set(&a.title, "Service Unavailable");
        }
    }

    /* the envelope's retry_after says what the header says */

    if (ext && ext->retry_after > 0) {
        a.retry_after = ext->retry_after;

    } else {
        a.retry_after = (a.status == NGX_HTTP_SERVICE_UNAVAILABLE) ? 1 : 0;
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

    ngx_http_toll_problem_ids(r, &a);

    if (a.lcf->error_format == NGX_HTTP_TOLL_ERROR_ENVELOPE) {
        b = ngx_http_toll_problem_envelope(r, &a);
        ngx_str_set(&r->headers_out.content_type, "application/json");

    } else {
        b = ngx_http_toll_problem_body(r, &a);
        ngx_str_set(&r->headers_out.content_type, "application/problem+json");
    }

    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = a.status;
    r->headers_out.content_length_n = b->last - b->pos;
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    if (ngx_http_toll_problem_headers(r, &a) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/*
 * toll's request id, for X-Request-Id; and the body's id: the caller's
 * trace id when the location names its header and the value is a safe
 * token, toll's request id otherwise.  A value refused is not echoed,
 * escaped or cut: the id in the body is then toll's, which the logs
 * know.
 */

static void
ngx_http_toll_problem_ids(ngx_http_request_t *r, ngx_http_toll_answer_t *a)
{
    ngx_str_t                  *name;
    ngx_uint_t                  i;
    ngx_list_part_t            *part;
    ngx_table_elt_t            *h;
    ngx_http_variable_value_t  *vv;
    ngx_http_toll_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    ngx_str_null(&a->request_id);

    vv = ngx_http_get_indexed_variable(r, mcf->request_id_index);
    if (vv != NULL && !vv->not_found) {
        a->request_id.data = vv->data;
        a->request_id.len = vv->len;
    }

    a->id = a->request_id;

    name = &a->lcf->error_trace_header;
    if (name->len == 0) {
        return;
    }

    /* the first of its name; a refusal is rare enough for a list scan */

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == name->len
            && ngx_strncasecmp(h[i].key.data, name->data, name->len) == 0)
        {
            break;
        }
    }

    if (ngx_http_toll_trace_id_valid(&h[i].value)) {
        a->id = h[i].value;
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "toll: trace id of %uz bytes refused", h[i].value.len);
}


static ngx_uint_t
ngx_http_toll_trace_id_valid(ngx_str_t *v)
{
    size_t  i;

    if (v->len == 0 || v->len > NGX_HTTP_TOLL_TRACE_ID_MAX) {
        return 0;
    }

    for (i = 0; i < v->len; i++) {
        if (v->data[i] <= 0x20 || v->data[i] >= 0x7f
            || v->data[i] == '"' || v->data[i] == '\\')
        {
            return 0;
        }
    }

    return 1;
}


/*
 * problem+json: the kind's fixed texts, the refusal's members, the ids.
 * "type" is the location's base URI followed by the code, or
 * about:blank; "traceId" (the name 004's platform reads) is there when
 * the location names a trace header.
 */

static ngx_buf_t *
ngx_http_toll_problem_body(ngx_http_request_t *r, ngx_http_toll_answer_t *a)
{
    size_t                        len;
    ngx_buf_t                    *b;
    ngx_str_t                    *base, *code;
    ngx_http_toll_problem_ext_t  *ext;

    ext = a->ext;
    base = &a->lcf->error_type_base;
    code = &a->kind->code;

    len = sizeof("{\"type\":\"about:blank\",\"title\":\"\",\"status\":"
                 ",\"code\":\"\",\"detail\":\"\",\"request_id\":\"\"}\n") - 1
          + base->len + code->len + a->title.len + NGX_INT_T_LEN
          + code->len + a->kind->detail.len + a->id.len;

    if (ext) {
        /* a policy name is made of letters and "-" only: JSON-safe */
        len += sizeof(",\"policy\":\"\",\"retry_after\":") - 1
               + ext->policy.len + NGX_INT64_LEN + ext->members.len;
    }

    if (a->lcf->error_trace_header.len) {
        len += sizeof(",\"traceId\":\"\"") - 1 + a->id.len;
    }

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NULL;
    }

    if (base->len) {
        b->last = ngx_sprintf(b->last, "{\"type\":\"%V%V\",", base, code);

    } else {
        b->last = ngx_cpymem(b->last, "{\"type\":\"about:blank\",",
                             sizeof("{\"type\":\"about:blank\",") - 1);
    }

    b->last = ngx_sprintf(b->last,
                          "\"title\":\"%V\",\"status\":%ui,\"code\":\"%V\","
                          "\"detail\":\"%V\",",
                          &a->title, a->status, code, &a->kind->detail);

    if (ext && ext->policy.len) {
        b->last = ngx_sprintf(b->last, "\"policy\":\"%V\",\"retry_after\":%L,",
                              &ext->policy, ext->retry_after);
    }

    if (ext && ext->members.len) {
        b->last = ngx_cpymem(b->last, ext->members.data, ext->members.len);
    }

    b->last = ngx_sprintf(b->last, "\"request_id\":\"%V\"", &a->id);

    if (a->lcf->error_trace_header.len) {
        b->last = ngx_sprintf(b->last, ",\"traceId\":\"%V\"", &a->id);
    }

    *b->last++ = '}';
    *b->last++ = '\n';

    return b;
}


/*
 * The envelope, as the platforms of ../shared/reference/ 000, 002 and
 * 003 write it: {"error":{"code","message",...,"request_id","timestamp"}}.
 * retry_after sits in "error" (002's 429) and is the Retry-After
 * header's; the refusal's other members (the limit's policy, the 402s'
 * figures) go in "details" (000's and 003's), absent when there are
 * none.  The timestamp is the cached second, in UTC.
 */

static ngx_buf_t *
ngx_http_toll_problem_envelope(ngx_http_request_t *r,
    ngx_http_toll_answer_t *a)
{
    size_t      len;
    ngx_tm_t    tm;
    ngx_buf_t  *b;

    len = sizeof("{\"error\":{\"code\":\"\",\"message\":\"\","
                 "\"request_id\":\"\",\"timestamp\":\"\"}}\n") - 1
          + a->kind->code.len + a->kind->detail.len + a->id.len
          + NGX_HTTP_TOLL_TIMESTAMP_LEN
          + sizeof("\"retry_after\":,") - 1 + NGX_INT64_LEN
          + ngx_http_toll_problem_details_len(a);

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NULL;
    }

    b->last = ngx_sprintf(b->last,
                          "{\"error\":{\"code\":\"%V\",\"message\":\"%V\",",
                          &a->kind->code, &a->kind->detail);

    if (a->retry_after > 0) {
        b->last = ngx_sprintf(b->last, "\"retry_after\":%L,",
                              a->retry_after);
    }

    b->last = ngx_http_toll_problem_details(b->last, a);

    ngx_gmtime(ngx_time(), &tm);

    b->last = ngx_sprintf(b->last,
                          "\"request_id\":\"%V\",\"timestamp\":"
                          "\"%4d-%02d-%02dT%02d:%02d:%02dZ\"}}\n",
                          &a->id, tm.ngx_tm_year, tm.ngx_tm_mon,
                          tm.ngx_tm_mday, tm.ngx_tm_hour, tm.ngx_tm_min,
                          tm.ngx_tm_sec);

    return b;
}


static size_t
ngx_http_toll_problem_details_len(ngx_http_toll_answer_t *a)
{
    if (a->ext == NULL) {
        return 0;
    }

    return sizeof("\"details\":{\"policy\":\"\",},") - 1
           + a->ext->policy.len + a->ext->members.len;
}


/* "details":{...}, with the members' last ',' dropped; nothing if none */

static u_char *
ngx_http_toll_problem_details(u_char *p, ngx_http_toll_answer_t *a)
{
    u_char                       *start;
    ngx_http_toll_problem_ext_t  *ext;

    ext = a->ext;

    if (ext == NULL || (ext->policy.len == 0 && ext->members.len == 0)) {
        return p;
    }

    p = ngx_cpymem(p, "\"details\":{", sizeof("\"details\":{") - 1);
    start = p;

    if (ext->policy.len) {
        p = ngx_sprintf(p, "\"policy\":\"%V\",", &ext->policy);
    }

    if (ext->members.len) {
        /* memcpy() of nothing from NULL is still undefined */
        p = ngx_cpymem(p, ext->members.data, ext->members.len);
    }

    if (p > start && p[-1] == ',') {
        p--;
    }

    *p++ = '}';
    *p++ = ',';

    return p;
}


/*
 * The answer's headers: the challenge of a 401, when to retry, that it
 * is not to be cached, and toll's request id (whatever id the body
 * echoes, the header names the request in toll's logs).
 */

static ngx_int_t
ngx_http_toll_problem_headers(ngx_http_request_t *r,
    ngx_http_toll_answer_t *a)
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

    if (a->status == NGX_HTTP_UNAUTHORIZED) {
        if (ngx_http_toll_problem_header(r, &www_authenticate, &bearer)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (a->retry_after > 0) {
        retry_value = one;

        if (a->retry_after > 1) {
            retry = ngx_pnalloc(r->pool, NGX_INT64_LEN);
            if (retry == NULL) {
                return NGX_ERROR;
            }

            retry_value.data = retry;
            retry_value.len = ngx_sprintf(retry, "%L", a->retry_after)
                              - retry;
        }

        if (ngx_http_toll_problem_header(r, &retry_after, &retry_value)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (ngx_http_toll_problem_header(r, &cache_control, &no_store) != NGX_OK
        || (a->request_id.len
            && ngx_http_toll_problem_header(r, &request_id_name,
                                            &a->request_id)
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


/* toll_error_format, toll_error_type_base, toll_error_trace_header */

ngx_conf_enum_t  ngx_http_toll_error_formats[] = {
    { ngx_string("problem"), NGX_HTTP_TOLL_ERROR_PROBLEM },
    { ngx_string("envelope"), NGX_HTTP_TOLL_ERROR_ENVELOPE },
    { ngx_null_string, 0 }
};

ngx_conf_post_handler_pt  ngx_http_toll_error_type_base_p =
    ngx_http_toll_error_type_base_post;

ngx_conf_post_handler_pt  ngx_http_toll_error_trace_header_p =
    ngx_http_toll_error_trace_header_post;


/*
 * An absolute URI (scheme ":" more) of the characters RFC 3986 allows,
 * so that it goes into the body as it is: no quote, backslash, space,
 * control or non-ASCII byte can reach the JSON.  "about:blank" is
 * today's type, kept as it is: no code is appended to it.
 */

static char *
ngx_http_toll_error_type_base_post(ngx_conf_t *cf, void *post, void *data)
{
    ngx_str_t  *uri = data;

    u_char      c;
    size_t      i, colon;

    if (uri->len == sizeof("about:blank") - 1
        && ngx_strncmp(uri->data, "about:blank", uri->len) == 0)
    {
        uri->len = 0;
        return NGX_CONF_OK;
    }

    if (uri->len > NGX_HTTP_TOLL_TYPE_BASE_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "type base URI is longer than %d bytes",
                           NGX_HTTP_TOLL_TYPE_BASE_MAX);
        return NGX_CONF_ERROR;
    }

    for (colon = 0; colon < uri->len; colon++) {
        c = uri->data[colon];

        if (c == ':') {
            break;
        }

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (colon > 0 && ((c >= '0' && c <= '9')
                                || c == '+' || c == '-' || c == '.'))))
        {
            colon = uri->len;
            break;
        }
    }

    if (colon == 0 || colon + 1 >= uri->len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid type base URI \"%V\": not absolute "
                           "(scheme:...)", uri);
        return NGX_CONF_ERROR;
    }

    for (i = colon + 1; i < uri->len; i++) {
        c = uri->data[i];

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9')
            || (c != '\0'
                && ngx_strchr("-._~:/?#[]@!$&'()*+,;=%", c) != NULL))
        {
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid type base URI \"%V\": character 0x%02Xd "
                           "is not allowed in a URI", uri, (int) c);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* a header name as toll reads any; "off" names none (to end inheritance) */

static char *
ngx_http_toll_error_trace_header_post(ngx_conf_t *cf, void *post, void *data)
{
    ngx_str_t  *name = data;

    if (name->len == sizeof("off") - 1
        && ngx_strncmp(name->data, "off", name->len) == 0)
    {
        name->len = 0;
        return NGX_CONF_OK;
    }

    if (!ngx_http_toll_header_name_valid(name->data, name->len)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid header name \"%V\"", name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


char *
ngx_http_toll_problem_merge_loc_conf(ngx_conf_t *cf,
    ngx_http_toll_loc_conf_t *prev, ngx_http_toll_loc_conf_t *conf)
{
    ngx_conf_merge_uint_value(conf->error_format, prev->error_format,
                              NGX_HTTP_TOLL_ERROR_PROBLEM);
    ngx_conf_merge_str_value(conf->error_type_base, prev->error_type_base,
                             "");
    ngx_conf_merge_str_value(conf->error_trace_header,
                             prev->error_trace_header, "");
    ngx_conf_merge_ptr_value(conf->error_codes, prev->error_codes, NULL);

    return NGX_CONF_OK;
}
