/*
 * tollctl reconcile (docs/tollctl.md, "reconcile"): reads Redis and the
 * ledger and checks, per buyer, day and service, that what the meter
 * recorded is either still pending in Redis or posted to the ledger, to
 * the call and the micro-unit.
 *
 * This file runs the readings (again when toll-settle moved usage
 * meanwhile), reads the ledger's side, sums and reports; Redis's side is
 * read by tollctl_reconcile_redis.c.
 */

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include <jansson.h>
#include <sqlite3.h>

#include "toll_clock.h"
#include "toll_ledger.h"
#include "tollctl.h"
#include "tollctl_ledger.h"
#include "tollctl_reconcile.h"


static int tollctl_recon_read(tollctl_t *ctl, toll_ledger_t *lg,
    tollctl_recon_t *r);
static void tollctl_recon_free(tollctl_recon_t *r);
static int tollctl_recon_ledger(toll_ledger_t *lg, tollctl_recon_t *r);
static int tollctl_recon_result(tollctl_recon_t *r, json_t **out,
    int64_t *ndiff);
static json_t *tollctl_recon_json(int64_t rows, int64_t ndiff,
    int64_t unverifiable, const tollctl_sums_t *total,
    const tollctl_sums_t *lost, json_t *diffs);
static size_t tollctl_recon_sum(tollctl_recon_t *r, size_t i,
    tollctl_sums_t *s, int *in_ledger, int *overflow);
static int tollctl_sums_add(tollctl_sums_t *total, const tollctl_sums_t *s);
static int tollctl_sums_differ(const tollctl_sums_t *s);
static int tollctl_recon_row(json_t *diffs, const tollctl_part_t *first,
    const tollctl_sums_t *s);
static json_t *tollctl_metrics_json(const int64_t v[TOLLCTL_METRICS]);
static void tollctl_print_reconcile(json_t *result);
static void tollctl_print_usage_rows(json_t *result);
static int tollctl_part_cmp(const void *a, const void *b);


int
tollctl_reconcile(tollctl_t *ctl, tollctl_opts_t *o)
{
    int              rc, attempt, stable;
    size_t           i;
    json_t          *result, *bals;
    int64_t          ndiff, nbal;
    toll_ledger_t   *lg;
    tollctl_recon_t  r;

    (void) o;

    rc = tollctl_ledger_open(ctl, 0, &lg);
    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_connect(ctl);
    if (rc != EX_OK) {
        toll_ledger_close(lg);
        return rc;
    }

    result = NULL;
    stable = 1;
    ndiff = 0;
    nbal = 0;

    for (attempt = 1; attempt <= TOLLCTL_RECONCILE_ATTEMPTS_MAX; attempt++) {
        memset(&r, 0, sizeof(tollctl_recon_t));

        rc = tollctl_recon_read(ctl, lg, &r);

        if (rc == EX_OK) {
            rc = tollctl_recon_result(&r, &result, &ndiff);
        }

        if (rc == EX_OK) {
            rc = tollctl_recon_balance_result(&r, &bals, &nbal);

            if (rc == EX_OK) {
                json_object_set_new(result, "balances", bals);
                json_object_set_new(result, "ok",
                                    json_boolean(ndiff == 0 && nbal == 0));
            }
        }

        stable = (r.batches_before == r.batches_after && r.in_flight == 0
                  && r.nopen_before == r.nopen_after);

        for (i = 0; stable && i < r.nopen_before; i++) {
            stable = (strcmp(r.open_before[i], r.open_after[i]) == 0);
        }

        tollctl_recon_free(&r);

        if (rc != EX_OK || (ndiff == 0 && nbal == 0) || stable
            || attempt == TOLLCTL_RECONCILE_ATTEMPTS_MAX)
        {
            break;
        }

        /* toll-settle moved usage while we read: read again */
        json_decref(result);
        result = NULL;
        (void) toll_clock_sleep_ms(TOLLCTL_RECONCILE_RETRY_MS, NULL);
    }

    toll_ledger_close(lg);

    if (rc != EX_OK) {
        json_decref(result);
        return rc;
    }

    json_object_set_new(result, "attempts", json_integer(attempt));

    rc = tollctl_output(ctl, result, tollctl_print_reconcile);
    json_decref(result);

    if (rc != EX_OK || (ndiff == 0 && nbal == 0)) {
        return rc;
    }

    if (!stable) {
        return tollctl_error(EX_TEMPFAIL, "%lld rows differ, but toll-settle "
                             "drained while reconcile read, %d times: run "
                             "it again when toll-settle is idle",
                             (long long) (ndiff + nbal),
                             TOLLCTL_RECONCILE_ATTEMPTS_MAX);
    }

    if (ndiff == 0) {
        return tollctl_error(EX_DATAERR, "%lld prepaid balance%s differ%s "
                             "(listed above): in Redis, credits - debits is "
                             "not available + held + spent, or the "
                             "ledger's prepaid account is not what Redis "
                             "says; check toll-settle's log for records "
                             "left in a journal, and run it again when the "
                             "gate is idle", (long long) nbal,
                             nbal == 1 ? "" : "s", nbal == 1 ? "s" : "");
    }

    return tollctl_error(EX_DATAERR, "%lld row%s of usage differ%s between "
                         "Redis and the ledger (listed above): usage was "
                         "lost or counted twice; check toll-settle's log "
                         "and settle nothing of those days until it is "
                         "explained", (long long) ndiff,
                         ndiff == 1 ? "" : "s", ndiff == 1 ? "s" : "");
}


