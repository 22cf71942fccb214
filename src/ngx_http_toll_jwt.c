/*
 * toll: JWT bearer tokens to key record.
 *
 * The token is taken apart strictly, by lib/toll_jwt_parse.c (pure, so
 * that fuzz_jwt runs the same code): base64url without padding or stray
 * bits, exactly three segments, a JSON object header whose "alg" must be
 * that of a configured key (the key pins the algorithm; "none"
 * and unknown names match no key), a "kid" that names a key of that
 * algorithm only, a signature of the key's exact length.  Then the
 * signature is checked by OpenSSL with the key parsed when the
 * configuration was read, and only a token whose signature verifies has
 * its payload parsed and its claims read: nothing a forger wrote past the
 * header is believed, or even parsed.  (libjwt 1.10 is not asked: it
 * takes the algorithm from the token, wants the key as PEM text and
 * parses it again for every token, which was most of the cost of a
 * forged token.)  Every failure ends in the same 401 as any other
 * credential; only $toll_auth_status and the error log say which check
 * refused it, and the token itself is never logged.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#define OPENSSL_SUPPRESS_DEPRECATED

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include <jansson.h>

#include "ngx_http_toll_jwt.h"
#include "toll_jwt_parse.h"
#include "ngx_http_toll_shm.h"


/* an HS256 secret shorter than the hash is guessable offline */
#define NGX_HTTP_TOLL_JWT_HMAC_MIN     32
#define NGX_HTTP_TOLL_JWT_RSA_BITS_MIN 2048
/* a key file larger than this is not a key */
#define NGX_HTTP_TOLL_JWT_FILE_MAX     (1024 * 1024)

#define NGX_HTTP_TOLL_JWT_LEEWAY       30          /* seconds */
#define NGX_HTTP_TOLL_JWT_LEEWAY_MAX   86400       /* seconds */
#define NGX_HTTP_TOLL_JWT_CACHE_TTL_MS 300000


/* lib/toll_jwt_parse.h's, which reads "alg" from the header */
typedef enum {
    NGX_HTTP_TOLL_JWT_RS256 = TOLL_JWT_RS256,
    NGX_HTTP_TOLL_JWT_ES256 = TOLL_JWT_ES256,
    NGX_HTTP_TOLL_JWT_EDDSA = TOLL_JWT_EDDSA,
    NGX_HTTP_TOLL_JWT_HS256 = TOLL_JWT_HS256,
    NGX_HTTP_TOLL_JWT_ALGS = TOLL_JWT_ALGS
} ngx_http_toll_jwt_alg_e;


typedef struct {
    ngx_str_t                  name;          /* as JWS spells it */
} ngx_http_toll_jwt_alg_t;


typedef struct {
    ngx_str_t                  file;          /* for messages */
    ngx_str_t                  kid;           /* empty: none */
    ngx_uint_t                 alg;           /* ngx_http_toll_jwt_alg_e */
    ngx_str_t                  material;      /* PEM (NUL-terminated) or
                                                 the HMAC secret */
    EVP_PKEY                  *pkey;          /* NULL for HS256; parsed
                                                 once, owned by the
                                                 cycle's pool */
    size_t                     sig_len;       /* bytes, exactly */
} ngx_http_toll_jwt_key_t;


/* what the claims made of a verified token */
typedef struct {
    ngx_str_t                  buyer;
    ngx_str_t                  plan;
    time_t                     expires_at;    /* exp + leeway; 0 never */
} ngx_http_toll_jwt_identity_t;


static ngx_http_toll_jwt_alg_t  ngx_http_toll_jwt_algs[] = {
    { ngx_string("RS256") },
    { ngx_string("ES256") },
    { ngx_string("EdDSA") },
    { ngx_string("HS256") }
};


static ngx_int_t ngx_http_toll_jwt_cache_id(ngx_http_request_t *r,
    ngx_http_toll_loc_conf_t *lcf, ngx_str_t *token, ngx_str_t *id);
static ngx_http_toll_auth_status_e ngx_http_toll_jwt_verify(
    ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_loc_conf_t *lcf, ngx_str_t *token,
    ngx_http_toll_jwt_identity_t *id);
static ngx_http_toll_jwt_key_t *ngx_http_toll_jwt_select_key(
    ngx_http_toll_ctx_t *ctx, ngx_array_t *keys, toll_jwt_header_t *h);
static ngx_http_toll_auth_status_e ngx_http_toll_jwt_claims(
    ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_loc_conf_t *lcf, json_t *claims,
    ngx_http_toll_jwt_identity_t *id);
static ngx_int_t ngx_http_toll_jwt_signature(ngx_http_toll_jwt_key_t *key,
    u_char *data, size_t len, u_char *sig, size_t sig_len);
static ngx_int_t ngx_http_toll_jwt_es256_der(u_char *sig, u_char *der,
    size_t *der_len);
static ngx_int_t ngx_http_toll_jwt_identity(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx);

static char *ngx_http_toll_jwt_load_pem(ngx_conf_t *cf,
    ngx_http_toll_jwt_key_t *key, ngx_str_t *text, ngx_int_t alg);
static char *ngx_http_toll_jwt_load_jwks(ngx_conf_t *cf,
    ngx_array_t *keys, ngx_str_t *file, ngx_str_t *text, ngx_int_t alg,
    ngx_str_t *kid);
static EVP_PKEY *ngx_http_toll_jwt_jwk_pkey(ngx_conf_t *cf, json_t *jwk,
    ngx_uint_t alg, ngx_str_t *secret);
static char *ngx_http_toll_jwt_key_check(ngx_conf_t *cf,
    ngx_http_toll_jwt_key_t *key);
static ngx_int_t ngx_http_toll_jwt_pem(ngx_conf_t *cf,
    ngx_http_toll_jwt_key_t *key);
static ngx_int_t ngx_http_toll_jwt_conf_b64(ngx_conf_t *cf, json_t *v,
    ngx_str_t *out);
static void ngx_http_toll_jwt_hash_str(SHA256_CTX *sha, ngx_str_t *s);
static void ngx_http_toll_jwt_pkey_cleanup(void *data);


/* ------------------------------------------------------------ requests */


