/*
 * Fuzz lib/toll_money.c: parsing a price, formatting an amount, and the
 * checked arithmetic, each against what the header promises.
 *
 * The input is read twice: whole, as a price string; and its first 16
 * bytes as two int64 values for format, add, mul and fee, whose exact
 * results are computed on 128 bits here.
 */

#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "toll_money.h"


__extension__ typedef __int128  fuzz_i128;


static void
fuzz_parse(const uint8_t *data, size_t size)
{
    int       rc;
    char     *copy, buf[TOLL_MONEY_STR_MAX];
    size_t    len;
    int64_t   v, back;

    copy = malloc(size ? size : 1);
    if (copy == NULL) {
        return;
    }
    memcpy(copy, data, size);

    v = 0x5a5a;
    rc = toll_money_parse(copy, size, &v);
    assert(toll_money_strerror(rc) != NULL);

    if (rc == TOLL_MONEY_OK) {
        assert(v >= 0);

        /* the shortest form reads back as the same amount */
        len = toll_money_format(v, buf);
        assert(len < TOLL_MONEY_STR_MAX && buf[len] == '\0');
        assert(len <= size);
        assert(toll_money_parse(buf, len, &back) == TOLL_MONEY_OK
               && back == v);

    } else {
        assert(rc < 0 && rc >= TOLL_MONEY_OVERFLOW);
        assert(v == 0x5a5a);
    }

    free(copy);
}


static void
fuzz_arith(int64_t a, int64_t b)
{
    int        rc;
    char       buf[TOLL_MONEY_STR_MAX];
    size_t     len;
    int64_t    r, back;
    fuzz_i128  exact;

    len = toll_money_format(a, buf);
    assert(len > 0 && len < TOLL_MONEY_STR_MAX && buf[len] == '\0');

    if (a >= 0) {
        assert(toll_money_parse(buf, len, &back) == TOLL_MONEY_OK
               && back == a);

    } else {
        assert(buf[0] == '-');
        assert(toll_money_parse(buf, len, &back) == TOLL_MONEY_NEGATIVE);

        if (a != INT64_MIN) {
            assert(toll_money_parse(buf + 1, len - 1, &back)
                   == TOLL_MONEY_OK && back == -a);
        }
    }

    exact = (fuzz_i128) a + b;
    r = 7;
    rc = toll_money_add(a, b, &r);
    if (exact > INT64_MAX || exact < INT64_MIN) {
        assert(rc == TOLL_MONEY_OVERFLOW && r == 7);
    } else {
        assert(rc == TOLL_MONEY_OK && r == (int64_t) exact);
    }

    exact = (fuzz_i128) a * b;
    r = 7;
    rc = toll_money_mul(a, b, &r);
    if (exact > INT64_MAX || exact < INT64_MIN) {
        assert(rc == TOLL_MONEY_OVERFLOW && r == 7);
    } else {
        assert(rc == TOLL_MONEY_OK && r == (int64_t) exact);
    }

    r = 7;
    rc = toll_money_fee_bp(a, b, &r);
    if (a < 0 || b < 0) {
        assert(rc == TOLL_MONEY_NEGATIVE && r == 7);
        return;
    }

    /* half up: floor((a * b + 5000) / 10000), on 128 bits */
    exact = ((fuzz_i128) a * b + TOLL_BP_PER_UNIT / 2) / TOLL_BP_PER_UNIT;
    if (exact > INT64_MAX) {
        assert(rc == TOLL_MONEY_OVERFLOW && r == 7);
    } else {
        assert(rc == TOLL_MONEY_OK && r == (int64_t) exact);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int64_t  a, b;

    fuzz_parse(data, size);

    if (size >= 2 * sizeof(int64_t)) {
        memcpy(&a, data, sizeof(int64_t));
        memcpy(&b, data + sizeof(int64_t), sizeof(int64_t));
        fuzz_arith(a, b);
    }

    return 0;
}
