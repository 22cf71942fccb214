/*
 * Unit tests of lib/toll_store.c and lib/toll_store_spec.c: the spec as
 * the three programs write it (every bad value first), then the client
 * against fake nodes: a thread on loopback that reads each command with
 * hiredis's reader and answers recorded RESP, as a test's script says
 * (a map, a MOVED, an ASK, a loop, a sentinel, a failover).
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "toll_store.h"


#define TEST_NELTS(a)     (sizeof(a) / sizeof((a)[0]))
#define TEST_NODES        3               /* A, B, S (a sentinel) */
#define TEST_CONNS_MAX    32
#define TEST_LOG_SIZE     4096


/* ---- the spec ---- */

static void
assert_spec_bad(const char *line, int flags, const char *says)
{
    char               err[512];
    toll_store_spec_t  spec;

    err[0] = '\0';

    if (toll_store_spec_parse_line(&spec, line, flags, err, sizeof(err))
        != -1)
    {
        fail_msg("spec \"%s\" was taken", line);
    }

    if (strstr(err, says) == NULL) {
        fail_msg("spec \"%s\": \"%s\" does not say \"%s\"", line, err, says);
    }
}


static void
test_spec_bad(void **state)
{
    int   i;
    char  line[2048], *p;

    (void) state;

    assert_spec_bad("", TOLL_ADDR_UNIX, "no Redis address");
    assert_spec_bad("   ", TOLL_ADDR_UNIX, "no Redis address");
    assert_spec_bad("localhost", TOLL_ADDR_UNIX, "use HOST:PORT");
    assert_spec_bad("unix:/run/r.sock", 0, "use HOST:PORT, [IPV6]:PORT, "
                    "cluster=");
    assert_spec_bad("h:1 master=x", 0, "master= goes with sentinel=");
    assert_spec_bad("h:1 x", 0, "only sentinel=");
    assert_spec_bad("cluster=", 0, "cluster= needs at least one HOST:PORT");
    assert_spec_bad("cluster=a:1,,b:1", 0, "an empty address");
    assert_spec_bad("cluster=a:1,", 0, "an empty address");
    assert_spec_bad("cluster=,a:1", 0, "an empty address");
    assert_spec_bad("cluster=a:1,unix:/r.sock", TOLL_ADDR_UNIX,
                    "a unix socket cannot be a cluster seed");
    assert_spec_bad("cluster=a:1,a:1", 0, "given twice");
    assert_spec_bad("cluster=[::1]:7000,[::1]:7000", 0, "given twice");
    assert_spec_bad("cluster=a", 0, "invalid address \"a\"");
    assert_spec_bad("cluster=a:0", 0, "invalid address");
    assert_spec_bad("cluster=a:1 master=m", 0, "master= goes with sentinel");
    assert_spec_bad("sentinel=a:26379", 0,
                    "sentinel= needs master=NAME");
    assert_spec_bad("sentinel=a:26379 master=", 0, "master= needs a name");
    assert_spec_bad("sentinel= master=m", 0,
                    "sentinel= needs at least one HOST:PORT");
    assert_spec_bad("sentinel=unix:/s master=m", TOLL_ADDR_UNIX,
                    "a unix socket cannot be a sentinel");
    assert_spec_bad("sentinel=a:1,a:1 master=m", 0, "given twice");
    assert_spec_bad("sentinel=a:1 master=m x", 0, "one word too many");
    assert_spec_bad("sentinel=a:1 master=m\x01", 0, "blanks or control");
    assert_spec_bad("sentinel=a:1 master=m master=n", 0, "one word too");
    assert_spec_bad("sentinel=a:1 sentinel=b:1", 0, "only sentinel=");

    /* a name of 65 bytes; 64 are taken */
    memset(line, 0, sizeof(line));
    p = line + sprintf(line, "sentinel=a:1 master=");
    memset(p, 'm', 65);
    assert_spec_bad(line, 0, "over 64 bytes");

    /* 17 seeds; 16 are taken */
    p = line + sprintf(line, "cluster=");

    for (i = 0; i < 17; i++) {
        p += sprintf(p, "%sh%d:7000", i ? "," : "", i);
    }

    assert_spec_bad(line, 0, "at most 16");

    /* the one parser with its own master argument (nginx's) */
    {
        char               err[256];
        toll_store_spec_t  spec;

        assert_int_equal(toll_store_spec_parse(&spec, "sentinel=a:1",
                                               "a b", 0, err, sizeof(err)),
                         -1);
        assert_non_null(strstr(err, "blanks"));
        assert_int_equal(toll_store_spec_parse(&spec, NULL, NULL, 0, err,
                                               sizeof(err)), -1);
    }
}


