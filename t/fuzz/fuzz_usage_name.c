/*
 * Fuzz the one reader of the meter's Redis names (lib/toll_names.c),
 * which the module, toll-settle and tollctl share: usage hashes
 * "toll:usage:{<buyer>}:<YYYYMMDD>" and their mirrors, claims
 * "toll:drain:{<buyer>}:<YYYYMMDD>:<32 hex>", a usage hash's fields, and
 * a count as Redis holds it (lib/toll_usage.c).
 *
 * What is read must be what the builders write back: a name taken apart
 * and built again is the same bytes, so that every program finds the
 * same key from the same parts.
 */

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "toll_names.h"
#include "toll_usage.h"


static void
fuzz_usage_name(const char *name, size_t len)
{
    char         *again, *p;
    toll_name_t   n;

    if (toll_name_usage_parse(name, len, &n) != 0) {
        return;
    }

    assert(n.buyer > name && n.buyer + n.buyer_len <= name + len);
    assert(n.buyer_len >= 1 && n.buyer_len <= TOLL_NAME_BUYER_LEN_MAX);
    assert(memchr(n.buyer, '\n', n.buyer_len) == NULL);
    assert(memchr(n.buyer, '\0', n.buyer_len) == NULL);
    assert(strlen(n.day) == TOLL_NAME_DAY_LEN);

    again = malloc(TOLL_NAME_USAGE_LEN(n.buyer_len));
    assert(again != NULL);

    p = toll_name_usage(again, n.buyer, n.buyer_len, n.day);

    if (n.mirror) {
        memcpy(p, TOLL_NAME_USAGE_MIRROR,
               toll_name_len(TOLL_NAME_USAGE_MIRROR));
        p += toll_name_len(TOLL_NAME_USAGE_MIRROR);
    }

    assert((size_t) (p - again) == len);
    assert(memcmp(again, name, len) == 0);

    /* what the drain makes of a usage hash, a reader takes */
    if (!n.mirror) {
        free(again);
        again = malloc(TOLL_NAME_CLAIM_LEN(n.buyer_len));
        assert(again != NULL);
        p = toll_name_claim(again, n.buyer, n.buyer_len, n.day,
                            "0123456789abcdef0123456789abcdef");
        assert(toll_name_claim_parse(again, p - again, &n) == 0);
    }

    free(again);
}


static void
fuzz_claim_name(const char *name, size_t len)
{
    char         *again, *p;
    toll_name_t   n;

    if (toll_name_claim_parse(name, len, &n) != 0) {
        return;
    }

    assert(n.buyer_len >= 1 && n.buyer_len <= TOLL_NAME_BUYER_LEN_MAX);
    assert(memchr(n.buyer, '\n', n.buyer_len) == NULL);
    assert(strlen(n.day) == TOLL_NAME_DAY_LEN);
    assert(strlen(n.batch) == TOLL_NAME_BATCH_LEN);

    again = malloc(TOLL_NAME_CLAIM_LEN(n.buyer_len));
    assert(again != NULL);

    p = toll_name_claim(again, n.buyer, n.buyer_len, n.day, n.batch);
    assert((size_t) (p - again) == len);
    assert(memcmp(again, name, len) == 0);

    free(again);
}


static void
fuzz_field(const char *f, size_t len)
{
    int     field;
    size_t  slen;

    field = toll_usage_field_parse(f, len, &slen);

    if (field < 0) {
        return;
    }

    assert(field < TOLL_USAGE_FIELDS);
    assert(slen >= 1 && slen + 1 < len && f[slen] == ':');
    assert(strlen(toll_usage_fields[field]) == len - slen - 1);
    assert(memcmp(toll_usage_fields[field], f + slen + 1, len - slen - 1)
           == 0);
}


static void
fuzz_count(const char *s, size_t len)
{
    char     buf[32];
    int64_t  v;

    if (toll_usage_count_parse(s, len, &v) != 0) {
        return;
    }

    /* the same value as the C library reads, from at most 20 bytes */
    assert(len >= 1 && len <= TOLL_USAGE_COUNT_LEN_MAX);
    memcpy(buf, s, len);
    buf[len] = '\0';
    assert(strtoll(buf, NULL, 10) == v);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char  *copy;

    /* NUL-terminated, as hiredis hands a string over */
    copy = malloc(size + 1);
    if (copy == NULL) {
        return 0;
    }

    memcpy(copy, data, size);
    copy[size] = '\0';

    fuzz_usage_name(copy, size);
    fuzz_claim_name(copy, size);
    fuzz_field(copy, size);
    fuzz_count(copy, size);

    free(copy);

    return 0;
}
