/*
 * toll: plugins at request time: where the hooks run
 * (lua-free-plugins/README.md, "Where the hooks run"); the host's
 * functions they call are in ngx_http_toll_plugin_host.c.
 *
 *   access   the precontent phase: after every access-phase handler, so
 *            after toll's gate whatever "satisfy" says, and before
 *            try_files or the content handler sends the call upstream
 *   headers  a header filter, body a body filter (main request only)
 *   log      first in the log phase, before toll's meter prices the call
 *
 * A request's plugin state is kept in a pool cleanup, found again by its
 * handler as toll's context is (an internal redirect clears r->ctx).  It
 * belongs to one location's list of plugins: a redirect into a location
 * with another list starts again from its access hooks.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <stdarg.h>
#include <stdio.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_handler.h"
#include "ngx_http_toll_meter.h"
#include "ngx_http_toll_plugin.h"
#include "ngx_http_toll_plugin_int.h"
#include "ngx_http_toll_problem.h"
#include "ngx_http_toll_quota.h"
#include "ngx_http_toll_units.h"


/* a file buffer's body is read in pieces of this size, once per request */
#define NGX_HTTP_TOLL_PLUGIN_READ_SIZE     8192


static toll_request_t *ngx_http_toll_plugin_req(ngx_http_request_t *r,
    ngx_array_t *plugins, ngx_uint_t create);
static void ngx_http_toll_plugin_cleanup(void *data);
static ngx_int_t ngx_http_toll_plugin_access(ngx_http_request_t *r);
static ngx_int_t ngx_http_toll_plugin_refused(ngx_http_request_t *r,
    toll_request_t *pr);
static ngx_int_t ngx_http_toll_plugin_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_toll_plugin_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_uint_t ngx_http_toll_plugin_reads_body(toll_request_t *pr);
static ngx_int_t ngx_http_toll_plugin_body_buf(toll_request_t *pr,
    ngx_buf_t *b);
static void ngx_http_toll_plugin_body(toll_request_t *pr, const u_char *data,
    size_t len, int last);
static ngx_int_t ngx_http_toll_plugin_log_handler(ngx_http_request_t *r);
static void ngx_http_toll_plugin_failed(toll_request_t *pr, ngx_uint_t i,
    const char *hook);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


#define ngx_http_toll_plugin_uses(r)                                        \
    ((ngx_http_toll_loc_conf_t *)                                           \
         ngx_http_get_module_loc_conf(r, ngx_http_toll_module))->plugins


/*
 * The request's plugin state for this list of plugins; with create, a
 * fresh one when there is none or it belongs to another list.
 */

static toll_request_t *
ngx_http_toll_plugin_req(ngx_http_request_t *r, ngx_array_t *plugins,
    ngx_uint_t create)
{
    toll_request_t      *pr;
    ngx_pool_cleanup_t  *cln;

    pr = NULL;

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_toll_plugin_cleanup) {
            pr = cln->data;
            break;
        }
    }

    if (pr && pr->plugins == plugins) {
        return pr;
    }

    if (!create) {
        return NULL;
    }

    if (pr == NULL) {
        cln = ngx_pool_cleanup_add(r->pool, sizeof(toll_request_t));
        if (cln == NULL) {
            return NULL;
        }

        cln->handler = ngx_http_toll_plugin_cleanup;
        pr = cln->data;
    }

    ngx_memzero(pr, sizeof(toll_request_t));

    pr->request = r;
    pr->plugins = plugins;
    pr->states = ngx_pcalloc(r->pool, plugins->nelts * sizeof(void *));

    if (pr->states == NULL) {
        pr->plugins = NULL;
        return NULL;
    }

    return pr;
}


/* only a mark to find the state by: its memory is the pool's */

static void
ngx_http_toll_plugin_cleanup(void *data)
{
}


/*
 * The access hooks, in the order of the location's toll_plugin lines.
 * A location's hooks run once per request, even if a redirect brings
 * the request back into the same list.
 */

