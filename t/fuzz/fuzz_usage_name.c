/*
 * Fuzz the two readers of the meter's Redis names: toll-settle's
 * (settle/toll_settle_drain.c) and tollctl's
 * (ctl/tollctl_reconcile_redis.c), for usage hashes
 * "toll:usage:{<buyer>}:<YYYYMMDD>" and claims
 * "toll:drain:{<buyer>}:<YYYYMMDD>:<32 hex>", and their readers of a
 * count as Redis holds it.
 *
 * The parsers are static in files other engineers own, so this harness
 * includes both files whole rather than moving the parsers: the daemon
 * and the CLI must agree on a name, which is checked here too.  tollctl's
 * main() is renamed by the Makefile (-Dmain=tollctl_main).
 */

#include "../../settle/toll_settle_drain.c"
#include "../../ctl/tollctl_reconcile_redis.c"


static void
fuzz_usage_name(const char *name, size_t len)
{
    int    s_rc, c_rc, mirror;
    char  *s_buyer, *c_buyer;
    char   s_day[TOLL_LEDGER_DAY_LEN + 1], c_day[TOLLCTL_DAY_LEN + 1];

    /* each caller's buffer, on the heap at its exact size */
    s_buyer = malloc(TOLL_SETTLE_KEY_LEN_MAX + 1);
    c_buyer = malloc(TOLLCTL_REDIS_NAME_LEN_MAX + 1);
    assert(s_buyer != NULL && c_buyer != NULL);

    s_rc = toll_settle_usage_name(name, len, s_buyer, s_day);
    c_rc = tollctl_usage_name(name, len, c_buyer, c_day, &mirror);

    if (s_rc == 0) {
        assert(strlen(s_day) == TOLL_LEDGER_DAY_LEN);
        assert(len == sizeof(TOLL_SETTLE_USAGE_PREFIX) - 1
                      + 2 + TOLL_LEDGER_DAY_LEN + strlen(s_buyer)
               || memchr(name, '\0', len) != NULL);
    }

    /* what the daemon drains, the CLI reads the same way */
    if (s_rc == 0 && c_rc == 0) {
        assert(!mirror);
        assert(strcmp(s_buyer, c_buyer) == 0);
        assert(strcmp(s_day, c_day) == 0);
    }

    if (c_rc == 0 && !mirror) {
        assert(s_rc == 0);
    }

    free(s_buyer);
    free(c_buyer);
}


static void
fuzz_claim_name(const char *name, size_t len)
{
    int                   s_rc, c_rc;
    char                  c_day[TOLLCTL_DAY_LEN + 1];
    char                  c_batch[TOLLCTL_BATCH_ID_LEN + 1];
    char                 *c_buyer;
    toll_settle_claim_t  *c;

    c = malloc(sizeof(toll_settle_claim_t));
    c_buyer = malloc(TOLLCTL_REDIS_NAME_LEN_MAX + 1);
    assert(c != NULL && c_buyer != NULL);

    s_rc = toll_settle_claim_parse(name, len, c);
    c_rc = tollctl_claim_name(name, len, c_buyer, c_day, c_batch);

    if (s_rc == 0) {
        assert(strlen(c->id) == TOLL_LEDGER_BATCH_ID_LEN);
        assert(strlen(c->day) == TOLL_LEDGER_DAY_LEN);
    }

    if (s_rc == 0 && c_rc == 0) {
        assert(strcmp(c->buyer, c_buyer) == 0);
        assert(strcmp(c->day, c_day) == 0);
        assert(strcmp(c->id, c_batch) == 0);
    }

    if (c_rc == 0) {
        assert(s_rc == 0);
    }

    free(c);
    free(c_buyer);
}


static void
fuzz_count(const char *s, size_t len)
{
    int         s_rc, c_rc;
    int64_t     s_v, c_v;
    redisReply  v;

    memset(&v, 0, sizeof(redisReply));
    v.type = REDIS_REPLY_STRING;
    v.str = (char *) s;
    v.len = len;

    s_rc = toll_settle_count(&v, &s_v);
    c_rc = tollctl_count_parse(&v, &c_v);

    /* a count the CLI shows is the count the daemon posts */
    if (s_rc == 0 && c_rc == 0) {
        assert(s_v == c_v);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char  *copy;

    /* NUL-terminated, as hiredis hands a string over */
    copy = malloc(size + 1);
    if (copy == NULL) {
        return 0;
    }

    memcpy(copy, data, size);
    copy[size] = '\0';

    fuzz_usage_name(copy, size);
    fuzz_claim_name(copy, size);
    fuzz_count(copy, size);

    free(copy);

    return 0;
}
