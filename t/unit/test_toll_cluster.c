/*
 * Unit tests of lib/toll_cluster.c: hash slots, the slot of each command
 * toll sends, CLUSTER SLOTS read from recorded replies (hiredis's own
 * reader turns the RESP text into the reply it would give), MOVED and
 * ASK, a sentinel's answer; malformed input first.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "toll_cluster.h"


#define TEST_NELTS(a)   (sizeof(a) / sizeof((a)[0]))
#define TEST_ARGS_MAX   16


/*
 * Recorded from a 3-primary Redis 7.0.15 cluster on loopback
 * (redis-cli --cluster create, then "CLUSTER SLOTS" on a raw socket).
 */
static const char  test_slots_redis7[] =
    "*3\r\n"
    "*3\r\n:0\r\n:5460\r\n*4\r\n$9\r\n127.0.0.1\r\n:47101\r\n"
    "$40\r\nb14106ed1c2e8f4f52db18d97373aaa4e65b085c\r\n*0\r\n"
    "*3\r\n:5461\r\n:10922\r\n*4\r\n$9\r\n127.0.0.1\r\n:47102\r\n"
    "$40\r\n8c69b1c7afbd27f1690deea289423de94f307bc0\r\n*0\r\n"
    "*3\r\n:10923\r\n:16383\r\n*4\r\n$9\r\n127.0.0.1\r\n:47103\r\n"
    "$40\r\n136beb2cf17b4222cbeb29fdfb9dcc46949d961d\r\n*0\r\n";


/* the reply hiredis would give for text, or NULL when text is short */

static redisReply *
test_reply(const char *text, size_t len)
{
    void         *r;
    redisReader  *reader;

    reader = redisReaderCreate();
    assert_non_null(reader);
    assert_int_equal(redisReaderFeed(reader, text, len), REDIS_OK);
    assert_int_equal(redisReaderGetReply(reader, &r), REDIS_OK);
    redisReaderFree(reader);

    return r;
}


static int
test_parse(toll_cluster_map_t *map, const char *text, const char *from,
    char *err, size_t err_size)
{
    int          rc;
    redisReply  *r;

    r = test_reply(text, strlen(text));
    assert_non_null(r);
    err[0] = '\0';
    rc = toll_cluster_map_parse(map, r, from, err, err_size);
    freeReplyObject(r);

    return rc;
}


static void
assert_slots_bad(const char *text, const char *why)
{
    char                 err[256];
    toll_cluster_map_t  *map;

    map = malloc(sizeof(toll_cluster_map_t));
    assert_non_null(map);

    /* a map read before stays as it was */
    map->n = 7;
    map->slot[0] = 3;

    if (test_parse(map, text, "10.0.0.9", err, sizeof(err)) != -1) {
        fail_msg("CLUSTER SLOTS %s was taken", why);
    }

    if (err[0] == '\0') {
        fail_msg("CLUSTER SLOTS %s: no message", why);
    }

    assert_int_equal(map->n, 7);
    assert_int_equal(map->slot[0], 3);
    free(map);
}


static int
test_command(const char *line)
{
    int          argc;
    char         buf[512], *p, *save;
    size_t       lens[TEST_ARGS_MAX];
    const char  *argv[TEST_ARGS_MAX];

    snprintf(buf, sizeof(buf), "%s", line);
    argc = 0;

    for (p = strtok_r(buf, " ", &save); p != NULL;
         p = strtok_r(NULL, " ", &save))
    {
        assert_true(argc < TEST_ARGS_MAX);
        argv[argc] = p;
        lens[argc] = strlen(p);
        argc++;
    }

    return toll_cluster_command_slot(argc, argv, lens);
}


static unsigned
test_slot(const char *key)
{
    return toll_cluster_slot(key, strlen(key));
}


