/*
 * toll: where the store is, as the three programs name it
 * (lib/toll_store.h): one Redis, a Cluster's seeds, or the sentinels and
 * their master's name.  The module links this file alone; the blocking
 * client is lib/toll_store.c.
 */

#include <stdio.h>
#include <string.h>

#include "toll_store.h"


#define TOLL_STORE_CLUSTER_PREFIX   "cluster="
#define TOLL_STORE_SENTINEL_PREFIX  "sentinel="
#define TOLL_STORE_MASTER_PREFIX    "master="
/* the longest line toll_store_spec_parse_line() takes */
#define TOLL_STORE_LINE_LEN_MAX                                          \
    (TOLL_CLUSTER_SEEDS_MAX * (TOLL_ADDR_TEXT_LEN_MAX + 1)               \
     + sizeof(TOLL_STORE_SENTINEL_PREFIX) + sizeof(TOLL_STORE_MASTER_PREFIX) \
     + TOLL_STORE_MASTER_LEN_MAX + 2)


static int toll_store_spec_list(toll_store_spec_t *spec, const char *list,
    const char *what, char *err, size_t err_size);
static int toll_store_spec_master(toll_store_spec_t *spec,
    const char *master, char *err, size_t err_size);


int
toll_store_spec_parse(toll_store_spec_t *spec, const char *addr,
    const char *master, int flags, char *err, size_t err_size)
{
    memset(spec, 0, sizeof(toll_store_spec_t));

    if (strncmp(addr, TOLL_STORE_CLUSTER_PREFIX,
                sizeof(TOLL_STORE_CLUSTER_PREFIX) - 1)
        == 0)
    {
        if (master != NULL) {
            snprintf(err, err_size, "\"master=\" goes with \"sentinel=\" "
                     "only");
            return -1;
        }

        spec->kind = TOLL_STORE_CLUSTER;

        return toll_store_spec_list(spec,
                             addr + sizeof(TOLL_STORE_CLUSTER_PREFIX) - 1,
                             "cluster=", err, err_size);
    }

    if (strncmp(addr, TOLL_STORE_SENTINEL_PREFIX,
                sizeof(TOLL_STORE_SENTINEL_PREFIX) - 1)
        == 0)
    {
        spec->kind = TOLL_STORE_SENTINEL;

        if (toll_store_spec_list(spec,
                             addr + sizeof(TOLL_STORE_SENTINEL_PREFIX) - 1,
                             "sentinel=", err, err_size)
            != 0)
        {
            return -1;
        }

        return toll_store_spec_master(spec, master, err, err_size);
    }

    if (master != NULL) {
        snprintf(err, err_size, "\"master=\" goes with \"sentinel=\" only");
        return -1;
    }

    spec->kind = TOLL_STORE_SINGLE;
    spec->n = 1;

    if (toll_addr_parse(&spec->addr[0], addr, flags) != 0) {
        snprintf(err, err_size, "invalid redis address \"%.*s\": "
                 "HOST:PORT, [IPV6]:PORT%s, cluster=HOST:PORT,... or "
                 "sentinel=HOST:PORT,... master=NAME",
                 TOLL_ADDR_TEXT_LEN_MAX, addr,
                 (flags & TOLL_ADDR_UNIX) ? ", unix:/PATH" : "");
        return -1;
    }

    return 0;
}


