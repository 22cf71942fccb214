/*
 * toll: a Lua script run by a blocking client (toll-settle, tollctl):
 * EVALSHA, and EVAL when Redis does not have the script, each through
 * toll_store_command() so that it goes to the node of its keys' slot.
 */

#include <string.h>

#include <hiredis/hiredis.h>

#include "toll_script_run.h"


#define TOLL_SCRIPT_ARGS_MAX  32


redisReply *
toll_script_run(toll_store_t *st, toll_script_e id, int argc,
    const char **argv, const size_t *argvlen)
{
    int                   i;
    redisReply           *r;
    const char           *a[TOLL_SCRIPT_ARGS_MAX + 2];
    size_t                alen[TOLL_SCRIPT_ARGS_MAX + 2];
    const toll_script_t  *s;

    if (argc < 1 || argc > TOLL_SCRIPT_ARGS_MAX) {
        return NULL;
    }

    s = &toll_scripts[id];

    for (i = 0; i < argc; i++) {
        a[i + 2] = argv[i];
        alen[i + 2] = argvlen[i];
    }

    a[0] = "EVALSHA";
    alen[0] = 7;
    a[1] = s->sha1;
    alen[1] = 40;

    r = toll_store_command(st, argc + 2, a, alen);

    if (r == NULL || r->type != REDIS_REPLY_ERROR
        || strncmp(r->str, "NOSCRIPT", 8) != 0)
    {
        return r;
    }

    /* a restarted or flushed Redis forgot it: once more, in full */

    freeReplyObject(r);

    a[0] = "EVAL";
    alen[0] = 4;
    a[1] = s->text;
    alen[1] = s->len;

    return toll_store_command(st, argc + 2, a, alen);
}

