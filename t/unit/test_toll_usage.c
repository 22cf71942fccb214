/*
 * Unit tests of lib/toll_usage.c (the toll_usage answer, its JSON
 * strings, a usage hash's counts) and lib/toll_key_record.c (a key
 * record's fields).  The fuzz harnesses check properties over any input;
 * these pin the exact bytes and the decisions on named cases.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "toll_key_record.h"
#include "toll_usage.h"


#define LIT_S(s)              s, sizeof(s) - 1


static char *
answer(const char *buyer, const toll_usage_row_t *rows, size_t n,
    size_t *len)
{
    char                 *buf;
    toll_usage_counts_t   totals;

    assert_int_equal(toll_usage_totals(rows, n, &totals), 0);

    *len = toll_usage_json(NULL, (const unsigned char *) buyer,
                           strlen(buyer), &totals, rows, n, NULL, 0);
    buf = malloc(*len + 1);
    assert_non_null(buf);

    assert_int_equal(toll_usage_json(buf, (const unsigned char *) buyer,
                                     strlen(buyer), &totals, rows, n, NULL,
                                     0),
                     *len);
    buf[*len] = '\0';

    return buf;
}


/* the example of docs/directives.md#toll_usage, byte for byte */
static void
test_usage_json_example(void **state)
{
    char              *buf;
    size_t             len;
    toll_usage_row_t   row;

    (void) state;

    memset(&row, 0, sizeof(row));
    row.service = (const unsigned char *) "sentiment";
    row.service_len = 9;
    row.provider = (const unsigned char *) "acme";
    row.provider_len = 4;
    row.counts.calls = 210;
    row.counts.free_calls = 50;
    row.counts.paid_calls = 160;
    row.counts.amount_micros = 8000000;
    row.counts.units = 4200;

    buf = answer("alice", &row, 1, &len);

    assert_string_equal(buf,
        "{\"buyer\":\"alice\","
        "\"totals\":{\"calls\":210,\"free_calls\":50,\"paid_calls\":160,"
        "\"errors\":0,\"amount\":\"8\"},"
        "\"services\":[{\"service\":\"sentiment\",\"provider\":\"acme\","
        "\"calls\":210,\"free_calls\":50,\"free_remaining\":0,"
        "\"paid_calls\":160,\"errors\":0,\"amount\":\"8\",\"units\":4200}],"
        "\"balances\":[]}\n");
    assert_int_equal(len, strlen(buf));

    free(buf);
}


static void
test_usage_json_empty(void **state)
{
    char    *buf;
    size_t   len;

    (void) state;

    buf = answer("bob", NULL, 0, &len);
    assert_string_equal(buf,
        "{\"buyer\":\"bob\",\"totals\":{\"calls\":0,\"free_calls\":0,"
        "\"paid_calls\":0,\"errors\":0,\"amount\":\"0\"},\"services\":[],"
        "\"balances\":[]}\n");
    free(buf);
}


static void
test_usage_json_balances(void **state)
{
    char                  *buf;
    size_t                 len;
    toll_usage_counts_t    totals;
    toll_usage_balance_t   bal[2];

    (void) state;

    memset(&totals, 0, sizeof(totals));

    bal[0].currency = (const unsigned char *) "EUR";
    bal[0].currency_len = 3;
    bal[0].balance = 1500000;
    bal[0].available = 1000000;
    bal[0].held = 500000;
    bal[1].currency = (const unsigned char *) "USD";
    bal[1].currency_len = 3;
    bal[1].balance = -20000;
    bal[1].available = -20000;
    bal[1].held = 0;

    len = toll_usage_json(NULL, (const unsigned char *) "b", 1, &totals,
                          NULL, 0, bal, 2);
    buf = malloc(len + 1);
    assert_non_null(buf);
    assert_int_equal(toll_usage_json(buf, (const unsigned char *) "b", 1,
                                     &totals, NULL, 0, bal, 2),
                     len);
    buf[len] = '\0';

    assert_string_equal(buf,
        "{\"buyer\":\"b\",\"totals\":{\"calls\":0,\"free_calls\":0,"
        "\"paid_calls\":0,\"errors\":0,\"amount\":\"0\"},\"services\":[],"
        "\"balances\":[{\"currency\":\"EUR\",\"balance\":\"1.5\","
        "\"available\":\"1\",\"held\":\"0.5\"},{\"currency\":\"USD\","
        "\"balance\":\"-0.02\",\"available\":\"-0.02\",\"held\":\"0\"}]}\n");

    free(buf);
}


