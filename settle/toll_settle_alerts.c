/*
 * toll-settle: balance alerts (docs/settle.md, "Balance alerts").
 *
 * A pass notes the buyers whose prepaid balance it moved: a journal
 * posted (toll_settle_balance.c), a usage batch that a balance paid for,
 * or one found committed by a run that died (toll_settle_post.c).  At
 * the pass's end each one's balance hash is read once (HGETALL), and for
 * each currency credited, balance = credits - debits - spent:
 *
 *     balance <= 0                       balance.exhausted
 *     0 < balance <= balance_low CUR     balance.low
 *
 * A start notes the buyers of the ledger's last transactions that moved
 * a balance: a run that died after a delete and before its alerts had
 * noted them in memory only.
 *
 * The ledger writes each alert with its event once per (buyer, currency,
 * kind, credits total) (lib/toll_ledger_alert.c): the next passes see the
 * same balance and send nothing; a top-up raises the credits and re-arms
 * both.  Only moved buyers are read, never a SCAN of every balance: a
 * balance no pass moves does not cross a threshold.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "toll_ledger.h"
#include "toll_log.h"
#include "toll_money.h"
#include "toll_names.h"
#include "toll_parse.h"
#include "toll_settle_alerts.h"
#include "toll_settle_drain_int.h"


/* "toll:balance:{<buyer>}" and a NUL */
#define TOLL_SETTLE_ALERTS_NAME_MAX                                          \
    (toll_name_len(TOLL_NAME_BALANCE_PREFIX) + TOLL_NAME_BUYER_LEN_MAX       \
     + toll_name_len(TOLL_NAME_TAG_END) + 1)

#define TOLL_SETTLE_ALERTS_CREDITS   0x01
#define TOLL_SETTLE_ALERTS_DEBITS    0x02
#define TOLL_SETTLE_ALERTS_SPENT     0x04


/* one currency of a buyer's balance hash */
typedef struct {
    char        currency[TOLL_MONEY_CURRENCY_LEN_MAX + 1];
    unsigned    seen;                   /* TOLL_SETTLE_ALERTS_* */
    int64_t     credits;
    int64_t     debits;
    int64_t     spent;
} toll_settle_alerts_cur_t;


static void toll_settle_alerts_noted(void *ctx, const char *buyer);
static int toll_settle_alerts_cmp(const void *a, const void *b);
static int toll_settle_alerts_buyer(toll_settle_drain_t *d,
    const char *buyer);
static size_t toll_settle_alerts_read(const char *buyer,
    const redisReply *r, toll_settle_alerts_cur_t *cur);
static int toll_settle_alerts_field(const char *buyer, const char *field,
    size_t len, const char *value, toll_settle_alerts_cur_t *cur,
    size_t *n);
static int toll_settle_alerts_check(toll_settle_drain_t *d,
    const char *buyer, const toll_settle_alerts_cur_t *c);
static int64_t toll_settle_alerts_low(const toll_settle_conf_t *conf,
    const char *currency);


void
toll_settle_alerts_note(toll_settle_drain_t *d, const char *buyer)
{
    size_t   cap;
    char   **p;

    if (d->alert_nbuyers == d->alert_cap) {
        cap = d->alert_cap ? 2 * d->alert_cap : 64;

        if (cap > TOLL_SETTLE_ALERTS_BUYERS_MAX) {
            cap = TOLL_SETTLE_ALERTS_BUYERS_MAX;
        }

        p = (cap > d->alert_cap)
            ? realloc(d->alert_buyers, cap * sizeof(char *)) : NULL;

        if (p == NULL) {
            goto full;
        }

        d->alert_buyers = p;
        d->alert_cap = cap;
    }

    d->alert_buyers[d->alert_nbuyers] = strdup(buyer);

    if (d->alert_buyers[d->alert_nbuyers] == NULL) {
        goto full;
    }

    d->alert_nbuyers++;

    return;

full:

    if (!d->alert_full_said) {
        d->alert_full_said = 1;
        toll_log("more buyers moved in one pass than the balance alerts "
                 "keep (%d, or out of memory); the others are checked when "
                 "their balance next moves", TOLL_SETTLE_ALERTS_BUYERS_MAX);
    }
}


int
toll_settle_alerts_pass(toll_settle_drain_t *d)
{
    int     rc;
    size_t  i;

    toll_settle_crash_point(TOLL_SETTLE_STEP_MOVED);

    if (d->alert_nbuyers == 0) {
        return 0;
    }

    /* a buyer noted by several batches is read once */
    qsort(d->alert_buyers, d->alert_nbuyers, sizeof(char *),
          toll_settle_alerts_cmp);

    rc = 0;

    for (i = 0; i < d->alert_nbuyers && rc == 0; i++) {
        if (i > 0 && strcmp(d->alert_buyers[i], d->alert_buyers[i - 1])
                     == 0)
        {
            continue;
        }

        rc = toll_settle_alerts_buyer(d, d->alert_buyers[i]);
    }

    if (rc != 0) {
        /* all are checked again: an alert sent is not sent twice */
        return rc;
    }

    for (i = 0; i < d->alert_nbuyers; i++) {
        free(d->alert_buyers[i]);
    }

    d->alert_nbuyers = 0;
    d->alert_full_said = 0;

    return 0;
}


