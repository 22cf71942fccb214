/*
 * tollctl key import: a one-part key another platform issued
 * ("test_sk_..."), kept working behind toll.  It is stored as every key
 * is: its SHA-256 as the secret hash, under a key id derived from it
 * (lib/toll_key.c, toll_opaque_parse), never the token itself.  The
 * module accepts it where its prefix is listed in toll_key_import_prefix.
 *
 * "--token -" reads the token from stdin: an argument is seen by ps and
 * kept by shells.  Every buffer that held the token is wiped.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "toll_key.h"
#include "toll_parse.h"
#include "tollctl.h"
#include "tollctl_key_import.h"
#include "tollctl_key_record.h"


#define TOLLCTL_IMPORT_RATE_MAX       1000000000      /* requests/minute */
#define TOLLCTL_IMPORT_EXPIRES_MAX    3162240000LL    /* 100 years */


typedef struct {
    char              token[TOLL_OPAQUE_LEN_MAX + 2];  /* + '\n', NUL */
    size_t            token_len;
    unsigned char     id[TOLL_OPAQUE_ID_LEN];
    char              key_id[TOLL_OPAQUE_ID_LEN + 1];
    char              secret_sha256[TOLL_SECRET_HASH_HEX_LEN + 1];
    char              redis_name[TOLL_REDIS_KEY_NAME_MAX + 1];
    int               role;
    int64_t           rate_limit;    /* -1: none */
    int64_t           expires_at;    /* unix seconds; 0: never */
} tollctl_import_t;


static int tollctl_import_token(tollctl_import_t *imp, const char *arg);
static int tollctl_import_check(tollctl_import_t *imp, tollctl_opts_t *o);
static int tollctl_import_store(tollctl_t *ctl, tollctl_import_t *imp,
    tollctl_opts_t *o);


int
tollctl_key_import(tollctl_t *ctl, tollctl_opts_t *o)
{
    int               rc;
    json_t           *obj;
    tollctl_import_t  imp;

    memset(&imp, 0, sizeof(imp));

    if (o->opt[TOLLCTL_OPT_TOKEN] == NULL || o->opt[TOLLCTL_OPT_OWNER] == NULL)
    {
        return tollctl_usage_error("\"key import\" needs --token and "
                                   "--owner");
    }

    rc = tollctl_import_token(&imp, o->opt[TOLLCTL_OPT_TOKEN]);

    if (rc == EX_OK) {
        rc = tollctl_import_check(&imp, o);
    }

    if (rc == EX_OK) {
        rc = tollctl_connect(ctl);
    }

    if (rc == EX_OK) {
        rc = tollctl_import_store(ctl, &imp, o);
    }

    if (rc == EX_OK) {
        obj = json_pack("{s:s, s:s, s:s, s:s?}",
                        TOLLCTL_FIELD_KEY_ID, imp.key_id,
                        TOLL_FIELD_OWNER, o->opt[TOLLCTL_OPT_OWNER],
                        TOLL_FIELD_ROLE, toll_role_name(imp.role),
                        TOLL_FIELD_PLAN, o->opt[TOLLCTL_OPT_PLAN]);
        rc = (obj != NULL) ? tollctl_print_json(obj) : EX_OSERR;
        json_decref(obj);
    }

    OPENSSL_cleanse(&imp, sizeof(imp));

    return rc;
}


