/*
 * Fuzz the module's readers of Redis's replies to its scripts
 * (lib/toll_reply.c), which nginx runs on the meter's flush reply
 * (src/ngx_http_toll_meter.c), the free tier's lease reply
 * (src/ngx_http_toll_quota.c) and the rate limits' sync and strict
 * replies (src/ngx_http_toll_limit.c).
 *
 * Input: the first byte picks the reader (then, for the lease, an integer
 * is the service's free_calls; for the limits, a byte is the layout of
 * what the node sent); the rest builds a reply tree
 * as hiredis would give it: integers, strings, errors, statuses, nils
 * and arrays of any of them, nested.  Each string lands in a buffer of
 * its exact size (plus hiredis's NUL), so a read past one shows.
 * Checked beyond "no crash": a decoded reply says what the reply is, and
 * what it points to lies inside the reply.
 */

#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "toll_reply.h"


#define FUZZ_DEPTH_MAX     4
#define FUZZ_ELEMENTS_MAX  64


typedef struct {
    const uint8_t        *data;
    size_t                size;
} fuzz_input_t;


static uint8_t
fuzz_byte(fuzz_input_t *in)
{
    uint8_t  b;

    if (in->size == 0) {
        return 0;
    }

    b = in->data[0];
    in->data++;
    in->size--;

    return b;
}


/* mostly small numbers, which the scripts answer; now and then any */

static long long
fuzz_integer(fuzz_input_t *in)
{
    int       i;
    uint8_t   b;
    uint64_t  u;

    b = fuzz_byte(in);

    if (b < 0xf0) {
        return (long long) b - 16;
    }

    u = 0;

    for (i = 0; i < 8; i++) {
        u = (u << 8) | fuzz_byte(in);
    }

    return (long long) u;
}


static redisReply *
fuzz_reply(fuzz_input_t *in, unsigned depth)
{
    size_t       i, n;
    uint8_t      t;
    redisReply  *r;

    r = calloc(1, sizeof(redisReply));
    assert(r != NULL);

    switch (fuzz_byte(in) % 6) {

    case 0:
        r->type = REDIS_REPLY_INTEGER;
        r->integer = fuzz_integer(in);
        break;

    case 1:
    case 2:
    case 3:
        t = fuzz_byte(in) % 3;
        r->type = (t == 0) ? REDIS_REPLY_STRING
                  : (t == 1) ? REDIS_REPLY_ERROR : REDIS_REPLY_STATUS;
        n = fuzz_byte(in);
        n = (n > in->size) ? in->size : n;

        /* NUL-terminated, as hiredis gives a string */
        r->str = malloc(n + 1);
        assert(r->str != NULL);
        memcpy(r->str, in->data, n);
        r->str[n] = '\0';
        r->len = n;
        in->data += n;
        in->size -= n;
        break;

    case 4:
        r->type = REDIS_REPLY_NIL;
        break;

    default:
        r->type = REDIS_REPLY_ARRAY;

        if (depth >= FUZZ_DEPTH_MAX) {
            break;
        }

        n = fuzz_byte(in) % FUZZ_ELEMENTS_MAX;

        if (n == 0) {
            break;
        }

        r->element = calloc(n, sizeof(redisReply *));
        assert(r->element != NULL);

        for (i = 0; i < n; i++) {
            r->element[i] = fuzz_reply(in, depth + 1);
        }

        r->elements = n;
        break;
    }

    return r;
}


static void
fuzz_free(redisReply *r)
{
    size_t  i;

    for (i = 0; i < r->elements; i++) {
        fuzz_free(r->element[i]);
    }

    free(r->element);
    free(r->str);
    free(r);
}


/* a string decoded from the reply lies inside one of its strings */

static int
fuzz_inside(const redisReply *r, const char *p, size_t len)
{
    size_t  i;

    if (r->str != NULL && p >= r->str && p + len <= r->str + r->len) {
        return 1;
    }

    for (i = 0; i < r->elements; i++) {
        if (fuzz_inside(r->element[i], p, len)) {
            return 1;
        }
    }

    return 0;
}


