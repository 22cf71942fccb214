/*
 * toll-settle: the metrics page (docs/settle.md, "Metrics").  Names,
 * types and units as Prometheus asks: base units, "_total" on counters,
 * no label whose values grow with the traffic (buyers, keys, services):
 * the series are fixed.  The listener (toll_settle_metrics.c) hands in
 * a copy of the figures; nothing here locks, reads a clock or does I/O.
 */


#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>

#include "toll_settle_jwks.h"
#include "toll_settle_metrics.h"
#include "toll_settle_metrics_page.h"
#include "toll_settle_webhook.h"


/* the page being written; overflow is sticky */
typedef struct {
    char                      *p;
    size_t                     size;
    size_t                     len;
    int                        overflow;
} toll_settle_page_t;


static void toll_settle_metrics_render_drain(toll_settle_page_t *pg,
    const toll_settle_figures_t *f, int64_t lag_ms);
static void toll_settle_metrics_render_ledger(toll_settle_page_t *pg,
    const toll_settle_figures_t *f, const toll_settle_hook_stats_t *hs);
static void toll_settle_metrics_render_jwks(toll_settle_page_t *pg);
static void toll_settle_page_count(toll_settle_page_t *pg,
    const char *name, const char *help, uint64_t v);
static void toll_settle_page_int(toll_settle_page_t *pg, const char *name,
    const char *type, const char *help, int64_t v);
static void toll_settle_page_family(toll_settle_page_t *pg,
    const char *name, const char *type, const char *help);
