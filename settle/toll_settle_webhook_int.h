/*
 * toll-settle: what the webhook sender's two files share (private to
 * them): the sender's state, one transfer's slot, and the calls between
 * settle/toll_settle_webhook.c (the thread: fan-out, the due deliveries,
 * results, retries and their backoff, drains) and
 * settle/toll_settle_webhook_xfer.c (one delivery over libcurl: the
 * request, its signature headers, the answer).
 */

#ifndef _TOLL_SETTLE_WEBHOOK_INT_H_INCLUDED_
#define _TOLL_SETTLE_WEBHOOK_INT_H_INCLUDED_


#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "toll_settle_outbox.h"
#include "toll_settle_webhook.h"


/* attempts running at once, in all and to one URL */
#define TOLL_SETTLE_HOOK_INFLIGHT_MAX       8
#define TOLL_SETTLE_HOOK_URL_INFLIGHT_MAX   2
/* an event id or type, sent as a header value */
#define TOLL_SETTLE_HOOK_FIELD_LEN_MAX      128


typedef enum {
    TOLL_SETTLE_XFER_FREE = 0,
    TOLL_SETTLE_XFER_RUNNING,        /* in the multi handle */
    TOLL_SETTLE_XFER_DONE            /* ended, its result not yet written */
} toll_settle_xfer_state_e;


/* one attempt of one delivery */
typedef struct {
    toll_settle_xfer_state_e   state;
    CURL                      *easy;
    struct curl_slist         *headers;
    int64_t                    delivery_id;
    int64_t                    attempts;      /* made before this one */
    size_t                     url;           /* index in w->urls */
    int64_t                    ended_ms;      /* wall clock */
    long                       http_status;   /* 0: no answer */
    int                        ok;
    int                        permanent;     /* no retry can mend it */
    char                       event_id[TOLL_SETTLE_HOOK_FIELD_LEN_MAX + 1];
    char                       event_type[TOLL_SETTLE_HOOK_FIELD_LEN_MAX + 1];
    char                       errbuf[CURL_ERROR_SIZE];
    char                       error[CURL_ERROR_SIZE];
} toll_settle_xfer_t;


/* a subscription, copied */
typedef struct {
    char                      *url;
    char                      *secret;
    unsigned                   events;
    size_t                     url_index;     /* in w->urls */
} toll_settle_whook_t;


/* a distinct URL: several subscriptions may share one */
typedef struct {
    const char                *url;           /* a hook's copy */
    int                        inflight;
} toll_settle_wurl_t;


struct toll_settle_webhooks_s {
    /* shared: under mutex */
    pthread_mutex_t            mutex;
    pthread_cond_t             settled;       /* drain waiters */
    int                        stop;
    int                        kicked;
    uint64_t                   drain_asked;   /* requests made */
    uint64_t                   drain_done;    /* the last one settled */

    /*
     * Written by the thread, read by a scrape: atomics, so that a scrape
     * never waits for the mutex while the thread holds it.
     */
    atomic_uint_least64_t      stat_attempts;
    atomic_uint_least64_t      stat_delivered;
    atomic_uint_least64_t      stat_failed;

    /* set by start, read-only while the thread runs */
    int                        running;
    pthread_t                  thread;
    CURLM                     *multi;
    toll_settle_whook_t       *hooks;
    size_t                     nhooks;
    toll_settle_wurl_t        *urls;
    size_t                     nurls;
    int64_t                    timeout_ms;
    int                        verbose;

    /* the thread's own */
    toll_settle_outbox_t      *outbox;
    toll_settle_xfer_t         xfers[TOLL_SETTLE_HOOK_INFLIGHT_MAX];
    int                        inflight;      /* xfers not free */
    int64_t                    cursor;        /* -1: not read yet */
    int                        fanout_more;
    uint64_t                   drain_gen;     /* request drain_seq is for */
    int64_t                    drain_seq;     /* events up to it */
    uint64_t                   drain_seen;    /* request found settled */
    size_t                     url_next;      /* round robin */
    int                        db_failing;    /* logged once per streak */
};


/*
 * One attempt of the delivery in row to URL u, in a free slot (there is
 * one).  Whatever fails ends the attempt at once (state DONE), to be
 * written with the others.
 */
void toll_settle_hook_attempt(toll_settle_webhooks_t *w, size_t u,
    const toll_settle_due_t *row, int64_t now_ms);

/* the transfers that ended: their result, the handle freed */
void toll_settle_hook_collect(toll_settle_webhooks_t *w);

/* x's curl objects out of the multi handle and freed; x keeps its state */
void toll_settle_hook_release(toll_settle_webhooks_t *w,
    toll_settle_xfer_t *x);

/* x released and its slot free again */
void toll_settle_hook_free_slot(toll_settle_webhooks_t *w,
    toll_settle_xfer_t *x);


#endif /* _TOLL_SETTLE_WEBHOOK_INT_H_INCLUDED_ */
