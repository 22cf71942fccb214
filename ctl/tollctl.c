/*
 * tollctl: the operator CLI for toll's API keys, ledger and settlements.
 *
 * Creates, lists, shows and revokes key records in Redis, in the format
 * that lib/toll_key.h fixes and the nginx module reads.  A blocking
 * hiredis client is enough here: one operator, a few round trips.  The
 * ledger, settlement and reconcile commands are in tollctl_ledger.c.
 *
 * Every command goes out through redisCommandArgv() or
 * redisAppendCommandArgv() with explicit lengths: no user data is ever
 * part of a format string.
 */

#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sysexits.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "toll_key.h"
#include "tollctl.h"
#include "tollctl_ledger.h"
#include "tollctl_quarantine.h"


#define TOLLCTL_VERSION               "0.1.0"

#define TOLLCTL_REDIS_DEFAULT         "127.0.0.1:6379"
#define TOLLCTL_REDIS_ENV             "TOLL_REDIS"
#define TOLLCTL_PASSWORD_ENV          "TOLL_REDIS_PASSWORD"
#define TOLLCTL_UNIX_PREFIX           "unix:"

#define TOLLCTL_TIMEOUT_MS_DEFAULT    2000
#define TOLLCTL_TIMEOUT_MS_MAX        600000          /* 10 minutes */
#define TOLLCTL_DB_MAX                INT_MAX         /* Redis keeps an int */
#define TOLLCTL_PORT_MAX              65535
#define TOLLCTL_UNIX_PATH_LEN_MAX     107             /* sun_path less NUL */

#define TOLLCTL_RATE_LIMIT_MAX        1000000000      /* requests/minute */
#define TOLLCTL_EXPIRES_IN_SEC_MAX    3162240000LL    /* 100 years of 366 d */

/*
 * 64 random bits make an id collision improbable; a run of them means a
 * broken CSPRNG, which no retry would mend.
 */
#define TOLLCTL_CREATE_ATTEMPTS_MAX   3
/* a revocation raced by another writer is read again this many times */
#define TOLLCTL_REVOKE_ATTEMPTS_MAX   3
/* HGETALLs that "key list" pipelines in one round trip */
#define TOLLCTL_LIST_BATCH_MAX        100
/* the commands that one MULTI/EXEC carries */
#define TOLLCTL_EXEC_CMDS_MAX         2

#define TOLLCTL_INT_STR_LEN           sizeof("-9223372036854775808")
#define TOLLCTL_TIME_STR_LEN          32              /* ISO 8601, UTC */
#define TOLLCTL_VALUE_STR_LEN         (TOLLCTL_INT_STR_LEN                \
                                       + TOLLCTL_TIME_STR_LEN + 4)

/* fields tollctl adds to a record, or computes for display only */
#define TOLLCTL_FIELD_KEY_ID          "key_id"        /* shown, not stored */
#define TOLLCTL_FIELD_EXPIRED         "expired"       /* shown, not stored */

#define TOLLCTL_STATUS_EXPIRED        "expired"       /* shown, not stored */

#define TOLLCTL_LIST_COLUMNS          6

/* a WATCHed key changed under a transaction: read it again */
#define TOLLCTL_AGAIN                 (-2)


/* long-only options take values past any char */
enum {
    TOLLCTL_OPT_REDIS = 256,
    TOLLCTL_OPT_PASSWORD,
    TOLLCTL_OPT_DB,
    TOLLCTL_OPT_TIMEOUT_MS,
    TOLLCTL_OPT_LEDGER,
    TOLLCTL_OPT_JSON,
    TOLLCTL_OPT_OWNER,
    TOLLCTL_OPT_PLAN,
    TOLLCTL_OPT_ROLE,
    TOLLCTL_OPT_RATE_LIMIT,
    TOLLCTL_OPT_EXPIRES_IN
};


typedef struct {
    const char       *owner;
    const char       *plan;          /* NULL: none */
    const char       *role_opt;
    const char       *rate_limit_opt;
    const char       *expires_in_opt;

    toll_role_e       role;
    long long         rate_limit;    /* requests/minute; -1: none */
    long long         expires_in;    /* seconds; 0: never */
} tollctl_create_t;


/* everything here that derives from the secret is wiped after use */
typedef struct {
    char              key_id[TOLL_KEY_ID_GEN_LEN + 1];
    char              secret[TOLL_SECRET_GEN_LEN + 1];
    char              token[TOLL_KEY_ID_GEN_LEN + 1
                            + TOLL_SECRET_GEN_LEN + 1];
    char              secret_sha256[TOLL_SECRET_HASH_HEX_LEN + 1];
    char              redis_name[TOLL_REDIS_KEY_NAME_MAX + 1];
    long long         created_at;    /* unix seconds */
    long long         expires_at;    /* unix seconds; 0: never */
} tollctl_new_key_t;


typedef enum {
    TOLLCTL_KIND_TEXT = 0,           /* shown as stored */
    TOLLCTL_KIND_NUMBER,             /* an integer */
    TOLLCTL_KIND_TIME,               /* unix seconds */
    TOLLCTL_KIND_EXPIRY              /* unix seconds; 0, never, is null */
} tollctl_kind_e;


typedef struct {
    const char       *name;
    tollctl_kind_e    kind;
} tollctl_field_t;


typedef int (*tollctl_verb_pt)(tollctl_t *ctl, int argc, char **argv);

typedef struct {
    const char       *name;
    tollctl_verb_pt   handler;
} tollctl_verb_t;


/*
 * jansson allocates with these, so that the copies it makes of a new
 * key's secret (in the object and in the dumped text) are wiped when
 * freed.  Each block remembers its size in a header before it.
 */
typedef union {
    size_t            size;
    max_align_t       align;
} tollctl_alloc_hdr_t;


static int tollctl_parse_global(tollctl_t *ctl, int argc, char **argv);
static int tollctl_dispatch(tollctl_t *ctl, int argc, char **argv);
static int tollctl_verb_args(tollctl_t *ctl, int argc, char **argv,
    const char **arg);

static int tollctl_addr_parse(tollctl_addr_t *addr, const char *text);
static int tollctl_conf_check(tollctl_t *ctl);
static int tollctl_redis_io_error(tollctl_t *ctl, const char *cmd);
static void tollctl_redis_reply_error(tollctl_t *ctl, const char *cmd,
    const redisReply *reply);
static void tollctl_cmd_add(tollctl_cmd_t *cmd, const char *arg, size_t len);
static redisReply *tollctl_redis_exec(tollctl_t *ctl, tollctl_cmd_t *cmds,
    size_t n);
static int tollctl_redis_watch(tollctl_t *ctl, const char *name,
    redisReply **status);
static int tollctl_redis_unwatch(tollctl_t *ctl);

static int tollctl_key_create(tollctl_t *ctl, int argc, char **argv);
static int tollctl_create_parse(tollctl_create_t *req, int argc,
    char **argv);
static int tollctl_create_check(tollctl_create_t *req);
static int tollctl_key_new(tollctl_new_key_t *key,
    const tollctl_create_t *req);
static int tollctl_key_store(tollctl_t *ctl, const tollctl_create_t *req,
    tollctl_new_key_t *key);
static int tollctl_key_print_new(const tollctl_create_t *req,
    const tollctl_new_key_t *key);

static int tollctl_key_revoke(tollctl_t *ctl, int argc, char **argv);
static int tollctl_revoke_once(tollctl_t *ctl, const char *key_id,
    const char *name);
