/*
 * Unit tests of prepaid balances in the ledger (lib/toll_ledger_balance.c,
 * and the prepaid part of usage in lib/toll_ledger_post.c) on a real
 * SQLite file: what each kind posts, once by (buyer, ref), what is
 * refused, and usage split between the balance and the buyer's account.
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


static const toll_ledger_fees_t  fees_default = {
    TOLL_LEDGER_FEE_BP_DEFAULT, NULL, 0
};


static int
setup(void **state)
{
    char        err[256];
    fixture_t  *f;

    f = calloc(1, sizeof(fixture_t));
    assert_non_null(f);

    snprintf(f->dir, sizeof(f->dir), "/tmp/toll-ledger-bal-XXXXXX");
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


static toll_ledger_balance_tx_t
tx(const char *ref, const char *kind, const char *currency, int64_t amount)
{
    toll_ledger_balance_tx_t  t;

    memset(&t, 0, sizeof(t));
    t.ref = ref;
    t.kind = kind;
    t.currency = currency;
    t.amount_micros = amount;
    t.rc = 12345;

    return t;
}


static int64_t
balance(toll_ledger_t *lg, const char *account)
{
    json_t   *b;
    int64_t   v;

    assert_int_equal(toll_ledger_balance(lg, account, &b), TOLL_LEDGER_OK);
    v = json_integer_value(json_object_get(b, "balance_micros"));
    json_decref(b);

    return v;
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
assert_ledger_ok(toll_ledger_t *lg)
{
    json_t  *report;

    assert_int_equal(toll_ledger_check(lg, &report), TOLL_LEDGER_OK);

    if (!json_is_true(json_object_get(report, "ok"))) {
        json_dumpf(report, stderr, JSON_INDENT(1));
    }

    assert_true(json_is_true(json_object_get(report, "ok")));
    json_decref(report);
}


/* one usage record of one service, its batch id from n */
static int
post_usage(toll_ledger_t *lg, int n, const char *currency, int64_t amount,
    int64_t prepaid)
{
    char                 id[TOLL_LEDGER_BATCH_ID_LEN + 1];
    toll_ledger_batch_t  b;
    toll_ledger_usage_t  u;

    snprintf(id, sizeof(id), "%032x", n);

    memset(&u, 0, sizeof(u));
    u.service = "weather";
    u.provider = "weather-co";
    u.currency = currency;
    u.calls = 1;
    u.paid_calls = 1;
    u.amount_micros = amount;
    u.prepaid_micros = prepaid;

    b.id = id;
    b.claim = "toll:drain:{acme}:20260301:x";
    b.buyer = "acme";
    b.day = "20260301";
    b.usage = &u;
    b.nusage = 1;

    return toll_ledger_post_batch(lg, &b, &fees_default);
}


/* each kind's two entries; debits = credits */
static void
test_kinds_post(void **state)
{
    fixture_t                 *f;
    toll_ledger_balance_tx_t   t[3];

    f = *state;

    t[0] = tx("c1", "credit", "USD", 10000000);
    t[1] = tx("r1", "refund", "USD", 1000000);
    t[2] = tx("d1", "debit", "USD", 500000);

    assert_int_equal(toll_ledger_post_balance(f->lg, "acme", t, 3),
                     TOLL_LEDGER_OK);

    for (int i = 0; i < 3; i++) {
        assert_int_equal(t[i].rc, TOLL_LEDGER_OK);
        assert_null(t[i].refused);
    }

    assert_int_equal(balance(f->lg, "prepaid:USD:acme"), 8500000);
    /* cash is debit-normal: in 10, out 1 */
    assert_int_equal(balance(f->lg, "platform:cash"), 9000000);
    assert_int_equal(balance(f->lg, "platform:adjustments"), 500000);
    assert_int_equal(scalar(f->lg, "SELECT count(*) FROM entries"), 6);
    assert_int_equal(scalar(f->lg, "SELECT count(*) FROM transactions"
                                   " WHERE buyer = 'acme' AND currency ="
                                   " 'USD' AND provider IS NULL"), 3);
    assert_ledger_ok(f->lg);
}


