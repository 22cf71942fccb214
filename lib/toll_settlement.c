/*
 * toll: settlements, what toll owes a provider for a period, and their
 * payment (docs/settle.md, "Settlements").
 *
 * A settlement covers the provider's usage transactions *posted* in
 * [from, to): the ledger's time, not the day of the calls, so that a
 * period that has ended can receive nothing more.  Its sums are taken
 * from the rows in C with checked int64_t additions: SQLite's sum() of
 * INTEGER is exact too, but an overflow there would be an SQL error far
 * from the data that caused it, and total() is REAL.
 */

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "toll_key.h"
#include "toll_ledger_int.h"


#define TOLL_SETTLEMENT_ID_PREFIX     "stl_"
#define TOLL_SETTLEMENT_ID_PREFIX_LEN (sizeof(TOLL_SETTLEMENT_ID_PREFIX) - 1)
/* random bytes of an id: 24 hex digits after the prefix */
#define TOLL_SETTLEMENT_ID_RANDOM     12
/* "list" answers at most this many settlements */
#define TOLL_SETTLEMENT_LIST_MAX      1000
/* the account name a payout debits: "provider:" and the provider id */
#define TOLL_SETTLEMENT_ACCOUNT_BUF   (TOLL_LEDGER_ACCOUNT_LEN_MAX + 1)

#define TOLL_SETTLEMENT_PENDING       "pending"
#define TOLL_SETTLEMENT_COMPLETED     "completed"

/* the columns every reader selects, in the order settlement_read takes */
#define TOLL_SETTLEMENT_COLUMNS                                              \
    "id, provider, period_start, period_end, total_micros, fee_micros,"      \
    " net_micros, calls, status, payment_tx, created_at, paid_at"


/* one settlement row; strings are copies, NUL-terminated */
typedef struct {
    char              id[TOLL_LEDGER_SETTLEMENT_ID_LEN + 1];
    char              provider[TOLL_OWNER_LEN_MAX + 1];
    int64_t           period_start;
    int64_t           period_end;
    int64_t           total_micros;
    int64_t           fee_micros;
    int64_t           net_micros;
    int64_t           calls;
    int               completed;
    char              payment_tx[TOLL_LEDGER_TX_REF_LEN_MAX + 1];
    int64_t           created_at;
    int64_t           paid_at;          /* 0 while pending */
} toll_settlement_t;


static int toll_settlement_provider_valid(const char *provider);
static int toll_settlement_overlap(toll_ledger_t *lg, const char *provider,
    int64_t from, int64_t to);
static int toll_settlement_sum(toll_ledger_t *lg, toll_settlement_t *s);
static int toll_settlement_insert(toll_ledger_t *lg,
    const toll_settlement_t *s);
static int toll_settlement_find(toll_ledger_t *lg, const char *id,
    toll_settlement_t *s);
static int toll_settlement_payout(toll_ledger_t *lg,
    const toll_settlement_t *s);
static int toll_settlement_mark_paid(toll_ledger_t *lg,
    const toll_settlement_t *s);
static void toll_settlement_read(sqlite3_stmt *st, toll_settlement_t *s);
static json_t *toll_settlement_json(const toll_settlement_t *s);
static json_t *toll_settlement_row_json(sqlite3_stmt *st);
static int toll_settlement_finish(toll_ledger_t *lg, const char *event,
    const toll_settlement_t *s, json_t **out);


