/*
 * toll: the store's spec, "HOST:PORT", "cluster=..." or "sentinel=...
 * master=NAME", as all three programs take it (toll_store.h).
 */

#include <stdio.h>
#include <string.h>

#include "toll_store.h"


#define TOLL_STORE_CLUSTER_PREFIX   "cluster="
#define TOLL_STORE_SENTINEL_PREFIX  "sentinel="
#define TOLL_STORE_MASTER_PREFIX    "master="


static int toll_store_spec_list(toll_store_spec_t *spec, const char *what,
    const char *list, char *err, size_t err_size);
static int toll_store_spec_master(toll_store_spec_t *spec, const char *master,
    char *err, size_t err_size);


int
toll_store_spec_parse(toll_store_spec_t *spec, const char *addr,
    const char *master, int flags, char *err, size_t err_size)
{
    size_t  cl, sl;

    memset(spec, 0, sizeof(toll_store_spec_t));

    if (addr == NULL || addr[0] == '\0') {
        snprintf(err, err_size, "no Redis address: use HOST:PORT, "
                 "[IPV6]:PORT, unix:/PATH, cluster=HOST:PORT,... or "
                 "sentinel=HOST:PORT,... master=NAME");
        return -1;
    }

    cl = sizeof(TOLL_STORE_CLUSTER_PREFIX) - 1;
    sl = sizeof(TOLL_STORE_SENTINEL_PREFIX) - 1;

    if (strncmp(addr, TOLL_STORE_CLUSTER_PREFIX, cl) == 0) {
        spec->kind = TOLL_STORE_CLUSTER;

        if (master != NULL) {
            snprintf(err, err_size, "master= goes with sentinel=, not with "
                     "cluster=");
            return -1;
        }

        return toll_store_spec_list(spec, "cluster", addr + cl, err,
                                    err_size);
    }

    if (strncmp(addr, TOLL_STORE_SENTINEL_PREFIX, sl) == 0) {
        spec->kind = TOLL_STORE_SENTINEL;

        if (toll_store_spec_list(spec, "sentinel", addr + sl, err, err_size)
            != 0)
        {
            return -1;
        }

        return toll_store_spec_master(spec, master, err, err_size);
    }

    spec->kind = TOLL_STORE_SINGLE;

    if (master != NULL) {
        snprintf(err, err_size, "master= goes with sentinel=, not with one "
                 "Redis address");
        return -1;
    }

    if (toll_addr_parse(&spec->addr[0], addr, (unsigned) flags) != 0) {
        /* the caller names the address and where it came from */
        snprintf(err, err_size, "use HOST:PORT, [IPV6]:PORT%s, "
                 "cluster=HOST:PORT,... or sentinel=HOST:PORT,... "
                 "master=NAME", (flags & TOLL_ADDR_UNIX) ? ", unix:/PATH"
                                                         : "");
        return -1;
    }

    spec->n = 1;

    return 0;
}


int
toll_store_spec_parse_line(toll_store_spec_t *spec, const char *line,
    int flags, char *err, size_t err_size)
{
    size_t       n, len;
    const char  *p, *word[3];
    size_t       wlen[3];
    char         addr[TOLL_CLUSTER_SEEDS_MAX * (TOLL_ADDR_TEXT_LEN_MAX + 1)
                      + sizeof(TOLL_STORE_SENTINEL_PREFIX)];
    char         master[TOLL_STORE_MASTER_LEN_MAX + 2
                        + sizeof(TOLL_STORE_MASTER_PREFIX)];

    n = 0;
    p = line;

    for ( ;; ) {
        while (*p == ' ' || *p == '\t') {
            p++;
        }

        if (*p == '\0') {
            break;
        }

        len = strcspn(p, " \t");

        if (n == 2) {
            snprintf(err, err_size, "a Redis spec is one address, or "
                     "sentinel=... and master=NAME: \"%.*s\" is one word "
                     "too many", (int) (len > 64 ? 64 : len), p);
            return -1;
        }

        word[n] = p;
        wlen[n] = len;
        n++;
        p += len;
    }

    if (n == 0) {
        return toll_store_spec_parse(spec, "", NULL, flags, err, err_size);
    }

    /* the two words in either order */
    if (n == 2 && wlen[0] >= sizeof(TOLL_STORE_MASTER_PREFIX) - 1
        && memcmp(word[0], TOLL_STORE_MASTER_PREFIX,
                  sizeof(TOLL_STORE_MASTER_PREFIX) - 1) == 0)
    {
        word[2] = word[0];
        wlen[2] = wlen[0];
        word[0] = word[1];
        wlen[0] = wlen[1];
        word[1] = word[2];
        wlen[1] = wlen[2];
    }

    if (wlen[0] >= sizeof(addr)) {
        snprintf(err, err_size, "the Redis address is too long");
        return -1;
    }

    memcpy(addr, word[0], wlen[0]);
    addr[wlen[0]] = '\0';

    if (n == 1) {
        return toll_store_spec_parse(spec, addr, NULL, flags, err, err_size);
    }

    if (wlen[1] < sizeof(TOLL_STORE_MASTER_PREFIX) - 1
        || memcmp(word[1], TOLL_STORE_MASTER_PREFIX,
                  sizeof(TOLL_STORE_MASTER_PREFIX) - 1) != 0)
    {
        snprintf(err, err_size, "unexpected \"%.*s\" after the Redis "
                 "address: only sentinel=... takes a second word, "
                 "master=NAME", (int) (wlen[1] > 64 ? 64 : wlen[1]),
                 word[1]);
        return -1;
    }

    len = wlen[1] - (sizeof(TOLL_STORE_MASTER_PREFIX) - 1);

    /* one byte over the limit is enough for the parser to say so */
    if (len > TOLL_STORE_MASTER_LEN_MAX + 1) {
        len = TOLL_STORE_MASTER_LEN_MAX + 1;
    }

    memcpy(master, word[1] + sizeof(TOLL_STORE_MASTER_PREFIX) - 1, len);
    master[len] = '\0';

    return toll_store_spec_parse(spec, addr, master, flags, err, err_size);
}


