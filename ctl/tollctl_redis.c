/*
 * tollctl: its Redis client.  Where Redis is (--redis, $TOLL_REDIS or the
 * default: one Redis, cluster=... or sentinel=... master=NAME), connecting
 * with AUTH and SELECT, one command, a pipeline, a MULTI/EXEC and a
 * WATCH, and the messages when Redis fails or refuses.
 *
 * lib/toll_store.c's blocking client is enough here: one operator, a few
 * round trips; it routes each command to its slot's node on a Cluster.
 * A transaction (WATCH, MULTI ... EXEC) stays on the connection of its
 * keys' one slot (toll_store_context_for()): keys in two slots are
 * refused before anything is sent.  Every command goes out with explicit
 * lengths: no user data is ever part of a format string.
 */

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sysexits.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "toll_addr.h"
#include "toll_key.h"
#include "toll_parse.h"
#include "tollctl.h"


#define TOLLCTL_TIMEOUT_MS_MAX        600000          /* 10 minutes */
#define TOLLCTL_DB_MAX                INT_MAX         /* Redis keeps an int */

/* the commands that one MULTI/EXEC carries */
#define TOLLCTL_EXEC_CMDS_MAX         4


static redisReply *tollctl_redis_checked(tollctl_t *ctl, tollctl_cmd_t *cmd,
    redisReply *reply);
static int tollctl_conf_check(tollctl_t *ctl);
static int tollctl_redis_io_error(tollctl_t *ctl, const char *cmd);
static int tollctl_redis_ctx_error(tollctl_t *ctl, redisContext *c,
    const char *cmd);
static redisContext *tollctl_redis_tx_context(tollctl_t *ctl,
    tollctl_cmd_t *cmds, size_t n);
static void tollctl_redis_reply_error(tollctl_t *ctl, const char *cmd,
    const redisReply *reply);


/* --redis over $TOLL_REDIS over the default; likewise the password */
static int
tollctl_conf_check(tollctl_t *ctl)
{
    char         err[512];
    const char  *env;

    ctl->addr.text = TOLLCTL_REDIS_DEFAULT;
    ctl->addr.source = "the default";

    env = getenv(TOLLCTL_REDIS_ENV);
    if (env != NULL && env[0] != '\0') {
        ctl->addr.text = env;
        ctl->addr.source = TOLLCTL_REDIS_ENV;
    }

    if (ctl->redis_opt != NULL) {
        ctl->addr.text = ctl->redis_opt;
        ctl->addr.source = "--redis";
    }

    if (toll_store_spec_parse_line(&ctl->addr.parsed, ctl->addr.text,
                                   TOLL_ADDR_UNIX, err, sizeof(err))
        != 0)
    {
        return tollctl_error(EX_DATAERR,
                             "invalid Redis address \"%s\" from %s: %s",
                             ctl->addr.text, ctl->addr.source, err);
    }

    if (ctl->password == NULL) {
        ctl->password = getenv(TOLLCTL_PASSWORD_ENV);
    }

    ctl->db = 0;

    if (ctl->db_opt != NULL
        && toll_parse_int64(ctl->db_opt, 0, TOLLCTL_DB_MAX, &ctl->db) != 0)
    {
        return tollctl_error(EX_DATAERR,
                             "invalid --db \"%s\": use an integer from 0 "
                             "to %d", ctl->db_opt, TOLLCTL_DB_MAX);
    }

    if (ctl->db != 0 && ctl->addr.parsed.kind == TOLL_STORE_CLUSTER) {
        return tollctl_error(EX_DATAERR,
                             "invalid --db \"%s\": db= is not available on "
                             "a Redis Cluster (it has only database 0)",
                             ctl->db_opt);
    }

    ctl->timeout_ms = TOLLCTL_TIMEOUT_MS_DEFAULT;

    if (ctl->timeout_ms_opt != NULL
        && toll_parse_int64(ctl->timeout_ms_opt, 1, TOLLCTL_TIMEOUT_MS_MAX,
                            &ctl->timeout_ms)
           != 0)
    {
        return tollctl_error(EX_DATAERR,
                             "invalid --timeout-ms \"%s\": use an integer "
                             "from 1 to %d (milliseconds)",
                             ctl->timeout_ms_opt, TOLLCTL_TIMEOUT_MS_MAX);
    }

    return EX_OK;
}


