/*
 * tollctl: the ledger, settlement and reconcile commands
 * (docs/tollctl.md, "Ledger and settlements").
 *
 * Readers open the ledger read-only: SQLite's WAL lets them run beside
 * toll-settle without blocking it.  The two writers (settlement create
 * and pay) open it read-write but never create it: a ledger is made by
 * toll-settle, with its id bound to the Redis it drains.
 *
 * reconcile reads Redis and the ledger and checks, per buyer, day and
 * service, that what the meter recorded is either still pending in Redis
 * or posted to the ledger, to the call and the micro-unit.
 */

#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <sqlite3.h>

#include "toll_key.h"
#include "toll_ledger.h"
#include "toll_money.h"
#include "tollctl.h"
#include "tollctl_ledger.h"


/* --limit of settlement list and ledger entries */
#define TOLLCTL_LIMIT_DEFAULT         50
#define TOLLCTL_LIMIT_MAX             1000

/* the latest time --from and --to take: 9999-12-31T23:59:59Z */
#define TOLLCTL_TIME_MAX              253402300799LL
#define TOLLCTL_YEAR_MIN              1970
#define TOLLCTL_YEAR_MAX              9999
#define TOLLCTL_SEC_PER_DAY           86400
/* "2026-03-01" and "2026-03-01T00:00:00Z" */
#define TOLLCTL_DATE_LEN              10
#define TOLLCTL_DATETIME_LEN          20

#define TOLLCTL_ERR_LEN_MAX           512
/* an amount as printed: a sign, toll_money_format's digits, ".00" */
#define TOLLCTL_AMOUNT_LEN_MAX        (TOLL_MONEY_STR_MAX + 4)
#define TOLLCTL_CELL_LEN_MAX          64
#define TOLLCTL_TABLE_COLUMNS_MAX     12
/* the positional arguments a verb takes: STL_ID or ACCOUNT */
#define TOLLCTL_ARGS_MAX              1

#define TOLLCTL_ACCOUNT_BUYER         "buyer:"
#define TOLLCTL_ACCOUNT_PROVIDER      "provider:"

/*
 * reconcile.  The key names are those of docs/settle.md ("The drain
 * protocol"); the meter and toll-settle write them.
 */
#define TOLLCTL_USAGE_PREFIX          "toll:usage:{"
#define TOLLCTL_USAGE_MATCH           "toll:usage:{*}:*"
#define TOLLCTL_MIRROR_SUFFIX         ":drained"
#define TOLLCTL_DRAIN_PREFIX          "toll:drain:{"
#define TOLLCTL_DRAIN_OPEN            "toll:drain:open"
#define TOLLCTL_DRAIN_QUARANTINE      "toll:drain:quarantine"
#define TOLLCTL_DAY_LEN               8
#define TOLLCTL_BATCH_ID_LEN          32
#define TOLLCTL_REDIS_NAME_LEN_MAX    1024
/* names per SCAN call: a hint to Redis, not a bound */
#define TOLLCTL_SCAN_COUNT            "1000"
/* SCAN calls, so that a runaway keyspace cannot hold us forever */
#define TOLLCTL_SCAN_CALLS_MAX        1000000
/* (buyer, day) pairs read in one MULTI, claims in one pipeline */
#define TOLLCTL_RECONCILE_BATCH_MAX   100
/* counts held in memory: a part is one service of one hash or row */
#define TOLLCTL_RECONCILE_PARTS_MAX   10000000
/* services in one usage hash, as toll-settle accepts them */
#define TOLLCTL_SERVICES_MAX          4096
/* differing rows listed; the count is always complete */
#define TOLLCTL_RECONCILE_SHOWN_MAX   1000
/*
 * Reading Redis and then the ledger is not one snapshot: a batch that
 * toll-settle claims and posts in between is seen twice or not at all.
 * When that may have happened and there are differences, read again.
 */
#define TOLLCTL_RECONCILE_ATTEMPTS_MAX  3
#define TOLLCTL_RECONCILE_RETRY_MS    500

#define TOLLCTL_METRICS               4


/* long-only options of these commands take values past tollctl.c's */
enum {
    TOLLCTL_LOPT_JSON = 512,
    TOLLCTL_LOPT_PROVIDER,
    TOLLCTL_LOPT_FROM,
    TOLLCTL_LOPT_TO,
    TOLLCTL_LOPT_STATUS,
    TOLLCTL_LOPT_LIMIT,
    TOLLCTL_LOPT_TX,
    TOLLCTL_LOPT_ACCOUNT
};


/* the options of every verb here, as given */
typedef struct {
    const char       *provider;
    const char       *from;
    const char       *to;
    const char       *status;
    const char       *limit;
    const char       *tx;
    const char       *account;
    const char       *args[TOLLCTL_ARGS_MAX];
} tollctl_lopts_t;


typedef int (*tollctl_lverb_pt)(tollctl_t *ctl, tollctl_lopts_t *o);

typedef struct {
    const char              *name;
    tollctl_lverb_pt         handler;
    const struct option     *options;
    const char              *arg;        /* NULL: takes no argument */
} tollctl_lverb_t;


typedef struct {
    const char       *header;
    const char       *key;
    int               right;             /* numbers align right */
} tollctl_column_t;


/* where a part of reconcile's counts comes from */
typedef enum {
    TOLLCTL_SRC_MIRROR_DAY = 0,          /* the day's mirror exists */
    TOLLCTL_SRC_LIVE,                    /* usage hash: recorded, pending */
    TOLLCTL_SRC_MIRROR,                  /* drained: recorded */
    TOLLCTL_SRC_CLAIM,                   /* claimed, not posted: pending */
    TOLLCTL_SRC_LEDGER,                  /* posted */
    TOLLCTL_SRC_NONE                     /* a claim found in the ledger */
} tollctl_src_e;


typedef struct {
    char             *buyer;
    char             *service;            /* "" for MIRROR_DAY */
    char              day[TOLLCTL_DAY_LEN + 1];
    char              batch[TOLLCTL_BATCH_ID_LEN + 1];   /* CLAIM only */
    tollctl_src_e     src;
    int64_t           v[TOLLCTL_METRICS];
} tollctl_part_t;


typedef struct {
    int64_t           recorded[TOLLCTL_METRICS];
    int64_t           pending[TOLLCTL_METRICS];
    int64_t           ledger[TOLLCTL_METRICS];
} tollctl_sums_t;


typedef struct {
    tollctl_part_t   *parts;
    size_t            nparts;
    size_t            cap;

    /* toll:drain:open as read before and after, sorted */
    char            **open_before;
    size_t            nopen_before;
    char            **open_after;
    size_t            nopen_after;

    /* claims announced in toll:drain:open whose key was missing */
    char            **intents;
    size_t            nintents;

    int64_t           batches_before;
    int64_t           batches_after;
    int               in_flight;
} tollctl_recon_t;


static int tollctl_lverb_run(tollctl_t *ctl, const char *cmd,
    const tollctl_lverb_t *verbs, size_t n, int argc, char **argv);
static int tollctl_lopts_parse(tollctl_t *ctl, const char *what,
    const tollctl_lverb_t *verb, int argc, char **argv, tollctl_lopts_t *o);

static const char *tollctl_ledger_path(tollctl_t *ctl);
static int tollctl_ledger_open(tollctl_t *ctl, int write,
    toll_ledger_t **lg);
static int tollctl_ledger_fail(toll_ledger_t *lg, int rc, const char *hint);
static int tollctl_ledger_status(int rc);

static int tollctl_settlement_create(tollctl_t *ctl, tollctl_lopts_t *o);
static int tollctl_settlement_list(tollctl_t *ctl, tollctl_lopts_t *o);
static int tollctl_settlement_show(tollctl_t *ctl, tollctl_lopts_t *o);
static int tollctl_settlement_pay(tollctl_t *ctl, tollctl_lopts_t *o);
static int tollctl_ledger_balance(tollctl_t *ctl, tollctl_lopts_t *o);
static int tollctl_ledger_entries(tollctl_t *ctl, tollctl_lopts_t *o);
static int tollctl_ledger_check(tollctl_t *ctl, tollctl_lopts_t *o);
static int tollctl_reconcile(tollctl_t *ctl, tollctl_lopts_t *o);

static int tollctl_provider_check(const char *opt, const char *provider);
static int tollctl_account_check(const char *opt, const char *account);
static int tollctl_limit_parse(const char *limit, int64_t *out);
static int tollctl_time_parse(const char *opt, const char *s, int64_t *t);
static int64_t tollctl_days_from_civil(int64_t y, int64_t m, int64_t d);
static int tollctl_digits(const char *s, size_t n, int64_t *out);
static int tollctl_tx_ref_valid(const char *ref);

static int tollctl_output(tollctl_t *ctl, json_t *value,
    void (*text)(json_t *value));
static void tollctl_print_fields(json_t *obj);
static void tollctl_print_settlements(json_t *list);
static void tollctl_print_entries(json_t *list);
static void tollctl_print_check(json_t *report);
static void tollctl_print_table(json_t *rows, const tollctl_column_t *cols,
    size_t ncols);
static const char *tollctl_cell(json_t *v, char *buf, size_t size);
static void tollctl_amount_text(int64_t micros, int sign, char *buf,
    size_t size);

static int tollctl_recon_read(tollctl_t *ctl, toll_ledger_t *lg,
    tollctl_recon_t *r);
static void tollctl_recon_free(tollctl_recon_t *r);
static int tollctl_recon_open_set(tollctl_t *ctl, char ***members,
    size_t *n);
static int tollctl_recon_claims(tollctl_t *ctl, tollctl_recon_t *r);
static int tollctl_recon_claims_batch(tollctl_t *ctl, tollctl_recon_t *r,
    char **names, size_t n);
static int tollctl_recon_scan(tollctl_t *ctl, char ***days, size_t *ndays);
static int tollctl_recon_hashes(tollctl_t *ctl, tollctl_recon_t *r,
    char **days, size_t ndays);
static int tollctl_recon_ledger(toll_ledger_t *lg, tollctl_recon_t *r);
static int tollctl_recon_hash(tollctl_recon_t *r, const char *name,
    const redisReply *hash, const char *buyer, const char *day,
    tollctl_src_e src, const char *batch);
static int tollctl_recon_add(tollctl_recon_t *r, const char *buyer,
    const char *day, const char *service, size_t service_len,
    tollctl_src_e src, const char *batch, tollctl_part_t **out);
static int tollctl_recon_result(tollctl_recon_t *r, json_t **out,
    int64_t *ndiff);
