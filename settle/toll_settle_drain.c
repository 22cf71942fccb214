/*
 * toll-settle: the drain (docs/settle.md, "The drain protocol").
 *
 * Every command goes out with explicit lengths (toll_settle_cmd(),
 * toll_script_run()): buyer and service names are never part of a
 * format string.  A claim's content goes to the ledger in
 * toll_settle_post.c; the connection is toll_settle_redis.c's.
 *
 * The order of the steps is the whole design: the intent (SADD to
 * toll:drain:open) before the claim, the claim (RENAME, atomic with the
 * mirror) before the read, the ledger COMMIT before any delete.  A crash
 * between any two steps leaves a state the next pass finishes; the
 * environment variable TOLL_SETTLE_CRASH=<step>[:N] kills the process at
 * the Nth time it reaches a step, so that the tests can prove it.
 */

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "toll_clock.h"
#include "toll_ledger.h"
#include "toll_log.h"
#include "toll_names.h"
#include "toll_script_run.h"
#include "toll_settle_drain_int.h"
#include "toll_usage.h"


/* names fetched per SSCAN/SCAN call; a hint to Redis, not a bound */
#define TOLL_SETTLE_SCAN_COUNT     "1000"
/* SCAN calls of one sweep, so that a huge keyspace cannot hold a pass */
#define TOLL_SETTLE_SWEEP_CALLS_MAX  100000


static const char *toll_settle_steps[TOLL_SETTLE_STEP_N] = {
    "intent", "claim", "read", "commit", "delete", "alert",
    "moved"
};


static int toll_settle_drain_steps(toll_settle_drain_t *d, int *more);
static int toll_settle_recover(toll_settle_drain_t *d);
static int toll_settle_sweep(toll_settle_drain_t *d);
static int toll_settle_pick(toll_settle_drain_t *d, int *more);
static int toll_settle_claim(toll_settle_drain_t *d, const char *hash,
    size_t len);
static int toll_settle_claim_names(const char *hash, size_t len,
    toll_settle_claim_t *c, char *mirror);
static int toll_settle_claim_run(toll_settle_drain_t *d,
    const toll_settle_claim_t *c, const char *hash, size_t len,
    char *mirror);
static int toll_settle_claim_bad_mirror(toll_settle_drain_t *d,
    const toll_settle_claim_t *c, const char *hash, size_t len,
    const char *mirror);
static int toll_settle_claim_parse(const char *name, size_t len,
    toll_settle_claim_t *c);


/*
 * The pass and its account: a pass that ends with the index empty
 * claimed every name the index held when its pick began, so everything
 * the meter flushed before the pass started is in the ledger (or left
 * for the operator as a claim the meter did not write).
 */
int
toll_settle_drain_pass(toll_settle_drain_t *d, int *more)
{
    int      rc;
    int64_t  unix_ms, mono_ms;

    unix_ms = toll_clock_real_ms();
    mono_ms = toll_clock_mono_ms();
    d->ledger_failed = 0;

    rc = toll_settle_drain_steps(d, more);

    if (rc == 0) {
        d->passes++;

        if (!*more) {
            d->full_pass_unix_ms = unix_ms;
            d->full_pass_mono_ms = mono_ms;
        }

    } else if (rc == TOLL_SETTLE_DRAIN_AGAIN) {
        if (d->ledger_failed) {
            d->ledger_errors++;

        } else {
            d->redis_errors++;
        }
    }

    return rc;
}


static int
toll_settle_drain_steps(toll_settle_drain_t *d, int *more)
{
    int  rc;

    *more = 0;

    if (d->redis == NULL) {
        rc = toll_settle_connect(d);
        if (rc != 0) {
            return rc;
        }
    }

    if (!d->bound) {
        rc = toll_settle_bind(d);
        if (rc != 0) {
            return rc;
        }
    }

    rc = toll_settle_recover(d);
    if (rc != 0) {
        return rc;
    }

    if (toll_clock_mono_ms() >= d->next_sweep_ms) {
        rc = toll_settle_sweep(d);
        if (rc != 0) {
            return rc;
        }

        d->next_sweep_ms = toll_clock_mono_ms() + d->conf->sweep_ms;
    }

    rc = toll_settle_pick(d, more);

    if (rc == 0 && d->count_open) {
        rc = toll_settle_count_open(d);
    }

    if (rc == 0) {
        d->redis_down = 0;
        d->refused[0] = '\0';
    }

    return rc;
}


