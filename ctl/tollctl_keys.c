/*
 * tollctl key create | revoke | show | list: API key records in Redis
 * (docs/tollctl.md, "Keys"), in the format that lib/toll_key.h fixes and
 * the nginx module reads.  How a record is shown is in
 * tollctl_key_record.c.
 *
 * A new key's secret is shown once, by key create, and wiped from every
 * buffer of ours after: jansson allocates through tollctl_output.c's
 * allocator, which wipes what it frees.
 */

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "toll_key.h"
#include "toll_key_record.h"
#include "toll_parse.h"
#include "tollctl.h"
#include "tollctl_keys.h"
#include "tollctl_buyer.h"
#include "tollctl_key_record.h"


#define TOLLCTL_RATE_LIMIT_MAX        1000000000      /* requests/minute */
#define TOLLCTL_EXPIRES_IN_SEC_MAX    3162240000LL    /* 100 years of 366 d */

/*
 * 64 random bits make an id collision improbable; a run of them means a
 * broken CSPRNG, which no retry would mend.
 */
#define TOLLCTL_CREATE_ATTEMPTS_MAX   3
/* a revocation raced by another writer is read again this many times */
#define TOLLCTL_REVOKE_ATTEMPTS_MAX   3
/* HGETALLs that "key list" pipelines in one round trip */
#define TOLLCTL_LIST_BATCH_MAX        100
/* a WATCHed key changed under a transaction: read it again */
#define TOLLCTL_AGAIN                 (-2)


typedef struct {
    const char       *owner;
    const char       *plan;          /* NULL: none */
    const char       *role_opt;
    const char       *rate_limit_opt;
    const char       *expires_in_opt;
    const char       *scopes_opt;    /* "a,b"; NULL: none */
    char              scopes[TOLL_SCOPES_LEN_MAX + 1];

    toll_role_e       role;
    int64_t           rate_limit;    /* requests/minute; -1: none */
    int64_t           expires_in;    /* seconds; 0: never */

    const char       *currency_opt;
    const char       *cap_daily_opt;
    const char       *cap_monthly_opt;
    tollctl_caps_t    caps;          /* the key's spend caps */
} tollctl_create_t;


/* everything here that derives from the secret is wiped after use */
typedef struct {
    char              key_id[TOLL_KEY_ID_GEN_LEN + 1];
    char              secret[TOLL_SECRET_GEN_LEN + 1];
    char              token[TOLL_KEY_ID_GEN_LEN + 1
                            + TOLL_SECRET_GEN_LEN + 1];
    char              secret_sha256[TOLL_SECRET_HASH_HEX_LEN + 1];
    char              redis_name[TOLL_REDIS_KEY_NAME_MAX + 1];
    int64_t           created_at;    /* unix seconds */
    int64_t           expires_at;    /* unix seconds; 0: never */
} tollctl_new_key_t;


static int tollctl_create_parse(tollctl_create_t *req, tollctl_opts_t *o);
static int tollctl_create_check(tollctl_create_t *req);
static int tollctl_key_new(tollctl_new_key_t *key,
    const tollctl_create_t *req);
static int tollctl_key_index_check(tollctl_t *ctl);
static int tollctl_key_taken(tollctl_t *ctl, const char *name, int watch);
static int tollctl_key_store(tollctl_t *ctl, const tollctl_create_t *req,
    tollctl_new_key_t *key);
static int tollctl_key_print_new(const tollctl_create_t *req,
    const tollctl_new_key_t *key);

static int tollctl_revoke_once(tollctl_t *ctl, const char *key_id,
    const char *name);
static int tollctl_list_batch(tollctl_t *ctl, redisReply **ids, size_t n,
    json_t *records, time_t now);
static int tollctl_list_add(tollctl_t *ctl, json_t *records,
    const redisReply *id, const redisReply *hash, time_t now);
static int tollctl_id_cmp(const void *a, const void *b);



