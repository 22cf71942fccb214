/*
 * tollctl reconcile: Redis's side.  The open and quarantined claims and
 * their content, every (buyer, day) that has a usage hash or a mirror
 * (SCAN), and each day's hash and mirror in one MULTI; each read into
 * parts of tollctl_recon_t.  The readers of the names the meter and
 * toll-settle give these keys are here too, until tollctl reads them
 * through lib/toll_names.h as toll-settle does.
 */

#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include <hiredis/hiredis.h>

#include "toll_money.h"
#include "toll_names.h"
#include "toll_parse.h"
#include "toll_usage.h"
#include "tollctl.h"
#include "tollctl_reconcile.h"


static void tollctl_name_buyer_day(const toll_name_t *n, char *buyer,
    char *day);
static int tollctl_usage_name(const char *name, size_t len, char *buyer,
    char *day, int *mirror);
static int tollctl_claim_name(const char *name, size_t len, char *buyer,
    char *day, char *batch);
static int tollctl_recon_claims_batch(tollctl_t *ctl, tollctl_recon_t *r,
    char **names, size_t n);
static int tollctl_recon_scan_add(const redisReply *keys, char ***days,
    size_t *n, size_t *cap);
static int tollctl_recon_hash(tollctl_recon_t *r, const char *name,
    const redisReply *hash, const char *buyer, const char *day,
    tollctl_src_e src, const char *batch);
static tollctl_part_t *tollctl_recon_find(tollctl_recon_t *r, size_t first,
    const char *service, size_t len);
static int tollctl_str_cmp(const void *a, const void *b);
static int tollctl_recon_scan_balances_node(tollctl_t *ctl, unsigned node,
    char ***buyers, size_t *n);
static int tollctl_recon_scan_balances(tollctl_t *ctl, char ***buyers,
    size_t *n);
static int tollctl_recon_balance(tollctl_t *ctl, tollctl_recon_t *r,
    const char *buyer);
static int tollctl_recon_balance_hash(tollctl_recon_t *r, const char *name,
    const char *buyer, const redisReply *hash);
static int tollctl_recon_journal(tollctl_t *ctl, tollctl_recon_t *r,
    const char *buyer, const redisReply *refs);
static void tollctl_recon_part_extra(tollctl_part_t *p, int m,
    const redisReply *value);


/*
 * The claims not in the ledger: those open, and those toll-settle set
 * aside in quarantine (both are usage the mirror counts and the ledger
 * does not hold yet).
 */
int
tollctl_recon_open_set(tollctl_t *ctl, char ***members, size_t *n)
{
    size_t          i, j, k, total;
    redisReply     *replies[2];
    tollctl_cmd_t   cmds[2];

    tollctl_cmd_init(&cmds[0], "SMEMBERS");
    tollctl_cmd_add_str(&cmds[0], TOLL_NAME_DRAIN_OPEN);
    tollctl_cmd_init(&cmds[1], "HKEYS");
    tollctl_cmd_add_str(&cmds[1], TOLL_NAME_DRAIN_QUARANTINE);

    if (tollctl_redis_pipeline(ctl, cmds, 2, replies) != 0) {
        return EX_UNAVAILABLE;
    }

    if (replies[0]->type != REDIS_REPLY_ARRAY
        || replies[1]->type != REDIS_REPLY_ARRAY)
    {
        freeReplyObject(replies[0]);
        freeReplyObject(replies[1]);
        return tollctl_error(EX_UNAVAILABLE, "redis %s: SMEMBERS "
                             TOLL_NAME_DRAIN_OPEN ": unexpected reply",
                             ctl->addr.text);
    }

    total = replies[0]->elements + replies[1]->elements;

    *members = calloc(total + 1, sizeof(char *));
    if (*members == NULL) {
        freeReplyObject(replies[0]);
        freeReplyObject(replies[1]);
        return tollctl_error(EX_OSERR, "out of memory");
    }

    k = 0;

    for (j = 0; j < 2; j++) {
        for (i = 0; i < replies[j]->elements; i++) {
            if (replies[j]->element[i]->type != REDIS_REPLY_STRING
                || ((*members)[k] = strndup(replies[j]->element[i]->str,
                                            replies[j]->element[i]->len))
                   == NULL)
            {
                *n = k;
                freeReplyObject(replies[0]);
                freeReplyObject(replies[1]);
                return tollctl_error(EX_OSERR, "out of memory");
            }

            k++;
        }
    }

    *n = k;
    freeReplyObject(replies[0]);
    freeReplyObject(replies[1]);

    qsort(*members, *n, sizeof(char *), tollctl_str_cmp);

    /* a claim in both (toll-settle stopped while setting it aside): once */

    for (i = 1, k = 1; i < *n; i++) {
        if (strcmp((*members)[i], (*members)[k - 1]) == 0) {
            free((*members)[i]);
            continue;
        }

        (*members)[k++] = (*members)[i];
    }

    if (*n > 0) {
        *n = k;
    }

    return EX_OK;
}


