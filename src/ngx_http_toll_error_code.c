/*
 * toll: toll_error_code, a refusal's code renamed for a platform's
 * clients.
 *
 * The list is read once per location and inherited as nginx inherits
 * lists: a level that names any code replaces what it would inherit.  A
 * refusal looks its code up in a handful of pairs; the hot path of a
 * passed call never does.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_error_code.h"


typedef struct {
    ngx_str_t                  code;          /* toll's */
    ngx_str_t                  name;          /* the platform's */
} ngx_http_toll_error_code_t;


/*
 * The codes toll answers with (docs/errors.md).  A plugin's own code is
 * its own to choose and is not renamed here.
 */
static ngx_str_t  ngx_http_toll_error_codes[] = {
    ngx_string("unauthorized"),
    ngx_string("ambiguous_credentials"),
    ngx_string("store_unavailable"),
    ngx_string("rate_limited"),
    ngx_string("concurrency_limited"),
    ngx_string("payment_required"),
    ngx_string("spend_cap_exceeded"),
    ngx_string("forbidden"),
    ngx_string("refused"),
    ngx_null_string
};


static ngx_uint_t ngx_http_toll_error_code_known(ngx_str_t *code);


char *
ngx_http_toll_error_code_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_toll_loc_conf_t  *lcf = conf;

    u_char                      *p;
    ngx_str_t                   *value;
    ngx_uint_t                   i;
    ngx_http_toll_error_code_t  *ec;

    value = cf->args->elts;

    if (!ngx_http_toll_error_code_known(&value[1])) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown code \"%V\": toll answers with "
                           "unauthorized, ambiguous_credentials, "
                           "store_unavailable, rate_limited, "
                           "concurrency_limited, payment_required, "
                           "spend_cap_exceeded, forbidden and refused",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    /* the name goes into JSON unescaped: letters, digits, "_", "-", "." */

    if (value[2].len == 0 || value[2].len > NGX_HTTP_TOLL_ERROR_CODE_LEN_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid name \"%V\" for code \"%V\": 1 to %d "
                           "characters", &value[2], &value[1],
                           NGX_HTTP_TOLL_ERROR_CODE_LEN_MAX);
        return NGX_CONF_ERROR;
    }

    for (p = value[2].data; p < value[2].data + value[2].len; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
              || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'
              || *p == '.'))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid name \"%V\" for code \"%V\": only "
                               "letters, digits, \"_\", \"-\" and \".\"",
                               &value[2], &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    if (lcf->error_codes == NGX_CONF_UNSET_PTR) {
        lcf->error_codes = ngx_array_create(cf->pool, 4,
                                            sizeof(ngx_http_toll_error_code_t));
        if (lcf->error_codes == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    ec = lcf->error_codes->elts;

    for (i = 0; i < lcf->error_codes->nelts; i++) {
        if (ec[i].code.len == value[1].len
            && ngx_strncmp(ec[i].code.data, value[1].data, value[1].len)
               == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "code \"%V\" is renamed twice", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    ec = ngx_array_push(lcf->error_codes);
    if (ec == NULL) {
        return NGX_CONF_ERROR;
    }

    ec->code = value[1];
    ec->name = value[2];

    return NGX_CONF_OK;
}


void
ngx_http_toll_error_code_map(ngx_array_t *codes, ngx_str_t *code)
{
    ngx_uint_t                   i;
    ngx_http_toll_error_code_t  *ec;

    if (codes == NULL) {
        return;
    }

    ec = codes->elts;

    for (i = 0; i < codes->nelts; i++) {
        if (ec[i].code.len == code->len
            && ngx_strncmp(ec[i].code.data, code->data, code->len) == 0)
        {
            *code = ec[i].name;
            return;
        }
    }
}


static ngx_uint_t
ngx_http_toll_error_code_known(ngx_str_t *code)
{
    ngx_str_t  *c;

    for (c = ngx_http_toll_error_codes; c->len; c++) {
        if (c->len == code->len
            && ngx_strncmp(c->data, code->data, code->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}
