/*
 * Unit tests of lib/toll_addr.c: HOST:PORT, [IPV6]:PORT, unix:/PATH, and
 * the numeric form a listener binds, malformed input first.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "toll_addr.h"


#define TEST_NELTS(a)   (sizeof(a) / sizeof((a)[0]))
#define TEST_BUF_LEN    1024
/* room in buf for "unix:", brackets and a port around a TEST_BUF_LEN text */
#define TEST_TEXT_LEN   (TEST_BUF_LEN + 16)


static void
assert_addr_bad(const char *text, unsigned flags)
{
    toll_addr_t  a;

    if (toll_addr_parse(&a, text, flags) != -1) {
        fail_msg("address \"%s\" (flags %u) was taken", text, flags);
    }
}


static void
assert_addr_ok(const char *text, unsigned flags, const char *host,
    int port)
{
    toll_addr_t  a;

    if (toll_addr_parse(&a, text, flags) != 0) {
        fail_msg("address \"%s\" (flags %u) was refused", text, flags);
    }

    assert_string_equal(a.host, host);
    assert_int_equal(a.port, port);
}


static void
test_addr_malformed(void **state)
{
    size_t  i;

    static const char  *bad[] = {
        "", ":", "nohost", "localhost", "h:", ":6379", "h:6379:1",
        " h:6379", "h :6379", "h: 6379", "h:6379 ", "h:6379\n", "a b:1",
        "h\t:1", "h/x:1", "h@x:1", "h%x:1", "h:+1", "h:-1", "h:1.0",
        "h:0x10", "h:http", "::1:6379", "::1", "[::1]", "[::1]6379",
        "[::1]:", "[::1:6379", "::1]:6379", "[]:6379", "[x]:6379",
        "[127.0.0.1]:6379", "[fe80::1%eth0]:6379", "[::1]:6379x",
        "[[::1]]:1", "unix", "UNIX:/tmp/s", "h\x01:1", "\xc3\xa9:1",
    };

    (void) state;

    for (i = 0; i < TEST_NELTS(bad); i++) {
        assert_addr_bad(bad[i], 0);
        assert_addr_bad(bad[i], TOLL_ADDR_UNIX);
    }
}


static void
test_addr_port_bounds(void **state)
{
    char  buf[TEST_TEXT_LEN];

    (void) state;

    assert_addr_bad("h:0", 0);
    assert_addr_bad("h:00", 0);
    assert_addr_bad("h:65536", 0);
    assert_addr_bad("h:99999", 0);
    assert_addr_bad("h:99999999999999999999", 0);
    assert_addr_bad("[::1]:0", 0);
    assert_addr_bad("[::1]:65536", 0);

    assert_addr_ok("h:1", 0, "h", 1);
    assert_addr_ok("h:65535", 0, "h", 65535);
    assert_addr_ok("h:06379", 0, "h", 6379);

    /* leading zeros, up to the longest text an address may have */
    memset(buf, '0', sizeof(buf));
    memcpy(buf, "h:", 2);
    buf[TOLL_ADDR_TEXT_LEN_MAX - 1] = '1';
    buf[TOLL_ADDR_TEXT_LEN_MAX] = '\0';
    assert_addr_ok(buf, 0, "h", 1);

    buf[TOLL_ADDR_TEXT_LEN_MAX] = '1';
    buf[TOLL_ADDR_TEXT_LEN_MAX + 1] = '\0';
    assert_addr_bad(buf, 0);
    assert_addr_ok("[::1]:1", 0, "::1", 1);
    assert_addr_ok("[::1]:65535", 0, "::1", 65535);
}


static void
test_addr_host_bounds(void **state)
{
    char  buf[TEST_TEXT_LEN], host[TEST_BUF_LEN];

    (void) state;

    memset(host, 'a', TOLL_ADDR_HOST_LEN_MAX);
    host[TOLL_ADDR_HOST_LEN_MAX] = '\0';
    snprintf(buf, sizeof(buf), "%s:6379", host);
    assert_addr_ok(buf, 0, host, 6379);

    memset(host, 'a', TOLL_ADDR_HOST_LEN_MAX + 1);
    host[TOLL_ADDR_HOST_LEN_MAX + 1] = '\0';
    snprintf(buf, sizeof(buf), "%s:6379", host);
    assert_addr_bad(buf, 0);

    memset(host, 'a', 4 * TOLL_ADDR_HOST_LEN_MAX);
    host[4 * TOLL_ADDR_HOST_LEN_MAX] = '\0';
    snprintf(buf, sizeof(buf), "[%s]:6379", host);
    assert_addr_bad(buf, 0);
}


static void
test_addr_forms(void **state)
{
    toll_addr_t  a;

    (void) state;

    assert_addr_ok("127.0.0.1:6379", 0, "127.0.0.1", 6379);
    assert_addr_ok("localhost:6379", 0, "localhost", 6379);
    assert_addr_ok("redis-1.internal_lan.example:6379", 0,
                   "redis-1.internal_lan.example", 6379);
    assert_addr_ok("[::1]:6379", 0, "::1", 6379);
    assert_addr_ok("[2001:db8::7:1]:6380", 0, "2001:db8::7:1", 6380);
    assert_addr_ok("[::ffff:127.0.0.1]:1", 0, "::ffff:127.0.0.1", 1);

    assert_int_equal(toll_addr_parse(&a, "[::1]:6379", 0), 0);
    assert_true(a.ipv6);
    assert_int_equal(toll_addr_parse(&a, "127.0.0.1:6379", 0), 0);
    assert_false(a.ipv6);
}