int
tollctl_key_create(tollctl_t *ctl, tollctl_opts_t *o)
{
    int                rc, attempt;
    tollctl_new_key_t  key;
    tollctl_create_t   req;

    rc = tollctl_create_parse(&req, o);
    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_create_check(&req);
    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_connect(ctl);
    if (rc != EX_OK) {
        return rc;
    }

    for (attempt = 0; attempt < TOLLCTL_CREATE_ATTEMPTS_MAX; attempt++) {
        rc = tollctl_key_new(&key, &req);
        if (rc != EX_OK) {
            break;
        }

        rc = tollctl_key_store(ctl, &req, &key);
        if (rc != TOLLCTL_AGAIN) {
            break;
        }
    }

    if (rc == TOLLCTL_AGAIN) {
        rc = tollctl_error(EX_SOFTWARE,
                           "%d generated key ids were all taken; "
                           "the CSPRNG is suspect, do not retry blindly",
                           TOLLCTL_CREATE_ATTEMPTS_MAX);
    }

    if (rc == EX_OK) {
        rc = tollctl_key_print_new(&req, &key);
    }

    OPENSSL_cleanse(&key, sizeof(key));

    return rc;
}


/* usage errors all come before any value is checked */
static int
tollctl_create_parse(tollctl_create_t *req, tollctl_opts_t *o)
{
    memset(req, 0, sizeof(tollctl_create_t));

    req->owner = o->opt[TOLLCTL_OPT_OWNER];
    req->plan = o->opt[TOLLCTL_OPT_PLAN];
    req->role_opt = o->opt[TOLLCTL_OPT_ROLE];
    req->rate_limit_opt = o->opt[TOLLCTL_OPT_RATE_LIMIT];
    req->expires_in_opt = o->opt[TOLLCTL_OPT_EXPIRES_IN];
    req->scopes_opt = o->opt[TOLLCTL_OPT_SCOPES];
    req->currency_opt = o->opt[TOLLCTL_OPT_CURRENCY];
    req->cap_daily_opt = o->opt[TOLLCTL_OPT_SPEND_CAP_DAILY];
    req->cap_monthly_opt = o->opt[TOLLCTL_OPT_SPEND_CAP_MONTHLY];

    /* --json is taken and ignored: create always prints JSON */

    if (req->owner == NULL) {
        return tollctl_usage_error("\"key create\" needs --owner");
    }

    return EX_OK;
}


static int
tollctl_create_check(tollctl_create_t *req)
{
    int  role;

    /* the module refuses a record that these checks would refuse */

    if (!toll_owner_valid((const unsigned char *) req->owner,
                          strlen(req->owner)))
    {
        return tollctl_error(EX_DATAERR,
                             "invalid --owner: use 1 to %d visible ASCII "
                             "characters, no spaces, not '}' first (it would "
                             "empty the Redis hash tag)", TOLL_OWNER_LEN_MAX);
    }

    /* an empty plan reads as none: omitting --plan says that plainly */

    if (req->plan != NULL
        && (req->plan[0] == '\0'
            || !toll_plan_valid((const unsigned char *) req->plan,
                                strlen(req->plan))))
    {
        return tollctl_error(EX_DATAERR,
                             "invalid --plan \"%s\": use 1 to %d of "
                             "A-Z a-z 0-9 _ . -",
                             req->plan, TOLL_PLAN_LEN_MAX);
    }

    req->role = TOLL_ROLE_BUYER;

    if (req->role_opt != NULL) {
        role = toll_role_parse(req->role_opt, strlen(req->role_opt));

        if (role < 0) {
            return tollctl_error(EX_DATAERR,
                                 "invalid --role \"%s\": use buyer, "
                                 "provider or admin", req->role_opt);
        }

        req->role = (toll_role_e) role;
    }

    if (req->scopes_opt != NULL
        && tollctl_scopes_parse(req->scopes_opt, req->scopes,
                                sizeof(req->scopes))
           != EX_OK)
    {
        return EX_DATAERR;
    }

    req->rate_limit = -1;

    if (req->rate_limit_opt != NULL
        && toll_parse_int64(req->rate_limit_opt, 0, TOLLCTL_RATE_LIMIT_MAX,
                            &req->rate_limit)
           != 0)
    {
        return tollctl_error(EX_DATAERR,
                             "invalid --rate-limit \"%s\": use an integer "
                             "from 0 to %d (requests per minute)",
                             req->rate_limit_opt, TOLLCTL_RATE_LIMIT_MAX);
    }

    req->expires_in = 0;

    if (req->expires_in_opt != NULL
        && toll_parse_int64(req->expires_in_opt, 1,
                            TOLLCTL_EXPIRES_IN_SEC_MAX, &req->expires_in)
           != 0)
    {
        return tollctl_error(EX_DATAERR,
                             "invalid --expires-in \"%s\": use an integer "
                             "from 1 to %lld (seconds)",
                             req->expires_in_opt,
                             TOLLCTL_EXPIRES_IN_SEC_MAX);
    }

    if (req->currency_opt && !req->cap_daily_opt && !req->cap_monthly_opt) {
        return tollctl_usage_error("--currency of \"key create\" is the "
                                   "spend caps': give --spend-cap-daily or "
                                   "--spend-cap-monthly");
    }

    if (tollctl_caps_check(&req->caps, req->currency_opt,
                           req->cap_daily_opt, req->cap_monthly_opt,
                           "--spend-cap-daily", "--spend-cap-monthly")
        != EX_OK)
    {
        return EX_DATAERR;
    }

    /* a new key has no cap to remove */

    if (req->caps.daily == TOLLCTL_CAP_NONE
        || req->caps.monthly == TOLLCTL_CAP_NONE)
    {
        return tollctl_error(EX_DATAERR, "a new key's spend cap is an "
                             "amount such as 10.50; omit the option for "
                             "none");
    }

    return EX_OK;
}


