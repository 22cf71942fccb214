/*
 * toll: balance alerts in the ledger (docs/settle.md, "Balance alerts").
 *
 * toll-settle reads a buyer's balance from Redis after a pass that moved
 * it and asks here to send balance.low or balance.exhausted.  The alert
 * is a row of balance_alerts, UNIQUE by (buyer, currency, kind, credits
 * total), written in the transaction of its event: the event is in the
 * outbox exactly when the row is, so a pass that runs twice, or a daemon
 * killed after the COMMIT, never sends an alert twice, and one killed
 * before it sends it at the next pass that sees the balance.  The credits
 * total is the period: a top-up raises it and re-arms both alerts.
 */

#include <stdint.h>
#include <string.h>

#include "toll_key.h"
#include "toll_ledger_int.h"
#include "toll_money.h"


static int toll_ledger_alert_known(toll_ledger_t *lg,
    const toll_ledger_alert_t *a, const char *kind, int *known);
static int toll_ledger_alert_event(toll_ledger_t *lg,
    const toll_ledger_alert_t *a, int64_t now);
static int toll_ledger_alert_row(toll_ledger_t *lg,
    const toll_ledger_alert_t *a, const char *kind, int64_t now);


int
toll_ledger_balance_alert(toll_ledger_t *lg, const toll_ledger_alert_t *a,
    int *sent)
{
    int          rc, known;
    int64_t      now;
    const char  *kind;

    *sent = 0;
    known = 0;

    if (a->buyer == NULL
        || !toll_owner_valid((const unsigned char *) a->buyer,
                             strlen(a->buyer)))
    {
        return toll_ledger_set_error(lg, TOLL_LEDGER_INVALID,
                                     "invalid buyer \"%s\" of a balance "
                                     "alert", a->buyer ? a->buyer : "");
    }

    if (a->currency == NULL
        || !toll_money_currency_valid(a->currency, strlen(a->currency)))
    {
        return toll_ledger_set_error(lg, TOLL_LEDGER_INVALID,
                                     "invalid currency of a balance alert");
    }

    kind = (a->kind == TOLL_LEDGER_ALERT_LOW) ? "low" : "exhausted";

    rc = toll_ledger_begin(lg);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    rc = toll_ledger_alert_known(lg, a, kind, &known);

    if (rc == TOLL_LEDGER_OK && known) {
        /* sent in this period already: nothing to write */
        toll_ledger_rollback(lg);
        return TOLL_LEDGER_OK;
    }

    now = toll_ledger_now();

    if (rc == TOLL_LEDGER_OK) {
        rc = toll_ledger_alert_event(lg, a, now);
    }

    if (rc == TOLL_LEDGER_OK) {
        rc = toll_ledger_alert_row(lg, a, kind, now);
    }

    if (rc != TOLL_LEDGER_OK) {
        toll_ledger_rollback(lg);
        return rc;
    }

    rc = toll_ledger_commit(lg);

    if (rc == TOLL_LEDGER_OK) {
        *sent = 1;
    }

    return rc;
}


/* under the write lock: no other writer can add the row meanwhile */
static int
toll_ledger_alert_known(toll_ledger_t *lg, const toll_ledger_alert_t *a,
    const char *kind, int *known)
{
    int            rc;
    sqlite3_stmt  *st;

    rc = toll_ledger_prepare(lg, "SELECT 1 FROM balance_alerts"
                                 " WHERE buyer = ? AND currency = ?"
                                 " AND kind = ? AND credits_micros = ?",
                             &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    sqlite3_bind_text(st, 1, a->buyer, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, a->currency, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, kind, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, a->credits_micros);

    rc = sqlite3_step(st);
    sqlite3_finalize(st);

    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        return toll_ledger_sql_error(lg, "read the balance alerts");
    }

    *known = (rc == SQLITE_ROW);

    return TOLL_LEDGER_OK;
}


static int
toll_ledger_alert_event(toll_ledger_t *lg, const toll_ledger_alert_t *a,
    int64_t now)
{
    int          rc;
    json_t      *data;
    const char  *type;

    data = json_pack("{s:s, s:s, s:o, s:o, s:o}",
                     "buyer", a->buyer, "currency", a->currency,
                     "balance", toll_ledger_amount_json(a->balance_micros),
                     "credits", toll_ledger_amount_json(a->credits_micros),
                     "at", toll_ledger_time_json(now));
    if (data == NULL) {
        return toll_ledger_set_error(lg, TOLL_LEDGER_ERROR, "out of memory");
    }

    if (a->kind == TOLL_LEDGER_ALERT_LOW) {
        if (json_object_set_new(data, "threshold",
                                toll_ledger_amount_json(a->threshold_micros))
            != 0)
        {
            json_decref(data);
            return toll_ledger_set_error(lg, TOLL_LEDGER_ERROR,
                                         "out of memory");
        }

        type = TOLL_LEDGER_EVENT_BALANCE_LOW;

    } else {
        type = TOLL_LEDGER_EVENT_BALANCE_EXHAUSTED;
    }

    rc = toll_ledger_event_add(lg, type, data);
    json_decref(data);

    return rc;
}


/* the row, pointing at the event just written (its seq is the rowid) */
static int
toll_ledger_alert_row(toll_ledger_t *lg, const toll_ledger_alert_t *a,
    const char *kind, int64_t now)
{
    int            rc;
    int64_t        seq;
    sqlite3_stmt  *st;

    seq = sqlite3_last_insert_rowid(lg->db);

    rc = toll_ledger_prepare(lg, "INSERT INTO balance_alerts (buyer,"
                                 " currency, kind, credits_micros,"
                                 " balance_micros, threshold_micros,"
                                 " event_seq, sent_at)"
                                 " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    sqlite3_bind_text(st, 1, a->buyer, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, a->currency, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, kind, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, a->credits_micros);
    sqlite3_bind_int64(st, 5, a->balance_micros);

    if (a->kind == TOLL_LEDGER_ALERT_LOW) {
        sqlite3_bind_int64(st, 6, a->threshold_micros);

    } else {
        sqlite3_bind_null(st, 6);
    }

    sqlite3_bind_int64(st, 7, seq);
    sqlite3_bind_int64(st, 8, now);

    return toll_ledger_step_done(lg, st, "record a balance alert");
}


int
toll_ledger_recent_balance_buyers(toll_ledger_t *lg, int64_t ntx,
    toll_ledger_buyer_pt each, void *ctx)
{
    int            rc;
    sqlite3_stmt  *st;

    rc = toll_ledger_prepare(lg, "SELECT DISTINCT buyer FROM transactions"
                                 " WHERE id > (SELECT coalesce(max(id), 0)"
                                 " FROM transactions) - ?"
                                 " AND buyer IS NOT NULL"
                                 " AND (prepaid_micros > 0"
                                 " OR ref IS NOT NULL)", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    sqlite3_bind_int64(st, 1, ntx);

    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        each(ctx, (const char *) sqlite3_column_text(st, 0));
    }

    sqlite3_finalize(st);

    if (rc != SQLITE_DONE) {
        return toll_ledger_sql_error(lg, "read the recent balances' buyers");
    }

    return TOLL_LEDGER_OK;
}
