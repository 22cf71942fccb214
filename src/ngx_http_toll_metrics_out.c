/*
 * toll: the metrics' writer (ngx_http_toll_metrics_int.h): families,
 * their samples and labels, escaped, as Prometheus text or JSON.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_metrics_int.h"


/* output: a chain of buffers from the request's pool */

void
ngx_http_toll_metrics_write(ngx_http_toll_metrics_out_t *o, u_char *data,
    size_t len)
{
    size_t        n;
    ngx_chain_t  *cl;

    while (len && !o->failed) {

        if (o->b == NULL || o->b->last == o->b->end) {
            cl = ngx_alloc_chain_link(o->r->pool);
            if (cl == NULL) {
                o->failed = 1;
                return;
            }

            cl->buf = ngx_create_temp_buf(o->r->pool,
                                          NGX_HTTP_TOLL_METRICS_CHUNK);
            if (cl->buf == NULL) {
                o->failed = 1;
                return;
            }

            cl->next = NULL;
            *o->last = cl;
            o->last = &cl->next;
            o->b = cl->buf;
        }

        n = ngx_min(len, (size_t) (o->b->end - o->b->last));
        o->b->last = ngx_cpymem(o->b->last, data, n);
        o->size += n;
        data += n;
        len -= n;
    }
}


/*
 * A label value or a JSON string: names are configured tokens, but the
 * writer escapes what either format needs anyway.
 */

void
ngx_http_toll_metrics_escaped(ngx_http_toll_metrics_out_t *o, ngx_str_t *s)
{
    u_char  *p, *end, *start, esc[8];

    p = s->data;
    end = p + s->len;
    start = p;

    for ( /* void */ ; p < end; p++) {

        if (*p != '\\' && *p != '"' && *p >= 0x20) {
            continue;
        }

        ngx_http_toll_metrics_write(o, start, p - start);
        start = p + 1;

        if (*p == '\\' || *p == '"') {
            esc[0] = '\\';
            esc[1] = *p;
            ngx_http_toll_metrics_write(o, esc, 2);

        } else if (*p == '\n') {
            ngx_http_toll_metrics_literal(o, "\\n");

        } else if (o->json) {
            ngx_http_toll_metrics_write(o, esc,
                                        ngx_sprintf(esc, "\\u%04xd", *p)
                                        - esc);
        }
    }

    ngx_http_toll_metrics_write(o, start, p - start);
}


void
ngx_http_toll_metrics_family(ngx_http_toll_metrics_out_t *o, char *name,
    char *type, char *help)
{
    o->family.data = (u_char *) name;
    o->family.len = ngx_strlen(name);
    o->samples = 0;

    if (o->json) {
        if (o->families++) {
            ngx_http_toll_metrics_literal(o, ",");
        }

        ngx_http_toll_metrics_literal(o, "\"");
        ngx_http_toll_metrics_write(o, o->family.data, o->family.len);
        ngx_http_toll_metrics_literal(o, "\":{\"type\":\"");
        ngx_http_toll_metrics_write(o, (u_char *) type, ngx_strlen(type));
        ngx_http_toll_metrics_literal(o, "\",\"help\":\"");
        ngx_http_toll_metrics_write(o, (u_char *) help, ngx_strlen(help));
        ngx_http_toll_metrics_literal(o, "\",\"samples\":[");
        return;
    }

    ngx_http_toll_metrics_literal(o, "# HELP ");
    ngx_http_toll_metrics_write(o, o->family.data, o->family.len);
    ngx_http_toll_metrics_literal(o, " ");
    ngx_http_toll_metrics_write(o, (u_char *) help, ngx_strlen(help));
    ngx_http_toll_metrics_literal(o, "\n# TYPE ");
    ngx_http_toll_metrics_write(o, o->family.data, o->family.len);
    ngx_http_toll_metrics_literal(o, " ");
    ngx_http_toll_metrics_write(o, (u_char *) type, ngx_strlen(type));
    ngx_http_toll_metrics_literal(o, "\n");
}


void
ngx_http_toll_metrics_family_end(ngx_http_toll_metrics_out_t *o)
{
    if (o->json) {
        ngx_http_toll_metrics_literal(o, "]}");
    }
}


/* {name="value",...}, with "le" last when given; JSON: {"name":"value"} */

void
ngx_http_toll_metrics_labels(ngx_http_toll_metrics_out_t *o,
    ngx_str_t *labels, ngx_uint_t n, ngx_str_t *le)
{
    ngx_uint_t  i;

    if (o->json) {
        ngx_http_toll_metrics_literal(o, "{");

        for (i = 0; i < n; i++) {
            if (i) {
                ngx_http_toll_metrics_literal(o, ",");
            }

            ngx_http_toll_metrics_literal(o, "\"");
            ngx_http_toll_metrics_write(o, labels[2 * i].data,
                                        labels[2 * i].len);
            ngx_http_toll_metrics_literal(o, "\":\"");
            ngx_http_toll_metrics_escaped(o, &labels[2 * i + 1]);
            ngx_http_toll_metrics_literal(o, "\"");
        }

        ngx_http_toll_metrics_literal(o, "}");
        return;
    }

    if (n == 0 && le == NULL) {
        return;
    }

    ngx_http_toll_metrics_literal(o, "{");

    for (i = 0; i < n; i++) {
        if (i) {
            ngx_http_toll_metrics_literal(o, ",");
        }

        ngx_http_toll_metrics_write(o, labels[2 * i].data, labels[2 * i].len);
        ngx_http_toll_metrics_literal(o, "=\"");
        ngx_http_toll_metrics_escaped(o, &labels[2 * i + 1]);
        ngx_http_toll_metrics_literal(o, "\"");
    }

    if (le) {
        if (n) {
            ngx_http_toll_metrics_literal(o, ",");
        }

        ngx_http_toll_metrics_literal(o, "le=\"");
        ngx_http_toll_metrics_write(o, le->data, le->len);
        ngx_http_toll_metrics_literal(o, "\"");
    }

    ngx_http_toll_metrics_literal(o, "}");
}