static int tollctl_key_show(tollctl_t *ctl, int argc, char **argv);
static int tollctl_key_list(tollctl_t *ctl, int argc, char **argv);
static int tollctl_list_batch(tollctl_t *ctl, redisReply **ids, size_t n,
    json_t *records, time_t now);
static int tollctl_list_add(tollctl_t *ctl, json_t *records,
    const redisReply *id, const redisReply *hash, time_t now);
static int tollctl_id_cmp(const void *a, const void *b);

static int tollctl_key_id_args(tollctl_t *ctl, int argc, char **argv,
    const char **key_id, char *name);
static int tollctl_record_get(tollctl_t *ctl, const char *key_id,
    const char *name, json_t **record);
static json_t *tollctl_record_json(const char *key_id, size_t key_id_len,
    const redisReply *hash, time_t now);
static int tollctl_record_check(tollctl_t *ctl, const redisReply *hash);
static const redisReply *tollctl_hash_get(const redisReply *hash,
    const char *field);
static int tollctl_field_extra(const redisReply *name);
static const tollctl_field_t *tollctl_field_find(const char *name);
static json_t *tollctl_field_json(const tollctl_field_t *f,
    const redisReply *value);
static json_t *tollctl_expired_json(const redisReply *value, time_t now);
static int tollctl_reply_ll(const redisReply *value, long long *out);

static void tollctl_print_record(json_t *record);
static void tollctl_print_table(json_t *records);
static void tollctl_list_cells(json_t *record,
    const char *cells[TOLLCTL_LIST_COLUMNS], char *buf, size_t size);
static const char *tollctl_value_text(const char *name, json_t *value,
    char *buf, size_t size);
static const char *tollctl_time_text(long long t, char *buf, size_t size);
static int tollctl_print_json(json_t *value);
static int tollctl_stdout_flush(void);

static void *tollctl_json_malloc(size_t size);
static void tollctl_json_free(void *p);


static const tollctl_verb_t  tollctl_key_verbs[] = {
    { "create", tollctl_key_create },
    { "revoke", tollctl_key_revoke },
    { "list",   tollctl_key_list },
    { "show",   tollctl_key_show }
};


/* the fields of a record as "key show" presents them, in this order */
static const tollctl_field_t  tollctl_fields[] = {
    { TOLL_FIELD_STATUS,         TOLLCTL_KIND_TEXT },
    { TOLL_FIELD_OWNER,          TOLLCTL_KIND_TEXT },
    { TOLL_FIELD_ROLE,           TOLLCTL_KIND_TEXT },
    { TOLL_FIELD_PLAN,           TOLLCTL_KIND_TEXT },
    { TOLL_FIELD_RATE_LIMIT,     TOLLCTL_KIND_NUMBER },
    { TOLL_FIELD_CREATED_AT,     TOLLCTL_KIND_TIME },
    { TOLL_FIELD_EXPIRES_AT,     TOLLCTL_KIND_EXPIRY },
    { TOLL_FIELD_REVOKED_AT,  TOLLCTL_KIND_TIME }
};


static const struct option  tollctl_global_options[] = {
    { "redis",      required_argument, NULL, TOLLCTL_OPT_REDIS },
    { "password",   required_argument, NULL, TOLLCTL_OPT_PASSWORD },
    { "db",         required_argument, NULL, TOLLCTL_OPT_DB },
    { "timeout-ms", required_argument, NULL, TOLLCTL_OPT_TIMEOUT_MS },
    { "ledger",     required_argument, NULL, TOLLCTL_OPT_LEDGER },
    { "json",       no_argument,       NULL, TOLLCTL_OPT_JSON },
    { "help",       no_argument,       NULL, 'h' },
    { "version",    no_argument,       NULL, 'V' },
    { NULL,         0,                 NULL, 0 }
};


static const struct option  tollctl_create_options[] = {
    { "owner",      required_argument, NULL, TOLLCTL_OPT_OWNER },
    { "plan",       required_argument, NULL, TOLLCTL_OPT_PLAN },
    { "role",       required_argument, NULL, TOLLCTL_OPT_ROLE },
    { "rate-limit", required_argument, NULL, TOLLCTL_OPT_RATE_LIMIT },
    { "expires-in", required_argument, NULL, TOLLCTL_OPT_EXPIRES_IN },
    { "json",       no_argument,       NULL, TOLLCTL_OPT_JSON },
    { "help",       no_argument,       NULL, 'h' },
    { NULL,         0,                 NULL, 0 }
};


/* the options of revoke, show and list */
static const struct option  tollctl_verb_options[] = {
    { "json",       no_argument,       NULL, TOLLCTL_OPT_JSON },
    { "help",       no_argument,       NULL, 'h' },
    { NULL,         0,                 NULL, 0 }
};


int
main(int argc, char **argv)
{
    int        rc;
    tollctl_t  ctl;

    /* a closed socket or pipe must fail a write, not kill us silently */
    signal(SIGPIPE, SIG_IGN);

    json_set_alloc_funcs(tollctl_json_malloc, tollctl_json_free);

    memset(&ctl, 0, sizeof(ctl));

    rc = tollctl_parse_global(&ctl, argc, argv);

    if (rc == EX_OK) {
        rc = tollctl_dispatch(&ctl, argc - optind, argv + optind);
    }

    if (ctl.redis != NULL) {
        redisFree(ctl.redis);
    }

    if (rc == TOLLCTL_DONE) {
        rc = EX_OK;
    }

    if (rc == EX_OK && tollctl_stdout_flush() != 0) {
        rc = tollctl_error(EX_IOERR, "cannot write to stdout: %s",
                           strerror(errno));
    }

    return rc;
}


int
tollctl_error(int rc, const char *fmt, ...)
{
    va_list  args;

    fputs("tollctl: ", stderr);

    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);

    fputc('\n', stderr);

    return rc;
}


int
tollctl_usage_error(const char *fmt, ...)
{
    va_list  args;

    fputs("tollctl: ", stderr);

    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);

    fputs("; see 'tollctl --help'\n", stderr);

    return EX_USAGE;
}


/* getopt's own messages are off (opterr = 0): one line of ours instead */
int
tollctl_option_error(int c, char **argv)
{
    const char  *opt;

    opt = argv[optind - 1];

    if (c == ':') {
        return tollctl_usage_error("option \"%s\" needs a value", opt);
    }

    if (optopt > 0 && optopt < CHAR_MAX) {
        return tollctl_usage_error("unknown option \"-%c\"", optopt);
    }

    /* glibc tells neither from the other: "--r" may be --role or --rate */
    return tollctl_usage_error("unknown or ambiguous option \"%s\"", opt);
}


