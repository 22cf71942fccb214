/*
 * Unit tests of a key record's scopes (lib/toll_key_record.c): the token
 * set, the list's bounds, and the field decoded or refused with the
 * record.  The module's toll_require, its JWT claims and tollctl's
 * --scopes all lean on these two checks.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "toll_key_record.h"


#define HASH  "0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789abcdef"


static void
record(toll_key_field_t f[TOLL_KEY_F_N], const char *scopes)
{
    size_t  i;

    for (i = 0; i < TOLL_KEY_F_N; i++) {
        f[i].data = NULL;
        f[i].len = 0;
    }

    f[TOLL_KEY_F_STATUS].data = "active";
    f[TOLL_KEY_F_SECRET].data = HASH;
    f[TOLL_KEY_F_OWNER].data = "acme";
    f[TOLL_KEY_F_SCOPES].data = scopes;

    for (i = 0; i < TOLL_KEY_F_N; i++) {
        f[i].len = f[i].data ? strlen(f[i].data) : 0;
    }
}


static void
test_scope_valid(void **state)
{
    char         buf[TOLL_SCOPE_LEN_MAX + 2];
    size_t       i;
    const char  *good[] = {
        "read", "read:users", "https://graph.example/.default",
        "api://x/Files.Read", "a+b@c~d*", "A-Z_0.9", "x"
    };
    const char  *bad[] = {
        "", "a b", "a,b", "a\"b", "a\\b", "a\tb", "<x>", "a;b", "a=b",
        "caf\xc3\xa9", "a\x7f"
    };

    (void) state;

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_true(toll_scope_valid(good[i], strlen(good[i])));
    }

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(toll_scope_valid(bad[i], strlen(bad[i])));
    }

    /* a NUL inside is not part of a name */
    assert_false(toll_scope_valid("a\0b", 3));

    memset(buf, 'a', sizeof(buf));
    assert_true(toll_scope_valid(buf, TOLL_SCOPE_LEN_MAX));
    assert_false(toll_scope_valid(buf, TOLL_SCOPE_LEN_MAX + 1));
}


static void
test_scopes_valid(void **state)
{
    char    buf[4 * 70];
    size_t  i, len;

    (void) state;

    assert_true(toll_scopes_valid("", 0, 4, 100));
    assert_true(toll_scopes_valid("a", 1, 4, 100));
    assert_true(toll_scopes_valid("a b:c d", 7, 4, 100));
    assert_false(toll_scopes_valid(" a", 2, 4, 100));
    assert_false(toll_scopes_valid("a ", 2, 4, 100));
    assert_false(toll_scopes_valid("a  b", 4, 4, 100));
    assert_false(toll_scopes_valid(" ", 1, 4, 100));
    assert_false(toll_scopes_valid("a,b", 3, 4, 100));

    /* the count and the length bounds, exactly */
    assert_true(toll_scopes_valid("a b c d", 7, 4, 100));
    assert_false(toll_scopes_valid("a b c d e", 9, 4, 100));
    assert_true(toll_scopes_valid("ab cd", 5, 4, 5));
    assert_false(toll_scopes_valid("ab cd", 5, 4, 4));

    len = 0;
    for (i = 0; i < 65; i++) {
        len += (size_t) sprintf(buf + len, i ? " s%zu" : "s%zu", i % 10);
    }

    assert_false(toll_scopes_valid(buf, len, TOLL_SCOPES_MAX,
                                   TOLL_SCOPES_LEN_MAX));
}


static void
test_record_scopes(void **state)
{
    const char          *why;
    toll_key_field_t     f[TOLL_KEY_F_N];
    toll_key_record_t    rec;
    size_t               i;
    const char          *bad[] = { " read", "read ", "read  write", "a\"b",
                                   "a,b", "read\twrite" };

    (void) state;

    /* absent and empty: none */
    record(f, NULL);
    assert_int_equal(toll_key_record_decode(f, &rec, &why),
                     TOLL_KEY_RECORD_FOUND);
    assert_null(rec.scopes);
    assert_int_equal(rec.scopes_len, 0);

    record(f, "");
    assert_int_equal(toll_key_record_decode(f, &rec, &why),
                     TOLL_KEY_RECORD_FOUND);
    assert_null(rec.scopes);

    record(f, "read write:all");
    assert_int_equal(toll_key_record_decode(f, &rec, &why),
                     TOLL_KEY_RECORD_FOUND);
    assert_true(rec.scopes == f[TOLL_KEY_F_SCOPES].data);
    assert_int_equal(rec.scopes_len, 14);

    /* a bad list refuses the whole key, as any broken rule does */
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why = NULL;
        record(f, bad[i]);
        assert_int_equal(toll_key_record_decode(f, &rec, &why),
                         TOLL_KEY_RECORD_INVALID);
        assert_non_null(why);
        assert_null(rec.scopes);
        assert_null(rec.owner);
    }
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scope_valid),
        cmocka_unit_test(test_scopes_valid),
        cmocka_unit_test(test_record_scopes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
