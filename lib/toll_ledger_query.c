/*
 * toll: what tollctl reads from the ledger: an account's balance, the
 * latest entries, usage per buyer, day and service, the totals, and the
 * gauges toll-settle's metrics show.
 */

#include <stdio.h>
#include <string.h>

#include "toll_ledger_int.h"


#define TOLL_LEDGER_ENTRIES_MAX      100000


static json_t *toll_ledger_entry_json(sqlite3_stmt *st);
static json_t *toll_ledger_usage_json(sqlite3_stmt *st);


int
toll_ledger_balance(toll_ledger_t *lg, const char *account, json_t **out)
{
    int            rc, debit_normal;
    int64_t        debits, credits, count, balance;
    const char    *kind;
    sqlite3_stmt  *st;
    char           kind_buf[16];

    *out = NULL;

    rc = toll_ledger_prepare(lg,
             "SELECT a.kind, coalesce(sum(e.debit_micros), 0),"
             " coalesce(sum(e.credit_micros), 0), count(e.id)"
             " FROM accounts a LEFT JOIN entries e ON e.account_id = a.id"
             " WHERE a.name = ? GROUP BY a.id", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    sqlite3_bind_text(st, 1, account, -1, SQLITE_STATIC);

    rc = sqlite3_step(st);

    if (rc == SQLITE_DONE) {
        sqlite3_finalize(st);
        return toll_ledger_set_error(lg, TOLL_LEDGER_NOT_FOUND,
                                     "no account \"%s\" in the ledger",
                                     account);
    }

    if (rc != SQLITE_ROW) {
        rc = toll_ledger_sql_error(lg, "read an account");
        sqlite3_finalize(st);
        return rc;
    }

    kind = (const char *) sqlite3_column_text(st, 0);
    snprintf(kind_buf, sizeof(kind_buf), "%s", kind ? kind : "");
    debits = sqlite3_column_int64(st, 1);
    credits = sqlite3_column_int64(st, 2);
    count = sqlite3_column_int64(st, 3);
    sqlite3_finalize(st);

    /* a prepaid balance is owed to the buyer: credit-normal */
    debit_normal = strcmp(kind_buf, "buyer") == 0
                   || strcmp(account, TOLL_LEDGER_ACCOUNT_CASH) == 0;

    if (__builtin_sub_overflow(debit_normal ? debits : credits,
                               debit_normal ? credits : debits, &balance))
    {
        return toll_ledger_set_error(lg, TOLL_LEDGER_OVERFLOW,
                                     "the balance of \"%s\" overflows",
                                     account);
    }

    *out = json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:I, s:I, s:I, s:I}",
                     "account", account, "kind", kind_buf,
                     "normal_side", debit_normal ? "debit" : "credit",
                     "balance", toll_ledger_amount_json(balance),
                     "debits", toll_ledger_amount_json(debits),
                     "credits", toll_ledger_amount_json(credits),
                     "balance_micros", (json_int_t) balance,
                     "debits_micros", (json_int_t) debits,
                     "credits_micros", (json_int_t) credits,
                     "entries", (json_int_t) count);
    if (*out == NULL) {
        return toll_ledger_set_error(lg, TOLL_LEDGER_ERROR, "out of memory");
    }

    return TOLL_LEDGER_OK;
}


json_t *
toll_ledger_text_json(sqlite3_stmt *st, int col)
{
    const char  *s;

    s = (const char *) sqlite3_column_text(st, col);

    return s ? json_string(s) : json_null();
}


