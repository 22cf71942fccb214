/*
 * Unit tests of lib/toll_limit.c: bucket and window arithmetic, and the
 * estimate of another clock's offset.
 *
 * Each algorithm is checked against what it promises: a bucket admits
 * "burst" at once and then one request per interval, a window never admits
 * more than its count in any interval of its length, refused requests
 * consume nothing, and a retry at retry_ms is admitted.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "toll_limit.h"


/* a start time on a slot boundary of every unit, in 2026 */
#define T0_MS  (INT64_C(20600) * 86400000)


/* a zeroed window under a valid conf; freed by the test */
static toll_window_t *
window_new(toll_window_conf_t *wc, int64_t count, int64_t period_ms)
{
    toll_window_t  *w;

    w = calloc(1, sizeof(toll_window_t));
    assert_non_null(w);
    assert_int_equal(toll_window_conf(wc, count, period_ms), 0);

    return w;
}


static void
test_conf_rejects(void **state)
{
    toll_bucket_conf_t  bc;
    toll_window_conf_t  wc;

    (void) state;

    assert_int_equal(toll_bucket_conf(&bc, 0, 1000, 1), -1);
    assert_int_equal(toll_bucket_conf(&bc, 1, 1000, 0), -1);
    assert_int_equal(toll_bucket_conf(&bc, -5, 1000, 1), -1);
    assert_int_equal(toll_bucket_conf(&bc, 1, 0, 1), -1);
    assert_int_equal(toll_bucket_conf(&bc, TOLL_LIMIT_COUNT_MAX + 1, 1000, 1),
                     -1);
    /* one a day with a bucket of a billion: centuries to fill */
    assert_int_equal(toll_bucket_conf(&bc, 1, 86400000, 1000000000), -1);

    assert_int_equal(toll_window_conf(&wc, 0, 60000), -1);
    assert_int_equal(toll_window_conf(&wc, 10, 1001), -1);

    assert_int_equal(toll_bucket_conf(&bc, 60, 60000, 10), 0);
    assert_int_equal(bc.interval_ns, INT64_C(1000000000));
    assert_int_equal(bc.tolerance_ns, INT64_C(10000000000));

    for (int u = 0; u < TOLL_UNIT_N; u++) {
        assert_int_equal(toll_window_conf(&wc, 5, toll_unit_ms[u]), 0);
        assert_int_equal(wc.slot_ms * TOLL_WINDOW_SLOTS, toll_unit_ms[u]);
    }
}


static void
test_bucket_burst_then_rate(void **state)
{
    int                  i, admitted;
    int64_t              t;
    toll_bucket_t        b = { 0 };
    toll_bucket_conf_t   bc;
    toll_limit_result_t  res;

    (void) state;

    assert_int_equal(toll_bucket_conf(&bc, 60, 60000, 10), 0);

    /* 10 at once, each reporting one fewer left */
    for (i = 0; i < 10; i++) {
        toll_bucket_check(&bc, &b, T0_MS, 1, &res);
        assert_true(res.admitted);
        assert_int_equal(res.remaining, 9 - i);
    }

    /* the 11th is refused, consumes nothing, and may retry in 1 s */
    for (i = 0; i < 100; i++) {
        toll_bucket_check(&bc, &b, T0_MS, 1, &res);
        assert_false(res.admitted);
        assert_int_equal(res.retry_ms, 1000);
    }

    toll_bucket_check(&bc, &b, T0_MS + 999, 1, &res);
    assert_false(res.admitted);
    toll_bucket_check(&bc, &b, T0_MS + 1000, 1, &res);
    assert_true(res.admitted);
    assert_int_equal(res.remaining, 0);
    assert_int_equal(res.reset_ms, 10000);

    /* sustained: one a second for a minute, never more */
    admitted = 0;
    for (t = T0_MS + 1100; t < T0_MS + 61100; t += 100) {
        toll_bucket_check(&bc, &b, t, 1, &res);
        admitted += res.admitted;
    }
    assert_int_equal(admitted, 60);
}


static void
test_bucket_dry_check(void **state)
{
    toll_bucket_t        b = { 0 };
    toll_bucket_conf_t   bc;
    toll_limit_result_t  res;

    (void) state;

    assert_int_equal(toll_bucket_conf(&bc, 1, 1000, 1), 0);

    toll_bucket_check(&bc, &b, T0_MS, 0, &res);
    assert_true(res.admitted);
    assert_int_equal(b.tat_ns, 0);

    toll_bucket_check(&bc, &b, T0_MS, 1, &res);
    assert_true(res.admitted);
    toll_bucket_check(&bc, &b, T0_MS, 1, &res);
    assert_false(res.admitted);
}


