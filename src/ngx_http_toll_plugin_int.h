/*
 * toll: what the two request-time plugin files share
 * (ngx_http_toll_plugin_run.c: where the hooks run;
 * ngx_http_toll_plugin_host.c: the host's functions the hooks call).
 */

#ifndef _NGX_HTTP_TOLL_PLUGIN_INT_H_INCLUDED_
#define _NGX_HTTP_TOLL_PLUGIN_INT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_plugin.h"


#define NGX_HTTP_TOLL_PLUGIN_CODE_MAX      64
#define NGX_HTTP_TOLL_PLUGIN_DETAIL_MAX    256
#define NGX_HTTP_TOLL_PLUGIN_LOG_MAX       1024

enum {
    NGX_HTTP_TOLL_HOOK_NONE = 0,
    NGX_HTTP_TOLL_HOOK_ACCESS,
    NGX_HTTP_TOLL_HOOK_HEADERS,
    NGX_HTTP_TOLL_HOOK_BODY,
    NGX_HTTP_TOLL_HOOK_LOG
};


struct toll_request_s {
    ngx_http_request_t          *request;
    ngx_array_t                 *plugins;     /* the list states are of */
    ngx_http_toll_plugin_use_t  *current;     /* whose hook runs */
    void                       **states;      /* one per plugin */
    u_char                      *read_buf;
    ngx_uint_t                   refuse_status;
    ngx_str_t                    refuse_code;
    ngx_str_t                    refuse_detail;
    uint32_t                     off;         /* plugins that failed */
    unsigned                     hook:3;
    unsigned                     entered:1;   /* access hooks began */
    unsigned                     passed:1;    /* ... and all passed */
    unsigned                     body_done:1;
    unsigned                     logged:1;
};


#define ngx_http_toll_plugin_name(pr)  (&(pr)->current->plugin->name)


#endif /* _NGX_HTTP_TOLL_PLUGIN_INT_H_INCLUDED_ */
