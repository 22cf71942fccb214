/*
 * toll: what callers make of a store that refuses (ngx_http_toll_redis.h,
 * ngx_http_toll_redis_refusal()): one log line per episode of refusals of
 * a path, not one per request, per buyer or per retry.
 */

#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_toll_redis_int.h"


/* refusals of a class this close together are one episode, logged once */
#define NGX_HTTP_TOLL_REDIS_EPISODE_MS       10000
/* ... and a long episode is said again this often */
#define NGX_HTTP_TOLL_REDIS_REMIND_MS        60000
#define NGX_HTTP_TOLL_REDIS_CLASS_LEN        16


/* the refusals of one path: the episode under way */
typedef struct {
    u_char                           class[NGX_HTTP_TOLL_REDIS_CLASS_LEN];
    size_t                           class_len;
    ngx_msec_t                       last;      /* the latest refusal */
    ngx_msec_t                       said;      /* when it was logged */
} ngx_http_toll_redis_episode_t;


static ngx_http_toll_redis_episode_t
    ngx_http_toll_redis_episodes[NGX_HTTP_TOLL_REDIS_PATH_N];


/*
 * A store that refuses (out of memory, a replica, loading) refuses every
 * command of a path alike: one line says so, not one per request, per
 * buyer or per retry.
 */

ngx_uint_t
ngx_http_toll_redis_refusal(ngx_http_toll_redis_path_e path,
    redisReply *reply)
{
    size_t                          len, n;
    char                           *str;
    ngx_msec_t                      now;
    ngx_http_toll_redis_episode_t  *ep;

    if (path >= NGX_HTTP_TOLL_REDIS_PATH_N) {
        return 1;
    }

    if (reply == NULL) {
        /* no answer at all: the connection's own line tells why */
        str = "(no answer)";
        n = sizeof("(no answer)") - 1;

    } else if (reply->type == REDIS_REPLY_ERROR) {
        str = reply->str;
        n = reply->len;

    } else {
        return 1;
    }

    for (len = 0; len < n && len < NGX_HTTP_TOLL_REDIS_CLASS_LEN
                  && str[len] != ' ';
         len++)
    {
        /* void */
    }

    ep = &ngx_http_toll_redis_episodes[path];
    now = ngx_current_msec;

    if (ep->class_len == len
        && ngx_strncmp(ep->class, str, len) == 0
        && now - ep->last < NGX_HTTP_TOLL_REDIS_EPISODE_MS)
    {
        ep->last = now;

        if (now - ep->said < NGX_HTTP_TOLL_REDIS_REMIND_MS) {
            return 0;
        }

        ep->said = now;

        return 1;
    }

    ngx_memcpy(ep->class, str, len);
    ep->class_len = len;
    ep->last = now;
    ep->said = now;

    return 1;
}