void
tollctl_help(void)
{
    printf(
"usage: tollctl [OPTIONS] COMMAND ...\n"
"\n"
"Manage toll's API keys in Redis, read its ledger, record settlements.\n"
"\n"
"commands:\n"
"  key create --owner ID [--plan NAME] [--role buyer|provider|admin]\n"
"             [--rate-limit N] [--expires-in SECONDS]\n"
"                      create a key and print it once, secret included,\n"
"                      as JSON; N is requests per minute\n"
"  key revoke KEY_ID   revoke a key; revoking twice is fine\n"
"  key list            list every key\n"
"  key show KEY_ID     show a key's record, never its secret or hash\n"
"\n"
"  settlement create --provider ID --from TIME --to TIME\n"
"                      settle a provider's usage posted in [from, to);\n"
"                      TIME is 2026-03-01T00:00:00Z, 2026-03-01 or @UNIX\n"
"  settlement list [--provider ID] [--status pending|completed]\n"
"                  [--limit N]\n"
"                      newest first, 50 unless --limit (1 to 1000)\n"
"  settlement show STL_ID\n"
"  settlement pay STL_ID --tx REF\n"
"                      record the payment, once\n"
"  ledger balance ACCOUNT\n"
"                      buyer:ID, provider:ID, platform:fees, platform:cash\n"
"  ledger entries [--account ACCOUNT] [--limit N]\n"
"                      the latest entries, 50 unless --limit (1 to 1000)\n"
"  ledger check        verify the ledger's invariants from its rows\n"
"  reconcile           compare Redis's usage with the ledger's\n"
"  quarantine list     the claims toll-settle set aside: the ledger\n"
"                      refused them\n"
"  quarantine replay CLAIM... | --all\n"
"                      give them back to toll-settle's next pass\n"
"\n"
"options:\n"
"  --redis ADDR        HOST:PORT, [IPV6]:PORT or unix:/PATH (default\n"
"                      $" TOLLCTL_REDIS_ENV ", else "
TOLLCTL_REDIS_DEFAULT ")\n"
"  --password PASS     Redis AUTH password (default $"
TOLLCTL_PASSWORD_ENV ")\n"
"  --db N              Redis database number (default 0)\n"
"  --timeout-ms N      connect and command timeout (default %d)\n"
"  --ledger PATH       the ledger file (default $" TOLLCTL_LEDGER_ENV ",\n"
"                      else " TOLLCTL_LEDGER_DEFAULT ")\n"
"  --json              JSON output for every command but key create (always\n"
"                      JSON); may also follow the verb\n"
"  -h, --help          print this help and exit\n"
"  -V, --version       print the version and exit\n"
"\n"
"exit status: 0 done, 64 usage error, 65 invalid value or refused data\n"
"(a settlement that overlaps, is empty, ends in the future or is paid\n"
"already; a failed ledger check; a reconcile difference), 66 no such key,\n"
"settlement, account or ledger file, 69 Redis unreachable or refused a\n"
"command, 70 internal error, 71 out of memory or no clock, 74 cannot\n"
"write the output or read the ledger, 75 key kept changing while being\n"
"revoked, or the ledger is busy (run again)\n",
        TOLLCTL_TIMEOUT_MS_DEFAULT);
}


/*
 * strtoll() alone would skip leading blanks and take a "+"; a value here
 * is an optional "-" and digits, nothing else, within [min, max].
 */
int
tollctl_parse_ll(const char *s, long long min, long long max,
    long long *out)
{
    char        *end;
    long long    n;
    const char  *digits;

    digits = (s[0] == '-') ? s + 1 : s;

    if (digits[0] < '0' || digits[0] > '9') {
        return -1;
    }

    errno = 0;
    n = strtoll(s, &end, 10);

    if (errno != 0 || *end != '\0' || n < min || n > max) {
        return -1;
    }

    *out = n;

    return 0;
}


/* stops at COMMAND, so that the verbs parse their own options */
static int
tollctl_parse_global(tollctl_t *ctl, int argc, char **argv)
{
    int  c;

    opterr = 0;

    for ( ;; ) {
        c = getopt_long(argc, argv, "+:hV", tollctl_global_options, NULL);
        if (c == -1) {
            break;
        }

        switch (c) {

        case TOLLCTL_OPT_REDIS:
            ctl->redis_opt = optarg;
            break;

        case TOLLCTL_OPT_PASSWORD:
            ctl->password = optarg;
            break;

        case TOLLCTL_OPT_DB:
            ctl->db_opt = optarg;
            break;

        case TOLLCTL_OPT_TIMEOUT_MS:
            ctl->timeout_ms_opt = optarg;
            break;

        case TOLLCTL_OPT_LEDGER:
            ctl->ledger_opt = optarg;
            break;

        case TOLLCTL_OPT_JSON:
            ctl->json = 1;
            break;

        case 'h':
            tollctl_help();
            return TOLLCTL_DONE;

        case 'V':
            printf("tollctl " TOLLCTL_VERSION "\n");
            return TOLLCTL_DONE;

        default:
            return tollctl_option_error(c, argv);
        }
    }

    return EX_OK;
}


static int
tollctl_dispatch(tollctl_t *ctl, int argc, char **argv)
{
    size_t  i;

    if (argc == 0) {
        return tollctl_usage_error("missing command");
    }

    if (strcmp(argv[0], "ledger") == 0) {
        return tollctl_ledger_cmd(ctl, argc, argv);
    }

    if (strcmp(argv[0], "settlement") == 0) {
        return tollctl_settlement_cmd(ctl, argc, argv);
    }

    if (strcmp(argv[0], "reconcile") == 0) {
        return tollctl_reconcile_cmd(ctl, argc, argv);
    }

    if (strcmp(argv[0], "quarantine") == 0) {
        return tollctl_quarantine_cmd(ctl, argc, argv);
    }

    if (strcmp(argv[0], "key") != 0) {
        return tollctl_usage_error("unknown command \"%s\"", argv[0]);
    }

    if (argc == 1) {
        return tollctl_usage_error("missing verb after \"key\"");
    }

    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        tollctl_help();
        return TOLLCTL_DONE;
    }

    for (i = 0; i < TOLLCTL_NELTS(tollctl_key_verbs); i++) {
        if (strcmp(argv[1], tollctl_key_verbs[i].name) == 0) {
            /* the verb sees itself as argv[0], as getopt expects */
            return tollctl_key_verbs[i].handler(ctl, argc - 1, argv + 1);
        }
    }

    return tollctl_usage_error("unknown verb \"key %s\"", argv[1]);
}


/*
 * The options and the one argument of revoke and show (arg != NULL), or
 * the options alone of list (arg == NULL).
 */
static int
tollctl_verb_args(tollctl_t *ctl, int argc, char **argv, const char **arg)
{
    int  c, want;

    /* optind = 0 makes glibc's getopt start afresh on a new argv */
    optind = 0;

    for ( ;; ) {
        c = getopt_long(argc, argv, ":h", tollctl_verb_options, NULL);
        if (c == -1) {
            break;
        }

        switch (c) {

        case TOLLCTL_OPT_JSON:
            ctl->json = 1;
            break;

        case 'h':
            tollctl_help();
            return TOLLCTL_DONE;

        default:
            return tollctl_option_error(c, argv);
        }
    }

    want = (arg != NULL) ? 1 : 0;

    if (argc - optind < want) {
        return tollctl_usage_error("\"key %s\" needs a KEY_ID", argv[0]);
    }

    if (argc - optind > want) {
        return tollctl_usage_error("unexpected argument \"%s\" to \"key %s\"",
                                   argv[optind + want], argv[0]);
    }

    if (arg != NULL) {
        *arg = argv[optind];
    }

    return EX_OK;
}


