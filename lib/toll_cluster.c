/*
 * toll: a Redis Cluster's and a Sentinel's rules, pure (toll_cluster.h).
 */

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "toll_cluster.h"


/* how a command names its keys */
typedef enum {
    TOLL_CLUSTER_KEYS_NONE = 0,         /* no key: any node */
    TOLL_CLUSTER_KEYS_FIRST,            /* argv[1] */
    TOLL_CLUSTER_KEYS_TWO,              /* argv[1] and argv[2] (RENAME) */
    TOLL_CLUSTER_KEYS_ALL,              /* every argument */
    TOLL_CLUSTER_KEYS_PAIRS,            /* argv[1], argv[3]... (MSET) */
    TOLL_CLUSTER_KEYS_EVAL              /* numkeys at argv[2], then keys */
} toll_cluster_keys_e;


typedef struct {
    const char           *name;
    toll_cluster_keys_e   keys;
} toll_cluster_cmd_t;


/*
 * Every command toll-settle, tollctl and the module send (grep
 * src/ settle/ ctl/ lib/ for them), and the few an operator's tooling
 * may add.  A command not listed with two arguments or more is taken to
 * have its key at argv[1], as nearly every Redis command has: the one
 * rule that routes a command this table forgot to the right node.
 * SCAN has no key: a cluster is scanned one primary at a time, by the
 * caller.
 */
