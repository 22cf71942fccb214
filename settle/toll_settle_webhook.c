/*
 * toll-settle: the webhook sender (docs/settle.md, "Webhooks").
 *
 * The thread owns the SQLite connection, the curl multi handle and the
 * transfers.  Other threads only set flags under the mutex and wake it
 * with curl_multi_wakeup() (the one multi call that is safe from another
 * thread); a drain waiter sleeps on a condition variable of
 * CLOCK_MONOTONIC.
 *
 * A round of the thread:
 *   1. fan-out: the events past the cursor (meta "webhook_cursor") become
 *      deliveries, one per subscribed URL, and the cursor moves, in one
 *      transaction;
 *   2. due deliveries start, at most TOLL_SETTLE_HOOK_INFLIGHT_MAX in all
 *      and TOLL_SETTLE_HOOK_URL_INFLIGHT_MAX per URL, so that a receiver
 *      that hangs leaves room for the others;
 *   3. finished attempts are written, each in a statement of its own
 *      (a result that meets a busy ledger is kept and written later);
 *   4. curl_multi_poll() until a transfer moves, the next delivery is
 *      due, a kick, or TOLL_SETTLE_HOOK_WAIT_MS_MAX.
 *
 * next_at_ms is wall-clock time, so that it means the same after a
 * restart; the waits are monotonic.  Nothing here logs a secret.  The
 * SQL of these steps is in toll_settle_outbox.c; one transfer (the
 * request, its signature, the answer) in toll_settle_webhook_xfer.c.
 */

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "toll_clock.h"
#include "toll_ledger.h"
#include "toll_log.h"
#include "toll_settle_outbox.h"
#include "toll_settle_webhook.h"
#include "toll_settle_webhook_int.h"
#include "toll_thread.h"


/* the longest sleep of the thread: a missed kick costs at most this */
#define TOLL_SETTLE_HOOK_WAIT_MS_MAX        1000
/* events fanned out in one transaction; more wait for the next round */
#define TOLL_SETTLE_HOOK_FANOUT_EVENTS_MAX  1000
#define TOLL_SETTLE_HOOK_TIMEOUT_MS_MAX     600000          /* 10 minutes */


static int toll_settle_hook_copy(toll_settle_webhooks_t *w,
    const toll_settle_hook_t *hooks, size_t n, char *err, size_t err_size);
static int toll_settle_hook_spawn(toll_settle_webhooks_t *w);
static void toll_settle_hook_free(toll_settle_webhooks_t *w);
static void *toll_settle_hook_thread(void *arg);
static void toll_settle_hook_round(toll_settle_webhooks_t *w,
    uint64_t asked, int64_t *wait_ms);
static int toll_settle_hook_fanout(toll_settle_webhooks_t *w,
    int64_t now_ms);
static int toll_settle_hook_fanout_events(toll_settle_webhooks_t *w,
    int64_t cursor, int64_t now_ms, int64_t *last);
static int toll_settle_hook_cursor_get(toll_settle_webhooks_t *w,
    int64_t *cursor);
static void toll_settle_hook_send_due(toll_settle_webhooks_t *w,
    int64_t now_ms, int64_t *wake_ms);
static int toll_settle_hook_record_all(toll_settle_webhooks_t *w);
static int toll_settle_hook_record(toll_settle_webhooks_t *w,
    toll_settle_xfer_t *x);
static void toll_settle_hook_report(toll_settle_webhooks_t *w,
    const toll_settle_xfer_t *x, const char *status, int64_t delay_ms);
static void toll_settle_hook_check_drain(toll_settle_webhooks_t *w);
static int toll_settle_hook_inflight(const toll_settle_webhooks_t *w,
    int64_t delivery_id);
static void toll_settle_hook_db_error(toll_settle_webhooks_t *w,
    const char *what);
static void toll_settle_hook_timespec(int64_t ms, struct timespec *ts);


