/*
 * toll-settle: spend cap alerts (docs/settle.md, "Spend cap alerts").
 *
 * What is measured is a period hash's used (docs/metering.md, "Spend
 * caps"): what the nodes took of the cap, the quantity the gate binds
 * on and the only one kept per key (the ledger has no key id).  A cap
 * reaches threshold t (50, 80, 100) when used * 100 >= cap * t, and 100
 * also when lua/cap.lua marked it full: a call found no room in it, or
 * the grant to one left less than that call's price.
 *
 * Which caps are looked at: those of the buyers whose usage a pass
 * drained, for the day of each batch and the month that day is in, and
 * only while some cap was ever set (toll:cap:gen, one GET a pass).  Every
 * grant is asked for by a call that is then metered, so the drain of that
 * call comes after the grant and sees its used.  A start notes the
 * (buyer, day) of the ledger's last usage transactions: a run that died
 * after a batch's delete and before its alerts had noted them in memory
 * only.
 *
 * The ledger writes each alert with its event once per (buyer, currency,
 * scope, key, period, period start, threshold) (lib/toll_ledger_alert.c):
 * later passes send nothing again; a new period is a new row.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include "toll_key.h"
#include "toll_ledger.h"
#include "toll_log.h"
#include "toll_money.h"
#include "toll_names.h"
#include "toll_parse.h"
#include "toll_settle_caps.h"
#include "toll_settle_drain_int.h"


/* "toll:cap:{<buyer>}:m<YYYYMMDD>" and a NUL */
#define TOLL_SETTLE_CAPS_NAME_MAX                                            \
    (toll_name_len(TOLL_NAME_CAP_PREFIX) + TOLL_NAME_BUYER_LEN_MAX           \
     + toll_name_len(TOLL_NAME_TAG_END)                                      \
     + toll_name_len(TOLL_NAME_CAP_MONTH) + TOLL_NAME_DAY_LEN + 1)

/* a field of a period hash: "key:<key_id>:<CUR>:used" and a NUL */
#define TOLL_SETTLE_CAPS_FIELD_MAX                                           \
    (toll_name_len(TOLL_CAP_KEY) + TOLL_KEY_ID_LEN_MAX + 1                   \
     + TOLL_MONEY_CURRENCY_LEN_MAX + 1 + 8)

#define TOLL_SETTLE_CAPS_DAY      0
#define TOLL_SETTLE_CAPS_MONTH    1


/* one cap of a buyer's caps hash */
typedef struct {
    char      currency[TOLL_MONEY_CURRENCY_LEN_MAX + 1];
    char      key_id[TOLL_KEY_ID_LEN_MAX + 1];      /* "": the buyer's */
    int       monthly;
    int64_t   cap_micros;
} toll_settle_cap_t;


/* the day's period and the month's: first days, and the days after */
typedef struct {
    char      start[2][TOLL_NAME_DAY_LEN + 1];
    char      end[2][TOLL_NAME_DAY_LEN + 1];
} toll_settle_periods_t;


static void toll_settle_caps_noted(void *ctx, const char *buyer,
    const char *day);
static int toll_settle_caps_cmp(const void *a, const void *b);
static int toll_settle_caps_gen(toll_settle_drain_t *d, int *on);
static int toll_settle_caps_buyer(toll_settle_drain_t *d, const char *day,
    const char *buyer);
static size_t toll_settle_caps_read(const redisReply *r,
    toll_settle_cap_t *caps, int64_t *anchor);
static int toll_settle_caps_field(const char *field, size_t len,
    const char *value, toll_settle_cap_t *cap);
static int toll_settle_caps_periods(const char *day, int64_t anchor,
    toll_settle_periods_t *p);
static void toll_settle_caps_day(char *buf, int y, int m, int d);
static int toll_settle_caps_hashes(toll_settle_drain_t *d,
    const char *buyer, const toll_settle_periods_t *p, redisReply **r);
static int toll_settle_caps_check(toll_settle_drain_t *d, const char *buyer,
    const toll_settle_cap_t *cap, const toll_settle_periods_t *p,
    const redisReply *period);
static int toll_settle_caps_level(int64_t cap, int64_t used, int full);
static const char *toll_settle_caps_hget(const redisReply *r,
    const char *field);