static const toll_cluster_cmd_t  toll_cluster_cmds[] = {
    { "EVAL",          TOLL_CLUSTER_KEYS_EVAL },
    { "EVALSHA",       TOLL_CLUSTER_KEYS_EVAL },
    { "EVAL_RO",       TOLL_CLUSTER_KEYS_EVAL },
    { "EVALSHA_RO",    TOLL_CLUSTER_KEYS_EVAL },

    { "RENAME",        TOLL_CLUSTER_KEYS_TWO },
    { "RENAMENX",      TOLL_CLUSTER_KEYS_TWO },

    { "DEL",           TOLL_CLUSTER_KEYS_ALL },
    { "EXISTS",        TOLL_CLUSTER_KEYS_ALL },
    { "UNLINK",        TOLL_CLUSTER_KEYS_ALL },
    { "WATCH",         TOLL_CLUSTER_KEYS_ALL },
    { "MGET",          TOLL_CLUSTER_KEYS_ALL },
    { "TOUCH",         TOLL_CLUSTER_KEYS_ALL },
    { "MSET",          TOLL_CLUSTER_KEYS_PAIRS },

    { "PING",          TOLL_CLUSTER_KEYS_NONE },
    { "ECHO",          TOLL_CLUSTER_KEYS_NONE },
    { "SCRIPT",        TOLL_CLUSTER_KEYS_NONE },
    { "WAIT",          TOLL_CLUSTER_KEYS_NONE },
    { "INFO",          TOLL_CLUSTER_KEYS_NONE },
    { "MULTI",         TOLL_CLUSTER_KEYS_NONE },
    { "EXEC",          TOLL_CLUSTER_KEYS_NONE },
    { "DISCARD",       TOLL_CLUSTER_KEYS_NONE },
    { "UNWATCH",       TOLL_CLUSTER_KEYS_NONE },
    { "ASKING",        TOLL_CLUSTER_KEYS_NONE },
    { "AUTH",          TOLL_CLUSTER_KEYS_NONE },
    { "HELLO",         TOLL_CLUSTER_KEYS_NONE },
    { "SELECT",        TOLL_CLUSTER_KEYS_NONE },
    { "CLUSTER",       TOLL_CLUSTER_KEYS_NONE },
    { "SENTINEL",      TOLL_CLUSTER_KEYS_NONE },
    { "CLIENT",        TOLL_CLUSTER_KEYS_NONE },
    { "TIME",          TOLL_CLUSTER_KEYS_NONE },
    { "DBSIZE",        TOLL_CLUSTER_KEYS_NONE },
    { "ROLE",          TOLL_CLUSTER_KEYS_NONE },
    { "SCAN",          TOLL_CLUSTER_KEYS_NONE },
    { "KEYS",          TOLL_CLUSTER_KEYS_NONE },
    { "READONLY",      TOLL_CLUSTER_KEYS_NONE },
    { "READWRITE",     TOLL_CLUSTER_KEYS_NONE },
    { "CONFIG",        TOLL_CLUSTER_KEYS_NONE },
    { "COMMAND",       TOLL_CLUSTER_KEYS_NONE },
    { "FLUSHALL",      TOLL_CLUSTER_KEYS_NONE },
    { "FLUSHDB",       TOLL_CLUSTER_KEYS_NONE },
    { "QUIT",          TOLL_CLUSTER_KEYS_NONE },

    /* one key at argv[1]: listed so that the table says what toll sends,
     * though the rule for an unknown command routes them alike */
    { "GET",           TOLL_CLUSTER_KEYS_FIRST },
    { "SET",           TOLL_CLUSTER_KEYS_FIRST },
    { "INCR",          TOLL_CLUSTER_KEYS_FIRST },
    { "INCRBY",        TOLL_CLUSTER_KEYS_FIRST },
    { "EXPIRE",        TOLL_CLUSTER_KEYS_FIRST },
    { "PEXPIRE",       TOLL_CLUSTER_KEYS_FIRST },
    { "TTL",           TOLL_CLUSTER_KEYS_FIRST },
    { "PTTL",          TOLL_CLUSTER_KEYS_FIRST },
    { "TYPE",          TOLL_CLUSTER_KEYS_FIRST },
    { "HGET",          TOLL_CLUSTER_KEYS_FIRST },
    { "HMGET",         TOLL_CLUSTER_KEYS_FIRST },
    { "HGETALL",       TOLL_CLUSTER_KEYS_FIRST },
    { "HKEYS",         TOLL_CLUSTER_KEYS_FIRST },
    { "HLEN",          TOLL_CLUSTER_KEYS_FIRST },
    { "HSET",          TOLL_CLUSTER_KEYS_FIRST },
    { "HMSET",         TOLL_CLUSTER_KEYS_FIRST },
    { "HDEL",          TOLL_CLUSTER_KEYS_FIRST },
    { "HINCRBY",       TOLL_CLUSTER_KEYS_FIRST },
    { "HEXISTS",       TOLL_CLUSTER_KEYS_FIRST },
    { "HSETNX",        TOLL_CLUSTER_KEYS_FIRST },
    { "SADD",          TOLL_CLUSTER_KEYS_FIRST },
    { "SREM",          TOLL_CLUSTER_KEYS_FIRST },
    { "SMEMBERS",      TOLL_CLUSTER_KEYS_FIRST },
    { "SISMEMBER",     TOLL_CLUSTER_KEYS_FIRST },
    { "SCARD",         TOLL_CLUSTER_KEYS_FIRST },
    { "SRANDMEMBER",   TOLL_CLUSTER_KEYS_FIRST },
    { "SSCAN",         TOLL_CLUSTER_KEYS_FIRST },
    { "HSCAN",         TOLL_CLUSTER_KEYS_FIRST },
    { "ZADD",          TOLL_CLUSTER_KEYS_FIRST },
    { "ZREM",          TOLL_CLUSTER_KEYS_FIRST },
    { "ZSCORE",        TOLL_CLUSTER_KEYS_FIRST },
    { "ZRANGE",        TOLL_CLUSTER_KEYS_FIRST },
    { "ZRANGEBYSCORE", TOLL_CLUSTER_KEYS_FIRST },
    { "ZCARD",         TOLL_CLUSTER_KEYS_FIRST },
    { "LPUSH",         TOLL_CLUSTER_KEYS_FIRST },
    { "RPUSH",         TOLL_CLUSTER_KEYS_FIRST },
    { "LRANGE",        TOLL_CLUSTER_KEYS_FIRST },
    { "LLEN",          TOLL_CLUSTER_KEYS_FIRST }
};


