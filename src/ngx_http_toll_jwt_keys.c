/*
 * toll: JWT keys, from toll_jwt_key to OpenSSL's.
 *
 * Read at configuration time, once: a PEM public key (its type gives the
 * algorithm), an HS256 secret, or a JWKS file whose keys name their own
 * type, algorithm and id.  Each key is parsed into an EVP_PKEY owned by
 * the cycle's pool, checked for size, and its algorithm pinned, so that
 * verification (ngx_http_toll_jwt.c) never reads a key again.
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
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include <jansson.h>

#include "ngx_http_toll_jwt.h"
#include "ngx_http_toll_jwt_keys.h"


/* an HS256 secret shorter than the hash is guessable offline */
#define NGX_HTTP_TOLL_JWT_HMAC_MIN     32
/* a key file larger than this is not a key */
#define NGX_HTTP_TOLL_JWT_FILE_MAX     (1024 * 1024)


typedef struct {
    ngx_str_t                  name;          /* as JWS spells it */
} ngx_http_toll_jwt_alg_t;


static char *ngx_http_toll_jwt_key_params(ngx_conf_t *cf, ngx_int_t *alg,
    ngx_str_t *kid);
static char *ngx_http_toll_jwt_read_file(ngx_conf_t *cf, ngx_str_t *file,
    ngx_str_t *text);
static char *ngx_http_toll_jwt_load_file(ngx_conf_t *cf, ngx_array_t *keys,
    ngx_str_t *file, ngx_str_t *kid, ngx_str_t *text, ngx_int_t alg);
static char *ngx_http_toll_jwt_keys_unique(ngx_conf_t *cf,
    ngx_array_t *keys);
static char *ngx_http_toll_jwt_load_pem(ngx_conf_t *cf,
    ngx_http_toll_jwt_key_t *key, ngx_str_t *text, ngx_int_t alg);
static char *ngx_http_toll_jwt_load_jwks(ngx_conf_t *cf,
    ngx_array_t *keys, ngx_str_t *file, ngx_str_t *text, ngx_int_t alg,
    ngx_str_t *kid);
static ngx_int_t ngx_http_toll_jwt_jwk_alg(ngx_conf_t *cf, json_t *jwk,
    size_t i, ngx_str_t *file);
static char *ngx_http_toll_jwt_load_jwk(ngx_conf_t *cf,
    ngx_http_toll_jwt_key_t *key, json_t *jwk, size_t i);
static char *ngx_http_toll_jwt_key_check(ngx_conf_t *cf,
    ngx_http_toll_jwt_key_t *key);
static ngx_int_t ngx_http_toll_jwt_pem(ngx_conf_t *cf,
    ngx_http_toll_jwt_key_t *key);
static void ngx_http_toll_jwt_pkey_cleanup(void *data);


static ngx_http_toll_jwt_alg_t  ngx_http_toll_jwt_algs[] = {
    { ngx_string("RS256") },
    { ngx_string("ES256") },
    { ngx_string("EdDSA") },
    { ngx_string("HS256") }
};


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

    u_char      *p, *end;
    char        *rv;
    ngx_str_t   *value, file, text, kid;
    ngx_int_t    alg;
    ngx_uint_t   n;

    value = cf->args->elts;

    file = value[1];

    rv = ngx_http_toll_jwt_key_params(cf, &alg, &kid);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (ngx_conf_full_name(cf->cycle, &file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    rv = ngx_http_toll_jwt_read_file(cf, &file, &text);
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

    end = text.data + text.len;

    for (p = text.data;
         p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n');
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

        n = mcf->jwt_keys->nelts;

        rv = ngx_http_toll_jwt_load_jwks(cf, mcf->jwt_keys, &file, &text,
                                         alg, &kid);
        if (rv != NGX_CONF_OK) {
            return rv;
        }

        if (mcf->jwt_keys->nelts == n) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "no usable key in the JWKS file \"%V\"",
                               &file);
            return NGX_CONF_ERROR;
        }

    } else {
        rv = ngx_http_toll_jwt_load_file(cf, mcf->jwt_keys, &file, &kid,
                                         &text, alg);
        if (rv != NGX_CONF_OK) {
            return rv;
        }
    }

    return ngx_http_toll_jwt_keys_unique(cf, mcf->jwt_keys);
}


/* alg= and kid= of toll_jwt_key; alg is -1 when not given */

