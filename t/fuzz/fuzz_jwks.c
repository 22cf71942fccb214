/*
 * Fuzz toll-settle's check of a fetched JWKS (lib/toll_jwks.c): the body
 * an identity provider's URL answered, which toll does not control.
 *
 * Input: the body's bytes, in a buffer of their exact size (no NUL), so a
 * read past the end shows.  A document the check accepts must be what
 * the workers are promised: compact JSON of an object whose only member
 * is "keys", an array of 1 to 64 public keys, each with a kid and a kty
 * of RSA, EC or OKP, no private member, and accepted again as it is.
 */

#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "toll_jwks.h"


static void
check_accepted(const char *out)
{
    char        *again, err[256];
    size_t       i, n;
    json_t      *doc, *keys, *k, *kty;
    const char  *t;

    static const char  *private[] = { "d", "p", "q", "dp", "dq", "qi", "k",
                                      NULL };

    doc = json_loads(out, JSON_REJECT_DUPLICATES, NULL);
    assert(doc != NULL && json_is_object(doc));
    assert(json_object_size(doc) == 1);

    keys = json_object_get(doc, "keys");
    assert(json_is_array(keys));

    n = json_array_size(keys);
    assert(n >= 1 && n <= TOLL_JWKS_KEYS_MAX);

    for (i = 0; i < n; i++) {
        k = json_array_get(keys, i);
        assert(json_is_object(k));
        assert(json_is_string(json_object_get(k, "kid")));

        kty = json_object_get(k, "kty");
        assert(json_is_string(kty));
        t = json_string_value(kty);
        assert(strcmp(t, "RSA") == 0 || strcmp(t, "EC") == 0
               || strcmp(t, "OKP") == 0);

        for (size_t j = 0; private[j]; j++) {
            assert(json_object_get(k, private[j]) == NULL);
        }
    }

    json_decref(doc);

    /* what is published is accepted again, as it is */

    again = NULL;
    assert(toll_jwks_check(out, strlen(out), &again, err, sizeof(err)) == 0);
    assert(again != NULL && strcmp(again, out) == 0);
    free(again);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char  *body, *out, err[256];
    int    rc;

    body = malloc(size ? size : 1);
    if (body == NULL) {
        return 0;
    }

    memcpy(body, data, size);

    out = NULL;
    err[0] = '\0';

    rc = toll_jwks_check(body, size, &out, err, sizeof(err));

    if (rc == 0) {
        assert(out != NULL);
        check_accepted(out);
        free(out);

    } else {
        assert(rc == -1 && out == NULL);
        assert(err[0] != '\0' && memchr(err, '\0', sizeof(err)) != NULL);
    }

    free(body);

    return 0;
}
