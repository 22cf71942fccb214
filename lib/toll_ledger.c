/*
 * toll: the double-entry ledger in SQLite (docs/settle.md): opening it,
 * its schema and identity, and the write transaction every posting goes
 * through (toll_ledger_int.h).  Posting drained usage is in
 * toll_ledger_post.c, the consistency checks in toll_ledger_check.c, the
 * reads tollctl shows in toll_ledger_query.c, settlements in
 * toll_settlement.c.
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

#include "toll_ledger_int.h"
#include "toll_ledger_schema.h"


static int toll_ledger_schema(toll_ledger_t *lg, int flags);
static int toll_ledger_migrate(toll_ledger_t *lg, char *version,
    size_t size);
static int toll_ledger_migrate_v1(toll_ledger_t *lg);
static int toll_ledger_migrate_v2(toll_ledger_t *lg);
static int toll_ledger_meta_get(toll_ledger_t *lg, const char *name,
    char *buf, size_t size, int *found);


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
        rc = toll_ledger_schema(lg, flags);

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
toll_ledger_schema(toll_ledger_t *lg, int flags)
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

    if (!(flags & TOLL_LEDGER_OPEN_CREATE)) {
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

    if (atoi(version) >= 1
        && atoi(version) < TOLL_LEDGER_SCHEMA_VERSION)
    {
        if (flags & TOLL_LEDGER_OPEN_READONLY) {
            return toll_ledger_set_error(lg, TOLL_LEDGER_INVALID,
                                         "schema version %d: open it "
                                         "writable once (toll-settle does "
                                         "as it starts) to migrate it to "
                                         "version %d", atoi(version),
                                         TOLL_LEDGER_SCHEMA_VERSION);
        }

        rc = toll_ledger_migrate(lg, version, sizeof(version));
        if (rc != TOLL_LEDGER_OK) {
            return rc;
        }
    }

    if (atoi(version) != TOLL_LEDGER_SCHEMA_VERSION) {
        return toll_ledger_set_error(lg, TOLL_LEDGER_INVALID,
                                     "schema version %s, this program "
                                     "reads version %d", version,
                                     TOLL_LEDGER_SCHEMA_VERSION);
    }

    return toll_ledger_meta_get(lg, "ledger_id", lg->id, sizeof(lg->id),
                                &found);
}


/*
 * Version 1 or 2 to 3, once, in one transaction.  Version 1 to 2: SQLite
 * cannot change a table's CHECKs, so accounts and transactions are
 * rebuilt as its documented 12-step ALTER TABLE does (https://sqlite.org
 * /lang_altertable.html#otheralter): foreign keys off (outside a
 * transaction, where the pragma works), new tables, rows copied, old
 * tables dropped, the new renamed, indexes and trigger made again,
 * foreign_key_check, the version bumped, commit, foreign keys on.
 * Version 2 to 3 adds a table and a column.  Another process may have
 * migrated the file meanwhile: the version is read again under the lock.
 */
static int
toll_ledger_migrate(toll_ledger_t *lg, char *version, size_t size)
{
    int  rc, found;

    if (sqlite3_exec(lg->db, "PRAGMA foreign_keys=OFF", NULL, NULL, NULL)
        != SQLITE_OK)
    {
        return toll_ledger_sql_error(lg, "migrate the ledger");
    }

    rc = toll_ledger_begin(lg);

    if (rc == TOLL_LEDGER_OK) {
        rc = toll_ledger_meta_get(lg, "schema_version", version, size,
                                  &found);

        if (rc == TOLL_LEDGER_OK && found && atoi(version) == 1) {
            rc = toll_ledger_migrate_v1(lg);

            if (rc == TOLL_LEDGER_OK) {
                snprintf(version, size, "2");
            }
        }

        if (rc == TOLL_LEDGER_OK && found && atoi(version) == 2) {
            rc = toll_ledger_migrate_v2(lg);

            if (rc == TOLL_LEDGER_OK) {
                snprintf(version, size, "3");
            }
        }

        if (rc == TOLL_LEDGER_OK) {
            rc = toll_ledger_commit(lg);

        } else {
            toll_ledger_rollback(lg);
        }
    }

    if (sqlite3_exec(lg->db, "PRAGMA foreign_keys=ON", NULL, NULL, NULL)
        != SQLITE_OK && rc == TOLL_LEDGER_OK)
    {
        rc = toll_ledger_sql_error(lg, "migrate the ledger");
    }

    return rc;
}


