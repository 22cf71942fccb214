/*
 * tollctl: a key's record as JSON and as text (ctl/tollctl_key_record.c).
 */

#ifndef _TOLLCTL_KEY_RECORD_H_INCLUDED_
#define _TOLLCTL_KEY_RECORD_H_INCLUDED_


#include "tollctl.h"


/* a field tollctl adds to a record it shows; not stored */
#define TOLLCTL_FIELD_KEY_ID          "key_id"


/*
 * The KEY_ID argument of revoke, show and update: checked, its record's
 * name into name (TOLL_REDIS_KEY_NAME_MAX + 1); connects when it is fine.
 */
int tollctl_key_id_arg(tollctl_t *ctl, tollctl_opts_t *o, const char **key_id,
    char *name);
/* the record printed as "key show" prints it */
int tollctl_record_show(tollctl_t *ctl, const char *key_id, const char *name);
/* HGETALL of name as JSON; EX_NOINPUT when there is no such key */
int tollctl_record_get(tollctl_t *ctl, const char *key_id, const char *name,
    json_t **record);
/* HGETALL's reply is field, value... strings; EX_OK or reported */
int tollctl_record_check(tollctl_t *ctl, const redisReply *hash);
/* what "key show --json" prints; NULL when a value is not UTF-8 */
json_t *tollctl_record_json(const char *key_id, size_t key_id_len,
    const redisReply *hash, time_t now);
void tollctl_print_record(json_t *record);
void tollctl_key_print_table(json_t *records);


#endif /* _TOLLCTL_KEY_RECORD_H_INCLUDED_ */