int
toll_store_spec_parse_line(toll_store_spec_t *spec, const char *line,
    int flags, char *err, size_t err_size)
{
    char         buf[TOLL_STORE_LINE_LEN_MAX + 1], *word[3], *p;
    const char  *master;
    size_t       len;
    unsigned     n;

    len = strlen(line);

    if (len > TOLL_STORE_LINE_LEN_MAX) {
        snprintf(err, err_size, "the redis address is longer than %d "
                 "bytes", (int) TOLL_STORE_LINE_LEN_MAX);
        return -1;
    }

    memcpy(buf, line, len + 1);

    n = 0;

    for (p = strtok(buf, " \t"); p != NULL; p = strtok(NULL, " \t")) {
        if (n == 2) {
            snprintf(err, err_size, "the redis address has more than two "
                     "words: ADDRESS or sentinel=... master=NAME");
            return -1;
        }

        word[n++] = p;
    }

    if (n == 0) {
        snprintf(err, err_size, "the redis address is empty");
        return -1;
    }

    master = NULL;

    if (n == 2) {
        if (strncmp(word[1], TOLL_STORE_MASTER_PREFIX,
                    sizeof(TOLL_STORE_MASTER_PREFIX) - 1)
            != 0)
        {
            snprintf(err, err_size, "the redis address's second word must "
                     "be master=NAME");
            return -1;
        }

        master = word[1] + sizeof(TOLL_STORE_MASTER_PREFIX) - 1;
    }

    return toll_store_spec_parse(spec, word[0], master, flags, err,
                                 err_size);
}


/* HOST:PORT,HOST:PORT...: at least one, each once, never a socket */

static int
toll_store_spec_list(toll_store_spec_t *spec, const char *list,
    const char *what, char *err, size_t err_size)
{
    char          one[TOLL_ADDR_TEXT_LEN_MAX + 1];
    size_t        len;
    unsigned      i;
    const char   *p, *end;
    toll_addr_t  *a;

    if (*list == '\0') {
        snprintf(err, err_size, "\"%s\" needs at least one HOST:PORT",
                 what);
        return -1;
    }

    for (p = list; ; p = end + 1) {
        end = strchr(p, ',');
        len = end ? (size_t) (end - p) : strlen(p);

        if (len == 0) {
            snprintf(err, err_size, "\"%s\" has an empty address", what);
            return -1;
        }

        if (spec->n == TOLL_CLUSTER_SEEDS_MAX) {
            snprintf(err, err_size, "\"%s\" has more than %d addresses",
                     what, TOLL_CLUSTER_SEEDS_MAX);
            return -1;
        }

        if (len > TOLL_ADDR_TEXT_LEN_MAX) {
            snprintf(err, err_size, "\"%s\" has an address longer than %d "
                     "bytes", what, TOLL_ADDR_TEXT_LEN_MAX);
            return -1;
        }

        memcpy(one, p, len);
        one[len] = '\0';

        a = &spec->addr[spec->n];

        /* a socket has no place in a map of TCP addresses */

        if (toll_addr_parse(a, one, 0) != 0) {
            snprintf(err, err_size, "invalid address \"%s\" in \"%s\": "
                     "HOST:PORT or [IPV6]:PORT", one, what);
            return -1;
        }

        for (i = 0; i < spec->n; i++) {
            if (spec->addr[i].port == a->port
                && strcmp(spec->addr[i].host, a->host) == 0)
            {
                snprintf(err, err_size, "\"%s\" names \"%s\" twice", what,
                         one);
                return -1;
            }
        }

        spec->n++;

        if (end == NULL) {
            return 0;
        }
    }
}


/* a master's name as Sentinel takes it: no blank, no control byte */

static int
toll_store_spec_master(toll_store_spec_t *spec, const char *master,
    char *err, size_t err_size)
{
    size_t  i, len;

    if (master == NULL) {
        snprintf(err, err_size, "\"sentinel=\" needs \"master=NAME\"");
        return -1;
    }

    len = strlen(master);

    if (len == 0 || len > TOLL_STORE_MASTER_LEN_MAX) {
        snprintf(err, err_size, "\"master=\" needs a name of 1 to %d "
                 "bytes", TOLL_STORE_MASTER_LEN_MAX);
        return -1;
    }

    for (i = 0; i < len; i++) {
        if ((unsigned char) master[i] <= ' ' || master[i] == 0x7f) {
            snprintf(err, err_size, "\"master=\" has a blank or a control "
                     "byte");
            return -1;
        }
    }

    memcpy(spec->master, master, len + 1);

    return 0;
}
