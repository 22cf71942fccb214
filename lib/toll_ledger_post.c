/*
 * toll: posting drained usage into the ledger (docs/settle.md, "The
 * drain protocol"): one batch, once, as one transaction; each record's
 * entries (buyer debited, from its prepaid balance as far as that paid,
 * provider and platform fee credited), and the free-tier event a record
 * can raise.
 */

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "toll_key.h"
#include "toll_ledger_int.h"
#include "toll_money.h"


/* the largest account name the ledger writes, NUL included */
#define TOLL_LEDGER_ACCOUNT_BUF      (TOLL_LEDGER_ACCOUNT_LEN_MAX + 1)


static int toll_ledger_post_usage(toll_ledger_t *lg,
    const toll_ledger_batch_t *b, const toll_ledger_usage_t *u,
    int64_t fee_bp, int64_t now);
static int toll_ledger_usage_entries(toll_ledger_t *lg, int64_t tx_id,
    const toll_ledger_batch_t *b, const toll_ledger_usage_t *u, int64_t fee);
static int toll_ledger_free_tier(toll_ledger_t *lg,
    const toll_ledger_batch_t *b, const toll_ledger_usage_t *u,
    int64_t now);
static int toll_ledger_usage_valid(const toll_ledger_usage_t *u);
static int toll_ledger_hex_valid(const char *s, size_t len);
static int toll_ledger_day_valid(const char *s);


int
toll_ledger_post_batch(toll_ledger_t *lg, const toll_ledger_batch_t *b,
    const toll_ledger_fees_t *fees)
{
    int            rc;
    size_t         i, j;
    int64_t        now, fee_bp;
    sqlite3_stmt  *st;

    if (!toll_ledger_hex_valid(b->id, TOLL_LEDGER_BATCH_ID_LEN)
        || !toll_ledger_day_valid(b->day)
        || !toll_owner_valid((const unsigned char *) b->buyer,
                             strlen(b->buyer))
        || b->claim == NULL)
    {
        return toll_ledger_set_error(lg, TOLL_LEDGER_INVALID,
                                     "invalid batch \"%s\" of buyer \"%s\"",
                                     b->id, b->buyer);
    }

    for (i = 0; i < b->nusage; i++) {
        if (!toll_ledger_usage_valid(&b->usage[i])) {
            return toll_ledger_set_error(lg, TOLL_LEDGER_INVALID,
                                         "invalid usage of service \"%s\" "
                                         "in batch \"%s\"",
                                         b->usage[i].service, b->id);
        }

        for (j = 0; j < i; j++) {
            if (strcmp(b->usage[i].service, b->usage[j].service) == 0) {
                return toll_ledger_set_error(lg, TOLL_LEDGER_INVALID,
                                             "service \"%s\" twice in batch "
                                             "\"%s\"", b->usage[i].service,
                                             b->id);
            }
        }
    }

    rc = toll_ledger_begin(lg);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    now = toll_ledger_now();

    rc = toll_ledger_prepare(lg, "INSERT INTO batches (id, claim, buyer, "
                                 "day, posted_at, records) "
                                 "VALUES (?, ?, ?, ?, ?, ?)", &st);
    if (rc != TOLL_LEDGER_OK) {
        goto failed;
    }

    sqlite3_bind_text(st, 1, b->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, b->claim, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, b->buyer, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, b->day, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, now);
    sqlite3_bind_int64(st, 6, (int64_t) b->nusage);

    rc = sqlite3_step(st);
    sqlite3_finalize(st);

    if (rc != SQLITE_DONE) {
        if (sqlite3_extended_errcode(lg->db) == SQLITE_CONSTRAINT_PRIMARYKEY) {
            /* posted before: the UNIQUE batch id makes a replay a no-op */
            toll_ledger_rollback(lg);
            return toll_ledger_set_error(lg, TOLL_LEDGER_EXISTS,
                                         "batch \"%s\" is in the ledger",
                                         b->id);
        }

        rc = toll_ledger_sql_error(lg, "record a batch");
        goto failed;
    }

    for (i = 0; i < b->nusage; i++) {
        fee_bp = toll_ledger_fee_bp(fees, b->usage[i].provider);

        rc = toll_ledger_post_usage(lg, b, &b->usage[i], fee_bp, now);
        if (rc != TOLL_LEDGER_OK) {
            goto failed;
        }

        rc = toll_ledger_free_tier(lg, b, &b->usage[i], now);
        if (rc != TOLL_LEDGER_OK) {
            goto failed;
        }
    }

    return toll_ledger_commit(lg);

failed:

    toll_ledger_rollback(lg);

    return rc;
}


