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
 *
 * This file verifies, caches verified tokens and merges the JWT rules of
 * a location; the keys are read by ngx_http_toll_jwt_keys.c.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#define OPENSSL_SUPPRESS_DEPRECATED

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <jansson.h>

#include "ngx_http_toll_jwt.h"
#include "ngx_http_toll_jwt_keys.h"
#include "ngx_http_toll_authz.h"
#include "ngx_http_toll_jwks.h"
#include "toll_jwt_parse.h"
#include "ngx_http_toll_shm.h"


#define NGX_HTTP_TOLL_JWT_LEEWAY       30          /* seconds */
#define NGX_HTTP_TOLL_JWT_LEEWAY_MAX   86400       /* seconds */
#define NGX_HTTP_TOLL_JWT_CACHE_TTL_MS 300000


/* what the claims made of a verified token */
typedef struct {
    ngx_str_t                  buyer;
    ngx_str_t                  plan;
    ngx_str_t                  scopes;        /* the authz room's lists */
    ngx_str_t                  roles;
    time_t                     expires_at;    /* exp + leeway; 0 never */
} ngx_http_toll_jwt_identity_t;


static ngx_int_t ngx_http_toll_jwt_cache_id(ngx_http_request_t *r,
    ngx_http_toll_loc_conf_t *lcf, ngx_str_t *token, ngx_str_t *id);
static ngx_http_toll_auth_status_e ngx_http_toll_jwt_verify(
    ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_loc_conf_t *lcf, ngx_str_t *token,
    ngx_http_toll_jwt_identity_t *id);
static void ngx_http_toll_jwt_policy_hash(ngx_http_toll_main_conf_t *mcf,
    ngx_http_toll_loc_conf_t *conf);
static ngx_http_toll_auth_status_e ngx_http_toll_jwt_header_key(
    ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx, toll_jwt_segments_t *seg,
    u_char *buf, ngx_http_toll_jwt_key_t **key);
static ngx_http_toll_auth_status_e ngx_http_toll_jwt_check_signature(
    ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_jwt_key_t *key, ngx_str_t *token, toll_jwt_segments_t *seg,
    u_char *buf);
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
static ngx_int_t ngx_http_toll_jwt_verified(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_loc_conf_t *lcf,
    ngx_str_t *cache_id, ngx_http_toll_jwt_identity_t *id);

static void ngx_http_toll_jwt_hash_str(SHA256_CTX *sha, ngx_str_t *s);


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

    if (ngx_http_toll_jwt_verified(r, ctx, lcf, &cache_id, &id) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->auth_status = NGX_HTTP_TOLL_AUTH_OK;

    return NGX_OK;
}


/*
 * A token that verified: its identity becomes the request's key record,
 * cached under the token's id until the cache's TTL or its exp, whichever
 * comes first.
 */

static ngx_int_t
ngx_http_toll_jwt_verified(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_loc_conf_t *lcf, ngx_str_t *cache_id,
    ngx_http_toll_jwt_identity_t *id)
{
    ngx_msec_t                  ttl;
    ngx_http_toll_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    ngx_memzero(&ctx->key, sizeof(ngx_http_toll_key_t));

    ctx->key.key_id = *cache_id;
    ctx->key.owner = id->buyer;
    ctx->key.plan = id->plan;
    ctx->key.rate_limit = -1;
    ctx->key.expires_at = id->expires_at;
    ctx->key.role = TOLL_ROLE_BUYER;
    ctx->key.scopes = id->scopes;
    ctx->key.roles = id->roles;
    ctx->key.found = 1;

    /* the caller's stable id, for limits: the token changes, the buyer not */

    if (toll_secret_hash(id->buyer.data, id->buyer.len, ctx->key.secret_hash)
        != 0)
    {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "toll: libcrypto failed to hash a buyer");
        return NGX_ERROR;
    }

    ttl = lcf->jwt_cache_ttl;

    if (id->expires_at) {
        ttl = ngx_min(ttl, (ngx_msec_t) (id->expires_at - ngx_time()) * 1000);
    }

    /* lengths are bounded by the claim checks, as the cache requires */

    ngx_http_toll_shm_key_put(mcf->shm_zone, &ctx->key, ttl,
                              r->connection->log);

    return ngx_http_toll_jwt_identity(r, ctx);
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
    uint64_t     gen;
    SHA256_CTX   sha;

    p = ngx_pnalloc(r->pool, sizeof(NGX_HTTP_TOLL_JWT_CACHE_PREFIX) - 1
                             + 2 * SHA256_DIGEST_LENGTH);
    if (p == NULL) {
        return NGX_ERROR;
    }

    /* the fetched sets' generations: a rotation checks tokens again */
    gen = ngx_http_toll_jwks_gen();

    if (SHA256_Init(&sha) != 1
        || SHA256_Update(&sha, lcf->jwt_policy, sizeof(lcf->jwt_policy)) != 1
        || (gen && SHA256_Update(&sha, &gen, sizeof(gen)) != 1)
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
    json_t                       *claims;
    toll_jwt_segments_t           seg;
    ngx_http_toll_jwt_key_t      *key;
    ngx_http_toll_auth_status_e   status;

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

    status = ngx_http_toll_jwt_header_key(r, ctx, &seg, buf, &key);
    if (status != NGX_HTTP_TOLL_AUTH_OK) {
        return status;
    }

    /*
     * The signature before the payload: what a token claims is read only
     * once its issuer is known to have said it.  A forged token is
     * refused as forged whatever it claims, and the JSON parser never
     * sees a payload nobody signed.
     */

    status = ngx_http_toll_jwt_check_signature(r, ctx, key, token, &seg,
                                               buf);
    if (status != NGX_HTTP_TOLL_AUTH_OK) {
        return status;
    }

    claims = toll_jwt_json(seg.payload, seg.payload_len, buf);
    if (claims == NULL) {
        ctx->auth_detail = "the payload is not base64url of a JSON object";
        return NGX_HTTP_TOLL_AUTH_MALFORMED;
    }

    status = ngx_http_toll_jwt_claims(r, ctx, lcf, claims, id);

    json_decref(claims);

    return status;
}


