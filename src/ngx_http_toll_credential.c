/*
 * toll: where a credential comes from, and its removal from the request.
 *
 * The headers are scanned once: Authorization, and the location's API
 * key headers (toll_key_header, X-API-Key by default).  Where
 * toll_query_token is on, the query string is a third place.  Two
 * credentials that are not the same token are refused (400) rather than
 * guessed at, but for a JWT with an API key where toll_jwt_with_key is
 * on: then both must verify and the JWT must name the key's owner.
 *
 * A token in the query string is removed from the request as soon as it
 * was read, whatever the outcome: from r->args (what proxy_pass with a
 * URI part sends), from r->unparsed_uri (what it sends without one, and
 * $request_uri) and from r->request_line ($request, and the error log's
 * "request:").  In HTTP/1.x these three are views of one buffer, the
 * client's header buffer, and are cut there in place; nothing of the
 * token is copied, and the bytes freed at the end are blanked.  Only a
 * percent-encoded token is decoded into a buffer of its own, wiped as
 * soon as it was used.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_credential.h"
#include "ngx_http_toll_jwt.h"


static ngx_int_t ngx_http_toll_credential_query(ngx_http_request_t *r,
    ngx_http_toll_loc_conf_t *lcf, ngx_http_toll_credential_t *cred,
    ngx_str_t *token);
static ngx_int_t ngx_http_toll_query_decode(ngx_http_request_t *r,
    ngx_str_t *raw, ngx_http_toll_credential_t *cred, ngx_str_t *token);
static ngx_http_toll_auth_status_e ngx_http_toll_credential_key(
    ngx_http_toll_loc_conf_t *lcf, u_char *p, size_t len,
    ngx_http_toll_credential_t *cred);
static ngx_uint_t ngx_http_toll_key_header(ngx_table_elt_t *h,
    ngx_http_toll_loc_conf_t *lcf);
static ngx_uint_t ngx_http_toll_query_name_is(u_char *p, u_char *last,
    ngx_str_t *name);
static ngx_uint_t ngx_http_toll_query_has(u_char *src, size_t len,
    ngx_str_t *name);
static ngx_uint_t ngx_http_toll_query_param(u_char *p, u_char *last,
    ngx_str_t *name, u_char **end, u_char **eq);
static size_t ngx_http_toll_query_keep(u_char *dst, u_char *src, size_t len,
    ngx_str_t *name);
static size_t ngx_http_toll_query_cut(ngx_str_t *s, u_char *query,
    u_char *end, ngx_str_t *name, size_t *kept);
static ngx_uint_t ngx_http_toll_inside(ngx_str_t *s, u_char *p);


static ngx_str_t  ngx_http_toll_default_key_header = ngx_string("x-api-key");


/* ------------------------------------------------------------ requests */