/* HOST:PORT, [IPV6]:PORT or unix:/PATH */
static int
tollctl_addr_parse(tollctl_addr_t *addr, const char *text)
{
    size_t       len;
    long long    port;
    const char  *host, *end, *port_text;

    if (strncmp(text, TOLLCTL_UNIX_PREFIX, sizeof(TOLLCTL_UNIX_PREFIX) - 1)
        == 0)
    {
        host = text + sizeof(TOLLCTL_UNIX_PREFIX) - 1;
        len = strlen(host);

        if (len == 0 || len > TOLLCTL_UNIX_PATH_LEN_MAX) {
            return -1;
        }

        memcpy(addr->host, host, len + 1);
        addr->unix_socket = 1;

        return 0;
    }

    if (text[0] == '[') {
        host = text + 1;
        end = strchr(host, ']');

        if (end == NULL || end[1] != ':') {
            return -1;
        }

        port_text = end + 2;

    } else {
        end = strrchr(text, ':');

        if (end == NULL) {
            return -1;
        }

        host = text;
        port_text = end + 1;

        /* an IPv6 address needs its brackets to tell it from the port */
        if (memchr(host, ':', (size_t) (end - host)) != NULL) {
            return -1;
        }
    }

    len = (size_t) (end - host);

    if (len == 0 || len > TOLLCTL_HOST_LEN_MAX
        || tollctl_parse_ll(port_text, 1, TOLLCTL_PORT_MAX, &port) != 0)
    {
        return -1;
    }

    memcpy(addr->host, host, len);
    addr->host[len] = '\0';
    addr->port = (int) port;
    addr->unix_socket = 0;

    return 0;
}


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

    if (tollctl_addr_parse(&ctl->addr, ctl->addr.text) != 0) {
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
        && tollctl_parse_ll(ctl->db_opt, 0, TOLLCTL_DB_MAX, &ctl->db) != 0)
    {
        return tollctl_error(EX_DATAERR,
                             "invalid --db \"%s\": use an integer from 0 "
                             "to %d", ctl->db_opt, TOLLCTL_DB_MAX);
    }

    ctl->timeout_ms = TOLLCTL_TIMEOUT_MS_DEFAULT;

    if (ctl->timeout_ms_opt != NULL
        && tollctl_parse_ll(ctl->timeout_ms_opt, 1, TOLLCTL_TIMEOUT_MS_MAX,
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

    rc = tollctl_conf_check(ctl);
    if (rc != EX_OK) {
        return rc;
    }

    tv.tv_sec = (time_t) (ctl->timeout_ms / 1000);
    tv.tv_usec = (suseconds_t) (ctl->timeout_ms % 1000 * 1000);

    if (ctl->addr.unix_socket) {
        ctl->redis = redisConnectUnixWithTimeout(ctl->addr.host, tv);

    } else {
        ctl->redis = redisConnectWithTimeout(ctl->addr.host, ctl->addr.port,
                                             tv);
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
        snprintf(db, sizeof(db), "%lld", ctl->db);

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
                 ctl->timeout_ms);
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


static void
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
static redisReply *
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
static int
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


static int
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


static int
tollctl_key_create(tollctl_t *ctl, int argc, char **argv)
{
    int                rc, attempt;
    tollctl_new_key_t  key;
    tollctl_create_t   req;

    rc = tollctl_create_parse(&req, argc, argv);
    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_create_check(&req);
    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_connect(ctl);
    if (rc != EX_OK) {
        return rc;
    }

    for (attempt = 0; attempt < TOLLCTL_CREATE_ATTEMPTS_MAX; attempt++) {
        rc = tollctl_key_new(&key, &req);
        if (rc != EX_OK) {
            break;
        }

        rc = tollctl_key_store(ctl, &req, &key);
        if (rc != TOLLCTL_AGAIN) {
            break;
        }
    }

    if (rc == TOLLCTL_AGAIN) {
        rc = tollctl_error(EX_SOFTWARE,
                           "%d generated key ids were all taken; "
                           "the CSPRNG is suspect, do not retry blindly",
                           TOLLCTL_CREATE_ATTEMPTS_MAX);
    }

    if (rc == EX_OK) {
        rc = tollctl_key_print_new(&req, &key);
    }

    OPENSSL_cleanse(&key, sizeof(key));

    return rc;
}


/* usage errors all come before any value is checked */
static int
tollctl_create_parse(tollctl_create_t *req, int argc, char **argv)
{
    int  c;

    memset(req, 0, sizeof(tollctl_create_t));

    optind = 0;

    for ( ;; ) {
        c = getopt_long(argc, argv, ":h", tollctl_create_options, NULL);
        if (c == -1) {
            break;
        }

        switch (c) {

        case TOLLCTL_OPT_OWNER:
            req->owner = optarg;
            break;

        case TOLLCTL_OPT_PLAN:
            req->plan = optarg;
            break;

        case TOLLCTL_OPT_ROLE:
            req->role_opt = optarg;
            break;

        case TOLLCTL_OPT_RATE_LIMIT:
            req->rate_limit_opt = optarg;
            break;

        case TOLLCTL_OPT_EXPIRES_IN:
            req->expires_in_opt = optarg;
            break;

        case TOLLCTL_OPT_JSON:
            /* create always prints JSON */
            break;

        case 'h':
            tollctl_help();
            return TOLLCTL_DONE;

        default:
            return tollctl_option_error(c, argv);
        }
    }

    if (optind < argc) {
        return tollctl_usage_error("unexpected argument \"%s\" to "
                                   "\"key create\"", argv[optind]);
    }

    if (req->owner == NULL) {
        return tollctl_usage_error("\"key create\" needs --owner");
    }

    return EX_OK;
}


static int
tollctl_create_check(tollctl_create_t *req)
{
    int  role;

    /* the module refuses a record that these checks would refuse */

    if (!toll_owner_valid((const unsigned char *) req->owner,
                          strlen(req->owner)))
    {
        return tollctl_error(EX_DATAERR,
                             "invalid --owner: use 1 to %d visible ASCII "
                             "characters, no spaces", TOLL_OWNER_LEN_MAX);
    }

    /* an empty plan reads as none: omitting --plan says that plainly */

    if (req->plan != NULL
        && (req->plan[0] == '\0'
            || !toll_plan_valid((const unsigned char *) req->plan,
                                strlen(req->plan))))
    {
        return tollctl_error(EX_DATAERR,
                             "invalid --plan \"%s\": use 1 to %d of "
                             "A-Z a-z 0-9 _ . -",
                             req->plan, TOLL_PLAN_LEN_MAX);
    }

    req->role = TOLL_ROLE_BUYER;

    if (req->role_opt != NULL) {
        role = toll_role_parse(req->role_opt, strlen(req->role_opt));

        if (role < 0) {
            return tollctl_error(EX_DATAERR,
                                 "invalid --role \"%s\": use buyer, "
                                 "provider or admin", req->role_opt);
        }

        req->role = (toll_role_e) role;
    }

    req->rate_limit = -1;

    if (req->rate_limit_opt != NULL
        && tollctl_parse_ll(req->rate_limit_opt, 0, TOLLCTL_RATE_LIMIT_MAX,
                            &req->rate_limit)
           != 0)
    {
        return tollctl_error(EX_DATAERR,
                             "invalid --rate-limit \"%s\": use an integer "
                             "from 0 to %d (requests per minute)",
                             req->rate_limit_opt, TOLLCTL_RATE_LIMIT_MAX);
    }

    req->expires_in = 0;

    if (req->expires_in_opt != NULL
        && tollctl_parse_ll(req->expires_in_opt, 1,
                            TOLLCTL_EXPIRES_IN_SEC_MAX, &req->expires_in)
           != 0)
    {
        return tollctl_error(EX_DATAERR,
                             "invalid --expires-in \"%s\": use an integer "
                             "from 1 to %lld (seconds)",
                             req->expires_in_opt,
                             TOLLCTL_EXPIRES_IN_SEC_MAX);
    }

    return EX_OK;
}


/* a fresh key id and secret, and what derives from them */
static int
tollctl_key_new(tollctl_new_key_t *key, const tollctl_create_t *req)
{
    time_t         now;
    unsigned char  hash[TOLL_SECRET_HASH_LEN];

    if (toll_key_generate(key->key_id, key->secret) != 0) {
        return tollctl_error(EX_SOFTWARE, "the OpenSSL CSPRNG failed; "
                             "no key was created");
    }

    snprintf(key->token, sizeof(key->token), "%s:%s",
             key->key_id, key->secret);

    if (toll_secret_hash((const unsigned char *) key->secret,
                         TOLL_SECRET_GEN_LEN, hash)
        != 0)
    {
        return tollctl_error(EX_SOFTWARE, "OpenSSL could not hash the "
                             "secret; no key was created");
    }

    toll_hex_encode(hash, sizeof(hash), key->secret_sha256);
    key->secret_sha256[TOLL_SECRET_HASH_HEX_LEN] = '\0';
    OPENSSL_cleanse(hash, sizeof(hash));

    if (toll_key_redis_name((const unsigned char *) key->key_id,
                            TOLL_KEY_ID_GEN_LEN, key->redis_name)
        == 0)
    {
        return tollctl_error(EX_SOFTWARE, "generated key id \"%s\" is "
                             "invalid", key->key_id);
    }

    now = time(NULL);
    if (now == (time_t) -1) {
        return tollctl_error(EX_OSERR, "cannot read the clock");
    }

    key->created_at = (long long) now;
    key->expires_at = (req->expires_in != 0)
                      ? key->created_at + req->expires_in : 0;

    return EX_OK;
}


/*
 * The record and its index entry go in one transaction, under a WATCH of
 * the record: an existing record is never overwritten, even one written
 * between our EXISTS and our EXEC.  Returns TOLLCTL_AGAIN when the id is
 * taken.
 */
static int
tollctl_key_store(tollctl_t *ctl, const tollctl_create_t *req,
    tollctl_new_key_t *key)
{
    int             exists, taken;
    char            rate_limit[TOLLCTL_INT_STR_LEN];
    char            expires_at[TOLLCTL_INT_STR_LEN];
    char            created_at[TOLLCTL_INT_STR_LEN];
    const char     *role;
    redisReply     *reply;
    tollctl_cmd_t   cmds[2];

    /*
     * A transaction is not rolled back: an index that is not a set would
     * refuse the SADD after the record was written, leaving a key whose
     * secret nobody was shown.  Its type is checked first, under WATCH.
     */

    tollctl_cmd_init(&cmds[0], "WATCH");
    tollctl_cmd_add_str(&cmds[0], TOLL_REDIS_KEY_INDEX);
    tollctl_cmd_init(&cmds[1], "TYPE");
    tollctl_cmd_add_str(&cmds[1], TOLL_REDIS_KEY_INDEX);

    reply = tollctl_redis_run(ctl, &cmds[0]);
    if (reply == NULL) {
        return EX_UNAVAILABLE;
    }

    freeReplyObject(reply);

    reply = tollctl_redis_run(ctl, &cmds[1]);
    if (reply == NULL) {
        return EX_UNAVAILABLE;
    }

    if (reply->type != REDIS_REPLY_STATUS
        || (strcmp(reply->str, "set") != 0 && strcmp(reply->str, "none") != 0))
    {
        tollctl_error(EX_UNAVAILABLE, "redis %s: " TOLL_REDIS_KEY_INDEX
                      " is a %s, not a set (WRONGTYPE); make it the set of "
                      "key ids again before creating keys", ctl->addr.text,
                      reply->type == REDIS_REPLY_STATUS ? reply->str : "?");
        freeReplyObject(reply);
        (void) tollctl_redis_unwatch(ctl);
        return EX_UNAVAILABLE;
    }

    freeReplyObject(reply);

    exists = tollctl_redis_watch(ctl, key->redis_name, NULL);

    if (exists == -1) {
        return EX_UNAVAILABLE;
    }

    if (exists) {
        return (tollctl_redis_unwatch(ctl) == 0) ? TOLLCTL_AGAIN
                                                 : EX_UNAVAILABLE;
    }

    snprintf(expires_at, sizeof(expires_at), "%lld", key->expires_at);
    snprintf(created_at, sizeof(created_at), "%lld", key->created_at);

    role = toll_role_name(req->role);

    tollctl_cmd_init(&cmds[0], "HSET");
    tollctl_cmd_add_str(&cmds[0], key->redis_name);
    tollctl_cmd_add_str(&cmds[0], TOLL_FIELD_STATUS);
    tollctl_cmd_add_str(&cmds[0], TOLL_STATUS_ACTIVE);
    tollctl_cmd_add_str(&cmds[0], TOLL_FIELD_SECRET_SHA256);
    tollctl_cmd_add(&cmds[0], key->secret_sha256, TOLL_SECRET_HASH_HEX_LEN);
    tollctl_cmd_add_str(&cmds[0], TOLL_FIELD_OWNER);
    tollctl_cmd_add_str(&cmds[0], req->owner);
    tollctl_cmd_add_str(&cmds[0], TOLL_FIELD_ROLE);
    tollctl_cmd_add_str(&cmds[0], role);

    if (req->plan != NULL) {
        tollctl_cmd_add_str(&cmds[0], TOLL_FIELD_PLAN);
        tollctl_cmd_add_str(&cmds[0], req->plan);
    }

    if (req->rate_limit >= 0) {
        snprintf(rate_limit, sizeof(rate_limit), "%lld", req->rate_limit);
        tollctl_cmd_add_str(&cmds[0], TOLL_FIELD_RATE_LIMIT);
        tollctl_cmd_add_str(&cmds[0], rate_limit);
    }

    tollctl_cmd_add_str(&cmds[0], TOLL_FIELD_EXPIRES_AT);
    tollctl_cmd_add_str(&cmds[0], expires_at);
    tollctl_cmd_add_str(&cmds[0], TOLL_FIELD_CREATED_AT);
    tollctl_cmd_add_str(&cmds[0], created_at);

    tollctl_cmd_init(&cmds[1], "SADD");
    tollctl_cmd_add_str(&cmds[1], TOLL_REDIS_KEY_INDEX);
    tollctl_cmd_add(&cmds[1], key->key_id, TOLL_KEY_ID_GEN_LEN);

    reply = tollctl_redis_exec(ctl, cmds, 2);
    if (reply == NULL) {
        return EX_UNAVAILABLE;
    }

    taken = (reply->type == REDIS_REPLY_NIL);
    freeReplyObject(reply);

    return taken ? TOLLCTL_AGAIN : EX_OK;
}


/* the only place the secret is ever shown */
static int
tollctl_key_print_new(const tollctl_create_t *req,
    const tollctl_new_key_t *key)
{
    int          rc;
    json_t      *obj;
    static char  stdout_buf[BUFSIZ];

    /*
     * stdio's own buffer would keep a copy of the secret until exit: it
     * uses ours, wiped below.  Nothing was written to stdout before.
     */
    setvbuf(stdout, stdout_buf, _IOFBF, sizeof(stdout_buf));

    obj = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s?, s:o, s:s, s:I, s:o}",
                    TOLLCTL_FIELD_KEY_ID, key->key_id,
                    "secret", key->secret,
                    "token", key->token,
                    TOLL_FIELD_OWNER, req->owner,
                    TOLL_FIELD_ROLE, toll_role_name(req->role),
                    TOLL_FIELD_PLAN, req->plan,
                    TOLL_FIELD_RATE_LIMIT,
                    (req->rate_limit >= 0) ? json_integer(req->rate_limit)
                                           : json_null(),
                    TOLL_FIELD_STATUS, TOLL_STATUS_ACTIVE,
                    TOLL_FIELD_CREATED_AT, (json_int_t) key->created_at,
                    TOLL_FIELD_EXPIRES_AT,
                    (key->expires_at != 0) ? json_integer(key->expires_at)
                                           : json_null());

    if (obj == NULL) {
        return tollctl_error(EX_OSERR, "key %s was created but is lost: "
                             "out of memory; revoke it and create another",
                             key->key_id);
    }

    rc = tollctl_print_json(obj);
    json_decref(obj);

    if (rc == EX_OK && tollctl_stdout_flush() != 0) {
        rc = tollctl_error(EX_IOERR, "key %s was created but is lost: "
                           "cannot write to stdout (%s); revoke it and "
                           "create another", key->key_id, strerror(errno));
    }

    OPENSSL_cleanse(stdout_buf, sizeof(stdout_buf));

    return rc;
}


