/*
 * toll: the JWT room's own types, shared by its two files.
 *
 * ngx_http_toll_jwt_keys.c reads toll_jwt_key into these keys, parsed once
 * into OpenSSL's; ngx_http_toll_jwt.c verifies tokens against them.  Not
 * for other rooms: they see ngx_http_toll_jwt.h.
 */

#ifndef _NGX_HTTP_TOLL_JWT_KEYS_H_INCLUDED_
#define _NGX_HTTP_TOLL_JWT_KEYS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include <openssl/evp.h>

#include <jansson.h>

#include "toll_jwt_parse.h"


/* lib/toll_jwt_parse.h's, which reads "alg" from the header */
typedef enum {
    NGX_HTTP_TOLL_JWT_RS256 = TOLL_JWT_RS256,
    NGX_HTTP_TOLL_JWT_ES256 = TOLL_JWT_ES256,
    NGX_HTTP_TOLL_JWT_EDDSA = TOLL_JWT_EDDSA,
    NGX_HTTP_TOLL_JWT_HS256 = TOLL_JWT_HS256,
    NGX_HTTP_TOLL_JWT_ALGS = TOLL_JWT_ALGS
} ngx_http_toll_jwt_alg_e;


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



#define NGX_HTTP_TOLL_JWT_RSA_BITS_MIN 2048


/*
 * A JWK's public key for the algorithm (ngx_http_toll_jwk.c), its
 * scratch from pool; for HS256 NULL, and the secret in *secret (empty
 * when invalid).  NULL: not a valid key of that algorithm.
 */
EVP_PKEY *ngx_http_toll_jwt_jwk_pkey(ngx_pool_t *pool, json_t *jwk,
    ngx_uint_t alg, ngx_str_t *secret);

/* RSA >= 2048 bits, EC on P-256: NGX_OK and *sig_len, or NGX_DECLINED */
ngx_int_t ngx_http_toll_jwt_jwk_usable(EVP_PKEY *pkey, ngx_uint_t alg,
    size_t *sig_len);


#endif /* _NGX_HTTP_TOLL_JWT_KEYS_H_INCLUDED_ */
