/*
 * tollctl: the operator CLI for toll's API keys, ledger and settlements.
 *
 * This file is the entry: main(), the global options, the dispatch of a
 * command to its verb, the help and the error messages.  The rooms:
 * tollctl_redis.c (the Redis client), tollctl_keys.c (key verbs),
 * tollctl_ledger.c (ledger and settlement verbs), tollctl_reconcile.c,
 * tollctl_quarantine.c, tollctl_output.c (what they print).
 */

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "tollctl.h"
#include "tollctl_keys.h"
#include "tollctl_ledger.h"
#include "tollctl_quarantine.h"


#define TOLLCTL_VERSION               "0.1.0"


/* long-only options take values past any char */
enum {
    TOLLCTL_OPT_REDIS = 256,
    TOLLCTL_OPT_PASSWORD,
    TOLLCTL_OPT_DB,
    TOLLCTL_OPT_TIMEOUT_MS,
    TOLLCTL_OPT_LEDGER,
    TOLLCTL_OPT_JSON
};


typedef int (*tollctl_verb_pt)(tollctl_t *ctl, int argc, char **argv);

typedef struct {
    const char       *name;
    tollctl_verb_pt   handler;
} tollctl_verb_t;


static int tollctl_parse_global(tollctl_t *ctl, int argc, char **argv);
static int tollctl_dispatch(tollctl_t *ctl, int argc, char **argv);


static const tollctl_verb_t  tollctl_key_verbs[] = {
    { "create", tollctl_key_create },
    { "revoke", tollctl_key_revoke },
    { "list",   tollctl_key_list },
    { "show",   tollctl_key_show }
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