static int
tollctl_import_token(tollctl_import_t *imp, const char *arg)
{
    toll_token_t  tok;

    if (strcmp(arg, "-") == 0) {
        if (fgets(imp->token, sizeof(imp->token), stdin) == NULL) {
            return tollctl_error(EX_DATAERR, "no token on stdin");
        }

        imp->token_len = strcspn(imp->token, "\r\n");
        imp->token[imp->token_len] = '\0';

    } else {
        imp->token_len = strlen(arg);

        if (imp->token_len >= sizeof(imp->token)) {
            imp->token_len = sizeof(imp->token) - 1;
        }

        memcpy(imp->token, arg, imp->token_len);
    }

    /* the module reads a token with a ':' as "key_id:secret" */

    if (toll_opaque_parse((const unsigned char *) imp->token, imp->token_len,
                          imp->id, &tok)
        != TOLL_CRED_OK)
    {
        return tollctl_error(EX_DATAERR,
                             "invalid --token: use %d to %d of A-Z a-z 0-9 "
                             "_ - (no ':', no '.'), its prefix included",
                             TOLL_OPAQUE_LEN_MIN, TOLL_OPAQUE_LEN_MAX);
    }

    memcpy(imp->key_id, imp->id, TOLL_OPAQUE_ID_LEN);

    if (toll_key_redis_name(imp->id, TOLL_OPAQUE_ID_LEN, imp->redis_name)
        == 0)
    {
        return tollctl_error(EX_SOFTWARE, "derived key id \"%s\" is invalid",
                             imp->key_id);
    }

    return EX_OK;
}


/* the same rules as key create's: the module refuses what they refuse */
static int
tollctl_import_check(tollctl_import_t *imp, tollctl_opts_t *o)
{
    int64_t      in;
    time_t       now;
    unsigned char hash[TOLL_SECRET_HASH_LEN];
    const char  *owner, *plan, *role, *rate, *expires;

    owner = o->opt[TOLLCTL_OPT_OWNER];
    plan = o->opt[TOLLCTL_OPT_PLAN];
    role = o->opt[TOLLCTL_OPT_ROLE];
    rate = o->opt[TOLLCTL_OPT_RATE_LIMIT];
    expires = o->opt[TOLLCTL_OPT_EXPIRES_IN];

    if (!toll_owner_valid((const unsigned char *) owner, strlen(owner))) {
        return tollctl_error(EX_DATAERR, "invalid --owner: use 1 to %d "
                             "visible ASCII characters, no spaces, not '}' "
                             "first (it would empty the Redis hash tag)",
                             TOLL_OWNER_LEN_MAX);
    }

    if (plan != NULL
        && (plan[0] == '\0'
            || !toll_plan_valid((const unsigned char *) plan, strlen(plan))))
    {
        return tollctl_error(EX_DATAERR, "invalid --plan \"%s\": use 1 to "
                             "%d of A-Z a-z 0-9 _ . -", plan,
                             TOLL_PLAN_LEN_MAX);
    }

    imp->role = (role != NULL) ? toll_role_parse(role, strlen(role))
                               : TOLL_ROLE_BUYER;
    if (imp->role < 0) {
        return tollctl_error(EX_DATAERR, "invalid --role \"%s\": use buyer, "
                             "provider or admin", role);
    }

    imp->rate_limit = -1;

    if (rate != NULL
        && toll_parse_int64(rate, 0, TOLLCTL_IMPORT_RATE_MAX,
                            &imp->rate_limit) != 0)
    {
        return tollctl_error(EX_DATAERR, "invalid --rate-limit \"%s\": use "
                             "an integer from 0 to %d (requests per minute)",
                             rate, TOLLCTL_IMPORT_RATE_MAX);
    }

    now = time(NULL);

    if (expires != NULL
        && toll_parse_int64(expires, 1, TOLLCTL_IMPORT_EXPIRES_MAX, &in) != 0)
    {
        return tollctl_error(EX_DATAERR, "invalid --expires-in \"%s\": use "
                             "an integer from 1 to %lld (seconds)", expires,
                             TOLLCTL_IMPORT_EXPIRES_MAX);
    }

    imp->expires_at = (expires != NULL) ? (int64_t) now + in : 0;

    if (toll_secret_hash((const unsigned char *) imp->token, imp->token_len,
                         hash)
        != 0)
    {
        return tollctl_error(EX_SOFTWARE, "OpenSSL could not hash the "
                             "token; nothing was imported");
    }

    toll_hex_encode(hash, sizeof(hash), imp->secret_sha256);
    OPENSSL_cleanse(hash, sizeof(hash));

    return EX_OK;
}


