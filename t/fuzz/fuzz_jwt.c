/*
 * Fuzz the JWT decoder the gate runs on a bearer token
 * (lib/toll_jwt_parse.c): the split into three segments, strict
 * base64url, the header and payload JSON, "alg" and "kid", and the
 * claims read against two policies (docs/jwt.md).
 *
 * Input: the token's bytes.  So that the fuzzer also reaches the claims
 * without having to find base64 of JSON by itself, an input that starts
 * with '{' (a byte no token can start with: it is not base64url) is
 * "HEADER-JSON\nPAYLOAD-JSON" instead, which the harness encodes into a
 * token.  Each decoded segment lands in a buffer of exactly its decoded
 * size, so a write past it shows.
 *
 * Checked beyond no crash: the segments of an accepted token are inside
 * it and cover it; a decoding is accepted exactly when the text is
 * canonical base64url, and has the length the text implies; an accepted
 * header has one of the four "alg" names, no "crit", a string "kid"; the
 * claims of an accepted token are within every rule of docs/jwt.md.
 */

#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "toll_jwt_parse.h"
#include "toll_key.h"


#define FUZZ_NOW  1700000000


static const char  b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";


static size_t
b64url_encode(char *dst, const unsigned char *src, size_t len)
{
    size_t    i, n;
    uint32_t  acc;

    n = 0;

    for (i = 0; i + 2 < len; i += 3) {
        acc = (uint32_t) src[i] << 16 | (uint32_t) src[i + 1] << 8
              | src[i + 2];
        dst[n++] = b64url_alphabet[acc >> 18 & 63];
        dst[n++] = b64url_alphabet[acc >> 12 & 63];
        dst[n++] = b64url_alphabet[acc >> 6 & 63];
        dst[n++] = b64url_alphabet[acc & 63];
    }

    if (len - i == 1) {
        acc = (uint32_t) src[i] << 16;
        dst[n++] = b64url_alphabet[acc >> 18 & 63];
        dst[n++] = b64url_alphabet[acc >> 12 & 63];

    } else if (len - i == 2) {
        acc = (uint32_t) src[i] << 16 | (uint32_t) src[i + 1] << 8;
        dst[n++] = b64url_alphabet[acc >> 18 & 63];
        dst[n++] = b64url_alphabet[acc >> 12 & 63];
        dst[n++] = b64url_alphabet[acc >> 6 & 63];
    }

    return n;
}


/* a segment decoded into a buffer of exactly its size, and checked */

static unsigned char *
check_b64(const unsigned char *src, size_t len, ssize_t *n)
{
    int             canonical;
    char           *again;
    size_t          i, want;
    const char     *c;
    unsigned char  *dst;

    want = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);

    dst = malloc(want ? want : 1);
    assert(dst != NULL);

    *n = toll_jwt_b64url_decode(dst, src, len);

    /* the reference: every byte of the alphabet, a possible length ... */

    canonical = (len % 4 != 1);

    for (i = 0; canonical && i < len; i++) {
        if (src[i] == '\0' || strchr(b64url_alphabet, src[i]) == NULL) {
            canonical = 0;
        }
    }

    /* ... and the unused bits of the last character zero */

    if (canonical && len % 4) {
        c = strchr(b64url_alphabet, src[len - 1]);
        if ((c - b64url_alphabet) & (len % 4 == 2 ? 15 : 3)) {
            canonical = 0;
        }
    }

    assert(canonical == (*n >= 0));

    if (*n >= 0) {
        assert((size_t) *n == want);

        /* one text, one decoding: it encodes back to the same text */
        again = malloc(len + 1);
        assert(again != NULL);
        assert(b64url_encode(again, dst, *n) == len);
        assert(memcmp(again, src, len) == 0);
        free(again);
    }

    return dst;
}


