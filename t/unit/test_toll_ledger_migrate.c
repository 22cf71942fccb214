/*
 * Unit tests of the ledger's migration from schema version 1 (before
 * prepaid balances) to the current one (lib/toll_ledger.c): a version-1
 * file, made here with version 1's schema as it was, with rows, is
 * migrated on a writable open, keeps every row and total, and passes the
 * ledger's check; a read-only open refuses it.  A version-2 file (before
 * spend cap alerts) gains the table cap_alerts and keeps its rows.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "toll_ledger.h"


/* version 3's column of usage transactions */
#define UNITS_COLUMN                                                          \
    "SELECT count(*) FROM pragma_table_info('transactions')"                  \
    " WHERE name = 'units'"


#define PATH_LEN_MAX      256


/* version 1's schema, as lib/toll_ledger_schema.h had it: do not change */
#define V1_SCHEMA_SQL                                               \
"CREATE TABLE meta ("                                                        \
"  name  TEXT PRIMARY KEY,"                                                  \
"  value TEXT NOT NULL"                                                      \
") STRICT;"                                                                  \
                                                                             \
"CREATE TABLE accounts ("                                                    \
"  id   INTEGER PRIMARY KEY,"                                                \
"  name TEXT NOT NULL UNIQUE,"                                               \
"  kind TEXT NOT NULL CHECK (kind IN ('buyer', 'provider', 'platform'))"     \
") STRICT;"                                                                  \
                                                                             \
"CREATE TABLE batches ("                                                     \
"  id        TEXT PRIMARY KEY,"                                              \
"  claim     TEXT NOT NULL,"                                                 \
"  buyer     TEXT NOT NULL,"                                                 \
"  day       TEXT NOT NULL,"                                                 \
"  posted_at INTEGER NOT NULL,"                                              \
"  records   INTEGER NOT NULL CHECK (records >= 0)"                          \
") STRICT;"                                                                  \
                                                                             \
"CREATE TABLE settlements ("                                                 \
"  id           TEXT PRIMARY KEY,"                                           \
"  provider     TEXT NOT NULL,"                                              \
"  period_start INTEGER NOT NULL,"                                           \
"  period_end   INTEGER NOT NULL CHECK (period_end > period_start),"         \
"  total_micros INTEGER NOT NULL CHECK (total_micros >= 0),"                 \
"  fee_micros   INTEGER NOT NULL CHECK (fee_micros >= 0),"                   \
"  net_micros   INTEGER NOT NULL"                                            \
"               CHECK (net_micros = total_micros - fee_micros),"             \
"  calls        INTEGER NOT NULL CHECK (calls >= 0),"                        \
"  status       TEXT NOT NULL CHECK (status IN ('pending', 'completed')),"   \
"  payment_tx   TEXT,"                                                       \
"  created_at   INTEGER NOT NULL,"                                           \
"  paid_at      INTEGER,"                                                    \
"  CHECK ((status = 'completed') = (payment_tx IS NOT NULL))"                \
") STRICT;"                                                                  \
"CREATE INDEX settlements_provider ON settlements (provider, period_start);" \
                                                                             \
