/*
 * toll: what an authenticated caller may do.
 *
 * toll_require names the scopes a location needs (all of them) and the
 * roles it admits (any one).  The check runs once the caller is known and
 * before its limits, free tier, balance and caps are touched, so that a
 * 403 costs the caller nothing and consumes nothing.  It runs again after
 * an internal redirect, with the new location's toll_require: the place
 * that serves the call decides who may call it.
 *
 * Scopes and roles are lists of tokens (lib/toll_key_record.h): an API
 * key's come from its record ("scopes", and its one role), a JWT's from
 * the claims toll_jwt_scope_claim and toll_jwt_role_claim name.  Both are
 * cached with the key or the verified token, and both reach the upstream
 * as X-Toll-Scopes and X-Toll-Role (ngx_http_toll_auth_forward()).
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#define OPENSSL_SUPPRESS_DEPRECATED

#include "ngx_http_toll_authz.h"
#include "toll_key_record.h"


/* what one toll_require may list: more is a configuration mistake */
#define NGX_HTTP_TOLL_REQUIRE_SCOPES_MAX   16
#define NGX_HTTP_TOLL_REQUIRE_ROLES_MAX    8
/* claim names per directive */
#define NGX_HTTP_TOLL_CLAIMS_MAX           8
/*
 * A claim larger than these is refused rather than read: an identity
 * provider does not issue such a token by mistake, and reading it would
 * cost every request that misses the cache.
 */
#define NGX_HTTP_TOLL_CLAIM_ITEMS_MAX      256
#define NGX_HTTP_TOLL_CLAIM_LEN_MAX        4096


typedef struct {
    u_char                    *data;          /* the list being built */
    size_t                     len;
    size_t                     size;          /* its bound in bytes */
    ngx_uint_t                 n;
    ngx_uint_t                 max_n;
} ngx_http_toll_authz_list_t;


static ngx_uint_t ngx_http_toll_authz_has(ngx_str_t *list, ngx_str_t *name);
static ngx_int_t ngx_http_toll_authz_refusal(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_toll_loc_conf_t *lcf,
    ngx_http_toll_problem_ext_t *ext, ngx_uint_t roles);
static ngx_int_t ngx_http_toll_authz_claims(ngx_array_t *names,
    json_t *claims, ngx_http_toll_authz_list_t *list, const char **why);
static ngx_int_t ngx_http_toll_authz_claim_string(const char *s, size_t len,
    ngx_http_toll_authz_list_t *list);
static ngx_int_t ngx_http_toll_authz_add(ngx_http_toll_authz_list_t *list,
    const char *s, size_t len);
static ngx_array_t *ngx_http_toll_authz_names(ngx_conf_t *cf,
    const char *defaults[]);


static const char  *ngx_http_toll_scope_claims[] = {
    "scope", "scp", "permissions", NULL
};

static const char  *ngx_http_toll_role_claims[] = {
    "roles", "role", NULL
};


/* ------------------------------------------------------------ requests */


ngx_int_t
ngx_http_toll_authz_check(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_loc_conf_t *lcf, ngx_http_toll_problem_ext_t *ext)
{
    ngx_str_t   *name;
    ngx_uint_t   i, scope_missing, role_missing;

    scope_missing = 0;
    role_missing = 0;

    if (lcf->require_scopes) {
        name = lcf->require_scopes->elts;

        for (i = 0; i < lcf->require_scopes->nelts; i++) {
            if (!ngx_http_toll_authz_has(&ctx->key.scopes, &name[i])) {
                scope_missing = 1;
                break;
            }
        }
    }

    if (lcf->require_roles && lcf->require_roles->nelts) {
        name = lcf->require_roles->elts;
        role_missing = 1;

        for (i = 0; i < lcf->require_roles->nelts; i++) {
            if (ngx_http_toll_authz_has(&ctx->key.roles, &name[i])) {
                role_missing = 0;
                break;
            }
        }
    }

    if (!scope_missing && !role_missing) {
        return NGX_OK;
    }

    return ngx_http_toll_authz_refusal(r, ctx, lcf, ext, role_missing);
}


/* list is tokens joined by single spaces (validated when it was made) */

static ngx_uint_t
ngx_http_toll_authz_has(ngx_str_t *list, ngx_str_t *name)
{
    u_char  *p, *last, *sp;

    p = list->data;
    last = p + list->len;

    while (p < last) {
        sp = ngx_strlchr(p, last, ' ');
        if (sp == NULL) {
            sp = last;
        }

        if ((size_t) (sp - p) == name->len
            && ngx_memcmp(p, name->data, name->len) == 0)
        {
            return 1;
        }

        p = sp + 1;
    }

    return 0;
}