static ngx_int_t
ngx_http_toll_plugin_access(ngx_http_request_t *r)
{
    int                          rc;
    ngx_uint_t                   i;
    ngx_array_t                 *plugins;
    toll_request_t              *pr;
    ngx_http_toll_plugin_use_t  *use;

    plugins = ngx_http_toll_plugin_uses(r);

    if (plugins == NULL || r != r->main) {
        return NGX_DECLINED;
    }

    pr = ngx_http_toll_plugin_req(r, plugins, 1);
    if (pr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (pr->entered) {
        return NGX_DECLINED;
    }

    pr->entered = 1;
    pr->hook = NGX_HTTP_TOLL_HOOK_ACCESS;

    use = plugins->elts;

    for (i = 0; i < plugins->nelts; i++) {
        if (use[i].plugin->hooks.access == NULL) {
            continue;
        }

        pr->current = &use[i];

        /* a refuse() of a plugin that then passed is not the next one's */
        pr->refuse_status = 0;

        rc = use[i].plugin->hooks.access(&ngx_http_toll_plugin_host, pr,
                                         use[i].conf, &pr->states[i]);
        if (rc == TOLL_OK) {
            continue;
        }

        pr->hook = NGX_HTTP_TOLL_HOOK_NONE;

        if (rc == TOLL_REFUSE) {
            return ngx_http_toll_plugin_refused(r, pr);
        }

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "toll plugin \"%V\": access hook failed (%d)",
                      ngx_http_toll_plugin_name(pr), rc);

        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    pr->hook = NGX_HTTP_TOLL_HOOK_NONE;
    pr->passed = 1;

    return NGX_DECLINED;
}


/*
 * A plugin refused: toll's problem answer with the plugin's status, code
 * and detail, sent here and finalized as toll's own refusals are.  The
 * call never reaches the upstream, so the meter charges nothing for it.
 */

static ngx_int_t
ngx_http_toll_plugin_refused(ngx_http_request_t *r, toll_request_t *pr)
{
    ngx_str_t                     code;
    ngx_http_toll_ctx_t          *ctx;
    ngx_http_toll_loc_conf_t     *lcf;
    ngx_http_toll_problem_ext_t   ext;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_toll_module);

    ngx_memzero(&ext, sizeof(ngx_http_toll_problem_ext_t));
    ngx_str_set(&code, "refused");

    /* a refusal without refuse(): toll's generic 403 */
    if (pr->refuse_status) {
        ext.status = pr->refuse_status;
        ext.code = pr->refuse_code;
        ext.detail = pr->refuse_detail;
        code = pr->refuse_code;
    }

    /*
     * Refused as the gate refuses: its price taken back as a redirect's
     * is (the meter's record, a free call, the holds), so no billing
     * header and no meter count, and counted so
     */

    ctx = ngx_http_toll_get_ctx(r->main);

    if (ctx) {
        if (ctx->priced) {
            ngx_http_toll_meter_unadmit(r, ctx);
            ngx_http_toll_quota_unprice(r, ctx);
        }

        ctx->state = NGX_HTTP_TOLL_STATE_REJECTED;
        ctx->decision = NGX_HTTP_TOLL_DECISION_PLUGIN_REFUSED;
    }

    ngx_log_error(lcf->log_level, r->connection->log, 0,
                  "toll plugin \"%V\": refused, %ui %V",
                  ngx_http_toll_plugin_name(pr),
                  ext.status ? ext.status : NGX_HTTP_FORBIDDEN, &code);

    ngx_http_finalize_request(r,
        ngx_http_toll_problem_send_ext(r, NGX_HTTP_TOLL_PROBLEM_PLUGIN,
                                       &ext));

    return NGX_DONE;
}


/* a request whose access hooks passed: its state; NULL: nothing to run */

static toll_request_t *
ngx_http_toll_plugin_passed(ngx_http_request_t *r)
{
    ngx_array_t     *plugins;
    toll_request_t  *pr;

    if (r != r->main) {
        return NULL;
    }

    plugins = ngx_http_toll_plugin_uses(r);

    if (plugins == NULL) {
        return NULL;
    }

    pr = ngx_http_toll_plugin_req(r, plugins, 0);

    return (pr && pr->passed) ? pr : NULL;
}


