/*
 * Fuzz the toll_usage writer (lib/toll_usage.c): rows of any names and
 * counts, as Redis may hold them, must give exactly the bytes measured
 * (the buffer is allocated at that size, so ASan sees a write past it),
 * and valid JSON that jansson reads back to the same names and numbers.
 *
 * Input: one byte of row count (0 to 15), then for the buyer and each
 * row's service and provider a 2-byte length and the bytes, and for each
 * row six int64 counts; what the input lacks is empty or zero.  The
 * whole input is also read as a count of a usage hash.
 */

#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "toll_money.h"
#include "toll_usage.h"


#define FUZZ_ROWS_MAX  16


typedef struct {
    const uint8_t  *p;
    size_t          left;
} fuzz_in_t;


static const unsigned char *
fuzz_bytes(fuzz_in_t *in, size_t *len)
{
    size_t          n;
    const uint8_t  *p;

    n = 0;
    if (in->left >= 2) {
        n = (size_t) in->p[0] | (size_t) in->p[1] << 8;
        in->p += 2;
        in->left -= 2;
    }

    if (n > in->left) {
        n = in->left;
    }

    p = in->p;
    in->p += n;
    in->left -= n;
    *len = n;

    return p;
}


static int64_t
fuzz_int(fuzz_in_t *in)
{
    int64_t  v;

    v = 0;
    if (in->left >= sizeof(int64_t)) {
        memcpy(&v, in->p, sizeof(int64_t));
        in->p += sizeof(int64_t);
        in->left -= sizeof(int64_t);
    }

    return v;
}


/* the string as jansson reads it equals the bytes, when they are UTF-8 */
static void
fuzz_check_str(json_t *v, const unsigned char *s, size_t len)
{
    json_t  *want;

    assert(json_is_string(v));

    /* NULL unless valid UTF-8, which is carried as it is */
    want = json_stringn((const char *) s, len);

    if (want != NULL) {
        assert(json_equal(v, want));
        json_decref(want);
    }
}


static void
fuzz_check_amount(json_t *v, int64_t micros)
{
    int64_t      back;
    const char  *s;

    assert(json_is_string(v));
    s = json_string_value(v);

    if (micros >= 0) {
        assert(toll_money_parse(s, json_string_length(v), &back)
               == TOLL_MONEY_OK && back == micros);
    } else {
        assert(s[0] == '-');
    }
}


static void
fuzz_check_counts(json_t *o, const toll_usage_counts_t *c)
{
    assert(json_integer_value(json_object_get(o, "calls")) == c->calls);
    assert(json_integer_value(json_object_get(o, "free_calls"))
           == c->free_calls);
    assert(json_integer_value(json_object_get(o, "paid_calls"))
           == c->paid_calls);
    assert(json_integer_value(json_object_get(o, "errors")) == c->errors);
    fuzz_check_amount(json_object_get(o, "amount"), c->amount_micros);
}


/* a usage hash's count, against strtoll() on the digits alone */
static void
fuzz_count(const uint8_t *data, size_t size)
{
    int        rc;
    char      *copy, *end;
    size_t     i;
    int64_t    v;
    long long  ref;
    int        digits;

    copy = malloc(size + 1);
    assert(copy != NULL);
    memcpy(copy, data, size);
    copy[size] = '\0';

    digits = size > (size_t) (copy[0] == '-');
    for (i = (copy[0] == '-'); i < size; i++) {
        digits = digits && copy[i] >= '0' && copy[i] <= '9';
    }

    rc = toll_usage_count_parse(copy, size, &v);

    if (!digits) {
        assert(rc == -1);

    } else {
        errno = 0;
        ref = strtoll(copy, &end, 10);
        assert(end == copy + size);
        /* an int64 of at most 20 bytes, as the claim script mirrors */
        assert((errno == 0 && size <= TOLL_USAGE_COUNT_LEN_MAX)
               == (rc == 0));
        assert(rc != 0 || v == ref);
    }

    free(copy);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char                 *buf;
    size_t                len, written, nrows, i, buyer_len;
    json_t               *root, *services, *s;
    fuzz_in_t             in;
    json_error_t          err;
    toll_usage_row_t      rows[FUZZ_ROWS_MAX];
    toll_usage_counts_t   totals;
    const unsigned char  *buyer;

    fuzz_count(data, size);

    in.p = data;
    in.left = size;

    nrows = 0;
    if (in.left > 0) {
        nrows = in.p[0] % FUZZ_ROWS_MAX;
        in.p++;
        in.left--;
    }

    buyer = fuzz_bytes(&in, &buyer_len);

    for (i = 0; i < nrows; i++) {
        rows[i].service = fuzz_bytes(&in, &rows[i].service_len);
        rows[i].provider = fuzz_bytes(&in, &rows[i].provider_len);
        rows[i].counts.calls = fuzz_int(&in);
        rows[i].counts.free_calls = fuzz_int(&in);
        rows[i].counts.paid_calls = fuzz_int(&in);
        rows[i].counts.errors = fuzz_int(&in);
        rows[i].counts.amount_micros = fuzz_int(&in);
        rows[i].free_remaining = fuzz_int(&in);
    }

    if (toll_usage_totals(rows, nrows, &totals) != 0) {
        /* the module answers 500 then; the writer is still safe */
        memset(&totals, 0, sizeof(toll_usage_counts_t));
    }

    len = toll_usage_json(NULL, buyer, buyer_len, &totals, rows, nrows,
                          NULL, 0);

    buf = malloc(len);
    assert(buf != NULL);

    written = toll_usage_json(buf, buyer, buyer_len, &totals, rows, nrows,
                              NULL, 0);
    assert(written == len);
    assert(len > 0 && buf[len - 1] == '\n');

    root = json_loadb(buf, len, JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES,
                      &err);
    if (root == NULL) {
        fprintf(stderr, "not JSON: %s at %d: %.*s\n", err.text,
                err.position, (int) len, buf);
        abort();
    }

    fuzz_check_str(json_object_get(root, "buyer"), buyer, buyer_len);
    fuzz_check_counts(json_object_get(root, "totals"), &totals);

    services = json_object_get(root, "services");
    assert(json_is_array(services) && json_array_size(services) == nrows);

    for (i = 0; i < nrows; i++) {
        s = json_array_get(services, i);
        fuzz_check_str(json_object_get(s, "service"), rows[i].service,
                       rows[i].service_len);
        fuzz_check_str(json_object_get(s, "provider"), rows[i].provider,
                       rows[i].provider_len);
        fuzz_check_counts(s, &rows[i].counts);
        assert(json_integer_value(json_object_get(s, "free_remaining"))
               == rows[i].free_remaining);
    }

    json_decref(root);
    free(buf);

    return 0;
}