static void
test_slot_known(void **state)
{
    (void) state;

    /* Redis's own figures (CLUSTER KEYSLOT) */
    assert_int_equal(test_slot("foo"), 12182);
    assert_int_equal(test_slot("bar"), 5061);
    /* CRC16-XMODEM("123456789") is 0x31c3, its slot 0x31c3 mod 16384 */
    assert_int_equal(test_slot("123456789"), 0x31c3);
    assert_int_equal(test_slot("123456789"), 12739);
    assert_int_equal(test_slot(""), 0);

    /* the hash tag */
    assert_int_equal(test_slot("{user1000}.following"),
                     test_slot("{user1000}.followers"));
    assert_int_equal(test_slot("{user1000}.following"), test_slot("user1000"));
    assert_int_equal(test_slot("foo{bar}{zap}"), test_slot("bar"));
    assert_int_equal(test_slot("foo{{bar}}zap"), test_slot("{bar"));
    assert_int_equal(test_slot("toll:usage:{b1}:20250101"),
                     test_slot("toll:drain:{b1}:20250101:00ff"));

    /* an empty tag, or a "{" alone: the whole key (CLUSTER KEYSLOT's
     * figures, from Redis 7.0.15) */
    assert_int_equal(test_slot("{}"), 15257);
    assert_int_equal(test_slot("{"), 4092);
    assert_int_equal(test_slot("foo{}{bar}"), 8363);
    assert_int_equal(test_slot("foo{bar"), 15278);
    assert_int_equal(test_slot("a{b"), 13340);
    assert_int_equal(test_slot("foo{{bar}}zap"), 4015);
    assert_int_equal(test_slot("}{"), 12793);
    assert_int_equal(test_slot("{a}{b}"), test_slot("a"));
    assert_int_equal(test_slot("{a}{b}"), 15495);

    /* a key with a NUL is hashed whole, by its length */
    assert_true(toll_cluster_slot("a\0b", 3) != toll_cluster_slot("a", 1));
}


static void
test_command_slots(void **state)
{
    size_t  i;

    static const char  *one_key[] = {
        "HGET", "HMGET", "HGETALL", "HSET", "HMSET", "HDEL", "HINCRBY",
        "HEXISTS", "HSETNX", "HKEYS", "HLEN", "SADD", "SREM", "SMEMBERS",
        "SISMEMBER", "SCARD", "SRANDMEMBER", "SSCAN", "ZADD", "ZREM",
        "ZSCORE", "ZRANGE", "ZRANGEBYSCORE", "ZCARD", "GET", "SET", "INCR",
        "INCRBY", "EXPIRE", "PEXPIRE", "TTL", "PTTL", "TYPE", "LPUSH",
        "RPUSH", "LRANGE", "LLEN", "hget", "HgetAll", "SOMETHINGNEW"
    };

    static const char  *no_key[] = {
        "PING", "SCRIPT LOAD x", "WAIT 1 100", "INFO replication", "MULTI",
        "EXEC", "DISCARD", "UNWATCH", "ASKING", "AUTH pw", "SELECT 2",
        "CLUSTER SLOTS", "SENTINEL get-master-addr-by-name toll",
        "CLIENT SETNAME x", "TIME", "DBSIZE", "ROLE", "SCAN 0 MATCH x",
        "ping", "select 3", "NOSUCH", "", "HGET", "EVAL s", "EVAL s x k",
        "EVAL s 2 k", "EVAL s -1 k", "EVALSHA s 123456 k", "EVAL s 0 a b"
    };

    char  line[128];

    (void) state;

    for (i = 0; i < TEST_NELTS(one_key); i++) {
        snprintf(line, sizeof(line), "%s toll:key:{k1} f v", one_key[i]);

        if (test_command(line) != (int) test_slot("k1")) {
            fail_msg("%s: not the slot of its key", line);
        }
    }

    for (i = 0; i < TEST_NELTS(no_key); i++) {
        if (test_command(no_key[i]) != TOLL_CLUSTER_ANY) {
            fail_msg("\"%s\": not any node", no_key[i]);
        }
    }

    /* EVAL: keys after numkeys, the arguments after them ignored */
    assert_int_equal(test_command("EVAL s 1 toll:a:{b1} toll:x:{other}"),
                     test_slot("b1"));
    assert_int_equal(test_command("evalsha s 2 toll:a:{b1} toll:c:{b1} z"),
                     test_slot("b1"));
    assert_int_equal(test_command("EVALSHA s 2 toll:a:{b1} toll:c:{b2}"),
                     TOLL_CLUSTER_CROSSSLOT);

    /* every argument a key */
    assert_int_equal(test_command("DEL {a}1 {a}2 {a}3"), test_slot("a"));
    assert_int_equal(test_command("DEL {a}1 {a}2 {b}3"),
                     TOLL_CLUSTER_CROSSSLOT);
    assert_int_equal(test_command("EXISTS {a}1 {b}"), TOLL_CLUSTER_CROSSSLOT);
    assert_int_equal(test_command("UNLINK {a}1"), test_slot("a"));
    assert_int_equal(test_command("WATCH {a}1 {a}x"), test_slot("a"));
    assert_int_equal(test_command("WATCH {a}1 {c}x"), TOLL_CLUSTER_CROSSSLOT);
    assert_int_equal(test_command("MGET {a}1 {c}x"), TOLL_CLUSTER_CROSSSLOT);
    assert_int_equal(test_command("DEL"), TOLL_CLUSTER_ANY);

    /* RENAME: both names; MSET: every other argument */
    assert_int_equal(test_command("RENAME {a}1 {a}2"), test_slot("a"));
    assert_int_equal(test_command("RENAME {a}1 {b}2"),
                     TOLL_CLUSTER_CROSSSLOT);
    assert_int_equal(test_command("MSET {a}1 {z} {a}2 {y}"), test_slot("a"));
    assert_int_equal(test_command("MSET {a}1 v {b}2 v"),
                     TOLL_CLUSTER_CROSSSLOT);
}