static const toll_cluster_cmd_t *toll_cluster_cmd(const char *name,
    size_t len);
static int toll_cluster_keys_slot(int from, int to, int step,
    const char **argv, const size_t *argvlen);
static int toll_cluster_host_valid(const char *host, size_t len);
static int toll_cluster_port(const char *p, size_t len);
static int toll_cluster_entry(const redisReply *e, const char *from_host,
    unsigned *start, unsigned *end, const char **host, size_t *hlen,
    int *port, char *err, size_t err_size);
static int toll_cluster_node_find(const toll_cluster_node_t *nodes,
    unsigned n, const char *host, size_t hlen, int port);


/* CRC16-CCITT as XMODEM computes it: polynomial 0x1021, init 0, no
 * reflection; bit by bit, since a key is tens of bytes */

static uint16_t
toll_cluster_crc16(const char *p, size_t len)
{
    size_t    i;
    unsigned  bit;
    uint16_t  crc;

    crc = 0;

    for (i = 0; i < len; i++) {
        crc ^= (uint16_t) ((unsigned char) p[i] << 8);

        for (bit = 0; bit < 8; bit++) {
            crc = (crc & 0x8000) ? (uint16_t) ((crc << 1) ^ 0x1021)
                                 : (uint16_t) (crc << 1);
        }
    }

    return crc;
}


unsigned
toll_cluster_slot(const char *key, size_t len)
{
    size_t  s, e;

    /* the first "{", then the first "}" after it; an empty tag "{}"
     * hashes the whole key, as does a "{" with no "}" */
    for (s = 0; s < len; s++) {
        if (key[s] == '{') {
            break;
        }
    }

    if (s < len) {
        for (e = s + 1; e < len; e++) {
            if (key[e] == '}') {
                break;
            }
        }

        if (e < len && e > s + 1) {
            key += s + 1;
            len = e - s - 1;
        }
    }

    return toll_cluster_crc16(key, len) & (TOLL_CLUSTER_SLOTS - 1);
}


int
toll_cluster_command_slot(int argc, const char **argv,
    const size_t *argvlen)
{
    size_t                     i;
    int                        numkeys;
    const toll_cluster_cmd_t  *cmd;

    if (argc < 1) {
        return TOLL_CLUSTER_ANY;
    }

    cmd = toll_cluster_cmd(argv[0], argvlen[0]);

    if (cmd == NULL) {
        /* an unknown command: its key, if it has one, at argv[1] */
        return (argc >= 2) ? (int) toll_cluster_slot(argv[1], argvlen[1])
                           : TOLL_CLUSTER_ANY;
    }

    switch (cmd->keys) {

    case TOLL_CLUSTER_KEYS_NONE:
        return TOLL_CLUSTER_ANY;

    case TOLL_CLUSTER_KEYS_FIRST:
        return toll_cluster_keys_slot(1, (argc >= 2) ? 2 : 1, 1, argv,
                                      argvlen);

    case TOLL_CLUSTER_KEYS_TWO:
        return toll_cluster_keys_slot(1, (argc >= 3) ? 3 : argc, 1, argv,
                                      argvlen);

    case TOLL_CLUSTER_KEYS_ALL:
        return toll_cluster_keys_slot(1, argc, 1, argv, argvlen);

    case TOLL_CLUSTER_KEYS_PAIRS:
        return toll_cluster_keys_slot(1, argc, 2, argv, argvlen);

    default: /* TOLL_CLUSTER_KEYS_EVAL */
        break;
    }

    /*
     * numkeys: digits only; a malformed count or one beyond the
     * arguments goes anywhere, and Redis refuses it there
     */
    if (argc < 3 || argvlen[2] == 0 || argvlen[2] > 5) {
        return TOLL_CLUSTER_ANY;
    }

    numkeys = 0;

    for (i = 0; i < argvlen[2]; i++) {
        if (argv[2][i] < '0' || argv[2][i] > '9') {
            return TOLL_CLUSTER_ANY;
        }

        numkeys = numkeys * 10 + (argv[2][i] - '0');
    }

    if (numkeys > argc - 3) {
        return TOLL_CLUSTER_ANY;
    }

    return toll_cluster_keys_slot(3, 3 + numkeys, 1, argv, argvlen);
}


