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
 *
 * Spend cap alerts (spend_cap.threshold, "Spend cap alerts") are kept the
 * same way in cap_alerts, once per cap, period and threshold.
 */

#include <stdint.h>
#include <stdio.h>
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
static int toll_ledger_cap_valid(toll_ledger_t *lg,
    const toll_ledger_cap_alert_t *a);
static int toll_ledger_day_valid(const char *day);
static int toll_ledger_cap_known(toll_ledger_t *lg,
    const toll_ledger_cap_alert_t *a, const char *key_id, int *known);
static int toll_ledger_cap_event(toll_ledger_t *lg,
    const toll_ledger_cap_alert_t *a, int64_t now);
static int toll_ledger_cap_row(toll_ledger_t *lg,
    const toll_ledger_cap_alert_t *a, const char *key_id, int64_t now);
static json_t *toll_ledger_day_json(const char *day);


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



int
toll_ledger_cap_alert(toll_ledger_t *lg, const toll_ledger_cap_alert_t *a,
    int *sent)
{
    int          rc, known;
    int64_t      now;
    const char  *key_id;

    *sent = 0;
    known = 0;

    rc = toll_ledger_cap_valid(lg, a);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    key_id = (a->key_id != NULL) ? a->key_id : "";

    rc = toll_ledger_begin(lg);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    rc = toll_ledger_cap_known(lg, a, key_id, &known);

    if (rc == TOLL_LEDGER_OK && known) {
        toll_ledger_rollback(lg);
        return TOLL_LEDGER_OK;
    }

    now = toll_ledger_now();

    if (rc == TOLL_LEDGER_OK) {
        rc = toll_ledger_cap_event(lg, a, now);
    }

    if (rc == TOLL_LEDGER_OK) {
        rc = toll_ledger_cap_row(lg, a, key_id, now);
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


static int
toll_ledger_cap_valid(toll_ledger_t *lg, const toll_ledger_cap_alert_t *a)
{
    if (a->buyer == NULL
        || !toll_owner_valid((const unsigned char *) a->buyer,
                             strlen(a->buyer)))
    {
        return toll_ledger_set_error(lg, TOLL_LEDGER_INVALID,
                                     "invalid buyer \"%s\" of a spend cap "
                                     "alert", a->buyer ? a->buyer : "");
    }

    if (a->currency == NULL
        || !toll_money_currency_valid(a->currency, strlen(a->currency))
        || (a->key_id != NULL && a->key_id[0] != '\0'
            && !toll_key_id_valid((const unsigned char *) a->key_id,
                                  strlen(a->key_id)))
        || !toll_ledger_day_valid(a->period_start)
        || !toll_ledger_day_valid(a->period_end)
        || (a->threshold != 50 && a->threshold != 80
            && a->threshold != 100))
    {
        return toll_ledger_set_error(lg, TOLL_LEDGER_INVALID,
                                     "invalid spend cap alert of buyer "
                                     "\"%s\"", a->buyer);
    }

    return TOLL_LEDGER_OK;
}


/* YYYYMMDD: eight digits (the caller's calendar made it) */
static int
toll_ledger_day_valid(const char *day)
{
    size_t  i;

    if (day == NULL || strlen(day) != TOLL_LEDGER_DAY_LEN) {
        return 0;
    }

    for (i = 0; i < TOLL_LEDGER_DAY_LEN; i++) {
        if (day[i] < '0' || day[i] > '9') {
            return 0;
        }
    }

    return 1;
}


/* under the write lock: no other writer can add the row meanwhile */
static int
toll_ledger_cap_known(toll_ledger_t *lg, const toll_ledger_cap_alert_t *a,
    const char *key_id, int *known)
{
    int            rc;
    sqlite3_stmt  *st;

    rc = toll_ledger_prepare(lg, "SELECT 1 FROM cap_alerts"
                                 " WHERE buyer = ? AND currency = ?"
                                 " AND scope = ? AND key_id = ?"
                                 " AND period = ? AND period_start = ?"
                                 " AND threshold = ?", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    sqlite3_bind_text(st, 1, a->buyer, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, a->currency, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, key_id[0] ? "key" : "buyer", -1,
                      SQLITE_STATIC);
    sqlite3_bind_text(st, 4, key_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, a->monthly ? "monthly" : "daily", -1,
                      SQLITE_STATIC);
    sqlite3_bind_text(st, 6, a->period_start, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 7, a->threshold);

    rc = sqlite3_step(st);
    sqlite3_finalize(st);

    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        return toll_ledger_sql_error(lg, "read the spend cap alerts");
    }

    *known = (rc == SQLITE_ROW);

    return TOLL_LEDGER_OK;
}


/* "20260309" as "2026-03-09" */
static json_t *
toll_ledger_day_json(const char *day)
{
    char  buf[11];

    snprintf(buf, sizeof(buf), "%.4s-%.2s-%.2s", day, day + 4, day + 6);

    return json_string(buf);
}


static int
toll_ledger_cap_event(toll_ledger_t *lg, const toll_ledger_cap_alert_t *a,
    int64_t now)
{
    int      rc;
    json_t  *data;

    data = json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:i, s:o, s:o, s:o}",
                     "buyer", a->buyer, "currency", a->currency,
                     "scope", (a->key_id && a->key_id[0]) ? "key" : "buyer",
                     "period", a->monthly ? "monthly" : "daily",
                     "period_start", toll_ledger_day_json(a->period_start),
                     "period_end", toll_ledger_day_json(a->period_end),
                     "threshold", a->threshold,
                     "cap", toll_ledger_amount_json(a->cap_micros),
                     "used", toll_ledger_amount_json(a->used_micros),
                     "at", toll_ledger_time_json(now));
    if (data == NULL) {
        return toll_ledger_set_error(lg, TOLL_LEDGER_ERROR, "out of memory");
    }

    if (a->key_id != NULL && a->key_id[0] != '\0'
        && json_object_set_new(data, "key_id", json_string(a->key_id)) != 0)
    {
        json_decref(data);
        return toll_ledger_set_error(lg, TOLL_LEDGER_ERROR, "out of memory");
    }

    rc = toll_ledger_event_add(lg, TOLL_LEDGER_EVENT_SPEND_CAP_THRESHOLD,
                               data);
    json_decref(data);

    return rc;
}