unsigned
toll_settle_event_bit(const char *type)
{
    if (type == NULL) {
        return 0;
    }

    if (strcmp(type, TOLL_LEDGER_EVENT_SETTLEMENT_CREATED) == 0) {
        return TOLL_SETTLE_EVENT_SETTLEMENT_CREATED;
    }

    if (strcmp(type, TOLL_LEDGER_EVENT_SETTLEMENT_COMPLETED) == 0) {
        return TOLL_SETTLE_EVENT_SETTLEMENT_COMPLETED;
    }

    if (strcmp(type, TOLL_LEDGER_EVENT_FREE_TIER_EXHAUSTED) == 0) {
        return TOLL_SETTLE_EVENT_FREE_TIER_EXHAUSTED;
    }

    if (strcmp(type, TOLL_LEDGER_EVENT_BALANCE_LOW) == 0) {
        return TOLL_SETTLE_EVENT_BALANCE_LOW;
    }

    if (strcmp(type, TOLL_LEDGER_EVENT_BALANCE_EXHAUSTED) == 0) {
        return TOLL_SETTLE_EVENT_BALANCE_EXHAUSTED;
    }

    if (strcmp(type, TOLL_LEDGER_EVENT_SPEND_CAP_THRESHOLD) == 0) {
        return TOLL_SETTLE_EVENT_SPEND_CAP_THRESHOLD;
    }

    return 0;
}


int
toll_settle_webhooks_start(const char *ledger_path,
    const toll_settle_hook_t *hooks, size_t n, int64_t timeout_ms,
    int verbose, toll_settle_webhooks_t **out, char *err, size_t err_size)
{
    toll_settle_webhooks_t  *w;

    *out = NULL;

    if (n > 0 && (hooks == NULL || ledger_path == NULL)) {
        snprintf(err, err_size, "webhooks: no ledger or no hooks given");
        return -1;
    }

    if (timeout_ms < 1 || timeout_ms > TOLL_SETTLE_HOOK_TIMEOUT_MS_MAX) {
        snprintf(err, err_size, "invalid webhook_timeout of %lld ms: 1ms "
                 "to 10m", (long long) timeout_ms);
        return -1;
    }

    w = calloc(1, sizeof(toll_settle_webhooks_t));
    if (w == NULL) {
        snprintf(err, err_size, "webhooks: out of memory");
        return -1;
    }

    w->timeout_ms = timeout_ms;
    w->verbose = verbose;
    w->cursor = -1;

    atomic_init(&w->stat_attempts, 0);
    atomic_init(&w->stat_delivered, 0);
    atomic_init(&w->stat_failed, 0);

    if (n == 0) {
        *out = w;              /* nothing to send: no thread */
        return 0;
    }

    if (toll_settle_hook_copy(w, hooks, n, err, err_size) != 0
        || toll_settle_outbox_open(ledger_path, &w->outbox, err, err_size)
           != 0)
    {
        toll_settle_hook_free(w);
        return -1;
    }

    w->multi = curl_multi_init();
    if (w->multi == NULL) {
        snprintf(err, err_size, "webhooks: libcurl failed to start");
        toll_settle_hook_free(w);
        return -1;
    }

    if (toll_settle_hook_spawn(w) != 0) {
        snprintf(err, err_size, "webhooks: cannot start the sender thread");
        toll_settle_hook_free(w);
        return -1;
    }

    *out = w;

    return 0;
}


void
toll_settle_webhooks_kick(toll_settle_webhooks_t *w)
{
    if (w == NULL || !w->running) {
        return;
    }

    pthread_mutex_lock(&w->mutex);
    w->kicked = 1;
    pthread_mutex_unlock(&w->mutex);

    (void) curl_multi_wakeup(w->multi);
}


