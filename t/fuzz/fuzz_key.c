/*
 * Fuzz lib/toll_key.c: the credential parsers (a raw token and an
 * Authorization header value), the name and hex rules the key record
 * decoder uses, and the Redis name of a key.
 *
 * Beyond "no crash": what a parser accepts must satisfy the rules it
 * promises (spans inside the input, both halves valid), so that a caller
 * can trust an OK without checking again.
 */

#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "toll_key.h"


static void
fuzz_token_check(const uint8_t *data, size_t size, const toll_token_t *tok)
{
    assert(tok->key_id >= data && tok->key_id + tok->key_id_len
                                  <= data + size);
    assert(tok->secret >= data && tok->secret + tok->secret_len
                                  <= data + size);
    assert(toll_key_id_valid(tok->key_id, tok->key_id_len));
    assert(toll_secret_valid(tok->secret, tok->secret_len));
    assert(tok->key_id + tok->key_id_len < tok->secret);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int             role;
    char            name[TOLL_REDIS_KEY_NAME_MAX + 1];
    char           *hex;
    size_t          len, n;
    uint8_t        *copy;
    unsigned char   bin[TOLL_SECRET_HASH_LEN], again[TOLL_SECRET_HASH_LEN];
    toll_token_t    tok;

    /* a heap copy of exactly size bytes: ASan sees a read past the end */
    copy = malloc(size ? size : 1);
    if (copy == NULL) {
        return 0;
    }
    memcpy(copy, data, size);

    if (toll_token_parse(copy, size, &tok) == TOLL_CRED_OK) {
        fuzz_token_check(copy, size, &tok);
        assert(size == tok.key_id_len + 1 + tok.secret_len);
    }

    if (toll_bearer_parse(copy, size, &tok) == TOLL_CRED_OK) {
        fuzz_token_check(copy, size, &tok);
        /* nothing after the token */
        assert(tok.secret + tok.secret_len == copy + size);
    }

    (void) toll_owner_valid(copy, size);
    (void) toll_plan_valid(copy, size);

    len = toll_key_redis_name(copy, size, name);
    if (len != 0) {
        assert(toll_key_id_valid(copy, size));
        assert(len <= TOLL_REDIS_KEY_NAME_MAX && name[len] == '\0');
        assert(len == toll_name_len(TOLL_NAME_KEY_PREFIX) + size
                      + toll_name_len(TOLL_NAME_TAG_END));
    } else {
        assert(!toll_key_id_valid(copy, size));
    }

    role = toll_role_parse((const char *) copy, size);
    if (role >= 0) {
        assert(strlen(toll_role_name(role)) == size
               && memcmp(toll_role_name(role), copy, size) == 0);
    }

    /* a secret_sha256 field: decode, and encode back the same digits */
    if (toll_hex_decode((const char *) copy, size, bin, sizeof(bin)) == 0) {
        assert(size == 2 * sizeof(bin));

        hex = malloc(2 * sizeof(bin));
        assert(hex != NULL);
        toll_hex_encode(bin, sizeof(bin), hex);

        for (n = 0; n < size; n++) {
            assert(hex[n] == (copy[n] | 0x20) || hex[n] == copy[n]);
        }

        assert(toll_hex_decode(hex, 2 * sizeof(bin), again, sizeof(again))
               == 0);
        assert(toll_hash_equal(bin, again));
        free(hex);
    }

    free(copy);

    return 0;
}
