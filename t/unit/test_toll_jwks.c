/*
 * Unit tests of lib/toll_jwks.c: the JWKS documents toll-settle accepts
 * and refuses before it publishes a set (docs/settle.md, "Key sets").
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "toll_jwks.h"


#define N2048  "wcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwQ"
#define N1024  "wcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcE"
#define X32    "ERERERERERERERERERERERERERERERERERERERERERE"

#define RSA(kid, extra)                                                      \
    "{\"kty\":\"RSA\",\"kid\":\"" kid "\",\"alg\":\"RS256\",\"n\":\""       \
    N2048 "\",\"e\":\"AQAB\"" extra "}"


static int
check(const char *doc, char **out)
{
    char  err[256];

    return toll_jwks_check(doc, strlen(doc), out, err, sizeof(err));
}


static void
test_accepted(void **state)
{
    char  *out;

    (void) state;

    assert_int_equal(check("{\"keys\":[" RSA("a", ",\"use\":\"sig\"") "]}",
                           &out), 0);
    /* only the members the workers read, sorted, compact */
    assert_non_null(strstr(out, "\"kid\":\"a\""));
    assert_null(strstr(out, "\"use\""));
    free(out);

    /* no alg: "use" says it signs; the kty gives the algorithm */
    assert_int_equal(check("{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
                           "\"kid\":\"e\",\"use\":\"sig\",\"x\":\"" X32
                           "\"}]}", &out), 0);
    assert_non_null(strstr(out, "\"alg\":\"EdDSA\""));
    free(out);

    /* an encryption key is left out, the signing one kept */
    assert_int_equal(check("{\"keys\":[" RSA("enc", ",\"use\":\"enc\"") ","
                           RSA("sig", "") "]}", &out), 0);
    assert_null(strstr(out, "\"enc\""));
    free(out);

    assert_int_equal(check("{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\","
                           "\"kid\":\"c\",\"alg\":\"ES256\",\"x\":\"" X32
                           "\",\"y\":\"" X32 "\"}]}", &out), 0);
    free(out);
}


static void
test_refused(void **state)
{
    size_t       i;
    char        *out;
    const char  *bad[] = {
        "",
        "not json",
        "[]",
        "{}",
        "{\"keys\":{}}",
        "{\"keys\":[]}",
        "{\"keys\":[1]}",
        /* only an encryption key: nothing to publish */
        "{\"keys\":[" RSA("a", ",\"use\":\"enc\"") "]}",
        /* a private member */
        "{\"keys\":[" RSA("a", ",\"d\":\"AQAB\"") "]}",
        /* a secret */
        "{\"keys\":[{\"kty\":\"oct\",\"kid\":\"h\",\"alg\":\"HS256\","
        "\"k\":\"" X32 "\"}]}",
        /* no kid, an empty kid, a kid not a string */
        "{\"keys\":[{\"kty\":\"RSA\",\"alg\":\"RS256\",\"n\":\"" N2048
        "\",\"e\":\"AQAB\"}]}",
        "{\"keys\":[" RSA("", "") "]}",
        "{\"keys\":[{\"kty\":\"RSA\",\"kid\":7,\"alg\":\"RS256\",\"n\":\""
        N2048 "\",\"e\":\"AQAB\"}]}",
        /* neither alg nor use */
        "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"a\",\"n\":\"" N2048
        "\",\"e\":\"AQAB\"}]}",
        /* alg not the kty's */
        "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"a\",\"alg\":\"ES256\",\"n\":\""
        N2048 "\",\"e\":\"AQAB\"}]}",
        "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"a\",\"alg\":\"none\",\"n\":\""
        N2048 "\",\"e\":\"AQAB\"}]}",
        /* a weak RSA key, a padded or odd-length modulus */
        "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"a\",\"alg\":\"RS256\",\"n\":\""
        N1024 "\",\"e\":\"AQAB\"}]}",
        "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"a\",\"alg\":\"RS256\",\"n\":\""
        N2048 "=\",\"e\":\"AQAB\"}]}",
        /* EC off P-256, a short point */
        "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-384\",\"kid\":\"c\","
        "\"alg\":\"ES256\",\"x\":\"" X32 "\",\"y\":\"" X32 "\"}]}",
        "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"c\","
        "\"alg\":\"ES256\",\"x\":\"AAAA\",\"y\":\"" X32 "\"}]}",
        /* a duplicate member */
        "{\"keys\":[" RSA("a", ",\"kid\":\"b\"") "]}",
        /* one broken key refuses the set */
        "{\"keys\":[" RSA("a", "") ",{\"kty\":\"RSA\",\"kid\":\"b\"}]}",
    };

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        out = (char *) 1;
        if (check(bad[i], &out) != -1) {
            fail_msg("accepted document %zu: %s", i, bad[i]);
        }

        assert_null(out);
    }
}


static void
test_too_many_keys(void **state)
{
    char    *doc, *out, *p;
    size_t   i, n;

    (void) state;

    for (n = TOLL_JWKS_KEYS_MAX; n <= TOLL_JWKS_KEYS_MAX + 1; n++) {
        doc = malloc(n * 512 + 16);
        if (doc == NULL) {
            fail_msg("out of memory");
            return;
        }

        p = doc + sprintf(doc, "{\"keys\":[");

        for (i = 0; i < n; i++) {
            p += sprintf(p, "%s" RSA("k%zu", ""), i ? "," : "", i);
        }

        strcpy(p, "]}");

        assert_int_equal(check(doc, &out), n > TOLL_JWKS_KEYS_MAX ? -1 : 0);
        free(out);
        free(doc);
    }
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepted),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_too_many_keys),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
