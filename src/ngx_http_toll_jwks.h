/*
 * toll: key sets that follow the identity provider (docs/jwt.md,
 * "Fetched key sets").
 *
 * toll-settle fetches each set and publishes it to Redis with a
 * generation (settle/toll_settle_jwks.c); every worker polls the
 * generation on a timer of its own and, when it moved, reads the set,
 * parses its keys into OpenSSL's and swaps them in between two requests.
 * The algorithms stay pinned: a key whose "alg" the directive does not
 * allow is skipped.  Redis down or a broken set: the worker keeps the
 * set it has.
 */

#ifndef _NGX_HTTP_TOLL_JWKS_H_INCLUDED_
#define _NGX_HTTP_TOLL_JWKS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include <openssl/sha.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_metrics_int.h"


/* each worker reads every set's generation this often */
#define NGX_HTTP_TOLL_JWKS_POLL_MS     1000
/* an unknown "kid" reads the sets early, at most this often */
#define NGX_HTTP_TOLL_JWKS_MISS_MS     200


/* toll_jwt_jwks NAME [alg=RS256,ES256,EdDSA]; */
char *ngx_http_toll_jwks_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* the worker's timer; NGX_OK when no set is configured */
ngx_int_t ngx_http_toll_jwks_init_process(ngx_cycle_t *cycle);
void ngx_http_toll_jwks_exit_process(ngx_cycle_t *cycle);

/*
 * The keys a token is checked against: toll_jwt_key's, then the fetched
 * sets' as this worker holds them.  Valid until the request's handler
 * returns: a swap happens only on a Redis reply.
 */
ngx_array_t *ngx_http_toll_jwks_keys(ngx_http_toll_main_conf_t *mcf);

/*
 * The sum of the held sets' generations, 0 when none: part of the
 * verified-token cache's key, so that a rotation makes every token be
 * checked again against the new set.
 */
uint64_t ngx_http_toll_jwks_gen(void);

/* the sets' names and pinned algorithms, into the policy's fingerprint */
void ngx_http_toll_jwks_policy(ngx_http_toll_main_conf_t *mcf,
    SHA256_CTX *sha);

/* toll_jwks_generation, _age_seconds, _read_failures_total, per set */
void ngx_http_toll_jwks_metrics(ngx_http_toll_metrics_out_t *o,
    ngx_http_toll_main_conf_t *mcf);

/* a token's "kid" was not found: read the sets early, rate-limited */
void ngx_http_toll_jwks_miss(void);


#endif /* _NGX_HTTP_TOLL_JWKS_H_INCLUDED_ */
