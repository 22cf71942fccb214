/* A test plugin whose descriptor claims fewer bytes than version 1's. */

#include "toll_plugin.h"


static const toll_plugin_t  shorter = {
    TOLL_PLUGIN_ABI_VERSION, 8,
    NULL, NULL, NULL, NULL, NULL
};


const toll_plugin_t *
toll_plugin_entry(void)
{
    return &shorter;
}
