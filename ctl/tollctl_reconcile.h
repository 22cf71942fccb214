/*
 * tollctl reconcile: what its three files share.  tollctl_reconcile_redis.c
 * reads Redis's side (usage hashes, their mirrors, open and quarantined
 * claims, prepaid balances and their journals) into parts;
 * tollctl_reconcile.c reads the ledger's, sums the parts per (buyer, day,
 * service) and reports the differences; tollctl_reconcile_balance.c
 * does the same per (buyer, currency) of a prepaid balance.
 */

#ifndef _TOLLCTL_RECONCILE_H_INCLUDED_
#define _TOLLCTL_RECONCILE_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "toll_ledger.h"
#include "toll_money.h"
#include "toll_names.h"
#include "tollctl.h"
#include "tollctl_ledger.h"


/*
 * reconcile.  The key names are lib/toll_names.h's (docs/redis.md); the
 * meter and toll-settle write them.
 */

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

/* the counts compared: the first four of a usage hash's (calls, free,
   paid, amount) */
#define TOLLCTL_METRICS               (TOLL_USAGE_AMOUNT + 1)


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
    char              day[TOLL_NAME_DAY_LEN + 1];
    char              batch[TOLL_NAME_BATCH_LEN + 1];   /* CLAIM only */
    tollctl_src_e     src;
    int64_t           v[TOLLCTL_METRICS];
    /* of the amount, what a prepaid balance paid, and its currency */
    int64_t           prepaid;
    char              currency[TOLL_MONEY_CURRENCY_LEN_MAX + 1];
} tollctl_part_t;


/*
 * A buyer's prepaid balance of one currency: Redis's fields, what its
 * journal holds that the ledger does not, what usage not yet posted took
 * of it, and the ledger's prepaid account.
 */
typedef struct {
    char             *buyer;
    char              currency[TOLL_MONEY_CURRENCY_LEN_MAX + 1];
    int64_t           credits;
    int64_t           debits;
    int64_t           available;
    int64_t           held;
    int64_t           spent;
    int64_t           journal;            /* credits +, debits, refunds - */
    int64_t           usage;              /* prepaid_micros pending */
    int64_t           ledger;
    int               overflow;           /* a sum above overflowed */
} tollctl_bal_t;


/* a ref of a journal, to look up in the ledger */
typedef struct {
    char             *buyer;
    char             *ref;
    char              currency[TOLL_MONEY_CURRENCY_LEN_MAX + 1];
    int64_t           micros;             /* credits +, debits, refunds - */
} tollctl_jrec_t;


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

    tollctl_bal_t    *bals;
    size_t            nbals;
    size_t            bals_cap;
    tollctl_jrec_t   *jrecs;
    size_t            njrecs;
    size_t            jrecs_cap;
} tollctl_recon_t;


/* the usage hash's metrics that reconcile compares, in this order */


int tollctl_reconcile(tollctl_t *ctl, tollctl_opts_t *o);

/* tollctl_reconcile.c */
int tollctl_recon_add(tollctl_recon_t *r, const char *buyer,
    const char *day, const char *service, size_t service_len,
    tollctl_src_e src, const char *batch, tollctl_part_t **out);

/* tollctl_reconcile_redis.c */
int tollctl_recon_open_set(tollctl_t *ctl, char ***members, size_t *n);
int tollctl_recon_claims(tollctl_t *ctl, tollctl_recon_t *r);
int tollctl_recon_scan(tollctl_t *ctl, char ***days, size_t *ndays);
int tollctl_recon_hashes(tollctl_t *ctl, tollctl_recon_t *r, char **days,
    size_t ndays);
void tollctl_strs_free(char **strs, size_t n);
int tollctl_recon_balances(tollctl_t *ctl, tollctl_recon_t *r);

/* tollctl_reconcile_balance.c */
int tollctl_recon_bal(tollctl_recon_t *r, const char *buyer,
    const char *currency, size_t currency_len, tollctl_bal_t **out);
int tollctl_recon_jrec(tollctl_recon_t *r, const char *buyer,
    const char *ref, size_t ref_len, const char *record, size_t len);
int tollctl_recon_balance_ledger(toll_ledger_t *lg, tollctl_recon_t *r);
int tollctl_recon_balance_result(tollctl_recon_t *r, json_t **out,
    int64_t *ndiff);
void tollctl_recon_balance_free(tollctl_recon_t *r);
void tollctl_print_balances(json_t *balances);


#endif /* _TOLLCTL_RECONCILE_H_INCLUDED_ */
