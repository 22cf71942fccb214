/*
 * toll-settle: one webhook delivery over libcurl (docs/settle.md,
 * "Webhooks"): the POST of an event's body, its X-Toll-* headers and
 * HMAC-SHA256 signature, and the answer read back into the attempt's
 * slot.  The sender thread (toll_settle_webhook.c) decides what is due,
 * writes the results and schedules the retries; nothing here touches
 * the ledger.  Nothing here logs a secret.
 */


#include <assert.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "toll_clock.h"
#include "toll_settle_outbox.h"
#include "toll_settle_webhook.h"
#include "toll_settle_webhook_int.h"


/* a body the ledger made is a few hundred bytes; a bigger one is refused */
#define TOLL_SETTLE_HOOK_BODY_LEN_MAX       (1024 * 1024)
#define TOLL_SETTLE_HOOK_HEADER_LEN_MAX                                     \
    (32 + TOLL_SETTLE_HOOK_FIELD_LEN_MAX + TOLL_SETTLE_SIGNATURE_MAX)
#define TOLL_SETTLE_HOOK_INT_STR_LEN        sizeof("-9223372036854775808")
#define TOLL_SETTLE_HOOK_HMAC_LEN           32              /* SHA-256 */

#define TOLL_SETTLE_HOOK_USER_AGENT         "toll-settle"

#define TOLL_SETTLE_HOOK_NELTS(a)           (sizeof(a) / sizeof((a)[0]))


static int toll_settle_hook_easy(toll_settle_webhooks_t *w,
    toll_settle_xfer_t *x, const toll_settle_whook_t *hook,
    const char *body, size_t body_len);
static const toll_settle_whook_t *toll_settle_hook_for(
    toll_settle_webhooks_t *w, size_t u, const char *type);
static int toll_settle_hook_field_ok(const unsigned char *s, int len);
static size_t toll_settle_hook_discard(char *ptr, size_t size,
    size_t nmemb, void *data);


int
toll_settle_webhook_sign(const char *secret, int64_t t, const char *body,
    size_t body_len, char *out, size_t out_size)
{
    int             n, rc;
    size_t          i, mac_len;
    char            prefix[TOLL_SETTLE_HOOK_INT_STR_LEN + 1];
    char            digest_name[] = "SHA256";
    EVP_MAC        *mac;
    OSSL_PARAM      params[2];
    EVP_MAC_CTX    *ctx;
    unsigned char   md[TOLL_SETTLE_HOOK_HMAC_LEN];

    static const char  hex[] = "0123456789abcdef";

    if (secret == NULL || (body == NULL && body_len > 0) || out == NULL
        || out_size < TOLL_SETTLE_SIGNATURE_MAX)
    {
        return -1;
    }

    n = snprintf(prefix, sizeof(prefix), "%lld.", (long long) t);
    if (n < 0 || (size_t) n >= sizeof(prefix)) {
        return -1;
    }

    rc = -1;
    mac_len = 0;
    ctx = NULL;

    mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (mac == NULL) {
        return -1;
    }

    ctx = EVP_MAC_CTX_new(mac);
    if (ctx == NULL) {
        goto done;
    }

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 digest_name, 0);
    params[1] = OSSL_PARAM_construct_end();

    if (EVP_MAC_init(ctx, (const unsigned char *) secret, strlen(secret),
                     params) != 1
        || EVP_MAC_update(ctx, (const unsigned char *) prefix, (size_t) n)
           != 1
        || (body_len > 0
            && EVP_MAC_update(ctx, (const unsigned char *) body, body_len)
               != 1)
        || EVP_MAC_final(ctx, md, &mac_len, sizeof(md)) != 1
        || mac_len != sizeof(md))
    {
        goto done;
    }

    n = snprintf(out, out_size, "t=%lld,v1=", (long long) t);
    if (n < 0 || (size_t) n + 2 * sizeof(md) + 1 > out_size) {
        goto done;
    }

    for (i = 0; i < sizeof(md); i++) {
        out[n + 2 * i] = hex[md[i] >> 4];
        out[n + 2 * i + 1] = hex[md[i] & 0x0f];
    }

    out[n + 2 * sizeof(md)] = '\0';
    rc = 0;

done:

    OPENSSL_cleanse(md, sizeof(md));
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);

    return rc;
}


/*
 * One attempt of the delivery in row.  Whatever fails here ends the
 * attempt at once (state DONE), to be written with the others.
 */