static void
test_slots_recorded(void **state)
{
    char                  err[256];
    toll_cluster_map_t   *map;
    const toll_cluster_node_t  *n;

    (void) state;

    map = malloc(sizeof(toll_cluster_map_t));
    assert_non_null(map);

    assert_int_equal(test_parse(map, test_slots_redis7, "127.0.0.1", err,
                                sizeof(err)), 0);
    assert_int_equal(map->n, 3);

    n = toll_cluster_map_node(map, 0);
    assert_non_null(n);
    assert_string_equal(n->host, "127.0.0.1");
    assert_int_equal(n->port, 47101);
    assert_ptr_equal(toll_cluster_map_node(map, 5460), n);

    n = toll_cluster_map_node(map, 5461);
    assert_int_equal(n->port, 47102);
    assert_int_equal(toll_cluster_map_node(map, 10922)->port, 47102);
    assert_int_equal(toll_cluster_map_node(map, 10923)->port, 47103);
    assert_int_equal(toll_cluster_map_node(map, 16383)->port, 47103);
    assert_int_equal(toll_cluster_map_node(map, test_slot("foo"))->port,
                     47103);
    assert_null(toll_cluster_map_node(map, 16384));

    free(map);
}


static void
test_slots_shapes(void **state)
{
    char                 err[256];
    toll_cluster_map_t  *map;

    (void) state;

    map = malloc(sizeof(toll_cluster_map_t));
    assert_non_null(map);

    /* "" and "?": the node that answered; replicas; one node, two ranges;
     * slots no range names */
    assert_int_equal(test_parse(map,
        "*3\r\n"
        "*4\r\n:0\r\n:99\r\n*2\r\n$0\r\n\r\n:7000\r\n"
        "*3\r\n$8\r\nreplica1\r\n:7100\r\n$2\r\nid\r\n"
        "*3\r\n:200\r\n:299\r\n*3\r\n$1\r\n?\r\n:7000\r\n$2\r\nid\r\n"
        "*3\r\n:16383\r\n:16383\r\n*2\r\n$3\r\n::1\r\n:7001\r\n",
        "10.0.0.9", err, sizeof(err)), 0);
    assert_int_equal(map->n, 2);
    assert_string_equal(toll_cluster_map_node(map, 0)->host, "10.0.0.9");
    assert_int_equal(toll_cluster_map_node(map, 0)->port, 7000);
    assert_ptr_equal(toll_cluster_map_node(map, 250),
                     toll_cluster_map_node(map, 99));
    assert_null(toll_cluster_map_node(map, 100));
    assert_null(toll_cluster_map_node(map, 16382));
    assert_string_equal(toll_cluster_map_node(map, 16383)->host, "::1");
    assert_int_equal(map->slot[150], TOLL_CLUSTER_NO_NODE);

    free(map);
}


