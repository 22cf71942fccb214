/*
 * Unit tests of settle/toll_settle_webhook.c that need no receiver: the
 * signature against vectors computed with Python's hmac, the event bits,
 * and the start/stop paths that end before the thread (a missing ledger,
 * a file that is not one, no hooks).  Deliveries are tested end to end by
 * t/test_settle_webhooks.py.
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
#include <curl/curl.h>
#include <sqlite3.h>

#include "toll_ledger.h"
#include "toll_settle_webhook.h"


#define TEST_NELTS(a)         (sizeof(a) / sizeof((a)[0]))
#define TEST_TIMEOUT_MS       1000
#define TEST_PATH_LEN_MAX     64
#define LIT(s)                s, sizeof(s) - 1


typedef struct {
    const char       *secret;
    int64_t           t;
    const char       *body;
    size_t            body_len;
    const char       *expect;
} test_vector_t;


/* hmac.new(secret, f"{t}.".encode() + body, "sha256").hexdigest() */
static const test_vector_t  test_vectors[] = {
    { "whsec_test", 1764000000,
      LIT("{\"id\":\"evt_4f0c\",\"type\":\"settlement.created\","
      "\"created\":1764000000,\"data\":{}}"),
      "t=1764000000,v1="
      "3809dce5308de743e5c2e0e6ab0c40ee244e570fe754cd0bfb5c52e976c009f8" },
    { "whsec_test", 0, LIT(""),
      "t=0,v1="
      "a2fa7a43c6a1cf2e784eaf3327d65c65b3d2b790320ebed9aa5661bc42a8cccd" },
    { "k", -5, LIT("x"),
      "t=-5,v1="
      "bb37629728762e2c6ee7834ab2032390a78036f097a83c7e352a333cc28f5c2a" },
    /* a UTF-8 secret, a NUL inside the body, the largest t */
    { "whsec_\xc3\xa9", INT64_MAX, LIT("a\0b"),
      "t=9223372036854775807,v1="
      "1b0bcb2b5dc1648b57f0915c592234e3ef2fbc3d7e9366d01cf378c38cee1a57" },
    /* a key longer than SHA-256's block is hashed first; the smallest t */
    { "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"
      "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk", INT64_MIN, LIT(""),
      "t=-9223372036854775808,v1="
      "460412b4025409dff1a47af5cbdee0f08df93bbf9bd76c851595486137df55af" }
};


static void
test_sign_vectors(void **state)
{
    size_t  i;
    char    out[TOLL_SETTLE_SIGNATURE_MAX];

    (void) state;

    for (i = 0; i < TEST_NELTS(test_vectors); i++) {
        memset(out, 'x', sizeof(out));

        assert_int_equal(toll_settle_webhook_sign(test_vectors[i].secret,
                                                  test_vectors[i].t,
                                                  test_vectors[i].body,
                                                  test_vectors[i].body_len,
                                                  out, sizeof(out)), 0);
        assert_string_equal(out, test_vectors[i].expect);
        assert_true(strlen(out) < TOLL_SETTLE_SIGNATURE_MAX);
    }
}


/* the body is taken by its length, not up to a NUL */
static void
test_sign_length(void **state)
{
    char  a[TOLL_SETTLE_SIGNATURE_MAX], b[TOLL_SETTLE_SIGNATURE_MAX];

    (void) state;

    assert_int_equal(toll_settle_webhook_sign("s", 1, "abcdef", 3, a,
                                              sizeof(a)), 0);
    assert_int_equal(toll_settle_webhook_sign("s", 1, "abc", 3, b,
                                              sizeof(b)), 0);
    assert_string_equal(a, b);

    assert_int_equal(toll_settle_webhook_sign("s", 1, "abd", 3, b,
                                              sizeof(b)), 0);
    assert_string_not_equal(a, b);

    /* another secret, another t: another signature */
    assert_int_equal(toll_settle_webhook_sign("t", 1, "abc", 3, b,
                                              sizeof(b)), 0);
    assert_string_not_equal(a, b);

    assert_int_equal(toll_settle_webhook_sign("s", 2, "abc", 3, b,
                                              sizeof(b)), 0);
    assert_string_not_equal(a + 4, b + 4);
}


static void
test_sign_refuses(void **state)
{
    char  out[TOLL_SETTLE_SIGNATURE_MAX];

    (void) state;

    assert_int_equal(toll_settle_webhook_sign("s", 1, "a", 1, out,
                                              sizeof(out) - 1), -1);
    assert_int_equal(toll_settle_webhook_sign(NULL, 1, "a", 1, out,
                                              sizeof(out)), -1);
    assert_int_equal(toll_settle_webhook_sign("s", 1, NULL, 1, out,
                                              sizeof(out)), -1);
    assert_int_equal(toll_settle_webhook_sign("s", 1, "a", 1, NULL,
                                              sizeof(out)), -1);

    /* no body at all is an empty one */
    assert_int_equal(toll_settle_webhook_sign("whsec_test", 0, NULL, 0, out,
                                              sizeof(out)), 0);
    assert_string_equal(out, test_vectors[1].expect);
}


