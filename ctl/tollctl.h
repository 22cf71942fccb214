/*
 * tollctl: what ctl/tollctl.c (options, Redis, output) shares with the
 * files of the other commands (ctl/tollctl_ledger.c).
 */

#ifndef _TOLLCTL_H_INCLUDED_
#define _TOLLCTL_H_INCLUDED_


#include <stddef.h>

#include <hiredis/hiredis.h>
#include <jansson.h>


#define TOLLCTL_HOST_LEN_MAX          255             /* a DNS name */
/* arguments of the longest command sent: HSET of a full record */
#define TOLLCTL_ARGC_MAX              20

/* a verb ended early and well, e.g. after --help: exit with EX_OK */
#define TOLLCTL_DONE                  (-1)

#define TOLLCTL_NELTS(a)              (sizeof(a) / sizeof((a)[0]))


typedef struct {
    const char       *text;         /* as given, for messages */
    const char       *source;       /* "--redis", "TOLL_REDIS", "default" */
    char              host[TOLLCTL_HOST_LEN_MAX + 1];  /* or socket path */
    int               port;
    int               unix_socket;
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
    long long         db;
    long long         timeout_ms;
    redisContext     *redis;
} tollctl_t;


typedef struct {
    int               argc;
    const char       *argv[TOLLCTL_ARGC_MAX];
    size_t            argvlen[TOLLCTL_ARGC_MAX];
} tollctl_cmd_t;


/* "tollctl: <message>" on stderr; returns rc */
int tollctl_error(int rc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* the same, ending "; see 'tollctl --help'"; returns EX_USAGE */
int tollctl_usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
/* getopt_long's ':' or '?' as one line of ours */
int tollctl_option_error(int c, char **argv);
void tollctl_help(void);
/* an optional "-" and digits, nothing else, within [min, max] */
int tollctl_parse_ll(const char *s, long long min, long long max,
    long long *out);

/* checks the Redis options and connects; a sysexits code */
int tollctl_connect(tollctl_t *ctl);
void tollctl_cmd_init(tollctl_cmd_t *cmd, const char *name);
void tollctl_cmd_add_str(tollctl_cmd_t *cmd, const char *arg);
/* a reply that is not an error, or NULL after reporting one */
redisReply *tollctl_redis_run(tollctl_t *ctl, tollctl_cmd_t *cmd);
/* n commands in one round trip: 0 and n replies, or -1 after reporting */
int tollctl_redis_pipeline(tollctl_t *ctl, tollctl_cmd_t *cmds, size_t n,
    redisReply **replies);


#endif /* _TOLLCTL_H_INCLUDED_ */
