/*
 * toll-settle: the drain (docs/settle.md, "The drain protocol").
 *
 * A blocking hiredis client is enough here: one process, a few round
 * trips per usage hash, each bounded by redis_timeout.  Every command goes
 * out through redisCommandArgv() with explicit lengths: buyer and service
 * names are never part of a format string.
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
#include "toll_settle_drain.h"
#include "toll_usage.h"


/* names fetched per SSCAN/SCAN call; a hint to Redis, not a bound */
#define TOLL_SETTLE_SCAN_COUNT     "1000"
/* services in one buyer's usage hash of a day */
#define TOLL_SETTLE_SERVICES_MAX   4096
#define TOLL_SETTLE_FIELD_LEN_MAX  512
/* SCAN calls of one sweep, so that a huge keyspace cannot hold a pass */
#define TOLL_SETTLE_SWEEP_CALLS_MAX  100000

/* a claim the ledger refuses, to set aside: why is in ledger_refused */
#define TOLL_SETTLE_DRAIN_LEFT     1


typedef enum {
    TOLL_SETTLE_STEP_INTENT = 0,
    TOLL_SETTLE_STEP_CLAIM,
    TOLL_SETTLE_STEP_READ,
    TOLL_SETTLE_STEP_COMMIT,
    TOLL_SETTLE_STEP_DELETE,
    TOLL_SETTLE_STEP_N
} toll_settle_step_e;


/* a claim's name, taken apart: toll:drain:{<buyer>}:<YYYYMMDD>:<id> */
typedef struct {
    char      name[TOLL_NAME_LEN_MAX + 1];
    char      buyer[TOLL_NAME_BUYER_LEN_MAX + 1];
    char      day[TOLL_NAME_DAY_LEN + 1];
    char      id[TOLL_NAME_BATCH_LEN + 1];
} toll_settle_claim_t;


typedef struct {
    char      service[TOLL_SETTLE_FIELD_LEN_MAX + 1];
    char      provider[TOLL_SETTLE_FIELD_LEN_MAX + 1];
} toll_settle_names_t;


static const char *toll_settle_steps[TOLL_SETTLE_STEP_N] = {
    "intent", "claim", "read", "commit", "delete"
};


static int toll_settle_drain_steps(toll_settle_drain_t *d, int *more);
static int toll_settle_count_open(toll_settle_drain_t *d);
static int toll_settle_size(toll_settle_drain_t *d, const char *cmd,
    const char *key, int64_t *out);
static int toll_settle_connect(toll_settle_drain_t *d);
static int toll_settle_bind(toll_settle_drain_t *d);
static int toll_settle_recover(toll_settle_drain_t *d);
static int toll_settle_sweep(toll_settle_drain_t *d);
static int toll_settle_pick(toll_settle_drain_t *d, int *more);
static int toll_settle_claim(toll_settle_drain_t *d, const char *hash,
    size_t len);
static int toll_settle_finish(toll_settle_drain_t *d,
    const toll_settle_claim_t *c, redisReply *content);
static int toll_settle_post(toll_settle_drain_t *d,
    const toll_settle_claim_t *c, redisReply *content);
static int toll_settle_read(const redisReply *content,
    toll_ledger_usage_t *usage, toll_settle_names_t *names, size_t nmax,
    size_t *nusage);
static int toll_settle_delete(toll_settle_drain_t *d,
    const toll_settle_claim_t *c);
static int toll_settle_quarantine(toll_settle_drain_t *d,
    const toll_settle_claim_t *c, const char *reason);
static int toll_settle_reindex(toll_settle_drain_t *d,
    const toll_settle_claim_t *c);
static int toll_settle_claim_parse(const char *name, size_t len,
    toll_settle_claim_t *c);
static redisReply *toll_settle_cmd(toll_settle_drain_t *d, int argc,
    const char **argv, const size_t *argvlen);
static int toll_settle_redis_failed(toll_settle_drain_t *d,
    const char *what, redisReply *reply);
static void toll_settle_crash_point(toll_settle_step_e step);


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


/*
 * What a pass leaves in toll:drain:open are claims it met in a state no
 * pass finishes (a claim key that is not a claim's name); what it set
 * aside in quarantine waits for the operator.
 */
