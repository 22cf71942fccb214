/*
 * toll-settle: the metrics page, written from the figures (private to
 * settle/toll_settle_metrics.c, which serves it).
 */

#ifndef _TOLL_SETTLE_METRICS_PAGE_H_INCLUDED_
#define _TOLL_SETTLE_METRICS_PAGE_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>

#include "toll_settle_metrics.h"
#include "toll_settle_webhook.h"


/*
 * The page in Prometheus text format 0.0.4, into buf of size bytes:
 * toll-settle's version, the drain's figures f with the lag lag_ms (from
 * the monotonic clock, now), and the webhook sender's counters hs.
 * Returns its length; *overflow is 1 when it did not fit.
 */
size_t toll_settle_metrics_page(char *buf, size_t size,
    const char *version, const toll_settle_figures_t *f,
    const toll_settle_hook_stats_t *hs, int64_t lag_ms, int *overflow);


#endif /* _TOLL_SETTLE_METRICS_PAGE_H_INCLUDED_ */