static void
fuzz_meter(const redisReply *r)
{
    toll_reply_meter_t  m;

    toll_reply_meter(r, &m);

    switch (m.rc) {

    case TOLL_REPLY_METER_NONE:
        assert(r == NULL);
        assert(m.why == NULL && m.why_len == 0);
        break;

    case TOLL_REPLY_METER_APPLIED:
        assert(r->type == REDIS_REPLY_INTEGER);
        assert(m.why == NULL && m.why_len == 0);
        break;

    case TOLL_REPLY_METER_OVERFLOW:
    case TOLL_REPLY_METER_NOT_INTEGER:
        assert(r->type == REDIS_REPLY_ARRAY && r->elements == 2);
        assert((r->element[0]->integer == 2)
               == (m.rc == TOLL_REPLY_METER_OVERFLOW));
        assert(m.why == r->element[1]->str
               && m.why_len == r->element[1]->len);
        assert(fuzz_inside(r, m.why, m.why_len));
        break;

    case TOLL_REPLY_METER_NOSCRIPT:
        assert(r->type == REDIS_REPLY_ERROR && r->len >= 8
               && memcmp(r->str, "NOSCRIPT", 8) == 0);
        assert(m.why == NULL && m.why_len == 0);
        break;

    case TOLL_REPLY_METER_ERROR:
        assert(r->type == REDIS_REPLY_ERROR);
        assert(m.why == r->str && m.why_len == r->len);
        break;

    case TOLL_REPLY_METER_UNEXPECTED:
        assert(r->type != REDIS_REPLY_INTEGER && r->type != REDIS_REPLY_ERROR);
        assert(m.why == NULL && m.why_len == 0);
        break;

    default:
        abort();
    }
}


/*
 * The quota adds grant to the node's lease and keeps rest as what is
 * left anywhere: neither may be negative, and no node may lease more
 * than free_calls in all (or the sums overflow).
 */

static void
fuzz_lease(const redisReply *r, int64_t free_calls)
{
    toll_reply_lease_t  l;

    toll_reply_lease(r, free_calls, &l);

    switch (l.rc) {

    case TOLL_REPLY_LEASE_GRANTED:
        assert(r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2);
        assert(l.grant == r->element[0]->integer
               && l.rest == r->element[1]->integer);
        assert(l.grant >= 0 && l.rest >= 0);
        assert(l.grant <= free_calls && l.rest <= free_calls - l.grant);
        break;

    case TOLL_REPLY_LEASE_ERROR:
        assert(r != NULL && r->type == REDIS_REPLY_ERROR);
        assert(l.grant == 0 && l.rest == 0);
        break;

    case TOLL_REPLY_LEASE_UNEXPECTED:
        assert(r == NULL || r->type != REDIS_REPLY_ERROR);
        assert(l.grant == 0 && l.rest == 0);
        break;

    default:
        abort();
    }
}


/*
 * The limits multiply Redis's offset and a tat by 1000, count slots back
 * from a window's head, add counts into 32 bits, add the other nodes'
 * in-flight count to this node's, and index their limits by the verdict:
 * each must be within its bound, and the answer the node's layout.
 */

