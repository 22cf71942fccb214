/*
 * tollctl: the commands that read the ledger or write settlements into it
 * (docs/tollctl.md, "Ledger and settlements").
 */

#ifndef _TOLLCTL_LEDGER_H_INCLUDED_
#define _TOLLCTL_LEDGER_H_INCLUDED_


#include "tollctl.h"


#define TOLLCTL_LEDGER_ENV            "TOLL_LEDGER"
#define TOLLCTL_LEDGER_DEFAULT        "/var/lib/toll/ledger.db"


/* argv[0] is the command's name: "ledger", "settlement", "reconcile" */
int tollctl_ledger_cmd(tollctl_t *ctl, int argc, char **argv);
int tollctl_settlement_cmd(tollctl_t *ctl, int argc, char **argv);
int tollctl_reconcile_cmd(tollctl_t *ctl, int argc, char **argv);


#endif /* _TOLLCTL_LEDGER_H_INCLUDED_ */