/* claims that a previous run (or this one, before a Redis error) left */
static int
toll_settle_recover(toll_settle_drain_t *d)
{
    int                  rc;
    char                 text[TOLL_NAME_TEXT_MAX];
    size_t               i;
    redisReply          *r, *content;
    const char          *argv[2];
    size_t               argvlen[2];
    toll_settle_claim_t  c;

    argv[0] = "SMEMBERS";
    argvlen[0] = 8;
    argv[1] = TOLL_NAME_DRAIN_OPEN;
    argvlen[1] = sizeof(TOLL_NAME_DRAIN_OPEN) - 1;

    r = toll_settle_cmd(d, 2, argv, argvlen);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        return toll_settle_redis_failed(d, "SMEMBERS " TOLL_NAME_DRAIN_OPEN,
                                        r);
    }

    rc = 0;

    for (i = 0; i < r->elements && rc == 0 && !*d->stop; i++) {
        if (toll_settle_claim_parse(r->element[i]->str,
                                    r->element[i]->len, &c)
            != 0)
        {
            toll_name_text(text, r->element[i]->str, r->element[i]->len);
            toll_log("ignored a malformed claim \"%s\" in "
                            TOLL_NAME_DRAIN_OPEN, text);
            continue;
        }

        argv[0] = "HGETALL";
        argvlen[0] = 7;
        argv[1] = c.name;
        argvlen[1] = strlen(c.name);

        content = toll_settle_cmd(d, 2, argv, argvlen);

        if (content != NULL && content->type == REDIS_REPLY_ERROR
            && strncmp(content->str, "WRONGTYPE", 9) == 0)
        {
            /* not a hash: no pass could post it */
            freeReplyObject(content);
            rc = toll_settle_quarantine(d, &c, "the claim is not a hash");
            continue;
        }

        if (content == NULL || content->type != REDIS_REPLY_ARRAY) {
            rc = toll_settle_redis_failed(d, "HGETALL of a claim", content);
            break;
        }

        toll_settle_crash_point(TOLL_SETTLE_STEP_READ);

        rc = toll_settle_finish(d, &c, content);
        freeReplyObject(content);
    }

    freeReplyObject(r);

    return rc;
}


int
toll_settle_reindex(toll_settle_drain_t *d, const toll_settle_claim_t *c)
{
    char    name[TOLL_NAME_LEN_MAX];
    size_t  len;

    len = toll_name_usage(name, c->buyer, strlen(c->buyer), c->day) - name;

    return toll_settle_key_cmd(d, "SADD", TOLL_NAME_USAGE_INDEX, name, len,
                               NULL);
}


int
toll_settle_delete(toll_settle_drain_t *d, const toll_settle_claim_t *c)
{
    redisReply  *r;
    const char  *argv[2];
    size_t       argvlen[2];

    argv[0] = "DEL";
    argvlen[0] = 3;
    argv[1] = c->name;
    argvlen[1] = strlen(c->name);

    r = toll_settle_cmd(d, 2, argv, argvlen);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        return toll_settle_redis_failed(d, "DEL of a claim", r);
    }

    freeReplyObject(r);

    toll_settle_crash_point(TOLL_SETTLE_STEP_DELETE);

    return toll_settle_key_cmd(d, "SREM", TOLL_NAME_DRAIN_OPEN, c->name,
                               strlen(c->name), NULL);
}


/*
 * Usage hashes whose SADD to the index was lost (a connection that broke
 * between the meter's script and its SADD) are found by name.
 */