static void
test_spec_good(void **state)
{
    int                i;
    char               err[256], line[2048], *p;
    toll_store_spec_t  spec;

    (void) state;

    assert_int_equal(toll_store_spec_parse_line(&spec, "127.0.0.1:6379",
                                                0, err, sizeof(err)), 0);
    assert_int_equal(spec.kind, TOLL_STORE_SINGLE);
    assert_int_equal(spec.n, 1);
    assert_string_equal(spec.addr[0].host, "127.0.0.1");
    assert_int_equal(spec.addr[0].port, 6379);

    assert_int_equal(toll_store_spec_parse_line(&spec, " unix:/run/r.sock ",
                                                TOLL_ADDR_UNIX, err,
                                                sizeof(err)), 0);
    assert_int_equal(spec.addr[0].port, 0);

    assert_int_equal(toll_store_spec_parse_line(&spec,
                         "cluster=a:7000,[::1]:7001,b.lan:7002", 0, err,
                         sizeof(err)), 0);
    assert_int_equal(spec.kind, TOLL_STORE_CLUSTER);
    assert_int_equal(spec.n, 3);
    assert_string_equal(spec.addr[1].host, "::1");
    assert_int_equal(spec.addr[2].port, 7002);

    assert_int_equal(toll_store_spec_parse_line(&spec,
                         "sentinel=a:26379,b:26379\tmaster=toll-main", 0,
                         err, sizeof(err)), 0);
    assert_int_equal(spec.kind, TOLL_STORE_SENTINEL);
    assert_int_equal(spec.n, 2);
    assert_string_equal(spec.master, "toll-main");

    /* either order */
    assert_int_equal(toll_store_spec_parse_line(&spec,
                         "master=m sentinel=a:26379", 0, err, sizeof(err)),
                     0);
    assert_string_equal(spec.master, "m");

    /* 16 seeds, a name of 64 bytes */
    p = line + sprintf(line, "sentinel=");

    for (i = 0; i < 16; i++) {
        p += sprintf(p, "%sh%d:7000", i ? "," : "", i);
    }

    p += sprintf(p, " master=");
    memset(p, 'm', 64);
    p[64] = '\0';

    assert_int_equal(toll_store_spec_parse_line(&spec, line, 0, err,
                                                sizeof(err)), 0);
    assert_int_equal(spec.n, 16);
    assert_int_equal(strlen(spec.master), 64);
}


/* ---- fake nodes ---- */

/* what a node answers to one command: RESP text, or NULL to hang up */
typedef const char *(*test_answer_pt)(int node, int argc, char **argv);

static struct {
    pthread_mutex_t   lock;
    pthread_t         thread;
    int               listen[TEST_NODES];
    int               port[TEST_NODES];
    int               stop[2];
    test_answer_pt    answer;
    char              log[TEST_LOG_SIZE];
    int               slots_asked;
    int               calls[TEST_NODES];
    char              buf[4096];
} fake;