static char *
ngx_http_toll_jwt_key_params(ngx_conf_t *cf, ngx_int_t *alg, ngx_str_t *kid)
{
    ngx_str_t   *value;
    ngx_uint_t   i, j;

    value = cf->args->elts;

    *alg = -1;
    ngx_str_null(kid);

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "alg=", 4) == 0) {
            for (j = 0; j < NGX_HTTP_TOLL_JWT_ALGS; j++) {
                if (value[i].len - 4 == ngx_http_toll_jwt_algs[j].name.len
                    && ngx_strncmp(value[i].data + 4,
                                   ngx_http_toll_jwt_algs[j].name.data,
                                   value[i].len - 4) == 0)
                {
                    *alg = j;
                    break;
                }
            }

            if (*alg < 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid algorithm \"%V\", expected "
                                   "RS256, ES256, EdDSA or HS256",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "kid=", 4) == 0) {
            kid->data = value[i].data + 4;
            kid->len = value[i].len - 4;

            if (kid->len == 0) {
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

    return NGX_CONF_OK;
}


/*
 * The key file, whole, NUL-terminated in the configuration's pool (the
 * NUL is not counted in text->len).
 */

static char *
ngx_http_toll_jwt_read_file(ngx_conf_t *cf, ngx_str_t *file, ngx_str_t *text)
{
    u_char           *buf;
    char             *rv;
    size_t            size;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_file_info_t   fi;

    /* configuration time: a blocking read is what nginx does here too */

    fd = ngx_open_file(file->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", file);
        return NGX_CONF_ERROR;
    }

    buf = NULL;
    size = 0;
    rv = NGX_CONF_ERROR;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_fd_info_n " \"%V\" failed", file);
        goto close;
    }

    size = (size_t) ngx_file_size(&fi);

    if (size == 0 || size > NGX_HTTP_TOLL_JWT_FILE_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "key file \"%V\" is empty or too large", file);
        goto close;
    }

    buf = ngx_pnalloc(cf->pool, size + 1);
    if (buf == NULL) {
        goto close;
    }

    n = ngx_read_fd(fd, buf, size);

    if (n != (ssize_t) size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_read_fd_n " \"%V\" failed", file);
        goto close;
    }

    buf[size] = '\0';
    rv = NGX_CONF_OK;

close:

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_ALERT, cf, ngx_errno,
                           ngx_close_file_n " \"%V\" failed", file);
    }

    text->data = buf;
    text->len = size;

    return rv;
}


/* a file of one key: a PEM public key, or an HS256 secret */

static char *
ngx_http_toll_jwt_load_file(ngx_conf_t *cf, ngx_array_t *keys,
    ngx_str_t *file, ngx_str_t *kid, ngx_str_t *text, ngx_int_t alg)
{
    u_char                   *buf;
    size_t                    size;
    ngx_http_toll_jwt_key_t  *key;

    buf = text->data;
    size = text->len;

    key = ngx_array_push(keys);
    if (key == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(key, sizeof(ngx_http_toll_jwt_key_t));
    key->file = *file;
    key->kid = *kid;

    if (ngx_strstr(buf, "-----BEGIN") != NULL) {
        if (alg == NGX_HTTP_TOLL_JWT_HS256) {
            /*
             * A public key used as an HMAC secret is the very
             * confusion an attacker would sign with.
             */
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" is a PEM file, and an HS256 "
                               "secret must not be one", file);
            return NGX_CONF_ERROR;
        }

        return ngx_http_toll_jwt_load_pem(cf, key, text, alg);
    }

    if (alg != NGX_HTTP_TOLL_JWT_HS256) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" is neither a PEM public key nor a "
                           "JWKS file; an HS256 secret needs "
                           "\"alg=HS256\"", file);
        return NGX_CONF_ERROR;
    }

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
                           "the minimum is %d", file, size,
                           NGX_HTTP_TOLL_JWT_HMAC_MIN);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* one key per algorithm and key id, or rotation would be a guess */

