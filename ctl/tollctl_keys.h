/*
 * tollctl key create | revoke | show | list (ctl/tollctl_keys.c).
 */

#ifndef _TOLLCTL_KEYS_H_INCLUDED_
#define _TOLLCTL_KEYS_H_INCLUDED_


#include "tollctl.h"


int tollctl_key_create(tollctl_t *ctl, tollctl_opts_t *o);
int tollctl_key_revoke(tollctl_t *ctl, tollctl_opts_t *o);
int tollctl_key_show(tollctl_t *ctl, tollctl_opts_t *o);
int tollctl_key_list(tollctl_t *ctl, tollctl_opts_t *o);


#endif /* _TOLLCTL_KEYS_H_INCLUDED_ */
