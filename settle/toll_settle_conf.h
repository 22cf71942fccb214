/*
 * toll-settle: the configuration file and the command line
 * (docs/settle.md, "Configuration file").
 */

#ifndef _TOLL_SETTLE_CONF_H_INCLUDED_
#define _TOLL_SETTLE_CONF_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "toll_addr.h"
#include "toll_store.h"
#include "toll_ledger.h"
#include "toll_money.h"
#include "toll_settle_jwks.h"
#include "toll_settle_metrics.h"
#include "toll_settle_webhook.h"


#define TOLL_SETTLE_REDIS_DEFAULT        "127.0.0.1:6379"
#define TOLL_SETTLE_LEDGER_DEFAULT       "/var/lib/toll/ledger.db"
#define TOLL_SETTLE_PATH_LEN_MAX         4095

#define TOLL_SETTLE_INTERVAL_MS_DEFAULT  10000
#define TOLL_SETTLE_INTERVAL_MS_MIN      100
#define TOLL_SETTLE_INTERVAL_MS_MAX      60000
#define TOLL_SETTLE_BATCH_MAX_DEFAULT    1000
#define TOLL_SETTLE_BATCH_MAX_MAX        100000
#define TOLL_SETTLE_SWEEP_MS_DEFAULT     600000         /* 10 minutes */
#define TOLL_SETTLE_TIMEOUT_MS_DEFAULT   2000
#define TOLL_SETTLE_TIMEOUT_MS_MAX       600000
#define TOLL_SETTLE_HOOK_TIMEOUT_MS_DEFAULT  5000
#define TOLL_SETTLE_HOOKS_MAX            64
#define TOLL_SETTLE_PROVIDER_FEES_MAX    4096
#define TOLL_SETTLE_LINE_LEN_MAX         4096
/* currencies with a balance_low threshold */
#define TOLL_SETTLE_BALANCE_LOWS_MAX     64


/* balance_low CUR AMOUNT: balance.low at or below it (toll_settle_alerts.c) */
typedef struct {
    char                  currency[TOLL_MONEY_CURRENCY_LEN_MAX + 1];
    int64_t               micros;               /* > 0 */
} toll_settle_low_t;


/* the longest "redis" value: 16 seeds, "sentinel=", " master=NAME" */
#define TOLL_SETTLE_REDIS_TEXT_MAX                                          \
    (TOLL_CLUSTER_SEEDS_MAX * (TOLL_ADDR_TEXT_LEN_MAX + 1) + 16            \
     + TOLL_STORE_MASTER_LEN_MAX)


typedef struct toll_settle_conf_s {
    /* Redis: one, a Cluster's seeds or Sentinels (lib/toll_store.h),
     * with its text for messages */
    char                  redis_text[TOLL_SETTLE_REDIS_TEXT_MAX + 1];
    toll_store_spec_t     redis_spec;
    char                 *redis_password;
    int                   redis_db;
    int64_t               redis_timeout_ms;
    /* a claim is posted once this many replicas have it; -1: the
     * default, 1 on a Cluster or a Sentinel, 0 on one Redis */
    int                   redis_replicas;

    char                  ledger[TOLL_SETTLE_PATH_LEN_MAX + 1];

    int64_t               interval_ms;
    int64_t               batch_max;
    int64_t               sweep_ms;

    toll_ledger_fees_t    fees;
    toll_ledger_fee_t    *provider_fees;        /* owned */

    toll_settle_hook_t   *hooks;                /* owned, strings too */
    size_t                nhooks;
    int64_t               hook_timeout_ms;

    toll_settle_listen_t  metrics;              /* text "": no listener */

    toll_settle_low_t     lows[TOLL_SETTLE_BALANCE_LOWS_MAX];
    size_t                nlows;

    toll_settle_jwks_conf_t  jwks;              /* jwks, jwks_ca */

    int                   once;
    int                   verbose;
} toll_settle_conf_t;


void toll_settle_conf_init(toll_settle_conf_t *conf);
void toll_settle_conf_free(toll_settle_conf_t *conf);

/*
 * Reads FILE into conf.  Returns 0, or a sysexits code with a one-line
 * message in err (EX_NOINPUT: no such file, EX_CONFIG: a bad line).
 */
int toll_settle_conf_load(toll_settle_conf_t *conf, const char *path,
    char *err, size_t err_size);

/*
 * The same from an open stream, which stays open; path names it in
 * messages.  Returns 0 or EX_CONFIG.
 */
int toll_settle_conf_read(toll_settle_conf_t *conf, FILE *f,
    const char *path, char *err, size_t err_size);

/*
 * "HOST:PORT", "[IPV6]:PORT", "unix:/PATH", "cluster=HOST:PORT,..." or
 * "sentinel=HOST:PORT,... master=NAME", as toll_store_spec_parse_line()
 * reads them (lib/toll_store.h); 0, or -1 with a message in err and conf
 * unchanged.
 */
int toll_settle_conf_redis(toll_settle_conf_t *conf, const char *text,
    char *err, size_t err_size);


#endif /* _TOLL_SETTLE_CONF_H_INCLUDED_ */