ngx_uint_t
ngx_http_toll_jwt_bearer(ngx_str_t *value, ngx_str_t *token)
{
    u_char  *p, *last;

    p = value->data;
    last = p + value->len;

    if (value->len < sizeof("Bearer ") - 1
        || ngx_strncasecmp(p, (u_char *) "Bearer", sizeof("Bearer") - 1)
           != 0)
    {
        return 0;
    }

    p += sizeof("Bearer") - 1;

    if (*p != ' ' && *p != '\t') {
        return 0;
    }

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    if (ngx_strlchr(p, last, '.') == NULL) {
        return 0;
    }

    /* whatever else it holds, trailing bytes included, is refused later */

    token->data = p;
    token->len = last - p;

    return 1;
}


ngx_int_t
ngx_http_toll_jwt_auth(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_str_t *token)
{
    ngx_int_t                      rc;
    ngx_msec_t                     ttl;
    ngx_str_t                      cache_id;
    ngx_http_toll_loc_conf_t      *lcf;
    ngx_http_toll_main_conf_t     *mcf;
    ngx_http_toll_auth_status_e    status;
    ngx_http_toll_jwt_identity_t   id;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);
    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    if (token->len > NGX_HTTP_TOLL_JWT_LEN_MAX) {
        ctx->auth_detail = "token too long";
        ctx->auth_status = NGX_HTTP_TOLL_AUTH_MALFORMED;
        return NGX_HTTP_UNAUTHORIZED;
    }

    if (ngx_http_toll_jwt_cache_id(r, lcf, token, &cache_id) != NGX_OK) {
        return NGX_ERROR;
    }

    /*
     * A hit is this very token, verified under this very policy: the key
     * of the entry hashes both.  Only its time can have run out since.
     */

    rc = ngx_http_toll_shm_key_get(mcf->shm_zone, &cache_id,
                                   NGX_HTTP_TOLL_SHM_JWT, &ctx->key,
                                   r->pool);
    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == NGX_OK && ctx->key.found) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "toll jwt: cache hit");

        if (ngx_http_toll_jwt_identity(r, ctx) != NGX_OK) {
            return NGX_ERROR;
        }

        if (ctx->key.expires_at && ctx->key.expires_at <= ngx_time()) {
            ctx->auth_detail = "exp has passed";
            ctx->auth_status = NGX_HTTP_TOLL_AUTH_EXPIRED;
            return NGX_HTTP_UNAUTHORIZED;
        }

        ctx->auth_status = NGX_HTTP_TOLL_AUTH_OK;
        return NGX_OK;
    }

    if (ctx->lookup_refused) {
        /*
         * The address is over its toll_limit_ip ... unauthenticated
         * limit: a token not in the cache is refused unverified (429),
         * as an API key not in the cache is refused unlooked-up, so that
         * a client forging tokens costs a hash and a tree lookup each,
         * not a signature check.
         */
        return NGX_DECLINED;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "toll jwt: cache miss, verifying the signature");

    ngx_memzero(&id, sizeof(ngx_http_toll_jwt_identity_t));

    status = ngx_http_toll_jwt_verify(r, ctx, lcf, token, &id);

    if (status == NGX_HTTP_TOLL_AUTH_NONE) {
        return NGX_ERROR;
    }

    if (status != NGX_HTTP_TOLL_AUTH_OK) {
        ngx_memzero(&ctx->key, sizeof(ngx_http_toll_key_t));
        ctx->key.rate_limit = -1;
        ctx->auth_status = status;
        return NGX_HTTP_UNAUTHORIZED;
    }

    ngx_memzero(&ctx->key, sizeof(ngx_http_toll_key_t));

    ctx->key.key_id = cache_id;
    ctx->key.owner = id.buyer;
    ctx->key.plan = id.plan;
    ctx->key.rate_limit = -1;
    ctx->key.expires_at = id.expires_at;
    ctx->key.role = TOLL_ROLE_BUYER;
    ctx->key.found = 1;

    /* the caller's stable id, for limits: the token changes, the buyer not */

    if (toll_secret_hash(id.buyer.data, id.buyer.len, ctx->key.secret_hash)
        != 0)
    {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "toll: libcrypto failed to hash a buyer");
        return NGX_ERROR;
    }

    ttl = lcf->jwt_cache_ttl;

    if (id.expires_at) {
        ttl = ngx_min(ttl, (ngx_msec_t) (id.expires_at - ngx_time()) * 1000);
    }

    /* lengths are bounded by the claim checks, as the cache requires */

    ngx_http_toll_shm_key_put(mcf->shm_zone, &ctx->key, ttl,
                              r->connection->log);

    if (ngx_http_toll_jwt_identity(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->auth_status = NGX_HTTP_TOLL_AUTH_OK;

    return NGX_OK;
}


/*
 * "jwt:" and the hex SHA-256 of the location's policy fingerprint and the
 * token.  API key ids have no ':', so the two kinds never meet in the
 * cache; and a token verified under one issuer, audience or key set is
 * not taken as verified under another.
 */

static ngx_int_t
ngx_http_toll_jwt_cache_id(ngx_http_request_t *r,
    ngx_http_toll_loc_conf_t *lcf, ngx_str_t *token, ngx_str_t *id)
{
    u_char      *p;
    u_char       md[SHA256_DIGEST_LENGTH];
    SHA256_CTX   sha;

    p = ngx_pnalloc(r->pool, sizeof(NGX_HTTP_TOLL_JWT_CACHE_PREFIX) - 1
                             + 2 * SHA256_DIGEST_LENGTH);
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (SHA256_Init(&sha) != 1
        || SHA256_Update(&sha, lcf->jwt_policy, sizeof(lcf->jwt_policy)) != 1
        || SHA256_Update(&sha, token->data, token->len) != 1
        || SHA256_Final(md, &sha) != 1)
    {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "toll: libcrypto failed to hash a token");
        return NGX_ERROR;
    }

    id->data = p;
    p = ngx_cpymem(p, NGX_HTTP_TOLL_JWT_CACHE_PREFIX,
                   sizeof(NGX_HTTP_TOLL_JWT_CACHE_PREFIX) - 1);
    toll_hex_encode(md, SHA256_DIGEST_LENGTH, (char *) p);
    id->len = sizeof(NGX_HTTP_TOLL_JWT_CACHE_PREFIX) - 1
              + 2 * SHA256_DIGEST_LENGTH;

    return NGX_OK;
}


/* ctx->key_id: "jwt:" and the head of SHA-256(buyer), kept in the record */

