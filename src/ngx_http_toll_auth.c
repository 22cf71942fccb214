/*
 * toll: credentials to key record.
 *
 * The credential is parsed strictly, the secret hashed at once (the same
 * work whether the key exists or not), and the record taken from the
 * shared cache; on a miss the request is parked on an HMGET and resumed
 * by the reply.  A missing, malformed, unknown, wrong, revoked or expired
 * credential all end in the same 401; only $toll_auth_status and the
 * error log tell them apart.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <hiredis/hiredis.h>

#include "ngx_http_toll_auth.h"
#include "ngx_http_toll_authz.h"
#include "ngx_http_toll_credential.h"
#include "ngx_http_toll_jwt.h"
#include "ngx_http_toll_redis.h"
#include "ngx_http_toll_shm.h"
#include "toll_key_record.h"


/* a request header the gate sets for the upstream */
typedef struct {
    ngx_str_t                  key;
    ngx_str_t                  lowcase_key;
    ngx_uint_t                 hash;          /* computed once */
} ngx_http_toll_header_t;


static ngx_int_t ngx_http_toll_auth_present(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_auth_status_e status,
    ngx_http_toll_credential_t *cred);
static ngx_int_t ngx_http_toll_auth_lookup(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx);
static void ngx_http_toll_auth_on_reply(void *data, redisReply *reply);
static ngx_int_t ngx_http_toll_auth_decode(ngx_http_request_t *r,
    ngx_str_t *key_id, ngx_http_toll_key_t *key, redisReply *reply);
static ngx_http_toll_auth_status_e ngx_http_toll_auth_verify(
    ngx_http_toll_ctx_t *ctx);
static ngx_int_t ngx_http_toll_headers_in_rewrite(ngx_http_request_t *r,
    ngx_http_toll_loc_conf_t *lcf, ngx_http_toll_header_t *add,
    ngx_str_t **values, ngx_uint_t n);
static void ngx_http_toll_header_set(ngx_table_elt_t *h,
    ngx_http_toll_header_t *header, ngx_str_t *value);
static ngx_uint_t ngx_http_toll_header_stripped(ngx_table_elt_t *h,
    ngx_http_toll_loc_conf_t *lcf);
static ngx_uint_t ngx_http_toll_header_name_is(ngx_table_elt_t *h,
    const char *name, size_t len, ngx_uint_t prefix);
static void ngx_http_toll_variables_reset(ngx_http_request_t *r);


ngx_int_t
ngx_http_toll_auth(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    ngx_int_t                     rc;
    ngx_http_toll_loc_conf_t     *lcf;
    ngx_http_toll_credential_t    cred;
    ngx_http_toll_auth_status_e   status;

    if (ctx->state != NGX_HTTP_TOLL_STATE_RESUMED) {

        /* ctx->auth_status stays unset until decided: a 500 logs none */

        lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);

        status = ngx_http_toll_credential_read(r, lcf, &cred);

        rc = ngx_http_toll_auth_present(r, ctx, status, &cred);

        /* used: a query token leaves the request, whatever the outcome */
        ngx_http_toll_credential_done(r, lcf, &cred);

        if (rc != NGX_DONE) {
            return rc;
        }
    }

    if (ctx->store_failed) {
        ctx->auth_status = NGX_HTTP_TOLL_AUTH_STORE_UNAVAILABLE;
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    ctx->auth_status = ngx_http_toll_auth_verify(ctx);

    if (ctx->auth_status == NGX_HTTP_TOLL_AUTH_OK) {
        ctx->auth_status = ngx_http_toll_credential_pair(ctx);
    }

    return (ctx->auth_status == NGX_HTTP_TOLL_AUTH_OK)
           ? NGX_OK : NGX_HTTP_UNAUTHORIZED;
}


/*
 * The credential presented: a JWT is decided at once, an API key from
 * the cache or, on a miss, by a parked lookup.  NGX_DONE: the key record
 * is at hand, to verify.
 */

