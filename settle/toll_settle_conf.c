/*
 * toll-settle: the configuration file, one directive per line
 * (docs/settle.md).  Every value is checked here, so that a running
 * daemon never meets a value it cannot use; a bad line is refused with
 * its file, line number and the value.
 */

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "toll_addr.h"
#include "toll_key.h"
#include "toll_parse.h"
#include "toll_settle_conf.h"


#define TOLL_SETTLE_ARGS_MAX  8


static int toll_settle_conf_line(toll_settle_conf_t *conf, char **args,
    int nargs, char *err, size_t err_size);
static int toll_settle_conf_provider_fee(toll_settle_conf_t *conf,
    char **args, int nargs, char *err, size_t err_size);
static int toll_settle_conf_balance_low(toll_settle_conf_t *conf,
    char **args, int nargs, char *err, size_t err_size);
static int toll_settle_conf_duration(toll_settle_conf_t *conf,
    const char *name, const char *value, char *err, size_t err_size);
static int toll_settle_conf_fee(const char *text, int64_t *bp);
static int toll_settle_conf_hook(toll_settle_conf_t *conf, char **args,
    int nargs, char *err, size_t err_size);


void
toll_settle_conf_init(toll_settle_conf_t *conf)
{
    memset(conf, 0, sizeof(toll_settle_conf_t));

    (void) toll_settle_conf_redis(conf, TOLL_SETTLE_REDIS_DEFAULT, NULL, 0);
    snprintf(conf->ledger, sizeof(conf->ledger), "%s",
             TOLL_SETTLE_LEDGER_DEFAULT);

    conf->redis_timeout_ms = TOLL_SETTLE_TIMEOUT_MS_DEFAULT;
    conf->redis_replicas = -1;
    conf->interval_ms = TOLL_SETTLE_INTERVAL_MS_DEFAULT;
    conf->batch_max = TOLL_SETTLE_BATCH_MAX_DEFAULT;
    conf->sweep_ms = TOLL_SETTLE_SWEEP_MS_DEFAULT;
    conf->fees.default_bp = TOLL_LEDGER_FEE_BP_DEFAULT;
    conf->hook_timeout_ms = TOLL_SETTLE_HOOK_TIMEOUT_MS_DEFAULT;
}


void
toll_settle_conf_free(toll_settle_conf_t *conf)
{
    size_t  i;

    for (i = 0; i < conf->fees.nproviders; i++) {
        free((char *) conf->provider_fees[i].provider);
    }

    for (i = 0; i < conf->nhooks; i++) {
        free((char *) conf->hooks[i].url);

        if (conf->hooks[i].secret != NULL) {
            /* a secret does not outlive its use in freed memory */
            explicit_bzero((char *) conf->hooks[i].secret,
                           strlen(conf->hooks[i].secret));
            free((char *) conf->hooks[i].secret);
        }
    }

    if (conf->redis_password != NULL) {
        explicit_bzero(conf->redis_password, strlen(conf->redis_password));
        free(conf->redis_password);
    }

    free(conf->provider_fees);
    free(conf->hooks);
    toll_settle_jwks_conf_free(&conf->jwks);

    memset(conf, 0, sizeof(toll_settle_conf_t));
}


int
toll_settle_conf_load(toll_settle_conf_t *conf, const char *path, char *err,
    size_t err_size)
{
    int    rc;
    FILE  *f;

    f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, err_size, "cannot open the configuration \"%s\": %s",
                 path, strerror(errno));
        return (errno == ENOENT) ? EX_NOINPUT : EX_CONFIG;
    }

    rc = toll_settle_conf_read(conf, f, path, err, err_size);

    fclose(f);

    return rc;
}