/* a fresh key id and secret, and what derives from them */
static int
tollctl_key_new(tollctl_new_key_t *key, const tollctl_create_t *req)
{
    time_t         now;
    unsigned char  hash[TOLL_SECRET_HASH_LEN];

    if (toll_key_generate(key->key_id, key->secret) != 0) {
        return tollctl_error(EX_SOFTWARE, "the OpenSSL CSPRNG failed; "
                             "no key was created");
    }

    snprintf(key->token, sizeof(key->token), "%s:%s",
             key->key_id, key->secret);

    if (toll_secret_hash((const unsigned char *) key->secret,
                         TOLL_SECRET_GEN_LEN, hash)
        != 0)
    {
        return tollctl_error(EX_SOFTWARE, "OpenSSL could not hash the "
                             "secret; no key was created");
    }

    toll_hex_encode(hash, sizeof(hash), key->secret_sha256);
    key->secret_sha256[TOLL_SECRET_HASH_HEX_LEN] = '\0';
    OPENSSL_cleanse(hash, sizeof(hash));

    if (toll_key_redis_name((const unsigned char *) key->key_id,
                            TOLL_KEY_ID_GEN_LEN, key->redis_name)
        == 0)
    {
        return tollctl_error(EX_SOFTWARE, "generated key id \"%s\" is "
                             "invalid", key->key_id);
    }

    now = time(NULL);
    if (now == (time_t) -1) {
        return tollctl_error(EX_OSERR, "cannot read the clock");
    }

    key->created_at = (int64_t) now;
    key->expires_at = (req->expires_in != 0)
                      ? key->created_at + req->expires_in : 0;

    return EX_OK;
}


/*
 * An index that is not a set would refuse the SADD: said plainly, before
 * anything is written.
 */
static int
tollctl_key_index_check(tollctl_t *ctl)
{
    redisReply     *reply;
    tollctl_cmd_t   cmd;

    tollctl_cmd_init(&cmd, "TYPE");
    tollctl_cmd_add_str(&cmd, TOLL_NAME_KEY_INDEX);

    reply = tollctl_redis_run(ctl, &cmd);
    if (reply == NULL) {
        return EX_UNAVAILABLE;
    }

    if (reply->type != REDIS_REPLY_STATUS
        || (strcmp(reply->str, "set") != 0 && strcmp(reply->str, "none") != 0))
    {
        tollctl_error(EX_UNAVAILABLE, "redis %s: " TOLL_NAME_KEY_INDEX
                      " is a %s, not a set (WRONGTYPE); make it the set of "
                      "key ids again before creating keys", ctl->addr.text,
                      reply->type == REDIS_REPLY_STATUS ? reply->str : "?");
        freeReplyObject(reply);
        return EX_UNAVAILABLE;
    }

    freeReplyObject(reply);

    return EX_OK;
}


