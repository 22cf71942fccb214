/*
 * tollctl: the operator CLI for toll's API keys, ledger and settlements.
 *
 * This file is the entry: main(), the global options, the dispatch of a
 * command to its verb, the help and the error messages.  The rooms:
 * tollctl_redis.c (the Redis client), tollctl_keys.c (key verbs),
 * tollctl_balance*.c (prepaid balances), tollctl_ledger.c (ledger and
 * settlement verbs), tollctl_reconcile.c, tollctl_quarantine.c,
 * tollctl_output.c (what they print).
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

#include "toll_log.h"
#include "toll_parse.h"
#include "tollctl.h"
#include "tollctl_balance.h"
#include "tollctl_buyer.h"
#include "tollctl_keys.h"
#include "tollctl_key_import.h"
#include "tollctl_ledger.h"
#include "tollctl_quarantine.h"
#include "tollctl_reconcile.h"


#define TOLLCTL_VERSION               "0.1.0"

/* getopt_long's value of a long-only option: past any char */
#define TOLLCTL_OPT_VAL               256

#define TOLLCTL_O(name)               TOLLCTL_OPT_BIT(TOLLCTL_OPT_ ## name)

/* global options: before the command, and stop at it */
#define TOLLCTL_GLOBAL_OPTIONS                                                \
    (TOLLCTL_O(REDIS) | TOLLCTL_O(PASSWORD) | TOLLCTL_O(DB)                   \
     | TOLLCTL_O(TIMEOUT_MS) | TOLLCTL_O(LEDGER) | TOLLCTL_O(JSON)           \
     | TOLLCTL_O(HELP) | TOLLCTL_O(VERSION))

/* what every verb takes besides its own */
#define TOLLCTL_VERB_OPTIONS          (TOLLCTL_O(JSON) | TOLLCTL_O(HELP))

/* a verb's options are bits of an unsigned */
_Static_assert(TOLLCTL_OPT_N <= 32, "too many options for a mask");


typedef struct {
    const char       *name;
    int               has_arg;
    int               short_name;        /* 0: long only */
} tollctl_option_t;


typedef int (*tollctl_verb_pt)(tollctl_t *ctl, tollctl_opts_t *o);

/* the options of the verb are TOLLCTL_VERB_OPTIONS and those named */
typedef struct {
    const char       *noun;
    const char       *verb;              /* NULL: the noun alone */
    tollctl_verb_pt   handler;
    unsigned          options;
    int               nargs;             /* or TOLLCTL_ARGS_ANY */
    const char       *arg;               /* what "needs a" names */
    unsigned          in_order;          /* options before arguments */
    const char       *help;
} tollctl_verb_t;


static void tollctl_help(void);
static int tollctl_parse_global(tollctl_t *ctl, int argc, char **argv,
    tollctl_opts_t *o);
static int tollctl_dispatch(tollctl_t *ctl, int argc, char **argv);
static int tollctl_run(tollctl_t *ctl, const tollctl_verb_t *v,
    const char *what, int argc, char **argv);
static int tollctl_opts_parse(tollctl_t *ctl, unsigned options,
    unsigned in_order, int argc, char **argv, tollctl_opts_t *o);
static int tollctl_option_error(int c, char **argv);