int
tollctl_connect(tollctl_t *ctl)
{
    int             rc;
    char            err[512];
    const char     *hint;
    struct timeval  tv;

    if (ctl->redis != NULL) {
        /* a verb that ends with another's (set-cap, then show) */
        return EX_OK;
    }

    rc = tollctl_conf_check(ctl);
    if (rc != EX_OK) {
        return rc;
    }

    tv.tv_sec = (time_t) (ctl->timeout_ms / 1000);
    tv.tv_usec = (suseconds_t) (ctl->timeout_ms % 1000 * 1000);

    /* a Sentinel asked for its primary, a Cluster's map read; AUTH and
     * SELECT on each connection */
    ctl->redis = toll_store_connect(&ctl->addr.parsed,
                                    (ctl->password != NULL
                                     && ctl->password[0] != '\0')
                                    ? ctl->password : NULL,
                                    (int) ctl->db, &tv, err, sizeof(err));

    if (ctl->redis != NULL) {
        return EX_OK;
    }

    hint = "; check that Redis runs there (set by --redis or "
           TOLLCTL_REDIS_ENV ")";

    if (strstr(err, "AUTH") != NULL || strstr(err, "NOAUTH") != NULL
        || strstr(err, "WRONGPASS") != NULL)
    {
        hint = "; check --password or " TOLLCTL_PASSWORD_ENV;

    } else if (strstr(err, "SELECT") != NULL) {
        hint = "; check --db";
    }

    return tollctl_error(EX_UNAVAILABLE, "redis %s: %s%s", ctl->addr.text,
                         err, hint);
}


/* the store failed as a whole: its own message says how */
static int
tollctl_redis_io_error(tollctl_t *ctl, const char *cmd)
{
    return tollctl_error(EX_UNAVAILABLE,
                         "redis %s: %s: %s; check that Redis runs there "
                         "(set by --redis or " TOLLCTL_REDIS_ENV ")",
                         ctl->addr.text, cmd, toll_store_error(ctl->redis));
}


/* a transaction's connection failed: it cannot be used again */
static int
tollctl_redis_ctx_error(tollctl_t *ctl, redisContext *c, const char *cmd)
{
    int          err;
    char         timeout[sizeof("no answer within  ms") + TOLLCTL_INT_STR_LEN];
    const char  *reason;

    err = errno;
    reason = c->errstr;

    /* hiredis reports a read that timed out as EAGAIN */
    if (c->err == REDIS_ERR_IO && (err == EAGAIN || err == EWOULDBLOCK)) {
        snprintf(timeout, sizeof(timeout), "no answer within %lld ms",
                 (long long) ctl->timeout_ms);
        reason = timeout;
    }

    return tollctl_error(EX_UNAVAILABLE,
                         "redis %s: %s: %s; check that Redis runs there "
                         "(set by --redis or " TOLLCTL_REDIS_ENV ")",
                         ctl->addr.text, cmd, reason);
}


static void
tollctl_redis_reply_error(tollctl_t *ctl, const char *cmd,
    const redisReply *reply)
{
    const char  *hint;

    hint = "";

    if (strncmp(reply->str, "NOAUTH", 6) == 0
        || strncmp(reply->str, "WRONGPASS", 9) == 0
        || strcmp(cmd, "AUTH") == 0)
    {
        hint = "; check --password or " TOLLCTL_PASSWORD_ENV;

    } else if (strcmp(cmd, "SELECT") == 0) {
        hint = "; check --db";
    }

    tollctl_error(EX_UNAVAILABLE, "redis %s: %s: %s%s",
                  ctl->addr.text, cmd, reply->str, hint);
}


void
tollctl_cmd_init(tollctl_cmd_t *cmd, const char *name)
{
    cmd->argc = 0;
    tollctl_cmd_add_str(cmd, name);
}