/*
 * The token's header, decoded into buf, picks the key that must have
 * signed it: NGX_HTTP_TOLL_AUTH_OK and *key, or the refusal.
 */

static ngx_http_toll_auth_status_e
ngx_http_toll_jwt_header_key(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    toll_jwt_segments_t *seg, u_char *buf, ngx_http_toll_jwt_key_t **key)
{
    json_t                       *header;
    toll_jwt_header_t             h;
    ngx_http_toll_main_conf_t    *mcf;
    ngx_http_toll_auth_status_e   status;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    header = toll_jwt_json(seg->header, seg->header_len, buf);
    if (header == NULL) {
        ctx->auth_detail = "the header is not base64url of a JSON object";
        return NGX_HTTP_TOLL_AUTH_MALFORMED;
    }

    /* h.kid points into the header: it is freed once the key is picked */

    status = NGX_HTTP_TOLL_AUTH_OK;

    if (toll_jwt_header_decode(header, &h, &ctx->auth_detail)
        != TOLL_JWT_OK)
    {
        status = NGX_HTTP_TOLL_AUTH_UNKNOWN;

    } else {
        *key = ngx_http_toll_jwt_select_key(ctx,
                                            ngx_http_toll_jwks_keys(mcf), &h);
        if (*key == NULL) {
            status = NGX_HTTP_TOLL_AUTH_UNKNOWN;

            if (h.kid) {
                /* a key the provider may have just published */
                ngx_http_toll_jwks_miss();
            }
        }
    }

    json_decref(header);

    return status;
}


/*
 * The signature segment, decoded into buf, checked against the signing
 * input with the key: NGX_HTTP_TOLL_AUTH_OK, a refusal, or
 * NGX_HTTP_TOLL_AUTH_NONE when libcrypto failed.
 */

static ngx_http_toll_auth_status_e
ngx_http_toll_jwt_check_signature(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_jwt_key_t *key, ngx_str_t *token,
    toll_jwt_segments_t *seg, u_char *buf)
{
    ssize_t    sig_len;
    ngx_int_t  rc;

    sig_len = toll_jwt_b64url_decode(buf, seg->signature,
                                     seg->signature_len);

    if (sig_len < 0) {
        ctx->auth_detail = "the signature is not base64url";
        return NGX_HTTP_TOLL_AUTH_MALFORMED;
    }

    if ((size_t) sig_len != key->sig_len) {
        ctx->auth_detail = "the signature has the wrong length";
        return NGX_HTTP_TOLL_AUTH_WRONG_SECRET;
    }

    rc = ngx_http_toll_jwt_signature(key, token->data,
                                     seg->signature - 1 - token->data,
                                     buf, sig_len);

    if (rc == NGX_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "toll: libcrypto failed to verify a JWT signature");
        ERR_clear_error();
        return NGX_HTTP_TOLL_AUTH_NONE;
    }

    if (rc != NGX_OK) {
        ctx->auth_detail = "the signature does not verify";
        return NGX_HTTP_TOLL_AUTH_WRONG_SECRET;
    }

    return NGX_HTTP_TOLL_AUTH_OK;
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

    switch (ngx_http_toll_authz_jwt_claims(r, lcf, claims, &id->scopes,
                                           &id->roles, &ctx->auth_detail))
    {
    case NGX_OK:
        return NGX_HTTP_TOLL_AUTH_OK;

    case NGX_DECLINED:
        return NGX_HTTP_TOLL_AUTH_CLAIMS;

    default:
        return NGX_HTTP_TOLL_AUTH_NONE;
    }
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

    if ((mcf->jwt_keys == NULL || mcf->jwt_keys->nelts == 0)
        && mcf->jwks == NULL)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"toll_jwt\" is on but no \"toll_jwt_key\" or "
                           "\"toll_jwt_jwks\" is configured in the http "
                           "block");
        return NGX_CONF_ERROR;
    }

    ngx_http_toll_jwt_policy_hash(mcf, conf);

    return NGX_CONF_OK;
}


/*
 * The policy's fingerprint, part of every cache entry's key: a token
 * verified under other keys or other claim rules (another location, a
 * configuration since reloaded) is verified again.
 */

static void
ngx_http_toll_jwt_policy_hash(ngx_http_toll_main_conf_t *mcf,
    ngx_http_toll_loc_conf_t *conf)
{
    u_char                    raw[32];
    size_t                    len;
    uint64_t                  n;
    ngx_uint_t                i;
    SHA256_CTX                sha;
    ngx_http_toll_jwt_key_t  *k;

    SHA256_Init(&sha);

    k = mcf->jwt_keys ? mcf->jwt_keys->elts : NULL;

    for (i = 0; mcf->jwt_keys && i < mcf->jwt_keys->nelts; i++) {
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

    ngx_http_toll_jwks_policy(mcf, &sha);

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
    ngx_http_toll_authz_policy_hash(&sha, conf);

    SHA256_Final(conf->jwt_policy, &sha);
}
