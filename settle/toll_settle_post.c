/*
 * toll-settle: a claim into the ledger (docs/settle.md, "The drain
 * protocol", step 4): its fields read as the meter writes them, one
 * record per service, posted as one batch; what the ledger refuses is
 * set aside in quarantine, never a stop.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "toll_clock.h"
#include "toll_ledger.h"
#include "toll_log.h"
#include "toll_money.h"
#include "toll_names.h"
#include "toll_settle_alerts.h"
#include "toll_settle_caps.h"
#include "toll_settle_drain_int.h"
#include "toll_usage.h"


/* services in one buyer's usage hash of a day */
#define TOLL_SETTLE_SERVICES_MAX   4096
#define TOLL_SETTLE_FIELD_LEN_MAX  512


typedef struct {
    char      service[TOLL_SETTLE_FIELD_LEN_MAX + 1];
    char      provider[TOLL_SETTLE_FIELD_LEN_MAX + 1];
    char      currency[TOLL_SETTLE_FIELD_LEN_MAX + 1];
} toll_settle_names_t;


static int toll_settle_read(const redisReply *content,
    toll_ledger_usage_t *usage, toll_settle_names_t *names, size_t nmax,
    size_t *nusage);
static int toll_settle_posted(toll_settle_drain_t *d,
    const toll_settle_claim_t *c, int rc, const toll_ledger_usage_t *usage,
    size_t n);


/*
 * A claim in hand, whatever the step it stopped at: posted unless the
 * ledger has it, then deleted.  An empty content means the claim never
 * happened (the hash was gone, or the process died before RENAME), or it
 * was posted and its key deleted.
 */
/* the claim on redis_replicas replicas, or the pass ends here */

static int
toll_settle_replicated(toll_settle_drain_t *d, const toll_settle_claim_t *c)
{
    long long  n;

    if (d->conf->redis_replicas <= 0) {
        return 0;
    }

    n = toll_store_wait(d->redis, c->name, strlen(c->name),
                        d->conf->redis_replicas,
                        /* never WAIT's 0, which waits for ever */
                        d->conf->redis_timeout_ms >= 2
                        ? (int) (d->conf->redis_timeout_ms / 2) : 1);

    if (n >= d->conf->redis_replicas) {
        return 0;
    }

    if (n < 0) {
        /* an ASK during a slot's migration, a lost node: said as it is */
        toll_log("redis: WAIT for the claim \"%s\": %s", c->name,
                 toll_store_error(d->redis));
    }

    toll_log("redis: the claim \"%s\" is on %lld of %d replica(s): "
             "posted when it is on all", c->name, n < 0 ? 0 : n,
             d->conf->redis_replicas);

    return TOLL_SETTLE_DRAIN_AGAIN;
}


int
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
        /*
         * The claim must outlive a failover before the ledger has it: a
         * claim lost with its primary would put the usage hash back
         * under its old name, to be claimed and posted again.
         */

        rc = toll_settle_replicated(d, c);
        if (rc != 0) {
            return rc;
        }

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
        /*
         * committed by a run that stopped before its delete: a replay,
         * and maybe before the balance alerts it was due
         */
        d->replays++;
        toll_settle_alerts_note(d, c->buyer);
        toll_settle_caps_note(d, c->buyer, c->day);
    }

    return rc;
}


int
toll_settle_post(toll_settle_drain_t *d, const toll_settle_claim_t *c,
    redisReply *content)
{
    int                   rc;
    size_t                n, nmax;
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
    rc = toll_settle_posted(d, c, rc, usage, n);

    free(usage);
    free(names);

    return rc;

malformed:

    /* not what the meter writes: nothing is posted half */

    free(usage);
    free(names);

    snprintf(d->ledger_refused, sizeof(d->ledger_refused), "holds a field "
             "the meter does not write");

    return TOLL_SETTLE_DRAIN_LEFT;
}


/*
 * What the ledger's answer rc to batch c (its n records in usage) means
 * for the drain: 0, TOLL_SETTLE_DRAIN_LEFT or TOLL_SETTLE_DRAIN_AGAIN.
 */
static int
toll_settle_posted(toll_settle_drain_t *d, const toll_settle_claim_t *c,
    int rc, const toll_ledger_usage_t *usage, size_t n)
{
    size_t  i;

    if (rc == TOLL_LEDGER_OK || rc == TOLL_LEDGER_EXISTS) {
        /* the caps it leased from: their alerts look at the day's used */
        toll_settle_caps_note(d, c->buyer, c->day);

        /* a balance paid: the alerts look at it at the pass's end */
        for (i = 0; i < n; i++) {
            if (usage[i].prepaid_micros > 0) {
                toll_settle_alerts_note(d, c->buyer);
                break;
            }
        }
    }

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

        return 0;
    }

    if (rc == TOLL_LEDGER_EXISTS) {
        d->replays++;
        return 0;
    }

    if (rc != TOLL_LEDGER_BUSY && rc != TOLL_LEDGER_ERROR) {
        /*
         * The ledger refuses this batch, and would refuse it at every
         * retry: set aside, so that no other buyer's usage waits on it.
         */

        snprintf(d->ledger_refused, sizeof(d->ledger_refused), "%s",
                 toll_ledger_errmsg(d->ledger));

        return TOLL_SETTLE_DRAIN_LEFT;
    }

    toll_log("cannot post batch %s of \"%s\": %s", c->id,
                    c->buyer, toll_ledger_errmsg(d->ledger));

    /* the claim stays in Redis: the next pass posts it again */
    d->ledger_failed = 1;

    return TOLL_SETTLE_DRAIN_AGAIN;
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
            usage[n].currency = names[n].currency;
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

        if (field == TOLL_USAGE_CURRENCY) {
            if (!toll_money_currency_valid(val->str, val->len)) {
                return -1;
            }

            memcpy(names[j].currency, val->str, val->len);
            names[j].currency[val->len] = '\0';
            continue;
        }

        u = &usage[j];
        count[TOLL_USAGE_CALLS] = &u->calls;
        count[TOLL_USAGE_FREE_CALLS] = &u->free_calls;
        count[TOLL_USAGE_PAID_CALLS] = &u->paid_calls;
        count[TOLL_USAGE_AMOUNT] = &u->amount_micros;
        count[TOLL_USAGE_ERRORS] = &u->errors;
        count[TOLL_USAGE_LATENCY] = &u->latency_ms;
        count[TOLL_USAGE_PREPAID] = &u->prepaid_micros;
        count[TOLL_USAGE_UNITS] = &u->units;

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
int
toll_settle_quarantine(toll_settle_drain_t *d, const toll_settle_claim_t *c,
    const char *reason)
{
    int          n, rc;
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

    rc = toll_settle_key_cmd(d, "SREM", TOLL_NAME_DRAIN_OPEN, c->name,
                             strlen(c->name), NULL);
    if (rc != 0) {
        return rc;
    }

    d->quarantined++;

    toll_log("quarantined claim \"%s\" of \"%s\": %s; kept in redis, "
                    "not posted, other batches go on (tollctl quarantine "
                    "list)", c->name, c->buyer, reason);

    return 0;
}
