/*
 * Unit tests of lib/toll_key.c: credential parsing, owner and plan rules,
 * secret hashing and comparison, hex, Redis key names, roles and key
 * generation.
 *
 * Inputs go in with explicit lengths, never as C strings alone, so that
 * NUL bytes and buffers longer than the credential are tested too.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "toll_key.h"


#define TEST_KEY_ID           "tk_0123456789abcdef"
#define TEST_SECRET           "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcde"
#define TEST_TOKEN            TEST_KEY_ID ":" TEST_SECRET

#define TEST_BUF_LEN          1024
#define TEST_GENERATE_COUNT   1000

#define TEST_NELTS(a)         (sizeof(a) / sizeof((a)[0]))


static int
b64url_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
           || (c >= '0' && c <= '9') || c == '-' || c == '_';
}


/* "<n times c>" into buf, NUL-terminated; returns n */
static size_t
fill(char *buf, char c, size_t n)
{
    assert_true(n < TEST_BUF_LEN);

    memset(buf, c, n);
    buf[n] = '\0';

    return n;
}


/* key_id ":" secret into buf; returns the length */
static size_t
token_of(char *buf, const char *key_id, size_t key_id_len,
    const char *secret, size_t secret_len)
{
    assert_true(key_id_len + 1 + secret_len < TEST_BUF_LEN);

    memcpy(buf, key_id, key_id_len);
    buf[key_id_len] = ':';
    memcpy(buf + key_id_len + 1, secret, secret_len);
    buf[key_id_len + 1 + secret_len] = '\0';

    return key_id_len + 1 + secret_len;
}


static toll_cred_rc_e
token_parse(const char *p, size_t len)
{
    toll_token_t  tok;

    return toll_token_parse((const unsigned char *) p, len, &tok);
}


static toll_cred_rc_e
bearer_parse(const char *p, size_t len)
{
    toll_token_t  tok;

    return toll_bearer_parse((const unsigned char *) p, len, &tok);
}


#define assert_token_ok(...)                                              \
    assert_int_equal(token_parse(__VA_ARGS__), TOLL_CRED_OK)
#define assert_token_bad(...)                                             \
    assert_int_equal(token_parse(__VA_ARGS__), TOLL_CRED_MALFORMED)
#define assert_bearer_ok(...)                                             \
    assert_int_equal(bearer_parse(__VA_ARGS__), TOLL_CRED_OK)
#define assert_bearer_bad(...)                                            \
    assert_int_equal(bearer_parse(__VA_ARGS__), TOLL_CRED_MALFORMED)

/* a string literal with its length, NULs inside included */
#define LIT(s)                s, sizeof(s) - 1


/* toll_key_id_valid, toll_secret_valid */

static void
test_key_id_valid_bounds(void **state)
{
    char  buf[TEST_BUF_LEN];

    (void) state;

    assert_false(toll_key_id_valid(NULL, 0));
    assert_false(toll_key_id_valid((const unsigned char *) "", 0));
    assert_true(toll_key_id_valid((const unsigned char *) "a", 1));

    fill(buf, 'k', TOLL_KEY_ID_LEN_MAX);
    assert_true(toll_key_id_valid((unsigned char *) buf,
                                  TOLL_KEY_ID_LEN_MAX));

    fill(buf, 'k', TOLL_KEY_ID_LEN_MAX + 1);
    assert_false(toll_key_id_valid((unsigned char *) buf,
                                   TOLL_KEY_ID_LEN_MAX + 1));
}


static void
test_secret_valid_bounds(void **state)
{
    char  buf[TEST_BUF_LEN];

    (void) state;

    assert_false(toll_secret_valid(NULL, 0));

    fill(buf, 's', TOLL_SECRET_LEN_MIN - 1);
    assert_false(toll_secret_valid((unsigned char *) buf,
                                   TOLL_SECRET_LEN_MIN - 1));

    fill(buf, 's', TOLL_SECRET_LEN_MIN);
    assert_true(toll_secret_valid((unsigned char *) buf,
                                  TOLL_SECRET_LEN_MIN));

    fill(buf, 's', TOLL_SECRET_LEN_MAX);
    assert_true(toll_secret_valid((unsigned char *) buf,
                                  TOLL_SECRET_LEN_MAX));

    fill(buf, 's', TOLL_SECRET_LEN_MAX + 1);
    assert_false(toll_secret_valid((unsigned char *) buf,
                                   TOLL_SECRET_LEN_MAX + 1));
}


/* only base64url passes, whatever byte it is and wherever it sits */
static void
test_valid_every_byte(void **state)
{
    int            c;
    size_t         pos;
    unsigned char  buf[TOLL_SECRET_LEN_MIN];

    (void) state;

    for (c = 0; c < 256; c++) {
        for (pos = 0; pos < sizeof(buf); pos++) {
            memset(buf, 'x', sizeof(buf));
            buf[pos] = (unsigned char) c;

            assert_int_equal(toll_secret_valid(buf, sizeof(buf)),
                             b64url_char((unsigned char) c));
            assert_int_equal(toll_key_id_valid(buf, sizeof(buf)),
                             b64url_char((unsigned char) c));
        }
    }
}


/* toll_owner_valid, toll_plan_valid */

static void
test_owner_valid(void **state)
{
    char  buf[TEST_BUF_LEN];

    (void) state;

    assert_true(toll_owner_valid((const unsigned char *) LIT("acme-corp")));
    assert_true(toll_owner_valid((const unsigned char *)
                                 LIT("ops+billing@example.com")));
    assert_true(toll_owner_valid((const unsigned char *) LIT("!~")));

    assert_false(toll_owner_valid((const unsigned char *) "", 0));
    assert_false(toll_owner_valid(NULL, 0));

    fill(buf, 'o', TOLL_OWNER_LEN_MAX);
    assert_true(toll_owner_valid((unsigned char *) buf, TOLL_OWNER_LEN_MAX));

    fill(buf, 'o', TOLL_OWNER_LEN_MAX + 1);
    assert_false(toll_owner_valid((unsigned char *) buf,
                                  TOLL_OWNER_LEN_MAX + 1));
}