static int
tollctl_key_revoke(tollctl_t *ctl, int argc, char **argv)
{
    int          rc, attempt;
    char         name[TOLL_REDIS_KEY_NAME_MAX + 1];
    json_t      *record;
    const char  *key_id;

    rc = tollctl_key_id_args(ctl, argc, argv, &key_id, name);
    if (rc != EX_OK) {
        return rc;
    }

    for (attempt = 0; attempt < TOLLCTL_REVOKE_ATTEMPTS_MAX; attempt++) {
        rc = tollctl_revoke_once(ctl, key_id, name);
        if (rc != TOLLCTL_AGAIN) {
            break;
        }
    }

    if (rc == TOLLCTL_AGAIN) {
        return tollctl_error(EX_TEMPFAIL, "key %s kept changing while "
                             "being revoked; run the command again", key_id);
    }

    if (rc != EX_OK) {
        return rc;
    }

    if (!ctl->json) {
        printf("revoked %s\n", key_id);
        return EX_OK;
    }

    rc = tollctl_record_get(ctl, key_id, name, &record);
    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_print_json(record);
    json_decref(record);

    return rc;
}


/*
 * A revoked key stays revoked with its first revoked_at; the WATCH keeps
 * a record deleted meanwhile from coming back as a stub.
 */
static int
tollctl_revoke_once(tollctl_t *ctl, const char *key_id, const char *name)
{
    int             exists, revoked;
    char            revoked_at[TOLLCTL_INT_STR_LEN];
    redisReply     *status, *reply;
    tollctl_cmd_t   cmd;

    exists = tollctl_redis_watch(ctl, name, &status);

    if (exists == -1) {
        return EX_UNAVAILABLE;
    }

    revoked = (status->type == REDIS_REPLY_STRING
               && strcmp(status->str, TOLL_STATUS_REVOKED) == 0);
    freeReplyObject(status);

    if (!exists || revoked) {
        if (tollctl_redis_unwatch(ctl) != 0) {
            return EX_UNAVAILABLE;
        }

        if (!exists) {
            return tollctl_error(EX_NOINPUT, "no key %s; \"tollctl key "
                                 "list\" shows the keys", key_id);
        }

        return EX_OK;
    }

    snprintf(revoked_at, sizeof(revoked_at), "%lld",
             (long long) time(NULL));

    tollctl_cmd_init(&cmd, "HSET");
    tollctl_cmd_add_str(&cmd, name);
    tollctl_cmd_add_str(&cmd, TOLL_FIELD_STATUS);
    tollctl_cmd_add_str(&cmd, TOLL_STATUS_REVOKED);
    tollctl_cmd_add_str(&cmd, TOLL_FIELD_REVOKED_AT);
    tollctl_cmd_add_str(&cmd, revoked_at);

    reply = tollctl_redis_exec(ctl, &cmd, 1);
    if (reply == NULL) {
        return EX_UNAVAILABLE;
    }

    revoked = (reply->type != REDIS_REPLY_NIL);
    freeReplyObject(reply);

    return revoked ? EX_OK : TOLLCTL_AGAIN;
}


