/*
 * tollctl key import (ctl/tollctl_key_import.c).
 */

#ifndef _TOLLCTL_KEY_IMPORT_H_INCLUDED_
#define _TOLLCTL_KEY_IMPORT_H_INCLUDED_


#include "tollctl.h"


int tollctl_key_import(tollctl_t *ctl, tollctl_opts_t *o);


#endif /* _TOLLCTL_KEY_IMPORT_H_INCLUDED_ */