/* an owner goes into a request header: visible ASCII only */
static void
test_owner_every_byte(void **state)
{
    int            c;
    unsigned char  buf[3];

    (void) state;

    for (c = 0; c < 256; c++) {
        memcpy(buf, "a_b", 3);
        buf[1] = (unsigned char) c;

        assert_int_equal(toll_owner_valid(buf, sizeof(buf)),
                         c > ' ' && c < 0x7f);
    }

    assert_false(toll_owner_valid((const unsigned char *) LIT("acme\r\nX: 1")));
    assert_false(toll_owner_valid((const unsigned char *) LIT("acme corp")));
    assert_false(toll_owner_valid((const unsigned char *) LIT("caf\xc3\xa9")));
}


/*
 * A leading '}' closes the hash tag its Redis names open: refused.  '{'
 * anywhere, and '}' after the first byte, leave a tag that is not empty.
 */
static void
test_owner_hash_tag(void **state)
{
    unsigned char  buf[3];
    int            c;

    (void) state;

    assert_false(toll_owner_valid((const unsigned char *) LIT("}")));
    assert_false(toll_owner_valid((const unsigned char *) LIT("}acme")));
    assert_false(toll_owner_valid((const unsigned char *) LIT("}}")));
    assert_false(toll_owner_valid((const unsigned char *) LIT("}{a}")));
    assert_true(toll_owner_valid((const unsigned char *) LIT("{")));
    assert_true(toll_owner_valid((const unsigned char *) LIT("{acme")));
    assert_true(toll_owner_valid((const unsigned char *) LIT("a}")));
    assert_true(toll_owner_valid((const unsigned char *) LIT("a{b}c")));
    assert_true(toll_owner_valid((const unsigned char *) LIT("{}")));

    /* the first byte: every visible one but '}' */

    for (c = 0; c < 256; c++) {
        memcpy(buf, "xab", 3);
        buf[0] = (unsigned char) c;

        assert_int_equal(toll_owner_valid(buf, sizeof(buf)),
                         c > ' ' && c < 0x7f && c != '}');
    }
}


static void
test_plan_valid(void **state)
{
    int            c;
    char           buf[TEST_BUF_LEN];
    unsigned char  one[1];

    (void) state;

    assert_true(toll_plan_valid((const unsigned char *) LIT("pro")));
    assert_true(toll_plan_valid((const unsigned char *) LIT("v1.2_pro-max")));
    /* empty: no plan */
    assert_true(toll_plan_valid((const unsigned char *) "", 0));

    fill(buf, 'p', TOLL_PLAN_LEN_MAX);
    assert_true(toll_plan_valid((unsigned char *) buf, TOLL_PLAN_LEN_MAX));

    fill(buf, 'p', TOLL_PLAN_LEN_MAX + 1);
    assert_false(toll_plan_valid((unsigned char *) buf,
                                 TOLL_PLAN_LEN_MAX + 1));

    for (c = 0; c < 256; c++) {
        one[0] = (unsigned char) c;

        assert_int_equal(toll_plan_valid(one, 1),
                         b64url_char((unsigned char) c) || c == '.');
    }
}


/* toll_token_parse */

static void
test_token_valid(void **state)
{
    toll_token_t  tok;
    const char   *s = TEST_TOKEN;

    (void) state;

    assert_int_equal(toll_token_parse((const unsigned char *) s, strlen(s),
                                      &tok),
                     TOLL_CRED_OK);

    /* spans into the input, nothing copied */
    assert_ptr_equal(tok.key_id, s);
    assert_int_equal(tok.key_id_len, strlen(TEST_KEY_ID));
    assert_ptr_equal(tok.secret, s + strlen(TEST_KEY_ID) + 1);
    assert_int_equal(tok.secret_len, strlen(TEST_SECRET));
    assert_memory_equal(tok.secret, TEST_SECRET, tok.secret_len);
}


static void
test_token_shortest(void **state)
{
    toll_token_t  tok;
    const char   *s = "a:0123456789abcdef";

    (void) state;

    assert_int_equal(toll_token_parse((const unsigned char *) s, strlen(s),
                                      &tok),
                     TOLL_CRED_OK);
    assert_int_equal(tok.key_id_len, 1);
    assert_int_equal(tok.secret_len, TOLL_SECRET_LEN_MIN);
}


static void
test_token_empty(void **state)
{
    (void) state;

    assert_token_bad("", 0);
    assert_token_bad(NULL, 0);
    assert_token_bad(NULL, 10);
    /* a whole token, but a length of 0 */
    assert_token_bad(TEST_TOKEN, 0);
}


static void
test_token_colons(void **state)
{
    (void) state;

    assert_token_bad(LIT(TEST_KEY_ID TEST_SECRET));
    assert_token_bad(LIT(TEST_KEY_ID "::" TEST_SECRET));
    assert_token_bad(LIT(TEST_KEY_ID ":" TEST_SECRET ":"));
    assert_token_bad(LIT(TEST_KEY_ID ":0123456789:abcdef"));
    assert_token_bad(LIT("tk:" TEST_KEY_ID ":" TEST_SECRET));
    assert_token_bad(LIT(":"));
    assert_token_bad(LIT("::"));
}


static void
test_token_empty_halves(void **state)
{
    (void) state;

    assert_token_bad(LIT(":" TEST_SECRET));
    assert_token_bad(LIT(TEST_KEY_ID ":"));
}


static void
test_token_key_id_length(void **state)
{
    char    id[TEST_BUF_LEN], buf[TEST_BUF_LEN];
    size_t  len;

    (void) state;

    len = token_of(buf, id, fill(id, 'k', TOLL_KEY_ID_LEN_MAX),
                   LIT(TEST_SECRET));
    assert_token_ok(buf, len);

    len = token_of(buf, id, fill(id, 'k', TOLL_KEY_ID_LEN_MAX + 1),
                   LIT(TEST_SECRET));
    assert_token_bad(buf, len);
}


