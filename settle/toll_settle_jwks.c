/*
 * toll-settle: JWKS that follow the identity provider (toll_settle_jwks.h).
 *
 * The fetcher runs in its own thread with its own Redis connection and
 * libcurl handle, so that a slow or hanging identity provider never holds
 * up the drain; a fetch is bounded by TOLL_SETTLE_JWKS_TIMEOUT_MS and
 * TOLL_SETTLE_JWKS_BODY_MAX, and SIGTERM cuts it short.  A set is
 * published only when it differs from the one in Redis, so the
 * generation moves only on a real rotation and the workers' verified-
 * token caches are not emptied for nothing.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>

#include <curl/curl.h>
#include <hiredis/hiredis.h>

#include "toll_clock.h"
#include "toll_jwks.h"
#include "toll_log.h"
#include "toll_names.h"
#include "toll_parse.h"
#include "toll_thread.h"
#include "toll_settle_conf.h"
#include "toll_settle_drain_int.h"
#include "toll_settle_jwks.h"


/* a fetch that failed is tried again after at most this long */
#define TOLL_SETTLE_JWKS_RETRY_MS   10000
#define TOLL_SETTLE_JWKS_USER_AGENT "toll-settle-jwks/1"


struct toll_settle_jwks_s {
    pthread_t                   thread;
    volatile sig_atomic_t       stop;
    const toll_settle_conf_t   *conf;
    toll_settle_drain_t         d;              /* its Redis connection */
    int64_t                     due[TOLL_SETTLE_JWKS_MAX];
};


/* the body being received */
typedef struct {
    char                       *p;
    size_t                      len;
    int                         too_big;
    volatile sig_atomic_t      *stop;
} toll_settle_jwks_body_t;


static void *toll_settle_jwks_run(void *arg);
static int toll_settle_jwks_one(toll_settle_jwks_t *j, size_t i);
static int toll_settle_jwks_fetch(toll_settle_jwks_t *j,
    const toll_settle_jwks_src_t *src, toll_settle_jwks_body_t *b,
    char *err, size_t err_size);
static size_t toll_settle_jwks_write(char *data, size_t size, size_t n,
    void *arg);
static int toll_settle_jwks_progress(void *arg, curl_off_t dt,
    curl_off_t dn, curl_off_t ut, curl_off_t un);
static int toll_settle_jwks_publish(toll_settle_jwks_t *j,
    const char *name, const char *doc, int64_t *gen);


/* the figures each set's fetches leave, read by the metrics thread */
static toll_settle_jwks_stat_t  toll_settle_jwks_figures[TOLL_SETTLE_JWKS_MAX];
static size_t                   toll_settle_jwks_nfigures;


/* ------------------------------------------------------- configuration */


int
toll_settle_jwks_conf(toll_settle_jwks_conf_t *jc, char **args, int nargs,
    char *err, size_t err_size)
{
    size_t                   i;
    int64_t                  ms;
    toll_settle_jwks_src_t  *src;

    if (strcmp(args[0], "jwks_ca") == 0) {
        if (nargs != 2 || jc->ca != NULL) {
            snprintf(err, err_size, "\"jwks_ca\" takes one file, once");
            return -1;
        }

        jc->ca = strdup(args[1]);
        return (jc->ca == NULL) ? -1 : 0;
    }

    if (nargs < 3 || nargs > 4) {
        snprintf(err, err_size, "\"jwks\" takes a name, an https:// URL "
                 "and interval=DURATION, as in \"jwks azure "
                 "https://login.example/keys interval=5m\"");
        return -1;
    }

    if (!toll_name_jwks_valid(args[1], strlen(args[1]))) {
        snprintf(err, err_size, "invalid jwks name \"%.64s\": 1 to 64 of "
                 "A-Z a-z 0-9 _ . -", args[1]);
        return -1;
    }

    if (strncmp(args[2], "https://", 8) != 0 || strlen(args[2]) > 2048) {
        snprintf(err, err_size, "invalid jwks URL \"%.64s\": an https:// "
                 "URL of 2048 bytes at most", args[2]);
        return -1;
    }

    ms = TOLL_SETTLE_JWKS_INTERVAL_DEFAULT;

    if (nargs == 4
        && (strncmp(args[3], "interval=", 9) != 0
            || toll_parse_duration_ms(args[3] + 9,
                                      TOLL_SETTLE_JWKS_INTERVAL_MIN,
                                      TOLL_SETTLE_JWKS_INTERVAL_MAX, &ms)
               != 0))
    {
        snprintf(err, err_size, "invalid \"%.64s\": interval=DURATION, "
                 "1s to 1d", args[3]);
        return -1;
    }

    for (i = 0; i < jc->n; i++) {
        if (strcmp(jc->srcs[i].name, args[1]) == 0) {
            snprintf(err, err_size, "\"jwks %s\" is given twice", args[1]);
            return -1;
        }
    }

    if (jc->n == TOLL_SETTLE_JWKS_MAX) {
        snprintf(err, err_size, "more than %d \"jwks\" lines",
                 TOLL_SETTLE_JWKS_MAX);
        return -1;
    }

    src = &jc->srcs[jc->n];
    src->name = strdup(args[1]);
    src->url = strdup(args[2]);
    src->interval_ms = ms;

    if (src->name == NULL || src->url == NULL) {
        free(src->name);
        free(src->url);
        snprintf(err, err_size, "out of memory");
        return -1;
    }

    jc->n++;

    return 0;
}


