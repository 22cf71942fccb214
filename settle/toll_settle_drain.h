/*
 * toll-settle: the drain, from the meter's usage hashes in Redis to the
 * ledger, exactly once (docs/settle.md, "The drain protocol").
 */

#ifndef _TOLL_SETTLE_DRAIN_H_INCLUDED_
#define _TOLL_SETTLE_DRAIN_H_INCLUDED_


#include <signal.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "toll_ledger.h"
#include "toll_store.h"
#include "toll_names.h"
#include "toll_settle_conf.h"
#include "toll_settle_webhook.h"


/* a pass stopped on Redis: the caller reconnects and tries again later */
#define TOLL_SETTLE_DRAIN_AGAIN   -1
/* a usage hash's name and ":drained", as the drain builds it, and a NUL */
#define TOLL_SETTLE_MIRROR_NAME_MAX                                          \
    (TOLL_NAME_USAGE_LEN(TOLL_NAME_BUYER_LEN_MAX) + 1)

/* why the ledger refused a claim, kept with it in quarantine */
#define TOLL_SETTLE_REFUSED_LEN_MAX  512
/* balance records (buyer and ref) whose refusal was logged: said once */
#define TOLL_SETTLE_BALANCE_SAID_MAX 1024


typedef struct {
    const toll_settle_conf_t   *conf;
    toll_ledger_t              *ledger;
    toll_settle_webhooks_t     *hooks;          /* NULL: none */
    volatile sig_atomic_t      *stop;

    toll_store_t               *redis;
    int                         bound;          /* ledger id checked */
    int                         redis_down;     /* logged once per outage */
    /* the class of the refusal logged in this outage ("OOM", ...) */
    char                        refused[16];
    /* the last mirror found not to be a hash, said once */
    char                        bad_mirror[TOLL_SETTLE_MIRROR_NAME_MAX];
    int64_t                     next_sweep_ms;  /* CLOCK_MONOTONIC */

    int                         count_open;     /* SCARD after a pass */
    int                         ledger_failed;  /* this pass's AGAIN */

    /* since start, for the log, the metrics and the tests */
    uint64_t                    batches;
    uint64_t                    replays;        /* already in the ledger */
    uint64_t                    records;
    int64_t                     amount_micros;
    uint64_t                    passes;         /* ended without error */
    uint64_t                    redis_errors;   /* passes Redis cut short */
    uint64_t                    ledger_errors;  /* ... a busy ledger */
    uint64_t                    quarantined;    /* claims the ledger
                                                   refused, set aside */

    /*
     * The start of the last pass that ended with the index empty: all
     * usage in Redis before it is in the ledger.  0: none yet.
     */
    int64_t                     full_pass_unix_ms;
    int64_t                     full_pass_mono_ms;

    /* claims in toll:drain:open after the last pass (count_open) */
    int64_t                     open_claims;
    /* claims in quarantine after the last pass (count_open) */
    int64_t                     quarantine_claims;

    /* why the ledger refused the claim in hand */
    char                        ledger_refused[TOLL_SETTLE_REFUSED_LEN_MAX];

    /* prepaid balances (toll_settle_balance.c): transactions posted */
    uint64_t                    balance_txs;
    /* the hashes of the records left in a journal and logged, a ring */
    uint64_t                    balance_said[TOLL_SETTLE_BALANCE_SAID_MAX];
    size_t                      balance_nsaid;

    /*
     * Balance alerts (toll_settle_alerts.c): the buyers whose balance
     * this pass moved, checked at its end; alerts sent since start.
     */
    char                      **alert_buyers;   /* owned, strings too */
    size_t                      alert_nbuyers;
    size_t                      alert_cap;
    int                         alert_full_said;
    uint64_t                    alerts_low;
    uint64_t                    alerts_exhausted;

    /*
     * Spend cap alerts (toll_settle_caps.c): "<YYYYMMDD><buyer>" of each
     * batch this pass drained, checked at its end; alerts sent since
     * start.
     */
    char                      **cap_notes;      /* owned, strings too */
    size_t                      cap_nnotes;
    size_t                      cap_cap;
    int                         cap_full_said;
    uint64_t                    cap_alerts;
} toll_settle_drain_t;


/*
 * One pass: recover open claims, sweep when due, then claim and post up
 * to conf->batch_max usage hashes.  *more is set when the index still
 * holds names.  Returns 0, TOLL_SETTLE_DRAIN_AGAIN (Redis failed: logged,
 * the connection dropped), or a sysexits code for an error no retry
 * mends (this Redis belongs to another ledger, the ledger failed).
 */
int toll_settle_drain_pass(toll_settle_drain_t *d, int *more);

void toll_settle_drain_close(toll_settle_drain_t *d);


#endif /* _TOLL_SETTLE_DRAIN_H_INCLUDED_ */