static ngx_int_t
ngx_http_toll_plugin_header_filter(ngx_http_request_t *r)
{
    int                          rc;
    ngx_uint_t                   i;
    toll_request_t              *pr;
    ngx_http_toll_plugin_use_t  *use;

    pr = ngx_http_toll_plugin_passed(r);

    if (pr == NULL) {
        return ngx_http_next_header_filter(r);
    }

    pr->hook = NGX_HTTP_TOLL_HOOK_HEADERS;
    use = pr->plugins->elts;

    for (i = 0; i < pr->plugins->nelts; i++) {
        if (use[i].plugin->hooks.headers == NULL || (pr->off & (1u << i))) {
            continue;
        }

        pr->current = &use[i];

        rc = use[i].plugin->hooks.headers(&ngx_http_toll_plugin_host, pr,
                                          use[i].conf, &pr->states[i],
                                          r->headers_out.status);
        if (rc != TOLL_OK) {
            ngx_http_toll_plugin_failed(pr, i, "headers");
        }
    }

    pr->hook = NGX_HTTP_TOLL_HOOK_NONE;

    return ngx_http_next_header_filter(r);
}


/* the body as it passes, unchanged; the plugins only read it */

static ngx_int_t
ngx_http_toll_plugin_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_chain_t     *cl;
    toll_request_t  *pr;

    if (in == NULL) {
        return ngx_http_next_body_filter(r, in);
    }

    pr = ngx_http_toll_plugin_passed(r);

    if (pr == NULL || pr->body_done) {
        return ngx_http_next_body_filter(r, in);
    }

    /*
     * No plugin left that reads bodies: nothing is looked at (a file
     * the answer sends is never read for nothing)
     */

    if (!ngx_http_toll_plugin_reads_body(pr)) {
        pr->body_done = 1;
        return ngx_http_next_body_filter(r, in);
    }

    pr->hook = NGX_HTTP_TOLL_HOOK_BODY;

    for (cl = in; cl && !pr->body_done; cl = cl->next) {
        if (ngx_http_toll_plugin_body_buf(pr, cl->buf) != NGX_OK) {
            /* the plugins see no more of it; the answer goes on */
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "toll plugin: the answer's body could not be "
                          "read, the plugins see no more of it");
            pr->body_done = 1;
            break;
        }
    }

    pr->hook = NGX_HTTP_TOLL_HOOK_NONE;

    return ngx_http_next_body_filter(r, in);
}


/* whether a plugin still on for the request has a body hook */

static ngx_uint_t
ngx_http_toll_plugin_reads_body(toll_request_t *pr)
{
    ngx_uint_t                   i;
    ngx_http_toll_plugin_use_t  *use;

    use = pr->plugins->elts;

    for (i = 0; i < pr->plugins->nelts; i++) {
        if (use[i].plugin->hooks.body && !(pr->off & (1u << i))) {
            return 1;
        }
    }

    return 0;
}


/*
 * One buffer: in memory, or in a file (a response the upstream module
 * buffered to disk).  A file is read here in pieces, as nginx itself
 * reads one it sends without sendfile; the bytes sent are unaffected.
 */

static ngx_int_t
ngx_http_toll_plugin_body_buf(toll_request_t *pr, ngx_buf_t *b)
{
    off_t    pos;
    size_t   size;
    ssize_t  n;

    if (ngx_buf_in_memory(b)) {
        if (b->last > b->pos || b->last_buf) {
            ngx_http_toll_plugin_body(pr, b->pos, b->last - b->pos,
                                      b->last_buf);
        }

        return NGX_OK;
    }

    if (!b->in_file || b->file_last <= b->file_pos) {
        if (b->last_buf) {
            ngx_http_toll_plugin_body(pr, NULL, 0, 1);
        }

        return NGX_OK;
    }

    if (pr->read_buf == NULL) {
        pr->read_buf = ngx_palloc(pr->request->pool,
                                  NGX_HTTP_TOLL_PLUGIN_READ_SIZE);
        if (pr->read_buf == NULL) {
            return NGX_ERROR;
        }
    }

    for (pos = b->file_pos; pos < b->file_last; pos += n) {
        size = (size_t) ngx_min(b->file_last - pos,
                                NGX_HTTP_TOLL_PLUGIN_READ_SIZE);

        n = ngx_read_file(b->file, pr->read_buf, size, pos);

        if (n <= 0) {
            return NGX_ERROR;
        }

        ngx_http_toll_plugin_body(pr, pr->read_buf, n,
                                  b->last_buf && pos + n >= b->file_last);
    }

    return NGX_OK;
}