int
toll_cluster_map_parse(toll_cluster_map_t *map, const redisReply *r,
    const char *from_host, char *err, size_t err_size)
{
    int                   port, k;
    size_t                i, hlen;
    unsigned              s, start, end, n;
    const char           *host;
    toll_cluster_node_t   nodes[TOLL_CLUSTER_NODES_MAX];
    uint8_t               seen[TOLL_CLUSTER_SLOTS / 8];

    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        snprintf(err, err_size, "CLUSTER SLOTS did not answer an array");
        return -1;
    }

    if (r->elements == 0) {
        snprintf(err, err_size, "CLUSTER SLOTS names no slot: the cluster "
                 "has none assigned");
        return -1;
    }

    /*
     * Checked whole before *map is written: a caller's good map survives
     * a malformed reply.
     */
    memset(seen, 0, sizeof(seen));
    n = 0;

    for (i = 0; i < r->elements; i++) {
        if (toll_cluster_entry(r->element[i], from_host, &start, &end,
                               &host, &hlen, &port, err, err_size)
            != 0)
        {
            return -1;
        }

        for (s = start; s <= end; s++) {
            if (seen[s >> 3] & (1u << (s & 7))) {
                snprintf(err, err_size, "CLUSTER SLOTS names slot %u in two "
                         "ranges", s);
                return -1;
            }

            seen[s >> 3] |= (uint8_t) (1u << (s & 7));
        }

        if (toll_cluster_node_find(nodes, n, host, hlen, port) >= 0) {
            continue;
        }

        if (n == TOLL_CLUSTER_NODES_MAX) {
            snprintf(err, err_size, "CLUSTER SLOTS names more than %d "
                     "primaries", TOLL_CLUSTER_NODES_MAX);
            return -1;
        }

        memcpy(nodes[n].host, host, hlen);
        nodes[n].host[hlen] = '\0';
        nodes[n].port = port;
        n++;
    }

    for (s = 0; s < TOLL_CLUSTER_SLOTS; s++) {
        map->slot[s] = TOLL_CLUSTER_NO_NODE;
    }

    memcpy(map->nodes, nodes, n * sizeof(toll_cluster_node_t));
    map->n = n;

    for (i = 0; i < r->elements; i++) {
        (void) toll_cluster_entry(r->element[i], from_host, &start, &end,
                                  &host, &hlen, &port, err, err_size);
        k = toll_cluster_node_find(nodes, n, host, hlen, port);

        for (s = start; s <= end; s++) {
            map->slot[s] = (uint16_t) k;
        }
    }

    return 0;
}


const toll_cluster_node_t *
toll_cluster_map_node(const toll_cluster_map_t *map, unsigned slot)
{
    if (slot >= TOLL_CLUSTER_SLOTS || map->slot[slot] >= map->n) {
        return NULL;
    }

    return &map->nodes[map->slot[slot]];
}