int
toll_settle_webhooks_drain(toll_settle_webhooks_t *w, int64_t deadline_ms)
{
    int              rc;
    uint64_t         gen;
    struct timespec  ts;

    if (w == NULL || !w->running) {
        return 0;
    }

    toll_settle_hook_timespec(deadline_ms, &ts);

    pthread_mutex_lock(&w->mutex);
    gen = ++w->drain_asked;
    w->kicked = 1;
    pthread_mutex_unlock(&w->mutex);

    (void) curl_multi_wakeup(w->multi);

    pthread_mutex_lock(&w->mutex);

    while (w->drain_done < gen) {
        rc = pthread_cond_timedwait(&w->settled, &w->mutex, &ts);
        if (rc == ETIMEDOUT) {
            break;
        }

        assert(rc == 0);
    }

    rc = (w->drain_done >= gen) ? 0 : -1;

    pthread_mutex_unlock(&w->mutex);

    return rc;
}


void
toll_settle_webhooks_stats(toll_settle_webhooks_t *w,
    toll_settle_hook_stats_t *out)
{
    if (w == NULL) {
        memset(out, 0, sizeof(toll_settle_hook_stats_t));
        return;
    }

    /* counters only: no order among them is promised, none is needed */
    out->attempts = atomic_load_explicit(&w->stat_attempts,
                                         memory_order_relaxed);
    out->delivered = atomic_load_explicit(&w->stat_delivered,
                                          memory_order_relaxed);
    out->failed = atomic_load_explicit(&w->stat_failed,
                                       memory_order_relaxed);
}


void
toll_settle_webhooks_stop(toll_settle_webhooks_t *w)
{
    if (w == NULL) {
        return;
    }

    if (w->running) {
        pthread_mutex_lock(&w->mutex);
        w->stop = 1;
        pthread_mutex_unlock(&w->mutex);

        (void) curl_multi_wakeup(w->multi);

        if (pthread_join(w->thread, NULL) != 0) {
            toll_log("webhooks: cannot join the sender thread");
        }
    }

    toll_settle_hook_free(w);
}


/*
 * The hooks, copied, and the distinct URLs among them: the limit in
 * flight and the UNIQUE (event_seq, url) of deliveries are per URL.
 */
static int
toll_settle_hook_copy(toll_settle_webhooks_t *w,
    const toll_settle_hook_t *hooks, size_t n, char *err, size_t err_size)
{
    size_t                i, j;
    toll_settle_whook_t  *h;

    w->hooks = calloc(n, sizeof(toll_settle_whook_t));
    w->urls = calloc(n, sizeof(toll_settle_wurl_t));

    if (w->hooks == NULL || w->urls == NULL) {
        snprintf(err, err_size, "webhooks: out of memory");
        return -1;
    }

    for (i = 0; i < n; i++) {
        if (hooks[i].url == NULL || hooks[i].secret == NULL
            || (strncmp(hooks[i].url, "http://", 7) != 0
                && strncmp(hooks[i].url, "https://", 8) != 0))
        {
            snprintf(err, err_size, "webhook %zu: needs an http:// or "
                     "https:// URL and a secret", i + 1);
            return -1;
        }

        h = &w->hooks[i];

        h->url = strdup(hooks[i].url);
        h->secret = strdup(hooks[i].secret);
        h->events = hooks[i].events;
        w->nhooks++;

        if (h->url == NULL || h->secret == NULL) {
            snprintf(err, err_size, "webhooks: out of memory");
            return -1;
        }

        for (j = 0; j < w->nurls; j++) {
            if (strcmp(w->urls[j].url, h->url) == 0) {
                break;
            }
        }

        if (j == w->nurls) {
            w->urls[j].url = h->url;
            w->nurls++;
        }

        h->url_index = j;
    }

    return 0;
}


/*
 * The thread starts with the asynchronous signals blocked, so that
 * SIGTERM and SIGINT reach the drain thread and interrupt its sleeps.
 */
