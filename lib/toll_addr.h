/*
 * toll: a network address as toll-settle and tollctl write it, for Redis
 * and for toll-settle's metrics listener.
 *
 *     HOST:PORT       a DNS name or an IPv4 address, "redis.lan:6379"
 *     [IPV6]:PORT     an IPv6 literal in brackets, "[::1]:6379"
 *     unix:/PATH      a unix socket, when the caller allows it
 *
 * One parser, one set of limits, for every program: a host of 1 to 255
 * bytes of letters, digits, ".", "-" and "_"; an IPv6 literal that
 * inet_pton() reads (no zone, "%eth0"); a port of digits only, 1 to
 * 65535; a socket path that is absolute and fits in sun_path with its
 * NUL (107 bytes on Linux), since a longer one would be cut short by
 * the kernel's structure and name another socket.  An IPv6 literal
 * without brackets is refused: its last group and a port look alike.
 *
 * No resolver is called: a host name is kept as text for hiredis; a
 * listener that must not resolve asks toll_addr_sockaddr() for the
 * numeric form.  No allocation, no I/O.
 */

#ifndef _TOLL_ADDR_H_INCLUDED_
#define _TOLL_ADDR_H_INCLUDED_


#include <stddef.h>

#include <sys/socket.h>
#include <sys/un.h>


#define TOLL_ADDR_UNIX_PREFIX     "unix:"
/* a DNS name's longest text */
#define TOLL_ADDR_HOST_LEN_MAX    255
/* sun_path less its NUL */
#define TOLL_ADDR_PATH_LEN_MAX                                          \
    (sizeof(((struct sockaddr_un *) 0)->sun_path) - 1)
/* host[]: the longer of a host and a socket path, and the NUL */
#define TOLL_ADDR_HOST_SIZE       (TOLL_ADDR_HOST_LEN_MAX + 1)
/* the longest text toll_addr_parse() accepts: "[" HOST "]:65535" */
#define TOLL_ADDR_TEXT_LEN_MAX    (TOLL_ADDR_HOST_LEN_MAX + 8)

/* flags of toll_addr_parse() */
#define TOLL_ADDR_UNIX            0x01      /* "unix:/PATH" is allowed */


typedef struct {
    /* a host name, an IP literal without brackets, or the socket path */
    char      host[TOLL_ADDR_HOST_SIZE];
    int       port;                         /* 1 to 65535; 0: unix */
    int       ipv6;                         /* written in brackets */
} toll_addr_t;


/*
 * Parses text, a C string, into *addr.  flags: TOLL_ADDR_UNIX to take a
 * unix socket too.  Returns 0, or -1 when text is malformed or out of
 * the limits above; *addr is then undefined.
 *
 *     toll_addr_t  a;
 *
 *     if (toll_addr_parse(&a, "unix:/run/redis.sock", TOLL_ADDR_UNIX)
 *         == 0 && a.port == 0)
 *     {
 *         c = redisConnectUnix(a.host);
 *     }
 */
int toll_addr_parse(toll_addr_t *addr, const char *text, unsigned flags);

/*
 * The numeric socket address of a parsed TCP address, for bind(): an
 * IPv4 or bracketed IPv6 literal, or "localhost", which is 127.0.0.1
 * whatever /etc/hosts says.  Any other name, or a unix socket, is -1;
 * 0 with *ss and *len set otherwise.
 */
int toll_addr_sockaddr(const toll_addr_t *addr, struct sockaddr_storage *ss,
    socklen_t *len);


#endif /* _TOLL_ADDR_H_INCLUDED_ */
