/*
 * Unit tests of lib/toll_money.c: parsing prices into micro-units,
 * formatting them back, checked arithmetic and fee rounding.
 *
 * Inputs go in with explicit lengths, never as C strings alone, so that
 * NUL bytes and buffers longer than the amount are tested too.  The
 * arithmetic is checked against 128-bit reference results (a GCC/Clang
 * extension, used by the tests only).
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "toll_money.h"


#define TEST_NELTS(a)         (sizeof(a) / sizeof((a)[0]))
#define LIT(s)                s, sizeof(s) - 1

/* what an output argument holds before a call that must not write it */
#define TEST_SENTINEL         ((int64_t) 0x5a5a5a5a5a5a5a5aLL)

#define TEST_SWEEP_MAX        2000000     /* micro-units, every value */
#define TEST_RANDOM_COUNT     200000


__extension__ typedef __int128  test_i128;


/* xorshift64*: a fixed seed, so that a failure repeats */
static uint64_t  test_rng_state = 0x9e3779b97f4a7c15ULL;


static uint64_t
test_rand(void)
{
    test_rng_state ^= test_rng_state >> 12;
    test_rng_state ^= test_rng_state << 25;
    test_rng_state ^= test_rng_state >> 27;

    return test_rng_state * 0x2545f4914f6cdd1dULL;
}


/* any int64_t, with small magnitudes as likely as large ones */
static int64_t
test_rand_i64(void)
{
    uint64_t  r;

    r = test_rand() >> (test_rand() % 64);

    return (test_rand() & 1) ? (int64_t) r : (int64_t) ~r;
}


/* toll_money_parse */

typedef struct {
    const char  *s;
    size_t       len;
    int          rc;
    int64_t      micros;
} test_parse_case_t;


#define OK(s, v)              { LIT(s), TOLL_MONEY_OK, v }
#define BAD(s, rc)            { LIT(s), rc, 0 }