static int tollctl_recon_row(json_t *diffs, const tollctl_part_t *first,
    const tollctl_sums_t *s);
static json_t *tollctl_metrics_json(const int64_t v[TOLLCTL_METRICS]);
static void tollctl_print_reconcile(json_t *result);
static int tollctl_usage_name(const char *name, size_t len, char *buyer,
    char *day, int *mirror);
static int tollctl_claim_name(const char *name, size_t len, char *buyer,
    char *day, char *batch);
static int tollctl_count_parse(const redisReply *v, int64_t *out);
static int tollctl_part_cmp(const void *a, const void *b);
static int tollctl_str_cmp(const void *a, const void *b);
static void tollctl_strs_free(char **strs, size_t n);
static void tollctl_sleep_ms(long ms);


static const char  *tollctl_metrics[TOLLCTL_METRICS] = {
    "calls", "free_calls", "paid_calls", "amount_micros"
};


static const struct option  tollctl_json_options[] = {
    { "json",       no_argument,       NULL, TOLLCTL_LOPT_JSON },
    { "help",       no_argument,       NULL, 'h' },
    { NULL,         0,                 NULL, 0 }
};

static const struct option  tollctl_create_options[] = {
    { "provider",   required_argument, NULL, TOLLCTL_LOPT_PROVIDER },
    { "from",       required_argument, NULL, TOLLCTL_LOPT_FROM },
    { "to",         required_argument, NULL, TOLLCTL_LOPT_TO },
    { "json",       no_argument,       NULL, TOLLCTL_LOPT_JSON },
    { "help",       no_argument,       NULL, 'h' },
    { NULL,         0,                 NULL, 0 }
};

static const struct option  tollctl_list_options[] = {
    { "provider",   required_argument, NULL, TOLLCTL_LOPT_PROVIDER },
    { "status",     required_argument, NULL, TOLLCTL_LOPT_STATUS },
    { "limit",      required_argument, NULL, TOLLCTL_LOPT_LIMIT },
    { "json",       no_argument,       NULL, TOLLCTL_LOPT_JSON },
    { "help",       no_argument,       NULL, 'h' },
    { NULL,         0,                 NULL, 0 }
};

static const struct option  tollctl_pay_options[] = {
    { "tx",         required_argument, NULL, TOLLCTL_LOPT_TX },
    { "json",       no_argument,       NULL, TOLLCTL_LOPT_JSON },
    { "help",       no_argument,       NULL, 'h' },
    { NULL,         0,                 NULL, 0 }
};

static const struct option  tollctl_entries_options[] = {
    { "account",    required_argument, NULL, TOLLCTL_LOPT_ACCOUNT },
    { "limit",      required_argument, NULL, TOLLCTL_LOPT_LIMIT },
    { "json",       no_argument,       NULL, TOLLCTL_LOPT_JSON },
    { "help",       no_argument,       NULL, 'h' },
    { NULL,         0,                 NULL, 0 }
};


static const tollctl_lverb_t  tollctl_settlement_verbs[] = {
    { "create", tollctl_settlement_create, tollctl_create_options, NULL },
    { "list",   tollctl_settlement_list,   tollctl_list_options,   NULL },
    { "show",   tollctl_settlement_show,   tollctl_json_options,   "STL_ID" },
    { "pay",    tollctl_settlement_pay,    tollctl_pay_options,    "STL_ID" }
};

static const tollctl_lverb_t  tollctl_ledger_verbs[] = {
    { "balance", tollctl_ledger_balance, tollctl_json_options,  "ACCOUNT" },
    { "entries", tollctl_ledger_entries, tollctl_entries_options, NULL },
    { "check",   tollctl_ledger_check,   tollctl_json_options,  NULL }
};

static const tollctl_lverb_t  tollctl_reconcile_verb = {
    "reconcile", tollctl_reconcile, tollctl_json_options, NULL
};


static const tollctl_column_t  tollctl_settlement_columns[] = {
    { "ID",           "id",           0 },
    { "PROVIDER",     "provider_id",  0 },
    { "PERIOD_START", "period_start", 0 },
    { "PERIOD_END",   "period_end",   0 },
    { "CALLS",        "call_count",   1 },
    { "TOTAL",        "total_amount", 1 },
    { "FEE",          "platform_fee", 1 },
    { "NET",          "net_amount",   1 },
    { "STATUS",       "status",       0 },
    { "PAYMENT_TX",   "payment_tx",   0 }
};

/* "debit_text", "credit_text" and "ref" are made for the table only */
static const tollctl_column_t  tollctl_entry_columns[] = {
    { "ENTRY",        "entry",        1 },
    { "TX",           "transaction",  1 },
    { "POSTED_AT",    "posted_at",    0 },
    { "KIND",         "kind",         0 },
    { "ACCOUNT",      "account",      0 },
    { "DEBIT",        "debit_text",   1 },
    { "CREDIT",       "credit_text",  1 },
    { "REF",          "ref",          0 }
};


int
tollctl_settlement_cmd(tollctl_t *ctl, int argc, char **argv)
{
    return tollctl_lverb_run(ctl, "settlement", tollctl_settlement_verbs,
                             TOLLCTL_NELTS(tollctl_settlement_verbs),
                             argc, argv);
}


int
tollctl_ledger_cmd(tollctl_t *ctl, int argc, char **argv)
{
    return tollctl_lverb_run(ctl, "ledger", tollctl_ledger_verbs,
                             TOLLCTL_NELTS(tollctl_ledger_verbs),
                             argc, argv);
}


int
tollctl_reconcile_cmd(tollctl_t *ctl, int argc, char **argv)
{
    int              rc;
    tollctl_lopts_t  o;

    rc = tollctl_lopts_parse(ctl, "reconcile", &tollctl_reconcile_verb,
                             argc, argv, &o);
    if (rc != EX_OK) {
        return rc;
    }

    return tollctl_reconcile(ctl, &o);
}


/* argv[0] is the command, argv[1] the verb */
static int
tollctl_lverb_run(tollctl_t *ctl, const char *cmd,
    const tollctl_lverb_t *verbs, size_t n, int argc, char **argv)
{
    int              rc;
    char             what[64];
    size_t           i;
    tollctl_lopts_t  o;

    if (argc < 2) {
        return tollctl_usage_error("missing verb after \"%s\"", cmd);
    }

    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        tollctl_help();
        return TOLLCTL_DONE;
    }

    for (i = 0; i < n; i++) {
        if (strcmp(argv[1], verbs[i].name) != 0) {
            continue;
        }

        snprintf(what, sizeof(what), "%s %s", cmd, verbs[i].name);

        /* the verb sees itself as argv[0], as getopt expects */
        rc = tollctl_lopts_parse(ctl, what, &verbs[i], argc - 1, argv + 1,
                                 &o);
        if (rc != EX_OK) {
            return rc;
        }

        return verbs[i].handler(ctl, &o);
    }

    return tollctl_usage_error("unknown verb \"%s %s\"", cmd, argv[1]);
}


static int
tollctl_lopts_parse(tollctl_t *ctl, const char *what,
    const tollctl_lverb_t *verb, int argc, char **argv, tollctl_lopts_t *o)
{
    int  c, want;

    memset(o, 0, sizeof(tollctl_lopts_t));

    /* optind = 0 makes glibc's getopt start afresh on a new argv */
    optind = 0;
    opterr = 0;

    for ( ;; ) {
        c = getopt_long(argc, argv, ":h", verb->options, NULL);
        if (c == -1) {
            break;
        }

        switch (c) {

        case TOLLCTL_LOPT_JSON:
            ctl->json = 1;
            break;

        case TOLLCTL_LOPT_PROVIDER:
            o->provider = optarg;
            break;

        case TOLLCTL_LOPT_FROM:
            o->from = optarg;
            break;

        case TOLLCTL_LOPT_TO:
            o->to = optarg;
            break;

        case TOLLCTL_LOPT_STATUS:
            o->status = optarg;
            break;

        case TOLLCTL_LOPT_LIMIT:
            o->limit = optarg;
            break;

        case TOLLCTL_LOPT_TX:
            o->tx = optarg;
            break;

        case TOLLCTL_LOPT_ACCOUNT:
            o->account = optarg;
            break;

        case 'h':
            tollctl_help();
            return TOLLCTL_DONE;

        default:
            return tollctl_option_error(c, argv);
        }
    }

    want = (verb->arg != NULL) ? 1 : 0;

    if (argc - optind < want) {
        return tollctl_usage_error("\"%s\" needs a %s", what, verb->arg);
    }

    if (argc - optind > want) {
        return tollctl_usage_error("unexpected argument \"%s\" to \"%s\"",
                                   argv[optind + want], what);
    }

    if (want) {
        o->args[0] = argv[optind];
    }

    return EX_OK;
}


/* --ledger over $TOLL_LEDGER over the default */
static const char *
tollctl_ledger_path(tollctl_t *ctl)
{
    const char  *env;

    if (ctl->ledger_opt != NULL) {
        return ctl->ledger_opt;
    }

    env = getenv(TOLLCTL_LEDGER_ENV);

    if (env != NULL && env[0] != '\0') {
        return env;
    }

    return TOLLCTL_LEDGER_DEFAULT;
}


static int
tollctl_ledger_open(tollctl_t *ctl, int write, toll_ledger_t **lg)
{
    int           rc;
    char          err[TOLLCTL_ERR_LEN_MAX];
    const char   *path;
    struct stat   sb;

    *lg = NULL;
    path = tollctl_ledger_path(ctl);

    if (path[0] == '\0') {
        return tollctl_error(EX_DATAERR, "invalid --ledger \"\": give the "
                             "path of the ledger file");
    }

    /* SQLite would make a missing file; only toll-settle makes ledgers */
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT || errno == ENOTDIR) {
            return tollctl_error(EX_NOINPUT, "no ledger at %s: toll-settle "
                                 "creates it on its first run (set by "
                                 "--ledger or " TOLLCTL_LEDGER_ENV ")", path);
        }

        return tollctl_error(EX_IOERR, "cannot read the ledger %s: %s",
                             path, strerror(errno));
    }

    rc = toll_ledger_open(path, write ? 0 : TOLL_LEDGER_OPEN_READONLY, lg,
                          err, sizeof(err));
    if (rc != TOLL_LEDGER_OK) {
        return tollctl_error(tollctl_ledger_status(rc), "%s", err);
    }

    return EX_OK;
}