void
tollctl_cmd_add(tollctl_cmd_t *cmd, const char *arg, size_t len)
{
    assert(cmd->argc < TOLLCTL_ARGC_MAX);

    cmd->argv[cmd->argc] = arg;
    cmd->argvlen[cmd->argc] = len;
    cmd->argc++;
}


void
tollctl_cmd_add_str(tollctl_cmd_t *cmd, const char *arg)
{
    tollctl_cmd_add(cmd, arg, strlen(arg));
}


/* returns a reply that is not an error, or NULL after reporting one */
redisReply *
tollctl_redis_run(tollctl_t *ctl, tollctl_cmd_t *cmd)
{
    redisReply  *reply;

    reply = toll_store_command(ctl->redis, cmd->argc, cmd->argv,
                               cmd->argvlen);

    return tollctl_redis_checked(ctl, cmd, reply);
}


/* the same, to node i of toll_store_nodes() (SCAN on a Cluster) */
redisReply *
tollctl_redis_run_node(tollctl_t *ctl, unsigned node, tollctl_cmd_t *cmd)
{
    redisReply  *reply;

    reply = toll_store_command_node(ctl->redis, node, cmd->argc, cmd->argv,
                                    cmd->argvlen);

    return tollctl_redis_checked(ctl, cmd, reply);
}


/* a reply that is not an error, or NULL after saying what went wrong */
static redisReply *
tollctl_redis_checked(tollctl_t *ctl, tollctl_cmd_t *cmd, redisReply *reply)
{
    if (reply == NULL) {
        tollctl_redis_io_error(ctl, cmd->argv[0]);
        return NULL;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        tollctl_redis_reply_error(ctl, cmd->argv[0], reply);
        freeReplyObject(reply);
        return NULL;
    }

    return reply;
}


/*
 * Sends n commands in one write and reads their n replies.  Returns 0
 * with every reply in replies[] for the caller to free, or -1 after
 * reporting the first error; then nothing is left to free.
 */
int
tollctl_redis_pipeline(tollctl_t *ctl, tollctl_cmd_t *cmds, size_t n,
    redisReply **replies)
{
    int          failed;
    size_t       i, j;
    redisReply  *reply;

    for (i = 0; i < n; i++) {
        if (toll_store_append(ctl->redis, cmds[i].argc, cmds[i].argv,
                              cmds[i].argvlen)
            != 0)
        {
            tollctl_redis_io_error(ctl, cmds[i].argv[0]);
            return -1;
        }
    }

    failed = 0;

    /* every reply is read, even after an error, to free them all */

    for (i = 0; i < n; i++) {
        if (toll_store_get_reply(ctl->redis, &reply) != 0) {
            tollctl_redis_io_error(ctl, cmds[i].argv[0]);

            for (j = 0; j < i; j++) {
                freeReplyObject(replies[j]);
                replies[j] = NULL;
            }

            return -1;
        }

        replies[i] = reply;

        if (reply->type == REDIS_REPLY_ERROR && !failed) {
            tollctl_redis_reply_error(ctl, cmds[i].argv[0], reply);
            failed = 1;
        }
    }

    if (failed) {
        /* NULL, so that a caller that frees what it holds frees nothing */
        for (i = 0; i < n; i++) {
            freeReplyObject(replies[i]);
            replies[i] = NULL;
        }

        return -1;
    }

    return 0;
}


/*
 * The connection of a transaction's keys, which must all be in one hash
 * slot: on a Cluster, MULTI ... EXEC runs on one node.  The one of the
 * last WATCH when there is one (the WATCH must be on the same
 * connection as its EXEC); NULL after reporting an error.
 */