static void
test_token_secret_length(void **state)
{
    char    secret[TEST_BUF_LEN], buf[TEST_BUF_LEN];
    size_t  len;

    (void) state;

    len = token_of(buf, LIT(TEST_KEY_ID), secret, fill(secret, 's', 15));
    assert_token_bad(buf, len);

    len = token_of(buf, LIT(TEST_KEY_ID), secret, fill(secret, 's', 16));
    assert_token_ok(buf, len);

    len = token_of(buf, LIT(TEST_KEY_ID), secret, fill(secret, 's', 256));
    assert_token_ok(buf, len);

    len = token_of(buf, LIT(TEST_KEY_ID), secret, fill(secret, 's', 257));
    assert_token_bad(buf, len);
}


/* the length bounds the parse: a NUL is a byte like any other */
static void
test_token_nul(void **state)
{
    (void) state;

    assert_token_bad(LIT("tk_01234\0" "56789abcdef:" TEST_SECRET));
    assert_token_bad(LIT(TEST_KEY_ID ":AbCdEfGh\0IjKlMnOpQrSt"));
    assert_token_bad(LIT("\0" TEST_KEY_ID ":" TEST_SECRET));
    /* the C string's terminator counted in */
    assert_token_bad(TEST_TOKEN, sizeof(TEST_TOKEN));
    assert_token_bad(LIT(TEST_KEY_ID "\0:" TEST_SECRET));
    assert_token_bad(LIT(TEST_KEY_ID ":\0" TEST_SECRET));
}


static void
test_token_high_bytes(void **state)
{
    (void) state;

    assert_token_bad(LIT("tk_\x80" "0123:" TEST_SECRET));
    assert_token_bad(LIT("tk_\xff:" TEST_SECRET));
    assert_token_bad(LIT(TEST_KEY_ID ":" TEST_SECRET "\x80"));
    /* "é" in UTF-8, in either half */
    assert_token_bad(LIT("tk_caf\xc3\xa9:" TEST_SECRET));
    assert_token_bad(LIT(TEST_KEY_ID ":caf\xc3\xa9" "0123456789abcdef"));
}


static void
test_token_spaces(void **state)
{
    (void) state;

    assert_token_bad(LIT("tk_0123 456789abcdef:" TEST_SECRET));
    assert_token_bad(LIT(TEST_KEY_ID ":AbCdEfGh IjKlMnOpQrSt"));
    assert_token_bad(LIT(" " TEST_TOKEN));
    assert_token_bad(LIT(TEST_TOKEN " "));
    assert_token_bad(LIT(TEST_KEY_ID " :" TEST_SECRET));
    assert_token_bad(LIT(TEST_KEY_ID ": " TEST_SECRET));
    assert_token_bad(LIT(TEST_TOKEN "\t"));
    assert_token_bad(LIT("\t" TEST_TOKEN));
}


static void
test_token_crlf(void **state)
{
    (void) state;

    assert_token_bad(LIT(TEST_TOKEN "\r\n"));
    assert_token_bad(LIT(TEST_TOKEN "\n"));
    assert_token_bad(LIT(TEST_TOKEN "\r"));
    assert_token_bad(LIT("tk_0123\r\n456789abcdef:" TEST_SECRET));
    assert_token_bad(LIT(TEST_KEY_ID ":AbCdEfGh\r\nX-Injected: 1"));
}


static void
test_token_percent(void **state)
{
    (void) state;

    /* percent-encoding is not decoded, and "%" is not base64url */
    assert_token_bad(LIT("tk_%30123456789abcdef:" TEST_SECRET));
    assert_token_bad(LIT(TEST_KEY_ID "%3A" TEST_SECRET));
    assert_token_bad(LIT(TEST_KEY_ID ":" TEST_SECRET "%00"));
}


/* base64's "+", "/" and "=" are not base64url */
static void
test_token_base64_chars(void **state)
{
    (void) state;

    assert_token_bad(LIT(TEST_KEY_ID ":AbCdEfGhIjKlMnOp+rSt"));
    assert_token_bad(LIT(TEST_KEY_ID ":AbCdEfGhIjKlMnOp/rSt"));
    assert_token_bad(LIT(TEST_KEY_ID ":AbCdEfGhIjKlMnOpQrSt="));
    assert_token_bad(LIT("tk.0123456789abcdef:" TEST_SECRET));
}


static void
test_token_every_byte(void **state)
{
    int     c;
    char    buf[TEST_BUF_LEN];
    size_t  len;

    (void) state;

    for (c = 0; c < 256; c++) {
        len = token_of(buf, LIT(TEST_KEY_ID), LIT(TEST_SECRET));

        buf[5] = (char) c;                        /* in the key id */
        assert_int_equal(token_parse(buf, len) == TOLL_CRED_OK,
                         b64url_char((unsigned char) c));

        len = token_of(buf, LIT(TEST_KEY_ID), LIT(TEST_SECRET));

        buf[len - 5] = (char) c;                  /* in the secret */
        assert_int_equal(token_parse(buf, len) == TOLL_CRED_OK,
                         b64url_char((unsigned char) c));
    }
}


/* bytes past len are never looked at */
static void
test_token_length_bounds(void **state)
{
    toll_token_t  tok;
    const char   *s = TEST_TOKEN " trailing junk:::";

    (void) state;

    assert_int_equal(toll_token_parse((const unsigned char *) s,
                                      strlen(TEST_TOKEN), &tok),
                     TOLL_CRED_OK);
    assert_int_equal(tok.secret_len, strlen(TEST_SECRET));

    /* cut into the secret: 15 characters are too few */
    assert_token_bad(s, strlen(TEST_KEY_ID) + 1 + TOLL_SECRET_LEN_MIN - 1);
    assert_token_ok(s, strlen(TEST_KEY_ID) + 1 + TOLL_SECRET_LEN_MIN);
    /* cut before the colon */
    assert_token_bad(s, strlen(TEST_KEY_ID));
}