ngx_http_toll_auth_status_e
ngx_http_toll_credential_read(ngx_http_request_t *r,
    ngx_http_toll_loc_conf_t *lcf, ngx_http_toll_credential_t *cred)
{
    size_t            blen;
    u_char           *bearer;
    ngx_int_t         rc;
    ngx_str_t         query;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *authorization, *key;

    ngx_memzero(cred, sizeof(ngx_http_toll_credential_t));

    authorization = NULL;
    key = NULL;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof("authorization") - 1
            && ngx_strncmp(h[i].lowcase_key, "authorization",
                           sizeof("authorization") - 1) == 0)
        {
            if (authorization) {
                return NGX_HTTP_TOLL_AUTH_AMBIGUOUS;
            }

            authorization = &h[i];
            continue;
        }

        /* a key header twice, or two of them, is two credentials */

        if (ngx_http_toll_key_header(&h[i], lcf)) {
            if (key) {
                return NGX_HTTP_TOLL_AUTH_AMBIGUOUS;
            }

            key = &h[i];
        }
    }

    ngx_str_null(&query);

    if (lcf->query_token) {
        rc = ngx_http_toll_credential_query(r, lcf, cred, &query);

        if (rc == NGX_ERROR) {
            return NGX_HTTP_TOLL_AUTH_NONE;
        }

        if (rc == NGX_BUSY) {
            return NGX_HTTP_TOLL_AUTH_AMBIGUOUS;
        }

        if (rc == NGX_DECLINED) {
            return NGX_HTTP_TOLL_AUTH_MALFORMED;
        }
    }

    /* the bearer token: the Authorization header's, or the query's */

    bearer = query.data;
    blen = query.len;

    if (authorization) {
        if (toll_bearer_token(authorization->value.data,
                              authorization->value.len,
                              (const unsigned char **) &bearer, &blen)
            != TOLL_CRED_OK)
        {
            return (key || query.data) ? NGX_HTTP_TOLL_AUTH_AMBIGUOUS
                                       : NGX_HTTP_TOLL_AUTH_MALFORMED;
        }

        if (query.data
            && (query.len != blen
                || ngx_memcmp(query.data, bearer, blen) != 0))
        {
            return NGX_HTTP_TOLL_AUTH_AMBIGUOUS;
        }
    }

    if (bearer && lcf->jwt && ngx_strlchr(bearer, bearer + blen, '.')) {

        /* a dot: a JWT (an API key never has one) */

        cred->jwt.data = bearer;
        cred->jwt.len = blen;

        if (key == NULL) {
            return NGX_HTTP_TOLL_AUTH_OK;
        }

        if (!lcf->jwt_with_key) {
            return NGX_HTTP_TOLL_AUTH_AMBIGUOUS;
        }

        return ngx_http_toll_credential_key(lcf, key->value.data,
                                            key->value.len, cred);
    }

    if (bearer && key) {

        /* the same token twice is one credential; anything else is two */

        if (blen != key->value.len
            || ngx_memcmp(bearer, key->value.data, blen) != 0)
        {
            return NGX_HTTP_TOLL_AUTH_AMBIGUOUS;
        }
    }

    if (bearer) {
        return ngx_http_toll_credential_key(lcf, bearer, blen, cred);
    }

    if (key) {
        return ngx_http_toll_credential_key(lcf, key->value.data,
                                            key->value.len, cred);
    }

    return NGX_HTTP_TOLL_AUTH_MISSING;
}


/*
 * "key_id:secret" as tollctl creates them, or a one-part token imported
 * with a prefix this location lists: any other one-part token is refused
 * as malformed, as before imports existed.
 */

static ngx_http_toll_auth_status_e
ngx_http_toll_credential_key(ngx_http_toll_loc_conf_t *lcf, u_char *p,
    size_t len, ngx_http_toll_credential_t *cred)
{
    ngx_str_t       *prefix;
    ngx_uint_t       i;
    toll_cred_rc_e   rc;

    if (ngx_strlchr(p, p + len, ':')) {
        rc = toll_token_parse(p, len, &cred->tok);

        /*
         * "ik_<id>:<token>" would reach an imported key's record and match
         * its hash, past the location's list of prefixes: an imported key
         * is presented whole, or not at all.
         */

        if (rc == TOLL_CRED_OK
            && cred->tok.key_id_len >= sizeof(TOLL_OPAQUE_ID_PREFIX) - 1
            && ngx_strncmp(cred->tok.key_id, TOLL_OPAQUE_ID_PREFIX,
                           sizeof(TOLL_OPAQUE_ID_PREFIX) - 1) == 0)
        {
            rc = TOLL_CRED_MALFORMED;
        }

    } else {
        rc = TOLL_CRED_MALFORMED;

        if (lcf->import_prefixes) {
            prefix = lcf->import_prefixes->elts;

            for (i = 0; i < lcf->import_prefixes->nelts; i++) {
                if (len > prefix[i].len
                    && ngx_strncmp(p, prefix[i].data, prefix[i].len) == 0)
                {
                    rc = toll_opaque_parse(p, len, cred->id, &cred->tok);
                    break;
                }
            }
        }
    }

    if (rc != TOLL_CRED_OK) {
        return NGX_HTTP_TOLL_AUTH_MALFORMED;
    }

    cred->key = 1;

    return NGX_HTTP_TOLL_AUTH_OK;
}


/*
 * The query parameter, where toll_query_token is on.  Its name is
 * matched as upstream frameworks would read it: in any case and
 * percent-decoded, so that no spelling of it passes as a second token.
 * NGX_OK (token set, or empty when absent), NGX_BUSY twice, NGX_DECLINED
 * malformed, NGX_ERROR.
 */

