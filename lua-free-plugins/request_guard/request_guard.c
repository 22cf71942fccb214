/*
 * request_guard: refuse at the gate the calls the API would refuse.
 *
 *   toll_plugin request_guard [methods=GET,POST] [max_body=1m]
 *                             [content_type=application/json]
 *                             [require_header=NAME ...];
 *
 * Each rule is checked in that order; the first that fails answers with
 * toll's problem answer:
 *
 *   methods         405 method_not_allowed
 *   max_body        413 body_too_large (Content-Length above it), or
 *                   411 length_required (a body without Content-Length)
 *   content_type    415 unsupported_media_type (a body of another type)
 *   require_header  400 header_required (at most 8 of them)
 *
 * Such a call never reaches the upstream, so toll charges nothing for
 * it; sent upstream, its 4xx would be a charged call, and work for the
 * upstream.
 */

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "toll_plugin.h"


#define GUARD_HEADERS_MAX  8


typedef struct {
    const char         *methods;      /* "GET,POST"; NULL: any */
    int64_t             max_body;     /* bytes; -1: no limit */
    const char         *content_type; /* NULL: any */
    size_t              nheaders;
    const char         *headers[GUARD_HEADERS_MAX];
} guard_conf_t;


static char  guard_error[256];


/* "512", "64k", "1m": bytes; -1: not a size */

static int64_t
guard_size(const char *p)
{
    int64_t  n, unit;

    if (*p < '0' || *p > '9') {
        return -1;
    }

    for (n = 0; *p >= '0' && *p <= '9'; p++) {
        if (n > 1000000000000LL) {
            return -1;
        }

        n = n * 10 + (*p - '0');
    }

    unit = (*p == 'k' || *p == 'K') ? 1024
           : (*p == 'm' || *p == 'M') ? 1024 * 1024 : 1;

    if (unit != 1) {
        p++;
    }

    if (*p != '\0' || n > INT64_MAX / unit) {
        return -1;
    }

    return n * unit;
}


static const char *
guard_conf(const toll_host_t *host, toll_conf_t *cf, const toll_arg_t *args,
    size_t nargs, void **conf)
{
    size_t         i;
    guard_conf_t  *gc;

    gc = host->conf_alloc(cf, sizeof(guard_conf_t));
    if (gc == NULL) {
        return "out of memory";
    }

    gc->max_body = -1;

    for (i = 0; i < nargs; i++) {
        const char  *k = args[i].key.data, *v = args[i].value.data;

        if (args[i].value.len == 0) {
            snprintf(guard_error, sizeof(guard_error),
                     "empty value of \"%s\"", k);
            return guard_error;
        }

        if (strcmp(k, "methods") == 0) {
            gc->methods = v;

        } else if (strcmp(k, "max_body") == 0) {
            gc->max_body = guard_size(v);
            if (gc->max_body < 0) {
                snprintf(guard_error, sizeof(guard_error),
                         "invalid max_body \"%s\": bytes, or with k or m",
                         v);
                return guard_error;
            }

        } else if (strcmp(k, "content_type") == 0) {
            gc->content_type = v;

        } else if (strcmp(k, "require_header") == 0) {
            if (gc->nheaders == GUARD_HEADERS_MAX) {
                return "too many \"require_header\": at most 8";
            }

            gc->headers[gc->nheaders++] = v;

        } else {
            snprintf(guard_error, sizeof(guard_error),
                     "unknown argument \"%s\"", k);
            return guard_error;
        }
    }

    if (gc->methods == NULL && gc->max_body < 0 && gc->content_type == NULL
        && gc->nheaders == 0)
    {
        return "no rule: give methods, max_body, content_type or "
               "require_header";
    }

    *conf = gc;

    return NULL;
}


/* is the method one of the comma-separated list? */

static int
guard_method_in(const toll_str_t *m, const char *list)
{
    const char  *p, *end;

    for (p = list; *p; p = (*end == ',') ? end + 1 : end) {
        end = strchr(p, ',');
        if (end == NULL) {
            end = p + strlen(p);
        }

        if ((size_t) (end - p) == m->len && strncmp(p, m->data, m->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/* the media type, without its parameters, is the configured one */

static int
guard_type_is(const toll_str_t *v, const char *type)
{
    size_t  n;

    n = strlen(type);

    return v->len >= n && strncasecmp(v->data, type, n) == 0
           && (v->len == n || v->data[n] == ';' || v->data[n] == ' ');
}


static int
guard_access(const toll_host_t *host, toll_request_t *r, void *conf,
    void **state)
{
    char           detail[160];
    size_t         i;
    int64_t        length;
    toll_str_t     v;
    guard_conf_t  *gc;

    (void) state;

    gc = conf;

    host->request_method(r, &v);

    if (gc->methods && !guard_method_in(&v, gc->methods)) {
        snprintf(detail, sizeof(detail), "This API accepts %s only.",
                 gc->methods);
        host->refuse(r, 405, "method_not_allowed", detail);
        return TOLL_REFUSE;
    }

    length = host->request_length(r);

    /* a body without a length (chunked): it could be of any size */
    if (length < 0) {
        if (gc->max_body >= 0) {
            host->refuse(r, 411, "length_required",
                         "Send the body with a Content-Length.");
            return TOLL_REFUSE;
        }

        length = 1;
    }

    if (gc->max_body >= 0 && length > gc->max_body) {
        snprintf(detail, sizeof(detail), "The body may have at most %lld "
                 "bytes.", (long long) gc->max_body);
        host->refuse(r, 413, "body_too_large", detail);
        return TOLL_REFUSE;
    }

    if (gc->content_type && length > 0
        && (host->request_header(r, "Content-Type", &v) != TOLL_OK
            || !guard_type_is(&v, gc->content_type)))
    {
        snprintf(detail, sizeof(detail), "Send the body as %s.",
                 gc->content_type);
        host->refuse(r, 415, "unsupported_media_type", detail);
        return TOLL_REFUSE;
    }

    for (i = 0; i < gc->nheaders; i++) {
        if (host->request_header(r, gc->headers[i], &v) != TOLL_OK
            || v.len == 0)
        {
            snprintf(detail, sizeof(detail), "The %s header is required.",
                     gc->headers[i]);
            host->refuse(r, 400, "header_required", detail);
            return TOLL_REFUSE;
        }
    }

    return TOLL_OK;
}


static const toll_plugin_t  request_guard = {
    TOLL_PLUGIN_ABI_VERSION,
    sizeof(toll_plugin_t),
    guard_conf,
    guard_access,
    NULL,
    NULL,
    NULL
};


const toll_plugin_t *
toll_plugin_entry(void)
{
    return &request_guard;
}
