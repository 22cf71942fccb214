/* A test plugin built for an ABI version that does not exist. */

#include "toll_plugin.h"


static const toll_plugin_t  bad = {
    TOLL_PLUGIN_ABI_VERSION + 98, sizeof(toll_plugin_t),
    NULL, NULL, NULL, NULL, NULL
};


const toll_plugin_t *
toll_plugin_entry(void)
{
    return &bad;
}
