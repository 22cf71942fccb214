/*
 * toll: API key formats, credential parsing and secret hashing.
 * See toll_key.h.
 */

#include "toll_key.h"

#include <string.h>

/*
 * SHA256_Init() and friends are deprecated in OpenSSL 3 in favour of EVP,
 * but EVP costs more than the hash of a short secret does (engine
 * lookups, a context allocated at each init: some 700 instructions a
 * request).  nginx itself keeps SHA-1 on the same calls the same way.
 */
#define OPENSSL_SUPPRESS_DEPRECATED

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>


static const char  toll_hex_digits[] = "0123456789abcdef";


/* 1 for the characters of base64url: A-Z a-z 0-9 - _ */
static const unsigned char  toll_b64url[256] = {
    ['-'] = 1, ['_'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1,
    ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1,
    ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1,
    ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
    ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
    ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1,
    ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
    ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1
};


static int
toll_b64url_char(unsigned char c)
{
    return toll_b64url[c];
}


static int
toll_span_valid(const unsigned char *p, size_t len, size_t min, size_t max)
{
    size_t         i;
    unsigned char  ok;

    if (len < min || len > max) {
        return 0;
    }

    /* no early exit: one branch less per character, on the hot path */

    ok = 1;

    for (i = 0; i < len; i++) {
        ok &= toll_b64url[p[i]];
    }

    return ok;
}


int
toll_key_id_valid(const unsigned char *p, size_t len)
{
    return toll_span_valid(p, len, TOLL_KEY_ID_LEN_MIN, TOLL_KEY_ID_LEN_MAX);
}


int
toll_secret_valid(const unsigned char *p, size_t len)
{
    return toll_span_valid(p, len, TOLL_SECRET_LEN_MIN, TOLL_SECRET_LEN_MAX);
}


int
toll_owner_valid(const unsigned char *p, size_t len)
{
    size_t  i;

    /*
     * A leading '}' would close the Redis Cluster hash tag its names
     * open ("toll:usage:{" owner "}..."): an empty tag, and each name of
     * the owner in a slot of its own.  '{' anywhere, and '}' further on,
     * leave a tag that is not empty and the same for all of the owner's
     * names (docs/redis.md "Slots").
     */

    if (len == 0 || len > TOLL_OWNER_LEN_MAX || p[0] == '}') {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (p[i] <= 0x20 || p[i] >= 0x7f) {
            return 0;
        }
    }

    return 1;
}


int
toll_plan_valid(const unsigned char *p, size_t len)
{
    size_t  i;

    if (len > TOLL_PLAN_LEN_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!(toll_b64url_char(p[i]) || p[i] == '.')) {
            return 0;
        }
    }

    return 1;
}


toll_cred_rc_e
toll_token_parse(const unsigned char *p, size_t len, toll_token_t *tok)
{
    const unsigned char  *colon;

    if (p == NULL || len == 0) {
        return TOLL_CRED_MALFORMED;
    }

    colon = memchr(p, ':', len);
    if (colon == NULL) {
        return TOLL_CRED_MALFORMED;
    }

    tok->key_id = p;
    tok->key_id_len = (size_t) (colon - p);
    tok->secret = colon + 1;
    tok->secret_len = len - tok->key_id_len - 1;

    /* a second colon fails the character check of the secret */

    if (!toll_key_id_valid(tok->key_id, tok->key_id_len)
        || !toll_secret_valid(tok->secret, tok->secret_len))
    {
        return TOLL_CRED_MALFORMED;
    }

    return TOLL_CRED_OK;
}


toll_cred_rc_e
toll_bearer_token(const unsigned char *p, size_t len,
    const unsigned char **token, size_t *token_len)
{
    size_t                i;
    static const char     scheme[] = "bearer";

    if (p == NULL || len <= sizeof(scheme) - 1) {
        return TOLL_CRED_MALFORMED;
    }

    for (i = 0; i < sizeof(scheme) - 1; i++) {
        if ((p[i] | 0x20) != (unsigned char) scheme[i]) {
            return TOLL_CRED_MALFORMED;
        }
    }

    /* RFC 9110 asks for 1*SP; tabs are tolerated as many servers do */

    if (p[i] != ' ' && p[i] != '\t') {
        return TOLL_CRED_MALFORMED;
    }

    while (i < len && (p[i] == ' ' || p[i] == '\t')) {
        i++;
    }

    *token = p + i;
    *token_len = len - i;

    return TOLL_CRED_OK;
}


toll_cred_rc_e
toll_bearer_parse(const unsigned char *p, size_t len, toll_token_t *tok)
{
    size_t                tlen;
    const unsigned char  *t;

    if (toll_bearer_token(p, len, &t, &tlen) != TOLL_CRED_OK) {
        return TOLL_CRED_MALFORMED;
    }

    return toll_token_parse(t, tlen, tok);
}


int
toll_opaque_valid(const unsigned char *p, size_t len)
{
    return p != NULL
           && toll_span_valid(p, len, TOLL_OPAQUE_LEN_MIN,
                              TOLL_OPAQUE_LEN_MAX);
}