/* the content of every open claim, in pipelined batches */
int
tollctl_recon_claims(tollctl_t *ctl, tollctl_recon_t *r)
{
    int      rc;
    size_t   i, n;

    rc = EX_OK;

    for (i = 0; i < r->nopen_before && rc == EX_OK; i += n) {
        n = r->nopen_before - i;
        if (n > TOLLCTL_RECONCILE_BATCH_MAX) {
            n = TOLLCTL_RECONCILE_BATCH_MAX;
        }

        rc = tollctl_recon_claims_batch(ctl, r, r->open_before + i, n);
    }

    return rc;
}


static int
tollctl_recon_claims_batch(tollctl_t *ctl, tollctl_recon_t *r,
    char **names, size_t n)
{
    int             rc;
    char            buyer[TOLL_NAME_BUYER_LEN_MAX + 1];
    char            day[TOLL_NAME_DAY_LEN + 1];
    char            batch[TOLL_NAME_BATCH_LEN + 1];
    char            text[TOLL_NAME_TEXT_MAX];
    char          **grown;
    size_t          i, m, idx[TOLLCTL_RECONCILE_BATCH_MAX];
    redisReply     *replies[TOLLCTL_RECONCILE_BATCH_MAX];
    tollctl_cmd_t   cmds[TOLLCTL_RECONCILE_BATCH_MAX];

    assert(n <= TOLLCTL_RECONCILE_BATCH_MAX);

    m = 0;

    for (i = 0; i < n; i++) {
        if (tollctl_claim_name(names[i], strlen(names[i]), buyer, day, batch)
            != 0)
        {
            /* a warning: toll-settle leaves such a member to the operator */
            toll_name_text(text, names[i], strlen(names[i]));
            (void) tollctl_error(EX_OK, "skipped \"%s\" in "
                                 TOLL_NAME_DRAIN_OPEN ": not a claim's name",
                                 text);
            continue;
        }

        tollctl_cmd_init(&cmds[m], "HGETALL");
        tollctl_cmd_add_str(&cmds[m], names[i]);
        idx[m++] = i;
    }

    if (m == 0) {
        return EX_OK;
    }

    if (tollctl_redis_pipeline(ctl, cmds, m, replies) != 0) {
        return EX_UNAVAILABLE;
    }

    rc = EX_OK;

    for (i = 0; i < m; i++) {
        if (rc != EX_OK) {
            freeReplyObject(replies[i]);
            continue;
        }

        (void) tollctl_claim_name(names[idx[i]], strlen(names[idx[i]]),
                                  buyer, day, batch);

        if (replies[i]->type == REDIS_REPLY_ARRAY
            && replies[i]->elements == 0)
        {
            /* announced, not (or no longer) there: see the ledger */
            grown = realloc(r->intents, (r->nintents + 1) * sizeof(char *));

            if (grown == NULL
                || (grown[r->nintents] = strdup(batch)) == NULL)
            {
                r->intents = grown ? grown : r->intents;
                rc = tollctl_error(EX_OSERR, "out of memory");

            } else {
                r->intents = grown;
                r->nintents++;
            }

        } else {
            rc = tollctl_recon_hash(r, names[idx[i]], replies[i], buyer, day,
                                    TOLLCTL_SRC_CLAIM, batch);
        }

        freeReplyObject(replies[i]);
    }

    return rc;
}


