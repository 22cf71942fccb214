/*
 * Unit tests of the ledger's settlements (lib/toll_settlement.c) on a
 * real SQLite file: usage is posted with toll_ledger_post_batch() at
 * chosen times (TOLL_LEDGER_NOW), then settled and paid.
 *
 * The reference numbers (docs/settle.md): 210 paid calls at 0.05 with a
 * 10 % fee are a total of 10.50, a fee of 1.05 and a net of 9.45, whether
 * they reach the ledger as one batch or as 210.
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


/* 2026-03-01T00:00:00Z, and a day */
#define T0        INT64_C(1772323200)
#define DAY       INT64_C(86400)
#define HOUR      INT64_C(3600)

#define PRICE_MICROS      50000          /* 0.05 */
#define REF_CALLS         210
#define PATH_LEN_MAX      256
#define TX_REF_TOO_LONG   (TOLL_LEDGER_TX_REF_LEN_MAX + 1)


typedef struct {
    char              dir[PATH_LEN_MAX];
    char              path[PATH_LEN_MAX + sizeof("/ledger.db")];
    toll_ledger_t    *lg;
} fixture_t;


static const toll_ledger_fees_t  fees_default = {
    TOLL_LEDGER_FEE_BP_DEFAULT, NULL, 0
};


static void
set_now(int64_t t)
{
    char  buf[32];

    snprintf(buf, sizeof(buf), "%lld", (long long) t);
    assert_int_equal(setenv("TOLL_LEDGER_NOW", buf, 1), 0);
    assert_int_equal(toll_ledger_now(), t);
}


static int
setup(void **state)
{
    char        err[256];
    fixture_t  *f;

    f = calloc(1, sizeof(fixture_t));
    assert_non_null(f);

    snprintf(f->dir, sizeof(f->dir), "/tmp/toll-ledger-test-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/ledger.db", f->dir);

    set_now(T0);

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
    unsetenv("TOLL_LEDGER_NOW");

    return 0;
}


/* one batch of one service, posted at time t */
static void
post(toll_ledger_t *lg, int64_t t, const char *buyer, const char *service,
    const char *provider, int64_t paid_calls, int64_t amount_micros,
    const toll_ledger_fees_t *fees)
{
    char                 id[TOLL_LEDGER_BATCH_ID_LEN + 1];
    toll_ledger_batch_t  b;
    toll_ledger_usage_t  u;

    set_now(t);
    assert_int_equal(toll_ledger_random_hex(id, TOLL_LEDGER_BATCH_ID_LEN / 2),
                     0);

    memset(&u, 0, sizeof(u));
    u.service = service;
    u.provider = provider;
    u.calls = paid_calls;
    u.paid_calls = paid_calls;
    u.amount_micros = amount_micros;

    /* an amount of 0: the calls were free */
    if (amount_micros == 0) {
        u.free_calls = paid_calls;
        u.paid_calls = 0;
    }

    b.id = id;
    b.claim = "toll:drain:{test}:20260301:x";
    b.buyer = buyer;
    b.day = "20260301";
    b.usage = &u;
    b.nusage = 1;

    assert_int_equal(toll_ledger_post_batch(lg, &b, fees), TOLL_LEDGER_OK);
}


static void
assert_str_field(json_t *obj, const char *name, const char *want)
{
    json_t  *v;

    v = json_object_get(obj, name);
    assert_non_null(v);
    assert_true(json_is_string(v));
    assert_string_equal(json_string_value(v), want);
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
    assert_int_equal(json_integer_value(json_object_get(report,
                                                        "debits_micros")),
                     json_integer_value(json_object_get(report,
                                                        "credits_micros")));
    json_decref(report);
}


