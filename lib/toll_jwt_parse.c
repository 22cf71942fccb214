/*
 * toll: a JWT taken apart, strictly (lib/toll_jwt_parse.h).  Moved out of
 * the module as it was, so that fuzz_jwt runs the module's own decoder.
 */

#include <string.h>

#include "toll_jwt_parse.h"
#include "toll_key.h"


const char *const  toll_jwt_alg_names[TOLL_JWT_ALGS] = {
    "RS256", "ES256", "EdDSA", "HS256"
};


static toll_jwt_rc_e toll_jwt_claims_times(json_t *claims,
    const toll_jwt_policy_t *pol, int64_t now, toll_jwt_claims_t *out,
    const char **why);
static int toll_jwt_audience_is(json_t *claims,
    const toll_jwt_policy_t *pol);
static toll_jwt_rc_e toll_jwt_claims_read(json_t *claims,
    const toll_jwt_policy_t *pol, int64_t now, toll_jwt_claims_t *out,
    const char **why);
static toll_jwt_rc_e toll_jwt_time_claim(json_t *claims, const char *name,
    int64_t *t);
static int toll_jwt_string_is(json_t *v, const char *s, size_t len);
static toll_jwt_rc_e toll_jwt_plan(json_t *claims,
    const toll_jwt_policy_t *pol, toll_jwt_claims_t *out);
static int toll_jwt_plan_word(const toll_jwt_policy_t *pol, const char *p,
    size_t len, toll_jwt_claims_t *out);


toll_jwt_rc_e
toll_jwt_split(const unsigned char *token, size_t len,
    toll_jwt_segments_t *seg, const char **why)
{
    const unsigned char  *dot1, *dot2, *last;

    memset(seg, 0, sizeof(toll_jwt_segments_t));

    last = token + len;

    dot1 = len ? memchr(token, '.', len) : NULL;
    dot2 = dot1 ? memchr(dot1 + 1, '.', last - dot1 - 1) : NULL;

    if (dot1 == NULL || dot2 == NULL
        || memchr(dot2 + 1, '.', last - dot2 - 1) != NULL)
    {
        *why = "not three segments";
        return TOLL_JWT_MALFORMED;
    }

    if (dot1 == token || dot2 == dot1 + 1 || dot2 + 1 == last) {
        *why = "an empty segment";
        return TOLL_JWT_MALFORMED;
    }

    seg->header = token;
    seg->header_len = dot1 - token;
    seg->payload = dot1 + 1;
    seg->payload_len = dot2 - dot1 - 1;
    seg->signature = dot2 + 1;
    seg->signature_len = last - dot2 - 1;

    return TOLL_JWT_OK;
}


/*
 * Strict, so that one text has one decoding and a token cannot be
 * altered without changing what was signed.
 */