/*
 * 1 when the record exists, 0 when not, -1 after an error; with watch,
 * the record stays WATCHed when it does not exist.
 */
static int
tollctl_key_taken(tollctl_t *ctl, const char *name, int watch)
{
    int  exists;

    exists = tollctl_redis_watch(ctl, name, NULL);

    if (exists == -1) {
        return -1;
    }

    if ((exists || !watch) && tollctl_redis_unwatch(ctl) != 0) {
        return -1;
    }

    return exists;
}


/*
 * The key's names are in up to four slots (its record, the index, the
 * owner's caps, the caps' generation), and a transaction holds one
 * (docs/redis.md "Slots"): so one step per slot, in an order that is
 * safe wherever it stops.  The record comes last, since it is what the
 * gate takes: before it, the index names an id without a record (key
 * list skips it) and the owner's cap hash holds caps of a key no
 * record has (no call ever names it), and the secret was never shown,
 * so the operator runs create again and gets another id.
 *
 * The record goes in a transaction under a WATCH of itself: an existing
 * record is never overwritten, even one written between the check and
 * the EXEC.  The id is checked before the first step too, so that what
 * goes before the record is never written for another key's id, but
 * for a twin drawn by another create between the two checks (2^-128).
 * Returns TOLLCTL_AGAIN when the id is taken.
 */
static int
tollctl_key_store(tollctl_t *ctl, const tollctl_create_t *req,
    tollctl_new_key_t *key)
{
    int             taken;
    char            rate_limit[TOLLCTL_INT_STR_LEN];
    char            expires_at[TOLLCTL_INT_STR_LEN];
    char            created_at[TOLLCTL_INT_STR_LEN];
    const char     *role;
    redisReply     *reply;
    tollctl_cmd_t   cmd;
    tollctl_caps_t  caps;

    if (tollctl_key_index_check(ctl) != EX_OK) {
        return EX_UNAVAILABLE;
    }

    taken = tollctl_key_taken(ctl, key->redis_name, 0);

    if (taken) {
        return (taken == 1) ? TOLLCTL_AGAIN : EX_UNAVAILABLE;
    }

    /* 1. the index */

    tollctl_cmd_init(&cmd, "SADD");
    tollctl_cmd_add_str(&cmd, TOLL_NAME_KEY_INDEX);
    tollctl_cmd_add(&cmd, key->key_id, TOLL_KEY_ID_GEN_LEN);

    reply = tollctl_redis_run(ctl, &cmd);
    if (reply == NULL) {
        return EX_UNAVAILABLE;
    }

    freeReplyObject(reply);

    /* 2. the key's caps in the owner's cap hash, then the generation */

    if (req->caps.daily >= 0 || req->caps.monthly >= 0) {
        caps = req->caps;

        if (tollctl_caps_write(ctl, &caps, req->owner, key->key_id)
            != EX_OK)
        {
            return EX_UNAVAILABLE;
        }
    }

    /* 3. the record */

    taken = tollctl_key_taken(ctl, key->redis_name, 1);

    if (taken) {
        return (taken == 1) ? TOLLCTL_AGAIN : EX_UNAVAILABLE;
    }

    snprintf(expires_at, sizeof(expires_at), "%lld",
             (long long) key->expires_at);
    snprintf(created_at, sizeof(created_at), "%lld",
             (long long) key->created_at);

    role = toll_role_name(req->role);

    tollctl_cmd_init(&cmd, "HSET");
    tollctl_cmd_add_str(&cmd, key->redis_name);
    tollctl_cmd_add_str(&cmd, TOLL_FIELD_STATUS);
    tollctl_cmd_add_str(&cmd, TOLL_STATUS_ACTIVE);
    tollctl_cmd_add_str(&cmd, TOLL_FIELD_SECRET_SHA256);
    tollctl_cmd_add(&cmd, key->secret_sha256, TOLL_SECRET_HASH_HEX_LEN);
    tollctl_cmd_add_str(&cmd, TOLL_FIELD_OWNER);
    tollctl_cmd_add_str(&cmd, req->owner);
    tollctl_cmd_add_str(&cmd, TOLL_FIELD_ROLE);
    tollctl_cmd_add_str(&cmd, role);

    if (req->plan != NULL) {
        tollctl_cmd_add_str(&cmd, TOLL_FIELD_PLAN);
        tollctl_cmd_add_str(&cmd, req->plan);
    }

    if (req->scopes[0] != '\0') {
        tollctl_cmd_add_str(&cmd, TOLL_FIELD_SCOPES);
        tollctl_cmd_add_str(&cmd, req->scopes);
    }

    if (req->rate_limit >= 0) {
        snprintf(rate_limit, sizeof(rate_limit), "%lld",
                 (long long) req->rate_limit);
        tollctl_cmd_add_str(&cmd, TOLL_FIELD_RATE_LIMIT);
        tollctl_cmd_add_str(&cmd, rate_limit);
    }

    tollctl_cmd_add_str(&cmd, TOLL_FIELD_EXPIRES_AT);
    tollctl_cmd_add_str(&cmd, expires_at);
    tollctl_cmd_add_str(&cmd, TOLL_FIELD_CREATED_AT);
    tollctl_cmd_add_str(&cmd, created_at);

    reply = tollctl_redis_exec(ctl, &cmd, 1);
    if (reply == NULL) {
        return EX_UNAVAILABLE;
    }

    taken = (reply->type == REDIS_REPLY_NIL);
    freeReplyObject(reply);

    return taken ? TOLLCTL_AGAIN : EX_OK;
}