static int
toll_settle_hook_spawn(toll_settle_webhooks_t *w)
{
    int                 rc;
    pthread_condattr_t  attr;

    if (pthread_condattr_init(&attr) != 0) {
        return -1;
    }

    rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rc == 0) {
        rc = pthread_cond_init(&w->settled, &attr);
    }

    pthread_condattr_destroy(&attr);

    if (rc != 0) {
        return -1;
    }

    if (pthread_mutex_init(&w->mutex, NULL) != 0) {
        pthread_cond_destroy(&w->settled);
        return -1;
    }

    if (toll_thread_start(&w->thread, toll_settle_hook_thread, w) != 0) {
        pthread_mutex_destroy(&w->mutex);
        pthread_cond_destroy(&w->settled);
        return -1;
    }

    w->running = 1;

    return 0;
}


/* after the thread has ended, or when it never started */
static void
toll_settle_hook_free(toll_settle_webhooks_t *w)
{
    char    err[TOLL_LOG_MESSAGE_MAX];
    size_t  i;

    for (i = 0; i < TOLL_SETTLE_HOOK_INFLIGHT_MAX; i++) {
        toll_settle_hook_release(w, &w->xfers[i]);
    }

    if (w->multi != NULL) {
        curl_multi_cleanup(w->multi);
    }

    if (toll_settle_outbox_close(w->outbox, err, sizeof(err)) != 0) {
        toll_log("webhooks: closing the ledger: %s", err);
    }

    for (i = 0; i < w->nhooks; i++) {
        free(w->hooks[i].url);

        if (w->hooks[i].secret != NULL) {
            OPENSSL_cleanse(w->hooks[i].secret, strlen(w->hooks[i].secret));
            free(w->hooks[i].secret);
        }
    }

    free(w->hooks);
    free(w->urls);

    if (w->running) {
        pthread_mutex_destroy(&w->mutex);
        pthread_cond_destroy(&w->settled);
    }

    free(w);
}


static void *
toll_settle_hook_thread(void *arg)
{
    int                      stop, kicked;
    int64_t                  wait_ms;
    uint64_t                 asked;
    toll_settle_xfer_t      *x;
    toll_settle_webhooks_t  *w;

    w = arg;

    for ( ;; ) {
        pthread_mutex_lock(&w->mutex);
        stop = w->stop;
        w->kicked = 0;
        asked = w->drain_asked;
        pthread_mutex_unlock(&w->mutex);

        if (stop) {
            break;
        }

        toll_settle_hook_round(w, asked, &wait_ms);

        pthread_mutex_lock(&w->mutex);
        kicked = w->kicked || w->stop;
        pthread_mutex_unlock(&w->mutex);

        if (kicked) {
            wait_ms = 0;
        }

        /* returns early on a transfer's progress and on curl_multi_wakeup */
        (void) curl_multi_poll(w->multi, NULL, 0, (int) wait_ms, NULL);
    }

    /*
     * Stopping: an attempt in flight is dropped (its delivery stays
     * pending and is sent again later); an ended one is written if the
     * ledger takes it now.
     */
    for (x = w->xfers; x < w->xfers + TOLL_SETTLE_HOOK_INFLIGHT_MAX; x++) {
        if (x->state == TOLL_SETTLE_XFER_RUNNING) {
            toll_settle_hook_free_slot(w, x);
        }
    }

    (void) toll_settle_hook_record_all(w);

    return NULL;
}


