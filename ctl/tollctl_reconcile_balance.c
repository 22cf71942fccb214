/*
 * tollctl reconcile: prepaid balances (docs/tollctl.md, "reconcile").
 * Per buyer and currency, two checks:
 *
 *     Redis        credits - debits = available + held + spent
 *     the ledger   prepaid:<CUR>:<buyer> (credits - debits) =
 *                  Redis's credits - debits - spent
 *                  - what the journal holds that the ledger does not
 *                    (a credit adds to the balance, a debit or refund
 *                    takes from it)
 *                  + what usage not yet posted took of it (the
 *                    prepaid_micros of usage hashes and open claims,
 *                    which spent counts and the ledger does not yet)
 *
 * Redis's side is read by tollctl_reconcile_redis.c; the ledger's is
 * read here, in the ledger's read transaction of tollctl_reconcile.c.
 * All sums are int64 and checked: one that overflows is a difference.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include <jansson.h>

#include "toll_key.h"
#include "toll_ledger.h"
#include "toll_money.h"
#include "tollctl.h"
#include "tollctl_reconcile.h"


static int tollctl_recon_bal_usage(tollctl_recon_t *r);
static json_t *tollctl_recon_bal_row(const tollctl_bal_t *b,
    int64_t redis_diff, int64_t expected, int64_t ledger_diff);
static int tollctl_bal_cmp(const void *a, const void *b);


/* the balance of (buyer, currency), added when new */
int
tollctl_recon_bal(tollctl_recon_t *r, const char *buyer,
    const char *currency, size_t currency_len, tollctl_bal_t **out)
{
    size_t          i, cap;
    tollctl_bal_t  *grown, *b;

    if (currency_len > TOLL_MONEY_CURRENCY_LEN_MAX) {
        currency_len = TOLL_MONEY_CURRENCY_LEN_MAX;
    }

    for (i = 0; i < r->nbals; i++) {
        b = &r->bals[i];

        if (strlen(b->currency) == currency_len
            && memcmp(b->currency, currency, currency_len) == 0
            && strcmp(b->buyer, buyer) == 0)
        {
            *out = b;
            return EX_OK;
        }
    }

    if (r->nbals == r->bals_cap) {
        if (r->bals_cap >= TOLLCTL_RECONCILE_PARTS_MAX) {
            return tollctl_error(EX_SOFTWARE, "more than %d balances: too "
                                 "many to reconcile at once",
                                 TOLLCTL_RECONCILE_PARTS_MAX);
        }

        cap = r->bals_cap ? 2 * r->bals_cap : TOLLCTL_RECONCILE_BATCH_MAX;

        grown = realloc(r->bals, cap * sizeof(tollctl_bal_t));
        if (grown == NULL) {
            return tollctl_error(EX_OSERR, "out of memory");
        }

        r->bals = grown;
        r->bals_cap = cap;
    }

    b = &r->bals[r->nbals];
    memset(b, 0, sizeof(tollctl_bal_t));

    b->buyer = strdup(buyer);
    if (b->buyer == NULL) {
        return tollctl_error(EX_OSERR, "out of memory");
    }

    memcpy(b->currency, currency, currency_len);
    b->currency[currency_len] = '\0';
    r->nbals++;
    *out = b;

    return EX_OK;
}


/*
 * A journal's ref and its record "<kind> <CUR> <micros> <unix>".  One
 * that does not read as toll-settle reads it is never posted: it is not
 * counted as pending, so that the ledger's difference shows it.  Nor is
 * one whose buyer or ref the ledger refuses.
 */
int
tollctl_recon_jrec(tollctl_recon_t *r, const char *buyer, const char *ref,
    size_t ref_len, const char *record, size_t len)
{
    char                      text[TOLL_LEDGER_BALANCE_RECORD_LEN_MAX + 1];
    size_t                    cap;
    int64_t                   t;
    tollctl_jrec_t           *grown, *j;
    toll_ledger_balance_tx_t  tx;

    if (toll_ledger_balance_record(record, len, text, &tx, &t) != NULL
        || ref_len > TOLL_LEDGER_TX_REF_LEN_MAX
        || memchr(ref, '\0', ref_len) != NULL
        || !toll_owner_valid((const unsigned char *) buyer, strlen(buyer)))
    {
        return EX_OK;
    }

    if (r->njrecs == r->jrecs_cap) {
        if (r->jrecs_cap >= TOLLCTL_RECONCILE_PARTS_MAX) {
            return tollctl_error(EX_SOFTWARE, "more than %d journal "
                                 "records: too many to reconcile at once",
                                 TOLLCTL_RECONCILE_PARTS_MAX);
        }

        cap = r->jrecs_cap ? 2 * r->jrecs_cap : TOLLCTL_RECONCILE_BATCH_MAX;

        grown = realloc(r->jrecs, cap * sizeof(tollctl_jrec_t));
        if (grown == NULL) {
            return tollctl_error(EX_OSERR, "out of memory");
        }

        r->jrecs = grown;
        r->jrecs_cap = cap;
    }

    j = &r->jrecs[r->njrecs];
    j->buyer = strdup(buyer);
    j->ref = strndup(ref, ref_len);

    if (j->buyer == NULL || j->ref == NULL) {
        free(j->buyer);
        free(j->ref);
        return tollctl_error(EX_OSERR, "out of memory");
    }

    if (!toll_settlement_tx_ref_valid(j->ref)) {
        free(j->buyer);
        free(j->ref);
        return EX_OK;
    }

    snprintf(j->currency, sizeof(j->currency), "%s", tx.currency);
    j->micros = (strcmp(tx.kind, TOLL_LEDGER_TX_CREDIT) == 0)
                ? tx.amount_micros : -tx.amount_micros;
    r->njrecs++;

    return EX_OK;
}


