/*
 * tollctl: the ledger and settlement commands (docs/tollctl.md, "Ledger
 * and settlements"), and the opening of the ledger that reconcile shares.
 *
 * Readers open the ledger read-only: SQLite's WAL lets them run beside
 * toll-settle without blocking it.  The two writers (settlement create
 * and pay) open it read-write but never create it: a ledger is made by
 * toll-settle, with its id bound to the Redis it drains.
 */

/* strptime() is XSI */
#define _XOPEN_SOURCE                 700

#include <assert.h>
#include <errno.h>
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
#include "toll_parse.h"
#include "tollctl.h"
#include "tollctl_ledger.h"


/* --limit of settlement list and ledger entries */
#define TOLLCTL_LIMIT_DEFAULT         50
#define TOLLCTL_LIMIT_MAX             1000

/* the latest time --from and --to take: 9999-12-31T23:59:59Z */
#define TOLLCTL_TIME_MAX              253402300799LL
#define TOLLCTL_YEAR_MIN              1970
#define TOLLCTL_YEAR_MAX              9999
/* "2026-03-01" and "2026-03-01T00:00:00Z" */
#define TOLLCTL_DATE_LEN              10
#define TOLLCTL_DATE_FMT              "%Y-%m-%d"
#define TOLLCTL_DATETIME_LEN          20
#define TOLLCTL_DATETIME_FMT          "%Y-%m-%dT%H:%M:%SZ"

#define TOLLCTL_ERR_LEN_MAX           512

#define TOLLCTL_ACCOUNT_BUYER         "buyer:"
#define TOLLCTL_ACCOUNT_PROVIDER      "provider:"


static const char *tollctl_ledger_path(tollctl_t *ctl);
static int tollctl_ledger_status(int rc);
static int tollctl_ledger_done(toll_ledger_t *lg, int rc, const char *hint);
static int tollctl_ledger_reply(tollctl_t *ctl, toll_ledger_t *lg, int rc,
    const char *hint, json_t *out, void (*text)(json_t *value));


static int tollctl_provider_check(const char *opt, const char *provider);
static int tollctl_account_check(const char *opt, const char *account);
static int tollctl_limit_parse(const char *limit, int64_t *out);
static int tollctl_time_parse(const char *opt, const char *s, int64_t *t);

static void tollctl_print_settlements(json_t *list);
static void tollctl_print_entries(json_t *list);
static void tollctl_print_check(json_t *report);


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


int
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


int
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


/* closes lg; a failure of the call that gave rc is reported with hint */
static int
tollctl_ledger_done(toll_ledger_t *lg, int rc, const char *hint)
{
    if (rc != TOLL_LEDGER_OK) {
        rc = tollctl_ledger_fail(lg, rc, hint);
        toll_ledger_close(lg);
        return rc;
    }

    toll_ledger_close(lg);

    return EX_OK;
}