void
toll_settle_hook_attempt(toll_settle_webhooks_t *w, size_t u,
    const toll_settle_due_t *row, int64_t now_ms)
{
    toll_settle_xfer_t         *x;
    const toll_settle_whook_t  *hook;

    for (x = w->xfers; x->state != TOLL_SETTLE_XFER_FREE; x++) {
        assert(x + 1 < w->xfers + TOLL_SETTLE_HOOK_INFLIGHT_MAX);
    }

    memset(x, 0, sizeof(toll_settle_xfer_t));

    x->state = TOLL_SETTLE_XFER_DONE;
    x->delivery_id = row->id;
    x->attempts = row->attempts;
    x->url = u;
    x->ended_ms = now_ms;

    w->inflight++;
    w->urls[u].inflight++;

    assert(w->inflight <= TOLL_SETTLE_HOOK_INFLIGHT_MAX);
    assert(w->urls[u].inflight <= TOLL_SETTLE_HOOK_URL_INFLIGHT_MAX);

    if (!toll_settle_hook_field_ok(row->event_id, row->event_id_len)
        || !toll_settle_hook_field_ok(row->event_type, row->event_type_len))
    {
        snprintf(x->event_id, sizeof(x->event_id), "of delivery %lld",
                 (long long) x->delivery_id);
        snprintf(x->error, sizeof(x->error), "the event's id or type "
                 "cannot be sent as a header");
        x->permanent = 1;
        return;
    }

    memcpy(x->event_id, row->event_id, (size_t) row->event_id_len);
    memcpy(x->event_type, row->event_type, (size_t) row->event_type_len);

    if (row->body == NULL || row->body_len > TOLL_SETTLE_HOOK_BODY_LEN_MAX) {
        snprintf(x->error, sizeof(x->error), "the event's body is over %d "
                 "bytes", TOLL_SETTLE_HOOK_BODY_LEN_MAX);
        x->permanent = 1;
        return;
    }

    hook = toll_settle_hook_for(w, u, x->event_type);

    if (toll_settle_hook_easy(w, x, hook, row->body, (size_t) row->body_len)
        != 0)
    {
        toll_settle_hook_release(w, x);
        return;
    }

    if (curl_multi_add_handle(w->multi, x->easy) != CURLM_OK) {
        snprintf(x->error, sizeof(x->error), "libcurl refused the "
                 "transfer");
        toll_settle_hook_release(w, x);
        return;
    }

    x->state = TOLL_SETTLE_XFER_RUNNING;
}


/* the easy handle of attempt x; -1 with x->error set */
static int
toll_settle_hook_easy(toll_settle_webhooks_t *w, toll_settle_xfer_t *x,
    const toll_settle_whook_t *hook, const char *body, size_t body_len)
{
    size_t              i;
    char                sig[TOLL_SETTLE_SIGNATURE_MAX];
    char                lines[5][TOLL_SETTLE_HOOK_HEADER_LEN_MAX];
    CURL               *e;
    struct curl_slist  *list;

    if (toll_settle_webhook_sign(hook->secret,
                                 toll_clock_real_ms() / 1000, body,
                                 body_len, sig, sizeof(sig))
        != 0)
    {
        snprintf(x->error, sizeof(x->error), "cannot sign the body");
        return -1;
    }

    snprintf(lines[0], sizeof(lines[0]), "Content-Type: application/json");
    snprintf(lines[1], sizeof(lines[1]), "X-Toll-Event: %s", x->event_type);
    snprintf(lines[2], sizeof(lines[2]), "X-Toll-Event-Id: %s", x->event_id);
    snprintf(lines[3], sizeof(lines[3]), "X-Toll-Signature: %s", sig);
    /* no "Expect: 100-continue" and its wait for a large body */
    snprintf(lines[4], sizeof(lines[4]), "Expect:");

    for (i = 0; i < TOLL_SETTLE_HOOK_NELTS(lines); i++) {
        list = curl_slist_append(x->headers, lines[i]);
        if (list == NULL) {
            snprintf(x->error, sizeof(x->error), "out of memory");
            return -1;
        }

        x->headers = list;
    }

    e = curl_easy_init();
    if (e == NULL) {
        snprintf(x->error, sizeof(x->error), "out of memory");
        return -1;
    }

    x->easy = e;
    x->errbuf[0] = '\0';

    if (curl_easy_setopt(e, CURLOPT_URL, w->urls[x->url].url) != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https")
           != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long) w->timeout_ms)
           != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_USERAGENT, TOLL_SETTLE_HOOK_USER_AGENT)
           != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers) != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                            (curl_off_t) body_len)
           != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, body) != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_WRITEFUNCTION,
                            toll_settle_hook_discard)
           != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf) != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_PRIVATE, x) != CURLE_OK)
    {
        snprintf(x->error, sizeof(x->error), "libcurl refused an option");
        return -1;
    }

    return 0;
}