/*
 * One reading: the open claims, the usage hashes and their mirrors (a
 * day's pair in one MULTI, so that a claim is on one side or the other),
 * the open claims again, then the ledger in one read transaction.
 */
static int
tollctl_recon_read(tollctl_t *ctl, toll_ledger_t *lg, tollctl_recon_t *r)
{
    int      rc;
    char   **days;
    size_t   ndays;
    json_t  *totals;

    rc = toll_ledger_totals(lg, &totals);
    if (rc != TOLL_LEDGER_OK) {
        return tollctl_ledger_fail(lg, rc, NULL);
    }

    r->batches_before = json_integer_value(json_object_get(totals,
                                                           "batches"));
    json_decref(totals);

    rc = tollctl_recon_open_set(ctl, &r->open_before, &r->nopen_before);
    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_recon_claims(ctl, r);
    if (rc != EX_OK) {
        return rc;
    }

    days = NULL;
    ndays = 0;

    rc = tollctl_recon_scan(ctl, &days, &ndays);

    if (rc == EX_OK) {
        rc = tollctl_recon_hashes(ctl, r, days, ndays);
    }

    tollctl_strs_free(days, ndays);

    if (rc != EX_OK) {
        return rc;
    }

    /* right after the usage: a flush moves a balance's spent with it */
    rc = tollctl_recon_balances(ctl, r);
    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_recon_open_set(ctl, &r->open_after, &r->nopen_after);
    if (rc != EX_OK) {
        return rc;
    }

    return tollctl_recon_ledger(lg, r);
}


static void
tollctl_recon_free(tollctl_recon_t *r)
{
    size_t  i;

    for (i = 0; i < r->nparts; i++) {
        free(r->parts[i].buyer);
        free(r->parts[i].service);
    }

    free(r->parts);
    tollctl_recon_balance_free(r);
    tollctl_strs_free(r->open_before, r->nopen_before);
    tollctl_strs_free(r->open_after, r->nopen_after);
    tollctl_strs_free(r->intents, r->nintents);
}


/*
 * The ledger in one read transaction: its batch count (changed since the
 * start: toll-settle posted meanwhile), which announced claims it holds,
 * and its usage per buyer, day and service.
 */
