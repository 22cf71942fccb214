/*
 * Unit tests of lib/toll_names.c: the Redis names every program builds
 * and reads.  Malformed names first; then the round trip of what the
 * builders write; then the fields of a usage hash.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "toll_names.h"


#define LIT_S(s)              s, sizeof(s) - 1

#define BATCH  "0123456789abcdef0123456789abcdef"


static void
test_usage_name_refused(void **state)
{
    size_t        i, max;
    char         *p;
    toll_name_t   n;
    char          big[TOLL_NAME_LEN_MAX + 16];
    char          buyer[TOLL_NAME_BUYER_LEN_MAX + 1];
    static const struct { const char *s; size_t len; } bad[] = {
        { LIT_S("") },
        { LIT_S("toll:usage:{") },
        { LIT_S("toll:usage:{}:20260101") },               /* no buyer */
        { LIT_S("toll:usage:{a}:2026010") },               /* 7 digits */
        { LIT_S("toll:usage:{a}:2026010x") },
        { LIT_S("toll:usage:{a}20260101") },
        { LIT_S("toll:usage:{a}:20260101:") },
        { LIT_S("toll:usage:{a}:20260101:drainedx") },
        { LIT_S("toll:usage:{a}:flushes") },
        { LIT_S("toll:usage:{a}:days") },
        { LIT_S("toll:usage:index") },
        { LIT_S("toll:usage:{a\nb}:20260101") },           /* a log line */
        { LIT_S("toll:usage:{a\0b}:20260101") },           /* a C string */
        { LIT_S("toll:usage:{a\nb}:20260101:drained") },
        { LIT_S("toll:drain:{a}:20260101") },
        { LIT_S("Toll:usage:{a}:20260101") },
    };

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(toll_name_usage_parse(bad[i].s, bad[i].len, &n), -1);
    }

    /*
     * The longest buyer, and one byte more; what the drain makes of the
     * longest (its mirror, its claim) is taken too.
     */
    max = TOLL_NAME_BUYER_LEN_MAX;
    memset(buyer, 'b', sizeof(buyer));

    p = toll_name_usage(big, buyer, max, "20260101");
    assert_int_equal(p - big, 1024);
    assert_int_equal(toll_name_usage_parse(big, p - big, &n), 0);
    assert_int_equal(n.buyer_len, max);

    memcpy(p, TOLL_NAME_USAGE_MIRROR, toll_name_len(TOLL_NAME_USAGE_MIRROR));
    assert_int_equal(toll_name_usage_parse(big, p - big
                         + toll_name_len(TOLL_NAME_USAGE_MIRROR), &n), 0);
    assert_int_equal(n.mirror, 1);

    p = toll_name_claim(big, buyer, max, "20260101", BATCH);
    assert_int_equal(p - big, TOLL_NAME_LEN_MAX);
    assert_int_equal(toll_name_claim_parse(big, p - big, &n), 0);
    assert_int_equal(n.buyer_len, max);

    p = toll_name_usage(big, buyer, max + 1, "20260101");
    assert_int_equal(toll_name_usage_parse(big, p - big, &n), -1);
    p = toll_name_claim(big, buyer, max + 1, "20260101", BATCH);
    assert_int_equal(toll_name_claim_parse(big, p - big, &n), -1);
}


static void
test_balance_name(void **state)
{
    char         name[TOLL_NAME_LEN_MAX + 32], *end;
    size_t       blen;
    const char  *b;

    (void) state;

    end = toll_name_balance(name, "a:b}", 4, "");
    assert_int_equal(toll_name_balance_parse(name, end - name, &b, &blen),
                     0);
    assert_int_equal(blen, 4);
    assert_memory_equal(b, "a:b}", 4);

    /* not a balance hash: its refs, an empty buyer, a bad byte */
    end = toll_name_balance(name, "a", 1, TOLL_NAME_BALANCE_REFS);
    assert_int_equal(toll_name_balance_parse(name, end - name, &b, &blen),
                     -1);
    assert_int_equal(toll_name_balance_parse("toll:balance:{}", 15, &b,
                                             &blen), -1);
    assert_int_equal(toll_name_balance_parse("toll:balance:{a\nb}", 18,
                                             &b, &blen), -1);
    assert_int_equal(toll_name_balance_parse("toll:usage:{a}", 14, &b,
                                             &blen), -1);
}