/* the row, pointing at the event just written (its seq is the rowid) */
static int
toll_ledger_cap_row(toll_ledger_t *lg, const toll_ledger_cap_alert_t *a,
    const char *key_id, int64_t now)
{
    int            rc;
    int64_t        seq;
    sqlite3_stmt  *st;

    seq = sqlite3_last_insert_rowid(lg->db);

    rc = toll_ledger_prepare(lg, "INSERT INTO cap_alerts (buyer, currency,"
                                 " scope, key_id, period, period_start,"
                                 " threshold, cap_micros, used_micros,"
                                 " event_seq, sent_at)"
                                 " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    sqlite3_bind_text(st, 1, a->buyer, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, a->currency, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, key_id[0] ? "key" : "buyer", -1,
                      SQLITE_STATIC);
    sqlite3_bind_text(st, 4, key_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, a->monthly ? "monthly" : "daily", -1,
                      SQLITE_STATIC);
    sqlite3_bind_text(st, 6, a->period_start, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 7, a->threshold);
    sqlite3_bind_int64(st, 8, a->cap_micros);
    sqlite3_bind_int64(st, 9, a->used_micros);
    sqlite3_bind_int64(st, 10, seq);
    sqlite3_bind_int64(st, 11, now);

    return toll_ledger_step_done(lg, st, "record a spend cap alert");
}


int
toll_ledger_recent_usage_days(toll_ledger_t *lg, int64_t ntx,
    toll_ledger_buyer_day_pt each, void *ctx)
{
    int            rc;
    sqlite3_stmt  *st;

    rc = toll_ledger_prepare(lg, "SELECT DISTINCT buyer, day"
                                 " FROM transactions"
                                 " WHERE id > (SELECT coalesce(max(id), 0)"
                                 " FROM transactions) - ?"
                                 " AND kind = 'usage'"
                                 " AND buyer IS NOT NULL AND day IS NOT NULL",
                             &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    sqlite3_bind_int64(st, 1, ntx);

    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        each(ctx, (const char *) sqlite3_column_text(st, 0),
             (const char *) sqlite3_column_text(st, 1));
    }

    sqlite3_finalize(st);

    if (rc != SQLITE_DONE) {
        return toll_ledger_sql_error(lg, "read the recent usage's days");
    }

    return TOLL_LEDGER_OK;
}