/*
 * The subscription whose secret signs an event to URL u: the first one
 * to that URL that names the event's type.
 */
static const toll_settle_whook_t *
toll_settle_hook_for(toll_settle_webhooks_t *w, size_t u, const char *type)
{
    size_t                      i;
    unsigned                    bit;
    const toll_settle_whook_t  *first;

    bit = toll_settle_event_bit(type);
    first = NULL;

    for (i = 0; i < w->nhooks; i++) {
        if (w->hooks[i].url_index != u) {
            continue;
        }

        if (first == NULL) {
            first = &w->hooks[i];
        }

        if (w->hooks[i].events & bit) {
            return &w->hooks[i];
        }
    }

    assert(first != NULL);

    return first;
}


/* the transfers that ended: their result, the handle freed */
void
toll_settle_hook_collect(toll_settle_webhooks_t *w)
{
    int                  left;
    long                 status;
    void                *p;
    CURL                *e;
    CURLMsg             *msg;
    CURLcode             code;
    toll_settle_xfer_t  *x;

    while ((msg = curl_multi_info_read(w->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE) {
            continue;
        }

        e = msg->easy_handle;
        code = msg->data.result;

        p = NULL;
        (void) curl_easy_getinfo(e, CURLINFO_PRIVATE, &p);
        x = p;

        assert(x != NULL && x->easy == e);
        assert(x->state == TOLL_SETTLE_XFER_RUNNING);

        status = 0;
        (void) curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);

        x->http_status = status;
        x->ended_ms = toll_clock_real_ms();

        /* an attempt that went out, answered or not: one POST */
        atomic_fetch_add_explicit(&w->stat_attempts, 1,
                                  memory_order_relaxed);

        if (code == CURLE_OK && status >= 200 && status <= 299) {
            x->ok = 1;

        } else if (code == CURLE_OK) {
            snprintf(x->error, sizeof(x->error), "HTTP %ld", status);

        } else {
            snprintf(x->error, sizeof(x->error), "%s",
                     x->errbuf[0] ? x->errbuf : curl_easy_strerror(code));
        }

        toll_settle_hook_release(w, x);
        x->state = TOLL_SETTLE_XFER_DONE;
    }
}


/* x's curl objects out of the multi handle and freed; x keeps its state */
void
toll_settle_hook_release(toll_settle_webhooks_t *w, toll_settle_xfer_t *x)
{
    if (x->easy != NULL) {
        if (x->state == TOLL_SETTLE_XFER_RUNNING) {
            (void) curl_multi_remove_handle(w->multi, x->easy);
        }

        curl_easy_cleanup(x->easy);
        x->easy = NULL;
    }

    curl_slist_free_all(x->headers);
    x->headers = NULL;
}


void
toll_settle_hook_free_slot(toll_settle_webhooks_t *w, toll_settle_xfer_t *x)
{
    assert(x->state != TOLL_SETTLE_XFER_FREE);
    assert(w->inflight > 0 && w->urls[x->url].inflight > 0);

    toll_settle_hook_release(w, x);

    w->urls[x->url].inflight--;
    w->inflight--;
    x->state = TOLL_SETTLE_XFER_FREE;
}


/* printable ASCII, no more than TOLL_SETTLE_HOOK_FIELD_LEN_MAX */
static int
toll_settle_hook_field_ok(const unsigned char *s, int len)
{
    int  i;

    if (s == NULL || len < 1 || len > TOLL_SETTLE_HOOK_FIELD_LEN_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (s[i] < 0x21 || s[i] > 0x7e) {
            return 0;
        }
    }

    return 1;
}


static size_t
toll_settle_hook_discard(char *ptr, size_t size, size_t nmemb, void *data)
{
    (void) ptr;
    (void) data;

    return size * nmemb;
}