static const test_parse_case_t  test_parse_cases[] = {
    OK("0.05", 50000),
    OK("0", 0),
    OK("0.0", 0),
    OK("0.000000", 0),
    OK("1", 1000000),
    OK("12", 12000000),
    OK("0.5", 500000),
    OK("0.1", 100000),
    OK("0.100000", 100000),
    OK("0.000001", 1),
    OK("0.999999", 999999),
    OK("1.000001", 1000001),
    OK("123456789.123456", 123456789123456LL),
    OK("9223372036854", 9223372036854000000LL),
    OK("9223372036854.775807", INT64_MAX),
    OK("9223372036854.775806", INT64_MAX - 1),

    /* leading zeros: any number of them */
    OK("007.5", 7500000),
    OK("00.000001", 1),
    OK("000000000000000000000000000000000000001", 1000000),
    OK("0000000000000000000009223372036854.775807", INT64_MAX),

    BAD("9223372036854.775808", TOLL_MONEY_OVERFLOW),
    BAD("9223372036854.8", TOLL_MONEY_OVERFLOW),
    BAD("9223372036855", TOLL_MONEY_OVERFLOW),
    BAD("9223372036854775807", TOLL_MONEY_OVERFLOW),
    BAD("9223372036854775808", TOLL_MONEY_OVERFLOW),
    BAD("99999999999999999999", TOLL_MONEY_OVERFLOW),
    BAD("99999999999999999999.999999", TOLL_MONEY_OVERFLOW),
    BAD("18446744073709551616", TOLL_MONEY_OVERFLOW),

    BAD("-0.05", TOLL_MONEY_NEGATIVE),
    BAD("-1", TOLL_MONEY_NEGATIVE),
    BAD("-0", TOLL_MONEY_NEGATIVE),
    /* the sign is named before the other faults of a well-formed amount */
    BAD("-0.0000001", TOLL_MONEY_NEGATIVE),
    BAD("-99999999999999999999", TOLL_MONEY_NEGATIVE),
    /* but bad syntax is named first */
    BAD("-", TOLL_MONEY_SYNTAX),
    BAD("--1", TOLL_MONEY_SYNTAX),
    BAD("-.5", TOLL_MONEY_SYNTAX),
    BAD("-1e3", TOLL_MONEY_SYNTAX),
    BAD("- 1", TOLL_MONEY_SYNTAX),
    BAD("1-", TOLL_MONEY_SYNTAX),

    BAD("", TOLL_MONEY_EMPTY),

    BAD(".5", TOLL_MONEY_SYNTAX),
    BAD("5.", TOLL_MONEY_SYNTAX),
    BAD(".", TOLL_MONEY_SYNTAX),
    BAD("..", TOLL_MONEY_SYNTAX),
    BAD("1..2", TOLL_MONEY_SYNTAX),
    BAD("1.2.3", TOLL_MONEY_SYNTAX),
    BAD("0.5.", TOLL_MONEY_SYNTAX),
    BAD("1e3", TOLL_MONEY_SYNTAX),
    BAD("1E3", TOLL_MONEY_SYNTAX),
    BAD("1.5e-3", TOLL_MONEY_SYNTAX),
    BAD("0x10", TOLL_MONEY_SYNTAX),
    BAD(" 1", TOLL_MONEY_SYNTAX),
    BAD("1 ", TOLL_MONEY_SYNTAX),
    BAD("\t1", TOLL_MONEY_SYNTAX),
    BAD("1\n", TOLL_MONEY_SYNTAX),
    BAD("1\r\n", TOLL_MONEY_SYNTAX),
    BAD("+1", TOLL_MONEY_SYNTAX),
    BAD("1,5", TOLL_MONEY_SYNTAX),
    BAD("1,000", TOLL_MONEY_SYNTAX),
    BAD("1_000", TOLL_MONEY_SYNTAX),
    BAD("1'000", TOLL_MONEY_SYNTAX),
    BAD("$1", TOLL_MONEY_SYNTAX),
    BAD("1USD", TOLL_MONEY_SYNTAX),
    BAD("NaN", TOLL_MONEY_SYNTAX),
    BAD("inf", TOLL_MONEY_SYNTAX),
    BAD("0b1", TOLL_MONEY_SYNTAX),
    /* a 7th decimal over the shape: "5." already fails on shape alone */
    BAD("0.0000001.", TOLL_MONEY_SYNTAX),

    /* U+FF11 FULLWIDTH DIGIT ONE, U+0663 ARABIC-INDIC DIGIT THREE */
    BAD("\xef\xbc\x91", TOLL_MONEY_SYNTAX),
    BAD("1\xef\xbc\x90", TOLL_MONEY_SYNTAX),
    BAD("0.\xef\xbc\x95", TOLL_MONEY_SYNTAX),
    BAD("\xd9\xa3", TOLL_MONEY_SYNTAX),
    /* U+2212 MINUS SIGN is not "-" */
    BAD("\xe2\x88\x92" "1", TOLL_MONEY_SYNTAX),

    /* embedded NUL: the length counts past it */
    BAD("1\0", TOLL_MONEY_SYNTAX),
    BAD("1\0" "2", TOLL_MONEY_SYNTAX),
    BAD("\0" "1", TOLL_MONEY_SYNTAX),
    BAD("0.0\0" "5", TOLL_MONEY_SYNTAX),
    BAD("\0", TOLL_MONEY_SYNTAX),

    /* a 7th decimal, even a zero one: never rounded, never dropped */
    BAD("0.0000001", TOLL_MONEY_PRECISION),
    BAD("0.0000010", TOLL_MONEY_PRECISION),
    BAD("0.0000000", TOLL_MONEY_PRECISION),
    BAD("1.1234567", TOLL_MONEY_PRECISION),
    BAD("0.05000000000", TOLL_MONEY_PRECISION),
    /* precision is named before overflow */
    BAD("99999999999999999999.1234567", TOLL_MONEY_PRECISION),
};


static void
test_parse_table(void **state)
{
    int                       rc;
    size_t                    i;
    int64_t                   micros;
    const test_parse_case_t  *c;

    (void) state;

    for (i = 0; i < TEST_NELTS(test_parse_cases); i++) {
        c = &test_parse_cases[i];

        micros = TEST_SENTINEL;
        rc = toll_money_parse(c->s, c->len, &micros);

        if (rc != c->rc) {
            fail_msg("case %zu \"%.*s\" (len %zu): rc %d, expected %d",
                     i, (int) c->len, c->s, c->len, rc, c->rc);
        }

        if (c->rc == TOLL_MONEY_OK) {
            assert_int_equal(micros, c->micros);

        } else {
            /* a failed parse leaves the output alone */
            assert_int_equal(micros, TEST_SENTINEL);
        }
    }
}


