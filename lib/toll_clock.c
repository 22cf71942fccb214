/*
 * toll: clocks and sleeps in milliseconds (toll_clock.h).
 */

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <time.h>

#include "toll_clock.h"


static int64_t toll_clock_ms(clockid_t id);


int64_t
toll_clock_mono_ms(void)
{
    return toll_clock_ms(CLOCK_MONOTONIC);
}


int64_t
toll_clock_real_ms(void)
{
    return toll_clock_ms(CLOCK_REALTIME);
}


int
toll_clock_sleep_ms(int64_t ms, volatile sig_atomic_t *stop)
{
    int64_t          end, now, left;
    struct timespec  ts;

    end = toll_clock_mono_ms() + ms;

    for ( ;; ) {
        if (stop != NULL && *stop) {
            return -1;
        }

        now = toll_clock_mono_ms();
        if (now >= end) {
            return 0;
        }

        left = end - now;

        if (stop != NULL && left > TOLL_CLOCK_SLICE_MS) {
            left = TOLL_CLOCK_SLICE_MS;
        }

        ts.tv_sec = left / 1000;
        ts.tv_nsec = (left % 1000) * 1000000;

        /* EINTR: the loop measures what is left against the deadline */
        (void) nanosleep(&ts, NULL);
    }
}


static int64_t
toll_clock_ms(clockid_t id)
{
    struct timespec  ts;

    (void) clock_gettime(id, &ts);

    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