int
toll_settle_alerts_recover(toll_settle_drain_t *d)
{
    int  rc;

    rc = toll_ledger_recent_balance_buyers(d->ledger,
                                           TOLL_SETTLE_ALERTS_RECOVER_TXS,
                                           toll_settle_alerts_noted, d);
    if (rc != TOLL_LEDGER_OK) {
        fprintf(stderr, "toll-settle: ledger: %s\n",
                toll_ledger_errmsg(d->ledger));
        return (rc == TOLL_LEDGER_BUSY) ? EX_TEMPFAIL : EX_SOFTWARE;
    }

    return 0;
}


static void
toll_settle_alerts_noted(void *ctx, const char *buyer)
{
    toll_settle_alerts_note(ctx, buyer);
}


void
toll_settle_alerts_free(toll_settle_drain_t *d)
{
    size_t  i;

    for (i = 0; i < d->alert_nbuyers; i++) {
        free(d->alert_buyers[i]);
    }

    free(d->alert_buyers);

    d->alert_buyers = NULL;
    d->alert_nbuyers = 0;
    d->alert_cap = 0;
}


static int
toll_settle_alerts_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}


/* one buyer: its hash read once, each currency checked */
static int
toll_settle_alerts_buyer(toll_settle_drain_t *d, const char *buyer)
{
    int                        rc;
    char                       key[TOLL_SETTLE_ALERTS_NAME_MAX], *end;
    size_t                     i, n, len;
    redisReply                *r;
    const char                *argv[2];
    size_t                     argvlen[2];
    toll_settle_alerts_cur_t   cur[TOLL_SETTLE_ALERTS_CURRENCIES_MAX];

    len = strlen(buyer);

    if (!toll_name_buyer_valid(buyer, len)) {
        return 0;
    }

    end = toll_name_balance(key, buyer, len, "");
    *end = '\0';

    argv[0] = "HGETALL";
    argvlen[0] = 7;
    argv[1] = key;
    argvlen[1] = (size_t) (end - key);

    r = toll_settle_cmd(d, 2, argv, argvlen);

    if (r != NULL && r->type == REDIS_REPLY_ERROR
        && strncmp(r->str, "WRONGTYPE", 9) == 0)
    {
        /* not a balance: the buyer's alone, said by the balance pass */
        freeReplyObject(r);
        return 0;
    }

    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        d->redis_errors++;
        return toll_settle_redis_failed(d, "HGETALL of a balance", r);
    }

    n = toll_settle_alerts_read(buyer, r, cur);
    freeReplyObject(r);

    rc = 0;

    for (i = 0; i < n && rc == 0; i++) {
        rc = toll_settle_alerts_check(d, buyer, &cur[i]);
    }

    return rc;
}


/* the currencies of an HGETALL answer into cur; how many */
static size_t
toll_settle_alerts_read(const char *buyer, const redisReply *r,
    toll_settle_alerts_cur_t *cur)
{
    size_t             i, n;
    const redisReply  *f, *v;

    n = 0;

    for (i = 0; i + 1 < r->elements; i += 2) {
        f = r->element[i];
        v = r->element[i + 1];

        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            continue;
        }

        if (toll_settle_alerts_field(buyer, f->str, f->len, v->str, cur, &n)
            != 0)
        {
            break;
        }
    }

    return n;
}


/*
 * "<CUR>:credits", ":debits" or ":spent" into its currency's slot; other
 * fields (available, held, hold:<node>, seen:<node>) are not the
 * balance's sum.  -1 when there are more currencies than slots.
 */