/*
 * Every (buyer, day) that has a usage hash or a mirror, as "buyer\nday"
 * strings, sorted and unique.  SCAN returns each key that exists for the
 * whole scan at least once; one that appears meanwhile is new usage
 * (live and pending alike) or a claim that the second reading of
 * toll:drain:open and of the ledger reveals.
 */
int
tollctl_recon_scan(tollctl_t *ctl, char ***days, size_t *ndays)
{
    int             rc;
    char            cursor[32];
    size_t          i, j, n, cap, calls;
    unsigned        node;
    redisReply     *reply;
    tollctl_cmd_t   cmd;

    *days = NULL;
    *ndays = 0;
    n = 0;
    cap = 0;

    /* each primary of a Cluster holds only its own slots' keys */
    for (node = 0; node < toll_store_nodes(ctl->redis); node++) {

        snprintf(cursor, sizeof(cursor), "0");

        for (calls = 0; calls < TOLLCTL_SCAN_CALLS_MAX; calls++) {
            tollctl_cmd_init(&cmd, "SCAN");
            tollctl_cmd_add_str(&cmd, cursor);
            tollctl_cmd_add_str(&cmd, "MATCH");
            tollctl_cmd_add_str(&cmd, TOLL_NAME_USAGE_MATCH);
            tollctl_cmd_add_str(&cmd, "COUNT");
            tollctl_cmd_add_str(&cmd, TOLLCTL_SCAN_COUNT);

            reply = tollctl_redis_run_node(ctl, node, &cmd);
            if (reply == NULL) {
                goto failed;
            }

            if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2
                || reply->element[0]->type != REDIS_REPLY_STRING
                || reply->element[0]->len >= sizeof(cursor)
                || reply->element[1]->type != REDIS_REPLY_ARRAY)
            {
                freeReplyObject(reply);
                tollctl_error(EX_UNAVAILABLE, "redis %s: SCAN: unexpected "
                              "reply", ctl->addr.text);
                goto failed;
            }

            rc = tollctl_recon_scan_add(reply->element[1], days, &n, &cap);

            if (rc != EX_OK) {
                freeReplyObject(reply);
                *ndays = n;
                return rc;
            }

            memcpy(cursor, reply->element[0]->str, reply->element[0]->len);
            cursor[reply->element[0]->len] = '\0';
            freeReplyObject(reply);

            if (strcmp(cursor, "0") == 0) {
                break;
            }
        }

        if (calls == TOLLCTL_SCAN_CALLS_MAX) {
            *ndays = n;
            return tollctl_error(EX_SOFTWARE, "SCAN did not finish in %d "
                                 "calls", TOLLCTL_SCAN_CALLS_MAX);
        }
    }

    if (n == 0) {
        return EX_OK;
    }

    qsort(*days, n, sizeof(char *), tollctl_str_cmp);

    /* a live hash and its mirror name the same day: keep it once */
    for (i = 0, j = 0; i < n; i++) {
        if (j > 0 && strcmp((*days)[j - 1], (*days)[i]) == 0) {
            free((*days)[i]);
            continue;
        }

        (*days)[j++] = (*days)[i];
    }

    *ndays = j;

    return EX_OK;

failed:

    *ndays = n;
    return EX_UNAVAILABLE;
}