static int
toll_settle_sweep(toll_settle_drain_t *d)
{
    size_t       i, calls, found;
    unsigned     node;
    redisReply  *r, *keys;
    const char  *argv[6];
    size_t       argvlen[6];
    char         cursor[32];
    toll_name_t  n;

    found = 0;

    /* each primary of a Cluster holds only its own slots' keys */
    for (node = 0; node < toll_store_nodes(d->redis); node++) {

        snprintf(cursor, sizeof(cursor), "0");

        for (calls = 0; calls < TOLL_SETTLE_SWEEP_CALLS_MAX; calls++) {
            argv[0] = "SCAN";
            argvlen[0] = 4;
            argv[1] = cursor;
            argvlen[1] = strlen(cursor);
            argv[2] = "MATCH";
            argvlen[2] = 5;
            argv[3] = TOLL_NAME_USAGE_MATCH;
            argvlen[3] = strlen(argv[3]);
            argv[4] = "COUNT";
            argvlen[4] = 5;
            argv[5] = TOLL_SETTLE_SCAN_COUNT;
            argvlen[5] = sizeof(TOLL_SETTLE_SCAN_COUNT) - 1;

            r = toll_store_command_node(d->redis, node, 6, argv, argvlen);
            if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2
                || r->element[0]->type != REDIS_REPLY_STRING
                || r->element[0]->len >= sizeof(cursor)
                || r->element[1]->type != REDIS_REPLY_ARRAY)
            {
                return toll_settle_redis_failed(d, "SCAN", r);
            }

            memcpy(cursor, r->element[0]->str, r->element[0]->len);
            cursor[r->element[0]->len] = '\0';
            keys = r->element[1];

            for (i = 0; i < keys->elements; i++) {
                if (toll_name_usage_parse(keys->element[i]->str,
                                          keys->element[i]->len, &n)
                    != 0
                    || n.mirror)
                {
                    continue;
                }

                argv[0] = "SADD";
                argvlen[0] = 4;
                argv[1] = TOLL_NAME_USAGE_INDEX;
                argvlen[1] = sizeof(TOLL_NAME_USAGE_INDEX) - 1;
                argv[2] = keys->element[i]->str;
                argvlen[2] = keys->element[i]->len;

                if (toll_store_append(d->redis, 3, argv, argvlen) != 0) {
                    freeReplyObject(r);
                    return toll_settle_redis_failed(d, "SADD", NULL);
                }

                found++;
            }

            freeReplyObject(r);

            for ( /* void */ ; found > 0; found--) {
                if (toll_store_get_reply(d->redis, &r) != 0) {
                    return toll_settle_redis_failed(d, "SADD", NULL);
                }

                freeReplyObject(r);
            }

            if (strcmp(cursor, "0") == 0) {
                break;
            }
        }
    }

    return 0;
}


static int
toll_settle_pick(toll_settle_drain_t *d, int *more)
{
    int          rc;
    size_t       i;
    redisReply  *r;
    const char  *argv[3];
    size_t       argvlen[3];
    char         count[32];

    argv[0] = "SRANDMEMBER";
    argvlen[0] = 11;
    argv[1] = TOLL_NAME_USAGE_INDEX;
    argvlen[1] = sizeof(TOLL_NAME_USAGE_INDEX) - 1;
    argv[2] = count;
    argvlen[2] = snprintf(count, sizeof(count), "%lld",
                          (long long) d->conf->batch_max);

    r = toll_settle_cmd(d, 3, argv, argvlen);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        return toll_settle_redis_failed(d, "SRANDMEMBER", r);
    }

    rc = 0;

    for (i = 0; i < r->elements && rc == 0 && !*d->stop; i++) {
        rc = toll_settle_claim(d, r->element[i]->str, r->element[i]->len);
    }

    *more = (r->elements == (size_t) d->conf->batch_max) || *d->stop;

    freeReplyObject(r);

    return rc;
}