static redisContext *
tollctl_redis_tx_context(tollctl_t *ctl, tollctl_cmd_t *cmds, size_t n)
{
    int            slot, s;
    size_t         i;
    const char    *key;
    size_t         len;
    redisContext  *c;

    slot = TOLL_CLUSTER_ANY;
    key = NULL;
    len = 0;

    for (i = 0; i < n; i++) {
        s = toll_cluster_command_slot(cmds[i].argc, cmds[i].argv,
                                      cmds[i].argvlen);

        if (s == TOLL_CLUSTER_ANY) {
            continue;
        }

        /* one Redis, or a Sentinel's primary, runs any transaction: the
         * rule binds on a Cluster only, where the slots are on nodes */
        if (toll_store_kind(ctl->redis) == TOLL_STORE_CLUSTER
            && (s == TOLL_CLUSTER_CROSSSLOT
                || (slot != TOLL_CLUSTER_ANY && s != slot)))
        {
            tollctl_error(EX_SOFTWARE, "a transaction over keys in more "
                          "than one hash slot (%s %.*s): it cannot run on "
                          "a Redis Cluster", cmds[i].argv[0],
                          (int) cmds[i].argvlen[1], cmds[i].argv[1]);
            return NULL;
        }

        if (key == NULL) {
            key = cmds[i].argv[1];
            len = cmds[i].argvlen[1];
        }

        slot = s;
    }

    if (ctl->watched != NULL) {
        if (toll_store_kind(ctl->redis) == TOLL_STORE_CLUSTER
            && slot != TOLL_CLUSTER_ANY && slot != ctl->watched_slot)
        {
            tollctl_error(EX_SOFTWARE, "a transaction over keys in another "
                          "hash slot than the key it watched: it cannot "
                          "run on a Redis Cluster");
            return NULL;
        }

        return ctl->watched;
    }

    c = toll_store_context_for(ctl->redis, key ? key : "", len);

    if (c == NULL) {
        tollctl_redis_io_error(ctl, "MULTI");
    }

    return c;
}


/*
 * MULTI, the commands and EXEC in one round trip, on the connection of
 * their one slot.  Returns EXEC's reply: an array of one reply per
 * command, or nil when a WATCHed key changed; NULL after reporting an
 * error.
 */
redisReply *
tollctl_redis_exec(tollctl_t *ctl, tollctl_cmd_t *cmds, size_t n)
{
    size_t       i;
    redisReply  *exec;

    exec = tollctl_redis_exec_any(ctl, cmds, n);

    if (exec == NULL || exec->type == REDIS_REPLY_NIL) {
        return exec;
    }

    /* a transaction is not rolled back: a failed command is reported */
    for (i = 0; i < n; i++) {
        if (exec->element[i]->type == REDIS_REPLY_ERROR) {
            tollctl_redis_reply_error(ctl, cmds[i].argv[0],
                                      exec->element[i]);
            freeReplyObject(exec);
            return NULL;
        }
    }

    return exec;
}


/* the same, a command's error left in EXEC's reply for the caller */
redisReply *
tollctl_redis_exec_any(tollctl_t *ctl, tollctl_cmd_t *cmds, size_t n)
{
    int            failed;
    size_t         i;
    void          *r;
    redisReply    *exec;
    redisContext  *c;

    assert(n <= TOLLCTL_EXEC_CMDS_MAX);

    c = tollctl_redis_tx_context(ctl, cmds, n);
    ctl->watched = NULL;

    if (c == NULL) {
        return NULL;
    }

    if (redisAppendCommand(c, "MULTI") != REDIS_OK) {
        tollctl_error(EX_OSERR, "out of memory");
        return NULL;
    }

    for (i = 0; i < n; i++) {
        if (redisAppendCommandArgv(c, cmds[i].argc, cmds[i].argv,
                                   cmds[i].argvlen)
            != REDIS_OK)
        {
            tollctl_error(EX_OSERR, "out of memory");
            return NULL;
        }
    }

    if (redisAppendCommand(c, "EXEC") != REDIS_OK) {
        tollctl_error(EX_OSERR, "out of memory");
        return NULL;
    }

    /* MULTI's OK and the QUEUED of each command; every one read */
    failed = 0;

    for (i = 0; i < n + 1; i++) {
        if (redisGetReply(c, &r) != REDIS_OK) {
            tollctl_redis_ctx_error(ctl, c, i ? cmds[i - 1].argv[0]
                                              : "MULTI");
            return NULL;
        }

        if (((redisReply *) r)->type == REDIS_REPLY_ERROR && !failed) {
            tollctl_redis_reply_error(ctl, i ? cmds[i - 1].argv[0] : "MULTI",
                                      r);
            failed = 1;
        }

        freeReplyObject(r);
    }

    if (redisGetReply(c, &r) != REDIS_OK) {
        tollctl_redis_ctx_error(ctl, c, "EXEC");
        return NULL;
    }

    exec = r;

    if (failed || exec->type == REDIS_REPLY_ERROR) {
        if (!failed) {
            tollctl_redis_reply_error(ctl, "EXEC", exec);
        }

        freeReplyObject(exec);
        return NULL;
    }

    if (exec->type == REDIS_REPLY_NIL) {
        return exec;
    }

    if (exec->type != REDIS_REPLY_ARRAY || exec->elements != n) {
        tollctl_error(EX_UNAVAILABLE, "redis %s: EXEC: unexpected reply",
                      ctl->addr.text);
        freeReplyObject(exec);
        return NULL;
    }

    return exec;
}