static void
test_addr_unix(void **state)
{
    char         buf[TEST_TEXT_LEN], path[TEST_BUF_LEN];
    toll_addr_t  a;

    (void) state;

    /* without the flag, a unix socket is refused */
    assert_addr_bad("unix:/run/redis.sock", 0);

    assert_addr_bad("unix:", TOLL_ADDR_UNIX);
    assert_addr_bad("unix:run/redis.sock", TOLL_ADDR_UNIX);
    assert_addr_bad("unix: /run/redis.sock", TOLL_ADDR_UNIX);
    assert_addr_bad("unix:redis.sock", TOLL_ADDR_UNIX);

    assert_addr_ok("unix:/run/redis.sock", TOLL_ADDR_UNIX,
                   "/run/redis.sock", 0);
    assert_addr_ok("unix:/", TOLL_ADDR_UNIX, "/", 0);

    assert_int_equal(toll_addr_parse(&a, "unix:/r.sock", TOLL_ADDR_UNIX), 0);
    assert_false(a.ipv6);

    /* the longest path sun_path holds with its NUL, and one byte more */

    assert_int_equal(TOLL_ADDR_PATH_LEN_MAX,
                     sizeof(((struct sockaddr_un *) 0)->sun_path) - 1);

    memset(path, 'p', TOLL_ADDR_PATH_LEN_MAX);
    path[0] = '/';
    path[TOLL_ADDR_PATH_LEN_MAX] = '\0';
    snprintf(buf, sizeof(buf), "unix:%s", path);
    assert_addr_ok(buf, TOLL_ADDR_UNIX, path, 0);

    path[TOLL_ADDR_PATH_LEN_MAX] = 'p';
    path[TOLL_ADDR_PATH_LEN_MAX + 1] = '\0';
    snprintf(buf, sizeof(buf), "unix:%s", path);
    assert_addr_bad(buf, TOLL_ADDR_UNIX);
}


static int
sockaddr_of(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
    toll_addr_t  a;

    if (toll_addr_parse(&a, text, TOLL_ADDR_UNIX) != 0) {
        fail_msg("address \"%s\" was refused", text);
    }

    return toll_addr_sockaddr(&a, ss, len);
}


static void
test_addr_sockaddr_refused(void **state)
{
    size_t                   i;
    socklen_t                len;
    struct sockaddr_storage  ss;

    /* parsed, but not a numeric address: no resolver is asked */
    static const char  *bad[] = {
        "example.com:9465", "256.0.0.1:9465", "127.1:9465", "0x7f.0.0.1:1",
        "1.2.3:1", "1.2.3.4.5:1", "01.2.3.4:1", "unix:/run/s.sock",
        "LOCALHOST:1",
    };

    (void) state;

    for (i = 0; i < TEST_NELTS(bad); i++) {
        if (sockaddr_of(bad[i], &ss, &len) != -1) {
            fail_msg("\"%s\" has a numeric address", bad[i]);
        }
    }
}


static void
test_addr_sockaddr(void **state)
{
    socklen_t                 len;
    struct sockaddr_in       *sin;
    struct sockaddr_in6      *sin6;
    struct sockaddr_storage   ss;

    (void) state;

    assert_int_equal(sockaddr_of("127.0.0.1:9465", &ss, &len), 0);
    sin = (struct sockaddr_in *) &ss;
    assert_int_equal(len, sizeof(struct sockaddr_in));
    assert_int_equal(sin->sin_family, AF_INET);
    assert_int_equal(ntohs(sin->sin_port), 9465);
    assert_int_equal(ntohl(sin->sin_addr.s_addr), INADDR_LOOPBACK);

    assert_int_equal(sockaddr_of("localhost:1", &ss, &len), 0);
    assert_int_equal(ntohl(sin->sin_addr.s_addr), INADDR_LOOPBACK);
    assert_int_equal(ntohs(sin->sin_port), 1);

    assert_int_equal(sockaddr_of("0.0.0.0:65535", &ss, &len), 0);
    assert_int_equal(ntohl(sin->sin_addr.s_addr), INADDR_ANY);

    assert_int_equal(sockaddr_of("[::1]:9465", &ss, &len), 0);
    sin6 = (struct sockaddr_in6 *) &ss;
    assert_int_equal(len, sizeof(struct sockaddr_in6));
    assert_int_equal(sin6->sin6_family, AF_INET6);
    assert_int_equal(ntohs(sin6->sin6_port), 9465);
    assert_memory_equal(&sin6->sin6_addr, &in6addr_loopback,
                        sizeof(struct in6_addr));
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_addr_malformed),
        cmocka_unit_test(test_addr_port_bounds),
        cmocka_unit_test(test_addr_host_bounds),
        cmocka_unit_test(test_addr_forms),
        cmocka_unit_test(test_addr_unix),
        cmocka_unit_test(test_addr_sockaddr_refused),
        cmocka_unit_test(test_addr_sockaddr),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