/* toll_bearer_parse */

static void
test_bearer_valid(void **state)
{
    toll_token_t  tok;
    const char   *s = "Bearer " TEST_TOKEN;

    (void) state;

    assert_int_equal(toll_bearer_parse((const unsigned char *) s, strlen(s),
                                       &tok),
                     TOLL_CRED_OK);
    assert_ptr_equal(tok.key_id, s + 7);
    assert_int_equal(tok.key_id_len, strlen(TEST_KEY_ID));
    assert_memory_equal(tok.key_id, TEST_KEY_ID, tok.key_id_len);
    assert_int_equal(tok.secret_len, strlen(TEST_SECRET));
    assert_memory_equal(tok.secret, TEST_SECRET, tok.secret_len);
}


static void
test_bearer_case(void **state)
{
    (void) state;

    assert_bearer_ok(LIT("bearer " TEST_TOKEN));
    assert_bearer_ok(LIT("BEARER " TEST_TOKEN));
    assert_bearer_ok(LIT("bEaReR " TEST_TOKEN));
    assert_bearer_ok(LIT("BeareR " TEST_TOKEN));
}


/* every byte in every position of the scheme: only its two cases pass */
static void
test_bearer_scheme_every_byte(void **state)
{
    int          c, want;
    char         buf[TEST_BUF_LEN];
    size_t       pos, len;
    const char  *scheme = "bearer";

    (void) state;

    len = strlen("Bearer " TEST_TOKEN);

    for (pos = 0; pos < strlen(scheme); pos++) {
        for (c = 0; c < 256; c++) {
            memcpy(buf, "Bearer " TEST_TOKEN, len);
            buf[pos] = (char) c;

            want = (c == scheme[pos] || c == scheme[pos] - 'a' + 'A');

            assert_int_equal(bearer_parse(buf, len) == TOLL_CRED_OK, want);
        }
    }
}


static void
test_bearer_whitespace(void **state)
{
    (void) state;

    assert_bearer_ok(LIT("Bearer\t" TEST_TOKEN));
    assert_bearer_ok(LIT("Bearer  " TEST_TOKEN));
    assert_bearer_ok(LIT("Bearer      " TEST_TOKEN));
    assert_bearer_ok(LIT("Bearer\t\t" TEST_TOKEN));
    assert_bearer_ok(LIT("Bearer \t \t" TEST_TOKEN));
}


static void
test_bearer_empty(void **state)
{
    (void) state;

    assert_bearer_bad("", 0);
    assert_bearer_bad(NULL, 0);
    assert_bearer_bad(NULL, 20);
    assert_bearer_bad(LIT("Bearer"));
    assert_bearer_bad(LIT("Bearer "));
    assert_bearer_bad(LIT("Bearer\t"));
    assert_bearer_bad(LIT("Bearer   "));
    assert_bearer_bad(LIT("Bearer \t \t "));
    assert_bearer_bad(LIT("B"));
    assert_bearer_bad(LIT(" "));
}


static void
test_bearer_no_separator(void **state)
{
    (void) state;

    assert_bearer_bad(LIT("Bearer" TEST_TOKEN));
    assert_bearer_bad(LIT("Bearer:" TEST_TOKEN));
    assert_bearer_bad(LIT("Bearer=" TEST_TOKEN));
    assert_bearer_bad(LIT("Bearer\r\n" TEST_TOKEN));
    assert_bearer_bad(LIT("Bearer\n" TEST_TOKEN));
    assert_bearer_bad(LIT("Bearer\v" TEST_TOKEN));
}


static void
test_bearer_other_scheme(void **state)
{
    (void) state;

    assert_bearer_bad(LIT("Basic " TEST_TOKEN));
    assert_bearer_bad(LIT("Bearerx " TEST_TOKEN));
    assert_bearer_bad(LIT("Bearers " TEST_TOKEN));
    assert_bearer_bad(LIT("Beare " TEST_TOKEN));
    assert_bearer_bad(LIT("Bear " TEST_TOKEN));
    assert_bearer_bad(LIT("Token " TEST_TOKEN));
    assert_bearer_bad(LIT("Digest " TEST_TOKEN));
    assert_bearer_bad(LIT("xBearer " TEST_TOKEN));
    /* a bare token, with no scheme at all */
    assert_bearer_bad(LIT(TEST_TOKEN));
}


static void
test_bearer_leading_whitespace(void **state)
{
    (void) state;

    assert_bearer_bad(LIT(" Bearer " TEST_TOKEN));
    assert_bearer_bad(LIT("\tBearer " TEST_TOKEN));
    assert_bearer_bad(LIT("\r\nBearer " TEST_TOKEN));
}


static void
test_bearer_trailing(void **state)
{
    (void) state;

    assert_bearer_bad(LIT("Bearer " TEST_TOKEN " "));
    assert_bearer_bad(LIT("Bearer " TEST_TOKEN "\t"));
    assert_bearer_bad(LIT("Bearer " TEST_TOKEN "\r\n"));
    assert_bearer_bad(LIT("Bearer " TEST_TOKEN " " TEST_TOKEN));
    assert_bearer_bad(LIT("Bearer " TEST_TOKEN ","));
}


static void
test_bearer_nul(void **state)
{
    (void) state;

    assert_bearer_bad(LIT("Bearer\0" TEST_TOKEN));
    assert_bearer_bad(LIT("Bea\0er " TEST_TOKEN));
    assert_bearer_bad(LIT("Bearer \0" TEST_TOKEN));
    assert_bearer_bad(LIT("Bearer " TEST_TOKEN "\0"));
    assert_bearer_bad(LIT("\0Bearer " TEST_TOKEN));
}


