/*
 * Fuzz lib/toll_cluster.c's readers of what a cluster node or a sentinel
 * answers: CLUSTER SLOTS (toll_cluster_map_parse), a MOVED or ASK error
 * (toll_cluster_redirect), SENTINEL GET-MASTER-ADDR-BY-NAME
 * (toll_sentinel_primary).
 *
 * Input: the first byte picks the reader; the rest is RESP text that
 * hiredis's own reader turns into a reply, or, for a redirection, the
 * error's bytes.  Checked beyond "no crash": an accepted map names only
 * its own nodes, each with a host and a port in range; an accepted
 * redirection or primary has a slot, a host and a port in range.
 */

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "toll_cluster.h"


static toll_cluster_map_t  map;


static void
fuzz_node(const toll_cluster_node_t *n)
{
    size_t  len;

    len = strlen(n->host);
    assert(len >= 1 && len <= TOLL_ADDR_HOST_LEN_MAX);
    assert(n->port >= 1 && n->port <= 65535);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char                 err[256];
    void                *r;
    unsigned             s, slot;
    redisReader         *reader;
    toll_cluster_node_t  to;

    if (size < 1) {
        return 0;
    }

    if (data[0] % 3 == 0) {
        switch (toll_cluster_redirect((const char *) data + 1, size - 1,
                                      &slot, &to))
        {
        case TOLL_CLUSTER_MOVED:
        case TOLL_CLUSTER_ASK:
            assert(slot < TOLL_CLUSTER_SLOTS);
            fuzz_node(&to);
            break;
        case 0:
        case -1:
            break;
        default:
            abort();
        }

        return 0;
    }

    /*
     * hiredis 0.14's reader has no bound on an array's length: "*3000000000"
     * is 24 GB of pointers.  Redis never answers such a count; 6 digits or
     * more in a row are left out.
     */
    for (s = 1, slot = 0; s < size; s++) {
        slot = (data[s] >= '0' && data[s] <= '9') ? slot + 1 : 0;

        if (slot >= 6) {
            return 0;
        }
    }

    reader = redisReaderCreate();
    assert(reader != NULL);
    r = NULL;

    if (redisReaderFeed(reader, (const char *) data + 1, size - 1)
        != REDIS_OK
        || redisReaderGetReply(reader, &r) != REDIS_OK || r == NULL)
    {
        redisReaderFree(reader);
        return 0;
    }

    if (data[0] % 3 == 1) {
        if (toll_cluster_map_parse(&map, r, "from.host", err, sizeof(err))
            == 0)
        {
            assert(map.n >= 1 && map.n <= TOLL_CLUSTER_NODES_MAX);

            for (s = 0; s < map.n; s++) {
                fuzz_node(&map.nodes[s]);
            }

            for (s = 0; s < TOLL_CLUSTER_SLOTS; s++) {
                assert(map.slot[s] == TOLL_CLUSTER_NO_NODE
                       || map.slot[s] < map.n);
            }

        } else {
            assert(err[0] != '\0');
        }

    } else if (toll_sentinel_primary(r, &to) == 0) {
        fuzz_node(&to);
    }

    freeReplyObject(r);
    redisReaderFree(reader);

    return 0;
}