/* the (buyer, day) of each usage hash or mirror of one SCAN reply */
static int
tollctl_recon_scan_add(const redisReply *keys, char ***days, size_t *n,
    size_t *cap)
{
    int                mirror;
    char               buyer[TOLL_NAME_BUYER_LEN_MAX + 1];
    char               day[TOLL_NAME_DAY_LEN + 1], **grown, *pair;
    size_t             i;
    const redisReply  *key;

    for (i = 0; i < keys->elements; i++) {
        key = keys->element[i];

        if (key->type != REDIS_REPLY_STRING
            || tollctl_usage_name(key->str, key->len, buyer, day, &mirror)
               != 0)
        {
            continue;
        }

        if (*n == *cap) {
            *cap = *cap ? 2 * *cap : TOLLCTL_RECONCILE_BATCH_MAX;

            if (*cap > TOLLCTL_RECONCILE_PARTS_MAX) {
                return tollctl_error(EX_SOFTWARE, "more than %d usage "
                                     "hashes in Redis: too many to "
                                     "reconcile at once",
                                     TOLLCTL_RECONCILE_PARTS_MAX);
            }

            grown = realloc(*days, *cap * sizeof(char *));
            if (grown == NULL) {
                return tollctl_error(EX_OSERR, "out of memory");
            }

            *days = grown;
        }

        pair = malloc(strlen(buyer) + 1 + TOLL_NAME_DAY_LEN + 1);
        if (pair == NULL) {
            return tollctl_error(EX_OSERR, "out of memory");
        }

        sprintf(pair, "%s\n%s", buyer, day);
        (*days)[(*n)++] = pair;
    }

    return EX_OK;
}


/*
 * A day's usage hash and mirror in one MULTI: one consistent view (a
 * claim moves counts from one to the other).  Both are in the buyer's
 * hash slot, so each day's MULTI runs on one node of a Cluster; days of
 * different buyers are in different slots, so each day is a MULTI of
 * its own rather than one MULTI for a batch of days.
 */
int
tollctl_recon_hashes(tollctl_t *ctl, tollctl_recon_t *r, char **days,
    size_t ndays)
{
    int             rc;
    char           *nl, *end;
    char            live[TOLL_NAME_LEN_MAX + 1], mirror[TOLL_NAME_LEN_MAX + 1];
    size_t          i, k, len;
    redisReply     *exec;
    tollctl_cmd_t   cmds[2];

    rc = EX_OK;

    for (i = 0; i < ndays && rc == EX_OK; i++) {
        nl = strchr(days[i], '\n');
        len = (size_t) (nl - days[i]);

        end = toll_name_usage(live, days[i], len, nl + 1);
        *end = '\0';
        end = toll_name_usage(mirror, days[i], len, nl + 1);
        memcpy(end, TOLL_NAME_USAGE_MIRROR, sizeof(TOLL_NAME_USAGE_MIRROR));

        tollctl_cmd_init(&cmds[0], "HGETALL");
        tollctl_cmd_add_str(&cmds[0], live);
        tollctl_cmd_init(&cmds[1], "HGETALL");
        tollctl_cmd_add_str(&cmds[1], mirror);

        exec = tollctl_redis_exec_any(ctl, cmds, 2);

        if (exec == NULL) {
            rc = EX_UNAVAILABLE;
            break;
        }

        if (exec->type != REDIS_REPLY_ARRAY || exec->elements != 2) {
            rc = tollctl_error(EX_UNAVAILABLE, "redis %s: EXEC: unexpected "
                               "reply", ctl->addr.text);
        }

        *nl = '\0';

        for (k = 0; k < 2 && rc == EX_OK; k++) {
            rc = tollctl_recon_hash(r, cmds[k].argv[1], exec->element[k],
                                    days[i], nl + 1,
                                    k ? TOLLCTL_SRC_MIRROR
                                      : TOLLCTL_SRC_LIVE, NULL);
        }

        *nl = '\n';
        freeReplyObject(exec);
    }

    return rc;
}


/*
 * A usage hash, a mirror or a claim: fields "<service>:<metric>", values
 * int64 as decimal strings.  Metrics other than the four compared (errors,
 * latency_ms, provider) are not read.
 */