static int
toll_settle_alerts_field(const char *buyer, const char *field, size_t len,
    const char *value, toll_settle_alerts_cur_t *cur, size_t *n)
{
    char         text[TOLL_NAME_TEXT_MAX], ftext[TOLL_NAME_TEXT_MAX];
    size_t       i, clen;
    int64_t      v, *slot;
    unsigned     bit;
    const char  *colon, *name;

    colon = memchr(field, ':', len);
    if (colon == NULL) {
        return 0;
    }

    clen = (size_t) (colon - field);
    name = colon + 1;

    if (strcmp(name, TOLL_BALANCE_CREDITS) == 0) {
        bit = TOLL_SETTLE_ALERTS_CREDITS;

    } else if (strcmp(name, TOLL_BALANCE_DEBITS) == 0) {
        bit = TOLL_SETTLE_ALERTS_DEBITS;

    } else if (strcmp(name, TOLL_BALANCE_SPENT) == 0) {
        bit = TOLL_SETTLE_ALERTS_SPENT;

    } else {
        return 0;
    }

    if (!toll_money_currency_valid(field, clen)
        || toll_parse_int64(value, INT64_MIN, INT64_MAX, &v) != 0)
    {
        toll_name_text(text, buyer, strlen(buyer));
        toll_name_text(ftext, field, len);
        toll_log("balance alerts: buyer \"%s\" has a field \"%s\" that is "
                 "not a currency's int64; left out", text, ftext);
        return 0;
    }

    for (i = 0; i < *n; i++) {
        if (strlen(cur[i].currency) == clen
            && memcmp(cur[i].currency, field, clen) == 0)
        {
            break;
        }
    }

    if (i == *n) {
        if (*n == TOLL_SETTLE_ALERTS_CURRENCIES_MAX) {
            return -1;
        }

        memset(&cur[i], 0, sizeof(toll_settle_alerts_cur_t));
        memcpy(cur[i].currency, field, clen);
        (*n)++;
    }

    slot = (bit == TOLL_SETTLE_ALERTS_CREDITS) ? &cur[i].credits
           : (bit == TOLL_SETTLE_ALERTS_DEBITS) ? &cur[i].debits
           : &cur[i].spent;

    *slot = v;
    cur[i].seen |= bit;

    return 0;
}


/*
 * One currency: an alert due sent once.  A currency never credited has
 * no balance to run out of; a sum beyond int64 is a broken hash, said
 * and left (tollctl reconcile tells more).
 */
static int
toll_settle_alerts_check(toll_settle_drain_t *d, const char *buyer,
    const toll_settle_alerts_cur_t *c)
{
    int                  rc, sent;
    char                 text[TOLL_NAME_TEXT_MAX];
    int64_t              balance, low;
    toll_ledger_alert_t  a;

    if (!(c->seen & TOLL_SETTLE_ALERTS_CREDITS) || c->credits <= 0) {
        return 0;
    }

    if (c->debits == INT64_MIN || c->spent == INT64_MIN
        || toll_money_add(c->credits, -c->debits, &balance) != TOLL_MONEY_OK
        || toll_money_add(balance, -c->spent, &balance) != TOLL_MONEY_OK)
    {
        toll_name_text(text, buyer, strlen(buyer));
        toll_log("balance alerts: buyer \"%s\"'s %s balance overflows "
                 "int64; left out", text, c->currency);
        return 0;
    }

    low = toll_settle_alerts_low(d->conf, c->currency);

    memset(&a, 0, sizeof(a));
    a.buyer = buyer;
    a.currency = c->currency;
    a.credits_micros = c->credits;
    a.balance_micros = balance;

    if (balance <= 0) {
        a.kind = TOLL_LEDGER_ALERT_EXHAUSTED;

    } else if (low > 0 && balance <= low) {
        a.kind = TOLL_LEDGER_ALERT_LOW;
        a.threshold_micros = low;

    } else {
        return 0;
    }

    rc = toll_ledger_balance_alert(d->ledger, &a, &sent);

    if (rc == TOLL_LEDGER_INVALID) {
        /* a buyer the ledger cannot name: its usage is quarantined too */
        return 0;
    }

    if (rc != TOLL_LEDGER_OK) {
        toll_log("ledger: %s", toll_ledger_errmsg(d->ledger));
        d->ledger_errors++;
        return (rc == TOLL_LEDGER_BUSY) ? TOLL_SETTLE_DRAIN_AGAIN
                                        : EX_SOFTWARE;
    }

    if (!sent) {
        return 0;
    }

    toll_settle_crash_point(TOLL_SETTLE_STEP_ALERT);

    if (a.kind == TOLL_LEDGER_ALERT_LOW) {
        d->alerts_low++;

    } else {
        d->alerts_exhausted++;
    }

    if (d->conf->verbose) {
        toll_name_text(text, buyer, strlen(buyer));
        toll_log("balance alert: buyer \"%s\", %s, %s", text, c->currency,
                 (a.kind == TOLL_LEDGER_ALERT_LOW)
                 ? TOLL_LEDGER_EVENT_BALANCE_LOW
                 : TOLL_LEDGER_EVENT_BALANCE_EXHAUSTED);
    }

    return 0;
}


/* the currency's balance_low, or 0: none */
static int64_t
toll_settle_alerts_low(const toll_settle_conf_t *conf, const char *currency)
{
    size_t  i;

    for (i = 0; i < conf->nlows; i++) {
        if (strcmp(conf->lows[i].currency, currency) == 0) {
            return conf->lows[i].micros;
        }
    }

    return 0;
}