static ngx_int_t
ngx_http_toll_auth_present(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_auth_status_e status, ngx_http_toll_credential_t *cred)
{
    ngx_int_t                     rc;
    toll_token_t                 *tok;
    ngx_http_toll_main_conf_t    *mcf;

    switch (status) {

    case NGX_HTTP_TOLL_AUTH_OK:
        break;

    case NGX_HTTP_TOLL_AUTH_NONE:
        return NGX_ERROR;

    case NGX_HTTP_TOLL_AUTH_AMBIGUOUS:
        ctx->auth_status = status;
        return NGX_HTTP_BAD_REQUEST;

    default:
        ctx->auth_status = status;
        return NGX_HTTP_UNAUTHORIZED;
    }

    if (cred->jwt.len) {
        /* a JWT is decided here and now: no store is asked */

        rc = ngx_http_toll_jwt_auth(r, ctx, &cred->jwt);

        if (rc != NGX_OK || !cred->key) {
            return rc;
        }

        /* toll_jwt_with_key: the API key must verify too, and bills */
        ngx_http_toll_credential_jwt_then_key(ctx);
    }

    tok = &cred->tok;

    /* copied: header buffers may be reused before the log phase */

    ctx->key_id.data = ngx_pnalloc(r->pool, tok->key_id_len);
    if (ctx->key_id.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(ctx->key_id.data, tok->key_id, tok->key_id_len);
    ctx->key_id.len = tok->key_id_len;

    if (toll_secret_hash(tok->secret, tok->secret_len, ctx->presented_hash)
        != 0)
    {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "toll: libcrypto failed to hash a secret");
        return NGX_ERROR;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    rc = ngx_http_toll_shm_key_get(mcf->shm_zone, &ctx->key_id,
                                   NGX_HTTP_TOLL_SHM_API_KEY, &ctx->key,
                                   r->pool);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        if (ctx->lookup_refused) {
            /* the address is over its limit: no lookup for it */
            return NGX_DECLINED;
        }

        return ngx_http_toll_auth_lookup(r, ctx);
    }

    return NGX_DONE;
}



static ngx_int_t
ngx_http_toll_auth_lookup(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx)
{
    size_t       argvlen[2 + TOLL_KEY_F_N], len;
    const char  *argv[2 + TOLL_KEY_F_N];
    char         name[TOLL_REDIS_KEY_NAME_MAX + 1];

    len = toll_key_redis_name(ctx->key_id.data, ctx->key_id.len, name);
    if (len == 0) {
        /* the parser admitted an id that the name rules refuse */
        return NGX_ERROR;
    }

    argv[0] = "HMGET";
    argvlen[0] = sizeof("HMGET") - 1;
    argv[1] = name;
    argvlen[1] = len;

#define ngx_http_toll_field(i, f)                                             \
    argv[2 + i] = f;                                                          \
    argvlen[2 + i] = sizeof(f) - 1

    ngx_http_toll_field(TOLL_KEY_F_STATUS, TOLL_FIELD_STATUS);
    ngx_http_toll_field(TOLL_KEY_F_SECRET, TOLL_FIELD_SECRET_SHA256);
    ngx_http_toll_field(TOLL_KEY_F_OWNER, TOLL_FIELD_OWNER);
    ngx_http_toll_field(TOLL_KEY_F_ROLE, TOLL_FIELD_ROLE);
    ngx_http_toll_field(TOLL_KEY_F_PLAN, TOLL_FIELD_PLAN);
    ngx_http_toll_field(TOLL_KEY_F_RATE_LIMIT, TOLL_FIELD_RATE_LIMIT);
    ngx_http_toll_field(TOLL_KEY_F_EXPIRES_AT, TOLL_FIELD_EXPIRES_AT);
    ngx_http_toll_field(TOLL_KEY_F_SCOPES, TOLL_FIELD_SCOPES);

#undef ngx_http_toll_field

    ctx->cmd = ngx_http_toll_redis_send(ngx_http_toll_auth_on_reply, ctx,
                                        2 + TOLL_KEY_F_N, argv, argvlen);

    if (ctx->cmd == NULL) {
        ctx->auth_status = NGX_HTTP_TOLL_AUTH_STORE_UNAVAILABLE;
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    /*
     * While parked, a client that goes away ends the request at once
     * (499), which cancels the lookup: a caller who left must not cost
     * an upstream call when the reply comes.
     */

    r->read_event_handler = ngx_http_test_reading;

    return NGX_AGAIN;
}


static void
ngx_http_toll_auth_on_reply(void *data, redisReply *reply)
{
    ngx_msec_t                  ttl;
    ngx_http_request_t         *r;
    ngx_http_toll_ctx_t        *ctx;
    ngx_http_toll_main_conf_t  *mcf;

    ctx = data;
    r = ctx->request;

    ctx->cmd = NULL;
    ctx->state = NGX_HTTP_TOLL_STATE_RESUMED;

    if (reply == NULL) {
        ctx->store_failed = 1;

    } else if (reply->type == REDIS_REPLY_ERROR
               && reply->len >= 9
               && ngx_strncmp(reply->str, "WRONGTYPE", 9) == 0)
    {
        /*
         * Something that is not a hash sits at the record's name: the
         * record is unreadable, and refused (and cached) like one; a 503
         * would ask the client to retry what can never succeed.
         */

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "toll: key record \"%V\" is invalid: WRONGTYPE, it "
                      "is not a hash, refusing it", &ctx->key_id);

        ngx_memzero(&ctx->key, sizeof(ngx_http_toll_key_t));
        ctx->key.key_id = ctx->key_id;
        ctx->key.rate_limit = -1;

        mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

        ngx_http_toll_shm_key_put(mcf->shm_zone, &ctx->key,
                                  mcf->cache_negative_ttl,
                                  r->connection->log);

    } else if (reply->type == REDIS_REPLY_ERROR) {
        if (ngx_http_toll_redis_refusal(NGX_HTTP_TOLL_REDIS_LOOKUP, reply)) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "toll: redis refused the key lookup: %*s",
                          reply->len, reply->str);
        }

        ctx->store_failed = 1;

    } else if (ngx_http_toll_auth_decode(r, &ctx->key_id, &ctx->key, reply)
               != NGX_OK)
    {
        ctx->store_failed = 1;

    } else {
        mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);
        ttl = ctx->key.found ? mcf->cache_ttl : mcf->cache_negative_ttl;

        ngx_http_toll_shm_key_put(mcf->shm_zone, &ctx->key, ttl,
                                  r->connection->log);
    }

    /*
     * Resumed from the event loop rather than from inside hiredis: the
     * access phase runs again, finds the answer and decides.
     */

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;
    ngx_post_event(r->connection->write, &ngx_posted_events);
}