static void
test_bearer_high_bytes(void **state)
{
    (void) state;

    /* 0xc2 | 0x20 is 0xe2, not "b": case folding stays in ASCII */
    assert_bearer_bad(LIT("\xc2" "earer " TEST_TOKEN));
    assert_bearer_bad(LIT("B\xc3\xa9" "arer " TEST_TOKEN));
    assert_bearer_bad(LIT("Bearer\xa0" TEST_TOKEN));
    assert_bearer_bad(LIT("Bearer \xc2\xa0" TEST_TOKEN));
}


/* the token's own rules apply after the scheme */
static void
test_bearer_bad_token(void **state)
{
    char    buf[TEST_BUF_LEN], secret[TEST_BUF_LEN];
    size_t  len;

    (void) state;

    assert_bearer_bad(LIT("Bearer " TEST_KEY_ID));
    assert_bearer_bad(LIT("Bearer :" TEST_SECRET));
    assert_bearer_bad(LIT("Bearer " TEST_KEY_ID ":"));
    assert_bearer_bad(LIT("Bearer " TEST_KEY_ID ":" TEST_SECRET ":x"));
    assert_bearer_bad(LIT("Bearer " TEST_KEY_ID ":short"));
    assert_bearer_bad(LIT("Bearer tk_0123%20456789:" TEST_SECRET));

    memcpy(buf, "Bearer ", 7);
    len = 7 + token_of(buf + 7, LIT(TEST_KEY_ID), secret,
                       fill(secret, 's', TOLL_SECRET_LEN_MAX));
    assert_bearer_ok(buf, len);

    len = 7 + token_of(buf + 7, LIT(TEST_KEY_ID), secret,
                       fill(secret, 's', TOLL_SECRET_LEN_MAX + 1));
    assert_bearer_bad(buf, len);
}


static void
test_bearer_length_bounds(void **state)
{
    const char  *s = "Bearer " TEST_TOKEN " junk";

    (void) state;

    assert_bearer_ok(s, strlen("Bearer " TEST_TOKEN));
    assert_bearer_bad(s, 6);
    assert_bearer_bad(s, 7);
    assert_bearer_bad(s, 5);
}


/* toll_secret_hash, toll_hash_equal */

static void
test_secret_hash_vectors(void **state)
{
    char           hex[TOLL_SECRET_HASH_HEX_LEN + 1];
    unsigned char  hash[TOLL_SECRET_HASH_LEN];

    (void) state;

    /* FIPS 180-2 test vectors */

    assert_int_equal(toll_secret_hash((const unsigned char *) "", 0, hash), 0);
    toll_hex_encode(hash, sizeof(hash), hex);
    hex[TOLL_SECRET_HASH_HEX_LEN] = '\0';
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb924"
                             "27ae41e4649b934ca495991b7852b855");

    assert_int_equal(toll_secret_hash((const unsigned char *) "abc", 3, hash), 0);
    toll_hex_encode(hash, sizeof(hash), hex);
    hex[TOLL_SECRET_HASH_HEX_LEN] = '\0';
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223"
                             "b00361a396177a9cb410ff61f20015ad");
}


static void
test_hash_equal_same(void **state)
{
    size_t         i;
    unsigned char  a[TOLL_SECRET_HASH_LEN], b[TOLL_SECRET_HASH_LEN];

    (void) state;

    for (i = 0; i < sizeof(a); i++) {
        a[i] = (unsigned char) (i * 37 + 11);
    }

    memcpy(b, a, sizeof(a));

    assert_true(toll_hash_equal(a, b));
    assert_true(toll_hash_equal(b, a));
    assert_true(toll_hash_equal(a, a));

    memset(a, 0, sizeof(a));
    memset(b, 0, sizeof(b));
    assert_true(toll_hash_equal(a, b));

    memset(b, 0xff, sizeof(b));
    assert_false(toll_hash_equal(a, b));
}


static void
test_hash_equal_first_last(void **state)
{
    unsigned char  a[TOLL_SECRET_HASH_LEN], b[TOLL_SECRET_HASH_LEN];

    (void) state;

    memset(a, 0x5a, sizeof(a));

    memcpy(b, a, sizeof(a));
    b[0] ^= 0x01;
    assert_false(toll_hash_equal(a, b));

    memcpy(b, a, sizeof(a));
    b[TOLL_SECRET_HASH_LEN - 1] ^= 0x80;
    assert_false(toll_hash_equal(a, b));
}


/* any single bit flipped anywhere makes the hashes differ */
static void
test_hash_equal_each_position(void **state)
{
    size_t         i, bit;
    unsigned char  a[TOLL_SECRET_HASH_LEN], b[TOLL_SECRET_HASH_LEN];

    (void) state;

    assert_int_equal(toll_secret_hash((const unsigned char *) LIT(TEST_SECRET), a), 0);

    for (i = 0; i < TOLL_SECRET_HASH_LEN; i++) {
        for (bit = 0; bit < 8; bit++) {
            memcpy(b, a, sizeof(a));
            b[i] ^= (unsigned char) (1u << bit);

            assert_false(toll_hash_equal(a, b));
            assert_false(toll_hash_equal(b, a));
        }

        memcpy(b, a, sizeof(a));
        b[i] = (unsigned char) ~a[i];
        assert_false(toll_hash_equal(a, b));
    }
}


/* the path the module takes: hash what was presented, compare */
static void
test_hash_presented_secret(void **state)
{
    unsigned char  stored[TOLL_SECRET_HASH_LEN];
    unsigned char  presented[TOLL_SECRET_HASH_LEN];

    (void) state;

    assert_int_equal(toll_secret_hash((const unsigned char *) LIT(TEST_SECRET), stored), 0);

    assert_int_equal(toll_secret_hash((const unsigned char *) LIT(TEST_SECRET), presented), 0);
    assert_true(toll_hash_equal(stored, presented));

    /* one character off, or one short */
    assert_int_equal(toll_secret_hash((const unsigned char *)
                         LIT("AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcdf"),
                         presented), 0);
    assert_false(toll_hash_equal(stored, presented));

    assert_int_equal(toll_secret_hash((const unsigned char *) TEST_SECRET,
                         strlen(TEST_SECRET) - 1, presented), 0);
    assert_false(toll_hash_equal(stored, presented));
}


