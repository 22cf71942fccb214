/*
 * toll: rate-limit arithmetic.
 *
 * Times are unix milliseconds from the caller, nanoseconds inside a bucket
 * so that a rate like 7r/s keeps its precision (an interval of 142857142 ns
 * is short by under 1 ns a request).
 */

#include <string.h>

#include "toll_limit.h"


#define TOLL_NS_PER_MS  1000000


const int64_t  toll_unit_ms[TOLL_UNIT_N] = {
    1000, 60 * 1000, 3600 * 1000, 86400 * 1000
};

const char *const  toll_unit_names[TOLL_UNIT_N] = {
    "second", "minute", "hour", "day"
};


int
toll_bucket_conf(toll_bucket_conf_t *bc, int64_t count, int64_t period_ms,
    int64_t burst)
{
    if (count < 1 || count > TOLL_LIMIT_COUNT_MAX
        || period_ms < 1 || period_ms > 86400 * 1000
        || burst < 1 || burst > TOLL_LIMIT_COUNT_MAX)
    {
        return -1;
    }

    /* at most 8.64e13 ns: the product below cannot overflow */
    bc->interval_ns = period_ms * TOLL_NS_PER_MS / count;

    if (bc->interval_ns < 1
        || burst > INT64_MAX / 4 / bc->interval_ns)
    {
        /* faster than 1e9 r/s, or a bucket that takes centuries to fill */
        return -1;
    }

    bc->burst = burst;
    bc->tolerance_ns = burst * bc->interval_ns;

    return 0;
}


int
toll_window_conf(toll_window_conf_t *wc, int64_t count, int64_t period_ms)
{
    if (count < 1 || count > TOLL_LIMIT_COUNT_MAX
        || period_ms < TOLL_WINDOW_SLOTS
        || period_ms % TOLL_WINDOW_SLOTS != 0)
    {
        return -1;
    }

    wc->count = count;
    wc->slot_ms = period_ms / TOLL_WINDOW_SLOTS;

    return 0;
}


void
toll_bucket_check(const toll_bucket_conf_t *bc, toll_bucket_t *b,
    int64_t now_ms, int commit, toll_limit_result_t *res)
{
    int64_t  now, tat, next;

    now = now_ms * TOLL_NS_PER_MS;
    tat = b->tat_ns > now ? b->tat_ns : now;
    next = tat + bc->interval_ns;

    if (next - now <= bc->tolerance_ns) {
        res->admitted = 1;
        res->remaining = (bc->tolerance_ns - (next - now))
                         / bc->interval_ns;
        res->reset_ms = (next - now + TOLL_NS_PER_MS - 1) / TOLL_NS_PER_MS;
        res->retry_ms = 0;

        if (commit) {
            toll_bucket_commit(bc, b, now_ms);
        }

        return;
    }

    /* admitted again once next - t <= tolerance, that is at t below */

    res->admitted = 0;
    res->remaining = 0;
    res->reset_ms = (tat - now + TOLL_NS_PER_MS - 1) / TOLL_NS_PER_MS;
    res->retry_ms = (next - bc->tolerance_ns - now + TOLL_NS_PER_MS - 1)
                    / TOLL_NS_PER_MS;
}


void
toll_window_advance(const toll_window_conf_t *wc, toll_window_t *w,
    int64_t now_ms)
{
    int64_t  slot, s;
    size_t   i;

    slot = now_ms / wc->slot_ms;

    if (slot <= w->head) {
        /* the clock stepped back, or the same slot: keep the counts */
        return;
    }

    if (slot - w->head >= TOLL_WINDOW_RING) {
        memset(w->global, 0, sizeof(w->global));
        memset(w->pending, 0, sizeof(w->pending));
        memset(w->sent, 0, sizeof(w->sent));

    } else {
        for (s = w->head + 1; s <= slot; s++) {
            i = (size_t) (s % TOLL_WINDOW_RING);
            w->global[i] = 0;
            w->pending[i] = 0;
            w->sent[i] = 0;
        }
    }

    w->head = slot;
}


int64_t
toll_window_used(const toll_window_t *w)
{
    int64_t  used;
    size_t   i;

    used = 0;

    for (i = 0; i < TOLL_WINDOW_RING; i++) {
        used += (int64_t) w->global[i] + w->pending[i] + w->sent[i];
    }

    return used;
}


void
toll_window_check(const toll_window_conf_t *wc, toll_window_t *w,
    int64_t now_ms, int commit, toll_limit_result_t *res)
{
    int64_t   used, left, s, oldest;
    size_t    i;
    uint32_t  n;

    toll_window_advance(wc, w, now_ms);

    /* one pass: the sum, and the oldest slot that counts something */

    used = 0;
    oldest = -1;

    for (s = w->head - TOLL_WINDOW_SLOTS; s <= w->head; s++) {
        i = (size_t) (s % TOLL_WINDOW_RING);
        n = w->global[i] + w->pending[i] + w->sent[i];

        if (n && oldest == -1) {
            oldest = s;
        }

        used += n;
    }

    res->admitted = (used + 1 <= wc->count);
    res->retry_ms = 0;

    /*
     * A slot leaves the counted range when the ring moves past it: slot s
     * is counted up to the end of slot s + TOLL_WINDOW_SLOTS.  reset_ms is
     * when the oldest counted request leaves (this one included, whether
     * committed yet or not).
     */

    if (res->admitted) {
        res->remaining = wc->count - used - 1;

        if (oldest == -1) {
            oldest = w->head;
        }

        res->reset_ms = (oldest + TOLL_WINDOW_SLOTS + 1) * wc->slot_ms
                        - now_ms;

        if (commit) {
            toll_window_commit(w);
        }

        return;
    }

    res->remaining = 0;
    res->reset_ms = (oldest + TOLL_WINDOW_SLOTS + 1) * wc->slot_ms - now_ms;

    /* a refused request may retry once enough of the oldest slots have
       left to make room for one */

    left = used;

    for (s = oldest; s <= w->head; s++) {
        i = (size_t) (s % TOLL_WINDOW_RING);
        left -= w->global[i] + w->pending[i] + w->sent[i];

        if (left + 1 <= wc->count) {
            res->retry_ms = (s + TOLL_WINDOW_SLOTS + 1) * wc->slot_ms - now_ms;
            return;
        }
    }

    /* counts of a future slot (a clock step): a whole window */
    res->retry_ms = wc->slot_ms * TOLL_WINDOW_RING;
}


void
toll_window_commit(toll_window_t *w)
{
    w->pending[w->head % TOLL_WINDOW_RING]++;
}


void
toll_bucket_commit(const toll_bucket_conf_t *bc, toll_bucket_t *b,
    int64_t now_ms)
{
    int64_t  now;

    now = now_ms * TOLL_NS_PER_MS;

    b->tat_ns = (b->tat_ns > now ? b->tat_ns : now) + bc->interval_ns;
}


void
toll_clock_sample(toll_clock_t *c, int64_t offset_ms)
{
    int64_t  us;

    us = offset_ms * 1000;

    if (!c->known || us < c->offset_us
        || us - c->offset_us > TOLL_CLOCK_STEP_US)
    {
        c->offset_us = us;
        c->known = 1;
        return;
    }

    c->offset_us += (us - c->offset_us) / TOLL_CLOCK_RISE;
}
