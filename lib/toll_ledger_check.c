/*
 * toll: the ledger's consistency checks ("tollctl ledger check",
 * docs/settle.md): integrity, every transaction balanced, the totals
 * row, each usage transaction's fee and entries, each balance
 * transaction's entries, complete batches and settlements that match
 * their transactions.  All in one read
 * transaction, so that every check sees the same ledger.
 */

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "toll_ledger_int.h"


/* what the report gives besides the checks */
typedef struct {
    int64_t                    debits;
    int64_t                    credits;
    int64_t                    ntx;
    int64_t                    nentries;
} toll_ledger_check_sums_t;


static int toll_ledger_check_add(json_t *checks, const char *name, int ok,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int toll_ledger_check_integrity(toll_ledger_t *lg, json_t *checks,
    int *all);
static int toll_ledger_check_balance(toll_ledger_t *lg, json_t *checks,
    int *all, toll_ledger_check_sums_t *t);
static int toll_ledger_check_records(toll_ledger_t *lg, json_t *checks,
    int *all);
static int toll_ledger_check_usage(toll_ledger_t *lg, int64_t *bad,
    char *detail, size_t size);
static int toll_ledger_check_balances(toll_ledger_t *lg, int64_t *bad,
    char *detail, size_t size);
static int toll_ledger_check_settlements(toll_ledger_t *lg, int64_t *bad,
    char *detail, size_t size);
static int toll_ledger_scalar(toll_ledger_t *lg, const char *sql,
    int64_t *out);


static int
toll_ledger_scalar(toll_ledger_t *lg, const char *sql, int64_t *out)
{
    int            rc;
    sqlite3_stmt  *st;

    rc = toll_ledger_prepare(lg, sql, &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    rc = sqlite3_step(st);

    if (rc != SQLITE_ROW) {
        rc = toll_ledger_sql_error(lg, "read the ledger");
        sqlite3_finalize(st);
        return rc;
    }

    *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);

    return TOLL_LEDGER_OK;
}


static int
toll_ledger_check_add(json_t *checks, const char *name, int ok,
    const char *fmt, ...)
{
    char     detail[256];
    va_list  args;

    va_start(args, fmt);
    vsnprintf(detail, sizeof(detail), fmt, args);
    va_end(args);

    json_array_append_new(checks, json_pack("{s:s, s:b, s:s}", "name", name,
                                            "ok", ok, "detail", detail));

    return ok;
}


int
toll_ledger_check(toll_ledger_t *lg, json_t **report)
{
    int                         rc, all;
    json_t                     *checks;
    toll_ledger_check_sums_t    t;

    *report = NULL;

    checks = json_array();
    if (checks == NULL) {
        return toll_ledger_set_error(lg, TOLL_LEDGER_ERROR, "out of memory");
    }

    all = 1;

    /* one read transaction: every check sees the same ledger */

    if (sqlite3_exec(lg->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        json_decref(checks);
        return toll_ledger_sql_error(lg, "begin a read");
    }

    rc = toll_ledger_check_integrity(lg, checks, &all);
    if (rc != TOLL_LEDGER_OK) {
        goto failed;
    }

    rc = toll_ledger_check_balance(lg, checks, &all, &t);
    if (rc != TOLL_LEDGER_OK) {
        goto failed;
    }

    rc = toll_ledger_check_records(lg, checks, &all);
    if (rc != TOLL_LEDGER_OK) {
        goto failed;
    }

    (void) sqlite3_exec(lg->db, "COMMIT", NULL, NULL, NULL);

    *report = json_pack("{s:b, s:o, s:I, s:I, s:I, s:I}", "ok", all,
                        "checks", checks, "transactions", (json_int_t) t.ntx,
                        "entries", (json_int_t) t.nentries,
                        "debits_micros", (json_int_t) t.debits,
                        "credits_micros", (json_int_t) t.credits);
    if (*report == NULL) {
        return toll_ledger_set_error(lg, TOLL_LEDGER_ERROR, "out of memory");
    }

    return TOLL_LEDGER_OK;

failed:

    (void) sqlite3_exec(lg->db, "ROLLBACK", NULL, NULL, NULL);
    json_decref(checks);

    return rc;
}


/*
 * Every transaction balanced, debits equal to credits, the totals row
 * equal to the entries; the sums and counts into *t for the report
 */
static int
toll_ledger_check_balance(toll_ledger_t *lg, json_t *checks, int *all,
    toll_ledger_check_sums_t *t)
{
    int      rc;
    int64_t  n, tdebits, tcredits;

    /* every transaction balanced; sums in SQL are exact on INTEGER */

    rc = toll_ledger_scalar(lg,
             "SELECT count(*) FROM (SELECT tx_id FROM entries GROUP BY tx_id"
             " HAVING sum(debit_micros) <> sum(credit_micros))", &n);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    *all &= toll_ledger_check_add(checks, "transactions_balanced", n == 0,
                                  "%lld unbalanced transactions",
                                  (long long) n);

    if ((rc = toll_ledger_scalar(lg, "SELECT coalesce(sum(debit_micros), 0)"
                                     " FROM entries", &t->debits))
           != TOLL_LEDGER_OK
        || (rc = toll_ledger_scalar(lg, "SELECT coalesce(sum(credit_micros),"
                                        " 0) FROM entries", &t->credits))
           != TOLL_LEDGER_OK
        || (rc = toll_ledger_scalar(lg, "SELECT debits_micros FROM totals",
                                    &tdebits))
           != TOLL_LEDGER_OK
        || (rc = toll_ledger_scalar(lg, "SELECT credits_micros FROM totals",
                                    &tcredits))
           != TOLL_LEDGER_OK
        || (rc = toll_ledger_scalar(lg, "SELECT count(*) FROM transactions",
                                    &t->ntx))
           != TOLL_LEDGER_OK
        || (rc = toll_ledger_scalar(lg, "SELECT count(*) FROM entries",
                                    &t->nentries))
           != TOLL_LEDGER_OK)
    {
        return rc;
    }

    *all &= toll_ledger_check_add(checks, "debits_equal_credits",
                                  t->debits == t->credits,
                                  "debits %lld, credits %lld micro-units",
                                  (long long) t->debits,
                                  (long long) t->credits);

    *all &= toll_ledger_check_add(checks, "totals_match_entries",
                                  t->debits == tdebits
                                  && t->credits == tcredits,
                                  "totals row debits %lld, credits %lld",
                                  (long long) tdebits, (long long) tcredits);

    return TOLL_LEDGER_OK;
}


/* usage transactions, batches and settlements against their records */
static int
toll_ledger_check_records(toll_ledger_t *lg, json_t *checks, int *all)
{
    int      rc;
    char     detail[256];
    int64_t  n;

    n = 0;

    rc = toll_ledger_check_usage(lg, &n, detail, sizeof(detail));
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    *all &= toll_ledger_check_add(checks, "usage_entries_and_fees", n == 0,
                                  "%s", detail);

    rc = toll_ledger_scalar(lg,
             "SELECT count(*) FROM batches b WHERE b.records <>"
             " (SELECT count(*) FROM transactions t WHERE t.batch_id = b.id)",
             &n);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    *all &= toll_ledger_check_add(checks, "batches_complete", n == 0,
                                  "%lld batches whose records are missing",
                                  (long long) n);

    rc = toll_ledger_check_balances(lg, &n, detail, sizeof(detail));
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    *all &= toll_ledger_check_add(checks, "balance_entries", n == 0,
                                  "%s", detail);

    rc = toll_ledger_check_settlements(lg, &n, detail, sizeof(detail));
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    *all &= toll_ledger_check_add(checks, "settlements_match", n == 0,
                                  "%s", detail);

    return TOLL_LEDGER_OK;
}


/* SQLite's own: the file's pages, indexes and constraints */
static int
toll_ledger_check_integrity(toll_ledger_t *lg, json_t *checks, int *all)
{
    int            rc, ok;
    sqlite3_stmt  *st;
    const char    *text;

    rc = toll_ledger_prepare(lg, "PRAGMA integrity_check", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    ok = 0;
    text = "no answer";

    if (sqlite3_step(st) == SQLITE_ROW) {
        text = (const char *) sqlite3_column_text(st, 0);
        text = text ? text : "";
        ok = (strcmp(text, "ok") == 0);
    }

    *all &= toll_ledger_check_add(checks, "integrity", ok, "%s", text);
    sqlite3_finalize(st);

    return TOLL_LEDGER_OK;
}


/*
 * Each usage transaction's fee as the rounding rule makes it, and its
 * entries as posting writes them: buyer debited the amount (of it
 * prepaid_micros from its prepaid account of the currency), provider
 * credited amount - fee, platform:fees credited the fee, nothing else.
 */
static int
toll_ledger_check_usage(toll_ledger_t *lg, int64_t *bad, char *detail,
    size_t size)
{
    int            rc;
    int64_t        n, amount, fee_bp, fee, want, buyer_d, prov_c, fees_c,
                   other, tx_id, first, prepaid, prepaid_d;
    sqlite3_stmt  *st;

    rc = toll_ledger_prepare(lg,
             "SELECT t.id, t.amount_micros, t.fee_bp, t.fee_micros,"
             " coalesce(sum(CASE WHEN a.name = 'buyer:' || t.buyer"
             "  THEN e.debit_micros - e.credit_micros END), 0),"
             " coalesce(sum(CASE WHEN a.name = 'provider:' || t.provider"
             "  THEN e.credit_micros - e.debit_micros END), 0),"
             " coalesce(sum(CASE WHEN a.name = 'platform:fees'"
             "  THEN e.credit_micros - e.debit_micros END), 0),"
             /* a NULL in NOT IN would make it NULL, never true */
             " count(CASE WHEN a.name NOT IN ('buyer:' || t.buyer,"
             "  'provider:' || t.provider, 'platform:fees',"
             "  'prepaid:' || coalesce(t.currency, '') || ':' || t.buyer)"
             "  THEN 1 END),"
             " t.prepaid_micros,"
             " coalesce(sum(CASE WHEN a.name ="
             "  'prepaid:' || t.currency || ':' || t.buyer"
             "  THEN e.debit_micros - e.credit_micros END), 0)"
             " FROM transactions t"
             " LEFT JOIN entries e ON e.tx_id = t.id"
             " LEFT JOIN accounts a ON a.id = e.account_id"
             " WHERE t.kind = 'usage' GROUP BY t.id", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    n = 0;
    first = 0;

    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        tx_id = sqlite3_column_int64(st, 0);
        amount = sqlite3_column_int64(st, 1);
        fee_bp = sqlite3_column_int64(st, 2);
        fee = sqlite3_column_int64(st, 3);
        buyer_d = sqlite3_column_int64(st, 4);
        prov_c = sqlite3_column_int64(st, 5);
        fees_c = sqlite3_column_int64(st, 6);
        other = sqlite3_column_int64(st, 7);
        prepaid = sqlite3_column_int64(st, 8);
        prepaid_d = sqlite3_column_int64(st, 9);

        if (toll_money_fee_bp(amount, fee_bp, &want) != TOLL_MONEY_OK
            || want != fee || buyer_d != amount - prepaid
            || prepaid_d != prepaid || prov_c != amount - fee
            || fees_c != fee || other != 0)
        {
            if (n++ == 0) {
                first = tx_id;
            }
        }
    }

    sqlite3_finalize(st);

    if (rc != SQLITE_DONE) {
        return toll_ledger_sql_error(lg, "read usage transactions");
    }

    *bad = n;

    if (n == 0) {
        snprintf(detail, size, "every usage transaction as posted");

    } else {
        snprintf(detail, size, "%lld usage transactions differ from the "
                 "rule, the first is %lld", (long long) n, (long long) first);
    }

    return TOLL_LEDGER_OK;
}


/*
 * Each credit, debit and refund as posting writes it: two entries of
 * its amount, the buyer's prepaid account of its currency on one side
 * and platform:cash (credit, refund) or platform:adjustments (debit) on
 * the other.
 */
static int
toll_ledger_check_balances(toll_ledger_t *lg, int64_t *bad, char *detail,
    size_t size)
{
    int  rc;

    rc = toll_ledger_scalar(lg,
             "SELECT count(*) FROM (SELECT t.id"
             " FROM transactions t"
             " LEFT JOIN entries e ON e.tx_id = t.id"
             " LEFT JOIN accounts a ON a.id = e.account_id"
             " WHERE t.kind IN ('credit', 'debit', 'refund') GROUP BY t.id"
             " HAVING count(e.id) <> 2"
             " OR coalesce(sum(CASE WHEN a.name ="
             "  'prepaid:' || t.currency || ':' || t.buyer"
             "  THEN e.credit_micros - e.debit_micros END), 0)"
             "  <> CASE t.kind WHEN 'credit' THEN t.amount_micros"
             "  ELSE -t.amount_micros END"
             " OR coalesce(sum(CASE WHEN a.name = CASE t.kind"
             "  WHEN 'debit' THEN 'platform:adjustments'"
             "  ELSE 'platform:cash' END"
             "  THEN e.debit_micros - e.credit_micros END), 0)"
             "  <> CASE t.kind WHEN 'credit' THEN t.amount_micros"
             "  ELSE -t.amount_micros END)", bad);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    if (*bad == 0) {
        snprintf(detail, size, "every balance transaction as posted");
        return TOLL_LEDGER_OK;
    }

    snprintf(detail, size, "%lld balance transactions differ from the rule",
             (long long) *bad);

    return TOLL_LEDGER_OK;
}


static int
toll_ledger_check_settlements(toll_ledger_t *lg, int64_t *bad, char *detail,
    size_t size)
{
    int            rc;
    int64_t        n;
    sqlite3_stmt  *st;
    const char    *first;
    char           first_id[TOLL_LEDGER_SETTLEMENT_ID_LEN + 1];

    /* sums of the usage each settlement covers, and its payout */

    rc = toll_ledger_prepare(lg,
             "SELECT s.id FROM settlements s WHERE"
             " s.total_micros <> (SELECT coalesce(sum(amount_micros), 0)"
             "  FROM transactions t WHERE t.kind = 'usage'"
             "  AND t.provider = s.provider AND t.posted_at >= s.period_start"
             "  AND t.posted_at < s.period_end)"
             " OR s.fee_micros <> (SELECT coalesce(sum(fee_micros), 0)"
             "  FROM transactions t WHERE t.kind = 'usage'"
             "  AND t.provider = s.provider AND t.posted_at >= s.period_start"
             "  AND t.posted_at < s.period_end)"
             " OR s.calls <> (SELECT coalesce(sum(calls), 0)"
             "  FROM transactions t WHERE t.kind = 'usage'"
             "  AND t.provider = s.provider AND t.posted_at >= s.period_start"
             "  AND t.posted_at < s.period_end)"
             " OR (s.status = 'completed') <> EXISTS (SELECT 1"
             "  FROM transactions p WHERE p.kind = 'payout'"
             "  AND p.settlement_id = s.id AND p.amount_micros = s.net_micros)"
             " OR EXISTS (SELECT 1 FROM settlements o WHERE o.id <> s.id"
             "  AND o.provider = s.provider AND o.period_start < s.period_end"
             "  AND s.period_start < o.period_end)", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    n = 0;
    first_id[0] = '\0';

    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n++ == 0) {
            first = (const char *) sqlite3_column_text(st, 0);
            snprintf(first_id, sizeof(first_id), "%s", first ? first : "");
        }
    }

    sqlite3_finalize(st);

    if (rc != SQLITE_DONE) {
        return toll_ledger_sql_error(lg, "read settlements");
    }

    *bad = n;

    if (n == 0) {
        snprintf(detail, size, "every settlement equals its usage");

    } else {
        snprintf(detail, size, "%lld settlements differ from their usage, "
                 "the first is %s", (long long) n, first_id);
    }

    return TOLL_LEDGER_OK;
}