/* toll_hex_encode, toll_hex_decode */

static void
test_hex_encode(void **state)
{
    char                 out[16];
    static const unsigned char  in[] = { 0x00, 0x01, 0x7f, 0x80, 0xab, 0xff };

    (void) state;

    memset(out, '#', sizeof(out));
    toll_hex_encode(in, sizeof(in), out);

    assert_memory_equal(out, "00017f80abff", 12);
    /* no NUL, nothing past 2 * len */
    assert_int_equal(out[12], '#');

    memset(out, '#', sizeof(out));
    toll_hex_encode(in, 0, out);
    assert_int_equal(out[0], '#');
}


static void
test_hex_round_trip(void **state)
{
    int            i;
    char           hex[2 * 256];
    unsigned char  in[256], out[256];

    (void) state;

    for (i = 0; i < 256; i++) {
        in[i] = (unsigned char) i;
    }

    toll_hex_encode(in, sizeof(in), hex);

    for (i = 0; i < (int) sizeof(hex); i++) {
        assert_true((hex[i] >= '0' && hex[i] <= '9')
                    || (hex[i] >= 'a' && hex[i] <= 'f'));
    }

    memset(out, 0, sizeof(out));
    assert_int_equal(toll_hex_decode(hex, sizeof(hex), out, sizeof(out)), 0);
    assert_memory_equal(in, out, sizeof(in));
}


static void
test_hex_decode_case(void **state)
{
    unsigned char  out[3];

    (void) state;

    assert_int_equal(toll_hex_decode("ABCDEF", 6, out, 3), 0);
    assert_memory_equal(out, "\xab\xcd\xef", 3);

    assert_int_equal(toll_hex_decode("aBcDeF", 6, out, 3), 0);
    assert_memory_equal(out, "\xab\xcd\xef", 3);

    assert_int_equal(toll_hex_decode("", 0, out, 0), 0);
}


static void
test_hex_decode_length(void **state)
{
    unsigned char  out[4];

    (void) state;

    assert_int_equal(toll_hex_decode("abc", 3, out, 2), -1);
    assert_int_equal(toll_hex_decode("ab", 2, out, 2), -1);
    assert_int_equal(toll_hex_decode("abcdef", 6, out, 2), -1);
    assert_int_equal(toll_hex_decode("a", 1, out, 1), -1);
    assert_int_equal(toll_hex_decode(NULL, 0, out, 0), -1);
    assert_int_equal(toll_hex_decode(NULL, 4, out, 2), -1);
}


/* each byte value in each position of a digit pair */
static void
test_hex_decode_every_byte(void **state)
{
    int            c, want;
    char           in[4];
    size_t         pos;
    unsigned char  out[2];

    (void) state;

    for (c = 0; c < 256; c++) {
        want = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')
               || (c >= 'A' && c <= 'F');

        for (pos = 0; pos < sizeof(in); pos++) {
            memcpy(in, "09af", sizeof(in));
            in[pos] = (char) c;

            assert_int_equal(toll_hex_decode(in, sizeof(in), out,
                                             sizeof(out)),
                             want ? 0 : -1);
        }
    }
}


static void
test_hex_decode_hash(void **state)
{
    char           hex[TOLL_SECRET_HASH_HEX_LEN];
    unsigned char  hash[TOLL_SECRET_HASH_LEN], back[TOLL_SECRET_HASH_LEN];

    (void) state;

    assert_int_equal(toll_secret_hash((const unsigned char *) LIT(TEST_SECRET), hash), 0);
    toll_hex_encode(hash, sizeof(hash), hex);

    assert_int_equal(toll_hex_decode(hex, sizeof(hex), back, sizeof(back)),
                     0);
    assert_true(toll_hash_equal(hash, back));

    /* what a truncated record field would look like */
    assert_int_equal(toll_hex_decode(hex, sizeof(hex) - 1, back,
                                     sizeof(back)),
                     -1);
}


/* toll_key_redis_name */

static void
test_redis_name_valid(void **state)
{
    char    buf[TOLL_REDIS_KEY_NAME_MAX + 1];
    size_t  len;

    (void) state;

    len = toll_key_redis_name((const unsigned char *) LIT(TEST_KEY_ID), buf);

    assert_int_equal(len, strlen("toll:key:{" TEST_KEY_ID "}"));
    assert_string_equal(buf, "toll:key:{" TEST_KEY_ID "}");

    len = toll_key_redis_name((const unsigned char *) "a", 1, buf);
    assert_int_equal(len, strlen("toll:key:{a}"));
    assert_string_equal(buf, "toll:key:{a}");
}


static void
test_redis_name_invalid(void **state)
{
    char    id[TEST_BUF_LEN];
    char    buf[TOLL_REDIS_KEY_NAME_MAX + 1];
    size_t  i;
    static const char  *bad[] = {
        "tk_{x}", "tk_}", "tk_{", "tk:x", "tk x", "tk*", "tk\r\n", "tk%7B"
    };

    (void) state;

    assert_int_equal(toll_key_redis_name(NULL, 0, buf), 0);
    assert_int_equal(toll_key_redis_name((const unsigned char *) "", 0, buf),
                     0);

    for (i = 0; i < TEST_NELTS(bad); i++) {
        assert_int_equal(toll_key_redis_name((const unsigned char *) bad[i],
                                             strlen(bad[i]), buf),
                         0);
    }

    assert_int_equal(toll_key_redis_name((const unsigned char *)
                                         LIT("tk_a\0b"), buf),
                     0);

    fill(id, 'k', TOLL_KEY_ID_LEN_MAX + 1);
    assert_int_equal(toll_key_redis_name((const unsigned char *) id,
                                         TOLL_KEY_ID_LEN_MAX + 1, buf),
                     0);
}