void
toll_settle_jwks_conf_free(toll_settle_jwks_conf_t *jc)
{
    size_t  i;

    for (i = 0; i < jc->n; i++) {
        free(jc->srcs[i].name);
        free(jc->srcs[i].url);
    }

    free(jc->ca);
    memset(jc, 0, sizeof(toll_settle_jwks_conf_t));
}


/* -------------------------------------------------------------- thread */


int
toll_settle_jwks_start(const toll_settle_conf_t *conf,
    toll_settle_jwks_t **jp, char *err, size_t err_size)
{
    size_t               i;
    toll_settle_jwks_t  *j;

    *jp = NULL;

    if (conf->jwks.n == 0) {
        return 0;
    }

    j = calloc(1, sizeof(toll_settle_jwks_t));
    if (j == NULL) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }

    j->conf = conf;
    j->d.conf = conf;

    for (i = 0; i < conf->jwks.n; i++) {
        toll_settle_jwks_figures[i].name = conf->jwks.srcs[i].name;
    }

    __atomic_store_n(&toll_settle_jwks_nfigures, conf->jwks.n,
                     __ATOMIC_RELEASE);

    if (toll_thread_start(&j->thread, toll_settle_jwks_run, j) != 0) {
        snprintf(err, err_size, "cannot start the jwks thread");
        free(j);
        return -1;
    }

    *jp = j;

    return 0;
}


void
toll_settle_jwks_stop(toll_settle_jwks_t *j)
{
    if (j == NULL) {
        return;
    }

    j->stop = 1;
    pthread_join(j->thread, NULL);

    toll_settle_drain_close(&j->d);
    free(j);
}


size_t
toll_settle_jwks_stats(toll_settle_jwks_stat_t *out, size_t max)
{
    size_t  i, n;

    n = __atomic_load_n(&toll_settle_jwks_nfigures, __ATOMIC_ACQUIRE);

    for (i = 0; i < n && i < max; i++) {
        out[i].name = toll_settle_jwks_figures[i].name;
        out[i].fetches = __atomic_load_n(&toll_settle_jwks_figures[i].fetches,
                                         __ATOMIC_RELAXED);
        out[i].failures = __atomic_load_n(
                              &toll_settle_jwks_figures[i].failures,
                              __ATOMIC_RELAXED);
        out[i].last_success_ms = __atomic_load_n(
                              &toll_settle_jwks_figures[i].last_success_ms,
                              __ATOMIC_RELAXED);
        out[i].gen = __atomic_load_n(&toll_settle_jwks_figures[i].gen,
                                     __ATOMIC_RELAXED);
    }

    return i;
}


static void *
toll_settle_jwks_run(void *arg)
{
    toll_settle_jwks_t *j = arg;

    int      ok;
    size_t   i;
    int64_t  now, next;

    while (!j->stop) {
        now = toll_clock_mono_ms();
        next = now + 1000;

        for (i = 0; i < j->conf->jwks.n && !j->stop; i++) {
            if (j->due[i] <= now) {
                ok = toll_settle_jwks_one(j, i);
                now = toll_clock_mono_ms();
                j->due[i] = now + (ok || j->conf->jwks.srcs[i].interval_ms
                                         < TOLL_SETTLE_JWKS_RETRY_MS
                                   ? j->conf->jwks.srcs[i].interval_ms
                                   : TOLL_SETTLE_JWKS_RETRY_MS);
            }

            if (j->due[i] < next) {
                next = j->due[i];
            }
        }

        if (next > now) {
            (void) toll_clock_sleep_ms(next - now, &j->stop);
        }
    }

    return NULL;
}