static int
tollctl_ledger_fail(toll_ledger_t *lg, int rc, const char *hint)
{
    if (rc == TOLL_LEDGER_BUSY) {
        return tollctl_error(EX_TEMPFAIL, "the ledger is busy (%s): another "
                             "writer held it for %d ms; run again",
                             toll_ledger_errmsg(lg),
                             TOLL_LEDGER_BUSY_TIMEOUT_MS);
    }

    if (rc == TOLL_LEDGER_ERROR) {
        return tollctl_error(EX_IOERR, "ledger: %s", toll_ledger_errmsg(lg));
    }

    return tollctl_error(tollctl_ledger_status(rc), "%s%s",
                         toll_ledger_errmsg(lg), hint ? hint : "");
}


static int
tollctl_ledger_status(int rc)
{
    switch (rc) {

    case TOLL_LEDGER_OK:
        return EX_OK;

    case TOLL_LEDGER_BUSY:
        return EX_TEMPFAIL;

    case TOLL_LEDGER_NOT_FOUND:
        return EX_NOINPUT;

    case TOLL_LEDGER_EXISTS:
    case TOLL_LEDGER_INVALID:
    case TOLL_LEDGER_OVERFLOW:
    case TOLL_LEDGER_EMPTY:
        return EX_DATAERR;

    default:
        return EX_IOERR;
    }
}


static int
tollctl_settlement_create(tollctl_t *ctl, tollctl_lopts_t *o)
{
    int             rc;
    json_t         *s;
    int64_t         from, to;
    toll_ledger_t  *lg;

    if (o->provider == NULL || o->from == NULL || o->to == NULL) {
        return tollctl_usage_error("\"settlement create\" needs %s",
                                   o->provider == NULL ? "--provider"
                                   : o->from == NULL ? "--from" : "--to");
    }

    rc = tollctl_provider_check("--provider", o->provider);
    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_time_parse("--from", o->from, &from);
    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_time_parse("--to", o->to, &to);
    if (rc != EX_OK) {
        return rc;
    }

    if (from >= to) {
        return tollctl_error(EX_DATAERR, "--from \"%s\" is not before --to "
                             "\"%s\": a period is [from, to)", o->from,
                             o->to);
    }

    rc = tollctl_ledger_open(ctl, 1, &lg);
    if (rc != EX_OK) {
        return rc;
    }

    rc = toll_settlement_create(lg, o->provider, from, to, &s);

    if (rc != TOLL_LEDGER_OK) {
        rc = tollctl_ledger_fail(lg, rc, NULL);
        toll_ledger_close(lg);
        return rc;
    }

    toll_ledger_close(lg);

    rc = tollctl_output(ctl, s, tollctl_print_fields);
    json_decref(s);

    return rc;
}


static int
tollctl_settlement_list(tollctl_t *ctl, tollctl_lopts_t *o)
{
    int             rc;
    json_t         *list;
    int64_t         limit;
    toll_ledger_t  *lg;

    if (o->provider != NULL) {
        rc = tollctl_provider_check("--provider", o->provider);
        if (rc != EX_OK) {
            return rc;
        }
    }

    if (o->status != NULL && strcmp(o->status, "pending") != 0
        && strcmp(o->status, "completed") != 0)
    {
        return tollctl_error(EX_DATAERR, "invalid --status \"%s\": use "
                             "pending or completed", o->status);
    }

    limit = 0;
    rc = tollctl_limit_parse(o->limit, &limit);
    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_ledger_open(ctl, 0, &lg);
    if (rc != EX_OK) {
        return rc;
    }

    rc = toll_settlement_list(lg, o->provider, o->status, limit, &list);

    if (rc != TOLL_LEDGER_OK) {
        rc = tollctl_ledger_fail(lg, rc, NULL);
        toll_ledger_close(lg);
        return rc;
    }

    toll_ledger_close(lg);

    rc = tollctl_output(ctl, list, tollctl_print_settlements);
    json_decref(list);

    return rc;
}


static int
tollctl_settlement_show(tollctl_t *ctl, tollctl_lopts_t *o)
{
    int             rc;
    json_t         *s;
    toll_ledger_t  *lg;

    rc = tollctl_ledger_open(ctl, 0, &lg);
    if (rc != EX_OK) {
        return rc;
    }

    rc = toll_settlement_get(lg, o->args[0], &s);

    if (rc != TOLL_LEDGER_OK) {
        rc = tollctl_ledger_fail(lg, rc, "; \"tollctl settlement list\" "
                                 "shows the settlements");
        toll_ledger_close(lg);
        return rc;
    }

    toll_ledger_close(lg);

    rc = tollctl_output(ctl, s, tollctl_print_fields);
    json_decref(s);

    return rc;
}


static int
tollctl_settlement_pay(tollctl_t *ctl, tollctl_lopts_t *o)
{
    int             rc;
    json_t         *s;
    toll_ledger_t  *lg;

    if (o->tx == NULL) {
        return tollctl_usage_error("\"settlement pay\" needs --tx, the "
                                   "payment's reference");
    }

    if (!tollctl_tx_ref_valid(o->tx)) {
        return tollctl_error(EX_DATAERR, "invalid --tx: use 1 to %d "
                             "printable ASCII characters, e.g. the wire's "
                             "or the chain's transaction id",
                             TOLL_LEDGER_TX_REF_LEN_MAX);
    }

    rc = tollctl_ledger_open(ctl, 1, &lg);
    if (rc != EX_OK) {
        return rc;
    }

    rc = toll_settlement_pay(lg, o->args[0], o->tx, &s);

    if (rc != TOLL_LEDGER_OK) {
        rc = tollctl_ledger_fail(lg, rc,
                                 (rc == TOLL_LEDGER_NOT_FOUND)
                                 ? "; \"tollctl settlement list\" shows the "
                                   "settlements"
                                 : NULL);
        toll_ledger_close(lg);
        return rc;
    }

    toll_ledger_close(lg);

    rc = tollctl_output(ctl, s, tollctl_print_fields);
    json_decref(s);

    return rc;
}


static int
tollctl_ledger_balance(tollctl_t *ctl, tollctl_lopts_t *o)
{
    int             rc;
    json_t         *b;
    toll_ledger_t  *lg;

    rc = tollctl_account_check("account", o->args[0]);
    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_ledger_open(ctl, 0, &lg);
    if (rc != EX_OK) {
        return rc;
    }

    rc = toll_ledger_balance(lg, o->args[0], &b);

    if (rc != TOLL_LEDGER_OK) {
        rc = tollctl_ledger_fail(lg, rc, ": nothing was posted to it yet");
        toll_ledger_close(lg);
        return rc;
    }

    toll_ledger_close(lg);

    rc = tollctl_output(ctl, b, tollctl_print_fields);
    json_decref(b);

    return rc;
}


static int
tollctl_ledger_entries(tollctl_t *ctl, tollctl_lopts_t *o)
{
    int             rc;
    json_t         *list, *b;
    int64_t         limit;
    toll_ledger_t  *lg;

    if (o->account != NULL) {
        rc = tollctl_account_check("--account", o->account);
        if (rc != EX_OK) {
            return rc;
        }
    }

    limit = 0;
    rc = tollctl_limit_parse(o->limit, &limit);
    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_ledger_open(ctl, 0, &lg);
    if (rc != EX_OK) {
        return rc;
    }

    /* an account never posted to is an error, not an empty list */
    if (o->account != NULL) {
        rc = toll_ledger_balance(lg, o->account, &b);

        if (rc != TOLL_LEDGER_OK) {
            rc = tollctl_ledger_fail(lg, rc, ": nothing was posted to it "
                                     "yet");
            toll_ledger_close(lg);
            return rc;
        }

        json_decref(b);
    }

    rc = toll_ledger_entries(lg, o->account, limit, &list);

    if (rc != TOLL_LEDGER_OK) {
        rc = tollctl_ledger_fail(lg, rc, NULL);
        toll_ledger_close(lg);
        return rc;
    }

    toll_ledger_close(lg);

    rc = tollctl_output(ctl, list, tollctl_print_entries);
    json_decref(list);

    return rc;
}


static int
tollctl_ledger_check(tollctl_t *ctl, tollctl_lopts_t *o)
{
    int             rc, nfailed;
    char            failed[TOLLCTL_ERR_LEN_MAX];
    size_t          i, len;
    json_t         *report, *check;
    const char     *name;
    toll_ledger_t  *lg;

    (void) o;

    rc = tollctl_ledger_open(ctl, 0, &lg);
    if (rc != EX_OK) {
        return rc;
    }

    rc = toll_ledger_check(lg, &report);

    if (rc != TOLL_LEDGER_OK) {
        rc = tollctl_ledger_fail(lg, rc, NULL);
        toll_ledger_close(lg);
        return rc;
    }

    toll_ledger_close(lg);

    rc = tollctl_output(ctl, report, tollctl_print_check);

    if (rc == EX_OK && !json_is_true(json_object_get(report, "ok"))) {
        nfailed = 0;
        len = 0;
        failed[0] = '\0';

        json_array_foreach(json_object_get(report, "checks"), i, check) {
            if (json_is_true(json_object_get(check, "ok"))) {
                continue;
            }

            name = json_string_value(json_object_get(check, "name"));

            if (len < sizeof(failed)) {
                len += (size_t) snprintf(failed + len, sizeof(failed) - len,
                                         "%s%s", nfailed ? ", " : "",
                                         name ? name : "?");
            }

            nfailed++;
        }

        rc = tollctl_error(EX_DATAERR, "the ledger fails %d check%s (%s): "
                           "stop toll-settle, settle nothing, and restore "
                           "the ledger from a backup or find what wrote "
                           "to it", nfailed, nfailed == 1 ? "" : "s",
                           failed);
    }

    json_decref(report);

    return rc;
}


static int
tollctl_provider_check(const char *opt, const char *provider)
{
    if (!toll_owner_valid((const unsigned char *) provider,
                          strlen(provider)))
    {
        return tollctl_error(EX_DATAERR, "invalid %s \"%s\": use 1 to %d "
                             "printable ASCII characters, no spaces", opt,
                             provider, TOLL_OWNER_LEN_MAX);
    }

    return EX_OK;
}