/* the same ref again: nothing; another content: refused, others posted */
static void
test_ref_once(void **state)
{
    fixture_t                 *f;
    toll_ledger_balance_tx_t   t[3];

    f = *state;

    t[0] = tx("c1", "credit", "USD", 10000000);
    assert_int_equal(toll_ledger_post_balance(f->lg, "acme", t, 1),
                     TOLL_LEDGER_OK);
    assert_int_equal(t[0].rc, TOLL_LEDGER_OK);

    t[0] = tx("c1", "credit", "USD", 10000000);
    t[1] = tx("c1", "credit", "USD", 20000000);
    assert_int_equal(toll_ledger_post_balance(f->lg, "acme", t, 1),
                     TOLL_LEDGER_OK);
    assert_int_equal(t[0].rc, TOLL_LEDGER_EXISTS);

    t[0] = tx("c1", "credit", "USD", 20000000);
    t[1] = tx("c1", "credit", "EUR", 10000000);
    t[2] = tx("c2", "credit", "USD", 1);
    assert_int_equal(toll_ledger_post_balance(f->lg, "acme", t, 3),
                     TOLL_LEDGER_OK);
    assert_int_equal(t[0].rc, TOLL_LEDGER_INVALID);
    assert_non_null(strstr(t[0].refused, "another content"));
    assert_int_equal(t[1].rc, TOLL_LEDGER_INVALID);
    assert_int_equal(t[2].rc, TOLL_LEDGER_OK);

    /* the ref is the buyer's: another buyer may use it */
    t[0] = tx("c1", "credit", "USD", 3);
    assert_int_equal(toll_ledger_post_balance(f->lg, "beta", t, 1),
                     TOLL_LEDGER_OK);
    assert_int_equal(t[0].rc, TOLL_LEDGER_OK);

    assert_int_equal(balance(f->lg, "prepaid:USD:acme"), 10000001);
    assert_int_equal(balance(f->lg, "prepaid:USD:beta"), 3);
    assert_int_equal(scalar(f->lg, "SELECT count(*) FROM transactions"), 3);
    assert_ledger_ok(f->lg);
}


static void
test_invalid_refused(void **state)
{
    int                        found;
    fixture_t                 *f;
    toll_ledger_balance_tx_t   t[7];

    f = *state;

    t[0] = tx("a", "credits", "USD", 1);
    t[1] = tx("", "credit", "USD", 1);
    t[2] = tx("b", "credit", "usd", 1);
    t[3] = tx("c", "credit", "USD", 0);
    t[4] = tx("d", "debit", "USD", -5);
    t[5] = tx("e\n", "credit", "USD", 1);
    t[6] = tx("ok", "credit", "USD", 7);

    assert_int_equal(toll_ledger_post_balance(f->lg, "acme", t, 7),
                     TOLL_LEDGER_OK);

    for (int i = 0; i < 6; i++) {
        assert_int_equal(t[i].rc, TOLL_LEDGER_INVALID);
        assert_non_null(t[i].refused);
    }

    assert_int_equal(t[6].rc, TOLL_LEDGER_OK);
    assert_int_equal(scalar(f->lg, "SELECT count(*) FROM transactions"), 1);

    /* a buyer the ledger cannot name: nothing */
    t[0] = tx("x", "credit", "USD", 1);
    assert_int_equal(toll_ledger_post_balance(f->lg, "a b", t, 1),
                     TOLL_LEDGER_INVALID);
    assert_int_equal(scalar(f->lg, "SELECT count(*) FROM transactions"), 1);

    assert_int_equal(toll_ledger_balance_ref(f->lg, "acme", "ok", &found),
                     TOLL_LEDGER_OK);
    assert_int_equal(found, 1);
    assert_int_equal(toll_ledger_balance_ref(f->lg, "acme", "a", &found),
                     TOLL_LEDGER_OK);
    assert_int_equal(found, 0);

    /* the schema refuses a second row of a ref, whatever writes it */
    assert_int_not_equal(sqlite3_exec(toll_ledger_db(f->lg),
                                      "INSERT INTO transactions (kind,"
                                      " posted_at, buyer, ref, currency,"
                                      " amount_micros) VALUES ('credit', 1,"
                                      " 'acme', 'ok', 'USD', 7)",
                                      NULL, NULL, NULL),
                         SQLITE_OK);
    assert_ledger_ok(f->lg);
}