static const tollctl_option_t  tollctl_options[TOLLCTL_OPT_N] = {
    [TOLLCTL_OPT_HELP] =       { "help",       no_argument,       'h' },
    [TOLLCTL_OPT_VERSION] =    { "version",    no_argument,       'V' },
    [TOLLCTL_OPT_REDIS] =      { "redis",      required_argument, 0 },
    [TOLLCTL_OPT_PASSWORD] =   { "password",   required_argument, 0 },
    [TOLLCTL_OPT_DB] =         { "db",         required_argument, 0 },
    [TOLLCTL_OPT_TIMEOUT_MS] = { "timeout-ms", required_argument, 0 },
    [TOLLCTL_OPT_LEDGER] =     { "ledger",     required_argument, 0 },
    [TOLLCTL_OPT_JSON] =       { "json",       no_argument,       0 },
    [TOLLCTL_OPT_ALL] =        { "all",        no_argument,       0 },
    [TOLLCTL_OPT_OWNER] =      { "owner",      required_argument, 0 },
    [TOLLCTL_OPT_PLAN] =       { "plan",       required_argument, 0 },
    [TOLLCTL_OPT_ROLE] =       { "role",       required_argument, 0 },
    [TOLLCTL_OPT_RATE_LIMIT] = { "rate-limit", required_argument, 0 },
    [TOLLCTL_OPT_EXPIRES_IN] = { "expires-in", required_argument, 0 },
    [TOLLCTL_OPT_PROVIDER] =   { "provider",   required_argument, 0 },
    [TOLLCTL_OPT_FROM] =       { "from",       required_argument, 0 },
    [TOLLCTL_OPT_TO] =         { "to",         required_argument, 0 },
    [TOLLCTL_OPT_STATUS] =     { "status",     required_argument, 0 },
    [TOLLCTL_OPT_LIMIT] =      { "limit",      required_argument, 0 },
    [TOLLCTL_OPT_TX] =         { "tx",         required_argument, 0 },
    [TOLLCTL_OPT_ACCOUNT] =    { "account",    required_argument, 0 },
    [TOLLCTL_OPT_CURRENCY] =   { "currency",   required_argument, 0 },
    [TOLLCTL_OPT_REF] =        { "ref",        required_argument, 0 },
    [TOLLCTL_OPT_DAILY] =      { "daily",      required_argument, 0 },
    [TOLLCTL_OPT_MONTHLY] =    { "monthly",    required_argument, 0 },
    [TOLLCTL_OPT_ANCHOR] =     { "anchor",     required_argument, 0 },
    [TOLLCTL_OPT_SPEND_CAP_DAILY] =
                               { "spend-cap-daily", required_argument, 0 },
    [TOLLCTL_OPT_SPEND_CAP_MONTHLY] =
                               { "spend-cap-monthly", required_argument, 0 },
    [TOLLCTL_OPT_SCOPES] =     { "scopes",     required_argument, 0 },
    [TOLLCTL_OPT_TOKEN] =      { "token",      required_argument, 0 }
};


