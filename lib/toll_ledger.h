/*
 * toll: the double-entry ledger, an SQLite file shared by toll-settle
 * (which posts drained usage into it) and tollctl (which reads it and
 * records settlements).  docs/settle.md has the schema and the rules.
 *
 * Amounts are int64_t micro-units everywhere (toll_money.h); SQLite keeps
 * them as INTEGER, never REAL.  Every function that writes does so in one
 * transaction and checks, before COMMIT, that the debits it wrote equal
 * its credits: a broken invariant aborts the program rather than commit a
 * wrong ledger (GUIDE.md).
 *
 * Query results come back as jansson objects, so that tollctl prints the
 * same data as text or as JSON.
 */

#ifndef _TOLL_LEDGER_H_INCLUDED_
#define _TOLL_LEDGER_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>

#include <jansson.h>


/*
 * Version 2 adds prepaid balances, version 3 spend cap alerts; an older
 * file opened writable is migrated to it at once (toll_ledger_open).
 */
#define TOLL_LEDGER_SCHEMA_VERSION   3

/* a batch id: 32 lowercase hex digits, 128 random bits */
#define TOLL_LEDGER_BATCH_ID_LEN     32
/* a usage day as the meter writes it: YYYYMMDD (UTC) */
#define TOLL_LEDGER_DAY_LEN          8
/* a settlement id: "stl_" and 24 hex digits */
#define TOLL_LEDGER_SETTLEMENT_ID_LEN  28
#define TOLL_LEDGER_TX_REF_LEN_MAX   256
/* an account name: "provider:" and an owner id of up to 128 characters */
#define TOLL_LEDGER_ACCOUNT_LEN_MAX  160
/* a service name, as nginx config allows a token; longer ones are refused */
#define TOLL_LEDGER_SERVICE_LEN_MAX  256
/* fee rates are basis points: 1000 is 10 %, at most 10000 (100 %) */
#define TOLL_LEDGER_FEE_BP_DEFAULT   1000
#define TOLL_LEDGER_FEE_BP_MAX       10000
/* how long a writer waits for another's lock before BUSY */
#define TOLL_LEDGER_BUSY_TIMEOUT_MS  10000

#define TOLL_LEDGER_ACCOUNT_FEES     "platform:fees"
#define TOLL_LEDGER_ACCOUNT_CASH     "platform:cash"
/* what manual debits of prepaid balances took (kind platform) */
#define TOLL_LEDGER_ACCOUNT_ADJUSTMENTS  "platform:adjustments"
/* + "<CUR>:<buyer>": a buyer's prepaid balance (kind prepaid) */
#define TOLL_LEDGER_ACCOUNT_PREPAID  "prepaid:"

/* the kinds of a balance transaction, as a journal record names them */
#define TOLL_LEDGER_TX_CREDIT        "credit"
#define TOLL_LEDGER_TX_DEBIT         "debit"
#define TOLL_LEDGER_TX_REFUND        "refund"

#define TOLL_LEDGER_EVENT_SETTLEMENT_CREATED    "settlement.created"
#define TOLL_LEDGER_EVENT_SETTLEMENT_COMPLETED  "settlement.completed"
#define TOLL_LEDGER_EVENT_FREE_TIER_EXHAUSTED   "usage.free_tier_exhausted"
#define TOLL_LEDGER_EVENT_BALANCE_LOW           "balance.low"
#define TOLL_LEDGER_EVENT_BALANCE_EXHAUSTED     "balance.exhausted"
#define TOLL_LEDGER_EVENT_SPEND_CAP_THRESHOLD   "spend_cap.threshold"


typedef enum {
    TOLL_LEDGER_OK = 0,
    TOLL_LEDGER_ERROR = -1,          /* SQLite or I/O: see errmsg */
    TOLL_LEDGER_BUSY = -2,           /* another writer held the lock */
    TOLL_LEDGER_EXISTS = -3,         /* batch posted, period overlaps, paid */
    TOLL_LEDGER_NOT_FOUND = -4,      /* no such account or settlement */
    TOLL_LEDGER_INVALID = -5,        /* an argument out of its range */
    TOLL_LEDGER_OVERFLOW = -6,       /* a sum beyond int64_t micro-units */
    TOLL_LEDGER_EMPTY = -7           /* nothing to settle in the period */
} toll_ledger_rc_e;


