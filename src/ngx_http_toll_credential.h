/*
 * toll: where a credential comes from.  The API key's header names
 * (toll_key_header), imported one-part keys (toll_key_import_prefix), a
 * JWT together with an API key (toll_jwt_with_key) and a token in the
 * query string (toll_query_token), read and then removed from what the
 * upstream and the logs see.
 */

#ifndef _NGX_HTTP_TOLL_CREDENTIAL_H_INCLUDED_
#define _NGX_HTTP_TOLL_CREDENTIAL_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"


/* what a request presented; spans into the request, nothing owned */
typedef struct {
    ngx_str_t                  jwt;           /* empty: none */
    toll_token_t               tok;           /* an API key, when key */
    u_char                     id[TOLL_OPAQUE_ID_LEN]; /* an imported
                                                          key's id */
    ngx_str_t                  decoded;       /* the query token, percent-
                                                 decoded: wiped by done */
    unsigned                   key:1;
} ngx_http_toll_credential_t;


/*
 * Exactly one credential, from the Authorization header, one of the key
 * headers or (where on) the query string; two that are not the same
 * token are AMBIGUOUS, but for a JWT and an API key where
 * toll_jwt_with_key is on.  NGX_HTTP_TOLL_AUTH_NONE: out of memory.
 */
ngx_http_toll_auth_status_e ngx_http_toll_credential_read(
    ngx_http_request_t *r, ngx_http_toll_loc_conf_t *lcf,
    ngx_http_toll_credential_t *cred);

/* after read, on every path: the query token is gone from the request */
void ngx_http_toll_credential_done(ngx_http_request_t *r,
    ngx_http_toll_loc_conf_t *lcf, ngx_http_toll_credential_t *cred);

/* a refused request: the query token is removed as done would */
void ngx_http_toll_credential_query_forget(ngx_http_request_t *r,
    ngx_http_toll_loc_conf_t *lcf);

ngx_uint_t ngx_http_toll_credential_named(ngx_table_elt_t *h,
    ngx_http_toll_loc_conf_t *lcf);


/*
 * 1 for Authorization and the location's key headers ('_' read as '-').
 * Asked of every request header, twice, on the hot path: a name of
 * another length is told apart without a call.
 */
static ngx_inline ngx_uint_t
ngx_http_toll_credential_header(ngx_table_elt_t *h,
    ngx_http_toll_loc_conf_t *lcf)
{
    if (h->key.len >= 64
        || (lcf->credential_lens & ((uint64_t) 1 << h->key.len)) == 0)
    {
        return 0;
    }

    return ngx_http_toll_credential_named(h, lcf);
}

/*
 * A JWT verified, an API key to follow: the JWT's buyer is kept for
 * ngx_http_toll_credential_pair and the key record made ready for the key.
 */
void ngx_http_toll_credential_jwt_then_key(ngx_http_toll_ctx_t *ctx);

/* the key verified: a JWT that came with it must name the key's owner */
ngx_http_toll_auth_status_e ngx_http_toll_credential_pair(
    ngx_http_toll_ctx_t *ctx);

/* 1 when $name is a variable the gate must make read the request anew */
ngx_uint_t ngx_http_toll_credential_variable(ngx_http_toll_main_conf_t *mcf,
    ngx_str_t *name);

char *ngx_http_toll_key_header_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_toll_key_import_prefix_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
char *ngx_http_toll_query_token_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);

char *ngx_http_toll_credential_merge_loc_conf(ngx_conf_t *cf,
    ngx_http_toll_loc_conf_t *prev, ngx_http_toll_loc_conf_t *conf);


#endif /* _NGX_HTTP_TOLL_CREDENTIAL_H_INCLUDED_ */