static ngx_int_t
ngx_http_toll_jwt_identity(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    u_char  *p;

    p = ngx_pnalloc(r->pool, sizeof(NGX_HTTP_TOLL_JWT_CACHE_PREFIX) - 1
                             + NGX_HTTP_TOLL_JWT_ID_HEX_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ctx->key_id.data = p;
    p = ngx_cpymem(p, NGX_HTTP_TOLL_JWT_CACHE_PREFIX,
                   sizeof(NGX_HTTP_TOLL_JWT_CACHE_PREFIX) - 1);
    toll_hex_encode(ctx->key.secret_hash, NGX_HTTP_TOLL_JWT_ID_HEX_LEN / 2,
                    (char *) p);
    ctx->key_id.len = sizeof(NGX_HTTP_TOLL_JWT_CACHE_PREFIX) - 1
                      + NGX_HTTP_TOLL_JWT_ID_HEX_LEN;

    ctx->key.key_id = ctx->key_id;

    return NGX_OK;
}


/*
 * Returns the verdict; NGX_HTTP_TOLL_AUTH_NONE means an internal error
 * (memory, libcrypto), not a refusal.
 */

static ngx_http_toll_auth_status_e
ngx_http_toll_jwt_verify(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_loc_conf_t *lcf, ngx_str_t *token,
    ngx_http_toll_jwt_identity_t *id)
{
    u_char                       *buf;
    ssize_t                       sig_len;
    ngx_int_t                     rc;
    json_t                       *header, *claims;
    toll_jwt_header_t             h;
    toll_jwt_segments_t           seg;
    ngx_http_toll_jwt_key_t      *key;
    ngx_http_toll_main_conf_t    *mcf;
    ngx_http_toll_auth_status_e   status;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    header = NULL;
    claims = NULL;

    if (toll_jwt_split(token->data, token->len, &seg, &ctx->auth_detail)
        != TOLL_JWT_OK)
    {
        return NGX_HTTP_TOLL_AUTH_MALFORMED;
    }

    /*
     * One buffer for the decoded segments, each shorter than the token,
     * one after the other: jansson copies what it parses, and the
     * signature is checked before the payload is decoded.
     */

    buf = ngx_pnalloc(r->pool, token->len);
    if (buf == NULL) {
        return NGX_HTTP_TOLL_AUTH_NONE;
    }

    header = toll_jwt_json(seg.header, seg.header_len, buf);
    if (header == NULL) {
        ctx->auth_detail = "the header is not base64url of a JSON object";
        status = NGX_HTTP_TOLL_AUTH_MALFORMED;
        goto done;
    }

    if (toll_jwt_header_decode(header, &h, &ctx->auth_detail)
        != TOLL_JWT_OK)
    {
        status = NGX_HTTP_TOLL_AUTH_UNKNOWN;
        goto done;
    }

    key = ngx_http_toll_jwt_select_key(ctx, mcf->jwt_keys, &h);
    if (key == NULL) {
        status = NGX_HTTP_TOLL_AUTH_UNKNOWN;
        goto done;
    }

    sig_len = toll_jwt_b64url_decode(buf, seg.signature, seg.signature_len);

    if (sig_len < 0) {
        ctx->auth_detail = "the signature is not base64url";
        status = NGX_HTTP_TOLL_AUTH_MALFORMED;
        goto done;
    }

    if ((size_t) sig_len != key->sig_len) {
        ctx->auth_detail = "the signature has the wrong length";
        status = NGX_HTTP_TOLL_AUTH_WRONG_SECRET;
        goto done;
    }

    /*
     * The signature before the payload: what a token claims is read only
     * once its issuer is known to have said it.  A forged token is
     * refused as forged whatever it claims, and the JSON parser never
     * sees a payload nobody signed.
     */

    rc = ngx_http_toll_jwt_signature(key, token->data,
                                     seg.signature - 1 - token->data,
                                     buf, sig_len);

    if (rc == NGX_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "toll: libcrypto failed to verify a JWT signature");
        ERR_clear_error();
        status = NGX_HTTP_TOLL_AUTH_NONE;
        goto done;
    }

    if (rc != NGX_OK) {
        ctx->auth_detail = "the signature does not verify";
        status = NGX_HTTP_TOLL_AUTH_WRONG_SECRET;
        goto done;
    }

    claims = toll_jwt_json(seg.payload, seg.payload_len, buf);
    if (claims == NULL) {
        ctx->auth_detail = "the payload is not base64url of a JSON object";
        status = NGX_HTTP_TOLL_AUTH_MALFORMED;
        goto done;
    }

    status = ngx_http_toll_jwt_claims(r, ctx, lcf, claims, id);

done:

    if (header) {
        json_decref(header);
    }

    if (claims) {
        json_decref(claims);
    }

    return status;
}


/*
 * The key pins the algorithm: the token's "alg" only picks among keys of
 * that algorithm ("none", "None", "HS256" before an RSA key: no key), and
 * its "kid" only among those.  A token without "kid" is taken only when
 * one key of its algorithm is configured.
 */

static ngx_http_toll_jwt_key_t *
ngx_http_toll_jwt_select_key(ngx_http_toll_ctx_t *ctx, ngx_array_t *keys,
    toll_jwt_header_t *h)
{
    ngx_uint_t                i, n;
    ngx_http_toll_jwt_key_t  *k, *found;

    k = keys ? keys->elts : NULL;
    n = 0;
    found = NULL;

    for (i = 0; keys && i < keys->nelts; i++) {
        if (k[i].alg != (ngx_uint_t) h->alg) {
            continue;
        }

        if (h->kid == NULL) {
            n++;
            found = &k[i];
            continue;
        }

        if (k[i].kid.len == h->kid_len
            && ngx_memcmp(k[i].kid.data, h->kid, h->kid_len) == 0)
        {
            return &k[i];
        }
    }

    if (h->kid) {
        ctx->auth_detail = "a \"kid\" no key of its \"alg\" has";
        return NULL;
    }

    if (n != 1) {
        ctx->auth_detail = (n == 0) ? "an \"alg\" no key has"
                                    : "no \"kid\", and several keys of "
                                      "its \"alg\"";
        return NULL;
    }

    return found;
}


/*
 * The claims, read by lib/toll_jwt_parse.c against the location's
 * policy; the buyer and the plan are copied into the request's pool, as
 * the claims are freed before the request is.
 */

