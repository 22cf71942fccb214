/* A test plugin with every hook, each doing nothing: the benchmark's. */

#include "toll_plugin.h"


static const char *
noop_conf(const toll_host_t *host, toll_conf_t *cf, const toll_arg_t *args,
    size_t nargs, void **conf)
{
    (void) host; (void) cf; (void) args; (void) conf;

    return nargs ? "takes no arguments" : NULL;
}


static int
noop_access(const toll_host_t *host, toll_request_t *r, void *conf,
    void **state)
{
    (void) host; (void) r; (void) conf; (void) state;

    return TOLL_OK;
}


static int
noop_headers(const toll_host_t *host, toll_request_t *r, void *conf,
    void **state, unsigned status)
{
    (void) host; (void) r; (void) conf; (void) state; (void) status;

    return TOLL_OK;
}


static int
noop_body(const toll_host_t *host, toll_request_t *r, void *conf,
    void **state, const char *data, size_t len, int last)
{
    (void) host; (void) r; (void) conf; (void) state; (void) data;
    (void) len; (void) last;

    return TOLL_OK;
}


static void
noop_log(const toll_host_t *host, toll_request_t *r, void *conf,
    void **state, unsigned status)
{
    (void) host; (void) r; (void) conf; (void) state; (void) status;
}


static const toll_plugin_t  noop = {
    TOLL_PLUGIN_ABI_VERSION, sizeof(toll_plugin_t),
    noop_conf, noop_access, noop_headers, noop_body, noop_log
};


const toll_plugin_t *
toll_plugin_entry(void)
{
    return &noop;
}