static void
fake_log(int node, int argc, char **argv)
{
    int     i;
    size_t  len;

    len = strlen(fake.log);
    snprintf(fake.log + len, sizeof(fake.log) - len, "%c:", "ABS"[node]);

    for (i = 0; i < argc; i++) {
        len = strlen(fake.log);
        snprintf(fake.log + len, sizeof(fake.log) - len, "%s%s",
                 i ? " " : "", argv[i]);
    }

    len = strlen(fake.log);
    snprintf(fake.log + len, sizeof(fake.log) - len, "|");
}


static void *
fake_run(void *arg)
{
    int            nfd, i, k, n, node[TEST_CONNS_MAX], argc;
    char           buf[4096], *argv[32];
    void          *req;
    ssize_t        got;
    const char    *out;
    redisReply    *r;
    redisReader   *rd[TEST_CONNS_MAX];
    struct pollfd  pfd[TEST_NODES + 1 + TEST_CONNS_MAX];

    (void) arg;

    nfd = 0;

    for (;;) {
        for (i = 0; i < TEST_NODES; i++) {
            pfd[i].fd = fake.listen[i];
            pfd[i].events = POLLIN;
        }

        pfd[TEST_NODES].fd = fake.stop[0];
        pfd[TEST_NODES].events = POLLIN;

        if (poll(pfd, TEST_NODES + 1 + nfd, -1) < 0) {
            continue;
        }

        if (pfd[TEST_NODES].revents) {
            break;
        }

        for (i = 0; i < TEST_NODES; i++) {
            if ((pfd[i].revents & POLLIN) && nfd < TEST_CONNS_MAX) {
                k = TEST_NODES + 1 + nfd;
                pfd[k].fd = accept(fake.listen[i], NULL, NULL);
                pfd[k].events = POLLIN;
                node[nfd] = i;
                rd[nfd] = redisReaderCreate();
                nfd++;
            }
        }

        for (i = 0; i < nfd; i++) {
            k = TEST_NODES + 1 + i;

            if (!(pfd[k].revents & (POLLIN | POLLHUP | POLLERR))) {
                continue;
            }

            got = read(pfd[k].fd, buf, sizeof(buf));

            if (got > 0) {
                redisReaderFeed(rd[i], buf, (size_t) got);
            }

            while (got > 0 && redisReaderGetReply(rd[i], &req) == REDIS_OK
                   && req != NULL)
            {
                r = req;
                argc = 0;

                for (n = 0; n < (int) r->elements && n < 32; n++) {
                    argv[argc++] = r->element[n]->str;
                }

                pthread_mutex_lock(&fake.lock);
                fake_log(node[i], argc, argv);
                fake.calls[node[i]]++;

                if (argc == 2 && strcasecmp(argv[0], "CLUSTER") == 0) {
                    fake.slots_asked++;
                }

                out = fake.answer(node[i], argc, argv);
                pthread_mutex_unlock(&fake.lock);
                freeReplyObject(r);

                if (out == NULL) {
                    got = 0;
                    break;
                }

                if (write(pfd[k].fd, out, strlen(out)) < 0) {
                    got = 0;
                }
            }

            if (got <= 0) {
                close(pfd[k].fd);
                redisReaderFree(rd[i]);
                nfd--;
                pfd[k] = pfd[TEST_NODES + 1 + nfd];
                node[i] = node[nfd];
                rd[i] = rd[nfd];
                i--;
            }
        }
    }

    for (i = 0; i < nfd; i++) {
        close(pfd[TEST_NODES + 1 + i].fd);
        redisReaderFree(rd[i]);
    }

    return NULL;
}