/* every verb, in the order of the help */
static const tollctl_verb_t  tollctl_verbs[] = {

    { "key", "create", tollctl_key_create,
      TOLLCTL_O(OWNER) | TOLLCTL_O(PLAN) | TOLLCTL_O(ROLE)
      | TOLLCTL_O(RATE_LIMIT) | TOLLCTL_O(EXPIRES_IN)
      | TOLLCTL_O(SPEND_CAP_DAILY) | TOLLCTL_O(SPEND_CAP_MONTHLY)
      | TOLLCTL_O(CURRENCY) | TOLLCTL_O(SCOPES), 0, NULL, 0,
"  key create --owner ID [--plan NAME] [--role buyer|provider|admin]\n"
"             [--scopes a,b] [--rate-limit N] [--expires-in SECONDS]\n"
"             [--spend-cap-daily AMOUNT] [--spend-cap-monthly AMOUNT]\n"
"             [--currency CUR]\n"
"                      create a key and print it once, secret included,\n"
"                      as JSON; N is requests per minute; the caps are\n"
"                      the key's, in CUR (default USD)\n" },

    { "key", "update", tollctl_key_update,
      TOLLCTL_O(SCOPES) | TOLLCTL_O(ROLE) | TOLLCTL_O(PLAN), 1, "KEY_ID", 0,
"  key update KEY_ID [--scopes a,b] [--role R] [--plan NAME]\n"
"                      change a key's scopes, role or plan (\"\" for no\n"
"                      scopes or plan); nginx sees it within\n"
"                      toll_cache_ttl\n" },

    { "key", "revoke", tollctl_key_revoke, 0, 1, "KEY_ID", 0,
"  key revoke KEY_ID   revoke a key; revoking twice is fine\n" },

    { "key", "list", tollctl_key_list, 0, 0, NULL, 0,
"  key list            list every key\n" },

    { "key", "show", tollctl_key_show, 0, 1, "KEY_ID", 0,
"  key show KEY_ID     show a key's record, never its secret or hash\n" },

    { "key", "import", tollctl_key_import,
      TOLLCTL_O(TOKEN) | TOLLCTL_O(OWNER) | TOLLCTL_O(PLAN) | TOLLCTL_O(ROLE)
      | TOLLCTL_O(RATE_LIMIT) | TOLLCTL_O(EXPIRES_IN), 0, NULL, 0,
"  key import --token TOKEN|- --owner ID [--plan NAME] [--role ROLE]\n"
"             [--rate-limit N] [--expires-in SECONDS]\n"
"                      store a one-part key another platform issued,\n"
"                      hashed; - reads it from stdin; prints its key id\n" },

    { "balance", "credit", tollctl_balance_credit,
      TOLLCTL_O(CURRENCY) | TOLLCTL_O(REF), 2, "BUYER and an AMOUNT", 0,
"\n"
"  balance credit BUYER AMOUNT [--currency CUR] --ref REF\n"
"                      add AMOUNT (\"10.50\") to the buyer's prepaid\n"
"                      balance in CUR (default USD), once per REF\n" },

    { "balance", "debit", tollctl_balance_debit,
      TOLLCTL_O(CURRENCY) | TOLLCTL_O(REF), 2, "BUYER and an AMOUNT", 0,
"  balance debit BUYER AMOUNT [--currency CUR] --ref REF\n"
"                      charge AMOUNT to the balance by hand, once per REF\n"
    },

    { "balance", "refund", tollctl_balance_refund,
      TOLLCTL_O(CURRENCY) | TOLLCTL_O(REF), 2, "BUYER and an AMOUNT", 0,
"  balance refund BUYER AMOUNT [--currency CUR] --ref REF\n"
"                      pay AMOUNT of the balance back, once per REF\n" },

    { "balance", "show", tollctl_balance_show, TOLLCTL_O(CURRENCY), 1,
      "BUYER", 0,
"  balance show BUYER [--currency CUR]\n"
"                      the buyer's balances, holds and totals, as JSON\n" },

    { "buyer", "set-cap", tollctl_buyer_set_cap,
      TOLLCTL_O(CURRENCY) | TOLLCTL_O(DAILY) | TOLLCTL_O(MONTHLY)
      | TOLLCTL_O(ANCHOR), 1, "BUYER", 0,
"\n"
"  buyer set-cap BUYER [--currency CUR] [--daily AMOUNT|none]\n"
"                [--monthly AMOUNT|none] [--anchor DAY]\n"
"                      the buyer's spend caps per UTC day and month (the\n"
"                      month starts on DAY, 1 to 28); prints buyer show\n" },

    { "buyer", "set-plan", tollctl_buyer_set_plan, 0, 2,
      "BUYER and a PLAN", 0,
"  buyer set-plan BUYER PLAN\n"
"                      the plan of the buyer's callers whose key or token\n"
"                      names none (toll_buyer_plan on)\n" },

    { "buyer", "clear-plan", tollctl_buyer_set_plan, 0, 1, "BUYER", 0,
"  buyer clear-plan BUYER\n"
"                      removes it: the default plan applies again\n" },

    { "buyer", "show", tollctl_buyer_show, TOLLCTL_O(CURRENCY), 1,
      "BUYER", 0,
"  buyer show BUYER [--currency CUR]\n"
"                      the buyer's and its keys' caps, and what today and\n"
"                      this month count as used, as JSON\n" },

    { "settlement", "create", tollctl_settlement_create,
      TOLLCTL_O(PROVIDER) | TOLLCTL_O(FROM) | TOLLCTL_O(TO), 0, NULL, 0,
"\n"
"  settlement create --provider ID --from TIME --to TIME\n"
"                      settle a provider's usage posted in [from, to);\n"
"                      TIME is 2026-03-01T00:00:00Z, 2026-03-01 or @UNIX\n" },

    { "settlement", "list", tollctl_settlement_list,
      TOLLCTL_O(PROVIDER) | TOLLCTL_O(STATUS) | TOLLCTL_O(LIMIT), 0, NULL, 0,
"  settlement list [--provider ID] [--status pending|completed]\n"
"                  [--limit N]\n"
"                      newest first, 50 unless --limit (1 to 1000)\n" },

    { "settlement", "show", tollctl_settlement_show, 0, 1, "STL_ID", 0,
"  settlement show STL_ID\n" },

    { "settlement", "pay", tollctl_settlement_pay, TOLLCTL_O(TX), 1,
      "STL_ID", 0,
"  settlement pay STL_ID --tx REF\n"
"                      record the payment, once\n" },

    { "ledger", "balance", tollctl_ledger_balance, 0, 1, "ACCOUNT", 0,
"  ledger balance ACCOUNT\n"
"                      buyer:ID, provider:ID, platform:fees, platform:cash\n"
    },

    { "ledger", "entries", tollctl_ledger_entries,
      TOLLCTL_O(ACCOUNT) | TOLLCTL_O(LIMIT), 0, NULL, 0,
"  ledger entries [--account ACCOUNT] [--limit N]\n"
"                      the latest entries, 50 unless --limit (1 to 1000)\n" },

    { "ledger", "check", tollctl_ledger_check, 0, 0, NULL, 0,
"  ledger check        verify the ledger's invariants from its rows\n" },

    { "reconcile", NULL, tollctl_reconcile, 0, 0, NULL, 0,
"  reconcile           compare Redis's usage with the ledger's\n" },

    /*
     * The verbs check their claims themselves; options come before the
     * claims, as they always did: in "replay CLAIM --json", "--json" is
     * taken as a claim.
     */

    { "quarantine", "list", tollctl_quarantine_list, TOLLCTL_O(ALL),
      TOLLCTL_ARGS_ANY, NULL, 1,
"  quarantine list     the claims toll-settle set aside: the ledger\n"
"                      refused them\n" },

    { "quarantine", "replay", tollctl_quarantine_replay, TOLLCTL_O(ALL),
      TOLLCTL_ARGS_ANY, NULL, 1,
"  quarantine replay CLAIM... | --all\n"
"                      give them back to toll-settle's next pass\n" }
};


