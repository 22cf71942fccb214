/*
 * toll: services, prices and what each call costs.
 *
 * A location names the service it sells with toll_service; its price is
 * parsed into micro-units at configuration time, and toll_route rules may
 * price some calls differently.  The access phase decides what a passed
 * call costs; the header filter tells the caller in billing headers.
 */

#ifndef _NGX_HTTP_TOLL_QUOTA_H_INCLUDED_
#define _NGX_HTTP_TOLL_QUOTA_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"


typedef struct {
    ngx_str_t                  method;        /* empty: any */
    ngx_regex_t               *regex;
    ngx_str_t                  pattern;
    int64_t                    price_micros;  /* 1e-6 of the currency */
    ngx_http_toll_units_conf_t units;         /* unit_nanos 0: the
                                                 service's */
} ngx_http_toll_route_t;


char *ngx_http_toll_service_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_toll_route_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_toll_charge_status_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
char *ngx_http_toll_billing_prefix_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);

char *ngx_http_toll_quota_merge_loc_conf(ngx_conf_t *cf,
    ngx_http_toll_loc_conf_t *prev, ngx_http_toll_loc_conf_t *conf);
/* the billing headers of a priced call (from the header filter) */
/* what a call that reached the upstream is charged, decided once */
void ngx_http_toll_quota_decide(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx);
ngx_int_t ngx_http_toll_quota_headers_out(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx);
ngx_int_t ngx_http_toll_quota_init_process(ngx_cycle_t *cycle);

/*
 * Prices a call that passed the gate: the service, the price of the first
 * route that matches, a usage id.  NGX_OK, or NGX_ERROR.
 */
ngx_int_t ngx_http_toll_quota_price(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx);

/* the free_calls of a configured service by name; -1: no such service */
int64_t ngx_http_toll_quota_free_calls(ngx_http_request_t *r,
    ngx_str_t *name);

/* the request ends: a lease it waits for still lands in the zone */
void ngx_http_toll_quota_cleanup(ngx_http_toll_ctx_t *ctx);

/* the service's and the provider's names of a priced call */
void ngx_http_toll_quota_names(ngx_http_toll_ctx_t *ctx, ngx_str_t *service,
    ngx_str_t *provider);

/* an internal redirect prices the call again: gives back what it took */
void ngx_http_toll_quota_unprice(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx);

/* a priced call that never reached the upstream: gives back what it took */
void ngx_http_toll_quota_unused(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx);

/*
 * $toll_service, $toll_provider, $toll_usage_id, $toll_amount, $toll_price
 * and $toll_free_tier, in that order from 0.
 */
ngx_int_t ngx_http_toll_quota_variable(ngx_http_request_t *r,
    ngx_http_toll_ctx_t *ctx, ngx_http_variable_value_t *v, uintptr_t which);


#endif /* _NGX_HTTP_TOLL_QUOTA_H_INCLUDED_ */
