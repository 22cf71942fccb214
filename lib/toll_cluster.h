/*
 * toll: what every Redis client of toll needs to know about a Redis
 * Cluster and a Sentinel, written once: a key's hash slot, the slot of a
 * command, the slot map read from CLUSTER SLOTS, a MOVED or ASK
 * redirection, the primary a sentinel names.  Used by the module's async
 * adapter and by the blocking client of toll-settle and tollctl
 * (lib/toll_store.c).
 *
 * Pure: no I/O, no allocation (the map is the caller's), every reply
 * checked before it is believed: a malformed one is refused, never
 * half-read.
 */

#ifndef _TOLL_CLUSTER_H_INCLUDED_
#define _TOLL_CLUSTER_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "toll_addr.h"


#define TOLL_CLUSTER_SLOTS          16384
/* the primaries a map holds; a larger cluster is refused, said so */
#define TOLL_CLUSTER_NODES_MAX      64
/* the addresses of cluster= and sentinel= */
#define TOLL_CLUSTER_SEEDS_MAX      16
/* redirections followed for one command before it fails */
#define TOLL_CLUSTER_REDIRECTS_MAX  5
/* a slot no primary serves */
#define TOLL_CLUSTER_NO_NODE        0xffff

/* toll_cluster_command_slot(): no key, any node will do */
#define TOLL_CLUSTER_ANY            -1
/* ... keys in more than one slot: a caller's bug, refused */
#define TOLL_CLUSTER_CROSSSLOT      -2


typedef struct {
    char                 host[TOLL_ADDR_HOST_SIZE];
    int                  port;
} toll_cluster_node_t;


typedef struct {
    /* an index into nodes[], or TOLL_CLUSTER_NO_NODE */
    uint16_t             slot[TOLL_CLUSTER_SLOTS];
    toll_cluster_node_t  nodes[TOLL_CLUSTER_NODES_MAX];
    unsigned             n;
} toll_cluster_map_t;


/* CRC16 (XMODEM) of the key, or of its hash tag "{...}" when it has a
 * non-empty one, modulo 16384: Redis Cluster's own rule */
unsigned toll_cluster_slot(const char *key, size_t len);

/*
 * The slot a command goes to, from its keys: EVAL and EVALSHA name
 * theirs after the number of keys, every other command toll sends has
 * its one key, or its keys, after the command name (HMGET's one key,
 * DEL's and EXISTS's every argument); PING, SCRIPT, WAIT, INFO and the
 * like have none (TOLL_CLUSTER_ANY).  TOLL_CLUSTER_CROSSSLOT when the
 * keys are in more than one slot.
 */
int toll_cluster_command_slot(int argc, const char **argv,
    const size_t *argvlen);

/*
 * CLUSTER SLOTS's reply into *map: the primary of each range (the
 * replicas are not used).  A primary announced with an empty host or
 * "?" is at from_host, the node that answered.  Returns 0, or -1 with a
 * message in err when the reply is malformed: not an array of arrays,
 * a slot out of 0..16383 or a range backwards, ranges overlapping, a
 * host too long, a port out of 1..65535, more than
 * TOLL_CLUSTER_NODES_MAX primaries.  Slots no range names are
 * TOLL_CLUSTER_NO_NODE.
 */
int toll_cluster_map_parse(toll_cluster_map_t *map, const redisReply *r,
    const char *from_host, char *err, size_t err_size);

/* the node of a slot, or NULL when none serves it */
const toll_cluster_node_t *toll_cluster_map_node(
    const toll_cluster_map_t *map, unsigned slot);

#define TOLL_CLUSTER_MOVED          1
#define TOLL_CLUSTER_ASK            2

/*
 * An error reply "MOVED 3999 127.0.0.1:6381" or "ASK 3999 HOST:PORT"
 * ("[V6]:PORT" and a bare "V6:PORT" with its last colon taken as the
 * port's, as Redis writes them): TOLL_CLUSTER_MOVED or TOLL_CLUSTER_ASK
 * with *slot and *to set; 0 when it is no redirection; -1 when it says
 * MOVED or ASK but is malformed.
 */
int toll_cluster_redirect(const char *str, size_t len, unsigned *slot,
    toll_cluster_node_t *to);

/*
 * SENTINEL GET-MASTER-ADDR-BY-NAME's reply into *to: 0, or -1 when it
 * is nil (the sentinel knows no such master) or malformed.
 */
int toll_sentinel_primary(const redisReply *r, toll_cluster_node_t *to);


#endif /* _TOLL_CLUSTER_H_INCLUDED_ */
