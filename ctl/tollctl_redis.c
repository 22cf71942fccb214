/*
 * tollctl: its Redis client.  Where Redis is (--redis, $TOLL_REDIS or the
 * default), connecting with AUTH and SELECT, one command, a pipeline, a
 * MULTI/EXEC and a WATCH, and the messages when Redis fails or refuses.
 *
 * A blocking hiredis client is enough here: one operator, a few round
 * trips.  Every command goes out through redisCommandArgv() or
 * redisAppendCommandArgv() with explicit lengths: no user data is ever
 * part of a format string.
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


static int tollctl_conf_check(tollctl_t *ctl);
static int tollctl_redis_io_error(tollctl_t *ctl, const char *cmd);
static void tollctl_redis_reply_error(tollctl_t *ctl, const char *cmd,
    const redisReply *reply);


/* --redis over $TOLL_REDIS over the default; likewise the password */
static int
tollctl_conf_check(tollctl_t *ctl)
{
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

    if (toll_addr_parse(&ctl->addr.parsed, ctl->addr.text, TOLL_ADDR_UNIX)
        != 0)
    {
        return tollctl_error(EX_DATAERR,
                             "invalid Redis address \"%s\" from %s: "
                             "use HOST:PORT, [IPV6]:PORT or unix:/PATH",
                             ctl->addr.text, ctl->addr.source);
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
    char            db[TOLLCTL_INT_STR_LEN];
    redisReply     *reply;
    tollctl_cmd_t   cmd;
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

    if (ctl->addr.parsed.port == 0) {
        ctl->redis = redisConnectUnixWithTimeout(ctl->addr.parsed.host, tv);

    } else {
        ctl->redis = redisConnectWithTimeout(ctl->addr.parsed.host,
                                             ctl->addr.parsed.port, tv);
    }

    if (ctl->redis == NULL) {
        return tollctl_error(EX_OSERR, "out of memory");
    }

    if (ctl->redis->err) {
        return tollctl_redis_io_error(ctl, NULL);
    }

    /* without it, a Redis that accepts and then stalls would hang us */
    if (redisSetTimeout(ctl->redis, tv) != REDIS_OK) {
        return tollctl_redis_io_error(ctl, NULL);
    }

    if (ctl->password != NULL && ctl->password[0] != '\0') {
        tollctl_cmd_init(&cmd, "AUTH");
        tollctl_cmd_add_str(&cmd, ctl->password);

        reply = tollctl_redis_run(ctl, &cmd);
        if (reply == NULL) {
            return EX_UNAVAILABLE;
        }

        freeReplyObject(reply);
    }

    if (ctl->db != 0) {
        snprintf(db, sizeof(db), "%lld", (long long) ctl->db);

        tollctl_cmd_init(&cmd, "SELECT");
        tollctl_cmd_add_str(&cmd, db);

        reply = tollctl_redis_run(ctl, &cmd);
        if (reply == NULL) {
            return EX_UNAVAILABLE;
        }

        freeReplyObject(reply);
    }

    return EX_OK;
}


/* the context failed as a whole: it cannot be used again */
static int
tollctl_redis_io_error(tollctl_t *ctl, const char *cmd)
{
    int          err;
    char         timeout[sizeof("no answer within  ms") + TOLLCTL_INT_STR_LEN];
    const char  *reason;

    err = errno;
    reason = ctl->redis->errstr;

    /* hiredis reports a read that timed out as EAGAIN */
    if (ctl->redis->err == REDIS_ERR_IO
        && (err == EAGAIN || err == EWOULDBLOCK))
    {
        snprintf(timeout, sizeof(timeout), "no answer within %lld ms",
                 (long long) ctl->timeout_ms);
        reason = timeout;
    }

    if (cmd == NULL) {
        return tollctl_error(EX_UNAVAILABLE,
                             "redis %s: %s; check that Redis runs there "
                             "(set by --redis or " TOLLCTL_REDIS_ENV ")",
                             ctl->addr.text, reason);
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

    reply = redisCommandArgv(ctl->redis, cmd->argc, cmd->argv,
                             cmd->argvlen);
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
        if (redisAppendCommandArgv(ctl->redis, cmds[i].argc, cmds[i].argv,
                                   cmds[i].argvlen)
            != REDIS_OK)
        {
            return tollctl_error(-1, "out of memory");
        }
    }

    failed = 0;

    /* every reply is read, even after an error, to free them all */

    for (i = 0; i < n; i++) {
        if (redisGetReply(ctl->redis, (void **) &reply) != REDIS_OK) {
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
 * MULTI, the commands and EXEC in one round trip.  Returns EXEC's reply:
 * an array of one reply per command, or nil when a WATCHed key changed;
 * NULL after reporting an error.
 */
redisReply *
tollctl_redis_exec(tollctl_t *ctl, tollctl_cmd_t *cmds, size_t n)
{
    size_t          i;
    redisReply     *exec, *replies[TOLLCTL_EXEC_CMDS_MAX + 2];
    tollctl_cmd_t   all[TOLLCTL_EXEC_CMDS_MAX + 2];

    assert(n <= TOLLCTL_EXEC_CMDS_MAX);

    tollctl_cmd_init(&all[0], "MULTI");
    memcpy(&all[1], cmds, n * sizeof(tollctl_cmd_t));
    tollctl_cmd_init(&all[n + 1], "EXEC");

    if (tollctl_redis_pipeline(ctl, all, n + 2, replies) != 0) {
        return NULL;
    }

    /* MULTI's OK and the QUEUED of each command */
    for (i = 0; i < n + 1; i++) {
        freeReplyObject(replies[i]);
    }

    exec = replies[n + 1];

    if (exec->type == REDIS_REPLY_NIL) {
        return exec;
    }

    if (exec->type != REDIS_REPLY_ARRAY || exec->elements != n) {
        tollctl_error(EX_UNAVAILABLE, "redis %s: EXEC: unexpected reply",
                      ctl->addr.text);
        freeReplyObject(exec);
        return NULL;
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


/*
 * WATCHes a record and reads whether it exists, and its status when
 * status != NULL.  Returns 1 or 0 (exists or not), or -1 after an error.
 */
int
tollctl_redis_watch(tollctl_t *ctl, const char *name, redisReply **status)
{
    int             exists;
    size_t          i, n;
    redisReply     *replies[3];
    tollctl_cmd_t   cmds[3];

    tollctl_cmd_init(&cmds[0], "WATCH");
    tollctl_cmd_add_str(&cmds[0], name);

    tollctl_cmd_init(&cmds[1], "EXISTS");
    tollctl_cmd_add_str(&cmds[1], name);

    tollctl_cmd_init(&cmds[2], "HGET");
    tollctl_cmd_add_str(&cmds[2], name);
    tollctl_cmd_add_str(&cmds[2], TOLL_FIELD_STATUS);

    n = (status != NULL) ? 3 : 2;

    if (tollctl_redis_pipeline(ctl, cmds, n, replies) != 0) {
        return -1;
    }

    exists = (replies[1]->type == REDIS_REPLY_INTEGER
              && replies[1]->integer > 0);

    for (i = 0; i < 2; i++) {
        freeReplyObject(replies[i]);
    }

    if (status != NULL) {
        *status = replies[2];
    }

    return exists;
}


int
tollctl_redis_unwatch(tollctl_t *ctl)
{
    redisReply     *reply;
    tollctl_cmd_t   cmd;

    tollctl_cmd_init(&cmd, "UNWATCH");

    reply = tollctl_redis_run(ctl, &cmd);
    if (reply == NULL) {
        return -1;
    }

    freeReplyObject(reply);

    return 0;
}
