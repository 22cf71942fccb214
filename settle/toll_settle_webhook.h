/*
 * toll-settle: the webhook sender (docs/settle.md, "Webhooks").
 *
 * A thread of its own, with its own SQLite connection to the ledger, fans
 * each new event out into one delivery per subscribed URL (table
 * deliveries) and POSTs the due ones with libcurl's multi interface, a
 * few at a time, so that neither a slow receiver nor the network ever
 * holds up the drain.  A delivery is tried at most
 * TOLL_SETTLE_HOOK_ATTEMPTS_MAX times, 1 s, 2 s and 4 s apart, then
 * recorded as failed.
 *
 * The caller runs curl_global_init() before toll_settle_webhooks_start()
 * and curl_global_cleanup() after toll_settle_webhooks_stop().
 */

#ifndef _TOLL_SETTLE_WEBHOOK_H_INCLUDED_
#define _TOLL_SETTLE_WEBHOOK_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


#define TOLL_SETTLE_EVENT_SETTLEMENT_CREATED    0x01
#define TOLL_SETTLE_EVENT_SETTLEMENT_COMPLETED  0x02
#define TOLL_SETTLE_EVENT_FREE_TIER_EXHAUSTED   0x04
#define TOLL_SETTLE_EVENT_BALANCE_LOW           0x08
#define TOLL_SETTLE_EVENT_BALANCE_EXHAUSTED     0x10
#define TOLL_SETTLE_EVENT_SPEND_CAP_THRESHOLD   0x20

/* attempts of one delivery: the first and three retries */
#define TOLL_SETTLE_HOOK_ATTEMPTS_MAX           4
/* the first retry waits this long, each next one twice the one before */
#define TOLL_SETTLE_HOOK_RETRY_DELAY_MS         1000

/* "t=<at most 20 digits>,v1=<64 hex>" and the NUL */
#define TOLL_SETTLE_SIGNATURE_MAX               96


typedef struct {
    const char       *url;          /* http:// or https:// */
    const char       *secret;
    unsigned          events;       /* TOLL_SETTLE_EVENT_* bits */
} toll_settle_hook_t;

typedef struct toll_settle_webhooks_s  toll_settle_webhooks_t;


/* since start, for the metrics (docs/settle.md, "Metrics") */
typedef struct {
    uint64_t          attempts;     /* POSTs that ended, whatever the answer */
    uint64_t          delivered;
    uint64_t          failed;       /* given up: retries spent, or futile */
} toll_settle_hook_stats_t;


/*
 * The bit of an event type name (TOLL_LEDGER_EVENT_* of toll_ledger.h),
 * 0 for a name it does not know.
 */
unsigned toll_settle_event_bit(const char *type);

/*
 * Starts the sender thread with its own connection to the ledger (which
 * exists: the drain created it).  The hooks are copied.  With n = 0 the
 * object does nothing and no thread runs.  On failure *out is NULL and
 * err holds one line; nothing is left allocated.
 */
int toll_settle_webhooks_start(const char *ledger_path,
    const toll_settle_hook_t *hooks, size_t n, int64_t timeout_ms,
    int verbose, toll_settle_webhooks_t **out, char *err, size_t err_size);

/* new events may be in the ledger: the thread looks now */
void toll_settle_webhooks_kick(toll_settle_webhooks_t *w);

/*
 * Waits until every delivery of the events in the ledger now is delivered
 * or failed, or until deadline_ms (CLOCK_MONOTONIC milliseconds) has
 * passed.  0 when all are settled, -1 at the deadline.  Deliveries to a
 * URL no longer configured are not waited for.
 */
int toll_settle_webhooks_drain(toll_settle_webhooks_t *w,
    int64_t deadline_ms);

/*
 * The counters, read from any thread without waiting for the sender;
 * zeros for w = NULL.
 */
void toll_settle_webhooks_stats(toll_settle_webhooks_t *w,
    toll_settle_hook_stats_t *out);

/*
 * Stops the thread, joins it and frees w.  Attempts in flight are
 * abandoned: their deliveries stay pending, the attempt uncounted, and
 * are sent again by the next run.
 */
void toll_settle_webhooks_stop(toll_settle_webhooks_t *w);

/*
 * "t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>", NUL-terminated, in
 * out (out_size at least TOLL_SETTLE_SIGNATURE_MAX).  0 or -1.
 */
int toll_settle_webhook_sign(const char *secret, int64_t t,
    const char *body, size_t body_len, char *out, size_t out_size);


#endif /* _TOLL_SETTLE_WEBHOOK_H_INCLUDED_ */
