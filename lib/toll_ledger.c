/*
 * toll: the double-entry ledger in SQLite (docs/settle.md).
 *
 * The file is opened in WAL mode with synchronous=FULL: a COMMIT that
 * returned is on disk, and readers (tollctl) never block the writer
 * (toll-settle).  Every write is one BEGIN IMMEDIATE transaction; before
 * its COMMIT the debits it wrote are compared with its credits, and the
 * process aborts rather than commit a ledger that does not balance.
 */

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "toll_key.h"
#include "toll_ledger_int.h"
#include "toll_ledger_schema.h"


/* the largest account name the ledger writes, NUL included */
#define TOLL_LEDGER_ACCOUNT_BUF      (TOLL_LEDGER_ACCOUNT_LEN_MAX + 1)
#define TOLL_LEDGER_ENTRIES_MAX      100000


static int toll_ledger_schema(toll_ledger_t *lg, int create);
static int toll_ledger_meta_get(toll_ledger_t *lg, const char *name,
    char *buf, size_t size, int *found);
static int toll_ledger_post_usage(toll_ledger_t *lg,
    const toll_ledger_batch_t *b, const toll_ledger_usage_t *u,
    int64_t fee_bp, int64_t now);
static int toll_ledger_free_tier(toll_ledger_t *lg,
    const toll_ledger_batch_t *b, const toll_ledger_usage_t *u,
    int64_t now);