#define TOLL_LEDGER_OPEN_CREATE      0x01   /* create file and schema */
#define TOLL_LEDGER_OPEN_READONLY    0x02


typedef struct toll_ledger_s  toll_ledger_t;


/*
 * One service's usage of a buyer on a day, as one drained usage hash
 * holds it.  Strings are NUL-terminated; the ledger copies them.
 */
typedef struct {
    const char       *service;
    const char       *provider;
    const char       *currency;            /* "": not written (older) */
    int64_t           calls;
    int64_t           free_calls;
    int64_t           paid_calls;
    int64_t           errors;
    int64_t           latency_ms;          /* sum over the calls */
    int64_t           amount_micros;
    int64_t           prepaid_micros;      /* of amount_micros, what the
                                              buyer's balance paid */
    int64_t           units;               /* that the amount charged */
} toll_ledger_usage_t;


/* the content of one claim: a buyer's usage hash of one day */
typedef struct {
    const char                 *id;        /* TOLL_LEDGER_BATCH_ID_LEN hex */
    const char                 *claim;     /* the Redis key it came from */
    const char                 *buyer;
    const char                 *day;       /* YYYYMMDD */
    const toll_ledger_usage_t  *usage;
    size_t                      nusage;
} toll_ledger_batch_t;


/* the fee rate of each provider; providers not listed pay default_bp */
typedef struct {
    const char       *provider;
    int64_t           fee_bp;
} toll_ledger_fee_t;

typedef struct {
    int64_t                   default_bp;
    const toll_ledger_fee_t  *providers;
    size_t                    nproviders;
} toll_ledger_fees_t;


/*
 * Opens (and with TOLL_LEDGER_OPEN_CREATE creates) the ledger: WAL,
 * synchronous=FULL, foreign keys on, busy timeout.  A file of another
 * schema version is refused.  On failure *out is NULL and err holds one
 * line.
 */
int toll_ledger_open(const char *path, int flags, toll_ledger_t **out,
    char *err, size_t err_size);
void toll_ledger_close(toll_ledger_t *lg);

/* the last error of lg as one line, never NULL */
const char *toll_ledger_errmsg(const toll_ledger_t *lg);

/* a random id stored in the file when it was created, 32 hex digits */
const char *toll_ledger_id(const toll_ledger_t *lg);

/* the current wall clock, unix seconds; TOLL_LEDGER_NOW overrides (tests) */
int64_t toll_ledger_now(void);

/* nbytes (at most 64) random bytes as 2 * nbytes hex digits and a NUL */
int toll_ledger_random_hex(char *buf, size_t nbytes);

int64_t toll_ledger_fee_bp(const toll_ledger_fees_t *fees,
    const char *provider);

/*
 * Posts a drained batch in one transaction: the batch row (its id is
 * UNIQUE), one usage transaction per service with its entries (buyer
 * debited the amount, of it prepaid_micros from prepaid:<CUR>:<buyer>
 * and the rest from buyer:<buyer>; provider credited amount - fee,
 * platform:fees credited the fee, fee rounded half up), and a free-tier
 * event when a buyer's service turns paid.  A usage whose prepaid_micros
 * is above its amount, or > 0 without a currency, is INVALID.
 * TOLL_LEDGER_EXISTS: the batch was posted
 * before, nothing changed.
 */
int toll_ledger_post_batch(toll_ledger_t *lg, const toll_ledger_batch_t *b,
    const toll_ledger_fees_t *fees);

/*
 * A credit, debit or refund of a buyer's prepaid balance, as one record
 * of its journal in Redis holds it (lib/toll_ledger_balance.c).
 */
typedef struct {
    const char       *ref;                 /* unique per buyer, ever */
    const char       *kind;                /* TOLL_LEDGER_TX_* */
    const char       *currency;
    int64_t           amount_micros;       /* > 0 */

    /* set by toll_ledger_post_balance() */
    int               rc;                  /* OK: posted; EXISTS: posted
                                              before, the same; INVALID:
                                              refused, why in refused */
    const char       *refused;
} toll_ledger_balance_tx_t;

/*
 * Posts a buyer's balance records in one transaction, each once by
 * (buyer, ref): credit (platform:cash to prepaid:<CUR>:<buyer>), refund
 * (back to platform:cash), debit (to platform:adjustments).  A record
 * refused (its fields, or its ref posted with another content) writes
 * nothing and the others are posted; each one's outcome is in tx[i].rc.
 * Returns TOLL_LEDGER_OK, INVALID for an invalid buyer (nothing posted),
 * or ERROR, BUSY, OVERFLOW (nothing posted).
 */
