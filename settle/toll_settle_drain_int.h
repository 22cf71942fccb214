/*
 * toll-settle: what the drain's files share (settle/toll_settle_drain.c
 * the protocol, toll_settle_post.c a claim into the ledger,
 * toll_settle_redis.c the connection).  Private to the drain.
 */

#ifndef _TOLL_SETTLE_DRAIN_INT_H_INCLUDED_
#define _TOLL_SETTLE_DRAIN_INT_H_INCLUDED_


#include <hiredis/hiredis.h>

#include "toll_names.h"
#include "toll_settle_drain.h"


/* a claim the ledger refuses, to set aside: why is in ledger_refused */
#define TOLL_SETTLE_DRAIN_LEFT     1


/* the steps a test may kill the drain at (TOLL_SETTLE_CRASH) */
typedef enum {
    TOLL_SETTLE_STEP_INTENT = 0,
    TOLL_SETTLE_STEP_CLAIM,
    TOLL_SETTLE_STEP_READ,
    TOLL_SETTLE_STEP_COMMIT,
    TOLL_SETTLE_STEP_DELETE,
    TOLL_SETTLE_STEP_ALERT,          /* a balance alert committed */
    TOLL_SETTLE_STEP_MOVED,          /* a pass's moves done, its alerts
                                        not yet */
    TOLL_SETTLE_STEP_N
} toll_settle_step_e;


/* a claim's name, taken apart: toll:drain:{<buyer>}:<YYYYMMDD>:<id> */
typedef struct {
    char      name[TOLL_NAME_LEN_MAX + 1];
    char      buyer[TOLL_NAME_BUYER_LEN_MAX + 1];
    char      day[TOLL_NAME_DAY_LEN + 1];
    char      id[TOLL_NAME_BATCH_LEN + 1];
} toll_settle_claim_t;


/* toll_settle_drain.c */
int toll_settle_delete(toll_settle_drain_t *d, const toll_settle_claim_t *c);
int toll_settle_reindex(toll_settle_drain_t *d, const toll_settle_claim_t *c);
void toll_settle_crash_point(toll_settle_step_e step);

/*
 * toll_settle_post.c: a claim in hand posted (unless the ledger has it)
 * and deleted, or set aside; its content into the ledger
 */
int toll_settle_finish(toll_settle_drain_t *d, const toll_settle_claim_t *c,
    redisReply *content);
int toll_settle_post(toll_settle_drain_t *d, const toll_settle_claim_t *c,
    redisReply *content);
int toll_settle_quarantine(toll_settle_drain_t *d,
    const toll_settle_claim_t *c, const char *reason);

/* toll_settle_redis.c: the connection, the ledger's binding, a command */
int toll_settle_connect(toll_settle_drain_t *d);
int toll_settle_bind(toll_settle_drain_t *d);
int toll_settle_count_open(toll_settle_drain_t *d);
redisReply *toll_settle_cmd(toll_settle_drain_t *d, int argc,
    const char **argv, const size_t *argvlen);
int toll_settle_redis_failed(toll_settle_drain_t *d, const char *what,
    redisReply *reply);
int toll_settle_key_cmd(toll_settle_drain_t *d, const char *cmd,
    const char *key, const char *arg, size_t arg_len, int64_t *out);


#endif /* _TOLL_SETTLE_DRAIN_INT_H_INCLUDED_ */