static int64_t
count_events(toll_ledger_t *lg, const char *type)
{
    int64_t        n;
    sqlite3_stmt  *st;

    assert_int_equal(sqlite3_prepare_v2(toll_ledger_db(lg),
                                        "SELECT count(*) FROM events"
                                        " WHERE type = ?", -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(st, 1, type, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);

    return n;
}


/* a settlement of [T0, T0 + DAY), created the next day */
static json_t *
settle_day(toll_ledger_t *lg, const char *provider, int want_rc)
{
    json_t  *s;

    set_now(T0 + DAY + HOUR);

    s = NULL;
    assert_int_equal(toll_settlement_create(lg, provider, T0, T0 + DAY, &s),
                     want_rc);

    if (want_rc == TOLL_LEDGER_OK) {
        assert_non_null(s);

    } else {
        assert_null(s);
    }

    return s;
}


/* settle_day() that succeeds, keeping only the settlement's id */
static void
settle_day_id(toll_ledger_t *lg, const char *provider,
    char id[TOLL_LEDGER_SETTLEMENT_ID_LEN + 1])
{
    json_t  *s;

    s = settle_day(lg, provider, TOLL_LEDGER_OK);
    snprintf(id, TOLL_LEDGER_SETTLEMENT_ID_LEN + 1, "%s",
             json_string_value(json_object_get(s, "id")));
    json_decref(s);
}


static void
pay_ok(toll_ledger_t *lg, const char *id, const char *tx_ref)
{
    json_t  *paid;

    assert_int_equal(toll_settlement_pay(lg, id, tx_ref, &paid),
                     TOLL_LEDGER_OK);
    json_decref(paid);
}


static void
assert_reference(json_t *s)
{
    const char  *id;

    id = json_string_value(json_object_get(s, "id"));
    assert_non_null(id);
    assert_int_equal(strlen(id), TOLL_LEDGER_SETTLEMENT_ID_LEN);
    assert_memory_equal(id, "stl_", 4);

    assert_str_field(s, "provider_id", "weather-co");
    assert_str_field(s, "period_start", "2026-03-01T00:00:00Z");
    assert_str_field(s, "period_end", "2026-03-02T00:00:00Z");
    assert_str_field(s, "total_amount", "10.50");
    assert_str_field(s, "platform_fee", "1.05");
    assert_str_field(s, "net_amount", "9.45");
    assert_int_field(s, "total_micros", 10500000);
    assert_int_field(s, "fee_micros", 1050000);
    assert_int_field(s, "net_micros", 9450000);
    assert_int_field(s, "call_count", REF_CALLS);
    assert_str_field(s, "status", "pending");
    assert_true(json_is_null(json_object_get(s, "payment_tx")));
    assert_true(json_is_null(json_object_get(s, "paid_at")));
    assert_str_field(s, "created_at", "2026-03-02T01:00:00Z");
}


static void
test_reference_one_batch(void **state)
{
    json_t     *s, *got;
    fixture_t  *f;

    f = *state;

    post(f->lg, T0 + HOUR, "acme", "weather", "weather-co", REF_CALLS,
         REF_CALLS * PRICE_MICROS, &fees_default);

    s = settle_day(f->lg, "weather-co", TOLL_LEDGER_OK);
    assert_reference(s);

    /* get answers what create answered */
    assert_int_equal(toll_settlement_get(f->lg,
                         json_string_value(json_object_get(s, "id")), &got),
                     TOLL_LEDGER_OK);
    assert_true(json_equal(s, got));

    assert_int_equal(count_events(f->lg, TOLL_LEDGER_EVENT_SETTLEMENT_CREATED),
                     1);

    json_decref(got);
    json_decref(s);
    assert_ledger_ok(f->lg);
}


static void
test_reference_210_batches(void **state)
{
    int         i;
    json_t     *s;
    fixture_t  *f;

    f = *state;

    /* one call a minute from 01:00: every fee is 5000, exactly */
    for (i = 0; i < REF_CALLS; i++) {
        post(f->lg, T0 + HOUR + i * 60, "acme", "weather", "weather-co", 1,
             PRICE_MICROS, &fees_default);
    }

    s = settle_day(f->lg, "weather-co", TOLL_LEDGER_OK);
    assert_reference(s);
    json_decref(s);

    assert_balance(f->lg, "buyer:acme", 10500000);
    assert_balance(f->lg, "provider:weather-co", 9450000);
    assert_balance(f->lg, TOLL_LEDGER_ACCOUNT_FEES, 1050000);
    assert_ledger_ok(f->lg);
}


/* half up per record: 0.5 micro-units of fee go up, 0.4 go down */
static void
test_rounding_half_up_per_record(void **state)
{
    json_t     *s;
    fixture_t  *f;

    f = *state;

    post(f->lg, T0 + HOUR, "acme", "tiny", "p5", 1, 5, &fees_default);
    post(f->lg, T0 + HOUR, "acme", "tiny", "p4", 1, 4, &fees_default);

    assert_balance(f->lg, "provider:p5", 4);
    assert_balance(f->lg, "provider:p4", 4);
    assert_balance(f->lg, TOLL_LEDGER_ACCOUNT_FEES, 1);
    assert_balance(f->lg, "buyer:acme", 9);

    s = settle_day(f->lg, "p5", TOLL_LEDGER_OK);
    assert_int_field(s, "total_micros", 5);
    assert_int_field(s, "fee_micros", 1);
    assert_int_field(s, "net_micros", 4);
    assert_str_field(s, "platform_fee", "0.000001");
    json_decref(s);

    s = settle_day(f->lg, "p4", TOLL_LEDGER_OK);
    assert_int_field(s, "total_micros", 4);
    assert_int_field(s, "fee_micros", 0);
    assert_int_field(s, "net_micros", 4);
    assert_str_field(s, "platform_fee", "0.00");
    json_decref(s);

    /* ten records of 5 round ten times: a fee of 10, not of 5 */
    for (int i = 0; i < 10; i++) {
        post(f->lg, T0 + 2 * DAY + i, "acme", "tiny", "p10", 1, 5,
             &fees_default);
    }

    set_now(T0 + 3 * DAY);
    assert_int_equal(toll_settlement_create(f->lg, "p10", T0 + 2 * DAY,
                                            T0 + 3 * DAY, &s),
                     TOLL_LEDGER_OK);
    assert_int_field(s, "total_micros", 50);
    assert_int_field(s, "fee_micros", 10);
    assert_int_field(s, "net_micros", 40);
    json_decref(s);

    assert_ledger_ok(f->lg);
}


static void
test_fee_per_provider(void **state)
{
    json_t                   *s;
    fixture_t                *f;
    toll_ledger_fees_t        fees;
    static const toll_ledger_fee_t  rates[] = {
        { "cheap-co", 250 },            /* 2.5 % */
        { "free-co", 0 },
        { "greedy-co", TOLL_LEDGER_FEE_BP_MAX }
    };

    f = *state;

    fees.default_bp = TOLL_LEDGER_FEE_BP_DEFAULT;
    fees.providers = rates;
    fees.nproviders = sizeof(rates) / sizeof(rates[0]);

    post(f->lg, T0 + HOUR, "acme", "weather", "weather-co", REF_CALLS,
         REF_CALLS * PRICE_MICROS, &fees);
    post(f->lg, T0 + HOUR, "acme", "maps", "cheap-co", REF_CALLS,
         REF_CALLS * PRICE_MICROS, &fees);
    post(f->lg, T0 + HOUR, "acme", "news", "free-co", 3, 150000, &fees);
    post(f->lg, T0 + HOUR, "acme", "ads", "greedy-co", 3, 150000, &fees);

    s = settle_day(f->lg, "weather-co", TOLL_LEDGER_OK);
    assert_reference(s);
    json_decref(s);

    /* 10.50 at 2.5 % is 0.2625 */
    s = settle_day(f->lg, "cheap-co", TOLL_LEDGER_OK);
    assert_int_field(s, "total_micros", 10500000);
    assert_int_field(s, "fee_micros", 262500);
    assert_int_field(s, "net_micros", 10237500);
    assert_str_field(s, "platform_fee", "0.2625");
    assert_str_field(s, "net_amount", "10.2375");
    json_decref(s);

    s = settle_day(f->lg, "free-co", TOLL_LEDGER_OK);
    assert_int_field(s, "fee_micros", 0);
    assert_int_field(s, "net_micros", 150000);
    json_decref(s);

    /* a net of 0 is paid too: a payout with no entries */
    s = settle_day(f->lg, "greedy-co", TOLL_LEDGER_OK);
    assert_int_field(s, "fee_micros", 150000);
    assert_int_field(s, "net_micros", 0);
    assert_str_field(s, "net_amount", "0.00");
    json_decref(s);

    assert_int_equal(toll_settlement_list(f->lg, "greedy-co", NULL, 10, &s),
                     TOLL_LEDGER_OK);
    assert_int_equal(json_array_size(s), 1);
    {
        json_t  *paid;
        char     id[TOLL_LEDGER_SETTLEMENT_ID_LEN + 1];

        snprintf(id, sizeof(id), "%s", json_string_value(
                     json_object_get(json_array_get(s, 0), "id")));
        assert_int_equal(toll_settlement_pay(f->lg, id, "wire-0", &paid),
                         TOLL_LEDGER_OK);
        assert_str_field(paid, "status", "completed");
        json_decref(paid);
    }
    json_decref(s);

    assert_balance(f->lg, TOLL_LEDGER_ACCOUNT_FEES,
                   1050000 + 262500 + 0 + 150000);
    assert_ledger_ok(f->lg);
}


static void
test_overlap_refused(void **state)
{
    json_t     *s, *again;
    fixture_t  *f;

    f = *state;

    post(f->lg, T0 + HOUR, "acme", "weather", "weather-co", 1, PRICE_MICROS,
         &fees_default);
    post(f->lg, T0 + DAY + HOUR, "acme", "weather", "weather-co", 1,
         PRICE_MICROS, &fees_default);
    post(f->lg, T0 + HOUR, "acme", "maps", "maps-co", 1, PRICE_MICROS,
         &fees_default);

    s = settle_day(f->lg, "weather-co", TOLL_LEDGER_OK);
    json_decref(s);

    set_now(T0 + 3 * DAY);

    /* the same period, one inside it, one across each end */
    assert_int_equal(toll_settlement_create(f->lg, "weather-co", T0,
                                            T0 + DAY, &again),
                     TOLL_LEDGER_EXISTS);
    assert_null(again);
    assert_non_null(strstr(toll_ledger_errmsg(f->lg), "overlaps"));

    assert_int_equal(toll_settlement_create(f->lg, "weather-co", T0 + HOUR,
                                            T0 + 2 * HOUR, &again),
                     TOLL_LEDGER_EXISTS);
    assert_int_equal(toll_settlement_create(f->lg, "weather-co", T0 - DAY,
                                            T0 + 1, &again),
                     TOLL_LEDGER_EXISTS);
    assert_int_equal(toll_settlement_create(f->lg, "weather-co",
                                            T0 + DAY - 1, T0 + 2 * DAY,
                                            &again),
                     TOLL_LEDGER_EXISTS);

    /* adjacent periods do not overlap: [a, b) then [b, c) */
    assert_int_equal(toll_settlement_create(f->lg, "weather-co", T0 + DAY,
                                            T0 + 2 * DAY, &again),
                     TOLL_LEDGER_OK);
    assert_int_field(again, "call_count", 1);
    json_decref(again);

    /* another provider's settlement may cover the same time */
    s = settle_day(f->lg, "maps-co", TOLL_LEDGER_OK);
    json_decref(s);

    assert_int_equal(toll_settlement_list(f->lg, NULL, NULL, 100, &s),
                     TOLL_LEDGER_OK);
    assert_int_equal(json_array_size(s), 3);
    json_decref(s);

    assert_int_equal(count_events(f->lg, TOLL_LEDGER_EVENT_SETTLEMENT_CREATED),
                     3);
    assert_ledger_ok(f->lg);
}


static void
test_empty_refused(void **state)
{
    json_t     *s;
    fixture_t  *f;

    f = *state;

    /* nothing at all */
    s = settle_day(f->lg, "weather-co", TOLL_LEDGER_EMPTY);

    /* another provider's usage, and this one's at the period's end */
    post(f->lg, T0 + HOUR, "acme", "maps", "maps-co", 1, PRICE_MICROS,
         &fees_default);
    post(f->lg, T0 + DAY, "acme", "weather", "weather-co", 1, PRICE_MICROS,
         &fees_default);

    s = settle_day(f->lg, "weather-co", TOLL_LEDGER_EMPTY);
    assert_non_null(strstr(toll_ledger_errmsg(f->lg), "nothing to settle"));

    assert_int_equal(toll_settlement_list(f->lg, NULL, NULL, 100, &s),
                     TOLL_LEDGER_OK);
    assert_int_equal(json_array_size(s), 0);
    json_decref(s);

    assert_int_equal(count_events(f->lg, TOLL_LEDGER_EVENT_SETTLEMENT_CREATED),
                     0);

    /* free calls only: amount 0, still usage to settle */
    post(f->lg, T0 + 2 * DAY + 1, "acme", "weather", "weather-co", 3, 0,
         &fees_default);
    set_now(T0 + 3 * DAY);
    assert_int_equal(toll_settlement_create(f->lg, "weather-co",
                                            T0 + 2 * DAY, T0 + 3 * DAY, &s),
                     TOLL_LEDGER_OK);
    assert_int_field(s, "total_micros", 0);
    assert_int_field(s, "call_count", 3);
    assert_str_field(s, "total_amount", "0.00");
    json_decref(s);
}


static void
test_period_invalid(void **state)
{
    json_t     *s;
    fixture_t  *f;

    f = *state;

    post(f->lg, T0 + HOUR, "acme", "weather", "weather-co", 1, PRICE_MICROS,
         &fees_default);

    set_now(T0 + DAY - 1);

    /* the period has not ended */
    assert_int_equal(toll_settlement_create(f->lg, "weather-co", T0,
                                            T0 + DAY, &s),
                     TOLL_LEDGER_INVALID);
    assert_null(s);
    assert_non_null(strstr(toll_ledger_errmsg(f->lg), "after now"));

    /* it ends now: closed, since what is posted now is at or after "to" */
    assert_int_equal(toll_settlement_create(f->lg, "weather-co", T0,
                                            T0 + DAY - 1, &s),
                     TOLL_LEDGER_OK);
    json_decref(s);

    assert_int_equal(toll_settlement_create(f->lg, "weather-co", T0 - HOUR,
                                            T0 - HOUR, &s),
                     TOLL_LEDGER_INVALID);
    assert_int_equal(toll_settlement_create(f->lg, "weather-co", T0,
                                            T0 - HOUR, &s),
                     TOLL_LEDGER_INVALID);
    assert_int_equal(toll_settlement_create(f->lg, "weather co", T0 - DAY,
                                            T0, &s),
                     TOLL_LEDGER_INVALID);
    assert_int_equal(toll_settlement_create(f->lg, "", T0 - DAY, T0, &s),
                     TOLL_LEDGER_INVALID);

    /* a refused create leaves the ledger able to write */
    post(f->lg, T0 + DAY, "acme", "weather", "weather-co", 1, PRICE_MICROS,
         &fees_default);
    assert_ledger_ok(f->lg);
}


static void
test_pay_once(void **state)
{
    char        id[TOLL_LEDGER_SETTLEMENT_ID_LEN + 1];
    char        long_ref[TX_REF_TOO_LONG + 1];
    json_t     *paid, *again, *list;
    fixture_t  *f;

    f = *state;

    post(f->lg, T0 + HOUR, "acme", "weather", "weather-co", REF_CALLS,
         REF_CALLS * PRICE_MICROS, &fees_default);

    settle_day_id(f->lg, "weather-co", id);

    memset(long_ref, 'x', TX_REF_TOO_LONG);
    long_ref[TX_REF_TOO_LONG] = '\0';

    assert_int_equal(toll_settlement_pay(f->lg, id, "", &paid),
                     TOLL_LEDGER_INVALID);
    assert_int_equal(toll_settlement_pay(f->lg, id, long_ref, &paid),
                     TOLL_LEDGER_INVALID);
    assert_int_equal(toll_settlement_pay(f->lg, id, "0x\x01", &paid),
                     TOLL_LEDGER_INVALID);
    assert_int_equal(toll_settlement_pay(f->lg, id, "caf\xc3\xa9", &paid),
                     TOLL_LEDGER_INVALID);
    assert_int_equal(toll_settlement_pay(f->lg, "stl_000000000000000000000000",
                                         "0xabc", &paid),
                     TOLL_LEDGER_NOT_FOUND);
    assert_null(paid);

    /* the longest reference is fine */
    long_ref[TOLL_LEDGER_TX_REF_LEN_MAX] = '\0';

    set_now(T0 + 2 * DAY);
    assert_int_equal(toll_settlement_pay(f->lg, id, long_ref, &paid),
                     TOLL_LEDGER_OK);
    assert_str_field(paid, "status", "completed");
    assert_str_field(paid, "payment_tx", long_ref);
    assert_str_field(paid, "paid_at", "2026-03-03T00:00:00Z");
    assert_str_field(paid, "net_amount", "9.45");

    /* the second payment changes nothing */
    set_now(T0 + 3 * DAY);
    assert_int_equal(toll_settlement_pay(f->lg, id, "0xother", &again),
                     TOLL_LEDGER_EXISTS);
    assert_null(again);
    assert_non_null(strstr(toll_ledger_errmsg(f->lg), "already completed"));

    assert_int_equal(toll_settlement_get(f->lg, id, &again), TOLL_LEDGER_OK);
    assert_true(json_equal(paid, again));
    json_decref(again);
    json_decref(paid);

    assert_int_equal(count_events(f->lg,
                                  TOLL_LEDGER_EVENT_SETTLEMENT_COMPLETED), 1);

    assert_int_equal(toll_settlement_list(f->lg, NULL, "pending", 10, &list),
                     TOLL_LEDGER_OK);
    assert_int_equal(json_array_size(list), 0);
    json_decref(list);

    assert_int_equal(toll_settlement_list(f->lg, "weather-co", "completed", 10,
                                          &list),
                     TOLL_LEDGER_OK);
    assert_int_equal(json_array_size(list), 1);
    json_decref(list);

    assert_int_equal(toll_settlement_get(f->lg, "stl_nope", &again),
                     TOLL_LEDGER_NOT_FOUND);
    assert_null(again);
}


static void
test_balances_after_pay(void **state)
{
    char        id[TOLL_LEDGER_SETTLEMENT_ID_LEN + 1];
    json_t     *entries, *e;
    fixture_t  *f;

    f = *state;

    post(f->lg, T0 + HOUR, "acme", "weather", "weather-co", REF_CALLS,
         REF_CALLS * PRICE_MICROS, &fees_default);
    /* after the period: owed, not settled, not paid */
    post(f->lg, T0 + DAY + 1, "acme", "weather", "weather-co", 20,
         20 * PRICE_MICROS, &fees_default);

    settle_day_id(f->lg, "weather-co", id);

    pay_ok(f->lg, id, "0xabc");

    assert_balance(f->lg, "buyer:acme", 11500000);
    assert_balance(f->lg, TOLL_LEDGER_ACCOUNT_FEES, 1150000);
    /* owed 9.45 + 0.90, paid 9.45 */
    assert_balance(f->lg, "provider:weather-co", 900000);
    /* paid out, nothing collected yet: negative on its debit side */
    assert_balance(f->lg, TOLL_LEDGER_ACCOUNT_CASH, -9450000);

    /* the payout's two entries are the newest */
    assert_int_equal(toll_ledger_entries(f->lg, NULL, 2, &entries),
                     TOLL_LEDGER_OK);
    assert_int_equal(json_array_size(entries), 2);

    e = json_array_get(entries, 0);
    assert_str_field(e, "account", TOLL_LEDGER_ACCOUNT_CASH);
    assert_int_field(e, "credit_micros", 9450000);
    assert_str_field(e, "settlement", id);

    e = json_array_get(entries, 1);
    assert_str_field(e, "account", "provider:weather-co");
    assert_int_field(e, "debit_micros", 9450000);
    assert_str_field(e, "kind", "payout");
    json_decref(entries);

    assert_ledger_ok(f->lg);
}


/*
 * The figures toll-settle exports: the totals row, the count of
 * transactions read as the last id (usage and payouts alike), the
 * pending deliveries; each equal to what a full scan finds.
 */
static void
test_gauges(void **state)
{
    char                  id[TOLL_LEDGER_SETTLEMENT_ID_LEN + 1];
    json_t               *totals;
    fixture_t            *f;
    toll_ledger_gauges_t  g;

    f = *state;

    assert_int_equal(toll_ledger_gauges(f->lg, &g), TOLL_LEDGER_OK);
    assert_int_equal(g.debits_micros, 0);
    assert_int_equal(g.credits_micros, 0);
    assert_int_equal(g.transactions, 0);
    assert_int_equal(g.deliveries_pending, 0);

    post(f->lg, T0 + HOUR, "acme", "weather", "weather-co", REF_CALLS,
         REF_CALLS * PRICE_MICROS, &fees_default);
    post(f->lg, T0 + 2 * HOUR, "acme", "free", "weather-co", 5, 0,
         &fees_default);

    settle_day_id(f->lg, "weather-co", id);

    pay_ok(f->lg, id, "0xabc");

    /* two events, three deliveries, one of them settled */
    assert_int_equal(sqlite3_exec(toll_ledger_db(f->lg),
                         "INSERT INTO deliveries (event_seq, url, status,"
                         " next_at_ms) SELECT seq, 'http://a/', 'pending', 0"
                         " FROM events;"
                         "INSERT INTO deliveries (event_seq, url, status,"
                         " next_at_ms) SELECT min(seq), 'http://b/',"
                         " 'delivered', 0 FROM events;", NULL, NULL, NULL),
                     SQLITE_OK);

    assert_int_equal(toll_ledger_gauges(f->lg, &g), TOLL_LEDGER_OK);
    assert_int_equal(toll_ledger_totals(f->lg, &totals), TOLL_LEDGER_OK);

    /* usage 10.50 (the free batch has no entries), then the payout 9.45 */
    assert_int_equal(g.debits_micros, 10500000 + 9450000);
    assert_int_equal(g.credits_micros, g.debits_micros);
    assert_int_field(totals, "debits_micros", g.debits_micros);
    assert_int_equal(g.transactions, 3);
    assert_int_field(totals, "transactions", g.transactions);
    assert_int_equal(g.deliveries_pending, 2);

    json_decref(totals);
    assert_ledger_ok(f->lg);
}


static void
test_list_filters(void **state)
{
    json_t     *s, *list;
    fixture_t  *f;

    f = *state;

    post(f->lg, T0 + HOUR, "acme", "weather", "weather-co", 1, PRICE_MICROS,
         &fees_default);
    post(f->lg, T0 + HOUR, "acme", "maps", "maps-co", 1, PRICE_MICROS,
         &fees_default);

    s = settle_day(f->lg, "weather-co", TOLL_LEDGER_OK);
    json_decref(s);

    set_now(T0 + DAY + 2 * HOUR);
    assert_int_equal(toll_settlement_create(f->lg, "maps-co", T0, T0 + DAY,
                                            &s),
                     TOLL_LEDGER_OK);
    json_decref(s);

    /* newest first */
    assert_int_equal(toll_settlement_list(f->lg, NULL, NULL, 10, &list),
                     TOLL_LEDGER_OK);
    assert_int_equal(json_array_size(list), 2);
    assert_str_field(json_array_get(list, 0), "provider_id", "maps-co");
    assert_str_field(json_array_get(list, 1), "provider_id", "weather-co");
    json_decref(list);

    assert_int_equal(toll_settlement_list(f->lg, NULL, NULL, 1, &list),
                     TOLL_LEDGER_OK);
    assert_int_equal(json_array_size(list), 1);
    json_decref(list);

    assert_int_equal(toll_settlement_list(f->lg, "weather-co", "pending", 10,
                                          &list),
                     TOLL_LEDGER_OK);
    assert_int_equal(json_array_size(list), 1);
    json_decref(list);

    assert_int_equal(toll_settlement_list(f->lg, "nobody", NULL, 10, &list),
                     TOLL_LEDGER_OK);
    assert_int_equal(json_array_size(list), 0);
    json_decref(list);

    assert_int_equal(toll_settlement_list(f->lg, NULL, "paid", 10, &list),
                     TOLL_LEDGER_INVALID);
    assert_int_equal(toll_settlement_list(f->lg, NULL, NULL, 0, &list),
                     TOLL_LEDGER_INVALID);
    assert_int_equal(toll_settlement_list(f->lg, NULL, NULL, 1001, &list),
                     TOLL_LEDGER_INVALID);
}


/* the event carries the settlement as create answered it */
static void
test_event_body(void **state)
{
    json_t        *s, *body;
    fixture_t     *f;
    sqlite3_stmt  *st;
    json_error_t   jerr;

    f = *state;

    post(f->lg, T0 + HOUR, "acme", "weather", "weather-co", REF_CALLS,
         REF_CALLS * PRICE_MICROS, &fees_default);
    s = settle_day(f->lg, "weather-co", TOLL_LEDGER_OK);

    assert_int_equal(sqlite3_prepare_v2(toll_ledger_db(f->lg),
                                        "SELECT body FROM events WHERE type ="
                                        " 'settlement.created'", -1, &st,
                                        NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    body = json_loads((const char *) sqlite3_column_text(st, 0), 0, &jerr);
    sqlite3_finalize(st);

    assert_non_null(body);
    assert_str_field(body, "type", "settlement.created");
    assert_true(json_equal(json_object_get(body, "data"), s));

    json_decref(body);
    json_decref(s);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test_setup_teardown(test_reference_one_batch, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reference_210_batches, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_rounding_half_up_per_record,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_fee_per_provider, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_overlap_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_empty_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_period_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pay_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_balances_after_pay, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_gauges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_filters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_body, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
