/*
 * toll-settle: drains the meter's usage from Redis into the double-entry
 * ledger, exactly once, and delivers signed webhooks (docs/settle.md).
 *
 * One thread drains (toll_settle_drain.c), and posts prepaid balances'
 * journals after each pass (toll_settle_balance.c); another sends webhooks
 * (toll_settle_webhook.c), so that a receiver that hangs never holds up
 * the ledger; a third, when metrics_listen is set, answers Prometheus
 * (toll_settle_metrics.c) from the figures each pass publishes.  SIGTERM
 * and SIGINT end the loop between two batches: the batch in hand is
 * committed and deleted first.
 */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sysexits.h>
#include <unistd.h>

#include <curl/curl.h>

#include "toll_clock.h"
#include "toll_ledger.h"
#include "toll_log.h"
#include "toll_parse.h"
#include "toll_settle_alerts.h"
#include "toll_settle_caps.h"
#include "toll_settle_balance.h"
#include "toll_settle_conf.h"
#include "toll_settle_drain.h"
#include "toll_settle_jwks.h"
#include "toll_settle_metrics.h"
#include "toll_settle_webhook.h"


#define TOLL_SETTLE_VERSION          "0.1.0"
/* Redis down: the next try after at most this long */
#define TOLL_SETTLE_RETRY_MS_MAX     1000
/* --once: passes while the index still holds names, then it stops */
#define TOLL_SETTLE_ONCE_PASSES_MAX  1000
/* --once: how long it waits for the webhooks its pass made due */
#define TOLL_SETTLE_ONCE_HOOKS_MS    60000
/* --once: each wait for the webhooks, so that SIGTERM ends it soon */
#define TOLL_SETTLE_ONCE_WAIT_MS     (TOLL_CLOCK_SLICE_MS * 4)


enum {
    TOLL_SETTLE_OPT_ONCE = 256,
    TOLL_SETTLE_OPT_REDIS,
    TOLL_SETTLE_OPT_LEDGER,
    TOLL_SETTLE_OPT_INTERVAL,
    TOLL_SETTLE_OPT_METRICS_LISTEN
};


static const struct option  toll_settle_options[] = {
    { "config",   required_argument, NULL, 'c' },
    { "once",     no_argument,       NULL, TOLL_SETTLE_OPT_ONCE },
    { "redis",    required_argument, NULL, TOLL_SETTLE_OPT_REDIS },
    { "ledger",   required_argument, NULL, TOLL_SETTLE_OPT_LEDGER },
    { "interval", required_argument, NULL, TOLL_SETTLE_OPT_INTERVAL },
    { "metrics-listen", required_argument, NULL,
      TOLL_SETTLE_OPT_METRICS_LISTEN },
    { "verbose",  no_argument,       NULL, 'v' },
    { "help",     no_argument,       NULL, 'h' },
    { "version",  no_argument,       NULL, 'V' },
    { NULL, 0, NULL, 0 }
};


/* the values of the command line's options, before they are read */
typedef struct {
    const char                *file;
    const char                *redis;
    const char                *ledger;
    const char                *interval;
    const char                *metrics;
} toll_settle_cli_t;


static volatile sig_atomic_t  toll_settle_stop;
/* the JWKS fetcher's thread, when "jwks" lines are given */
static toll_settle_jwks_t    *toll_settle_jwks;


static int toll_settle_args(toll_settle_conf_t *conf, int argc,
    char **argv);
static int toll_settle_args_apply(toll_settle_conf_t *conf,
    const toll_settle_cli_t *cli);
static int toll_settle_usage_error(const char *fmt, const char *arg);
static void toll_settle_help(void);
static int toll_settle_lock(const toll_settle_conf_t *conf, int *fd);
static int toll_settle_run(toll_settle_conf_t *conf);
static int toll_settle_start(toll_settle_conf_t *conf,
    toll_settle_drain_t *d, toll_settle_metrics_t *metrics,
    int *curl_started);
static int toll_settle_pass(toll_settle_drain_t *d, int *more);
static int toll_settle_once(toll_settle_drain_t *d);
static int toll_settle_loop(toll_settle_drain_t *d,
    toll_settle_metrics_t *metrics);
static void toll_settle_publish(toll_settle_drain_t *d,
    toll_settle_metrics_t *metrics, toll_settle_figures_t *f);
static void toll_settle_on_signal(int signo);


