/*
 * toll: units the upstream reports for a call (docs/metering.md,
 * "Units").
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_handler.h"
#include "ngx_http_toll_units.h"


ngx_int_t
ngx_http_toll_units_report(ngx_http_request_t *r, uint64_t units)
{
    ngx_http_toll_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_toll_module);

    if (ctx == NULL || !ctx->priced || ctx->metered) {
        return NGX_DECLINED;
    }

    ctx->units = units;
    ctx->units_reported = 1;

    return NGX_OK;
}
