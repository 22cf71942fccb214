/*
 * toll: units the upstream reports for a call (docs/metering.md,
 * "Units").
 *
 * A service (or a route) with unit_price= charges price + units x
 * unit_price.  The gate holds the most a call can cost, price + max_units
 * x unit_price, from the balance and the caps; the units come with the
 * response (a header, read by the header filter) or from a plugin (after
 * the body, by the log phase), and what the hold does not take goes
 * back.  A value the upstream should not have sent is never charged for:
 * missing or malformed, the base price; above max_units, max_units.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_handler.h"
#include "ngx_http_toll_units.h"
#include "toll_money.h"


/* a bad value is logged at most this often per worker */
#define NGX_HTTP_TOLL_UNITS_LOG_SEC   60


static ngx_int_t ngx_http_toll_units_value(ngx_http_request_t *r,
    ngx_http_toll_units_conf_t *uc, int64_t *units);
static void ngx_http_toll_units_complain(ngx_http_request_t *r,
    ngx_http_toll_units_conf_t *uc, const char *what, ngx_str_t *value);


static time_t  ngx_http_toll_units_logged;


/*
 * One parameter of toll_service or toll_route: NGX_OK when it was a
 * units parameter, NGX_ERROR when it was a bad one (said), NGX_DECLINED
 * when it is none of them.
 */

ngx_int_t
ngx_http_toll_units_param(ngx_conf_t *cf, ngx_http_toll_units_conf_t *uc,
    ngx_str_t *value)
{
    int        rc;
    ngx_str_t  s;

    if (ngx_strncmp(value->data, "unit_price=", 11) == 0) {
        s.data = value->data + 11;
        s.len = value->len - 11;

        rc = toll_money_parse_unit_price((char *) s.data, s.len,
                                         &uc->unit_nanos);

        if (rc == TOLL_MONEY_PRECISION) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid unit_price \"%V\": has more than "
                               "9 decimal places", &s);
            return NGX_ERROR;
        }

        if (rc != TOLL_MONEY_OK || uc->unit_nanos == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid unit_price \"%V\": %s", &s,
                               rc == TOLL_MONEY_OK ? "is zero"
                                                   : toll_money_strerror(rc));
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    if (ngx_strncmp(value->data, "max_units=", 10) == 0) {
        uc->max_units = ngx_atoof(value->data + 10, value->len - 10);

        if (uc->max_units <= 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid max_units \"%V\": a whole number "
                               "above 0", value);
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    if (ngx_strncmp(value->data, "units_header=", 13) == 0) {
        s.data = value->data + 13;
        s.len = value->len - 13;

        if (!ngx_http_toll_header_name_valid(s.data, s.len)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid units_header \"%V\"", &s);
            return NGX_ERROR;
        }

        uc->header = s;
        return NGX_OK;
    }

    if (ngx_strncmp(value->data, "keep_units_header=", 18) == 0) {
        s.data = value->data + 18;
        s.len = value->len - 18;

        if (s.len == 2 && ngx_strncmp(s.data, "on", 2) == 0) {
            uc->keep_header = 1;

        } else if (s.len == 3 && ngx_strncmp(s.data, "off", 3) == 0) {
            uc->keep_header = 0;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid keep_units_header \"%V\": on or off",
                               &s);
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    return NGX_DECLINED;
}


/*
 * The parameters of one directive together.  max_units is required with
 * unit_price: the gate holds the most a call can cost before it passes
 * (balances, caps and the 402 promise rest on it), and with no bound a
 * single call could owe more than any balance.
 */

char *
ngx_http_toll_units_check(ngx_conf_t *cf, ngx_http_toll_units_conf_t *uc,
    int64_t price_micros)
{
    int64_t  most;

    if (uc->unit_nanos == 0) {
        if (uc->max_units || uc->header.len || uc->keep_header) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"max_units\", \"units_header\" and "
                               "\"keep_units_header\" need \"unit_price\"");
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

    if (uc->max_units == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"unit_price\" needs \"max_units\": the gate "
                           "holds the most a call can cost");
        return NGX_CONF_ERROR;
    }

    if (toll_money_units(uc->max_units, uc->unit_nanos, &uc->most_micros)
        != TOLL_MONEY_OK
        || toll_money_add(price_micros, uc->most_micros, &most)
           != TOLL_MONEY_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "price + max_units x unit_price overflows");
        return NGX_CONF_ERROR;
    }

    if (uc->keep_header && uc->header.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"keep_units_header\" needs \"units_header\"");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_toll_units_report(ngx_http_request_t *r, uint64_t units)
{
    ngx_http_toll_ctx_t  *ctx;

    ctx = ngx_http_toll_get_ctx(r->main);

    if (ctx == NULL || !ctx->priced || ctx->metered
        || ctx->units_conf == NULL)
    {
        return NGX_DECLINED;
    }

    ctx->units = units;
    ctx->units_reported = 1;

    /* more than one call may be charged for: max_units will be */
    return (units > (uint64_t) ctx->units_conf->max_units) ? NGX_ABORT
                                                           : NGX_OK;
}