static int
tollctl_recon_hash(tollctl_recon_t *r, const char *name,
    const redisReply *hash, const char *buyer, const char *day,
    tollctl_src_e src, const char *batch)
{
    int              rc, m;
    size_t           i, first, slen;
    int64_t          v;
    tollctl_part_t  *p;
    redisReply      *field;

    if (hash->type == REDIS_REPLY_ERROR) {
        return tollctl_error(EX_DATAERR, "Redis key %s: %s: it is not a "
                             "usage hash, remove it or rename it", name,
                             hash->str);
    }

    if (hash->type != REDIS_REPLY_ARRAY || hash->elements % 2 != 0) {
        return tollctl_error(EX_UNAVAILABLE, "HGETALL %s: unexpected reply",
                             name);
    }

    if (hash->elements == 0) {
        return EX_OK;
    }

    first = r->nparts;

    if (src == TOLLCTL_SRC_MIRROR) {
        rc = tollctl_recon_add(r, buyer, day, "", 0, TOLLCTL_SRC_MIRROR_DAY,
                               NULL, &p);
        if (rc != EX_OK) {
            return rc;
        }

        first = r->nparts;
    }

    for (i = 0; i < hash->elements; i += 2) {
        field = hash->element[i];

        if (field->type != REDIS_REPLY_STRING
            || hash->element[i + 1]->type != REDIS_REPLY_STRING)
        {
            return tollctl_error(EX_UNAVAILABLE, "HGETALL %s: unexpected "
                                 "reply", name);
        }

        /*
         * errors, latency_ms, provider and unknown fields: not compared;
         * prepaid_micros and currency: for the balances, of live hashes
         * and claims
         */

        m = toll_usage_field_parse(field->str, field->len, &slen);

        if ((m == TOLL_USAGE_PREPAID || m == TOLL_USAGE_CURRENCY)
            && (src == TOLLCTL_SRC_LIVE || src == TOLLCTL_SRC_CLAIM))
        {
            p = tollctl_recon_find(r, first, field->str, slen);

            if (p == NULL) {
                rc = tollctl_recon_add(r, buyer, day, field->str, slen, src,
                                       batch, &p);
                if (rc != EX_OK) {
                    return rc;
                }
            }

            tollctl_recon_part_extra(p, m, hash->element[i + 1]);
            continue;
        }

        if (m < 0 || m >= TOLLCTL_METRICS) {
            continue;
        }

        if (toll_usage_count_parse(hash->element[i + 1]->str,
                                   hash->element[i + 1]->len, &v)
            != 0)
        {
            return tollctl_error(EX_DATAERR, "Redis key %s, field %.*s: "
                                 "\"%.*s\" is not a count; fix or remove "
                                 "the field", name, (int) field->len,
                                 field->str,
                                 (int) hash->element[i + 1]->len,
                                 hash->element[i + 1]->str);
        }

        p = tollctl_recon_find(r, first, field->str, slen);

        if (p == NULL) {
            if (r->nparts - first >= TOLLCTL_SERVICES_MAX) {
                return tollctl_error(EX_DATAERR, "Redis key %s holds more "
                                     "than %d services", name,
                                     TOLLCTL_SERVICES_MAX);
            }

            rc = tollctl_recon_add(r, buyer, day, field->str, slen, src,
                                   batch, &p);
            if (rc != EX_OK) {
                return rc;
            }
        }

        p->v[m] = v;
    }

    return EX_OK;
}


/* the part from parts[first] on that holds this service, or NULL */
static tollctl_part_t *
tollctl_recon_find(tollctl_recon_t *r, size_t first, const char *service,
    size_t len)
{
    size_t  j;

    for (j = first; j < r->nparts; j++) {
        if (strlen(r->parts[j].service) == len
            && memcmp(r->parts[j].service, service, len) == 0)
        {
            return &r->parts[j];
        }
    }

    return NULL;
}


static int
tollctl_str_cmp(const void *a, const void *b)
{
    return strcmp(*(char * const *) a, *(char * const *) b);
}