int
toll_settle_conf_read(toll_settle_conf_t *conf, FILE *f, const char *path,
    char *err, size_t err_size)
{
    int      rc, nargs, lineno;
    char     line[TOLL_SETTLE_LINE_LEN_MAX + 2], msg[256], *p, *hash;
    char    *args[TOLL_SETTLE_ARGS_MAX + 1];
    size_t   len;

    lineno = 0;
    rc = 0;

    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        len = strlen(line);

        if (len > TOLL_SETTLE_LINE_LEN_MAX) {
            snprintf(err, err_size, "%s:%d: line longer than %d bytes",
                     path, lineno, TOLL_SETTLE_LINE_LEN_MAX);
            rc = EX_CONFIG;
            break;
        }

        hash = strchr(line, '#');
        if (hash != NULL) {
            *hash = '\0';
        }

        nargs = 0;

        for (p = strtok(line, " \t\r\n"); p != NULL;
             p = strtok(NULL, " \t\r\n"))
        {
            if (nargs == TOLL_SETTLE_ARGS_MAX) {
                snprintf(err, err_size, "%s:%d: too many values", path,
                         lineno);
                rc = EX_CONFIG;
                goto done;
            }

            args[nargs++] = p;
        }

        if (nargs == 0) {
            continue;
        }

        args[nargs] = NULL;

        if (toll_settle_conf_line(conf, args, nargs, msg, sizeof(msg)) != 0) {
            snprintf(err, err_size, "%s:%d: %s", path, lineno, msg);
            rc = EX_CONFIG;
            break;
        }
    }

    if (rc == 0 && ferror(f)) {
        snprintf(err, err_size, "cannot read the configuration \"%s\"",
                 path);
        rc = EX_CONFIG;
    }

done:

    explicit_bzero(line, sizeof(line));

    return rc;
}


static int
toll_settle_conf_line(toll_settle_conf_t *conf, char **args, int nargs,
    char *err, size_t err_size)
{
    int64_t      n;
    const char  *name;

    name = args[0];

    if (strcmp(name, "webhook") == 0) {
        return toll_settle_conf_hook(conf, args, nargs, err, err_size);
    }

    if (strcmp(name, "provider_fee") == 0) {
        return toll_settle_conf_provider_fee(conf, args, nargs, err,
                                             err_size);
    }

    if (strcmp(name, "balance_low") == 0) {
        return toll_settle_conf_balance_low(conf, args, nargs, err,
                                            err_size);
    }

    if (strcmp(name, "jwks") == 0 || strcmp(name, "jwks_ca") == 0) {
        return toll_settle_jwks_conf(&conf->jwks, args, nargs, err,
                                     err_size);
    }

    /* "redis sentinel=... master=NAME": the one line of two words */
    if (strcmp(name, "redis") == 0 && (nargs == 2 || nargs == 3)) {
        char  line[TOLL_SETTLE_REDIS_TEXT_MAX + 2], why[512];

        if (snprintf(line, sizeof(line), "%s%s%s", args[1],
                     (nargs == 3) ? " " : "", (nargs == 3) ? args[2] : "")
            >= (int) sizeof(line))
        {
            snprintf(err, err_size, "invalid redis: the value is too long");
            return -1;
        }

        if (toll_settle_conf_redis(conf, line, why, sizeof(why)) != 0) {
            snprintf(err, err_size, "invalid redis address \"%.64s\": %.150s",
                     line, why);
            return -1;
        }

        return 0;
    }

    if (nargs != 2) {
        snprintf(err, err_size, "\"%s\" takes one value", name);
        return -1;
    }

    if (strcmp(name, "metrics_listen") == 0) {
        if (toll_settle_listen_parse(args[1], &conf->metrics) != 0) {
            snprintf(err, err_size, "invalid metrics_listen \"%s\": use "
                     "IPV4:PORT, [IPV6]:PORT, localhost:PORT or off, port "
                     "1 to 65535", args[1]);
            return -1;
        }

        return 0;
    }

    if (strcmp(name, "redis_password") == 0) {
        free(conf->redis_password);
        conf->redis_password = strdup(args[1]);
        return conf->redis_password ? 0 : -1;
    }

    if (strcmp(name, "redis_replicas") == 0) {
        if (toll_parse_int64(args[1], 0, 16, &n) != 0) {
            snprintf(err, err_size, "invalid redis_replicas \"%s\": 0 to 16",
                     args[1]);
            return -1;
        }

        conf->redis_replicas = (int) n;
        return 0;
    }

    if (strcmp(name, "redis_db") == 0) {
        if (toll_parse_int64(args[1], 0, INT_MAX, &n) != 0) {
            snprintf(err, err_size, "invalid redis_db \"%s\"", args[1]);
            return -1;
        }

        conf->redis_db = (int) n;
        return 0;
    }

    if (strcmp(name, "ledger") == 0) {
        if (strlen(args[1]) > TOLL_SETTLE_PATH_LEN_MAX) {
            snprintf(err, err_size, "ledger path too long");
            return -1;
        }

        snprintf(conf->ledger, sizeof(conf->ledger), "%s", args[1]);
        return 0;
    }

    if (strcmp(name, "fee") == 0) {
        if (toll_settle_conf_fee(args[1], &conf->fees.default_bp) != 0) {
            snprintf(err, err_size, "invalid fee \"%s\": a percent from 0%% "
                     "to 100%% with two decimals at most", args[1]);
            return -1;
        }

        return 0;
    }

    if (strcmp(name, "batch_max") == 0) {
        if (toll_parse_int64(args[1], 1, TOLL_SETTLE_BATCH_MAX_MAX,
                                    &conf->batch_max)
            != 0)
        {
            snprintf(err, err_size, "invalid batch_max \"%s\": 1 to %d",
                     args[1], TOLL_SETTLE_BATCH_MAX_MAX);
            return -1;
        }

        return 0;
    }

    return toll_settle_conf_duration(conf, name, args[1], err, err_size);
}


