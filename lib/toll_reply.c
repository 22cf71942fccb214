/*
 * toll: the module's readers of Redis's replies.  See toll_reply.h.
 */

#include "toll_reply.h"

#include <string.h>


static int toll_reply_noscript(const redisReply *reply);


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


/* a restarted or flushed Redis: the script in full next time */

static int
toll_reply_noscript(const redisReply *reply)
{
    return reply->len >= 8 && strncmp(reply->str, "NOSCRIPT", 8) == 0;
}