/*
 * Inside the ledger's read transaction: which journal refs the ledger
 * holds (posted, the SREM not yet done: not pending), and every prepaid
 * account.  Returns a toll_ledger_rc_e.
 */
int
tollctl_recon_balance_ledger(toll_ledger_t *lg, tollctl_recon_t *r)
{
    int             rc, found;
    size_t          i;
    json_t         *rows, *row;
    const char     *buyer, *cur;
    tollctl_bal_t  *b;

    for (i = 0; i < r->njrecs; i++) {
        rc = toll_ledger_balance_ref(lg, r->jrecs[i].buyer, r->jrecs[i].ref,
                                     &found);
        if (rc != TOLL_LEDGER_OK) {
            return rc;
        }

        if (found) {
            continue;
        }

        if (tollctl_recon_bal(r, r->jrecs[i].buyer, r->jrecs[i].currency,
                              strlen(r->jrecs[i].currency), &b)
            != EX_OK)
        {
            return TOLL_LEDGER_ERROR;
        }

        b->overflow |= __builtin_add_overflow(b->journal, r->jrecs[i].micros,
                                              &b->journal);
    }

    rc = toll_ledger_prepaid_totals(lg, &rows);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    json_array_foreach(rows, i, row) {
        buyer = json_string_value(json_object_get(row, "buyer"));
        cur = json_string_value(json_object_get(row, "currency"));

        if (buyer == NULL || cur == NULL) {
            continue;
        }

        if (tollctl_recon_bal(r, buyer, cur, strlen(cur), &b) != EX_OK) {
            json_decref(rows);
            return TOLL_LEDGER_ERROR;
        }

        b->ledger = json_integer_value(json_object_get(row,
                                                       "balance_micros"));
    }

    json_decref(rows);

    return TOLL_LEDGER_OK;
}


/* prepaid_micros of usage hashes and of claims the ledger does not hold */
static int
tollctl_recon_bal_usage(tollctl_recon_t *r)
{
    int              rc;
    size_t           i;
    tollctl_bal_t   *b;
    tollctl_part_t  *p;

    for (i = 0; i < r->nparts; i++) {
        p = &r->parts[i];

        if ((p->src != TOLLCTL_SRC_LIVE && p->src != TOLLCTL_SRC_CLAIM)
            || p->prepaid == 0 || p->currency[0] == '\0')
        {
            continue;
        }

        rc = tollctl_recon_bal(r, p->buyer, p->currency,
                               strlen(p->currency), &b);
        if (rc != EX_OK) {
            return rc;
        }

        b->overflow |= __builtin_add_overflow(b->usage, p->prepaid,
                                              &b->usage);
    }

    return EX_OK;
}