static void
fuzz_limit(const redisReply *r, const toll_reply_limit_layout_t *layout)
{
    size_t               e, j;
    unsigned             u;
    const redisReply    *a;
    toll_reply_limit_t   l;

    toll_reply_limit(r, layout, &l);

    switch (l.rc) {

    case TOLL_REPLY_LIMIT_OK:
        assert(r != NULL && r->type == REDIS_REPLY_ARRAY && l.array);
        assert(r->elements >= 2);

        if (l.has_verdict) {
            assert(r->element[1]->type == REDIS_REPLY_INTEGER
                   && l.verdict == r->element[1]->integer);
            assert(l.verdict >= 0
                   && l.verdict <= TOLL_REPLY_LIMIT_VERDICT_MAX);
        }

        if (layout == NULL) {
            assert(!l.has_inflight);
            break;
        }

        assert(l.has_verdict && r->elements >= 3);
        assert(l.offset_ms == r->element[2]->integer);
        assert(l.offset_ms >= -TOLL_REPLY_LIMIT_OFFSET_MAX_MS
               && l.offset_ms <= TOLL_REPLY_LIMIT_OFFSET_MAX_MS);

        e = 3;

        if (layout->bucket) {
            assert(e < r->elements && l.tat_us == r->element[e]->integer);
            assert(l.tat_us >= 0 && l.tat_us <= TOLL_REPLY_LIMIT_TIME_MAX);
            e++;
        }

        for (u = 0; u < TOLL_UNIT_N; u++) {
            if (!(layout->windows & (1u << u))) {
                continue;
            }

            assert(e < r->elements);
            a = r->element[e++];
            assert(a->type == REDIS_REPLY_ARRAY
                   && a->elements == TOLL_WINDOW_RING + 1);
            assert(l.window[u].head == a->element[0]->integer);
            assert(l.window[u].head >= 0
                   && l.window[u].head <= TOLL_REPLY_LIMIT_TIME_MAX);

            for (j = 0; j < TOLL_WINDOW_RING; j++) {
                assert(l.window[u].known[j]
                       == (a->element[j + 1]->type == REDIS_REPLY_INTEGER));
                assert(l.window[u].count[j] <= TOLL_LIMIT_COUNT_MAX);
            }
        }

        if (l.has_inflight) {
            assert(layout->concurrency && e < r->elements);
            assert(l.inflight >= 0 && l.inflight <= TOLL_LIMIT_COUNT_MAX);
        }

        break;

    case TOLL_REPLY_LIMIT_NOSCRIPT:
        assert(r != NULL && r->type == REDIS_REPLY_ERROR && r->len >= 8
               && memcmp(r->str, "NOSCRIPT", 8) == 0);
        assert(!l.array);
        break;

    case TOLL_REPLY_LIMIT_ERROR:
        assert(r != NULL && r->type == REDIS_REPLY_ERROR && !l.array);
        break;

    case TOLL_REPLY_LIMIT_UNEXPECTED:
        assert(r == NULL || r->type != REDIS_REPLY_ERROR);
        assert(l.array == (r != NULL && r->type == REDIS_REPLY_ARRAY));
        break;

    default:
        abort();
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int64_t                     free_calls;
    uint8_t                     which, b;
    redisReply                 *r;
    fuzz_input_t                in;
    toll_reply_limit_layout_t   layout;

    in.data = data;
    in.size = size;

    which = fuzz_byte(&in);

    /* the lease's free_calls, as the configuration allows: 0 or more */
    free_calls = 0;

    if (which % 3 == 1) {
        free_calls = fuzz_integer(&in);
        free_calls = (free_calls < 0) ? -(free_calls + 1) : free_calls;
    }

    /*
     * the limits' layout: bit 0 a bucket, 1 a concurrency limit, 2-5
     * windows; bit 6: the node is gone
     */
    b = 0;

    if (which % 3 == 2) {
        b = fuzz_byte(&in);
    }

    layout.bucket = b & 1;
    layout.concurrency = (b >> 1) & 1;
    layout.windows = (b >> 2) & ((1u << TOLL_UNIT_N) - 1);

    /* an empty rest: no answer at all, as when the connection is lost */
    r = (in.size == 0) ? NULL : fuzz_reply(&in, 0);

    switch (which % 3) {

    case 1:
        fuzz_lease(r, free_calls);
        break;

    case 2:
        fuzz_limit(r, (b & 0x40) ? NULL : &layout);
        break;

    default:
        fuzz_meter(r);
        break;
    }

    if (r != NULL) {
        fuzz_free(r);
    }

    return 0;
}
