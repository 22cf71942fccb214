/*
 * toll: plugins in C (lua-free-plugins/toll_plugin.h): loaded with
 * toll_plugin_load, enabled per location with toll_plugin, their hooks
 * run from the precontent phase, two filters and the log phase.
 */

#ifndef _NGX_HTTP_TOLL_PLUGIN_H_INCLUDED_
#define _NGX_HTTP_TOLL_PLUGIN_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_toll_module.h"
#include "toll_plugin.h"


/* at most this many toll_plugin in one location: a bit each per request */
#define NGX_HTTP_TOLL_PLUGINS_MAX  32


/* a toll_plugin_load: one shared object, opened once per configuration */
typedef struct {
    ngx_str_t                    name;
    ngx_str_t                    path;        /* full, for messages */
    toll_plugin_t                hooks;       /* the plugin's, copied:
                                                 members past its size
                                                 are NULL */
} ngx_http_toll_plugin_t;


/* a toll_plugin in a location: the plugin and its arguments' result */
typedef struct {
    ngx_http_toll_plugin_t      *plugin;
    void                        *conf;
} ngx_http_toll_plugin_use_t;


char *ngx_http_toll_plugin_load(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_toll_plugin_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_toll_plugin_merge_loc_conf(ngx_conf_t *cf,
    ngx_http_toll_loc_conf_t *prev, ngx_http_toll_loc_conf_t *conf);

/* postconfiguration: nothing at all unless a location has a plugin */
ngx_int_t ngx_http_toll_plugin_init(ngx_conf_t *cf);


/* for the meter: whether a plugin may still report the call's units */
ngx_uint_t ngx_http_toll_plugin_may_report(ngx_http_request_t *r);


/* between the plugin files (ngx_http_toll_plugin_run.c: requests) */
extern const toll_host_t  ngx_http_toll_plugin_host;

void *ngx_http_toll_plugin_conf_alloc(toll_conf_t *tcf, size_t size);
ngx_int_t ngx_http_toll_plugin_run_init(ngx_conf_t *cf);


#endif /* _NGX_HTTP_TOLL_PLUGIN_H_INCLUDED_ */