/*
 * A record that does not read as one is refused like an unknown key (and
 * logged): a gate fails closed.  Only an allocation failure is an error.
 */

static ngx_int_t
ngx_http_toll_auth_decode(ngx_http_request_t *r, ngx_str_t *key_id,
    ngx_http_toll_key_t *key, redisReply *reply)
{
    u_char                *p;
    ngx_uint_t             i;
    const char            *why;
    redisReply            *e;
    toll_key_field_t       f[TOLL_KEY_F_N];
    toll_key_record_t      rec;
    toll_key_record_rc_e   rc;

    ngx_memzero(key, sizeof(ngx_http_toll_key_t));
    key->key_id = *key_id;
    key->rate_limit = -1;

    if (reply->type != REDIS_REPLY_ARRAY
        || reply->elements != TOLL_KEY_F_N)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "toll: unexpected reply type %d to the key lookup",
                      reply->type);
        return NGX_ERROR;
    }

    why = NULL;

    for (i = 0; i < TOLL_KEY_F_N; i++) {
        e = reply->element[i];

        f[i].data = NULL;
        f[i].len = 0;

        if (e->type == REDIS_REPLY_NIL) {
            continue;
        }

        if (e->type != REDIS_REPLY_STRING) {
            why = "a field is not a string";
            break;
        }

        f[i].data = e->str;
        f[i].len = e->len;
    }

    rc = (why == NULL) ? toll_key_record_decode(f, &rec, &why)
                       : TOLL_KEY_RECORD_INVALID;

    if (rc == TOLL_KEY_RECORD_NONE) {
        return NGX_OK;
    }

    if (rc == TOLL_KEY_RECORD_INVALID) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "toll: key record \"%V\" is invalid: %s, refusing it",
                      key_id, why);
        return NGX_OK;
    }

    key->role = rec.role;
    key->rate_limit = rec.rate_limit;
    key->expires_at = (time_t) rec.expires_at;
    key->revoked = rec.revoked ? 1 : 0;
    ngx_memcpy(key->secret_hash, rec.secret_hash, TOLL_SECRET_HASH_LEN);

    /* the reply is freed when this callback returns: a copy */

    key->owner.len = rec.owner_len;
    key->plan.len = rec.plan_len;
    key->scopes.len = rec.scopes_len;

    p = ngx_pnalloc(r->pool, key->owner.len + key->plan.len
                             + key->scopes.len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    key->owner.data = p;
    p = ngx_cpymem(p, rec.owner, key->owner.len);

    key->plan.data = p;
    if (key->plan.len) {
        p = ngx_cpymem(p, rec.plan, key->plan.len);
    }

    key->scopes.data = p;
    if (key->scopes.len) {
        ngx_memcpy(p, rec.scopes, key->scopes.len);
    }

    ngx_http_toll_authz_key_roles(key);

    key->found = 1;

    return NGX_OK;
}