static void
test_usage_json_extremes(void **state)
{
    char              *buf;
    size_t             len;
    toll_usage_row_t   rows[2];

    (void) state;

    memset(rows, 0, sizeof(rows));
    rows[0].counts.calls = INT64_MIN;
    rows[0].counts.amount_micros = INT64_MIN;
    rows[0].free_remaining = INT64_MAX;
    rows[1].counts.errors = INT64_MAX;

    buf = answer("x", rows, 2, &len);
    assert_non_null(strstr(buf, "\"calls\":-9223372036854775808,"));
    assert_non_null(strstr(buf, "\"amount\":\"-9223372036854.775808\"}"));
    assert_non_null(strstr(buf, "\"free_remaining\":9223372036854775807,"));
    assert_non_null(strstr(buf, "\"errors\":9223372036854775807,"));
    assert_non_null(strstr(buf, "{\"service\":\"\",\"provider\":\"\","));
    free(buf);
}


static void
test_usage_totals_overflow(void **state)
{
    toll_usage_row_t     rows[2];
    toll_usage_counts_t  t;

    (void) state;

    memset(rows, 0, sizeof(rows));
    rows[0].counts.amount_micros = INT64_MAX;
    rows[1].counts.amount_micros = 1;
    assert_int_equal(toll_usage_totals(rows, 2, &t), -1);

    rows[1].counts.amount_micros = -1;
    rows[1].counts.calls = -3;
    assert_int_equal(toll_usage_totals(rows, 2, &t), 0);
    assert_true(t.amount_micros == INT64_MAX - 1 && t.calls == -3);
}


static void
check_escape(const char *in, size_t len, const char *want)
{
    char    buf[256];
    size_t  n;

    n = toll_json_escape(NULL, (const unsigned char *) in, len);
    assert_int_equal(n, strlen(want));
    assert_int_equal(toll_json_escape(buf, (const unsigned char *) in, len),
                     n);
    buf[n] = '\0';
    assert_string_equal(buf, want);
}


static void
test_json_escape(void **state)
{
    (void) state;

    check_escape("acme", 4, "acme");
    check_escape("a\"b\\c/", 6, "a\\\"b\\\\c/");
    check_escape("\n\t\x00\x1f\x7f", 5, "\\u000a\\u0009\\u0000\\u001f\x7f");
    /* é, €, U+1F600 as they are */
    check_escape("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9,
                 "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    /* a lone continuation, an overlong '/', a surrogate, above U+10FFFF */
    check_escape("\x80", 1, "\\ufffd");
    check_escape("\xc0\xaf", 2, "\\ufffd\\ufffd");
    check_escape("\xed\xa0\x80", 3, "\\ufffd\\ufffd\\ufffd");
    check_escape("\xf4\x90\x80\x80", 4, "\\ufffd\\ufffd\\ufffd\\ufffd");
    /* a sequence cut short at the end, then one cut by ASCII */
    check_escape("a\xe2\x82", 3, "a\\ufffd\\ufffd");
    check_escape("\xe2\x82z", 3, "\\ufffd\\ufffdz");
}


static void
test_count_parse(void **state)
{
    int64_t  v;
    size_t   i;

    static const char  *bad[] = {
        "", "-", "+1", " 1", "1 ", "1.5", "1e3", "0x10", "--1", "1-",
        "9223372036854775808", "-9223372036854775809",
        "99999999999999999999",
        /* an int64, but longer than Redis writes one: the claim script
           does not mirror it, so the drain must not post it */
        "000000000000000000001", "-0000000000000000000001"
    };

    (void) state;

    assert_int_equal(toll_usage_count_parse("0", 1, &v), 0);
    assert_true(v == 0);
    assert_int_equal(toll_usage_count_parse("-1", 2, &v), 0);
    assert_true(v == -1);
    assert_int_equal(toll_usage_count_parse("007", 3, &v), 0);
    assert_true(v == 7);
    assert_int_equal(toll_usage_count_parse(LIT_S("9223372036854775807"),
                                            &v), 0);
    assert_true(v == INT64_MAX);
    assert_int_equal(toll_usage_count_parse(LIT_S("-9223372036854775808"),
                                            &v), 0);
    assert_true(v == INT64_MIN);
    /* the length rules, not a NUL: "12" of "123" */
    assert_int_equal(toll_usage_count_parse("123", 2, &v), 0);
    assert_true(v == 12);

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = 42;
        assert_int_equal(toll_usage_count_parse(bad[i], strlen(bad[i]), &v),
                         -1);
        assert_true(v == 42);
    }
}


#define HASH  "0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789abcdef"


static void
record(toll_key_field_t f[TOLL_KEY_F_N], const char *status,
    const char *secret, const char *owner, const char *role,
    const char *plan, const char *rate, const char *expires)
{
    const char  *v[TOLL_KEY_F_N];
    size_t       i;

    v[TOLL_KEY_F_STATUS] = status;
    v[TOLL_KEY_F_SECRET] = secret;
    v[TOLL_KEY_F_OWNER] = owner;
    v[TOLL_KEY_F_ROLE] = role;
    v[TOLL_KEY_F_PLAN] = plan;
    v[TOLL_KEY_F_RATE_LIMIT] = rate;
    v[TOLL_KEY_F_EXPIRES_AT] = expires;
    v[TOLL_KEY_F_SCOPES] = NULL;

    for (i = 0; i < TOLL_KEY_F_N; i++) {
        f[i].data = v[i];
        f[i].len = v[i] ? strlen(v[i]) : 0;
    }
}