/* the end of a verb: closes lg, then prints out and drops it */
static int
tollctl_ledger_reply(tollctl_t *ctl, toll_ledger_t *lg, int rc,
    const char *hint, json_t *out, void (*text)(json_t *value))
{
    rc = tollctl_ledger_done(lg, rc, hint);
    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_output(ctl, out, text);
    json_decref(out);

    return rc;
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


int
tollctl_settlement_create(tollctl_t *ctl, tollctl_opts_t *o)
{
    int             rc;
    json_t         *s;
    int64_t         from, to;
    const char     *provider, *from_opt, *to_opt;
    toll_ledger_t  *lg;

    provider = o->opt[TOLLCTL_OPT_PROVIDER];
    from_opt = o->opt[TOLLCTL_OPT_FROM];
    to_opt = o->opt[TOLLCTL_OPT_TO];

    if (provider == NULL || from_opt == NULL || to_opt == NULL) {
        return tollctl_usage_error("\"settlement create\" needs %s",
                                   provider == NULL ? "--provider"
                                   : from_opt == NULL ? "--from" : "--to");
    }

    rc = tollctl_provider_check("--provider", provider);
    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_time_parse("--from", from_opt, &from);
    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_time_parse("--to", to_opt, &to);
    if (rc != EX_OK) {
        return rc;
    }

    if (from >= to) {
        return tollctl_error(EX_DATAERR, "--from \"%s\" is not before --to "
                             "\"%s\": a period is [from, to)", from_opt,
                             to_opt);
    }

    rc = tollctl_ledger_open(ctl, 1, &lg);
    if (rc != EX_OK) {
        return rc;
    }

    rc = toll_settlement_create(lg, provider, from, to, &s);

    return tollctl_ledger_reply(ctl, lg, rc, NULL, s, tollctl_print_fields);
}


int
tollctl_settlement_list(tollctl_t *ctl, tollctl_opts_t *o)
{
    int             rc;
    json_t         *list;
    int64_t         limit;
    const char     *provider, *status;
    toll_ledger_t  *lg;

    provider = o->opt[TOLLCTL_OPT_PROVIDER];
    status = o->opt[TOLLCTL_OPT_STATUS];

    if (provider != NULL) {
        rc = tollctl_provider_check("--provider", provider);
        if (rc != EX_OK) {
            return rc;
        }
    }

    if (status != NULL && strcmp(status, "pending") != 0
        && strcmp(status, "completed") != 0)
    {
        return tollctl_error(EX_DATAERR, "invalid --status \"%s\": use "
                             "pending or completed", status);
    }

    limit = 0;
    rc = tollctl_limit_parse(o->opt[TOLLCTL_OPT_LIMIT], &limit);
    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_ledger_open(ctl, 0, &lg);
    if (rc != EX_OK) {
        return rc;
    }

    rc = toll_settlement_list(lg, provider, status, limit, &list);

    return tollctl_ledger_reply(ctl, lg, rc, NULL, list,
                                tollctl_print_settlements);
}


int
tollctl_settlement_show(tollctl_t *ctl, tollctl_opts_t *o)
{
    int             rc;
    json_t         *s;
    toll_ledger_t  *lg;

    rc = tollctl_ledger_open(ctl, 0, &lg);
    if (rc != EX_OK) {
        return rc;
    }

    rc = toll_settlement_get(lg, o->args[0], &s);

    return tollctl_ledger_reply(ctl, lg, rc, "; \"tollctl settlement list\" "
                                "shows the settlements", s,
                                tollctl_print_fields);
}


int
tollctl_settlement_pay(tollctl_t *ctl, tollctl_opts_t *o)
{
    int             rc;
    json_t         *s;
    const char     *tx;
    toll_ledger_t  *lg;

    tx = o->opt[TOLLCTL_OPT_TX];

    if (tx == NULL) {
        return tollctl_usage_error("\"settlement pay\" needs --tx, the "
                                   "payment's reference");
    }

    if (!toll_settlement_tx_ref_valid(tx)) {
        return tollctl_error(EX_DATAERR, "invalid --tx: use 1 to %d "
                             "printable ASCII characters, e.g. the wire's "
                             "or the chain's transaction id",
                             TOLL_LEDGER_TX_REF_LEN_MAX);
    }

    rc = tollctl_ledger_open(ctl, 1, &lg);
    if (rc != EX_OK) {
        return rc;
    }

    rc = toll_settlement_pay(lg, o->args[0], tx, &s);

    return tollctl_ledger_reply(ctl, lg, rc,
                                (rc == TOLL_LEDGER_NOT_FOUND)
                                ? "; \"tollctl settlement list\" shows "
                                  "the settlements"
                                : NULL,
                                s, tollctl_print_fields);
}


int
tollctl_ledger_balance(tollctl_t *ctl, tollctl_opts_t *o)
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

    return tollctl_ledger_reply(ctl, lg, rc, ": nothing was posted to it yet",
                                b, tollctl_print_fields);
}


int
tollctl_ledger_entries(tollctl_t *ctl, tollctl_opts_t *o)
{
    int             rc;
    json_t         *list, *b;
    int64_t         limit;
    const char     *account;
    toll_ledger_t  *lg;

    account = o->opt[TOLLCTL_OPT_ACCOUNT];

    if (account != NULL) {
        rc = tollctl_account_check("--account", account);
        if (rc != EX_OK) {
            return rc;
        }
    }

    limit = 0;
    rc = tollctl_limit_parse(o->opt[TOLLCTL_OPT_LIMIT], &limit);
    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_ledger_open(ctl, 0, &lg);
    if (rc != EX_OK) {
        return rc;
    }

    /* an account never posted to is an error, not an empty list */
    if (account != NULL) {
        rc = toll_ledger_balance(lg, account, &b);

        if (rc != TOLL_LEDGER_OK) {
            rc = tollctl_ledger_fail(lg, rc, ": nothing was posted to it "
                                     "yet");
            toll_ledger_close(lg);
            return rc;
        }

        json_decref(b);
    }

    rc = toll_ledger_entries(lg, account, limit, &list);

    return tollctl_ledger_reply(ctl, lg, rc, NULL, list,
                                tollctl_print_entries);
}


