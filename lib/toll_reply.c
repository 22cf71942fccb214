/*
 * toll: the module's readers of Redis's replies.  See toll_reply.h.
 */

#include "toll_reply.h"
#include "toll_usage.h"

#include <stddef.h>
#include <string.h>


static int toll_reply_noscript(const redisReply *reply);
static int toll_reply_int64(const redisReply *reply, int64_t *v);
static int toll_reply_limit_state(const redisReply *reply,
    const toll_reply_limit_layout_t *layout, toll_reply_limit_t *out);
static int toll_reply_window(const redisReply *a,
    toll_reply_limit_window_t *w);


/*
 * The flush script answers 1 (applied now), 0 (applied before: the id
 * is known), {2, field} (a sum that would overflow) or {1, field} (a
 * count in the hash that is not an integer).
 */

void
toll_reply_meter(const redisReply *reply, toll_reply_meter_t *out)
{
    out->why = NULL;
    out->why_len = 0;

    if (reply == NULL) {
        out->rc = TOLL_REPLY_METER_NONE;

    } else if (reply->type == REDIS_REPLY_INTEGER) {
        out->rc = TOLL_REPLY_METER_APPLIED;

    } else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
               && reply->element[0]->type == REDIS_REPLY_INTEGER
               && reply->element[1]->type == REDIS_REPLY_STRING)
    {
        out->rc = (reply->element[0]->integer == 2)
                  ? TOLL_REPLY_METER_OVERFLOW : TOLL_REPLY_METER_NOT_INTEGER;
        out->why = reply->element[1]->str;
        out->why_len = reply->element[1]->len;

    } else if (reply->type == REDIS_REPLY_ERROR) {
        if (toll_reply_noscript(reply)) {
            out->rc = TOLL_REPLY_METER_NOSCRIPT;

        } else {
            out->rc = TOLL_REPLY_METER_ERROR;
            out->why = reply->str;
            out->why_len = reply->len;
        }

    } else {
        out->rc = TOLL_REPLY_METER_UNEXPECTED;
    }
}


/*
 * The lease script answers {grant, rest}: what it leased to this node and
 * what is left for every node after it.
 */

void
toll_reply_lease(const redisReply *reply, int64_t free_calls,
    toll_reply_lease_t *out)
{
    long long  grant, rest;

    out->grant = 0;
    out->rest = 0;

    if (reply != NULL && reply->type == REDIS_REPLY_ARRAY
        && reply->elements == 2
        && reply->element[0]->type == REDIS_REPLY_INTEGER
        && reply->element[1]->type == REDIS_REPLY_INTEGER)
    {
        grant = reply->element[0]->integer;
        rest = reply->element[1]->integer;

        /*
         * The script never leases more than free_calls in all; an answer
         * that does (not the script's) would add free calls the buyer
         * has not got, or overflow the node's sums.
         */

        if (grant < 0 || rest < 0 || grant > free_calls
            || rest > free_calls - grant)
        {
            out->rc = TOLL_REPLY_LEASE_UNEXPECTED;
            return;
        }

        out->rc = TOLL_REPLY_LEASE_GRANTED;
        out->grant = grant;
        out->rest = rest;

    } else if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
        out->rc = TOLL_REPLY_LEASE_ERROR;

    } else {
        out->rc = TOLL_REPLY_LEASE_UNEXPECTED;
    }
}


void
toll_reply_limit(const redisReply *reply,
    const toll_reply_limit_layout_t *layout, toll_reply_limit_t *out)
{
    memset(out, 0, offsetof(toll_reply_limit_t, window));
    out->rc = TOLL_REPLY_LIMIT_UNEXPECTED;

    if (reply == NULL) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        out->rc = toll_reply_noscript(reply) ? TOLL_REPLY_LIMIT_NOSCRIPT
                                             : TOLL_REPLY_LIMIT_ERROR;
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY) {
        return;
    }

    out->array = 1;

    if (reply->elements >= 2
        && reply->element[1]->type == REDIS_REPLY_INTEGER)
    {
        /* the caller indexes its limits by it */
        if (reply->element[1]->integer < 0
            || reply->element[1]->integer > TOLL_REPLY_LIMIT_VERDICT_MAX)
        {
            return;
        }

        out->verdict = reply->element[1]->integer;
        out->has_verdict = 1;
    }

    if (layout == NULL) {
        if (reply->elements >= 2) {
            out->rc = TOLL_REPLY_LIMIT_OK;
        }

        return;
    }

    if (toll_reply_limit_state(reply, layout, out)) {
        out->rc = TOLL_REPLY_LIMIT_OK;
    }
}


/*
 * The node's state after the verdict, in the layout the caller sent: the
 * clock offset, the bucket's tat, the windows, the count in flight.
 * 0: not what the script answers.
 */