int
toll_cluster_redirect(const char *str, size_t len, unsigned *slot,
    toll_cluster_node_t *to)
{
    int          rc, port;
    size_t       i, n;
    unsigned     s;
    const char  *p, *last, *host, *end, *colon;

    /* "MOVED" or "ASK" as a word of its own ("ASKING" is not one) */
    if (len >= 5 && memcmp(str, "MOVED", 5) == 0
        && (len == 5 || str[5] == ' '))
    {
        rc = TOLL_CLUSTER_MOVED;
        p = str + 5;

    } else if (len >= 3 && memcmp(str, "ASK", 3) == 0
               && (len == 3 || str[3] == ' '))
    {
        rc = TOLL_CLUSTER_ASK;
        p = str + 3;

    } else {
        return 0;
    }

    last = str + len;

    if (p == last) {
        return -1;
    }

    p++;

    /* the slot: 1 to 5 digits, below 16384 */
    s = 0;

    for (n = 0; p + n < last && p[n] >= '0' && p[n] <= '9'; n++) {
        if (n == 5) {
            return -1;
        }

        s = s * 10 + (unsigned) (p[n] - '0');
    }

    if (n == 0 || s >= TOLL_CLUSTER_SLOTS || p + n == last || p[n] != ' ') {
        return -1;
    }

    p += n + 1;

    /* "[V6]:PORT", or HOST:PORT with the last colon the port's */
    if (p < last && *p == '[') {
        host = p + 1;
        end = memchr(host, ']', (size_t) (last - host));

        if (end == NULL || end + 1 == last || end[1] != ':') {
            return -1;
        }

        colon = end + 1;

    } else {
        host = p;
        colon = NULL;

        for (i = 0; p + i < last; i++) {
            if (p[i] == ':') {
                colon = p + i;
            }
        }

        if (colon == NULL) {
            return -1;
        }

        end = colon;
    }

    port = toll_cluster_port(colon + 1, (size_t) (last - colon - 1));

    if (port < 0 || toll_cluster_host_valid(host, (size_t) (end - host))
                    != 0)
    {
        return -1;
    }

    memcpy(to->host, host, (size_t) (end - host));
    to->host[end - host] = '\0';
    to->port = port;
    *slot = s;

    return rc;
}


int
toll_sentinel_primary(const redisReply *r, toll_cluster_node_t *to)
{
    int                port;
    const redisReply  *h, *p;

    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        return -1;
    }

    h = r->element[0];
    p = r->element[1];

    if (h->type != REDIS_REPLY_STRING || p->type != REDIS_REPLY_STRING
        || toll_cluster_host_valid(h->str, h->len) != 0)
    {
        return -1;
    }

    port = toll_cluster_port(p->str, p->len);

    if (port < 0) {
        return -1;
    }

    memcpy(to->host, h->str, h->len);
    to->host[h->len] = '\0';
    to->port = port;

    return 0;
}


static const toll_cluster_cmd_t *
toll_cluster_cmd(const char *name, size_t len)
{
    size_t  i;

    for (i = 0; i < sizeof(toll_cluster_cmds) / sizeof(toll_cluster_cmds[0]);
         i++)
    {
        if (strlen(toll_cluster_cmds[i].name) == len
            && strncasecmp(toll_cluster_cmds[i].name, name, len) == 0)
        {
            return &toll_cluster_cmds[i];
        }
    }

    return NULL;
}


/* the one slot of argv[from], argv[from + step]... below to */

static int
toll_cluster_keys_slot(int from, int to, int step, const char **argv,
    const size_t *argvlen)
{
    int       i, slot;
    unsigned  s;

    slot = TOLL_CLUSTER_ANY;

    for (i = from; i < to; i += step) {
        s = toll_cluster_slot(argv[i], argvlen[i]);

        if (slot != TOLL_CLUSTER_ANY && (unsigned) slot != s) {
            return TOLL_CLUSTER_CROSSSLOT;
        }

        slot = (int) s;
    }

    return slot;
}


/*
 * A host as a node announces it: a name, an IPv4 or IPv6 literal
 * (without brackets), 1 to 255 bytes of letters, digits, ".", "-", "_"
 * and ":".  Anything else (a NUL, a blank, a "/") is a malformed reply,
 * not a host hiredis should be handed.
 */

