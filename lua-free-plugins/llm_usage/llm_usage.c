/*
 * llm_usage: a call's units are the tokens the model says it used.
 *
 *   toll_plugin llm_usage [path=usage.total_tokens] [json=on] [sse=on];
 *
 * From a JSON answer (application/json, or any +json type): the number
 * at path.  From an event stream (text/event-stream): the number at path
 * in the last data: event that has it (OpenAI's and most others' final
 * event carries the usage; "data: [DONE]" and events whose usage is
 * null are passed over).  The body is read as it streams, with a fixed
 * state per request (usage_scan.c): no copy of it is kept.
 *
 * A compressed answer cannot be read: the plugin leaves it (and says so
 * at info); have the upstream answer uncompressed, e.g. with
 * proxy_set_header Accept-Encoding "".
 */

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "toll_plugin.h"
#include "usage_scan.h"


typedef struct {
    usage_path_t        path;
    int                 json;
    int                 sse;
} llm_conf_t;


typedef struct {
    usage_scan_t        scan;
    int                 done;
} llm_state_t;


static char  llm_error[256];


static int
llm_flag(const toll_arg_t *a, int *flag)
{
    if (strcmp(a->value.data, "on") == 0) {
        *flag = 1;
        return 0;
    }

    if (strcmp(a->value.data, "off") == 0) {
        *flag = 0;
        return 0;
    }

    return -1;
}


static const char *
llm_conf(const toll_host_t *host, toll_conf_t *cf, const toll_arg_t *args,
    size_t nargs, void **conf)
{
    size_t       i;
    llm_conf_t  *lc;

    lc = host->conf_alloc(cf, sizeof(llm_conf_t));
    if (lc == NULL) {
        return "out of memory";
    }

    usage_path_parse(&lc->path, "usage.total_tokens",
                     sizeof("usage.total_tokens") - 1);
    lc->json = 1;
    lc->sse = 1;

    for (i = 0; i < nargs; i++) {
        if (strcmp(args[i].key.data, "path") == 0) {
            if (usage_path_parse(&lc->path, args[i].value.data,
                                 args[i].value.len) != 0)
            {
                snprintf(llm_error, sizeof(llm_error),
                         "invalid path \"%s\": keys joined by \".\", at "
                         "most %d of at most %d bytes", args[i].value.data,
                         USAGE_PATH_MAX, USAGE_KEY_MAX);
                return llm_error;
            }

        } else if (strcmp(args[i].key.data, "json") == 0) {
            if (llm_flag(&args[i], &lc->json) != 0) {
                return "\"json\" must be \"on\" or \"off\"";
            }

        } else if (strcmp(args[i].key.data, "sse") == 0) {
            if (llm_flag(&args[i], &lc->sse) != 0) {
                return "\"sse\" must be \"on\" or \"off\"";
            }

        } else {
            snprintf(llm_error, sizeof(llm_error),
                     "unknown argument \"%s\"", args[i].key.data);
            return llm_error;
        }
    }

    if (!lc->json && !lc->sse) {
        return "\"json\" and \"sse\" are both off: nothing to read";
    }

    *conf = lc;

    return NULL;
}


static int
llm_type_is(const toll_str_t *v, const char *type)
{
    size_t  n;

    n = strlen(type);

    return v->len >= n && strncasecmp(v->data, type, n) == 0
           && (v->len == n || v->data[n] == ';' || v->data[n] == ' ');
}


/* a +json media type: application/problem+json, application/vnd.x+json */

static int
llm_type_json(const toll_str_t *v)
{
    size_t  i;

    for (i = 0; i < v->len && v->data[i] != ';'; i++) { /* void */ }

    while (i && v->data[i - 1] == ' ') {
        i--;
    }

    return llm_type_is(v, "application/json")
           || (i >= 5 && strncasecmp(v->data + i - 5, "+json", 5) == 0);
}


static int
llm_headers(const toll_host_t *host, toll_request_t *r, void *conf,
    void **state, unsigned status)
{
    int           sse;
    toll_str_t    v;
    llm_conf_t   *lc;
    llm_state_t  *st;

    (void) status;

    lc = conf;

    if (host->response_header(r, "Content-Type", &v) != TOLL_OK) {
        return TOLL_OK;
    }

    if (lc->sse && llm_type_is(&v, "text/event-stream")) {
        sse = 1;

    } else if (lc->json && llm_type_json(&v)) {
        sse = 0;

    } else {
        return TOLL_OK;
    }

    if (host->response_header(r, "Content-Encoding", &v) == TOLL_OK
        && !(v.len == 8 && strncasecmp(v.data, "identity", 8) == 0))
    {
        host->log(r, TOLL_LOG_INFO, "a %.*s answer cannot be read, no units",
                  (int) v.len, v.data);
        return TOLL_OK;
    }

    st = host->alloc(r, sizeof(llm_state_t));
    if (st == NULL) {
        return TOLL_ERROR;
    }

    usage_scan_init(&st->scan, &lc->path, sse);
    *state = st;

    return TOLL_OK;
}


static void
llm_report(const toll_host_t *host, toll_request_t *r, llm_state_t *st)
{
    uint64_t  units;

    st->done = 1;

    if (usage_scan_finish(&st->scan, &units)) {
        host->report_units(r, units);
    }
}


static int
llm_body(const toll_host_t *host, toll_request_t *r, void *conf,
    void **state, const char *data, size_t len, int last)
{
    llm_state_t  *st;

    (void) conf;

    st = *state;

    if (st == NULL || st->done) {
        return TOLL_OK;
    }

    usage_scan_feed(&st->scan, data, len);

    if (last) {
        llm_report(host, r, st);
    }

    return TOLL_OK;
}


/* the client left, or the upstream broke off: what was read counts */

static void
llm_log(const toll_host_t *host, toll_request_t *r, void *conf, void **state,
    unsigned status)
{
    llm_state_t  *st;

    (void) conf;
    (void) status;

    st = *state;

    if (st != NULL && !st->done) {
        llm_report(host, r, st);
    }
}


static const toll_plugin_t  llm_usage = {
    TOLL_PLUGIN_ABI_VERSION,
    sizeof(toll_plugin_t),
    llm_conf,
    NULL,
    llm_headers,
    llm_body,
    llm_log
};


const toll_plugin_t *
toll_plugin_entry(void)
{
    return &llm_usage;
}
