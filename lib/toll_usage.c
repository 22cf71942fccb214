/*
 * toll: a buyer's usage as JSON.  See toll_usage.h.
 */

#include "toll_usage.h"

#include <string.h>

#include "toll_money.h"


/* the longest int64_t in decimal: "-9223372036854775808" */
#define TOLL_USAGE_INT_LEN_MAX  20


/*
 * One writer for both passes: with p NULL it only counts, so that the
 * length a caller allocates is by construction the length written.
 */
typedef struct {
    char    *p;
    size_t   len;
} toll_usage_out_t;


static void toll_usage_put(toll_usage_out_t *o, const char *s, size_t len);
static void toll_usage_lit(toll_usage_out_t *o, const char *s);
static void toll_usage_int(toll_usage_out_t *o, int64_t v);
static void toll_usage_amount(toll_usage_out_t *o, int64_t micros);
static void toll_usage_str(toll_usage_out_t *o, const unsigned char *s,
    size_t len);
static size_t toll_utf8_len(const unsigned char *p, size_t len);


int
toll_usage_count_parse(const char *s, size_t len, int64_t *v)
{
    size_t    i;
    uint64_t  n, limit;
    int       negative;

    negative = (len > 0 && s[0] == '-');
    i = negative ? 1 : 0;

    if (i == len || len > TOLL_USAGE_COUNT_LEN_MAX) {
        return -1;
    }

    /* the magnitude of INT64_MIN is one more than INT64_MAX */
    limit = negative ? (uint64_t) INT64_MAX + 1 : (uint64_t) INT64_MAX;
    n = 0;

    for ( /* void */ ; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }

        if (n > (limit - (uint64_t) (s[i] - '0')) / 10) {
            return -1;
        }

        n = n * 10 + (uint64_t) (s[i] - '0');
    }

    if (negative) {
        *v = (n == (uint64_t) INT64_MAX + 1) ? INT64_MIN : -(int64_t) n;

    } else {
        *v = (int64_t) n;
    }

    return 0;
}


int
toll_usage_totals(const toll_usage_row_t *rows, size_t nrows,
    toll_usage_counts_t *t)
{
    size_t  i;

    memset(t, 0, sizeof(toll_usage_counts_t));

    for (i = 0; i < nrows; i++) {
        if (toll_money_add(t->calls, rows[i].counts.calls, &t->calls)
            || toll_money_add(t->free_calls, rows[i].counts.free_calls,
                              &t->free_calls)
            || toll_money_add(t->paid_calls, rows[i].counts.paid_calls,
                              &t->paid_calls)
            || toll_money_add(t->errors, rows[i].counts.errors, &t->errors)
            || toll_money_add(t->amount_micros, rows[i].counts.amount_micros,
                              &t->amount_micros))
        {
            return -1;
        }
    }

    return 0;
}


size_t
toll_usage_json(char *buf, const unsigned char *buyer, size_t buyer_len,
    const toll_usage_counts_t *totals, const toll_usage_row_t *rows,
    size_t nrows, const toll_usage_balance_t *balances, size_t nbalances)
{
    size_t            i;
    toll_usage_out_t  o;

    o.p = buf;
    o.len = 0;

    toll_usage_lit(&o, "{\"buyer\":");
    toll_usage_str(&o, buyer, buyer_len);

    toll_usage_lit(&o, ",\"totals\":{\"calls\":");
    toll_usage_int(&o, totals->calls);
    toll_usage_lit(&o, ",\"free_calls\":");
    toll_usage_int(&o, totals->free_calls);
    toll_usage_lit(&o, ",\"paid_calls\":");
    toll_usage_int(&o, totals->paid_calls);
    toll_usage_lit(&o, ",\"errors\":");
    toll_usage_int(&o, totals->errors);
    toll_usage_lit(&o, ",\"amount\":");
    toll_usage_amount(&o, totals->amount_micros);
    toll_usage_lit(&o, "},\"services\":[");

    for (i = 0; i < nrows; i++) {
        toll_usage_lit(&o, i ? ",{\"service\":" : "{\"service\":");
        toll_usage_str(&o, rows[i].service, rows[i].service_len);
        toll_usage_lit(&o, ",\"provider\":");
        toll_usage_str(&o, rows[i].provider, rows[i].provider_len);
        toll_usage_lit(&o, ",\"calls\":");
        toll_usage_int(&o, rows[i].counts.calls);
        toll_usage_lit(&o, ",\"free_calls\":");
        toll_usage_int(&o, rows[i].counts.free_calls);
        toll_usage_lit(&o, ",\"free_remaining\":");
        toll_usage_int(&o, rows[i].free_remaining);
        toll_usage_lit(&o, ",\"paid_calls\":");
        toll_usage_int(&o, rows[i].counts.paid_calls);
        toll_usage_lit(&o, ",\"errors\":");
        toll_usage_int(&o, rows[i].counts.errors);
        toll_usage_lit(&o, ",\"amount\":");
        toll_usage_amount(&o, rows[i].counts.amount_micros);
        toll_usage_lit(&o, ",\"units\":");
        toll_usage_int(&o, rows[i].counts.units);
        toll_usage_lit(&o, "}");
    }

    toll_usage_lit(&o, "],\"balances\":[");

    for (i = 0; i < nbalances; i++) {
        toll_usage_lit(&o, i ? ",{\"currency\":" : "{\"currency\":");
        toll_usage_str(&o, balances[i].currency, balances[i].currency_len);
        toll_usage_lit(&o, ",\"balance\":");
        toll_usage_amount(&o, balances[i].balance);
        toll_usage_lit(&o, ",\"available\":");
        toll_usage_amount(&o, balances[i].available);
        toll_usage_lit(&o, ",\"held\":");
        toll_usage_amount(&o, balances[i].held);
        toll_usage_lit(&o, "}");
    }

    toll_usage_lit(&o, "]}\n");

    return o.len;
}