/* one fetch of set i, checked and published: 1, or 0 when it failed */
static int
toll_settle_jwks_one(toll_settle_jwks_t *j, size_t i)
{
    int                            ok;
    char                           err[256], *doc;
    int64_t                        gen;
    toll_settle_jwks_body_t        b;
    toll_settle_jwks_stat_t       *st;
    const toll_settle_jwks_src_t  *src;

    src = &j->conf->jwks.srcs[i];
    st = &toll_settle_jwks_figures[i];
    doc = NULL;
    ok = 0;

    memset(&b, 0, sizeof(b));
    b.stop = &j->stop;

    __atomic_add_fetch(&st->fetches, 1, __ATOMIC_RELAXED);

    if (toll_settle_jwks_fetch(j, src, &b, err, sizeof(err)) == 0
        && toll_jwks_check(b.p, b.len, &doc, err, sizeof(err)) == 0)
    {
        if (toll_settle_jwks_publish(j, src->name, doc, &gen) == 0) {
            ok = 1;

        } else {
            snprintf(err, sizeof(err), "redis at %.200s did not take it",
                     j->conf->redis_text);
        }
    }

    if (ok) {
        __atomic_store_n(&st->last_success_ms, toll_clock_real_ms(),
                         __ATOMIC_RELAXED);
        __atomic_store_n(&st->gen, gen, __ATOMIC_RELAXED);

    } else if (!j->stop) {
        __atomic_add_fetch(&st->failures, 1, __ATOMIC_RELAXED);
        toll_log("jwks \"%s\": keeping the last good set: %s", src->name,
                 err);
    }

    free(b.p);
    free(doc);

    return ok;
}


static int
toll_settle_jwks_fetch(toll_settle_jwks_t *j,
    const toll_settle_jwks_src_t *src, toll_settle_jwks_body_t *b,
    char *err, size_t err_size)
{
    long       status;
    CURL      *e;
    CURLcode   rc;
    char       errbuf[CURL_ERROR_SIZE];

    e = curl_easy_init();
    if (e == NULL) {
        snprintf(err, err_size, "libcurl failed");
        return -1;
    }

    errbuf[0] = '\0';
    status = 0;

    if (curl_easy_setopt(e, CURLOPT_URL, src->url) != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https") != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_TIMEOUT_MS,
                            (long) TOLL_SETTLE_JWKS_TIMEOUT_MS) != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_MAXFILESIZE,
                            (long) TOLL_SETTLE_JWKS_BODY_MAX) != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_USERAGENT, TOLL_SETTLE_JWKS_USER_AGENT)
           != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, toll_settle_jwks_write)
           != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_WRITEDATA, b) != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L) != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION,
                            toll_settle_jwks_progress) != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_XFERINFODATA, b) != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf) != CURLE_OK
        || (j->conf->jwks.ca != NULL
            && curl_easy_setopt(e, CURLOPT_CAINFO, j->conf->jwks.ca)
               != CURLE_OK))
    {
        curl_easy_cleanup(e);
        snprintf(err, err_size, "libcurl refused an option");
        return -1;
    }

    rc = curl_easy_perform(e);

    if (rc == CURLE_OK) {
        (void) curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    }

    curl_easy_cleanup(e);

    if (b->too_big) {
        snprintf(err, err_size, "the document is over %d bytes",
                 TOLL_SETTLE_JWKS_BODY_MAX);
        return -1;
    }

    if (rc != CURLE_OK) {
        snprintf(err, err_size, "%s", errbuf[0] ? errbuf
                                                : curl_easy_strerror(rc));
        return -1;
    }

    if (status != 200) {
        snprintf(err, err_size, "HTTP status %ld", status);
        return -1;
    }

    return 0;
}


