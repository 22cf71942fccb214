/*
 * toll: the module's readers of Redis's replies to its scripts, decoded
 * into what the callers decide by.  Pure, so that the decoder nginx runs
 * is the one the fuzzer runs (t/fuzz/fuzz_reply.c); the callers keep the
 * locking and the state.
 *
 * Plain C11 over hiredis's redisReply, no allocation, no I/O: safe inside
 * an nginx worker.  Strings in a decoded reply point into the reply and
 * live as long as it does.
 */

#ifndef _TOLL_REPLY_H_INCLUDED_
#define _TOLL_REPLY_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "toll_limit.h"


/* the meter's flush script (src/ngx_http_toll_meter.c) */

typedef enum {
    TOLL_REPLY_METER_NONE = 0,          /* no answer (reply NULL) */
    TOLL_REPLY_METER_APPLIED,           /* 1 now, 0 before: an integer */
    TOLL_REPLY_METER_OVERFLOW,          /* {2, field}: a sum too large */
    TOLL_REPLY_METER_NOT_INTEGER,       /* {n, field}, n not 2 */
    TOLL_REPLY_METER_NOSCRIPT,          /* the script is not cached */
    TOLL_REPLY_METER_ERROR,             /* any other error: why */
    TOLL_REPLY_METER_UNEXPECTED         /* anything else */
} toll_reply_meter_e;


typedef struct {
    toll_reply_meter_e    rc;
    const char           *why;          /* the field or the error */
    size_t                why_len;      /* NULL, 0 for the others */
} toll_reply_meter_t;


void toll_reply_meter(const redisReply *reply, toll_reply_meter_t *out);


/* the free tier's lease script (src/ngx_http_toll_quota.c) */

typedef enum {
    TOLL_REPLY_LEASE_GRANTED = 0,       /* {grant, rest} */
    TOLL_REPLY_LEASE_ERROR,             /* an error reply */
    TOLL_REPLY_LEASE_UNEXPECTED         /* no answer, or anything else */
} toll_reply_lease_e;


typedef struct {
    toll_reply_lease_e    rc;
    int64_t               grant;        /* free calls leased to the node */
    int64_t               rest;         /* free calls left after it */
} toll_reply_lease_t;


/*
 * free_calls: the service's, as sent with the script.  GRANTED only for
 * an answer {grant, rest} of two integers with 0 <= grant, 0 <= rest and
 * grant + rest <= free_calls, as the script answers; anything else is
 * UNEXPECTED (the lease failed).  grant and rest are 0 unless GRANTED.
 */
void toll_reply_lease(const redisReply *reply, int64_t free_calls,
    toll_reply_lease_t *out);


/* a node's lease of a prepaid balance (src/ngx_http_toll_prepaid.c) */

typedef struct {
    toll_reply_lease_e    rc;
    int64_t               grant;        /* micro-units leased to the node */
    int64_t               available;    /* left in Redis after it; may be
                                           < 0 (docs/metering.md) */
    int64_t               hold;         /* the node's hold after it */
} toll_reply_prepaid_t;


/*
 * GRANTED only for {grant, available, hold}, three int64 decimal strings
 * with 0 <= grant <= max and 0 <= hold, as lua/prepaid.lua answers;
 * max: the lease asked for.  Anything else is UNEXPECTED or ERROR, and
 * the numbers 0.
 */
void toll_reply_prepaid(const redisReply *reply, int64_t max,
    toll_reply_prepaid_t *out);


/* the rate limits' sync script (src/ngx_http_toll_limit.c) */

/* Redis's measure of a node's clock offset: 69 years either way, in ms */
#define TOLL_REPLY_LIMIT_OFFSET_MAX_MS  (INT64_C(1) << 41)
/* a bucket's tat (us) and a window's head slot: below 2^52 */
#define TOLL_REPLY_LIMIT_TIME_MAX       (INT64_C(1) << 52)
/* the limit a strict call says was violated, 1-based */
#define TOLL_REPLY_LIMIT_VERDICT_MAX    INT32_MAX


/* what the node sent the script, in the order of its answer */
typedef struct {
    unsigned              bucket:1;
    unsigned              concurrency:1;
    unsigned              windows;      /* bit u: a window of unit u */
} toll_reply_limit_layout_t;


typedef enum {
    TOLL_REPLY_LIMIT_OK = 0,
    TOLL_REPLY_LIMIT_NOSCRIPT,          /* the script is not cached */
    TOLL_REPLY_LIMIT_ERROR,             /* any other error */
    TOLL_REPLY_LIMIT_UNEXPECTED         /* no answer, or not the layout */
} toll_reply_limit_e;


typedef struct {
    int64_t               head;         /* slot of count[TOLL_WINDOW_SLOTS] */
    uint32_t              count[TOLL_WINDOW_RING];  /* 0..COUNT_MAX */
    unsigned char         known[TOLL_WINDOW_RING];  /* an integer */
} toll_reply_limit_window_t;


typedef struct {
    toll_reply_limit_e    rc;
    unsigned              array:1;      /* the script ran */
    unsigned              has_verdict:1;
    unsigned              has_inflight:1;
    int64_t               verdict;      /* 0 none, else 1-based index */
    int64_t               offset_ms;    /* Redis's clock minus the node's */
    int64_t               tat_us;       /* the bucket's, 0..TIME_MAX */
    int64_t               inflight;     /* other nodes', 0..COUNT_MAX */
    toll_reply_limit_window_t  window[TOLL_UNIT_N];
} toll_reply_limit_t;


/*
 * layout NULL (the node is gone): OK for an array of two elements or
 * more, its verdict read if it has one.  Else OK only for the whole
 * answer {admitted, verdict, offset, then the bucket's tat, each window's
 * {head, counts}, the other nodes' in-flight count (may be left out)},
 * the verdict (in both cases), offset, tat and heads within their bounds
 * above (else UNEXPECTED): a slot that is not an integer is not known;
 * counts and the in-flight count are clamped into 0..COUNT_MAX.
 */
void toll_reply_limit(const redisReply *reply,
    const toll_reply_limit_layout_t *layout, toll_reply_limit_t *out);


#endif /* _TOLL_REPLY_H_INCLUDED_ */
