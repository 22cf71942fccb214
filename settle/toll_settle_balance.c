/*
 * toll-settle: prepaid balances' journals into the ledger (docs/settle.md,
 * "Prepaid balances").
 *
 * tollctl balance (lua/balance.lua) writes each credit, debit or refund
 * of a buyer's balance once: its record "<kind> <CUR> <micros> <unix>"
 * under its ref in toll:balance:{<buyer>}:refs (kept forever), the ref
 * into the buyer's journal toll:balance:{<buyer>}:journal, and the buyer
 * into toll:balance:index.  Each pass, after the usage drain:
 *
 *     1. some buyers of the index (SRANDMEMBER: a bounded, fair share);
 *     2. some refs of each one's journal, and their records (HMGET);
 *     3. the records parsed strictly and posted in one ledger
 *        transaction, each once by (buyer, ref);
 *     4. the posted refs SREM'd from the journal;
 *     5. the buyer out of the index if its journal is empty, never
 *        while a new ref waits (SCARD, SREM, SCARD again: one slot each,
 *        see toll_settle_balance_unindex()).
 *
 * A death between 3 and 4 leaves posted refs in the journal: the next
 * pass posts them again, which the ledger answers as posted before
 * (the same content) and writes nothing (TOLL_SETTLE_CRASH=commit kills
 * the pass there, as after a usage batch's COMMIT).  A record that cannot
 * be read or that the ledger refuses stays in the journal, said once in
 * the log; the buyer's other records and every other buyer go on.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "toll_ledger.h"
#include "toll_log.h"
#include "toll_names.h"
#include "toll_settle_alerts.h"
#include "toll_settle_balance.h"
#include "toll_settle_drain_int.h"


/* "toll:balance:{<buyer>}:journal" and a NUL */
#define TOLL_SETTLE_BALANCE_NAME_MAX                                         \
    (toll_name_len(TOLL_NAME_BALANCE_PREFIX) + TOLL_NAME_BUYER_LEN_MAX       \
     + toll_name_len(TOLL_NAME_TAG_END)                                      \
     + toll_name_len(TOLL_NAME_BALANCE_JOURNAL) + 1)

#define TOLL_SETTLE_FNV_OFFSET       UINT64_C(14695981039346656037)
#define TOLL_SETTLE_FNV_PRIME        UINT64_C(1099511628211)


/* one record in hand: its text split in place into the ledger's fields */
typedef struct {
    char                      text[TOLL_LEDGER_BALANCE_RECORD_LEN_MAX + 1];
} toll_settle_record_t;


/* what one buyer's step needs, allocated once a pass */
typedef struct {
    char                      journal[TOLL_SETTLE_BALANCE_NAME_MAX];
    char                      refs[TOLL_SETTLE_BALANCE_NAME_MAX];
    const char               *argv[TOLL_SETTLE_BALANCE_REFS_MAX + 2];
    size_t                    argvlen[TOLL_SETTLE_BALANCE_REFS_MAX + 2];
    toll_settle_record_t      rec[TOLL_SETTLE_BALANCE_REFS_MAX];
    toll_ledger_balance_tx_t  tx[TOLL_SETTLE_BALANCE_REFS_MAX];
} toll_settle_balance_work_t;


static int toll_settle_balance_buyer(toll_settle_drain_t *d,
    toll_settle_balance_work_t *w, const char *buyer, size_t len);
static int toll_settle_balance_read(toll_settle_drain_t *d,
    toll_settle_balance_work_t *w, const char *buyer, redisReply **refs,
    redisReply **records);
static size_t toll_settle_balance_parse_all(toll_settle_drain_t *d,
    toll_settle_balance_work_t *w, const char *buyer,
    const redisReply *refs, const redisReply *records);
static int toll_settle_balance_post(toll_settle_drain_t *d,
    toll_settle_balance_work_t *w, const char *buyer, size_t n);