static void
test_slots_malformed(void **state)
{
    int      i;
    char    *big, *p;
    size_t   size;
    char     host[300];

    (void) state;

    assert_slots_bad("$5\r\nhello\r\n", "a string");
    assert_slots_bad(":1\r\n", "an integer");
    assert_slots_bad("-ERR This instance has cluster support disabled\r\n",
                     "an error");
    assert_slots_bad("*0\r\n", "empty");
    assert_slots_bad("*1\r\n:1\r\n", "an integer for a range");
    assert_slots_bad("*1\r\n*2\r\n:0\r\n:1\r\n", "a range without node");
    assert_slots_bad("*1\r\n*3\r\n$1\r\n0\r\n:1\r\n*2\r\n$1\r\na\r\n:1\r\n",
                     "a string for a slot");
    assert_slots_bad("*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\na\r\n:1\r\n",
                     "slot 16384");
    assert_slots_bad("*1\r\n*3\r\n:-1\r\n:5\r\n*2\r\n$1\r\na\r\n:1\r\n",
                     "slot -1");
    assert_slots_bad("*1\r\n*3\r\n:9\r\n:5\r\n*2\r\n$1\r\na\r\n:1\r\n",
                     "a backward range");
    assert_slots_bad("*2\r\n*3\r\n:0\r\n:10\r\n*2\r\n$1\r\na\r\n:1\r\n"
                     "*3\r\n:10\r\n:20\r\n*2\r\n$1\r\nb\r\n:1\r\n",
                     "overlapping ranges");
    assert_slots_bad("*2\r\n*3\r\n:0\r\n:10\r\n*2\r\n$1\r\na\r\n:1\r\n"
                     "*3\r\n:0\r\n:10\r\n*2\r\n$1\r\na\r\n:1\r\n",
                     "one range twice");
    assert_slots_bad("*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n:7\r\n:1\r\n",
                     "an integer for a host");
    assert_slots_bad("*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\na\r\n$4\r\n6379\r\n",
                     "a string for a port");
    assert_slots_bad("*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\na\r\n:0\r\n",
                     "port 0");
    assert_slots_bad("*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\na\r\n:65536\r\n",
                     "port 65536");
    assert_slots_bad("*1\r\n*3\r\n:0\r\n:1\r\n*1\r\n$1\r\na\r\n",
                     "a node without port");
    assert_slots_bad("*1\r\n*3\r\n:0\r\n:1\r\n$1\r\na\r\n", "a string node");
    assert_slots_bad("*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$3\r\na b\r\n:1\r\n",
                     "a host with a blank");
    {
        char                 err[128];
        toll_cluster_map_t  *map;
        redisReply          *r;
        static const char    t[] = "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n"
                                   "$3\r\na\0b\r\n:1\r\n";

        /* a host with a NUL */
        map = malloc(sizeof(toll_cluster_map_t));
        r = test_reply(t, sizeof(t) - 1);
        assert_non_null(r);
        assert_int_equal(toll_cluster_map_parse(map, r, "a", err,
                                                sizeof(err)), -1);
        freeReplyObject(r);
        free(map);
    }
    assert_slots_bad("*1\r\n*4\r\n:0\r\n:1\r\n*2\r\n$1\r\na\r\n:1\r\n:5\r\n",
                     "an integer for a replica");
    assert_slots_bad("*1\r\n*3\r\n:0\r\n:1\r\n*-1\r\n", "a nil node");

    /* a host of 256 bytes; 255 is taken */
    memset(host, 'h', 256);
    big = malloc(1024);
    assert_non_null(big);
    snprintf(big, 1024, "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$256\r\n%.256s\r\n"
             ":1\r\n", host);
    assert_slots_bad(big, "a host of 256 bytes");

    /* "?" with no host of the answering node to stand for */
    {
        char                 err[128];
        toll_cluster_map_t  *map;
        redisReply          *r;
        const char          *t = "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\n?\r\n"
                                 ":1\r\n";

        map = malloc(sizeof(toll_cluster_map_t));
        r = test_reply(t, strlen(t));
        assert_int_equal(toll_cluster_map_parse(map, r, NULL, err,
                                                sizeof(err)), -1);
        assert_int_equal(toll_cluster_map_parse(map, NULL, "a", err,
                                                sizeof(err)), -1);
        freeReplyObject(r);

        snprintf(big, 1024, "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$255\r\n%.255s\r\n"
                 ":1\r\n", host);
        r = test_reply(big, strlen(big));
        assert_int_equal(toll_cluster_map_parse(map, r, "a", err,
                                                sizeof(err)), 0);
        assert_int_equal(strlen(toll_cluster_map_node(map, 1)->host), 255);
        freeReplyObject(r);
        free(map);
    }

    free(big);

    /* 64 primaries are taken, 65 refused */
    size = 65 * 128 + 64;
    big = malloc(size);
    if (big == NULL) {
        /* an if, not cmocka's assert: gcc cannot see that it returns not */
        fail_msg("out of memory");
        return;
    }

    for (i = 64; i <= 65; i++) {
        int  k;

        p = big + sprintf(big, "*%d\r\n", i);

        for (k = 0; k < i; k++) {
            p += sprintf(p, "*3\r\n:%d\r\n:%d\r\n*2\r\n$8\r\nnode%04d\r\n"
                         ":6379\r\n", k * 10, k * 10 + 9, k);
        }

        if (i == 65) {
            assert_slots_bad(big, "65 primaries");

        } else {
            char                 err[128];
            toll_cluster_map_t  *map;

            map = malloc(sizeof(toll_cluster_map_t));
            assert_int_equal(test_parse(map, big, "a", err, sizeof(err)), 0);
            assert_int_equal(map->n, 64);
            assert_string_equal(toll_cluster_map_node(map, 639)->host,
                                "node0063");
            free(map);
        }
    }

    free(big);
}