/*
 * The 403's detail names what is missing: the scopes the caller lacks,
 * and the roles of which it has none.  The names are tokens checked at
 * configuration, so they are JSON-safe as they are.
 */

static ngx_int_t
ngx_http_toll_authz_refusal(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_http_toll_loc_conf_t *lcf, ngx_http_toll_problem_ext_t *ext,
    ngx_uint_t roles)
{
    u_char      *d;
    size_t       len;
    ngx_str_t   *name;
    ngx_uint_t   i, n;

    len = sizeof("missing scopes:; needs one of the roles:") - 1;

    if (lcf->require_scopes) {
        name = lcf->require_scopes->elts;

        for (i = 0; i < lcf->require_scopes->nelts; i++) {
            len += 1 + name[i].len;
        }
    }

    if (roles) {
        name = lcf->require_roles->elts;

        for (i = 0; i < lcf->require_roles->nelts; i++) {
            len += 1 + name[i].len;
        }
    }

    d = ngx_pnalloc(r->pool, len);
    if (d == NULL) {
        return NGX_ERROR;
    }

    ext->detail.data = d;

    n = 0;

    if (lcf->require_scopes) {
        name = lcf->require_scopes->elts;

        for (i = 0; i < lcf->require_scopes->nelts; i++) {
            if (ngx_http_toll_authz_has(&ctx->key.scopes, &name[i])) {
                continue;
            }

            if (n++ == 0) {
                d = ngx_cpymem(d, "missing scopes:", 15);
            }

            *d++ = ' ';
            d = ngx_cpymem(d, name[i].data, name[i].len);
        }
    }

    if (roles) {
        name = lcf->require_roles->elts;

        d = (n == 0) ? ngx_cpymem(d, "needs one of the roles:", 23)
                     : ngx_cpymem(d, "; needs one of the roles:", 25);

        for (i = 0; i < lcf->require_roles->nelts; i++) {
            *d++ = ' ';
            d = ngx_cpymem(d, name[i].data, name[i].len);
        }
    }

    ext->detail.len = d - ext->detail.data;

    ngx_log_error(lcf->log_level, r->connection->log, 0,
                  "toll: refused, forbidden, key id \"%V\": %V",
                  &ctx->key_id, &ext->detail);

    return NGX_DECLINED;
}


/*
 * Each claim named, in order, adds its tokens once.  A claim of a type
 * that holds no list of names (a number, an object, true, an array with
 * anything but strings) gives nothing, as an absent one does: the caller
 * lacks what it does not plainly claim.  A token outside the token set
 * gives nothing either: it could match no toll_require and could not be
 * sent on in a header.  Too much (more names than the cache and the
 * headers hold) gives nothing at all, neither scopes nor roles, rather
 * than a list cut short: the token stays valid where nothing is
 * required, and a location that requires something answers 403, so an
 * identity provider's large claims cost no outage where toll_require is
 * not used.  Logged at info, once per verification.
 */

ngx_int_t
ngx_http_toll_authz_jwt_claims(ngx_http_request_t *r,
    ngx_http_toll_loc_conf_t *lcf, json_t *claims, ngx_str_t *scopes,
    ngx_str_t *roles, const char **why)
{
    ngx_int_t                   rc;
    ngx_http_toll_authz_list_t  list;

    list.data = ngx_pnalloc(r->pool, TOLL_SCOPES_LEN_MAX + TOLL_ROLES_LEN_MAX);
    if (list.data == NULL) {
        return NGX_ERROR;
    }

    list.len = 0;
    list.size = TOLL_SCOPES_LEN_MAX;
    list.n = 0;
    list.max_n = TOLL_SCOPES_MAX;

    ngx_str_null(scopes);
    ngx_str_null(roles);

    rc = ngx_http_toll_authz_claims(lcf->jwt_scope_claims, claims, &list,
                                    why);
    if (rc != NGX_OK) {
        goto unread;
    }

    scopes->data = list.data;
    scopes->len = list.len;

    list.data += list.len;
    list.len = 0;
    list.size = TOLL_ROLES_LEN_MAX;
    list.n = 0;
    list.max_n = TOLL_ROLES_MAX;

    rc = ngx_http_toll_authz_claims(lcf->jwt_role_claims, claims, &list, why);
    if (rc != NGX_OK) {
        goto unread;
    }

    roles->data = list.data;
    roles->len = list.len;

    return NGX_OK;

unread:

    if (rc != NGX_DECLINED) {
        return rc;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "toll: a JWT's scopes and roles are not read: %s", *why);

    *why = NULL;
    ngx_str_null(scopes);
    ngx_str_null(roles);

    return NGX_OK;
}