/* never more than count in any interval of the window's length */
static void
test_window_never_over(void **state)
{
    int                  u, i, j, k, n;
    int64_t              t, times[4096], len;
    toll_window_t       *w;
    toll_window_conf_t   wc;
    toll_limit_result_t  res;

    (void) state;

    w = calloc(1, sizeof(toll_window_t));
    assert_non_null(w);

    for (u = TOLL_UNIT_SECOND; u <= TOLL_UNIT_MINUTE; u++) {
        memset(w, 0, sizeof(*w));
        assert_int_equal(toll_window_conf(&wc, 50, toll_unit_ms[u]), 0);
        len = toll_unit_ms[u];

        n = 0;
        srand(7 + u);

        /* uneven arrivals, with bursts at slot and window edges */
        for (t = T0_MS; t < T0_MS + 5 * len && n < 4096; ) {
            toll_window_check(&wc, w, t, 1, &res);
            if (res.admitted) {
                times[n++] = t;
            }
            k = rand() % 10;
            t += (k < 6) ? 0 : (k < 9) ? len / 97 + 1 : len / 3;
        }

        for (i = 0; i < n; i++) {
            for (j = i; j < n && times[j] < times[i] + len; j++) {
                /* empty */
            }
            assert_true(j - i <= 50);
        }

        /* and it is not stuck: well past the window, room again */
        toll_window_check(&wc, w, times[n - 1] + len + wc.slot_ms, 0, &res);
        assert_true(res.admitted);
        assert_int_equal(res.remaining, 49);
    }

    free(w);
}


static void
test_window_edges(void **state)
{
    int                  i, admitted;
    toll_window_t       *w;
    toll_window_conf_t   wc;
    toll_limit_result_t  res;

    (void) state;

    w = window_new(&wc, 20, 1000);

    /* 40 just before a second's boundary, 40 just after: 20 in all */
    admitted = 0;
    for (i = 0; i < 40; i++) {
        toll_window_check(&wc, w, T0_MS + 999, 1, &res);
        admitted += res.admitted;
    }
    for (i = 0; i < 40; i++) {
        toll_window_check(&wc, w, T0_MS + 1001, 1, &res);
        admitted += res.admitted;
    }
    assert_int_equal(admitted, 20);

    /* the retry time is exact: refused just before it, admitted at it */
    assert_false(res.admitted);
    assert_true(res.retry_ms > 0);
    toll_window_check(&wc, w, T0_MS + 1001 + res.retry_ms - 1, 0, &res);
    assert_false(res.admitted);
    toll_window_check(&wc, w, T0_MS + 1001, 0, &res);
    toll_window_check(&wc, w, T0_MS + 1001 + res.retry_ms, 1, &res);
    assert_true(res.admitted);

    free(w);
}


static void
test_window_remaining_and_sync_rings(void **state)
{
    int64_t              slot;
    toll_window_t       *w;
    toll_window_conf_t   wc;
    toll_limit_result_t  res;

    (void) state;

    w = window_new(&wc, 10, 60000);

    toll_window_check(&wc, w, T0_MS, 1, &res);
    assert_true(res.admitted);
    assert_int_equal(res.remaining, 9);
    assert_int_equal(res.reset_ms, 60000 + wc.slot_ms);

    /* what other nodes admitted counts as well */
    slot = w->head;
    w->global[slot % TOLL_WINDOW_RING] = 5;
    w->sent[slot % TOLL_WINDOW_RING] = 3;
    toll_window_check(&wc, w, T0_MS + 10, 1, &res);
    assert_true(res.admitted);
    assert_int_equal(res.remaining, 0);
    assert_int_equal(toll_window_used(w), 10);

    toll_window_check(&wc, w, T0_MS + 20, 1, &res);
    assert_false(res.admitted);
    assert_int_equal(res.retry_ms, 60000 + wc.slot_ms - 20);

    /* a step far ahead forgets everything */
    toll_window_advance(&wc, w, T0_MS + 10 * 60000);
    assert_int_equal(toll_window_used(w), 0);

    /* a clock step back keeps the counts */
    toll_window_check(&wc, w, T0_MS + 10 * 60000, 1, &res);
    toll_window_check(&wc, w, T0_MS, 1, &res);
    assert_int_equal(toll_window_used(w), 2);

    free(w);
}