static void
test_slots_truncated(void **state)
{
    size_t       len;
    redisReply  *r;

    (void) state;

    /* a reply cut short is no reply: the reader waits for the rest, and
     * the caller has nothing to parse */
    for (len = 1; len < sizeof(test_slots_redis7) - 1; len++) {
        r = test_reply(test_slots_redis7, len);

        if (r != NULL) {
            fail_msg("a reply of %zu bytes out of %zu", len,
                     sizeof(test_slots_redis7) - 1);
        }
    }
}


static int
test_redirect(const char *s, unsigned *slot, toll_cluster_node_t *to)
{
    return toll_cluster_redirect(s, strlen(s), slot, to);
}


static void
test_redirects(void **state)
{
    size_t               i;
    unsigned             slot;
    toll_cluster_node_t  to;

    static const char  *bad[] = {
        "MOVED", "MOVED ", "MOVED 3999", "MOVED 3999 ", "MOVED x 1.2.3.4:1",
        "MOVED 16384 h:1", "MOVED 99999 h:1", "MOVED 000001 h:1",
        "MOVED -1 h:1", "MOVED 3999 h", "MOVED 3999 h:", "MOVED 3999 :1",
        "MOVED 3999 h:0", "MOVED 3999 h:65536", "MOVED 3999 h:1x",
        "MOVED 3999 h:1 ", "MOVED 3999  h:1", "MOVED 3999 h h:1",
        "MOVED 3999 [::1]", "MOVED 3999 [::1]:", "MOVED 3999 [::1:1",
        "MOVED 3999 []:1", "ASK 3999", "ASK 1 h/x:1", "MOVED 3999\th:1"
    };

    static const char  *none[] = {
        "ERR unknown command", "MOVE 1 h:1", "moved 1 h:1", "ASKING",
        "NOSCRIPT", "READONLY You can't write against a read only replica.",
        "", "TRYAGAIN"
    };

    (void) state;

    for (i = 0; i < TEST_NELTS(bad); i++) {
        if (test_redirect(bad[i], &slot, &to) != -1) {
            fail_msg("\"%s\" was taken", bad[i]);
        }
    }

    for (i = 0; i < TEST_NELTS(none); i++) {
        if (test_redirect(none[i], &slot, &to) != 0) {
            fail_msg("\"%s\" is no redirection", none[i]);
        }
    }

    /* a host of 256 bytes */
    {
        char  buf[300];

        memset(buf, 'h', sizeof(buf));
        memcpy(buf, "MOVED 1 ", 8);
        memcpy(buf + 8 + 256, ":1", 3);
        assert_int_equal(test_redirect(buf, &slot, &to), -1);
        memcpy(buf + 8 + 255, ":1", 3);
        assert_int_equal(test_redirect(buf, &slot, &to), TOLL_CLUSTER_MOVED);
        assert_int_equal(strlen(to.host), 255);
    }

    assert_int_equal(test_redirect("MOVED 3999 127.0.0.1:6381", &slot, &to),
                     TOLL_CLUSTER_MOVED);
    assert_int_equal(slot, 3999);
    assert_string_equal(to.host, "127.0.0.1");
    assert_int_equal(to.port, 6381);

    assert_int_equal(test_redirect("ASK 0 redis-2.lan:7000", &slot, &to),
                     TOLL_CLUSTER_ASK);
    assert_int_equal(slot, 0);
    assert_string_equal(to.host, "redis-2.lan");
    assert_int_equal(to.port, 7000);

    assert_int_equal(test_redirect("MOVED 16383 [fe80::1]:7001", &slot, &to),
                     TOLL_CLUSTER_MOVED);
    assert_int_equal(slot, 16383);
    assert_string_equal(to.host, "fe80::1");
    assert_int_equal(to.port, 7001);

    /* a bare IPv6 literal: the last colon is the port's */
    assert_int_equal(test_redirect("ASK 12 ::1:7002", &slot, &to),
                     TOLL_CLUSTER_ASK);
    assert_string_equal(to.host, "::1");
    assert_int_equal(to.port, 7002);

    /* the length is the reply's: nothing read past it */
    assert_int_equal(toll_cluster_redirect("MOVED 1 h:12345", 13, &slot, &to),
                     TOLL_CLUSTER_MOVED);
    assert_int_equal(to.port, 123);
}