static int toll_settle_balance_srem(toll_settle_drain_t *d,
    toll_settle_balance_work_t *w, const char *buyer, size_t n,
    size_t *left);
static int toll_settle_balance_unindex(toll_settle_drain_t *d,
    const char *journal, const char *buyer, size_t len);
static int toll_settle_balance_wrongtype(toll_settle_drain_t *d,
    const char *buyer, const char *key, redisReply *r);
static void toll_settle_balance_say(toll_settle_drain_t *d,
    const char *buyer, const char *ref, size_t ref_len, const char *why);
static redisReply *toll_settle_balance_cmd(toll_settle_drain_t *d,
    const char *cmd, const char *key, const char *arg, size_t arg_len);


int
toll_settle_balance_pass(toll_settle_drain_t *d)
{
    int                          rc;
    size_t                       i;
    redisReply                  *buyers, *b;
    toll_settle_balance_work_t  *w;

    buyers = toll_settle_balance_cmd(d, "SRANDMEMBER",
                                     TOLL_NAME_BALANCE_INDEX,
                                     TOLL_STR(TOLL_SETTLE_BALANCE_BUYERS_MAX),
                                     toll_name_len(TOLL_STR(
                                         TOLL_SETTLE_BALANCE_BUYERS_MAX)));

    if (buyers == NULL || buyers->type != REDIS_REPLY_ARRAY) {
        d->redis_errors++;
        return toll_settle_redis_failed(d, "SRANDMEMBER "
                                        TOLL_NAME_BALANCE_INDEX, buyers);
    }

    if (buyers->elements == 0) {
        freeReplyObject(buyers);
        return 0;
    }

    w = malloc(sizeof(toll_settle_balance_work_t));
    if (w == NULL) {
        freeReplyObject(buyers);
        toll_log("out of memory for the balances' pass");
        return EX_OSERR;
    }

    rc = 0;

    for (i = 0; i < buyers->elements && rc == 0; i++) {
        b = buyers->element[i];

        if (b->type == REDIS_REPLY_STRING) {
            rc = toll_settle_balance_buyer(d, w, b->str, b->len);
        }
    }

    free(w);
    freeReplyObject(buyers);

    return rc;
}


/* a buyer as every reader of a usage name takes it (lib/toll_names.h) */
static int
toll_settle_balance_buyer(toll_settle_drain_t *d,
    toll_settle_balance_work_t *w, const char *buyer, size_t len)
{
    int          rc;
    char        *end;
    size_t       n, left;
    redisReply  *refs, *records;

    if (!toll_name_buyer_valid(buyer, len)) {
        toll_settle_balance_say(d, buyer, "", 0, "not a buyer's name; "
                                "remove it from " TOLL_NAME_BALANCE_INDEX);
        return 0;
    }

    end = toll_name_balance(w->journal, buyer, len,
                            TOLL_NAME_BALANCE_JOURNAL);
    *end = '\0';
    end = toll_name_balance(w->refs, buyer, len, TOLL_NAME_BALANCE_REFS);
    *end = '\0';

    refs = NULL;
    records = NULL;

    rc = toll_settle_balance_read(d, w, buyer, &refs, &records);
    if (rc != 0 || refs == NULL) {
        return rc;
    }

    left = refs->elements;

    if (left > 0) {
        n = toll_settle_balance_parse_all(d, w, buyer, refs, records);

        rc = toll_settle_balance_post(d, w, buyer, n);

        if (rc == 0) {
            rc = toll_settle_balance_srem(d, w, buyer, n, &left);
        }
    }

    freeReplyObject(refs);
    freeReplyObject(records);

    if (rc != 0 || left > 0) {
        return rc;
    }

    return toll_settle_balance_unindex(d, w->journal, buyer, len);
}


/*
 * Some refs of the journal and their records.  A journal or refs key of
 * another type is the buyer's alone: said, and the others go on.
 */