static int
toll_settle_count_open(toll_settle_drain_t *d)
{
    int  rc;

    rc = toll_settle_size(d, "SCARD", TOLL_NAME_DRAIN_OPEN, &d->open_claims);
    if (rc != 0) {
        return rc;
    }

    return toll_settle_size(d, "HLEN", TOLL_NAME_DRAIN_QUARANTINE,
                            &d->quarantine_claims);
}


/* "SCARD key" or "HLEN key": the size of a set or hash, into *out */
static int
toll_settle_size(toll_settle_drain_t *d, const char *cmd, const char *key,
    int64_t *out)
{
    char         what[64];
    redisReply  *r;
    const char  *argv[2];
    size_t       argvlen[2];

    argv[0] = cmd;
    argvlen[0] = strlen(cmd);
    argv[1] = key;
    argvlen[1] = strlen(key);

    r = toll_settle_cmd(d, 2, argv, argvlen);
    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        snprintf(what, sizeof(what), "%s %s", cmd, key);
        return toll_settle_redis_failed(d, what, r);
    }

    *out = r->integer;
    freeReplyObject(r);

    return 0;
}


void
toll_settle_drain_close(toll_settle_drain_t *d)
{
    if (d->redis != NULL) {
        redisFree(d->redis);
        d->redis = NULL;
    }
}


static int
toll_settle_connect(toll_settle_drain_t *d)
{
    const toll_settle_conf_t  *conf = d->conf;

    struct timeval   tv;
    redisReply      *r;
    char             db[16];
    const char      *argv[2];
    size_t           argvlen[2];
    const char      *password;

    tv.tv_sec = conf->redis_timeout_ms / 1000;
    tv.tv_usec = (conf->redis_timeout_ms % 1000) * 1000;

    d->redis = (conf->redis_port == 0)
               ? redisConnectUnixWithTimeout(conf->redis_host, tv)
               : redisConnectWithTimeout(conf->redis_host, conf->redis_port,
                                         tv);

    if (d->redis == NULL || d->redis->err) {
        if (!d->redis_down || conf->once) {
            toll_log("cannot connect to redis at %s: %s%s",
                            conf->redis_text,
                            d->redis ? d->redis->errstr : "out of memory",
                            conf->once ? "" : "; retrying every second");
        }

        d->redis_down = 1;
        toll_settle_drain_close(d);
        return TOLL_SETTLE_DRAIN_AGAIN;
    }

    (void) redisSetTimeout(d->redis, tv);


    password = conf->redis_password ? conf->redis_password
                                    : getenv("TOLL_REDIS_PASSWORD");

    if (password != NULL && password[0] != '\0') {
        argv[0] = "AUTH";
        argvlen[0] = 4;
        argv[1] = password;
        argvlen[1] = strlen(password);

        r = toll_settle_cmd(d, 2, argv, argvlen);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            return toll_settle_redis_failed(d, "AUTH", r);
        }

        freeReplyObject(r);
    }

    if (conf->redis_db != 0) {
        argv[0] = "SELECT";
        argvlen[0] = 6;
        argv[1] = db;
        argvlen[1] = snprintf(db, sizeof(db), "%d", conf->redis_db);

        r = toll_settle_cmd(d, 2, argv, argvlen);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            return toll_settle_redis_failed(d, "SELECT", r);
        }

        freeReplyObject(r);
    }

    return 0;
}


/*
 * One meter, one ledger: two ledgers fed from one Redis would each hold a
 * part of the usage, and neither would be right.
 */
static int
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


/*
 * A claim in hand, whatever the step it stopped at: posted unless the
 * ledger has it, then deleted.  An empty content means the claim never
 * happened (the hash was gone, or the process died before RENAME), or it
 * was posted and its key deleted.
 */
static int
toll_settle_finish(toll_settle_drain_t *d, const toll_settle_claim_t *c,
    redisReply *content)
{
    int  rc, found;

    rc = toll_ledger_has_batch(d->ledger, c->id, &found);
    if (rc != TOLL_LEDGER_OK) {
        toll_log("ledger: %s", toll_ledger_errmsg(d->ledger));
        d->ledger_failed = 1;
        return (rc == TOLL_LEDGER_BUSY) ? TOLL_SETTLE_DRAIN_AGAIN
                                        : EX_SOFTWARE;
    }

    if (!found && content->elements == 0) {
        /* a claim that never took place: its hash goes back in the index */
        rc = toll_settle_reindex(d, c);
        if (rc != 0) {
            return rc;
        }
    }

    if (!found && content->elements > 0) {
        rc = toll_settle_post(d, c, content);

        if (rc == TOLL_SETTLE_DRAIN_LEFT) {
            /* refused, and it would be at every pass: set aside */
            return toll_settle_quarantine(d, c, d->ledger_refused);
        }

        if (rc != 0) {
            return rc;
        }
    }

    rc = toll_settle_delete(d, c);

    if (rc == 0 && found) {
        /* committed by a run that stopped before its delete: a replay */
        d->replays++;
    }

    return rc;
}