static size_t
toll_settle_jwks_write(char *data, size_t size, size_t n, void *arg)
{
    toll_settle_jwks_body_t *b = arg;

    char  *p;

    n *= size;

    if (b->len + n > TOLL_SETTLE_JWKS_BODY_MAX) {
        b->too_big = 1;
        return 0;
    }

    p = realloc(b->p, b->len + n + 1);
    if (p == NULL) {
        return 0;
    }

    memcpy(p + b->len, data, n);
    b->p = p;
    b->len += n;
    b->p[b->len] = '\0';

    return n;
}


/* SIGTERM ends a fetch in progress */
static int
toll_settle_jwks_progress(void *arg, curl_off_t dt, curl_off_t dn,
    curl_off_t ut, curl_off_t un)
{
    toll_settle_jwks_body_t *b = arg;

    (void) dt;
    (void) dn;
    (void) ut;
    (void) un;

    return *b->stop ? 1 : 0;
}


/*
 * The set into its hash; the generation is bumped only when the keys
 * changed, in one MULTI with them, so a worker that reads "gen" then
 * the keys never pairs a new generation with the old keys for long.
 */
static int
toll_settle_jwks_publish(toll_settle_jwks_t *j, const char *name,
    const char *doc, int64_t *gen)
{
    int          same, k;
    char         key[sizeof(TOLL_NAME_JWKS_PREFIX) + TOLL_JWKS_NAME_LEN_MAX
                     + 2], now[32], *p;
    size_t         argvlen[8];
    const char    *argv[8];
    redisReply    *r;
    redisContext  *c;

    if (j->d.redis == NULL && toll_settle_connect(&j->d) != 0) {
        return -1;
    }

    p = toll_name_tagged(key, TOLL_NAME_JWKS_PREFIX, name, strlen(name));
    *p = '\0';

    argv[0] = "HMGET";
    argv[1] = key;
    argv[2] = TOLL_JWKS_KEYS;
    argv[3] = TOLL_JWKS_GEN;

    for (k = 0; k < 4; k++) {
        argvlen[k] = strlen(argv[k]);
    }

    r = toll_store_command(j->d.redis, 4, argv, argvlen);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        goto failed;
    }

    same = (r->element[0]->type == REDIS_REPLY_STRING
            && strcmp(r->element[0]->str, doc) == 0);
    *gen = (r->element[1]->type == REDIS_REPLY_STRING)
           ? strtoll(r->element[1]->str, NULL, 10) : 0;
    freeReplyObject(r);

    snprintf(now, sizeof(now), "%lld", (long long) toll_clock_real_ms());

    if (same) {
        argv[0] = "HSET";
        argv[2] = TOLL_JWKS_FETCHED;
        argv[3] = now;

        for (k = 0; k < 4; k++) {
            argvlen[k] = strlen(argv[k]);
        }

        r = toll_store_command(j->d.redis, 4, argv, argvlen);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            goto failed;
        }

        freeReplyObject(r);
        return 0;
    }

    argv[0] = "HSET";
    argv[1] = key;
    argv[2] = TOLL_JWKS_KEYS;
    argv[3] = doc;
    argv[4] = TOLL_JWKS_FETCHED;
    argv[5] = now;

    for (k = 0; k < 6; k++) {
        argvlen[k] = strlen(argv[k]);
    }

    /* the set and its generation in one MULTI, on the connection of the
     * one slot both are in */
    c = toll_store_context_for(j->d.redis, key, strlen(key));
    r = NULL;

    if (c == NULL) {
        goto failed;
    }

    redisAppendCommand(c, "MULTI");
    redisAppendCommandArgv(c, 6, argv, argvlen);
    redisAppendCommand(c, "HINCRBY %b " TOLL_JWKS_GEN " 1", key, strlen(key));
    redisAppendCommand(c, "EXEC");

    for (k = 0; k < 4; k++) {
        if (redisGetReply(c, (void **) &r) != REDIS_OK) {
            r = NULL;
            goto failed;
        }

        if (k == 3) {
            if (r->type != REDIS_REPLY_ARRAY || r->elements != 2
                || r->element[1]->type != REDIS_REPLY_INTEGER)
            {
                goto failed;
            }

            *gen = r->element[1]->integer;
        }

        freeReplyObject(r);
    }

    if (j->conf->verbose) {
        toll_log("jwks \"%s\": published generation %lld", name,
                 (long long) *gen);
    }

    return 0;

failed:

    if (r != NULL) {
        freeReplyObject(r);
    }

    toll_settle_drain_close(&j->d);

    return -1;
}