int toll_ledger_post_balance(toll_ledger_t *lg, const char *buyer,
    toll_ledger_balance_tx_t *tx, size_t n);

/*
 * A journal record "<kind> <CUR> <micros> <unix>" as tollctl balance
 * writes it, strictly: four fields one space apart, a kind of three, a
 * currency code, the micros a positive int64 and the time an int64, both
 * in decimal without a '+' or a leading zero.  The text is copied into
 * buf (TOLL_LEDGER_BALANCE_RECORD_LEN_MAX + 1 bytes) and split there:
 * tx->kind and tx->currency point into it.  Returns NULL, or why not.
 */
#define TOLL_LEDGER_BALANCE_RECORD_LEN_MAX  64

const char *toll_ledger_balance_record(const char *s, size_t len,
    char *buf, toll_ledger_balance_tx_t *tx, int64_t *unix_time);

/* *found = 1 when the ledger holds the balance record (buyer, ref) */
int toll_ledger_balance_ref(toll_ledger_t *lg, const char *buyer,
    const char *ref, int *found);

/*
 * Every prepaid account, for reconcile: an array of {account, currency,
 * buyer, balance_micros}, the balance on its normal side (credits -
 * debits).
 */
int toll_ledger_prepaid_totals(toll_ledger_t *lg, json_t **out);

/*
 * A balance alert (lib/toll_ledger_alert.c): a buyer's balance in one
 * currency, as toll-settle read it from Redis, at or below the low
 * threshold, or exhausted (at or below 0).
 */
typedef enum {
    TOLL_LEDGER_ALERT_LOW = 0,
    TOLL_LEDGER_ALERT_EXHAUSTED
} toll_ledger_alert_e;

typedef struct {
    const char           *buyer;
    const char           *currency;
    toll_ledger_alert_e   kind;
    int64_t               credits_micros;   /* credited ever: the period */
    int64_t               balance_micros;
    int64_t               threshold_micros; /* LOW only */
} toll_ledger_alert_t;

/*
 * Records the alert and its event (balance.low or balance.exhausted) in
 * one transaction, once per (buyer, currency, kind, credits_micros):
 * *sent is 1 when it was written now, 0 when it was before (nothing
 * changes).  INVALID for a buyer or currency the ledger cannot name.
 */
int toll_ledger_balance_alert(toll_ledger_t *lg,
    const toll_ledger_alert_t *a, int *sent);

/*
 * The buyers whose prepaid balance one of the last ntx transactions
 * moved (a balance's credit, debit or refund, or usage it paid for),
 * each once, to each(ctx, buyer): what a worker that died before its
 * alerts ran had moved.  A range of rowids, not a scan of the ledger.
 */
typedef void (*toll_ledger_buyer_pt)(void *ctx, const char *buyer);

int toll_ledger_recent_balance_buyers(toll_ledger_t *lg, int64_t ntx,
    toll_ledger_buyer_pt each, void *ctx);

/*
 * A spend cap alert (lib/toll_ledger_alert.c): one cap of a buyer or
 * key in one period, as toll-settle read it from Redis, at or past
 * threshold percent.  Strings NUL-terminated; key_id NULL or "" for the
 * buyer's cap; days YYYYMMDD, period_end the day after the last.
 */
typedef struct {
    const char           *buyer;
    const char           *currency;
    const char           *key_id;           /* scope key; NULL: buyer */
    int                   monthly;          /* 0: daily */
    const char           *period_start;
    const char           *period_end;
    int                   threshold;        /* 50, 80 or 100 */
    int64_t               cap_micros;
    int64_t               used_micros;
} toll_ledger_cap_alert_t;

/*
 * Records the alert and its event (spend_cap.threshold) in one
 * transaction, once per (buyer, currency, scope, key, period, start,
 * threshold): *sent is 1 when it was written now, 0 when it was before.
 * INVALID for a field the ledger cannot name.
 */
int toll_ledger_cap_alert(toll_ledger_t *lg,
    const toll_ledger_cap_alert_t *a, int *sent);

/*
 * The (buyer, day) of each usage transaction among the last ntx, each
 * once, to each(ctx, buyer, day): what a worker that died before its
 * cap alerts ran had drained.
 */