/* the longest id fills the buffer exactly, its NUL included */
static void
test_redis_name_max(void **state)
{
    char    id[TEST_BUF_LEN];
    char    buf[TOLL_REDIS_KEY_NAME_MAX + 1 + 16];
    size_t  i, len;

    (void) state;

    assert_int_equal(TOLL_REDIS_KEY_NAME_MAX,
                     strlen("toll:key:{}") + TOLL_KEY_ID_LEN_MAX);

    memset(buf, '#', sizeof(buf));
    fill(id, 'k', TOLL_KEY_ID_LEN_MAX);

    len = toll_key_redis_name((const unsigned char *) id,
                              TOLL_KEY_ID_LEN_MAX, buf);

    assert_int_equal(len, TOLL_REDIS_KEY_NAME_MAX);
    assert_int_equal(buf[TOLL_REDIS_KEY_NAME_MAX], '\0');
    assert_memory_equal(buf, "toll:key:{", 10);
    assert_memory_equal(buf + 10, id, TOLL_KEY_ID_LEN_MAX);
    assert_int_equal(buf[TOLL_REDIS_KEY_NAME_MAX - 1], '}');

    for (i = TOLL_REDIS_KEY_NAME_MAX + 1; i < sizeof(buf); i++) {
        assert_int_equal(buf[i], '#');
    }
}


/* toll_role_parse, toll_role_name */

static void
test_role_parse(void **state)
{
    (void) state;

    assert_int_equal(toll_role_parse(LIT("buyer")), TOLL_ROLE_BUYER);
    assert_int_equal(toll_role_parse(LIT("provider")), TOLL_ROLE_PROVIDER);
    assert_int_equal(toll_role_parse(LIT("admin")), TOLL_ROLE_ADMIN);
}


static void
test_role_parse_unknown(void **state)
{
    size_t  i;
    static const char  *bad[] = {
        "", "Buyer", "ADMIN", "buy", "buyers", "admin ", " admin", "root",
        "unknown", "provide"
    };

    (void) state;

    for (i = 0; i < TEST_NELTS(bad); i++) {
        assert_int_equal(toll_role_parse(bad[i], strlen(bad[i])), -1);
    }

    /* the length decides, not a terminator */
    assert_int_equal(toll_role_parse("admin", 3), -1);
    assert_int_equal(toll_role_parse(LIT("admin\0")), -1);
    assert_int_equal(toll_role_parse("buyerx", 5), TOLL_ROLE_BUYER);
    assert_int_equal(toll_role_parse(NULL, 0), -1);
}


static void
test_role_name(void **state)
{
    int          role;
    const char  *name;

    (void) state;

    assert_string_equal(toll_role_name(TOLL_ROLE_BUYER), "buyer");
    assert_string_equal(toll_role_name(TOLL_ROLE_PROVIDER), "provider");
    assert_string_equal(toll_role_name(TOLL_ROLE_ADMIN), "admin");

    assert_string_equal(toll_role_name((toll_role_e) 3), "unknown");
    assert_string_equal(toll_role_name((toll_role_e) -1), "unknown");

    for (role = TOLL_ROLE_BUYER; role <= TOLL_ROLE_ADMIN; role++) {
        name = toll_role_name((toll_role_e) role);
        assert_int_equal(toll_role_parse(name, strlen(name)), role);
    }
}


/* toll_key_generate */

static void
test_generate_format(void **state)
{
    char    key_id[TOLL_KEY_ID_GEN_LEN + 1];
    char    secret[TOLL_SECRET_GEN_LEN + 1];
    size_t  i;

    (void) state;

    assert_int_equal(TOLL_KEY_ID_GEN_LEN, 19);

    memset(key_id, '#', sizeof(key_id));
    memset(secret, '#', sizeof(secret));

    assert_int_equal(toll_key_generate(key_id, secret), 0);

    assert_int_equal(strlen(key_id), TOLL_KEY_ID_GEN_LEN);
    assert_memory_equal(key_id, TOLL_KEY_ID_PREFIX, 3);

    for (i = 3; i < TOLL_KEY_ID_GEN_LEN; i++) {
        assert_true((key_id[i] >= '0' && key_id[i] <= '9')
                    || (key_id[i] >= 'a' && key_id[i] <= 'f'));
    }

    assert_int_equal(strlen(secret), TOLL_SECRET_GEN_LEN);

    for (i = 0; i < TOLL_SECRET_GEN_LEN; i++) {
        assert_true(b64url_char((unsigned char) secret[i]));
    }

    assert_true(toll_key_id_valid((unsigned char *) key_id,
                                  TOLL_KEY_ID_GEN_LEN));
    assert_true(toll_secret_valid((unsigned char *) secret,
                                  TOLL_SECRET_GEN_LEN));
}


static void
test_generate_differs(void **state)
{
    char  id1[TOLL_KEY_ID_GEN_LEN + 1], id2[TOLL_KEY_ID_GEN_LEN + 1];
    char  s1[TOLL_SECRET_GEN_LEN + 1], s2[TOLL_SECRET_GEN_LEN + 1];

    (void) state;

    assert_int_equal(toll_key_generate(id1, s1), 0);
    assert_int_equal(toll_key_generate(id2, s2), 0);

    assert_string_not_equal(id1, id2);
    assert_string_not_equal(s1, s2);
}


typedef struct {
    char  key_id[TOLL_KEY_ID_GEN_LEN + 1];
    char  secret[TOLL_SECRET_GEN_LEN + 1];
} test_key_t;


static int
test_key_id_cmp(const void *a, const void *b)
{
    return strcmp(((const test_key_t *) a)->key_id,
                  ((const test_key_t *) b)->key_id);
}


static int
test_secret_cmp(const void *a, const void *b)
{
    return strcmp(((const test_key_t *) a)->secret,
                  ((const test_key_t *) b)->secret);
}