static int
fake_start(void **state)
{
    int                 i, one;
    socklen_t           len;
    struct sockaddr_in  sin;

    (void) state;

    pthread_mutex_init(&fake.lock, NULL);
    assert_int_equal(pipe(fake.stop), 0);

    for (i = 0; i < TEST_NODES; i++) {
        fake.listen[i] = socket(AF_INET, SOCK_STREAM, 0);
        one = 1;
        setsockopt(fake.listen[i], SOL_SOCKET, SO_REUSEADDR, &one,
                   sizeof(one));
        memset(&sin, 0, sizeof(sin));
        sin.sin_family = AF_INET;
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        assert_int_equal(bind(fake.listen[i], (struct sockaddr *) &sin,
                              sizeof(sin)), 0);
        assert_int_equal(listen(fake.listen[i], 16), 0);
        len = sizeof(sin);
        getsockname(fake.listen[i], (struct sockaddr *) &sin, &len);
        fake.port[i] = ntohs(sin.sin_port);
    }

    return pthread_create(&fake.thread, NULL, fake_run, NULL);
}


static int
fake_stop(void **state)
{
    int  i;

    (void) state;

    assert_int_equal(write(fake.stop[1], "x", 1), 1);
    pthread_join(fake.thread, NULL);

    for (i = 0; i < TEST_NODES; i++) {
        close(fake.listen[i]);
    }

    return 0;
}


static void
fake_reset(test_answer_pt answer)
{
    pthread_mutex_lock(&fake.lock);
    fake.answer = answer;
    fake.log[0] = '\0';
    fake.slots_asked = 0;
    memset(fake.calls, 0, sizeof(fake.calls));
    pthread_mutex_unlock(&fake.lock);
}


/* CLUSTER SLOTS: 0-8191 at A, 8192-16383 at B ("foo" is 12182, at B;
 * "bar" is 5061, at A) */
static const char *
fake_map_ab(void)
{
    snprintf(fake.buf, sizeof(fake.buf),
             "*2\r\n"
             "*3\r\n:0\r\n:8191\r\n*3\r\n$9\r\n127.0.0.1\r\n:%d\r\n$2\r\nid\r\n"
             "*3\r\n:8192\r\n:16383\r\n*3\r\n$9\r\n127.0.0.1\r\n:%d\r\n"
             "$2\r\nid\r\n", fake.port[0], fake.port[1]);

    return fake.buf;
}


/* all slots at A */
static const char *
fake_map_a(void)
{
    snprintf(fake.buf, sizeof(fake.buf),
             "*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$0\r\n\r\n:%d\r\n",
             fake.port[0]);

    return fake.buf;
}


static int
fake_is(int argc, char **argv, const char *cmd)
{
    return argc >= 1 && strcasecmp(argv[0], cmd) == 0;
}


static const char *
answer_split(int node, int argc, char **argv)
{
    if (fake_is(argc, argv, "CLUSTER")) {
        return fake_map_ab();
    }

    if (fake_is(argc, argv, "GET")) {
        return (node == 0) ? "$1\r\nA\r\n" : "$1\r\nB\r\n";
    }

    if (fake_is(argc, argv, "PING")) {
        return "+PONG\r\n";
    }

    return "-ERR unknown\r\n";
}


static toll_store_t *
test_connect(const char *line, char *err, size_t err_size)
{
    toll_store_spec_t  spec;
    struct timeval     tv = { 2, 0 };

    assert_int_equal(toll_store_spec_parse_line(&spec, line, 0, err,
                                                err_size), 0);

    return toll_store_connect(&spec, NULL, 0, &tv, err, err_size);
}


static toll_store_t *
test_cluster(void)
{
    char           line[128], err[512];
    toll_store_t  *st;

    snprintf(line, sizeof(line), "cluster=127.0.0.1:%d,127.0.0.1:%d",
             fake.port[0], fake.port[1]);
    st = test_connect(line, err, sizeof(err));

    if (st == NULL) {
        fail_msg("connect: %s", err);
    }

    return st;
}


static redisReply *
test_cmd(toll_store_t *st, const char *a0, const char *a1)
{
    const char  *argv[2] = { a0, a1 };
    size_t       argvlen[2];

    argvlen[0] = strlen(a0);
    argvlen[1] = a1 ? strlen(a1) : 0;

    return toll_store_command(st, a1 ? 2 : 1, argv, argvlen);
}