static ngx_http_toll_auth_status_e
ngx_http_toll_jwt_claims(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_loc_conf_t *lcf, json_t *claims,
    ngx_http_toll_jwt_identity_t *id)
{
    toll_jwt_rc_e       rc;
    toll_jwt_policy_t   pol;
    toll_jwt_claims_t   out;

    pol.issuer = (const char *) lcf->jwt_issuer.data;
    pol.issuer_len = lcf->jwt_issuer.len;
    pol.audience = (const char *) lcf->jwt_audience.data;
    pol.audience_len = lcf->jwt_audience.len;
    pol.leeway = lcf->jwt_leeway;
    pol.require_exp = lcf->jwt_require_exp ? 1 : 0;
    pol.buyer_claim = (const char *) lcf->jwt_buyer_claim.data;
    pol.plan_claim = lcf->jwt_plan_claim.len
                     ? (const char *) lcf->jwt_plan_claim.data : NULL;
    pol.plan_prefix = (const char *) lcf->jwt_plan_prefix.data;
    pol.plan_prefix_len = lcf->jwt_plan_prefix.len;
    pol.default_plan = (const char *) lcf->jwt_default_plan.data;
    pol.default_plan_len = lcf->jwt_default_plan.len;

    rc = toll_jwt_claims_decode(claims, &pol, ngx_time(), &out,
                                &ctx->auth_detail);

    if (rc == TOLL_JWT_EXPIRED) {
        return NGX_HTTP_TOLL_AUTH_EXPIRED;
    }

    if (rc != TOLL_JWT_OK) {
        return NGX_HTTP_TOLL_AUTH_CLAIMS;
    }

    id->expires_at = (time_t) out.expires_at;

    id->buyer.len = out.buyer_len;
    id->buyer.data = ngx_pnalloc(r->pool, out.buyer_len);
    if (id->buyer.data == NULL) {
        return NGX_HTTP_TOLL_AUTH_NONE;
    }

    ngx_memcpy(id->buyer.data, out.buyer, out.buyer_len);

    ngx_str_null(&id->plan);

    if (out.plan_len) {
        id->plan.len = out.plan_len;
        id->plan.data = ngx_pnalloc(r->pool, out.plan_len);
        if (id->plan.data == NULL) {
            return NGX_HTTP_TOLL_AUTH_NONE;
        }

        ngx_memcpy(id->plan.data, out.plan, out.plan_len);
    }

    return NGX_HTTP_TOLL_AUTH_OK;
}


/*
 * NGX_OK: the signature verifies; NGX_DECLINED: it does not; NGX_ERROR:
 * libcrypto failed (memory).  Every algorithm is checked with the key
 * parsed at configuration time: no PEM text is parsed per token.  HS256
 * is compared in constant time, so that the time of a refusal does not
 * tell how much of a forged MAC was right.
 */

static ngx_int_t
ngx_http_toll_jwt_signature(ngx_http_toll_jwt_key_t *key, u_char *data,
    size_t len, u_char *sig, size_t sig_len)
{
    int            rc;
    u_char         mac[EVP_MAX_MD_SIZE];
    u_char         der[80];
    size_t         der_len;
    unsigned int   mac_len;
    EVP_MD_CTX    *md;
    const EVP_MD  *digest;

    if (key->alg == NGX_HTTP_TOLL_JWT_HS256) {
        if (HMAC(EVP_sha256(), key->material.data, (int) key->material.len,
                 data, len, mac, &mac_len)
            == NULL)
        {
            return NGX_ERROR;
        }

        return (mac_len == sig_len && CRYPTO_memcmp(mac, sig, sig_len) == 0)
               ? NGX_OK : NGX_DECLINED;
    }

    digest = EVP_sha256();

    if (key->alg == NGX_HTTP_TOLL_JWT_ES256) {
        /* JWS sends R || S; OpenSSL takes an ASN.1 ECDSA-Sig-Value */

        if (ngx_http_toll_jwt_es256_der(sig, der, &der_len) != NGX_OK) {
            return NGX_ERROR;
        }

        sig = der;
        sig_len = der_len;

    } else if (key->alg == NGX_HTTP_TOLL_JWT_EDDSA) {
        /* Ed25519 hashes the message itself: no digest is given */
        digest = NULL;
    }

    /* RS256: RSASSA-PKCS1-v1_5, OpenSSL's default padding for RSA */

    md = EVP_MD_CTX_new();
    if (md == NULL) {
        return NGX_ERROR;
    }

    if (EVP_DigestVerifyInit(md, NULL, digest, NULL, key->pkey) != 1) {
        EVP_MD_CTX_free(md);
        return NGX_ERROR;
    }

    rc = EVP_DigestVerify(md, sig, sig_len, data, len);

    EVP_MD_CTX_free(md);

    if (rc != 1) {
        /*
         * A forgery leaves its reasons in the thread's error queue; left
         * there, they would be reported by the next TLS error nginx logs.
         */
        ERR_clear_error();
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* the 64 bytes R || S of an ES256 signature, as DER (at most 72 bytes) */

static ngx_int_t
ngx_http_toll_jwt_es256_der(u_char *sig, u_char *der, size_t *der_len)
{
    int         n;
    BIGNUM     *br, *bs;
    u_char     *p;
    ECDSA_SIG  *es;

    es = ECDSA_SIG_new();
    br = BN_bin2bn(sig, 32, NULL);
    bs = BN_bin2bn(sig + 32, 32, NULL);

    if (es == NULL || br == NULL || bs == NULL
        || ECDSA_SIG_set0(es, br, bs) != 1)
    {
        ECDSA_SIG_free(es);
        BN_free(br);
        BN_free(bs);
        return NGX_ERROR;
    }

    /* es owns br and bs now */

    n = i2d_ECDSA_SIG(es, NULL);

    if (n <= 0 || n > 80) {
        ECDSA_SIG_free(es);
        return NGX_ERROR;
    }

    p = der;
    n = i2d_ECDSA_SIG(es, &p);

    ECDSA_SIG_free(es);

    if (n <= 0) {
        return NGX_ERROR;
    }

    *der_len = n;

    return NGX_OK;
}


/* ------------------------------------------------------- configuration */


/*
 * toll_jwt_key FILE [alg=RS256|ES256|EdDSA|HS256] [kid=ID];
 *
 * FILE is a PEM public key (its type gives the algorithm, which alg=
 * may only confirm), a raw secret with alg=HS256, or a JWKS file (each
 * key's "kty", "alg" and "kid" from the file).
 */

char *
ngx_http_toll_jwt_key_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_toll_main_conf_t *mcf = conf;

    u_char                   *p, *buf;
    char                     *rv;
    size_t                    size;
    ssize_t                   n;
    ngx_fd_t                  fd;
    ngx_str_t                *value, file, text, kid;
    ngx_int_t                 alg;
    ngx_uint_t                i, j;
    ngx_file_info_t           fi;
    ngx_http_toll_jwt_key_t  *key, *k;

    value = cf->args->elts;

    file = value[1];
    alg = -1;
    ngx_str_null(&kid);

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "alg=", 4) == 0) {
            for (j = 0; j < NGX_HTTP_TOLL_JWT_ALGS; j++) {
                if (value[i].len - 4 == ngx_http_toll_jwt_algs[j].name.len
                    && ngx_strncmp(value[i].data + 4,
                                   ngx_http_toll_jwt_algs[j].name.data,
                                   value[i].len - 4) == 0)
                {
                    alg = j;
                    break;
                }
            }

            if (alg < 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid algorithm \"%V\", expected "
                                   "RS256, ES256, EdDSA or HS256",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "kid=", 4) == 0) {
            kid.data = value[i].data + 4;
            kid.len = value[i].len - 4;

            if (kid.len == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "empty key id in \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (ngx_conf_full_name(cf->cycle, &file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    /* configuration time: a blocking read is what nginx does here too */

    fd = ngx_open_file(file.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", &file);
        return NGX_CONF_ERROR;
    }

    buf = NULL;
    rv = NGX_CONF_ERROR;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_fd_info_n " \"%V\" failed", &file);
        goto close;
    }

    size = (size_t) ngx_file_size(&fi);

    if (size == 0 || size > NGX_HTTP_TOLL_JWT_FILE_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "key file \"%V\" is empty or too large", &file);
        goto close;
    }

    buf = ngx_pnalloc(cf->pool, size + 1);
    if (buf == NULL) {
        goto close;
    }

    n = ngx_read_fd(fd, buf, size);

    if (n != (ssize_t) size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_read_fd_n " \"%V\" failed", &file);
        goto close;
    }

    buf[size] = '\0';
    rv = NGX_CONF_OK;