/* one round: fan-out, start the due, move the transfers, write results */
static void
toll_settle_hook_round(toll_settle_webhooks_t *w, uint64_t asked,
    int64_t *wait_ms)
{
    int      running, freed;
    int64_t  now_ms, wake_ms;

    now_ms = toll_clock_real_ms();
    wake_ms = now_ms + TOLL_SETTLE_HOOK_WAIT_MS_MAX;

    if (toll_settle_hook_fanout(w, now_ms) == 0 && !w->fanout_more
        && asked > w->drain_gen)
    {
        /* a drain waits for the events fanned out by now, no later ones */
        w->drain_gen = asked;
        w->drain_seq = w->cursor;
    }

    toll_settle_hook_send_due(w, now_ms, &wake_ms);

    (void) curl_multi_perform(w->multi, &running);

    toll_settle_hook_collect(w);
    freed = toll_settle_hook_record_all(w);
    toll_settle_hook_check_drain(w);

    /* more events to fan out, or room for deliveries that wait for it */
    if (w->fanout_more || freed > 0) {
        wake_ms = now_ms;
    }

    now_ms = toll_clock_real_ms();

    *wait_ms = wake_ms - now_ms;

    if (*wait_ms < 0) {
        *wait_ms = 0;
    }

    if (*wait_ms > TOLL_SETTLE_HOOK_WAIT_MS_MAX) {
        *wait_ms = TOLL_SETTLE_HOOK_WAIT_MS_MAX;
    }
}


static int
toll_settle_hook_fanout(toll_settle_webhooks_t *w, int64_t now_ms)
{
    int64_t  max_seq, cursor, last;

    w->fanout_more = 0;

    if (w->cursor >= 0) {
        /* no write lock when there is nothing new, the usual case */
        if (toll_settle_outbox_max_seq(w->outbox, &max_seq) != 0) {
            toll_settle_hook_db_error(w, "read the events");
            return -1;
        }

        if (max_seq <= w->cursor) {
            w->db_failing = 0;
            return 0;
        }
    }

    if (toll_settle_outbox_begin(w->outbox) != 0) {
        toll_settle_hook_db_error(w, "begin the fan-out");
        return -1;
    }

    if (toll_settle_hook_cursor_get(w, &cursor) != 0) {
        goto failed;
    }

    last = cursor;

    if (toll_settle_hook_fanout_events(w, cursor, now_ms, &last) != 0) {
        goto failed;
    }

    if (last != cursor
        && toll_settle_outbox_cursor_set(w->outbox, last) != 0)
    {
        toll_settle_hook_db_error(w, "move the webhook cursor");
        goto failed;
    }

    if (toll_settle_outbox_commit(w->outbox) != 0) {
        toll_settle_hook_db_error(w, "commit the fan-out");
        goto failed;
    }

    w->cursor = last;
    w->db_failing = 0;

    return 0;

failed:

    toll_settle_outbox_rollback(w->outbox);
    w->fanout_more = 0;

    return -1;
}


static int
toll_settle_hook_fanout_events(toll_settle_webhooks_t *w, int64_t cursor,
    int64_t now_ms, int64_t *last)
{
    int          rc, n;
    size_t       i;
    int64_t      seq;
    unsigned     bit;
    const char  *type;

    toll_settle_outbox_events_start(w->outbox, cursor,
                                    TOLL_SETTLE_HOOK_FANOUT_EVENTS_MAX);

    n = 0;

    while ((rc = toll_settle_outbox_events_next(w->outbox, &seq, &type))
           == 1)
    {
        bit = toll_settle_event_bit(type);

        assert(seq > *last);

        for (i = 0; bit != 0 && i < w->nhooks; i++) {
            if ((w->hooks[i].events & bit) == 0) {
                continue;
            }

            /* a URL named twice gets one delivery: UNIQUE (event_seq, url) */
            if (toll_settle_outbox_delivery_add(w->outbox, seq,
                                                w->hooks[i].url, now_ms)
                != 0)
            {
                toll_settle_hook_db_error(w, "add a delivery");
                toll_settle_outbox_events_end(w->outbox);
                return -1;
            }
        }

        *last = seq;
        n++;
    }

    toll_settle_outbox_events_end(w->outbox);

    if (rc != 0) {
        toll_settle_hook_db_error(w, "read the new events");
        return -1;
    }

    w->fanout_more = (n == TOLL_SETTLE_HOOK_FANOUT_EVENTS_MAX);

    return 0;
}