/* provider_fee PROVIDER PERCENT: a provider's own fee over "fee" */
static int
toll_settle_conf_provider_fee(toll_settle_conf_t *conf, char **args,
    int nargs, char *err, size_t err_size)
{
    int64_t             n;
    toll_ledger_fee_t  *fees;

    if (nargs != 3) {
        snprintf(err, err_size, "\"provider_fee\" takes a provider and "
                 "a percent, as in \"provider_fee acme 5%%\"");
        return -1;
    }

    if (!toll_owner_valid((const unsigned char *) args[1],
                          strlen(args[1])))
    {
        snprintf(err, err_size, "invalid provider \"%s\"", args[1]);
        return -1;
    }

    if (toll_settle_conf_fee(args[2], &n) != 0) {
        snprintf(err, err_size, "invalid fee \"%s\": a percent from 0%% "
                 "to 100%% with two decimals at most", args[2]);
        return -1;
    }

    if (conf->fees.nproviders == TOLL_SETTLE_PROVIDER_FEES_MAX) {
        snprintf(err, err_size, "more than %d \"provider_fee\" lines",
                 TOLL_SETTLE_PROVIDER_FEES_MAX);
        return -1;
    }

    fees = realloc(conf->provider_fees, (conf->fees.nproviders + 1)
                                        * sizeof(toll_ledger_fee_t));
    if (fees == NULL) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }

    conf->provider_fees = fees;
    conf->fees.providers = fees;

    fees[conf->fees.nproviders].provider = strdup(args[1]);
    fees[conf->fees.nproviders].fee_bp = n;

    if (fees[conf->fees.nproviders].provider == NULL) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }

    conf->fees.nproviders++;

    return 0;
}


/*
 * balance_low CUR AMOUNT: one per currency; an amount above 0, since a
 * balance at or below 0 is exhausted, not low.
 */