void
toll_settle_caps_note(toll_settle_drain_t *d, const char *buyer,
    const char *day)
{
    size_t   cap, blen;
    char   **p, *s;

    blen = strlen(buyer);

    if (strlen(day) != TOLL_NAME_DAY_LEN
        || !toll_name_buyer_valid(buyer, blen))
    {
        return;
    }

    if (d->cap_nnotes == d->cap_cap) {
        cap = d->cap_cap ? 2 * d->cap_cap : 64;

        if (cap > TOLL_SETTLE_CAPS_NOTES_MAX) {
            cap = TOLL_SETTLE_CAPS_NOTES_MAX;
        }

        p = (cap > d->cap_cap) ? realloc(d->cap_notes, cap * sizeof(char *))
                               : NULL;
        if (p == NULL) {
            goto full;
        }

        d->cap_notes = p;
        d->cap_cap = cap;
    }

    /* "<YYYYMMDD><buyer>": the day first, so that sorting groups none */

    s = malloc(TOLL_NAME_DAY_LEN + blen + 1);
    if (s == NULL) {
        goto full;
    }

    memcpy(s, day, TOLL_NAME_DAY_LEN);
    memcpy(s + TOLL_NAME_DAY_LEN, buyer, blen + 1);

    d->cap_notes[d->cap_nnotes++] = s;

    return;

full:

    if (!d->cap_full_said) {
        d->cap_full_said = 1;
        toll_log("more buyers' days drained in one pass than the spend cap "
                 "alerts keep (%d, or out of memory); the others are "
                 "checked when their usage is next drained",
                 TOLL_SETTLE_CAPS_NOTES_MAX);
    }
}


int
toll_settle_caps_pass(toll_settle_drain_t *d)
{
    int     rc, on;
    size_t  i;

    on = 0;

    if (d->cap_nnotes == 0) {
        return 0;
    }

    rc = toll_settle_caps_gen(d, &on);

    if (rc == 0 && on) {
        qsort(d->cap_notes, d->cap_nnotes, sizeof(char *),
              toll_settle_caps_cmp);

        for (i = 0; i < d->cap_nnotes && rc == 0; i++) {
            if (i > 0 && strcmp(d->cap_notes[i], d->cap_notes[i - 1]) == 0) {
                continue;
            }

            rc = toll_settle_caps_buyer(d, d->cap_notes[i],
                                        d->cap_notes[i] + TOLL_NAME_DAY_LEN);
        }
    }

    if (rc != 0) {
        /* all are checked again: an alert sent is not sent twice */
        return rc;
    }

    for (i = 0; i < d->cap_nnotes; i++) {
        free(d->cap_notes[i]);
    }

    d->cap_nnotes = 0;
    d->cap_full_said = 0;

    return 0;
}


int
toll_settle_caps_recover(toll_settle_drain_t *d)
{
    int  rc;

    rc = toll_ledger_recent_usage_days(d->ledger,
                                       TOLL_SETTLE_CAPS_RECOVER_TXS,
                                       toll_settle_caps_noted, d);
    if (rc != TOLL_LEDGER_OK) {
        fprintf(stderr, "toll-settle: ledger: %s\n",
                toll_ledger_errmsg(d->ledger));
        return (rc == TOLL_LEDGER_BUSY) ? EX_TEMPFAIL : EX_SOFTWARE;
    }

    return 0;
}


static void
toll_settle_caps_noted(void *ctx, const char *buyer, const char *day)
{
    toll_settle_caps_note(ctx, buyer, day);
}


void
toll_settle_caps_free(toll_settle_drain_t *d)
{
    size_t  i;

    for (i = 0; i < d->cap_nnotes; i++) {
        free(d->cap_notes[i]);
    }

    free(d->cap_notes);

    d->cap_notes = NULL;
    d->cap_nnotes = 0;
    d->cap_cap = 0;
}


static int
toll_settle_caps_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}


/* *on = 1 when some cap was ever set: a generation other than 0 */
static int
toll_settle_caps_gen(toll_settle_drain_t *d, int *on)
{
    redisReply  *r;
    const char  *argv[2];
    size_t       argvlen[2];

    argv[0] = "GET";
    argvlen[0] = 3;
    argv[1] = TOLL_NAME_CAP_GEN;
    argvlen[1] = toll_name_len(TOLL_NAME_CAP_GEN);

    r = toll_settle_cmd(d, 2, argv, argvlen);

    if (r == NULL
        || (r->type != REDIS_REPLY_NIL && r->type != REDIS_REPLY_STRING))
    {
        d->redis_errors++;
        return toll_settle_redis_failed(d, "GET of the caps' generation", r);
    }

    *on = (r->type == REDIS_REPLY_STRING && strcmp(r->str, "0") != 0);
    freeReplyObject(r);

    return 0;
}