ssize_t
toll_jwt_b64url_decode(unsigned char *dst, const unsigned char *src,
    size_t len)
{
    int             v, bits;
    size_t          i;
    uint32_t        acc;
    unsigned char  *d;

    static const int8_t  b64url[256] = {
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, -1,
        52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -1, -1, -1,
        -1,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14,
        15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, 63,
        -1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
        41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, -1, -1, -1, -1, -1,
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1
    };

    if (len % 4 == 1) {
        return -1;
    }

    d = dst;
    acc = 0;
    bits = 0;

    for (i = 0; i < len; i++) {
        v = b64url[src[i]];

        if (v < 0) {
            return -1;
        }

        acc = (acc << 6) | (uint32_t) v;
        bits += 6;

        if (bits >= 8) {
            bits -= 8;
            *d++ = (unsigned char) (acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }

    if (acc != 0) {
        /* the leftover bits of the last character must be zero */
        return -1;
    }

    return d - dst;
}


json_t *
toll_jwt_json(const unsigned char *src, size_t len, unsigned char *buf)
{
    ssize_t       n;
    json_t       *v;
    json_error_t  err;

    n = toll_jwt_b64url_decode(buf, src, len);
    if (n <= 0) {
        return NULL;
    }

    v = json_loadb((const char *) buf, n, JSON_REJECT_DUPLICATES, &err);

    if (v != NULL && !json_is_object(v)) {
        json_decref(v);
        return NULL;
    }

    return v;
}


toll_jwt_rc_e
toll_jwt_header_decode(json_t *header, toll_jwt_header_t *h,
    const char **why)
{
    int          a;
    size_t       len;
    json_t      *alg, *kid;
    const char  *s;

    memset(h, 0, sizeof(toll_jwt_header_t));

    alg = json_object_get(header, "alg");

    if (!json_is_string(alg)) {
        *why = "no \"alg\" in the header";
        return TOLL_JWT_UNKNOWN;
    }

    s = json_string_value(alg);
    len = json_string_length(alg);

    for (a = 0; a < TOLL_JWT_ALGS; a++) {
        if (len == strlen(toll_jwt_alg_names[a])
            && memcmp(s, toll_jwt_alg_names[a], len) == 0)
        {
            break;
        }
    }

    if (a == TOLL_JWT_ALGS) {
        *why = "an \"alg\" no key has";
        return TOLL_JWT_UNKNOWN;
    }

    if (json_object_get(header, "crit") != NULL) {
        /* extensions the token says must be understood: we know none */
        *why = "a \"crit\" header";
        return TOLL_JWT_UNKNOWN;
    }

    kid = json_object_get(header, "kid");

    if (kid && !json_is_string(kid)) {
        *why = "a \"kid\" that is not a string";
        return TOLL_JWT_UNKNOWN;
    }

    h->alg = (toll_jwt_alg_e) a;

    if (kid) {
        h->kid = json_string_value(kid);
        h->kid_len = json_string_length(kid);
    }

    return TOLL_JWT_OK;
}


toll_jwt_rc_e
toll_jwt_claims_decode(json_t *claims, const toll_jwt_policy_t *pol,
    int64_t now, toll_jwt_claims_t *out, const char **why)
{
    toll_jwt_rc_e  rc;

    rc = toll_jwt_claims_read(claims, pol, now, out, why);

    if (rc != TOLL_JWT_OK) {
        /* nothing of a refused token is left to be used by mistake */
        memset(out, 0, sizeof(toll_jwt_claims_t));
    }

    return rc;
}


static toll_jwt_rc_e
toll_jwt_claims_read(json_t *claims, const toll_jwt_policy_t *pol,
    int64_t now, toll_jwt_claims_t *out, const char **why)
{
    json_t        *v;
    toll_jwt_rc_e  rc;

    memset(out, 0, sizeof(toll_jwt_claims_t));

    rc = toll_jwt_claims_times(claims, pol, now, out, why);

    if (rc != TOLL_JWT_OK) {
        return rc;
    }

    /* iss */

    if (pol->issuer_len
        && !toll_jwt_string_is(json_object_get(claims, "iss"),
                               pol->issuer, pol->issuer_len))
    {
        *why = "\"iss\" is missing or wrong";
        return TOLL_JWT_CLAIMS;
    }

    /* aud: a string, or an array of which one element is ours */

    if (pol->audience_len && !toll_jwt_audience_is(claims, pol)) {
        *why = "\"aud\" is missing or wrong";
        return TOLL_JWT_CLAIMS;
    }

    /* the buyer goes into a header to the upstream and into Redis keys */

    v = json_object_get(claims, pol->buyer_claim);

    if (!json_is_string(v)
        || !toll_owner_valid((const unsigned char *) json_string_value(v),
                             json_string_length(v)))
    {
        *why = "the buyer claim is missing, not 1 to 128 printable "
               "characters, or begins with '}'";
        return TOLL_JWT_CLAIMS;
    }

    out->buyer = json_string_value(v);
    out->buyer_len = json_string_length(v);

    if (toll_jwt_plan(claims, pol, out) != TOLL_JWT_OK) {
        *why = "the plan claim names no valid plan";
        return TOLL_JWT_CLAIMS;
    }

    return TOLL_JWT_OK;
}


/* exp, nbf and iat against now and the leeway; out->expires_at from exp */

static toll_jwt_rc_e
toll_jwt_claims_times(json_t *claims, const toll_jwt_policy_t *pol,
    int64_t now, toll_jwt_claims_t *out, const char **why)
{
    int64_t        exp, nbf, iat;
    toll_jwt_rc_e  rc;

    /* exp */

    rc = toll_jwt_time_claim(claims, "exp", &exp);

    if (rc == TOLL_JWT_CLAIMS) {
        *why = "\"exp\" is not a non-negative integer";
        return TOLL_JWT_CLAIMS;
    }

    if (rc == TOLL_JWT_MALFORMED) {
        if (pol->require_exp) {
            *why = "no \"exp\"";
            return TOLL_JWT_CLAIMS;
        }

        out->expires_at = 0;

    } else {
        if (exp > INT64_MAX - pol->leeway) {
            *why = "\"exp\" is out of range";
            return TOLL_JWT_CLAIMS;
        }

        /* RFC 7519: the current time must be before "exp" */

        if (now >= exp + pol->leeway) {
            *why = "\"exp\" has passed";
            return TOLL_JWT_EXPIRED;
        }

        out->expires_at = exp + pol->leeway;
    }

    /* nbf, iat */

    rc = toll_jwt_time_claim(claims, "nbf", &nbf);

    if (rc == TOLL_JWT_CLAIMS) {
        *why = "\"nbf\" is not a non-negative integer";
        return TOLL_JWT_CLAIMS;
    }

    if (rc == TOLL_JWT_OK && nbf > now + pol->leeway) {
        *why = "\"nbf\" is in the future";
        return TOLL_JWT_CLAIMS;
    }

    rc = toll_jwt_time_claim(claims, "iat", &iat);

    if (rc == TOLL_JWT_CLAIMS) {
        *why = "\"iat\" is not a non-negative integer";
        return TOLL_JWT_CLAIMS;
    }

    if (rc == TOLL_JWT_OK && iat > now + pol->leeway) {
        *why = "\"iat\" is in the future";
        return TOLL_JWT_CLAIMS;
    }

    return TOLL_JWT_OK;
}


/* "aud" is the policy's audience, or an array with it as an element */

static int
toll_jwt_audience_is(json_t *claims, const toll_jwt_policy_t *pol)
{
    size_t   i;
    json_t  *v, *e;

    v = json_object_get(claims, "aud");

    if (json_is_array(v)) {
        for (i = 0; i < json_array_size(v); i++) {
            e = json_array_get(v, i);

            if (toll_jwt_string_is(e, pol->audience,
                                   pol->audience_len))
            {
                break;
            }
        }

        if (i == json_array_size(v)) {
            v = NULL;
        }

    } else if (!toll_jwt_string_is(v, pol->audience,
                                   pol->audience_len))
    {
        v = NULL;
    }

    return v != NULL;
}


/* MALFORMED: absent; CLAIMS: not a non-negative integer (1.5, "1") */

static toll_jwt_rc_e
toll_jwt_time_claim(json_t *claims, const char *name, int64_t *t)
{
    json_t      *v;
    json_int_t   n;

    v = json_object_get(claims, name);

    if (v == NULL) {
        return TOLL_JWT_MALFORMED;
    }

    if (!json_is_integer(v)) {
        return TOLL_JWT_CLAIMS;
    }

    n = json_integer_value(v);

    if (n < 0 || n > (json_int_t) TOLL_JWT_TIME_MAX) {
        return TOLL_JWT_CLAIMS;
    }

    *t = (int64_t) n;

    return TOLL_JWT_OK;
}


static int
toll_jwt_string_is(json_t *v, const char *s, size_t len)
{
    return json_is_string(v)
           && json_string_length(v) == len
           && memcmp(json_string_value(v), s, len) == 0;
}


/*
 * The plan: from the plan claim when one is configured (a string, or an
 * array of strings; with a prefix, the first word or element that starts
 * with it, less the prefix), else the default.  CLAIMS: the claim names
 * a plan, but not one toll could use.
 */

static toll_jwt_rc_e
toll_jwt_plan(json_t *claims, const toll_jwt_policy_t *pol,
    toll_jwt_claims_t *out)
{
    size_t       i;
    json_t      *v, *e;
    const char  *p, *last, *w;

    out->plan = NULL;
    out->plan_len = 0;

    if (pol->plan_claim && pol->plan_claim[0]) {
        v = json_object_get(claims, pol->plan_claim);

        if (json_is_string(v)) {
            p = json_string_value(v);
            last = p + json_string_length(v);

            if (pol->plan_prefix_len == 0) {
                if (toll_jwt_plan_word(pol, p, last - p, out)) {
                    goto found;
                }

            } else {
                /* "scope": words separated by spaces */

                while (p < last) {
                    w = memchr(p, ' ', last - p);
                    if (w == NULL) {
                        w = last;
                    }

                    if (toll_jwt_plan_word(pol, p, w - p, out)) {
                        goto found;
                    }

                    p = w + 1;
                }
            }

        } else if (json_is_array(v)) {
            for (i = 0; i < json_array_size(v); i++) {
                e = json_array_get(v, i);

                if (json_is_string(e)
                    && toll_jwt_plan_word(pol, json_string_value(e),
                                          json_string_length(e), out))
                {
                    goto found;
                }
            }
        }
    }

    out->plan = pol->default_plan;
    out->plan_len = pol->default_plan_len;

    return TOLL_JWT_OK;

found:

    if (out->plan_len == 0
        || !toll_plan_valid((const unsigned char *) out->plan,
                            out->plan_len))
    {
        return TOLL_JWT_CLAIMS;
    }

    return TOLL_JWT_OK;
}


static int
toll_jwt_plan_word(const toll_jwt_policy_t *pol, const char *p, size_t len,
    toll_jwt_claims_t *out)
{
    size_t  n;

    n = pol->plan_prefix_len;

    if (len < n || (n && memcmp(p, pol->plan_prefix, n) != 0)) {
        return 0;
    }

    out->plan = p + n;
    out->plan_len = len - n;

    return 1;
}
