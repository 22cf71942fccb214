/*
 * toll: clocks and sleeps of toll-settle and tollctl, in milliseconds.
 *
 * Deadlines and intervals use the monotonic clock, which a change of the
 * date (NTP, an operator) does not move; the real clock is for what is
 * shown or stored as a date.
 */

#ifndef _TOLL_CLOCK_H_INCLUDED_
#define _TOLL_CLOCK_H_INCLUDED_


#include <signal.h>
#include <stdint.h>


/* with a stop flag: how soon a sleep sees it set */
#define TOLL_CLOCK_SLICE_MS  50


/* CLOCK_MONOTONIC, for deadlines and intervals */
int64_t toll_clock_mono_ms(void);

/* CLOCK_REALTIME: unix milliseconds, for dates */
int64_t toll_clock_real_ms(void);

/*
 * Sleeps ms (<= 0: not at all).  A signal does not cut it short: the
 * rest is slept, to the same monotonic deadline.  With stop not NULL,
 * it sleeps in slices of TOLL_CLOCK_SLICE_MS and returns as soon as
 * *stop is set (by a signal handler): a signal that lands just before
 * nanosleep() is seen within a slice, not after the whole sleep.
 * Returns 0 when the time has passed, -1 when *stop ended it.
 */
int toll_clock_sleep_ms(int64_t ms, volatile sig_atomic_t *stop);


#endif /* _TOLL_CLOCK_H_INCLUDED_ */