void
tollctl_strs_free(char **strs, size_t n)
{
    size_t  i;

    if (strs == NULL) {
        return;
    }

    for (i = 0; i < n; i++) {
        free(strs[i]);
    }

    free(strs);
}


/* buyer and day of a parsed name, as C strings of the caller's sizes */
static void
tollctl_name_buyer_day(const toll_name_t *n, char *buyer, char *day)
{
    memcpy(buyer, n->buyer, n->buyer_len);
    buyer[n->buyer_len] = '\0';
    memcpy(day, n->day, sizeof(n->day));
}


/* a usage hash's or mirror's name into buyer and day (lib/toll_names.c) */
static int
tollctl_usage_name(const char *name, size_t len, char *buyer, char *day,
    int *mirror)
{
    toll_name_t  n;

    if (toll_name_usage_parse(name, len, &n) != 0) {
        return -1;
    }

    tollctl_name_buyer_day(&n, buyer, day);
    *mirror = n.mirror;

    return 0;
}


/* a claim's name into buyer, day and batch */
static int
tollctl_claim_name(const char *name, size_t len, char *buyer, char *day,
    char *batch)
{
    toll_name_t  n;

    if (toll_name_claim_parse(name, len, &n) != 0) {
        return -1;
    }

    tollctl_name_buyer_day(&n, buyer, day);
    memcpy(batch, n.batch, sizeof(n.batch));

    return 0;
}


/*
 * A usage hash's prepaid_micros or currency; one that does not read as
 * toll-settle reads it is left out (the drain quarantines such a hash).
 */
static void
tollctl_recon_part_extra(tollctl_part_t *p, int m, const redisReply *value)
{
    int64_t  v;

    if (m == TOLL_USAGE_CURRENCY) {
        if (toll_money_currency_valid(value->str, value->len)) {
            memcpy(p->currency, value->str, value->len);
            p->currency[value->len] = '\0';
        }

        return;
    }

    if (toll_usage_count_parse(value->str, value->len, &v) == 0) {
        p->prepaid = v;
    }
}


/*
 * Every buyer with a balance hash (SCAN), each one's hash and journal in
 * one MULTI, and the journal's records.
 */
int
tollctl_recon_balances(tollctl_t *ctl, tollctl_recon_t *r)
{
    int      rc;
    char   **buyers;
    size_t   i, n;

    buyers = NULL;
    n = 0;

    rc = tollctl_recon_scan_balances(ctl, &buyers, &n);

    for (i = 0; i < n && rc == EX_OK; i++) {
        rc = tollctl_recon_balance(ctl, r, buyers[i]);
    }

    tollctl_strs_free(buyers, n);

    return rc;
}


/* "toll:balance:{<buyer>}": the buyer, as the drain's readers take one;
 * from each primary of a Cluster in turn */
static int
tollctl_recon_scan_balances(tollctl_t *ctl, char ***buyers, size_t *n)
{
    int       rc;
    unsigned  node;

    rc = EX_OK;

    for (node = 0; node < toll_store_nodes(ctl->redis) && rc == EX_OK;
         node++)
    {
        rc = tollctl_recon_scan_balances_node(ctl, node, buyers, n);
    }

    return rc;
}