int
main(int argc, char **argv)
{
    int                 rc;
    toll_settle_conf_t  conf;

    /* a receiver that closes early must fail a write, not kill us */
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);

    toll_log_program("toll-settle");
    toll_settle_conf_init(&conf);

    rc = toll_settle_args(&conf, argc, argv);

    if (rc == EX_OK) {
        rc = toll_settle_run(&conf);

    } else if (rc == -1) {
        rc = EX_OK;          /* --help, --version */
    }

    toll_settle_conf_free(&conf);

    return rc;
}


/*
 * The file first, then the options over it, whatever their order: the
 * command line wins.
 */
static int
toll_settle_args(toll_settle_conf_t *conf, int argc, char **argv)
{
    int                c;
    toll_settle_cli_t  cli;

    memset(&cli, 0, sizeof(cli));

    opterr = 0;

    for ( ;; ) {
        c = getopt_long(argc, argv, ":c:vhV", toll_settle_options, NULL);
        if (c == -1) {
            break;
        }

        switch (c) {

        case 'c':
            cli.file = optarg;
            break;

        case TOLL_SETTLE_OPT_ONCE:
            conf->once = 1;
            break;

        case TOLL_SETTLE_OPT_REDIS:
            cli.redis = optarg;
            break;

        case TOLL_SETTLE_OPT_LEDGER:
            cli.ledger = optarg;
            break;

        case TOLL_SETTLE_OPT_INTERVAL:
            cli.interval = optarg;
            break;

        case TOLL_SETTLE_OPT_METRICS_LISTEN:
            cli.metrics = optarg;
            break;

        case 'v':
            conf->verbose = 1;
            break;

        case 'h':
            toll_settle_help();
            return -1;

        case 'V':
            printf("toll-settle " TOLL_SETTLE_VERSION "\n");
            return -1;

        case ':':
            return toll_settle_usage_error("option \"%s\" needs a value",
                                           argv[optind - 1]);

        default:
            return toll_settle_usage_error("unknown option \"%s\"",
                                           argv[optind - 1]);
        }
    }

    if (optind < argc) {
        return toll_settle_usage_error("unexpected argument \"%s\"",
                                       argv[optind]);
    }

    return toll_settle_args_apply(conf, &cli);
}


/* the file named, then the options over it */
static int
toll_settle_args_apply(toll_settle_conf_t *conf, const toll_settle_cli_t *cli)
{
    int          rc;
    int64_t      ms;
    char         err[512];
    const char  *redis, *ledger, *interval, *metrics;

    redis = cli->redis;
    ledger = cli->ledger;
    interval = cli->interval;
    metrics = cli->metrics;

    if (cli->file != NULL) {
        rc = toll_settle_conf_load(conf, cli->file, err, sizeof(err));
        if (rc != 0) {
            fprintf(stderr, "toll-settle: %s\n", err);
            return rc;
        }
    }

    if (redis != NULL
        && toll_settle_conf_redis(conf, redis, err, sizeof(err)) != 0)
    {
        char  msg[1024];

        snprintf(msg, sizeof(msg), "invalid --redis \"%.200s\": %s", redis,
                 err);
        return toll_settle_usage_error("%s", msg);
    }

    if (conf->redis_spec.kind == TOLL_STORE_CLUSTER && conf->redis_db != 0) {
        snprintf(err, sizeof(err), "redis_db %d: db= is not available on "
                 "a Redis Cluster (it has only database 0)", conf->redis_db);
        return toll_settle_usage_error("%s", err);
    }

    if (conf->redis_replicas < 0) {
        conf->redis_replicas =
            (conf->redis_spec.kind == TOLL_STORE_SINGLE) ? 0 : 1;
    }

    if (ledger != NULL) {
        if (strlen(ledger) == 0 || strlen(ledger) > TOLL_SETTLE_PATH_LEN_MAX) {
            return toll_settle_usage_error("invalid --ledger \"%s\"", ledger);
        }

        snprintf(conf->ledger, sizeof(conf->ledger), "%s", ledger);
    }

    if (interval != NULL) {
        if (toll_parse_duration_ms(interval, TOLL_SETTLE_INTERVAL_MS_MIN,
                                   TOLL_SETTLE_INTERVAL_MS_MAX, &ms)
            != 0)
        {
            return toll_settle_usage_error("invalid --interval \"%s\": "
                                           "100ms to 60s", interval);
        }

        conf->interval_ms = ms;
    }

    if (metrics != NULL
        && toll_settle_listen_parse(metrics, &conf->metrics) != 0)
    {
        return toll_settle_usage_error("invalid --metrics-listen \"%s\": "
                                       "use IPV4:PORT, [IPV6]:PORT, "
                                       "localhost:PORT or off", metrics);
    }

    return EX_OK;
}


