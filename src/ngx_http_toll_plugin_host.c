/*
 * toll: plugins at request time: the host's functions (toll_host_t of
 * lua-free-plugins/toll_plugin.h), which the hooks call with the request
 * they were given.  When each may be called is in that header; a
 * response header set outside the headers hook, or a refusal outside the
 * access hook, is refused here.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <stdarg.h>
#include <stdio.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_handler.h"
#include "ngx_http_toll_plugin.h"
#include "ngx_http_toll_plugin_int.h"
#include "ngx_http_toll_units.h"


static void ngx_http_toll_host_log(toll_request_t *pr, int level,
    const char *fmt, ...);
static void *ngx_http_toll_host_alloc(toll_request_t *pr, size_t size);
static int ngx_http_toll_host_request_header(toll_request_t *pr,
    const char *name, toll_str_t *value);
static int ngx_http_toll_host_request_arg(toll_request_t *pr,
    const char *name, toll_str_t *value);
static int ngx_http_toll_host_request_method(toll_request_t *pr,
    toll_str_t *method);
static int64_t ngx_http_toll_host_request_length(toll_request_t *pr);
static int ngx_http_toll_host_response_header(toll_request_t *pr,
    const char *name, toll_str_t *value);
static int ngx_http_toll_host_set_response_header(toll_request_t *pr,
    const char *name, const char *value);
static int ngx_http_toll_host_identity(toll_request_t *pr,
    toll_identity_t *id);
static int ngx_http_toll_host_report_units(toll_request_t *pr,
    uint64_t units);
static int ngx_http_toll_host_refuse(toll_request_t *pr, unsigned status,
    const char *code, const char *detail);
static int ngx_http_toll_find_header(ngx_list_t *headers, const char *name,
    toll_str_t *value);


const toll_host_t  ngx_http_toll_plugin_host = {
    TOLL_PLUGIN_ABI_VERSION,
    sizeof(toll_host_t),
    ngx_http_toll_plugin_conf_alloc,
    ngx_http_toll_host_log,
    ngx_http_toll_host_alloc,
    ngx_http_toll_host_request_header,
    ngx_http_toll_host_request_arg,
    ngx_http_toll_host_request_method,
    ngx_http_toll_host_request_length,
    ngx_http_toll_host_response_header,
    ngx_http_toll_host_set_response_header,
    ngx_http_toll_host_identity,
    ngx_http_toll_host_report_units,
    ngx_http_toll_host_refuse
};


static void
ngx_http_toll_host_log(toll_request_t *pr, int level, const char *fmt, ...)
{
    int      n;
    char     text[NGX_HTTP_TOLL_PLUGIN_LOG_MAX];
    va_list  args;

    level = ngx_max(level, TOLL_LOG_ERR);
    level = ngx_min(level, TOLL_LOG_DEBUG);

    if (pr->request->connection->log->log_level < (ngx_uint_t) level) {
        return;
    }

    va_start(args, fmt);
    n = vsnprintf(text, sizeof(text), fmt, args);
    va_end(args);

    if (n < 0) {
        return;
    }

    ngx_log_error((ngx_uint_t) level, pr->request->connection->log, 0,
                  "toll plugin \"%V\": %s", ngx_http_toll_plugin_name(pr),
                  text);
}


static void *
ngx_http_toll_host_alloc(toll_request_t *pr, size_t size)
{
    return ngx_pcalloc(pr->request->pool, size);
}


static int
ngx_http_toll_host_request_header(toll_request_t *pr, const char *name,
    toll_str_t *value)
{
    return ngx_http_toll_find_header(&pr->request->headers_in.headers, name,
                                     value);
}


static int
ngx_http_toll_host_request_arg(toll_request_t *pr, const char *name,
    toll_str_t *value)
{
    ngx_str_t  v;

    if (ngx_http_arg(pr->request, (u_char *) name, ngx_strlen(name), &v)
        != NGX_OK)
    {
        return TOLL_DECLINED;
    }

    value->data = (const char *) v.data;
    value->len = v.len;

    return TOLL_OK;
}


static int
ngx_http_toll_host_request_method(toll_request_t *pr, toll_str_t *method)
{
    method->data = (const char *) pr->request->method_name.data;
    method->len = pr->request->method_name.len;

    return TOLL_OK;
}


/*
 * -1 only for a body of unknown length: HTTP/1.1's chunked, and an
 * HTTP/2 or HTTP/3 body sent without content-length (nginx marks it
 * chunked, with no Transfer-Encoding header); 0 for no body.
 */

static int64_t
ngx_http_toll_host_request_length(toll_request_t *pr)
{
    ngx_http_request_t  *r = pr->request;

    if (r->headers_in.chunked) {
        return -1;
    }

    return ngx_max(r->headers_in.content_length_n, 0);
}


/* the upstream's Content-Type is kept outside the list of headers */

static int
ngx_http_toll_host_response_header(toll_request_t *pr, const char *name,
    toll_str_t *value)
{
    ngx_http_request_t  *r;

    r = pr->request;

    if (ngx_strcasecmp((u_char *) name, (u_char *) "Content-Type") == 0) {
        if (r->headers_out.content_type.len == 0) {
            return TOLL_DECLINED;
        }

        value->data = (const char *) r->headers_out.content_type.data;
        value->len = r->headers_out.content_type.len;

        return TOLL_OK;
    }

    return ngx_http_toll_find_header(&r->headers_out.headers, name, value);
}


