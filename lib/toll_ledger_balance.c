/*
 * toll: prepaid balances in the ledger (docs/settle.md, "Prepaid
 * balances"): a buyer's credits, debits and refunds, as tollctl balance
 * wrote them into Redis and toll-settle reads them from the buyer's
 * journal, each posted once by (buyer, ref); and what reconcile reads
 * back of them.
 *
 * The buyer's prepaid money is a liability of the platform, the account
 * "prepaid:<CUR>:<buyer>" (kind prepaid, normal side credit):
 *
 *     credit   debit platform:cash          credit prepaid:<CUR>:<buyer>
 *     refund   debit prepaid:<CUR>:<buyer>  credit platform:cash
 *     debit    debit prepaid:<CUR>:<buyer>  credit platform:adjustments
 *
 * What a balance paid of a call's price is debited from the same
 * account by the usage posting (toll_ledger_post.c).
 */

#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "toll_key.h"
#include "toll_ledger_int.h"
#include "toll_money.h"
#include "toll_parse.h"


static int toll_ledger_balance_one(toll_ledger_t *lg, const char *buyer,
    toll_ledger_balance_tx_t *tx, int64_t now);
static int toll_ledger_balance_known(toll_ledger_t *lg, const char *buyer,
    toll_ledger_balance_tx_t *tx, int *known);
static int toll_ledger_balance_entries(toll_ledger_t *lg, int64_t tx_id,
    const char *buyer, const toll_ledger_balance_tx_t *tx);
static const char *toll_ledger_balance_invalid(
    const toll_ledger_balance_tx_t *tx);
static json_t *toll_ledger_prepaid_json(sqlite3_stmt *st);
static int toll_ledger_decimal(const char *s, int64_t min, int64_t *out);


int
toll_ledger_post_balance(toll_ledger_t *lg, const char *buyer,
    toll_ledger_balance_tx_t *tx, size_t n)
{
    int      rc;
    size_t   i;
    int64_t  now;

    if (buyer == NULL
        || !toll_owner_valid((const unsigned char *) buyer, strlen(buyer)))
    {
        return toll_ledger_set_error(lg, TOLL_LEDGER_INVALID,
                                     "invalid buyer \"%s\" of a balance",
                                     buyer ? buyer : "");
    }

    for (i = 0; i < n; i++) {
        tx[i].refused = toll_ledger_balance_invalid(&tx[i]);
        tx[i].rc = tx[i].refused ? TOLL_LEDGER_INVALID : TOLL_LEDGER_OK;
    }

    rc = toll_ledger_begin(lg);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    now = toll_ledger_now();

    for (i = 0; i < n; i++) {
        if (tx[i].rc != TOLL_LEDGER_OK) {
            continue;
        }

        rc = toll_ledger_balance_one(lg, buyer, &tx[i], now);
        if (rc != TOLL_LEDGER_OK) {
            toll_ledger_rollback(lg);
            return rc;
        }
    }

    return toll_ledger_commit(lg);
}


/*
 * One record, under the write lock: a ref the ledger holds is a no-op
 * when its content is the same (a pass that died before its SREM), and
 * refused when it is not (a ref is used once, ever).  Everything is
 * decided before the first write, so a refused record writes nothing
 * and the others of the transaction go on.
 */