/* one buyer's caps for the day's periods */
static int
toll_settle_caps_buyer(toll_settle_drain_t *d, const char *day,
    const char *buyer)
{
    int                    rc;
    char                   key[TOLL_SETTLE_CAPS_NAME_MAX], dday[9], *end;
    size_t                 i, n;
    int64_t                anchor;
    redisReply            *r, *periods[2];
    const char            *argv[2];
    size_t                 argvlen[2];
    toll_settle_cap_t      caps[TOLL_SETTLE_CAPS_MAX];
    toll_settle_periods_t  p;

    end = toll_name_cap(key, buyer, strlen(buyer), "");
    *end = '\0';

    argv[0] = "HGETALL";
    argvlen[0] = 7;
    argv[1] = key;
    argvlen[1] = (size_t) (end - key);

    r = toll_settle_cmd(d, 2, argv, argvlen);

    if (r != NULL && r->type == REDIS_REPLY_ERROR
        && strncmp(r->str, "WRONGTYPE", 9) == 0)
    {
        /* not caps: the gate refuses this buyer's calls, and says so */
        freeReplyObject(r);
        return 0;
    }

    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        d->redis_errors++;
        return toll_settle_redis_failed(d, "HGETALL of a buyer's caps", r);
    }

    n = toll_settle_caps_read(r, caps, &anchor);
    freeReplyObject(r);

    memcpy(dday, day, TOLL_NAME_DAY_LEN);
    dday[TOLL_NAME_DAY_LEN] = '\0';

    if (n == 0 || toll_settle_caps_periods(dday, anchor, &p) != 0) {
        return 0;
    }

    rc = toll_settle_caps_hashes(d, buyer, &p, periods);
    if (rc != 0) {
        return rc;
    }

    for (i = 0; i < n && rc == 0; i++) {
        rc = toll_settle_caps_check(d, buyer, &caps[i], &p,
                                    periods[caps[i].monthly]);
    }

    freeReplyObject(periods[0]);
    freeReplyObject(periods[1]);

    return rc;
}


/* the caps of an HGETALL answer into caps, the anchor; how many */
static size_t
toll_settle_caps_read(const redisReply *r, toll_settle_cap_t *caps,
    int64_t *anchor)
{
    size_t             i, n;
    const redisReply  *f, *v;

    n = 0;
    *anchor = 1;

    for (i = 0; i + 1 < r->elements; i += 2) {
        f = r->element[i];
        v = r->element[i + 1];

        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            continue;
        }

        if (strcmp(f->str, TOLL_CAP_ANCHOR) == 0) {
            /* as lua/cap.lua: a bad anchor is the 1st */
            if (toll_parse_int64(v->str, 1, TOLL_CAP_ANCHOR_MAX, anchor)
                != 0)
            {
                *anchor = 1;
            }

            continue;
        }

        if (n < TOLL_SETTLE_CAPS_MAX
            && toll_settle_caps_field(f->str, f->len, v->str, &caps[n]) == 0)
        {
            n++;
        }
    }

    return n;
}


/*
 * "<CUR>:daily", "<CUR>:monthly", "key:<key_id>:<CUR>:daily" or
 * ":monthly" with an int64 into cap; -1 for any other field.
 */
static int
toll_settle_caps_field(const char *field, size_t len, const char *value,
    toll_settle_cap_t *cap)
{
    size_t       klen, plen;
    const char  *period, *cur;

    period = field + len;

    while (period > field && period[-1] != ':') {
        period--;
    }

    if (period == field) {
        return -1;
    }

    plen = (size_t) (field + len - period);

    if (plen == toll_name_len(TOLL_CAP_DAILY)
        && memcmp(period, TOLL_CAP_DAILY, plen) == 0)
    {
        cap->monthly = 0;

    } else if (plen == toll_name_len(TOLL_CAP_MONTHLY)
               && memcmp(period, TOLL_CAP_MONTHLY, plen) == 0)
    {
        cap->monthly = 1;

    } else {
        return -1;
    }

    /* the currency: before the period, after the last ':' if any */

    cur = period - 1;
    while (cur > field && cur[-1] != ':') {
        cur--;
    }

    if (!toll_money_currency_valid(cur, (size_t) (period - 1 - cur))) {
        return -1;
    }

    memcpy(cap->currency, cur, (size_t) (period - 1 - cur));
    cap->currency[period - 1 - cur] = '\0';
    cap->key_id[0] = '\0';

    if (cur > field) {
        klen = toll_name_len(TOLL_CAP_KEY);

        if ((size_t) (cur - field) < klen + 2
            || memcmp(field, TOLL_CAP_KEY, klen) != 0
            || !toll_key_id_valid((const unsigned char *) field + klen,
                                  (size_t) (cur - 1 - field) - klen))
        {
            return -1;
        }

        memcpy(cap->key_id, field + klen, (size_t) (cur - 1 - field) - klen);
        cap->key_id[cur - 1 - field - klen] = '\0';
    }

    return toll_parse_int64(value, 0, INT64_MAX, &cap->cap_micros);
}