typedef void (*toll_ledger_buyer_day_pt)(void *ctx, const char *buyer,
    const char *day);

int toll_ledger_recent_usage_days(toll_ledger_t *lg, int64_t ntx,
    toll_ledger_buyer_day_pt each, void *ctx);

/* *found = 1 when a batch of that id is in the ledger */
int toll_ledger_has_batch(toll_ledger_t *lg, const char *id, int *found);

/*
 * Every check the ledger can make of itself (docs/settle.md): integrity,
 * each transaction balanced, debits = credits in all, fees as the rule
 * makes them, settlements equal to their transactions.  *report is an
 * object {"ok": bool, "checks": [...], ...}; the caller decrefs it.
 */
int toll_ledger_check(toll_ledger_t *lg, json_t **report);

/*
 * An account's debits, credits and balance on its normal side (buyer and
 * platform:cash: debits - credits; provider, prepaid and the other
 * platform accounts: credits - debits).  TOLL_LEDGER_NOT_FOUND for an
 * account never posted to.
 */
int toll_ledger_balance(toll_ledger_t *lg, const char *account,
    json_t **out);

/* the latest entries, newest first, of one account or of all (NULL) */
int toll_ledger_entries(toll_ledger_t *lg, const char *account,
    int64_t limit, json_t **out);

/*
 * The ledger's usage totals per buyer, day and service, for reconcile:
 * an array of {buyer, day, service, provider, calls, free_calls,
 * paid_calls, errors, amount_micros}.
 */
int toll_ledger_usage_totals(toll_ledger_t *lg, json_t **out);

/* sums of everything posted: {transactions, debits_micros, ...} */
int toll_ledger_totals(toll_ledger_t *lg, json_t **out);

/*
 * The few figures toll-settle exports after each pass.  Index lookups
 * only, whatever the ledger's size: toll_ledger_totals() scans every
 * transaction, too much to run every few seconds.
 */
typedef struct {
    int64_t           debits_micros;       /* the totals row */
    int64_t           credits_micros;
    int64_t           transactions;        /* of every kind */
    int64_t           deliveries_pending;  /* webhooks not yet settled */
} toll_ledger_gauges_t;

int toll_ledger_gauges(toll_ledger_t *lg, toll_ledger_gauges_t *out);


/*
 * Settlements (lib/toll_settlement.c).  A period is [from, to) in unix
 * seconds of the ledger's posting time; to must not be in the future.
 * Create refuses a period that overlaps another settlement of the same
 * provider (TOLL_LEDGER_EXISTS) and an empty one (TOLL_LEDGER_EMPTY); it
 * records the settlement as pending with its total, fee, net and calls,
 * and the event settlement.created, in one transaction.
 */
int toll_settlement_create(toll_ledger_t *lg, const char *provider,
    int64_t from, int64_t to, json_t **out);

/* NULL filters are not applied; newest first, at most limit */
int toll_settlement_list(toll_ledger_t *lg, const char *provider,
    const char *status, int64_t limit, json_t **out);

int toll_settlement_get(toll_ledger_t *lg, const char *id, json_t **out);

/*
 * Pending to completed, once: posts the payout (provider debited the
 * net, platform:cash credited), records tx_ref and the event
 * settlement.completed.  TOLL_LEDGER_EXISTS when already completed,
 * TOLL_LEDGER_NOT_FOUND when there is no such settlement.
 */
int toll_settlement_pay(toll_ledger_t *lg, const char *id,
    const char *tx_ref, json_t **out);

/*
 * A payment's reference as pay takes it: 1 to TOLL_LEDGER_TX_REF_LEN_MAX
 * printable ASCII characters.  tollctl checks it before it opens a file.
 */
int toll_settlement_tx_ref_valid(const char *ref);


/*
 * Events for webhooks: written in the transaction that causes them, read
 * by toll-settle's webhook sender.  body is a JSON object; the event id
 * ("evt_" and 24 hex digits) is made here.  Called inside the ledger's
 * own transactions; exported for settle's tests.
 */
int toll_ledger_event_add(toll_ledger_t *lg, const char *type,
    json_t *data);

/* the sqlite3 handle, for the webhook sender's own queries */
struct sqlite3 *toll_ledger_db(toll_ledger_t *lg);


#endif /* _TOLL_LEDGER_H_INCLUDED_ */
