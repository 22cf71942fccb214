/*
 * toll: a JWKS document checked before toll-settle publishes it
 * (lib/toll_jwks.h).  Pure: no I/O, so the cmocka tests take it as it is.
 */

#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "toll_jwks.h"


typedef struct {
    const char                 *kty;
    const char                 *alg;
    const char                 *crv;
} toll_jwks_kind_t;


static json_t *toll_jwks_key(json_t *jwk, size_t i, char *err,
    size_t err_size);
static int toll_jwks_b64(json_t *v, size_t min, size_t max);


/* what each kind of key must be; a key of any other is refused */
static const toll_jwks_kind_t  toll_jwks_kinds[] = {
    { "RSA", "RS256", NULL },
    { "EC",  "ES256", "P-256" },
    { "OKP", "EdDSA", "Ed25519" },
};

/* members a public key never has: a document with one leaks a secret */
static const char  *toll_jwks_private[] = {
    "d", "p", "q", "dp", "dq", "qi", "oth", "k", NULL
};



int
toll_jwks_check(const char *body, size_t len, char **out, char *err,
    size_t err_size)
{
    size_t        i;
    json_t       *doc, *list, *keys, *key;
    json_error_t  jerr;

    *out = NULL;

    doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (doc == NULL) {
        snprintf(err, err_size, "not JSON: line %d: %s", jerr.line,
                 jerr.text);
        return -1;
    }

    keys = json_array();
    list = json_object_get(doc, "keys");

    if (!json_is_object(doc) || !json_is_array(list)
        || json_array_size(list) == 0
        || json_array_size(list) > TOLL_JWKS_KEYS_MAX)
    {
        snprintf(err, err_size, "not an object with a \"keys\" array of "
                 "1 to %d keys", TOLL_JWKS_KEYS_MAX);
        goto failed;
    }

    for (i = 0; i < json_array_size(list); i++) {
        err[0] = '\0';
        key = toll_jwks_key(json_array_get(list, i), i, err,
                                   err_size);
        if (key == NULL) {
            if (err[0] != '\0') {
                goto failed;
            }

            continue;       /* an encryption key: not for us */
        }

        if (keys == NULL || json_array_append_new(keys, key) != 0) {
            snprintf(err, err_size, "out of memory");
            goto failed;
        }
    }

    if (json_array_size(keys) == 0) {
        snprintf(err, err_size, "no signing key");
        goto failed;
    }

    json_decref(doc);

    doc = json_pack("{so}", "keys", keys);
    if (doc != NULL) {
        *out = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    }

    json_decref(doc);

    if (*out == NULL) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }

    return 0;

failed:

    json_decref(keys);
    json_decref(doc);

    return -1;
}


/*
 * Key i as it is published: only the members the workers read.  NULL
 * with err empty: a key to leave out; with err set: the document is
 * refused, since a set with a broken key is not the provider's set.
 */
static json_t *
toll_jwks_key(json_t *jwk, size_t i, char *err, size_t err_size)
{
    size_t                          k, kid_len;
    json_t                         *v, *kid, *alg, *use;
    const char                     *kty;
    const toll_jwks_kind_t  *kind;

    if (!json_is_object(jwk)) {
        snprintf(err, err_size, "key %zu is not an object", i);
        return NULL;
    }

    for (k = 0; toll_jwks_private[k] != NULL; k++) {
        if (json_object_get(jwk, toll_jwks_private[k]) != NULL) {
            snprintf(err, err_size, "key %zu has a private member \"%s\"",
                     i, toll_jwks_private[k]);
            return NULL;
        }
    }

    use = json_object_get(jwk, "use");
    if (use != NULL && !json_is_string(use)) {
        snprintf(err, err_size, "key %zu has a \"use\" not a string", i);
        return NULL;
    }

    if (use != NULL && strcmp(json_string_value(use), "sig") != 0) {
        return NULL;
    }

    kid = json_object_get(jwk, "kid");
    kid_len = json_is_string(kid) ? json_string_length(kid) : 0;
    v = json_object_get(jwk, "kty");
    alg = json_object_get(jwk, "alg");

    if (kid_len == 0 || kid_len > TOLL_JWKS_KID_LEN_MAX
        || strlen(json_string_value(kid)) != kid_len
        || !json_is_string(v) || (alg != NULL && !json_is_string(alg))
        || (alg == NULL && use == NULL))
    {
        snprintf(err, err_size, "key %zu lacks a \"kid\" (1 to %d bytes), "
                 "a \"kty\", or an \"alg\" or \"use\"", i,
                 TOLL_JWKS_KID_LEN_MAX);
        return NULL;
    }

    kty = json_string_value(v);
    kind = NULL;

    for (k = 0; k < sizeof(toll_jwks_kinds)
                    / sizeof(toll_jwks_kinds[0]); k++)
    {
        if (strcmp(kty, toll_jwks_kinds[k].kty) == 0) {
            kind = &toll_jwks_kinds[k];
        }
    }

    if (kind == NULL
        || (alg != NULL && strcmp(json_string_value(alg), kind->alg) != 0))
    {
        snprintf(err, err_size, "key %zu is not RSA with RS256, EC with "
                 "ES256 or OKP with EdDSA", i);
        return NULL;
    }

    if (kind->crv != NULL) {
        v = json_object_get(jwk, "crv");

        if (!json_is_string(v) || strcmp(json_string_value(v), kind->crv)
                                  != 0
            || !toll_jwks_b64(json_object_get(jwk, "x"), 43, 43)
            || (kind->kty[0] == 'E'
                && !toll_jwks_b64(json_object_get(jwk, "y"), 43, 43)))
        {
            snprintf(err, err_size, "key %zu is not a valid %s key", i,
                     kind->alg);
            return NULL;
        }

        return json_pack("{sOsssssOsOsO*}", "kid", kid, "kty", kind->kty,
                         "alg", kind->alg, "crv", v,
                         "x", json_object_get(jwk, "x"),
                         "y", json_object_get(jwk, "y"));
    }

    /* 2048 to 8192 bits: 342 to 1366 base64url digits; e: 4 bytes */

    if (!toll_jwks_b64(json_object_get(jwk, "n"), 342, 1366)
        || !toll_jwks_b64(json_object_get(jwk, "e"), 1, 6))
    {
        snprintf(err, err_size, "key %zu is not an RSA key of 2048 to "
                 "8192 bits", i);
        return NULL;
    }

    return json_pack("{sOsssssOsO}", "kid", kid, "kty", kind->kty,
                     "alg", kind->alg, "n", json_object_get(jwk, "n"),
                     "e", json_object_get(jwk, "e"));
}


/* a string of min to max base64url digits, unpadded */
static int
toll_jwks_b64(json_t *v, size_t min, size_t max)
{
    size_t       i, len;
    const char  *s;

    if (!json_is_string(v)) {
        return 0;
    }

    s = json_string_value(v);
    len = json_string_length(v);

    if (len < min || len > max || len % 4 == 1) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')
              || (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_'))
        {
            return 0;
        }
    }

    return 1;
}