/*
 * WATCHes a record and reads whether it exists, and its status when
 * status != NULL, on the connection of the record's slot, which the
 * EXEC or UNWATCH that follows uses too.  Returns 1 or 0 (exists or
 * not), or -1 after an error.
 */
int
tollctl_redis_watch(tollctl_t *ctl, const char *name, redisReply **status)
{
    int            exists;
    size_t         i, n, len;
    void          *r;
    redisReply    *replies[3];
    redisContext  *c;

    len = strlen(name);
    ctl->watched = NULL;

    c = toll_store_context_for(ctl->redis, name, len);

    if (c == NULL) {
        tollctl_redis_io_error(ctl, "WATCH");
        return -1;
    }

    n = (status != NULL) ? 3 : 2;

    if (redisAppendCommand(c, "WATCH %b", name, len) != REDIS_OK
        || redisAppendCommand(c, "EXISTS %b", name, len) != REDIS_OK
        || (status != NULL
            && redisAppendCommand(c, "HGET %b " TOLL_FIELD_STATUS, name, len)
               != REDIS_OK))
    {
        return tollctl_error(-1, "out of memory");
    }

    for (i = 0; i < n; i++) {
        if (redisGetReply(c, &r) != REDIS_OK) {
            tollctl_redis_ctx_error(ctl, c, "WATCH");

            while (i > 0) {
                freeReplyObject(replies[--i]);
            }

            return -1;
        }

        replies[i] = r;
    }

    for (i = 0; i < n; i++) {
        if (replies[i]->type == REDIS_REPLY_ERROR) {
            tollctl_redis_reply_error(ctl, i ? (i == 1 ? "EXISTS" : "HGET")
                                             : "WATCH", replies[i]);

            for (i = 0; i < n; i++) {
                freeReplyObject(replies[i]);
            }

            return -1;
        }
    }

    exists = (replies[1]->type == REDIS_REPLY_INTEGER
              && replies[1]->integer > 0);

    for (i = 0; i < 2; i++) {
        freeReplyObject(replies[i]);
    }

    if (status != NULL) {
        *status = replies[2];
    }

    ctl->watched = c;
    ctl->watched_slot = (int) toll_cluster_slot(name, len);

    return exists;
}


int
tollctl_redis_unwatch(tollctl_t *ctl)
{
    redisReply    *reply;
    redisContext  *c;

    c = ctl->watched;
    ctl->watched = NULL;

    if (c == NULL) {
        return 0;
    }

    reply = redisCommand(c, "UNWATCH");

    if (reply == NULL) {
        tollctl_redis_ctx_error(ctl, c, "UNWATCH");
        return -1;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        tollctl_redis_reply_error(ctl, "UNWATCH", reply);
        freeReplyObject(reply);
        return -1;
    }

    freeReplyObject(reply);

    return 0;
}