static int
toll_settle_post(toll_settle_drain_t *d, const toll_settle_claim_t *c,
    redisReply *content)
{
    int                   rc;
    size_t                i, n, nmax;
    toll_ledger_usage_t  *usage;
    toll_settle_names_t  *names;
    toll_ledger_batch_t   b;

    /* a service has at least one field: at most half the reply's items */

    nmax = content->elements / 2;
    if (nmax > TOLL_SETTLE_SERVICES_MAX) {
        nmax = TOLL_SETTLE_SERVICES_MAX;
    }

    usage = calloc(nmax + 1, sizeof(toll_ledger_usage_t));
    names = calloc(nmax + 1, sizeof(toll_settle_names_t));

    if (usage == NULL || names == NULL) {
        free(usage);
        free(names);
        toll_log("out of memory");
        return EX_OSERR;
    }

    if (toll_settle_read(content, usage, names, nmax, &n) != 0) {
        goto malformed;
    }

    b.id = c->id;
    b.claim = c->name;
    b.buyer = c->buyer;
    b.day = c->day;
    b.usage = usage;
    b.nusage = n;

    rc = toll_ledger_post_batch(d->ledger, &b, &d->conf->fees);

    if (rc == TOLL_LEDGER_OK) {
        toll_settle_crash_point(TOLL_SETTLE_STEP_COMMIT);

        d->batches++;

        for (i = 0; i < n; i++) {
            d->records++;
            d->amount_micros += usage[i].amount_micros;
        }

        if (d->conf->verbose) {
            toll_log("posted batch %s: buyer \"%s\", day %s, "
                            "%zu services", c->id, c->buyer, c->day, n);
        }

        if (d->hooks != NULL) {
            toll_settle_webhooks_kick(d->hooks);
        }

    } else if (rc == TOLL_LEDGER_EXISTS) {
        d->replays++;
        rc = TOLL_LEDGER_OK;

    } else if (rc != TOLL_LEDGER_BUSY && rc != TOLL_LEDGER_ERROR) {
        /*
         * The ledger refuses this batch, and would refuse it at every
         * retry: set aside, so that no other buyer's usage waits on it.
         */

        free(usage);
        free(names);

        snprintf(d->ledger_refused, sizeof(d->ledger_refused), "%s",
                 toll_ledger_errmsg(d->ledger));

        return TOLL_SETTLE_DRAIN_LEFT;

    } else {
        toll_log("cannot post batch %s of \"%s\": %s", c->id,
                        c->buyer, toll_ledger_errmsg(d->ledger));
    }

    free(usage);
    free(names);

    if (rc == TOLL_LEDGER_BUSY || rc == TOLL_LEDGER_ERROR) {
        /* the claim stays in Redis: the next pass posts it again */
        d->ledger_failed = 1;
        return TOLL_SETTLE_DRAIN_AGAIN;
    }

    return 0;

malformed:

    /* not what the meter writes: nothing is posted half */

    free(usage);
    free(names);

    snprintf(d->ledger_refused, sizeof(d->ledger_refused), "holds a field "
             "the meter does not write");

    return TOLL_SETTLE_DRAIN_LEFT;
}


/*
 * A claim's fields (lib/toll_names.h) into one record per service, at
 * most nmax: -1 for anything the meter does not write (an unknown field,
 * a count that is not an int64, a provider empty or too long).
 */