size_t
toll_json_escape(char *dst, const unsigned char *src, size_t len)
{
    size_t                   i, n, out;
    unsigned char            c;
    static const char        hex[] = "0123456789abcdef";
    static const char        replacement[] = "\\ufffd";

    out = 0;
    i = 0;

    while (i < len) {
        c = src[i];

        if (c == '"' || c == '\\') {
            if (dst) {
                dst[out] = '\\';
                dst[out + 1] = (char) c;
            }
            out += 2;
            i++;
            continue;
        }

        if (c < 0x20) {
            if (dst) {
                memcpy(dst + out, "\\u00", 4);
                dst[out + 4] = hex[c >> 4];
                dst[out + 5] = hex[c & 0xf];
            }
            out += 6;
            i++;
            continue;
        }

        if (c < 0x80) {
            if (dst) {
                dst[out] = (char) c;
            }
            out++;
            i++;
            continue;
        }

        n = toll_utf8_len(src + i, len - i);

        if (n == 0) {
            /* not UTF-8: a JSON text must be, so the byte is replaced */
            if (dst) {
                memcpy(dst + out, replacement, sizeof(replacement) - 1);
            }
            out += sizeof(replacement) - 1;
            i++;
            continue;
        }

        if (dst) {
            memcpy(dst + out, src + i, n);
        }
        out += n;
        i += n;
    }

    return out;
}


/*
 * The length of the UTF-8 sequence at p (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF), or 0 when it is not one.
 */
static size_t
toll_utf8_len(const unsigned char *p, size_t len)
{
    size_t         n, i;
    unsigned char  lo, hi;

    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        n = 2;
        lo = 0x80;
        hi = 0xbf;

    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        n = 3;
        lo = (p[0] == 0xe0) ? 0xa0 : 0x80;
        hi = (p[0] == 0xed) ? 0x9f : 0xbf;

    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        n = 4;
        lo = (p[0] == 0xf0) ? 0x90 : 0x80;
        hi = (p[0] == 0xf4) ? 0x8f : 0xbf;

    } else {
        return 0;
    }

    if (len < n || p[1] < lo || p[1] > hi) {
        return 0;
    }

    for (i = 2; i < n; i++) {
        if (p[i] < 0x80 || p[i] > 0xbf) {
            return 0;
        }
    }

    return n;
}


static void
toll_usage_put(toll_usage_out_t *o, const char *s, size_t len)
{
    if (o->p) {
        memcpy(o->p + o->len, s, len);
    }

    o->len += len;
}


static void
toll_usage_lit(toll_usage_out_t *o, const char *s)
{
    toll_usage_put(o, s, strlen(s));
}


static void
toll_usage_int(toll_usage_out_t *o, int64_t v)
{
    char      buf[TOLL_USAGE_INT_LEN_MAX], *p;
    uint64_t  u;

    /* from the end; the magnitude of INT64_MIN fits in uint64_t */
    u = (v < 0) ? (uint64_t) 0 - (uint64_t) v : (uint64_t) v;
    p = buf + sizeof(buf);

    do {
        *--p = (char) ('0' + u % 10);
        u /= 10;
    } while (u != 0);

    if (v < 0) {
        *--p = '-';
    }

    toll_usage_put(o, p, buf + sizeof(buf) - p);
}


static void
toll_usage_amount(toll_usage_out_t *o, int64_t micros)
{
    char  buf[TOLL_MONEY_STR_MAX];

    toll_usage_lit(o, "\"");
    toll_usage_put(o, buf, toll_money_format(micros, buf));
    toll_usage_lit(o, "\"");
}


static void
toll_usage_str(toll_usage_out_t *o, const unsigned char *s, size_t len)
{
    toll_usage_lit(o, "\"");

    o->len += toll_json_escape(o->p ? o->p + o->len : NULL, s, len);

    toll_usage_lit(o, "\"");
}
