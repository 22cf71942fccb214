/*
 * Unit tests of lib/toll_key.c's imported one-part keys (toll_opaque_*)
 * and of the Authorization header's token (toll_bearer_token).
 *
 * Inputs go in with explicit lengths, so that NUL bytes and buffers
 * longer than the token are tested too.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define OPENSSL_SUPPRESS_DEPRECATED

#include <openssl/sha.h>

#include "toll_key.h"


#define TEST_OPAQUE   "test_sk_4eC39HqLyjWDarjtT1zdp7dc"

#define TEST_NELTS(a) (sizeof(a) / sizeof((a)[0]))


static void
test_opaque_refused(void **state)
{
    size_t                i;
    toll_token_t          tok;
    unsigned char         id[TOLL_OPAQUE_ID_LEN];
    unsigned char         buf[TOLL_OPAQUE_LEN_MAX + 2];

    static const char    *bad[] = {
        "",
        "test_sk_short",                          /* 13 < 20 */
        "test_sk_4eC39HqLyjWDarjt:T1zdp7dc",      /* a two-part token */
        "test_sk_4eC39HqLy.jWDarjtT1zdp7dc",      /* a JWT's dot */
        "test_sk_4eC39HqLyjWDarjtT1zdp7d=",       /* padding */
        "test_sk_4eC39HqLyjWDarjtT1zdp7d+",
        "test_sk_4eC39HqLyjWDarjtT1zdp7d/",
        "test_sk_4eC39HqLyjWDa rjtT1zdp7dc",
        "test_sk_4eC39HqLyjWDarjtT1zdp7dc\r\n",
        "test_sk_4eC39HqLyjWDarjtT1zdp%3A",
        "test_sk_4eC39HqLyjWDarjtT1zdp7d\xc3\xa9",
    };

    (void) state;

    for (i = 0; i < TEST_NELTS(bad); i++) {
        assert_int_equal(toll_opaque_parse((const unsigned char *) bad[i],
                                           strlen(bad[i]), id, &tok),
                         TOLL_CRED_MALFORMED);
    }

    /* a NUL inside */
    memcpy(buf, TEST_OPAQUE, sizeof(TEST_OPAQUE));
    buf[10] = '\0';
    assert_int_equal(toll_opaque_parse(buf, sizeof(TEST_OPAQUE) - 1, id,
                                       &tok),
                     TOLL_CRED_MALFORMED);

    /* one character over the most */
    memset(buf, 'a', sizeof(buf));
    assert_int_equal(toll_opaque_parse(buf, TOLL_OPAQUE_LEN_MAX + 1, id,
                                       &tok),
                     TOLL_CRED_MALFORMED);

    assert_int_equal(toll_opaque_parse(NULL, 0, id, &tok),
                     TOLL_CRED_MALFORMED);
}


static void
test_opaque_bounds(void **state)
{
    toll_token_t   tok;
    unsigned char  id[TOLL_OPAQUE_ID_LEN];
    unsigned char  buf[TOLL_OPAQUE_LEN_MAX];

    (void) state;

    memset(buf, 'a', sizeof(buf));

    assert_int_equal(toll_opaque_parse(buf, TOLL_OPAQUE_LEN_MIN - 1, id,
                                       &tok),
                     TOLL_CRED_MALFORMED);
    assert_int_equal(toll_opaque_parse(buf, TOLL_OPAQUE_LEN_MIN, id, &tok),
                     TOLL_CRED_OK);
    assert_int_equal(toll_opaque_parse(buf, TOLL_OPAQUE_LEN_MAX, id, &tok),
                     TOLL_CRED_OK);
}


