/*
 * Unit tests of balance alerts in the ledger (lib/toll_ledger_alert.c)
 * on a real SQLite file: each alert once per (buyer, currency, kind,
 * credits total), its event written with it, a new credits total sends
 * again, and what the ledger cannot name is refused with nothing written.
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


#define PATH_LEN_MAX      256


typedef struct {
    char              dir[PATH_LEN_MAX];
    char              path[PATH_LEN_MAX + sizeof("/ledger.db")];
    toll_ledger_t    *lg;
} fixture_t;


static int
setup(void **state)
{
    char        err[256];
    fixture_t  *f;

    f = calloc(1, sizeof(fixture_t));
    assert_non_null(f);

    snprintf(f->dir, sizeof(f->dir), "/tmp/toll-ledger-alert-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/ledger.db", f->dir);

    assert_int_equal(toll_ledger_open(f->path, TOLL_LEDGER_OPEN_CREATE,
                                      &f->lg, err, sizeof(err)),
                     TOLL_LEDGER_OK);
    *state = f;

    return 0;
}


static int
teardown(void **state)
{
    char        name[PATH_LEN_MAX + 32];
    fixture_t  *f;

    static const char  *suffix[] = { "", "-wal", "-shm", "-journal" };

    f = *state;
    toll_ledger_close(f->lg);

    for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
        snprintf(name, sizeof(name), "%s%s", f->path, suffix[i]);
        (void) unlink(name);
    }

    (void) rmdir(f->dir);
    free(f);

    return 0;
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


static toll_ledger_alert_t
alert(toll_ledger_alert_e kind, int64_t credits, int64_t balance)
{
    toll_ledger_alert_t  a;

    memset(&a, 0, sizeof(a));
    a.buyer = "acme";
    a.currency = "USD";
    a.kind = kind;
    a.credits_micros = credits;
    a.balance_micros = balance;
    a.threshold_micros = 2000000;

    return a;
}


/* the body of the newest event: its data's fields as the docs say */
static void
test_event_body(void **state)
{
    int                   sent;
    char                  body[1024];
    fixture_t            *f;
    sqlite3_stmt         *st;
    toll_ledger_alert_t   a;

    f = *state;
    a = alert(TOLL_LEDGER_ALERT_LOW, 10000000, 1500000);

    assert_int_equal(toll_ledger_balance_alert(f->lg, &a, &sent),
                     TOLL_LEDGER_OK);
    assert_int_equal(sent, 1);

    assert_int_equal(sqlite3_prepare_v2(toll_ledger_db(f->lg),
                                        "SELECT type, body FROM events",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *) sqlite3_column_text(st, 0),
                        "balance.low");
    snprintf(body, sizeof(body), "%s", sqlite3_column_text(st, 1));
    sqlite3_finalize(st);

    assert_non_null(strstr(body, "\"type\":\"balance.low\""));
    assert_non_null(strstr(body, "\"buyer\":\"acme\""));
    assert_non_null(strstr(body, "\"currency\":\"USD\""));
    assert_non_null(strstr(body, "\"balance\":\"1.50\""));
    assert_non_null(strstr(body, "\"threshold\":\"2.00\""));
    assert_non_null(strstr(body, "\"credits\":\"10.00\""));
    assert_non_null(strstr(body, "\"at\":\""));

    /* exhausted: no threshold, a balance that may be below 0 */
    a = alert(TOLL_LEDGER_ALERT_EXHAUSTED, 10000000, -50000);

    assert_int_equal(toll_ledger_balance_alert(f->lg, &a, &sent),
                     TOLL_LEDGER_OK);
    assert_int_equal(sent, 1);
    assert_int_equal(scalar(f->lg, "SELECT count(*) FROM events WHERE"
                                   " type = 'balance.exhausted' AND body"
                                   " LIKE '%\"balance\":\"-0.05\"%' AND"
                                   " body NOT LIKE '%threshold%'"), 1);
    assert_int_equal(scalar(f->lg, "SELECT count(*) FROM balance_alerts a"
                                   " JOIN events e ON e.seq = a.event_seq"
                                   " AND e.type = 'balance.' || a.kind"), 2);
}