static int toll_ledger_usage_valid(const toll_ledger_usage_t *u);
static int toll_ledger_hex_valid(const char *s, size_t len);
static int toll_ledger_day_valid(const char *s);
static int toll_ledger_check_add(json_t *checks, const char *name, int ok,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int toll_ledger_check_usage(toll_ledger_t *lg, int64_t *bad,
    char *detail, size_t size);
static int toll_ledger_check_settlements(toll_ledger_t *lg, int64_t *bad,
    char *detail, size_t size);
static int toll_ledger_scalar(toll_ledger_t *lg, const char *sql,
    int64_t *out);


int
toll_ledger_open(const char *path, int flags, toll_ledger_t **out,
    char *err, size_t err_size)
{
    int             rc, oflags;
    toll_ledger_t  *lg;

    *out = NULL;

    lg = calloc(1, sizeof(toll_ledger_t));
    if (lg == NULL) {
        snprintf(err, err_size, "out of memory");
        return TOLL_LEDGER_ERROR;
    }

    if (flags & TOLL_LEDGER_OPEN_READONLY) {
        oflags = SQLITE_OPEN_READONLY;

    } else {
        oflags = SQLITE_OPEN_READWRITE;

        if (flags & TOLL_LEDGER_OPEN_CREATE) {
            oflags |= SQLITE_OPEN_CREATE;
        }
    }

    rc = sqlite3_open_v2(path, &lg->db, oflags | SQLITE_OPEN_NOMUTEX, NULL);

    if (rc != SQLITE_OK) {
        snprintf(err, err_size, "cannot open the ledger \"%s\": %s", path,
                 lg->db ? sqlite3_errmsg(lg->db) : sqlite3_errstr(rc));
        toll_ledger_close(lg);
        return (rc == SQLITE_CANTOPEN) ? TOLL_LEDGER_NOT_FOUND
                                       : TOLL_LEDGER_ERROR;
    }

    sqlite3_busy_timeout(lg->db, TOLL_LEDGER_BUSY_TIMEOUT_MS);
    sqlite3_extended_result_codes(lg->db, 1);

    /*
     * WAL: the reader never blocks the writer.  FULL: WAL's NORMAL may
     * lose the last transactions on power loss, and a batch whose Redis
     * data was deleted after its COMMIT must not be one of them.
     */

    rc = sqlite3_exec(lg->db,
                      (flags & TOLL_LEDGER_OPEN_READONLY)
                      ? "PRAGMA foreign_keys=ON;"
                      : "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                        "PRAGMA foreign_keys=ON;",
                      NULL, NULL, NULL);

    if (rc == SQLITE_OK) {
        rc = toll_ledger_schema(lg, flags & TOLL_LEDGER_OPEN_CREATE);

    } else {
        rc = toll_ledger_sql_error(lg, "set up the ledger");
    }

    if (rc != TOLL_LEDGER_OK) {
        snprintf(err, err_size, "ledger \"%s\": %s", path, lg->err);
        toll_ledger_close(lg);
        return rc;
    }

    *out = lg;

    return TOLL_LEDGER_OK;
}


void
toll_ledger_close(toll_ledger_t *lg)
{
    if (lg == NULL) {
        return;
    }

    if (lg->in_tx) {
        toll_ledger_rollback(lg);
    }

    /* sqlite3_close_v2 waits for statements a bug might have leaked */
    sqlite3_close_v2(lg->db);
    free(lg);
}


const char *
toll_ledger_errmsg(const toll_ledger_t *lg)
{
    return lg->err[0] ? lg->err : "no error";
}


const char *
toll_ledger_id(const toll_ledger_t *lg)
{
    return lg->id;
}


struct sqlite3 *
toll_ledger_db(toll_ledger_t *lg)
{
    return lg->db;
}


/* the schema is made once, under the write lock: two creators race */
static int
toll_ledger_schema(toll_ledger_t *lg, int create)
{
    int   rc, found;
    char  version[32], sql[256];

    rc = toll_ledger_meta_get(lg, "schema_version", version, sizeof(version),
                              &found);

    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    if (found) {
        goto check;
    }

    if (!create) {
        return toll_ledger_set_error(lg, TOLL_LEDGER_NOT_FOUND,
                                     "not a toll ledger (no schema): "
                                     "toll-settle creates it on its first run");
    }

    rc = toll_ledger_begin(lg);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    rc = toll_ledger_meta_get(lg, "schema_version", version, sizeof(version),
                              &found);

    if (rc == TOLL_LEDGER_OK && !found) {
        if (toll_ledger_random_hex(lg->id, TOLL_LEDGER_BATCH_ID_LEN / 2)
            != 0)
        {
            toll_ledger_rollback(lg);
            return toll_ledger_set_error(lg, TOLL_LEDGER_ERROR,
                                         "no random bytes for the ledger id");
        }

        snprintf(sql, sizeof(sql),
                 "INSERT INTO meta VALUES ('schema_version', '%d');"
                 "INSERT INTO meta VALUES ('ledger_id', '%s');"
                 "INSERT INTO meta VALUES ('created_at', '%lld');",
                 TOLL_LEDGER_SCHEMA_VERSION, lg->id,
                 (long long) toll_ledger_now());

        if (sqlite3_exec(lg->db, TOLL_LEDGER_SCHEMA_SQL, NULL, NULL, NULL)
            != SQLITE_OK
            || sqlite3_exec(lg->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        {
            rc = toll_ledger_sql_error(lg, "create the schema");
            toll_ledger_rollback(lg);
            return rc;
        }

        snprintf(version, sizeof(version), "%d", TOLL_LEDGER_SCHEMA_VERSION);
    }

    if (rc != TOLL_LEDGER_OK) {
        toll_ledger_rollback(lg);
        return rc;
    }

    rc = toll_ledger_commit(lg);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

check:

    if (atoi(version) != TOLL_LEDGER_SCHEMA_VERSION) {
        return toll_ledger_set_error(lg, TOLL_LEDGER_INVALID,
                                     "schema version %s, this program "
                                     "reads version %d", version,
                                     TOLL_LEDGER_SCHEMA_VERSION);
    }

    return toll_ledger_meta_get(lg, "ledger_id", lg->id, sizeof(lg->id),
                                &found);
}


static int
toll_ledger_meta_get(toll_ledger_t *lg, const char *name, char *buf,
    size_t size, int *found)
{
    int            rc;
    sqlite3_stmt  *st;
    const char    *v;

    *found = 0;

    rc = sqlite3_prepare_v2(lg->db, "SELECT value FROM meta WHERE name = ?",
                            -1, &st, NULL);

    if (rc != SQLITE_OK) {
        /* no meta table: an empty file, or not a ledger */
        if (strstr(sqlite3_errmsg(lg->db), "no such table") != NULL) {
            return TOLL_LEDGER_OK;
        }

        return toll_ledger_sql_error(lg, "read the ledger's meta table");
    }

    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);

    rc = sqlite3_step(st);

    if (rc == SQLITE_ROW) {
        v = (const char *) sqlite3_column_text(st, 0);
        snprintf(buf, size, "%s", v ? v : "");
        *found = 1;
        rc = SQLITE_DONE;
    }

    if (rc != SQLITE_DONE) {
        rc = toll_ledger_sql_error(lg, "read the ledger's meta table");
        sqlite3_finalize(st);
        return rc;
    }

    sqlite3_finalize(st);

    return TOLL_LEDGER_OK;
}


int64_t
toll_ledger_now(void)
{
    char       *end;
    const char *env;
    long long   t;

    env = getenv("TOLL_LEDGER_NOW");

    if (env != NULL && env[0] != '\0') {
        errno = 0;
        t = strtoll(env, &end, 10);

        if (errno == 0 && *end == '\0' && t > 0) {
            return t;
        }
    }

    return (int64_t) time(NULL);
}


int64_t
toll_ledger_fee_bp(const toll_ledger_fees_t *fees, const char *provider)
{
    size_t  i;

    for (i = 0; i < fees->nproviders; i++) {
        if (strcmp(fees->providers[i].provider, provider) == 0) {
            return fees->providers[i].fee_bp;
        }
    }

    return fees->default_bp;
}


int
toll_ledger_begin(toll_ledger_t *lg)
{
    assert(!lg->in_tx);

    if (sqlite3_exec(lg->db, "BEGIN IMMEDIATE", NULL, NULL, NULL)
        != SQLITE_OK)
    {
        return toll_ledger_sql_error(lg, "begin a transaction");
    }

    lg->in_tx = 1;
    lg->tx_debits_micros = 0;
    lg->tx_credits_micros = 0;

    return TOLL_LEDGER_OK;
}


int
toll_ledger_commit(toll_ledger_t *lg)
{
    int            rc;
    sqlite3_stmt  *st;

    assert(lg->in_tx);

    if (lg->tx_debits_micros != lg->tx_credits_micros) {
        /* a bug wrote an unbalanced transaction: it must not land */
        fprintf(stderr, "toll ledger: transaction unbalanced, debits %lld "
                "credits %lld micro-units; aborting before COMMIT\n",
                (long long) lg->tx_debits_micros,
                (long long) lg->tx_credits_micros);
        abort();
    }

    if (lg->tx_debits_micros != 0) {
        rc = toll_ledger_prepare(lg,
                 "UPDATE totals SET debits_micros = debits_micros + ?1,"
                 " credits_micros = credits_micros + ?2 WHERE id = 1", &st);
        if (rc != TOLL_LEDGER_OK) {
            toll_ledger_rollback(lg);
            return rc;
        }

        sqlite3_bind_int64(st, 1, lg->tx_debits_micros);
        sqlite3_bind_int64(st, 2, lg->tx_credits_micros);

        rc = sqlite3_step(st);
        sqlite3_finalize(st);

        if (rc != SQLITE_DONE || sqlite3_changes(lg->db) != 1) {
            rc = toll_ledger_sql_error(lg, "update the ledger's totals");
            toll_ledger_rollback(lg);
            return rc;
        }
    }

    if (sqlite3_exec(lg->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        rc = toll_ledger_sql_error(lg, "commit");
        toll_ledger_rollback(lg);
        return rc;
    }

    lg->in_tx = 0;

    return TOLL_LEDGER_OK;
}


void
toll_ledger_rollback(toll_ledger_t *lg)
{
    if (!sqlite3_get_autocommit(lg->db)) {
        (void) sqlite3_exec(lg->db, "ROLLBACK", NULL, NULL, NULL);
    }

    lg->in_tx = 0;
    lg->tx_debits_micros = 0;
    lg->tx_credits_micros = 0;
}


int
toll_ledger_prepare(toll_ledger_t *lg, const char *sql, sqlite3_stmt **st)
{
    if (sqlite3_prepare_v2(lg->db, sql, -1, st, NULL) != SQLITE_OK) {
        *st = NULL;
        return toll_ledger_sql_error(lg, "prepare a statement");
    }

    return TOLL_LEDGER_OK;
}


int
toll_ledger_sql_error(toll_ledger_t *lg, const char *what)
{
    int  code;

    code = sqlite3_errcode(lg->db) & 0xff;

    snprintf(lg->err, sizeof(lg->err), "cannot %s: %s", what,
             sqlite3_errmsg(lg->db));

    return (code == SQLITE_BUSY || code == SQLITE_LOCKED) ? TOLL_LEDGER_BUSY
                                                          : TOLL_LEDGER_ERROR;
}


int
toll_ledger_set_error(toll_ledger_t *lg, int rc, const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    vsnprintf(lg->err, sizeof(lg->err), fmt, args);
    va_end(args);

    return rc;
}


int
toll_ledger_account(toll_ledger_t *lg, const char *name, const char *kind,
    int64_t *id)
{
    int            rc;
    sqlite3_stmt  *st;
    const char    *have;

    rc = toll_ledger_prepare(lg, "SELECT id, kind FROM accounts "
                                 "WHERE name = ?", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);

    rc = sqlite3_step(st);

    if (rc == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        have = (const char *) sqlite3_column_text(st, 1);

        rc = (have != NULL && strcmp(have, kind) == 0)
             ? TOLL_LEDGER_OK
             : toll_ledger_set_error(lg, TOLL_LEDGER_INVALID,
                                     "account \"%s\" is of kind \"%s\", "
                                     "not \"%s\"", name, have ? have : "",
                                     kind);
        sqlite3_finalize(st);
        return rc;
    }

    sqlite3_finalize(st);

    if (rc != SQLITE_DONE) {
        return toll_ledger_sql_error(lg, "read an account");
    }

    rc = toll_ledger_prepare(lg, "INSERT INTO accounts (name, kind) "
                                 "VALUES (?, ?)", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);

    rc = sqlite3_step(st);
    sqlite3_finalize(st);

    if (rc != SQLITE_DONE) {
        return toll_ledger_sql_error(lg, "create an account");
    }

    *id = sqlite3_last_insert_rowid(lg->db);

    return TOLL_LEDGER_OK;
}


int
toll_ledger_entry(toll_ledger_t *lg, int64_t tx_id, const char *account,
    const char *kind, int64_t debit_micros, int64_t credit_micros)
{
    int            rc;
    int64_t        account_id;
    sqlite3_stmt  *st;

    assert(lg->in_tx);
    assert(debit_micros >= 0 && credit_micros >= 0);
    assert(debit_micros == 0 || credit_micros == 0);

    if (debit_micros == 0 && credit_micros == 0) {
        return TOLL_LEDGER_OK;
    }

    if (__builtin_add_overflow(lg->tx_debits_micros, debit_micros,
                               &lg->tx_debits_micros)
        || __builtin_add_overflow(lg->tx_credits_micros, credit_micros,
                                  &lg->tx_credits_micros))
    {
        return toll_ledger_set_error(lg, TOLL_LEDGER_OVERFLOW,
                                     "a transaction's sum overflows");
    }

    rc = toll_ledger_account(lg, account, kind, &account_id);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    rc = toll_ledger_prepare(lg, "INSERT INTO entries (tx_id, account_id, "
                                 "debit_micros, credit_micros) "
                                 "VALUES (?, ?, ?, ?)", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    sqlite3_bind_int64(st, 1, tx_id);
    sqlite3_bind_int64(st, 2, account_id);
    sqlite3_bind_int64(st, 3, debit_micros);
    sqlite3_bind_int64(st, 4, credit_micros);

    rc = sqlite3_step(st);
    sqlite3_finalize(st);

    if (rc != SQLITE_DONE) {
        return toll_ledger_sql_error(lg, "write an entry");
    }

    return TOLL_LEDGER_OK;
}


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
    char           account[TOLL_LEDGER_ACCOUNT_BUF];
    int64_t        fee, tx_id, account_id;
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
             " errors, latency_ms, amount_micros, fee_bp, fee_micros)"
             " VALUES ('usage', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
             &st);
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

    rc = sqlite3_step(st);
    sqlite3_finalize(st);

    if (rc != SQLITE_DONE) {
        return toll_ledger_sql_error(lg, "write a usage transaction");
    }

    tx_id = sqlite3_last_insert_rowid(lg->db);

    /*
     * The accounts exist from the first usage, free calls only included:
     * a buyer who has not paid yet has a balance of 0, not no account.
     */

    snprintf(account, sizeof(account), "buyer:%s", b->buyer);

    rc = toll_ledger_account(lg, account, "buyer", &account_id);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    rc = toll_ledger_entry(lg, tx_id, account, "buyer", u->amount_micros, 0);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
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

    rc = sqlite3_step(st);
    sqlite3_finalize(st);

    if (rc != SQLITE_DONE) {
        return toll_ledger_sql_error(lg, "mark a free tier used");
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

    return u->calls >= 0 && u->free_calls >= 0 && u->paid_calls >= 0
           && u->errors >= 0 && u->latency_ms >= 0 && u->amount_micros >= 0;
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


int
toll_ledger_random_hex(char *buf, size_t nbytes)
{
    size_t         i;
    unsigned char  raw[64];

    static const char  hex[] = "0123456789abcdef";

    if (nbytes > sizeof(raw) || RAND_bytes(raw, (int) nbytes) != 1) {
        return -1;
    }

    for (i = 0; i < nbytes; i++) {
        buf[2 * i] = hex[raw[i] >> 4];
        buf[2 * i + 1] = hex[raw[i] & 0xf];
    }

    buf[2 * nbytes] = '\0';

    return 0;
}


void
toll_ledger_amount_text(int64_t micros, char buf[TOLL_MONEY_STR_MAX + 1])
{
    size_t  len;
    char   *dot;

    len = toll_money_format(micros, buf);
    dot = strchr(buf, '.');

    /* the reference prints cents: "10.50", not "10.5" */

    if (dot == NULL) {
        memcpy(buf + len, ".00", 4);

    } else if (buf + len - dot == 2) {
        memcpy(buf + len, "0", 2);
    }
}


json_t *
toll_ledger_amount_json(int64_t micros)
{
    char  buf[TOLL_MONEY_STR_MAX + 1];

    toll_ledger_amount_text(micros, buf);

    return json_string(buf);
}


void
toll_ledger_time_text(int64_t t, char buf[TOLL_LEDGER_TIME_STR_MAX])
{
    time_t     tt;
    struct tm  tm;

    tt = (time_t) t;

    if (gmtime_r(&tt, &tm) == NULL
        || strftime(buf, TOLL_LEDGER_TIME_STR_MAX, "%Y-%m-%dT%H:%M:%SZ", &tm)
           == 0)
    {
        snprintf(buf, TOLL_LEDGER_TIME_STR_MAX, "@%lld", (long long) t);
    }
}


json_t *
toll_ledger_time_json(int64_t t)
{
    char  buf[TOLL_LEDGER_TIME_STR_MAX];

    toll_ledger_time_text(t, buf);

    return json_string(buf);
}


/* queries */


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
    int            rc, ok, all;
    char           detail[256];
    json_t        *checks;
    int64_t        n, debits, credits, tdebits, tcredits, ntx, nentries;
    sqlite3_stmt  *st;
    const char    *text;

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

    rc = toll_ledger_prepare(lg, "PRAGMA integrity_check", &st);
    if (rc != TOLL_LEDGER_OK) {
        goto failed;
    }

    ok = 0;
    text = "no answer";

    if (sqlite3_step(st) == SQLITE_ROW) {
        text = (const char *) sqlite3_column_text(st, 0);
        text = text ? text : "";
        ok = (strcmp(text, "ok") == 0);
    }

    all &= toll_ledger_check_add(checks, "integrity", ok, "%s", text);
    sqlite3_finalize(st);

    /* every transaction balanced; sums in SQL are exact on INTEGER */

    rc = toll_ledger_scalar(lg,
             "SELECT count(*) FROM (SELECT tx_id FROM entries GROUP BY tx_id"
             " HAVING sum(debit_micros) <> sum(credit_micros))", &n);
    if (rc != TOLL_LEDGER_OK) {
        goto failed;
    }

    all &= toll_ledger_check_add(checks, "transactions_balanced", n == 0,
                                 "%lld unbalanced transactions",
                                 (long long) n);

    if ((rc = toll_ledger_scalar(lg, "SELECT coalesce(sum(debit_micros), 0)"
                                     " FROM entries", &debits))
           != TOLL_LEDGER_OK
        || (rc = toll_ledger_scalar(lg, "SELECT coalesce(sum(credit_micros),"
                                        " 0) FROM entries", &credits))
           != TOLL_LEDGER_OK
        || (rc = toll_ledger_scalar(lg, "SELECT debits_micros FROM totals",
                                    &tdebits))
           != TOLL_LEDGER_OK
        || (rc = toll_ledger_scalar(lg, "SELECT credits_micros FROM totals",
                                    &tcredits))
           != TOLL_LEDGER_OK
        || (rc = toll_ledger_scalar(lg, "SELECT count(*) FROM transactions",
                                    &ntx))
           != TOLL_LEDGER_OK
        || (rc = toll_ledger_scalar(lg, "SELECT count(*) FROM entries",
                                    &nentries))
           != TOLL_LEDGER_OK)
    {
        goto failed;
    }

    all &= toll_ledger_check_add(checks, "debits_equal_credits",
                                 debits == credits,
                                 "debits %lld, credits %lld micro-units",
                                 (long long) debits, (long long) credits);

    all &= toll_ledger_check_add(checks, "totals_match_entries",
                                 debits == tdebits && credits == tcredits,
                                 "totals row debits %lld, credits %lld",
                                 (long long) tdebits, (long long) tcredits);

    rc = toll_ledger_check_usage(lg, &n, detail, sizeof(detail));
    if (rc != TOLL_LEDGER_OK) {
        goto failed;
    }

    all &= toll_ledger_check_add(checks, "usage_entries_and_fees", n == 0,
                                 "%s", detail);

    rc = toll_ledger_scalar(lg,
             "SELECT count(*) FROM batches b WHERE b.records <>"
             " (SELECT count(*) FROM transactions t WHERE t.batch_id = b.id)",
             &n);
    if (rc != TOLL_LEDGER_OK) {
        goto failed;
    }

    all &= toll_ledger_check_add(checks, "batches_complete", n == 0,
                                 "%lld batches whose records are missing",
                                 (long long) n);

    rc = toll_ledger_check_settlements(lg, &n, detail, sizeof(detail));
    if (rc != TOLL_LEDGER_OK) {
        goto failed;
    }

    all &= toll_ledger_check_add(checks, "settlements_match", n == 0,
                                 "%s", detail);

    (void) sqlite3_exec(lg->db, "COMMIT", NULL, NULL, NULL);

    *report = json_pack("{s:b, s:o, s:I, s:I, s:I, s:I}", "ok", all,
                        "checks", checks, "transactions", (json_int_t) ntx,
                        "entries", (json_int_t) nentries,
                        "debits_micros", (json_int_t) debits,
                        "credits_micros", (json_int_t) credits);
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
 * Each usage transaction's fee as the rounding rule makes it, and its
 * entries as posting writes them: buyer debited the amount, provider
 * credited amount - fee, platform:fees credited the fee, nothing else.
 */
static int
toll_ledger_check_usage(toll_ledger_t *lg, int64_t *bad, char *detail,
    size_t size)
{
    int            rc;
    int64_t        n, amount, fee_bp, fee, want, buyer_d, prov_c, fees_c,
                   other, tx_id, first;
    sqlite3_stmt  *st;

    rc = toll_ledger_prepare(lg,
             "SELECT t.id, t.amount_micros, t.fee_bp, t.fee_micros,"
             " coalesce(sum(CASE WHEN a.name = 'buyer:' || t.buyer"
             "  THEN e.debit_micros - e.credit_micros END), 0),"
             " coalesce(sum(CASE WHEN a.name = 'provider:' || t.provider"
             "  THEN e.credit_micros - e.debit_micros END), 0),"
             " coalesce(sum(CASE WHEN a.name = 'platform:fees'"
             "  THEN e.credit_micros - e.debit_micros END), 0),"
             " count(CASE WHEN a.name NOT IN ('buyer:' || t.buyer,"
             "  'provider:' || t.provider, 'platform:fees') THEN 1 END)"
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

        if (toll_money_fee_bp(amount, fee_bp, &want) != TOLL_MONEY_OK
            || want != fee || buyer_d != amount || prov_c != amount - fee
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


static json_t *
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
    json_t        *arr, *row;
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
             " t.service, t.day, t.batch_id, t.settlement_id"
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

    arr = json_array();

    while ((rc = sqlite3_step(st)) == SQLITE_ROW && arr != NULL) {
        row = json_pack("{s:I, s:I, s:o, s:o, s:o, s:o, s:o, s:I, s:I,"
                        " s:o, s:o, s:o, s:o, s:o, s:o}",
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
                        "settlement", toll_ledger_text_json(st, 12));

        if (row == NULL || json_array_append_new(arr, row) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }

    if (arr == NULL) {
        sqlite3_finalize(st);
        return toll_ledger_set_error(lg, TOLL_LEDGER_ERROR, "out of memory");
    }

    if (rc != SQLITE_DONE) {
        rc = toll_ledger_sql_error(lg, "read entries");
        sqlite3_finalize(st);
        json_decref(arr);
        return rc;
    }

    sqlite3_finalize(st);
    *out = arr;

    return TOLL_LEDGER_OK;
}


int
toll_ledger_usage_totals(toll_ledger_t *lg, json_t **out)
{
    int            rc;
    json_t        *arr, *row;
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

    arr = json_array();

    while ((rc = sqlite3_step(st)) == SQLITE_ROW && arr != NULL) {
        row = json_pack("{s:o, s:o, s:o, s:o, s:I, s:I, s:I, s:I, s:I}",
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

        if (row == NULL || json_array_append_new(arr, row) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }

    if (arr == NULL) {
        sqlite3_finalize(st);
        return toll_ledger_set_error(lg, TOLL_LEDGER_ERROR, "out of memory");
    }

    if (rc != SQLITE_DONE) {
        rc = toll_ledger_sql_error(lg, "sum usage");
        sqlite3_finalize(st);
        json_decref(arr);
        return rc;
    }

    sqlite3_finalize(st);
    *out = arr;

    return TOLL_LEDGER_OK;
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