static int
tollctl_recon_ledger(toll_ledger_t *lg, tollctl_recon_t *r)
{
    int              rc, found;
    size_t           i;
    json_t          *totals, *rows, *row;
    sqlite3         *db;
    const char      *buyer, *day, *service;
    tollctl_part_t  *p;

    db = toll_ledger_db(lg);

    if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        return tollctl_error(EX_IOERR, "ledger: cannot begin a read: %s",
                             sqlite3_errmsg(db));
    }

    rows = NULL;

    rc = toll_ledger_totals(lg, &totals);
    if (rc != TOLL_LEDGER_OK) {
        goto failed;
    }

    r->batches_after = json_integer_value(json_object_get(totals, "batches"));
    json_decref(totals);

    for (i = 0; i < r->nparts; i++) {
        p = &r->parts[i];

        if (p->src != TOLLCTL_SRC_CLAIM) {
            continue;
        }

        rc = toll_ledger_has_batch(lg, p->batch, &found);
        if (rc != TOLL_LEDGER_OK) {
            goto failed;
        }

        /* posted, its delete not yet done: it counts as the ledger's */
        if (found) {
            p->src = TOLLCTL_SRC_NONE;
        }
    }

    for (i = 0; i < r->nintents; i++) {
        rc = toll_ledger_has_batch(lg, r->intents[i], &found);
        if (rc != TOLL_LEDGER_OK) {
            goto failed;
        }

        /* announced, neither in Redis nor posted: a claim in flight */
        if (!found) {
            r->in_flight++;
        }
    }

    rc = toll_ledger_usage_totals(lg, &rows);
    if (rc != TOLL_LEDGER_OK) {
        goto failed;
    }

    rc = tollctl_recon_balance_ledger(lg, r);
    if (rc != TOLL_LEDGER_OK) {
        json_decref(rows);
        goto failed;
    }

    (void) sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);

    rc = EX_OK;

    json_array_foreach(rows, i, row) {
        buyer = json_string_value(json_object_get(row, "buyer"));
        day = json_string_value(json_object_get(row, "day"));
        service = json_string_value(json_object_get(row, "service"));

        if (buyer == NULL || day == NULL || service == NULL
            || strlen(day) != TOLL_NAME_DAY_LEN)
        {
            continue;
        }

        rc = tollctl_recon_add(r, buyer, day, service, strlen(service),
                               TOLLCTL_SRC_LEDGER, NULL, &p);
        if (rc != EX_OK) {
            break;
        }

        p->v[0] = json_integer_value(json_object_get(row, "calls"));
        p->v[1] = json_integer_value(json_object_get(row, "free_calls"));
        p->v[2] = json_integer_value(json_object_get(row, "paid_calls"));
        p->v[3] = json_integer_value(json_object_get(row, "amount_micros"));
    }

    json_decref(rows);

    return rc;

failed:

    (void) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);

    return tollctl_ledger_fail(lg, rc, NULL);
}


int
tollctl_recon_add(tollctl_recon_t *r, const char *buyer, const char *day,
    const char *service, size_t service_len, tollctl_src_e src,
    const char *batch, tollctl_part_t **out)
{
    size_t           cap;
    tollctl_part_t  *grown, *p;

    if (r->nparts == r->cap) {
        if (r->cap >= TOLLCTL_RECONCILE_PARTS_MAX) {
            return tollctl_error(EX_SOFTWARE, "more than %d usage records: "
                                 "too many to reconcile at once",
                                 TOLLCTL_RECONCILE_PARTS_MAX);
        }

        cap = r->cap ? 2 * r->cap : TOLLCTL_RECONCILE_BATCH_MAX;

        grown = realloc(r->parts, cap * sizeof(tollctl_part_t));
        if (grown == NULL) {
            return tollctl_error(EX_OSERR, "out of memory");
        }

        r->parts = grown;
        r->cap = cap;
    }

    p = &r->parts[r->nparts];
    memset(p, 0, sizeof(tollctl_part_t));

    p->buyer = strdup(buyer);
    p->service = strndup(service, service_len);

    if (p->buyer == NULL || p->service == NULL) {
        free(p->buyer);
        free(p->service);
        return tollctl_error(EX_OSERR, "out of memory");
    }

    snprintf(p->day, sizeof(p->day), "%s", day);

    if (batch != NULL) {
        snprintf(p->batch, sizeof(p->batch), "%s", batch);
    }

    p->src = src;
    r->nparts++;
    *out = p;

    return EX_OK;
}