/*
 * Under a WATCH of the record: a token imported twice is refused rather
 * than overwriting the record (and its revocation) of the first.  The
 * index and the record are in two slots, and a transaction holds one
 * (docs/redis.md "Slots"): the index entry first, on its own, the record
 * last, so that an import cut short leaves at most an id without a
 * record, which key list skips and the gate never finds.
 */
static int
tollctl_import_store(tollctl_t *ctl, tollctl_import_t *imp,
    tollctl_opts_t *o)
{
    int             exists, taken;
    char            rate[TOLLCTL_INT_STR_LEN], expires[TOLLCTL_INT_STR_LEN];
    char            created[TOLLCTL_INT_STR_LEN];
    redisReply     *reply;
    tollctl_cmd_t   cmds[2];

    exists = tollctl_redis_watch(ctl, imp->redis_name, NULL);

    if (exists == -1) {
        return EX_UNAVAILABLE;
    }

    if (exists) {
        (void) tollctl_redis_unwatch(ctl);
        return tollctl_error(EX_CANTCREAT, "this token is imported already, "
                             "as key %s", imp->key_id);
    }

    snprintf(expires, sizeof(expires), "%lld", (long long) imp->expires_at);
    snprintf(created, sizeof(created), "%lld", (long long) time(NULL));

    tollctl_cmd_init(&cmds[0], "HSET");
    tollctl_cmd_add_str(&cmds[0], imp->redis_name);
    tollctl_cmd_add_str(&cmds[0], TOLL_FIELD_STATUS);
    tollctl_cmd_add_str(&cmds[0], TOLL_STATUS_ACTIVE);
    tollctl_cmd_add_str(&cmds[0], TOLL_FIELD_SECRET_SHA256);
    tollctl_cmd_add(&cmds[0], imp->secret_sha256, TOLL_SECRET_HASH_HEX_LEN);
    tollctl_cmd_add_str(&cmds[0], TOLL_FIELD_OWNER);
    tollctl_cmd_add_str(&cmds[0], o->opt[TOLLCTL_OPT_OWNER]);
    tollctl_cmd_add_str(&cmds[0], TOLL_FIELD_ROLE);
    tollctl_cmd_add_str(&cmds[0], toll_role_name(imp->role));

    if (o->opt[TOLLCTL_OPT_PLAN] != NULL) {
        tollctl_cmd_add_str(&cmds[0], TOLL_FIELD_PLAN);
        tollctl_cmd_add_str(&cmds[0], o->opt[TOLLCTL_OPT_PLAN]);
    }

    if (imp->rate_limit >= 0) {
        snprintf(rate, sizeof(rate), "%lld", (long long) imp->rate_limit);
        tollctl_cmd_add_str(&cmds[0], TOLL_FIELD_RATE_LIMIT);
        tollctl_cmd_add_str(&cmds[0], rate);
    }

    tollctl_cmd_add_str(&cmds[0], TOLL_FIELD_EXPIRES_AT);
    tollctl_cmd_add_str(&cmds[0], expires);
    tollctl_cmd_add_str(&cmds[0], TOLL_FIELD_CREATED_AT);
    tollctl_cmd_add_str(&cmds[0], created);

    tollctl_cmd_init(&cmds[1], "SADD");
    tollctl_cmd_add_str(&cmds[1], TOLL_NAME_KEY_INDEX);
    tollctl_cmd_add(&cmds[1], imp->key_id, TOLL_OPAQUE_ID_LEN);

    reply = tollctl_redis_run(ctl, &cmds[1]);
    if (reply == NULL) {
        (void) tollctl_redis_unwatch(ctl);
        return EX_UNAVAILABLE;
    }

    freeReplyObject(reply);

    reply = tollctl_redis_exec(ctl, cmds, 1);
    if (reply == NULL) {
        return EX_UNAVAILABLE;
    }

    taken = (reply->type == REDIS_REPLY_NIL);
    freeReplyObject(reply);

    if (taken) {
        return tollctl_error(EX_TEMPFAIL, "key %s was written by another "
                             "client meanwhile; nothing was imported",
                             imp->key_id);
    }

    return EX_OK;
}