static char *
ngx_http_toll_jwt_keys_unique(ngx_conf_t *cf, ngx_array_t *keys)
{
    ngx_uint_t                i, j;
    ngx_http_toll_jwt_key_t  *k;

    k = keys->elts;

    for (i = 0; i < keys->nelts; i++) {
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
    ngx_int_t                 a;
    json_error_t              err;
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

        a = ngx_http_toll_jwt_jwk_alg(cf, jwk, i, file);

        if (a == NGX_ERROR) {
            goto done;
        }

        if (a == NGX_DECLINED) {
            continue;
        }

        if (alg >= 0 && alg != a) {
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

        if (ngx_http_toll_jwt_load_jwk(cf, key, jwk, i) != NGX_CONF_OK) {
            goto done;
        }
    }

    rv = NGX_CONF_OK;

done:

    json_decref(jwks);

    return rv;
}


/*
 * The algorithm of key i of a JWKS file: its "alg", else its kind's only
 * one.  NGX_DECLINED: a key to skip (said at warn); NGX_ERROR.
 */

static ngx_int_t
ngx_http_toll_jwt_jwk_alg(ngx_conf_t *cf, json_t *jwk, size_t i,
    ngx_str_t *file)
{
    json_t      *v;
    ngx_uint_t   a;

    v = json_object_get(jwk, "alg");

    if (v) {
        for (a = 0; a < NGX_HTTP_TOLL_JWT_ALGS; a++) {
            if (json_is_string(v)
                && ngx_strcmp(json_string_value(v),
                              ngx_http_toll_jwt_algs[a].name.data) == 0)
            {
                return a;
            }
        }

        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "skipping key %uz of \"%V\": its "
                           "\"alg\" is not RS256, ES256, EdDSA or "
                           "HS256", i, file);
        return NGX_DECLINED;
    }

    v = json_object_get(jwk, "kty");

    if (!json_is_string(v)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "key %uz in \"%V\" has no \"kty\"", i, file);
        return NGX_ERROR;
    }

    if (ngx_strcmp(json_string_value(v), "RSA") == 0) {
        return NGX_HTTP_TOLL_JWT_RS256;
    }

    if (ngx_strcmp(json_string_value(v), "EC") == 0) {
        return NGX_HTTP_TOLL_JWT_ES256;
    }

    if (ngx_strcmp(json_string_value(v), "OKP") == 0) {
        return NGX_HTTP_TOLL_JWT_EDDSA;
    }

    if (ngx_strcmp(json_string_value(v), "oct") == 0) {
        return NGX_HTTP_TOLL_JWT_HS256;
    }

    ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                       "skipping key %uz of \"%V\": unknown \"kty\"",
                       i, file);
    return NGX_DECLINED;
}


/* key i of a JWKS file into key, whose algorithm and file are set */

static char *
ngx_http_toll_jwt_load_jwk(ngx_conf_t *cf, ngx_http_toll_jwt_key_t *key,
    json_t *jwk, size_t i)
{
    json_t              *v;
    ngx_str_t           *file;
    ngx_pool_cleanup_t  *cln;

    file = &key->file;

    v = json_object_get(jwk, "kid");

    if (v) {
        if (!json_is_string(v) || json_string_length(v) == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "key %uz in \"%V\" has an invalid "
                               "\"kid\"", i, file);
            return NGX_CONF_ERROR;
        }

        key->kid.len = json_string_length(v);
        key->kid.data = ngx_pnalloc(cf->pool, key->kid.len);
        if (key->kid.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(key->kid.data, json_string_value(v), key->kid.len);
    }

    key->pkey = ngx_http_toll_jwt_jwk_pkey(cf->pool, jwk, key->alg,
                                          &key->material);

    if (key->alg == NGX_HTTP_TOLL_JWT_HS256) {
        if (key->material.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "key %uz in \"%V\" is not a valid "
                               "\"oct\" key", i, file);
            return NGX_CONF_ERROR;
        }

        if (key->material.len < NGX_HTTP_TOLL_JWT_HMAC_MIN) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "HS256 key %uz in \"%V\" is %uz bytes, "
                               "the minimum is %d", i, file,
                               key->material.len,
                               NGX_HTTP_TOLL_JWT_HMAC_MIN);
            return NGX_CONF_ERROR;
        }

        key->sig_len = SHA256_DIGEST_LENGTH;

        return NGX_CONF_OK;
    }

    if (key->pkey == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "key %uz in \"%V\" is not a valid %V key",
                           i, file, &ngx_http_toll_jwt_algs[key->alg].name);
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        EVP_PKEY_free(key->pkey);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_toll_jwt_pkey_cleanup;
    cln->data = key->pkey;

    if (ngx_http_toll_jwt_key_check(cf, key) != NGX_CONF_OK
        || ngx_http_toll_jwt_pem(cf, key) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void
ngx_http_toll_jwt_pkey_cleanup(void *data)
{
    EVP_PKEY_free(data);
}