static int
toll_settle_balance_read(toll_settle_drain_t *d,
    toll_settle_balance_work_t *w, const char *buyer, redisReply **refs,
    redisReply **records)
{
    size_t       i;
    redisReply  *r;

    r = toll_settle_balance_cmd(d, "SRANDMEMBER", w->journal,
                                TOLL_STR(TOLL_SETTLE_BALANCE_REFS_MAX),
                                toll_name_len(TOLL_STR(
                                    TOLL_SETTLE_BALANCE_REFS_MAX)));

    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        return toll_settle_balance_wrongtype(d, buyer, w->journal, r);
    }

    if (r->elements == 0) {
        *refs = r;
        return 0;
    }

    w->argv[0] = "HMGET";
    w->argvlen[0] = 5;
    w->argv[1] = w->refs;
    w->argvlen[1] = strlen(w->refs);

    for (i = 0; i < r->elements; i++) {
        w->argv[2 + i] = r->element[i]->str;
        w->argvlen[2 + i] = r->element[i]->len;
    }

    *records = toll_settle_cmd(d, (int) (2 + r->elements), w->argv,
                               w->argvlen);

    if (*records == NULL || (*records)->type != REDIS_REPLY_ARRAY
        || (*records)->elements != r->elements)
    {
        freeReplyObject(r);
        r = *records;
        *records = NULL;
        return toll_settle_balance_wrongtype(d, buyer, w->refs, r);
    }

    *refs = r;

    return 0;
}


/*
 * The records that parse into w->tx[0..n), in the order of refs; the
 * others said once and left.  w->tx[i].ref points into refs.
 */
static size_t
toll_settle_balance_parse_all(toll_settle_drain_t *d,
    toll_settle_balance_work_t *w, const char *buyer,
    const redisReply *refs, const redisReply *records)
{
    size_t             i, n;
    int64_t            t;
    const char        *why;
    const redisReply  *ref, *rec;

    n = 0;

    for (i = 0; i < refs->elements; i++) {
        ref = refs->element[i];
        rec = records->element[i];

        if (ref->type != REDIS_REPLY_STRING) {
            continue;
        }

        if (rec->type != REDIS_REPLY_STRING) {
            why = "no record of it in the refs hash";

        } else if (strlen(ref->str) != ref->len) {
            why = "the ref holds a NUL";

        } else {
            why = toll_ledger_balance_record(rec->str, rec->len,
                                             w->rec[n].text, &w->tx[n], &t);
        }

        if (why != NULL) {
            toll_settle_balance_say(d, buyer, ref->str, ref->len, why);
            continue;
        }

        w->tx[n].ref = ref->str;
        n++;
    }

    return n;
}


/*
 * One transaction for all; one each only when their sum would overflow
 * (one record alone cannot: its debits are its amount).
 */
static int
toll_settle_balance_post(toll_settle_drain_t *d,
    toll_settle_balance_work_t *w, const char *buyer, size_t n)
{
    int     rc;
    size_t  i;

    if (n == 0) {
        return 0;
    }

    rc = toll_ledger_post_balance(d->ledger, buyer, w->tx, n);

    for (i = 0; rc == TOLL_LEDGER_OVERFLOW && i < n; i++) {
        rc = toll_ledger_post_balance(d->ledger, buyer, &w->tx[i], 1);

        if (rc == TOLL_LEDGER_OVERFLOW || rc == TOLL_LEDGER_OK) {
            rc = (i + 1 < n) ? TOLL_LEDGER_OVERFLOW : TOLL_LEDGER_OK;
        }
    }

    if (rc == TOLL_LEDGER_INVALID) {
        /* the ledger cannot name the buyer: its records all wait */
        toll_settle_balance_say(d, buyer, "", 0,
                                toll_ledger_errmsg(d->ledger));
        for (i = 0; i < n; i++) {
            w->tx[i].rc = TOLL_LEDGER_INVALID;
            w->tx[i].refused = NULL;
        }

        return 0;
    }

    if (rc != TOLL_LEDGER_OK) {
        toll_log("ledger: %s", toll_ledger_errmsg(d->ledger));
        d->ledger_errors++;
        return (rc == TOLL_LEDGER_BUSY) ? TOLL_SETTLE_DRAIN_AGAIN
                                        : EX_SOFTWARE;
    }

    return 0;
}