static int
ngx_http_toll_find_header(ngx_list_t *headers, const char *name,
    toll_str_t *value)
{
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    len = ngx_strlen(name);
    part = &headers->part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash == 0 || h[i].key.len != len
            || ngx_strncasecmp(h[i].key.data, (u_char *) name, len) != 0)
        {
            continue;
        }

        value->data = (const char *) h[i].value.data;
        value->len = h[i].value.len;

        return TOLL_OK;
    }

    return TOLL_DECLINED;
}


static int
ngx_http_toll_host_set_response_header(toll_request_t *pr, const char *name,
    const char *value)
{
    size_t            i, nlen, vlen;
    ngx_table_elt_t  *h;

    if (pr->hook != NGX_HTTP_TOLL_HOOK_HEADERS || name == NULL
        || value == NULL)
    {
        return TOLL_ERROR;
    }

    nlen = ngx_strlen(name);
    vlen = ngx_strlen(value);

    /* a token for the name, no line break in the value: no injection */

    if (!ngx_http_toll_header_name_valid((u_char *) name, nlen)) {
        return TOLL_ERROR;
    }

    for (i = 0; i < vlen; i++) {
        if (value[i] == '\r' || value[i] == '\n') {
            return TOLL_ERROR;
        }
    }

    h = ngx_list_push(&pr->request->headers_out.headers);
    if (h == NULL) {
        return TOLL_ERROR;
    }

    h->key.data = ngx_pnalloc(pr->request->pool, nlen + vlen);
    if (h->key.data == NULL) {
        h->hash = 0;
        return TOLL_ERROR;
    }

    h->hash = 1;
    h->key.len = nlen;
    h->value.data = ngx_cpymem(h->key.data, name, nlen);
    h->value.len = vlen;
    ngx_memcpy(h->value.data, value, vlen);
    h->lowcase_key = NULL;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif

    return TOLL_OK;
}


static int
ngx_http_toll_host_identity(toll_request_t *pr, toll_identity_t *id)
{
    ngx_http_toll_ctx_t  *ctx;

    ngx_memzero(id, sizeof(toll_identity_t));

    ctx = ngx_http_toll_get_ctx(pr->request);

    if (ctx == NULL || !ctx->authenticated) {
        return TOLL_DECLINED;
    }

    id->buyer.data = (const char *) ctx->key.owner.data;
    id->buyer.len = ctx->key.owner.len;
    id->key_id.data = (const char *) ctx->key.key_id.data;
    id->key_id.len = ctx->key.key_id.len;

    if (ctx->service) {
        id->service.data = (const char *) ctx->service->name.data;
        id->service.len = ctx->service->name.len;
    }

    return TOLL_OK;
}


static int
ngx_http_toll_host_report_units(toll_request_t *pr, uint64_t units)
{
    ngx_int_t  rc;

    rc = ngx_http_toll_units_report(pr->request, units);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, pr->request->connection->log, 0,
                   "toll plugin \"%V\": units %uL %s",
                   ngx_http_toll_plugin_name(pr), units,
                   rc == NGX_OK ? "kept" : rc == NGX_ABORT ? "above max_units"
                                                          : "ignored");

    return rc == NGX_OK ? TOLL_OK : rc == NGX_ABORT ? TOLL_REFUSE
                                                    : TOLL_DECLINED;
}


static int
ngx_http_toll_host_refuse(toll_request_t *pr, unsigned status,
    const char *code, const char *detail)
{
    size_t   clen, dlen;
    u_char  *p;

    if (pr->hook != NGX_HTTP_TOLL_HOOK_ACCESS) {
        return TOLL_ERROR;
    }

    if (code == NULL) {
        goto invalid;
    }

    clen = ngx_strlen(code);

    if (status < 400 || status > 599
        || clen == 0 || clen > NGX_HTTP_TOLL_PLUGIN_CODE_MAX)
    {
        goto invalid;
    }

    for (p = (u_char *) code; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')
              || *p == '_'))
        {
            goto invalid;
        }
    }

    dlen = detail ? ngx_strlen(detail) : 0;

    if (dlen > NGX_HTTP_TOLL_PLUGIN_DETAIL_MAX) {
        dlen = NGX_HTTP_TOLL_PLUGIN_DETAIL_MAX;

        /* never half a UTF-8 character */
        while (dlen && (((u_char *) detail)[dlen] & 0xc0) == 0x80) {
            dlen--;
        }
    }

    p = ngx_pnalloc(pr->request->pool,
                    clen + dlen + ngx_escape_json(NULL, (u_char *) detail,
                                                  dlen));
    if (p == NULL) {
        return TOLL_ERROR;
    }

    pr->refuse_status = status;
    pr->refuse_code.data = p;
    pr->refuse_code.len = clen;
    pr->refuse_detail.data = ngx_cpymem(p, code, clen);
    pr->refuse_detail.len = (u_char *) ngx_escape_json(pr->refuse_detail.data,
                                                       (u_char *) detail,
                                                       dlen)
                            - pr->refuse_detail.data;

    return TOLL_OK;

invalid:

    ngx_log_error(NGX_LOG_ERR, pr->request->connection->log, 0,
                  "toll plugin \"%V\": invalid refusal %ud \"%s\": a status "
                  "of 400 to 599 and a code of a-z, 0-9 and \"_\" expected",
                  ngx_http_toll_plugin_name(pr), status, code);

    return TOLL_ERROR;
}
