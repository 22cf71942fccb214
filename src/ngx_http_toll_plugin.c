/*
 * toll: plugins' configuration (lua-free-plugins/README.md).
 *
 * toll_plugin_load opens a shared object and checks what its entry
 * returns; toll_plugin hands a location's arguments to the plugin's conf
 * hook.  Both run at configuration time, "nginx -t" included, so that a
 * plugin built for another ABI, or given a bad argument, stops the
 * configuration with an [emerg] that names the file and line.
 *
 * A shared object is never closed (RTLD_NODELETE, and no dlclose): the
 * configuration's hooks point into it, and a plugin may have left
 * something behind (a thread-local destructor, an atexit handler, a
 * string that a log line still points at) that unloading would turn
 * into a crash.  What is kept is one mapping per path for the life of
 * the master, whatever the number of reloads: dlopen() of a path already
 * open only counts it again.  The same holds in the workers, which
 * inherit the mapping.  A changed plugin therefore takes a new path (or
 * a restart) to be loaded; installing it over the old file in place
 * would change the code under running workers, so it is installed as a
 * new file (a new inode), as the Makefile does.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <dlfcn.h>

#include "ngx_http_toll_module.h"
#include "ngx_http_toll_plugin.h"


struct toll_conf_s {
    ngx_conf_t                  *cf;
};


static ngx_http_toll_plugin_t *ngx_http_toll_plugin_find(ngx_conf_t *cf,
    ngx_str_t *name);
static char *ngx_http_toll_plugin_open(ngx_conf_t *cf,
    ngx_http_toll_plugin_t *plugin);
static char *ngx_http_toll_plugin_args(ngx_conf_t *cf, toll_arg_t **args);


/* toll_plugin_load NAME PATH; */

char *
ngx_http_toll_plugin_load(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_toll_main_conf_t *mcf = conf;

    u_char                  *p;
    ngx_str_t               *value;
    ngx_http_toll_plugin_t  *plugin;

    value = cf->args->elts;

    for (p = value[1].data; p < value[1].data + value[1].len; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')
              || *p == '_'))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid plugin name \"%V\": letters a-z, "
                               "digits and \"_\" only", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    if (value[1].len == 0 || value[1].len > 64) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid plugin name \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_toll_plugin_find(cf, &value[1]) != NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate plugin \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (mcf->plugins == NULL) {
        mcf->plugins = ngx_array_create(cf->pool, 4,
                                        sizeof(ngx_http_toll_plugin_t));
        if (mcf->plugins == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    plugin = ngx_array_push(mcf->plugins);
    if (plugin == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(plugin, sizeof(ngx_http_toll_plugin_t));

    plugin->name = value[1];
    plugin->path = value[2];

    /* relative to the prefix, as load_module's path is */
    if (ngx_conf_full_name(cf->cycle, &plugin->path, 0) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return ngx_http_toll_plugin_open(cf, plugin);
}


static ngx_http_toll_plugin_t *
ngx_http_toll_plugin_find(ngx_conf_t *cf, ngx_str_t *name)
{
    ngx_uint_t                  i;
    ngx_http_toll_plugin_t     *plugin;
    ngx_http_toll_main_conf_t  *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_toll_module);

    if (mcf->plugins == NULL) {
        return NULL;
    }

    plugin = mcf->plugins->elts;

    for (i = 0; i < mcf->plugins->nelts; i++) {
        if (plugin[i].name.len == name->len
            && ngx_strncmp(plugin[i].name.data, name->data, name->len) == 0)
        {
            return &plugin[i];
        }
    }

    return NULL;
}


/*
 * dlopen, the entry, its ABI version and size.  The descriptor is copied:
 * a plugin built against an older header has a shorter one, and the
 * members it lacks read as NULL here.
 */

static char *
ngx_http_toll_plugin_open(ngx_conf_t *cf, ngx_http_toll_plugin_t *plugin)
{
    void                  *handle;
    const toll_plugin_t   *desc;
    toll_plugin_entry_pt   entry;

    handle = dlopen((char *) plugin->path.data,
                    RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (handle == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "dlopen() \"%V\" failed (%s)",
                           &plugin->path, dlerror());
        return NGX_CONF_ERROR;
    }

    entry = (toll_plugin_entry_pt) dlsym(handle, TOLL_PLUGIN_ENTRY);
    if (entry == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "plugin \"%V\" in \"%V\" has no \"%s\" symbol",
                           &plugin->name, &plugin->path, TOLL_PLUGIN_ENTRY);
        return NGX_CONF_ERROR;
    }

    desc = entry();

    if (desc == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "plugin \"%V\" in \"%V\": %s() returned NULL",
                           &plugin->name, &plugin->path, TOLL_PLUGIN_ENTRY);
        return NGX_CONF_ERROR;
    }

    if (desc->abi_version != TOLL_PLUGIN_ABI_VERSION) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "plugin \"%V\" in \"%V\" has ABI version %uD, "
                           "this module has version %d: rebuild the plugin "
                           "against its toll_plugin.h",
                           &plugin->name, &plugin->path, desc->abi_version,
                           TOLL_PLUGIN_ABI_VERSION);
        return NGX_CONF_ERROR;
    }

    if (desc->size < TOLL_PLUGIN_SIZE_V1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "plugin \"%V\" in \"%V\" has a descriptor of "
                           "%uD bytes, ABI version %d needs at least %uz",
                           &plugin->name, &plugin->path, desc->size,
                           TOLL_PLUGIN_ABI_VERSION, TOLL_PLUGIN_SIZE_V1);
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(&plugin->hooks, desc,
               ngx_min((size_t) desc->size, sizeof(toll_plugin_t)));

    return NGX_CONF_OK;
}