static void
test_parse_null(void **state)
{
    int64_t  micros;

    (void) state;

    micros = TEST_SENTINEL;

    assert_int_equal(toll_money_parse(NULL, 0, &micros), TOLL_MONEY_EMPTY);
    assert_int_equal(toll_money_parse(NULL, 5, &micros), TOLL_MONEY_EMPTY);
    assert_int_equal(toll_money_parse("1", 0, &micros), TOLL_MONEY_EMPTY);
    assert_int_equal(micros, TEST_SENTINEL);
}


/* the length decides, not a terminator: nginx strings are not NUL-ended */
static void
test_parse_length(void **state)
{
    int64_t  micros;

    (void) state;

    assert_int_equal(toll_money_parse("0.051", 4, &micros), TOLL_MONEY_OK);
    assert_int_equal(micros, 50000);

    assert_int_equal(toll_money_parse("12", 1, &micros), TOLL_MONEY_OK);
    assert_int_equal(micros, 1000000);

    assert_int_equal(toll_money_parse("5.5", 2, &micros), TOLL_MONEY_SYNTAX);

    assert_int_equal(toll_money_parse("0.0000001", 8, &micros),
                     TOLL_MONEY_OK);
    assert_int_equal(micros, 0);

    assert_int_equal(toll_money_parse("9223372036854.7758079", 20, &micros),
                     TOLL_MONEY_OK);
    assert_int_equal(micros, INT64_MAX);
}


/* each byte value as the whole string, and as a first and a 6th decimal */
static void
test_parse_every_byte(void **state)
{
    int      c, digit;
    char     buf[8];
    int64_t  micros;

    (void) state;

    for (c = 0; c < 256; c++) {
        digit = (c >= '0' && c <= '9');

        buf[0] = (char) c;
        assert_int_equal(toll_money_parse(buf, 1, &micros),
                         digit ? TOLL_MONEY_OK : TOLL_MONEY_SYNTAX);
        if (digit) {
            assert_int_equal(micros, (c - '0') * 1000000LL);
        }

        memcpy(buf, "1.", 2);
        buf[2] = (char) c;
        assert_int_equal(toll_money_parse(buf, 3, &micros),
                         digit ? TOLL_MONEY_OK : TOLL_MONEY_SYNTAX);
        if (digit) {
            assert_int_equal(micros, 1000000 + (c - '0') * 100000LL);
        }

        memcpy(buf, "0.00000", 7);
        buf[7] = (char) c;
        assert_int_equal(toll_money_parse(buf, 8, &micros),
                         digit ? TOLL_MONEY_OK : TOLL_MONEY_SYNTAX);
        if (digit) {
            assert_int_equal(micros, c - '0');
        }
    }
}


/* 1 to 6 decimals give the same amount as the same digits padded to 6 */
static void
test_parse_decimals(void **state)
{
    char     buf[16];
    size_t   n;
    int64_t  micros;
    static const int64_t  want[] = {
        0, 100000, 120000, 123000, 123400, 123450, 123456
    };

    (void) state;

    memcpy(buf, "0.1234567", 9);

    for (n = 1; n <= 6; n++) {
        assert_int_equal(toll_money_parse(buf, 2 + n, &micros),
                         TOLL_MONEY_OK);
        assert_int_equal(micros, want[n]);
    }

    assert_int_equal(toll_money_parse(buf, 9, &micros),
                     TOLL_MONEY_PRECISION);
}


/* toll_money_strerror */

static void
test_strerror(void **state)
{
    (void) state;

    assert_string_equal(toll_money_strerror(TOLL_MONEY_PRECISION),
                        "has more than 6 decimal places");
    assert_string_equal(toll_money_strerror(TOLL_MONEY_EMPTY), "is empty");
    assert_string_equal(toll_money_strerror(TOLL_MONEY_NEGATIVE),
                        "is negative");
    assert_non_null(strstr(toll_money_strerror(TOLL_MONEY_OVERFLOW),
                           "9223372036854.775807"));
    assert_non_null(strstr(toll_money_strerror(TOLL_MONEY_SYNTAX),
                           "decimal"));

    /* every code has its own phrase, unknown codes a generic one */
    assert_string_not_equal(toll_money_strerror(TOLL_MONEY_SYNTAX),
                            toll_money_strerror(TOLL_MONEY_EMPTY));
    assert_string_not_equal(toll_money_strerror(TOLL_MONEY_OVERFLOW),
                            toll_money_strerror(TOLL_MONEY_PRECISION));
    assert_string_equal(toll_money_strerror(-99), "is invalid");
    assert_string_equal(toll_money_strerror(7), "is invalid");
    assert_non_null(toll_money_strerror(TOLL_MONEY_OK));
}