static void
assert_reply_str(redisReply *r, const char *s)
{
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_string_equal(r->str, s);
    freeReplyObject(r);
}


static void
test_cluster_routes(void **state)
{
    toll_store_t  *st;
    char           line[128], err[256];

    (void) state;

    fake_reset(answer_split);
    st = test_cluster();
    assert_int_equal(toll_store_kind(st), TOLL_STORE_CLUSTER);

    assert_reply_str(test_cmd(st, "GET", "foo"), "B");
    assert_reply_str(test_cmd(st, "GET", "bar"), "A");
    assert_reply_str(test_cmd(st, "GET", "x{foo}y"), "B");
    assert_int_equal(fake.slots_asked, 1);

    /* a key's connection, for a transaction */
    assert_non_null(toll_store_context_for(st, "foo", 3));
    assert_ptr_not_equal(toll_store_context_for(st, "foo", 3),
                         toll_store_context_for(st, "bar", 3));

    /* each primary in turn (SCAN), no redirection: B answers as B */
    {
        const char  *argv[2] = { "GET", "bar" };
        size_t       argvlen[2] = { 3, 3 };

        assert_int_equal(toll_store_nodes(st), 2);
        assert_reply_str(toll_store_command_node(st, 1, 2, argv, argvlen),
                         "B");
        assert_reply_str(toll_store_command_node(st, 0, 2, argv, argvlen),
                         "A");
        assert_null(toll_store_command_node(st, 2, 2, argv, argvlen));
    }

    /* keys in two slots never leave */
    {
        const char  *argv[3] = { "DEL", "foo", "bar" };
        size_t       argvlen[3] = { 3, 3, 3 };

        assert_null(toll_store_command(st, 3, argv, argvlen));
        assert_non_null(strstr(toll_store_error(st), "more than one hash"));
        assert_int_equal(toll_store_append(st, 3, argv, argvlen), -1);
    }

    toll_store_free(st);

    /* db= on a cluster is refused before any connection */
    {
        toll_store_spec_t  spec;
        struct timeval     tv = { 1, 0 };

        snprintf(line, sizeof(line), "cluster=127.0.0.1:%d", fake.port[0]);
        assert_int_equal(toll_store_spec_parse_line(&spec, line, 0, err,
                                                    sizeof(err)), 0);
        assert_null(toll_store_connect(&spec, NULL, 2, &tv, err,
                                       sizeof(err)));
        assert_non_null(strstr(err, "db= is not available"));
    }
}


/* A has every slot until it says MOVED; then B has half */
static const char *
answer_moved(int node, int argc, char **argv)
{
    static char  moved[128];

    if (fake_is(argc, argv, "CLUSTER")) {
        return (fake.slots_asked == 1) ? fake_map_a() : fake_map_ab();
    }

    if (fake_is(argc, argv, "GET") && node == 0
        && strstr(argv[1], "foo") != NULL && fake.slots_asked < 3)
    {
        snprintf(moved, sizeof(moved), "-MOVED 12182 127.0.0.1:%d\r\n",
                 fake.port[1]);
        return moved;
    }

    return answer_split(node, argc, argv);
}


static void
test_cluster_moved(void **state)
{
    toll_store_t  *st;

    (void) state;

    fake_reset(answer_moved);
    st = test_cluster();

    assert_reply_str(test_cmd(st, "GET", "foo"), "B");
    assert_int_equal(fake.slots_asked, 2);

    /* the new map is used: straight to B */
    assert_reply_str(test_cmd(st, "GET", "foo"), "B");
    assert_int_equal(fake.slots_asked, 2);

    toll_store_free(st);
}


/*
 * WAIT counts replicas that have this connection's writes: on a
 * connection that wrote nothing (toll-settle finding a claim after a
 * restart) it would count every replica connected.  A mark is written in
 * the key's slot on that same connection first.
 */
