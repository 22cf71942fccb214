/*
 * toll: the credential directives (toll_key_header, toll_key_import_prefix,
 * toll_query_token), their merge, and the variables the gate makes read
 * the request anew.  The request side is ngx_http_toll_credential.c.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_credential.h"


#define NGX_HTTP_TOLL_KEY_HEADERS_MAX      4
/* a bit per length in credential_lens: the names are kept under 64 */
#define NGX_HTTP_TOLL_KEY_HEADER_LEN_MAX  63
#define NGX_HTTP_TOLL_IMPORT_PREFIXES_MAX  8
#define NGX_HTTP_TOLL_IMPORT_PREFIX_MAX    32     /* characters */
#define NGX_HTTP_TOLL_QUERY_NAME_MAX       32     /* characters */


ngx_uint_t
ngx_http_toll_credential_variable(ngx_http_toll_main_conf_t *mcf,
    ngx_str_t *name)
{
    ngx_str_t   *h;
    ngx_uint_t   i;

    static ngx_str_t  query[] = {
        ngx_string("request"), ngx_string("request_uri"),
        ngx_string("args"), ngx_string("query_string"),
        ngx_string("is_args")
    };

    if (mcf->key_header_names) {
        h = mcf->key_header_names->elts;

        for (i = 0; i < mcf->key_header_names->nelts; i++) {
            if (name->len == sizeof("http_") - 1 + h[i].len
                && ngx_strncasecmp(name->data, (u_char *) "http_",
                                   sizeof("http_") - 1) == 0
                && ngx_strncasecmp(name->data + sizeof("http_") - 1,
                                   h[i].data, h[i].len) == 0)
            {
                return 1;
            }
        }
    }

    if (!mcf->query_tokens) {
        return 0;
    }

    for (i = 0; i < sizeof(query) / sizeof(query[0]); i++) {
        if (name->len == query[i].len
            && ngx_strncasecmp(name->data, query[i].data, name->len) == 0)
        {
            return 1;
        }
    }

    return name->len > sizeof("arg_") - 1
           && ngx_strncasecmp(name->data, (u_char *) "arg_",
                              sizeof("arg_") - 1) == 0;
}


/* toll_key_header NAME...; */

char *
ngx_http_toll_key_header_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_toll_loc_conf_t  *lcf = conf;

    u_char                     *p;
    ngx_str_t                  *value, *name, *all;
    ngx_uint_t                  i, j;
    ngx_http_toll_main_conf_t  *mcf;

    if (lcf->key_headers) {
        return "is duplicate";
    }

    if (cf->args->nelts - 1 > NGX_HTTP_TOLL_KEY_HEADERS_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"toll_key_header\" takes at most %d names",
                           NGX_HTTP_TOLL_KEY_HEADERS_MAX);
        return NGX_CONF_ERROR;
    }

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_toll_module);

    lcf->key_headers = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                        sizeof(ngx_str_t));
    if (lcf->key_headers == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        /* '_' would be a second spelling of the name: see the strip */

        if (!ngx_http_toll_header_name_valid(value[i].data, value[i].len)
            || value[i].len > NGX_HTTP_TOLL_KEY_HEADER_LEN_MAX
            || ngx_strlchr(value[i].data, value[i].data + value[i].len, '_')
            || (value[i].len == sizeof("authorization") - 1
                && ngx_strncasecmp(value[i].data, (u_char *) "authorization",
                                   value[i].len) == 0)
            || (value[i].len >= sizeof("x-toll-") - 1
                && ngx_strncasecmp(value[i].data, (u_char *) "x-toll-",
                                   sizeof("x-toll-") - 1) == 0))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid header name \"%V\": up to %d "
                               "letters, digits and '-', neither "
                               "Authorization nor X-Toll-*", &value[i],
                               NGX_HTTP_TOLL_KEY_HEADER_LEN_MAX);
            return NGX_CONF_ERROR;
        }

        p = ngx_pnalloc(cf->pool, value[i].len);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_strlow(p, value[i].data, value[i].len);

        name = lcf->key_headers->elts;

        for (j = 0; j < lcf->key_headers->nelts; j++) {
            if (name[j].len == value[i].len
                && ngx_strncmp(name[j].data, p, value[i].len) == 0)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "duplicate header name \"%V\"",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }
        }

        name = ngx_array_push(lcf->key_headers);
        if (name == NULL) {
            return NGX_CONF_ERROR;
        }

        name->data = p;
        name->len = value[i].len;

        if (mcf->key_header_names == NULL) {
            mcf->key_header_names = ngx_array_create(cf->pool, 4,
                                                     sizeof(ngx_str_t));
            if (mcf->key_header_names == NULL) {
                return NGX_CONF_ERROR;
            }
        }

        /* $http_x_service_token: '-' is '_' in a variable's name */

        all = ngx_array_push(mcf->key_header_names);
        if (all == NULL) {
            return NGX_CONF_ERROR;
        }

        all->data = ngx_pnalloc(cf->pool, name->len);
        if (all->data == NULL) {
            return NGX_CONF_ERROR;
        }

        all->len = name->len;

        for (j = 0; j < name->len; j++) {
            all->data[j] = (name->data[j] == '-') ? '_' : name->data[j];
        }
    }

    return NGX_CONF_OK;
}


