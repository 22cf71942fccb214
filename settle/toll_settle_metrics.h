/*
 * toll-settle: its own metrics, in Prometheus text format 0.0.4, on a
 * small HTTP listener (docs/settle.md, "Metrics").
 *
 * The drain publishes its figures after each pass; a thread of its own
 * answers scrapes from a copy of them taken under a mutex, and reads the
 * webhook sender's counters (atomics).  A scrape therefore never touches
 * Redis or the ledger, never waits for a pass, and a pass never waits
 * for a scrape longer than a struct copy.
 *
 * One connection at a time, each bounded in size and time, is plenty for
 * a scraper every few seconds, and keeps the thread free of state.
 */

#ifndef _TOLL_SETTLE_METRICS_H_INCLUDED_
#define _TOLL_SETTLE_METRICS_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>

#include <sys/socket.h>

#include "toll_settle_webhook.h"


/* "[<an IPv6 literal>]:65535" and its NUL */
#define TOLL_SETTLE_LISTEN_LEN_MAX  64


/* metrics_listen, parsed: text[0] == '\0' means no listener */
typedef struct {
    char                      text[TOLL_SETTLE_LISTEN_LEN_MAX];
    struct sockaddr_storage   addr;
    socklen_t                 addr_len;
} toll_settle_listen_t;


/* what the drain publishes after each pass; counters since start */
typedef struct {
    uint64_t                  passes;
    uint64_t                  batches;
    uint64_t                  replays;
    uint64_t                  records;
    uint64_t                  balance_txs;      /* credits, debits,
                                                   refunds posted */
    int64_t                   drained_micros;
    uint64_t                  alerts_low;       /* balance alerts sent */
    uint64_t                  alerts_exhausted;
    uint64_t                  redis_errors;
    uint64_t                  ledger_errors;

    /* start of the last pass that emptied the index; 0: none yet */
    int64_t                   full_pass_unix_ms;
    int64_t                   full_pass_mono_ms;    /* CLOCK_MONOTONIC */

    int64_t                   open_claims;
    uint64_t                  quarantined;
    int64_t                   quarantine_claims;

    /* read from the ledger after the pass */
    int64_t                   ledger_debits_micros;
    int64_t                   ledger_credits_micros;
    int64_t                   ledger_transactions;
    int64_t                   webhook_pending;
} toll_settle_figures_t;


typedef struct toll_settle_metrics_s  toll_settle_metrics_t;


/*
 * "IPV4:PORT", "[IPV6]:PORT" or "localhost:PORT" (127.0.0.1, without a
 * resolver), port 1 to 65535; "off" clears l.  0, or -1 when malformed.
 */
int toll_settle_listen_parse(const char *text, toll_settle_listen_t *l);

/*
 * Binds and listens on l, and starts the thread that answers.  Returns
 * EX_OK, or a sysexits code with one line in err: EX_UNAVAILABLE when
 * the address cannot be listened on (the line names it), EX_OSERR when
 * the system refuses a pipe, mutex or thread.  On failure *out is NULL
 * and nothing is left open.
 */
int toll_settle_metrics_start(const toll_settle_listen_t *l,
    const char *version, toll_settle_metrics_t **out, char *err,
    size_t err_size);

/* the figures of the pass just ended; m may be NULL (no listener) */
void toll_settle_metrics_publish(toll_settle_metrics_t *m,
    const toll_settle_figures_t *f);

/*
 * The webhook sender whose counters a scrape reads, or NULL: detach it
 * before toll_settle_webhooks_stop() frees it.  m may be NULL.
 */
void toll_settle_metrics_hooks(toll_settle_metrics_t *m,
    toll_settle_webhooks_t *w);

/* ends the thread (a scrape in progress is cut), closes, frees; NULL ok */
void toll_settle_metrics_stop(toll_settle_metrics_t *m);


#endif /* _TOLL_SETTLE_METRICS_H_INCLUDED_ */