/* toll_money_format */

typedef struct {
    int64_t      micros;
    const char  *s;
} test_format_case_t;


static const test_format_case_t  test_format_cases[] = {
    { 0, "0" },
    { 1, "0.000001" },
    { 10, "0.00001" },
    { 999999, "0.999999" },
    { 1000000, "1" },
    { 1000001, "1.000001" },
    { 50000, "0.05" },
    { 100000, "0.1" },
    { 1500000, "1.5" },
    { 10000000, "10" },
    { 12000000, "12" },
    { 123456789123456LL, "123456789.123456" },
    { 9223372036854000000LL, "9223372036854" },
    { INT64_MAX, "9223372036854.775807" },
    { INT64_MAX - 775807, "9223372036854" },
    { -1, "-0.000001" },
    { -50000, "-0.05" },
    { -1000000, "-1" },
    { -1500000, "-1.5" },
    { INT64_MIN + 1, "-9223372036854.775807" },
    { INT64_MIN, "-9223372036854.775808" },
};


/* formats into a guarded buffer; checks the length and the guard */
static size_t
format_checked(int64_t micros, char *out)
{
    char    buf[TOLL_MONEY_STR_MAX + 8];
    size_t  i, len;

    memset(buf, '#', sizeof(buf));

    len = toll_money_format(micros, buf);

    assert_true(len < TOLL_MONEY_STR_MAX);
    assert_int_equal(buf[len], '\0');
    assert_int_equal(strlen(buf), len);

    for (i = TOLL_MONEY_STR_MAX; i < sizeof(buf); i++) {
        assert_int_equal(buf[i], '#');
    }

    memcpy(out, buf, len + 1);

    return len;
}


/* parses what format wrote and expects micros back */
static void
round_trip(int64_t micros, const char *s, size_t len)
{
    int64_t  back;

    back = TEST_SENTINEL;

    if (micros >= 0) {
        assert_int_equal(toll_money_parse(s, len, &back), TOLL_MONEY_OK);
        assert_int_equal(back, micros);
        return;
    }

    /* the parser takes no sign: it says so, and reads the magnitude */

    assert_int_equal(s[0], '-');
    assert_int_equal(toll_money_parse(s, len, &back), TOLL_MONEY_NEGATIVE);

    if (micros == INT64_MIN) {
        assert_int_equal(toll_money_parse(s + 1, len - 1, &back),
                         TOLL_MONEY_OVERFLOW);
        return;
    }

    assert_int_equal(toll_money_parse(s + 1, len - 1, &back), TOLL_MONEY_OK);
    assert_int_equal(back, -micros);
}


static void
test_format_table(void **state)
{
    char    buf[TOLL_MONEY_STR_MAX];
    size_t  i, len;

    (void) state;

    for (i = 0; i < TEST_NELTS(test_format_cases); i++) {
        len = format_checked(test_format_cases[i].micros, buf);

        assert_string_equal(buf, test_format_cases[i].s);
        assert_int_equal(len, strlen(test_format_cases[i].s));

        round_trip(test_format_cases[i].micros, buf, len);
    }
}


/* INT64_MIN is the longest: it fills the buffer exactly */
static void
test_format_max_len(void **state)
{
    char  buf[TOLL_MONEY_STR_MAX];

    (void) state;

    assert_int_equal(toll_money_format(INT64_MIN, buf),
                     TOLL_MONEY_STR_MAX - 1);
    assert_int_equal(buf[TOLL_MONEY_STR_MAX - 1], '\0');
}


/* shortest: no trailing zero after the point, no bare point */
static void
assert_shortest(const char *s, size_t len)
{
    if (memchr(s, '.', len) != NULL) {
        assert_true(s[len - 1] != '0');
        assert_true(s[len - 1] != '.');
    }
}