static ngx_http_toll_auth_status_e
ngx_http_toll_auth_verify(ngx_http_toll_ctx_t *ctx)
{
    static u_char  none[TOLL_SECRET_HASH_LEN];

    if (!ctx->key.found) {
        /* the same comparison as for a known key */
        (void) toll_hash_equal(ctx->presented_hash, none);
        return NGX_HTTP_TOLL_AUTH_UNKNOWN;
    }

    if (!toll_hash_equal(ctx->presented_hash, ctx->key.secret_hash)) {
        return NGX_HTTP_TOLL_AUTH_WRONG_SECRET;
    }

    if (ctx->key.revoked) {
        return NGX_HTTP_TOLL_AUTH_REVOKED;
    }

    if (ctx->key.expires_at && ctx->key.expires_at <= ngx_time()) {
        return NGX_HTTP_TOLL_AUTH_EXPIRED;
    }

    return NGX_HTTP_TOLL_AUTH_OK;
}


void
ngx_http_toll_auth_cleanup(ngx_http_toll_ctx_t *ctx)
{
    if (ctx->cmd) {
        ngx_http_toll_redis_cancel(ctx->cmd);
        ctx->cmd = NULL;
    }
}


ngx_int_t
ngx_http_toll_auth_forward(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_loc_conf_t *lcf)
{
    ngx_str_t                  *values[5];
    ngx_uint_t                  i, n;
    ngx_http_toll_header_t      add[5];

    static ngx_http_toll_header_t  identity[5] = {
        { ngx_string("X-Toll-Buyer"), ngx_string("x-toll-buyer"), 0 },
        { ngx_string("X-Toll-Key-Id"), ngx_string("x-toll-key-id"), 0 },
        { ngx_string("X-Toll-Plan"), ngx_string("x-toll-plan"), 0 },
        { ngx_string("X-Toll-Role"), ngx_string("x-toll-role"), 0 },
        { ngx_string("X-Toll-Scopes"), ngx_string("x-toll-scopes"), 0 }
    };

    values[0] = &ctx->key.owner;
    values[1] = &ctx->key_id;
    values[2] = &ctx->key.plan;
    values[3] = &ctx->key.roles;
    values[4] = &ctx->key.scopes;

    /*
     * an empty value sends no header: a key without a plan no X-Toll-Plan,
     * a JWT without roles no X-Toll-Role, none without scopes
     * X-Toll-Scopes (the client's copies are removed all the same)
     */

    n = 0;

    for (i = 0; i < 5; i++) {
        if (identity[i].hash == 0) {
            /* once, in the static table: add[] holds copies */
            identity[i].hash = ngx_hash_key(identity[i].lowcase_key.data,
                                            identity[i].lowcase_key.len);
        }

        if (i < 2 || values[i]->len) {
            add[n] = identity[i];
            values[n++] = values[i];
        }
    }

    if (ngx_http_toll_headers_in_rewrite(r, lcf, add, values, n)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_toll_variables_reset(r);

    return NGX_OK;
}


/*
 * A refused request goes nowhere, but its log line is still written:
 * the credential's values are blanked in place (nothing moves, nothing is
 * sent on), so that $http_authorization or $http_x_api_key in a
 * log_format cannot write a secret even on a 401, 400 or 503.
 */

void
ngx_http_toll_auth_forget(ngx_http_request_t *r)
{
    ngx_uint_t                 i;
    ngx_list_part_t           *part;
    ngx_table_elt_t           *h;
    ngx_http_toll_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);

    for (part = &r->headers_in.headers.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {
            if (ngx_http_toll_credential_header(&h[i], lcf)) {
                ngx_str_null(&h[i].value);
            }
        }
    }

    ngx_http_toll_credential_query_forget(r, lcf);

    ngx_http_toll_variables_reset(r);
}


/* cached copies of rewritten headers would outlive them: read anew */

static void
ngx_http_toll_variables_reset(ngx_http_request_t *r)
{
    ngx_uint_t                  i, *index;
    ngx_http_toll_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_toll_module);

    if (mcf->stripped_variables == NULL) {
        return;
    }

    index = mcf->stripped_variables->elts;

    for (i = 0; i < mcf->stripped_variables->nelts; i++) {
        r->variables[index[i]].valid = 0;
        r->variables[index[i]].not_found = 0;
    }
}


/*
 * Removes the stripped headers from r->headers_in.headers and adds n new
 * ones, without moving any element: nginx keeps pointers to elements
 * (r->headers_in.host and the like), so shifting elements, as a plain
 * delete would, leaves them pointing at the wrong header.  The list is cut
 * instead into runs of kept elements, each a part of its own, followed by
 * a fresh part holding the new headers.  That part is filled before it is
 * linked: nginx's loops over a list read the first element of the next
 * part without checking that it has one.  Nothing is changed unless every
 * allocation succeeded.
 */