int
toll_settlement_create(toll_ledger_t *lg, const char *provider,
    int64_t from, int64_t to, json_t **out)
{
    int                rc;
    char               a[TOLL_LEDGER_TIME_STR_MAX];
    char               b[TOLL_LEDGER_TIME_STR_MAX];
    int64_t            now;
    toll_settlement_t  s;

    *out = NULL;

    if (!toll_settlement_provider_valid(provider)) {
        return toll_ledger_set_error(lg, TOLL_LEDGER_INVALID,
                                     "invalid provider id: use 1 to %d "
                                     "printable ASCII characters, no spaces",
                                     TOLL_OWNER_LEN_MAX);
    }

    if (from < 0 || from >= to) {
        toll_ledger_time_text(from, a);
        toll_ledger_time_text(to, b);

        return toll_ledger_set_error(lg, TOLL_LEDGER_INVALID,
                                     "the period %s to %s is empty: its "
                                     "start must come before its end", a, b);
    }

    rc = toll_ledger_begin(lg);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    /*
     * The clock is read under the write lock: a batch posted after this
     * waited for the lock and so is stamped now or later, outside
     * [from, to) when to <= now.  A period that has ended is closed.
     */

    now = toll_ledger_now();

    if (to > now) {
        toll_ledger_rollback(lg);
        toll_ledger_time_text(to, b);
        toll_ledger_time_text(now, a);

        return toll_ledger_set_error(lg, TOLL_LEDGER_INVALID,
                                     "the period ends at %s, after now (%s): "
                                     "settle a period that has ended", b, a);
    }

    rc = toll_settlement_overlap(lg, provider, from, to);
    if (rc != TOLL_LEDGER_OK) {
        goto failed;
    }

    memset(&s, 0, sizeof(toll_settlement_t));

    memcpy(s.id, TOLL_SETTLEMENT_ID_PREFIX, TOLL_SETTLEMENT_ID_PREFIX_LEN);

    if (toll_ledger_random_hex(s.id + TOLL_SETTLEMENT_ID_PREFIX_LEN,
                               TOLL_SETTLEMENT_ID_RANDOM)
        != 0)
    {
        rc = toll_ledger_set_error(lg, TOLL_LEDGER_ERROR,
                                   "no random bytes for a settlement id");
        goto failed;
    }

    snprintf(s.provider, sizeof(s.provider), "%s", provider);
    s.period_start = from;
    s.period_end = to;
    s.created_at = now;

    rc = toll_settlement_sum(lg, &s);
    if (rc != TOLL_LEDGER_OK) {
        goto failed;
    }

    rc = toll_settlement_insert(lg, &s);
    if (rc != TOLL_LEDGER_OK) {
        goto failed;
    }

    return toll_settlement_finish(lg, TOLL_LEDGER_EVENT_SETTLEMENT_CREATED,
                                  &s, out);

failed:

    toll_ledger_rollback(lg);

    return rc;
}


