/*
 * toll: units the upstream reports for a call (docs/metering.md,
 * "Units"): from a response header (toll_service ... units_header=) or
 * from a plugin (lua-free-plugins/toll_plugin.h).  The amount charged
 * is price + units x unit_price, decided in the log phase.
 */

#ifndef _NGX_HTTP_TOLL_UNITS_H_INCLUDED_
#define _NGX_HTTP_TOLL_UNITS_H_INCLUDED_

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"


/*
 * The call's units, as a plugin reports them: a later report replaces an
 * earlier one, until the log phase decides the amount.  NGX_OK: kept;
 * NGX_ABORT: kept, but above the service's max_units, which is what will
 * be charged; NGX_DECLINED: the call is not one toll prices with units,
 * or its amount is decided already (ignored).
 */
ngx_int_t ngx_http_toll_units_report(ngx_http_request_t *r, uint64_t units);

/*
 * toll_service and toll_route: a units parameter (NGX_OK, or NGX_ERROR
 * when bad; NGX_DECLINED when the parameter is another one), then the
 * directive's units together, with its price.
 */
ngx_int_t ngx_http_toll_units_param(ngx_conf_t *cf,
    ngx_http_toll_units_conf_t *uc, ngx_str_t *value);
char *ngx_http_toll_units_check(ngx_conf_t *cf,
    ngx_http_toll_units_conf_t *uc, int64_t price_micros);

/* the header filter: the units header read, a charged call's amount */
void ngx_http_toll_units_header(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_uint_t charged);

/* the amount from the units known now; final: the log phase */
void ngx_http_toll_units_charge(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_uint_t final);


#endif /* _NGX_HTTP_TOLL_UNITS_H_INCLUDED_ */