/* every amount up to 2 units, then powers of ten and their neighbours */
static void
test_format_sweep(void **state)
{
    char     buf[TOLL_MONEY_STR_MAX];
    size_t   len;
    int64_t  v, p, d;

    (void) state;

    for (v = 0; v <= TEST_SWEEP_MAX; v++) {
        len = format_checked(v, buf);
        assert_shortest(buf, len);
        round_trip(v, buf, len);
    }

    for (p = 1; p <= INT64_MAX / 10; p *= 10) {
        for (d = -1; d <= 1; d++) {
            len = format_checked(p + d, buf);
            assert_shortest(buf, len);
            round_trip(p + d, buf, len);

            len = format_checked(-(p + d), buf);
            round_trip(-(p + d), buf, len);
        }
    }
}


static void
test_format_random(void **state)
{
    char     buf[TOLL_MONEY_STR_MAX];
    size_t   i, len;
    int64_t  v;

    (void) state;

    for (i = 0; i < TEST_RANDOM_COUNT; i++) {
        v = test_rand_i64();

        len = format_checked(v, buf);
        assert_shortest(buf, len);
        round_trip(v, buf, len);
    }
}


/* toll_money_add, toll_money_mul */

typedef struct {
    int64_t  a;
    int64_t  b;
    int      rc;
    int64_t  result;
} test_arith_case_t;


static const test_arith_case_t  test_add_cases[] = {
    { 1, 2, TOLL_MONEY_OK, 3 },
    { 0, 0, TOLL_MONEY_OK, 0 },
    { 50000, -50000, TOLL_MONEY_OK, 0 },
    { INT64_MAX, 0, TOLL_MONEY_OK, INT64_MAX },
    { INT64_MAX - 1, 1, TOLL_MONEY_OK, INT64_MAX },
    { INT64_MAX, 1, TOLL_MONEY_OVERFLOW, 0 },
    { 1, INT64_MAX, TOLL_MONEY_OVERFLOW, 0 },
    { INT64_MAX, INT64_MAX, TOLL_MONEY_OVERFLOW, 0 },
    { INT64_MIN, 0, TOLL_MONEY_OK, INT64_MIN },
    { INT64_MIN, -1, TOLL_MONEY_OVERFLOW, 0 },
    { INT64_MIN, INT64_MIN, TOLL_MONEY_OVERFLOW, 0 },
    { INT64_MIN, INT64_MAX, TOLL_MONEY_OK, -1 },
    { INT64_MAX, -1, TOLL_MONEY_OK, INT64_MAX - 1 },
};


static const test_arith_case_t  test_mul_cases[] = {
    { 50000, 1000, TOLL_MONEY_OK, 50000000 },
    { 0, INT64_MAX, TOLL_MONEY_OK, 0 },
    { INT64_MIN, 0, TOLL_MONEY_OK, 0 },
    { INT64_MAX, 1, TOLL_MONEY_OK, INT64_MAX },
    { INT64_MAX, 2, TOLL_MONEY_OVERFLOW, 0 },
    { INT64_MAX, -1, TOLL_MONEY_OK, -INT64_MAX },
    { INT64_MIN, 1, TOLL_MONEY_OK, INT64_MIN },
    { INT64_MIN, -1, TOLL_MONEY_OVERFLOW, 0 },
    { -1, INT64_MIN, TOLL_MONEY_OVERFLOW, 0 },
    { 3074457345618258602LL, 3, TOLL_MONEY_OK, 9223372036854775806LL },
    { 3074457345618258603LL, 3, TOLL_MONEY_OVERFLOW, 0 },
    { 4611686018427387904LL, -2, TOLL_MONEY_OK, INT64_MIN },
    { 4611686018427387904LL, 2, TOLL_MONEY_OVERFLOW, 0 },
    { 9223372036854LL, 1000000, TOLL_MONEY_OK, 9223372036854000000LL },
    { 9223372036855LL, 1000000, TOLL_MONEY_OVERFLOW, 0 },
    { 4294967296LL, 4294967296LL, TOLL_MONEY_OVERFLOW, 0 },
};


typedef int (*test_arith_fn)(int64_t, int64_t, int64_t *);


static void
run_arith_table(test_arith_fn fn, const test_arith_case_t *cases, size_t n)
{
    int      rc;
    size_t   i;
    int64_t  r;

    for (i = 0; i < n; i++) {
        r = TEST_SENTINEL;
        rc = fn(cases[i].a, cases[i].b, &r);

        if (rc != cases[i].rc) {
            fail_msg("case %zu (%lld, %lld): rc %d, expected %d", i,
                     (long long) cases[i].a, (long long) cases[i].b,
                     rc, cases[i].rc);
        }

        assert_int_equal(r, cases[i].rc == TOLL_MONEY_OK ? cases[i].result
                                                         : TEST_SENTINEL);
    }
}