static const char *
answer_wait(int node, int argc, char **argv)
{
    if (fake_is(argc, argv, "SET")) {
        return "+OK\r\n";
    }

    if (fake_is(argc, argv, "WAIT")) {
        return ":1\r\n";
    }

    return answer_split(node, argc, argv);
}


static void
test_cluster_wait(void **state)
{
    const char    *log;
    toll_store_t  *st;

    (void) state;

    fake_reset(answer_wait);
    st = test_cluster();

    assert_int_equal(toll_store_wait(st, "toll:drain:{foo}:1", 18, 1, 50),
                     1);

    /* the mark has the key's hash tag: the same slot, on B, then WAIT */
    log = strstr(fake.log, "B:SET toll:wait:toll:drain:{foo}:1 1 PX ");
    assert_non_null(log);
    assert_non_null(strstr(log, "|B:WAIT 1 50|"));

    /* a key without a tag could put the mark elsewhere: refused */
    fake_reset(answer_wait);
    assert_int_equal(toll_store_wait(st, "toll:drain:foo", 14, 1, 50), -1);
    assert_int_equal(toll_store_wait(st, "toll:{}:foo", 11, 1, 50), -1);
    assert_string_equal(fake.log, "");

    toll_store_free(st);
}


/* B sends foo's slot to A with ASK, once per command */
static const char *
answer_ask(int node, int argc, char **argv)
{
    static char  ask[128];

    if (fake_is(argc, argv, "ASKING")) {
        return "+OK\r\n";
    }

    if (fake_is(argc, argv, "GET") && strcmp(argv[1], "foo") == 0) {
        if (node == 1) {
            snprintf(ask, sizeof(ask), "-ASK 12182 127.0.0.1:%d\r\n",
                     fake.port[0]);
            return ask;
        }

        /* A serves the slot being imported only after ASKING */
        return (strstr(fake.log, "A:ASKING|A:GET foo|") != NULL)
               ? "$8\r\nimported\r\n" : "-ERR no ASKING\r\n";
    }

    return answer_split(node, argc, argv);
}


static void
test_cluster_ask(void **state)
{
    toll_store_t  *st;

    (void) state;

    fake_reset(answer_ask);
    st = test_cluster();

    assert_reply_str(test_cmd(st, "GET", "foo"), "imported");

    /* ASK leaves the map as it was */
    assert_int_equal(fake.slots_asked, 1);
    assert_non_null(strstr(fake.log, "B:GET foo|A:ASKING|A:GET foo|"));

    toll_store_free(st);
}


static const char *
answer_unknown(int node, int argc, char **argv)
{
    if (fake_is(argc, argv, "GET") && node == 1) {
        return "-MOVED 12182 127.0.0.1:1\r\n";
    }

    return answer_split(node, argc, argv);
}


static void
test_cluster_moved_unknown(void **state)
{
    toll_store_t  *st;

    (void) state;

    fake_reset(answer_unknown);
    st = test_cluster();

    assert_null(test_cmd(st, "GET", "foo"));
    assert_non_null(strstr(toll_store_error(st),
                           "MOVED to 127.0.0.1:1, a node the cluster's map "
                           "does not name"));
    /* the map was read again before giving up */
    assert_int_equal(fake.slots_asked, 2);

    /* and the store still works */
    assert_reply_str(test_cmd(st, "GET", "bar"), "A");

    toll_store_free(st);
}


/* A sends foo to B, B to A */
static const char *
answer_loop(int node, int argc, char **argv)
{
    static char  moved[128];

    if (fake_is(argc, argv, "GET") && strcmp(argv[1], "foo") == 0) {
        snprintf(moved, sizeof(moved), "-%s 12182 127.0.0.1:%d\r\n",
                 (node == 0) ? "ASK" : "MOVED", fake.port[1 - node]);
        return moved;
    }

    return answer_split(node, argc, argv);
}