int
tollctl_ledger_check(tollctl_t *ctl, tollctl_opts_t *o)
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

    rc = tollctl_ledger_done(lg, rc, NULL);
    if (rc != EX_OK) {
        return rc;
    }

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
    const char  *owner, *colon;

    if (strcmp(account, TOLL_LEDGER_ACCOUNT_FEES) == 0
        || strcmp(account, TOLL_LEDGER_ACCOUNT_CASH) == 0
        || strcmp(account, TOLL_LEDGER_ACCOUNT_ADJUSTMENTS) == 0)
    {
        return EX_OK;
    }

    owner = NULL;
    plen = sizeof(TOLL_LEDGER_ACCOUNT_PREPAID) - 1;

    /* prepaid:<CUR>:<owner>: a currency code holds no ':' */
    if (strncmp(account, TOLL_LEDGER_ACCOUNT_PREPAID, plen) == 0
        && (colon = strchr(account + plen, ':')) != NULL
        && toll_money_currency_valid(account + plen,
                                     (size_t) (colon - account - plen)))
    {
        owner = colon + 1;
    }

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
                             TOLL_LEDGER_ACCOUNT_CASH " (or prepaid:CUR:ID, "
                             TOLL_LEDGER_ACCOUNT_ADJUSTMENTS ")", opt,
                             account);
    }

    return EX_OK;
}


static int
tollctl_limit_parse(const char *limit, int64_t *out)
{
    if (limit == NULL) {
        *out = TOLLCTL_LIMIT_DEFAULT;
        return EX_OK;
    }

    if (toll_parse_int64(limit, 1, TOLLCTL_LIMIT_MAX, out) != 0) {
        return tollctl_error(EX_DATAERR, "invalid --limit \"%s\": use an "
                             "integer from 1 to %d", limit,
                             TOLLCTL_LIMIT_MAX);
    }

    return EX_OK;
}


/* "2026-03-01T00:00:00Z", "2026-03-01" (UTC midnight) or "@1772323200" */
static int
tollctl_time_parse(const char *opt, const char *s, int64_t *t)
{
    char         back[TOLLCTL_DATETIME_LEN + 1];
    time_t       tt;
    struct tm    tm, check;
    const char  *fmt, *end;

    if (s[0] == '@') {
        if (toll_parse_int64(s + 1, 0, TOLLCTL_TIME_MAX, t) != 0) {
            goto invalid;
        }

        return EX_OK;
    }

    fmt = (strlen(s) == TOLLCTL_DATE_LEN) ? TOLLCTL_DATE_FMT
                                          : TOLLCTL_DATETIME_FMT;

    memset(&tm, 0, sizeof(struct tm));

    end = strptime(s, fmt, &tm);

    if (end == NULL || *end != '\0'
        || tm.tm_year < TOLLCTL_YEAR_MIN - 1900
        || tm.tm_year > TOLLCTL_YEAR_MAX - 1900)
    {
        goto invalid;
    }

    tt = timegm(&tm);

    /*
     * strptime() takes " 3" or "3" for "03", and "2026-02-30" or a 60th
     * second, which timegm() carries over: what does not print back as
     * it was given is refused.
     */
    if (tt == (time_t) -1 || gmtime_r(&tt, &check) == NULL
        || strftime(back, sizeof(back), fmt, &check) == 0
        || strcmp(back, s) != 0)
    {
        goto invalid;
    }

    *t = (int64_t) tt;

    return EX_OK;

invalid:

    return tollctl_error(EX_DATAERR, "invalid %s \"%s\": use a UTC time as "
                         "2026-03-01T00:00:00Z, a day as 2026-03-01 (its "
                         "midnight, UTC) or unix seconds as @1772323200",
                         opt, s);
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

        } else if (json_is_string(json_object_get(e, "ref"))) {
            /* a balance's credit, debit or refund: its buyer and ref */
            snprintf(ref, sizeof(ref), "%s %s",
                     tollctl_cell(json_object_get(e, "buyer"), NULL, 0),
                     tollctl_cell(json_object_get(e, "ref"), NULL, 0));

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