static void
test_add_table(void **state)
{
    (void) state;

    run_arith_table(toll_money_add, test_add_cases,
                    TEST_NELTS(test_add_cases));
}


static void
test_mul_table(void **state)
{
    (void) state;

    run_arith_table(toll_money_mul, test_mul_cases,
                    TEST_NELTS(test_mul_cases));
}


static int
fits_i64(test_i128 v)
{
    return v >= INT64_MIN && v <= INT64_MAX;
}


static void
test_add_mul_random(void **state)
{
    int        rc;
    size_t     i;
    int64_t    a, b, r;
    test_i128  want;

    (void) state;

    for (i = 0; i < TEST_RANDOM_COUNT; i++) {
        a = test_rand_i64();
        b = test_rand_i64();

        want = (test_i128) a + b;
        rc = toll_money_add(a, b, &r);
        assert_int_equal(rc, fits_i64(want) ? TOLL_MONEY_OK
                                            : TOLL_MONEY_OVERFLOW);
        if (rc == TOLL_MONEY_OK) {
            assert_true(r == want);
        }

        want = (test_i128) a * b;
        rc = toll_money_mul(a, b, &r);
        assert_int_equal(rc, fits_i64(want) ? TOLL_MONEY_OK
                                            : TOLL_MONEY_OVERFLOW);
        if (rc == TOLL_MONEY_OK) {
            assert_true(r == want);
        }
    }
}


/* toll_money_fee_bp */

static const test_arith_case_t  test_fee_cases[] = {
    /* amount_micros, fee_bp, rc, fee_micros */
    { 10500000, 1000, TOLL_MONEY_OK, 1050000 },     /* 10% of 10.5 */

    /* half up: .5 goes up, .4999 goes down, also where half even differs */
    { 5, 1000, TOLL_MONEY_OK, 1 },                  /* 0.5 */
    { 4, 1000, TOLL_MONEY_OK, 0 },                  /* 0.4 */
    { 6, 1000, TOLL_MONEY_OK, 1 },                  /* 0.6 */
    { 14, 1000, TOLL_MONEY_OK, 1 },                 /* 1.4 */
    { 15, 1000, TOLL_MONEY_OK, 2 },                 /* 1.5 */
    { 25, 1000, TOLL_MONEY_OK, 3 },                 /* 2.5, even is 2 */
    { 1, 5000, TOLL_MONEY_OK, 1 },                  /* 0.5 */
    { 1, 4999, TOLL_MONEY_OK, 0 },                  /* 0.4999 */
    { 5000, 1, TOLL_MONEY_OK, 1 },                  /* 0.5 */
    { 4999, 1, TOLL_MONEY_OK, 0 },                  /* 0.4999 */
    { 1, 1, TOLL_MONEY_OK, 0 },                     /* 0.0001 */
    { 9999, 9999, TOLL_MONEY_OK, 9998 },            /* 9998.0001 */
    { 123456789, 250, TOLL_MONEY_OK, 3086420 },     /* 3086419.725 */

    { 0, 1000, TOLL_MONEY_OK, 0 },
    { 1000000, 0, TOLL_MONEY_OK, 0 },
    { 1000000, 1, TOLL_MONEY_OK, 100 },
    { 1000000, 10000, TOLL_MONEY_OK, 1000000 },     /* 100% */
    { 1000000, 25000, TOLL_MONEY_OK, 2500000 },     /* 250% */

    /* exact where amount * bp does not fit in 64 bits */
    { INT64_MAX, 1, TOLL_MONEY_OK, 922337203685478LL },
    { INT64_MAX, 1000, TOLL_MONEY_OK, 922337203685477581LL },
    { INT64_MAX, 5000, TOLL_MONEY_OK, 4611686018427387904LL },
    { INT64_MAX, 9999, TOLL_MONEY_OK, 9222449699651090329LL },
    { INT64_MAX, 10000, TOLL_MONEY_OK, INT64_MAX },
    { 1, INT64_MAX, TOLL_MONEY_OK, 922337203685478LL },
    { 10000, INT64_MAX, TOLL_MONEY_OK, INT64_MAX },

    /* overflow: only a rate above 100% can exceed the amount */
    { INT64_MAX, 10001, TOLL_MONEY_OVERFLOW, 0 },
    { INT64_MAX, INT64_MAX, TOLL_MONEY_OVERFLOW, 0 },
    { 10001, INT64_MAX, TOLL_MONEY_OVERFLOW, 0 },
    { 922337203685477581LL, 100000, TOLL_MONEY_OVERFLOW, 0 },
    { 922337203685477580LL, 100000, TOLL_MONEY_OK, 9223372036854775800LL },

    { -1, 1000, TOLL_MONEY_NEGATIVE, 0 },
    { -5, 1000, TOLL_MONEY_NEGATIVE, 0 },
    { INT64_MIN, 1, TOLL_MONEY_NEGATIVE, 0 },
    { 1000000, -1, TOLL_MONEY_NEGATIVE, 0 },
    { 1000000, INT64_MIN, TOLL_MONEY_NEGATIVE, 0 },
};