static int
toll_settle_conf_balance_low(toll_settle_conf_t *conf, char **args,
    int nargs, char *err, size_t err_size)
{
    int                 mrc;
    size_t              i, len;
    int64_t             n;
    toll_settle_low_t  *low;

    if (nargs != 3) {
        snprintf(err, err_size, "\"balance_low\" takes a currency and an "
                 "amount, as in \"balance_low USD 5.00\"");
        return -1;
    }

    len = strlen(args[1]);

    if (!toll_money_currency_valid(args[1], len)) {
        snprintf(err, err_size, "invalid currency \"%.*s\": 3 to 16 "
                 "upper-case letters and digits, a letter first",
                 (int) (len > 32 ? 32 : len), args[1]);
        return -1;
    }

    mrc = toll_money_parse(args[2], strlen(args[2]), &n);

    if (mrc != TOLL_MONEY_OK || n == 0) {
        snprintf(err, err_size, "invalid balance_low amount \"%.*s\": %s",
                 64, args[2], (mrc != TOLL_MONEY_OK)
                              ? toll_money_strerror(mrc)
                              : "must be above 0");
        return -1;
    }

    for (i = 0; i < conf->nlows; i++) {
        if (strcmp(conf->lows[i].currency, args[1]) == 0) {
            snprintf(err, err_size, "\"balance_low %s\" is given twice",
                     args[1]);
            return -1;
        }
    }

    if (conf->nlows == TOLL_SETTLE_BALANCE_LOWS_MAX) {
        snprintf(err, err_size, "more than %d \"balance_low\" lines",
                 TOLL_SETTLE_BALANCE_LOWS_MAX);
        return -1;
    }

    low = &conf->lows[conf->nlows++];
    memcpy(low->currency, args[1], len + 1);
    low->micros = n;

    return 0;
}


/* the directives whose value is a duration, and any other name */
static int
toll_settle_conf_duration(toll_settle_conf_t *conf, const char *name,
    const char *value, char *err, size_t err_size)
{
    int64_t  n;

    if (strcmp(name, "interval") == 0) {
        if (toll_parse_duration_ms(value, TOLL_SETTLE_INTERVAL_MS_MIN,
                                   TOLL_SETTLE_INTERVAL_MS_MAX, &n)
            != 0)
        {
            snprintf(err, err_size, "invalid interval \"%s\": 100ms to 60s",
                     value);
            return -1;
        }

        conf->interval_ms = n;
        return 0;
    }

    if (strcmp(name, "sweep_interval") == 0) {
        if (toll_parse_duration_ms(value, TOLL_SETTLE_INTERVAL_MS_MIN,
                                   INT64_MAX, &n)
            != 0)
        {
            snprintf(err, err_size, "invalid sweep_interval \"%s\"",
                     value);
            return -1;
        }

        conf->sweep_ms = n;
        return 0;
    }

    if (strcmp(name, "redis_timeout") == 0
        || strcmp(name, "webhook_timeout") == 0)
    {
        if (toll_parse_duration_ms(value, 1, TOLL_SETTLE_TIMEOUT_MS_MAX, &n)
            != 0)
        {
            snprintf(err, err_size, "invalid %s \"%s\": 1ms to 10m", name,
                     value);
            return -1;
        }

        if (name[0] == 'r') {
            conf->redis_timeout_ms = n;

        } else {
            conf->hook_timeout_ms = n;
        }

        return 0;
    }

    snprintf(err, err_size, "unknown directive \"%s\"", name);

    return -1;
}