static int
tollctl_account_check(const char *opt, const char *account)
{
    size_t       plen;
    const char  *owner;

    if (strcmp(account, TOLL_LEDGER_ACCOUNT_FEES) == 0
        || strcmp(account, TOLL_LEDGER_ACCOUNT_CASH) == 0)
    {
        return EX_OK;
    }

    owner = NULL;
    plen = sizeof(TOLLCTL_ACCOUNT_BUYER) - 1;

    if (strncmp(account, TOLLCTL_ACCOUNT_BUYER, plen) == 0) {
        owner = account + plen;
    }

    plen = sizeof(TOLLCTL_ACCOUNT_PROVIDER) - 1;

    if (strncmp(account, TOLLCTL_ACCOUNT_PROVIDER, plen) == 0) {
        owner = account + plen;
    }

    if (owner == NULL
        || !toll_owner_valid((const unsigned char *) owner, strlen(owner)))
    {
        return tollctl_error(EX_DATAERR, "invalid %s \"%s\": use buyer:ID, "
                             "provider:ID, " TOLL_LEDGER_ACCOUNT_FEES " or "
                             TOLL_LEDGER_ACCOUNT_CASH, opt, account);
    }

    return EX_OK;
}


static int
tollctl_limit_parse(const char *limit, int64_t *out)
{
    long long  n;

    if (limit == NULL) {
        *out = TOLLCTL_LIMIT_DEFAULT;
        return EX_OK;
    }

    if (tollctl_parse_ll(limit, 1, TOLLCTL_LIMIT_MAX, &n) != 0) {
        return tollctl_error(EX_DATAERR, "invalid --limit \"%s\": use an "
                             "integer from 1 to %d", limit,
                             TOLLCTL_LIMIT_MAX);
    }

    *out = n;

    return EX_OK;
}


/* "2026-03-01T00:00:00Z", "2026-03-01" (UTC midnight) or "@1772323200" */
static int
tollctl_time_parse(const char *opt, const char *s, int64_t *t)
{
    size_t      len;
    int64_t     y, mo, d, h, mi, sec;
    long long   n;

    static const int  mdays[] = {
        31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31
    };

    len = strlen(s);

    if (s[0] == '@') {
        if (tollctl_parse_ll(s + 1, 0, TOLLCTL_TIME_MAX, &n) != 0) {
            goto invalid;
        }

        *t = n;
        return EX_OK;
    }

    if (len != TOLLCTL_DATE_LEN && len != TOLLCTL_DATETIME_LEN) {
        goto invalid;
    }

    if (tollctl_digits(s, 4, &y) != 0 || s[4] != '-'
        || tollctl_digits(s + 5, 2, &mo) != 0 || s[7] != '-'
        || tollctl_digits(s + 8, 2, &d) != 0)
    {
        goto invalid;
    }

    h = mi = sec = 0;

    if (len == TOLLCTL_DATETIME_LEN
        && (s[10] != 'T' || tollctl_digits(s + 11, 2, &h) != 0
            || s[13] != ':' || tollctl_digits(s + 14, 2, &mi) != 0
            || s[16] != ':' || tollctl_digits(s + 17, 2, &sec) != 0
            || s[19] != 'Z'))
    {
        goto invalid;
    }

    if (y < TOLLCTL_YEAR_MIN || y > TOLLCTL_YEAR_MAX || mo < 1 || mo > 12
        || d < 1 || h > 23 || mi > 59 || sec > 59)
    {
        goto invalid;
    }

    if (d > mdays[mo - 1]
        && !(mo == 2 && d == 29
             && (y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))))
    {
        goto invalid;
    }

    *t = tollctl_days_from_civil(y, mo, d) * TOLLCTL_SEC_PER_DAY
         + h * 3600 + mi * 60 + sec;

    return EX_OK;

invalid:

    return tollctl_error(EX_DATAERR, "invalid %s \"%s\": use a UTC time as "
                         "2026-03-01T00:00:00Z, a day as 2026-03-01 (its "
                         "midnight, UTC) or unix seconds as @1772323200",
                         opt, s);
}


/* days since 1970-01-01 of a proleptic Gregorian date, y >= 1970 */
static int64_t
tollctl_days_from_civil(int64_t y, int64_t m, int64_t d)
{
    int64_t  era, yoe, doy, doe;

    /* a year that starts in March puts the leap day at its end */
    y -= (m <= 2);
    era = y / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + doe - 719468;
}


static int
tollctl_digits(const char *s, size_t n, int64_t *out)
{
    size_t   i;
    int64_t  v;

    v = 0;

    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }

        v = v * 10 + (s[i] - '0');
    }

    *out = v;

    return 0;
}


/* as the ledger takes it; checked here so that no file is opened for it */
static int
tollctl_tx_ref_valid(const char *ref)
{
    size_t  i, len;

    len = strlen(ref);

    if (len == 0 || len > TOLL_LEDGER_TX_REF_LEN_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (ref[i] < 0x20 || ref[i] > 0x7e) {
            return 0;
        }
    }

    return 1;
}


/*
 * Compact JSON on one line.  json_dumpf() allocates nothing for us to
 * free: the settlement commands run with jansson's allocator switched.
 */
static int
tollctl_output(tollctl_t *ctl, json_t *value, void (*text)(json_t *value))
{
    if (ctl->json) {
        if (json_dumpf(value, stdout, JSON_COMPACT) != 0) {
            return tollctl_error(EX_IOERR, "cannot write to stdout: %s",
                                 strerror(errno));
        }

        fputc('\n', stdout);

        return EX_OK;
    }

    text(value);

    return EX_OK;
}


/* "name: value" lines, aligned; micro-units are for scripts (--json) */
static void
tollctl_print_fields(json_t *obj)
{
    int          width;
    char         buf[TOLLCTL_CELL_LEN_MAX];
    size_t       len, suffix;
    json_t      *value;
    const char  *name;

    width = 0;
    suffix = sizeof("_micros") - 1;

    json_object_foreach(obj, name, value) {
        len = strlen(name);

        if (len > suffix && strcmp(name + len - suffix, "_micros") == 0) {
            continue;
        }

        if ((int) len > width) {
            width = (int) len;
        }
    }

    json_object_foreach(obj, name, value) {
        len = strlen(name);

        if (len > suffix && strcmp(name + len - suffix, "_micros") == 0) {
            continue;
        }

        printf("%s:%*s %s\n", name, width - (int) len, "",
               tollctl_cell(value, buf, sizeof(buf)));
    }
}


static void
tollctl_print_settlements(json_t *list)
{
    tollctl_print_table(list, tollctl_settlement_columns,
                        TOLLCTL_NELTS(tollctl_settlement_columns));
}


static void
tollctl_print_entries(json_t *list)
{
    char         ref[TOLLCTL_ERR_LEN_MAX];
    size_t       i;
    json_t      *e, *v;
    const char  *kind;

    json_array_foreach(list, i, e) {
        v = json_object_get(e, "debit_micros");
        json_object_set_new(e, "debit_text", json_integer_value(v) != 0
                            ? json_copy(json_object_get(e, "debit"))
                            : json_string("-"));

        v = json_object_get(e, "credit_micros");
        json_object_set_new(e, "credit_text", json_integer_value(v) != 0
                            ? json_copy(json_object_get(e, "credit"))
                            : json_string("-"));

        kind = json_string_value(json_object_get(e, "kind"));

        if (kind != NULL && strcmp(kind, "payout") == 0) {
            snprintf(ref, sizeof(ref), "settlement %s",
                     tollctl_cell(json_object_get(e, "settlement"), NULL, 0));

        } else {
            snprintf(ref, sizeof(ref), "%s %s %s",
                     tollctl_cell(json_object_get(e, "buyer"), NULL, 0),
                     tollctl_cell(json_object_get(e, "day"), NULL, 0),
                     tollctl_cell(json_object_get(e, "service"), NULL, 0));
        }

        json_object_set_new(e, "ref", json_string(ref));
    }

    tollctl_print_table(list, tollctl_entry_columns,
                        TOLLCTL_NELTS(tollctl_entry_columns));
}


static void
tollctl_print_check(json_t *report)
{
    int          width;
    char         d[TOLLCTL_AMOUNT_LEN_MAX], c[TOLLCTL_AMOUNT_LEN_MAX];
    size_t       i, len;
    json_t      *check;
    const char  *name;

    width = 0;

    json_array_foreach(json_object_get(report, "checks"), i, check) {
        name = json_string_value(json_object_get(check, "name"));
        len = name ? strlen(name) : 0;

        if ((int) len > width) {
            width = (int) len;
        }
    }

    json_array_foreach(json_object_get(report, "checks"), i, check) {
        name = json_string_value(json_object_get(check, "name"));

        printf("%-4s  %-*s  %s\n",
               json_is_true(json_object_get(check, "ok")) ? "ok" : "FAIL",
               width, name ? name : "?",
               json_string_value(json_object_get(check, "detail")));
    }

    tollctl_amount_text(json_integer_value(json_object_get(report,
                                                           "debits_micros")),
                        0, d, sizeof(d));
    tollctl_amount_text(json_integer_value(json_object_get(report,
                                                           "credits_micros")),
                        0, c, sizeof(c));

    printf("%" JSON_INTEGER_FORMAT " transactions, %" JSON_INTEGER_FORMAT
           " entries, debits %s, credits %s: %s\n",
           json_integer_value(json_object_get(report, "transactions")),
           json_integer_value(json_object_get(report, "entries")), d, c,
           json_is_true(json_object_get(report, "ok")) ? "ok" : "FAILED");
}


static void
tollctl_print_table(json_t *rows, const tollctl_column_t *cols,
    size_t ncols)
{
    char         buf[TOLLCTL_CELL_LEN_MAX];
    size_t       i, c, len, width[TOLLCTL_TABLE_COLUMNS_MAX];
    json_t      *row;
    const char  *cell;

    assert(ncols <= TOLLCTL_TABLE_COLUMNS_MAX);

    for (c = 0; c < ncols; c++) {
        width[c] = strlen(cols[c].header);
    }

    json_array_foreach(rows, i, row) {
        for (c = 0; c < ncols; c++) {
            len = strlen(tollctl_cell(json_object_get(row, cols[c].key), buf,
                                      sizeof(buf)));
            if (len > width[c]) {
                width[c] = len;
            }
        }
    }

    for (c = 0; c + 1 < ncols; c++) {
        printf(cols[c].right ? "%*s  " : "%-*s  ", (int) width[c],
               cols[c].header);
    }

    printf("%s\n", cols[c].header);

    json_array_foreach(rows, i, row) {
        for (c = 0; c < ncols; c++) {
            cell = tollctl_cell(json_object_get(row, cols[c].key), buf,
                                sizeof(buf));

            if (c + 1 == ncols) {
                printf("%s\n", cell);

            } else {
                printf(cols[c].right ? "%*s  " : "%-*s  ", (int) width[c],
                       cell);
            }
        }
    }
}