/* a dry check followed by a commit reports what a committing check would */
static void
test_commit_matches_check(void **state)
{
    int                  i;
    int64_t              t;
    toll_bucket_t        b1 = { 0 }, b2 = { 0 };
    toll_window_t       *w1, *w2;
    toll_bucket_conf_t   bc;
    toll_window_conf_t   wc;
    toll_limit_result_t  dry, wet;

    (void) state;

    w1 = calloc(1, sizeof(toll_window_t));
    w2 = calloc(1, sizeof(toll_window_t));
    assert_non_null(w1);
    assert_non_null(w2);

    assert_int_equal(toll_bucket_conf(&bc, 30, 60000, 4), 0);
    assert_int_equal(toll_window_conf(&wc, 7, 60000), 0);

    for (i = 0, t = T0_MS; i < 40; i++, t += 700) {
        toll_bucket_check(&bc, &b1, t, 0, &dry);
        if (dry.admitted) {
            toll_bucket_commit(&bc, &b1, t);
        }
        toll_bucket_check(&bc, &b2, t, 1, &wet);
        assert_int_equal(dry.admitted, wet.admitted);
        assert_int_equal(dry.remaining, wet.remaining);
        assert_int_equal(dry.reset_ms, wet.reset_ms);
        assert_int_equal(dry.retry_ms, wet.retry_ms);
        assert_int_equal(b1.tat_ns, b2.tat_ns);

        toll_window_check(&wc, w1, t, 0, &dry);
        if (dry.admitted) {
            toll_window_commit(w1);
        }
        toll_window_check(&wc, w2, t, 1, &wet);
        assert_int_equal(dry.admitted, wet.admitted);
        assert_int_equal(dry.remaining, wet.remaining);
        assert_int_equal(dry.reset_ms, wet.reset_ms);
        assert_int_equal(dry.retry_ms, wet.retry_ms);
        assert_int_equal(toll_window_used(w1), toll_window_used(w2));
    }

    free(w1);
    free(w2);
}


/*
 * The offset estimate: the smallest measures, at once; higher ones move
 * it a little; a step of the other clock at once.  Jittered delays keep
 * it near the least delayed measure and hardly move it.
 */

static void
test_clock_estimate(void **state)
{
    int           i;
    int64_t       prev, high;
    toll_clock_t  c = { 0, 0 };

    (void) state;

    toll_clock_sample(&c, 5000);
    assert_true(c.known);
    assert_int_equal(c.offset_us, 5000000);

    /* a less delayed call: down at once */
    toll_clock_sample(&c, 4990);
    assert_int_equal(c.offset_us, 4990000);

    /* a more delayed one: 1/64 of the way */
    toll_clock_sample(&c, 4990 + 64);
    assert_int_equal(c.offset_us, 4991000);

    /* the other clock stepped forward by 30 s: at once */
    toll_clock_sample(&c, 34990);
    assert_int_equal(c.offset_us, 34990000);

    /* stepped back: at once */
    toll_clock_sample(&c, -1000);
    assert_int_equal(c.offset_us, -1000000);

    /* delays of 0 to 9 ms (4.5 on average): the estimate stays near the
       least delayed measure, and a measure moves it by little */
    toll_clock_sample(&c, 2000);
    assert_int_equal(c.offset_us, 2000000);
    srand(7);
    high = 0;

    for (i = 0; i < 10000; i++) {
        prev = c.offset_us;
        toll_clock_sample(&c, 2000 + rand() % 10);
        assert_true(c.offset_us >= 2000000);
        high = c.offset_us > high ? c.offset_us : high;

        /* up by 9 ms / 64 at most; down to the measure, at most the
           distance from the least delayed one */
        assert_true(c.offset_us - prev <= 9000 / 64);
    }

    assert_true(high <= 2003000);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_conf_rejects),
        cmocka_unit_test(test_bucket_burst_then_rate),
        cmocka_unit_test(test_bucket_dry_check),
        cmocka_unit_test(test_window_never_over),
        cmocka_unit_test(test_window_edges),
        cmocka_unit_test(test_window_remaining_and_sync_rings),
        cmocka_unit_test(test_commit_matches_check),
        cmocka_unit_test(test_clock_estimate),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
