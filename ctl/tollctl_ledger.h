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

/* the positional arguments a verb takes: STL_ID or ACCOUNT */
#define TOLLCTL_ARGS_MAX              1


/* the options of every verb here, as given */
typedef struct {
    const char       *provider;
    const char       *from;
    const char       *to;
    const char       *status;
    const char       *limit;
    const char       *tx;
    const char       *account;
    const char       *args[TOLLCTL_ARGS_MAX];
} tollctl_lopts_t;


/* argv[0] is the command's name: "ledger", "settlement", "reconcile" */
int tollctl_ledger_cmd(tollctl_t *ctl, int argc, char **argv);
int tollctl_settlement_cmd(tollctl_t *ctl, int argc, char **argv);
int tollctl_reconcile_cmd(tollctl_t *ctl, int argc, char **argv);

/* the ledger of --ledger, $TOLL_LEDGER or the default; never created */
int tollctl_ledger_open(tollctl_t *ctl, int write, toll_ledger_t **lg);
/* reports a toll_ledger_*() failure; returns its sysexits code */
int tollctl_ledger_fail(toll_ledger_t *lg, int rc, const char *hint);


#endif /* _TOLLCTL_LEDGER_H_INCLUDED_ */
