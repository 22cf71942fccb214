/*
 * tollctl quarantine list | replay: the claims toll-settle set aside.
 */

#ifndef _TOLLCTL_QUARANTINE_H_INCLUDED_
#define _TOLLCTL_QUARANTINE_H_INCLUDED_


#include "tollctl.h"


/* argv[0] is "quarantine" */
int tollctl_quarantine_cmd(tollctl_t *ctl, int argc, char **argv);


#endif /* _TOLLCTL_QUARANTINE_H_INCLUDED_ */
