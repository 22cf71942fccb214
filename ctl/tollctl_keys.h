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

/* tollctl key update (ctl/tollctl_key_update.c) */
int tollctl_key_update(tollctl_t *ctl, tollctl_opts_t *o);
/* --scopes "a,b" into "a b" in out; EX_OK, or EX_DATAERR reported */
int tollctl_scopes_parse(const char *opt, char *out, size_t size);


#endif /* _TOLLCTL_KEYS_H_INCLUDED_ */
