/*
 * toll: what an authenticated caller may do: toll_require's scopes and
 * roles, checked against the key record's or the JWT's, answered 403.
 */

#ifndef _NGX_HTTP_TOLL_AUTHZ_H_INCLUDED_
#define _NGX_HTTP_TOLL_AUTHZ_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/sha.h>
#include <jansson.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_problem.h"


/*
 * NGX_OK: the caller has every scope and one of the roles the location
 * requires (or it requires none); NGX_DECLINED: it lacks some, and ext
 * holds the 403's code, detail and members naming them; NGX_ERROR.
 */
ngx_int_t ngx_http_toll_authz_check(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_loc_conf_t *lcf,
    ngx_http_toll_problem_ext_t *ext);

/*
 * A verified token's scopes and roles from the location's claims, each a
 * space-separated list in r->pool.  NGX_OK; NGX_DECLINED with *why: the
 * claims hold more than the bounds (the token is refused); NGX_ERROR.
 */
ngx_int_t ngx_http_toll_authz_jwt_claims(ngx_http_request_t *r,
    ngx_http_toll_loc_conf_t *lcf, json_t *claims, ngx_str_t *scopes,
    ngx_str_t *roles, const char **why);

/* an API key's roles: its one role's name */
void ngx_http_toll_authz_key_roles(ngx_http_toll_key_t *key);

/* the claim names, into the JWT policy's fingerprint */
void ngx_http_toll_authz_policy_hash(SHA256_CTX *sha,
    ngx_http_toll_loc_conf_t *conf);

/* toll_require [scope=NAME]... [role=NAME]... | off; */
char *ngx_http_toll_require_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* toll_jwt_scope_claim NAME... | off; toll_jwt_role_claim NAME... | off; */
char *ngx_http_toll_authz_claim_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* inherits, and sets the claims' defaults; before the JWT merge */
char *ngx_http_toll_authz_merge_loc_conf(ngx_conf_t *cf,
    ngx_http_toll_loc_conf_t *prev, ngx_http_toll_loc_conf_t *conf);


#endif /* _NGX_HTTP_TOLL_AUTHZ_H_INCLUDED_ */