/* the refs the ledger holds out of the journal; *left: what stays */
static int
toll_settle_balance_srem(toll_settle_drain_t *d,
    toll_settle_balance_work_t *w, const char *buyer, size_t n,
    size_t *left)
{
    size_t       i, m;
    redisReply  *r;

    m = 0;

    for (i = 0; i < n; i++) {
        if (w->tx[i].rc == TOLL_LEDGER_OK) {
            d->balance_txs++;
        }

        if (w->tx[i].rc == TOLL_LEDGER_INVALID) {
            if (w->tx[i].refused != NULL) {
                toll_settle_balance_say(d, buyer, w->tx[i].ref,
                                        strlen(w->tx[i].ref),
                                        w->tx[i].refused);
            }

            continue;
        }

        w->argv[2 + m] = w->tx[i].ref;
        w->argvlen[2 + m] = strlen(w->tx[i].ref);
        m++;
    }

    *left -= m;

    if (m == 0) {
        return 0;
    }

    /* in the ledger: the balance moved, the alerts look at it */
    toll_settle_alerts_note(d, buyer);

    toll_settle_crash_point(TOLL_SETTLE_STEP_COMMIT);

    w->argv[0] = "SREM";
    w->argvlen[0] = 4;
    w->argv[1] = w->journal;
    w->argvlen[1] = strlen(w->journal);

    r = toll_settle_cmd(d, (int) (2 + m), w->argv, w->argvlen);

    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        d->redis_errors++;
        return toll_settle_redis_failed(d, "SREM of a balance journal", r);
    }

    freeReplyObject(r);

    return 0;
}


/*
 * The buyer out of the index when its journal is empty.  The index
 * (toll:balance:index) and the journal (toll:balance:{B}:journal) are
 * in two hash slots, so no one WATCH/MULTI holds both on a Cluster: it
 * is done in three steps of one slot each, in an order that still never
 * leaves a ref in a journal whose buyer is out of the index:
 *
 *   1. SCARD journal: not empty, the buyer stays (nothing written);
 *   2. SREM index buyer;
 *   3. SCARD journal again: not empty, SADD index buyer.
 *
 * tollctl writes a ref into the journal (lua/balance.lua) and only then,
 * after that reply, SADDs the buyer to the index.  A ref written before
 * step 3 is seen by step 3, which puts the buyer back; a ref written
 * after step 3 is followed by tollctl's own SADD, which comes after our
 * SREM.  Either way the buyer is in the index while its journal holds a
 * ref.  What remains is a crash of toll-settle between steps 2 and 3
 * while a ref lands: the ref stays in its journal (nothing is lost from
 * the balance) and is posted once the buyer moves money again, which
 * SADDs it back; `tollctl reconcile` shows such a journal meanwhile.
 */
static int
toll_settle_balance_unindex(toll_settle_drain_t *d, const char *journal,
    const char *buyer, size_t len)
{
    int          step;
    redisReply  *r;

    r = NULL;

    for (step = 1; step <= 3; step++) {
        if (step == 2) {
            r = toll_settle_balance_cmd(d, "SREM", TOLL_NAME_BALANCE_INDEX,
                                        buyer, len);
            if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
                goto failed;
            }

            freeReplyObject(r);
            continue;
        }

        r = toll_settle_balance_cmd(d, "SCARD", journal, NULL, 0);
        if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
            goto failed;
        }

        if (r->integer == 0) {
            freeReplyObject(r);
            continue;
        }

        freeReplyObject(r);

        if (step == 1) {
            return 0;
        }

        r = toll_settle_balance_cmd(d, "SADD", TOLL_NAME_BALANCE_INDEX,
                                    buyer, len);
        if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
            goto failed;
        }

        freeReplyObject(r);
    }

    return 0;

