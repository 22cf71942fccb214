/*
 * Unit tests of spend cap alerts in the ledger (lib/toll_ledger_alert.c)
 * on a real SQLite file: each threshold once per (buyer, currency,
 * scope, key, period, period start), its event written with it and its
 * body as docs/settle.md shows it, a new period sends again, and what
 * the ledger cannot name is refused with nothing written.
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

    snprintf(f->dir, sizeof(f->dir), "/tmp/toll-ledger-cap-XXXXXX");
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


static toll_ledger_cap_alert_t
cap_alert(int threshold)
{
    toll_ledger_cap_alert_t  a;

    memset(&a, 0, sizeof(a));
    a.buyer = "acme";
    a.currency = "USD";
    a.period_start = "20260309";
    a.period_end = "20260310";
    a.threshold = threshold;
    a.cap_micros = 1000000;
    a.used_micros = 850000;

    return a;
}


static void
newest_body(toll_ledger_t *lg, char *body, size_t size)
{
    sqlite3_stmt  *st;

    assert_int_equal(sqlite3_prepare_v2(toll_ledger_db(lg),
                                        "SELECT type, body FROM events"
                                        " ORDER BY seq DESC LIMIT 1",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *) sqlite3_column_text(st, 0),
                        "spend_cap.threshold");
    snprintf(body, size, "%s", sqlite3_column_text(st, 1));
    sqlite3_finalize(st);
}


static void
test_event_body(void **state)
{
    int                      sent;
    char                     body[1024];
    fixture_t               *f;
    toll_ledger_cap_alert_t  a;

    f = *state;
    a = cap_alert(80);

    assert_int_equal(toll_ledger_cap_alert(f->lg, &a, &sent),
                     TOLL_LEDGER_OK);
    assert_int_equal(sent, 1);
    newest_body(f->lg, body, sizeof(body));

    assert_non_null(strstr(body, "\"type\":\"spend_cap.threshold\""));
    assert_non_null(strstr(body, "\"buyer\":\"acme\""));
    assert_non_null(strstr(body, "\"currency\":\"USD\""));
    assert_non_null(strstr(body, "\"scope\":\"buyer\""));
    assert_non_null(strstr(body, "\"period\":\"daily\""));
    assert_non_null(strstr(body, "\"period_start\":\"2026-03-09\""));
    assert_non_null(strstr(body, "\"period_end\":\"2026-03-10\""));
    assert_non_null(strstr(body, "\"threshold\":80"));
    assert_non_null(strstr(body, "\"cap\":\"1.00\""));
    assert_non_null(strstr(body, "\"used\":\"0.85\""));
    assert_non_null(strstr(body, "\"at\":\""));
    assert_null(strstr(body, "key_id"));

    /* a key's monthly cap names the key */
    a.key_id = "tk_0123456789abcdef";
    a.monthly = 1;
    a.period_start = "20260301";
    a.period_end = "20260401";

    assert_int_equal(toll_ledger_cap_alert(f->lg, &a, &sent),
                     TOLL_LEDGER_OK);
    assert_int_equal(sent, 1);
    newest_body(f->lg, body, sizeof(body));

    assert_non_null(strstr(body, "\"scope\":\"key\""));
    assert_non_null(strstr(body, "\"key_id\":\"tk_0123456789abcdef\""));
    assert_non_null(strstr(body, "\"period\":\"monthly\""));
    assert_non_null(strstr(body, "\"period_end\":\"2026-04-01\""));
    assert_int_equal(scalar(f->lg, "SELECT count(*) FROM cap_alerts c"
                                   " JOIN events e ON e.seq = c.event_seq"
                                   " AND e.type = 'spend_cap.threshold'"),
                     2);
}