toll_cred_rc_e
toll_opaque_parse(const unsigned char *p, size_t len,
    unsigned char id[TOLL_OPAQUE_ID_LEN], toll_token_t *tok)
{
    SHA256_CTX     ctx;
    unsigned char  md[SHA256_DIGEST_LENGTH];

    if (!toll_opaque_valid(p, len)) {
        return TOLL_CRED_MALFORMED;
    }

    if (SHA256_Init(&ctx) != 1
        || SHA256_Update(&ctx, TOLL_OPAQUE_ID_LABEL,
                         sizeof(TOLL_OPAQUE_ID_LABEL) - 1) != 1
        || SHA256_Update(&ctx, p, len) != 1
        || SHA256_Final(md, &ctx) != 1)
    {
        OPENSSL_cleanse(&ctx, sizeof(ctx));
        return TOLL_CRED_MALFORMED;
    }

    memcpy(id, TOLL_OPAQUE_ID_PREFIX, sizeof(TOLL_OPAQUE_ID_PREFIX) - 1);
    toll_hex_encode(md, TOLL_OPAQUE_ID_HASH_BYTES,
                    (char *) id + sizeof(TOLL_OPAQUE_ID_PREFIX) - 1);

    tok->key_id = id;
    tok->key_id_len = TOLL_OPAQUE_ID_LEN;
    tok->secret = p;
    tok->secret_len = len;

    return TOLL_CRED_OK;
}


int
toll_secret_hash(const unsigned char *secret, size_t len,
    unsigned char out[TOLL_SECRET_HASH_LEN])
{
    SHA256_CTX  ctx;

    if (SHA256_Init(&ctx) != 1
        || SHA256_Update(&ctx, secret, len) != 1
        || SHA256_Final(out, &ctx) != 1)
    {
        OPENSSL_cleanse(&ctx, sizeof(ctx));
        return -1;
    }

    return 0;
}


int
toll_hash_equal(const unsigned char a[TOLL_SECRET_HASH_LEN],
    const unsigned char b[TOLL_SECRET_HASH_LEN])
{
    return CRYPTO_memcmp(a, b, TOLL_SECRET_HASH_LEN) == 0;
}


void
toll_hex_encode(const unsigned char *src, size_t len, char *dst)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        *dst++ = toll_hex_digits[src[i] >> 4];
        *dst++ = toll_hex_digits[src[i] & 0x0f];
    }
}


static int
toll_hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c = (char) (c | 0x20);

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


int
toll_hex_decode(const char *src, size_t src_len, unsigned char *dst,
    size_t len)
{
    int     hi, lo;
    size_t  i;

    if (src == NULL || src_len != 2 * len) {
        return -1;
    }

    for (i = 0; i < len; i++) {
        hi = toll_hex_value(src[2 * i]);
        lo = toll_hex_value(src[2 * i + 1]);

        if (hi < 0 || lo < 0) {
            return -1;
        }

        dst[i] = (unsigned char) (hi << 4 | lo);
    }

    return 0;
}


size_t
toll_key_redis_name(const unsigned char *key_id, size_t len,
    char buf[TOLL_REDIS_KEY_NAME_MAX + 1])
{
    char  *p;

    if (!toll_key_id_valid(key_id, len)) {
        return 0;
    }

    p = toll_name_tagged(buf, TOLL_NAME_KEY_PREFIX, (const char *) key_id,
                         len);
    *p = '\0';

    return (size_t) (p - buf);
}


static const char  *toll_role_names[] = { "buyer", "provider", "admin" };


const char *
toll_role_name(toll_role_e role)
{
    if ((size_t) role >= sizeof(toll_role_names) / sizeof(toll_role_names[0]))
    {
        return "unknown";
    }

    return toll_role_names[role];
}


int
toll_role_parse(const char *p, size_t len)
{
    size_t  i;

    for (i = 0; i < sizeof(toll_role_names) / sizeof(toll_role_names[0]); i++)
    {
        if (len == strlen(toll_role_names[i])
            && memcmp(p, toll_role_names[i], len) == 0)
        {
            return (int) i;
        }
    }

    return -1;
}


int
toll_key_generate(char key_id[TOLL_KEY_ID_GEN_LEN + 1],
    char secret[TOLL_SECRET_GEN_LEN + 1])
{
    int            n;
    size_t         i;
    unsigned char  id_raw[TOLL_KEY_ID_RANDOM_BYTES];
    unsigned char  secret_raw[TOLL_SECRET_RANDOM_BYTES];
    unsigned char  b64[4 * ((TOLL_SECRET_RANDOM_BYTES + 2) / 3) + 1];

    if (RAND_bytes(id_raw, sizeof(id_raw)) != 1
        || RAND_bytes(secret_raw, sizeof(secret_raw)) != 1)
    {
        OPENSSL_cleanse(secret_raw, sizeof(secret_raw));
        return -1;
    }

    memcpy(key_id, TOLL_KEY_ID_PREFIX, sizeof(TOLL_KEY_ID_PREFIX) - 1);
    toll_hex_encode(id_raw, sizeof(id_raw),
                    key_id + sizeof(TOLL_KEY_ID_PREFIX) - 1);
    key_id[TOLL_KEY_ID_GEN_LEN] = '\0';

    n = EVP_EncodeBlock(b64, secret_raw, sizeof(secret_raw));
    OPENSSL_cleanse(secret_raw, sizeof(secret_raw));

    if (n < TOLL_SECRET_GEN_LEN) {
        OPENSSL_cleanse(b64, sizeof(b64));
        return -1;
    }

    /* base64 to base64url, padding dropped */

    for (i = 0; i < TOLL_SECRET_GEN_LEN; i++) {
        secret[i] = (char) (b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : b64[i]);
    }

    secret[TOLL_SECRET_GEN_LEN] = '\0';

    OPENSSL_cleanse(b64, sizeof(b64));

    return 0;
}
