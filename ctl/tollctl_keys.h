/*
 * tollctl key create | revoke | show | list (ctl/tollctl_keys.c).
 */

#ifndef _TOLLCTL_KEYS_H_INCLUDED_
#define _TOLLCTL_KEYS_H_INCLUDED_


#include "tollctl.h"


/* argv[0] is the verb */
int tollctl_key_create(tollctl_t *ctl, int argc, char **argv);
int tollctl_key_revoke(tollctl_t *ctl, int argc, char **argv);
int tollctl_key_show(tollctl_t *ctl, int argc, char **argv);
int tollctl_key_list(tollctl_t *ctl, int argc, char **argv);


#endif /* _TOLLCTL_KEYS_H_INCLUDED_ */