int
main(int argc, char **argv)
{
    int             rc;
    tollctl_t       ctl;
    tollctl_opts_t  o;

    toll_log_program("tollctl");

    /* a closed socket or pipe must fail a write, not kill us silently */
    signal(SIGPIPE, SIG_IGN);

    json_set_alloc_funcs(tollctl_json_malloc, tollctl_json_free);

    memset(&ctl, 0, sizeof(ctl));

    rc = tollctl_parse_global(&ctl, argc, argv, &o);

    if (rc == EX_OK) {
        rc = tollctl_dispatch(&ctl, o.nargs, o.args);
    }

    toll_store_free(ctl.redis);

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

    va_start(args, fmt);
    toll_logv(fmt, args);
    va_end(args);

    return rc;
}


int
tollctl_usage_error(const char *fmt, ...)
{
    char     msg[TOLL_LOG_MESSAGE_MAX];
    va_list  args;

    va_start(args, fmt);
    vsnprintf(msg, sizeof(msg), fmt, args);
    va_end(args);

    toll_log("%s; see 'tollctl --help'", msg);

    return EX_USAGE;
}


/* getopt's own messages are off (opterr = 0): one line of ours instead */
static int
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


static void
tollctl_help(void)
{
    size_t  i;

    printf(
"usage: tollctl [OPTIONS] COMMAND ...\n"
"\n"
"Manage toll's API keys and prepaid balances in Redis, read its ledger,\n"
"record settlements.\n"
"\n"
"commands:\n");

    for (i = 0; i < TOLLCTL_NELTS(tollctl_verbs); i++) {
        fputs(tollctl_verbs[i].help, stdout);
    }

    printf(
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
"  --json              JSON output for every command but key create and\n"
"                      balance (always JSON); may also follow the verb\n"
"  -h, --help          print this help and exit\n"
"  -V, --version       print the version and exit\n"
"\n"
"exit status: 0 done, 64 usage error, 65 invalid value or refused data\n"
"(a settlement that overlaps, is empty, ends in the future or is paid\n"
"already; a failed ledger check; a reconcile difference; a balance ref\n"
"used for another movement, or a take above what is available), 66 no\n"
"such key, settlement, account or ledger file, 69 Redis unreachable or\n"
"refused a command, 70 internal error, 71 out of memory or no clock, 74\n"
"cannot write the output or read the ledger, 75 key kept changing while\n"
"being revoked, or the ledger is busy (run again)\n",
        TOLLCTL_TIMEOUT_MS_DEFAULT);
}


/* stops at COMMAND, so that the verbs parse their own options */
static int
tollctl_parse_global(tollctl_t *ctl, int argc, char **argv,
    tollctl_opts_t *o)
{
    int  rc;

    rc = tollctl_opts_parse(ctl, TOLLCTL_GLOBAL_OPTIONS, 1, argc, argv, o);
    if (rc != EX_OK) {
        return rc;
    }

    ctl->redis_opt = o->opt[TOLLCTL_OPT_REDIS];
    ctl->password = o->opt[TOLLCTL_OPT_PASSWORD];
    ctl->db_opt = o->opt[TOLLCTL_OPT_DB];
    ctl->timeout_ms_opt = o->opt[TOLLCTL_OPT_TIMEOUT_MS];
    ctl->ledger_opt = o->opt[TOLLCTL_OPT_LEDGER];

    return EX_OK;
}