static int
tollctl_key_show(tollctl_t *ctl, int argc, char **argv)
{
    int          rc;
    char         name[TOLL_REDIS_KEY_NAME_MAX + 1];
    json_t      *record;
    const char  *key_id;

    rc = tollctl_key_id_args(ctl, argc, argv, &key_id, name);
    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_record_get(ctl, key_id, name, &record);
    if (rc != EX_OK) {
        return rc;
    }

    if (ctl->json) {
        rc = tollctl_print_json(record);

    } else {
        tollctl_print_record(record);
    }

    json_decref(record);

    return rc;
}


static int
tollctl_key_list(tollctl_t *ctl, int argc, char **argv)
{
    int             rc;
    time_t          now;
    size_t          i, n;
    json_t         *records;
    redisReply     *ids;
    tollctl_cmd_t   cmd;

    rc = tollctl_verb_args(ctl, argc, argv, NULL);
    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_connect(ctl);
    if (rc != EX_OK) {
        return rc;
    }

    tollctl_cmd_init(&cmd, "SMEMBERS");
    tollctl_cmd_add_str(&cmd, TOLL_REDIS_KEY_INDEX);

    ids = tollctl_redis_run(ctl, &cmd);
    if (ids == NULL) {
        return EX_UNAVAILABLE;
    }

    if (ids->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(ids);
        return tollctl_error(EX_UNAVAILABLE, "redis %s: SMEMBERS: "
                             "unexpected reply", ctl->addr.text);
    }

    qsort(ids->element, ids->elements, sizeof(redisReply *), tollctl_id_cmp);

    records = json_array();
    if (records == NULL) {
        freeReplyObject(ids);
        return tollctl_error(EX_OSERR, "out of memory");
    }

    now = time(NULL);
    rc = EX_OK;

    for (i = 0; i < ids->elements && rc == EX_OK; i += n) {
        n = ids->elements - i;
        if (n > TOLLCTL_LIST_BATCH_MAX) {
            n = TOLLCTL_LIST_BATCH_MAX;
        }

        rc = tollctl_list_batch(ctl, ids->element + i, n, records, now);
    }

    freeReplyObject(ids);

    if (rc == EX_OK) {
        if (ctl->json) {
            rc = tollctl_print_json(records);

        } else {
            tollctl_print_table(records);
        }
    }

    json_decref(records);

    return rc;
}


/* one round trip of HGETALLs; ids whose record is gone are skipped */
static int
tollctl_list_batch(tollctl_t *ctl, redisReply **ids, size_t n,
    json_t *records, time_t now)
{
    int             rc;
    char            names[TOLLCTL_LIST_BATCH_MAX][TOLL_REDIS_KEY_NAME_MAX + 1];
    size_t          i, m;
    redisReply     *replies[TOLLCTL_LIST_BATCH_MAX];
    redisReply     *valid[TOLLCTL_LIST_BATCH_MAX];
    tollctl_cmd_t   cmds[TOLLCTL_LIST_BATCH_MAX];

    assert(n <= TOLLCTL_LIST_BATCH_MAX);

    m = 0;

    for (i = 0; i < n; i++) {
        if (ids[i]->type != REDIS_REPLY_STRING
            || toll_key_redis_name((const unsigned char *) ids[i]->str,
                                   ids[i]->len, names[m])
               == 0)
        {
            /* a warning: the other keys are still worth listing */
            (void) tollctl_error(EX_OK, "skipped a malformed key id in "
                                 TOLL_REDIS_KEY_INDEX);
            continue;
        }

        tollctl_cmd_init(&cmds[m], "HGETALL");
        tollctl_cmd_add_str(&cmds[m], names[m]);
        valid[m++] = ids[i];
    }

    if (m == 0) {
        return EX_OK;
    }

    if (tollctl_redis_pipeline(ctl, cmds, m, replies) != 0) {
        return EX_UNAVAILABLE;
    }

    rc = EX_OK;

    for (i = 0; i < m; i++) {
        if (rc == EX_OK) {
            rc = tollctl_list_add(ctl, records, valid[i], replies[i], now);
        }

        freeReplyObject(replies[i]);
    }

    return rc;
}