int
toll_settlement_list(toll_ledger_t *lg, const char *provider,
    const char *status, int64_t limit, json_t **out)
{
    int            rc;
    sqlite3_stmt  *st;

    *out = NULL;

    if (limit < 1 || limit > TOLL_SETTLEMENT_LIST_MAX) {
        return toll_ledger_set_error(lg, TOLL_LEDGER_INVALID,
                                     "limit %lld is not within 1..%d",
                                     (long long) limit,
                                     TOLL_SETTLEMENT_LIST_MAX);
    }

    if (status != NULL && strcmp(status, TOLL_SETTLEMENT_PENDING) != 0
        && strcmp(status, TOLL_SETTLEMENT_COMPLETED) != 0)
    {
        return toll_ledger_set_error(lg, TOLL_LEDGER_INVALID,
                                     "invalid status \"%s\": use "
                                     TOLL_SETTLEMENT_PENDING " or "
                                     TOLL_SETTLEMENT_COMPLETED, status);
    }

    rc = toll_ledger_prepare(lg,
             "SELECT " TOLL_SETTLEMENT_COLUMNS " FROM settlements"
             " WHERE (?1 IS NULL OR provider = ?1)"
             " AND (?2 IS NULL OR status = ?2)"
             " ORDER BY created_at DESC, rowid DESC LIMIT ?3", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    if (provider != NULL) {
        sqlite3_bind_text(st, 1, provider, -1, SQLITE_STATIC);
    }

    if (status != NULL) {
        sqlite3_bind_text(st, 2, status, -1, SQLITE_STATIC);
    }

    sqlite3_bind_int64(st, 3, limit);

    return toll_ledger_rows_json(lg, st, toll_settlement_row_json,
                                 "read settlements", out);
}


int
toll_settlement_get(toll_ledger_t *lg, const char *id, json_t **out)
{
    int                rc;
    toll_settlement_t  s;

    *out = NULL;

    rc = toll_settlement_find(lg, id, &s);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    *out = toll_settlement_json(&s);
    if (*out == NULL) {
        return toll_ledger_set_error(lg, TOLL_LEDGER_ERROR, "out of memory");
    }

    return TOLL_LEDGER_OK;
}


int
toll_settlement_pay(toll_ledger_t *lg, const char *id, const char *tx_ref,
    json_t **out)
{
    int                rc;
    toll_settlement_t  s;

    *out = NULL;

    if (!toll_settlement_tx_ref_valid(tx_ref)) {
        return toll_ledger_set_error(lg, TOLL_LEDGER_INVALID,
                                     "invalid payment reference: use 1 to "
                                     "%d printable ASCII characters",
                                     TOLL_LEDGER_TX_REF_LEN_MAX);
    }

    rc = toll_ledger_begin(lg);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    /* read under the write lock: two payers cannot both see it pending */

    rc = toll_settlement_find(lg, id, &s);
    if (rc != TOLL_LEDGER_OK) {
        goto failed;
    }

    if (s.completed) {
        rc = toll_ledger_set_error(lg, TOLL_LEDGER_EXISTS,
                                   "settlement %s is already completed "
                                   "(payment_tx \"%s\"); nothing changed",
                                   s.id, s.payment_tx);
        goto failed;
    }

    s.completed = 1;
    s.paid_at = toll_ledger_now();
    snprintf(s.payment_tx, sizeof(s.payment_tx), "%s", tx_ref);

    rc = toll_settlement_payout(lg, &s);
    if (rc != TOLL_LEDGER_OK) {
        goto failed;
    }

    rc = toll_settlement_mark_paid(lg, &s);
    if (rc != TOLL_LEDGER_OK) {
        goto failed;
    }

    return toll_settlement_finish(lg, TOLL_LEDGER_EVENT_SETTLEMENT_COMPLETED,
                                  &s, out);

failed:

    toll_ledger_rollback(lg);

    return rc;
}


/* a provider id is an owner id, as keys and the meter write it */
static int
toll_settlement_provider_valid(const char *provider)
{
    return provider != NULL
           && toll_owner_valid((const unsigned char *) provider,
                               strlen(provider));
}


int
toll_settlement_tx_ref_valid(const char *ref)
{
    size_t  i, len;

    if (ref == NULL) {
        return 0;
    }

    len = strlen(ref);

    if (len == 0 || len > TOLL_LEDGER_TX_REF_LEN_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (ref[i] < 0x20 || ref[i] > 0x7e) {
            return 0;
        }
    }

    return 1;
}


/* periods [a, b) and [c, d) overlap when a < d and c < b */
static int
toll_settlement_overlap(toll_ledger_t *lg, const char *provider,
    int64_t from, int64_t to)
{
    int            rc;
    char           id[TOLL_LEDGER_SETTLEMENT_ID_LEN + 1];
    char           a[TOLL_LEDGER_TIME_STR_MAX], b[TOLL_LEDGER_TIME_STR_MAX];
    sqlite3_stmt  *st;
    const char    *text;

    rc = toll_ledger_prepare(lg,
             "SELECT id, period_start, period_end FROM settlements"
             " WHERE provider = ? AND period_start < ? AND ? < period_end"
             " ORDER BY period_start LIMIT 1", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    sqlite3_bind_text(st, 1, provider, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, to);
    sqlite3_bind_int64(st, 3, from);

    rc = sqlite3_step(st);

    if (rc == SQLITE_DONE) {
        sqlite3_finalize(st);
        return TOLL_LEDGER_OK;
    }

    if (rc != SQLITE_ROW) {
        rc = toll_ledger_sql_error(lg, "look for overlapping settlements");
        sqlite3_finalize(st);
        return rc;
    }

    text = (const char *) sqlite3_column_text(st, 0);
    snprintf(id, sizeof(id), "%s", text ? text : "");
    toll_ledger_time_text(sqlite3_column_int64(st, 1), a);
    toll_ledger_time_text(sqlite3_column_int64(st, 2), b);
    sqlite3_finalize(st);

    return toll_ledger_set_error(lg, TOLL_LEDGER_EXISTS,
                                 "the period overlaps settlement %s of "
                                 "provider \"%s\" (%s to %s): choose a "
                                 "period outside it", id, provider, a, b);
}


/* the provider's usage posted in the period, summed without overflow */
static int
toll_settlement_sum(toll_ledger_t *lg, toll_settlement_t *s)
{
    int            rc;
    char           a[TOLL_LEDGER_TIME_STR_MAX], b[TOLL_LEDGER_TIME_STR_MAX];
    int64_t        n, amount, fee, calls;
    sqlite3_stmt  *st;

    rc = toll_ledger_prepare(lg,
             "SELECT amount_micros, fee_micros, calls FROM transactions"
             " WHERE kind = 'usage' AND provider = ?"
             " AND posted_at >= ? AND posted_at < ?", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    sqlite3_bind_text(st, 1, s->provider, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, s->period_start);
    sqlite3_bind_int64(st, 3, s->period_end);

    n = 0;

    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        amount = sqlite3_column_int64(st, 0);
        fee = sqlite3_column_int64(st, 1);
        calls = sqlite3_column_int64(st, 2);

        /*
         * The schema's CHECKs hold these for every row toll writes; a row
         * that breaks them was written by something else, and no
         * settlement is made of it.
         */
        if (amount < 0 || fee < 0 || fee > amount || calls < 0) {
            sqlite3_finalize(st);
            return toll_ledger_set_error(lg, TOLL_LEDGER_INVALID,
                                         "a usage transaction of provider "
                                         "\"%s\" has amount %lld and fee "
                                         "%lld: run \"tollctl ledger "
                                         "check\"", s->provider,
                                         (long long) amount,
                                         (long long) fee);
        }

        if (__builtin_add_overflow(s->total_micros, amount, &s->total_micros)
            || __builtin_add_overflow(s->fee_micros, fee, &s->fee_micros)
            || __builtin_add_overflow(s->calls, calls, &s->calls))
        {
            sqlite3_finalize(st);
            return toll_ledger_set_error(lg, TOLL_LEDGER_OVERFLOW,
                                         "the usage of provider \"%s\" in "
                                         "the period sums beyond %lld "
                                         "micro-units: settle shorter "
                                         "periods", s->provider,
                                         (long long) INT64_MAX);
        }

        n++;
    }

    sqlite3_finalize(st);

    if (rc != SQLITE_DONE) {
        return toll_ledger_sql_error(lg, "sum usage");
    }

    if (n == 0) {
        toll_ledger_time_text(s->period_start, a);
        toll_ledger_time_text(s->period_end, b);

        return toll_ledger_set_error(lg, TOLL_LEDGER_EMPTY,
                                     "provider \"%s\" has no usage posted "
                                     "from %s to %s: nothing to settle",
                                     s->provider, a, b);
    }

    /* every fee is at most its amount, so the sums keep that order */
    assert(s->fee_micros <= s->total_micros);

    s->net_micros = s->total_micros - s->fee_micros;

    return TOLL_LEDGER_OK;
}


static int
toll_settlement_insert(toll_ledger_t *lg, const toll_settlement_t *s)
{
    int            rc;
    sqlite3_stmt  *st;

    rc = toll_ledger_prepare(lg,
             "INSERT INTO settlements (id, provider, period_start,"
             " period_end, total_micros, fee_micros, net_micros, calls,"
             " status, created_at)"
             " VALUES (?, ?, ?, ?, ?, ?, ?, ?, '" TOLL_SETTLEMENT_PENDING "',"
             " ?)", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    sqlite3_bind_text(st, 1, s->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, s->provider, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, s->period_start);
    sqlite3_bind_int64(st, 4, s->period_end);
    sqlite3_bind_int64(st, 5, s->total_micros);
    sqlite3_bind_int64(st, 6, s->fee_micros);
    sqlite3_bind_int64(st, 7, s->net_micros);
    sqlite3_bind_int64(st, 8, s->calls);
    sqlite3_bind_int64(st, 9, s->created_at);

    return toll_ledger_step_done(lg, st, "record a settlement");
}


static int
toll_settlement_find(toll_ledger_t *lg, const char *id, toll_settlement_t *s)
{
    int            rc;
    sqlite3_stmt  *st;

    rc = toll_ledger_prepare(lg, "SELECT " TOLL_SETTLEMENT_COLUMNS
                                 " FROM settlements WHERE id = ?", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);

    rc = sqlite3_step(st);

    if (rc == SQLITE_ROW) {
        toll_settlement_read(st, s);
        sqlite3_finalize(st);
        return TOLL_LEDGER_OK;
    }

    if (rc != SQLITE_DONE) {
        rc = toll_ledger_sql_error(lg, "read a settlement");
        sqlite3_finalize(st);
        return rc;
    }

    sqlite3_finalize(st);

    return toll_ledger_set_error(lg, TOLL_LEDGER_NOT_FOUND,
                                 "no settlement \"%.*s\" in the ledger",
                                 TOLL_LEDGER_SETTLEMENT_ID_LEN + 4, id);
}


/*
 * The payment as a ledger transaction: what toll owed the provider
 * (provider:<p>, a credit balance) goes down by the net, and the cash it
 * paid out (platform:cash) is credited the same.  A net of 0 is a
 * transaction with no entries, so that the payment is still on record.
 */
static int
toll_settlement_payout(toll_ledger_t *lg, const toll_settlement_t *s)
{
    int            rc;
    char           account[TOLL_SETTLEMENT_ACCOUNT_BUF];
    int64_t        tx_id;
    sqlite3_stmt  *st;

    rc = toll_ledger_prepare(lg,
             "INSERT INTO transactions (kind, settlement_id, posted_at,"
             " provider, amount_micros, fee_bp, fee_micros)"
             " VALUES ('payout', ?, ?, ?, ?, 0, 0)", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    sqlite3_bind_text(st, 1, s->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, s->paid_at);
    sqlite3_bind_text(st, 3, s->provider, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, s->net_micros);

    rc = toll_ledger_step_done(lg, st, "write a payout transaction");
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    tx_id = sqlite3_last_insert_rowid(toll_ledger_db(lg));

    snprintf(account, sizeof(account), "provider:%s", s->provider);

    rc = toll_ledger_entry(lg, tx_id, account, "provider", s->net_micros, 0);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    return toll_ledger_entry(lg, tx_id, TOLL_LEDGER_ACCOUNT_CASH, "platform",
                             0, s->net_micros);
}


static int
toll_settlement_mark_paid(toll_ledger_t *lg, const toll_settlement_t *s)
{
    int            rc;
    sqlite3_stmt  *st;

    rc = toll_ledger_prepare(lg,
             "UPDATE settlements SET status = '" TOLL_SETTLEMENT_COMPLETED "',"
             " payment_tx = ?, paid_at = ?"
             " WHERE id = ? AND status = '" TOLL_SETTLEMENT_PENDING "'", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    sqlite3_bind_text(st, 1, s->payment_tx, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, s->paid_at);
    sqlite3_bind_text(st, 3, s->id, -1, SQLITE_STATIC);

    rc = toll_ledger_step_done(lg, st, "mark a settlement paid");
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    /* read as pending under the same lock: exactly this row changes */
    assert(sqlite3_changes(toll_ledger_db(lg)) == 1);

    return TOLL_LEDGER_OK;
}


static void
toll_settlement_read(sqlite3_stmt *st, toll_settlement_t *s)
{
    const char  *text;

    memset(s, 0, sizeof(toll_settlement_t));

    text = (const char *) sqlite3_column_text(st, 0);
    snprintf(s->id, sizeof(s->id), "%s", text ? text : "");

    text = (const char *) sqlite3_column_text(st, 1);
    snprintf(s->provider, sizeof(s->provider), "%s", text ? text : "");

    s->period_start = sqlite3_column_int64(st, 2);
    s->period_end = sqlite3_column_int64(st, 3);
    s->total_micros = sqlite3_column_int64(st, 4);
    s->fee_micros = sqlite3_column_int64(st, 5);
    s->net_micros = sqlite3_column_int64(st, 6);
    s->calls = sqlite3_column_int64(st, 7);

    text = (const char *) sqlite3_column_text(st, 8);
    s->completed = (text != NULL
                    && strcmp(text, TOLL_SETTLEMENT_COMPLETED) == 0);

    text = (const char *) sqlite3_column_text(st, 9);
    snprintf(s->payment_tx, sizeof(s->payment_tx), "%s", text ? text : "");

    s->created_at = sqlite3_column_int64(st, 10);
    s->paid_at = sqlite3_column_int64(st, 11);
}


/*
 * The settlement as tollctl prints it and as webhooks carry it: amounts
 * as decimal strings with cents ("10.50") and as micro-units, times in
 * ISO 8601 UTC, payment_tx and paid_at null while pending.
 */
static json_t *
toll_settlement_json(const toll_settlement_t *s)
{
    return json_pack("{s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:I, s:I, s:I,"
                     " s:I, s:s, s:o, s:o, s:o}",
                     "id", s->id,
                     "provider_id", s->provider,
                     "period_start", toll_ledger_time_json(s->period_start),
                     "period_end", toll_ledger_time_json(s->period_end),
                     "total_amount", toll_ledger_amount_json(s->total_micros),
                     "platform_fee", toll_ledger_amount_json(s->fee_micros),
                     "net_amount", toll_ledger_amount_json(s->net_micros),
                     "total_micros", (json_int_t) s->total_micros,
                     "fee_micros", (json_int_t) s->fee_micros,
                     "net_micros", (json_int_t) s->net_micros,
                     "call_count", (json_int_t) s->calls,
                     "status", s->completed ? TOLL_SETTLEMENT_COMPLETED
                                            : TOLL_SETTLEMENT_PENDING,
                     "payment_tx", s->completed ? json_string(s->payment_tx)
                                                : json_null(),
                     "created_at", toll_ledger_time_json(s->created_at),
                     "paid_at", s->completed
                                ? toll_ledger_time_json(s->paid_at)
                                : json_null());
}


/* a row of TOLL_SETTLEMENT_COLUMNS as its JSON object */
static json_t *
toll_settlement_row_json(sqlite3_stmt *st)
{
    toll_settlement_t  s;

    toll_settlement_read(st, &s);

    return toll_settlement_json(&s);
}


/* the event, in the transaction that causes it, then COMMIT */
static int
toll_settlement_finish(toll_ledger_t *lg, const char *event,
    const toll_settlement_t *s, json_t **out)
{
    int      rc;
    json_t  *obj;

    obj = toll_settlement_json(s);
    if (obj == NULL) {
        toll_ledger_rollback(lg);
        return toll_ledger_set_error(lg, TOLL_LEDGER_ERROR, "out of memory");
    }

    rc = toll_ledger_event_add(lg, event, obj);
    if (rc != TOLL_LEDGER_OK) {
        toll_ledger_rollback(lg);
        json_decref(obj);
        return rc;
    }

    rc = toll_ledger_commit(lg);
    if (rc != TOLL_LEDGER_OK) {
        json_decref(obj);
        return rc;
    }

    *out = obj;

    return TOLL_LEDGER_OK;
}