static void
test_fee_table(void **state)
{
    (void) state;

    run_arith_table(toll_money_fee_bp, test_fee_cases,
                    TEST_NELTS(test_fee_cases));
}


/* the exact fee, rounded half up, from a 128-bit product */
static void
assert_fee(int64_t amount, int64_t bp)
{
    int        rc;
    int64_t    fee;
    test_i128  want;

    want = ((test_i128) amount * bp + TOLL_BP_PER_UNIT / 2)
           / TOLL_BP_PER_UNIT;

    fee = TEST_SENTINEL;
    rc = toll_money_fee_bp(amount, bp, &fee);

    if (want > INT64_MAX) {
        assert_int_equal(rc, TOLL_MONEY_OVERFLOW);
        assert_int_equal(fee, TEST_SENTINEL);
        return;
    }

    if (rc != TOLL_MONEY_OK || fee != want) {
        fail_msg("fee(%lld, %lld): rc %d, fee %lld, expected %lld",
                 (long long) amount, (long long) bp, rc, (long long) fee,
                 (long long) want);
    }
}


static void
test_fee_exhaustive_small(void **state)
{
    int64_t  amount, bp;

    (void) state;

    /* every remainder pair the split in toll_money_fee_bp() can meet */
    for (amount = 0; amount < 2 * TOLL_BP_PER_UNIT + 3; amount += 7) {
        for (bp = 0; bp < 2 * TOLL_BP_PER_UNIT + 3; bp += 3) {
            assert_fee(amount, bp);
        }
    }
}


static void
test_fee_random(void **state)
{
    size_t   i;
    int64_t  amount, bp;

    (void) state;

    for (i = 0; i < TEST_RANDOM_COUNT; i++) {
        amount = test_rand_i64();
        bp = test_rand_i64();

        if (amount < 0) {
            amount = ~amount;
        }

        if (bp < 0) {
            bp = ~bp;
        }

        /* most rates are realistic ones, some are anything at all */
        if (i % 4 != 0) {
            bp %= 2 * TOLL_BP_PER_UNIT;
        }

        assert_fee(amount, bp);
    }
}


/* a price read from config, charged per call, and its fee */
static void
test_price_to_fee(void **state)
{
    char     buf[TOLL_MONEY_STR_MAX];
    int64_t  price, total, fee;

    (void) state;

    assert_int_equal(toll_money_parse(LIT("0.0035"), &price), TOLL_MONEY_OK);
    assert_int_equal(price, 3500);

    assert_int_equal(toll_money_mul(price, 3000, &total), TOLL_MONEY_OK);
    assert_int_equal(total, 10500000);
    toll_money_format(total, buf);
    assert_string_equal(buf, "10.5");

    assert_int_equal(toll_money_fee_bp(total, 1000, &fee), TOLL_MONEY_OK);
    toll_money_format(fee, buf);
    assert_string_equal(buf, "1.05");

    assert_int_equal(toll_money_add(total, -fee, &total), TOLL_MONEY_OK);
    toll_money_format(total, buf);
    assert_string_equal(buf, "9.45");
}


/* toll_money_parse_unit_price: 9 decimals, in nano-units */