static int
toll_reply_limit_state(const redisReply *reply,
    const toll_reply_limit_layout_t *layout, toll_reply_limit_t *out)
{
    size_t               e;
    unsigned             u;
    const redisReply    *el;

    if (reply->elements < 3
        || reply->element[0]->type != REDIS_REPLY_INTEGER
        || reply->element[1]->type != REDIS_REPLY_INTEGER
        || reply->element[2]->type != REDIS_REPLY_INTEGER)
    {
        return 0;
    }

    /* the caller takes it, and the tat, to us and ns */

    out->offset_ms = reply->element[2]->integer;

    if (out->offset_ms < -TOLL_REPLY_LIMIT_OFFSET_MAX_MS
        || out->offset_ms > TOLL_REPLY_LIMIT_OFFSET_MAX_MS)
    {
        return 0;
    }

    e = 3;

    if (layout->bucket) {
        if (e >= reply->elements
            || reply->element[e]->type != REDIS_REPLY_INTEGER)
        {
            return 0;
        }

        out->tat_us = reply->element[e++]->integer;

        if (out->tat_us < 0 || out->tat_us > TOLL_REPLY_LIMIT_TIME_MAX) {
            return 0;
        }
    }

    for (u = 0; u < TOLL_UNIT_N; u++) {
        if (!(layout->windows & (1u << u))) {
            continue;
        }

        if (e >= reply->elements
            || !toll_reply_window(reply->element[e++], &out->window[u]))
        {
            return 0;
        }
    }

    if (layout->concurrency && e < reply->elements) {
        el = reply->element[e];

        /* added to this node's count: never below 0, nor past a limit */
        if (el->type == REDIS_REPLY_INTEGER) {
            out->inflight = (el->integer < 0) ? 0 : el->integer;
            out->inflight = (out->inflight > TOLL_LIMIT_COUNT_MAX)
                            ? TOLL_LIMIT_COUNT_MAX : out->inflight;
            out->has_inflight = 1;
        }
    }

    return 1;
}


static int
toll_reply_window(const redisReply *a, toll_reply_limit_window_t *w)
{
    size_t      j;
    long long   n;

    if (a->type != REDIS_REPLY_ARRAY || a->elements != TOLL_WINDOW_RING + 1
        || a->element[0]->type != REDIS_REPLY_INTEGER)
    {
        return 0;
    }

    /* slots are counted back from it */
    w->head = a->element[0]->integer;

    if (w->head < 0 || w->head > TOLL_REPLY_LIMIT_TIME_MAX) {
        return 0;
    }

    for (j = 0; j < TOLL_WINDOW_RING; j++) {
        w->count[j] = 0;
        w->known[j] = (a->element[j + 1]->type == REDIS_REPLY_INTEGER);

        if (!w->known[j]) {
            continue;
        }

        /* what the node adds to a count stays within 32 bits */
        n = a->element[j + 1]->integer;
        n = (n < 0) ? 0 : n;
        n = (n > TOLL_LIMIT_COUNT_MAX) ? TOLL_LIMIT_COUNT_MAX : n;
        w->count[j] = (uint32_t) n;
    }

    return 1;
}


/* a restarted or flushed Redis: the script in full next time */

static int
toll_reply_noscript(const redisReply *reply)
{
    return reply->len >= 8 && strncmp(reply->str, "NOSCRIPT", 8) == 0;
}


void
toll_reply_prepaid(const redisReply *reply, int64_t max,
    toll_reply_prepaid_t *out)
{
    int64_t  grant, available, hold;

    out->grant = 0;
    out->available = 0;
    out->hold = 0;

    if (reply != NULL && reply->type == REDIS_REPLY_ARRAY
        && reply->elements == 3
        && toll_reply_int64(reply->element[0], &grant) == 0
        && toll_reply_int64(reply->element[1], &available) == 0
        && toll_reply_int64(reply->element[2], &hold) == 0)
    {
        /* more than was asked for is not the script's answer */

        if (grant < 0 || grant > max || hold < 0) {
            out->rc = TOLL_REPLY_LEASE_UNEXPECTED;
            return;
        }

        out->rc = TOLL_REPLY_LEASE_GRANTED;
        out->grant = grant;
        out->available = available;
        out->hold = hold;

    } else if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
        out->rc = TOLL_REPLY_LEASE_ERROR;

    } else {
        out->rc = TOLL_REPLY_LEASE_UNEXPECTED;
    }
}


/* an int64 a script answered as a decimal string (or, small, an integer) */

static int
toll_reply_int64(const redisReply *reply, int64_t *v)
{
    if (reply->type == REDIS_REPLY_INTEGER) {
        *v = reply->integer;
        return 0;
    }

    if (reply->type != REDIS_REPLY_STRING) {
        return -1;
    }

    return toll_usage_count_parse(reply->str, reply->len, v);
}
