/*
 * tollctl balance credit | debit | refund | show: a buyer's prepaid
 * balances in Redis.
 */

#ifndef _TOLLCTL_BALANCE_H_INCLUDED_
#define _TOLLCTL_BALANCE_H_INCLUDED_


#include "tollctl.h"


/* BUYER AMOUNT [--currency CUR] --ref REF */
int tollctl_balance_credit(tollctl_t *ctl, tollctl_opts_t *o);
int tollctl_balance_debit(tollctl_t *ctl, tollctl_opts_t *o);
int tollctl_balance_refund(tollctl_t *ctl, tollctl_opts_t *o);
/* BUYER [--currency CUR] */
int tollctl_balance_show(tollctl_t *ctl, tollctl_opts_t *o);


#endif /* _TOLLCTL_BALANCE_H_INCLUDED_ */