"CREATE TABLE transactions ("                                                \
"  id            INTEGER PRIMARY KEY,"                                       \
"  kind          TEXT NOT NULL CHECK (kind IN ('usage', 'payout')),"         \
"  batch_id      TEXT REFERENCES batches (id),"                              \
"  settlement_id TEXT REFERENCES settlements (id),"                          \
"  posted_at     INTEGER NOT NULL,"                                          \
"  buyer         TEXT,"                                                      \
"  provider      TEXT NOT NULL,"                                             \
"  service       TEXT,"                                                      \
"  day           TEXT,"                                                      \
"  calls         INTEGER NOT NULL DEFAULT 0 CHECK (calls >= 0),"             \
"  free_calls    INTEGER NOT NULL DEFAULT 0 CHECK (free_calls >= 0),"        \
"  paid_calls    INTEGER NOT NULL DEFAULT 0 CHECK (paid_calls >= 0),"        \
"  errors        INTEGER NOT NULL DEFAULT 0 CHECK (errors >= 0),"            \
"  latency_ms    INTEGER NOT NULL DEFAULT 0,"                                \
"  amount_micros INTEGER NOT NULL CHECK (amount_micros >= 0),"               \
"  fee_bp        INTEGER NOT NULL DEFAULT 0"                                 \
"                CHECK (fee_bp BETWEEN 0 AND 10000),"                        \
"  fee_micros    INTEGER NOT NULL DEFAULT 0"                                 \
"                CHECK (fee_micros BETWEEN 0 AND amount_micros),"            \
"  CHECK ((kind = 'usage') = (batch_id IS NOT NULL)),"                       \
"  CHECK ((kind = 'payout') = (settlement_id IS NOT NULL)),"                 \
"  UNIQUE (batch_id, service)"                                               \
") STRICT;"                                                                  \
"CREATE INDEX transactions_provider"                                         \
"  ON transactions (provider, kind, posted_at);"                             \
"CREATE INDEX transactions_usage ON transactions (buyer, day, service);"      \
                                                                             \
"CREATE TABLE entries ("                                                     \
"  id            INTEGER PRIMARY KEY,"                                       \
"  tx_id         INTEGER NOT NULL REFERENCES transactions (id),"             \
"  account_id    INTEGER NOT NULL REFERENCES accounts (id),"                 \
"  debit_micros  INTEGER NOT NULL CHECK (debit_micros >= 0),"                \
"  credit_micros INTEGER NOT NULL CHECK (credit_micros >= 0),"               \
"  CHECK ((debit_micros = 0) <> (credit_micros = 0))"                        \
") STRICT;"                                                                  \
"CREATE INDEX entries_account ON entries (account_id, id);"                  \
"CREATE INDEX entries_tx ON entries (tx_id);"                                \
"CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries"                  \
"  BEGIN SELECT RAISE(ABORT, 'ledger entries are immutable'); END;"          \
"CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries"                  \
"  BEGIN SELECT RAISE(ABORT, 'ledger entries are immutable'); END;"          \
"CREATE TRIGGER transactions_no_delete BEFORE DELETE ON transactions"        \
"  BEGIN SELECT RAISE(ABORT, 'ledger transactions are immutable'); END;"     \
                                                                             \
"CREATE TABLE totals ("                                                      \
"  id             INTEGER PRIMARY KEY CHECK (id = 1),"                       \
"  debits_micros  INTEGER NOT NULL,"                                         \
"  credits_micros INTEGER NOT NULL,"                                         \
"  CHECK (debits_micros = credits_micros)"                                   \
") STRICT;"                                                                  \
"INSERT INTO totals VALUES (1, 0, 0);"                                       \
                                                                             \
"CREATE TABLE free_tier ("                                                   \
"  buyer         TEXT NOT NULL,"                                             \
"  service       TEXT NOT NULL,"                                             \
"  free_calls    INTEGER NOT NULL,"                                          \
"  exhausted_at  INTEGER,"                                                   \
"  PRIMARY KEY (buyer, service)"                                             \
") STRICT;"                                                                  \
                                                                             \
"CREATE TABLE events ("                                                      \
"  seq        INTEGER PRIMARY KEY,"                                          \
"  id         TEXT NOT NULL UNIQUE,"                                         \
"  type       TEXT NOT NULL,"                                                \
"  created_at INTEGER NOT NULL,"                                             \
"  body       TEXT NOT NULL"                                                 \
") STRICT;"                                                                  \
                                                                             \
