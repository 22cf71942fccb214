/*
 * toll-settle: spend cap alerts, spend_cap.threshold at 50, 80 and 100 %
 * of each cap, once per threshold per cap per period (docs/settle.md,
 * "Spend cap alerts").
 */

#ifndef _TOLL_SETTLE_CAPS_H_INCLUDED_
#define _TOLL_SETTLE_CAPS_H_INCLUDED_


#include "toll_settle_drain.h"


/*
 * (buyer, day) pairs noted in one pass; past it a pair is not noted,
 * said once, and checked the next time the buyer's usage is drained.
 */
#define TOLL_SETTLE_CAPS_NOTES_MAX      262144
/* transactions a start looks back at for the days a dead run drained */
#define TOLL_SETTLE_CAPS_RECOVER_TXS    100000
/* caps of one buyer looked at (currencies x keys x 2 periods) */
#define TOLL_SETTLE_CAPS_MAX            256


/*
 * A batch of the buyer's usage of day (YYYYMMDD) was drained: its caps
 * are checked at the pass's end.  Never fails: a pair it cannot keep is
 * said once.
 */
void toll_settle_caps_note(toll_settle_drain_t *d, const char *buyer,
    const char *day);

/*
 * At a pass's end, if any cap was ever set (toll:cap:gen not 0): each
 * pair noted, once, its buyer's caps read (HGETALL) and, if it has any,
 * the day's and the month's hashes (pipelined); each cap's used (or its
 * full mark) compared with 50, 80 and 100 % of it, an alert due written
 * to the ledger with its event once per (cap, period, threshold).
 * Returns 0 (the notes cleared), TOLL_SETTLE_DRAIN_AGAIN (Redis failed or
 * the ledger was busy: the notes stay) or a sysexits code.
 */
int toll_settle_caps_pass(toll_settle_drain_t *d);

/*
 * At start: the (buyer, day) of the last TOLL_SETTLE_CAPS_RECOVER_TXS
 * usage transactions are noted, so that a run that died before its cap
 * alerts loses none.  Returns 0, or a sysexits code.
 */
int toll_settle_caps_recover(toll_settle_drain_t *d);

void toll_settle_caps_free(toll_settle_drain_t *d);


#endif /* _TOLL_SETTLE_CAPS_H_INCLUDED_ */