/* the rebuild, inside the migration's transaction */
static int
toll_ledger_migrate_v1(toll_ledger_t *lg)
{
    int            rc;
    sqlite3_stmt  *st;

    static const char  sql[] =
        TOLL_LEDGER_ACCOUNTS_SQL("accounts_v2")
        "INSERT INTO accounts_v2 (id, name, kind)"
        " SELECT id, name, kind FROM accounts;"
        TOLL_LEDGER_TRANSACTIONS_SQL("transactions_v2")
        "INSERT INTO transactions_v2 (id, kind, batch_id, settlement_id,"
        " posted_at, buyer, provider, service, day, calls, free_calls,"
        " paid_calls, errors, latency_ms, amount_micros, fee_bp, fee_micros)"
        " SELECT id, kind, batch_id, settlement_id, posted_at, buyer,"
        " provider, service, day, calls, free_calls, paid_calls, errors,"
        " latency_ms, amount_micros, fee_bp, fee_micros FROM transactions;"
        "DROP TABLE transactions;"
        "DROP TABLE accounts;"
        "ALTER TABLE accounts_v2 RENAME TO accounts;"
        "ALTER TABLE transactions_v2 RENAME TO transactions;"
        TOLL_LEDGER_TRANSACTIONS_INDEXES_SQL
        TOLL_LEDGER_BALANCE_ALERTS_SQL
        "UPDATE meta SET value = '2' WHERE name = 'schema_version';";

    if (sqlite3_exec(lg->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        return toll_ledger_sql_error(lg, "migrate the ledger to version 2");
    }

    /* an entry whose transaction or account did not come along: stop */

    rc = toll_ledger_prepare(lg, "PRAGMA foreign_key_check", &st);
    if (rc != TOLL_LEDGER_OK) {
        return rc;
    }

    rc = sqlite3_step(st);
    sqlite3_finalize(st);

    if (rc == SQLITE_ROW) {
        return toll_ledger_set_error(lg, TOLL_LEDGER_ERROR,
                                     "cannot migrate the ledger to version "
                                     "2: a foreign key does not hold");
    }

    if (rc != SQLITE_DONE) {
        return toll_ledger_sql_error(lg, "check the migrated ledger");
    }

    return TOLL_LEDGER_OK;
}


/* version 2 to 3: a new table, nothing rebuilt */
static int
toll_ledger_migrate_v2(toll_ledger_t *lg)
{
    static const char  sql[] =
        TOLL_LEDGER_TRANSACTIONS_UNITS_SQL
        TOLL_LEDGER_CAP_ALERTS_SQL
        "UPDATE meta SET value = '3' WHERE name = 'schema_version';";

    if (sqlite3_exec(lg->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        return toll_ledger_sql_error(lg, "migrate the ledger to version 3");
    }

    return TOLL_LEDGER_OK;
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
toll_ledger_step_done(toll_ledger_t *lg, sqlite3_stmt *st, const char *what)
{
    int  rc;

    rc = sqlite3_step(st);
    sqlite3_finalize(st);

    if (rc != SQLITE_DONE) {
        return toll_ledger_sql_error(lg, what);
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

    rc = toll_ledger_step_done(lg, st, "create an account");
    if (rc != TOLL_LEDGER_OK) {
        return rc;
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

    return toll_ledger_step_done(lg, st, "write an entry");
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