/* once per cap, period and threshold; each of the others its own */
static void
test_once_per_period(void **state)
{
    int                      sent;
    fixture_t               *f;
    toll_ledger_cap_alert_t  a;

    f = *state;
    a = cap_alert(50);

    assert_int_equal(toll_ledger_cap_alert(f->lg, &a, &sent),
                     TOLL_LEDGER_OK);
    assert_int_equal(sent, 1);

    /* the next passes, more used: the same period */
    a.used_micros = 990000;
    assert_int_equal(toll_ledger_cap_alert(f->lg, &a, &sent),
                     TOLL_LEDGER_OK);
    assert_int_equal(sent, 0);

    /* another threshold, currency, period, key, buyer, day: new */
    a.threshold = 80;
    assert_int_equal(toll_ledger_cap_alert(f->lg, &a, &sent),
                     TOLL_LEDGER_OK);
    assert_int_equal(sent, 1);
    a.currency = "EUR";
    assert_int_equal(toll_ledger_cap_alert(f->lg, &a, &sent),
                     TOLL_LEDGER_OK);
    assert_int_equal(sent, 1);
    a.monthly = 1;
    assert_int_equal(toll_ledger_cap_alert(f->lg, &a, &sent),
                     TOLL_LEDGER_OK);
    assert_int_equal(sent, 1);
    a.key_id = "tk_a";
    assert_int_equal(toll_ledger_cap_alert(f->lg, &a, &sent),
                     TOLL_LEDGER_OK);
    assert_int_equal(sent, 1);
    a.buyer = "beta";
    assert_int_equal(toll_ledger_cap_alert(f->lg, &a, &sent),
                     TOLL_LEDGER_OK);
    assert_int_equal(sent, 1);
    a.period_start = "20260310";
    assert_int_equal(toll_ledger_cap_alert(f->lg, &a, &sent),
                     TOLL_LEDGER_OK);
    assert_int_equal(sent, 1);
    assert_int_equal(toll_ledger_cap_alert(f->lg, &a, &sent),
                     TOLL_LEDGER_OK);
    assert_int_equal(sent, 0);

    /* "" and NULL are the same buyer's cap */
    a = cap_alert(50);
    a.key_id = "";
    assert_int_equal(toll_ledger_cap_alert(f->lg, &a, &sent),
                     TOLL_LEDGER_OK);
    assert_int_equal(sent, 0);

    assert_int_equal(scalar(f->lg, "SELECT count(*) FROM events"), 7);
    assert_int_equal(scalar(f->lg, "SELECT count(*) FROM cap_alerts"), 7);

    /* the UNIQUE is the last guard, whatever the program does */
    assert_int_not_equal(sqlite3_exec(toll_ledger_db(f->lg),
                                      "INSERT INTO cap_alerts (buyer,"
                                      " currency, scope, key_id, period,"
                                      " period_start, threshold,"
                                      " cap_micros, used_micros, event_seq,"
                                      " sent_at) VALUES ('acme', 'USD',"
                                      " 'buyer', '', 'daily', '20260309',"
                                      " 50, 1, 1, 1, 0)", NULL, NULL, NULL),
                         SQLITE_OK);
}


static void
test_invalid_refused(void **state)
{
    int                      sent, i;
    fixture_t               *f;
    toll_ledger_cap_alert_t  a[8];

    f = *state;

    for (i = 0; i < 8; i++) {
        a[i] = cap_alert(50);
    }

    a[0].buyer = "has space";
    a[1].buyer = NULL;
    a[2].currency = "usd";
    a[3].key_id = "a b";
    a[4].period_start = "2026039";
    a[5].period_end = "2026-03-1";
    a[6].threshold = 90;
    a[7].period_start = NULL;

    for (i = 0; i < 8; i++) {
        sent = 1;
        assert_int_equal(toll_ledger_cap_alert(f->lg, &a[i], &sent),
                         TOLL_LEDGER_INVALID);
        assert_int_equal(sent, 0);
    }

    assert_int_equal(scalar(f->lg, "SELECT count(*) FROM events"), 0);
    assert_int_equal(scalar(f->lg, "SELECT count(*) FROM cap_alerts"), 0);
}


static void
collect(void *ctx, const char *buyer, const char *day)
{
    char  *out;

    out = ctx;
    strcat(out, buyer);
    strcat(out, " ");
    strcat(out, day);
    strcat(out, ";");
}


static void
post(toll_ledger_t *lg, const char *id, const char *buyer, const char *day)
{
    toll_ledger_fees_t   fees;
    toll_ledger_usage_t  u;
    toll_ledger_batch_t  b;

    memset(&fees, 0, sizeof(fees));
    memset(&u, 0, sizeof(u));
    memset(&b, 0, sizeof(b));

    u.service = "svc";
    u.provider = "prov";
    u.currency = "";
    u.calls = 1;
    u.paid_calls = 1;
    u.amount_micros = 50000;

    b.id = id;
    b.claim = "claim";
    b.buyer = buyer;
    b.day = day;
    b.usage = &u;
    b.nusage = 1;

    assert_int_equal(toll_ledger_post_batch(lg, &b, &fees), TOLL_LEDGER_OK);
}


/* the (buyer, day) of the last usage transactions, each once */
static void
test_recent_usage_days(void **state)
{
    char        got[256];
    fixture_t  *f;

    f = *state;

    got[0] = '\0';
    assert_int_equal(toll_ledger_recent_usage_days(f->lg, 100, collect,
                                                   got),
                     TOLL_LEDGER_OK);
    assert_string_equal(got, "");

    post(f->lg, "00000000000000000000000000000001", "acme", "20260309");
    post(f->lg, "00000000000000000000000000000002", "acme", "20260309");
    post(f->lg, "00000000000000000000000000000003", "beta", "20260310");

    got[0] = '\0';
    assert_int_equal(toll_ledger_recent_usage_days(f->lg, 100, collect,
                                                   got),
                     TOLL_LEDGER_OK);
    assert_true(strcmp(got, "acme 20260309;beta 20260310;") == 0
                || strcmp(got, "beta 20260310;acme 20260309;") == 0);

    /* only the last one */
    got[0] = '\0';
    assert_int_equal(toll_ledger_recent_usage_days(f->lg, 1, collect, got),
                     TOLL_LEDGER_OK);
    assert_string_equal(got, "beta 20260310;");
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
        cmocka_unit_test_setup_teardown(test_recent_usage_days, setup,
                                        teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