static void
test_sentinel(void **state)
{
    size_t               i;
    redisReply          *r;
    toll_cluster_node_t  to;

    static const char  *bad[] = {
        "*-1\r\n", "$-1\r\n", "*0\r\n", "*1\r\n$1\r\na\r\n",
        "*3\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\n1\r\n",
        "*2\r\n$1\r\na\r\n:6379\r\n", "*2\r\n:1\r\n$4\r\n6379\r\n",
        "*2\r\n$0\r\n\r\n$4\r\n6379\r\n", "*2\r\n$1\r\na\r\n$1\r\n0\r\n",
        "*2\r\n$1\r\na\r\n$5\r\n65536\r\n", "*2\r\n$1\r\na\r\n$2\r\n1x\r\n",
        "*2\r\n$1\r\na\r\n$0\r\n\r\n", "*2\r\n$3\r\na b\r\n$1\r\n1\r\n",
        "-ERR No such master with that name\r\n", "+OK\r\n",
        "*2\r\n*0\r\n$1\r\n1\r\n"
    };
    static const char   good[] = "*2\r\n$9\r\n127.0.0.1\r\n$5\r\n47201\r\n";

    (void) state;

    assert_int_equal(toll_sentinel_primary(NULL, &to), -1);

    for (i = 0; i < TEST_NELTS(bad); i++) {
        r = test_reply(bad[i], strlen(bad[i]));
        assert_non_null(r);

        if (toll_sentinel_primary(r, &to) != -1) {
            fail_msg("sentinel reply %zu was taken", i);
        }

        freeReplyObject(r);
    }

    r = test_reply(good, sizeof(good) - 1);
    assert_non_null(r);
    assert_int_equal(toll_sentinel_primary(r, &to), 0);
    assert_string_equal(to.host, "127.0.0.1");
    assert_int_equal(to.port, 47201);
    freeReplyObject(r);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_slots_malformed),
        cmocka_unit_test(test_slots_truncated),
        cmocka_unit_test(test_redirects),
        cmocka_unit_test(test_sentinel),
        cmocka_unit_test(test_slot_known),
        cmocka_unit_test(test_command_slots),
        cmocka_unit_test(test_slots_recorded),
        cmocka_unit_test(test_slots_shapes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