static const char *
tollctl_cell(json_t *v, char *buf, size_t size)
{
    if (v == NULL) {
        return "-";
    }

    switch (json_typeof(v)) {

    case JSON_STRING:
        return json_string_value(v);

    case JSON_INTEGER:
        if (buf == NULL) {
            return "?";
        }

        snprintf(buf, size, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return buf;

    case JSON_TRUE:
        return "true";

    case JSON_FALSE:
        return "false";

    default:
        return "-";
    }
}


/* as the ledger prints amounts ("10.50"); sign: "+" before a positive */
static void
tollctl_amount_text(int64_t micros, int sign, char *buf, size_t size)
{
    char    digits[TOLL_MONEY_STR_MAX];
    char   *dot;
    size_t  len, decimals;

    len = toll_money_format(micros, digits);
    dot = strchr(digits, '.');
    decimals = (dot == NULL) ? 0 : len - (size_t) (dot - digits) - 1;

    snprintf(buf, size, "%s%s%s%s", (sign && micros > 0) ? "+" : "", digits,
             (dot == NULL) ? "." : "", (decimals == 0) ? "00"
                                       : (decimals == 1) ? "0" : "");
}


/* reconcile */


static int
tollctl_reconcile(tollctl_t *ctl, tollctl_lopts_t *o)
{
    int              rc, attempt, stable;
    size_t           i;
    json_t          *result;
    int64_t          ndiff;
    toll_ledger_t   *lg;
    tollctl_recon_t  r;

    (void) o;

    rc = tollctl_ledger_open(ctl, 0, &lg);
    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_connect(ctl);
    if (rc != EX_OK) {
        toll_ledger_close(lg);
        return rc;
    }

    result = NULL;
    stable = 1;
    ndiff = 0;

    for (attempt = 1; attempt <= TOLLCTL_RECONCILE_ATTEMPTS_MAX; attempt++) {
        memset(&r, 0, sizeof(tollctl_recon_t));

        rc = tollctl_recon_read(ctl, lg, &r);

        if (rc == EX_OK) {
            rc = tollctl_recon_result(&r, &result, &ndiff);
        }

        stable = (r.batches_before == r.batches_after && r.in_flight == 0
                  && r.nopen_before == r.nopen_after);

        for (i = 0; stable && i < r.nopen_before; i++) {
            stable = (strcmp(r.open_before[i], r.open_after[i]) == 0);
        }

        tollctl_recon_free(&r);

        if (rc != EX_OK || ndiff == 0 || stable
            || attempt == TOLLCTL_RECONCILE_ATTEMPTS_MAX)
        {
            break;
        }

        /* toll-settle moved usage while we read: read again */
        json_decref(result);
        result = NULL;
        tollctl_sleep_ms(TOLLCTL_RECONCILE_RETRY_MS);
    }

    toll_ledger_close(lg);

    if (rc != EX_OK) {
        json_decref(result);
        return rc;
    }

    json_object_set_new(result, "attempts", json_integer(attempt));

    rc = tollctl_output(ctl, result, tollctl_print_reconcile);
    json_decref(result);

    if (rc != EX_OK || ndiff == 0) {
        return rc;
    }

    if (!stable) {
        return tollctl_error(EX_TEMPFAIL, "%lld rows differ, but toll-settle "
                             "drained while reconcile read, %d times: run "
                             "it again when toll-settle is idle",
                             (long long) ndiff,
                             TOLLCTL_RECONCILE_ATTEMPTS_MAX);
    }

    return tollctl_error(EX_DATAERR, "%lld row%s of usage differ%s between "
                         "Redis and the ledger (listed above): usage was "
                         "lost or counted twice; check toll-settle's log "
                         "and settle nothing of those days until it is "
                         "explained", (long long) ndiff,
                         ndiff == 1 ? "" : "s", ndiff == 1 ? "s" : "");
}


/*
 * One reading: the open claims, the usage hashes and their mirrors (a
 * day's pair in one MULTI, so that a claim is on one side or the other),
 * the open claims again, then the ledger in one read transaction.
 */
static int
tollctl_recon_read(tollctl_t *ctl, toll_ledger_t *lg, tollctl_recon_t *r)
{
    int      rc;
    char   **days;
    size_t   ndays;
    json_t  *totals;

    rc = toll_ledger_totals(lg, &totals);
    if (rc != TOLL_LEDGER_OK) {
        return tollctl_ledger_fail(lg, rc, NULL);
    }

    r->batches_before = json_integer_value(json_object_get(totals,
                                                           "batches"));
    json_decref(totals);

    rc = tollctl_recon_open_set(ctl, &r->open_before, &r->nopen_before);
    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_recon_claims(ctl, r);
    if (rc != EX_OK) {
        return rc;
    }

    days = NULL;
    ndays = 0;

    rc = tollctl_recon_scan(ctl, &days, &ndays);

    if (rc == EX_OK) {
        rc = tollctl_recon_hashes(ctl, r, days, ndays);
    }

    tollctl_strs_free(days, ndays);

    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_recon_open_set(ctl, &r->open_after, &r->nopen_after);
    if (rc != EX_OK) {
        return rc;
    }

    return tollctl_recon_ledger(lg, r);
}


static void
tollctl_recon_free(tollctl_recon_t *r)
{
    size_t  i;

    for (i = 0; i < r->nparts; i++) {
        free(r->parts[i].buyer);
        free(r->parts[i].service);
    }

    free(r->parts);
    tollctl_strs_free(r->open_before, r->nopen_before);
    tollctl_strs_free(r->open_after, r->nopen_after);
    tollctl_strs_free(r->intents, r->nintents);
}


/*
 * The claims not in the ledger: those open, and those toll-settle set
 * aside in quarantine (both are usage the mirror counts and the ledger
 * does not hold yet).
 */
static int
tollctl_recon_open_set(tollctl_t *ctl, char ***members, size_t *n)
{
    size_t          i, j, k, total;
    redisReply     *replies[2];
    tollctl_cmd_t   cmds[2];

    tollctl_cmd_init(&cmds[0], "SMEMBERS");
    tollctl_cmd_add_str(&cmds[0], TOLLCTL_DRAIN_OPEN);
    tollctl_cmd_init(&cmds[1], "HKEYS");
    tollctl_cmd_add_str(&cmds[1], TOLLCTL_DRAIN_QUARANTINE);

    if (tollctl_redis_pipeline(ctl, cmds, 2, replies) != 0) {
        return EX_UNAVAILABLE;
    }

    if (replies[0]->type != REDIS_REPLY_ARRAY
        || replies[1]->type != REDIS_REPLY_ARRAY)
    {
        freeReplyObject(replies[0]);
        freeReplyObject(replies[1]);
        return tollctl_error(EX_UNAVAILABLE, "redis %s: SMEMBERS "
                             TOLLCTL_DRAIN_OPEN ": unexpected reply",
                             ctl->addr.text);
    }

    total = replies[0]->elements + replies[1]->elements;

    *members = calloc(total + 1, sizeof(char *));
    if (*members == NULL) {
        freeReplyObject(replies[0]);
        freeReplyObject(replies[1]);
        return tollctl_error(EX_OSERR, "out of memory");
    }

    k = 0;

    for (j = 0; j < 2; j++) {
        for (i = 0; i < replies[j]->elements; i++) {
            if (replies[j]->element[i]->type != REDIS_REPLY_STRING
                || ((*members)[k] = strndup(replies[j]->element[i]->str,
                                            replies[j]->element[i]->len))
                   == NULL)
            {
                *n = k;
                freeReplyObject(replies[0]);
                freeReplyObject(replies[1]);
                return tollctl_error(EX_OSERR, "out of memory");
            }

            k++;
        }
    }

    *n = k;
    freeReplyObject(replies[0]);
    freeReplyObject(replies[1]);

    qsort(*members, *n, sizeof(char *), tollctl_str_cmp);

    /* a claim in both (toll-settle stopped while setting it aside): once */

    for (i = 1, k = 1; i < *n; i++) {
        if (strcmp((*members)[i], (*members)[k - 1]) == 0) {
            free((*members)[i]);
            continue;
        }

        (*members)[k++] = (*members)[i];
    }

    if (*n > 0) {
        *n = k;
    }

    return EX_OK;
}


/* the content of every open claim, in pipelined batches */
static int
tollctl_recon_claims(tollctl_t *ctl, tollctl_recon_t *r)
{
    int      rc;
    size_t   i, n;

    rc = EX_OK;

    for (i = 0; i < r->nopen_before && rc == EX_OK; i += n) {
        n = r->nopen_before - i;
        if (n > TOLLCTL_RECONCILE_BATCH_MAX) {
            n = TOLLCTL_RECONCILE_BATCH_MAX;
        }

        rc = tollctl_recon_claims_batch(ctl, r, r->open_before + i, n);
    }

    return rc;
}


static int
tollctl_recon_claims_batch(tollctl_t *ctl, tollctl_recon_t *r,
    char **names, size_t n)
{
    int             rc;
    char            buyer[TOLLCTL_REDIS_NAME_LEN_MAX + 1];
    char            day[TOLLCTL_DAY_LEN + 1];
    char            batch[TOLLCTL_BATCH_ID_LEN + 1];
    char          **grown;
    size_t          i, m, idx[TOLLCTL_RECONCILE_BATCH_MAX];
    redisReply     *replies[TOLLCTL_RECONCILE_BATCH_MAX];
    tollctl_cmd_t   cmds[TOLLCTL_RECONCILE_BATCH_MAX];

    assert(n <= TOLLCTL_RECONCILE_BATCH_MAX);

    m = 0;

    for (i = 0; i < n; i++) {
        if (tollctl_claim_name(names[i], strlen(names[i]), buyer, day, batch)
            != 0)
        {
            /* a warning: toll-settle leaves such a member to the operator */
            (void) tollctl_error(EX_OK, "skipped \"%s\" in " TOLLCTL_DRAIN_OPEN
                                 ": not a claim's name", names[i]);
            continue;
        }

        tollctl_cmd_init(&cmds[m], "HGETALL");
        tollctl_cmd_add_str(&cmds[m], names[i]);
        idx[m++] = i;
    }

    if (m == 0) {
        return EX_OK;
    }

    if (tollctl_redis_pipeline(ctl, cmds, m, replies) != 0) {
        return EX_UNAVAILABLE;
    }

    rc = EX_OK;

    for (i = 0; i < m; i++) {
        if (rc != EX_OK) {
            freeReplyObject(replies[i]);
            continue;
        }

        (void) tollctl_claim_name(names[idx[i]], strlen(names[idx[i]]),
                                  buyer, day, batch);

        if (replies[i]->type == REDIS_REPLY_ARRAY
            && replies[i]->elements == 0)
        {
            /* announced, not (or no longer) there: see the ledger */
            grown = realloc(r->intents, (r->nintents + 1) * sizeof(char *));

            if (grown == NULL
                || (grown[r->nintents] = strdup(batch)) == NULL)
            {
                r->intents = grown ? grown : r->intents;
                rc = tollctl_error(EX_OSERR, "out of memory");

            } else {
                r->intents = grown;
                r->nintents++;
            }

        } else {
            rc = tollctl_recon_hash(r, names[idx[i]], replies[i], buyer, day,
                                    TOLLCTL_SRC_CLAIM, batch);
        }

        freeReplyObject(replies[i]);
    }

    return rc;
}


/*
 * Every (buyer, day) that has a usage hash or a mirror, as "buyer\nday"
 * strings, sorted and unique.  SCAN returns each key that exists for the
 * whole scan at least once; one that appears meanwhile is new usage
 * (live and pending alike) or a claim that the second reading of
 * toll:drain:open and of the ledger reveals.
 */
static int
tollctl_recon_scan(tollctl_t *ctl, char ***days, size_t *ndays)
{
    int             mirror;
    char            cursor[32], buyer[TOLLCTL_REDIS_NAME_LEN_MAX + 1];
    char            day[TOLLCTL_DAY_LEN + 1], **grown, *pair;
    size_t          i, j, n, cap, calls;
    redisReply     *reply, *keys, *key;
    tollctl_cmd_t   cmd;

    *days = NULL;
    *ndays = 0;
    n = 0;
    cap = 0;

    snprintf(cursor, sizeof(cursor), "0");

    for (calls = 0; calls < TOLLCTL_SCAN_CALLS_MAX; calls++) {
        tollctl_cmd_init(&cmd, "SCAN");
        tollctl_cmd_add_str(&cmd, cursor);
        tollctl_cmd_add_str(&cmd, "MATCH");
        tollctl_cmd_add_str(&cmd, TOLLCTL_USAGE_MATCH);
        tollctl_cmd_add_str(&cmd, "COUNT");
        tollctl_cmd_add_str(&cmd, TOLLCTL_SCAN_COUNT);

        reply = tollctl_redis_run(ctl, &cmd);
        if (reply == NULL) {
            goto failed;
        }

        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2
            || reply->element[0]->type != REDIS_REPLY_STRING
            || reply->element[0]->len >= sizeof(cursor)
            || reply->element[1]->type != REDIS_REPLY_ARRAY)
        {
            freeReplyObject(reply);
            tollctl_error(EX_UNAVAILABLE, "redis %s: SCAN: unexpected reply",
                          ctl->addr.text);
            goto failed;
        }

        keys = reply->element[1];

        for (i = 0; i < keys->elements; i++) {
            key = keys->element[i];

            if (key->type != REDIS_REPLY_STRING
                || tollctl_usage_name(key->str, key->len, buyer, day,
                                      &mirror)
                   != 0)
            {
                continue;
            }

            if (n == cap) {
                cap = cap ? 2 * cap : TOLLCTL_RECONCILE_BATCH_MAX;

                if (cap > TOLLCTL_RECONCILE_PARTS_MAX) {
                    freeReplyObject(reply);
                    tollctl_error(EX_SOFTWARE, "more than %d usage hashes "
                                  "in Redis: too many to reconcile at once",
                                  TOLLCTL_RECONCILE_PARTS_MAX);
                    goto failed_rc;
                }

                grown = realloc(*days, cap * sizeof(char *));
                if (grown == NULL) {
                    freeReplyObject(reply);
                    goto nomem;
                }

                *days = grown;
            }

            pair = malloc(strlen(buyer) + 1 + TOLLCTL_DAY_LEN + 1);
            if (pair == NULL) {
                freeReplyObject(reply);
                goto nomem;
            }

            sprintf(pair, "%s\n%s", buyer, day);
            (*days)[n++] = pair;
        }

        memcpy(cursor, reply->element[0]->str, reply->element[0]->len);
        cursor[reply->element[0]->len] = '\0';
        freeReplyObject(reply);

        if (strcmp(cursor, "0") == 0) {
            break;
        }
    }

    if (calls == TOLLCTL_SCAN_CALLS_MAX) {
        tollctl_error(EX_SOFTWARE, "SCAN did not finish in %d calls",
                      TOLLCTL_SCAN_CALLS_MAX);
        goto failed_rc;
    }

    if (n == 0) {
        return EX_OK;
    }

    qsort(*days, n, sizeof(char *), tollctl_str_cmp);

    /* a live hash and its mirror name the same day: keep it once */
    for (i = 0, j = 0; i < n; i++) {
        if (j > 0 && strcmp((*days)[j - 1], (*days)[i]) == 0) {
            free((*days)[i]);
            continue;
        }

        (*days)[j++] = (*days)[i];
    }

    *ndays = j;

    return EX_OK;

nomem:

    *ndays = n;
    return tollctl_error(EX_OSERR, "out of memory");

failed_rc:

    *ndays = n;
    return EX_SOFTWARE;

failed:

    *ndays = n;
    return EX_UNAVAILABLE;
}