static int
toll_settle_usage_error(const char *fmt, const char *arg)
{
    fputs("toll-settle: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("; see 'toll-settle --help'\n", stderr);

    return EX_USAGE;
}


static void
toll_settle_help(void)
{
    printf(
"usage: toll-settle [-c FILE] [--once] [--redis ADDR] [--ledger PATH]\n"
"                   [--interval DURATION] [--metrics-listen ADDR:PORT]\n"
"                   [--verbose]\n"
"\n"
"Drain toll's metered usage from Redis into the double-entry ledger,\n"
"exactly once, and deliver signed webhooks.  See docs/settle.md.\n"
"\n"
"options:\n"
"  -c, --config FILE     configuration file (default: none, built-in\n"
"                        defaults)\n"
"      --once            one drain pass, wait for its webhooks, exit\n"
"      --redis ADDR      HOST:PORT, [IPV6]:PORT or unix:/PATH (default\n"
"                        " TOLL_SETTLE_REDIS_DEFAULT ")\n"
"      --ledger PATH     the SQLite ledger, created when missing (default\n"
"                        " TOLL_SETTLE_LEDGER_DEFAULT ")\n"
"      --interval DURATION  time between passes, 100ms to 60s (default "
"10s)\n"
"      --metrics-listen ADDR:PORT  serve Prometheus metrics at\n"
"                        http://ADDR:PORT/metrics, e.g. 127.0.0.1:9465,\n"
"                        [::1]:9465; \"off\" (the default) for none; not\n"
"                        with --once\n"
"  -v, --verbose         a line per posted batch\n"
"  -h, --help            print this help and exit\n"
"  -V, --version         print the version and exit\n"
"\n"
"exit status: 0 done or stopped by SIGTERM, 64 usage error, 66 no such\n"
"configuration file, 69 Redis unreachable (--once) or the metrics\n"
"address cannot be listened on, 70 internal error, 73 cannot open or\n"
"create the ledger, 75 another toll-settle holds the ledger (--once),\n"
"78 configuration error\n");
}


static int
toll_settle_run(toll_settle_conf_t *conf)
{
    int                     rc, lock_fd, curl_started;
    char                    err[512];
    struct sigaction        sa;
    toll_settle_drain_t     d;
    toll_settle_metrics_t  *metrics;

    lock_fd = -1;
    curl_started = 0;
    metrics = NULL;
    memset(&d, 0, sizeof(d));

    /* no SA_RESTART: a waiting flock() or sleep returns on SIGTERM */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = toll_settle_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    /*
     * The metrics listener before the lock: a port that another program
     * holds is reported at start, not after a wait for another worker's
     * lock.  A --once run is not scraped.
     */

    if (!conf->once && conf->metrics.text[0] != '\0') {
        rc = toll_settle_metrics_start(&conf->metrics, TOLL_SETTLE_VERSION,
                                       &metrics, err, sizeof(err));
        if (rc != EX_OK) {
            fprintf(stderr, "toll-settle: %s\n", err);
            return rc;
        }
    }

    /*
     * The lock before the ledger: two workers started at once would
     * otherwise race to create the schema and set WAL mode, which SQLite
     * refuses with SQLITE_BUSY rather than wait.
     */

    rc = toll_settle_lock(conf, &lock_fd);
    if (rc != EX_OK || toll_settle_stop) {
        goto done;
    }

    rc = toll_settle_start(conf, &d, metrics, &curl_started);
    if (rc != EX_OK) {
        goto done;
    }

    rc = conf->once ? toll_settle_once(&d) : toll_settle_loop(&d, metrics);

done:

    /* the listener first: a scrape reads the webhook sender's counters */
    toll_settle_metrics_stop(metrics);
    toll_settle_jwks_stop(toll_settle_jwks);

    if (d.hooks != NULL) {
        toll_settle_webhooks_stop(d.hooks);
    }

    toll_settle_drain_close(&d);
    toll_settle_alerts_free(&d);
    toll_settle_caps_free(&d);
    toll_ledger_close(d.ledger);

    if (curl_started) {
        curl_global_cleanup();
    }

    if (lock_fd != -1) {
        close(lock_fd);
    }

    return rc;
}


/*
 * With the lock held: the ledger, libcurl and the webhook sender, into
 * d (the caller frees what is there whatever the result).  EX_OK, or an
 * exit code with the line said.
 */
static int
toll_settle_start(toll_settle_conf_t *conf, toll_settle_drain_t *d,
    toll_settle_metrics_t *metrics, int *curl_started)
{
    int   rc;
    char  err[512];

    rc = toll_ledger_open(conf->ledger, TOLL_LEDGER_OPEN_CREATE, &d->ledger,
                          err, sizeof(err));
    if (rc != TOLL_LEDGER_OK) {
        fprintf(stderr, "toll-settle: %s\n", err);
        return EX_CANTCREAT;
    }

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "toll-settle: libcurl failed to start\n");
        return EX_SOFTWARE;
    }

    *curl_started = 1;

    d->conf = conf;
    d->stop = &toll_settle_stop;
    d->count_open = (metrics != NULL);

    if (conf->nhooks > 0) {
        rc = toll_settle_webhooks_start(conf->ledger, conf->hooks,
                                        conf->nhooks, conf->hook_timeout_ms,
                                        conf->verbose, &d->hooks, err,
                                        sizeof(err));
        if (rc != 0) {
            fprintf(stderr, "toll-settle: %s\n", err);
            return EX_SOFTWARE;
        }
    }

    toll_settle_metrics_hooks(metrics, d->hooks);

    /* a --once run drains; it does not follow identity providers */

    if (!conf->once
        && toll_settle_jwks_start(conf, &toll_settle_jwks, err, sizeof(err))
           != 0)
    {
        fprintf(stderr, "toll-settle: %s\n", err);
        return EX_SOFTWARE;
    }

    rc = toll_settle_alerts_recover(d);
    if (rc != 0) {
        return rc;
    }

    rc = toll_settle_caps_recover(d);
    if (rc != 0) {
        return rc;
    }

    if (conf->verbose) {
        toll_log("draining redis at %s into the ledger \"%s\" "
                 "(id %s)", conf->redis_text, conf->ledger,
                 toll_ledger_id(d->ledger));
    }

    return EX_OK;
}