/*
 * 1,000 keys: every token parses, bare and as a Bearer header, and comes
 * back as the halves it was made of; no id or secret repeats.
 */
static void
test_generate_tokens_parse(void **state)
{
    int            seen_dash, seen_underscore;
    char           buf[TEST_BUF_LEN];
    size_t         i, len;
    test_key_t    *keys;
    toll_token_t   tok;

    (void) state;

    keys = calloc(TEST_GENERATE_COUNT, sizeof(test_key_t));
    assert_non_null(keys);

    seen_dash = 0;
    seen_underscore = 0;

    for (i = 0; i < TEST_GENERATE_COUNT; i++) {
        assert_int_equal(toll_key_generate(keys[i].key_id, keys[i].secret),
                         0);

        len = token_of(buf, keys[i].key_id, TOLL_KEY_ID_GEN_LEN,
                       keys[i].secret, TOLL_SECRET_GEN_LEN);

        assert_int_equal(toll_token_parse((unsigned char *) buf, len, &tok),
                         TOLL_CRED_OK);
        assert_int_equal(tok.key_id_len, TOLL_KEY_ID_GEN_LEN);
        assert_memory_equal(tok.key_id, keys[i].key_id, TOLL_KEY_ID_GEN_LEN);
        assert_int_equal(tok.secret_len, TOLL_SECRET_GEN_LEN);
        assert_memory_equal(tok.secret, keys[i].secret, TOLL_SECRET_GEN_LEN);

        memmove(buf + 7, buf, len);
        memcpy(buf, "Bearer ", 7);

        assert_int_equal(toll_bearer_parse((unsigned char *) buf, len + 7,
                                           &tok),
                         TOLL_CRED_OK);
        assert_memory_equal(tok.secret, keys[i].secret, TOLL_SECRET_GEN_LEN);

        /*
         * 43 characters carry 258 bits for 256: the last one has its two
         * low bits clear, as base64 of 32 bytes must
         */
        assert_non_null(strchr("AEIMQUYcgkosw048",
                               keys[i].secret[TOLL_SECRET_GEN_LEN - 1]));

        seen_dash |= (strchr(keys[i].secret, '-') != NULL);
        seen_underscore |= (strchr(keys[i].secret, '_') != NULL);
    }

    /* base64's "+" and "/" became "-" and "_" (43,000 chars: both occur) */
    assert_true(seen_dash);
    assert_true(seen_underscore);

    qsort(keys, TEST_GENERATE_COUNT, sizeof(test_key_t), test_key_id_cmp);

    for (i = 1; i < TEST_GENERATE_COUNT; i++) {
        assert_string_not_equal(keys[i - 1].key_id, keys[i].key_id);
    }

    qsort(keys, TEST_GENERATE_COUNT, sizeof(test_key_t), test_secret_cmp);

    for (i = 1; i < TEST_GENERATE_COUNT; i++) {
        assert_string_not_equal(keys[i - 1].secret, keys[i].secret);
    }

    free(keys);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_key_id_valid_bounds),
        cmocka_unit_test(test_secret_valid_bounds),
        cmocka_unit_test(test_valid_every_byte),
        cmocka_unit_test(test_owner_valid),
        cmocka_unit_test(test_owner_every_byte),
        cmocka_unit_test(test_owner_hash_tag),
        cmocka_unit_test(test_plan_valid),

        cmocka_unit_test(test_token_valid),
        cmocka_unit_test(test_token_shortest),
        cmocka_unit_test(test_token_empty),
        cmocka_unit_test(test_token_colons),
        cmocka_unit_test(test_token_empty_halves),
        cmocka_unit_test(test_token_key_id_length),
        cmocka_unit_test(test_token_secret_length),
        cmocka_unit_test(test_token_nul),
        cmocka_unit_test(test_token_high_bytes),
        cmocka_unit_test(test_token_spaces),
        cmocka_unit_test(test_token_crlf),
        cmocka_unit_test(test_token_percent),
        cmocka_unit_test(test_token_base64_chars),
        cmocka_unit_test(test_token_every_byte),
        cmocka_unit_test(test_token_length_bounds),

        cmocka_unit_test(test_bearer_valid),
        cmocka_unit_test(test_bearer_case),
        cmocka_unit_test(test_bearer_scheme_every_byte),
        cmocka_unit_test(test_bearer_whitespace),
        cmocka_unit_test(test_bearer_empty),
        cmocka_unit_test(test_bearer_no_separator),
        cmocka_unit_test(test_bearer_other_scheme),
        cmocka_unit_test(test_bearer_leading_whitespace),
        cmocka_unit_test(test_bearer_trailing),
        cmocka_unit_test(test_bearer_nul),
        cmocka_unit_test(test_bearer_high_bytes),
        cmocka_unit_test(test_bearer_bad_token),
        cmocka_unit_test(test_bearer_length_bounds),

        cmocka_unit_test(test_secret_hash_vectors),
        cmocka_unit_test(test_hash_equal_same),
        cmocka_unit_test(test_hash_equal_first_last),
        cmocka_unit_test(test_hash_equal_each_position),
        cmocka_unit_test(test_hash_presented_secret),

        cmocka_unit_test(test_hex_encode),
        cmocka_unit_test(test_hex_round_trip),
        cmocka_unit_test(test_hex_decode_case),
        cmocka_unit_test(test_hex_decode_length),
        cmocka_unit_test(test_hex_decode_every_byte),
        cmocka_unit_test(test_hex_decode_hash),

        cmocka_unit_test(test_redis_name_valid),
        cmocka_unit_test(test_redis_name_invalid),
        cmocka_unit_test(test_redis_name_max),

        cmocka_unit_test(test_role_parse),
        cmocka_unit_test(test_role_parse_unknown),
        cmocka_unit_test(test_role_name),

        cmocka_unit_test(test_generate_format),
        cmocka_unit_test(test_generate_differs),
        cmocka_unit_test(test_generate_tokens_parse),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
