/*
 * toll: Redis names built and taken apart (lib/toll_names.h).
 */

#include <string.h>

#include "toll_names.h"


const char *const  toll_usage_fields[TOLL_USAGE_FIELDS] = {
    "calls", "free_calls", "paid_calls", "amount_micros", "errors",
    "latency_ms", "prepaid_micros", "units", TOLL_USAGE_PROVIDER_NAME,
    TOLL_USAGE_CURRENCY_NAME
};


static char *toll_name_put(char *p, const char *s, size_t len);
static int toll_name_digits(const char *s, size_t len);


char *
toll_name_tagged(char *p, const char *prefix, const char *subject,
    size_t len)
{
    p = toll_name_put(p, prefix, strlen(prefix));
    p = toll_name_put(p, subject, len);

    return toll_name_put(p, TOLL_NAME_TAG_END, 1);
}


char *
toll_name_buyer(char *p, const char *buyer, size_t len, const char *suffix)
{
    p = toll_name_tagged(p, TOLL_NAME_USAGE_PREFIX, buyer, len);

    return toll_name_put(p, suffix, strlen(suffix));
}


char *
toll_name_balance(char *p, const char *buyer, size_t len, const char *suffix)
{
    p = toll_name_tagged(p, TOLL_NAME_BALANCE_PREFIX, buyer, len);

    return toll_name_put(p, suffix, strlen(suffix));
}


char *
toll_name_cap(char *p, const char *buyer, size_t len, const char *suffix)
{
    p = toll_name_tagged(p, TOLL_NAME_CAP_PREFIX, buyer, len);

    return toll_name_put(p, suffix, strlen(suffix));
}


char *
toll_name_cap_period(char *p, const char *buyer, size_t len, int month,
    const char *day)
{
    p = toll_name_cap(p, buyer, len,
                      month ? TOLL_NAME_CAP_MONTH : TOLL_NAME_CAP_DAY);

    return toll_name_put(p, day, TOLL_NAME_DAY_LEN);
}


char *
toll_name_usage(char *p, const char *buyer, size_t len, const char *day)
{
    p = toll_name_buyer(p, buyer, len, ":");

    return toll_name_put(p, day, TOLL_NAME_DAY_LEN);
}


char *
toll_name_claim(char *p, const char *buyer, size_t len, const char *day,
    const char *batch)
{
    p = toll_name_tagged(p, TOLL_NAME_DRAIN_PREFIX, buyer, len);
    p = toll_name_put(p, ":", 1);
    p = toll_name_put(p, day, TOLL_NAME_DAY_LEN);
    p = toll_name_put(p, ":", 1);

    return toll_name_put(p, batch, TOLL_NAME_BATCH_LEN);
}


/* "toll:usage:{<buyer>}:<YYYYMMDD>", perhaps with ":drained" */
int
toll_name_usage_parse(const char *name, size_t len, toll_name_t *n)
{
    size_t  plen, slen, tail;

    plen = toll_name_len(TOLL_NAME_USAGE_PREFIX);
    slen = toll_name_len(TOLL_NAME_USAGE_MIRROR);
    tail = 2 + TOLL_NAME_DAY_LEN;

    if (len < plen || memcmp(name, TOLL_NAME_USAGE_PREFIX, plen) != 0) {
        return -1;
    }

    n->mirror = 0;

    if (len > slen
        && memcmp(name + len - slen, TOLL_NAME_USAGE_MIRROR, slen) == 0)
    {
        n->mirror = 1;
        len -= slen;
    }

    if (len <= plen + tail
        || memcmp(name + len - tail, "}:", 2) != 0
        || !toll_name_digits(name + len - TOLL_NAME_DAY_LEN,
                             TOLL_NAME_DAY_LEN)
        || !toll_name_buyer_valid(name + plen, len - tail - plen))
    {
        return -1;
    }

    n->buyer = name + plen;
    n->buyer_len = len - tail - plen;
    memcpy(n->day, name + len - TOLL_NAME_DAY_LEN, TOLL_NAME_DAY_LEN);
    n->day[TOLL_NAME_DAY_LEN] = '\0';
    n->batch[0] = '\0';

    return 0;
}