/* once per (buyer, currency, kind, credits); a top-up sends again */
static void
test_once_per_period(void **state)
{
    int                   sent;
    fixture_t            *f;
    toll_ledger_alert_t   a;

    f = *state;
    a = alert(TOLL_LEDGER_ALERT_LOW, 10000000, 1500000);

    assert_int_equal(toll_ledger_balance_alert(f->lg, &a, &sent),
                     TOLL_LEDGER_OK);
    assert_int_equal(sent, 1);

    /* the next passes, the balance lower still: the same period */
    a.balance_micros = 1000;
    assert_int_equal(toll_ledger_balance_alert(f->lg, &a, &sent),
                     TOLL_LEDGER_OK);
    assert_int_equal(sent, 0);
    assert_int_equal(toll_ledger_balance_alert(f->lg, &a, &sent),
                     TOLL_LEDGER_OK);
    assert_int_equal(sent, 0);

    /* another currency, another buyer: their own */
    a.currency = "EUR";
    assert_int_equal(toll_ledger_balance_alert(f->lg, &a, &sent),
                     TOLL_LEDGER_OK);
    assert_int_equal(sent, 1);
    a.currency = "USD";
    a.buyer = "beta";
    assert_int_equal(toll_ledger_balance_alert(f->lg, &a, &sent),
                     TOLL_LEDGER_OK);
    assert_int_equal(sent, 1);
    a.buyer = "acme";

    /* a top-up: a new period */
    a.credits_micros = 15000000;
    assert_int_equal(toll_ledger_balance_alert(f->lg, &a, &sent),
                     TOLL_LEDGER_OK);
    assert_int_equal(sent, 1);

    assert_int_equal(scalar(f->lg, "SELECT count(*) FROM events"), 4);
    assert_int_equal(scalar(f->lg, "SELECT count(*) FROM balance_alerts"),
                     4);

    /* the UNIQUE is the last guard, whatever the program does */
    assert_int_not_equal(sqlite3_exec(toll_ledger_db(f->lg),
                                      "INSERT INTO balance_alerts (buyer,"
                                      " currency, kind, credits_micros,"
                                      " balance_micros, threshold_micros,"
                                      " event_seq, sent_at) VALUES ('acme',"
                                      " 'USD', 'low', 10000000, 0, 1, 1, 0)",
                                      NULL, NULL, NULL),
                         SQLITE_OK);
}


static void
test_invalid_refused(void **state)
{
    int                   sent;
    fixture_t            *f;
    toll_ledger_alert_t   a;

    f = *state;
    a = alert(TOLL_LEDGER_ALERT_EXHAUSTED, 1, 0);

    a.buyer = "has space";
    assert_int_equal(toll_ledger_balance_alert(f->lg, &a, &sent),
                     TOLL_LEDGER_INVALID);
    assert_int_equal(sent, 0);

    a.buyer = "acme";
    a.currency = "usd";
    assert_int_equal(toll_ledger_balance_alert(f->lg, &a, &sent),
                     TOLL_LEDGER_INVALID);
    assert_int_equal(sent, 0);

    assert_int_equal(scalar(f->lg, "SELECT count(*) FROM events"), 0);
    assert_int_equal(scalar(f->lg, "SELECT count(*) FROM balance_alerts"),
                     0);
}


static void
collect(void *ctx, const char *buyer)
{
    char  *out;

    out = ctx;
    strcat(out, buyer);
    strcat(out, ";");
}


/* the buyers of the last transactions that moved a balance, each once */
static void
test_recent_buyers(void **state)
{
    char                       got[256];
    fixture_t                 *f;
    toll_ledger_balance_tx_t   tx[2];

    f = *state;
    memset(tx, 0, sizeof(tx));
    tx[0].ref = "r1";
    tx[0].kind = TOLL_LEDGER_TX_CREDIT;
    tx[0].currency = "USD";
    tx[0].amount_micros = 5000000;
    tx[1] = tx[0];
    tx[1].ref = "r2";

    got[0] = '\0';
    assert_int_equal(toll_ledger_recent_balance_buyers(f->lg, 100, collect,
                                                       got),
                     TOLL_LEDGER_OK);
    assert_string_equal(got, "");

    assert_int_equal(toll_ledger_post_balance(f->lg, "acme", tx, 2),
                     TOLL_LEDGER_OK);
    assert_int_equal(toll_ledger_post_balance(f->lg, "beta", tx, 1),
                     TOLL_LEDGER_OK);

    got[0] = '\0';
    assert_int_equal(toll_ledger_recent_balance_buyers(f->lg, 100, collect,
                                                       got),
                     TOLL_LEDGER_OK);
    assert_true(strcmp(got, "acme;beta;") == 0
                || strcmp(got, "beta;acme;") == 0);

    /* only the last one: beta's */
    got[0] = '\0';
    assert_int_equal(toll_ledger_recent_balance_buyers(f->lg, 1, collect,
                                                       got),
                     TOLL_LEDGER_OK);
    assert_string_equal(got, "beta;");
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test_setup_teardown(test_event_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_once_per_period, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_invalid_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_recent_buyers, setup,
                                        teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