static void
test_cluster_loop(void **state)
{
    toll_store_t  *st;

    (void) state;

    fake_reset(answer_loop);
    st = test_cluster();

    assert_null(test_cmd(st, "GET", "foo"));
    assert_non_null(strstr(toll_store_error(st),
                           "more than 5 redirections"));
    assert_int_equal(fake.calls[0] + fake.calls[1] - fake.slots_asked,
                     6 + 2);                   /* 6 GETs, 2 ASKINGs */

    toll_store_free(st);
}


static const char  *answer_malformed_map;

static const char *
answer_malformed(int node, int argc, char **argv)
{
    if (fake_is(argc, argv, "CLUSTER")) {
        return answer_malformed_map;
    }

    return answer_split(node, argc, argv);
}


static void
test_cluster_malformed(void **state)
{
    size_t         i;
    char           line[128], err[512];
    toll_store_t  *st;

    static const char  *maps[] = {
        "*0\r\n",
        "-ERR This instance has cluster support disabled\r\n",
        "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\na\r\n:1\r\n",
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\na\r\n:0\r\n",
        "$5\r\nhello\r\n",
    };

    (void) state;

    snprintf(line, sizeof(line), "cluster=127.0.0.1:%d", fake.port[0]);

    for (i = 0; i < TEST_NELTS(maps); i++) {
        fake_reset(answer_malformed);
        answer_malformed_map = maps[i];
        err[0] = '\0';
        st = test_connect(line, err, sizeof(err));

        if (st != NULL) {
            fail_msg("map %zu was taken", i);
        }

        if (strstr(err, "CLUSTER SLOTS") == NULL) {
            fail_msg("map %zu: \"%s\"", i, err);
        }
    }

    /* no seed answers at all */
    snprintf(line, sizeof(line), "cluster=127.0.0.1:1,127.0.0.1:2");
    assert_null(test_connect(line, err, sizeof(err)));
    assert_non_null(strstr(err, "127.0.0.1:2"));
}


static void
test_cluster_pipeline(void **state)
{
    int            i;
    redisReply    *r;
    toll_store_t  *st;

    static const char  *keys[] = { "bar", "foo", "bar", "x{foo}", "bar" };
    static const char  *want[] = { "A", "B", "A", "B", "A" };

    (void) state;

    fake_reset(answer_moved);
    st = test_cluster();

    /* foo's MOVED in the middle: the others keep their order */
    for (i = 0; i < 5; i++) {
        const char  *argv[2] = { "GET", keys[i] };
        size_t       argvlen[2] = { 3, strlen(keys[i]) };

        assert_int_equal(toll_store_append(st, 2, argv, argvlen), 0);
    }

    for (i = 0; i < 5; i++) {
        assert_int_equal(toll_store_get_reply(st, &r), 0);
        assert_reply_str(r, want[i]);
    }

    assert_int_equal(toll_store_get_reply(st, &r), -1);

    /* replies left unread go with the next command */
    {
        const char  *argv[2] = { "GET", "foo" };
        size_t       argvlen[2] = { 3, 3 };

        assert_int_equal(toll_store_append(st, 2, argv, argvlen), 0);
        assert_int_equal(toll_store_append(st, 2, argv, argvlen), 0);
        assert_reply_str(test_cmd(st, "GET", "bar"), "A");
    }

    toll_store_free(st);
}


/* ---- sentinel ---- */

static int  sentinel_names = 0;       /* A or B */
static int  a_is_replica = 0;

