/*
 * tollctl: what its rooms share: the options a verb is handed and the
 * error lines (tollctl.c), the Redis client (tollctl_redis.c) and the
 * output (tollctl_output.c).
 */

#ifndef _TOLLCTL_H_INCLUDED_
#define _TOLLCTL_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "toll_addr.h"
#include "toll_store.h"
#include "toll_money.h"


#define TOLLCTL_REDIS_DEFAULT         "127.0.0.1:6379"
#define TOLLCTL_REDIS_ENV             "TOLL_REDIS"
#define TOLLCTL_PASSWORD_ENV          "TOLL_REDIS_PASSWORD"
#define TOLLCTL_TIMEOUT_MS_DEFAULT    2000

#define TOLLCTL_INT_STR_LEN           sizeof("-9223372036854775808")
#define TOLLCTL_TIME_STR_LEN          32              /* ISO 8601, UTC */

/* an amount as printed: a sign, toll_money_format's digits, ".00" */
#define TOLLCTL_AMOUNT_LEN_MAX        (TOLL_MONEY_STR_MAX + 4)
#define TOLLCTL_CELL_LEN_MAX          64
#define TOLLCTL_TABLE_COLUMNS_MAX     12

/* arguments of the longest command sent: HSET of a full record */
#define TOLLCTL_ARGC_MAX              20

/* a verb ended early and well, e.g. after --help: exit with EX_OK */
#define TOLLCTL_DONE                  (-1)

#define TOLLCTL_NELTS(a)              (sizeof(a) / sizeof((a)[0]))


typedef struct {
    const char       *text;         /* as given, for messages */
    const char       *source;       /* "--redis", "TOLL_REDIS", "default" */
    toll_store_spec_t parsed;       /* one Redis, a Cluster, a Sentinel */
} tollctl_addr_t;


typedef struct {
    /* global options, as given; checked only when Redis is needed */
    const char       *redis_opt;
    const char       *password;     /* NULL or empty: no AUTH */
    const char       *db_opt;
    const char       *timeout_ms_opt;
    const char       *ledger_opt;   /* NULL: $TOLL_LEDGER or the default */
    int               json;

    tollctl_addr_t    addr;
    int64_t           db;
    int64_t           timeout_ms;
    toll_store_t     *redis;
    /* the connection of the last tollctl_redis_watch(), for its EXEC or
     * UNWATCH: a Cluster's node of the watched key's slot */
    redisContext     *watched;
    int               watched_slot;
} tollctl_t;


typedef struct {
    int               argc;
    const char       *argv[TOLLCTL_ARGC_MAX];
    size_t            argvlen[TOLLCTL_ARGC_MAX];
} tollctl_cmd_t;


/* every option of tollctl; a verb's row of the table names those it takes */
typedef enum {
    TOLLCTL_OPT_HELP = 0,
    TOLLCTL_OPT_VERSION,
    TOLLCTL_OPT_REDIS,
    TOLLCTL_OPT_PASSWORD,
    TOLLCTL_OPT_DB,
    TOLLCTL_OPT_TIMEOUT_MS,
    TOLLCTL_OPT_LEDGER,
    TOLLCTL_OPT_JSON,
    TOLLCTL_OPT_ALL,
    TOLLCTL_OPT_OWNER,
    TOLLCTL_OPT_PLAN,
    TOLLCTL_OPT_ROLE,
    TOLLCTL_OPT_RATE_LIMIT,
    TOLLCTL_OPT_EXPIRES_IN,
    TOLLCTL_OPT_PROVIDER,
    TOLLCTL_OPT_FROM,
    TOLLCTL_OPT_TO,
    TOLLCTL_OPT_STATUS,
    TOLLCTL_OPT_LIMIT,
    TOLLCTL_OPT_TX,
    TOLLCTL_OPT_ACCOUNT,
    TOLLCTL_OPT_CURRENCY,
    TOLLCTL_OPT_REF,
    TOLLCTL_OPT_DAILY,
    TOLLCTL_OPT_MONTHLY,
    TOLLCTL_OPT_ANCHOR,
    TOLLCTL_OPT_SPEND_CAP_DAILY,
    TOLLCTL_OPT_SPEND_CAP_MONTHLY,
    TOLLCTL_OPT_SCOPES,
    TOLLCTL_OPT_TOKEN,
    TOLLCTL_OPT_N
} tollctl_opt_e;

