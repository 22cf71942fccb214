/*
 * toll: where the store is, as all three programs name it, and the
 * blocking client toll-settle and tollctl share.
 *
 *     HOST:PORT | [IPV6]:PORT | unix:/PATH       one Redis
 *     cluster=HOST:PORT,HOST:PORT...              a Redis Cluster's seeds
 *     sentinel=HOST:PORT,... master=NAME          a Sentinel-managed primary
 *
 * The module's toll_redis takes the same words (the nginx directive's
 * own timeout=, password= and db= beside them); tollctl's --redis and
 * toll-settle's "redis" line take the same text.
 */

#ifndef _TOLL_STORE_H_INCLUDED_
#define _TOLL_STORE_H_INCLUDED_


#include <stddef.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "toll_addr.h"
#include "toll_cluster.h"


/* a master name as Sentinel takes it */
#define TOLL_STORE_MASTER_LEN_MAX   64


typedef enum {
    TOLL_STORE_SINGLE = 0,
    TOLL_STORE_CLUSTER,
    TOLL_STORE_SENTINEL
} toll_store_kind_e;


typedef struct {
    toll_store_kind_e    kind;
    /* SINGLE: addr[0]; CLUSTER: the seeds; SENTINEL: the sentinels */
    toll_addr_t          addr[TOLL_CLUSTER_SEEDS_MAX];
    unsigned             n;
    char                 master[TOLL_STORE_MASTER_LEN_MAX + 1];
} toll_store_spec_t;


/*
 * addr is the first word ("HOST:PORT", "cluster=...", "sentinel=..."),
 * master the text after "master=" or NULL.  flags as toll_addr_parse()'s
 * (a unix socket only for one Redis).  Returns 0, or -1 with a message in
 * err naming what is wrong (never echoing a password: there is none here).
 * master= is required with sentinel= and refused otherwise; a seed given
 * twice is refused.
 */
int toll_store_spec_parse(toll_store_spec_t *spec, const char *addr,
    const char *master, int flags, char *err, size_t err_size);

/* the same from one line of words separated by blanks:
 * "sentinel=a:26379,b:26379 master=toll" (tollctl's --redis, the
 * settle configuration's "redis" line) */
int toll_store_spec_parse_line(toll_store_spec_t *spec, const char *line,
    int flags, char *err, size_t err_size);


/* ---- the blocking client (toll-settle, tollctl) ---- */

typedef struct toll_store_s  toll_store_t;

/*
 * Connects (a Sentinel is asked for its primary first; a Cluster's map is
 * read from the first seed that answers), with AUTH when password is not
 * NULL and SELECT db when db > 0 (one Redis or Sentinel only).  NULL with
 * a message in err.
 */
toll_store_t *toll_store_connect(const toll_store_spec_t *spec,
    const char *password, int db, const struct timeval *timeout,
    char *err, size_t err_size);
void toll_store_free(toll_store_t *st);

/* the last failure's text, for the caller's message */
const char *toll_store_error(const toll_store_t *st);

/*
 * One command, to the node of its key's slot (any node without a key):
 * MOVED refreshes the map and follows, ASK sends ASKING then the command
 * to the node named, at most TOLL_CLUSTER_REDIRECTS_MAX times.  A lost
 * connection to a Sentinel's primary asks the sentinels again, once.
 * Returns hiredis's reply (the caller frees it; it may be an error reply
 * other than a redirection), or NULL when the store failed.
 */
redisReply *toll_store_command(toll_store_t *st, int argc,
    const char **argv, const size_t *argvlen);

/*
 * A pipeline: append each command, then get their replies in the order
 * they were appended, each from its own node.  Commands whose replies
 * were not all read are discarded by the next toll_store_command() or
 * toll_store_free().
 */
int toll_store_append(toll_store_t *st, int argc, const char **argv,
    const size_t *argvlen);
int toll_store_get_reply(toll_store_t *st, redisReply **reply);

/*
 * The connection to the node that serves key's slot, for a sequence that
 * must stay on one connection (WATCH ... MULTI ... EXEC over keys of one
 * slot).  NULL when none can be had.
 */
redisContext *toll_store_context_for(toll_store_t *st, const char *key,
    size_t len);

/*
 * What must be asked of every primary (SCAN: each node of a Cluster holds
 * only its own slots' keys): the number of nodes (a Cluster's primaries,
 * else 1), and one command sent to node i as it is, no redirection
 * followed.  NULL when the store failed.
 */
unsigned toll_store_nodes(const toll_store_t *st);
redisReply *toll_store_command_node(toll_store_t *st, unsigned node,
    int argc, const char **argv, const size_t *argvlen);

/*
 * WAIT on the node that serves key's slot: how many replicas have every
 * write made there so far, by any client (at most timeout_ms to reach
 * replicas), or -1 when the store failed.  A short-lived mark is written
 * in the slot first (toll_names.h: TOLL_NAME_WAIT_PREFIX), so that it
 * holds on a connection that has written nothing; key must carry a hash
 * tag.
 */
long long toll_store_wait(toll_store_t *st, const char *key, size_t len,
    int replicas, int timeout_ms);

/* the kind the store was connected as */
toll_store_kind_e toll_store_kind(const toll_store_t *st);


#endif /* _TOLL_STORE_H_INCLUDED_ */