failed:

    d->redis_errors++;

    return toll_settle_redis_failed(d, "the balance index's cleanup", r);
}


/* a key of the buyer's of another type: said once; others go on */
static int
toll_settle_balance_wrongtype(toll_settle_drain_t *d, const char *buyer,
    const char *key, redisReply *r)
{
    char  why[64 + TOLL_NAME_TEXT_MAX];
    char  text[TOLL_NAME_TEXT_MAX];

    if (r == NULL || r->type != REDIS_REPLY_ERROR
        || strncmp(r->str, "WRONGTYPE", 9) != 0)
    {
        d->redis_errors++;
        return toll_settle_redis_failed(d, "a balance journal's read", r);
    }

    toll_name_text(text, key, strlen(key));
    snprintf(why, sizeof(why), "%s is not of its type", text);

    toll_settle_balance_say(d, buyer, "", 0, why);
    freeReplyObject(r);

    return 0;
}


/*
 * Said once per (buyer, ref): a record left in a journal is met again
 * each pass.  The ring forgets the oldest after TOLL_SETTLE_BALANCE_
 * SAID_MAX, so a record left long ago may be said again: a reminder.
 */
static void
toll_settle_balance_say(toll_settle_drain_t *d, const char *buyer,
    const char *ref, size_t ref_len, const char *why)
{
    char      btext[TOLL_NAME_TEXT_MAX], rtext[TOLL_NAME_TEXT_MAX];
    size_t    i, blen, filled;
    uint64_t  h;

    blen = strnlen(buyer, TOLL_NAME_BUYER_LEN_MAX + 1);
    h = TOLL_SETTLE_FNV_OFFSET;

    for (i = 0; i < blen; i++) {
        h = (h ^ (unsigned char) buyer[i]) * TOLL_SETTLE_FNV_PRIME;
    }

    h = (h ^ '\n') * TOLL_SETTLE_FNV_PRIME;

    for (i = 0; i < ref_len; i++) {
        h = (h ^ (unsigned char) ref[i]) * TOLL_SETTLE_FNV_PRIME;
    }

    /* balance_nsaid counts from 0 to 2 * MAX: past MAX, all are filled */
    filled = (d->balance_nsaid < TOLL_SETTLE_BALANCE_SAID_MAX)
             ? d->balance_nsaid : TOLL_SETTLE_BALANCE_SAID_MAX;

    for (i = 0; i < filled; i++) {
        if (d->balance_said[i] == h) {
            return;
        }
    }

    d->balance_said[d->balance_nsaid % TOLL_SETTLE_BALANCE_SAID_MAX] = h;

    if (++d->balance_nsaid == 2 * TOLL_SETTLE_BALANCE_SAID_MAX) {
        d->balance_nsaid = TOLL_SETTLE_BALANCE_SAID_MAX;
    }

    toll_name_text(btext, buyer, blen);

    if (ref_len == 0) {
        toll_log("balances of buyer \"%s\" left in Redis: %s", btext, why);
        return;
    }

    toll_name_text(rtext, ref, ref_len);
    toll_log("balance record \"%s\" of buyer \"%s\" left in its journal: "
             "%s", rtext, btext, why);
}


/* "<cmd>", "<cmd> <key>" or "<cmd> <key> <arg>" */
static redisReply *
toll_settle_balance_cmd(toll_settle_drain_t *d, const char *cmd,
    const char *key, const char *arg, size_t arg_len)
{
    int          argc;
    const char  *argv[3];
    size_t       argvlen[3];

    argc = 1;
    argv[0] = cmd;
    argvlen[0] = strlen(cmd);

    if (key != NULL) {
        argv[argc] = key;
        argvlen[argc++] = strlen(key);
    }

    if (arg != NULL) {
        argv[argc] = arg;
        argvlen[argc++] = arg_len;
    }

    return toll_settle_cmd(d, argc, argv, argvlen);
}