static void
test_event_bits(void **state)
{
    (void) state;

    assert_int_equal(toll_settle_event_bit(
                         TOLL_LEDGER_EVENT_SETTLEMENT_CREATED),
                     TOLL_SETTLE_EVENT_SETTLEMENT_CREATED);
    assert_int_equal(toll_settle_event_bit(
                         TOLL_LEDGER_EVENT_SETTLEMENT_COMPLETED),
                     TOLL_SETTLE_EVENT_SETTLEMENT_COMPLETED);
    assert_int_equal(toll_settle_event_bit(
                         TOLL_LEDGER_EVENT_FREE_TIER_EXHAUSTED),
                     TOLL_SETTLE_EVENT_FREE_TIER_EXHAUSTED);

    assert_int_equal(toll_settle_event_bit("settlement.created "), 0);
    assert_int_equal(toll_settle_event_bit("Settlement.created"), 0);
    assert_int_equal(toll_settle_event_bit("settlement"), 0);
    assert_int_equal(toll_settle_event_bit(""), 0);
    assert_int_equal(toll_settle_event_bit(NULL), 0);
}


/* no hooks: an object that does nothing, and no ledger is opened */
static void
test_start_no_hooks(void **state)
{
    char                     err[256];
    toll_settle_webhooks_t  *w;

    (void) state;

    assert_int_equal(toll_settle_webhooks_start("/nonexistent/ledger.db",
                                                NULL, 0, TEST_TIMEOUT_MS, 0,
                                                &w, err, sizeof(err)), 0);
    assert_non_null(w);

    toll_settle_webhooks_kick(w);
    assert_int_equal(toll_settle_webhooks_drain(w, 0), 0);
    toll_settle_webhooks_stop(w);

    toll_settle_webhooks_kick(NULL);
    toll_settle_webhooks_stop(NULL);
}


static void
test_start_refuses(void **state)
{
    int                      fd;
    char                     err[256], path[TEST_PATH_LEN_MAX];
    sqlite3                 *db;
    toll_settle_webhooks_t  *w;
    toll_settle_hook_t       hook = {
        "http://127.0.0.1:9/hook", "whsec_test",
        TOLL_SETTLE_EVENT_SETTLEMENT_CREATED
    };
    toll_settle_hook_t       bad = {
        "ftp://127.0.0.1/hook", "whsec_test",
        TOLL_SETTLE_EVENT_SETTLEMENT_CREATED
    };

    (void) state;

    /* no such file: not created */
    w = (toll_settle_webhooks_t *) &w;
    err[0] = '\0';
    assert_int_equal(toll_settle_webhooks_start("/nonexistent/ledger.db",
                                                &hook, 1, TEST_TIMEOUT_MS,
                                                0, &w, err, sizeof(err)), -1);
    assert_null(w);
    assert_non_null(strstr(err, "/nonexistent/ledger.db"));

    /* an SQLite file without the ledger's tables */
    snprintf(path, sizeof(path), "/tmp/test_settle_webhook.XXXXXX");
    fd = mkstemp(path);
    assert_true(fd != -1);
    close(fd);

    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE t (a)", NULL, NULL,
                                  NULL), SQLITE_OK);
    sqlite3_close(db);

    err[0] = '\0';
    assert_int_equal(toll_settle_webhooks_start(path, &hook, 1,
                                                TEST_TIMEOUT_MS, 0, &w, err,
                                                sizeof(err)), -1);
    assert_null(w);
    assert_non_null(strstr(err, "not a toll ledger"));

    /* a URL of another scheme, a timeout out of range */
    assert_int_equal(toll_settle_webhooks_start(path, &bad, 1,
                                                TEST_TIMEOUT_MS, 0, &w, err,
                                                sizeof(err)), -1);
    assert_null(w);
    assert_int_equal(toll_settle_webhooks_start(path, &hook, 1, 0, 0, &w,
                                                err, sizeof(err)), -1);
    assert_null(w);

    unlink(path);
}


int
main(void)
{
    int  rc;

    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_sign_vectors),
        cmocka_unit_test(test_sign_length),
        cmocka_unit_test(test_sign_refuses),
        cmocka_unit_test(test_event_bits),
        cmocka_unit_test(test_start_no_hooks),
        cmocka_unit_test(test_start_refuses),
    };

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        return 1;
    }

    rc = cmocka_run_group_tests(tests, NULL, NULL);

    curl_global_cleanup();

    return rc;
}