int
toll_ledger_entries(toll_ledger_t *lg, const char *account, int64_t limit,
    json_t **out)
{
    int            rc;
    sqlite3_stmt  *st;

    *out = NULL;

    if (limit < 1 || limit > TOLL_LEDGER_ENTRIES_MAX) {
        return toll_ledger_set_error(lg, TOLL_LEDGER_INVALID,
                                     "limit %lld is not within 1..%d",
                                     (long long) limit,
                                     TOLL_LEDGER_ENTRIES_MAX);
    }

    rc = toll_ledger_prepare(lg,
             "SELECT e.id, t.id, t.kind, t.posted_at, a.name,"
             " e.debit_micros, e.credit_micros, t.buyer, t.provider,"
             " t.service, t.day, t.batch_id, t.settlement_id, t.ref,"
             " t.currency"
             " FROM entries e JOIN transactions t ON t.id = e.tx_id"
             " JOIN accounts a ON a.id = e.account_id"
             " WHERE ?1 IS NULL OR a.name = ?1"
             " ORDER BY e.id DESC LIMIT ?2", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    if (account != NULL) {
        sqlite3_bind_text(st, 1, account, -1, SQLITE_STATIC);
    }

    sqlite3_bind_int64(st, 2, limit);

    return toll_ledger_rows_json(lg, st, toll_ledger_entry_json,
                                 "read entries", out);
}


int
toll_ledger_usage_totals(toll_ledger_t *lg, json_t **out)
{
    int            rc;
    sqlite3_stmt  *st;

    *out = NULL;

    rc = toll_ledger_prepare(lg,
             "SELECT buyer, day, service, max(provider), sum(calls),"
             " sum(free_calls), sum(paid_calls), sum(errors),"
             " sum(amount_micros) FROM transactions WHERE kind = 'usage'"
             " GROUP BY buyer, day, service ORDER BY buyer, day, service",
             &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    return toll_ledger_rows_json(lg, st, toll_ledger_usage_json, "sum usage",
                                 out);
}


int
toll_ledger_totals(toll_ledger_t *lg, json_t **out)
{
    int            rc;
    sqlite3_stmt  *st;

    *out = NULL;

    rc = toll_ledger_prepare(lg,
             "SELECT (SELECT count(*) FROM batches),"
             " (SELECT count(*) FROM transactions),"
             " coalesce(sum(calls), 0), coalesce(sum(free_calls), 0),"
             " coalesce(sum(paid_calls), 0), coalesce(sum(amount_micros), 0),"
             " coalesce(sum(fee_micros), 0),"
             " (SELECT debits_micros FROM totals),"
             " (SELECT credits_micros FROM totals)"
             " FROM transactions WHERE kind = 'usage'", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    rc = sqlite3_step(st);

    if (rc != SQLITE_ROW) {
        rc = toll_ledger_sql_error(lg, "sum the ledger");
        sqlite3_finalize(st);
        return rc;
    }

    *out = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
                     "batches", (json_int_t) sqlite3_column_int64(st, 0),
                     "transactions", (json_int_t) sqlite3_column_int64(st, 1),
                     "calls", (json_int_t) sqlite3_column_int64(st, 2),
                     "free_calls", (json_int_t) sqlite3_column_int64(st, 3),
                     "paid_calls", (json_int_t) sqlite3_column_int64(st, 4),
                     "amount_micros",
                     (json_int_t) sqlite3_column_int64(st, 5),
                     "fee_micros", (json_int_t) sqlite3_column_int64(st, 6),
                     "debits_micros",
                     (json_int_t) sqlite3_column_int64(st, 7),
                     "credits_micros",
                     (json_int_t) sqlite3_column_int64(st, 8));
    sqlite3_finalize(st);

    if (*out == NULL) {
        return toll_ledger_set_error(lg, TOLL_LEDGER_ERROR, "out of memory");
    }

    return TOLL_LEDGER_OK;
}


/*
 * One statement, so one snapshot: the sums and the count agree.  The
 * count of transactions is the last id: rows are never deleted (a
 * trigger refuses it) and SQLite gives a new row the largest id plus
 * one, so max(id) is the count, read from the b-tree's last leaf
 * instead of a scan.  Pending deliveries are few and indexed by status.
 */
int
toll_ledger_gauges(toll_ledger_t *lg, toll_ledger_gauges_t *out)
{
    int            rc;
    sqlite3_stmt  *st;

    rc = toll_ledger_prepare(lg,
             "SELECT debits_micros, credits_micros,"
             " (SELECT coalesce(max(id), 0) FROM transactions),"
             " (SELECT count(*) FROM deliveries WHERE status = 'pending')"
             " FROM totals", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    rc = sqlite3_step(st);

    if (rc != SQLITE_ROW) {
        rc = toll_ledger_sql_error(lg, "read the ledger's totals");
        sqlite3_finalize(st);
        return rc;
    }

    out->debits_micros = sqlite3_column_int64(st, 0);
    out->credits_micros = sqlite3_column_int64(st, 1);
    out->transactions = sqlite3_column_int64(st, 2);
    out->deliveries_pending = sqlite3_column_int64(st, 3);

    sqlite3_finalize(st);

    return TOLL_LEDGER_OK;
}


int
toll_ledger_rows_json(toll_ledger_t *lg, sqlite3_stmt *st,
    toll_ledger_row_json_pt row, const char *what, json_t **out)
{
    int      rc;
    json_t  *arr, *obj;

    *out = NULL;
    rc = SQLITE_DONE;

    arr = json_array();

    while (arr != NULL && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        obj = row(st);

        if (obj == NULL || json_array_append_new(arr, obj) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }

    if (arr == NULL) {
        sqlite3_finalize(st);
        return toll_ledger_set_error(lg, TOLL_LEDGER_ERROR, "out of memory");
    }

    if (rc != SQLITE_DONE) {
        rc = toll_ledger_sql_error(lg, what);
        sqlite3_finalize(st);
        json_decref(arr);
        return rc;
    }

    sqlite3_finalize(st);
    *out = arr;

    return TOLL_LEDGER_OK;
}


static json_t *
toll_ledger_entry_json(sqlite3_stmt *st)
{
    return json_pack("{s:I, s:I, s:o, s:o, s:o, s:o, s:o, s:I, s:I,"
                     " s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}",
                     "entry", (json_int_t) sqlite3_column_int64(st, 0),
                     "transaction",
                     (json_int_t) sqlite3_column_int64(st, 1),
                     "kind", toll_ledger_text_json(st, 2),
                     "posted_at",
                     toll_ledger_time_json(sqlite3_column_int64(st, 3)),
                     "account", toll_ledger_text_json(st, 4),
                     "debit",
                     toll_ledger_amount_json(sqlite3_column_int64(st, 5)),
                     "credit",
                     toll_ledger_amount_json(sqlite3_column_int64(st, 6)),
                     "debit_micros",
                     (json_int_t) sqlite3_column_int64(st, 5),
                     "credit_micros",
                     (json_int_t) sqlite3_column_int64(st, 6),
                     "buyer", toll_ledger_text_json(st, 7),
                     "provider", toll_ledger_text_json(st, 8),
                     "service", toll_ledger_text_json(st, 9),
                     "day", toll_ledger_text_json(st, 10),
                     "batch", toll_ledger_text_json(st, 11),
                     "settlement", toll_ledger_text_json(st, 12),
                     "ref", toll_ledger_text_json(st, 13),
                     "currency", toll_ledger_text_json(st, 14));
}


static json_t *
toll_ledger_usage_json(sqlite3_stmt *st)
{
    return json_pack("{s:o, s:o, s:o, s:o, s:I, s:I, s:I, s:I, s:I}",
                     "buyer", toll_ledger_text_json(st, 0),
                     "day", toll_ledger_text_json(st, 1),
                     "service", toll_ledger_text_json(st, 2),
                     "provider", toll_ledger_text_json(st, 3),
                     "calls", (json_int_t) sqlite3_column_int64(st, 4),
                     "free_calls",
                     (json_int_t) sqlite3_column_int64(st, 5),
                     "paid_calls",
                     (json_int_t) sqlite3_column_int64(st, 6),
                     "errors", (json_int_t) sqlite3_column_int64(st, 7),
                     "amount_micros",
                     (json_int_t) sqlite3_column_int64(st, 8));
}