/* what the balance paid comes from the prepaid account, the rest not */
static void
test_usage_split(void **state)
{
    json_t     *rows;
    fixture_t  *f;

    f = *state;

    assert_int_equal(post_usage(f->lg, 1, "USD", 1000000, 300000),
                     TOLL_LEDGER_OK);
    assert_int_equal(balance(f->lg, "buyer:acme"), 700000);
    assert_int_equal(balance(f->lg, "prepaid:USD:acme"), -300000);
    assert_int_equal(scalar(f->lg, "SELECT count(*) FROM entries"), 4);

    /* all of it prepaid: no entry of 0 for the buyer */
    assert_int_equal(post_usage(f->lg, 2, "USD", 500000, 500000),
                     TOLL_LEDGER_OK);
    assert_int_equal(scalar(f->lg, "SELECT count(*) FROM entries"), 7);
    assert_int_equal(balance(f->lg, "buyer:acme"), 700000);
    assert_int_equal(balance(f->lg, "prepaid:USD:acme"), -800000);

    /* none prepaid, no currency (an older meter): as before */
    assert_int_equal(post_usage(f->lg, 3, "", 100000, 0), TOLL_LEDGER_OK);
    assert_int_equal(balance(f->lg, "buyer:acme"), 800000);

    assert_int_equal(scalar(f->lg, "SELECT sum(prepaid_micros)"
                                   " FROM transactions"), 800000);
    assert_int_equal(scalar(f->lg, "SELECT count(*) FROM transactions"
                                   " WHERE currency IS NULL"), 1);

    assert_int_equal(toll_ledger_prepaid_totals(f->lg, &rows),
                     TOLL_LEDGER_OK);
    assert_int_equal(json_array_size(rows), 1);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(rows, 0), "buyer")), "acme");
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(rows, 0), "currency")), "USD");
    assert_int_equal(json_integer_value(json_object_get(
                         json_array_get(rows, 0), "balance_micros")),
                     -800000);
    json_decref(rows);

    assert_ledger_ok(f->lg);
}


static void
test_usage_prepaid_refused(void **state)
{
    fixture_t  *f;

    f = *state;

    assert_int_equal(post_usage(f->lg, 1, "USD", 100, 101),
                     TOLL_LEDGER_INVALID);
    assert_int_equal(post_usage(f->lg, 2, "", 100, 1), TOLL_LEDGER_INVALID);
    assert_int_equal(post_usage(f->lg, 3, "usd", 100, 1),
                     TOLL_LEDGER_INVALID);
    assert_int_equal(post_usage(f->lg, 4, "USD", 100, -1),
                     TOLL_LEDGER_INVALID);
    assert_int_equal(scalar(f->lg, "SELECT count(*) FROM transactions"), 0);
}


/* the check sees a balance transaction that is not as posting writes it */
static void
test_check_balance_entries(void **state)
{
    json_t                    *report, *c;
    size_t                     i;
    fixture_t                 *f;
    toll_ledger_balance_tx_t   t;

    f = *state;

    t = tx("c1", "credit", "USD", 100);
    assert_int_equal(toll_ledger_post_balance(f->lg, "acme", &t, 1),
                     TOLL_LEDGER_OK);
    assert_ledger_ok(f->lg);

    /* the credit's amount said otherwise than its entries */
    assert_int_equal(sqlite3_exec(toll_ledger_db(f->lg),
                                  "UPDATE transactions SET amount_micros"
                                  " = 99", NULL, NULL, NULL),
                     SQLITE_OK);

    assert_int_equal(toll_ledger_check(f->lg, &report), TOLL_LEDGER_OK);
    assert_false(json_is_true(json_object_get(report, "ok")));

    json_array_foreach(json_object_get(report, "checks"), i, c) {
        if (strcmp(json_string_value(json_object_get(c, "name")),
                   "balance_entries") == 0)
        {
            assert_false(json_is_true(json_object_get(c, "ok")));
        }
    }

    json_decref(report);
}