static void
test_claim_name_refused(void **state)
{
    size_t        i;
    toll_name_t   n;
    static const struct { const char *s; size_t len; } bad[] = {
        { LIT_S("") },
        { LIT_S("toll:drain:{}:20260101:" BATCH) },
        { LIT_S("toll:drain:{a}:20260101:" BATCH "0") },
        { LIT_S("toll:drain:{a}:20260101:0123456789ABCDEF0123456789abcdef") },
        { LIT_S("toll:drain:{a}:20260101:0123456789abcdef0123456789abcde") },
        { LIT_S("toll:drain:{a}:2026010x:" BATCH) },
        { LIT_S("toll:drain:{a}:20260101;" BATCH) },
        { LIT_S("toll:drain:{a}20260101::" BATCH) },
        { LIT_S("toll:drain:{a\nb}:20260101:" BATCH) },
        { LIT_S("toll:drain:{a\0b}:20260101:" BATCH) },
        { LIT_S("toll:usage:{a}:20260101:" BATCH) },
        { LIT_S("toll:drain:open") },
    };

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(toll_name_claim_parse(bad[i].s, bad[i].len, &n), -1);
    }
}


static void
test_names_round_trip(void **state)
{
    char          buf[TOLL_NAME_CLAIM_LEN(16) + 1], *p;
    toll_name_t   n;
    static const char  *buyers[] = { "acme", "a:b", ":}", "{x}:20260101",
                                     "-", "\xff\x01" };
    size_t        i, blen;

    (void) state;

    for (i = 0; i < sizeof(buyers) / sizeof(buyers[0]); i++) {
        blen = strlen(buyers[i]);

        p = toll_name_usage(buf, buyers[i], blen, "20261202");
        assert_true((size_t) (p - buf) + toll_name_len(TOLL_NAME_USAGE_MIRROR)
                    == TOLL_NAME_USAGE_LEN(blen));
        assert_int_equal(toll_name_usage_parse(buf, p - buf, &n), 0);
        assert_int_equal(n.mirror, 0);
        assert_int_equal(n.buyer_len, blen);
        assert_memory_equal(n.buyer, buyers[i], blen);
        assert_string_equal(n.day, "20261202");

        memcpy(p, TOLL_NAME_USAGE_MIRROR,
               toll_name_len(TOLL_NAME_USAGE_MIRROR));
        p += toll_name_len(TOLL_NAME_USAGE_MIRROR);
        assert_int_equal(toll_name_usage_parse(buf, p - buf, &n), 0);
        assert_int_equal(n.mirror, 1);
        assert_int_equal(n.buyer_len, blen);
        assert_string_equal(n.day, "20261202");

        p = toll_name_claim(buf, buyers[i], blen, "20261202", BATCH);
        assert_true((size_t) (p - buf) == TOLL_NAME_CLAIM_LEN(blen));
        assert_int_equal(toll_name_claim_parse(buf, p - buf, &n), 0);
        assert_int_equal(n.buyer_len, blen);
        assert_memory_equal(n.buyer, buyers[i], blen);
        assert_string_equal(n.day, "20261202");
        assert_string_equal(n.batch, BATCH);
    }

    p = toll_name_buyer(buf, LIT_S("acme"), TOLL_NAME_USAGE_DAYS);
    assert_memory_equal(buf, "toll:usage:{acme}:days", p - buf);
    assert_int_equal(p - buf, sizeof("toll:usage:{acme}:days") - 1);

    p = toll_name_tagged(buf, TOLL_NAME_LIMIT_PREFIX, LIT_S("k:tk_1"));
    assert_memory_equal(buf, "toll:rl:{k:tk_1}", p - buf);
    assert_int_equal(p - buf, sizeof("toll:rl:{k:tk_1}") - 1);
}


