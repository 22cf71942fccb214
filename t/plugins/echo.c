/*
 * A test plugin: what each hook saw, made visible.
 *
 *   toll_plugin echo value=TEXT [units=N] [fail=headers|body|access];
 *
 * headers: X-Plugin-Echo: TEXT, X-Plugin-Buyer, X-Plugin-Service (from
 * identity()), X-Plugin-Access: yes when the access hook ran first.
 * body: counts the bytes; log: one info line "echo TEXT: N body bytes,
 * last=L, status=S".  units=N is reported in the access hook.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "toll_plugin.h"


typedef struct {
    const char         *value;
    long long           units;        /* -1: none */
    const char         *fail;
} echo_conf_t;

typedef struct {
    int                 accessed;
    int                 last;
    unsigned long long  bytes;
} echo_state_t;


static const char *
echo_conf(const toll_host_t *host, toll_conf_t *cf, const toll_arg_t *args,
    size_t nargs, void **conf)
{
    size_t        i;
    echo_conf_t  *ec;

    ec = host->conf_alloc(cf, sizeof(echo_conf_t));
    if (ec == NULL) {
        return "out of memory";
    }

    ec->units = -1;
    ec->fail = "";

    for (i = 0; i < nargs; i++) {
        if (strcmp(args[i].key.data, "value") == 0) {
            ec->value = args[i].value.data;

        } else if (strcmp(args[i].key.data, "units") == 0) {
            ec->units = atoll(args[i].value.data);

        } else if (strcmp(args[i].key.data, "fail") == 0) {
            ec->fail = args[i].value.data;

        } else {
            return "unknown argument";
        }
    }

    if (ec->value == NULL) {
        return "\"value\" is required";
    }

    *conf = ec;

    return NULL;
}


static echo_state_t *
echo_state(const toll_host_t *host, toll_request_t *r, void **state)
{
    if (*state == NULL) {
        *state = host->alloc(r, sizeof(echo_state_t));
    }

    return *state;
}


static int
echo_access(const toll_host_t *host, toll_request_t *r, void *conf,
    void **state)
{
    echo_conf_t   *ec = conf;
    echo_state_t  *st;

    if (strcmp(ec->fail, "access") == 0) {
        return TOLL_ERROR;
    }

    st = echo_state(host, r, state);
    if (st == NULL) {
        return TOLL_ERROR;
    }

    st->accessed = 1;

    if (ec->units >= 0) {
        host->report_units(r, (uint64_t) ec->units);
    }

    return TOLL_OK;
}


static void
echo_set(const toll_host_t *host, toll_request_t *r, const char *name,
    toll_str_t *v)
{
    char  buf[128];

    snprintf(buf, sizeof(buf), "%.*s", (int) v->len, v->data);
    host->set_response_header(r, name, buf);
}


static int
echo_headers(const toll_host_t *host, toll_request_t *r, void *conf,
    void **state, unsigned status)
{
    echo_conf_t      *ec = conf;
    echo_state_t     *st;
    toll_identity_t   id;

    (void) status;

    if (strcmp(ec->fail, "headers") == 0) {
        return TOLL_ERROR;
    }

    st = echo_state(host, r, state);
    if (st == NULL) {
        return TOLL_ERROR;
    }

    host->set_response_header(r, "X-Plugin-Echo", ec->value);
    host->set_response_header(r, "X-Plugin-Access",
                              st->accessed ? "yes" : "no");

    if (host->identity(r, &id) == TOLL_OK) {
        echo_set(host, r, "X-Plugin-Buyer", &id.buyer);
        echo_set(host, r, "X-Plugin-Service", &id.service);
    }

    return TOLL_OK;
}


static int
echo_body(const toll_host_t *host, toll_request_t *r, void *conf,
    void **state, const char *data, size_t len, int last)
{
    echo_conf_t   *ec = conf;
    echo_state_t  *st;

    (void) data;

    if (strcmp(ec->fail, "body") == 0) {
        return TOLL_ERROR;
    }

    st = echo_state(host, r, state);
    if (st == NULL) {
        return TOLL_ERROR;
    }

    /* set_response_header is for the headers hook only */
    if (host->set_response_header(r, "X-Late", "1") != TOLL_ERROR) {
        return TOLL_ERROR;
    }

    st->bytes += len;
    st->last |= last;

    return TOLL_OK;
}


static void
echo_log(const toll_host_t *host, toll_request_t *r, void *conf,
    void **state, unsigned status)
{
    echo_conf_t   *ec = conf;
    echo_state_t  *st = *state;

    host->log(r, TOLL_LOG_INFO, "echo %s: %llu body bytes, last=%d, "
              "status=%u", ec->value, st ? st->bytes : 0ULL,
              st ? st->last : 0, status);
}


static const toll_plugin_t  echo = {
    TOLL_PLUGIN_ABI_VERSION,
    sizeof(toll_plugin_t),
    echo_conf,
    echo_access,
    echo_headers,
    echo_body,
    echo_log
};


const toll_plugin_t *
toll_plugin_entry(void)
{
    return &echo;
}
