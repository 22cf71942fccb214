/*
 * toll-settle: the drain's connection to Redis (lib/toll_store.c's
 * blocking client, on one Redis, a Cluster or a Sentinel's primary: one
 * process, a few round trips per usage hash, each bounded by
 * redis_timeout), the binding of one Redis to one ledger, and what a
 * failed command does to the pass.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include "toll_clock.h"
#include "toll_ledger.h"
#include "toll_log.h"
#include "toll_names.h"
#include "toll_settle_drain_int.h"




int
toll_settle_connect(toll_settle_drain_t *d)
{
    const toll_settle_conf_t  *conf = d->conf;

    char             err[512];
    struct timeval   tv;
    const char      *password;

    tv.tv_sec = conf->redis_timeout_ms / 1000;
    tv.tv_usec = (conf->redis_timeout_ms % 1000) * 1000;

    password = conf->redis_password ? conf->redis_password
                                    : getenv("TOLL_REDIS_PASSWORD");

    /* one Redis, a Cluster's map or a Sentinel's primary, with AUTH and
     * SELECT (lib/toll_store.c) */
    d->redis = toll_store_connect(&conf->redis_spec, password,
                                  conf->redis_db, &tv, err, sizeof(err));

    if (d->redis == NULL) {
        if (!d->redis_down || conf->once) {
            toll_log("cannot connect to redis at %s: %s%s",
                     conf->redis_text, err,
                     conf->once ? "" : "; retrying every second");
        }

        d->redis_down = 1;
        return TOLL_SETTLE_DRAIN_AGAIN;
    }

    return 0;
}


/*
 * One meter, one ledger: two ledgers fed from one Redis would each hold a
 * part of the usage, and neither would be right.
 */
int
toll_settle_bind(toll_settle_drain_t *d)
{
    redisReply  *r;
    const char  *id, *argv[4];
    size_t       argvlen[4];

    id = toll_ledger_id(d->ledger);

    argv[0] = "SET";
    argvlen[0] = 3;
    argv[1] = TOLL_NAME_SETTLE_LEDGER;
    argvlen[1] = sizeof(TOLL_NAME_SETTLE_LEDGER) - 1;
    argv[2] = id;
    argvlen[2] = strlen(id);
    argv[3] = "NX";
    argvlen[3] = 2;

    r = toll_settle_cmd(d, 4, argv, argvlen);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        return toll_settle_redis_failed(d, "SET " TOLL_NAME_SETTLE_LEDGER, r);
    }

    freeReplyObject(r);

    argv[0] = "GET";

    r = toll_settle_cmd(d, 2, argv, argvlen);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        return toll_settle_redis_failed(d, "GET " TOLL_NAME_SETTLE_LEDGER, r);
    }

    if (r->type != REDIS_REPLY_STRING || r->len != strlen(id)
        || memcmp(r->str, id, r->len) != 0)
    {
        toll_log("redis at %s is drained into the ledger %.*s, not "
                        "into %s (\"%s\"): use that ledger, or delete the "
                        "key " TOLL_NAME_SETTLE_LEDGER " to start a new one",
                        d->conf->redis_text,
                        (r->type == REDIS_REPLY_STRING) ? (int) r->len : 0,
                        (r->type == REDIS_REPLY_STRING) ? r->str : "",
                        id, d->conf->ledger);
        freeReplyObject(r);
        return EX_CONFIG;
    }

    freeReplyObject(r);
    d->bound = 1;

    return 0;
}


/*
 * What a pass leaves in toll:drain:open are claims it met in a state no
 * pass finishes (a claim key that is not a claim's name); what it set
 * aside in quarantine waits for the operator.
 */
int
toll_settle_count_open(toll_settle_drain_t *d)
{
    int  rc;

    rc = toll_settle_key_cmd(d, "SCARD", TOLL_NAME_DRAIN_OPEN, NULL, 0,
                             &d->open_claims);
    if (rc != 0) {
        return rc;
    }

    return toll_settle_key_cmd(d, "HLEN", TOLL_NAME_DRAIN_QUARANTINE, NULL,
                               0, &d->quarantine_claims);
}


/*
 * "<cmd> <key>", or "<cmd> <key> <arg>" when arg is not NULL, answered
 * by an integer, into *out unless out is NULL: the size of a set or hash
 * (SCARD, HLEN), a member added or removed (SADD, SREM).  0, or what
 * toll_settle_redis_failed() returns.
 */
int
toll_settle_key_cmd(toll_settle_drain_t *d, const char *cmd, const char *key,
    const char *arg, size_t arg_len, int64_t *out)
{
    int          argc;
    char         what[64];
    redisReply  *r;
    const char  *argv[3];
    size_t       argvlen[3];

    argv[0] = cmd;
    argvlen[0] = strlen(cmd);
    argv[1] = key;
    argvlen[1] = strlen(key);
    argv[2] = arg;
    argvlen[2] = arg_len;
    argc = (arg != NULL) ? 3 : 2;

    r = toll_settle_cmd(d, argc, argv, argvlen);
    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        snprintf(what, sizeof(what), "%s %s", cmd, key);
        return toll_settle_redis_failed(d, what, r);
    }

    if (out != NULL) {
        *out = r->integer;
    }

    freeReplyObject(r);

    return 0;
}


redisReply *
toll_settle_cmd(toll_settle_drain_t *d, int argc, const char **argv,
    const size_t *argvlen)
{
    if (d->redis == NULL) {
        return NULL;
    }

    return toll_store_command(d->redis, argc, argv, argvlen);
}


int
toll_settle_redis_failed(toll_settle_drain_t *d, const char *what,
    redisReply *reply)
{
    size_t  len;

    if (reply != NULL) {
        if (reply->type == REDIS_REPLY_ERROR) {
            /*
             * A store that refuses (out of memory, a replica, loading)
             * refuses every pass alike until it is mended: said once per
             * outage, and again only when the refusal changes.
             */

            len = strcspn(reply->str, " ");
            if (len >= sizeof(d->refused)) {
                len = sizeof(d->refused) - 1;
            }

            if (!d->redis_down || strlen(d->refused) != len
                || strncmp(d->refused, reply->str, len) != 0)
            {
                toll_log("redis refused %s: %.*s; retrying", what,
                                (int) reply->len, reply->str);
                memcpy(d->refused, reply->str, len);
                d->refused[len] = '\0';
            }

        } else {
            toll_log("redis answered %s with a reply of type %d",
                            what, reply->type);
        }

        freeReplyObject(reply);

    } else if (!d->redis_down) {
        toll_log("redis at %s failed during %s: %s; retrying",
                        d->conf->redis_text, what,
                        d->redis ? toll_store_error(d->redis)
                                 : "no connection");
    }

    d->redis_down = 1;

    /* a step cut short may have left a name out of the index: sweep */
    d->next_sweep_ms = 0;

    /* the connection may be mid-reply: a new one for the next pass */
    toll_settle_drain_close(d);

    return TOLL_SETTLE_DRAIN_AGAIN;
}


void
toll_settle_drain_close(toll_settle_drain_t *d)
{
    if (d->redis != NULL) {
        toll_store_free(d->redis);
        d->redis = NULL;
    }
}