/*
 * The day's period and the month's as lua/cap.lua makes them: the month
 * starts on the anchor day, the one before day's if day is earlier in
 * its month.  Ends are the next period's first day.
 */
static int
toll_settle_caps_periods(const char *day, int64_t anchor,
    toll_settle_periods_t *p)
{
    int        y, m, dd;
    time_t     t;
    struct tm  tm;

    if (sscanf(day, "%4d%2d%2d", &y, &m, &dd) != 3 || m < 1 || m > 12
        || dd < 1 || dd > 31)
    {
        return -1;
    }

    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = m - 1;
    tm.tm_mday = dd + 1;

    t = timegm(&tm);
    if (t == (time_t) -1 || gmtime_r(&t, &tm) == NULL) {
        return -1;
    }

    memcpy(p->start[TOLL_SETTLE_CAPS_DAY], day, TOLL_NAME_DAY_LEN + 1);
    toll_settle_caps_day(p->end[TOLL_SETTLE_CAPS_DAY], tm.tm_year + 1900,
                         tm.tm_mon + 1, tm.tm_mday);

    if (dd < anchor) {
        if (--m == 0) {
            m = 12;
            y--;
        }
    }

    toll_settle_caps_day(p->start[TOLL_SETTLE_CAPS_MONTH], y, m,
                         (int) anchor);

    if (++m == 13) {
        m = 1;
        y++;
    }

    toll_settle_caps_day(p->end[TOLL_SETTLE_CAPS_MONTH], y, m,
                         (int) anchor);

    return 0;
}


/* YYYYMMDD and a NUL, as the number y * 10000 + m * 100 + d in 8 digits */
static void
toll_settle_caps_day(char *buf, int y, int m, int d)
{
    int       i;
    unsigned  v;

    v = (unsigned) (y % 10000) * 10000 + (unsigned) (m % 100) * 100
        + (unsigned) (d % 100);

    for (i = TOLL_NAME_DAY_LEN - 1; i >= 0; i--) {
        buf[i] = (char) ('0' + v % 10);
        v /= 10;
    }

    buf[TOLL_NAME_DAY_LEN] = '\0';
}


/* HGETALL of the day's hash and the month's, pipelined, into r[0], r[1] */
static int
toll_settle_caps_hashes(toll_settle_drain_t *d, const char *buyer,
    const toll_settle_periods_t *p, redisReply **r)
{
    int          i, j;
    char         key[2][TOLL_SETTLE_CAPS_NAME_MAX], sfx[16], *end;
    const char  *argv[2];
    size_t       argvlen[2];

    static const char  *prefix[2] = { TOLL_NAME_CAP_DAY,
                                      TOLL_NAME_CAP_MONTH };

    r[0] = NULL;
    r[1] = NULL;

    for (i = 0; i < 2; i++) {
        snprintf(sfx, sizeof(sfx), "%s%s", prefix[i], p->start[i]);
        end = toll_name_cap(key[i], buyer, strlen(buyer), sfx);

        argv[0] = "HGETALL";
        argvlen[0] = 7;
        argv[1] = key[i];
        argvlen[1] = (size_t) (end - key[i]);

        if (d->redis == NULL
            || toll_store_append(d->redis, 2, argv, argvlen) != 0)
        {
            d->redis_errors++;
            return toll_settle_redis_failed(d, "HGETALL of a cap's period",
                                            NULL);
        }
    }

    for (i = 0; i < 2; i++) {
        if (toll_store_get_reply(d->redis, &r[i]) != 0
            || r[i]->type != REDIS_REPLY_ARRAY)
        {
            for (j = 0; j < i; j++) {
                freeReplyObject(r[j]);
            }

            d->redis_errors++;
            return toll_settle_redis_failed(d, "HGETALL of a cap's period",
                                            r[i]);
        }
    }

    return 0;
}