/*
 * One drainer per ledger: a second one waits for the first to end (or,
 * with --once, says so and exits).  The lock is the kernel's, so a
 * worker killed with SIGKILL frees it.  *fd is -1 whenever it is not
 * held, SIGTERM during the wait included: the metrics thread may run
 * by then, and a second close() could hit one of its descriptors.
 */
static int
toll_settle_lock(const toll_settle_conf_t *conf, int *fd)
{
    char  path[TOLL_SETTLE_PATH_LEN_MAX + 8];

    snprintf(path, sizeof(path), "%s.lock", conf->ledger);

    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (*fd == -1) {
        fprintf(stderr, "toll-settle: cannot open the ledger's lock "
                "\"%s\": %s\n", path, strerror(errno));
        return EX_CANTCREAT;
    }

    if (flock(*fd, LOCK_EX | LOCK_NB) == 0) {
        return EX_OK;
    }

    if (errno != EWOULDBLOCK) {
        fprintf(stderr, "toll-settle: cannot lock \"%s\": %s\n", path,
                strerror(errno));
        close(*fd);
        *fd = -1;
        return EX_OSERR;
    }

    if (conf->once) {
        fprintf(stderr, "toll-settle: another toll-settle drains the "
                "ledger \"%s\"; run again when it has stopped\n",
                conf->ledger);
        close(*fd);
        *fd = -1;
        return EX_TEMPFAIL;
    }

    toll_log("another toll-settle drains the ledger \"%s\"; "
             "waiting for it to stop", conf->ledger);

    while (flock(*fd, LOCK_EX) == -1) {
        if (errno != EINTR || toll_settle_stop) {
            close(*fd);
            *fd = -1;
            return toll_settle_stop ? EX_OK : EX_OSERR;
        }
    }

    return EX_OK;
}


/*
 * A pass: the usage drain, then the balances' journals on the same
 * connection (toll_settle_balance.c).  Their order does not matter to
 * the ledger: a prepaid account may be debited by usage before the
 * credit that paid for it is posted.  Last, the balance alerts of the
 * buyers both moved (toll_settle_alerts.c), so that a buyer whose
 * credit and spending came in the same pass is read once, after both,
 * and the spend cap alerts of the buyers whose usage was drained
 * (toll_settle_caps.c).
 */
static int
toll_settle_pass(toll_settle_drain_t *d, int *more)
{
    int  rc;

    rc = toll_settle_drain_pass(d, more);

    if (rc == 0) {
        rc = toll_settle_balance_pass(d);
    }

    if (rc == 0) {
        rc = toll_settle_alerts_pass(d);
    }

    if (rc == 0) {
        rc = toll_settle_caps_pass(d);
    }

    return rc;
}