static void
test_opaque_id(void **state)
{
    size_t          i;
    SHA256_CTX      sha;
    toll_token_t    tok;
    unsigned char   id[TOLL_OPAQUE_ID_LEN], md[SHA256_DIGEST_LENGTH];
    char            hex[2 * TOLL_SECRET_HASH_LEN];

    (void) state;

    assert_int_equal(toll_opaque_parse((const unsigned char *) TEST_OPAQUE,
                                       sizeof(TEST_OPAQUE) - 1, id, &tok),
                     TOLL_CRED_OK);

    /* the secret is the whole token, the id lives in the caller's buffer */
    assert_ptr_equal(tok.secret, TEST_OPAQUE);
    assert_int_equal(tok.secret_len, sizeof(TEST_OPAQUE) - 1);
    assert_ptr_equal(tok.key_id, id);
    assert_int_equal(tok.key_id_len, TOLL_OPAQUE_ID_LEN);
    assert_true(toll_key_id_valid(tok.key_id, tok.key_id_len));
    assert_memory_equal(id, "ik_", 3);

    for (i = 3; i < TOLL_OPAQUE_ID_LEN; i++) {
        assert_non_null(strchr("0123456789abcdef", id[i]));
    }

    /* labelled: the id is not a part of the stored hash of the token */

    SHA256_Init(&sha);
    SHA256_Update(&sha, TEST_OPAQUE, sizeof(TEST_OPAQUE) - 1);
    SHA256_Final(md, &sha);
    toll_hex_encode(md, sizeof(md), hex);

    assert_memory_not_equal(id + 3, hex, TOLL_OPAQUE_ID_LEN - 3);

    SHA256_Init(&sha);
    SHA256_Update(&sha, TOLL_OPAQUE_ID_LABEL,
                  sizeof(TOLL_OPAQUE_ID_LABEL) - 1);
    SHA256_Update(&sha, TEST_OPAQUE, sizeof(TEST_OPAQUE) - 1);
    SHA256_Final(md, &sha);
    toll_hex_encode(md, TOLL_OPAQUE_ID_HASH_BYTES, hex);

    assert_memory_equal(id + 3, hex, TOLL_OPAQUE_ID_LEN - 3);
}


static void
test_opaque_ids_differ(void **state)
{
    toll_token_t   tok;
    unsigned char  a[TOLL_OPAQUE_ID_LEN], b[TOLL_OPAQUE_ID_LEN];
    unsigned char  buf[] = TEST_OPAQUE;

    (void) state;

    assert_int_equal(toll_opaque_parse(buf, sizeof(buf) - 1, a, &tok),
                     TOLL_CRED_OK);

    buf[sizeof(buf) - 2] ^= 1;   /* 'c' and 'b': both valid */

    assert_int_equal(toll_opaque_parse(buf, sizeof(buf) - 1, b, &tok),
                     TOLL_CRED_OK);
    assert_memory_not_equal(a, b, TOLL_OPAQUE_ID_LEN);
}


static void
test_bearer_token(void **state)
{
    size_t                len;
    const unsigned char  *t;

    (void) state;

#define BT(s)  toll_bearer_token((const unsigned char *) s, sizeof(s) - 1,   \
                                 &t, &len)

    assert_int_equal(BT("Bearer " TEST_OPAQUE), TOLL_CRED_OK);
    assert_int_equal(len, sizeof(TEST_OPAQUE) - 1);
    assert_memory_equal(t, TEST_OPAQUE, len);

    assert_int_equal(BT("bEARER \t " TEST_OPAQUE), TOLL_CRED_OK);
    assert_memory_equal(t, TEST_OPAQUE, len);

    assert_int_equal(BT("Bearer"), TOLL_CRED_MALFORMED);
    assert_int_equal(BT("Bearer" TEST_OPAQUE), TOLL_CRED_MALFORMED);
    assert_int_equal(BT("Basic " TEST_OPAQUE), TOLL_CRED_MALFORMED);
    assert_int_equal(BT(""), TOLL_CRED_MALFORMED);

    /* blanks only: an empty token, which the parsers then refuse */
    assert_int_equal(BT("Bearer   "), TOLL_CRED_OK);
    assert_int_equal(len, 0);

#undef BT
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opaque_refused),
        cmocka_unit_test(test_opaque_bounds),
        cmocka_unit_test(test_opaque_id),
        cmocka_unit_test(test_opaque_ids_differ),
        cmocka_unit_test(test_bearer_token),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