/* a day's usage hash and mirror in one MULTI: one consistent view */
static int
tollctl_recon_hashes(tollctl_t *ctl, tollctl_recon_t *r, char **days,
    size_t ndays)
{
    int             rc;
    char           *nl, *names, *live, *mirror;
    size_t          i, j, n, k, len;
    redisReply    **replies, *exec;
    tollctl_cmd_t  *cmds;

    /* MULTI, two HGETALLs a day, EXEC */
    cmds = calloc(2 * TOLLCTL_RECONCILE_BATCH_MAX + 2, sizeof(tollctl_cmd_t));
    replies = calloc(2 * TOLLCTL_RECONCILE_BATCH_MAX + 2,
                     sizeof(redisReply *));
    names = malloc(2 * TOLLCTL_RECONCILE_BATCH_MAX
                   * (TOLLCTL_REDIS_NAME_LEN_MAX + 64));

    if (cmds == NULL || replies == NULL || names == NULL) {
        free(cmds);
        free(replies);
        free(names);
        return tollctl_error(EX_OSERR, "out of memory");
    }

    rc = EX_OK;

    for (i = 0; i < ndays && rc == EX_OK; i += n) {
        n = ndays - i;
        if (n > TOLLCTL_RECONCILE_BATCH_MAX) {
            n = TOLLCTL_RECONCILE_BATCH_MAX;
        }

        tollctl_cmd_init(&cmds[0], "MULTI");

        for (j = 0; j < n; j++) {
            nl = strchr(days[i + j], '\n');
            len = (size_t) (nl - days[i + j]);

            live = names + 2 * j * (TOLLCTL_REDIS_NAME_LEN_MAX + 64);
            mirror = live + TOLLCTL_REDIS_NAME_LEN_MAX + 64;

            snprintf(live, TOLLCTL_REDIS_NAME_LEN_MAX + 64,
                     TOLLCTL_USAGE_PREFIX "%.*s}:%s", (int) len, days[i + j],
                     nl + 1);
            snprintf(mirror, TOLLCTL_REDIS_NAME_LEN_MAX + 64,
                     "%s" TOLLCTL_MIRROR_SUFFIX, live);

            tollctl_cmd_init(&cmds[1 + 2 * j], "HGETALL");
            tollctl_cmd_add_str(&cmds[1 + 2 * j], live);
            tollctl_cmd_init(&cmds[2 + 2 * j], "HGETALL");
            tollctl_cmd_add_str(&cmds[2 + 2 * j], mirror);
        }

        tollctl_cmd_init(&cmds[2 * n + 1], "EXEC");

        if (tollctl_redis_pipeline(ctl, cmds, 2 * n + 2, replies) != 0) {
            rc = EX_UNAVAILABLE;
            break;
        }

        exec = replies[2 * n + 1];

        if (exec->type != REDIS_REPLY_ARRAY || exec->elements != 2 * n) {
            rc = tollctl_error(EX_UNAVAILABLE, "redis %s: EXEC: unexpected "
                               "reply", ctl->addr.text);
        }

        for (j = 0; j < n && rc == EX_OK; j++) {
            nl = strchr(days[i + j], '\n');
            *nl = '\0';

            for (k = 0; k < 2 && rc == EX_OK; k++) {
                rc = tollctl_recon_hash(r, cmds[1 + 2 * j + k].argv[1],
                                        exec->element[2 * j + k],
                                        days[i + j], nl + 1,
                                        k ? TOLLCTL_SRC_MIRROR
                                          : TOLLCTL_SRC_LIVE, NULL);
            }

            *nl = '\n';
        }

        for (j = 0; j < 2 * n + 2; j++) {
            freeReplyObject(replies[j]);
        }
    }

    free(cmds);
    free(replies);
    free(names);

    return rc;
}


/*
 * The ledger in one read transaction: its batch count (changed since the
 * start: toll-settle posted meanwhile), which announced claims it holds,
 * and its usage per buyer, day and service.
 */
static int
tollctl_recon_ledger(toll_ledger_t *lg, tollctl_recon_t *r)
{
    int              rc, found;
    size_t           i;
    json_t          *totals, *rows, *row;
    sqlite3         *db;
    const char      *buyer, *day, *service;
    tollctl_part_t  *p;

    db = toll_ledger_db(lg);

    if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        return tollctl_error(EX_IOERR, "ledger: cannot begin a read: %s",
                             sqlite3_errmsg(db));
    }

    rows = NULL;

    rc = toll_ledger_totals(lg, &totals);
    if (rc != TOLL_LEDGER_OK) {
        goto failed;
    }

    r->batches_after = json_integer_value(json_object_get(totals, "batches"));
    json_decref(totals);

    for (i = 0; i < r->nparts; i++) {
        p = &r->parts[i];

        if (p->src != TOLLCTL_SRC_CLAIM) {
            continue;
        }

        rc = toll_ledger_has_batch(lg, p->batch, &found);
        if (rc != TOLL_LEDGER_OK) {
            goto failed;
        }

        /* posted, its delete not yet done: it counts as the ledger's */
        if (found) {
            p->src = TOLLCTL_SRC_NONE;
        }
    }

    for (i = 0; i < r->nintents; i++) {
        rc = toll_ledger_has_batch(lg, r->intents[i], &found);
        if (rc != TOLL_LEDGER_OK) {
            goto failed;
        }

        /* announced, neither in Redis nor posted: a claim in flight */
        if (!found) {
            r->in_flight++;
        }
    }

    rc = toll_ledger_usage_totals(lg, &rows);
    if (rc != TOLL_LEDGER_OK) {
        goto failed;
    }

    (void) sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);

    rc = EX_OK;

    json_array_foreach(rows, i, row) {
        buyer = json_string_value(json_object_get(row, "buyer"));
        day = json_string_value(json_object_get(row, "day"));
        service = json_string_value(json_object_get(row, "service"));

        if (buyer == NULL || day == NULL || service == NULL
            || strlen(day) != TOLLCTL_DAY_LEN)
        {
            continue;
        }

        rc = tollctl_recon_add(r, buyer, day, service, strlen(service),
                               TOLLCTL_SRC_LEDGER, NULL, &p);
        if (rc != EX_OK) {
            break;
        }

        p->v[0] = json_integer_value(json_object_get(row, "calls"));
        p->v[1] = json_integer_value(json_object_get(row, "free_calls"));
        p->v[2] = json_integer_value(json_object_get(row, "paid_calls"));
        p->v[3] = json_integer_value(json_object_get(row, "amount_micros"));
    }

    json_decref(rows);

    return rc;

