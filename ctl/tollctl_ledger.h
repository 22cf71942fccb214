/*
 * tollctl: the commands that read the ledger or write settlements into it
 * (docs/tollctl.md, "Ledger and settlements"), ctl/tollctl_ledger.c.
 */

#ifndef _TOLLCTL_LEDGER_H_INCLUDED_
#define _TOLLCTL_LEDGER_H_INCLUDED_


#include "toll_ledger.h"
#include "tollctl.h"


#define TOLLCTL_LEDGER_ENV            "TOLL_LEDGER"
#define TOLLCTL_LEDGER_DEFAULT        "/var/lib/toll/ledger.db"

int tollctl_settlement_create(tollctl_t *ctl, tollctl_opts_t *o);
int tollctl_settlement_list(tollctl_t *ctl, tollctl_opts_t *o);
int tollctl_settlement_show(tollctl_t *ctl, tollctl_opts_t *o);
int tollctl_settlement_pay(tollctl_t *ctl, tollctl_opts_t *o);
int tollctl_ledger_balance(tollctl_t *ctl, tollctl_opts_t *o);
int tollctl_ledger_entries(tollctl_t *ctl, tollctl_opts_t *o);
int tollctl_ledger_check(tollctl_t *ctl, tollctl_opts_t *o);

/* the ledger of --ledger, $TOLL_LEDGER or the default; never created */
int tollctl_ledger_open(tollctl_t *ctl, int write, toll_ledger_t **lg);
/* reports a toll_ledger_*() failure; returns its sysexits code */
int tollctl_ledger_fail(toll_ledger_t *lg, int rc, const char *hint);


#endif /* _TOLLCTL_LEDGER_H_INCLUDED_ */