/* the only place the secret is ever shown */
static int
tollctl_key_print_new(const tollctl_create_t *req,
    const tollctl_new_key_t *key)
{
    int          rc;
    json_t      *obj;
    static char  stdout_buf[BUFSIZ];

    /*
     * stdio's own buffer would keep a copy of the secret until exit: it
     * uses ours, wiped below.  Nothing was written to stdout before.
     */
    setvbuf(stdout, stdout_buf, _IOFBF, sizeof(stdout_buf));

    obj = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s?, s:s?, s:o, s:s, s:I, "
                    "s:o}",
                    TOLLCTL_FIELD_KEY_ID, key->key_id,
                    "secret", key->secret,
                    "token", key->token,
                    TOLL_FIELD_OWNER, req->owner,
                    TOLL_FIELD_ROLE, toll_role_name(req->role),
                    TOLL_FIELD_PLAN, req->plan,
                    TOLL_FIELD_SCOPES,
                    req->scopes[0] ? req->scopes : NULL,
                    TOLL_FIELD_RATE_LIMIT,
                    (req->rate_limit >= 0) ? json_integer(req->rate_limit)
                                           : json_null(),
                    TOLL_FIELD_STATUS, TOLL_STATUS_ACTIVE,
                    TOLL_FIELD_CREATED_AT, (json_int_t) key->created_at,
                    TOLL_FIELD_EXPIRES_AT,
                    (key->expires_at != 0) ? json_integer(key->expires_at)
                                           : json_null());

    if (obj == NULL) {
        return tollctl_error(EX_OSERR, "key %s was created but is lost: "
                             "out of memory; revoke it and create another",
                             key->key_id);
    }

    rc = tollctl_print_json(obj);
    json_decref(obj);

    if (rc == EX_OK && tollctl_stdout_flush() != 0) {
        rc = tollctl_error(EX_IOERR, "key %s was created but is lost: "
                           "cannot write to stdout (%s); revoke it and "
                           "create another", key->key_id, strerror(errno));
    }

    OPENSSL_cleanse(stdout_buf, sizeof(stdout_buf));

    return rc;
}