/* one cap: each threshold it reached sent once */
static int
toll_settle_caps_check(toll_settle_drain_t *d, const char *buyer,
    const toll_settle_cap_t *cap, const toll_settle_periods_t *p,
    const redisReply *period)
{
    int                      rc, sent, level, t;
    char                     used_f[TOLL_SETTLE_CAPS_FIELD_MAX];
    char                     full_f[TOLL_SETTLE_CAPS_FIELD_MAX];
    char                     text[TOLL_NAME_TEXT_MAX];
    int64_t                  used;
    const char              *v;
    toll_ledger_cap_alert_t  a;

    static const int  thresholds[] = { 50, 80, 100 };

    if (cap->key_id[0]) {
        snprintf(used_f, sizeof(used_f), "%s%s:%s:%s", TOLL_CAP_KEY,
                 cap->key_id, cap->currency, TOLL_CAP_USED);
        snprintf(full_f, sizeof(full_f), "%s%s:%s:%s", TOLL_CAP_KEY,
                 cap->key_id, cap->currency, TOLL_CAP_FULL);

    } else {
        snprintf(used_f, sizeof(used_f), "%s:%s", cap->currency,
                 TOLL_CAP_USED);
        snprintf(full_f, sizeof(full_f), "%s:%s", cap->currency,
                 TOLL_CAP_FULL);
    }

    v = toll_settle_caps_hget(period, used_f);

    if (v == NULL || toll_parse_int64(v, INT64_MIN, INT64_MAX, &used) != 0) {
        used = 0;
    }

    level = toll_settle_caps_level(cap->cap_micros, used,
                                   toll_settle_caps_hget(period, full_f)
                                   != NULL);
    if (level == 0) {
        return 0;
    }

    memset(&a, 0, sizeof(a));
    a.buyer = buyer;
    a.currency = cap->currency;
    a.key_id = cap->key_id;
    a.monthly = cap->monthly;
    a.period_start = p->start[cap->monthly];
    a.period_end = p->end[cap->monthly];
    a.cap_micros = cap->cap_micros;
    a.used_micros = used;

    /* a pass that finds 80 % from below 50 sends both, 50 first */

    for (t = 0; t < 3 && thresholds[t] <= level; t++) {
        a.threshold = thresholds[t];

        rc = toll_ledger_cap_alert(d->ledger, &a, &sent);

        if (rc == TOLL_LEDGER_INVALID) {
            /* a buyer the ledger cannot name: its usage is quarantined */
            return 0;
        }

        if (rc != TOLL_LEDGER_OK) {
            toll_log("ledger: %s", toll_ledger_errmsg(d->ledger));
            d->ledger_errors++;
            return (rc == TOLL_LEDGER_BUSY) ? TOLL_SETTLE_DRAIN_AGAIN
                                            : EX_SOFTWARE;
        }

        if (!sent) {
            continue;
        }

        toll_settle_crash_point(TOLL_SETTLE_STEP_ALERT);

        d->cap_alerts++;

        if (d->conf->verbose) {
            toll_name_text(text, buyer, strlen(buyer));
            toll_log("spend cap alert: buyer \"%s\"%s%s, %s %s %s, %d %%",
                     text, cap->key_id[0] ? ", key " : "", cap->key_id,
                     cap->currency, cap->monthly ? "monthly" : "daily",
                     a.period_start, a.threshold);
        }
    }

    return 0;
}


/*
 * The highest threshold reached, or 0: used * 100 >= cap * t, computed
 * without overflow as used >= ceil(cap * t / 100) = q * t + ceil(r * t /
 * 100) with cap = 100 q + r, which is at most cap.  A cap of 0 is
 * reached only when marked full: nothing was used of it.
 */
static int
toll_settle_caps_level(int64_t cap, int64_t used, int full)
{
    int      i;
    int64_t  need;

    static const int  thresholds[] = { 100, 80, 50 };

    if (full) {
        return 100;
    }

    if (cap <= 0 || used <= 0) {
        return 0;
    }

    for (i = 0; i < 3; i++) {
        need = (cap / 100) * thresholds[i]
               + ((cap % 100) * thresholds[i] + 99) / 100;

        if (used >= need) {
            return thresholds[i];
        }
    }

    return 0;
}


/* a field's value in an HGETALL answer, or NULL */
static const char *
toll_settle_caps_hget(const redisReply *r, const char *field)
{
    size_t  i;

    for (i = 0; i + 1 < r->elements; i += 2) {
        if (r->element[i]->type == REDIS_REPLY_STRING
            && r->element[i + 1]->type == REDIS_REPLY_STRING
            && strcmp(r->element[i]->str, field) == 0)
        {
            return r->element[i + 1]->str;
        }
    }

    return NULL;
}