static void
check_header(json_t *header)
{
    json_t             *v;
    const char         *why;
    toll_jwt_rc_e       rc;
    toll_jwt_header_t   h;

    why = NULL;
    rc = toll_jwt_header_decode(header, &h, &why);

    if (rc != TOLL_JWT_OK) {
        assert(rc == TOLL_JWT_UNKNOWN && why != NULL && *why != '\0');
        return;
    }

    assert(h.alg < TOLL_JWT_ALGS);
    v = json_object_get(header, "alg");
    assert(json_is_string(v));
    assert(strlen(toll_jwt_alg_names[h.alg]) == json_string_length(v));
    assert(strcmp(toll_jwt_alg_names[h.alg], json_string_value(v)) == 0);

    assert(json_object_get(header, "crit") == NULL);

    v = json_object_get(header, "kid");
    if (v == NULL) {
        assert(h.kid == NULL && h.kid_len == 0);

    } else {
        assert(json_is_string(v) && h.kid == json_string_value(v)
               && h.kid_len == json_string_length(v));
    }
}


/* a time claim present: a non-negative integer up to TOLL_JWT_TIME_MAX */

static int
time_claim(json_t *claims, const char *name, int64_t *t)
{
    json_t  *v;

    v = json_object_get(claims, name);
    if (v == NULL) {
        return 0;
    }

    assert(json_is_integer(v));
    *t = json_integer_value(v);
    assert(*t >= 0 && *t <= TOLL_JWT_TIME_MAX);

    return 1;
}


static int
string_is(json_t *v, const char *s)
{
    return json_is_string(v) && json_string_length(v) == strlen(s)
           && memcmp(json_string_value(v), s, strlen(s)) == 0;
}


static void
check_claims(json_t *claims, const toll_jwt_policy_t *pol)
{
    size_t              i;
    json_t             *v;
    int64_t             exp, nbf, iat;
    const char         *why;
    toll_jwt_rc_e       rc;
    toll_jwt_claims_t   out;
    static const toll_jwt_claims_t  zero;

    why = NULL;
    rc = toll_jwt_claims_decode(claims, pol, FUZZ_NOW, &out, &why);

    if (rc != TOLL_JWT_OK) {
        assert(rc == TOLL_JWT_CLAIMS || rc == TOLL_JWT_EXPIRED);
        assert(why != NULL && *why != '\0');
        assert(memcmp(&out, &zero, sizeof(out)) == 0);

        if (rc == TOLL_JWT_EXPIRED) {
            assert(time_claim(claims, "exp", &exp)
                   && FUZZ_NOW >= exp + pol->leeway);
        }

        return;
    }

    if (time_claim(claims, "exp", &exp)) {
        assert(FUZZ_NOW < exp + pol->leeway);
        assert(out.expires_at == exp + pol->leeway);

    } else {
        assert(!pol->require_exp && out.expires_at == 0);
    }

    if (time_claim(claims, "nbf", &nbf)) {
        assert(nbf <= FUZZ_NOW + pol->leeway);
    }

    if (time_claim(claims, "iat", &iat)) {
        assert(iat <= FUZZ_NOW + pol->leeway);
    }

    if (pol->issuer_len) {
        assert(string_is(json_object_get(claims, "iss"), pol->issuer));
    }

    if (pol->audience_len) {
        v = json_object_get(claims, "aud");

        if (json_is_array(v)) {
            for (i = 0; i < json_array_size(v); i++) {
                if (string_is(json_array_get(v, i), pol->audience)) {
                    break;
                }
            }

            assert(i < json_array_size(v));

        } else {
            assert(string_is(v, pol->audience));
        }
    }

    v = json_object_get(claims, pol->buyer_claim);
    assert(json_is_string(v) && out.buyer == json_string_value(v)
           && out.buyer_len == json_string_length(v));
    assert(out.buyer_len >= 1 && out.buyer_len <= TOLL_OWNER_LEN_MAX);
    assert(toll_owner_valid((const unsigned char *) out.buyer,
                            out.buyer_len));

    if (out.plan_len) {
        assert(out.plan_len <= TOLL_PLAN_LEN_MAX);
        assert(toll_plan_valid((const unsigned char *) out.plan,
                               out.plan_len));
    }
}