static int
tollctl_recon_scan_balances_node(tollctl_t *ctl, unsigned node,
    char ***buyers, size_t *n)
{
    char            cursor[32], **grown;
    size_t          i, cap, calls, blen;
    const char     *b;
    redisReply     *reply, *key;
    tollctl_cmd_t   cmd;

    /* what the earlier nodes' buyers took: a power of two's worth */
    for (cap = 0; cap < *n; cap = cap ? 2 * cap : TOLLCTL_RECONCILE_BATCH_MAX)
    {
        /* void */
    }

    snprintf(cursor, sizeof(cursor), "0");

    for (calls = 0; calls < TOLLCTL_SCAN_CALLS_MAX; calls++) {
        tollctl_cmd_init(&cmd, "SCAN");
        tollctl_cmd_add_str(&cmd, cursor);
        tollctl_cmd_add_str(&cmd, "MATCH");
        tollctl_cmd_add_str(&cmd, TOLL_NAME_BALANCE_PREFIX "*"
                                  TOLL_NAME_TAG_END);
        tollctl_cmd_add_str(&cmd, "COUNT");
        tollctl_cmd_add_str(&cmd, TOLLCTL_SCAN_COUNT);

        reply = tollctl_redis_run_node(ctl, node, &cmd);
        if (reply == NULL) {
            return EX_UNAVAILABLE;
        }

        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2
            || reply->element[0]->type != REDIS_REPLY_STRING
            || reply->element[0]->len >= sizeof(cursor)
            || reply->element[1]->type != REDIS_REPLY_ARRAY)
        {
            freeReplyObject(reply);
            return tollctl_error(EX_UNAVAILABLE, "redis %s: SCAN: "
                                 "unexpected reply", ctl->addr.text);
        }

        for (i = 0; i < reply->element[1]->elements; i++) {
            key = reply->element[1]->element[i];

            if (key->type != REDIS_REPLY_STRING
                || toll_name_balance_parse(key->str, key->len, &b, &blen)
                   != 0)
            {
                continue;
            }

            if (*n == cap) {
                cap = cap ? 2 * cap : TOLLCTL_RECONCILE_BATCH_MAX;
                grown = (cap > TOLLCTL_RECONCILE_PARTS_MAX) ? NULL
                        : realloc(*buyers, cap * sizeof(char *));

                if (grown == NULL) {
                    freeReplyObject(reply);
                    return tollctl_error(EX_OSERR, "too many balances, or "
                                         "out of memory");
                }

                *buyers = grown;
            }

            (*buyers)[*n] = strndup(b, blen);

            if ((*buyers)[*n] == NULL) {
                freeReplyObject(reply);
                return tollctl_error(EX_OSERR, "out of memory");
            }

            (*n)++;
        }

        memcpy(cursor, reply->element[0]->str, reply->element[0]->len);
        cursor[reply->element[0]->len] = '\0';
        freeReplyObject(reply);

        if (strcmp(cursor, "0") == 0) {
            return EX_OK;
        }
    }

    return tollctl_error(EX_SOFTWARE, "SCAN did not finish in %d calls",
                         TOLLCTL_SCAN_CALLS_MAX);
}


static int
tollctl_recon_balance(tollctl_t *ctl, tollctl_recon_t *r, const char *buyer)
{
    int             rc;
    char            name[TOLL_NAME_LEN_MAX + 1];
    char            journal[TOLL_NAME_LEN_MAX + 1];
    char           *end;
    size_t          len;
    redisReply     *exec;
    tollctl_cmd_t   cmds[2];

    len = strlen(buyer);

    end = toll_name_balance(name, buyer, len, "");
    *end = '\0';
    end = toll_name_balance(journal, buyer, len, TOLL_NAME_BALANCE_JOURNAL);
    *end = '\0';

    tollctl_cmd_init(&cmds[0], "HGETALL");
    tollctl_cmd_add_str(&cmds[0], name);
    tollctl_cmd_init(&cmds[1], "SMEMBERS");
    tollctl_cmd_add_str(&cmds[1], journal);

    exec = tollctl_redis_exec(ctl, cmds, 2);

    if (exec == NULL || exec->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(exec);
        return EX_UNAVAILABLE;
    }

    rc = tollctl_recon_balance_hash(r, name, buyer, exec->element[0]);

    if (rc == EX_OK) {
        rc = tollctl_recon_journal(ctl, r, buyer, exec->element[1]);
    }

    freeReplyObject(exec);

    return rc;
}