static int
toll_settle_read(const redisReply *content, toll_ledger_usage_t *usage,
    toll_settle_names_t *names, size_t nmax, size_t *nusage)
{
    int                   field;
    size_t                i, j, n, slen;
    int64_t               v, *count[TOLL_USAGE_COUNTS];
    const redisReply     *f, *val;
    toll_ledger_usage_t  *u;

    n = 0;

    for (i = 0; i + 1 < content->elements; i += 2) {
        f = content->element[i];
        val = content->element[i + 1];

        if (f->type != REDIS_REPLY_STRING || val->type != REDIS_REPLY_STRING
            || f->len > TOLL_SETTLE_FIELD_LEN_MAX)
        {
            return -1;
        }

        field = toll_usage_field_parse(f->str, f->len, &slen);
        if (field < 0) {
            return -1;
        }

        for (j = 0; j < n; j++) {
            if (strlen(names[j].service) == slen
                && memcmp(names[j].service, f->str, slen) == 0)
            {
                break;
            }
        }

        if (j == n) {
            if (n == nmax) {
                return -1;
            }

            memcpy(names[n].service, f->str, slen);
            names[n].service[slen] = '\0';
            usage[n].service = names[n].service;
            usage[n].provider = names[n].provider;
            n++;
        }

        if (field == TOLL_USAGE_PROVIDER) {
            if (val->len == 0 || val->len > TOLL_SETTLE_FIELD_LEN_MAX) {
                return -1;
            }

            memcpy(names[j].provider, val->str, val->len);
            names[j].provider[val->len] = '\0';
            continue;
        }

        u = &usage[j];
        count[TOLL_USAGE_CALLS] = &u->calls;
        count[TOLL_USAGE_FREE_CALLS] = &u->free_calls;
        count[TOLL_USAGE_PAID_CALLS] = &u->paid_calls;
        count[TOLL_USAGE_AMOUNT] = &u->amount_micros;
        count[TOLL_USAGE_ERRORS] = &u->errors;
        count[TOLL_USAGE_LATENCY] = &u->latency_ms;

        if (toll_usage_count_parse(val->str, val->len, &v) != 0) {
            return -1;
        }

        *count[field] = v;
    }

    *nusage = n;

    return 0;
}


/*
 * Sets a claim aside: its key stays in Redis as it is, its name and the
 * reason go to the quarantine hash, then out of toll:drain:open, so that
 * no pass tries it again until the operator replays it (tollctl
 * quarantine replay).  Said once, here.  A crash between the two steps
 * leaves the claim open: the next pass refuses and sets it aside again.
 */
static int
toll_settle_quarantine(toll_settle_drain_t *d, const toll_settle_claim_t *c,
    const char *reason)
{
    int          n;
    char         value[TOLL_SETTLE_REFUSED_LEN_MAX + 32];
    redisReply  *r;
    const char  *argv[4];
    size_t       argvlen[4];

    n = snprintf(value, sizeof(value), "%lld %.*s",
                 (long long) (toll_clock_real_ms() / 1000),
                 TOLL_SETTLE_REFUSED_LEN_MAX, reason);
    if (n < 0) {
        return EX_SOFTWARE;
    }

    argv[0] = "HSET";
    argvlen[0] = 4;
    argv[1] = TOLL_NAME_DRAIN_QUARANTINE;
    argvlen[1] = sizeof(TOLL_NAME_DRAIN_QUARANTINE) - 1;
    argv[2] = c->name;
    argvlen[2] = strlen(c->name);
    argv[3] = value;
    argvlen[3] = strlen(value);

    r = toll_settle_cmd(d, 4, argv, argvlen);
    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        return toll_settle_redis_failed(d,
                                        "HSET " TOLL_NAME_DRAIN_QUARANTINE, r);
    }

    freeReplyObject(r);

    argv[0] = "SREM";
    argv[1] = TOLL_NAME_DRAIN_OPEN;
    argvlen[1] = sizeof(TOLL_NAME_DRAIN_OPEN) - 1;

    r = toll_settle_cmd(d, 3, argv, argvlen);
    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        return toll_settle_redis_failed(d, "SREM " TOLL_NAME_DRAIN_OPEN, r);
    }

    freeReplyObject(r);

    d->quarantined++;

    toll_log("quarantined claim \"%s\" of \"%s\": %s; kept in redis, "
                    "not posted, other batches go on (tollctl quarantine "
                    "list)", c->name, c->buyer, reason);

    return 0;
}


static int
toll_settle_reindex(toll_settle_drain_t *d, const toll_settle_claim_t *c)
{
    char         name[TOLL_NAME_LEN_MAX];
    redisReply  *r;
    const char  *argv[3];
    size_t       argvlen[3];

    argv[0] = "SADD";
    argvlen[0] = 4;
    argv[1] = TOLL_NAME_USAGE_INDEX;
    argvlen[1] = sizeof(TOLL_NAME_USAGE_INDEX) - 1;
    argv[2] = name;
    argvlen[2] = toll_name_usage(name, c->buyer, strlen(c->buyer), c->day)
                 - name;

    r = toll_settle_cmd(d, 3, argv, argvlen);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        return toll_settle_redis_failed(d, "SADD " TOLL_NAME_USAGE_INDEX, r);
    }

    freeReplyObject(r);

    return 0;
}


