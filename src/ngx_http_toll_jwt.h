/*
 * toll: JWT bearer tokens to key record.
 *
 * The algorithm is pinned by the configured key, never taken from the
 * token.  The token is split and its header read to pick the key; the
 * signature is checked by OpenSSL against the key parsed once at
 * configuration (libjwt 1.10 re-reads a PEM key for every token) before
 * the payload is decoded and its claims checked (lib/toll_jwt_parse.c).
 * A verified token is cached in the shared zone by its hash, so that a
 * busy caller costs one signature check.
 */

#ifndef _NGX_HTTP_TOLL_JWT_H_INCLUDED_
#define _NGX_HTTP_TOLL_JWT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"


/* the longest token looked at; anything longer is refused unread */
#define NGX_HTTP_TOLL_JWT_LEN_MAX      8192

/* a cache entry's key id: this prefix and 64 hex digits of SHA-256 */
#define NGX_HTTP_TOLL_JWT_CACHE_PREFIX "jwt:"
/* the caller's key id: the prefix and 32 hex digits of SHA-256(buyer) */
#define NGX_HTTP_TOLL_JWT_ID_HEX_LEN   32


/*
 * The Authorization header's token when it has the shape of a JWT
 * ("Bearer", blanks, then a token with a dot: an API key never has one).
 * Returns 1 and sets token, or 0 when the header is not a JWT.
 */
ngx_uint_t ngx_http_toll_jwt_bearer(ngx_str_t *value, ngx_str_t *token);

/*
 * Verifies the token and fills ctx->key and ctx->key_id.  Returns NGX_OK,
 * NGX_HTTP_UNAUTHORIZED with ctx->auth_status set, or NGX_ERROR.
 */
ngx_int_t ngx_http_toll_jwt_auth(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_str_t *token);

/* toll_jwt_key FILE [alg=...] [kid=...]; */
char *ngx_http_toll_jwt_key_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
/* toll_jwt_plan_claim NAME [prefix=STR]; */
char *ngx_http_toll_jwt_plan_claim_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);

/* defaults, checks and the policy's fingerprint, from the loc merge */
char *ngx_http_toll_jwt_merge_loc_conf(ngx_conf_t *cf,
    ngx_http_toll_loc_conf_t *prev, ngx_http_toll_loc_conf_t *conf);


#endif /* _NGX_HTTP_TOLL_JWT_H_INCLUDED_ */