static ngx_int_t
ngx_http_toll_headers_in_rewrite(ngx_http_request_t *r,
    ngx_http_toll_loc_conf_t *lcf, ngx_http_toll_header_t *add,
    ngx_str_t **values, ngx_uint_t n)
{
    ngx_uint_t        i, start, removed;
    ngx_list_t       *list;
    ngx_list_part_t  *part, *first, *tail, *np, *added;
    ngx_table_elt_t  *h;

    list = &r->headers_in.headers;

    removed = 0;

    for (part = &list->part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {
            removed += ngx_http_toll_header_stripped(&h[i], lcf);
        }
    }

    if (removed == 0) {
        for (i = 0; i < n; i++) {
            h = ngx_list_push(list);
            if (h == NULL) {
                return NGX_ERROR;
            }

            ngx_http_toll_header_set(h, &add[i], values[i]);
        }

        return NGX_OK;
    }

    added = ngx_palloc(r->pool, sizeof(ngx_list_part_t));
    if (added == NULL) {
        return NGX_ERROR;
    }

    /* with room for headers pushed later, as ngx_list_push() expects */

    added->elts = ngx_palloc(r->pool, list->nalloc * list->size);
    if (added->elts == NULL) {
        return NGX_ERROR;
    }

    h = added->elts;

    for (i = 0; i < n; i++) {
        ngx_http_toll_header_set(&h[i], &add[i], values[i]);
    }

    added->nelts = n;
    added->next = NULL;

    first = NULL;
    tail = NULL;

    for (part = &list->part; part; part = part->next) {
        h = part->elts;
        start = 0;

        for (i = 0; i <= part->nelts; i++) {

            if (i < part->nelts
                && !ngx_http_toll_header_stripped(&h[i], lcf))
            {
                continue;
            }

            if (i > start) {
                np = ngx_palloc(r->pool, sizeof(ngx_list_part_t));
                if (np == NULL) {
                    return NGX_ERROR;
                }

                np->elts = &h[start];
                np->nelts = i - start;
                np->next = NULL;

                if (tail) {
                    tail->next = np;

                } else {
                    first = np;
                }

                tail = np;
            }

            start = i + 1;
        }
    }

    if (tail) {
        tail->next = added;

    } else {
        first = added;
    }

    /* commit; the list's first part is embedded in it, hence the copy */

    if (r->headers_in.authorization
        && ngx_http_toll_header_stripped(r->headers_in.authorization, lcf))
    {
        r->headers_in.authorization = NULL;
    }

    list->part = *first;
    list->last = (first == added) ? &list->part : added;

    return NGX_OK;
}


static void
ngx_http_toll_header_set(ngx_table_elt_t *h, ngx_http_toll_header_t *header,
    ngx_str_t *value)
{
    if (header->hash == 0) {
        header->hash = ngx_hash_key(header->lowcase_key.data,
                                    header->lowcase_key.len);
    }

    h->key = header->key;
    h->value = *value;
    h->lowcase_key = header->lowcase_key.data;
    h->hash = header->hash;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif
}


static ngx_uint_t
ngx_http_toll_header_stripped(ngx_table_elt_t *h,
    ngx_http_toll_loc_conf_t *lcf)
{
    /*
     * The X-Toll- namespace is ours, whatever the client claims in it;
     * so is another prefix of the billing headers.
     */

    if (ngx_http_toll_header_name_is(h, "x-toll-", sizeof("x-toll-") - 1, 1)
        || (lcf->billing_prefix_lc.len
            && ngx_http_toll_header_name_is(h,
                   (const char *) lcf->billing_prefix_lc.data,
                   lcf->billing_prefix_lc.len, 1)))
    {
        return 1;
    }

    if (lcf->pass_credentials) {
        return 0;
    }

    return ngx_http_toll_credential_header(h, lcf);
}


/*
 * Compares a header's name with a lowercase one, reading '_' as '-': with
 * underscores_in_headers on, "X_Toll_Buyer" reaches a CGI-style backend
 * as HTTP_X_TOLL_BUYER, the very name of ours.
 */

static ngx_uint_t
ngx_http_toll_header_name_is(ngx_table_elt_t *h, const char *name, size_t len,
    ngx_uint_t prefix)
{
    size_t  i;
    u_char  c;

    if (prefix ? h->key.len < len : h->key.len != len) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = h->lowcase_key[i];

        if (c == '_') {
            c = '-';
        }

        if (c != (u_char) name[i]) {
            return 0;
        }
    }

    return 1;
}