/* toll_plugin NAME [key=value ...]; */

char *
ngx_http_toll_plugin_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_toll_loc_conf_t *lcf = conf;

    char                        *rc;
    ngx_str_t                   *value;
    toll_arg_t                  *args;
    toll_conf_t                  tcf;
    const char                  *err;
    ngx_http_toll_plugin_use_t  *use;
    ngx_http_toll_main_conf_t   *mcf;

    value = cf->args->elts;

    if (lcf->plugins == NGX_CONF_UNSET_PTR) {
        lcf->plugins = ngx_array_create(cf->pool, 2,
                                        sizeof(ngx_http_toll_plugin_use_t));
        if (lcf->plugins == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    if (lcf->plugins->nelts == NGX_HTTP_TOLL_PLUGINS_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many \"toll_plugin\" here: at most %d",
                           NGX_HTTP_TOLL_PLUGINS_MAX);
        return NGX_CONF_ERROR;
    }

    use = ngx_array_push(lcf->plugins);
    if (use == NULL) {
        return NGX_CONF_ERROR;
    }

    use->conf = NULL;
    use->plugin = ngx_http_toll_plugin_find(cf, &value[1]);

    if (use->plugin == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown plugin \"%V\": load it first with "
                           "\"toll_plugin_load\" in the http block",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    rc = ngx_http_toll_plugin_args(cf, &args);
    if (rc != NGX_CONF_OK) {
        return rc;
    }

    if (use->plugin->hooks.conf) {
        tcf.cf = cf;
        err = use->plugin->hooks.conf(&ngx_http_toll_plugin_host, &tcf, args,
                                      cf->args->nelts - 2, &use->conf);
        if (err != NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "plugin \"%V\": %s",
                               &value[1], err);
            return NGX_CONF_ERROR;
        }

    } else if (cf->args->nelts > 2) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "plugin \"%V\" takes no arguments", &value[1]);
        return NGX_CONF_ERROR;
    }

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_toll_module);
    mcf->plugins_used = 1;

    return NGX_CONF_OK;
}


/* each key=value, split once at its first "=", both NUL-terminated */

static char *
ngx_http_toll_plugin_args(ngx_conf_t *cf, toll_arg_t **args)
{
    u_char      *eq, *key;
    ngx_str_t   *value;
    ngx_uint_t   i, n;
    toll_arg_t  *a;

    value = cf->args->elts;
    n = cf->args->nelts - 2;

    a = ngx_pcalloc(cf->pool, (n ? n : 1) * sizeof(toll_arg_t));
    if (a == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < n; i++) {
        eq = ngx_strlchr(value[i + 2].data,
                         value[i + 2].data + value[i + 2].len, '=');

        if (eq == NULL || eq == value[i + 2].data) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid argument \"%V\" of plugin \"%V\": "
                               "key=value expected", &value[i + 2],
                               &value[1]);
            return NGX_CONF_ERROR;
        }

        key = ngx_pnalloc(cf->pool, eq - value[i + 2].data + 1);
        if (key == NULL) {
            return NGX_CONF_ERROR;
        }

        *ngx_cpymem(key, value[i + 2].data, eq - value[i + 2].data) = '\0';

        a[i].key.data = (const char *) key;
        a[i].key.len = eq - value[i + 2].data;

        /* the rest of the word, NUL-terminated by the parser */
        a[i].value.data = (const char *) eq + 1;
        a[i].value.len = value[i + 2].data + value[i + 2].len - eq - 1;
    }

    *args = a;

    return NGX_CONF_OK;
}


/*
 * As nginx merges its lists (add_header, proxy_set_header): a level with
 * toll_plugin lines of its own has those, and only those.
 */

char *
ngx_http_toll_plugin_merge_loc_conf(ngx_conf_t *cf,
    ngx_http_toll_loc_conf_t *prev, ngx_http_toll_loc_conf_t *conf)
{
    ngx_conf_merge_ptr_value(conf->plugins, prev->plugins, NULL);

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_toll_plugin_init(ngx_conf_t *cf)
{
    ngx_http_toll_main_conf_t  *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_toll_module);

    /* no location uses a plugin: no handler, no filter, no cost */

    if (!mcf->plugins_used) {
        return NGX_OK;
    }

    return ngx_http_toll_plugin_run_init(cf);
}


/* the host's conf_alloc: as long as the configuration lives */

void *
ngx_http_toll_plugin_conf_alloc(toll_conf_t *tcf, size_t size)
{
    return ngx_pcalloc(tcf->cf->pool, size);
}