static int
toll_ledger_balance_one(toll_ledger_t *lg, const char *buyer,
    toll_ledger_balance_tx_t *tx, int64_t now)
{
    int            rc, known;
    int64_t        tx_id;
    sqlite3_stmt  *st;

    rc = toll_ledger_balance_known(lg, buyer, tx, &known);
    if (rc != TOLL_LEDGER_OK || known) {
        return rc;
    }

    rc = toll_ledger_prepare(lg,
             "INSERT INTO transactions (kind, posted_at, buyer, ref,"
             " currency, amount_micros) VALUES (?, ?, ?, ?, ?, ?)", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    sqlite3_bind_text(st, 1, tx->kind, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now);
    sqlite3_bind_text(st, 3, buyer, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, tx->ref, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, tx->currency, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, tx->amount_micros);

    rc = toll_ledger_step_done(lg, st, "write a balance transaction");
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    tx_id = sqlite3_last_insert_rowid(lg->db);

    return toll_ledger_balance_entries(lg, tx_id, buyer, tx);
}


/* *known: the ledger holds (buyer, ref); tx->rc says if as this one */
static int
toll_ledger_balance_known(toll_ledger_t *lg, const char *buyer,
    toll_ledger_balance_tx_t *tx, int *known)
{
    int            rc;
    const char    *kind, *currency;
    sqlite3_stmt  *st;

    *known = 0;

    rc = toll_ledger_prepare(lg, "SELECT kind, currency, amount_micros"
                                 " FROM transactions"
                                 " WHERE buyer = ? AND ref = ?", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    sqlite3_bind_text(st, 1, buyer, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, tx->ref, -1, SQLITE_STATIC);

    rc = sqlite3_step(st);

    if (rc == SQLITE_ROW) {
        kind = (const char *) sqlite3_column_text(st, 0);
        currency = (const char *) sqlite3_column_text(st, 1);

        *known = 1;

        if (kind != NULL && currency != NULL && strcmp(kind, tx->kind) == 0
            && strcmp(currency, tx->currency) == 0
            && sqlite3_column_int64(st, 2) == tx->amount_micros)
        {
            tx->rc = TOLL_LEDGER_EXISTS;

        } else {
            tx->rc = TOLL_LEDGER_INVALID;
            tx->refused = "the ledger holds this ref with another content";
        }

        rc = SQLITE_DONE;
    }

    sqlite3_finalize(st);

    if (rc != SQLITE_DONE) {
        return toll_ledger_sql_error(lg, "look a balance ref up");
    }

    return TOLL_LEDGER_OK;
}


static int
toll_ledger_balance_entries(toll_ledger_t *lg, int64_t tx_id,
    const char *buyer, const toll_ledger_balance_tx_t *tx)
{
    int          rc;
    char         prepaid[TOLL_LEDGER_ACCOUNT_LEN_MAX + 1];
    int64_t      a;
    const char  *other;

    /* the account name's bound holds: currency 16, owner 128 */
    (void) snprintf(prepaid, sizeof(prepaid), "%s%s:%s",
                    TOLL_LEDGER_ACCOUNT_PREPAID, tx->currency, buyer);

    a = tx->amount_micros;

    if (strcmp(tx->kind, TOLL_LEDGER_TX_CREDIT) == 0) {
        rc = toll_ledger_entry(lg, tx_id, TOLL_LEDGER_ACCOUNT_CASH,
                               "platform", a, 0);
        if (rc != TOLL_LEDGER_OK) {
            return rc;
        }

        return toll_ledger_entry(lg, tx_id, prepaid, "prepaid", 0, a);
    }

    other = (strcmp(tx->kind, TOLL_LEDGER_TX_REFUND) == 0)
            ? TOLL_LEDGER_ACCOUNT_CASH : TOLL_LEDGER_ACCOUNT_ADJUSTMENTS;

    rc = toll_ledger_entry(lg, tx_id, prepaid, "prepaid", a, 0);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    return toll_ledger_entry(lg, tx_id, other, "platform", 0, a);
}


/* why a record cannot be posted, or NULL */
static const char *
toll_ledger_balance_invalid(const toll_ledger_balance_tx_t *tx)
{
    if (tx->kind == NULL
        || (strcmp(tx->kind, TOLL_LEDGER_TX_CREDIT) != 0
            && strcmp(tx->kind, TOLL_LEDGER_TX_DEBIT) != 0
            && strcmp(tx->kind, TOLL_LEDGER_TX_REFUND) != 0))
    {
        return "the kind is not credit, debit or refund";
    }

    if (!toll_settlement_tx_ref_valid(tx->ref)) {
        return "the ref is not 1 to 256 printable ASCII characters";
    }

    if (tx->currency == NULL
        || !toll_money_currency_valid(tx->currency, strlen(tx->currency)))
    {
        return "the currency is not a currency code";
    }

    if (tx->amount_micros <= 0) {
        return "the amount is not above 0";
    }

    return NULL;
}


int
toll_ledger_balance_ref(toll_ledger_t *lg, const char *buyer,
    const char *ref, int *found)
{
    int            rc;
    sqlite3_stmt  *st;

    rc = toll_ledger_prepare(lg, "SELECT 1 FROM transactions"
                                 " WHERE buyer = ? AND ref = ?", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    sqlite3_bind_text(st, 1, buyer, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, ref, -1, SQLITE_STATIC);

    rc = sqlite3_step(st);
    sqlite3_finalize(st);

    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        return toll_ledger_sql_error(lg, "look a balance ref up");
    }

    *found = (rc == SQLITE_ROW);

    return TOLL_LEDGER_OK;
}


/*
 * Every prepaid account: its currency and buyer are the account's name
 * after "prepaid:", cut at the first ':' (a currency code holds none).
 */
int
toll_ledger_prepaid_totals(toll_ledger_t *lg, json_t **out)
{
    int            rc;
    sqlite3_stmt  *st;

    *out = NULL;

    rc = toll_ledger_prepare(lg,
             "SELECT a.name, coalesce(sum(e.credit_micros), 0)"
             " - coalesce(sum(e.debit_micros), 0)"
             " FROM accounts a LEFT JOIN entries e ON e.account_id = a.id"
             " WHERE a.kind = 'prepaid' GROUP BY a.id ORDER BY a.name", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    return toll_ledger_rows_json(lg, st, toll_ledger_prepaid_json,
                                 "sum prepaid accounts", out);
}


static json_t *
toll_ledger_prepaid_json(sqlite3_stmt *st)
{
    size_t       plen;
    const char  *name, *colon;

    name = (const char *) sqlite3_column_text(st, 0);
    plen = sizeof(TOLL_LEDGER_ACCOUNT_PREPAID) - 1;

    if (name == NULL || strncmp(name, TOLL_LEDGER_ACCOUNT_PREPAID, plen) != 0
        || (colon = strchr(name + plen, ':')) == NULL)
    {
        /* not a name the ledger writes: shown whole, no buyer */
        return json_pack("{s:s?, s:s, s:s, s:I}", "account", name,
                         "currency", "", "buyer", "", "balance_micros",
                         (json_int_t) sqlite3_column_int64(st, 1));
    }

    return json_pack("{s:s, s:s%, s:s, s:I}", "account", name,
                     "currency", name + plen, (size_t) (colon - name - plen),
                     "buyer", colon + 1, "balance_micros",
                     (json_int_t) sqlite3_column_int64(st, 1));
}


/*
 * One record as toll-settle posts it and reconcile counts it: what does
 * not read here is never posted, so reconcile must not count it either.
 */
const char *
toll_ledger_balance_record(const char *s, size_t len, char *buf,
    toll_ledger_balance_tx_t *tx, int64_t *unix_time)
{
    char     *p, *f[4];
    size_t    n;
    int64_t   v;

    static const char  form[] = "the record is not \"<kind> <CUR> <micros> "
                                "<unix>\"";

    if (len == 0 || len > TOLL_LEDGER_BALANCE_RECORD_LEN_MAX
        || memchr(s, '\0', len) != NULL)
    {
        return form;
    }

    memcpy(buf, s, len);
    buf[len] = '\0';

    n = 0;
    f[n++] = buf;

    for (p = buf; p < buf + len; p++) {
        if (*p != ' ') {
            continue;
        }

        if (n == 4) {
            return form;
        }

        *p = '\0';
        f[n++] = p + 1;
    }

    if (n != 4) {
        return form;
    }

    if (strcmp(f[0], TOLL_LEDGER_TX_CREDIT) != 0
        && strcmp(f[0], TOLL_LEDGER_TX_DEBIT) != 0
        && strcmp(f[0], TOLL_LEDGER_TX_REFUND) != 0)
    {
        return "the record's kind is not credit, debit or refund";
    }

    if (!toll_money_currency_valid(f[1], strlen(f[1]))) {
        return "the record's currency is not a currency code";
    }

    if (toll_ledger_decimal(f[2], 1, &v) != 0) {
        return "the record's amount is not a positive int64";
    }

    tx->amount_micros = v;

    if (toll_ledger_decimal(f[3], INT64_MIN, unix_time) != 0) {
        return "the record's time is not an int64";
    }

    tx->kind = f[0];
    tx->currency = f[1];

    return NULL;
}


/* an int64 of at least min in canonical decimal: 0, or -1 */
static int
toll_ledger_decimal(const char *s, int64_t min, int64_t *out)
{
    const char  *digits;

    digits = (s[0] == '-') ? s + 1 : s;

    if (digits[0] == '0' && (digits[1] != '\0' || digits != s)) {
        return -1;
    }

    return toll_parse_int64(s, min, INT64_MAX, out);
}