/* argv[0] is the command: finds its verb in the table and runs it */
static int
tollctl_dispatch(tollctl_t *ctl, int argc, char **argv)
{
    char                   what[64];
    size_t                 i;
    const tollctl_verb_t  *v, *noun;

    if (argc == 0) {
        return tollctl_usage_error("missing command");
    }

    noun = NULL;

    for (i = 0; i < TOLLCTL_NELTS(tollctl_verbs); i++) {
        if (strcmp(argv[0], tollctl_verbs[i].noun) == 0) {
            noun = &tollctl_verbs[i];
            break;
        }
    }

    if (noun == NULL) {
        return tollctl_usage_error("unknown command \"%s\"", argv[0]);
    }

    if (noun->verb == NULL) {
        return tollctl_run(ctl, noun, noun->noun, argc, argv);
    }

    if (argc == 1) {
        return tollctl_usage_error("missing verb after \"%s\"", argv[0]);
    }

    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        tollctl_help();
        return TOLLCTL_DONE;
    }

    for (v = noun; v < tollctl_verbs + TOLLCTL_NELTS(tollctl_verbs); v++) {
        if (strcmp(v->noun, noun->noun) == 0
            && strcmp(v->verb, argv[1]) == 0)
        {
            snprintf(what, sizeof(what), "%s %s", v->noun, v->verb);

            /* the verb sees itself as argv[0], as getopt expects */
            return tollctl_run(ctl, v, what, argc - 1, argv + 1);
        }
    }

    return tollctl_usage_error("unknown verb \"%s %s\"", argv[0], argv[1]);
}


/* the options and arguments of a verb, checked as its row says; then it */
static int
tollctl_run(tollctl_t *ctl, const tollctl_verb_t *v, const char *what,
    int argc, char **argv)
{
    int             rc;
    tollctl_opts_t  o;

    rc = tollctl_opts_parse(ctl, TOLLCTL_VERB_OPTIONS | v->options,
                            v->in_order, argc, argv, &o);
    if (rc != EX_OK) {
        return rc;
    }

    if (v->nargs != TOLLCTL_ARGS_ANY && o.nargs < v->nargs) {
        return tollctl_usage_error("\"%s\" needs a %s", what, v->arg);
    }

    if (v->nargs != TOLLCTL_ARGS_ANY && o.nargs > v->nargs) {
        return tollctl_usage_error("unexpected argument \"%s\" to \"%s\"",
                                   o.args[v->nargs], what);
    }

    return v->handler(ctl, &o);
}


/*
 * The one getopt_long() loop: the options named in the mask, from
 * argv[1]; --help and --version end the run at once, as they come.
 * in_order stops at the first argument, as the global options stop at
 * the command.
 */
static int
tollctl_opts_parse(tollctl_t *ctl, unsigned options, unsigned in_order,
    int argc, char **argv, tollctl_opts_t *o)
{
    int                      c, i, n;
    char                     shorts[2 + TOLLCTL_OPT_N + 1], *p;
    struct option            longopts[TOLLCTL_OPT_N + 1];
    const tollctl_option_t  *opt;

    memset(o, 0, sizeof(tollctl_opts_t));

    p = shorts;

    if (in_order) {
        *p++ = '+';
    }

    /* getopt's own messages are off: tollctl_option_error() says it */
    *p++ = ':';
    n = 0;

    for (i = 0; i < TOLLCTL_OPT_N; i++) {
        if (!(options & TOLLCTL_OPT_BIT(i))) {
            continue;
        }

        opt = &tollctl_options[i];

        longopts[n].name = opt->name;
        longopts[n].has_arg = opt->has_arg;
        longopts[n].flag = NULL;
        longopts[n].val = opt->short_name ? opt->short_name
                                          : TOLLCTL_OPT_VAL + i;
        n++;

        if (opt->short_name) {
            *p++ = (char) opt->short_name;
        }
    }

    memset(&longopts[n], 0, sizeof(struct option));
    *p = '\0';

    /* optind = 0 makes glibc's getopt start afresh on a new argv */
    optind = 0;
    opterr = 0;

    while ((c = getopt_long(argc, argv, shorts, longopts, NULL)) != -1) {

        if (c == 'h') {
            tollctl_help();
            return TOLLCTL_DONE;
        }

        if (c == 'V') {
            printf("tollctl " TOLLCTL_VERSION "\n");
            return TOLLCTL_DONE;
        }

        if (c < TOLLCTL_OPT_VAL) {
            return tollctl_option_error(c, argv);
        }

        i = c - TOLLCTL_OPT_VAL;

        if (i == TOLLCTL_OPT_JSON) {
            ctl->json = 1;
        }

        o->opt[i] = (optarg != NULL) ? optarg : "";
    }

    o->args = argv + optind;
    o->nargs = argc - optind;

    return EX_OK;
}