/* "<CUR>:<field>" = an int64 in decimal; holds and times not summed */
static int
tollctl_recon_balance_hash(tollctl_recon_t *r, const char *name,
    const char *buyer, const redisReply *hash)
{
    int                rc;
    char               text[32];
    size_t             i, clen;
    int64_t            v, *to;
    const char        *colon, *f;
    tollctl_bal_t     *b;
    const redisReply  *field, *value;

    if (hash->type != REDIS_REPLY_ARRAY || hash->elements % 2 != 0) {
        return tollctl_error(EX_UNAVAILABLE, "HGETALL %s: unexpected reply",
                             name);
    }

    for (i = 0; i < hash->elements; i += 2) {
        field = hash->element[i];
        value = hash->element[i + 1];

        if (field->type != REDIS_REPLY_STRING
            || value->type != REDIS_REPLY_STRING
            || (colon = memchr(field->str, ':', field->len)) == NULL)
        {
            continue;
        }

        clen = (size_t) (colon - field->str);
        f = colon + 1;

        if (!toll_money_currency_valid(field->str, clen)
            || strchr(f, ':') != NULL)
        {
            continue;                   /* hold:<node>, seen:<node> */
        }

        rc = tollctl_recon_bal(r, buyer, field->str, clen, &b);
        if (rc != EX_OK) {
            return rc;
        }

        to = (strcmp(f, TOLL_BALANCE_CREDITS) == 0) ? &b->credits
             : (strcmp(f, TOLL_BALANCE_DEBITS) == 0) ? &b->debits
             : (strcmp(f, TOLL_BALANCE_AVAILABLE) == 0) ? &b->available
             : (strcmp(f, TOLL_BALANCE_HELD) == 0) ? &b->held
             : (strcmp(f, TOLL_BALANCE_SPENT) == 0) ? &b->spent : NULL;

        if (to == NULL) {
            continue;
        }

        if (value->len >= sizeof(text)
            || (memcpy(text, value->str, value->len),
                text[value->len] = '\0',
                toll_parse_int64(text, INT64_MIN, INT64_MAX, &v) != 0))
        {
            return tollctl_error(EX_DATAERR, "Redis key %s, field %.*s: "
                                 "\"%.*s\" is not an amount; fix the "
                                 "field", name, (int) field->len,
                                 field->str, (int) value->len, value->str);
        }

        *to = v;
    }

    return EX_OK;
}


/* the records of the journal's refs, a pipeline of HGETs at a time */
static int
tollctl_recon_journal(tollctl_t *ctl, tollctl_recon_t *r, const char *buyer,
    const redisReply *refs)
{
    int             rc;
    char            name[TOLL_NAME_LEN_MAX + 1], *end;
    size_t          i, j, n;
    redisReply     *replies[TOLLCTL_RECONCILE_BATCH_MAX];
    tollctl_cmd_t   cmds[TOLLCTL_RECONCILE_BATCH_MAX];

    if (refs->type != REDIS_REPLY_ARRAY) {
        return tollctl_error(EX_UNAVAILABLE, "SMEMBERS of a journal: "
                             "unexpected reply");
    }

    end = toll_name_balance(name, buyer, strlen(buyer),
                            TOLL_NAME_BALANCE_REFS);
    *end = '\0';
    rc = EX_OK;

    for (i = 0; i < refs->elements && rc == EX_OK; i += n) {
        n = refs->elements - i;
        if (n > TOLLCTL_RECONCILE_BATCH_MAX) {
            n = TOLLCTL_RECONCILE_BATCH_MAX;
        }

        for (j = 0; j < n; j++) {
            tollctl_cmd_init(&cmds[j], "HGET");
            tollctl_cmd_add_str(&cmds[j], name);
            tollctl_cmd_add(&cmds[j], refs->element[i + j]->str,
                            refs->element[i + j]->len);
        }

        if (tollctl_redis_pipeline(ctl, cmds, n, replies) != 0) {
            return EX_UNAVAILABLE;
        }

        for (j = 0; j < n; j++) {
            if (rc == EX_OK && replies[j]->type == REDIS_REPLY_STRING) {
                rc = tollctl_recon_jrec(r, buyer, refs->element[i + j]->str,
                                        refs->element[i + j]->len,
                                        replies[j]->str, replies[j]->len);
            }

            freeReplyObject(replies[j]);
        }
    }

    return rc;
}
