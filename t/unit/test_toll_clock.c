/*
 * Unit tests of lib/toll_clock.c: the clocks, a sleep that a signal does
 * not cut short, and one that a stop flag does.
 *
 * Times are checked with a floor (a sleep never ends early) and a
 * generous ceiling (the machine may be busy): no result depends on how
 * fast the test runs.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <cmocka.h>

#include "toll_clock.h"


/* what a busy machine may add to a sleep, at the most */
#define TEST_SLACK_MS        5000
#define TEST_SLEEP_MS        300
/* a timer's signal every this long, during the sleep */
#define TEST_TICK_US         20000


static volatile sig_atomic_t  test_signals;
static volatile sig_atomic_t  test_stop;
static volatile sig_atomic_t  test_stop_after;


static void
test_on_alarm(int signo)
{
    (void) signo;

    test_signals++;

    if (test_stop_after && test_signals >= test_stop_after) {
        test_stop = 1;
    }
}


/* SIGALRM every TEST_TICK_US, without SA_RESTART: nanosleep() sees EINTR */
static void
test_ticks(int on)
{
    struct sigaction  sa;
    struct itimerval  it;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on ? test_on_alarm : SIG_IGN;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGALRM, &sa, NULL), 0);

    memset(&it, 0, sizeof(it));

    if (on) {
        it.it_interval.tv_usec = TEST_TICK_US;
        it.it_value.tv_usec = TEST_TICK_US;
    }

    assert_int_equal(setitimer(ITIMER_REAL, &it, NULL), 0);
}


static void
test_clocks(void **state)
{
    int64_t          mono, real;
    struct timespec  ts;

    (void) state;

    clock_gettime(CLOCK_REALTIME, &ts);
    real = toll_clock_real_ms();

    /* unix milliseconds of now, not of the boot */
    assert_true(real >= (int64_t) ts.tv_sec * 1000);
    assert_true(real < ((int64_t) ts.tv_sec + 60) * 1000);

    mono = toll_clock_mono_ms();
    assert_true(mono >= 0);
    assert_true(toll_clock_mono_ms() >= mono);
}


static void
test_sleep_none(void **state)
{
    int64_t  start;

    (void) state;

    start = toll_clock_mono_ms();

    assert_int_equal(toll_clock_sleep_ms(0, NULL), 0);
    assert_int_equal(toll_clock_sleep_ms(-1000, NULL), 0);
    assert_true(toll_clock_mono_ms() - start < TEST_SLACK_MS);
}


static void
test_sleep_through_signals(void **state)
{
    int      rc;
    int64_t  start, took;

    (void) state;

    test_signals = 0;
    test_stop_after = 0;

    test_ticks(1);
    start = toll_clock_mono_ms();
    rc = toll_clock_sleep_ms(TEST_SLEEP_MS, NULL);
    took = toll_clock_mono_ms() - start;
    test_ticks(0);

    assert_int_equal(rc, 0);
    assert_true(test_signals > 0);
    assert_true(took >= TEST_SLEEP_MS);
    assert_true(took < TEST_SLEEP_MS + TEST_SLACK_MS);
}


static void
test_sleep_until_stop(void **state)
{
    int      rc;
    int64_t  start, took;

    (void) state;

    test_signals = 0;
    test_stop = 0;
    test_stop_after = 3;

    /* a long sleep, ended by the flag the third signal sets */
    test_ticks(1);
    start = toll_clock_mono_ms();
    rc = toll_clock_sleep_ms(600000, &test_stop);
    took = toll_clock_mono_ms() - start;
    test_ticks(0);

    assert_int_equal(rc, -1);
    assert_true(test_stop);
    assert_true(took < TEST_SLACK_MS);
}


static void
test_sleep_flag_already_set(void **state)
{
    int64_t  start;

    (void) state;

    test_stop = 1;
    start = toll_clock_mono_ms();

    assert_int_equal(toll_clock_sleep_ms(600000, &test_stop), -1);
    assert_true(toll_clock_mono_ms() - start < TEST_SLACK_MS);

    test_stop = 0;
}


static void
test_sleep_with_flag_unset(void **state)
{
    int64_t  start, took;

    (void) state;

    test_stop = 0;
    start = toll_clock_mono_ms();

    /* several slices: the whole time is slept, not one slice */
    assert_int_equal(toll_clock_sleep_ms(TOLL_CLOCK_SLICE_MS * 4,
                                         &test_stop), 0);
    took = toll_clock_mono_ms() - start;

    assert_true(took >= TOLL_CLOCK_SLICE_MS * 4);
    assert_true(took < TOLL_CLOCK_SLICE_MS * 4 + TEST_SLACK_MS);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_clocks),
        cmocka_unit_test(test_sleep_none),
        cmocka_unit_test(test_sleep_through_signals),
        cmocka_unit_test(test_sleep_until_stop),
        cmocka_unit_test(test_sleep_flag_already_set),
        cmocka_unit_test(test_sleep_with_flag_unset),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
