/*
 * toll-settle: balance alerts, balance.low and balance.exhausted, once
 * per threshold per period (docs/settle.md, "Balance alerts").
 */

#ifndef _TOLL_SETTLE_ALERTS_H_INCLUDED_
#define _TOLL_SETTLE_ALERTS_H_INCLUDED_


#include "toll_settle_drain.h"


/*
 * Buyers noted in one pass.  Far above what a pass moves (batch_max at
 * most 100000 usage hashes, 1000 balance journals); past it a buyer is
 * not noted, said once, and checked the next time its balance moves.
 */
#define TOLL_SETTLE_ALERTS_BUYERS_MAX      262144
/* transactions a start looks back at for the buyers a dead run moved */
#define TOLL_SETTLE_ALERTS_RECOVER_TXS     100000
/* currencies of one buyer's balance hash looked at */
#define TOLL_SETTLE_ALERTS_CURRENCIES_MAX  32


/*
 * The buyer's balance moved in this pass (its journal was posted, or a
 * usage batch a balance paid for): checked at the pass's end.  A NUL-
 * terminated buyer.  Never fails: a buyer it cannot keep is said once.
 */
void toll_settle_alerts_note(toll_settle_drain_t *d, const char *buyer);

/*
 * At a pass's end: each buyer noted, once, its balance hash read
 * (HGETALL) and each currency's balance, credits - debits - spent,
 * compared with 0 and its balance_low; an alert due is written to the
 * ledger with its event, once per (buyer, currency, kind, credits).
 * Returns 0 (the notes cleared), TOLL_SETTLE_DRAIN_AGAIN (Redis failed or
 * the ledger was busy: the notes stay for the next pass) or a sysexits
 * code for a ledger that failed otherwise.
 */
int toll_settle_alerts_pass(toll_settle_drain_t *d);

/*
 * At start: the buyers whose balance the last TOLL_SETTLE_ALERTS_
 * RECOVER_TXS transactions moved are noted, so that a run that died
 * between a pass's last delete and its alerts loses none (checking one
 * again sends nothing twice).  Returns 0, or a sysexits code.
 */
int toll_settle_alerts_recover(toll_settle_drain_t *d);

void toll_settle_alerts_free(toll_settle_drain_t *d);


#endif /* _TOLL_SETTLE_ALERTS_H_INCLUDED_ */