static int
toll_settle_once(toll_settle_drain_t *d)
{
    int      rc, more, passes, settled;
    int64_t  deadline_ms;

    for (passes = 0; passes < TOLL_SETTLE_ONCE_PASSES_MAX; passes++) {
        rc = toll_settle_pass(d, &more);

        if (rc == TOLL_SETTLE_DRAIN_AGAIN) {
            return EX_UNAVAILABLE;
        }

        if (rc != 0) {
            return rc;
        }

        if (!more || toll_settle_stop) {
            break;
        }
    }

    if (d->hooks != NULL && !toll_settle_stop) {
        toll_settle_webhooks_kick(d->hooks);

        /* in slices, so that SIGTERM ends the wait too */

        deadline_ms = toll_clock_mono_ms() + TOLL_SETTLE_ONCE_HOOKS_MS;
        settled = 0;

        while (!toll_settle_stop && toll_clock_mono_ms() < deadline_ms) {
            if (toll_settle_webhooks_drain(d->hooks, toll_clock_mono_ms()
                                           + TOLL_SETTLE_ONCE_WAIT_MS)
                == 0)
            {
                settled = 1;
                break;
            }
        }

        if (!settled) {
            toll_log("webhooks still pending; they are sent on the "
                     "next run");
        }
    }

    if (d->conf->verbose) {
        toll_log("posted %llu batches, %llu records, %lld "
                 "micro-units; %llu replays; %llu balance transactions",
                 (unsigned long long) d->batches,
                 (unsigned long long) d->records,
                 (long long) d->amount_micros,
                 (unsigned long long) d->replays,
                 (unsigned long long) d->balance_txs);
    }

    return EX_OK;
}


static int
toll_settle_loop(toll_settle_drain_t *d, toll_settle_metrics_t *metrics)
{
    int                    rc, more, down;
    int64_t                delay_ms;
    toll_settle_figures_t  figures;

    down = 0;

    /* the ledger's figures are there to see before the first pass */
    memset(&figures, 0, sizeof(figures));
    toll_settle_publish(d, metrics, &figures);

    while (!toll_settle_stop) {
        rc = toll_settle_pass(d, &more);

        toll_settle_publish(d, metrics, &figures);

        if (rc != 0 && rc != TOLL_SETTLE_DRAIN_AGAIN) {
            return rc;
        }

        if (d->hooks != NULL) {
            toll_settle_webhooks_kick(d->hooks);
        }

        if (rc == TOLL_SETTLE_DRAIN_AGAIN) {
            down = 1;
            delay_ms = d->conf->interval_ms < TOLL_SETTLE_RETRY_MS_MAX
                       ? d->conf->interval_ms : TOLL_SETTLE_RETRY_MS_MAX;

        } else {
            if (down) {
                toll_log("redis at %s is back", d->conf->redis_text);
                down = 0;
            }

            delay_ms = more ? 0 : d->conf->interval_ms;
        }

        /* SIGTERM ends the sleep within a slice */
        (void) toll_clock_sleep_ms(delay_ms, &toll_settle_stop);
    }

    return EX_OK;
}


/*
 * The figures after a pass, for the metrics thread.  The ledger's are
 * read here, on the drain's own connection between two passes: a scrape
 * never touches the ledger.  A read that fails (busy) keeps the previous
 * ones; the next pass reads again.
 */
static void
toll_settle_publish(toll_settle_drain_t *d, toll_settle_metrics_t *metrics,
    toll_settle_figures_t *f)
{
    toll_ledger_gauges_t  g;

    if (metrics == NULL) {
        return;
    }

    f->passes = d->passes;
    f->batches = d->batches;
    f->replays = d->replays;
    f->records = d->records;
    f->balance_txs = d->balance_txs;
    f->alerts_low = d->alerts_low;
    f->alerts_exhausted = d->alerts_exhausted;
    f->drained_micros = d->amount_micros;
    f->redis_errors = d->redis_errors;
    f->ledger_errors = d->ledger_errors;
    f->full_pass_unix_ms = d->full_pass_unix_ms;
    f->full_pass_mono_ms = d->full_pass_mono_ms;
    f->open_claims = d->open_claims;
    f->quarantined = d->quarantined;
    f->quarantine_claims = d->quarantine_claims;

    if (toll_ledger_gauges(d->ledger, &g) == TOLL_LEDGER_OK) {
        f->ledger_debits_micros = g.debits_micros;
        f->ledger_credits_micros = g.credits_micros;
        f->ledger_transactions = g.transactions;
        f->webhook_pending = g.deliveries_pending;
    }

    toll_settle_metrics_publish(metrics, f);
}


static void
toll_settle_on_signal(int signo)
{
    (void) signo;

    toll_settle_stop = 1;
}