failed:

    (void) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);

    return tollctl_ledger_fail(lg, rc, NULL);
}


/*
 * A usage hash, a mirror or a claim: fields "<service>:<metric>", values
 * int64 as decimal strings.  Metrics other than the four compared (errors,
 * latency_ms, provider) are not read.
 */
static int
tollctl_recon_hash(tollctl_recon_t *r, const char *name,
    const redisReply *hash, const char *buyer, const char *day,
    tollctl_src_e src, const char *batch)
{
    int              rc, m;
    size_t           i, j, first, slen, mlen;
    int64_t          v;
    const char      *colon;
    tollctl_part_t  *p;
    redisReply      *field;

    if (hash->type == REDIS_REPLY_ERROR) {
        return tollctl_error(EX_DATAERR, "Redis key %s: %s: it is not a "
                             "usage hash, remove it or rename it", name,
                             hash->str);
    }

    if (hash->type != REDIS_REPLY_ARRAY || hash->elements % 2 != 0) {
        return tollctl_error(EX_UNAVAILABLE, "HGETALL %s: unexpected reply",
                             name);
    }

    if (hash->elements == 0) {
        return EX_OK;
    }

    first = r->nparts;

    if (src == TOLLCTL_SRC_MIRROR) {
        rc = tollctl_recon_add(r, buyer, day, "", 0, TOLLCTL_SRC_MIRROR_DAY,
                               NULL, &p);
        if (rc != EX_OK) {
            return rc;
        }

        first = r->nparts;
    }

    for (i = 0; i < hash->elements; i += 2) {
        field = hash->element[i];

        if (field->type != REDIS_REPLY_STRING
            || hash->element[i + 1]->type != REDIS_REPLY_STRING)
        {
            return tollctl_error(EX_UNAVAILABLE, "HGETALL %s: unexpected "
                                 "reply", name);
        }

        colon = NULL;

        for (j = field->len; j > 0; j--) {
            if (field->str[j - 1] == ':') {
                colon = field->str + j - 1;
                break;
            }
        }

        if (colon == NULL || colon == field->str) {
            continue;
        }

        slen = (size_t) (colon - field->str);
        mlen = field->len - slen - 1;

        for (m = 0; m < TOLLCTL_METRICS; m++) {
            if (strlen(tollctl_metrics[m]) == mlen
                && memcmp(colon + 1, tollctl_metrics[m], mlen) == 0)
            {
                break;
            }
        }

        if (m == TOLLCTL_METRICS) {
            continue;
        }

        if (tollctl_count_parse(hash->element[i + 1], &v) != 0) {
            return tollctl_error(EX_DATAERR, "Redis key %s, field %.*s: "
                                 "\"%.*s\" is not a count; fix or remove "
                                 "the field", name, (int) field->len,
                                 field->str,
                                 (int) hash->element[i + 1]->len,
                                 hash->element[i + 1]->str);
        }

        p = NULL;

        for (j = first; j < r->nparts; j++) {
            if (strlen(r->parts[j].service) == slen
                && memcmp(r->parts[j].service, field->str, slen) == 0)
            {
                p = &r->parts[j];
                break;
            }
        }

        if (p == NULL) {
            if (r->nparts - first >= TOLLCTL_SERVICES_MAX) {
                return tollctl_error(EX_DATAERR, "Redis key %s holds more "
                                     "than %d services", name,
                                     TOLLCTL_SERVICES_MAX);
            }

            rc = tollctl_recon_add(r, buyer, day, field->str, slen, src,
                                   batch, &p);
            if (rc != EX_OK) {
                return rc;
            }
        }

        p->v[m] = v;
    }

    return EX_OK;
}


static int
tollctl_recon_add(tollctl_recon_t *r, const char *buyer, const char *day,
    const char *service, size_t service_len, tollctl_src_e src,
    const char *batch, tollctl_part_t **out)
{
    size_t           cap;
    tollctl_part_t  *grown, *p;

    if (r->nparts == r->cap) {
        if (r->cap >= TOLLCTL_RECONCILE_PARTS_MAX) {
            return tollctl_error(EX_SOFTWARE, "more than %d usage records: "
                                 "too many to reconcile at once",
                                 TOLLCTL_RECONCILE_PARTS_MAX);
        }

        cap = r->cap ? 2 * r->cap : TOLLCTL_RECONCILE_BATCH_MAX;

        grown = realloc(r->parts, cap * sizeof(tollctl_part_t));
        if (grown == NULL) {
            return tollctl_error(EX_OSERR, "out of memory");
        }

        r->parts = grown;
        r->cap = cap;
    }

    p = &r->parts[r->nparts];
    memset(p, 0, sizeof(tollctl_part_t));

    p->buyer = strdup(buyer);
    p->service = strndup(service, service_len);

    if (p->buyer == NULL || p->service == NULL) {
        free(p->buyer);
        free(p->service);
        return tollctl_error(EX_OSERR, "out of memory");
    }

    snprintf(p->day, sizeof(p->day), "%s", day);

    if (batch != NULL) {
        snprintf(p->batch, sizeof(p->batch), "%s", batch);
    }

    p->src = src;
    r->nparts++;
    *out = p;

    return EX_OK;
}


/*
 * Per (buyer, day, service): recorded = usage hash + mirror, pending =
 * usage hash + claims not posted, ledger = posted; recorded - pending -
 * ledger must be 0.  A row the ledger holds for a day whose mirror has
 * expired cannot be checked.
 */
static int
tollctl_recon_result(tollctl_recon_t *r, json_t **out, int64_t *ndiff)
{
    int              m, mirror, in_ledger, rc;
    size_t           i, j, day_start;
    int64_t          rows, unverifiable, d;
    json_t          *diffs, *result;
    tollctl_sums_t   s, total, lost;
    tollctl_part_t  *p, *q;

    *out = NULL;
    *ndiff = 0;

    if (r->nparts > 0) {
        qsort(r->parts, r->nparts, sizeof(tollctl_part_t), tollctl_part_cmp);
    }

    diffs = json_array();
    if (diffs == NULL) {
        return tollctl_error(EX_OSERR, "out of memory");
    }

    memset(&total, 0, sizeof(tollctl_sums_t));
    memset(&lost, 0, sizeof(tollctl_sums_t));
    rows = 0;
    unverifiable = 0;
    mirror = 0;
    day_start = 0;

    for (i = 0; i < r->nparts; i = j) {
        p = &r->parts[i];

        /* a new (buyer, day): its mirror, if any, sorts first */
        if (i == 0 || strcmp(p->buyer, r->parts[day_start].buyer) != 0
            || strcmp(p->day, r->parts[day_start].day) != 0)
        {
            day_start = i;
            mirror = (p->src == TOLLCTL_SRC_MIRROR_DAY);
        }

        memset(&s, 0, sizeof(tollctl_sums_t));
        in_ledger = 0;
        rc = 0;

        for (j = i; j < r->nparts; j++) {
            q = &r->parts[j];

            if (strcmp(q->buyer, p->buyer) != 0 || strcmp(q->day, p->day) != 0
                || strcmp(q->service, p->service) != 0)
            {
                break;
            }

            for (m = 0; m < TOLLCTL_METRICS; m++) {
                switch (q->src) {

                case TOLLCTL_SRC_LIVE:
                    rc |= __builtin_add_overflow(s.recorded[m], q->v[m],
                                                 &s.recorded[m]);
                    rc |= __builtin_add_overflow(s.pending[m], q->v[m],
                                                 &s.pending[m]);
                    break;

                case TOLLCTL_SRC_MIRROR:
                    rc |= __builtin_add_overflow(s.recorded[m], q->v[m],
                                                 &s.recorded[m]);
                    break;

                case TOLLCTL_SRC_CLAIM:
                    rc |= __builtin_add_overflow(s.pending[m], q->v[m],
                                                 &s.pending[m]);
                    break;

                case TOLLCTL_SRC_LEDGER:
                    rc |= __builtin_add_overflow(s.ledger[m], q->v[m],
                                                 &s.ledger[m]);
                    in_ledger = 1;
                    break;

                default:
                    break;
                }
            }
        }

        if (p->service[0] == '\0') {
            continue;                   /* the mirror's marker */
        }

        if (!mirror && in_ledger) {
            unverifiable++;

            for (m = 0; m < TOLLCTL_METRICS; m++) {
                rc |= __builtin_add_overflow(lost.ledger[m], s.ledger[m],
                                             &lost.ledger[m]);
            }

            if (rc) {
                goto overflow;
            }

            continue;
        }

        rows++;

        for (m = 0; m < TOLLCTL_METRICS; m++) {
            rc |= __builtin_add_overflow(total.recorded[m], s.recorded[m],
                                         &total.recorded[m]);
            rc |= __builtin_add_overflow(total.pending[m], s.pending[m],
                                         &total.pending[m]);
            rc |= __builtin_add_overflow(total.ledger[m], s.ledger[m],
                                         &total.ledger[m]);
            rc |= __builtin_sub_overflow(s.recorded[m], s.pending[m], &d);
            rc |= __builtin_sub_overflow(d, s.ledger[m], &d);
        }

        if (rc) {
            goto overflow;
        }

        for (m = 0; m < TOLLCTL_METRICS; m++) {
            if (s.recorded[m] - s.pending[m] - s.ledger[m] != 0) {
                break;
            }
        }

        if (m == TOLLCTL_METRICS) {
            continue;
        }

        if (++*ndiff <= TOLLCTL_RECONCILE_SHOWN_MAX
            && tollctl_recon_row(diffs, p, &s) != 0)
        {
            json_decref(diffs);
            return tollctl_error(EX_OSERR, "out of memory");
        }
    }

    result = json_pack("{s:b, s:I, s:I, s:I, s:o, s:o, s:o, s:o, s:o}",
                       "ok", *ndiff == 0,
                       "rows", (json_int_t) rows,
                       "differences", (json_int_t) *ndiff,
                       "unverifiable", (json_int_t) unverifiable,
                       "recorded", tollctl_metrics_json(total.recorded),
                       "pending", tollctl_metrics_json(total.pending),
                       "ledger", tollctl_metrics_json(total.ledger),
                       "unverifiable_ledger",
                       tollctl_metrics_json(lost.ledger),
                       "rows_differing", diffs);
    if (result == NULL) {
        return tollctl_error(EX_OSERR, "out of memory");
    }

    *out = result;

    return EX_OK;

overflow:

    json_decref(diffs);

    return tollctl_error(EX_DATAERR, "a usage sum overflows 64 bits: a "
                         "count in Redis or the ledger is corrupt");
}