close:

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_ALERT, cf, ngx_errno,
                           ngx_close_file_n " \"%V\" failed", &file);
    }

    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (mcf->jwt_keys == NULL) {
        mcf->jwt_keys = ngx_array_create(cf->pool, 4,
                                         sizeof(ngx_http_toll_jwt_key_t));
        if (mcf->jwt_keys == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    text.data = buf;
    text.len = size;

    for (p = buf;
         p < buf + size
         && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n');
         p++)
    {
        /* void */
    }

    if (*p == '{') {
        if (kid.len) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"kid\" cannot be given for the JWKS file "
                               "\"%V\": its keys name themselves", &file);
            return NGX_CONF_ERROR;
        }

        i = mcf->jwt_keys->nelts;

        rv = ngx_http_toll_jwt_load_jwks(cf, mcf->jwt_keys, &file, &text,
                                         alg, &kid);
        if (rv != NGX_CONF_OK) {
            return rv;
        }

        if (mcf->jwt_keys->nelts == i) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "no usable key in the JWKS file \"%V\"",
                               &file);
            return NGX_CONF_ERROR;
        }

    } else {
        key = ngx_array_push(mcf->jwt_keys);
        if (key == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(key, sizeof(ngx_http_toll_jwt_key_t));
        key->file = file;
        key->kid = kid;

        if (ngx_strstr(buf, "-----BEGIN") != NULL) {
            if (alg == NGX_HTTP_TOLL_JWT_HS256) {
                /*
                 * A public key used as an HMAC secret is the very
                 * confusion an attacker would sign with.
                 */
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"%V\" is a PEM file, and an HS256 "
                                   "secret must not be one", &file);
                return NGX_CONF_ERROR;
            }

            rv = ngx_http_toll_jwt_load_pem(cf, key, &text, alg);
            if (rv != NGX_CONF_OK) {
                return rv;
            }

        } else if (alg == NGX_HTTP_TOLL_JWT_HS256) {
            /* the file's bytes; the newline an editor adds is not key */

            if (size && buf[size - 1] == '\n') {
                size--;
            }

            if (size && buf[size - 1] == '\r') {
                size--;
            }

            key->alg = NGX_HTTP_TOLL_JWT_HS256;
            key->material.data = buf;
            key->material.len = size;
            key->sig_len = SHA256_DIGEST_LENGTH;

            if (size < NGX_HTTP_TOLL_JWT_HMAC_MIN) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "HS256 secret in \"%V\" is %uz bytes, "
                                   "the minimum is %d", &file, size,
                                   NGX_HTTP_TOLL_JWT_HMAC_MIN);
                return NGX_CONF_ERROR;
            }

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" is neither a PEM public key nor a "
                               "JWKS file; an HS256 secret needs "
                               "\"alg=HS256\"", &file);
            return NGX_CONF_ERROR;
        }
    }

    /* one key per algorithm and key id, or rotation would be a guess */

    k = mcf->jwt_keys->elts;

    for (i = 0; i < mcf->jwt_keys->nelts; i++) {
        for (j = 0; j < i; j++) {
            if (k[i].alg == k[j].alg && k[i].kid.len == k[j].kid.len
                && ngx_strncmp(k[i].kid.data, k[j].kid.data, k[i].kid.len)
                   == 0)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "duplicate %V key%s%V in \"%V\"",
                                   &ngx_http_toll_jwt_algs[k[i].alg].name,
                                   k[i].kid.len ? " id " : " without id",
                                   &k[i].kid, &k[i].file);
                return NGX_CONF_ERROR;
            }
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_toll_jwt_load_pem(ngx_conf_t *cf, ngx_http_toll_jwt_key_t *key,
    ngx_str_t *text, ngx_int_t alg)
{
    BIO                 *bio;
    EVP_PKEY            *pkey;
    ngx_pool_cleanup_t  *cln;

    bio = BIO_new_mem_buf(text->data, (int) text->len);
    if (bio == NULL) {
        return NGX_CONF_ERROR;
    }

    pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);

    if (pkey == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "no PEM public key in \"%V\" (a private key is "
                           "not accepted)", &key->file);
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        EVP_PKEY_free(pkey);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_toll_jwt_pkey_cleanup;
    cln->data = pkey;

    key->pkey = pkey;

    switch (EVP_PKEY_get_base_id(pkey)) {

    case EVP_PKEY_RSA:
        key->alg = NGX_HTTP_TOLL_JWT_RS256;
        break;

    case EVP_PKEY_EC:
        key->alg = NGX_HTTP_TOLL_JWT_ES256;
        break;

    case EVP_PKEY_ED25519:
        key->alg = NGX_HTTP_TOLL_JWT_EDDSA;
        break;

    default:
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the key in \"%V\" is neither RSA, EC P-256 "
                           "nor Ed25519", &key->file);
        return NGX_CONF_ERROR;
    }

    if (alg >= 0 && (ngx_uint_t) alg != key->alg) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the key in \"%V\" is not a %V key",
                           &key->file, &ngx_http_toll_jwt_algs[alg].name);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_toll_jwt_key_check(cf, key) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_toll_jwt_pem(cf, key) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* the algorithm's demands on the key, and the signature length it makes */

