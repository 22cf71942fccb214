/*
 * Fuzz toll-settle's reading of a claim (settle/toll_settle_post.c,
 * toll_settle_post()): the HGETALL reply of a drained usage hash, as
 * anything with access to Redis may have written it, posted into an
 * in-memory ledger.
 *
 * Checked: nothing crashes or leaks; a claim is either posted or refused
 * (to be set aside in quarantine), never a stop (DESIGN.md: a drain
 * never stops for one bad record); what is posted leaves the ledger
 * balanced (toll_ledger_check()).
 *
 * Input: pairs of a field and a value, each a 1-byte length and bytes;
 * a field's or value's first byte 0xff makes that element an integer
 * reply instead of a string.
 */

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "toll_ledger.h"
#include "toll_settle_caps.h"
#include "toll_settle_conf.h"
#include "toll_settle_drain_int.h"


#define FUZZ_ELEMENTS_MAX  64
#define FUZZ_RUNS_PER_LEDGER  512


static toll_ledger_t       *fuzz_ledger;
static toll_settle_conf_t   fuzz_conf;
static unsigned             fuzz_runs;
static uint64_t             fuzz_batch;


static void
fuzz_open(void)
{
    char  err[256];

    if (fuzz_ledger != NULL && fuzz_runs % FUZZ_RUNS_PER_LEDGER != 0) {
        return;
    }

    /* a fresh ledger now and then: memory stays bounded */
    if (fuzz_ledger != NULL) {
        toll_ledger_close(fuzz_ledger);
    }

    if (toll_ledger_open(":memory:", TOLL_LEDGER_OPEN_CREATE, &fuzz_ledger,
                         err, sizeof(err))
        != TOLL_LEDGER_OK)
    {
        fprintf(stderr, "fuzz: %s\n", err);
        abort();
    }

    if (fuzz_runs == 0) {
        toll_settle_conf_init(&fuzz_conf);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                   rc, ok;
    size_t                n, len;
    json_t               *report;
    redisReply           *content, *e;
    redisReply           *elements[FUZZ_ELEMENTS_MAX];
    toll_settle_claim_t   c;
    toll_settle_drain_t   d;

    fuzz_open();
    fuzz_runs++;

    n = 0;

    while (size > 0 && n < FUZZ_ELEMENTS_MAX) {
        len = data[0];
        data++;
        size--;

        if (len > size) {
            len = size;
        }

        e = calloc(1, sizeof(redisReply));
        assert(e != NULL);

        if (len > 0 && data[0] == 0xff) {
            e->type = REDIS_REPLY_INTEGER;
            e->integer = (long long) len;

        } else {
            /* NUL-terminated, as hiredis gives a string */
            e->type = REDIS_REPLY_STRING;
            e->str = malloc(len + 1);
            assert(e->str != NULL);
            memcpy(e->str, data, len);
            e->str[len] = '\0';
            e->len = len;
        }

        elements[n++] = e;
        data += len;
        size -= len;
    }

    content = calloc(1, sizeof(redisReply));
    assert(content != NULL);
    content->type = REDIS_REPLY_ARRAY;
    content->elements = n;
    content->element = n ? elements : NULL;

    memset(&c, 0, sizeof(toll_settle_claim_t));
    fuzz_batch++;
    snprintf(c.id, sizeof(c.id), "%032llx", (unsigned long long) fuzz_batch);
    snprintf(c.day, sizeof(c.day), "20261202");
    snprintf(c.buyer, sizeof(c.buyer), "alice");
    snprintf(c.name, sizeof(c.name), "toll:drain:{alice}:20261202:%s", c.id);

    memset(&d, 0, sizeof(toll_settle_drain_t));
    d.conf = &fuzz_conf;
    d.ledger = fuzz_ledger;

    rc = toll_settle_post(&d, &c, content);

    /* posted (0) or refused and set aside (LEFT), never a stop */

    if (rc != 0 && rc != TOLL_SETTLE_DRAIN_LEFT) {
        fprintf(stderr, "fuzz: toll_settle_post() returned %d: %s\n", rc,
                toll_ledger_errmsg(fuzz_ledger));
        abort();
    }

    if (rc == 0 && d.batches == 1) {
        assert(toll_ledger_check(fuzz_ledger, &report) == TOLL_LEDGER_OK);
        ok = json_is_true(json_object_get(report, "ok"));
        json_decref(report);
        assert(ok);
    }

    /* what the pass would check for spend cap alerts, noted and let go */
    toll_settle_caps_free(&d);

    while (n > 0) {
        n--;
        free(elements[n]->str);
        free(elements[n]);
    }

    free(content);

    return 0;
}