#define TOLLCTL_OPT_BIT(o)            (1u << (o))

/* a verb that checks its arguments itself, however many */
#define TOLLCTL_ARGS_ANY              (-1)


/* a verb's options and arguments, as given */
typedef struct {
    const char       *opt[TOLLCTL_OPT_N];   /* NULL: not given; a flag "" */
    char            **args;
    int               nargs;
} tollctl_opts_t;


/* a column of a table: its header, its key in each row's object */
typedef struct {
    const char       *header;
    const char       *key;
    int               right;             /* numbers align right */
} tollctl_column_t;


/* "tollctl: <message>" on stderr; returns rc */
int tollctl_error(int rc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* the same, ending "; see 'tollctl --help'"; returns EX_USAGE */
int tollctl_usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* checks the Redis options and connects; a sysexits code */
int tollctl_connect(tollctl_t *ctl);
void tollctl_cmd_init(tollctl_cmd_t *cmd, const char *name);
void tollctl_cmd_add(tollctl_cmd_t *cmd, const char *arg, size_t len);
void tollctl_cmd_add_str(tollctl_cmd_t *cmd, const char *arg);
/* a reply that is not an error, or NULL after reporting one */
redisReply *tollctl_redis_run(tollctl_t *ctl, tollctl_cmd_t *cmd);
/* the same, to one primary of a Cluster (SCAN), 0 to toll_store_nodes() */
redisReply *tollctl_redis_run_node(tollctl_t *ctl, unsigned node,
    tollctl_cmd_t *cmd);
/* n commands in one round trip: 0 and n replies, or -1 after reporting */
int tollctl_redis_pipeline(tollctl_t *ctl, tollctl_cmd_t *cmds, size_t n,
    redisReply **replies);
/* MULTI, cmds, EXEC: EXEC's array, nil when a WATCHed key changed, NULL */
redisReply *tollctl_redis_exec(tollctl_t *ctl, tollctl_cmd_t *cmds,
    size_t n);
/* the same, with each command's error left in EXEC's reply */
redisReply *tollctl_redis_exec_any(tollctl_t *ctl, tollctl_cmd_t *cmds,
    size_t n);
/* WATCH name; 1 or 0 as it exists, -1 after an error; HGET status */
int tollctl_redis_watch(tollctl_t *ctl, const char *name,
    redisReply **status);
int tollctl_redis_unwatch(tollctl_t *ctl);

/* compact JSON on one line */
int tollctl_print_json(json_t *value);
/* ISO 8601 in UTC, or the bare number; returns buf */
const char *tollctl_time_text(long long t, char *buf, size_t size);
/* 0, or -1 when stdout failed (a full disk, a closed pipe) */
int tollctl_stdout_flush(void);
/* jansson's allocator: what it frees is wiped */
void *tollctl_json_malloc(size_t size);
void tollctl_json_free(void *p);
/* --json: compact JSON on one line; else text(value) */
int tollctl_output(tollctl_t *ctl, json_t *value,
    void (*text)(json_t *value));
/* "name: value" lines, aligned; *_micros are left to --json */
void tollctl_print_fields(json_t *obj);
/* rows of objects as columns, each as wide as its widest cell */
void tollctl_print_table(json_t *rows, const tollctl_column_t *cols,
    size_t ncols);
/* a JSON value as a cell; an integer needs buf, else "?" */
const char *tollctl_cell(json_t *v, char *buf, size_t size);
/* as the ledger prints amounts ("10.50"); sign: "+" before a positive */
void tollctl_amount_text(int64_t micros, int sign, char *buf, size_t size);


#endif /* _TOLLCTL_H_INCLUDED_ */
