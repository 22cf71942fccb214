/*
 * tollctl key update KEY_ID [--scopes a,b] [--role R] [--plan P]: what a
 * key may do and which plan it is on, changed in place; and the --scopes
 * list that key create shares.
 *
 * The module caches key records for toll_cache_ttl (30 s by default): a
 * change is seen by every nginx within that time, not at once.
 */

#include <stdio.h>
#include <string.h>
#include <sysexits.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "toll_key.h"
#include "toll_key_record.h"
#include "toll_names.h"
#include "tollctl.h"
#include "tollctl_keys.h"
#include "tollctl_key_record.h"


/* a record changed under the update is read again this many times */
#define TOLLCTL_UPDATE_ATTEMPTS_MAX   3
#define TOLLCTL_AGAIN                 (-2)


typedef struct {
    const char       *scopes_opt;    /* NULL: unchanged; "": none */
    const char       *role_opt;      /* NULL: unchanged */
    const char       *plan_opt;      /* NULL: unchanged; "": none */
    char              scopes[TOLL_SCOPES_LEN_MAX + 1];
} tollctl_update_t;


static int tollctl_update_once(tollctl_t *ctl, const char *key_id,
    const char *name, const tollctl_update_t *req);


int
tollctl_scopes_parse(const char *opt, char *out, size_t size)
{
    size_t  len;
    char   *p;

    /* "a,b" as the operator types it, "a b" as the record holds it */

    len = strlen(opt);

    /* a space would pass as a separator the operator did not type */

    if (len >= size || len > TOLL_SCOPES_LEN_MAX || strchr(opt, ' ')) {
        goto invalid;
    }

    memcpy(out, opt, len + 1);

    for (p = out; *p; p++) {
        if (*p == ',') {
            *p = ' ';
        }
    }

    if (toll_scopes_valid(out, len, TOLL_SCOPES_MAX, TOLL_SCOPES_LEN_MAX)) {
        return EX_OK;
    }

invalid:

    return tollctl_error(EX_DATAERR,
                         "invalid --scopes \"%s\": use up to %d names "
                         "separated by commas, each 1 to %d of A-Z a-z 0-9 "
                         "and - . _ : / + @ ~ *", opt, TOLL_SCOPES_MAX,
                         TOLL_SCOPE_LEN_MAX);
}


int
tollctl_key_update(tollctl_t *ctl, tollctl_opts_t *o)
{
    int               rc, attempt;
    char              name[TOLL_REDIS_KEY_NAME_MAX + 1];
    const char       *key_id;
    tollctl_update_t  req;

    memset(&req, 0, sizeof(tollctl_update_t));

    req.scopes_opt = o->opt[TOLLCTL_OPT_SCOPES];
    req.role_opt = o->opt[TOLLCTL_OPT_ROLE];
    req.plan_opt = o->opt[TOLLCTL_OPT_PLAN];

    if (req.scopes_opt == NULL && req.role_opt == NULL
        && req.plan_opt == NULL)
    {
        return tollctl_usage_error("\"key update\" needs --scopes, --role "
                                   "or --plan");
    }

    /* every value checked before Redis is asked: all change, or none */

    if (req.scopes_opt
        && tollctl_scopes_parse(req.scopes_opt, req.scopes,
                                sizeof(req.scopes))
           != EX_OK)
    {
        return EX_DATAERR;
    }

    if (req.role_opt
        && toll_role_parse(req.role_opt, strlen(req.role_opt)) < 0)
    {
        return tollctl_error(EX_DATAERR, "invalid --role \"%s\": use buyer, "
                             "provider or admin", req.role_opt);
    }

    if (req.plan_opt && req.plan_opt[0] != '\0'
        && !toll_plan_valid((const unsigned char *) req.plan_opt,
                            strlen(req.plan_opt)))
    {
        return tollctl_error(EX_DATAERR, "invalid --plan \"%s\": use 1 to %d "
                             "of A-Z a-z 0-9 _ . -, or \"\" for none",
                             req.plan_opt, TOLL_PLAN_LEN_MAX);
    }

    rc = tollctl_key_id_arg(ctl, o, &key_id, name);
    if (rc != EX_OK) {
        return rc;
    }

    for (attempt = 0; attempt < TOLLCTL_UPDATE_ATTEMPTS_MAX; attempt++) {
        rc = tollctl_update_once(ctl, key_id, name, &req);
        if (rc != TOLLCTL_AGAIN) {
            break;
        }
    }

    if (rc == TOLLCTL_AGAIN) {
        return tollctl_error(EX_TEMPFAIL, "key %s kept changing while "
                             "being updated; run the command again", key_id);
    }

    if (rc != EX_OK) {
        return rc;
    }

    return tollctl_record_show(ctl, key_id, name);
}


/*
 * One transaction: the WATCH keeps a record deleted meanwhile from coming
 * back as a stub of the fields set here.
 */
static int
tollctl_update_once(tollctl_t *ctl, const char *key_id, const char *name,
    const tollctl_update_t *req)
{
    int             exists, changed;
    size_t          n;
    redisReply     *reply;
    tollctl_cmd_t   cmds[2];

    exists = tollctl_redis_watch(ctl, name, NULL);

    if (exists == -1) {
        return EX_UNAVAILABLE;
    }

    if (!exists) {
        if (tollctl_redis_unwatch(ctl) != 0) {
            return EX_UNAVAILABLE;
        }

        return tollctl_error(EX_NOINPUT, "no key %s; \"tollctl key list\" "
                             "shows the keys", key_id);
    }

    tollctl_cmd_init(&cmds[0], "HSET");
    tollctl_cmd_add_str(&cmds[0], name);
    tollctl_cmd_init(&cmds[1], "HDEL");
    tollctl_cmd_add_str(&cmds[1], name);

    if (req->role_opt) {
        tollctl_cmd_add_str(&cmds[0], TOLL_FIELD_ROLE);
        tollctl_cmd_add_str(&cmds[0], req->role_opt);
    }

    /* an empty list or plan is none: the field goes */

    if (req->scopes_opt) {
        tollctl_cmd_add_str(req->scopes[0] ? &cmds[0] : &cmds[1],
                            TOLL_FIELD_SCOPES);

        if (req->scopes[0]) {
            tollctl_cmd_add_str(&cmds[0], req->scopes);
        }
    }

    if (req->plan_opt) {
        tollctl_cmd_add_str(req->plan_opt[0] ? &cmds[0] : &cmds[1],
                            TOLL_FIELD_PLAN);

        if (req->plan_opt[0]) {
            tollctl_cmd_add_str(&cmds[0], req->plan_opt);
        }
    }

    /* HSET and HDEL need a field each: send only those that have one */

    n = 0;

    if (cmds[0].argc > 2) {
        n++;
    }

    if (cmds[1].argc > 2) {
        if (n == 0) {
            cmds[0] = cmds[1];
        }

        n++;
    }

    reply = tollctl_redis_exec(ctl, cmds, n);
    if (reply == NULL) {
        return EX_UNAVAILABLE;
    }

    changed = (reply->type != REDIS_REPLY_NIL);
    freeReplyObject(reply);

    return changed ? EX_OK : TOLLCTL_AGAIN;
}