static int
toll_cluster_host_valid(const char *host, size_t len)
{
    size_t  i;
    char    c;

    if (len == 0 || len > TOLL_ADDR_HOST_LEN_MAX) {
        return -1;
    }

    for (i = 0; i < len; i++) {
        c = host[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_'
              || c == ':'))
        {
            return -1;
        }
    }

    return 0;
}


/* 1 to 65535, digits only; -1 otherwise */

static int
toll_cluster_port(const char *p, size_t len)
{
    size_t  i;
    long    port;

    if (len == 0 || len > 5) {
        return -1;
    }

    port = 0;

    for (i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return -1;
        }

        port = port * 10 + (p[i] - '0');
    }

    return (port >= 1 && port <= 65535) ? (int) port : -1;
}


/* one range of CLUSTER SLOTS: start, end, its primary [host, port, ...],
 * then its replicas */

static int
toll_cluster_entry(const redisReply *e, const char *from_host,
    unsigned *start, unsigned *end, const char **host, size_t *hlen,
    int *port, char *err, size_t err_size)
{
    size_t             i;
    const redisReply  *node, *h, *p;

    if (e->type != REDIS_REPLY_ARRAY || e->elements < 3
        || e->element[0]->type != REDIS_REPLY_INTEGER
        || e->element[1]->type != REDIS_REPLY_INTEGER)
    {
        snprintf(err, err_size, "CLUSTER SLOTS: a range is not "
                 "[start, end, primary...]");
        return -1;
    }

    if (e->element[0]->integer < 0
        || e->element[0]->integer >= TOLL_CLUSTER_SLOTS
        || e->element[1]->integer < e->element[0]->integer
        || e->element[1]->integer >= TOLL_CLUSTER_SLOTS)
    {
        snprintf(err, err_size, "CLUSTER SLOTS: the range %lld-%lld is not "
                 "within 0-16383", e->element[0]->integer,
                 e->element[1]->integer);
        return -1;
    }

    *start = (unsigned) e->element[0]->integer;
    *end = (unsigned) e->element[1]->integer;

    for (i = 2; i < e->elements; i++) {
        node = e->element[i];

        if (node->type != REDIS_REPLY_ARRAY || node->elements < 2
            || node->element[0]->type != REDIS_REPLY_STRING
            || node->element[1]->type != REDIS_REPLY_INTEGER)
        {
            snprintf(err, err_size, "CLUSTER SLOTS: a node of the range "
                     "%u-%u is not [host, port, ...]", *start, *end);
            return -1;
        }
    }

    node = e->element[2];
    h = node->element[0];
    p = node->element[1];

    /* a node that does not know its own address, or hides it */
    if (h->len == 0 || (h->len == 1 && h->str[0] == '?')) {
        *host = (from_host != NULL) ? from_host : "";
        *hlen = strlen(*host);

    } else {
        *host = h->str;
        *hlen = h->len;
    }

    if (toll_cluster_host_valid(*host, *hlen) != 0) {
        snprintf(err, err_size, "CLUSTER SLOTS: the primary of the range "
                 "%u-%u has no usable host (empty, over %d bytes, or not "
                 "a name)", *start, *end, TOLL_ADDR_HOST_LEN_MAX);
        return -1;
    }

    if (p->integer < 1 || p->integer > 65535) {
        snprintf(err, err_size, "CLUSTER SLOTS: the primary of the range "
                 "%u-%u has port %lld", *start, *end, p->integer);
        return -1;
    }

    *port = (int) p->integer;

    return 0;
}


static int
toll_cluster_node_find(const toll_cluster_node_t *nodes, unsigned n,
    const char *host, size_t hlen, int port)
{
    unsigned  k;

    for (k = 0; k < n; k++) {
        if (nodes[k].port == port && strlen(nodes[k].host) == hlen
            && memcmp(nodes[k].host, host, hlen) == 0)
        {
            return (int) k;
        }
    }

    return -1;
}