static int
toll_settle_hook_cursor_get(toll_settle_webhooks_t *w, int64_t *cursor)
{
    int   rc, malformed;
    char  bad[TOLL_LOG_MESSAGE_MAX];

    rc = toll_settle_outbox_cursor_get(w->outbox, cursor, &malformed, bad,
                                       sizeof(bad));

    if (malformed) {
        /* deliveries are UNIQUE: from 0, nothing is sent twice */
        toll_log("webhooks: the ledger's %s \"%s\" is not a "
                 "number; fanning out from the first event",
                 TOLL_SETTLE_OUTBOX_CURSOR, bad);
    }

    if (rc != 0) {
        toll_settle_hook_db_error(w, "read the webhook cursor");
        return -1;
    }

    return 0;
}


static void
toll_settle_hook_send_due(toll_settle_webhooks_t *w, int64_t now_ms,
    int64_t *wake_ms)
{
    int                  rc, room;
    size_t               k, u;
    toll_settle_due_t    row;
    toll_settle_wurl_t  *url;

    for (k = 0; k < w->nurls; k++) {
        u = (w->url_next + k) % w->nurls;
        url = &w->urls[u];

        room = TOLL_SETTLE_HOOK_URL_INFLIGHT_MAX - url->inflight;
        if (room > TOLL_SETTLE_HOOK_INFLIGHT_MAX - w->inflight) {
            room = TOLL_SETTLE_HOOK_INFLIGHT_MAX - w->inflight;
        }

        if (room <= 0) {
            continue;
        }

        /* the ones in flight come first, being the oldest due */
        toll_settle_outbox_due_start(w->outbox, url->url,
                                     url->inflight + room + 1);

        while ((rc = toll_settle_outbox_due_next(w->outbox, &row)) == 1) {
            if (toll_settle_hook_inflight(w, row.id)) {
                continue;
            }

            if (room == 0) {
                break;          /* the end of a transfer wakes us */
            }

            if (row.next_at_ms > now_ms) {
                if (row.next_at_ms < *wake_ms) {
                    *wake_ms = row.next_at_ms;
                }

                break;
            }

            toll_settle_hook_attempt(w, u, &row, now_ms);
            room--;
        }

        toll_settle_outbox_due_end(w->outbox);

        if (rc == -1) {
            toll_settle_hook_db_error(w, "read the due deliveries");
            break;
        }
    }

    if (w->nurls > 0) {
        w->url_next = (w->url_next + 1) % w->nurls;
    }
}


/* the number of slots it freed */
static int
toll_settle_hook_record_all(toll_settle_webhooks_t *w)
{
    int                  freed;
    toll_settle_xfer_t  *x;

    freed = 0;

    for (x = w->xfers; x < w->xfers + TOLL_SETTLE_HOOK_INFLIGHT_MAX; x++) {
        if (x->state != TOLL_SETTLE_XFER_DONE) {
            continue;
        }

        if (toll_settle_hook_record(w, x) != 0) {
            break;              /* the ledger is busy: next round */
        }

        toll_settle_hook_free_slot(w, x);
        freed++;
    }

    return freed;
}


/* the result of an ended attempt into its delivery */
static int
toll_settle_hook_record(toll_settle_webhooks_t *w, toll_settle_xfer_t *x)
{
    int          final;
    int64_t      attempt, delay_ms;
    const char  *status;

    attempt = x->attempts + 1;

    if (x->ok) {
        if (toll_settle_outbox_delivered(w->outbox, x->delivery_id, attempt,
                                         x->http_status, toll_ledger_now())
            != 0)
        {
            toll_settle_hook_db_error(w, "record a delivery");
            return -1;
        }

        atomic_fetch_add_explicit(&w->stat_delivered, 1,
                                  memory_order_relaxed);
        toll_settle_hook_report(w, x, "delivered", 0);

        return 0;
    }

    final = x->permanent || attempt >= TOLL_SETTLE_HOOK_ATTEMPTS_MAX;

    delay_ms = 0;
    status = "failed";

    if (!final) {
        /* 1 s, 2 s, 4 s */
        delay_ms = (int64_t) TOLL_SETTLE_HOOK_RETRY_DELAY_MS << (attempt - 1);
        status = "pending";
    }

    if (toll_settle_outbox_attempted(w->outbox, x->delivery_id, status,
                                     attempt, x->http_status, x->error,
                                     x->ended_ms + delay_ms)
        != 0)
    {
        toll_settle_hook_db_error(w, "record a delivery attempt");
        return -1;
    }

    /* counted once it is written: a busy ledger retries the write */
    if (final) {
        atomic_fetch_add_explicit(&w->stat_failed, 1, memory_order_relaxed);
    }

    toll_settle_hook_report(w, x, status, delay_ms);

    return 0;
}