static void toll_settle_page_printf(toll_settle_page_t *pg,
    const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void toll_settle_page_seconds(toll_settle_page_t *pg,
    const char *name, int64_t ms);


size_t
toll_settle_metrics_page(char *buf, size_t size, const char *version,
    const toll_settle_figures_t *f, const toll_settle_hook_stats_t *hs,
    int64_t lag_ms, int *overflow)
{
    char                ch;
    size_t              i;
    toll_settle_page_t  pg;

    pg.p = buf;
    pg.size = size;
    pg.len = 0;
    pg.overflow = 0;

    toll_settle_page_family(&pg, "toll_settle_build_info", "gauge",
        "The version of toll-settle, as the label version; always 1.");

    /* a label value escapes backslash, quote and newline */
    toll_settle_page_printf(&pg, "toll_settle_build_info{version=\"");

    for (i = 0; version[i] != '\0'; i++) {
        ch = version[i];

        toll_settle_page_printf(&pg, "%s%c",
                                (ch == '\\' || ch == '"' || ch == '\n')
                                ? "\\" : "",
                                (ch == '\n') ? 'n' : ch);
    }

    toll_settle_page_printf(&pg, "\"} 1\n");

    toll_settle_metrics_render_drain(&pg, f, lag_ms);
    toll_settle_metrics_render_ledger(&pg, f, hs);
    toll_settle_metrics_render_jwks(&pg);

    *overflow = pg.overflow;

    return pg.len;
}


/* the drain's families, from its figures and the lag */
static void
toll_settle_metrics_render_drain(toll_settle_page_t *pg,
    const toll_settle_figures_t *f, int64_t lag_ms)
{
    toll_settle_page_count(pg, "toll_settle_passes_total",
        "Drain passes that ended without an error.", f->passes);

    toll_settle_page_count(pg, "toll_settle_batches_total",
        "Batches (a buyer's usage of a day) posted to the ledger.",
        f->batches);

    toll_settle_page_count(pg, "toll_settle_replays_total",
        "Claims found already committed to the ledger, only deleted "
        "from Redis.", f->replays);

    toll_settle_page_count(pg, "toll_settle_records_total",
        "Usage records (a service's usage in a batch) posted.", f->records);

    toll_settle_page_count(pg, "toll_settle_balance_transactions_total",
        "Prepaid balances' credits, debits and refunds posted to the "
        "ledger.", f->balance_txs);

    toll_settle_page_family(pg, "toll_settle_balance_alerts_total",
        "counter", "Balance alerts written to the ledger with their event, "
        "by kind (balance.low, balance.exhausted).");
    toll_settle_page_printf(pg, "toll_settle_balance_alerts_total"
                            "{kind=\"low\"} %llu\n",
                            (unsigned long long) f->alerts_low);
    toll_settle_page_printf(pg, "toll_settle_balance_alerts_total"
                            "{kind=\"exhausted\"} %llu\n",
                            (unsigned long long) f->alerts_exhausted);

    toll_settle_page_int(pg, "toll_settle_drained_micros_total", "counter",
        "Amount posted to the ledger, in micro-units (1e-6) of the "
        "currency.", f->drained_micros);

    toll_settle_page_family(pg, "toll_settle_errors_total", "counter",
        "Drain passes cut short, by the stage that failed; the next pass "
        "retries.");
    toll_settle_page_printf(pg, "toll_settle_errors_total{stage=\"redis\"} "
                            "%llu\n", (unsigned long long) f->redis_errors);
    toll_settle_page_printf(pg, "toll_settle_errors_total{stage=\"ledger\"} "
                            "%llu\n", (unsigned long long) f->ledger_errors);

    toll_settle_page_family(pg, "toll_settle_last_pass_timestamp_seconds",
        "gauge", "Unix time at which the last pass that emptied the usage "
        "index started; 0 before the first.");
    toll_settle_page_seconds(pg, "toll_settle_last_pass_timestamp_seconds",
                             f->full_pass_unix_ms);

    toll_settle_page_family(pg, "toll_settle_drain_lag_seconds", "gauge",
        "Usage flushed to Redis more than this long ago is in the ledger.");
    toll_settle_page_seconds(pg, "toll_settle_drain_lag_seconds", lag_ms);

    toll_settle_page_int(pg, "toll_settle_open_claims", "gauge",
        "Claims left in toll:drain:open after the last pass: claims no "
        "pass can finish, left for the operator.", f->open_claims);

    toll_settle_page_count(pg, "toll_settle_quarantined_total",
        "Claims the ledger refused, set aside in toll:drain:quarantine.",
        f->quarantined);

    toll_settle_page_int(pg, "toll_settle_quarantine_claims", "gauge",
        "Claims in toll:drain:quarantine after the last pass, waiting for "
        "the operator (tollctl quarantine).", f->quarantine_claims);
}


/* the ledger's totals and the webhook sender's counters */
static void
toll_settle_metrics_render_ledger(toll_settle_page_t *pg,
    const toll_settle_figures_t *f, const toll_settle_hook_stats_t *hs)
{
    toll_settle_page_int(pg, "toll_settle_ledger_debits_micros", "gauge",
        "The ledger's total debits in micro-units, after the last pass.",
        f->ledger_debits_micros);

    toll_settle_page_int(pg, "toll_settle_ledger_credits_micros", "gauge",
        "The ledger's total credits in micro-units, after the last pass; "
        "equal to the debits.", f->ledger_credits_micros);

    toll_settle_page_int(pg, "toll_settle_ledger_transactions", "gauge",
        "Transactions in the ledger (usage, payouts, balances), after the "
        "last pass.", f->ledger_transactions);

    toll_settle_page_count(pg, "toll_settle_webhook_attempts_total",
        "Webhook POSTs made, whatever their outcome.", hs->attempts);

    toll_settle_page_family(pg, "toll_settle_webhook_deliveries_total",
        "counter", "Webhook deliveries settled: delivered (a 2xx answer) "
        "or failed (given up after the retries).");
    toll_settle_page_printf(pg, "toll_settle_webhook_deliveries_total"
                            "{result=\"delivered\"} %llu\n",
                            (unsigned long long) hs->delivered);
    toll_settle_page_printf(pg, "toll_settle_webhook_deliveries_total"
                            "{result=\"failed\"} %llu\n",
                            (unsigned long long) hs->failed);

    toll_settle_page_int(pg, "toll_settle_webhook_pending", "gauge",
        "Webhook deliveries not yet delivered or failed, after the last "
        "pass.", f->webhook_pending);
}


/*
 * The JWKS fetcher's figures, one series per "jwks" line (a name from
 * the configuration, [A-Za-z0-9_.-]: nothing to escape).  Read with
 * atomic loads, no lock.
 */
static void
toll_settle_metrics_render_jwks(toll_settle_page_t *pg)
{
    size_t                   i, n;
    toll_settle_jwks_stat_t  st[TOLL_SETTLE_JWKS_MAX];

    n = toll_settle_jwks_stats(st, TOLL_SETTLE_JWKS_MAX);
    if (n == 0) {
        return;
    }

    toll_settle_page_family(pg, "toll_settle_jwks_fetches_total", "counter",
        "JWKS fetches tried, per jwks line.");
    for (i = 0; i < n; i++) {
        toll_settle_page_printf(pg, "toll_settle_jwks_fetches_total"
                                "{name=\"%s\"} %llu\n", st[i].name,
                                (unsigned long long) st[i].fetches);
    }

    toll_settle_page_family(pg, "toll_settle_jwks_fetch_failures_total",
        "counter", "JWKS fetches that failed or brought a document that "
        "was refused; the last good set stayed in Redis.");
    for (i = 0; i < n; i++) {
        toll_settle_page_printf(pg, "toll_settle_jwks_fetch_failures_total"
                                "{name=\"%s\"} %llu\n", st[i].name,
                                (unsigned long long) st[i].failures);
    }

    toll_settle_page_family(pg, "toll_settle_jwks_last_success_seconds",
        "gauge", "Unix time of the last good fetch; 0: none yet.");
    for (i = 0; i < n; i++) {
        toll_settle_page_printf(pg, "toll_settle_jwks_last_success_seconds"
                                "{name=\"%s\"} %lld.%03lld\n", st[i].name,
                                (long long) (st[i].last_success_ms / 1000),
                                (long long) (st[i].last_success_ms % 1000));
    }

    toll_settle_page_family(pg, "toll_settle_jwks_generation", "gauge",
        "The generation of the set last published to Redis; 0: none.");
    for (i = 0; i < n; i++) {
        toll_settle_page_printf(pg, "toll_settle_jwks_generation"
                                "{name=\"%s\"} %lld\n", st[i].name,
                                (long long) st[i].gen);
    }
}


/* a family of one series without labels: a counter */
static void
toll_settle_page_count(toll_settle_page_t *pg, const char *name,
    const char *help, uint64_t v)
{
    toll_settle_page_family(pg, name, "counter", help);
    toll_settle_page_printf(pg, "%s %llu\n", name, (unsigned long long) v);
}


/* a family of one series without labels, of a signed value */
static void
toll_settle_page_int(toll_settle_page_t *pg, const char *name,
    const char *type, const char *help, int64_t v)
{
    toll_settle_page_family(pg, name, type, help);
    toll_settle_page_printf(pg, "%s %lld\n", name, (long long) v);
}


static void
toll_settle_page_family(toll_settle_page_t *pg, const char *name,
    const char *type, const char *help)
{
    toll_settle_page_printf(pg, "# HELP %s %s\n# TYPE %s %s\n", name, help,
                            name, type);
}


static void
toll_settle_page_printf(toll_settle_page_t *pg, const char *fmt, ...)
{
    int      n;
    va_list  args;

    if (pg->overflow) {
        return;
    }

    va_start(args, fmt);
    n = vsnprintf(pg->p + pg->len, pg->size - pg->len, fmt, args);
    va_end(args);

    if (n < 0 || (size_t) n >= pg->size - pg->len) {
        pg->overflow = 1;
        return;
    }

    pg->len += n;
}


/* milliseconds as seconds with three decimals, never negative */
static void
toll_settle_page_seconds(toll_settle_page_t *pg, const char *name,
    int64_t ms)
{
    if (ms < 0) {
        ms = 0;
    }

    toll_settle_page_printf(pg, "%s %lld.%03lld\n", name,
                            (long long) (ms / 1000), (long long) (ms % 1000));
}
