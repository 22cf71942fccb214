/*
 * tollctl balance credit | debit | refund | show: a buyer's prepaid
 * balances in Redis.  What the two files share.
 */

#ifndef _TOLLCTL_BALANCE_H_INCLUDED_
#define _TOLLCTL_BALANCE_H_INCLUDED_


#include "toll_key.h"
#include "toll_names.h"
#include "tollctl.h"


/* "toll:balance:{<buyer>}:journal", the longest of a buyer's names */
#define TOLLCTL_BALANCE_NAME_LEN                                              \
    (toll_name_len(TOLL_NAME_BALANCE_PREFIX) + TOLL_OWNER_LEN_MAX            \
     + toll_name_len(TOLL_NAME_TAG_END)                                     \
     + toll_name_len(TOLL_NAME_BALANCE_JOURNAL))

_Static_assert(sizeof(TOLL_NAME_BALANCE_REFS)
               <= sizeof(TOLL_NAME_BALANCE_JOURNAL),
               "the journal's name is the longest of a buyer's");


/* BUYER AMOUNT [--currency CUR] --ref REF */
int tollctl_balance_credit(tollctl_t *ctl, tollctl_opts_t *o);
int tollctl_balance_debit(tollctl_t *ctl, tollctl_opts_t *o);
int tollctl_balance_refund(tollctl_t *ctl, tollctl_opts_t *o);
/* BUYER [--currency CUR] (tollctl_balance_show.c) */
int tollctl_balance_show(tollctl_t *ctl, tollctl_opts_t *o);

/* EX_OK, or EX_DATAERR after saying what is wrong with the value */
int tollctl_balance_buyer_check(const char *buyer);
int tollctl_balance_currency_check(const char *cur);


#endif /* _TOLLCTL_BALANCE_H_INCLUDED_ */