int
tollctl_key_revoke(tollctl_t *ctl, tollctl_opts_t *o)
{
    int          rc, attempt;
    char         name[TOLL_REDIS_KEY_NAME_MAX + 1];
    json_t      *record;
    const char  *key_id;

    rc = tollctl_key_id_arg(ctl, o, &key_id, name);
    if (rc != EX_OK) {
        return rc;
    }

    for (attempt = 0; attempt < TOLLCTL_REVOKE_ATTEMPTS_MAX; attempt++) {
        rc = tollctl_revoke_once(ctl, key_id, name);
        if (rc != TOLLCTL_AGAIN) {
            break;
        }
    }

    if (rc == TOLLCTL_AGAIN) {
        return tollctl_error(EX_TEMPFAIL, "key %s kept changing while "
                             "being revoked; run the command again", key_id);
    }

    if (rc != EX_OK) {
        return rc;
    }

    if (!ctl->json) {
        printf("revoked %s\n", key_id);
        return EX_OK;
    }

    rc = tollctl_record_get(ctl, key_id, name, &record);
    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_print_json(record);
    json_decref(record);

    return rc;
}


/*
 * A revoked key stays revoked with its first revoked_at; the WATCH keeps
 * a record deleted meanwhile from coming back as a stub.
 */
static int
tollctl_revoke_once(tollctl_t *ctl, const char *key_id, const char *name)
{
    int             exists, revoked;
    char            revoked_at[TOLLCTL_INT_STR_LEN];
    redisReply     *status, *reply;
    tollctl_cmd_t   cmd;

    exists = tollctl_redis_watch(ctl, name, &status);

    if (exists == -1) {
        return EX_UNAVAILABLE;
    }

    revoked = (status->type == REDIS_REPLY_STRING
               && strcmp(status->str, TOLL_STATUS_REVOKED) == 0);
    freeReplyObject(status);

    if (!exists || revoked) {
        if (tollctl_redis_unwatch(ctl) != 0) {
            return EX_UNAVAILABLE;
        }

        if (!exists) {
            return tollctl_error(EX_NOINPUT, "no key %s; \"tollctl key "
                                 "list\" shows the keys", key_id);
        }

        return EX_OK;
    }

    snprintf(revoked_at, sizeof(revoked_at), "%lld",
             (long long) time(NULL));

    tollctl_cmd_init(&cmd, "HSET");
    tollctl_cmd_add_str(&cmd, name);
    tollctl_cmd_add_str(&cmd, TOLL_FIELD_STATUS);
    tollctl_cmd_add_str(&cmd, TOLL_STATUS_REVOKED);
    tollctl_cmd_add_str(&cmd, TOLL_FIELD_REVOKED_AT);
    tollctl_cmd_add_str(&cmd, revoked_at);

    reply = tollctl_redis_exec(ctl, &cmd, 1);
    if (reply == NULL) {
        return EX_UNAVAILABLE;
    }

    revoked = (reply->type != REDIS_REPLY_NIL);
    freeReplyObject(reply);

    return revoked ? EX_OK : TOLLCTL_AGAIN;
}


int
tollctl_key_show(tollctl_t *ctl, tollctl_opts_t *o)
{
    int          rc;
    char         name[TOLL_REDIS_KEY_NAME_MAX + 1];
    const char  *key_id;

    rc = tollctl_key_id_arg(ctl, o, &key_id, name);
    if (rc != EX_OK) {
        return rc;
    }

    return tollctl_record_show(ctl, key_id, name);
}