static void
test_unit_price_parse(void **state)
{
    int64_t  v;

    (void) state;

    v = TEST_SENTINEL;
    assert_int_equal(toll_money_parse_unit_price(LIT("0.00000015"), &v),
                     TOLL_MONEY_OK);
    assert_int_equal(v, 150);
    assert_int_equal(toll_money_parse_unit_price(LIT("0.000000001"), &v),
                     TOLL_MONEY_OK);
    assert_int_equal(v, 1);
    assert_int_equal(toll_money_parse_unit_price(LIT("2"), &v),
                     TOLL_MONEY_OK);
    assert_int_equal(v, 2000000000);
    assert_int_equal(toll_money_parse_unit_price(LIT("9223372036.854775807"),
                                                 &v), TOLL_MONEY_OK);
    assert_int_equal(v, INT64_MAX);

    v = TEST_SENTINEL;
    assert_int_equal(toll_money_parse_unit_price(LIT("0.0000000001"), &v),
                     TOLL_MONEY_PRECISION);
    assert_int_equal(toll_money_parse_unit_price(LIT("9223372036.854775808"),
                                                 &v), TOLL_MONEY_OVERFLOW);
    assert_int_equal(toll_money_parse_unit_price(LIT("-0.1"), &v),
                     TOLL_MONEY_NEGATIVE);
    assert_int_equal(toll_money_parse_unit_price(LIT(".1"), &v),
                     TOLL_MONEY_SYNTAX);
    assert_int_equal(toll_money_parse_unit_price(LIT(""), &v),
                     TOLL_MONEY_EMPTY);
    assert_int_equal(v, TEST_SENTINEL);

    /* the price's rule is unchanged: 6 decimals */
    assert_int_equal(toll_money_parse(LIT("0.0000001"), &v),
                     TOLL_MONEY_PRECISION);
}


/* toll_money_units: units x nano-units, rounded once, half up */

static const test_arith_case_t  test_units_cases[] = {
    /* units, unit_nanos, rc, micros */
    { 3, 500, TOLL_MONEY_OK, 2 },                   /* 1.5 */
    { 1, 500, TOLL_MONEY_OK, 1 },                   /* 0.5 */
    { 1, 499, TOLL_MONEY_OK, 0 },                   /* 0.499 */
    { 5, 500, TOLL_MONEY_OK, 3 },                   /* 2.5, even is 2 */
    { 1000, 150, TOLL_MONEY_OK, 150 },              /* exact */
    { 1234567, 150, TOLL_MONEY_OK, 185185 },        /* 185185.05 */
    { 0, 150, TOLL_MONEY_OK, 0 },
    { 7, 0, TOLL_MONEY_OK, 0 },
    { INT64_MAX, 1000, TOLL_MONEY_OK, INT64_MAX },
    { INT64_MAX, 1, TOLL_MONEY_OK, 9223372036854776LL },
    { INT64_MAX, 1001, TOLL_MONEY_OVERFLOW, 0 },
    { INT64_MAX, INT64_MAX, TOLL_MONEY_OVERFLOW, 0 },
    { -1, 150, TOLL_MONEY_NEGATIVE, 0 },
    { 1, -150, TOLL_MONEY_NEGATIVE, 0 },
};


static void
test_units_table(void **state)
{
    (void) state;

    run_arith_table(toll_money_units, test_units_cases,
                    TEST_NELTS(test_units_cases));
}


static void
test_units_sweep(void **state)
{
    int64_t    units, nanos, got;
    test_i128  want;

    (void) state;

    for (units = 0; units < 3000; units += 7) {
        for (nanos = 0; nanos < 5000; nanos += 13) {
            want = ((test_i128) units * nanos + 500) / 1000;
            got = TEST_SENTINEL;
            assert_int_equal(toll_money_units(units, nanos, &got),
                             TOLL_MONEY_OK);
            assert_true(got == want);
        }
    }
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_parse_null),
        cmocka_unit_test(test_parse_length),
        cmocka_unit_test(test_parse_every_byte),
        cmocka_unit_test(test_parse_decimals),
        cmocka_unit_test(test_strerror),

        cmocka_unit_test(test_format_table),
        cmocka_unit_test(test_format_max_len),
        cmocka_unit_test(test_format_sweep),
        cmocka_unit_test(test_format_random),

        cmocka_unit_test(test_add_table),
        cmocka_unit_test(test_mul_table),
        cmocka_unit_test(test_add_mul_random),

        cmocka_unit_test(test_fee_table),
        cmocka_unit_test(test_fee_exhaustive_small),
        cmocka_unit_test(test_fee_random),
        cmocka_unit_test(test_price_to_fee),

        cmocka_unit_test(test_unit_price_parse),
        cmocka_unit_test(test_units_table),
        cmocka_unit_test(test_units_sweep),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
