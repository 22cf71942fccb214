/*
 * toll: money as integers.  See toll_money.h.
 */

#include "toll_money.h"

#include <string.h>


static int toll_money_parse_scaled(const char *s, size_t len,
    size_t decimals, int64_t scale, int64_t *value);


/* the phrases and the parser spell out these numbers: keep them in step */
_Static_assert(TOLL_MICROS_PER_UNIT == 1000000 && TOLL_MONEY_DECIMALS_MAX == 6,
               "micro-units are 6 decimal places");
_Static_assert(sizeof("-9223372036854.775808") == TOLL_MONEY_STR_MAX,
               "TOLL_MONEY_STR_MAX holds INT64_MIN and its NUL");


static int
toll_money_digit(char c)
{
    return c >= '0' && c <= '9';
}


int
toll_money_parse(const char *s, size_t len, int64_t *micros)
{
    return toll_money_parse_scaled(s, len, TOLL_MONEY_DECIMALS_MAX,
                                   TOLL_MICROS_PER_UNIT, micros);
}


int
toll_money_parse_unit_price(const char *s, size_t len, int64_t *nanos)
{
    return toll_money_parse_scaled(s, len, TOLL_UNIT_PRICE_DECIMALS_MAX,
                                   TOLL_NANOS_PER_UNIT, nanos);
}


/* the parser of both: up to decimals digits, scale = 10^decimals */

static int
toll_money_parse_scaled(const char *s, size_t len, size_t decimals,
    int64_t scale, int64_t *value)
{
    int       negative;
    size_t    i, j, int_start, int_end, frac_start, frac_len;
    int64_t   units, frac, v;

    if (s == NULL || len == 0) {
        return TOLL_MONEY_EMPTY;
    }

    /*
     * The shape is checked in full before any value is computed, so that
     * "-1e3" is reported as bad syntax and "-1" as negative: the message
     * names the first thing the operator has to fix.
     */

    negative = (s[0] == '-');
    i = negative ? 1 : 0;

    int_start = i;

    while (i < len && toll_money_digit(s[i])) {
        i++;
    }

    int_end = i;

    /* ".5": a digit before the point, as people write prices */
    if (int_end == int_start) {
        return TOLL_MONEY_SYNTAX;
    }

    frac_start = i;
    frac_len = 0;

    if (i < len) {
        if (s[i] != '.') {
            return TOLL_MONEY_SYNTAX;
        }

        i++;
        frac_start = i;

        while (i < len && toll_money_digit(s[i])) {
            i++;
        }

        frac_len = i - frac_start;

        /* "5." is rejected: a point promises decimals */
        if (frac_len == 0 || i != len) {
            return TOLL_MONEY_SYNTAX;
        }
    }

    if (negative) {
        return TOLL_MONEY_NEGATIVE;
    }

    /*
     * Judged on the digits written, not their value: "0.0000010" fails
     * like "0.0000011" does.  Nothing is ever rounded on the way in.
     */
    if (frac_len > decimals) {
        return TOLL_MONEY_PRECISION;
    }

    /* leading zeros keep units at 0: any number of them is fine */

    units = 0;

    for (i = int_start; i < int_end; i++) {
        if (__builtin_mul_overflow(units, 10, &units)
            || __builtin_add_overflow(units, s[i] - '0', &units))
        {
            return TOLL_MONEY_OVERFLOW;
        }
    }

    /* "0.05" is 05 padded to 050000 */

    frac = 0;

    for (j = 0; j < decimals; j++) {
        frac = frac * 10 + (j < frac_len ? s[frac_start + j] - '0' : 0);
    }

    if (__builtin_mul_overflow(units, scale, &v)
        || __builtin_add_overflow(v, frac, &v))
    {
        return TOLL_MONEY_OVERFLOW;
    }

    *value = v;

    return TOLL_MONEY_OK;
}


const char *
toll_money_strerror(int err)
{
    switch (err) {

    case TOLL_MONEY_OK:
        return "is valid";

    case TOLL_MONEY_EMPTY:
        return "is empty";

    case TOLL_MONEY_SYNTAX:
        return "is not a decimal number like \"12\" or \"0.05\"";

    case TOLL_MONEY_NEGATIVE:
        return "is negative";

    case TOLL_MONEY_PRECISION:
        return "has more than 6 decimal places";

    case TOLL_MONEY_OVERFLOW:
        return "is more than 9223372036854.775807";

    default:
        return "is invalid";
    }
}