void
ngx_http_toll_metrics_sample(ngx_http_toll_metrics_out_t *o,
    ngx_str_t *labels, ngx_uint_t n, ngx_atomic_uint_t value)
{
    u_char  buf[NGX_ATOMIC_T_LEN], *p;

    p = ngx_sprintf(buf, "%uA", value);

    if (o->json) {
        if (o->samples++) {
            ngx_http_toll_metrics_literal(o, ",");
        }

        ngx_http_toll_metrics_literal(o, "{\"labels\":");
        ngx_http_toll_metrics_labels(o, labels, n, NULL);
        ngx_http_toll_metrics_literal(o, ",\"value\":");
        ngx_http_toll_metrics_write(o, buf, p - buf);
        ngx_http_toll_metrics_literal(o, "}");
        return;
    }

    ngx_http_toll_metrics_write(o, o->family.data, o->family.len);
    ngx_http_toll_metrics_labels(o, labels, n, NULL);
    ngx_http_toll_metrics_literal(o, " ");
    ngx_http_toll_metrics_write(o, buf, p - buf);
    ngx_http_toll_metrics_literal(o, "\n");
}


/*
 * Cumulative buckets, the sum in seconds and the count.  The count is
 * the +Inf bucket, summed from the same reads, so that the two agree
 * even while workers add to them.
 */

void
ngx_http_toll_metrics_histogram(ngx_http_toll_metrics_out_t *o,
    ngx_str_t *labels, ngx_uint_t n, ngx_http_toll_metrics_hist_t *h)
{
    u_char             cbuf[NGX_ATOMIC_T_LEN], sbuf[NGX_ATOMIC_T_LEN + 8];
    u_char            *cp, *sp;
    ngx_str_t          inf;
    ngx_uint_t         i;
    ngx_atomic_uint_t  count;

    ngx_str_set(&inf, "+Inf");

    sp = (h->sum_scale == 1000)
         ? ngx_sprintf(sbuf, "%uA.%03uA", h->sum / 1000, h->sum % 1000)
         : ngx_sprintf(sbuf, "%uA.%06uA", h->sum / 1000000,
                       h->sum % 1000000);

    count = 0;

    if (o->json) {
        if (o->samples++) {
            ngx_http_toll_metrics_literal(o, ",");
        }

        ngx_http_toll_metrics_literal(o, "{\"labels\":");
        ngx_http_toll_metrics_labels(o, labels, n, NULL);
        ngx_http_toll_metrics_literal(o, ",\"buckets\":[");

        for (i = 0; i <= h->n; i++) {
            count += h->buckets[i];
            cp = ngx_sprintf(cbuf, "%uA", count);

            ngx_http_toll_metrics_literal(o, "{\"le\":\"");

            if (i < h->n) {
                ngx_http_toll_metrics_write(o, h->bounds[i].data,
                                            h->bounds[i].len);
            } else {
                ngx_http_toll_metrics_write(o, inf.data, inf.len);
            }

            ngx_http_toll_metrics_literal(o, "\",\"count\":");
            ngx_http_toll_metrics_write(o, cbuf, cp - cbuf);
            ngx_http_toll_metrics_literal(o, "}");

            if (i < h->n) {
                ngx_http_toll_metrics_literal(o, ",");
            }
        }

        ngx_http_toll_metrics_literal(o, "],\"sum\":");
        ngx_http_toll_metrics_write(o, sbuf, sp - sbuf);
        ngx_http_toll_metrics_literal(o, ",\"count\":");
        ngx_http_toll_metrics_write(o, cbuf, cp - cbuf);
        ngx_http_toll_metrics_literal(o, "}");
        return;
    }

    for (i = 0; i <= h->n; i++) {
        count += h->buckets[i];
        cp = ngx_sprintf(cbuf, "%uA", count);

        ngx_http_toll_metrics_write(o, o->family.data, o->family.len);
        ngx_http_toll_metrics_literal(o, "_bucket");
        ngx_http_toll_metrics_labels(o, labels, n,
                                     (i < h->n) ? &h->bounds[i] : &inf);
        ngx_http_toll_metrics_literal(o, " ");
        ngx_http_toll_metrics_write(o, cbuf, cp - cbuf);
        ngx_http_toll_metrics_literal(o, "\n");
    }

    ngx_http_toll_metrics_write(o, o->family.data, o->family.len);
    ngx_http_toll_metrics_literal(o, "_sum");
    ngx_http_toll_metrics_labels(o, labels, n, NULL);
    ngx_http_toll_metrics_literal(o, " ");
    ngx_http_toll_metrics_write(o, sbuf, sp - sbuf);
    ngx_http_toll_metrics_literal(o, "\n");

    ngx_http_toll_metrics_write(o, o->family.data, o->family.len);
    ngx_http_toll_metrics_literal(o, "_count");
    ngx_http_toll_metrics_labels(o, labels, n, NULL);
    ngx_http_toll_metrics_literal(o, " ");
    ngx_http_toll_metrics_write(o, cbuf, cp - cbuf);
    ngx_http_toll_metrics_literal(o, "\n");
}