static void
ngx_http_toll_plugin_body(toll_request_t *pr, const u_char *data, size_t len,
    int last)
{
    int                          rc;
    ngx_uint_t                   i;
    ngx_http_toll_plugin_use_t  *use;

    use = pr->plugins->elts;

    for (i = 0; i < pr->plugins->nelts; i++) {
        if (use[i].plugin->hooks.body == NULL || (pr->off & (1u << i))) {
            continue;
        }

        pr->current = &use[i];

        rc = use[i].plugin->hooks.body(&ngx_http_toll_plugin_host, pr,
                                       use[i].conf, &pr->states[i],
                                       (const char *) data, len, last);
        if (rc != TOLL_OK) {
            ngx_http_toll_plugin_failed(pr, i, "body");
        }
    }

    if (last) {
        pr->body_done = 1;
    }
}


/*
 * The log hooks of a request the plugins saw (passed or refused), before
 * toll's meter: a unit reported here still counts.
 */

static ngx_int_t
ngx_http_toll_plugin_log_handler(ngx_http_request_t *r)
{
    ngx_uint_t                   i;
    ngx_array_t                 *plugins;
    toll_request_t              *pr;
    ngx_http_toll_plugin_use_t  *use;

    plugins = ngx_http_toll_plugin_uses(r);

    if (plugins == NULL || r != r->main) {
        return NGX_OK;
    }

    pr = ngx_http_toll_plugin_req(r, plugins, 0);

    if (pr == NULL || !pr->entered || pr->logged) {
        return NGX_OK;
    }

    pr->logged = 1;
    pr->hook = NGX_HTTP_TOLL_HOOK_LOG;

    use = plugins->elts;

    for (i = 0; i < plugins->nelts; i++) {
        if (use[i].plugin->hooks.log == NULL) {
            continue;
        }

        pr->current = &use[i];

        use[i].plugin->hooks.log(&ngx_http_toll_plugin_host, pr, use[i].conf,
                                 &pr->states[i], r->headers_out.status);
    }

    pr->hook = NGX_HTTP_TOLL_HOOK_NONE;

    return NGX_OK;
}


/*
 * Whether a plugin of the request may still report its units: a body
 * hook that has not seen the last byte, or a log hook still to run.
 * The meter then counts the call no earlier than they do.
 */

ngx_uint_t
ngx_http_toll_plugin_may_report(ngx_http_request_t *r)
{
    ngx_uint_t                   i;
    ngx_array_t                 *plugins;
    toll_request_t              *pr;
    ngx_http_toll_plugin_use_t  *use;

    plugins = ngx_http_toll_plugin_uses(r);

    if (plugins == NULL) {
        return 0;
    }

    pr = ngx_http_toll_plugin_req(r, plugins, 0);

    if (pr == NULL || !pr->entered || pr->logged) {
        return 0;
    }

    if (pr->passed && !pr->body_done && ngx_http_toll_plugin_reads_body(pr)) {
        return 1;
    }

    use = plugins->elts;

    for (i = 0; i < plugins->nelts; i++) {
        if (use[i].plugin->hooks.log != NULL) {
            return 1;
        }
    }

    return 0;
}


/* a plugin's filter hook failed: it sees no more of the request */

static void
ngx_http_toll_plugin_failed(toll_request_t *pr, ngx_uint_t i,
    const char *hook)
{
    pr->off |= 1u << i;

    ngx_log_error(NGX_LOG_ERR, pr->request->connection->log, 0,
                  "toll plugin \"%V\": %s hook failed, the plugin sees no "
                  "more of this request", ngx_http_toll_plugin_name(pr),
                  hook);
}


/*
 * The plugins' place in nginx: the precontent phase (after the access
 * phase, toll's gate included), the log phase before toll's meter, and
 * two filters at the top of the chains.  Called after toll's own handlers
 * are registered.
 */

ngx_int_t
ngx_http_toll_plugin_run_init(ngx_conf_t *cf)
{
    ngx_array_t                *handlers;
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_toll_plugin_access;

    handlers = &cmcf->phases[NGX_HTTP_LOG_PHASE].handlers;

    h = ngx_array_push(handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h = handlers->elts;
    ngx_memmove(&h[1], &h[0], (handlers->nelts - 1) * sizeof(*h));
    h[0] = ngx_http_toll_plugin_log_handler;

    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_toll_plugin_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_toll_plugin_body_filter;

    return NGX_OK;
}
