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


/* a restarted or flushed Redis: the script in full next time */

static int
toll_reply_noscript(const redisReply *reply)
{
    return reply->len >= 8 && strncmp(reply->str, "NOSCRIPT", 8) == 0;
}