static char *
ngx_http_toll_jwt_key_check(ngx_conf_t *cf, ngx_http_toll_jwt_key_t *key)
{
    char    group[64];
    size_t  len;

    switch (key->alg) {

    case NGX_HTTP_TOLL_JWT_RS256:
        if (EVP_PKEY_get_bits(key->pkey) < NGX_HTTP_TOLL_JWT_RSA_BITS_MIN) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "the RSA key in \"%V\" has %d bits, the "
                               "minimum is %d", &key->file,
                               EVP_PKEY_get_bits(key->pkey),
                               NGX_HTTP_TOLL_JWT_RSA_BITS_MIN);
            return NGX_CONF_ERROR;
        }

        key->sig_len = EVP_PKEY_get_size(key->pkey);
        break;

    case NGX_HTTP_TOLL_JWT_ES256:
        if (EVP_PKEY_get_utf8_string_param(key->pkey,
                                           OSSL_PKEY_PARAM_GROUP_NAME,
                                           group, sizeof(group), &len)
            != 1
            || ngx_strcmp(group, "prime256v1") != 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "the EC key in \"%V\" is not on P-256, "
                               "which ES256 requires", &key->file);
            return NGX_CONF_ERROR;
        }

        key->sig_len = 64;
        break;

    default: /* NGX_HTTP_TOLL_JWT_EDDSA */
        key->sig_len = 64;
        break;
    }

    return NGX_CONF_OK;
}


/*
 * The key as PEM text, once: it goes into the policy fingerprint, so that
 * a reload with another key starts the cache afresh.  Tokens are verified
 * with key->pkey.
 */

static ngx_int_t
ngx_http_toll_jwt_pem(ngx_conf_t *cf, ngx_http_toll_jwt_key_t *key)
{
    BIO   *bio;
    char  *data;
    long   len;

    if (key->alg == NGX_HTTP_TOLL_JWT_EDDSA) {
        /* its raw public key goes into the fingerprint instead */
        return NGX_OK;
    }

    bio = BIO_new(BIO_s_mem());
    if (bio == NULL) {
        return NGX_ERROR;
    }

    if (PEM_write_bio_PUBKEY(bio, key->pkey) != 1) {
        BIO_free(bio);
        return NGX_ERROR;
    }

    len = BIO_get_mem_data(bio, &data);

    key->material.data = ngx_pnalloc(cf->pool, len + 1);
    if (key->material.data == NULL) {
        BIO_free(bio);
        return NGX_ERROR;
    }

    ngx_memcpy(key->material.data, data, len);
    key->material.data[len] = '\0';
    key->material.len = len;

    BIO_free(bio);

    return NGX_OK;
}