static ngx_int_t
ngx_http_toll_authz_claims(ngx_array_t *names, json_t *claims,
    ngx_http_toll_authz_list_t *list, const char **why)
{
    size_t       j;
    json_t      *v, *e;
    ngx_str_t   *name;
    ngx_uint_t   i;

    if (names == NULL) {
        return NGX_OK;
    }

    name = names->elts;

    for (i = 0; i < names->nelts; i++) {
        v = json_object_getn(claims, (const char *) name[i].data,
                             name[i].len);

        if (json_is_string(v)) {
            if (json_string_length(v) > NGX_HTTP_TOLL_CLAIM_LEN_MAX
                || ngx_http_toll_authz_claim_string(json_string_value(v),
                                                    json_string_length(v),
                                                    list)
                   != NGX_OK)
            {
                *why = "a scope or role claim holds too many names";
                return NGX_DECLINED;
            }

            continue;
        }

        if (!json_is_array(v)) {
            continue;
        }

        if (json_array_size(v) > NGX_HTTP_TOLL_CLAIM_ITEMS_MAX) {
            *why = "a scope or role claim holds too many names";
            return NGX_DECLINED;
        }

        /* all strings, or the claim is not a list of names */

        json_array_foreach(v, j, e) {
            if (!json_is_string(e)) {
                break;
            }
        }

        if (j < json_array_size(v)) {
            continue;
        }

        json_array_foreach(v, j, e) {
            if (toll_scope_valid(json_string_value(e), json_string_length(e))
                && ngx_http_toll_authz_add(list, json_string_value(e),
                                           json_string_length(e))
                   != NGX_OK)
            {
                *why = "a scope or role claim holds too many names";
                return NGX_DECLINED;
            }
        }
    }

    return NGX_OK;
}


/* a string claim: names separated by spaces, as OAuth's "scope" is */

static ngx_int_t
ngx_http_toll_authz_claim_string(const char *s, size_t len,
    ngx_http_toll_authz_list_t *list)
{
    const char  *p, *last, *sp;

    p = s;
    last = s + len;

    while (p < last) {
        if (*p == ' ') {
            p++;
            continue;
        }

        sp = memchr(p, ' ', last - p);
        if (sp == NULL) {
            sp = last;
        }

        if (toll_scope_valid(p, sp - p)
            && ngx_http_toll_authz_add(list, p, sp - p) != NGX_OK)
        {
            return NGX_DECLINED;
        }

        p = sp;
    }

    return NGX_OK;
}


/* NGX_DECLINED: over the list's bounds; a name already there is skipped */

static ngx_int_t
ngx_http_toll_authz_add(ngx_http_toll_authz_list_t *list, const char *s,
    size_t len)
{
    ngx_str_t  have, name;

    have.data = list->data;
    have.len = list->len;
    name.data = (u_char *) s;
    name.len = len;

    if (ngx_http_toll_authz_has(&have, &name)) {
        return NGX_OK;
    }

    if (list->n == list->max_n
        || list->len + (list->len ? 1 : 0) + len > list->size)
    {
        return NGX_DECLINED;
    }

    if (list->len) {
        list->data[list->len++] = ' ';
    }

    ngx_memcpy(list->data + list->len, s, len);
    list->len += len;
    list->n++;

    return NGX_OK;
}


void
ngx_http_toll_authz_key_roles(ngx_http_toll_key_t *key)
{
    key->roles.data = (u_char *) toll_role_name((toll_role_e) key->role);
    key->roles.len = ngx_strlen(key->roles.data);
}


/* ------------------------------------------------------- configuration */


void
ngx_http_toll_authz_policy_hash(SHA256_CTX *sha,
    ngx_http_toll_loc_conf_t *conf)
{
    uint64_t      n, len;
    ngx_str_t    *name;
    ngx_uint_t    i, k;
    ngx_array_t  *a[2];

    a[0] = conf->jwt_scope_claims;
    a[1] = conf->jwt_role_claims;

    /* counts and lengths first, so that no two lists hash alike */

    for (k = 0; k < 2; k++) {
        n = a[k] ? a[k]->nelts : 0;
        SHA256_Update(sha, &n, sizeof(n));

        name = a[k] ? a[k]->elts : NULL;

        for (i = 0; i < n; i++) {
            len = name[i].len;
            SHA256_Update(sha, &len, sizeof(len));
            SHA256_Update(sha, name[i].data, name[i].len);
        }
    }
}


/* toll_require [scope=NAME]... [role=NAME]... | off; */

