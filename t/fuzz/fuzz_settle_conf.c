/*
 * Fuzz toll-settle's configuration file (settle/toll_settle_conf.c): the
 * input is the file, read from memory through the same reader the daemon
 * uses on a path.  What the reader accepts must be what the daemon can
 * run with: every value within its documented bounds.  The input is also
 * given whole to the address and duration parsers.
 */

#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "toll_parse.h"
#include "toll_settle_conf.h"


static void
fuzz_conf_check(const toll_settle_conf_t *conf)
{
    size_t  i;

    assert(conf->interval_ms >= TOLL_SETTLE_INTERVAL_MS_MIN
           && conf->interval_ms <= TOLL_SETTLE_INTERVAL_MS_MAX);
    assert(conf->batch_max >= 1
           && conf->batch_max <= TOLL_SETTLE_BATCH_MAX_MAX);
    assert(conf->sweep_ms >= TOLL_SETTLE_INTERVAL_MS_MIN);
    assert(conf->redis_timeout_ms >= 1
           && conf->redis_timeout_ms <= TOLL_SETTLE_TIMEOUT_MS_MAX);
    assert(conf->hook_timeout_ms >= 1
           && conf->hook_timeout_ms <= TOLL_SETTLE_TIMEOUT_MS_MAX);
    assert(conf->redis_spec.n >= 1
           && conf->redis_spec.n <= TOLL_CLUSTER_SEEDS_MAX);
    assert(conf->redis_spec.addr[0].port >= 0
           && conf->redis_spec.addr[0].port <= 65535);
    assert(conf->redis_db >= 0);
    assert(memchr(conf->redis_text, '\0', sizeof(conf->redis_text)) != NULL);
    assert(memchr(conf->ledger, '\0', sizeof(conf->ledger)) != NULL);
    assert(conf->fees.default_bp >= 0 && conf->fees.default_bp <= 10000);
    assert(conf->nhooks <= TOLL_SETTLE_HOOKS_MAX);
    assert(conf->fees.nproviders <= TOLL_SETTLE_PROVIDER_FEES_MAX);

    for (i = 0; i < conf->fees.nproviders; i++) {
        assert(conf->provider_fees[i].provider != NULL);
        assert(conf->provider_fees[i].fee_bp >= 0
               && conf->provider_fees[i].fee_bp <= 10000);
    }

    for (i = 0; i < conf->nhooks; i++) {
        assert(conf->hooks[i].url != NULL);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                  rc;
    char                 err[512], *text;
    FILE                *f;
    int64_t              ms;
    toll_settle_conf_t  *conf;

    conf = malloc(sizeof(toll_settle_conf_t));
    text = malloc(size + 1);
    assert(conf != NULL && text != NULL);

    memcpy(text, data, size);
    text[size] = '\0';

    toll_settle_conf_init(conf);

    f = fmemopen(text, size ? size : 1, "r");
    assert(f != NULL);

    memset(err, 0x5a, sizeof(err));
    rc = toll_settle_conf_read(conf, f, "fuzz.conf", err, sizeof(err));
    fclose(f);

    if (rc == 0) {
        fuzz_conf_check(conf);

    } else {
        assert(rc == EX_CONFIG);
        assert(memchr(err, '\0', sizeof(err)) != NULL);
    }

    toll_settle_conf_free(conf);

    /* the parsers of one value, on the input as a C string */

    toll_settle_conf_init(conf);

    if (toll_settle_conf_redis(conf, text, err, sizeof(err)) == 0) {
        assert(conf->redis_spec.n >= 1);
        assert(conf->redis_spec.addr[0].host[0] != '\0');
    }

    ms = -1;

    if (toll_parse_duration_ms(text, 0, INT64_MAX, &ms) == 0) {
        assert(ms >= 0);
    }

    toll_settle_conf_free(conf);

    free(conf);
    free(text);

    return 0;
}