static int
toll_store_spec_list(toll_store_spec_t *spec, const char *what,
    const char *list, char *err, size_t err_size)
{
    size_t       len;
    unsigned     i;
    const char  *p, *comma;
    char         text[TOLL_ADDR_TEXT_LEN_MAX + 1];

    if (list[0] == '\0') {
        snprintf(err, err_size, "%s= needs at least one HOST:PORT", what);
        return -1;
    }

    p = list;

    for ( ;; ) {
        comma = strchr(p, ',');
        len = (comma != NULL) ? (size_t) (comma - p) : strlen(p);

        if (len == 0) {
            snprintf(err, err_size, "%s=: an empty address (two commas, or "
                     "one at an end)", what);
            return -1;
        }

        if (spec->n == TOLL_CLUSTER_SEEDS_MAX) {
            snprintf(err, err_size, "%s= takes at most %d addresses", what,
                     TOLL_CLUSTER_SEEDS_MAX);
            return -1;
        }

        if (len > TOLL_ADDR_TEXT_LEN_MAX) {
            snprintf(err, err_size, "%s=: an address of over %d bytes",
                     what, TOLL_ADDR_TEXT_LEN_MAX);
            return -1;
        }

        memcpy(text, p, len);
        text[len] = '\0';

        if (strncmp(text, TOLL_ADDR_UNIX_PREFIX,
                    sizeof(TOLL_ADDR_UNIX_PREFIX) - 1) == 0)
        {
            snprintf(err, err_size, "%s=: a unix socket cannot be a %s "
                     "(\"%s\"): the nodes name each other by TCP address",
                     what, (what[0] == 'c') ? "cluster seed" : "sentinel",
                     text);
            return -1;
        }

        if (toll_addr_parse(&spec->addr[spec->n], text, 0) != 0) {
            snprintf(err, err_size, "%s=: invalid address \"%s\": use "
                     "HOST:PORT or [IPV6]:PORT", what, text);
            return -1;
        }

        for (i = 0; i < spec->n; i++) {
            if (spec->addr[i].port == spec->addr[spec->n].port
                && strcmp(spec->addr[i].host, spec->addr[spec->n].host)
                   == 0)
            {
                snprintf(err, err_size, "%s=: \"%s\" is given twice", what,
                         text);
                return -1;
            }
        }

        spec->n++;

        if (comma == NULL) {
            return 0;
        }

        p = comma + 1;
    }
}


/* a name Sentinel takes, and that goes into a command as one word */

static int
toll_store_spec_master(toll_store_spec_t *spec, const char *master,
    char *err, size_t err_size)
{
    size_t  i, len;

    if (master == NULL) {
        snprintf(err, err_size, "sentinel= needs master=NAME, the name the "
                 "sentinels monitor the primary under");
        return -1;
    }

    len = strlen(master);

    if (len == 0) {
        snprintf(err, err_size, "master= needs a name");
        return -1;
    }

    if (len > TOLL_STORE_MASTER_LEN_MAX) {
        snprintf(err, err_size, "master= is over %d bytes",
                 TOLL_STORE_MASTER_LEN_MAX);
        return -1;
    }

    for (i = 0; i < len; i++) {
        if ((unsigned char) master[i] <= ' ' || master[i] == 0x7f) {
            snprintf(err, err_size, "master= must not hold blanks or "
                     "control characters");
            return -1;
        }
    }

    memcpy(spec->master, master, len + 1);

    return 0;
}