static int
tollctl_list_add(tollctl_t *ctl, json_t *records, const redisReply *id,
    const redisReply *hash, time_t now)
{
    int      rc;
    json_t  *record;

    rc = tollctl_record_check(ctl, hash);

    if (rc != EX_OK || hash->elements == 0) {
        return rc;
    }

    record = tollctl_record_json(id->str, id->len, hash, now);
    if (record == NULL) {
        return tollctl_error(EX_DATAERR, "the record of key %s holds a "
                             "field that is not UTF-8 text", id->str);
    }

    if (json_array_append_new(records, record) != 0) {
        return tollctl_error(EX_OSERR, "out of memory");
    }

    return EX_OK;
}


static int
tollctl_id_cmp(const void *a, const void *b)
{
    int                r;
    size_t             len;
    const redisReply  *x, *y;

    x = *(const redisReply * const *) a;
    y = *(const redisReply * const *) b;

    len = (x->len < y->len) ? x->len : y->len;

    r = memcmp(x->str, y->str, len);
    if (r != 0) {
        return r;
    }

    return (x->len > y->len) - (x->len < y->len);
}


/* the options and KEY_ID of revoke and show; connects when they are fine */
static int
tollctl_key_id_args(tollctl_t *ctl, int argc, char **argv,
    const char **key_id, char *name)
{
    int  rc;

    rc = tollctl_verb_args(ctl, argc, argv, key_id);
    if (rc != EX_OK) {
        return rc;
    }

    if (toll_key_redis_name((const unsigned char *) *key_id,
                            strlen(*key_id), name)
        == 0)
    {
        return tollctl_error(EX_DATAERR,
                             "invalid key id \"%s\": use 1 to %d of "
                             "A-Z a-z 0-9 _ -, e.g. tk_0123456789abcdef",
                             *key_id, TOLL_KEY_ID_LEN_MAX);
    }

    return tollctl_connect(ctl);
}


static int
tollctl_record_get(tollctl_t *ctl, const char *key_id, const char *name,
    json_t **record)
{
    int             rc;
    redisReply     *hash;
    tollctl_cmd_t   cmd;

    tollctl_cmd_init(&cmd, "HGETALL");
    tollctl_cmd_add_str(&cmd, name);

    hash = tollctl_redis_run(ctl, &cmd);
    if (hash == NULL) {
        return EX_UNAVAILABLE;
    }

    rc = tollctl_record_check(ctl, hash);

    if (rc == EX_OK && hash->elements == 0) {
        rc = tollctl_error(EX_NOINPUT, "no key %s; \"tollctl key list\" "
                           "shows the keys", key_id);
    }

    if (rc == EX_OK) {
        *record = tollctl_record_json(key_id, strlen(key_id), hash,
                                      time(NULL));

        if (*record == NULL) {
            rc = tollctl_error(EX_DATAERR, "the record of key %s holds a "
                               "field that is not UTF-8 text", key_id);
        }
    }

    freeReplyObject(hash);

    return rc;
}


/* HGETALL answers an array of field, value, field, value... */
static int
tollctl_record_check(tollctl_t *ctl, const redisReply *hash)
{
    size_t  i;

    if (hash->type != REDIS_REPLY_ARRAY || hash->elements % 2 != 0) {
        goto unexpected;
    }

    for (i = 0; i < hash->elements; i++) {
        if (hash->element[i]->type != REDIS_REPLY_STRING) {
            goto unexpected;
        }
    }

    return EX_OK;

unexpected:

    return tollctl_error(EX_UNAVAILABLE, "redis %s: HGETALL: unexpected "
                         "reply", ctl->addr.text);
}


/*
 * What "key show" prints: key_id, the known fields in a fixed order
 * (absent ones as null), the computed "expired", then any other field as
 * text.  Never secret_sha256.  Returns NULL when a value is not UTF-8.
 */
static json_t *
tollctl_record_json(const char *key_id, size_t key_id_len,
    const redisReply *hash, time_t now)
{
    int                     rc;
    size_t                  i;
    json_t                 *obj;
    const redisReply       *name, *value;
    const tollctl_field_t  *f;

    obj = json_object();
    if (obj == NULL) {
        return NULL;
    }

    rc = json_object_set_new(obj, TOLLCTL_FIELD_KEY_ID,
                             json_stringn(key_id, key_id_len));

    for (i = 0; i < TOLLCTL_NELTS(tollctl_fields); i++) {
        f = &tollctl_fields[i];
        value = tollctl_hash_get(hash, f->name);

        rc |= json_object_set_new(obj, f->name, tollctl_field_json(f, value));

        if (f->kind == TOLLCTL_KIND_EXPIRY) {
            rc |= json_object_set_new(obj, TOLLCTL_FIELD_EXPIRED,
                                      tollctl_expired_json(value, now));
        }
    }

    for (i = 0; i < hash->elements; i += 2) {
        name = hash->element[i];
        value = hash->element[i + 1];

        if (tollctl_field_extra(name)) {
            rc |= json_object_setn_new(obj, name->str, name->len,
                                       json_stringn(value->str, value->len));
        }
    }

    if (rc != 0) {
        json_decref(obj);
        return NULL;
    }

    return obj;
}


static const redisReply *
tollctl_hash_get(const redisReply *hash, const char *field)
{
    size_t             i, len;
    const redisReply  *name;

    len = strlen(field);

    for (i = 0; i < hash->elements; i += 2) {
        name = hash->element[i];

        if (name->len == len && memcmp(name->str, field, len) == 0) {
            return hash->element[i + 1];
        }
    }

    return NULL;
}


/* a stored field shown as it is: not known, not computed, not the hash */
static int
tollctl_field_extra(const redisReply *name)
{
    size_t        i;
    static const char  *hidden[] = {
        TOLL_FIELD_SECRET_SHA256, TOLLCTL_FIELD_KEY_ID, TOLLCTL_FIELD_EXPIRED
    };

    if (strlen(name->str) != name->len) {
        return 1;
    }

    for (i = 0; i < TOLLCTL_NELTS(hidden); i++) {
        if (strcmp(name->str, hidden[i]) == 0) {
            return 0;
        }
    }

    return tollctl_field_find(name->str) == NULL;
}


static const tollctl_field_t *
tollctl_field_find(const char *name)
{
    size_t  i;

    for (i = 0; i < TOLLCTL_NELTS(tollctl_fields); i++) {
        if (strcmp(name, tollctl_fields[i].name) == 0) {
            return &tollctl_fields[i];
        }
    }

    return NULL;
}


