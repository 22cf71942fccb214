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


#endif /* _NGX_HTTP_TOLL_JWT_KEYS_H_INCLUDED_ */