static ngx_int_t
ngx_http_toll_credential_query(ngx_http_request_t *r,
    ngx_http_toll_loc_conf_t *lcf, ngx_http_toll_credential_t *cred,
    ngx_str_t *token)
{
    u_char     *p, *last, *end, *eq;
    ngx_str_t   raw;

    ngx_str_null(&raw);

    last = r->args.data + r->args.len;

    for (p = r->args.data; p < last; p = end + 1) {
        if (ngx_http_toll_query_param(p, last, &lcf->query_token_name, &end,
                                      &eq))
        {
            if (raw.data) {
                return NGX_BUSY;
            }

            /* "access_token" with no '=': an empty token, refused */

            raw.data = eq ? eq + 1 : end;
            raw.len = end - raw.data;
        }
    }

    if (raw.data == NULL) {
        return NGX_OK;
    }

    return ngx_http_toll_query_decode(r, &raw, cred, token);
}


static ngx_int_t
ngx_http_toll_query_decode(ngx_http_request_t *r, ngx_str_t *raw,
    ngx_http_toll_credential_t *cred, ngx_str_t *token)
{
    u_char  *p, *last, *d;
    u_char   hi, lo;

    /* longer than the longest JWT even fully encoded: not read */

    if (raw->len == 0 || raw->len > 3 * NGX_HTTP_TOLL_JWT_LEN_MAX) {
        return NGX_DECLINED;
    }

    if (ngx_strlchr(raw->data, raw->data + raw->len, '%') == NULL) {
        *token = *raw;
        return NGX_OK;
    }

    d = ngx_pnalloc(r->pool, raw->len);
    if (d == NULL) {
        return NGX_ERROR;
    }

    cred->decoded.data = d;

    p = raw->data;
    last = p + raw->len;

    while (p < last) {
        if (*p != '%') {
            *d++ = *p++;
            continue;
        }

        if (last - p < 3) {
            break;
        }

        hi = (u_char) ngx_hextoi(p + 1, 1);
        lo = (u_char) ngx_hextoi(p + 2, 1);

        if (hi > 15 || lo > 15) {
            break;
        }

        *d++ = (u_char) (hi << 4 | lo);
        p += 3;
    }

    cred->decoded.len = d - cred->decoded.data;

    if (p < last) {
        /* a '%' not followed by two hex digits */
        return NGX_DECLINED;
    }

    *token = cred->decoded;

    return NGX_OK;
}


void
ngx_http_toll_credential_done(ngx_http_request_t *r,
    ngx_http_toll_loc_conf_t *lcf, ngx_http_toll_credential_t *cred)
{
    if (cred->decoded.data) {
        ngx_explicit_memzero(cred->decoded.data, cred->decoded.len);
        ngx_str_null(&cred->decoded);
    }

    ngx_http_toll_credential_query_forget(r, lcf);
}


/*
 * Removes every parameter of the token's name from the request line,
 * the unparsed URI and the arguments.  Running it twice does nothing the
 * second time.
 */

