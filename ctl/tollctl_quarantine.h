/*
 * tollctl quarantine list | replay: the claims toll-settle set aside.
 */

#ifndef _TOLLCTL_QUARANTINE_H_INCLUDED_
#define _TOLLCTL_QUARANTINE_H_INCLUDED_


#include "tollctl.h"


int tollctl_quarantine_list(tollctl_t *ctl, tollctl_opts_t *o);
/* the claims, or --all */
int tollctl_quarantine_replay(tollctl_t *ctl, tollctl_opts_t *o);


#endif /* _TOLLCTL_QUARANTINE_H_INCLUDED_ */