"CREATE TABLE deliveries ("                                                  \
"  id           INTEGER PRIMARY KEY,"                                        \
"  event_seq    INTEGER NOT NULL REFERENCES events (seq),"                   \
"  url          TEXT NOT NULL,"                                              \
"  status       TEXT NOT NULL"                                               \
"               CHECK (status IN ('pending', 'delivered', 'failed')),"       \
"  attempts     INTEGER NOT NULL DEFAULT 0,"                                 \
"  next_at_ms   INTEGER NOT NULL,"                                           \
"  last_status  INTEGER,"                                                    \
"  last_error   TEXT,"                                                       \
"  delivered_at INTEGER,"                                                    \
"  UNIQUE (event_seq, url)"                                                  \
") STRICT;"                                                                  \
"CREATE INDEX deliveries_due ON deliveries (status, next_at_ms);"


/*
 * A version-1 ledger's rows as version 1 wrote them: a batch of 210
 * paid calls at 0.05 (10.50, fee 1.05), a settlement of it, its payout.
 */
#define V1_ROWS_SQL                                                          \
"INSERT INTO meta VALUES ('schema_version', '1');"                           \
"INSERT INTO meta VALUES ('ledger_id', '0123456789abcdef0123456789abcdef');" \
"INSERT INTO meta VALUES ('created_at', '1772323200');"                      \
"INSERT INTO accounts VALUES (1, 'buyer:acme', 'buyer');"                    \
"INSERT INTO accounts VALUES (2, 'provider:weather-co', 'provider');"        \
"INSERT INTO accounts VALUES (3, 'platform:fees', 'platform');"              \
"INSERT INTO accounts VALUES (4, 'platform:cash', 'platform');"              \
"INSERT INTO batches VALUES ('00000000000000000000000000000001',"            \
"  'toll:drain:{acme}:20260301:x', 'acme', '20260301', 1772326800, 1);"      \
"INSERT INTO settlements VALUES ('stl_000000000000000000000001',"            \
"  'weather-co', 1772323200, 1772409600, 10500000, 1050000, 9450000, 210,"   \
"  'completed', 'wire-1', 1772409600, 1772409600);"                          \
"INSERT INTO transactions (id, kind, batch_id, posted_at, buyer, provider,"  \
"  service, day, calls, paid_calls, latency_ms, amount_micros, fee_bp,"      \
"  fee_micros) VALUES (1, 'usage', '00000000000000000000000000000001',"      \
"  1772326800, 'acme', 'weather-co', 'weather', '20260301', 210, 210, 4200," \
"  10500000, 1000, 1050000);"                                                \
"INSERT INTO transactions (id, kind, settlement_id, posted_at, provider,"    \
"  amount_micros) VALUES (2, 'payout', 'stl_000000000000000000000001',"      \
"  1772409600, 'weather-co', 9450000);"                                      \
"INSERT INTO entries VALUES (1, 1, 1, 10500000, 0);"                         \
"INSERT INTO entries VALUES (2, 1, 2, 0, 9450000);"                          \
"INSERT INTO entries VALUES (3, 1, 3, 0, 1050000);"                          \
"INSERT INTO entries VALUES (4, 2, 2, 9450000, 0);"                          \
"INSERT INTO entries VALUES (5, 2, 4, 0, 9450000);"                          \
"UPDATE totals SET debits_micros = 19950000, credits_micros = 19950000;"     \
"INSERT INTO free_tier VALUES ('acme', 'weather', 0, NULL);"


typedef struct {
    char              dir[PATH_LEN_MAX];
} fixture_t;


