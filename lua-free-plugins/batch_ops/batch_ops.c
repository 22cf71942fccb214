/*
 * batch_ops: a batch call is priced per operation, from the count the
 * client declares.
 *
 *   toll_plugin batch_ops [header=X-Batch-Operations] [arg=NAME]
 *                         [max=1000] [required=on];
 *
 * The count is read from the header (or, when the header is absent, the
 * query argument named by arg) and reported as the call's units in the
 * access hook, before the call goes upstream: with toll_prepaid on, the
 * hold covers the whole batch from the start.  A count that is missing
 * (with required=on), not a positive integer, or above max is refused
 * with toll's problem answer, and nothing is charged.  The upstream sees
 * the same header and refuses a batch whose operations differ from it,
 * which makes the declared count binding.
 */

#include <stdio.h>
#include <string.h>

#include "toll_plugin.h"


typedef struct {
    const char         *header;
    const char         *arg;
    uint64_t            max;
    int                 required;
} batch_conf_t;


static char  batch_error[256];


/* digits only, 1 to max; 0: not a count */

static uint64_t
batch_count(const char *p, size_t len, uint64_t max)
{
    size_t    i;
    uint64_t  n;

    if (len == 0 || len > 19) {
        return 0;
    }

    n = 0;

    for (i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return 0;
        }

        n = n * 10 + (uint64_t) (p[i] - '0');
    }

    return (n > max) ? max + 1 : n;
}


static const char *
batch_conf(const toll_host_t *host, toll_conf_t *cf, const toll_arg_t *args,
    size_t nargs, void **conf)
{
    size_t         i;
    batch_conf_t  *bc;

    bc = host->conf_alloc(cf, sizeof(batch_conf_t));
    if (bc == NULL) {
        return "out of memory";
    }

    bc->header = "X-Batch-Operations";
    bc->max = 1000;
    bc->required = 1;

    for (i = 0; i < nargs; i++) {
        const char  *k = args[i].key.data, *v = args[i].value.data;

        if (strcmp(k, "header") == 0 && args[i].value.len) {
            bc->header = v;

        } else if (strcmp(k, "arg") == 0 && args[i].value.len) {
            bc->arg = v;

        } else if (strcmp(k, "max") == 0) {
            bc->max = batch_count(v, args[i].value.len, UINT64_MAX / 2);
            if (bc->max == 0 || bc->max > 1000000000) {
                snprintf(batch_error, sizeof(batch_error),
                         "invalid max \"%s\": 1 to 1000000000", v);
                return batch_error;
            }

        } else if (strcmp(k, "required") == 0
                   && (strcmp(v, "on") == 0 || strcmp(v, "off") == 0))
        {
            bc->required = (strcmp(v, "on") == 0);

        } else {
            snprintf(batch_error, sizeof(batch_error),
                     "invalid argument \"%s=%s\"", k, v);
            return batch_error;
        }
    }

    *conf = bc;

    return NULL;
}


static int
batch_access(const toll_host_t *host, toll_request_t *r, void *conf,
    void **state)
{
    char           detail[160];
    uint64_t       n;
    toll_str_t     v;
    batch_conf_t  *bc;

    (void) state;

    bc = conf;

    if (host->request_header(r, bc->header, &v) != TOLL_OK
        && (bc->arg == NULL || host->request_arg(r, bc->arg, &v) != TOLL_OK))
    {
        if (!bc->required) {
            return TOLL_OK;
        }

        snprintf(detail, sizeof(detail), "Send the number of operations in "
                 "the batch in the %s header.", bc->header);
        host->refuse(r, 400, "batch_count_required", detail);
        return TOLL_REFUSE;
    }

    n = batch_count(v.data, v.len, bc->max);

    if (n == 0) {
        snprintf(detail, sizeof(detail), "The number of operations must be "
                 "a whole number from 1 to %llu.",
                 (unsigned long long) bc->max);
        host->refuse(r, 400, "batch_count_invalid", detail);
        return TOLL_REFUSE;
    }

    if (n > bc->max) {
        snprintf(detail, sizeof(detail), "At most %llu operations are "
                 "accepted in one batch; split it.",
                 (unsigned long long) bc->max);
        host->refuse(r, 413, "batch_too_large", detail);
        return TOLL_REFUSE;
    }

    /* more than the service charges one call for: refused up front */
    if (host->report_units(r, n) == TOLL_REFUSE) {
        host->refuse(r, 413, "batch_too_large", "The batch has more "
                     "operations than one call may be charged for.");
        return TOLL_REFUSE;
    }

    return TOLL_OK;
}


static const toll_plugin_t  batch_ops = {
    TOLL_PLUGIN_ABI_VERSION,
    sizeof(toll_plugin_t),
    batch_conf,
    batch_access,
    NULL,
    NULL,
    NULL
};


const toll_plugin_t *
toll_plugin_entry(void)
{
    return &batch_ops;
}