static void
test_key_record_found(void **state)
{
    const char         *why;
    toll_key_field_t    f[TOLL_KEY_F_N];
    toll_key_record_t   rec;

    (void) state;

    record(f, "active", HASH, "alice", "provider", "pro", "600",
           "1893456000");
    assert_int_equal(toll_key_record_decode(f, &rec, &why),
                     TOLL_KEY_RECORD_FOUND);
    assert_true(rec.owner == f[TOLL_KEY_F_OWNER].data && rec.owner_len == 5);
    assert_true(rec.plan_len == 3 && memcmp(rec.plan, "pro", 3) == 0);
    assert_int_equal(rec.role, TOLL_ROLE_PROVIDER);
    assert_true(rec.rate_limit == 600 && rec.expires_at == 1893456000);
    assert_false(rec.revoked);
    assert_int_equal(rec.secret_hash[0], 0x01);
    assert_int_equal(rec.secret_hash[31], 0xef);

    /* defaults: a buyer, no plan, no limit, never expires */
    record(f, "Active", HASH, "bob", NULL, NULL, NULL, NULL);
    assert_int_equal(toll_key_record_decode(f, &rec, &why),
                     TOLL_KEY_RECORD_FOUND);
    assert_int_equal(rec.role, TOLL_ROLE_BUYER);
    assert_true(rec.plan == NULL && rec.plan_len == 0);
    assert_true(rec.rate_limit == -1 && rec.expires_at == 0);
    /* anything but "active" is revoked */
    assert_true(rec.revoked);

    record(f, NULL, HASH, "bob", NULL, NULL, NULL, NULL);
    assert_int_equal(toll_key_record_decode(f, &rec, &why),
                     TOLL_KEY_RECORD_FOUND);
    assert_true(rec.revoked);
}


static void
test_key_record_none_and_invalid(void **state)
{
    size_t              i;
    const char         *why;
    toll_key_field_t    f[TOLL_KEY_F_N];
    toll_key_record_t   rec;

    static const char  *cases[][7] = {
        { "active", NULL, "a", NULL, NULL, NULL, NULL },
        { "active", "abc", "a", NULL, NULL, NULL, NULL },
        { "active", HASH "0", "a", NULL, NULL, NULL, NULL },
        { "active", HASH, NULL, NULL, NULL, NULL, NULL },
        { "active", HASH, "", NULL, NULL, NULL, NULL },
        { "active", HASH, "a b", NULL, NULL, NULL, NULL },
        { "active", HASH, "a", "root", NULL, NULL, NULL },
        { "active", HASH, "a", NULL, "p/q", NULL, NULL },
        { "active", HASH, "a", NULL, NULL, "-1", NULL },
        { "active", HASH, "a", NULL, NULL, "", NULL },
        { "active", HASH, "a", NULL, NULL, "9223372036854775808", NULL },
        { "active", HASH, "a", NULL, NULL, NULL, "1.5" },
        { "active", HASH, "a", NULL, NULL, NULL, " 1" },
    };

    (void) state;

    record(f, NULL, NULL, "alice", "buyer", NULL, NULL, NULL);
    assert_int_equal(toll_key_record_decode(f, &rec, &why),
                     TOLL_KEY_RECORD_NONE);

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        record(f, cases[i][0], cases[i][1], cases[i][2], cases[i][3],
               cases[i][4], cases[i][5], cases[i][6]);
        why = NULL;
        assert_int_equal(toll_key_record_decode(f, &rec, &why),
                         TOLL_KEY_RECORD_INVALID);
        assert_non_null(why);
        assert_true(rec.owner == NULL && rec.rate_limit == -1);
    }

    record(f, "active", HASH, "a", NULL, NULL, "9223372036854775807", NULL);
    assert_int_equal(toll_key_record_decode(f, &rec, &why),
                     TOLL_KEY_RECORD_FOUND);
    assert_true(rec.rate_limit == INT64_MAX);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_usage_json_example),
        cmocka_unit_test(test_usage_json_empty),
        cmocka_unit_test(test_usage_json_balances),
        cmocka_unit_test(test_usage_json_extremes),
        cmocka_unit_test(test_usage_totals_overflow),
        cmocka_unit_test(test_json_escape),
        cmocka_unit_test(test_count_parse),
        cmocka_unit_test(test_key_record_found),
        cmocka_unit_test(test_key_record_none_and_invalid),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