void
ngx_http_toll_credential_query_forget(ngx_http_request_t *r,
    ngx_http_toll_loc_conf_t *lcf)
{
    u_char      *q, *end, *args;
    size_t       removed, kept, len;
    ngx_str_t   *rl, *uu;
    ngx_uint_t   proto;

    if (!lcf->query_token) {
        return;
    }

    rl = &r->request_line;
    uu = &r->unparsed_uri;
    args = r->args.data;

    /*
     * HTTP/1.x: the unparsed URI lies in the request line, and the
     * arguments at its end; the query ends where the URI does.
     */

    if (uu->len && ngx_http_toll_inside(rl, uu->data)) {
        end = uu->data + uu->len;
        q = ngx_strlchr(uu->data, end, '?');

        if (q) {
            /* "HTTP/1.1" moves back with the rest: asked before the cut */

            proto = r->http_protocol.len
                    && ngx_http_toll_inside(rl, r->http_protocol.data)
                    && r->http_protocol.data >= end;

            removed = ngx_http_toll_query_cut(rl, q, end,
                                              &lcf->query_token_name, &kept);
            uu->len -= removed;

            if (proto) {
                r->http_protocol.data -= removed;
            }

            if (args == q + 1) {
                r->args.len = kept;
                return;
            }
        }

    } else {

        /* HTTP/2: the request line was made apart from the :path */

        if (rl->len) {
            end = ngx_strlchr(rl->data, rl->data + rl->len, ' ');
            end = end ? ngx_strlchr(end + 1, rl->data + rl->len, ' ') : NULL;
            end = end ? end : rl->data + rl->len;
            q = ngx_strlchr(rl->data, end, '?');

            if (q) {
                (void) ngx_http_toll_query_cut(rl, q, end,
                                               &lcf->query_token_name, &kept);
            }
        }

        q = uu->len ? ngx_strlchr(uu->data, uu->data + uu->len, '?') : NULL;

        if (q) {
            (void) ngx_http_toll_query_cut(uu, q, uu->data + uu->len,
                                           &lcf->query_token_name, &kept);

            if (args == q + 1) {
                r->args.len = kept;
                return;
            }
        }
    }

    /*
     * Arguments a rewrite made: they may be the configuration's own text
     * ("set $args"), never written to; the kept parameters are copied,
     * when there is a token among them.
     */

    len = r->args.len;

    if (len == 0
        || !ngx_http_toll_query_has(r->args.data, len, &lcf->query_token_name))
    {
        return;
    }

    args = ngx_pnalloc(r->pool, len);
    if (args == NULL) {
        /* nothing is sent anywhere without the arguments gone: empty */
        r->args.len = 0;
        return;
    }

    r->args.len = ngx_http_toll_query_keep(args, r->args.data, len,
                                           &lcf->query_token_name);
    r->args.data = args;
}


/*
 * Cuts the token's parameters from the query that starts after q ('?')
 * and ends at end, inside s, with its '?' when nothing is left; the rest
 * of s moves back and the bytes freed at its end are blanked.  Returns
 * the bytes removed and sets kept to the query's new length.
 */

static size_t
ngx_http_toll_query_cut(ngx_str_t *s, u_char *q, u_char *end,
    ngx_str_t *name, size_t *kept)
{
    u_char  *last;
    size_t   removed;

    if (!ngx_http_toll_query_has(q + 1, end - q - 1, name)) {
        /* a query without the token is left as it came, byte for byte */
        *kept = end - q - 1;
        return 0;
    }

    *kept = ngx_http_toll_query_keep(q + 1, q + 1, end - q - 1, name);

    removed = (end - q - 1) - *kept;

    if (*kept == 0) {
        removed++;
    }

    last = s->data + s->len;

    ngx_memmove(end - removed, end, last - end);
    ngx_memset(last - removed, ' ', removed);

    s->len -= removed;

    return removed;
}


/*
 * Copies the parameters of src that are not the token's to dst (which
 * may be src: dst never passes src), joined by '&'; returns the length.
 */

static size_t
ngx_http_toll_query_keep(u_char *dst, u_char *src, size_t len,
    ngx_str_t *name)
{
    u_char  *p, *last, *end, *eq, *d;

    d = dst;
    last = src + len;

    for (p = src; p < last; p = end + 1) {
        if (!ngx_http_toll_query_param(p, last, name, &end, &eq)) {
            if (d != dst) {
                *d++ = '&';
            }

            d = ngx_movemem(d, p, end - p);
        }
    }

    return d - dst;
}


/* whether one of the parameters is the token's */

static ngx_uint_t
ngx_http_toll_query_has(u_char *src, size_t len, ngx_str_t *name)
{
    u_char  *p, *last, *end, *eq;

    last = src + len;

    for (p = src; p < last; p = end + 1) {
        if (ngx_http_toll_query_param(p, last, name, &end, &eq)) {
            return 1;
        }
    }

    return 0;
}


/*
 * The parameter that starts at p: where it ends ('&' or last), its '='
 * (NULL: none), and whether its name is the token's.
 */

static ngx_uint_t
ngx_http_toll_query_param(u_char *p, u_char *last, ngx_str_t *name,
    u_char **end, u_char **eq)
{
    *end = ngx_strlchr(p, last, '&');
    if (*end == NULL) {
        *end = last;
    }

    *eq = ngx_strlchr(p, *end, '=');

    return ngx_http_toll_query_name_is(p, *eq ? *eq : *end, name);
}