static int
toll_settle_delete(toll_settle_drain_t *d, const toll_settle_claim_t *c)
{
    redisReply  *r;
    const char  *argv[3];
    size_t       argvlen[3];

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

    argv[0] = "SREM";
    argvlen[0] = 4;
    argv[1] = TOLL_NAME_DRAIN_OPEN;
    argvlen[1] = sizeof(TOLL_NAME_DRAIN_OPEN) - 1;
    argv[2] = c->name;
    argvlen[2] = strlen(c->name);

    r = toll_settle_cmd(d, 3, argv, argvlen);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        return toll_settle_redis_failed(d, "SREM " TOLL_NAME_DRAIN_OPEN, r);
    }

    freeReplyObject(r);

    return 0;
}


/*
 * Usage hashes whose SADD to the index was lost (a connection that broke
 * between the meter's script and its SADD) are found by name.
 */
static int
toll_settle_sweep(toll_settle_drain_t *d)
{
    size_t       i, calls, found;
    redisReply  *r, *keys;
    const char  *argv[6];
    size_t       argvlen[6];
    char         cursor[32];
    toll_name_t  n;

    snprintf(cursor, sizeof(cursor), "0");
    found = 0;

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

        r = toll_settle_cmd(d, 6, argv, argvlen);
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

            if (redisAppendCommandArgv(d->redis, 3, argv, argvlen)
                != REDIS_OK)
            {
                freeReplyObject(r);
                return toll_settle_redis_failed(d, "SADD", NULL);
            }

            found++;
        }

        freeReplyObject(r);

        for ( /* void */ ; found > 0; found--) {
            if (redisGetReply(d->redis, (void **) &r) != REDIS_OK) {
                return toll_settle_redis_failed(d, "SADD", NULL);
            }

            freeReplyObject(r);
        }

        if (strcmp(cursor, "0") == 0) {
            break;
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
    char                 id[TOLL_NAME_BATCH_LEN + 1], *p;
    redisReply          *r;
    const char          *argv[7];
    size_t               argvlen[7];
    toll_name_t          n;
    toll_settle_claim_t  c;

    if (toll_name_usage_parse(hash, len, &n) != 0 || n.mirror) {
        /* not a usage hash of the meter: out of the index, untouched */
        toll_name_text(mirror, hash, len);
        toll_log("ignored \"%s\" in " TOLL_NAME_USAGE_INDEX
                        ": not a usage hash", mirror);
        c.name[0] = '\0';
        goto forget;
    }

    if (toll_ledger_random_hex(id, TOLL_NAME_BATCH_LEN / 2) != 0) {
        toll_log("no random bytes for a batch id");
        return EX_OSERR;
    }

    /* the claim and the mirror share the usage hash's slot: {buyer} */

    memcpy(c.buyer, n.buyer, n.buyer_len);
    c.buyer[n.buyer_len] = '\0';
    memcpy(c.day, n.day, sizeof(c.day));
    memcpy(c.id, id, sizeof(c.id));

    p = toll_name_claim(c.name, n.buyer, n.buyer_len, n.day, id);
    *p = '\0';
    p = toll_name_usage(mirror, n.buyer, n.buyer_len, n.day);
    memcpy(p, TOLL_NAME_USAGE_MIRROR, sizeof(TOLL_NAME_USAGE_MIRROR));

forget:

    /*
     * The intent first: a claim in toll:drain:open is finished by the
     * next pass whatever happens after this point, and one that never
     * took place puts the hash's name back in the index.
     */

    if (c.name[0] != '\0') {
        argv[0] = "SADD";
        argvlen[0] = 4;
        argv[1] = TOLL_NAME_DRAIN_OPEN;
        argvlen[1] = sizeof(TOLL_NAME_DRAIN_OPEN) - 1;
        argv[2] = c.name;
        argvlen[2] = strlen(c.name);

        r = toll_settle_cmd(d, 3, argv, argvlen);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            return toll_settle_redis_failed(d, "SADD " TOLL_NAME_DRAIN_OPEN,
                                            r);
        }

        freeReplyObject(r);
    }

    /*
     * Out of the index before the claim: an increment that arrives later
     * puts the name back, and the next pass claims what it wrote.
     */

    argv[0] = "SREM";
    argvlen[0] = 4;
    argv[1] = TOLL_NAME_USAGE_INDEX;
    argvlen[1] = sizeof(TOLL_NAME_USAGE_INDEX) - 1;
    argv[2] = hash;
    argvlen[2] = len;

    r = toll_settle_cmd(d, 3, argv, argvlen);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        return toll_settle_redis_failed(d, "SREM " TOLL_NAME_USAGE_INDEX, r);
    }

    freeReplyObject(r);

    if (c.name[0] == '\0') {
        return 0;
    }

    toll_settle_crash_point(TOLL_SETTLE_STEP_INTENT);

    /* lua/claim.lua */

    argv[0] = "3";
    argvlen[0] = 1;
    argv[1] = hash;
    argvlen[1] = len;
    argv[2] = c.name;
    argvlen[2] = strlen(c.name);
    argv[3] = mirror;
    argvlen[3] = strlen(mirror);
    argv[4] = TOLL_STR(TOLL_TTL_MIRROR);
    argvlen[4] = sizeof(TOLL_STR(TOLL_TTL_MIRROR)) - 1;
    argv[5] = ":" TOLL_USAGE_PROVIDER_NAME;
    argvlen[5] = sizeof(":" TOLL_USAGE_PROVIDER_NAME) - 1;

    r = (d->redis != NULL)
        ? toll_script_run(d->redis, TOLL_SCRIPT_CLAIM, 6, argv, argvlen)
        : NULL;

    if (r != NULL && r->type == REDIS_REPLY_INTEGER) {
        /*
         * The day's mirror is not a hash: nothing moved.  The intent is
         * forgotten and the hash waits in the index until the mirror is
         * mended, said once; every other buyer goes on.
         */

        freeReplyObject(r);

        if (strcmp(d->bad_mirror, mirror) != 0) {
            toll_log("cannot claim \"%.*s\": its mirror \"%s\" is "
                            "not a hash (WRONGTYPE); the usage waits in "
                            "redis until the mirror is deleted or mended",
                            (int) len, hash, mirror);
            memcpy(d->bad_mirror, mirror, sizeof(d->bad_mirror));
        }

        rc = toll_settle_reindex(d, &c);

        return (rc == 0) ? toll_settle_delete(d, &c) : rc;
    }

    if (r != NULL && r->type == REDIS_REPLY_STRING) {
        /*
         * Not a hash (the script's answer is its type): claimed, out of
         * the meter's way, and set aside; the meter's next flush makes a
         * new hash of that name.
         */


        snprintf(mirror, sizeof(mirror), "the usage key is a %.*s, not a "
                 "hash", (int) (r->len < 32 ? r->len : 32), r->str);
        freeReplyObject(r);

        return toll_settle_quarantine(d, &c, mirror);
    }

    if (r == NULL || (r->type != REDIS_REPLY_ARRAY
                      && r->type != REDIS_REPLY_NIL))
    {
        return toll_settle_redis_failed(d, "the claim script", r);
    }


    if (r->type == REDIS_REPLY_NIL) {
        /* the hash was claimed or emptied already: forget the intent */
        freeReplyObject(r);
        return toll_settle_delete(d, &c);
    }

    toll_settle_crash_point(TOLL_SETTLE_STEP_CLAIM);
    toll_settle_crash_point(TOLL_SETTLE_STEP_READ);

    rc = toll_settle_finish(d, &c, r);
    freeReplyObject(r);

    return rc;
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




static redisReply *
toll_settle_cmd(toll_settle_drain_t *d, int argc, const char **argv,
    const size_t *argvlen)
{
    if (d->redis == NULL) {
        return NULL;
    }

    return redisCommandArgv(d->redis, argc, argv, argvlen);
}


static int
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
                        (d->redis && d->redis->err) ? d->redis->errstr
                                                    : "no connection");
    }

    d->redis_down = 1;

    /* a step cut short may have left a name out of the index: sweep */
    d->next_sweep_ms = 0;

    /* the connection may be mid-reply: a new one for the next pass */
    toll_settle_drain_close(d);

    return TOLL_SETTLE_DRAIN_AGAIN;
}


/* TOLL_SETTLE_CRASH=<step>[:N]: killed at the Nth time at step */
static void
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
