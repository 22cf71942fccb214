/*
 * toll: HOST:PORT, [IPV6]:PORT and unix:/PATH (toll_addr.h).
 */

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "toll_addr.h"
#include "toll_parse.h"


/* a socket path fits where a host does */
_Static_assert(TOLL_ADDR_PATH_LEN_MAX < TOLL_ADDR_HOST_SIZE,
               "toll_addr_t.host is too small for a socket path");


static int toll_addr_host_valid(const char *host, size_t len);


int
toll_addr_parse(toll_addr_t *addr, const char *text, unsigned flags)
{
    size_t           len;
    int64_t          port;
    const char      *host, *end;
    struct in6_addr  in6;

    memset(addr, 0, sizeof(toll_addr_t));

    /* also bounds a port's leading zeros */
    if (strlen(text) > TOLL_ADDR_TEXT_LEN_MAX) {
        return -1;
    }

    if (strncmp(text, TOLL_ADDR_UNIX_PREFIX,
                sizeof(TOLL_ADDR_UNIX_PREFIX) - 1)
        == 0)
    {
        host = text + sizeof(TOLL_ADDR_UNIX_PREFIX) - 1;
        len = strlen(host);

        /* relative to what? a daemon's working directory is "/" */
        if (!(flags & TOLL_ADDR_UNIX) || host[0] != '/'
            || len > TOLL_ADDR_PATH_LEN_MAX)
        {
            return -1;
        }

        memcpy(addr->host, host, len + 1);

        return 0;
    }

    if (text[0] == '[') {
        host = text + 1;
        end = strchr(host, ']');

        if (end == NULL || end[1] != ':') {
            return -1;
        }

        len = (size_t) (end - host);
        end++;
        addr->ipv6 = 1;

    } else {
        end = strchr(text, ':');

        if (end == NULL || strchr(end + 1, ':') != NULL) {
            return -1;
        }

        host = text;
        len = (size_t) (end - host);
    }

    if (len == 0 || len > TOLL_ADDR_HOST_LEN_MAX
        || toll_parse_int64(end + 1, 1, 65535, &port) != 0)
    {
        return -1;
    }

    memcpy(addr->host, host, len);
    addr->host[len] = '\0';
    addr->port = (int) port;

    if (addr->ipv6) {
        return (inet_pton(AF_INET6, addr->host, &in6) == 1) ? 0 : -1;
    }

    return toll_addr_host_valid(addr->host, len);
}


int
toll_addr_sockaddr(const toll_addr_t *addr, struct sockaddr_storage *ss,
    socklen_t *len)
{
    const char           *host;
    struct sockaddr_in   *sin;
    struct sockaddr_in6  *sin6;

    memset(ss, 0, sizeof(struct sockaddr_storage));

    if (addr->port == 0) {
        return -1;
    }

    if (addr->ipv6) {
        sin6 = (struct sockaddr_in6 *) ss;

        if (inet_pton(AF_INET6, addr->host, &sin6->sin6_addr) != 1) {
            return -1;
        }

        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t) addr->port);
        *len = sizeof(struct sockaddr_in6);

        return 0;
    }

    /* without a resolver: the daemon listens where the docs say */
    host = (strcmp(addr->host, "localhost") == 0) ? "127.0.0.1"
                                                  : addr->host;

    sin = (struct sockaddr_in *) ss;

    /* inet_pton(), unlike inet_aton(), refuses "127.1" and "0x7f.1" */
    if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
        return -1;
    }

    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t) addr->port);
    *len = sizeof(struct sockaddr_in);

    return 0;
}


/* letters, digits, ".", "-" and "_" (some hosts have one in their name) */
static int
toll_addr_host_valid(const char *host, size_t len)
{
    size_t  i;
    char    c;

    for (i = 0; i < len; i++) {
        c = host[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_'))
        {
            return -1;
        }
    }

    return 0;
}