static void
toll_settle_hook_report(toll_settle_webhooks_t *w,
    const toll_settle_xfer_t *x, const char *status, int64_t delay_ms)
{
    const char  *url;

    url = w->urls[x->url].url;

    if (strcmp(status, "failed") == 0) {
        toll_log("webhook %s (%s) to %s failed for good after "
                 "%lld attempt%s: %s", x->event_id,
                 x->event_type, url,
                 (long long) x->attempts + 1,
                 x->attempts == 0 ? "" : "s", x->error);
        return;
    }

    if (!w->verbose) {
        return;
    }

    if (strcmp(status, "delivered") == 0) {
        toll_log("webhook %s (%s) to %s delivered at attempt "
                 "%lld (HTTP %ld)", x->event_id, x->event_type,
                 url, (long long) x->attempts + 1,
                 x->http_status);
        return;
    }

    toll_log("webhook %s (%s) to %s: attempt %lld of %d: %s; "
             "next in %lld s", x->event_id, x->event_type, url,
             (long long) x->attempts + 1,
             TOLL_SETTLE_HOOK_ATTEMPTS_MAX, x->error,
             (long long) delay_ms / 1000);
}


/*
 * A drain waits for the deliveries of the events fanned out when it
 * asked; those to URLs no longer configured are not counted.
 */
static void
toll_settle_hook_check_drain(toll_settle_webhooks_t *w)
{
    int     pending;
    size_t  u;

    if (w->drain_gen <= w->drain_seen) {
        return;
    }

    for (u = 0; u < w->nurls; u++) {
        if (toll_settle_outbox_unsettled(w->outbox, w->urls[u].url,
                                         w->drain_seq, &pending)
            != 0)
        {
            toll_settle_hook_db_error(w, "read the pending deliveries");
            return;
        }

        if (pending) {
            return;
        }
    }

    w->drain_seen = w->drain_gen;

    pthread_mutex_lock(&w->mutex);
    w->drain_done = w->drain_gen;
    pthread_cond_broadcast(&w->settled);
    pthread_mutex_unlock(&w->mutex);
}


static int
toll_settle_hook_inflight(const toll_settle_webhooks_t *w,
    int64_t delivery_id)
{
    size_t  i;

    for (i = 0; i < TOLL_SETTLE_HOOK_INFLIGHT_MAX; i++) {
        if (w->xfers[i].state != TOLL_SETTLE_XFER_FREE
            && w->xfers[i].delivery_id == delivery_id)
        {
            return 1;
        }
    }

    return 0;
}



/* a busy or failing ledger is logged once, until a fan-out succeeds */
static void
toll_settle_hook_db_error(toll_settle_webhooks_t *w, const char *what)
{
    if (w->db_failing) {
        return;
    }

    w->db_failing = 1;

    toll_log("webhooks: cannot %s in the ledger: %s; trying "
             "again", what,
             toll_settle_outbox_errmsg(w->outbox));
}


static void
toll_settle_hook_timespec(int64_t ms, struct timespec *ts)
{
    if (ms < 0) {
        ms = 0;
    }

    ts->tv_sec = (time_t) (ms / 1000);
    ts->tv_nsec = (long) (ms % 1000) * 1000000;
}
