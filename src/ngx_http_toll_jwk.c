/*
 * toll: one JWK into an OpenSSL public key.
 *
 * Shared by the JWKS files read at configuration time
 * (ngx_http_toll_jwt_keys.c) and the sets toll-settle fetches, read by
 * the workers while they run (ngx_http_toll_jwks.c): so nothing here
 * takes an ngx_conf_t or logs; the caller says what went wrong.
 */

#include <ngx_config.h>
#include <ngx_core.h>

#define OPENSSL_SUPPRESS_DEPRECATED

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include <jansson.h>

#include "ngx_http_toll_jwt_keys.h"


static EVP_PKEY *ngx_http_toll_jwt_jwk_ec(ngx_pool_t *pool, json_t *jwk);
static EVP_PKEY *ngx_http_toll_jwt_jwk_rsa(ngx_pool_t *pool, json_t *jwk);
static EVP_PKEY *ngx_http_toll_jwt_pkey_fromdata(OSSL_PARAM_BLD *bld,
    const char *type);
static ngx_int_t ngx_http_toll_jwt_conf_b64(ngx_pool_t *pool, json_t *v,
    ngx_str_t *out);


/* a public key from a JWK's members; for "oct", the secret instead */

EVP_PKEY *
ngx_http_toll_jwt_jwk_pkey(ngx_pool_t *pool, json_t *jwk, ngx_uint_t alg,
    ngx_str_t *secret)
{
    ngx_str_t  a;

    switch (alg) {

    case NGX_HTTP_TOLL_JWT_HS256:
        if (ngx_http_toll_jwt_conf_b64(pool, json_object_get(jwk, "k"), secret)
            != NGX_OK)
        {
            ngx_str_null(secret);
        }

        return NULL;

    case NGX_HTTP_TOLL_JWT_EDDSA:
        if (ngx_http_toll_jwt_conf_b64(pool, json_object_get(jwk, "x"), &a)
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
        return ngx_http_toll_jwt_jwk_ec(pool, jwk);

    default: /* NGX_HTTP_TOLL_JWT_RS256 */
        return ngx_http_toll_jwt_jwk_rsa(pool, jwk);
    }
}


/* a P-256 public key from an "EC" JWK's "x" and "y" */

static EVP_PKEY *
ngx_http_toll_jwt_jwk_ec(ngx_pool_t *pool, json_t *jwk)
{
    u_char          *pub;
    EVP_PKEY        *pkey;
    ngx_str_t        a, b;
    OSSL_PARAM_BLD  *bld;

    if (ngx_http_toll_jwt_conf_b64(pool, json_object_get(jwk, "x"), &a)
        != NGX_OK
        || ngx_http_toll_jwt_conf_b64(pool, json_object_get(jwk, "y"), &b)
           != NGX_OK
        || a.len != 32 || b.len != 32
        || !json_is_string(json_object_get(jwk, "crv"))
        || ngx_strcmp(json_string_value(json_object_get(jwk, "crv")),
                      "P-256") != 0)
    {
        return NULL;
    }

    pub = ngx_pnalloc(pool, 65);
    if (pub == NULL) {
        return NULL;
    }

    pub[0] = 0x04;  /* uncompressed point */
    ngx_memcpy(pub + 1, a.data, 32);
    ngx_memcpy(pub + 33, b.data, 32);

    pkey = NULL;

    bld = OSSL_PARAM_BLD_new();
    if (bld != NULL
        && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
                                           "prime256v1", 0) == 1
        && OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY,
                                            pub, 65) == 1)
    {
        pkey = ngx_http_toll_jwt_pkey_fromdata(bld, "EC");
    }

    OSSL_PARAM_BLD_free(bld);

    return pkey;
}


/* an RSA public key from an "RSA" JWK's "n" and "e" */

static EVP_PKEY *
ngx_http_toll_jwt_jwk_rsa(ngx_pool_t *pool, json_t *jwk)
{
    BIGNUM          *n, *e;
    EVP_PKEY        *pkey;
    ngx_str_t        a, b;
    OSSL_PARAM_BLD  *bld;

    if (ngx_http_toll_jwt_conf_b64(pool, json_object_get(jwk, "n"), &a)
        != NGX_OK
        || ngx_http_toll_jwt_conf_b64(pool, json_object_get(jwk, "e"), &b)
           != NGX_OK)
    {
        return NULL;
    }

    pkey = NULL;

    n = BN_bin2bn(a.data, (int) a.len, NULL);
    e = BN_bin2bn(b.data, (int) b.len, NULL);

    bld = OSSL_PARAM_BLD_new();
    if (n != NULL && e != NULL && bld != NULL
        && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) == 1
        && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) == 1)
    {
        pkey = ngx_http_toll_jwt_pkey_fromdata(bld, "RSA");
    }

    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);

    return pkey;
}


/* a public key of the type from the parameters pushed into bld */

static EVP_PKEY *
ngx_http_toll_jwt_pkey_fromdata(OSSL_PARAM_BLD *bld, const char *type)
{
    EVP_PKEY      *pkey;
    OSSL_PARAM    *params;
    EVP_PKEY_CTX  *pctx;

    pkey = NULL;

    pctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    params = OSSL_PARAM_BLD_to_param(bld);

    if (pctx == NULL || params == NULL
        || EVP_PKEY_fromdata_init(pctx) != 1
        || EVP_PKEY_fromdata(pctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
    {
        pkey = NULL;
    }

    OSSL_PARAM_free(params);
    EVP_PKEY_CTX_free(pctx);

    return pkey;
}


static ngx_int_t
ngx_http_toll_jwt_conf_b64(ngx_pool_t *pool, json_t *v, ngx_str_t *out)
{
    ssize_t  n;

    if (!json_is_string(v) || json_string_length(v) == 0) {
        return NGX_ERROR;
    }

    out->data = ngx_pnalloc(pool, json_string_length(v));
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




/*
 * The algorithm's demands on a key parsed while running: RSA of at
 * least 2048 bits, EC on P-256.  Sets *sig_len; NGX_DECLINED when the
 * key does not meet them.
 */

ngx_int_t
ngx_http_toll_jwt_jwk_usable(EVP_PKEY *pkey, ngx_uint_t alg, size_t *sig_len)
{
    char    group[64];
    size_t  len;

    switch (alg) {

    case NGX_HTTP_TOLL_JWT_RS256:
        if (EVP_PKEY_get_bits(pkey) < NGX_HTTP_TOLL_JWT_RSA_BITS_MIN) {
            return NGX_DECLINED;
        }

        *sig_len = EVP_PKEY_get_size(pkey);
        return NGX_OK;

    case NGX_HTTP_TOLL_JWT_ES256:
        if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME,
                                           group, sizeof(group), &len)
            != 1
            || ngx_strcmp(group, "prime256v1") != 0)
        {
            return NGX_DECLINED;
        }

        *sig_len = 64;
        return NGX_OK;

    case NGX_HTTP_TOLL_JWT_EDDSA:
        *sig_len = 64;
        return NGX_OK;

    default:
        return NGX_DECLINED;
    }
}