static int
toll_ledger_post_usage(toll_ledger_t *lg, const toll_ledger_batch_t *b,
    const toll_ledger_usage_t *u, int64_t fee_bp, int64_t now)
{
    int            rc;
    int64_t        fee, tx_id;
    sqlite3_stmt  *st;

    if (fee_bp < 0 || fee_bp > TOLL_LEDGER_FEE_BP_MAX
        || toll_money_fee_bp(u->amount_micros, fee_bp, &fee) != TOLL_MONEY_OK)
    {
        return toll_ledger_set_error(lg, TOLL_LEDGER_INVALID,
                                     "fee of %lld bp on %lld micro-units",
                                     (long long) fee_bp,
                                     (long long) u->amount_micros);
    }

    /* the fee is at most the amount: the provider's part is never < 0 */
    assert(fee >= 0 && fee <= u->amount_micros);

    rc = toll_ledger_prepare(lg,
             "INSERT INTO transactions (kind, batch_id, posted_at, buyer,"
             " provider, service, day, calls, free_calls, paid_calls,"
             " errors, latency_ms, amount_micros, fee_bp, fee_micros,"
             " currency, prepaid_micros, units)"
             " VALUES ('usage', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
             " ?, ?, ?)", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    sqlite3_bind_text(st, 1, b->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now);
    sqlite3_bind_text(st, 3, b->buyer, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, u->provider, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, u->service, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, b->day, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, u->calls);
    sqlite3_bind_int64(st, 8, u->free_calls);
    sqlite3_bind_int64(st, 9, u->paid_calls);
    sqlite3_bind_int64(st, 10, u->errors);
    sqlite3_bind_int64(st, 11, u->latency_ms);
    sqlite3_bind_int64(st, 12, u->amount_micros);
    sqlite3_bind_int64(st, 13, fee_bp);
    sqlite3_bind_int64(st, 14, fee);

    /* an older meter wrote no currency: NULL, not "" */
    if (u->currency != NULL && u->currency[0] != '\0') {
        sqlite3_bind_text(st, 15, u->currency, -1, SQLITE_STATIC);
    }

    sqlite3_bind_int64(st, 16, u->prepaid_micros);
    sqlite3_bind_int64(st, 17, u->units);

    rc = toll_ledger_step_done(lg, st, "write a usage transaction");
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    tx_id = sqlite3_last_insert_rowid(lg->db);

    return toll_ledger_usage_entries(lg, tx_id, b, u, fee);
}


/*
 * The buyer pays the amount: what its prepaid balance paid from
 * prepaid:<CUR>:<buyer>, the rest from buyer:<buyer> (an entry of 0 is
 * not written); the provider gets amount - fee, platform:fees the fee.
 */
static int
toll_ledger_usage_entries(toll_ledger_t *lg, int64_t tx_id,
    const toll_ledger_batch_t *b, const toll_ledger_usage_t *u, int64_t fee)
{
    int      rc;
    char     account[TOLL_LEDGER_ACCOUNT_BUF];
    int64_t  account_id;

    /*
     * The accounts exist from the first usage, free calls only included:
     * a buyer who has not paid yet has a balance of 0, not no account.
     */

    snprintf(account, sizeof(account), "buyer:%s", b->buyer);

    rc = toll_ledger_account(lg, account, "buyer", &account_id);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    rc = toll_ledger_entry(lg, tx_id, account, "buyer",
                           u->amount_micros - u->prepaid_micros, 0);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    if (u->prepaid_micros > 0) {
        snprintf(account, sizeof(account), TOLL_LEDGER_ACCOUNT_PREPAID
                 "%s:%s", u->currency, b->buyer);

        rc = toll_ledger_entry(lg, tx_id, account, "prepaid",
                               u->prepaid_micros, 0);
        if (rc != TOLL_LEDGER_OK) {
            return rc;
        }
    }

    snprintf(account, sizeof(account), "provider:%s", u->provider);

    rc = toll_ledger_account(lg, account, "provider", &account_id);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    rc = toll_ledger_entry(lg, tx_id, account, "provider", 0,
                           u->amount_micros - fee);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    return toll_ledger_entry(lg, tx_id, TOLL_LEDGER_ACCOUNT_FEES, "platform",
                             0, fee);
}


/*
 * A buyer's service that had free calls and now has a paid one has used
 * its free tier: the event is written once, with the batch that shows it.
 */
static int
toll_ledger_free_tier(toll_ledger_t *lg, const toll_ledger_batch_t *b,
    const toll_ledger_usage_t *u, int64_t now)
{
    int            rc, exhausted;
    json_t        *data;
    int64_t        free_calls;
    sqlite3_stmt  *st;

    if (u->free_calls == 0 && u->paid_calls == 0) {
        return TOLL_LEDGER_OK;
    }

    rc = toll_ledger_prepare(lg,
             "INSERT INTO free_tier (buyer, service, free_calls)"
             " VALUES (?1, ?2, ?3)"
             " ON CONFLICT (buyer, service)"
             " DO UPDATE SET free_calls = free_calls + ?3"
             " RETURNING free_calls, exhausted_at IS NOT NULL", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    sqlite3_bind_text(st, 1, b->buyer, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, u->service, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, u->free_calls);

    rc = sqlite3_step(st);

    if (rc != SQLITE_ROW) {
        sqlite3_finalize(st);
        return toll_ledger_sql_error(lg, "count free calls");
    }

    free_calls = sqlite3_column_int64(st, 0);
    exhausted = sqlite3_column_int(st, 1);

    (void) sqlite3_step(st);
    sqlite3_finalize(st);

    if (exhausted || free_calls == 0 || u->paid_calls == 0) {
        return TOLL_LEDGER_OK;
    }

    rc = toll_ledger_prepare(lg, "UPDATE free_tier SET exhausted_at = ?"
                                 " WHERE buyer = ? AND service = ?", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    sqlite3_bind_int64(st, 1, now);
    sqlite3_bind_text(st, 2, b->buyer, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, u->service, -1, SQLITE_STATIC);

    rc = toll_ledger_step_done(lg, st, "mark a free tier used");
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    data = json_pack("{s:s, s:s, s:s, s:I, s:s}",
                     "buyer", b->buyer, "service", u->service,
                     "provider", u->provider, "free_calls",
                     (json_int_t) free_calls, "day", b->day);
    if (data == NULL) {
        return toll_ledger_set_error(lg, TOLL_LEDGER_ERROR, "out of memory");
    }

    rc = toll_ledger_event_add(lg, TOLL_LEDGER_EVENT_FREE_TIER_EXHAUSTED,
                               data);
    json_decref(data);

    return rc;
}


int
toll_ledger_event_add(toll_ledger_t *lg, const char *type, json_t *data)
{
    int            rc;
    char           id[4 + 24 + 1], *body;
    json_t        *event;
    json_free_t    json_free;
    int64_t        now;
    sqlite3_stmt  *st;

    memcpy(id, "evt_", 4);

    if (toll_ledger_random_hex(id + 4, 12) != 0) {
        return toll_ledger_set_error(lg, TOLL_LEDGER_ERROR,
                                     "no random bytes for an event id");
    }

    now = toll_ledger_now();

    event = json_pack("{s:s, s:s, s:I, s:O}", "id", id, "type", type,
                      "created", (json_int_t) now, "data", data);
    if (event == NULL) {
        return toll_ledger_set_error(lg, TOLL_LEDGER_ERROR, "out of memory");
    }

    body = json_dumps(event, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(event);

    /* the text is jansson's: freed by its allocator, which may be a
     * program's own (tollctl wipes what it frees) */
    json_get_alloc_funcs(NULL, &json_free);

    if (body == NULL) {
        return toll_ledger_set_error(lg, TOLL_LEDGER_ERROR, "out of memory");
    }

    rc = toll_ledger_prepare(lg, "INSERT INTO events (id, type, created_at,"
                                 " body) VALUES (?, ?, ?, ?)", &st);
    if (rc != TOLL_LEDGER_OK) {
        json_free(body);
        return rc;
    }

    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, type, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now);
    sqlite3_bind_text(st, 4, body, -1, SQLITE_STATIC);

    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    json_free(body);

    if (rc != SQLITE_DONE) {
        return toll_ledger_sql_error(lg, "record an event");
    }

    return TOLL_LEDGER_OK;
}


int
toll_ledger_has_batch(toll_ledger_t *lg, const char *id, int *found)
{
    int            rc;
    sqlite3_stmt  *st;

    rc = toll_ledger_prepare(lg, "SELECT 1 FROM batches WHERE id = ?", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);

    rc = sqlite3_step(st);
    sqlite3_finalize(st);

    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        return toll_ledger_sql_error(lg, "look a batch up");
    }

    *found = (rc == SQLITE_ROW);

    return TOLL_LEDGER_OK;
}


static int
toll_ledger_usage_valid(const toll_ledger_usage_t *u)
{
    size_t  len;

    if (u->service == NULL || u->provider == NULL) {
        return 0;
    }

    len = strlen(u->service);

    if (len == 0 || len > TOLL_LEDGER_SERVICE_LEN_MAX
        || !toll_owner_valid((const unsigned char *) u->provider,
                             strlen(u->provider)))
    {
        return 0;
    }

    if (u->calls < 0 || u->free_calls < 0 || u->paid_calls < 0
        || u->errors < 0 || u->latency_ms < 0 || u->amount_micros < 0)
    {
        return 0;
    }

    if (u->currency != NULL && u->currency[0] != '\0'
        && !toll_money_currency_valid(u->currency, strlen(u->currency)))
    {
        return 0;
    }

    /* what a balance paid is a part of the amount, in a known currency */

    if (u->prepaid_micros == 0) {
        return 1;
    }

    return u->prepaid_micros > 0 && u->prepaid_micros <= u->amount_micros
           && u->currency != NULL
           && toll_money_currency_valid(u->currency, strlen(u->currency));
}


static int
toll_ledger_hex_valid(const char *s, size_t len)
{
    size_t  i;

    if (s == NULL || strlen(s) != len) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return 0;
        }
    }

    return 1;
}


static int
toll_ledger_day_valid(const char *s)
{
    size_t  i;

    if (s == NULL || strlen(s) != TOLL_LEDGER_DAY_LEN) {
        return 0;
    }

    for (i = 0; i < TOLL_LEDGER_DAY_LEN; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
    }

    return 1;
}
