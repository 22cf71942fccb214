/*
 * tollctl buyer set-cap | show, and the spend caps key create writes
 * (ctl/tollctl_buyer.c; docs/tollctl.md, "Spend caps").
 */

#ifndef _TOLLCTL_BUYER_H_INCLUDED_
#define _TOLLCTL_BUYER_H_INCLUDED_


#include "toll_key.h"
#include "toll_money.h"
#include "toll_names.h"
#include "tollctl.h"


/* "key:<key_id>:<CUR>:monthly", NUL included */
#define TOLLCTL_CAP_FIELD_LEN                                                 \
    (sizeof(TOLL_CAP_KEY) + TOLL_KEY_ID_LEN_MAX + 1                          \
     + TOLL_MONEY_CURRENCY_LEN_MAX + 1 + sizeof(TOLL_CAP_MONTHLY))

#define TOLLCTL_CAP_UNSET             (-2)    /* not given */
#define TOLLCTL_CAP_NONE              (-1)    /* "none": removed */


/* the caps one command sets, checked before Redis is contacted */
typedef struct {
    const char       *currency;
    int64_t           daily;         /* micro-units, or the two above */
    int64_t           monthly;
    int64_t           anchor;        /* 1..28; 0: not given */

    /* the command's strings, alive until it is sent */
    char              name[sizeof(TOLL_NAME_CAP_PREFIX) + TOLL_OWNER_LEN_MAX
                           + 1];
    char              field[2][TOLLCTL_CAP_FIELD_LEN];
    char              value[3][TOLLCTL_INT_STR_LEN];
} tollctl_caps_t;


int tollctl_buyer_set_cap(tollctl_t *ctl, tollctl_opts_t *o);
int tollctl_buyer_show(tollctl_t *ctl, tollctl_opts_t *o);
/* set-plan BUYER PLAN, and clear-plan BUYER (no PLAN) */
int tollctl_buyer_set_plan(tollctl_t *ctl, tollctl_opts_t *o);

/*
 * Checks --currency and the two cap options (daily_opt, monthly_opt:
 * their values, NULL when not given; names: for messages).  EX_OK, or
 * EX_DATAERR after one line.
 */
int tollctl_caps_check(tollctl_caps_t *c, const char *currency,
    const char *daily_opt, const char *monthly_opt, const char *daily_name,
    const char *monthly_name);

/*
 * Writes the caps of buyer (key_id NULL) or of one of its keys, then
 * bumps the generation: EX_OK, or EX_UNAVAILABLE after one line.
 */
int tollctl_caps_write(tollctl_t *ctl, tollctl_caps_t *c, const char *buyer,
    const char *key_id);


#endif /* _TOLLCTL_BUYER_H_INCLUDED_ */