/* a number that does not parse is shown as the text stored */
static json_t *
tollctl_field_json(const tollctl_field_t *f, const redisReply *value)
{
    long long  n;

    if (value == NULL) {
        return json_null();
    }

    if (f->kind == TOLLCTL_KIND_TEXT || tollctl_reply_ll(value, &n) != 0) {
        return json_stringn(value->str, value->len);
    }

    if (f->kind == TOLLCTL_KIND_EXPIRY && n == 0) {
        return json_null();
    }

    return json_integer(n);
}


/* true when expires_at is set and past; null when it cannot be read */
static json_t *
tollctl_expired_json(const redisReply *value, time_t now)
{
    long long  t;

    if (value == NULL) {
        return json_false();
    }

    if (tollctl_reply_ll(value, &t) != 0) {
        return json_null();
    }

    return json_boolean(t != 0 && t <= (long long) now);
}


static int
tollctl_reply_ll(const redisReply *value, long long *out)
{
    if (value->type != REDIS_REPLY_STRING
        || strlen(value->str) != value->len)
    {
        return -1;
    }

    return tollctl_parse_ll(value->str, LLONG_MIN, LLONG_MAX, out);
}


/* compact, one line: what scripts read */
static int
tollctl_print_json(json_t *value)
{
    char  *text;

    text = json_dumps(value, JSON_COMPACT);
    if (text == NULL) {
        return tollctl_error(EX_OSERR, "out of memory");
    }

    fputs(text, stdout);
    fputc('\n', stdout);

    /* allocated by jansson, so through our allocator: wiped on free */
    tollctl_json_free(text);

    return EX_OK;
}


/* "field: value" lines, values aligned */
static void
tollctl_print_record(json_t *record)
{
    int          width;
    char         buf[TOLLCTL_VALUE_STR_LEN];
    json_t      *value;
    const char  *name;

    width = 0;

    json_object_foreach(record, name, value) {
        if ((int) strlen(name) > width) {
            width = (int) strlen(name);
        }
    }

    json_object_foreach(record, name, value) {
        printf("%s:%*s %s\n", name, width - (int) strlen(name), "",
               tollctl_value_text(name, value, buf, sizeof(buf)));
    }
}


static void
tollctl_print_table(json_t *records)
{
    char         buf[TOLLCTL_TIME_STR_LEN];
    size_t       i, c, len, width[TOLLCTL_LIST_COLUMNS];
    json_t      *record;
    const char  *cells[TOLLCTL_LIST_COLUMNS];
    static const char  *header[TOLLCTL_LIST_COLUMNS] = {
        "KEY_ID", "OWNER", "ROLE", "PLAN", "STATUS", "EXPIRES_AT"
    };

    for (c = 0; c < TOLLCTL_LIST_COLUMNS; c++) {
        width[c] = strlen(header[c]);
    }

    json_array_foreach(records, i, record) {
        tollctl_list_cells(record, cells, buf, sizeof(buf));

        for (c = 0; c < TOLLCTL_LIST_COLUMNS; c++) {
            len = strlen(cells[c]);
            if (len > width[c]) {
                width[c] = len;
            }
        }
    }

    for (c = 0; c < TOLLCTL_LIST_COLUMNS - 1; c++) {
        printf("%-*s  ", (int) width[c], header[c]);
    }

    printf("%s\n", header[c]);

    json_array_foreach(records, i, record) {
        tollctl_list_cells(record, cells, buf, sizeof(buf));

        for (c = 0; c < TOLLCTL_LIST_COLUMNS - 1; c++) {
            printf("%-*s  ", (int) width[c], cells[c]);
        }

        printf("%s\n", cells[c]);
    }
}


/* buf holds the expiry date, so cells live as long as buf and record */
static void
tollctl_list_cells(json_t *record, const char *cells[TOLLCTL_LIST_COLUMNS],
    char *buf, size_t size)
{
    size_t       i;
    json_t      *value, *expired;
    const char  *status;
    static const char  *names[TOLLCTL_LIST_COLUMNS - 2] = {
        TOLLCTL_FIELD_KEY_ID, TOLL_FIELD_OWNER, TOLL_FIELD_ROLE,
        TOLL_FIELD_PLAN
    };

    for (i = 0; i < TOLLCTL_NELTS(names); i++) {
        value = json_object_get(record, names[i]);
        cells[i] = json_is_string(value) ? json_string_value(value) : "-";
    }

    value = json_object_get(record, TOLL_FIELD_STATUS);
    status = json_is_string(value) ? json_string_value(value) : "-";
    expired = json_object_get(record, TOLLCTL_FIELD_EXPIRED);

    /* an active key past its expiry is refused: say so */
    if (strcmp(status, TOLL_STATUS_ACTIVE) == 0 && json_is_true(expired))
    {
        status = TOLLCTL_STATUS_EXPIRED;
    }

    cells[i++] = status;

    value = json_object_get(record, TOLL_FIELD_EXPIRES_AT);

    if (json_is_integer(value)) {
        cells[i] = tollctl_time_text(json_integer_value(value), buf, size);

    } else if (json_is_string(value)) {
        cells[i] = json_string_value(value);

    } else {
        cells[i] = "never";
    }
}


static const char *
tollctl_value_text(const char *name, json_t *value, char *buf, size_t size)
{
    char                    date[TOLLCTL_TIME_STR_LEN];
    json_int_t              n;
    const tollctl_field_t  *f;

    f = tollctl_field_find(name);

    switch (json_typeof(value)) {

    case JSON_STRING:
        return json_string_value(value);

    case JSON_TRUE:
        return "true";

    case JSON_FALSE:
        return "false";

    case JSON_NULL:
        return (f != NULL && f->kind == TOLLCTL_KIND_EXPIRY) ? "never" : "-";

    case JSON_INTEGER:
        n = json_integer_value(value);

        if (f != NULL
            && (f->kind == TOLLCTL_KIND_TIME || f->kind == TOLLCTL_KIND_EXPIRY))
        {
            snprintf(buf, size, "%" JSON_INTEGER_FORMAT " (%s)", n,
                     tollctl_time_text(n, date, sizeof(date)));

        } else {
            snprintf(buf, size, "%" JSON_INTEGER_FORMAT, n);
        }

        return buf;

    default:
        return "?";
    }
}


/* ISO 8601 in UTC; the bare number when the date cannot be formed */
static const char *
tollctl_time_text(long long t, char *buf, size_t size)
{
    time_t     tt;
    struct tm  tm;

    tt = (time_t) t;

    if (gmtime_r(&tt, &tm) == NULL
        || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
    {
        snprintf(buf, size, "%lld", t);
    }

    return buf;
}


/* a full disk or a closed pipe must not pass for success */
static int
tollctl_stdout_flush(void)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        return -1;
    }

    return 0;
}


static void *
tollctl_json_malloc(size_t size)
{
    tollctl_alloc_hdr_t  *hdr;

    if (size > SIZE_MAX - sizeof(tollctl_alloc_hdr_t)) {
        return NULL;
    }

    hdr = malloc(sizeof(tollctl_alloc_hdr_t) + size);
    if (hdr == NULL) {
        return NULL;
    }

    hdr->size = size;

    return hdr + 1;
}


static void
tollctl_json_free(void *p)
{
    tollctl_alloc_hdr_t  *hdr;

    if (p == NULL) {
        return;
    }

    hdr = (tollctl_alloc_hdr_t *) p - 1;

    OPENSSL_cleanse(hdr, sizeof(tollctl_alloc_hdr_t) + hdr->size);
    free(hdr);
}