/* webhook URL events=E[,E...] secret=S */
static int
toll_settle_conf_hook(toll_settle_conf_t *conf, char **args, int nargs,
    char *err, size_t err_size)
{
    int                  i;
    char                *e, *save;
    unsigned             bit, events;
    const char          *secret;
    toll_settle_hook_t  *hooks, *h;

    if (strncmp(args[1] ? args[1] : "", "http://", 7) != 0
        && strncmp(args[1] ? args[1] : "", "https://", 8) != 0)
    {
        snprintf(err, err_size, "\"webhook\" needs an http:// or https:// "
                 "URL first");
        return -1;
    }

    events = 0;
    secret = NULL;

    for (i = 2; i < nargs; i++) {
        if (strncmp(args[i], "events=", 7) == 0) {
            for (e = strtok_r(args[i] + 7, ",", &save); e != NULL;
                 e = strtok_r(NULL, ",", &save))
            {
                bit = toll_settle_event_bit(e);

                if (bit == 0) {
                    snprintf(err, err_size, "unknown event \"%s\": %s, %s, "
                             "%s, %s, %s or %s", e,
                             TOLL_LEDGER_EVENT_SETTLEMENT_CREATED,
                             TOLL_LEDGER_EVENT_SETTLEMENT_COMPLETED,
                             TOLL_LEDGER_EVENT_FREE_TIER_EXHAUSTED,
                             TOLL_LEDGER_EVENT_BALANCE_LOW,
                             TOLL_LEDGER_EVENT_BALANCE_EXHAUSTED,
                             TOLL_LEDGER_EVENT_SPEND_CAP_THRESHOLD);
                    return -1;
                }

                events |= bit;
            }

            continue;
        }

        if (strncmp(args[i], "secret=", 7) == 0 && args[i][7] != '\0') {
            secret = args[i] + 7;
            continue;
        }

        snprintf(err, err_size, "invalid webhook parameter \"%.*s\"",
                 (int) strcspn(args[i], "="), args[i]);
        return -1;
    }

    if (events == 0 || secret == NULL) {
        snprintf(err, err_size, "\"webhook\" needs \"events=\" and "
                 "\"secret=\"");
        return -1;
    }

    if (conf->nhooks == TOLL_SETTLE_HOOKS_MAX) {
        snprintf(err, err_size, "more than %d webhooks",
                 TOLL_SETTLE_HOOKS_MAX);
        return -1;
    }

    hooks = realloc(conf->hooks,
                    (conf->nhooks + 1) * sizeof(toll_settle_hook_t));
    if (hooks == NULL) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }

    conf->hooks = hooks;
    h = &hooks[conf->nhooks];

    h->url = strdup(args[1]);
    h->secret = strdup(secret);
    h->events = events;

    conf->nhooks++;

    if (h->url == NULL || h->secret == NULL) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }

    return 0;
}


/* the store's spec parsed by lib/toll_store_spec.c, kept with its text
 * for messages */
int
toll_settle_conf_redis(toll_settle_conf_t *conf, const char *text,
    char *err, size_t err_size)
{
    char               why[512];
    toll_store_spec_t  spec;

    if (strlen(text) > TOLL_SETTLE_REDIS_TEXT_MAX) {
        snprintf(why, sizeof(why), "over %d bytes",
                 (int) TOLL_SETTLE_REDIS_TEXT_MAX);

    } else if (toll_store_spec_parse_line(&spec, text, TOLL_ADDR_UNIX, why,
                                          sizeof(why))
               == 0)
    {
        conf->redis_spec = spec;
        snprintf(conf->redis_text, sizeof(conf->redis_text), "%s", text);
        return 0;
    }

    if (err != NULL) {
        snprintf(err, err_size, "%s", why);
    }

    return -1;
}


/* "10%", "2.5%", "0.25%" to basis points; at most 100% */
static int
toll_settle_conf_fee(const char *text, int64_t *bp)
{
    int64_t      whole, frac, digits;
    const char  *p;

    whole = 0;

    for (p = text; *p >= '0' && *p <= '9' && p - text < 3; p++) {
        whole = whole * 10 + (*p - '0');
    }

    if (p == text) {
        return -1;
    }

    frac = 0;
    digits = 0;

    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9' && digits < 2; p++, digits++) {
            frac = frac * 10 + (*p - '0');
        }

        if (digits == 0) {
            return -1;
        }
    }

    if (digits == 1) {
        frac *= 10;
    }

    if (strcmp(p, "%") != 0) {
        return -1;
    }

    *bp = whole * 100 + frac;

    return (*bp <= TOLL_LEDGER_FEE_BP_MAX) ? 0 : -1;
}