/* in any case, percent-decoded; a broken escape matches nothing */

static ngx_uint_t
ngx_http_toll_query_name_is(u_char *p, u_char *last, ngx_str_t *name)
{
    u_char      c;
    ngx_int_t   n;
    ngx_uint_t  i;

    for (i = 0; i < name->len; i++) {
        if (p >= last) {
            return 0;
        }

        c = *p++;

        if (c == '%') {
            if (last - p < 2) {
                return 0;
            }

            n = ngx_hextoi(p, 2);
            if (n == NGX_ERROR) {
                return 0;
            }

            c = (u_char) n;
            p += 2;
        }

        if (ngx_tolower(c) != ngx_tolower(name->data[i])) {
            return 0;
        }
    }

    return p == last;
}


static ngx_uint_t
ngx_http_toll_inside(ngx_str_t *s, u_char *p)
{
    return s->len && p >= s->data && p <= s->data + s->len;
}


/* ------------------------------------------------------------- headers */


static ngx_uint_t
ngx_http_toll_key_header(ngx_table_elt_t *h, ngx_http_toll_loc_conf_t *lcf)
{
    ngx_str_t   *name;
    ngx_uint_t   i, n;

    if (h->key.len >= 64
        || (lcf->credential_lens & ((uint64_t) 1 << h->key.len)) == 0)
    {
        return 0;
    }

    if (lcf->key_headers) {
        name = lcf->key_headers->elts;
        n = lcf->key_headers->nelts;

    } else {
        name = &ngx_http_toll_default_key_header;
        n = 1;
    }

    for (i = 0; i < n; i++) {
        if (h->key.len == name[i].len
            && ngx_strncmp(h->lowcase_key, name[i].data, name[i].len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/*
 * As the scan, but reading '_' as '-': with underscores_in_headers on,
 * "X_API_Key" reaches a CGI-style backend as HTTP_X_API_KEY too.
 */

ngx_uint_t
ngx_http_toll_credential_named(ngx_table_elt_t *h,
    ngx_http_toll_loc_conf_t *lcf)
{
    u_char      c;
    size_t      k;
    ngx_str_t  *name, *s;
    ngx_uint_t  i, n;

    static ngx_str_t  authorization = ngx_string("authorization");

    if (lcf->key_headers) {
        name = lcf->key_headers->elts;
        n = lcf->key_headers->nelts;

    } else {
        name = &ngx_http_toll_default_key_header;
        n = 1;
    }

    for (i = 0; i <= n; i++) {
        s = (i == n) ? &authorization : &name[i];

        if (h->key.len != s->len) {
            continue;
        }

        for (k = 0; k < s->len; k++) {
            c = h->lowcase_key[k];

            if ((c == '_' ? '-' : c) != s->data[k]) {
                break;
            }
        }

        if (k == s->len) {
            return 1;
        }
    }

    return 0;
}


/* ------------------------------------------------------ JWT with a key */


void
ngx_http_toll_credential_jwt_then_key(ngx_http_toll_ctx_t *ctx)
{
    /* the owner is in the request's pool, whether cached or verified */

    ctx->jwt_buyer = ctx->key.owner;

    ngx_memzero(&ctx->key, sizeof(ngx_http_toll_key_t));
    ctx->key.rate_limit = -1;
    ngx_str_null(&ctx->key_id);
}


/*
 * The key bills and limits (its owner, plan and rate, its caps); the JWT
 * proves the organisation, and must name the same buyer: a token of one
 * buyer with a key of another would be two callers.
 */

ngx_http_toll_auth_status_e
ngx_http_toll_credential_pair(ngx_http_toll_ctx_t *ctx)
{
    if (ctx->jwt_buyer.len == 0) {
        return NGX_HTTP_TOLL_AUTH_OK;
    }

    if (ctx->jwt_buyer.len != ctx->key.owner.len
        || ngx_memcmp(ctx->jwt_buyer.data, ctx->key.owner.data,
                      ctx->key.owner.len) != 0)
    {
        ctx->auth_detail = "its buyer is not the API key's owner";
        return NGX_HTTP_TOLL_AUTH_CLAIMS;
    }

    return NGX_HTTP_TOLL_AUTH_OK;
}
