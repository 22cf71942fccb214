/*
 * toll: a key record as Redis holds it.  See toll_key_record.h.
 */

#include "toll_key_record.h"

#include <string.h>


static int toll_key_record_uint(const toll_key_field_t *f, int64_t *out);


toll_key_record_rc_e
toll_key_record_decode(const toll_key_field_t f[TOLL_KEY_F_N],
    toll_key_record_t *rec, const char **why)
{
    int  role;

    memset(rec, 0, sizeof(toll_key_record_t));
    rec->rate_limit = -1;

    if (f[TOLL_KEY_F_STATUS].data == NULL
        && f[TOLL_KEY_F_SECRET].data == NULL)
    {
        return TOLL_KEY_RECORD_NONE;
    }

    if (f[TOLL_KEY_F_SECRET].data == NULL
        || toll_hex_decode(f[TOLL_KEY_F_SECRET].data,
                           f[TOLL_KEY_F_SECRET].len, rec->secret_hash,
                           TOLL_SECRET_HASH_LEN)
           != 0)
    {
        *why = "secret_sha256 is not 64 hex digits";
        goto invalid;
    }

    if (f[TOLL_KEY_F_OWNER].data == NULL
        || !toll_owner_valid((const unsigned char *) f[TOLL_KEY_F_OWNER].data,
                             f[TOLL_KEY_F_OWNER].len))
    {
        *why = "owner is missing or not printable ASCII";
        goto invalid;
    }

    if (f[TOLL_KEY_F_PLAN].data
        && !toll_plan_valid((const unsigned char *) f[TOLL_KEY_F_PLAN].data,
                            f[TOLL_KEY_F_PLAN].len))
    {
        *why = "plan has characters outside [A-Za-z0-9_.-]";
        goto invalid;
    }

    rec->role = TOLL_ROLE_BUYER;

    if (f[TOLL_KEY_F_ROLE].data) {
        role = toll_role_parse(f[TOLL_KEY_F_ROLE].data,
                               f[TOLL_KEY_F_ROLE].len);
        if (role < 0) {
            *why = "unknown role";
            goto invalid;
        }

        rec->role = (toll_role_e) role;
    }

    if (f[TOLL_KEY_F_RATE_LIMIT].data
        && toll_key_record_uint(&f[TOLL_KEY_F_RATE_LIMIT], &rec->rate_limit)
           != 0)
    {
        *why = "rate_limit is not a non-negative integer";
        goto invalid;
    }

    if (f[TOLL_KEY_F_EXPIRES_AT].data
        && toll_key_record_uint(&f[TOLL_KEY_F_EXPIRES_AT], &rec->expires_at)
           != 0)
    {
        *why = "expires_at is not a non-negative integer";
        goto invalid;
    }

    if (f[TOLL_KEY_F_SCOPES].data
        && !toll_scopes_valid(f[TOLL_KEY_F_SCOPES].data,
                              f[TOLL_KEY_F_SCOPES].len, TOLL_SCOPES_MAX,
                              TOLL_SCOPES_LEN_MAX))
    {
        *why = "scopes is not a list of at most 64 valid names";
        goto invalid;
    }

    rec->revoked = !(f[TOLL_KEY_F_STATUS].data
                     && f[TOLL_KEY_F_STATUS].len
                        == sizeof(TOLL_STATUS_ACTIVE) - 1
                     && memcmp(f[TOLL_KEY_F_STATUS].data, TOLL_STATUS_ACTIVE,
                               sizeof(TOLL_STATUS_ACTIVE) - 1) == 0);

    rec->owner = f[TOLL_KEY_F_OWNER].data;
    rec->owner_len = f[TOLL_KEY_F_OWNER].len;

    if (f[TOLL_KEY_F_PLAN].data) {
        rec->plan = f[TOLL_KEY_F_PLAN].data;
        rec->plan_len = f[TOLL_KEY_F_PLAN].len;
    }

    if (f[TOLL_KEY_F_SCOPES].len) {
        rec->scopes = f[TOLL_KEY_F_SCOPES].data;
        rec->scopes_len = f[TOLL_KEY_F_SCOPES].len;
    }

    return TOLL_KEY_RECORD_FOUND;

invalid:

    memset(rec, 0, sizeof(toll_key_record_t));
    rec->rate_limit = -1;

    return TOLL_KEY_RECORD_INVALID;
}


/* as ngx_atoof() reads it: 1 or more digits, at most INT64_MAX */
static int
toll_key_record_uint(const toll_key_field_t *f, int64_t *out)
{
    size_t   i;
    int64_t  n;

    if (f->len == 0) {
        return -1;
    }

    n = 0;

    for (i = 0; i < f->len; i++) {
        if (f->data[i] < '0' || f->data[i] > '9') {
            return -1;
        }

        if (n > (INT64_MAX - (f->data[i] - '0')) / 10) {
            return -1;
        }

        n = n * 10 + (f->data[i] - '0');
    }

    *out = n;

    return 0;
}


int
toll_scope_valid(const char *p, size_t len)
{
    size_t  i;
    char    c;

    if (len == 0 || len > TOLL_SCOPE_LEN_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = p[i];

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9'))
        {
            continue;
        }

        if (c == '\0' || strchr("-._:/+@~*", c) == NULL) {
            return 0;
        }
    }

    return 1;
}


int
toll_scopes_valid(const char *p, size_t len, size_t max_n, size_t max_len)
{
    size_t       n;
    const char  *end, *sp;

    if (len > max_len) {
        return 0;
    }

    end = p + len;

    for (n = 0; p < end; n++) {
        sp = memchr(p, ' ', (size_t) (end - p));

        if (sp == NULL) {
            sp = end;

        } else if (sp + 1 == end) {
            return 0;                   /* a trailing space */
        }

        if (n == max_n || !toll_scope_valid(p, (size_t) (sp - p))) {
            return 0;
        }

        p = (sp == end) ? end : sp + 1;
    }

    return 1;
}