/* a journal record read strictly, as toll-settle and reconcile read it */
static void
test_record_parse(void **state)
{
    char                       buf[TOLL_LEDGER_BALANCE_RECORD_LEN_MAX + 1];
    int64_t                    t;
    toll_ledger_balance_tx_t   x;

    static const char  *bad[] = {
        "", "credit USD 5", "credit USD 5 1 2", "credit  USD 5 1",
        "credit USD 5 1 ", " credit USD 5 1", "credits USD 5 1",
        "credit usd 5 1", "credit US 5 1", "credit USD 0 1",
        "credit USD 05 1", "credit USD -5 1", "credit USD +5 1",
        "credit USD 5 01", "credit USD 5 -0", "credit USD 5 1.0",
        "credit USD 9223372036854775808 1",
        "credit USD 5 9223372036854775808",
        "refund ABCDEFGHIJKLMNOPQ 5 1",
    };

    (void) state;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (toll_ledger_balance_record(bad[i], strlen(bad[i]), buf, &x, &t)
            == NULL)
        {
            fail_msg("taken: \"%s\"", bad[i]);
        }
    }

    assert_non_null(toll_ledger_balance_record("credit USD 5\0 1", 14, buf,
                                               &x, &t));

    assert_null(toll_ledger_balance_record("refund ABCDEFGHIJKLMNOP "
                                           "9223372036854775807 "
                                           "-9223372036854775808", 64, buf,
                                           &x, &t));
    assert_string_equal(x.kind, "refund");
    assert_string_equal(x.currency, "ABCDEFGHIJKLMNOP");
    assert_int_equal(x.amount_micros, INT64_MAX);
    assert_true(t == INT64_MIN);

    assert_null(toll_ledger_balance_record("debit EUR 1 0", 13, buf, &x,
                                           &t));
    assert_int_equal(x.amount_micros, 1);
    assert_int_equal(t, 0);
}


/* an entry of a usage without a currency to any other account is seen */
static void
test_check_usage_stray_entry(void **state)
{
    json_t     *report;
    fixture_t  *f;

    f = *state;

    assert_int_equal(post_usage(f->lg, 1, "", 100000, 0), TOLL_LEDGER_OK);
    assert_ledger_ok(f->lg);

    assert_int_equal(sqlite3_exec(toll_ledger_db(f->lg),
                                  "INSERT INTO accounts (name, kind) VALUES"
                                  " ('buyer:x', 'buyer'), ('buyer:y',"
                                  " 'buyer');"
                                  "INSERT INTO entries (tx_id, account_id,"
                                  " debit_micros, credit_micros) SELECT 1,"
                                  " id, 5, 0 FROM accounts WHERE name ="
                                  " 'buyer:x';"
                                  "INSERT INTO entries (tx_id, account_id,"
                                  " debit_micros, credit_micros) SELECT 1,"
                                  " id, 0, 5 FROM accounts WHERE name ="
                                  " 'buyer:y';"
                                  "UPDATE totals SET debits_micros ="
                                  " debits_micros + 5, credits_micros ="
                                  " credits_micros + 5;",
                                  NULL, NULL, NULL),
                     SQLITE_OK);

    assert_int_equal(toll_ledger_check(f->lg, &report), TOLL_LEDGER_OK);
    assert_false(json_is_true(json_object_get(report, "ok")));
    json_decref(report);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_record_parse),
        cmocka_unit_test_setup_teardown(test_invalid_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_usage_prepaid_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_ref_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kinds_post, setup, teardown),
        cmocka_unit_test_setup_teardown(test_usage_split, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_balance_entries, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_check_usage_stray_entry, setup,
                                        teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