char *
ngx_http_toll_require_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_toll_loc_conf_t *lcf = conf;

    ngx_str_t    *value, *s, name;
    ngx_uint_t    i;
    ngx_array_t  *to;

    if (lcf->require_scopes) {
        return "is duplicate";
    }

    lcf->require_scopes = ngx_array_create(cf->pool, 4, sizeof(ngx_str_t));
    lcf->require_roles = ngx_array_create(cf->pool, 2, sizeof(ngx_str_t));
    if (lcf->require_scopes == NULL || lcf->require_roles == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        /* an inner location that anyone authenticated may call */
        return NGX_CONF_OK;
    }

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "scope=", 6) == 0) {
            to = lcf->require_scopes;
            name.data = value[i].data + 6;
            name.len = value[i].len - 6;

        } else if (ngx_strncmp(value[i].data, "role=", 5) == 0) {
            to = lcf->require_roles;
            name.data = value[i].data + 5;
            name.len = value[i].len - 5;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        if (!toll_scope_valid((const char *) name.data, name.len)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid name in \"%V\": 1 to %d of "
                               "[A-Za-z0-9] and \"-._:/+@~*\"",
                               &value[i], TOLL_SCOPE_LEN_MAX);
            return NGX_CONF_ERROR;
        }

        if (to->nelts == ((to == lcf->require_scopes)
                          ? NGX_HTTP_TOLL_REQUIRE_SCOPES_MAX
                          : NGX_HTTP_TOLL_REQUIRE_ROLES_MAX))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "too many %s in \"toll_require\": at most %d",
                               (to == lcf->require_scopes) ? "scopes"
                                                           : "roles",
                               (to == lcf->require_scopes)
                               ? NGX_HTTP_TOLL_REQUIRE_SCOPES_MAX
                               : NGX_HTTP_TOLL_REQUIRE_ROLES_MAX);
            return NGX_CONF_ERROR;
        }

        s = ngx_array_push(to);
        if (s == NULL) {
            return NGX_CONF_ERROR;
        }

        *s = name;
    }

    return NGX_CONF_OK;
}


/* toll_jwt_scope_claim NAME... | off; toll_jwt_role_claim NAME... | off; */

char *
ngx_http_toll_authz_claim_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    char  *p = conf;

    ngx_str_t     *value, *s;
    ngx_uint_t     i;
    ngx_array_t  **a;

    a = (ngx_array_t **) (p + cmd->offset);

    if (*a) {
        return "is duplicate";
    }

    *a = ngx_array_create(cf->pool, 3, sizeof(ngx_str_t));
    if (*a == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        return NGX_CONF_OK;
    }

    if (cf->args->nelts - 1 > NGX_HTTP_TOLL_CLAIMS_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many claims: at most %d",
                           NGX_HTTP_TOLL_CLAIMS_MAX);
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < cf->args->nelts; i++) {
        if (!toll_scope_valid((const char *) value[i].data, value[i].len)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid claim name \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        s = ngx_array_push(*a);
        if (s == NULL) {
            return NGX_CONF_ERROR;
        }

        *s = value[i];
    }

    return NGX_CONF_OK;
}


char *
ngx_http_toll_authz_merge_loc_conf(ngx_conf_t *cf,
    ngx_http_toll_loc_conf_t *prev, ngx_http_toll_loc_conf_t *conf)
{
    /* toll_require is inherited whole: scopes and roles together */

    if (conf->require_scopes == NULL) {
        conf->require_scopes = prev->require_scopes;
        conf->require_roles = prev->require_roles;
    }

    if (conf->jwt_scope_claims == NULL) {
        conf->jwt_scope_claims = prev->jwt_scope_claims;
    }

    if (conf->jwt_scope_claims == NULL) {
        conf->jwt_scope_claims = ngx_http_toll_authz_names(cf,
                                               ngx_http_toll_scope_claims);
        if (conf->jwt_scope_claims == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    if (conf->jwt_role_claims == NULL) {
        conf->jwt_role_claims = prev->jwt_role_claims;
    }

    if (conf->jwt_role_claims == NULL) {
        conf->jwt_role_claims = ngx_http_toll_authz_names(cf,
                                               ngx_http_toll_role_claims);
        if (conf->jwt_role_claims == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static ngx_array_t *
ngx_http_toll_authz_names(ngx_conf_t *cf, const char *defaults[])
{
    ngx_str_t    *s;
    ngx_uint_t    i;
    ngx_array_t  *a;

    a = ngx_array_create(cf->pool, 3, sizeof(ngx_str_t));
    if (a == NULL) {
        return NULL;
    }

    for (i = 0; defaults[i]; i++) {
        s = ngx_array_push(a);
        if (s == NULL) {
            return NULL;
        }

        s->data = (u_char *) defaults[i];
        s->len = ngx_strlen(defaults[i]);
    }

    return a;
}