static int
toll_settle_claim(toll_settle_drain_t *d, const char *hash, size_t len)
{
    int                  rc;
    char                 mirror[TOLL_SETTLE_MIRROR_NAME_MAX];
    toll_settle_claim_t  c;

    rc = toll_settle_claim_names(hash, len, &c, mirror);
    if (rc != 0) {
        return rc;
    }

    /*
     * The intent first: a claim in toll:drain:open is finished by the
     * next pass whatever happens after this point, and one that never
     * took place puts the hash's name back in the index.
     */

    if (c.name[0] != '\0') {
        rc = toll_settle_key_cmd(d, "SADD", TOLL_NAME_DRAIN_OPEN, c.name,
                                 strlen(c.name), NULL);
        if (rc != 0) {
            return rc;
        }
    }

    /*
     * Out of the index before the claim: an increment that arrives later
     * puts the name back, and the next pass claims what it wrote.
     */

    rc = toll_settle_key_cmd(d, "SREM", TOLL_NAME_USAGE_INDEX, hash, len, NULL);
    if (rc != 0) {
        return rc;
    }

    if (c.name[0] == '\0') {
        return 0;
    }

    toll_settle_crash_point(TOLL_SETTLE_STEP_INTENT);

    return toll_settle_claim_run(d, &c, hash, len, mirror);
}


/*
 * The claim's name, its batch id and the day's mirror of the usage hash
 * hash; c->name[0] is '\0' when hash is not a usage hash of the meter
 * (it leaves the index, untouched).  0, or EX_OSERR.
 */
static int
toll_settle_claim_names(const char *hash, size_t len, toll_settle_claim_t *c,
    char *mirror)
{
    char         id[TOLL_NAME_BATCH_LEN + 1], *p;
    toll_name_t  n;

    if (toll_name_usage_parse(hash, len, &n) != 0 || n.mirror) {
        toll_name_text(mirror, hash, len);
        toll_log("ignored \"%s\" in " TOLL_NAME_USAGE_INDEX
                        ": not a usage hash", mirror);
        c->name[0] = '\0';
        return 0;
    }

    if (toll_ledger_random_hex(id, TOLL_NAME_BATCH_LEN / 2) != 0) {
        toll_log("no random bytes for a batch id");
        return EX_OSERR;
    }

    /* the claim and the mirror share the usage hash's slot: {buyer} */

    memcpy(c->buyer, n.buyer, n.buyer_len);
    c->buyer[n.buyer_len] = '\0';
    memcpy(c->day, n.day, sizeof(c->day));
    memcpy(c->id, id, sizeof(c->id));

    p = toll_name_claim(c->name, n.buyer, n.buyer_len, n.day, id);
    *p = '\0';
    p = toll_name_usage(mirror, n.buyer, n.buyer_len, n.day);
    memcpy(p, TOLL_NAME_USAGE_MIRROR, sizeof(TOLL_NAME_USAGE_MIRROR));

    return 0;
}