/* {checked, differences, rows_differing} into *out */
int
tollctl_recon_balance_result(tollctl_recon_t *r, json_t **out,
    int64_t *ndiff)
{
    int             o;
    size_t          i;
    json_t         *diffs, *row;
    int64_t         redis_diff, expected, ledger_diff, sum;
    tollctl_bal_t  *b;

    *out = NULL;
    *ndiff = 0;

    if (tollctl_recon_bal_usage(r) != EX_OK) {
        return EX_OSERR;
    }

    if (r->nbals > 0) {
        qsort(r->bals, r->nbals, sizeof(tollctl_bal_t), tollctl_bal_cmp);
    }

    diffs = json_array();
    if (diffs == NULL) {
        return tollctl_error(EX_OSERR, "out of memory");
    }

    for (i = 0; i < r->nbals; i++) {
        b = &r->bals[i];

        /* an overflow anywhere is a difference of INT64_MIN: never 0 */

        o = b->overflow;
        o |= __builtin_add_overflow(b->available, b->held, &sum);
        o |= __builtin_add_overflow(sum, b->spent, &sum);
        o |= __builtin_sub_overflow(b->credits, b->debits, &redis_diff);
        o |= __builtin_sub_overflow(redis_diff, sum, &redis_diff);

        o |= __builtin_sub_overflow(b->credits, b->debits, &expected);
        o |= __builtin_sub_overflow(expected, b->spent, &expected);
        o |= __builtin_sub_overflow(expected, b->journal, &expected);
        o |= __builtin_add_overflow(expected, b->usage, &expected);
        o |= __builtin_sub_overflow(b->ledger, expected, &ledger_diff);

        if (o) {
            redis_diff = INT64_MIN;
            ledger_diff = INT64_MIN;
        }

        if (redis_diff == 0 && ledger_diff == 0) {
            continue;
        }

        if (++*ndiff > TOLLCTL_RECONCILE_SHOWN_MAX) {
            continue;
        }

        row = tollctl_recon_bal_row(b, redis_diff, expected, ledger_diff);

        if (row == NULL || json_array_append_new(diffs, row) != 0) {
            json_decref(diffs);
            return tollctl_error(EX_OSERR, "out of memory");
        }
    }

    *out = json_pack("{s:I, s:I, s:o}", "checked", (json_int_t) r->nbals,
                     "differences", (json_int_t) *ndiff,
                     "rows_differing", diffs);
    if (*out == NULL) {
        return tollctl_error(EX_OSERR, "out of memory");
    }

    return EX_OK;
}


static json_t *
tollctl_recon_bal_row(const tollctl_bal_t *b, int64_t redis_diff,
    int64_t expected, int64_t ledger_diff)
{
    return json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I,"
                     " s:I, s:I, s:I}",
                     "buyer", b->buyer, "currency", b->currency,
                     "credits_micros", (json_int_t) b->credits,
                     "debits_micros", (json_int_t) b->debits,
                     "available_micros", (json_int_t) b->available,
                     "held_micros", (json_int_t) b->held,
                     "spent_micros", (json_int_t) b->spent,
                     "journal_pending_micros", (json_int_t) b->journal,
                     "usage_pending_micros", (json_int_t) b->usage,
                     "ledger_micros", (json_int_t) b->ledger,
                     "expected_micros", (json_int_t) expected,
                     "redis_difference_micros", (json_int_t) redis_diff,
                     "ledger_difference_micros", (json_int_t) ledger_diff);
}


void
tollctl_recon_balance_free(tollctl_recon_t *r)
{
    size_t  i;

    for (i = 0; i < r->nbals; i++) {
        free(r->bals[i].buyer);
    }

    for (i = 0; i < r->njrecs; i++) {
        free(r->jrecs[i].buyer);
        free(r->jrecs[i].ref);
    }

    free(r->bals);
    free(r->jrecs);
}


void
tollctl_print_balances(json_t *balances)
{
    char     redis[TOLLCTL_AMOUNT_LEN_MAX], ledger[TOLLCTL_AMOUNT_LEN_MAX];
    size_t   i;
    json_t  *row;

    /* no balance anywhere: nothing to say (the usage's report ends it) */
    if (json_integer_value(json_object_get(balances, "checked")) == 0) {
        return;
    }

    printf("\nbalances: %" JSON_INTEGER_FORMAT " (buyer, currency), "
           "differences: %" JSON_INTEGER_FORMAT "\n",
           json_integer_value(json_object_get(balances, "checked")),
           json_integer_value(json_object_get(balances, "differences")));

    if (json_array_size(json_object_get(balances, "rows_differing")) == 0) {
        return;
    }

    printf("\n%-20s %-8s %22s %22s\n", "BUYER", "CURRENCY", "REDIS",
           "LEDGER");

    json_array_foreach(json_object_get(balances, "rows_differing"), i, row) {
        tollctl_amount_text(json_integer_value(json_object_get(row,
                                "redis_difference_micros")), 1, redis,
                            sizeof(redis));
        tollctl_amount_text(json_integer_value(json_object_get(row,
                                "ledger_difference_micros")), 1, ledger,
                            sizeof(ledger));

        printf("%-20s %-8s %22s %22s\n",
               json_string_value(json_object_get(row, "buyer")),
               json_string_value(json_object_get(row, "currency")),
               redis, ledger);
    }
}


static int
tollctl_bal_cmp(const void *a, const void *b)
{
    int                   r;
    const tollctl_bal_t  *x, *y;

    x = a;
    y = b;

    r = strcmp(x->buyer, y->buyer);

    return (r != 0) ? r : strcmp(x->currency, y->currency);
}