/*
 * Per (buyer, day, service): recorded = usage hash + mirror, pending =
 * usage hash + claims not posted, ledger = posted; recorded - pending -
 * ledger must be 0.  A row the ledger holds for a day whose mirror has
 * expired cannot be checked.
 */
static int
tollctl_recon_result(tollctl_recon_t *r, json_t **out, int64_t *ndiff)
{
    int              m, mirror, in_ledger, rc;
    size_t           i, j, day_start;
    int64_t          rows, unverifiable;
    json_t          *diffs, *result;
    tollctl_sums_t   s, total, lost;
    tollctl_part_t  *p;

    *out = NULL;
    *ndiff = 0;

    if (r->nparts > 0) {
        qsort(r->parts, r->nparts, sizeof(tollctl_part_t), tollctl_part_cmp);
    }

    diffs = json_array();
    if (diffs == NULL) {
        return tollctl_error(EX_OSERR, "out of memory");
    }

    memset(&total, 0, sizeof(tollctl_sums_t));
    memset(&lost, 0, sizeof(tollctl_sums_t));
    rows = 0;
    unverifiable = 0;
    mirror = 0;
    day_start = 0;

    for (i = 0; i < r->nparts; i = j) {
        p = &r->parts[i];

        /* a new (buyer, day): its mirror, if any, sorts first */
        if (i == 0 || strcmp(p->buyer, r->parts[day_start].buyer) != 0
            || strcmp(p->day, r->parts[day_start].day) != 0)
        {
            day_start = i;
            mirror = (p->src == TOLLCTL_SRC_MIRROR_DAY);
        }

        j = tollctl_recon_sum(r, i, &s, &in_ledger, &rc);

        if (p->service[0] == '\0') {
            continue;                   /* the mirror's marker */
        }

        if (!mirror && in_ledger) {
            unverifiable++;

            for (m = 0; m < TOLLCTL_METRICS; m++) {
                rc |= __builtin_add_overflow(lost.ledger[m], s.ledger[m],
                                             &lost.ledger[m]);
            }

            if (rc) {
                goto overflow;
            }

            continue;
        }

        rows++;

        rc |= tollctl_sums_add(&total, &s);

        if (rc) {
            goto overflow;
        }

        if (!tollctl_sums_differ(&s)) {
            continue;
        }

        if (++*ndiff <= TOLLCTL_RECONCILE_SHOWN_MAX
            && tollctl_recon_row(diffs, p, &s) != 0)
        {
            json_decref(diffs);
            return tollctl_error(EX_OSERR, "out of memory");
        }
    }

    result = tollctl_recon_json(rows, *ndiff, unverifiable, &total, &lost,
                                diffs);
    if (result == NULL) {
        return tollctl_error(EX_OSERR, "out of memory");
    }

    *out = result;

    return EX_OK;

overflow:

    json_decref(diffs);

    return tollctl_error(EX_DATAERR, "a usage sum overflows 64 bits: a "
                         "count in Redis or the ledger is corrupt");
}


/* what reconcile --json prints; it takes diffs */
static json_t *
tollctl_recon_json(int64_t rows, int64_t ndiff, int64_t unverifiable,
    const tollctl_sums_t *total, const tollctl_sums_t *lost, json_t *diffs)
{
    return json_pack("{s:b, s:I, s:I, s:I, s:o, s:o, s:o, s:o, s:o}",
                     "ok", ndiff == 0,
                     "rows", (json_int_t) rows,
                     "differences", (json_int_t) ndiff,
                     "unverifiable", (json_int_t) unverifiable,
                     "recorded", tollctl_metrics_json(total->recorded),
                     "pending", tollctl_metrics_json(total->pending),
                     "ledger", tollctl_metrics_json(total->ledger),
                     "unverifiable_ledger",
                     tollctl_metrics_json(lost->ledger),
                     "rows_differing", diffs);
}