static char *
ngx_http_toll_jwt_load_jwks(ngx_conf_t *cf, ngx_array_t *keys,
    ngx_str_t *file, ngx_str_t *text, ngx_int_t alg, ngx_str_t *kid)
{
    char                     *rv;
    size_t                    i;
    json_t                   *jwks, *list, *jwk, *v;
    ngx_uint_t                a;
    json_error_t              err;
    ngx_pool_cleanup_t       *cln;
    ngx_http_toll_jwt_key_t  *key;

    jwks = json_loadb((char *) text->data, text->len, JSON_REJECT_DUPLICATES,
                      &err);
    if (jwks == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid JSON in \"%V\", line %d: %s",
                           file, err.line, err.text);
        return NGX_CONF_ERROR;
    }

    rv = NGX_CONF_ERROR;

    list = json_object_get(jwks, "keys");

    if (!json_is_array(list)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" has no \"keys\" array", file);
        goto done;
    }

    for (i = 0; i < json_array_size(list); i++) {
        jwk = json_array_get(list, i);

        if (!json_is_object(jwk)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "key %uz in \"%V\" is not an object", i, file);
            goto done;
        }

        /* keys for encryption are not for us */

        v = json_object_get(jwk, "use");
        if (v && !(json_is_string(v)
                   && ngx_strcmp(json_string_value(v), "sig") == 0))
        {
            continue;
        }

        /* the algorithm: the key's "alg", else its kind's only one */

        v = json_object_get(jwk, "alg");

        if (v) {
            for (a = 0; a < NGX_HTTP_TOLL_JWT_ALGS; a++) {
                if (json_is_string(v)
                    && ngx_strcmp(json_string_value(v),
                                  ngx_http_toll_jwt_algs[a].name.data) == 0)
                {
                    break;
                }
            }

            if (a == NGX_HTTP_TOLL_JWT_ALGS) {
                ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                                   "skipping key %uz of \"%V\": its "
                                   "\"alg\" is not RS256, ES256, EdDSA or "
                                   "HS256", i, file);
                continue;
            }

        } else {
            v = json_object_get(jwk, "kty");

            if (!json_is_string(v)) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "key %uz in \"%V\" has no \"kty\"",
                                   i, file);
                goto done;
            }

            if (ngx_strcmp(json_string_value(v), "RSA") == 0) {
                a = NGX_HTTP_TOLL_JWT_RS256;

            } else if (ngx_strcmp(json_string_value(v), "EC") == 0) {
                a = NGX_HTTP_TOLL_JWT_ES256;

            } else if (ngx_strcmp(json_string_value(v), "OKP") == 0) {
                a = NGX_HTTP_TOLL_JWT_EDDSA;

            } else if (ngx_strcmp(json_string_value(v), "oct") == 0) {
                a = NGX_HTTP_TOLL_JWT_HS256;

            } else {
                ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                                   "skipping key %uz of \"%V\": unknown "
                                   "\"kty\"", i, file);
                continue;
            }
        }

        if (alg >= 0 && (ngx_uint_t) alg != a) {
            /* alg= picks the keys of one algorithm out of the set */
            continue;
        }

        key = ngx_array_push(keys);
        if (key == NULL) {
            goto done;
        }

        ngx_memzero(key, sizeof(ngx_http_toll_jwt_key_t));
        key->file = *file;
        key->alg = a;

        v = json_object_get(jwk, "kid");

        if (v) {
            if (!json_is_string(v) || json_string_length(v) == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "key %uz in \"%V\" has an invalid "
                                   "\"kid\"", i, file);
                goto done;
            }

            key->kid.len = json_string_length(v);
            key->kid.data = ngx_pnalloc(cf->pool, key->kid.len);
            if (key->kid.data == NULL) {
                goto done;
            }

            ngx_memcpy(key->kid.data, json_string_value(v), key->kid.len);
        }

        key->pkey = ngx_http_toll_jwt_jwk_pkey(cf, jwk, a, &key->material);

        if (a == NGX_HTTP_TOLL_JWT_HS256) {
            if (key->material.len == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "key %uz in \"%V\" is not a valid "
                                   "\"oct\" key", i, file);
                goto done;
            }

            if (key->material.len < NGX_HTTP_TOLL_JWT_HMAC_MIN) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "HS256 key %uz in \"%V\" is %uz bytes, "
                                   "the minimum is %d", i, file,
                                   key->material.len,
                                   NGX_HTTP_TOLL_JWT_HMAC_MIN);
                goto done;
            }

            key->sig_len = SHA256_DIGEST_LENGTH;
            continue;
        }

        if (key->pkey == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "key %uz in \"%V\" is not a valid %V key",
                               i, file, &ngx_http_toll_jwt_algs[a].name);
            goto done;
        }

        cln = ngx_pool_cleanup_add(cf->pool, 0);
        if (cln == NULL) {
            EVP_PKEY_free(key->pkey);
            goto done;
        }

        cln->handler = ngx_http_toll_jwt_pkey_cleanup;
        cln->data = key->pkey;

        if (ngx_http_toll_jwt_key_check(cf, key) != NGX_CONF_OK
            || ngx_http_toll_jwt_pem(cf, key) != NGX_OK)
        {
            goto done;
        }
    }

    rv = NGX_CONF_OK;

done:

    json_decref(jwks);

    return rv;
}


/* a public key from a JWK's members; for "oct", the secret instead */

static EVP_PKEY *
ngx_http_toll_jwt_jwk_pkey(ngx_conf_t *cf, json_t *jwk, ngx_uint_t alg,
    ngx_str_t *secret)
{
    u_char          *pub;
    BIGNUM          *n, *e;
    EVP_PKEY        *pkey;
    ngx_str_t        a, b;
    OSSL_PARAM      *params;
    EVP_PKEY_CTX    *pctx;
    OSSL_PARAM_BLD  *bld;

    pkey = NULL;
    n = NULL;
    e = NULL;
    bld = NULL;
    params = NULL;
    pctx = NULL;

    switch (alg) {

    case NGX_HTTP_TOLL_JWT_HS256:
        if (ngx_http_toll_jwt_conf_b64(cf, json_object_get(jwk, "k"), secret)
            != NGX_OK)
        {
            ngx_str_null(secret);
        }

        return NULL;

    case NGX_HTTP_TOLL_JWT_EDDSA:
        if (ngx_http_toll_jwt_conf_b64(cf, json_object_get(jwk, "x"), &a)
            != NGX_OK
            || a.len != 32
            || !json_is_string(json_object_get(jwk, "crv"))
            || ngx_strcmp(json_string_value(json_object_get(jwk, "crv")),
                          "Ed25519") != 0)
        {
            return NULL;
        }

        return EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, a.data,
                                           a.len);

    case NGX_HTTP_TOLL_JWT_ES256:
        if (ngx_http_toll_jwt_conf_b64(cf, json_object_get(jwk, "x"), &a)
            != NGX_OK
            || ngx_http_toll_jwt_conf_b64(cf, json_object_get(jwk, "y"), &b)
               != NGX_OK
            || a.len != 32 || b.len != 32
            || !json_is_string(json_object_get(jwk, "crv"))
            || ngx_strcmp(json_string_value(json_object_get(jwk, "crv")),
                          "P-256") != 0)
        {
            return NULL;
        }

        pub = ngx_pnalloc(cf->pool, 65);
        if (pub == NULL) {
            return NULL;
        }

        pub[0] = 0x04;  /* uncompressed point */
        ngx_memcpy(pub + 1, a.data, 32);
        ngx_memcpy(pub + 33, b.data, 32);

        bld = OSSL_PARAM_BLD_new();
        if (bld == NULL
            || OSSL_PARAM_BLD_push_utf8_string(bld,
                   OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) != 1
            || OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY,
                                                pub, 65) != 1)
        {
            goto done;
        }

        pctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
        break;

    default: /* NGX_HTTP_TOLL_JWT_RS256 */
        if (ngx_http_toll_jwt_conf_b64(cf, json_object_get(jwk, "n"), &a)
            != NGX_OK
            || ngx_http_toll_jwt_conf_b64(cf, json_object_get(jwk, "e"), &b)
               != NGX_OK)
        {
            return NULL;
        }

        n = BN_bin2bn(a.data, (int) a.len, NULL);
        e = BN_bin2bn(b.data, (int) b.len, NULL);

        bld = OSSL_PARAM_BLD_new();
        if (n == NULL || e == NULL || bld == NULL
            || OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) != 1
            || OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) != 1)
        {
            goto done;
        }

        pctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
        break;
    }

    params = OSSL_PARAM_BLD_to_param(bld);

    if (pctx == NULL || params == NULL
        || EVP_PKEY_fromdata_init(pctx) != 1
        || EVP_PKEY_fromdata(pctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
    {
        pkey = NULL;
    }

done:

    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX_free(pctx);
    BN_free(n);
    BN_free(e);

    return pkey;
}


static ngx_int_t
ngx_http_toll_jwt_conf_b64(ngx_conf_t *cf, json_t *v, ngx_str_t *out)
{
    ssize_t  n;

    if (!json_is_string(v) || json_string_length(v) == 0) {
        return NGX_ERROR;
    }

    out->data = ngx_pnalloc(cf->pool, json_string_length(v));
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    n = toll_jwt_b64url_decode(out->data,
                               (u_char *) json_string_value(v),
                               json_string_length(v));
    if (n <= 0) {
        return NGX_ERROR;
    }

    out->len = n;

    return NGX_OK;
}


static void
ngx_http_toll_jwt_pkey_cleanup(void *data)
{
    EVP_PKEY_free(data);
}


/* toll_jwt_plan_claim NAME [prefix=STR]; */

char *
ngx_http_toll_jwt_plan_claim_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_toll_loc_conf_t *lcf = conf;

    ngx_str_t  *value;

    if (lcf->jwt_plan_claim.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 0) {
        return "must name a claim";
    }

    lcf->jwt_plan_claim = value[1];
    ngx_str_set(&lcf->jwt_plan_prefix, "");

    if (cf->args->nelts == 3) {
        if (ngx_strncmp(value[2].data, "prefix=", 7) != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[2]);
            return NGX_CONF_ERROR;
        }

        lcf->jwt_plan_prefix.data = value[2].data + 7;
        lcf->jwt_plan_prefix.len = value[2].len - 7;
    }

    return NGX_CONF_OK;
}


