/*
 * Unit tests of lib/toll_parse.c: integers with bounds and durations,
 * malformed input first.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "toll_parse.h"


#define TEST_NELTS(a)   (sizeof(a) / sizeof((a)[0]))
/* what an output holds before a call that must not write it */
#define TEST_SENTINEL   ((int64_t) 0x5a5a5a5a5a5a5a5aLL)


static void
assert_int_bad(const char *text, int64_t min, int64_t max)
{
    int64_t  n;

    n = TEST_SENTINEL;

    if (toll_parse_int64(text, min, max, &n) != -1) {
        fail_msg("\"%s\" in [%lld, %lld] was taken", text, (long long) min,
                 (long long) max);
    }

    assert_true(n == TEST_SENTINEL);
}


static void
assert_int_ok(const char *text, int64_t min, int64_t max, int64_t want)
{
    int64_t  n;

    n = TEST_SENTINEL;

    if (toll_parse_int64(text, min, max, &n) != 0) {
        fail_msg("\"%s\" in [%lld, %lld] was refused", text, (long long) min,
                 (long long) max);
    }

    assert_true(n == want);
}


static void
test_int_malformed(void **state)
{
    size_t  i;

    static const char  *bad[] = {
        "", " ", "-", "+", "+1", " 1", "1 ", "1\n", "\t1", "-0", "-00",
        "--1", "1-", "0x10", "1e3", "1.0", "1,000", "one", "1\x01",
        "\xff", "٣",
    };

    (void) state;

    for (i = 0; i < TEST_NELTS(bad); i++) {
        assert_int_bad(bad[i], INT64_MIN, INT64_MAX);
    }
}


static void
test_int_overflow(void **state)
{
    (void) state;

    assert_int_bad("9223372036854775808", INT64_MIN, INT64_MAX);
    assert_int_bad("-9223372036854775809", INT64_MIN, INT64_MAX);
    assert_int_bad("99999999999999999999", INT64_MIN, INT64_MAX);
    assert_int_bad("-99999999999999999999", INT64_MIN, INT64_MAX);
    assert_int_bad("18446744073709551616", INT64_MIN, INT64_MAX);
    assert_int_bad("000000000000000000000009223372036854775808",
                   INT64_MIN, INT64_MAX);

    assert_int_ok("9223372036854775807", INT64_MIN, INT64_MAX, INT64_MAX);
    assert_int_ok("-9223372036854775808", INT64_MIN, INT64_MAX, INT64_MIN);
    assert_int_ok("000000000000000000000009223372036854775807",
                  INT64_MIN, INT64_MAX, INT64_MAX);
}


static void
test_int_bounds(void **state)
{
    (void) state;

    assert_int_bad("0", 1, 65535);
    assert_int_bad("65536", 1, 65535);
    assert_int_bad("-1", 0, 10);
    assert_int_bad("11", 0, 10);
    assert_int_bad("-9223372036854775808", INT64_MIN + 1, INT64_MAX);
    assert_int_bad("9223372036854775807", INT64_MIN, INT64_MAX - 1);

    assert_int_ok("1", 1, 65535, 1);
    assert_int_ok("65535", 1, 65535, 65535);
    assert_int_ok("0", 0, 0, 0);
    assert_int_ok("-5", -5, -5, -5);
    assert_int_ok("080", 1, 65535, 80);
}


static void
test_int_every_small_value(void **state)
{
    char     buf[32];
    int64_t  i;

    (void) state;

    for (i = -100000; i <= 100000; i++) {
        snprintf(buf, sizeof(buf), "%lld", (long long) i);
        assert_int_ok(buf, INT64_MIN, INT64_MAX, i);
    }
}


static void
assert_duration(const char *text, int64_t want)
{
    int64_t  ms;
    int      rc;

    ms = TEST_SENTINEL;
    rc = toll_parse_duration_ms(text, 0, INT64_MAX, &ms);

    if (want == -1) {
        if (rc != -1 || ms != TEST_SENTINEL) {
            fail_msg("duration \"%s\" was taken", text);
        }

        return;
    }

    if (rc != 0 || ms != want) {
        fail_msg("duration \"%s\": %d, %lld ms, not %lld", text, rc,
                 (long long) ms, (long long) want);
    }
}


static void
test_duration_malformed(void **state)
{
    size_t  i;

    static const char  *bad[] = {
        "", "ms", "s", "-1s", "+1s", " 1s", "1s ", "1 s", "1.5s", "1h",
        "1d", "1S", "1MS", "1sec", "1mss", "1sm", "0x1s", "1000000000ms",
        "9999999999", "1s1", "1\n",
    };

    (void) state;

    for (i = 0; i < TEST_NELTS(bad); i++) {
        assert_duration(bad[i], -1);
    }
}


static void
test_duration_units(void **state)
{
    (void) state;

    assert_duration("0", 0);
    assert_duration("0ms", 0);
    assert_duration("250ms", 250);
    assert_duration("10", 10000);
    assert_duration("10s", 10000);
    assert_duration("2m", 120000);
    assert_duration("010s", 10000);
    assert_duration("999999999ms", 999999999);
    assert_duration("999999999m", INT64_C(59999999940000));
}


static void
test_duration_bounds(void **state)
{
    int64_t  ms;

    (void) state;

    ms = TEST_SENTINEL;

    assert_int_equal(toll_parse_duration_ms("99ms", 100, 60000, &ms), -1);
    assert_int_equal(toll_parse_duration_ms("61s", 100, 60000, &ms), -1);
    assert_int_equal(toll_parse_duration_ms("0s", 100, 60000, &ms), -1);
    assert_true(ms == TEST_SENTINEL);

    assert_int_equal(toll_parse_duration_ms("100ms", 100, 60000, &ms), 0);
    assert_true(ms == 100);
    assert_int_equal(toll_parse_duration_ms("1m", 100, 60000, &ms), 0);
    assert_true(ms == 60000);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_int_malformed),
        cmocka_unit_test(test_int_overflow),
        cmocka_unit_test(test_int_bounds),
        cmocka_unit_test(test_int_every_small_value),
        cmocka_unit_test(test_duration_malformed),
        cmocka_unit_test(test_duration_units),
        cmocka_unit_test(test_duration_bounds),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
