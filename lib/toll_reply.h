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


#endif /* _TOLL_REPLY_H_INCLUDED_ */