static void
ngx_http_toll_jwt_hash_str(SHA256_CTX *sha, ngx_str_t *s)
{
    uint64_t  len;

    /* lengths first: ("ab", "c") and ("a", "bc") must not hash alike */

    len = s->len;
    SHA256_Update(sha, &len, sizeof(len));

    if (s->len) {
        SHA256_Update(sha, s->data, s->len);
    }
}


char *
ngx_http_toll_jwt_merge_loc_conf(ngx_conf_t *cf,
    ngx_http_toll_loc_conf_t *prev, ngx_http_toll_loc_conf_t *conf)
{
    u_char                      raw[32];
    size_t                      len;
    uint64_t                    n;
    ngx_uint_t                  i;
    SHA256_CTX                  sha;
    ngx_http_toll_jwt_key_t    *k;
    ngx_http_toll_main_conf_t  *mcf;

    ngx_conf_merge_value(conf->jwt, prev->jwt, 0);
    ngx_conf_merge_str_value(conf->jwt_issuer, prev->jwt_issuer, "");
    ngx_conf_merge_str_value(conf->jwt_audience, prev->jwt_audience, "");
    ngx_conf_merge_sec_value(conf->jwt_leeway, prev->jwt_leeway,
                             NGX_HTTP_TOLL_JWT_LEEWAY);
    ngx_conf_merge_value(conf->jwt_require_exp, prev->jwt_require_exp, 1);
    ngx_conf_merge_str_value(conf->jwt_buyer_claim, prev->jwt_buyer_claim,
                             "sub");
    ngx_conf_merge_str_value(conf->jwt_default_plan, prev->jwt_default_plan,
                             "");
    ngx_conf_merge_msec_value(conf->jwt_cache_ttl, prev->jwt_cache_ttl,
                              NGX_HTTP_TOLL_JWT_CACHE_TTL_MS);

    if (conf->jwt_plan_claim.data == NULL) {
        conf->jwt_plan_claim = prev->jwt_plan_claim;
        conf->jwt_plan_prefix = prev->jwt_plan_prefix;
    }

    if (conf->jwt_leeway > NGX_HTTP_TOLL_JWT_LEEWAY_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"toll_jwt_leeway\" must be at most %d seconds",
                           NGX_HTTP_TOLL_JWT_LEEWAY_MAX);
        return NGX_CONF_ERROR;
    }

    if (conf->jwt_buyer_claim.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"toll_jwt_buyer_claim\" must name a claim");
        return NGX_CONF_ERROR;
    }

    if (!toll_plan_valid(conf->jwt_default_plan.data,
                         conf->jwt_default_plan.len))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid plan name \"%V\" in "
                           "\"toll_jwt_default_plan\"",
                           &conf->jwt_default_plan);
        return NGX_CONF_ERROR;
    }

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_toll_module);

    if (!conf->jwt || !conf->enable) {
        return NGX_CONF_OK;
    }

    if (mcf->jwt_keys == NULL || mcf->jwt_keys->nelts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"toll_jwt\" is on but no \"toll_jwt_key\" is "
                           "configured in the http block");
        return NGX_CONF_ERROR;
    }

    /*
     * The policy's fingerprint, part of every cache entry's key: a token
     * verified under other keys or other claim rules (another location,
     * a configuration since reloaded) is verified again.
     */

    SHA256_Init(&sha);

    k = mcf->jwt_keys->elts;

    for (i = 0; i < mcf->jwt_keys->nelts; i++) {
        n = k[i].alg;
        SHA256_Update(&sha, &n, sizeof(n));
        ngx_http_toll_jwt_hash_str(&sha, &k[i].kid);
        ngx_http_toll_jwt_hash_str(&sha, &k[i].material);

        if (k[i].alg == NGX_HTTP_TOLL_JWT_EDDSA) {
            len = sizeof(raw);

            if (EVP_PKEY_get_raw_public_key(k[i].pkey, raw, &len) == 1) {
                SHA256_Update(&sha, raw, len);
            }
        }
    }

    ngx_http_toll_jwt_hash_str(&sha, &conf->jwt_issuer);
    ngx_http_toll_jwt_hash_str(&sha, &conf->jwt_audience);
    n = (uint64_t) conf->jwt_leeway;
    SHA256_Update(&sha, &n, sizeof(n));
    n = (uint64_t) conf->jwt_require_exp;
    SHA256_Update(&sha, &n, sizeof(n));
    ngx_http_toll_jwt_hash_str(&sha, &conf->jwt_buyer_claim);
    ngx_http_toll_jwt_hash_str(&sha, &conf->jwt_plan_claim);
    ngx_http_toll_jwt_hash_str(&sha, &conf->jwt_plan_prefix);
    ngx_http_toll_jwt_hash_str(&sha, &conf->jwt_default_plan);

    SHA256_Final(conf->jwt_policy, &sha);

    return NGX_CONF_OK;
}