/* toll_key_import_prefix PREFIX...; */

char *
ngx_http_toll_key_import_prefix_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_toll_loc_conf_t  *lcf = conf;

    ngx_str_t   *value, *prefix;
    ngx_uint_t   i;

    if (lcf->import_prefixes) {
        return "is duplicate";
    }

    if (cf->args->nelts - 1 > NGX_HTTP_TOLL_IMPORT_PREFIXES_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"toll_key_import_prefix\" takes at most %d "
                           "prefixes", NGX_HTTP_TOLL_IMPORT_PREFIXES_MAX);
        return NGX_CONF_ERROR;
    }

    lcf->import_prefixes = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                            sizeof(ngx_str_t));
    if (lcf->import_prefixes == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        /* a prefix is part of a token: a token's characters, and short */

        if (value[i].len == 0
            || value[i].len > NGX_HTTP_TOLL_IMPORT_PREFIX_MAX
            || !toll_key_id_valid(value[i].data, value[i].len))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid prefix \"%V\": use 1 to %d of "
                               "A-Z a-z 0-9 _ -", &value[i],
                               NGX_HTTP_TOLL_IMPORT_PREFIX_MAX);
            return NGX_CONF_ERROR;
        }

        prefix = ngx_array_push(lcf->import_prefixes);
        if (prefix == NULL) {
            return NGX_CONF_ERROR;
        }

        *prefix = value[i];
    }

    return NGX_CONF_OK;
}


/* toll_query_token on|off [name=NAME]; */

char *
ngx_http_toll_query_token_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_toll_loc_conf_t  *lcf = conf;

    u_char                     *p;
    ngx_str_t                  *value, name;
    ngx_uint_t                  i;
    ngx_http_toll_main_conf_t  *mcf;

    if (lcf->query_token != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "on") == 0) {
        lcf->query_token = 1;

    } else if (ngx_strcmp(value[1].data, "off") == 0) {
        lcf->query_token = 0;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\", it must be \"on\" or "
                           "\"off\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {
        if (ngx_strncmp(value[i].data, "name=", 5) != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        name.data = value[i].data + 5;
        name.len = value[i].len - 5;

        for (p = name.data; p < name.data + name.len; p++) {
            if (!(toll_key_id_valid(p, 1) || *p == '.')) {
                break;
            }
        }

        if (name.len == 0 || name.len > NGX_HTTP_TOLL_QUERY_NAME_MAX
            || p != name.data + name.len)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid name \"%V\": use 1 to %d of "
                               "A-Z a-z 0-9 _ . -", &name,
                               NGX_HTTP_TOLL_QUERY_NAME_MAX);
            return NGX_CONF_ERROR;
        }

        lcf->query_token_name = name;
    }

    if (lcf->query_token) {
        mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_toll_module);
        mcf->query_tokens = 1;
    }

    return NGX_CONF_OK;
}


char *
ngx_http_toll_credential_merge_loc_conf(ngx_conf_t *cf,
    ngx_http_toll_loc_conf_t *prev, ngx_http_toll_loc_conf_t *conf)
{
    ngx_str_t                 *name;
    ngx_uint_t                 i;
    ngx_http_core_loc_conf_t  *clcf;

    /* NULL until set: X-API-Key, and no imported keys */

    if (conf->key_headers == NULL) {
        conf->key_headers = prev->key_headers;
    }

    if (conf->import_prefixes == NULL) {
        conf->import_prefixes = prev->import_prefixes;
    }

    /* the names' lengths, for the hot path's first test */

    conf->credential_lens = (uint64_t) 1 << (sizeof("authorization") - 1);

    if (conf->key_headers) {
        name = conf->key_headers->elts;

        for (i = 0; i < conf->key_headers->nelts; i++) {
            conf->credential_lens |= (uint64_t) 1 << name[i].len;
        }

    } else {
        conf->credential_lens |= (uint64_t) 1 << (sizeof("x-api-key") - 1);
    }

    ngx_conf_merge_value(conf->jwt_with_key, prev->jwt_with_key, 0);

    /*
     * A location's own choice: never inherited, so only it reads tokens;
     * but an "if" or a "limit_except" inside it is the same location to
     * the client, and keeps its choice.
     */

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (conf->query_token == NGX_CONF_UNSET) {
        conf->query_token = (clcf->noname || clcf->lmt_excpt)
                            ? prev->query_token : 0;
    }

    if (conf->query_token_name.data == NULL) {
        if ((clcf->noname || clcf->lmt_excpt)
            && prev->query_token_name.data)
        {
            conf->query_token_name = prev->query_token_name;

        } else {
            ngx_str_set(&conf->query_token_name, "access_token");
        }
    }

    return NGX_CONF_OK;
}