int
tollctl_key_list(tollctl_t *ctl, tollctl_opts_t *o)
{
    int             rc;
    time_t          now;
    size_t          i, n;
    json_t         *records;
    redisReply     *ids;
    tollctl_cmd_t   cmd;

    (void) o;

    rc = tollctl_connect(ctl);
    if (rc != EX_OK) {
        return rc;
    }

    tollctl_cmd_init(&cmd, "SMEMBERS");
    tollctl_cmd_add_str(&cmd, TOLL_NAME_KEY_INDEX);

    ids = tollctl_redis_run(ctl, &cmd);
    if (ids == NULL) {
        return EX_UNAVAILABLE;
    }

    if (ids->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(ids);
        return tollctl_error(EX_UNAVAILABLE, "redis %s: SMEMBERS: "
                             "unexpected reply", ctl->addr.text);
    }

    qsort(ids->element, ids->elements, sizeof(redisReply *), tollctl_id_cmp);

    records = json_array();
    if (records == NULL) {
        freeReplyObject(ids);
        return tollctl_error(EX_OSERR, "out of memory");
    }

    now = time(NULL);
    rc = EX_OK;

    for (i = 0; i < ids->elements && rc == EX_OK; i += n) {
        n = ids->elements - i;
        if (n > TOLLCTL_LIST_BATCH_MAX) {
            n = TOLLCTL_LIST_BATCH_MAX;
        }

        rc = tollctl_list_batch(ctl, ids->element + i, n, records, now);
    }

    freeReplyObject(ids);

    if (rc == EX_OK) {
        rc = tollctl_output(ctl, records, tollctl_key_print_table);
    }

    json_decref(records);

    return rc;
}


/* one round trip of HGETALLs; ids whose record is gone are skipped */
static int
tollctl_list_batch(tollctl_t *ctl, redisReply **ids, size_t n,
    json_t *records, time_t now)
{
    int             rc;
    char            names[TOLLCTL_LIST_BATCH_MAX][TOLL_REDIS_KEY_NAME_MAX + 1];
    size_t          i, m;
    redisReply     *replies[TOLLCTL_LIST_BATCH_MAX];
    redisReply     *valid[TOLLCTL_LIST_BATCH_MAX];
    tollctl_cmd_t   cmds[TOLLCTL_LIST_BATCH_MAX];

    assert(n <= TOLLCTL_LIST_BATCH_MAX);

    m = 0;

    for (i = 0; i < n; i++) {
        if (ids[i]->type != REDIS_REPLY_STRING
            || toll_key_redis_name((const unsigned char *) ids[i]->str,
                                   ids[i]->len, names[m])
               == 0)
        {
            /* a warning: the other keys are still worth listing */
            (void) tollctl_error(EX_OK, "skipped a malformed key id in "
                                 TOLL_NAME_KEY_INDEX);
            continue;
        }

        tollctl_cmd_init(&cmds[m], "HGETALL");
        tollctl_cmd_add_str(&cmds[m], names[m]);
        valid[m++] = ids[i];
    }

    if (m == 0) {
        return EX_OK;
    }

    if (tollctl_redis_pipeline(ctl, cmds, m, replies) != 0) {
        return EX_UNAVAILABLE;
    }

    rc = EX_OK;

    for (i = 0; i < m; i++) {
        if (rc == EX_OK) {
            rc = tollctl_list_add(ctl, records, valid[i], replies[i], now);
        }

        freeReplyObject(replies[i]);
    }

    return rc;
}


static int
tollctl_list_add(tollctl_t *ctl, json_t *records, const redisReply *id,
    const redisReply *hash, time_t now)
{
    int      rc;
    json_t  *record;

    rc = tollctl_record_check(ctl, hash);

    if (rc != EX_OK || hash->elements == 0) {
        return rc;
    }

    record = tollctl_record_json(id->str, id->len, hash, now);
    if (record == NULL) {
        return tollctl_error(EX_DATAERR, "the record of key %s holds a "
                             "field that is not UTF-8 text", id->str);
    }

    if (json_array_append_new(records, record) != 0) {
        return tollctl_error(EX_OSERR, "out of memory");
    }

    return EX_OK;
}


static int
tollctl_id_cmp(const void *a, const void *b)
{
    int                r;
    size_t             len;
    const redisReply  *x, *y;

    x = *(const redisReply * const *) a;
    y = *(const redisReply * const *) b;

    len = (x->len < y->len) ? x->len : y->len;

    r = memcmp(x->str, y->str, len);
    if (r != 0) {
        return r;
    }

    return (x->len > y->len) - (x->len < y->len);
}