static void
test_usage_fields(void **state)
{
    size_t  slen;

    (void) state;

    assert_int_equal(toll_usage_field_parse(LIT_S("weather:calls"), &slen),
                     TOLL_USAGE_CALLS);
    assert_int_equal(slen, 7);
    assert_int_equal(toll_usage_field_parse(LIT_S("a:b:amount_micros"),
                                            &slen),
                     TOLL_USAGE_AMOUNT);
    assert_int_equal(slen, 3);
    assert_int_equal(toll_usage_field_parse(LIT_S("w:latency_ms"), &slen),
                     TOLL_USAGE_LATENCY);
    assert_int_equal(toll_usage_field_parse(LIT_S("w:provider"), &slen),
                     TOLL_USAGE_PROVIDER);

    assert_int_equal(toll_usage_field_parse(LIT_S(":calls"), &slen), -1);
    assert_int_equal(toll_usage_field_parse(LIT_S("calls"), &slen), -1);
    assert_int_equal(toll_usage_field_parse(LIT_S("w:call"), &slen), -1);
    assert_int_equal(toll_usage_field_parse(LIT_S("w:calls "), &slen), -1);
    assert_int_equal(toll_usage_field_parse(LIT_S("w:"), &slen), -1);
    assert_int_equal(toll_usage_field_parse(LIT_S(""), &slen), -1);
}


static void
test_name_text(void **state)
{
    char  out[TOLL_NAME_TEXT_MAX], in[600];

    (void) state;

    toll_name_text(out, LIT_S("toll:usage:{a\nb\0c\\\xff}:1"));
    assert_string_equal(out, "toll:usage:{a\\x0ab\\x00c\\x5c\\xff}:1");

    memset(in, 'x', sizeof(in));
    toll_name_text(out, in, sizeof(in));
    assert_int_equal(strlen(out), TOLL_NAME_TEXT_MAX - 1 - 3);
    assert_string_equal(out + strlen(out) - 3, "...");

    memset(in, '\n', sizeof(in));
    toll_name_text(out, in, sizeof(in));
    assert_true(strlen(out) < TOLL_NAME_TEXT_MAX);
    assert_string_equal(out + strlen(out) - 3, "...");

    toll_name_text(out, in, 0);
    assert_string_equal(out, "");
}


/*
 * A buyer whose first byte is '}' ends the names' hash tag empty: every
 * reader refuses it, as the writers' toll_owner_valid() does.  The
 * period hashes of the caps are the cap hash and a suffix: one tag.
 */
static void
test_buyer_hash_tag(void **state)
{
    char         name[TOLL_NAME_LEN_MAX + 32], *end;
    size_t       blen;
    const char  *b;
    toll_name_t  n;

    (void) state;

    assert_false(toll_name_buyer_valid("}", 1));
    assert_false(toll_name_buyer_valid("}acme", 5));
    assert_false(toll_name_buyer_valid("}{a}", 4));
    assert_true(toll_name_buyer_valid("{", 1));
    assert_true(toll_name_buyer_valid("a}", 2));
    assert_true(toll_name_buyer_valid("a{b}c", 5));

    end = toll_name_usage(name, "}a", 2, "20260101");
    assert_int_equal(toll_name_usage_parse(name, end - name, &n), -1);
    assert_int_equal(toll_name_balance_parse("toll:balance:{}a}", 17, &b,
                                             &blen), -1);

    end = toll_name_usage(name, "{a", 2, "20260101");
    assert_int_equal(toll_name_usage_parse(name, end - name, &n), 0);
    assert_int_equal(n.buyer_len, 2);

    end = toll_name_cap_period(name, "a}b", 3, 1, "20260103");
    *end = '\0';
    assert_string_equal(name, "toll:cap:{a}b}:m20260103");
    end = toll_name_cap_period(name, "a", 1, 0, "20260103");
    *end = '\0';
    assert_string_equal(name, "toll:cap:{a}:d20260103");
    assert_true((size_t) (end - name) <= TOLL_NAME_CAP_LEN(1));
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_usage_name_refused),
        cmocka_unit_test(test_claim_name_refused),
        cmocka_unit_test(test_balance_name),
        cmocka_unit_test(test_names_round_trip),
        cmocka_unit_test(test_usage_fields),
        cmocka_unit_test(test_name_text),
        cmocka_unit_test(test_buyer_hash_tag),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
