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


/*
 * The call's units, as a plugin reports them: a later report replaces an
 * earlier one, until the log phase decides the amount.  NGX_OK: kept;
 * NGX_DECLINED: the call is not one toll prices, or its amount is
 * decided already (ignored).
 */
ngx_int_t ngx_http_toll_units_report(ngx_http_request_t *r, uint64_t units);


#endif /* _NGX_HTTP_TOLL_UNITS_H_INCLUDED_ */