/*
 * The sums of the parts of one (buyer, day, service), from parts[i]:
 * returns the index past them.  *overflow is set when a sum overflows.
 */
static size_t
tollctl_recon_sum(tollctl_recon_t *r, size_t i, tollctl_sums_t *s,
    int *in_ledger, int *overflow)
{
    int              m, rc;
    size_t           j;
    tollctl_part_t  *p, *q;

    p = &r->parts[i];

    memset(s, 0, sizeof(tollctl_sums_t));
    *in_ledger = 0;
    rc = 0;

    for (j = i; j < r->nparts; j++) {
        q = &r->parts[j];

        if (strcmp(q->buyer, p->buyer) != 0 || strcmp(q->day, p->day) != 0
            || strcmp(q->service, p->service) != 0)
        {
            break;
        }

        for (m = 0; m < TOLLCTL_METRICS; m++) {
            switch (q->src) {

            case TOLLCTL_SRC_LIVE:
                rc |= __builtin_add_overflow(s->recorded[m], q->v[m],
                                             &s->recorded[m]);
                rc |= __builtin_add_overflow(s->pending[m], q->v[m],
                                             &s->pending[m]);
                break;

            case TOLLCTL_SRC_MIRROR:
                rc |= __builtin_add_overflow(s->recorded[m], q->v[m],
                                             &s->recorded[m]);
                break;

            case TOLLCTL_SRC_CLAIM:
                rc |= __builtin_add_overflow(s->pending[m], q->v[m],
                                             &s->pending[m]);
                break;

            case TOLLCTL_SRC_LEDGER:
                rc |= __builtin_add_overflow(s->ledger[m], q->v[m],
                                             &s->ledger[m]);
                *in_ledger = 1;
                break;

            default:
                break;
            }
        }
    }

    *overflow = rc;

    return j;
}


/* a row's sums into the totals: 1 when a total or its difference overflows */
static int
tollctl_sums_add(tollctl_sums_t *total, const tollctl_sums_t *s)
{
    int      m, rc;
    int64_t  d;

    rc = 0;

    for (m = 0; m < TOLLCTL_METRICS; m++) {
        rc |= __builtin_add_overflow(total->recorded[m], s->recorded[m],
                                     &total->recorded[m]);
        rc |= __builtin_add_overflow(total->pending[m], s->pending[m],
                                     &total->pending[m]);
        rc |= __builtin_add_overflow(total->ledger[m], s->ledger[m],
                                     &total->ledger[m]);
        rc |= __builtin_sub_overflow(s->recorded[m], s->pending[m], &d);
        rc |= __builtin_sub_overflow(d, s->ledger[m], &d);
    }

    return rc;
}


/* recorded - pending - ledger is not 0 for some metric */
static int
tollctl_sums_differ(const tollctl_sums_t *s)
{
    int  m;

    for (m = 0; m < TOLLCTL_METRICS; m++) {
        if (s->recorded[m] - s->pending[m] - s->ledger[m] != 0) {
            return 1;
        }
    }

    return 0;
}


static int
tollctl_recon_row(json_t *diffs, const tollctl_part_t *first,
    const tollctl_sums_t *s)
{
    int      m;
    int64_t  d[TOLLCTL_METRICS];
    json_t  *row;

    for (m = 0; m < TOLLCTL_METRICS; m++) {
        d[m] = s->recorded[m] - s->pending[m] - s->ledger[m];
    }

    row = json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:o}",
                    "buyer", first->buyer, "day", first->day,
                    "service", first->service,
                    "recorded", tollctl_metrics_json(s->recorded),
                    "pending", tollctl_metrics_json(s->pending),
                    "ledger", tollctl_metrics_json(s->ledger),
                    "difference", tollctl_metrics_json(d));

    if (row == NULL || json_array_append_new(diffs, row) != 0) {
        return -1;
    }

    return 0;
}