static void
check_token(const unsigned char *tok, size_t size)
{
    int                   empty;
    size_t                i, dots;
    ssize_t               n;
    json_t               *header, *claims;
    const char           *why;
    unsigned char        *dec, *scratch;
    toll_jwt_rc_e         rc;
    toll_jwt_segments_t   seg;

    static const toll_jwt_policy_t  strict = {
        "https://idp.example.com/", sizeof("https://idp.example.com/") - 1,
        "https://api.example.com", sizeof("https://api.example.com") - 1,
        30, 1, "sub", "scope", "plan:", sizeof("plan:") - 1,
        "free", sizeof("free") - 1
    };

    static const toll_jwt_policy_t  lax = {
        NULL, 0, NULL, 0, 0, 0, "buyer", "plan", "", 0, NULL, 0
    };

    why = NULL;
    rc = toll_jwt_split(tok, size, &seg, &why);

    /* the reference: two dots, none at an end, none next to another */

    empty = (size == 0 || tok[0] == '.' || tok[size - 1] == '.');

    for (dots = 0, i = 0; i < size; i++) {
        dots += (tok[i] == '.');

        if (i && tok[i] == '.' && tok[i - 1] == '.') {
            empty = 1;
        }
    }

    if (rc != TOLL_JWT_OK) {
        assert(rc == TOLL_JWT_MALFORMED && why != NULL);
        assert(dots != 2 || empty);
        return;
    }

    assert(dots == 2 && !empty);

    /* three non-empty segments that cover the token, dots between */

    assert(dots == 2);
    assert(seg.header == tok && seg.header_len >= 1);
    assert(seg.payload == seg.header + seg.header_len + 1
           && seg.payload_len >= 1);
    assert(seg.signature == seg.payload + seg.payload_len + 1
           && seg.signature_len >= 1);
    assert(seg.signature + seg.signature_len == tok + size);
    assert(tok[seg.header_len] == '.' && *(seg.signature - 1) == '.');

    dec = check_b64(seg.header, seg.header_len, &n);
    free(dec);
    dec = check_b64(seg.payload, seg.payload_len, &n);
    free(dec);
    dec = check_b64(seg.signature, seg.signature_len, &n);
    free(dec);

    /* the JSON, decoded as the module does, into scratch of the size */

    scratch = malloc(seg.header_len);
    assert(scratch != NULL);
    header = toll_jwt_json(seg.header, seg.header_len, scratch);
    free(scratch);

    if (header != NULL) {
        assert(json_is_object(header));
        check_header(header);
        json_decref(header);
    }

    scratch = malloc(seg.payload_len);
    assert(scratch != NULL);
    claims = toll_jwt_json(seg.payload, seg.payload_len, scratch);
    free(scratch);

    if (claims != NULL) {
        assert(json_is_object(claims));
        check_claims(claims, &strict);
        check_claims(claims, &lax);
        json_decref(claims);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char                 *tok, *p;
    const uint8_t        *nl;
    size_t                hlen, plen;

    if (size == 0 || data[0] != '{') {
        /* the token as sent, in a buffer of its exact size */
        tok = malloc(size ? size : 1);
        assert(tok != NULL);
        memcpy(tok, data, size);
        check_token((unsigned char *) tok, size);
        free(tok);
        return 0;
    }

    nl = memchr(data, '\n', size);
    hlen = nl ? (size_t) (nl - data) : size;
    plen = nl ? size - hlen - 1 : 0;

    tok = malloc((hlen + plen) / 3 * 4 + 16);
    assert(tok != NULL);

    p = tok;
    p += b64url_encode(p, data, hlen);
    *p++ = '.';
    p += b64url_encode(p, data + hlen + (nl != NULL), plen);
    memcpy(p, ".c2ln", 5);
    p += 5;

    check_token((unsigned char *) tok, p - tok);
    free(tok);

    return 0;
}
