/*
 * toll: a JWT taken apart (docs/jwt.md, "How a token is checked"):
 * the compact token split into its three segments, strict base64url,
 * the header and the payload as JSON objects, and the claims read
 * against a location's policy.  Pure, so that the module's decoder is
 * the one the fuzzer runs: no nginx types, no key objects; the
 * signature is checked by the module, between the header and the
 * payload.
 *
 * Plain C11 and jansson, no I/O: safe inside an nginx worker.
 */

#ifndef _TOLL_JWT_PARSE_H_INCLUDED_
#define _TOLL_JWT_PARSE_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>


/* the algorithms a key may have, in the order of toll_jwt_alg_names */
typedef enum {
    TOLL_JWT_RS256 = 0,
    TOLL_JWT_ES256,
    TOLL_JWT_EDDSA,
    TOLL_JWT_HS256,
    TOLL_JWT_ALGS
} toll_jwt_alg_e;

/* as JWS spells them: "RS256", "ES256", "EdDSA", "HS256" */
extern const char *const  toll_jwt_alg_names[TOLL_JWT_ALGS];

/* a time claim above this is refused: exp + leeway cannot overflow */
#define TOLL_JWT_TIME_MAX  (INT64_MAX / 2)


/* the three segments, pointing into the token */
typedef struct {
    const unsigned char  *header;
    size_t                header_len;
    const unsigned char  *payload;
    size_t                payload_len;
    const unsigned char  *signature;
    size_t                signature_len;
} toll_jwt_segments_t;


/* what the header says; kid points into the header's JSON */
typedef struct {
    toll_jwt_alg_e        alg;
    const char           *kid;          /* NULL: no "kid" */
    size_t                kid_len;
} toll_jwt_header_t;


/* the location's rules for the claims */
typedef struct {
    const char           *issuer;       /* NULL or "": not checked */
    size_t                issuer_len;
    const char           *audience;     /* NULL or "": not checked */
    size_t                audience_len;
    int64_t               leeway;       /* seconds, 0 to 86400 */
    int                   require_exp;
    const char           *buyer_claim;  /* NUL-terminated */
    const char           *plan_claim;   /* NUL-terminated; NULL: none */
    const char           *plan_prefix;  /* "" or NULL: none */
    size_t                plan_prefix_len;
    const char           *default_plan; /* may be NULL, len 0 */
    size_t                default_plan_len;
} toll_jwt_policy_t;


/*
 * What the claims made of a token; buyer and plan point into the claims
 * (or plan into the policy's default_plan).
 */
typedef struct {
    const char           *buyer;
    size_t                buyer_len;
    const char           *plan;         /* NULL, len 0: none */
    size_t                plan_len;
    int64_t               expires_at;   /* exp + leeway; 0 never */
} toll_jwt_claims_t;


typedef enum {
    TOLL_JWT_OK = 0,
    TOLL_JWT_MALFORMED,                 /* not a JWT */
    TOLL_JWT_UNKNOWN,                   /* a header no key can take */
    TOLL_JWT_CLAIMS,                    /* a claim is wrong */
    TOLL_JWT_EXPIRED                    /* exp has passed */
} toll_jwt_rc_e;


/*
 * Exactly three non-empty segments.  MALFORMED, with *why, otherwise.
 * Does not look at the length: the caller bounds it first.
 */
toll_jwt_rc_e toll_jwt_split(const unsigned char *token, size_t len,
    toll_jwt_segments_t *seg, const char **why);

/*
 * Strict base64url (RFC 7515, section 2): the URL alphabet, no padding,
 * no whitespace, no length that leaves 1 character over, and the unused
 * bits of the last character zero.  Writes at most len * 3 / 4 bytes to
 * dst.  Returns the decoded length or -1.
 */
ssize_t toll_jwt_b64url_decode(unsigned char *dst, const unsigned char *src,
    size_t len);

/*
 * The base64url text of a non-empty JSON object, strictly: one value, no
 * duplicate names.  buf is scratch of at least len bytes.  NULL: not one.
 * The caller json_decref()s what is returned.
 */
json_t *toll_jwt_json(const unsigned char *src, size_t len,
    unsigned char *buf);

/*
 * "alg" one of toll_jwt_alg_names exactly, no "crit", "kid" absent or a
 * string.  UNKNOWN, with *why, otherwise.
 */
toll_jwt_rc_e toll_jwt_header_decode(json_t *header, toll_jwt_header_t *h,
    const char **why);

/*
 * The claims of a verified token at time now, by the policy: exp (if
 * required), nbf, iat non-negative integers up to TOLL_JWT_TIME_MAX, now
 * before exp + leeway, nbf and iat no later than now + leeway; iss and aud
 * as configured; the buyer claim a valid owner (toll_owner_valid); the
 * plan claim, when it names one, a valid plan.  Returns OK, CLAIMS or
 * EXPIRED, with *why on a refusal (and *out zeroed).
 */
toll_jwt_rc_e toll_jwt_claims_decode(json_t *claims,
    const toll_jwt_policy_t *pol, int64_t now, toll_jwt_claims_t *out,
    const char **why);


#endif /* _TOLL_JWT_PARSE_H_INCLUDED_ */