/* "toll:drain:{<buyer>}:<YYYYMMDD>:<32 lowercase hex>" */
int
toll_name_claim_parse(const char *name, size_t len, toll_name_t *n)
{
    size_t       i, plen, tail;
    const char  *id;

    plen = toll_name_len(TOLL_NAME_DRAIN_PREFIX);
    tail = 2 + TOLL_NAME_DAY_LEN + 1 + TOLL_NAME_BATCH_LEN;

    if (len <= plen + tail
        || memcmp(name, TOLL_NAME_DRAIN_PREFIX, plen) != 0)
    {
        return -1;
    }

    id = name + len - TOLL_NAME_BATCH_LEN;

    for (i = 0; i < TOLL_NAME_BATCH_LEN; i++) {
        if (!((id[i] >= '0' && id[i] <= '9')
              || (id[i] >= 'a' && id[i] <= 'f')))
        {
            return -1;
        }
    }

    if (memcmp(name + len - tail, "}:", 2) != 0
        || id[-1] != ':'
        || !toll_name_digits(name + len - tail + 2, TOLL_NAME_DAY_LEN)
        || !toll_name_buyer_valid(name + plen, len - tail - plen))
    {
        return -1;
    }

    n->buyer = name + plen;
    n->buyer_len = len - tail - plen;
    n->mirror = 0;
    memcpy(n->day, name + len - tail + 2, TOLL_NAME_DAY_LEN);
    n->day[TOLL_NAME_DAY_LEN] = '\0';
    memcpy(n->batch, id, TOLL_NAME_BATCH_LEN);
    n->batch[TOLL_NAME_BATCH_LEN] = '\0';

    return 0;
}


int
toll_usage_field_parse(const char *f, size_t len, size_t *service_len)
{
    int     i;
    size_t  j, flen;

    for (j = len; j > 0; j--) {
        if (f[j - 1] == ':') {
            break;
        }
    }

    /* at least one byte of service before the ':' */
    if (j < 2) {
        return -1;
    }

    flen = len - j;

    for (i = 0; i < TOLL_USAGE_FIELDS; i++) {
        if (strlen(toll_usage_fields[i]) == flen
            && memcmp(toll_usage_fields[i], f + j, flen) == 0)
        {
            *service_len = j - 1;
            return i;
        }
    }

    return -1;
}


void
toll_name_text(char dst[TOLL_NAME_TEXT_MAX], const char *name, size_t len)
{
    size_t                i, n;
    unsigned char         c;
    static const char     hex[] = "0123456789abcdef";

    n = 0;

    for (i = 0; i < len; i++) {
        c = (unsigned char) name[i];

        /* room for this byte's 4 at most, "..." and the NUL */
        if (n + 4 + 3 + 1 > TOLL_NAME_TEXT_MAX) {
            memcpy(dst + n, "...", 3);
            n += 3;
            break;
        }

        if (c >= 0x20 && c < 0x7f && c != '\\') {
            dst[n++] = (char) c;
            continue;
        }

        dst[n++] = '\\';
        dst[n++] = 'x';
        dst[n++] = hex[c >> 4];
        dst[n++] = hex[c & 0xf];
    }

    dst[n] = '\0';
}


static char *
toll_name_put(char *p, const char *s, size_t len)
{
    memcpy(p, s, len);

    return p + len;
}


static int
toll_name_digits(const char *s, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
    }

    return 1;
}


int
toll_name_buyer_valid(const char *s, size_t len)
{
    /* a leading '}' empties the names' hash tag (toll_owner_valid) */

    return len > 0 && len <= TOLL_NAME_BUYER_LEN_MAX && s[0] != '}'
           && memchr(s, '\n', len) == NULL
           && memchr(s, '\0', len) == NULL;
}


int
toll_name_balance_parse(const char *name, size_t len, const char **buyer,
    size_t *buyer_len)
{
    size_t  plen;

    plen = toll_name_len(TOLL_NAME_BALANCE_PREFIX);

    if (len < plen + 2
        || memcmp(name, TOLL_NAME_BALANCE_PREFIX, plen) != 0
        || name[len - 1] != TOLL_NAME_TAG_END[0]
        || !toll_name_buyer_valid(name + plen, len - plen - 1))
    {
        return -1;
    }

    *buyer = name + plen;
    *buyer_len = len - plen - 1;

    return 0;
}


int
toll_name_jwks_valid(const char *s, size_t len)
{
    size_t  i;

    if (len == 0 || len > TOLL_JWKS_NAME_LEN_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')
              || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'
              || s[i] == '.'))
        {
            return 0;
        }
    }

    return 1;
}