/*
 * The header filter, for a call that is charged: the units from the
 * upstream's header (hidden from the client unless kept), and the amount
 * they make.  A call whose units a plugin reports is charged the base
 * price until the log phase knows them.
 */

void
ngx_http_toll_units_header(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_uint_t charged)
{
    int64_t                      units;
    ngx_http_toll_units_conf_t  *uc;

    uc = ctx->units_conf;

    if (uc == NULL) {
        return;
    }

    if (uc->header.len) {
        if (ngx_http_toll_units_value(r, uc, &units) == NGX_OK) {
            ctx->units = units;
            ctx->units_reported = 1;
        }
    }

    if (!charged || ctx->free_call) {
        return;
    }

    ctx->units_charged = 1;
    ngx_http_toll_units_charge(r, ctx, 0);
}


/*
 * The amount of a call whose units decide it: price + units x
 * unit_price, units bounded by max_units (and so by the hold).  final:
 * the log phase, after which no plugin reports.
 */

void
ngx_http_toll_units_charge(ngx_http_request_t *r, ngx_http_toll_ctx_t *ctx,
    ngx_uint_t final)
{
    int64_t                      units, cost;
    ngx_str_t                    v;
    u_char                       buf[NGX_INT64_LEN];
    ngx_http_toll_units_conf_t  *uc;

    uc = ctx->units_conf;

    if (uc == NULL || !ctx->units_charged) {
        return;
    }

    units = 0;

    if (ctx->units_reported) {
        units = (ctx->units > (uint64_t) uc->max_units)
                ? uc->max_units : (int64_t) ctx->units;

        if ((uint64_t) units != ctx->units) {
            v.data = buf;
            v.len = ngx_sprintf(buf, "%uL", ctx->units) - buf;
            ngx_http_toll_units_complain(r, uc, "above max_units, "
                                         "max_units charged", &v);
            ctx->units = units;
        }

    } else if (final && uc->header.len == 0) {
        ngx_str_null(&v);
        ngx_http_toll_units_complain(r, uc, "not reported by a plugin, "
                                     "the base price charged", &v);
    }

    /* both bounded at configuration: no overflow */
    (void) toll_money_units(units, uc->unit_nanos, &cost);
    ctx->amount_micros = ctx->base_micros + cost;
}


/* the header's value: NGX_OK and *units, or NGX_DECLINED (logged) */

static ngx_int_t
ngx_http_toll_units_value(ngx_http_request_t *r,
    ngx_http_toll_units_conf_t *uc, int64_t *units)
{
    int64_t           n;
    ngx_str_t         value;
    ngx_uint_t        i, found;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *first;

    part = &r->headers_out.headers.part;
    h = part->elts;
    first = NULL;
    found = 0;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash == 0 || h[i].key.len != uc->header.len
            || ngx_strncasecmp(h[i].key.data, uc->header.data,
                               uc->header.len) != 0)
        {
            continue;
        }

        if (first == NULL) {
            first = &h[i];
        }

        found++;

        if (!uc->keep_header) {
            h[i].hash = 0;
        }
    }

    if (found == 0) {
        ngx_str_null(&value);
        ngx_http_toll_units_complain(r, uc, "missing, the base price "
                                     "charged", &value);
        return NGX_DECLINED;
    }

    value = first->value;

    if (found > 1) {
        ngx_http_toll_units_complain(r, uc, "sent more than once, the base "
                                     "price charged", &value);
        return NGX_DECLINED;
    }

    /* digits only: no sign, no space, no decimals; at most int64 */

    n = 0;

    for (i = 0; i < value.len; i++) {
        if (value.data[i] < '0' || value.data[i] > '9'
            || __builtin_mul_overflow(n, 10, &n)
            || __builtin_add_overflow(n, value.data[i] - '0', &n))
        {
            break;
        }
    }

    if (value.len == 0 || i < value.len) {
        ngx_http_toll_units_complain(r, uc, "not a whole number of units, "
                                     "the base price charged", &value);
        return NGX_DECLINED;
    }

    *units = n;

    return NGX_OK;
}


/* once per worker and NGX_HTTP_TOLL_UNITS_LOG_SEC, whatever the cause */

static void
ngx_http_toll_units_complain(ngx_http_request_t *r,
    ngx_http_toll_units_conf_t *uc, const char *what, ngx_str_t *value)
{
    if (ngx_time() - ngx_http_toll_units_logged < NGX_HTTP_TOLL_UNITS_LOG_SEC)
    {
        return;
    }

    ngx_http_toll_units_logged = ngx_time();

    if (value->len) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "toll: units \"%*s\" %s (logged once a minute)",
                      ngx_min(value->len, 64), value->data, what);
        return;
    }

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "toll: units %s%V%s%s (logged once a minute)",
                  uc->header.len ? "header \"" : "", &uc->header,
                  uc->header.len ? "\" " : "", what);
}