static int
setup(void **state)
{
    fixture_t  *f;

    f = calloc(1, sizeof(fixture_t));
    assert_non_null(f);

    snprintf(f->dir, sizeof(f->dir), "/tmp/toll-ledger-v1-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    *state = f;

    return 0;
}


static int
teardown(void **state)
{
    fixture_t  *f;

    f = *state;
    (void) rmdir(f->dir);
    free(f);

    return 0;
}


static void
assert_int_field(json_t *obj, const char *name, int64_t want)
{
    json_t  *v;

    v = json_object_get(obj, name);
    assert_non_null(v);
    assert_true(json_is_integer(v));
    assert_int_equal(json_integer_value(v), want);
}


static void
assert_balance(toll_ledger_t *lg, const char *account, int64_t want)
{
    json_t  *b;

    assert_int_equal(toll_ledger_balance(lg, account, &b), TOLL_LEDGER_OK);
    assert_int_field(b, "balance_micros", want);
    json_decref(b);
}


static void
assert_ledger_ok(toll_ledger_t *lg)
{
    json_t  *report;

    assert_int_equal(toll_ledger_check(lg, &report), TOLL_LEDGER_OK);
    assert_true(json_is_true(json_object_get(report, "ok")));
    json_decref(report);
}

static void
make_v1(const char *path)
{
    sqlite3  *db;

    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA journal_mode=WAL;"
                                      "PRAGMA foreign_keys=ON;"
                                      "BEGIN;" V1_SCHEMA_SQL V1_ROWS_SQL
                                      "COMMIT;", NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}


static int64_t
scalar(toll_ledger_t *lg, const char *sql)
{
    int64_t        v;
    sqlite3_stmt  *st;

    assert_int_equal(sqlite3_prepare_v2(toll_ledger_db(lg), sql, -1, &st,
                                        NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);

    return v;
}


static void
unlink_db(const char *path)
{
    char  name[PATH_LEN_MAX + 32];

    static const char  *suffix[] = { "", "-wal", "-shm", "-journal" };

    for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
        snprintf(name, sizeof(name), "%s%s", path, suffix[i]);
        (void) unlink(name);
    }
}


/* read-only, a version-1 ledger is refused with what to do, untouched */
static void
test_v1_readonly_refused(void **state)
{
    char            path[PATH_LEN_MAX + 16], err[256];
    fixture_t      *f;
    toll_ledger_t  *lg;

    f = *state;
    snprintf(path, sizeof(path), "%s/v1.db", f->dir);
    make_v1(path);

    assert_int_equal(toll_ledger_open(path, TOLL_LEDGER_OPEN_READONLY, &lg,
                                      err, sizeof(err)),
                     TOLL_LEDGER_INVALID);
    assert_null(lg);
    assert_non_null(strstr(err, "schema version 1: open it writable once"));

    /* still version 1: a writable open migrates it */
    assert_int_equal(toll_ledger_open(path, 0, &lg, err, sizeof(err)),
                     TOLL_LEDGER_OK);
    toll_ledger_close(lg);

    assert_int_equal(toll_ledger_open(path, TOLL_LEDGER_OPEN_READONLY, &lg,
                                      err, sizeof(err)),
                     TOLL_LEDGER_OK);
    toll_ledger_close(lg);
    unlink_db(path);
}


/* version 3's table is there and takes an alert once */
static void
assert_cap_alert_once(toll_ledger_t *lg)
{
    int                      sent;
    toll_ledger_cap_alert_t  a;

    memset(&a, 0, sizeof(a));
    a.buyer = "acme";
    a.currency = "USD";
    a.period_start = "20260301";
    a.period_end = "20260302";
    a.threshold = 80;
    a.cap_micros = 1000000;
    a.used_micros = 800000;

    assert_int_equal(toll_ledger_cap_alert(lg, &a, &sent), TOLL_LEDGER_OK);
    assert_int_equal(sent, 1);
    assert_int_equal(toll_ledger_cap_alert(lg, &a, &sent), TOLL_LEDGER_OK);
    assert_int_equal(sent, 0);
    assert_int_equal(scalar(lg, "SELECT count(*) FROM cap_alerts"), 1);
}


/*
 * Version 2 as it was: the current schema without cap_alerts (version 3
 * added that table and nothing else), with a balance posted.
 */
static void
make_v2(const char *path)
{
    char                       err[256];
    sqlite3                   *db;
    toll_ledger_t             *lg;
    toll_ledger_balance_tx_t   tx;

    assert_int_equal(toll_ledger_open(path, TOLL_LEDGER_OPEN_CREATE, &lg,
                                      err, sizeof(err)),
                     TOLL_LEDGER_OK);

    memset(&tx, 0, sizeof(tx));
    tx.ref = "r1";
    tx.kind = TOLL_LEDGER_TX_CREDIT;
    tx.currency = "USD";
    tx.amount_micros = 5000000;

    assert_int_equal(toll_ledger_post_balance(lg, "acme", &tx, 1),
                     TOLL_LEDGER_OK);
    toll_ledger_close(lg);

    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "DROP TABLE cap_alerts;"
                                      "ALTER TABLE transactions"
                                      " DROP COLUMN units;"
                                      "UPDATE meta SET value = '2'"
                                      " WHERE name = 'schema_version';",
                                      NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}


/* version 2: refused read-only, migrated writable, every row kept */
static void
test_v2_migrated(void **state)
{
    char            path[PATH_LEN_MAX + 16], err[256];
    fixture_t      *f;
    toll_ledger_t  *lg;

    f = *state;
    snprintf(path, sizeof(path), "%s/v2.db", f->dir);
    make_v2(path);

    assert_int_equal(toll_ledger_open(path, TOLL_LEDGER_OPEN_READONLY, &lg,
                                      err, sizeof(err)),
                     TOLL_LEDGER_INVALID);
    assert_null(lg);
    assert_non_null(strstr(err, "schema version 2: open it writable once"));

    assert_int_equal(toll_ledger_open(path, 0, &lg, err, sizeof(err)),
                     TOLL_LEDGER_OK);
    assert_int_equal(scalar(lg, "SELECT value FROM meta"
                                " WHERE name = 'schema_version'"),
                     TOLL_LEDGER_SCHEMA_VERSION);
    assert_int_equal(scalar(lg, "SELECT count(*) FROM transactions"), 1);
    assert_balance(lg, "prepaid:USD:acme", 5000000);
    assert_ledger_ok(lg);
    assert_cap_alert_once(lg);
    assert_int_equal(scalar(lg, UNITS_COLUMN), 1);

    /* the guards came with the table */
    assert_int_not_equal(sqlite3_exec(toll_ledger_db(lg),
                                      "INSERT INTO cap_alerts (buyer,"
                                      " currency, scope, key_id, period,"
                                      " period_start, threshold,"
                                      " cap_micros, used_micros, event_seq,"
                                      " sent_at) VALUES ('acme', 'USD',"
                                      " 'key', '', 'daily', '20260301', 50,"
                                      " 1, 1, 1, 0)", NULL, NULL, NULL),
                         SQLITE_OK);
    toll_ledger_close(lg);

    /* opened again, read-only now: nothing migrated twice */
    assert_int_equal(toll_ledger_open(path, TOLL_LEDGER_OPEN_READONLY, &lg,
                                      err, sizeof(err)),
                     TOLL_LEDGER_OK);
    assert_int_equal(scalar(lg, "SELECT count(*) FROM cap_alerts"), 1);
    toll_ledger_close(lg);
    unlink_db(path);
}


/* every row kept, the totals too, and the ledger checks as before */
static void
test_v1_migrated(void **state)
{
    int                        sent;
    char                       path[PATH_LEN_MAX + 16], err[256];
    json_t                    *totals;
    fixture_t                 *f;
    toll_ledger_t             *lg;
    toll_ledger_balance_tx_t   tx;
    toll_ledger_alert_t        alert;

    f = *state;
    snprintf(path, sizeof(path), "%s/v1.db", f->dir);
    make_v1(path);

    assert_int_equal(toll_ledger_open(path, 0, &lg, err, sizeof(err)),
                     TOLL_LEDGER_OK);

    assert_string_equal(toll_ledger_id(lg),
                        "0123456789abcdef0123456789abcdef");
    assert_int_equal(scalar(lg, "SELECT value FROM meta"
                                " WHERE name = 'schema_version'"),
                     TOLL_LEDGER_SCHEMA_VERSION);
    assert_int_equal(scalar(lg, "SELECT count(*) FROM accounts"), 4);
    assert_int_equal(scalar(lg, "SELECT count(*) FROM transactions"), 2);
    assert_int_equal(scalar(lg, UNITS_COLUMN), 1);
    assert_int_equal(scalar(lg, "SELECT count(*) FROM transactions"
                                " WHERE units = 0"), 2);
    assert_int_equal(scalar(lg, "SELECT count(*) FROM entries"), 5);
    assert_int_equal(scalar(lg, "SELECT sum(latency_ms) + sum(fee_micros)"
                                " FROM transactions"), 4200 + 1050000);
    assert_int_equal(scalar(lg, "SELECT count(*) FROM transactions"
                                " WHERE prepaid_micros = 0"
                                " AND ref IS NULL AND currency IS NULL"), 2);

    /* the indexes and the trigger came back with the table */
    assert_int_equal(scalar(lg, "SELECT count(*) FROM sqlite_schema WHERE"
                                " name IN ('transactions_provider',"
                                " 'transactions_usage',"
                                " 'transactions_balance_ref',"
                                " 'transactions_no_delete')"), 4);
    assert_int_not_equal(sqlite3_exec(toll_ledger_db(lg),
                                      "DELETE FROM transactions", NULL,
                                      NULL, NULL),
                         SQLITE_OK);

    /* entries still refer to the new tables, and foreign keys are on */
    assert_int_not_equal(sqlite3_exec(toll_ledger_db(lg),
                                      "INSERT INTO entries (tx_id,"
                                      " account_id, debit_micros,"
                                      " credit_micros) VALUES (999, 1, 1,"
                                      " 0)", NULL, NULL, NULL),
                         SQLITE_OK);

    assert_int_equal(toll_ledger_totals(lg, &totals), TOLL_LEDGER_OK);
    assert_int_field(totals, "debits_micros", 19950000);
    assert_int_field(totals, "credits_micros", 19950000);
    assert_int_field(totals, "amount_micros", 10500000);
    assert_int_field(totals, "paid_calls", 210);
    json_decref(totals);

    assert_balance(lg, "buyer:acme", 10500000);
    assert_balance(lg, "provider:weather-co", 0);
    assert_balance(lg, "platform:fees", 1050000);
    assert_ledger_ok(lg);

    /* and it takes what version 2 brought */
    memset(&tx, 0, sizeof(tx));
    tx.ref = "r1";
    tx.kind = TOLL_LEDGER_TX_CREDIT;
    tx.currency = "USD";
    tx.amount_micros = 5000000;

    assert_int_equal(toll_ledger_post_balance(lg, "acme", &tx, 1),
                     TOLL_LEDGER_OK);
    assert_int_equal(tx.rc, TOLL_LEDGER_OK);
    assert_balance(lg, "prepaid:USD:acme", 5000000);
    assert_ledger_ok(lg);

    /* and the balance alerts' table, with its guard */
    memset(&alert, 0, sizeof(alert));
    alert.buyer = "acme";
    alert.currency = "USD";
    alert.kind = TOLL_LEDGER_ALERT_EXHAUSTED;
    alert.credits_micros = 5000000;

    assert_int_equal(toll_ledger_balance_alert(lg, &alert, &sent),
                     TOLL_LEDGER_OK);
    assert_int_equal(sent, 1);
    assert_int_equal(toll_ledger_balance_alert(lg, &alert, &sent),
                     TOLL_LEDGER_OK);
    assert_int_equal(sent, 0);
    assert_int_equal(scalar(lg, "SELECT count(*) FROM balance_alerts"), 1);
    assert_cap_alert_once(lg);

    toll_ledger_close(lg);

    /* opened again: the current version, nothing migrated twice */
    assert_int_equal(toll_ledger_open(path, 0, &lg, err, sizeof(err)),
                     TOLL_LEDGER_OK);
    assert_int_equal(scalar(lg, "SELECT count(*) FROM transactions"), 3);
    assert_ledger_ok(lg);
    toll_ledger_close(lg);
    unlink_db(path);
}



int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test_setup_teardown(test_v1_readonly_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_v1_migrated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_v2_migrated, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