size_t
toll_money_format(int64_t micros, char buf[TOLL_MONEY_STR_MAX])
{
    int       decimals;
    char      tmp[TOLL_MONEY_STR_MAX];
    char     *p;
    size_t    len;
    uint64_t  mag, units, frac;

    /* in unsigned arithmetic, -INT64_MIN is representable */
    mag = micros < 0 ? 0 - (uint64_t) micros : (uint64_t) micros;

    units = mag / TOLL_MICROS_PER_UNIT;
    frac = mag % TOLL_MICROS_PER_UNIT;

    /* written backwards from the end of tmp */

    p = tmp + sizeof(tmp);

    if (frac != 0) {
        decimals = TOLL_MONEY_DECIMALS_MAX;

        /* the shortest form: trailing zeros dropped, so 50000 is "0.05" */
        while (frac % 10 == 0) {
            frac /= 10;
            decimals--;
        }

        while (decimals-- > 0) {
            *--p = (char) ('0' + frac % 10);
            frac /= 10;
        }

        *--p = '.';
    }

    do {
        *--p = (char) ('0' + units % 10);
        units /= 10;
    } while (units != 0);

    if (micros < 0) {
        *--p = '-';
    }

    len = (size_t) (tmp + sizeof(tmp) - p);

    memcpy(buf, p, len);
    buf[len] = '\0';

    return len;
}


int
toll_money_add(int64_t a, int64_t b, int64_t *sum)
{
    int64_t  v;

    if (__builtin_add_overflow(a, b, &v)) {
        return TOLL_MONEY_OVERFLOW;
    }

    *sum = v;

    return TOLL_MONEY_OK;
}


int
toll_money_mul(int64_t micros, int64_t count, int64_t *product)
{
    int64_t  v;

    if (__builtin_mul_overflow(micros, count, &v)) {
        return TOLL_MONEY_OVERFLOW;
    }

    *product = v;

    return TOLL_MONEY_OK;
}


int
toll_money_fee_bp(int64_t amount_micros, int64_t fee_bp,
    int64_t *fee_micros)
{
    int64_t  aq, ar, bq, br, v, t;

    if (amount_micros < 0 || fee_bp < 0) {
        return TOLL_MONEY_NEGATIVE;
    }

    /*
     * amount * bp / 10000 without forming amount * bp, which overflows
     * long before the fee does (INT64_MAX at 1000 bp is a tenth of it).
     * With amount = aq * 10000 + ar and bp = bq * 10000 + br:
     *
     *   amount * bp / 10000 = aq * bp + ar * bq + ar * br / 10000
     *
     * The first two terms are whole micro-units; only the last has a
     * fraction, and ar, br < 10000 keep ar * br + 5000 below 1e8.  Adding
     * half the divisor before dividing rounds half up.  Every term is
     * >= 0, so a term that overflows means the fee does too.
     */

    aq = amount_micros / TOLL_BP_PER_UNIT;
    ar = amount_micros % TOLL_BP_PER_UNIT;
    bq = fee_bp / TOLL_BP_PER_UNIT;
    br = fee_bp % TOLL_BP_PER_UNIT;

    if (__builtin_mul_overflow(aq, fee_bp, &v)
        || __builtin_mul_overflow(ar, bq, &t)
        || __builtin_add_overflow(v, t, &v))
    {
        return TOLL_MONEY_OVERFLOW;
    }

    t = (ar * br + TOLL_BP_PER_UNIT / 2) / TOLL_BP_PER_UNIT;

    if (__builtin_add_overflow(v, t, &v)) {
        return TOLL_MONEY_OVERFLOW;
    }

    *fee_micros = v;

    return TOLL_MONEY_OK;
}


int
toll_money_currency_valid(const char *s, size_t len)
{
    size_t  i;

    if (len < 3 || len > TOLL_MONEY_CURRENCY_LEN_MAX
        || s[0] < 'A' || s[0] > 'Z')
    {
        return 0;
    }

    for (i = 1; i < len; i++) {
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9'))) {
            return 0;
        }
    }

    return 1;
}


int
toll_money_units(int64_t units, int64_t unit_nanos, int64_t *micros)
{
    unsigned __int128  p;

    if (units < 0 || unit_nanos < 0) {
        return TOLL_MONEY_NEGATIVE;
    }

    /*
     * Both below 2^63: the product fits 126 bits.  Adding half the
     * divisor before dividing rounds half up, as the fee does.
     */

    p = (unsigned __int128) units * (unsigned __int128) unit_nanos;
    p = (p + TOLL_NANOS_PER_MICRO / 2) / TOLL_NANOS_PER_MICRO;

    if (p > (unsigned __int128) INT64_MAX) {
        return TOLL_MONEY_OVERFLOW;
    }

    *micros = (int64_t) p;

    return TOLL_MONEY_OK;
}