/* lua/claim.lua on the usage hash, and what its answer asks for */
static int
toll_settle_claim_run(toll_settle_drain_t *d, const toll_settle_claim_t *c,
    const char *hash, size_t len, char *mirror)
{
    int          rc;
    redisReply  *r;
    const char  *argv[7];
    size_t       argvlen[7];

    argv[0] = "3";
    argvlen[0] = 1;
    argv[1] = hash;
    argvlen[1] = len;
    argv[2] = c->name;
    argvlen[2] = strlen(c->name);
    argv[3] = mirror;
    argvlen[3] = strlen(mirror);
    argv[4] = TOLL_STR(TOLL_TTL_MIRROR);
    argvlen[4] = sizeof(TOLL_STR(TOLL_TTL_MIRROR)) - 1;
    argv[5] = ":" TOLL_USAGE_PROVIDER_NAME;
    argvlen[5] = sizeof(":" TOLL_USAGE_PROVIDER_NAME) - 1;
    argv[6] = ":" TOLL_USAGE_CURRENCY_NAME;
    argvlen[6] = sizeof(":" TOLL_USAGE_CURRENCY_NAME) - 1;

    r = (d->redis != NULL)
        ? toll_script_run(d->redis, TOLL_SCRIPT_CLAIM, 7, argv, argvlen)
        : NULL;

    if (r != NULL && r->type == REDIS_REPLY_INTEGER) {
        freeReplyObject(r);
        return toll_settle_claim_bad_mirror(d, c, hash, len, mirror);
    }

    if (r != NULL && r->type == REDIS_REPLY_STRING) {
        /*
         * Not a hash (the script's answer is its type): claimed, out of
         * the meter's way, and set aside; the meter's next flush makes a
         * new hash of that name.
         */

        snprintf(mirror, TOLL_SETTLE_MIRROR_NAME_MAX, "the usage key is a "
                 "%.*s, not a hash", (int) (r->len < 32 ? r->len : 32),
                 r->str);
        freeReplyObject(r);

        return toll_settle_quarantine(d, c, mirror);
    }

    if (r == NULL || (r->type != REDIS_REPLY_ARRAY
                      && r->type != REDIS_REPLY_NIL))
    {
        return toll_settle_redis_failed(d, "the claim script", r);
    }


    if (r->type == REDIS_REPLY_NIL) {
        /* the hash was claimed or emptied already: forget the intent */
        freeReplyObject(r);
        return toll_settle_delete(d, c);
    }

    toll_settle_crash_point(TOLL_SETTLE_STEP_CLAIM);
    toll_settle_crash_point(TOLL_SETTLE_STEP_READ);

    rc = toll_settle_finish(d, c, r);
    freeReplyObject(r);

    return rc;
}


/*
 * The day's mirror is not a hash: nothing moved.  The intent is
 * forgotten and the hash waits in the index until the mirror is
 * mended, said once; every other buyer goes on.
 */
static int
toll_settle_claim_bad_mirror(toll_settle_drain_t *d,
    const toll_settle_claim_t *c, const char *hash, size_t len,
    const char *mirror)
{
    int  rc;

    if (strcmp(d->bad_mirror, mirror) != 0) {
        toll_log("cannot claim \"%.*s\": its mirror \"%s\" is "
                        "not a hash (WRONGTYPE); the usage waits in "
                        "redis until the mirror is deleted or mended",
                        (int) len, hash, mirror);
        memcpy(d->bad_mirror, mirror, sizeof(d->bad_mirror));
    }

    rc = toll_settle_reindex(d, c);

    return (rc == 0) ? toll_settle_delete(d, c) : rc;
}


/* a claim's name, taken apart (lib/toll_names.c) into c */
static int
toll_settle_claim_parse(const char *name, size_t len,
    toll_settle_claim_t *c)
{
    toll_name_t  n;

    if (toll_name_claim_parse(name, len, &n) != 0) {
        return -1;
    }

    memcpy(c->name, name, len);
    c->name[len] = '\0';
    memcpy(c->buyer, n.buyer, n.buyer_len);
    c->buyer[n.buyer_len] = '\0';
    memcpy(c->day, n.day, sizeof(c->day));
    memcpy(c->id, n.batch, sizeof(c->id));

    return 0;
}


/* TOLL_SETTLE_CRASH=<step>[:N]: killed at the Nth time at step */
void
toll_settle_crash_point(toll_settle_step_e step)
{
    const char   *env, *colon;
    size_t        len;
    long          n;

    static long   hits[TOLL_SETTLE_STEP_N];

    env = getenv("TOLL_SETTLE_CRASH");
    if (env == NULL) {
        return;
    }

    colon = strchr(env, ':');
    len = colon ? (size_t) (colon - env) : strlen(env);

    if (len != strlen(toll_settle_steps[step])
        || memcmp(env, toll_settle_steps[step], len) != 0)
    {
        return;
    }

    n = colon ? strtol(colon + 1, NULL, 10) : 1;

    if (++hits[step] >= n) {
        fprintf(stderr, "toll-settle: TOLL_SETTLE_CRASH: killed after %s\n",
                toll_settle_steps[step]);
        (void) raise(SIGKILL);
    }
}