static json_t *
tollctl_metrics_json(const int64_t v[TOLLCTL_METRICS])
{
    char  amount[TOLLCTL_AMOUNT_LEN_MAX];

    tollctl_amount_text(v[3], 0, amount, sizeof(amount));

    return json_pack("{s:I, s:I, s:I, s:I, s:s}",
                     "calls", (json_int_t) v[0],
                     "free_calls", (json_int_t) v[1],
                     "paid_calls", (json_int_t) v[2],
                     "amount_micros", (json_int_t) v[3],
                     "amount", amount);
}


static void
tollctl_print_reconcile(json_t *result)
{
    size_t       k;
    json_t      *v;
    const char  *names[] = { "recorded", "pending", "ledger" };

    printf("rows: %" JSON_INTEGER_FORMAT " (buyer, day, service), %"
           JSON_INTEGER_FORMAT " unverifiable (the ledger's, older than "
           "the 35-day mirror)\n",
           json_integer_value(json_object_get(result, "rows")),
           json_integer_value(json_object_get(result, "unverifiable")));

    printf("%-10s %14s %14s %14s %22s\n", "", "CALLS", "FREE_CALLS",
           "PAID_CALLS", "AMOUNT");

    for (k = 0; k < TOLLCTL_NELTS(names); k++) {
        v = json_object_get(result, names[k]);

        printf("%-10s %14" JSON_INTEGER_FORMAT " %14" JSON_INTEGER_FORMAT
               " %14" JSON_INTEGER_FORMAT " %22s\n", names[k],
               json_integer_value(json_object_get(v, "calls")),
               json_integer_value(json_object_get(v, "free_calls")),
               json_integer_value(json_object_get(v, "paid_calls")),
               json_string_value(json_object_get(v, "amount")));
    }

    printf("differences: %" JSON_INTEGER_FORMAT "\n",
           json_integer_value(json_object_get(result, "differences")));

    tollctl_print_usage_rows(result);

    if (json_object_get(result, "balances") != NULL) {
        tollctl_print_balances(json_object_get(result, "balances"));
    }
}


static void
tollctl_print_usage_rows(json_t *result)
{
    int          m;
    char         cell[TOLLCTL_METRICS][TOLLCTL_CELL_LEN_MAX];
    size_t       i;
    json_t      *row, *v;
    json_int_t   n;

    if (json_array_size(json_object_get(result, "rows_differing")) == 0) {
        return;
    }

    printf("\n%-20s %-8s %-16s %8s %10s %10s %14s\n", "BUYER", "DAY",
           "SERVICE", "CALLS", "FREE_CALLS", "PAID_CALLS", "AMOUNT");

    json_array_foreach(json_object_get(result, "rows_differing"), i, row) {
        v = json_object_get(row, "difference");

        for (m = 0; m < TOLLCTL_METRICS - 1; m++) {
            n = json_integer_value(json_object_get(v, toll_usage_fields[m]));
            snprintf(cell[m], sizeof(cell[m]), "%s%" JSON_INTEGER_FORMAT,
                     n > 0 ? "+" : "", n);
        }

        tollctl_amount_text(json_integer_value(json_object_get(v,
                                "amount_micros")), 1, cell[m],
                            sizeof(cell[m]));

        printf("%-20s %-8s %-16s %8s %10s %10s %14s\n",
               json_string_value(json_object_get(row, "buyer")),
               json_string_value(json_object_get(row, "day")),
               json_string_value(json_object_get(row, "service")),
               cell[0], cell[1], cell[2], cell[3]);
    }
}


static int
tollctl_part_cmp(const void *a, const void *b)
{
    int                    r;
    const tollctl_part_t  *x, *y;

    x = a;
    y = b;

    r = strcmp(x->buyer, y->buyer);
    if (r != 0) {
        return r;
    }

    r = strcmp(x->day, y->day);
    if (r != 0) {
        return r;
    }

    r = strcmp(x->service, y->service);
    if (r != 0) {
        return r;
    }

    return (int) x->src - (int) y->src;
}