static int
tollctl_recon_row(json_t *diffs, const tollctl_part_t *first,
    const tollctl_sums_t *s)
{
    int      m;
    int64_t  d[TOLLCTL_METRICS];
    json_t  *row;

    for (m = 0; m < TOLLCTL_METRICS; m++) {
        d[m] = s->recorded[m] - s->pending[m] - s->ledger[m];
    }

    row = json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:o}",
                    "buyer", first->buyer, "day", first->day,
                    "service", first->service,
                    "recorded", tollctl_metrics_json(s->recorded),
                    "pending", tollctl_metrics_json(s->pending),
                    "ledger", tollctl_metrics_json(s->ledger),
                    "difference", tollctl_metrics_json(d));

    if (row == NULL || json_array_append_new(diffs, row) != 0) {
        return -1;
    }

    return 0;
}


static json_t *
tollctl_metrics_json(const int64_t v[TOLLCTL_METRICS])
{
    char  amount[TOLLCTL_AMOUNT_LEN_MAX];

    tollctl_amount_text(v[3], 0, amount, sizeof(amount));

    return json_pack("{s:I, s:I, s:I, s:I, s:s}",
                     "calls", (json_int_t) v[0],
                     "free_calls", (json_int_t) v[1],
                     "paid_calls", (json_int_t) v[2],
                     "amount_micros", (json_int_t) v[3],
                     "amount", amount);
}


static void
tollctl_print_reconcile(json_t *result)
{
    int          m;
    char         cell[TOLLCTL_METRICS][TOLLCTL_CELL_LEN_MAX];
    size_t       i, k;
    json_t      *row, *v;
    const char  *names[] = { "recorded", "pending", "ledger" };

    printf("rows: %" JSON_INTEGER_FORMAT " (buyer, day, service), %"
           JSON_INTEGER_FORMAT " unverifiable (the ledger's, older than "
           "the 35-day mirror)\n",
           json_integer_value(json_object_get(result, "rows")),
           json_integer_value(json_object_get(result, "unverifiable")));

    printf("%-10s %14s %14s %14s %22s\n", "", "CALLS", "FREE_CALLS",
           "PAID_CALLS", "AMOUNT");

    for (k = 0; k < TOLLCTL_NELTS(names); k++) {
        v = json_object_get(result, names[k]);

        printf("%-10s %14" JSON_INTEGER_FORMAT " %14" JSON_INTEGER_FORMAT
               " %14" JSON_INTEGER_FORMAT " %22s\n", names[k],
               json_integer_value(json_object_get(v, "calls")),
               json_integer_value(json_object_get(v, "free_calls")),
               json_integer_value(json_object_get(v, "paid_calls")),
               json_string_value(json_object_get(v, "amount")));
    }

    printf("differences: %" JSON_INTEGER_FORMAT "\n",
           json_integer_value(json_object_get(result, "differences")));

    if (json_array_size(json_object_get(result, "rows_differing")) == 0) {
        return;
    }

    printf("\n%-20s %-8s %-16s %8s %10s %10s %14s\n", "BUYER", "DAY",
           "SERVICE", "CALLS", "FREE_CALLS", "PAID_CALLS", "AMOUNT");

    json_array_foreach(json_object_get(result, "rows_differing"), i, row) {
        v = json_object_get(row, "difference");

        for (m = 0; m < TOLLCTL_METRICS - 1; m++) {
            snprintf(cell[m], sizeof(cell[m]), "%s%" JSON_INTEGER_FORMAT,
                     json_integer_value(json_object_get(v,
                                                        tollctl_metrics[m]))
                     > 0 ? "+" : "",
                     json_integer_value(json_object_get(v,
                                                        tollctl_metrics[m])));
        }

        tollctl_amount_text(json_integer_value(json_object_get(v,
                                "amount_micros")), 1, cell[m],
                            sizeof(cell[m]));

        printf("%-20s %-8s %-16s %8s %10s %10s %14s\n",
               json_string_value(json_object_get(row, "buyer")),
               json_string_value(json_object_get(row, "day")),
               json_string_value(json_object_get(row, "service")),
               cell[0], cell[1], cell[2], cell[3]);
    }
}


/*
 * toll:usage:{<buyer>}:<YYYYMMDD> (*mirror = 0) or the same with
 * ":drained" (*mirror = 1).  The buyer may hold ':' and '}': it is what
 * lies between the prefix and the "}:" + 8 digits at the end.
 */
static int
tollctl_usage_name(const char *name, size_t len, char *buyer, char *day,
    int *mirror)
{
    size_t  i, plen, slen, blen;

    plen = sizeof(TOLLCTL_USAGE_PREFIX) - 1;
    slen = sizeof(TOLLCTL_MIRROR_SUFFIX) - 1;

    if (len > TOLLCTL_REDIS_NAME_LEN_MAX
        || len < plen || memcmp(name, TOLLCTL_USAGE_PREFIX, plen) != 0)
    {
        return -1;
    }

    *mirror = 0;

    if (len > slen
        && memcmp(name + len - slen, TOLLCTL_MIRROR_SUFFIX, slen) == 0)
    {
        *mirror = 1;
        len -= slen;
    }

    /* at least one character of buyer, "}:", 8 digits */
    if (len < plen + 1 + 2 + TOLLCTL_DAY_LEN) {
        return -1;
    }

    for (i = len - TOLLCTL_DAY_LEN; i < len; i++) {
        if (name[i] < '0' || name[i] > '9') {
            return -1;
        }
    }

    if (name[len - TOLLCTL_DAY_LEN - 1] != ':'
        || name[len - TOLLCTL_DAY_LEN - 2] != '}')
    {
        return -1;
    }

    blen = len - TOLLCTL_DAY_LEN - 2 - plen;

    if (memchr(name + plen, '\n', blen) != NULL
        || memchr(name + plen, '\0', blen) != NULL)
    {
        return -1;
    }

    memcpy(buyer, name + plen, blen);
    buyer[blen] = '\0';
    memcpy(day, name + len - TOLLCTL_DAY_LEN, TOLLCTL_DAY_LEN);
    day[TOLLCTL_DAY_LEN] = '\0';

    return 0;
}


/* toll:drain:{<buyer>}:<YYYYMMDD>:<32 lowercase hex> */
static int
tollctl_claim_name(const char *name, size_t len, char *buyer, char *day,
    char *batch)
{
    size_t  i, plen, tail, blen;

    plen = sizeof(TOLLCTL_DRAIN_PREFIX) - 1;
    tail = 2 + TOLLCTL_DAY_LEN + 1 + TOLLCTL_BATCH_ID_LEN;

    if (len <= plen + tail || len > TOLLCTL_REDIS_NAME_LEN_MAX
        || memcmp(name, TOLLCTL_DRAIN_PREFIX, plen) != 0)
    {
        return -1;
    }

    for (i = len - TOLLCTL_BATCH_ID_LEN; i < len; i++) {
        if (!((name[i] >= '0' && name[i] <= '9')
              || (name[i] >= 'a' && name[i] <= 'f')))
        {
            return -1;
        }
    }

    for (i = len - tail + 2; i < len - TOLLCTL_BATCH_ID_LEN - 1; i++) {
        if (name[i] < '0' || name[i] > '9') {
            return -1;
        }
    }

    if (name[len - tail] != '}' || name[len - tail + 1] != ':'
        || name[len - TOLLCTL_BATCH_ID_LEN - 1] != ':')
    {
        return -1;
    }

    blen = len - tail - plen;

    if (memchr(name + plen, '\n', blen) != NULL) {
        return -1;
    }

    memcpy(buyer, name + plen, blen);
    buyer[blen] = '\0';
    memcpy(day, name + len - tail + 2, TOLLCTL_DAY_LEN);
    day[TOLLCTL_DAY_LEN] = '\0';
    memcpy(batch, name + len - TOLLCTL_BATCH_ID_LEN, TOLLCTL_BATCH_ID_LEN);
    batch[TOLLCTL_BATCH_ID_LEN] = '\0';

    return 0;
}


/* a count as Redis holds it: an int64 in decimal, never a double */
static int
tollctl_count_parse(const redisReply *v, int64_t *out)
{
    char       buf[32];
    long long  n;

    if (v->len == 0 || v->len >= sizeof(buf)) {
        return -1;
    }

    memcpy(buf, v->str, v->len);
    buf[v->len] = '\0';

    if (tollctl_parse_ll(buf, INT64_MIN, INT64_MAX, &n) != 0) {
        return -1;
    }

    *out = n;

    return 0;
}


static int
tollctl_part_cmp(const void *a, const void *b)
{
    int                    r;
    const tollctl_part_t  *x, *y;

    x = a;
    y = b;

    r = strcmp(x->buyer, y->buyer);
    if (r != 0) {
        return r;
    }

    r = strcmp(x->day, y->day);
    if (r != 0) {
        return r;
    }

    r = strcmp(x->service, y->service);
    if (r != 0) {
        return r;
    }

    return (int) x->src - (int) y->src;
}


static int
tollctl_str_cmp(const void *a, const void *b)
{
    return strcmp(*(char * const *) a, *(char * const *) b);
}


static void
tollctl_strs_free(char **strs, size_t n)
{
    size_t  i;

    if (strs == NULL) {
        return;
    }

    for (i = 0; i < n; i++) {
        free(strs[i]);
    }

    free(strs);
}


static void
tollctl_sleep_ms(long ms)
{
    struct timespec  ts;

    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000;

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        /* the rest of the delay */
    }
}