static const char *
answer_sentinel(int node, int argc, char **argv)
{
    if (node == 2) {
        if (argc == 3 && strcmp(argv[2], "toll") == 0) {
            snprintf(fake.buf, sizeof(fake.buf),
                     "*2\r\n$9\r\n127.0.0.1\r\n$%d\r\n%d\r\n",
                     fake.port[sentinel_names] >= 10000 ? 5 : 4,
                     fake.port[sentinel_names]);
            return fake.buf;
        }

        return "*-1\r\n";
    }

    if (fake_is(argc, argv, "ROLE")) {
        return (node == 0 && a_is_replica)
               ? "*5\r\n$5\r\nslave\r\n$1\r\nh\r\n:1\r\n$9\r\nconnected\r\n"
                 ":1\r\n"
               : "*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n";
    }

    if (fake_is(argc, argv, "SET")) {
        if (node == 0 && a_is_replica) {
            /* the failover: the sentinel names B from now on */
            sentinel_names = 1;
            return "-READONLY You can't write against a read only "
                   "replica.\r\n";
        }

        return (node == 0) ? "+OK-A\r\n" : "+OK-B\r\n";
    }

    return answer_split(node, argc, argv);
}


static void
test_sentinel(void **state)
{
    char           line[128], err[512];
    redisReply    *r;
    toll_store_t  *st;

    (void) state;

    fake_reset(answer_sentinel);
    sentinel_names = 0;
    a_is_replica = 0;

    /* a master the sentinels do not know */
    snprintf(line, sizeof(line), "sentinel=127.0.0.1:1,127.0.0.1:%d "
             "master=other", fake.port[2]);
    assert_null(test_connect(line, err, sizeof(err)));
    assert_non_null(strstr(err, "knows no primary named \"other\""));

    snprintf(line, sizeof(line), "sentinel=127.0.0.1:1,127.0.0.1:%d "
             "master=toll", fake.port[2]);

    /* a sentinel that names a replica */
    a_is_replica = 1;
    assert_null(test_connect(line, err, sizeof(err)));
    assert_non_null(strstr(err, "is not a master"));

    a_is_replica = 0;
    st = test_connect(line, err, sizeof(err));

    if (st == NULL) {
        fail_msg("connect: %s", err);
    }

    assert_int_equal(toll_store_kind(st), TOLL_STORE_SENTINEL);

    r = test_cmd(st, "SET", "k");
    assert_non_null(r);
    assert_string_equal(r->str, "OK-A");
    freeReplyObject(r);

    /* A demoted: READONLY, the sentinels asked again, the write on B */
    a_is_replica = 1;
    r = test_cmd(st, "SET", "k");
    assert_non_null(r);
    assert_string_equal(r->str, "OK-B");
    freeReplyObject(r);

    toll_store_free(st);
}


/* A hangs up on a GET once: the map is read again, the GET sent again */
static int  hung_up = 0;

static const char *
answer_hangup(int node, int argc, char **argv)
{
    if (fake_is(argc, argv, "GET") && node == 0 && !hung_up) {
        hung_up = 1;
        return NULL;
    }

    return answer_split(node, argc, argv);
}


static void
test_cluster_lost(void **state)
{
    toll_store_t  *st;

    (void) state;

    hung_up = 0;
    fake_reset(answer_hangup);
    st = test_cluster();

    assert_reply_str(test_cmd(st, "GET", "bar"), "A");
    assert_int_equal(hung_up, 1);
    assert_int_equal(fake.slots_asked, 2);

    toll_store_free(st);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_spec_bad),
        cmocka_unit_test(test_spec_good),
        cmocka_unit_test(test_cluster_malformed),
        cmocka_unit_test(test_cluster_moved_unknown),
        cmocka_unit_test(test_cluster_loop),
        cmocka_unit_test(test_cluster_routes),
        cmocka_unit_test(test_cluster_moved),
        cmocka_unit_test(test_cluster_wait),
        cmocka_unit_test(test_cluster_ask),
        cmocka_unit_test(test_cluster_pipeline),
        cmocka_unit_test(test_cluster_lost),
        cmocka_unit_test(test_sentinel),
    };

    return cmocka_run_group_tests(tests, fake_start, fake_stop);
}
