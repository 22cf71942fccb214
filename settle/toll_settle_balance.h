/*
 * toll-settle: prepaid balances' journals into the ledger (docs/settle.md,
 * "Prepaid balances").
 */

#ifndef _TOLL_SETTLE_BALANCE_H_INCLUDED_
#define _TOLL_SETTLE_BALANCE_H_INCLUDED_


#include "toll_settle_drain.h"


/* buyers of toll:balance:index taken in one pass (SRANDMEMBER's count) */
#define TOLL_SETTLE_BALANCE_BUYERS_MAX   1000
/* refs of one buyer's journal posted in one ledger transaction */
#define TOLL_SETTLE_BALANCE_REFS_MAX     1000


/*
 * One pass over the buyers with a journal, after the usage drain's, on
 * its connection: each buyer's records posted in one ledger transaction,
 * then SREM'd from its journal, and the buyer out of the index once its
 * journal is empty.  Returns 0, TOLL_SETTLE_DRAIN_AGAIN (Redis failed or
 * the ledger was busy: the next pass goes on) or a sysexits code for a
 * ledger that failed otherwise.
 */
int toll_settle_balance_pass(toll_settle_drain_t *d);


#endif /* _TOLL_SETTLE_BALANCE_H_INCLUDED_ */
